#!/usr/bin/env python3
"""The cache recipe's consumer: keeps one Redis hash per row in step with
PostgreSQL by applying walbus envelopes read from Redis Streams.

  cache.py --redis redis://127.0.0.1:6379/0 --group cache --consumer cache-1 \
      --streams shop.public.products,shop.public.stock

For each stream entry (fields op, id, event) it applies the envelope:
  insert/update/read  HSET <schema>.<table>:<key> column value ...  (NULL -> HDEL)
                      and DEL of the old key when an update changed the key
                      (needs REPLICA IDENTITY FULL, so the envelope has `before`)
  delete              DEL <schema>.<table>:<key>
  truncate            DEL of every <schema>.<table>:* key (SCAN)
and acknowledges the entry (XACK) in the same MULTI/EXEC, so a crash never
leaves a change applied but unacknowledged or the reverse. On start it first
re-reads its own pending entries (XREADGROUP ... 0), then new ones (>).
<key> is the key columns' values joined by ','; values are stored as text:
strings as they are, numbers/booleans/JSON as JSON text.

Python 3 standard library only (RESP over a socket). SIGTERM/SIGINT: finish
the batch, exit 0. Exit 1 on a Redis error, 2 on bad arguments.
"""

import argparse
import json
import signal
import socket
import sys
import time
import urllib.parse


class RedisError(Exception):
    pass


class Redis:
    """A minimal RESP2 client with pipelining."""

    def __init__(self, url, timeout=10.0):
        u = urllib.parse.urlparse(url)
        if u.scheme != "redis":
            raise ValueError(f"{url}: write redis://[user:password@]host:port/db")
        try:
            self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout)
        except OSError as e:
            raise RedisError(f"cannot connect to {u.hostname}:{u.port or 6379}: {e}") from e
        self.buf = b""
        if u.password is not None:
            user = urllib.parse.unquote(u.username or "")
            args = ["AUTH", user, urllib.parse.unquote(u.password)] if user else ["AUTH", urllib.parse.unquote(u.password)]
            self.call(*args)
        db = (u.path or "/").strip("/")
        if db and db != "0":
            self.call("SELECT", db)

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise RedisError("Redis closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RedisError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RedisError(f"unexpected reply {line[:60]!r}")

    def pipeline(self, commands):
        """Sends every command at once; the replies in order (errors as RedisError values)."""
        if not commands:
            return []
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self.read() for _ in commands]

    def call(self, *args):
        r = self.pipeline([args])[0]
        if isinstance(r, RedisError):
            raise r
        return r


def text(v):
    """A column value as the hash stores it."""
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def key_text(key):
    return ",".join(text(v) for v in key.values())


def glob_escape(s):
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


