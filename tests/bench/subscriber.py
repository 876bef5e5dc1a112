#!/usr/bin/env python3
"""Benchmark subscriber: counts events at a broker, or times them (commit -> receipt).

  subscriber.py --kind nats|jetstream|redis|mqtt|stdout --port P [--topic T] [--stream S]
                --mode count|latency [--expect N] [--warmup-ms W]

Subscribes the way an application would (core NATS `SUB`, a JetStream push
consumer on the stream, Redis `XREAD BLOCK`, an MQTT QoS 1 subscription, or
the bridge's stdout pipe as stdin), prints `ready`, then `count N` every 100 ms
while it changes (and at once when N reaches --expect). On SIGTERM it prints
one `report {json}` line and exits 0.

latency mode: for every event, receive time (wall clock, taken when the bytes
holding it were read from the socket, or, for Redis, when the XREAD reply was
complete) minus the envelope's `source.ts` (commit time, microseconds). A
re-delivered id is counted as a duplicate and not timed again. Events committed
less than --warmup-ms after the first one are counted but not timed.
"""
import argparse
import array
import calendar
import json
import math
import os
import select
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

A = None
stop = False
count = 0          # messages received (count mode) / distinct events (latency mode)
received = dups = bad = 0
bad_sample = None
lat = array.array("d")
commit = array.array("d")
seen = set()
first_recv = last_recv = 0.0
_sec_cache = {}


