#!/usr/bin/env python3
"""The audit recipe's tool: creates the JetStream stream, and answers "who
changed row X, when, from what to what" from it.

Python 3 standard library only; it speaks NATS's text protocol over a socket
and the JetStream API ($JS.API.*) as plain requests.

  audit.py create-stream --url nats://127.0.0.1:4222 --stream AUDIT \
      --subjects 'audit.shop.>' --subjects 'shop._message.>' \
      --max-age 365d --max-bytes 10GiB
  audit.py who-changed --url nats://127.0.0.1:4222 --stream AUDIT \
      --subject-prefix audit.shop --table public.accounts --key id=42 [--json] [--since 2026-01-01T00:00:00Z]

Exit codes: 0 done (who-changed: also when nothing was found), 1 a NATS or
JetStream error, 2 bad arguments.
"""

import argparse
import json
import os
import re
import socket
import sys
import time
import urllib.parse

# ---------------------------------------------------------------- NATS client


class NatsError(Exception):
    pass


class Nats:
    """One NATS connection: requests and subscriptions, read on the caller's thread."""

    def __init__(self, url, timeout=5.0):
        u = urllib.parse.urlparse(url if "://" in url else "nats://" + url)
        if u.scheme not in ("nats", ""):
            raise NatsError(f"{url}: only nats:// URLs are supported by this tool (no TLS)")
        self.timeout = timeout
        try:
            self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 4222), timeout)
        except OSError as e:
            raise NatsError(f"cannot connect to {u.hostname}:{u.port or 4222}: {e}") from e
        self.buf = b""
        self.next_sid = 1
        self.inbox_n = 0
        line = self._line()
        if not line.startswith(b"INFO "):
            raise NatsError(f"{url}: not a NATS server (it said {line[:60]!r})")
        opts = {"verbose": False, "pedantic": False, "lang": "python-audit", "version": "1",
                "protocol": 1, "headers": True, "no_responders": True}
        if u.username and u.password is not None:
            opts["user"] = urllib.parse.unquote(u.username)
            opts["pass"] = urllib.parse.unquote(u.password)
        elif u.username:
            opts["auth_token"] = urllib.parse.unquote(u.username)
        if os.environ.get("NATS_TOKEN"):
            opts["auth_token"] = os.environ["NATS_TOKEN"]
        self._send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        while True:
            kind, _ = self._next()
            if kind == "PONG":
                break

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout as e:
            raise TimeoutError("no answer from the NATS server") from e
        if not chunk:
            raise NatsError("the NATS server closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _next(self):
        """The next protocol message: ("MSG", (subject, sid, reply, headers, data)), ("PONG", None)..."""
        while True:
            line = self._line()
            op = line.split(b" ", 1)[0].upper()
            if op == b"PING":
                self._send(b"PONG\r\n")
            elif op == b"PONG":
                return "PONG", None
            elif op in (b"+OK", b"INFO"):
                continue
            elif op == b"-ERR":
                raise NatsError("NATS server error: " + line[5:].decode(errors="replace").strip(" '"))
            elif op == b"MSG":
                p = line.decode().split()
                subject, sid, n = p[1], p[2], int(p[-1])
                reply = p[3] if len(p) == 5 else None
                return "MSG", (subject, sid, reply, {}, self._bytes(n))
            elif op == b"HMSG":
                p = line.decode().split()
                subject, sid, hlen, n = p[1], p[2], int(p[-2]), int(p[-1])
                reply = p[3] if len(p) == 6 else None
                raw = self._bytes(n)
                return "MSG", (subject, sid, reply, parse_headers(raw[:hlen]), raw[hlen:])
            else:
                raise NatsError(f"unexpected NATS protocol line {line[:80]!r}")

    def inbox(self):
        self.inbox_n += 1
        return f"_INBOX.audit{os.getpid()}.{self.inbox_n}"

    def subscribe(self, subject):
        sid = str(self.next_sid)
        self.next_sid += 1
        self._send(f"SUB {subject} {sid}\r\n".encode())
        return sid

    def unsubscribe(self, sid):
        self._send(f"UNSUB {sid}\r\n".encode())

    def publish(self, subject, data, reply=None):
        head = f"PUB {subject} {reply} {len(data)}\r\n" if reply else f"PUB {subject} {len(data)}\r\n"
        self._send(head.encode() + data + b"\r\n")

    def next_msg(self, sid, timeout):
        """The next message for `sid`; None when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                kind, m = self._next()
            except TimeoutError:
                return None
            finally:
                self.sock.settimeout(self.timeout)
            if kind == "MSG" and m[1] == sid:
                return m

    def request(self, subject, payload):
        """A JetStream API request: the decoded JSON answer (raises on an API error)."""
        inbox = self.inbox()
        sid = self.subscribe(inbox)
        self.publish(subject, json.dumps(payload).encode() if payload is not None else b"", inbox)
        m = self.next_msg(sid, self.timeout)
        self.unsubscribe(sid)
        if m is None:
            raise NatsError(f"no answer to {subject} within {self.timeout:.0f} s")
        headers, data = m[3], m[4]
        if headers.get(":status") == "503":
            raise NatsError(f"{subject}: no responders: is JetStream enabled on the server (-js)?")
        return json.loads(data) if data else {}


def parse_headers(raw):
    """NATS/1.0 header block -> dict; the status line's code under ':status'."""
    lines = raw.decode(errors="replace").split("\r\n")
    out = {}
    first = lines[0].split(None, 2) if lines else []
    if len(first) >= 2 and first[1].isdigit():
        out[":status"] = first[1]
        out[":description"] = first[2] if len(first) > 2 else ""
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def api_error(answer):
    err = answer.get("error")
    if err:
        return f"{err.get('description', 'error')} (code {err.get('err_code', err.get('code'))})"
    return None


# ---------------------------------------------------------------- units

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$", re.I)


def duration_ns(text):
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"'{text}' is not a duration: write e.g. 90d, 720h, 30m, 10s")
    scale = {"ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9, "d": 86400e9}[m.group(2)]
    return int(float(m.group(1)) * scale)


def size_bytes(text):
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(f"'{text}' is not a size: write e.g. 10GiB, 500MB, 1048576")
    unit = (m.group(2) or "B").lower()
    scale = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
             "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}[unit]
    return int(float(m.group(1)) * scale)


# ---------------------------------------------------------------- create-stream


def create_stream(args):
    config = {
        "name": args.stream,
        "subjects": args.subjects,
        "retention": "limits",       # keep messages until a limit removes the oldest
        "storage": "file",
        "discard": "old",
        "max_age": duration_ns(args.max_age),
        "max_bytes": size_bytes(args.max_bytes),
        "max_msgs": -1,
        "num_replicas": args.replicas,
        "duplicate_window": duration_ns(args.duplicate_window),
    }
    nc = Nats(args.url)
    try:
        info = nc.request(f"$JS.API.STREAM.INFO.{args.stream}", None)
        exists = not api_error(info)
        verb = "UPDATE" if exists else "CREATE"
        answer = nc.request(f"$JS.API.STREAM.{verb}.{args.stream}", config)
        err = api_error(answer)
        if err:
            raise NatsError(f"{verb.lower()} stream {args.stream}: {err}")
        c = answer["config"]
        print(f"stream {c['name']} {'updated' if exists else 'created'}: subjects {', '.join(c['subjects'])}; "
              f"storage {c['storage']}, retention {c['retention']}, max_age {args.max_age}, "
              f"max_bytes {c['max_bytes']}, duplicate_window {args.duplicate_window}, replicas {c['num_replicas']}")
    finally:
        nc.close()


# ---------------------------------------------------------------- who-changed


def fetch(nc, stream, subject, since):
    """Every message of `stream` on `subject` (oldest first): (stream seq, headers, data)."""
    config = {"ack_policy": "none", "deliver_policy": "all", "filter_subject": subject,
              "replay_policy": "instant", "inactive_threshold": int(30e9), "mem_storage": True}
    if since:
        config["deliver_policy"] = "by_start_time"
        config["opt_start_time"] = since
    answer = nc.request(f"$JS.API.CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config})
    err = api_error(answer)
    if err:
        raise NatsError(f"reading stream {stream} ({subject}): {err}")
    name = answer["name"]
    pending = answer.get("num_pending", 0)
    out = []
    inbox = nc.inbox()
    sid = nc.subscribe(inbox)
    try:
        while pending > 0:
            nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}",
                       json.dumps({"batch": 500, "no_wait": True}).encode(), inbox)
            got = 0
            while True:
                m = nc.next_msg(sid, nc.timeout)
                if m is None:
                    raise NatsError(f"reading stream {stream}: no message within {nc.timeout:.0f} s")
                _, _, reply, headers, data = m
                if ":status" in headers:  # 404 no messages / 408 timeout: this batch is over
                    break
                # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
                parts = (reply or "").split(".")
                seq = int(parts[5]) if len(parts) >= 9 else 0
                pending = int(parts[8]) if len(parts) >= 9 else 0
                out.append((seq, headers, data))
                got += 1
                if pending == 0 or got == 500:
                    break
            if got == 0:
                break
    finally:
        nc.unsubscribe(sid)
        nc.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}", None)
    return out


