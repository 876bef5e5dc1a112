"""Minimal blocking clients for the benchmark harness (Python standard library only).

PgConn: PostgreSQL simple-query protocol (trust authentication, text results).
Redis:  RESP2 commands.
Nats:   core NATS with request/reply, enough for the JetStream management API.
MqttSub / NatsSub parsing helpers live in subscriber.py.

Nothing here is fast or general; it only has to be correct for the bench's own
servers on loopback, and to keep the harness free of third-party packages.
"""
import json
import os
import socket
import struct
import time


class WireError(Exception):
    pass


def _connect(port, host="127.0.0.1", timeout=10.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class _Buffered:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        d = self.sock.recv(1 << 18)
        if not d:
            raise WireError("connection closed by the server")
        self.buf += d

    def take(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return out
            self.fill()


# ---------------------------------------------------------------- PostgreSQL
class PgError(WireError):
    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('S', 'ERROR')}: {fields.get('M', '?')} (SQLSTATE {fields.get('C', '?')})")


class PgConn:
    """One PostgreSQL connection speaking the simple-query protocol (protocol 3.0)."""

    def __init__(self, port, db="postgres", user="postgres", host="127.0.0.1", app="walbus-bench", timeout=None):
        self.sock = _connect(port, host)
        self.sock.settimeout(timeout)
        self.r = _Buffered(self.sock)
        self.notices = []
        params = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in
                          (("user", user), ("database", db), ("application_name", app))) + b"\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        while True:
            t, body = self._msg()
            if t == b"R":
                code = struct.unpack("!i", body[:4])[0]
                if code != 0:
                    raise WireError(f"PostgreSQL asks for authentication method {code}; the bench server uses trust")
            elif t == b"E":
                raise PgError(self._fields(body))
            elif t == b"Z":
                return

    def _msg(self):
        hdr = self.r.take(5)
        n = struct.unpack("!i", hdr[1:])[0]
        return hdr[:1], self.r.take(n - 4)

    @staticmethod
    def _fields(body):
        out = {}
        for part in body.split(b"\0"):
            if part:
                out[chr(part[0])] = part[1:].decode("utf-8", "replace")
        return out

    def query(self, sql):
        """Runs one simple query; returns the rows (tuples of str/None) of the last result."""
        data = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", 4 + len(data)) + data)
        rows, err = [], None
        while True:
            t, body = self._msg()
            if t == b"T":
                rows = []
            elif t == b"D":
                n = struct.unpack("!h", body[:2])[0]
                pos, row = 2, []
                for _ in range(n):
                    ln = struct.unpack("!i", body[pos:pos + 4])[0]
                    pos += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(body[pos:pos + ln].decode())
                        pos += ln
                rows.append(tuple(row))
            elif t == b"E":
                err = PgError(self._fields(body))
            elif t == b"N":
                self.notices.append(self._fields(body).get("M", ""))
            elif t == b"Z":
                if err:
                    raise err
                return rows

    def value(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def close(self):
        try:
            self.sock.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        self.sock.close()


def lsn_num(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


# ---------------------------------------------------------------- Redis
class Redis:
    def __init__(self, port, host="127.0.0.1"):
        self.sock = _connect(port, host)
        self.r = _Buffered(self.sock)

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.r.line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise WireError(f"redis: {rest.decode()}")
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            v = self.r.take(n + 2)[:-2]
            return v
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise WireError(f"redis: unexpected reply {line[:40]!r}")

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- NATS
class Nats:
    """Core NATS client: publish, and request/reply (for $JS.API)."""

    def __init__(self, port, host="127.0.0.1", name="walbus-bench"):
        self.sock = _connect(port, host)
        self.r = _Buffered(self.sock)
        info = self.r.line()
        if not info.startswith(b"INFO "):
            raise WireError(f"nats: expected INFO, got {info[:40]!r}")
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "protocol": 1, "name": name, "lang": "python", "version": "0"}
        self.sock.sendall(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        self._until_pong()
        self.inbox = f"_INBOX.bench{os.getpid()}{int(time.time() * 1000) % 100000}"
        self.sock.sendall(f"SUB {self.inbox}.* 1\r\n".encode())
        self.seq = 0

    def _until_pong(self):
        while True:
            line = self.r.line()
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise WireError(f"nats: {line.decode()}")
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")

    def publish(self, subject, payload=b""):
        self.sock.sendall(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload))

    def request(self, subject, payload=b"", timeout=10.0):
        self.seq += 1
        reply = f"{self.inbox}.{self.seq}"
        if isinstance(payload, str):
            payload = payload.encode()
        self.sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), len(payload), payload))
        self.sock.settimeout(timeout)
        try:
            while True:
                line = self.r.line()
                if line == b"PING":
                    self.sock.sendall(b"PONG\r\n")
                    continue
                if line.startswith(b"-ERR"):
                    raise WireError(f"nats: {line.decode()}")
                if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                    parts = line.split(b" ")
                    if line.startswith(b"HMSG "):
                        hlen, total = int(parts[-2]), int(parts[-1])
                        data = self.r.take(total + 2)
                        hdr, body = data[:hlen], data[hlen:total]
                        if b" 503" in hdr.split(b"\r\n", 1)[0]:
                            raise WireError(f"nats: no responders for {subject}")
                    else:
                        body = self.r.take(int(parts[-1]) + 2)[:-2]
                    if parts[1].decode() == reply:
                        return body
        finally:
            self.sock.settimeout(None)

    def js(self, api, obj=None):
        """A JetStream API call: returns the decoded JSON, raises on an API error."""
        out = json.loads(self.request(f"$JS.API.{api}", json.dumps(obj) if obj is not None else b""))
        if "error" in out:
            raise WireError(f"jetstream {api}: {out['error'].get('description')} ({out['error'].get('err_code')})")
        return out

    def close(self):
        self.sock.close()