def out(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()


def ts_ms(ts):
    """b'2026-11-23T18:42:00.123456Z' -> Unix ms (float, microseconds kept)."""
    head = ts[:19]
    base = _sec_cache.get(head)
    if base is None:
        base = calendar.timegm(time.strptime(head.decode(), "%Y-%m-%dT%H:%M:%S")) * 1000.0
        if len(_sec_cache) > 4096:
            _sec_cache.clear()
        _sec_cache[head] = base
    frac = 0.0
    if ts[19:20] == b".":
        end = ts.find(b"Z", 20)
        digits = ts[20:end if end > 0 else len(ts)]
        if digits:
            frac = int(digits) / (10 ** len(digits)) * 1000.0
    return base + frac


def on_event(payload, t):
    """One envelope received at t (Unix ms)."""
    global count, received, dups, bad, bad_sample, first_recv, last_recv
    received += 1
    if A.mode == "count":
        count += 1
        return
    i = payload.find(b'"id":"')
    j = payload.find(b'"', i + 6) if i >= 0 else -1
    k = payload.find(b'"ts":"', j) if j >= 0 else -1
    if k < 0:
        bad += 1
        if bad_sample is None:
            bad_sample = payload[:300].decode("utf-8", "replace")
        return
    eid = payload[i + 6:j]
    if eid in seen:
        dups += 1
        return
    try:
        c = ts_ms(payload[k + 6:payload.find(b'"', k + 6)])
    except ValueError:
        bad += 1
        return
    seen.add(eid)
    lat.append(t - c)
    commit.append(c)
    count += 1
    if not first_recv:
        first_recv = t
    last_recv = t


def now_ms():
    return time.time() * 1000.0


# ---------------------------------------------------------------- NATS (core and JetStream deliveries)
class NatsReader:
    def __init__(self, sock, buf):
        self.sock, self.buf, self.pos = sock, bytearray(buf), 0

    def feed(self, data, t):
        b = self.buf
        b += data
        pos, n = self.pos, len(b)
        pong = False
        while True:
            i = b.find(b"\r\n", pos)
            if i < 0:
                break
            if b.startswith(b"MSG ", pos) or b.startswith(b"HMSG ", pos):
                parts = bytes(b[pos:i]).split(b" ")
                total = int(parts[-1])
                hlen = int(parts[-2]) if b[pos] == 0x48 else 0  # 'H'
                start = i + 2
                if start + total + 2 > n:
                    break
                if total > hlen:  # JetStream status messages (flow control, heartbeats) have no body
                    on_event(bytes(b[start + hlen:start + total]), t)
                pos = start + total + 2
            else:
                if b.startswith(b"PING", pos):
                    pong = True
                elif b.startswith(b"-ERR", pos):
                    sys.stderr.write(f"subscriber: nats {bytes(b[pos:i]).decode()}\n")
                pos = i + 2
        del b[:pos]
        self.pos = 0
        if pong:
            self.sock.sendall(b"PONG\r\n")


def open_nats():
    nc = wire.Nats(A.port, name=f"bench-{A.kind}-subscriber")
    if A.kind == "nats":
        nc.sock.sendall(f"SUB {A.topic} 2\r\nPING\r\n".encode())
        nc._until_pong()
    else:
        deliver = f"bench.deliver.{os.getpid()}"
        nc.sock.sendall(f"SUB {deliver} 2\r\n".encode())
        nc.js(f"CONSUMER.CREATE.{A.stream}", {"stream_name": A.stream, "config": {
            "deliver_subject": deliver, "deliver_policy": "all", "ack_policy": "none",
            "replay_policy": "instant", "mem_storage": True, "num_replicas": 1}})
    nc.sock.settimeout(None)
    return nc.sock, NatsReader(nc.sock, nc.r.buf)


# ---------------------------------------------------------------- MQTT 3.1.1, QoS 1
def mqtt_str(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def mqtt_packet(first, body):
    n, rl = len(body), bytearray()
    while True:
        d, n = n % 128, n // 128
        rl.append(d | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(rl) + body


class MqttReader:
    def __init__(self, sock):
        self.sock, self.buf = sock, bytearray()

    def feed(self, data, t):
        b = self.buf
        b += data
        pos, n, acks = 0, len(b), []
        while pos + 2 <= n:
            first = b[pos]
            mul, rl, k, complete = 1, 0, pos + 1, False
            while k < n and k < pos + 5:
                d = b[k]
                k += 1
                rl += (d & 0x7F) * mul
                mul *= 128
                if not d & 0x80:
                    complete = True
                    break
            if not complete or k + rl > n:
                break
            if first >> 4 == 3:  # PUBLISH
                qos = (first >> 1) & 3
                tl = (b[k] << 8) | b[k + 1]
                p = k + 2 + tl
                if qos:
                    acks.append(b"\x40\x02" + bytes(b[p:p + 2]))
                    p += 2
                on_event(bytes(b[p:k + rl]), t)
            pos = k + rl
        del b[:pos]
        if acks:
            self.sock.sendall(b"".join(acks))


def open_mqtt():
    s = socket.create_connection(("127.0.0.1", A.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cid = f"bench-sub-{os.getpid()}"
    s.sendall(mqtt_packet(0x10, mqtt_str("MQTT") + b"\x04\x02\x00\x00" + mqtt_str(cid)))
    ack = s.recv(4)
    if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
        raise wire.WireError(f"mqtt CONNACK refused: {ack!r}")
    s.sendall(mqtt_packet(0x82, b"\x00\x01" + mqtt_str(A.topic) + b"\x01"))
    sub = s.recv(5)
    if len(sub) < 5 or sub[0] != 0x90 or sub[4] > 2:
        raise wire.WireError(f"mqtt SUBACK refused: {sub!r}")
    return s, MqttReader(s)


# ---------------------------------------------------------------- Redis XREAD BLOCK
class Incomplete(Exception):
    pass


def parse_xread(b):
    """One complete XREAD reply at the start of b -> ([(entry id, event field)], end); raises
    Incomplete while it is not all there. Walks the RESP framing with offsets only (the generic
    nested parse costs twice as much CPU, and this process shares the machine with the bridge)."""
    find = b.find
    i = find(b"\r\n")
    if i < 0:
        raise Incomplete
    if b[0] != 0x2A:  # '*'
        if b[0] == 0x2D:  # '-'
            raise wire.WireError(f"redis: {bytes(b[1:i]).decode()}")
        raise wire.WireError(f"redis: unexpected XREAD reply {bytes(b[:40])!r}")
    nstreams, pos, out = int(b[1:i]), i + 2, []
    for _ in range(max(0, nstreams)):
        i = find(b"\r\n", pos)  # *2: [key, entries]
        if i < 0:
            raise Incomplete
        pos = i + 2
        i = find(b"\r\n", pos)  # $<n>\r\n<key>\r\n
        if i < 0:
            raise Incomplete
        pos = i + 2 + int(b[pos + 1:i]) + 2
        i = find(b"\r\n", pos)  # *<entries>
        if i < 0:
            raise Incomplete
        nent, pos = int(b[pos + 1:i]), i + 2
        for _ in range(nent):
            i = find(b"\r\n", pos)  # *2: [id, fields]
            if i < 0:
                raise Incomplete
            pos = i + 2
            i = find(b"\r\n", pos)  # $<n> id
            if i < 0:
                raise Incomplete
            ln = int(b[pos + 1:i])
            eid = b[i + 2:i + 2 + ln]
            pos = i + 4 + ln
            i = find(b"\r\n", pos)  # *<2 x fields>
            if i < 0:
                raise Incomplete
            nf, pos = int(b[pos + 1:i]), i + 2
            name, event = None, None
            for k in range(nf):
                i = find(b"\r\n", pos)
                if i < 0:
                    raise Incomplete
                ln = int(b[pos + 1:i])
                start = i + 2
                pos = start + ln + 2
                if k & 1 == 0:
                    name = b[start:start + ln]
                elif name == b"event":
                    event = b[start:start + ln]
            out.append((eid, event))
    if pos > len(b):
        raise Incomplete
    return out, pos


class RedisReader:
    def __init__(self, sock):
        self.sock, self.buf, self.last = sock, bytearray(), b"0-0"
        self.send()

    def send(self):
        k, last = A.topic.encode(), self.last
        self.sock.sendall(b"*8\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n$3\r\n200\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n"
                          b"$7\r\nSTREAMS\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(last), last))

    def feed(self, data, t):
        self.buf += data
        try:
            entries, pos = parse_xread(self.buf)
        except Incomplete:
            return
        del self.buf[:pos]
        for eid, event in entries:
            self.last = bytes(eid)
            if event is not None:
                on_event(bytes(event), t)
        self.send()  # the next XREAD, from the last id of this reply


def open_redis():
    s = socket.create_connection(("127.0.0.1", A.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, RedisReader(s)


# ---------------------------------------------------------------- stdout pipe (stdin here)
class LineReader:
    def __init__(self):
        self.buf = bytearray()

    def feed(self, data, t):
        b = self.buf
        b += data
        pos = 0
        while True:
            i = b.find(b"\n", pos)
            if i < 0:
                break
            tab = b.find(b"\t", pos, i)
            if i > pos:
                on_event(bytes(b[tab + 1 if tab >= 0 else pos:i]), t)
            pos = i + 1
        del b[:pos]


# ---------------------------------------------------------------- report
def stats(v):
    if not v:
        return None
    s = sorted(v)
    n = len(s)

    def p(q):
        return s[min(n - 1, max(0, math.ceil(q * n / 100) - 1))]
    r3 = lambda x: round(x, 3)  # noqa: E731
    return {"n": n, "min": r3(s[0]), "mean": r3(sum(s) / n), "p50": r3(p(50)), "p90": r3(p(90)),
            "p99": r3(p(99)), "p999": r3(p(99.9)), "max": r3(s[-1])}


def report():
    n = len(lat)
    rep = {"kind": A.kind, "mode": A.mode, "received": received, "distinct": count if A.mode == "latency" else None,
           "dups": dups, "bad": bad, "bad_sample": bad_sample}
    if A.mode == "latency" and n:
        c0 = min(commit)
        first_c = commit[0]
        timed = [lat[i] for i in range(n) if commit[i] >= first_c + A.warmup_ms] if A.warmup_ms > 0 else list(lat)
        by = {}
        for i in range(n):
            by.setdefault(int((commit[i] - c0) // 1000), []).append(lat[i])
        rep.update({"first_commit_ms": round(c0, 3), "last_commit_ms": round(max(commit), 3),
                    "first_recv_ms": round(first_recv, 3), "last_recv_ms": round(last_recv, 3),
                    "warmup_events": n - len(timed), "latency_ms": stats(timed),
                    "by_second": [{"s": s, **{k: v for k, v in stats(by[s]).items() if k in ("n", "p50", "p99", "max")}}
                                  for s in sorted(by)]})
    t = os.times()
    rep["cpu_s"] = round(t.user + t.system, 3)
    return rep


def main():
    global A, stop
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", required=True, choices=["nats", "jetstream", "redis", "mqtt", "stdout"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--topic", default="")
    ap.add_argument("--stream", default="")
    ap.add_argument("--mode", default="count", choices=["count", "latency"])
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--warmup-ms", type=float, default=0)
    A = ap.parse_args()

    def on_term(*_):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    if A.kind in ("nats", "jetstream"):
        sock, rd = open_nats()
    elif A.kind == "mqtt":
        sock, rd = open_mqtt()
    elif A.kind == "redis":
        sock, rd = open_redis()
    else:
        sock, rd = None, LineReader()
    fd = sock.fileno() if sock else 0
    out("ready")
    last_tick, last_count, open_fd = 0.0, -1, True
    while not stop:
        if open_fd:
            r = select.select([fd], [], [], 0.1)[0]
        else:
            time.sleep(0.1)
            r = []
        if r:
            data = os.read(fd, 1 << 20) if sock is None else sock.recv(1 << 20)
            if not data:
                open_fd = False
                if sock is not None:
                    sys.stderr.write("subscriber: the broker closed the connection\n")
            else:
                before = count
                rd.feed(data, now_ms())
                if A.expect and before < A.expect <= count:
                    out(f"count {count}")
                    last_count = count
        tnow = time.monotonic()
        if tnow - last_tick >= 0.1:
            last_tick = tnow
            if count != last_count:
                last_count = count
                out(f"count {count}")
    out(f"count {count}")
    out("report " + json.dumps(report()))


if __name__ == "__main__":
    try:
        main()
    except (OSError, wire.WireError) as e:
        sys.stderr.write(f"subscriber: {e}\n")
        sys.exit(1)