def key_matches(envelope_key, want):
    if not isinstance(envelope_key, dict) or set(envelope_key) != set(want):
        return False
    return all(render(envelope_key[k]) == v for k, v in want.items())


def render(v):
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"))


def who_changed(args):
    want = {}
    for kv in args.key:
        if "=" not in kv:
            raise ValueError(f"--key {kv}: write COLUMN=VALUE, e.g. --key id=42")
        k, v = kv.split("=", 1)
        want[k] = v
    schema, _, table = args.table.partition(".")
    if not table:
        raise ValueError(f"--table {args.table}: write SCHEMA.TABLE, e.g. public.accounts")
    token = lambda s: re.sub(r"[.*>\s]", "_", s)  # as walbus writes placeholder values
    subject = f"{args.subject_prefix}.{token(schema)}.{token(table)}.*"
    ignore = set(args.ignore)

    nc = Nats(args.url, timeout=args.timeout)
    try:
        changes = []
        for seq, headers, data in fetch(nc, args.stream, subject, args.since):
            e = json.loads(data)
            if e.get("op") == "truncate":
                changes.append({"seq": seq, "e": e})
                continue
            if key_matches(e.get("key"), want):
                changes.append({"seq": seq, "e": e})
        notes, truncates = {}, {}
        if any(c["e"]["op"] in ("delete", "truncate") for c in changes):
            db = args.subject_prefix.split(".")[-1]
            for _, _, data in fetch(nc, args.stream, f"{token(db)}._message.audit", args.since):
                m = json.loads(data)
                try:
                    note = json.loads(m["content"])
                except (KeyError, TypeError, ValueError):
                    continue
                if note.get("table") != args.table:
                    continue
                if note.get("key") is None:  # a TRUNCATE
                    truncates[m["source"]["commit_lsn"]] = note.get("by")
                elif key_matches(note.get("key"), want):
                    notes[m["source"]["commit_lsn"]] = note.get("by")
    finally:
        nc.close()

    # A TRUNCATE concerns the row only while it existed: keep those after an
    # insert/update of it, and, when the stream starts without the row's
    # history, those not followed by its insert.
    kept, alive = [], None
    for i, c in enumerate(changes):
        op = c["e"]["op"]
        if op == "truncate":
            nxt = next((d["e"]["op"] for d in changes[i + 1:] if d["e"]["op"] != "truncate"), None)
            if alive or (alive is None and nxt != "insert"):
                kept.append(c)
            alive = False
            continue
        alive = op != "delete"
        kept.append(c)
    changes = kept

    rows = []
    for c in changes:
        e = c["e"]
        src = e["source"]
        before = e.get("before") or {}
        after = e.get("after") or {}
        if e["op"] == "delete":
            by = notes.get(src["commit_lsn"])
        elif e["op"] == "truncate":
            by = truncates.get(src["commit_lsn"])
        else:
            by = after.get(args.by_column)
        diff = {}
        for col in list(before) + [c for c in after if c not in before]:
            if col in ignore or col == args.by_column:
                continue
            old, new = before.get(col), after.get(col)
            if e["op"] == "update" and col not in after:
                continue  # an unchanged TOASTed value: not sent, not changed
            if e["op"] != "update" or old != new:
                diff[col] = [old, new]
        rows.append({"ts": src["ts"], "op": e["op"], "by": by, "xid": src["xid"],
                     "id": e["id"], "stream_seq": c["seq"], "changes": diff})

    if args.json:
        for r in rows:
            print(json.dumps(r, separators=(",", ":")))
        return
    label = ", ".join(f"{k}={v}" for k, v in want.items())
    if not rows:
        print(f"no change of {args.table} ({label}) in stream {args.stream}")
        return
    print(f"{args.table} ({label}): {len(rows)} change(s)")
    for r in rows:
        by = r["by"] if r["by"] else "unknown"
        print(f"{r['ts']}  {r['op']:<8} by {by}  (xid {r['xid']}, event {r['id']})")
        for col, (old, new) in r["changes"].items():
            if r["op"] == "insert":
                print(f"    {col}: {render(new)}")
            elif r["op"] == "delete":
                print(f"    {col}: was {render(old)}")
            else:
                print(f"    {col}: {render(old)} -> {render(new)}")


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    cs = sub.add_parser("create-stream", help="create (or update) the audit stream with retention limits")
    cs.add_argument("--url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    cs.add_argument("--stream", default="AUDIT")
    cs.add_argument("--subjects", action="append", required=True,
                    help="repeat for each subject filter, e.g. 'audit.shop.>' and 'shop._message.>'")
    cs.add_argument("--max-age", default="365d", help="drop messages older than this (e.g. 90d)")
    cs.add_argument("--max-bytes", default="10GiB", help="drop the oldest messages beyond this size")
    cs.add_argument("--duplicate-window", default="2m", help="Nats-Msg-Id deduplication window")
    cs.add_argument("--replicas", type=int, default=1)
    wc = sub.add_parser("who-changed", help="every change of one row, oldest first")
    wc.add_argument("--url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    wc.add_argument("--stream", default="AUDIT")
    wc.add_argument("--subject-prefix", default="audit.shop",
                    help="the sink's topic template up to {schema}, rendered (default audit.shop)")
    wc.add_argument("--table", required=True, help="schema.table")
    wc.add_argument("--key", action="append", required=True, help="COLUMN=VALUE; repeat for a composite key")
    wc.add_argument("--since", help="RFC 3339 time: only changes stored after it (e.g. 2026-01-31T00:00:00Z)")
    wc.add_argument("--by-column", default="changed_by")
    wc.add_argument("--ignore", action="append", default=["changed_at"], help="columns left out of the diff")
    wc.add_argument("--json", action="store_true", help="one JSON object per change")
    wc.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args()
    try:
        if args.cmd == "create-stream":
            create_stream(args)
        else:
            who_changed(args)
    except ValueError as e:
        print(f"audit.py: {e}", file=sys.stderr)
        return 2
    except (NatsError, OSError) as e:
        print(f"audit.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