class Cache:
    def __init__(self, r, prefix):
        self.r = r
        self.prefix = prefix
        self.applied = 0

    def hash_key(self, src, key):
        return f"{self.prefix}{src['schema']}.{src['table']}:{key_text(key)}"

    def commands(self, stream, entry_id, e, group):
        """The MULTI/EXEC block that applies one envelope `e` and acknowledges it."""
        ack = ["XACK", stream, group, entry_id]
        if e is None:
            return [ack]  # not a walbus entry (or trimmed): acknowledge, nothing to apply
        op = e.get("op")
        src = e.get("source", {})
        cmds = []
        if op in ("insert", "update", "read"):
            after = e.get("after") or {}
            key = e.get("key") or {}
            k = self.hash_key(src, key)
            before = e.get("before")
            if before and key:
                old_key = {c: before.get(c) for c in key}
                if key_text(old_key) != key_text(key):
                    cmds.append(["DEL", self.hash_key(src, old_key)])
            hset = ["HSET", k]
            nulls = ["HDEL", k]
            for col, v in after.items():
                if v is None:
                    nulls.append(col)
                else:
                    hset += [col, text(v)]
            # A column in `unchanged` (TOASTed, not sent) is absent from after:
            # its field keeps the value the hash already has.
            if len(nulls) > 2:
                cmds.append(nulls)
            if len(hset) > 2:
                cmds.append(hset)
        elif op == "delete":
            cmds.append(["DEL", self.hash_key(src, e.get("key") or {})])
        elif op == "truncate":
            # Everything before this entry is applied already (see apply), so
            # SCAN sees the table's keys as they are at this point.
            pattern = glob_escape(f"{self.prefix}{src['schema']}.{src['table']}:") + "*"
            keys, cursor = [], b"0"
            while True:
                cursor, batch = self.r.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                keys += batch
                if cursor == b"0":
                    break
            for i in range(0, len(keys), 500):
                cmds.append(["DEL"] + keys[i:i + 500])
        return [["MULTI"]] + cmds + [ack, ["EXEC"]]

    def send(self, stream, pipeline):
        replies = self.r.pipeline(pipeline)
        for cmd, reply in zip(pipeline, replies):
            if isinstance(reply, RedisError):
                raise RedisError(f"{cmd[0]} failed while applying {stream}: {reply}")
            if cmd[0] == "EXEC":
                if reply is None:
                    raise RedisError(f"MULTI/EXEC aborted while applying {stream}")
                for inner in reply:
                    if isinstance(inner, RedisError):
                        raise RedisError(f"applying {stream}: {inner}")

    def apply(self, stream, entries, group):
        """Applies and acknowledges `entries` of `stream`, in order: pipelined,
        one MULTI/EXEC each; a truncate first waits for what precedes it."""
        pipeline = []
        for entry_id, flat in entries:
            fields = {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)} if flat else {}
            raw = fields.get(b"event")
            try:
                e = json.loads(raw) if raw is not None else None
            except ValueError as err:
                raise RedisError(f"{stream} entry {entry_id.decode()}: the event field is not JSON ({err})") from err
            if e is not None and e.get("op") == "truncate" and pipeline:
                self.send(stream, pipeline)
                pipeline = []
            pipeline += self.commands(stream, entry_id, e, group)
        self.send(stream, pipeline)
        self.applied += len(entries)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--streams", required=True, help="comma-separated stream keys walbus writes")
    ap.add_argument("--group", default="cache")
    ap.add_argument("--consumer", default="cache-1", help="keep it fixed: pending entries are per consumer")
    ap.add_argument("--prefix", default="", help="prefix of the hash keys (e.g. 'cache:')")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--block-ms", type=int, default=2000)
    args = ap.parse_args()
    streams = [s for s in args.streams.split(",") if s]
    if not streams:
        print("cache.py: --streams is empty: name the walbus stream keys, e.g. shop.public.products", file=sys.stderr)
        return 2

    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        r = Redis(args.redis, timeout=args.block_ms / 1000 + 10)
        for s in streams:
            # From the stream's first entry: a cache built from scratch.
            reply = r.pipeline([["XGROUP", "CREATE", s, args.group, "0", "MKSTREAM"]])[0]
            if isinstance(reply, RedisError) and "BUSYGROUP" not in str(reply):
                raise reply
        cache = Cache(r, args.prefix)
        # Own pending entries first (delivered before a crash, never acknowledged).
        pending = {s: "0" for s in streams}
        print(f"cache.py: consuming {', '.join(streams)} as {args.group}/{args.consumer}", file=sys.stderr, flush=True)
        last_report = time.monotonic()
        while not stop:
            ids = [pending.get(s, ">") for s in streams]
            reply = r.call("XREADGROUP", "GROUP", args.group, args.consumer, "COUNT", args.batch,
                           "BLOCK", args.block_ms, "STREAMS", *streams, *ids)
            got = 0
            for stream, entries in reply or []:
                stream = stream.decode()
                if not entries and stream in pending:
                    del pending[stream]  # this stream's backlog is done: new entries from now
                    continue
                cache.apply(stream, entries, args.group)
                got += len(entries)
                if stream in pending:
                    pending[stream] = entries[-1][0].decode()
            if time.monotonic() - last_report > 10 and got:
                print(f"cache.py: {cache.applied} entries applied", file=sys.stderr, flush=True)
                last_report = time.monotonic()
        print(f"cache.py: stopped after {cache.applied} entries", file=sys.stderr)
    except ValueError as e:
        print(f"cache.py: {e}", file=sys.stderr)
        return 2
    except (RedisError, OSError) as e:
        print(f"cache.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
