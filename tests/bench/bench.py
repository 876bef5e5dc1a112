#!/usr/bin/env python3
"""walbus benchmark harness. Entry point: tests/bench/run.sh (see docs/benchmarks.md).

One run on this machine: a private PostgreSQL 15, nats-server -js, redis-server
and mosquitto on loopback ports 56600-56604 (state under /tmp/walbus-pbench,
stopped by PID at the end). For every throughput workload each contender x sink
gets its own pgoutput slot, created BEFORE the workload is written, so all drain
the identical WAL; the drains then run one after another. Contenders:
  ceiling  pg_recvlogical --plugin=pgoutput -E endpos -f /dev/null (the walsender's decode rate)
  walbus   the binary under test, one sink at a time
  peer     the Node.js bridge of ../shared/bench (lib/peer.js), when that directory exists
Then: latency (a paced load in 10-row transactions while the bridge streams; a
subscriber times commit -> receipt), memory (peak RSS by transaction size and row
width), profile (callgrind instructions per event). Results: tests/bench/out/results.json.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, HERE)
import wire  # noqa: E402
from wire import lsn_num  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
ROOT = "/tmp/walbus-pbench"
PORTS = {"pg": 56600, "nats": 56601, "nats_http": 56602, "redis": 56603, "mqtt": 56604}
DB, PUB = "bench", "bench_pub"
ALL_SINKS = ["stdout", "redis", "nats", "jetstream", "mqtt"]
THROUGHPUT = ["narrow", "wide", "bigtx", "mix"]
STAGES = THROUGHPUT + ["latency", "memory", "profile"]
BROKER = {"redis": "redis", "nats": "nats", "jetstream": "nats", "mqtt": "mqtt"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
T_START = time.monotonic()


def log(msg):
    sys.stderr.write(f"[{time.monotonic() - T_START:7.1f}s] {msg}\n")
    sys.stderr.flush()


def die(msg, code=2):
    sys.stderr.write(f"bench: {msg}\n")
    sys.exit(code)


# ---------------------------------------------------------------- options
def parse_args():
    ap = argparse.ArgumentParser(prog="tests/bench/run.sh", formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=(
        "walbus benchmark: ceiling (pg_recvlogical), walbus per sink and the Node.js peer drain the same "
        "slot data; then latency, memory and callgrind profile. Loopback ports 56600-56604, state in "
        f"{ROOT}, results in tests/bench/out/results.json."))
    ap.add_argument("--quick", action="store_true", help="small sizes and short latency runs (a few minutes)")
    ap.add_argument("--sinks", default=",".join(ALL_SINKS), help="sinks for walbus and the peer")
    ap.add_argument("--workloads", default=",".join(STAGES),
                    help="stages to run")
    ap.add_argument("--contenders", default="ceiling,walbus,peer", help="ceiling,walbus,peer")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every row count")
    ap.add_argument("--narrow-rows", type=int, default=200_000, help="narrow: rows (5 columns)")
    ap.add_argument("--wide-rows", type=int, default=50_000, help="wide: rows (30 columns, ~2 kB)")
    ap.add_argument("--bigtx-rows", type=int, default=1_000_000, help="bigtx: narrow rows in one transaction")
    ap.add_argument("--mix-ops", type=int, default=100_000, help="mix: operations (60/30/10 ins/upd/del, tx of 10)")
    ap.add_argument("--tx-rows", type=int, default=1000, help="rows per transaction in narrow and wide")
    ap.add_argument("--rates", default="10000,50000", help="latency: rows/s, paced, in 10-row transactions")
    ap.add_argument("--lat-seconds", type=float, default=8, help="latency: timed seconds of load per run")
    ap.add_argument("--lat-warmup", type=float, default=2, help="latency: seconds of the same load first, not timed")
    ap.add_argument("--lat-tail-wait", type=float, default=20,
                    help="latency: seconds to wait for the rest after the load ends (a bridge that fell behind)")
    ap.add_argument("--memory-sinks", default="stdout,mqtt", help="walbus sinks for the memory table")
    ap.add_argument("--profile-rows", type=int, default=100_000, help="callgrind: narrow rows drained")
    ap.add_argument("--max-in-flight", type=int, default=10000, help="per sink, walbus's default")
    ap.add_argument("--rss-limit-mb", type=float, default=64,
                    help="a walbus drain whose peak RSS exceeds this fails (0: no check)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per drain")
    ap.add_argument("--walbus-bin", default=os.environ.get("WALBUS_BIN", os.path.join(REPO, "build-bench", "walbus")),
                    help="the walbus binary ($WALBUS_BIN)")
    ap.add_argument("--peer-dir", default=os.environ.get("WALBUS_PEER_DIR", os.path.join(REPO, "..", "shared", "bench")),
                    help="the shared bench holding lib/peer.js ($WALBUS_PEER_DIR)")
    ap.add_argument("--node-modules", default=os.environ.get("WALBUS_PEER_NODE_MODULES", ""),
                    help="the peer's node_modules (default: PEER_DIR/node_modules; run.sh installs them under /tmp)")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "results.json"), help="results JSON")
    ap.add_argument("--note", default="", help="a line shown above the tables in docs/benchmarks.md")
    ap.add_argument("--docs", dest="docs", action="store_true", default=None,
                    help="render docs/benchmarks.md and the charts (default: only after a full, not --quick, run)")
    ap.add_argument("--no-docs", dest="docs", action="store_false", help="never render the docs")
    ap.add_argument("--keep", action="store_true", help="leave the servers running (the next run stops them)")
    o = ap.parse_args()
    lst = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    o.sinks, o.workloads, o.contenders = lst(o.sinks), lst(o.workloads), lst(o.contenders)
    o.memory_sinks = lst(o.memory_sinks)
    for s in o.sinks + o.memory_sinks:
        if s not in ALL_SINKS:
            die(f"unknown sink {s} (one of {','.join(ALL_SINKS)})")
    for w in o.workloads:
        if w not in STAGES:
            die(f"unknown workload {w} (one of {','.join(STAGES)})")
    for c in o.contenders:
        if c not in ("ceiling", "walbus", "peer"):
            die(f"unknown contender {c} (ceiling, walbus, peer)")
    o.rates = [int(x) for x in lst(o.rates)]
    if o.quick:
        o.scale *= 0.1
        o.lat_seconds, o.lat_warmup = min(o.lat_seconds, 4), min(o.lat_warmup, 1)
        o.profile_rows = min(o.profile_rows, 20_000)
    sc = lambda n: max(10, int(round(n * o.scale)))  # noqa: E731
    o.narrow_rows, o.wide_rows, o.bigtx_rows = sc(o.narrow_rows), sc(o.wide_rows), sc(o.bigtx_rows)
    o.mix_ops = max(10, sc(o.mix_ops) // 10 * 10)
    o.mix_base = max(1000, o.mix_ops // 10)
    # memory table: (label, rows per transaction, rows in all); quick: a tenth of the big ones
    big = 1_000_000 if not o.quick else 100_000
    mid = 100_000 if not o.quick else 10_000
    o.memory_cases = [(1000, mid), (mid, mid), (big, big)]
    return o


# ---------------------------------------------------------------- /proc helpers
def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def proc_hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def sys_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[3] + v[4], sum(v)


def busy_pct(a, b):
    idle, total = b[0] - a[0], b[1] - a[1]
    return 100.0 * (1 - idle / total) if total else None


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, capture_output=True, text=True, **kw).stdout.strip()


def tail(path, n=400):
    try:
        with open(path, errors="replace") as f:
            return " ".join(f.read().split())[-n:]
    except OSError:
        return ""


class Proc:
    """A child process reaped by os.wait4, so its own rusage (all threads) is exact."""

    def __init__(self, argv, stdout=None, stderr=None, stdin=None, env=None):
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  env=env, start_new_session=True)
        self.pid = self.p.pid
        self.done = threading.Event()
        self.status = self.rusage = self.t_exit = None
        self.hwm = 0
        threading.Thread(target=self._reap, daemon=True).start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        # Peak RSS is VmHWM of the process's own address space, sampled until it exits. Not
        # wait4's ru_maxrss: Linux carries the forking parent's (this harness's ~20 MB) over exec.
        while not self.done.is_set():
            h = proc_hwm_kb(self.pid)
            if h and h > self.hwm:
                self.hwm = h
            self.done.wait(0.02)

    def _reap(self):
        _, status, ru = os.wait4(self.pid, 0)
        self.status, self.rusage, self.t_exit = status, ru, time.monotonic()
        self.p.returncode = os.waitstatus_to_exitcode(status)
        self.done.set()

    @property
    def exited(self):
        return self.done.is_set()

    @property
    def code(self):
        return self.p.returncode

    def wait(self, timeout=None):
        return self.done.wait(timeout)

    def kill(self, sig):
        h = proc_hwm_kb(self.pid)
        if h and h > self.hwm:
            self.hwm = h
        if not self.exited:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, sig=signal.SIGTERM, grace=15):
        """sig, then SIGKILL after grace seconds; returns True when it exited within the grace."""
        self.kill(sig)
        if self.wait(grace):
            return True
        self.kill(signal.SIGKILL)
        self.wait(10)
        return False

    def cpu_s(self):
        return self.rusage.ru_utime + self.rusage.ru_stime if self.rusage else None

    def maxrss_kb(self):
        return self.hwm or None


# ---------------------------------------------------------------- servers
class Servers:
    def __init__(self, o):
        self.o = o
        self.dirs = {k: os.path.join(ROOT, k) for k in ("pg", "nats", "redis", "mqtt")}
        # the compose scripts' own options (TLS, passwords, persistence...) stay out of the bench
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WALBUS_")}
        self.env.update({
            "WALBUS_PG_DIR": self.dirs["pg"],
            "WALBUS_PG_OPTS": ("-c shared_buffers=1GB -c max_wal_size=16GB -c checkpoint_timeout=1h "
                               "-c logical_decoding_work_mem=64MB -c max_replication_slots=64 -c max_wal_senders=64 "
                               "-c wal_sender_timeout=120s -c max_connections=100 -c log_min_messages=warning"),
            "WALBUS_NATS_DIR": self.dirs["nats"], "WALBUS_NATS_HTTP_PORT": str(PORTS["nats_http"]),
            "WALBUS_NATS_CONF": os.path.join(ROOT, "nats-extra.conf"),
            "WALBUS_REDIS_DIR": self.dirs["redis"],
            "WALBUS_MQTT_DIR": self.dirs["mqtt"],
        })
        self.started = []

    def script(self, name, cmd, port):
        return sh([os.path.join(REPO, "compose", name), cmd, str(port)], env=self.env)

    def stop_all(self):
        for name, port in (("mosquitto.sh", PORTS["mqtt"]), ("redis.sh", PORTS["redis"]),
                           ("nats.sh", PORTS["nats"]), ("pg.sh", PORTS["pg"])):
            try:
                self.script(name, "stop", port)
            except subprocess.CalledProcessError as e:
                log(f"{name} stop: {e.stderr.strip()}")

    def start(self):
        os.makedirs(ROOT, exist_ok=True)
        os.chmod(ROOT, 0o755)
        self.stop_all()  # a previous run's servers (--keep, or a crash): their own pidfiles, their PIDs
        for d in self.dirs.values():
            shutil.rmtree(d, ignore_errors=True)
        for port in PORTS.values():
            if port_open(port):
                die(f"port {port} is in use by something this benchmark did not start")
        with open(self.env["WALBUS_NATS_CONF"], "w") as f:
            f.write("# the subscribers may lag: never cut them off as slow consumers\n"
                    "max_pending: 1073741824\nwrite_deadline: \"60s\"\n")
        log("starting PostgreSQL, nats-server -js, redis-server, mosquitto")
        self.script("pg.sh", "start", PORTS["pg"])
        self.script("nats.sh", "start", PORTS["nats"])
        self.script("redis.sh", "start", PORTS["redis"])
        self.script("mosquitto.sh", "start", PORTS["mqtt"])

    def pid(self, broker):
        f = {"nats": "nats/nats.pid", "redis": "redis/redis.pid", "mqtt": "mqtt/mosquitto.pid"}[broker]
        try:
            with open(os.path.join(ROOT, f)) as fh:
                return int(fh.read().split()[0])
        except (OSError, ValueError):
            return None


def port_open(port):
    import socket
    s = socket.socket()
    s.settimeout(0.5)
    try:
        return s.connect_ex(("127.0.0.1", port)) == 0
    finally:
        s.close()


# ---------------------------------------------------------------- schema and workloads
NARROW_COLS = "customer, amount, created_at, paid"
NARROW_GEN = "'customer-' || (g % 10007), ((g * 7919) % 1000000) / 100.0, now() - make_interval(secs => g % 86400), g % 3 = 0"
WIDE_COLS = ("t1, t2, t3, t4, t5, t6, t7, t8, note, i1, i2, i3, i4, i5, i6, b1, b2, n1, n2, n3, "
             "ts1, ts2, d, bo1, bo2, u, f, vc, meta")
WIDE_GEN = """md5(g::text || 'a') || md5(g::text || 'b'), md5(g::text || 'c') || md5(g::text || 'd'),
  md5(g::text || 'e') || md5(g::text || 'f'), md5(g::text || 'g') || md5(g::text || 'h'),
  md5(g::text || 'i') || md5(g::text || 'j'), md5(g::text || 'k') || md5(g::text || 'l'),
  md5(g::text || 'm') || md5(g::text || 'n'), md5(g::text || 'o') || md5(g::text || 'p'),
  'order note ' || g || ': deliver to the back door, ring twice; ref ' || md5(g::text || 'r'),
  g % 100000, (g * 3) % 100000, (g * 7) % 100000, (g * 11) % 100000, (g * 13) % 100000, (g * 17) % 100000,
  g * 1000003, g * 7, (g % 100000) / 7.0, (g % 9973) / 3.0, (g % 777) / 9.0,
  now() - make_interval(secs => g % 86400), now() + make_interval(secs => g % 3600),
  date '2024-01-01' + (g % 365)::int, g % 2 = 0, g % 5 = 0, md5(g::text)::uuid, g / 3.0, 'status-' || (g % 17),
  jsonb_build_object(
    'sku', 'SKU-' || (g % 5003), 'qty', g % 7 + 1, 'channel', CASE WHEN g % 2 = 0 THEN 'web' ELSE 'store' END,
    'tags', jsonb_build_array('t' || (g % 11), 't' || (g % 13), 't' || (g % 17), 'priority', 'gift'),
    'address', jsonb_build_object('street', md5(g::text || 'st'), 'city', 'city-' || (g % 997),
                                  'zip', lpad((g % 99999)::text, 5, '0'), 'country', 'DE'),
    'lines', jsonb_build_array(
      jsonb_build_object('sku', 'A-' || (g % 101), 'qty', 1, 'price', 9.99),
      jsonb_build_object('sku', 'B-' || (g % 103), 'qty', 2, 'price', 19.5),
      jsonb_build_object('sku', 'C-' || (g % 107), 'qty', 3, 'price', 4.25),
      jsonb_build_object('sku', 'D-' || (g % 109), 'qty', 1, 'price', 99.0),
      jsonb_build_object('sku', 'E-' || (g % 113), 'qty', 5, 'price', 1.75),
      jsonb_build_object('sku', 'F-' || (g % 127), 'qty', 2, 'price', 12.0)),
    'comment', md5(g::text || 'u') || md5(g::text || 'v') || md5(g::text || 'w')
               || md5(g::text || 'x') || md5(g::text || 'y') || md5(g::text || 'z'))"""

SCHEMA = f"""
CREATE TABLE narrow (id bigserial PRIMARY KEY, customer text, amount numeric(12,2), created_at timestamptz, paid bool);
CREATE TABLE wide (id bigserial PRIMARY KEY,
  t1 text, t2 text, t3 text, t4 text, t5 text, t6 text, t7 text, t8 text, note text,
  i1 int, i2 int, i3 int, i4 int, i5 int, i6 int, b1 bigint, b2 bigint,
  n1 numeric(14,4), n2 numeric(14,4), n3 numeric(14,4), ts1 timestamptz, ts2 timestamptz, d date,
  bo1 bool, bo2 bool, u uuid, f float8, vc varchar(64), meta jsonb);
CREATE PUBLICATION {PUB} FOR TABLE narrow, wide;
CREATE PROCEDURE bench_insert(tbl text, total bigint, txsize int) LANGUAGE plpgsql AS $$
DECLARE done bigint := 0; n int;
BEGIN
  WHILE done < total LOOP
    n := least(txsize, total - done);
    IF tbl = 'narrow' THEN
      INSERT INTO narrow ({NARROW_COLS}) SELECT {NARROW_GEN} FROM generate_series(done + 1, done + n) AS g;
    ELSE
      INSERT INTO wide ({WIDE_COLS}) SELECT {WIDE_GEN} FROM generate_series(done + 1, done + n) AS g;
    END IF;
    done := done + n;
    COMMIT;
  END LOOP;
END $$;
-- 60/30/10: per transaction 6 inserts, 3 updates of pre-existing rows, 1 delete of a row this workload inserted
CREATE PROCEDURE bench_mix(total_ops int, base bigint) LANGUAGE plpgsql AS $$
DECLARE next_ins bigint := base + 1; next_del bigint := base + 1;
BEGIN
  FOR k IN 0 .. total_ops / 10 - 1 LOOP
    INSERT INTO narrow (id, {NARROW_COLS}) SELECT g, {NARROW_GEN} FROM generate_series(next_ins, next_ins + 5) AS g;
    next_ins := next_ins + 6;
    UPDATE narrow SET amount = amount + 1, paid = NOT paid
      WHERE id IN (SELECT ((k::bigint * 3 + j) % base) + 1 FROM generate_series(0, 2) AS j);
    DELETE FROM narrow WHERE id = next_del;
    next_del := next_del + 1;
    COMMIT;
  END LOOP;
END $$;
-- latency load: transaction k (of txrows rows) starts at t0 + k * txrows / rate (Unix seconds);
-- this connection runs k = part, part + nparts, ...; a late one starts at once; returns how late it ever was
CREATE PROCEDURE bench_paced(t0 float8, rate float8, txrows int, ntx int, part int, nparts int,
                             INOUT behind_ms float8 DEFAULT 0) LANGUAGE plpgsql AS $$
DECLARE k int := part; due float8; t float8;
BEGIN
  WHILE k < ntx LOOP
    due := t0 + k::float8 * txrows / rate;
    t := extract(epoch from clock_timestamp());
    IF due > t THEN PERFORM pg_sleep(due - t); ELSE behind_ms := greatest(behind_ms, (t - due) * 1000); END IF;
    INSERT INTO narrow ({NARROW_COLS}) SELECT {NARROW_GEN}
      FROM generate_series(k::bigint * txrows + 1, (k::bigint + 1) * txrows) AS g;
    COMMIT;
    k := k + nparts;
  END LOOP;
END $$;
"""


class Workload:
    def __init__(self, name, title, desc, events, table, load, prepare=None):
        self.name, self.title, self.desc, self.events, self.table = name, title, desc, events, table
        self.load, self.prepare = load, prepare
        self.start_lsn = self.endpos = None


def insert_sql(table, total, tx):
    if tx >= total:
        cols, gen = (NARROW_COLS, NARROW_GEN) if table == "narrow" else (WIDE_COLS, WIDE_GEN)
        return f"INSERT INTO {table} ({cols}) SELECT {gen} FROM generate_series(1::bigint, {total}) AS g"
    return f"CALL bench_insert('{table}', {total}, {tx})"


def workloads(o):
    w = {
        "narrow": Workload("narrow", "narrow rows", f"{o.narrow_rows:,} inserts of 5 columns in tx of {o.tx_rows:,}",
                           o.narrow_rows, "narrow", insert_sql("narrow", o.narrow_rows, o.tx_rows)),
        "wide": Workload("wide", "wide rows", f"{o.wide_rows:,} inserts of 30 columns (~2 kB, jsonb) in tx of {o.tx_rows:,}",
                         o.wide_rows, "wide", insert_sql("wide", o.wide_rows, o.tx_rows)),
        "bigtx": Workload("bigtx", "one big tx", f"{o.bigtx_rows:,} narrow inserts in ONE transaction",
                          o.bigtx_rows, "narrow", insert_sql("narrow", o.bigtx_rows, o.bigtx_rows)),
        "mix": Workload("mix", "mixed 60/30/10", f"{o.mix_ops:,} ops on narrow rows, 60/30/10 insert/update/delete, tx of 10",
                        o.mix_ops, "narrow", f"CALL bench_mix({o.mix_ops}, {o.mix_base})",
                        prepare=f"INSERT INTO narrow (id, {NARROW_COLS}) SELECT g, {NARROW_GEN} FROM generate_series(1::bigint, {o.mix_base}) AS g"),
    }
    return w


# ---------------------------------------------------------------- the bench
class Bench:
    def __init__(self, o):
        self.o = o
        self.srv = Servers(o)
        self.results, self.latency, self.memory, self.profile = [], [], [], None
        self.notes = []
        self.out_dir = os.path.join(ROOT, "out")
        self.interrupted = False

    # -------------------------------------------------- setup
    def setup(self):
        self.srv.start()
        os.makedirs(self.out_dir, exist_ok=True)
        pg = wire.PgConn(PORTS["pg"])
        pg.query(f"CREATE DATABASE {DB}")
        pg.close()
        self.pg = wire.PgConn(PORTS["pg"], DB)
        self.pg.query(SCHEMA)
        self.redis = wire.Redis(PORTS["redis"])
        self.nats = wire.Nats(PORTS["nats"])
        self.walbus = self.find_walbus()
        self.peer = self.find_peer()

    def q(self, sql):
        return self.pg.query(sql)

    def find_walbus(self):
        b = self.o.walbus_bin
        if "walbus" not in self.o.contenders:
            return None
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            log(f"walbus: no executable at {b} (run.sh builds build-bench; or set WALBUS_BIN)")
            return None
        try:
            v = sh([b, "version"]).splitlines()[0]
        except (subprocess.CalledProcessError, IndexError):
            v = "?"
        return {"bin": b, "version": v}

    def find_peer(self):
        if "peer" not in self.o.contenders:
            return None
        d = os.path.abspath(self.o.peer_dir)
        script = os.path.join(d, "lib", "peer.js")
        if not os.path.isfile(script):
            msg = f"peer: {self.o.peer_dir} not found (no lib/peer.js): the peer column is empty"
            log(msg)
            self.notes.append(msg)
            return None
        node = shutil.which("node")
        nm = self.o.node_modules or os.path.join(d, "node_modules")
        if not node or not os.path.isdir(os.path.join(nm, "pg-logical-replication")):
            msg = f"peer: node or its modules ({nm}) missing: the peer column is empty"
            log(msg)
            self.notes.append(msg)
            return None
        env = dict(os.environ, NODE_PATH=nm)
        try:
            ver = sh([node, "--version"])
        except subprocess.CalledProcessError:
            ver = "?"
        return {"script": script, "node": node, "env": env, "dir": d, "node_version": ver}

    def contenders_for(self, sinks):
        runs = []
        if "ceiling" in self.o.contenders:
            runs.append(("ceiling", None))
        if self.walbus:
            runs += [("walbus", s) for s in sinks]
        if self.peer:
            runs += [("peer", s) for s in sinks]
        return runs

    # -------------------------------------------------- sinks
    def prepare_sink(self, sink, slot):
        stream = None
        if sink == "redis":
            self.redis.command("FLUSHALL")
        if sink == "jetstream":
            stream = slot.upper()
            try:
                self.nats.js(f"STREAM.DELETE.{stream}")
            except wire.WireError:
                pass
            self.nats.js(f"STREAM.CREATE.{stream}", {
                "name": stream, "subjects": ["js.>"], "storage": "file", "retention": "limits",
                "num_replicas": 1, "duplicate_window": 120 * 10**9, "discard": "old"})
        return stream

    def cleanup_sink(self, sink, stream):
        try:
            if sink == "redis":
                self.redis.command("FLUSHALL")
            if sink == "jetstream" and stream:
                self.nats.js(f"STREAM.DELETE.{stream}")
        except wire.WireError as e:
            log(f"cleanup {sink}: {e}")

    def stored(self, sink, table, stream):
        if sink == "redis":
            return self.redis.command("XLEN", f"{DB}.public.{table}")
        if sink == "jetstream":
            return self.nats.js(f"STREAM.INFO.{stream}")["state"]["messages"]
        return None

    def start_subscriber(self, sink, mode, expect, stream=None, warmup_ms=0):
        kind = sink
        args = [sys.executable, os.path.join(HERE, "subscriber.py"), "--kind", kind, "--mode", mode,
                "--expect", str(expect), "--warmup-ms", str(warmup_ms)]
        if sink == "nats":
            args += ["--port", str(PORTS["nats"]), "--topic", "core.>"]
        elif sink == "jetstream":
            args += ["--port", str(PORTS["nats"]), "--stream", stream]
        elif sink == "mqtt":
            args += ["--port", str(PORTS["mqtt"]), "--topic", f"{DB}/#"]
        elif sink == "redis":
            args += ["--port", str(PORTS["redis"]), "--topic", f"{DB}.public.narrow"]
        sub = Subscriber(args, stdin=subprocess.PIPE if sink == "stdout" else None)
        if not sub.ready.wait(15):
            sub.stop()
            raise RuntimeError(f"{sink} subscriber not ready: {sub.err()}")
        return sub

    # -------------------------------------------------- contenders
    def sink_url(self, sink):
        return {"redis": f"redis://127.0.0.1:{PORTS['redis']}/0", "nats": f"nats://127.0.0.1:{PORTS['nats']}",
                "jetstream": f"nats://127.0.0.1:{PORTS['nats']}", "mqtt": f"tcp://127.0.0.1:{PORTS['mqtt']}"}.get(sink)

    def walbus_toml(self, slot, sink, stream):
        lines = ["[source]", f'dsn = "host=127.0.0.1 port={PORTS["pg"]} dbname={DB} user=postgres"',
                 f'slot = "{slot}"', f'publication = "{PUB}"', "create_slot = false", "create_publication = false",
                 "status_interval_ms = 100", "", "[[sink]]", f'name = "{sink}"', f'type = "{sink}"',
                 f"max_in_flight = {self.o.max_in_flight}"]
        if sink == "redis":
            lines += [f'url = "{self.sink_url(sink)}"', 'id = "lsn"']
        elif sink == "nats":
            lines += [f'url = "{self.sink_url(sink)}"', 'topic = "core.{db}.{schema}.{table}.{op}"']
        elif sink == "jetstream":
            lines += [f'url = "{self.sink_url(sink)}"', f'stream = "{stream}"', "create_stream = false",
                      'topic = "js.{db}.{schema}.{table}.{op}"']
        elif sink == "mqtt":
            lines += [f'url = "{self.sink_url(sink)}"', "qos = 1", f'client_id = "walbus-{slot}"']
        lines += ["", "[metrics]", 'listen = ""', ""]
        path = os.path.join(self.out_dir, f"{slot}.toml")
        with open(path, "w") as f:
            f.write("\n".join(lines))
        return path

    def spawn(self, contender, sink, slot, stream, expect, endpos, events_file=None, events_pipe=None, wrapper=()):
        """Starts one contender. Events of the stdout sink go to events_file, or into events_pipe
        (latency: the subscriber's stdin); the process's own stdout otherwise goes to out/<slot>.stdout
        (the peer's report line) or /dev/null (walbus with a broker sink)."""
        err = open(os.path.join(self.out_dir, f"{slot}.stderr"), "w")
        env = None
        own_out = os.path.join(self.out_dir, f"{slot}.stdout")
        if contender == "ceiling":
            argv = [shutil.which("pg_recvlogical") or "pg_recvlogical", "-h", "127.0.0.1", "-p", str(PORTS["pg"]),
                    "-U", "postgres", "-d", DB, f"--slot={slot}", "--start", "--plugin=pgoutput",
                    "-o", "proto_version=1", "-o", f"publication_names={PUB}", "-E", endpos, "-f", "/dev/null", "--no-loop"]
        elif contender == "walbus":
            argv = [*wrapper, self.walbus["bin"], "run", "-c", self.walbus_toml(slot, sink, stream)]
            own_out = events_file if sink == "stdout" and events_file else "/dev/null"
        else:
            argv = [self.peer["node"], self.peer["script"], "--host", "127.0.0.1", "--port", str(PORTS["pg"]),
                    "--user", "postgres", "--db", DB, "--slot", slot, "--publication", PUB, "--sink", sink,
                    "--expect", str(expect), "--max-in-flight", str(self.o.max_in_flight),
                    "--timeout", str(int(self.o.timeout))]
            if endpos:
                argv += ["--endpos", endpos]
            if stream:
                argv += ["--stream", stream]
            if sink == "stdout":
                argv += ["--url", "-" if events_pipe is not None else events_file]
            else:
                argv += ["--url", self.sink_url(sink).replace("tcp://", "mqtt://")]
            env = self.peer["env"]
        if sink == "stdout" and events_pipe is not None and contender != "ceiling":
            out = events_pipe  # the peer then writes its report to stderr
        else:
            out = open(own_out, "w")
        try:
            return Proc(argv, stdout=out, stderr=err, env=env)
        finally:
            err.close()
            if out is not events_pipe:
                out.close()

    def slot_state(self, slot):
        r = self.q(f"SELECT active_pid, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'")
        return (int(r[0][0]) if r and r[0][0] else None, r[0][1] if r else None)

    def drop_slot(self, slot):
        for _ in range(100):
            r = self.q(f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'")
            if not r:
                return
            if r[0][0] == "f":
                try:
                    self.q(f"SELECT pg_drop_replication_slot('{slot}')")
                    return
                except wire.PgError:
                    pass
            time.sleep(0.1)
        log(f"warning: could not drop slot {slot}")

    # -------------------------------------------------- throughput
    def run_workload(self, W):
        o = self.o
        runs = self.contenders_for(o.sinks)
        log(f"{W.name}: {W.desc}")
        self.q("TRUNCATE narrow, wide")
        if W.prepare:
            self.q(W.prepare)
        self.q("CHECKPOINT")
        slots = []
        for c, s in runs:
            slot = f"pb_{W.name}_{c}" + (f"_{s}" if s else "")
            self.drop_slot(slot)
            self.q(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
            slots.append((c, s, slot))
        W.start_lsn = self.q("SELECT pg_current_wal_lsn()")[0][0]
        t = time.monotonic()
        self.q(W.load)
        W.load_s = time.monotonic() - t
        W.endpos = self.q("SELECT pg_current_wal_lsn()")[0][0]
        W.wal_bytes = int(self.q(f"SELECT pg_wal_lsn_diff('{W.endpos}', '{W.start_lsn}')")[0][0])
        self.q("CHECKPOINT")
        log(f"  loaded in {W.load_s:.1f} s, {W.wal_bytes / 1e6:.0f} MB of WAL; draining {len(slots)} slots")
        out = []
        for c, s, slot in slots:
            if self.interrupted:
                break
            res = self.drain(W, c, s, slot)
            out.append(res)
            time.sleep(0.3)
        return out

    def drain(self, W, contender, sink, slot, stdout_null=False, wrapper=(), no_counter=False):
        o = self.o
        expect = W.events
        res = {"workload": W.name, "contender": contender, "sink": sink or "-", "slot": slot, "events": expect,
               "ok": False, "notes": []}
        log(f"  {contender}{'/' + sink if sink else ''}: {expect:,} events from {slot}")
        counter = proc = stream = None
        stdout_file = None
        try:
            stream = self.prepare_sink(sink, slot)
            if sink in ("nats", "mqtt") and not no_counter:
                counter = self.start_subscriber(sink, "count", expect)
            if sink == "stdout":
                stdout_file = "/dev/null" if stdout_null else os.path.join(self.out_dir, f"{slot}.lines")
            bpid = self.srv.pid(BROKER[sink]) if sink in BROKER else None
            b0 = proc_cpu(bpid) if bpid else None
            s0 = sys_cpu()
            end_n = lsn_num(W.endpos)
            t0 = time.monotonic()
            proc = self.spawn(contender, sink, slot, stream, expect, W.endpos, events_file=stdout_file, wrapper=wrapper)
            storing = sink in ("redis", "jetstream")
            t_acked = t_deliv = t_done = None
            ws_cpu = ws_pid = ws_hwm = None
            last_store = 0.0
            confirmed = None
            violation = None
            deadline = t0 + o.timeout
            while True:
                apid, cf = self.slot_state(slot)
                if apid:
                    ws_pid = apid
                    c = proc_cpu(apid)
                    if c is not None:
                        ws_cpu = c
                    h = proc_hwm_kb(apid)
                    if h is not None:
                        ws_hwm = h
                confirmed = cf or confirmed
                tn = time.monotonic()
                reached = confirmed is not None and lsn_num(confirmed) >= end_n
                if storing and not t_deliv and (tn - last_store > 0.1 or reached):
                    last_store = tn
                    if self.stored(sink, W.table, stream) >= expect:
                        t_deliv = tn
                if counter and counter.t_done and not t_deliv:
                    t_deliv = counter.t_done
                if contender != "ceiling" and reached and not t_acked:
                    t_acked = tn
                    if storing:
                        n = self.stored(sink, W.table, stream)
                        if n < expect:
                            violation = f"slot confirmed {confirmed} while the broker held {n}/{expect}"
                        elif not t_deliv:
                            t_deliv = t_acked
                stuck = contender != "ceiling" and not t_acked and t_deliv and tn - t_deliv > 10
                if stuck:
                    res["notes"].append(f"slot stuck at {confirmed} < endpos {W.endpos} 10 s after delivery")
                if contender == "ceiling":
                    if proc.exited:
                        t_done = proc.t_exit
                elif t_acked and (not storing or t_deliv):
                    t_done = max(t_acked, t_deliv or 0)
                elif stuck:
                    t_done = t_deliv
                elif proc.exited:
                    res["notes"].append(f"{contender} exited early (code {proc.code}): {tail(os.path.join(self.out_dir, slot + '.stderr'))}")
                    t_done = proc.t_exit
                if t_done:
                    s1 = sys_cpu()
                    b1 = proc_cpu(bpid) if bpid else None
                    break
                if tn > deadline:
                    raise RuntimeError(f"no completion within {o.timeout:.0f} s (confirmed {confirmed}, endpos {W.endpos})")
                time.sleep(0.05)
            # stop / reap
            if contender == "walbus":
                t = time.monotonic()
                if not proc.stop(signal.SIGTERM, 15):
                    res["notes"].append("walbus did not exit within 15 s of SIGTERM")
                res["stop_s"] = round(time.monotonic() - t, 3)
            elif not proc.wait(15):
                res["notes"].append(f"{contender} did not exit within 15 s of completion")
                proc.stop(signal.SIGKILL, 5)
            wall = t_done - t0
            res.update({
                "wall_s": round(wall, 3), "events_per_s": round(expect / wall, 1),
                "cpu_s": round(proc.cpu_s(), 3), "cpu_us_per_event": round(proc.cpu_s() / expect * 1e6, 3),
                "peak_rss_kb": proc.maxrss_kb(), "exit_code": proc.code,
                "walsender_cpu_s": ws_cpu, "walsender_pid": ws_pid, "walsender_hwm_kb": ws_hwm,
                "broker": BROKER.get(sink), "broker_cpu_s": round(b1 - b0, 2) if b0 is not None and b1 is not None else None,
                "broker_cpu_us_per_event": round((b1 - b0) / expect * 1e6, 2) if b0 is not None and b1 is not None else None,
                "machine_busy_pct": round(busy_pct(s0, s1), 1),
                "t_acked_s": round(t_acked - t0, 3) if t_acked else None,
                "t_delivered_s": round(t_deliv - t0, 3) if t_deliv else None,
            })
            if ws_cpu is not None:
                res["walsender_cpu_pct"] = round(100 * ws_cpu / wall, 1)
            _, cf = self.slot_state(slot)
            res["confirmed_flush_lsn"] = cf
            res["lsn_acknowledged"] = bool(cf and lsn_num(cf) >= end_n)
            # what reached the broker
            delivered = None
            if storing:
                delivered = self.stored(sink, W.table, stream)
            if counter:
                tw = time.monotonic()
                while counter.count < expect and counter.alive() and time.monotonic() - tw < 120:
                    time.sleep(0.05)
                rep = counter.stop()
                delivered = counter.count
                res["consumer_lag_s"] = round(max(0.0, counter.t_done - t_done), 3) if counter.t_done else None
                res["consumer_cpu_s"] = rep.get("cpu_s") if rep else None
            if sink == "stdout" and stdout_file and stdout_file != "/dev/null":
                delivered = count_lines(stdout_file)
                if delivered:
                    res["avg_line_bytes"] = round(os.path.getsize(stdout_file) / delivered, 1)
            res["delivered"] = delivered
            if violation:
                res["notes"].append(f"AT-LEAST-ONCE VIOLATION: {violation}")
            if contender == "peer":
                rep = last_json_line(os.path.join(self.out_dir, f"{slot}.stdout"))
                if rep:
                    res["peer_report"] = {k: rep.get(k) for k in ("acked", "published", "stream_s", "pauses", "dup_acks", "maxrss_kb")}
            if contender == "ceiling":
                res["ok"] = proc.code == 0
                if not res["ok"]:
                    res["notes"].append(f"pg_recvlogical exit {proc.code}: {tail(os.path.join(self.out_dir, slot + '.stderr'))}")
            else:
                ok_count = delivered is None or delivered >= expect
                if not ok_count:
                    res["notes"].append(f"broker has {delivered}/{expect}")
                if not res["lsn_acknowledged"]:
                    res["notes"].append(f"slot confirmed_flush_lsn {cf} < endpos {W.endpos}")
                if proc.code != 0:
                    res["notes"].append(f"{contender} exit {proc.code}: {tail(os.path.join(self.out_dir, slot + '.stderr'))}")
                res["ok"] = ok_count and res["lsn_acknowledged"] and not violation and proc.code == 0
                # Memory regression check (issue 8): walbus's memory is bounded by the in-flight
                # window whatever the sink, row width or transaction size. Not under a wrapper
                # (callgrind's own memory counts in the process's RSS).
                rss = res.get("peak_rss_kb")
                if contender == "walbus" and not wrapper and o.rss_limit_mb and rss and rss > o.rss_limit_mb * 1024:
                    res["notes"].append(f"peak RSS {rss / 1024:.0f} MB exceeds the {o.rss_limit_mb:g} MB bound")
                    res["rss_over_limit"] = True
                    res["ok"] = False
        except (RuntimeError, OSError, wire.WireError) as e:
            res["notes"].append(f"error: {e}")
            if proc:
                proc.stop(signal.SIGKILL, 5)
                res["stderr_tail"] = tail(os.path.join(self.out_dir, slot + ".stderr"))
        finally:
            if counter:
                counter.stop()
            self.cleanup_sink(sink, stream)
            if stdout_file and stdout_file.endswith(".lines"):
                try:
                    os.remove(stdout_file)
                except OSError:
                    pass
            self.drop_slot(slot)
        eps = f"{res['events_per_s']:,.0f} ev/s, {res['cpu_us_per_event']:.2f} us/ev, {res['peak_rss_kb'] / 1024:.0f} MB" \
            if res.get("events_per_s") else ""
        log(f"    -> {'ok' if res['ok'] else 'FAILED'} {eps}{' (' + '; '.join(res['notes']) + ')' if res['notes'] else ''}")
        return res

    # -------------------------------------------------- latency
    def run_latency(self, rate, contender, sink):
        o = self.o
        tx = 10
        ntx = int(round(rate * (o.lat_seconds + o.lat_warmup) / tx))
        expect = ntx * tx
        slot = f"pb_lat{rate // 1000}k_{contender}_{sink}"
        res = {"rate": rate, "contender": contender, "sink": sink, "slot": slot, "events": expect, "tx_rows": tx,
               "ok": False, "notes": []}
        log(f"latency {rate:,} rows/s {contender}/{sink}: {expect:,} rows in tx of {tx} while it streams")
        sub = proc = stream = None
        loaders = []
        try:
            self.q("TRUNCATE narrow, wide")
            self.q("CHECKPOINT")
            self.drop_slot(slot)
            stream = self.prepare_sink(sink, slot)
            self.q(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
            start_lsn = self.q("SELECT pg_current_wal_lsn()")[0][0]
            sub = self.start_subscriber(sink, "latency", expect, stream=stream, warmup_ms=o.lat_warmup * 1000)
            pipe = sub.p.p.stdin if sink == "stdout" else None
            t0 = time.monotonic()
            proc = self.spawn(contender, sink, slot, stream, expect, None, events_pipe=pipe)
            if pipe:
                pipe.close()  # the contender holds the write end now
            ws_pid = None
            while not ws_pid:
                r = self.q(f"""SELECT s.active_pid, r.state, r.reply_time IS NOT NULL FROM pg_replication_slots s
                               LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = '{slot}'""")
                if r and r[0][1] == "streaming" and r[0][2] == "t":
                    ws_pid = int(r[0][0])
                elif proc.exited:
                    raise RuntimeError(f"{contender} exited (code {proc.code}) before streaming: "
                                       f"{tail(os.path.join(self.out_dir, slot + '.stderr'))}")
                elif time.monotonic() - t0 > 30:
                    raise RuntimeError(f"{contender} not streaming from {slot} within 30 s")
                else:
                    time.sleep(0.05)
            res["t_streaming_s"] = round(time.monotonic() - t0, 3)
            nparts = 4
            for _ in range(nparts):
                loaders.append(wire.PgConn(PORTS["pg"], DB, app="walbus-bench-load"))
            time.sleep(1.0)
            bpid = self.srv.pid(BROKER[sink]) if sink in BROKER else None
            cpu0 = (proc_cpu(proc.pid), proc_cpu(ws_pid), proc_cpu(bpid) if bpid else None, sys_cpu())
            t_load0 = time.time() + 0.05
            behind = [0.0] * nparts
            errors = []

            def load(i):
                try:
                    r = loaders[i].query(f"CALL bench_paced({t_load0:.6f}, {rate}, {tx}, {ntx}, {i}, {nparts})")
                    behind[i] = float(r[0][0]) if r and r[0][0] else 0.0
                except (OSError, wire.WireError) as e:
                    errors.append(str(e))
            ths = [threading.Thread(target=load, args=(i,)) for i in range(nparts)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            t_load1 = time.time()
            cpu1 = (proc_cpu(proc.pid), proc_cpu(ws_pid), proc_cpu(bpid) if bpid else None, sys_cpu())
            # where a backlog sits when the load ends: at the broker (the subscriber lags) or before it
            res["at_load_end"] = {"subscriber": sub.count,
                                  "broker": self.stored(sink, "narrow", stream) if sink in ("redis", "jetstream") else None}
            if errors:
                raise RuntimeError(f"load: {errors[0]}")
            endpos = self.q("SELECT pg_current_wal_lsn()")[0][0]
            loaded = int(self.q("SELECT count(*) FROM narrow")[0][0])
            end_n, tl, t_deliv, confirmed = lsn_num(endpos), time.monotonic(), None, None
            seen = [(tl, sub.count)]
            while True:
                _, confirmed = self.slot_state(slot)
                tn = time.monotonic()
                if sub.count >= expect and not t_deliv:
                    t_deliv = tn
                seen.append((tn, sub.count))
                while len(seen) > 2 and tn - seen[1][0] >= 1.0:
                    seen.pop(0)
                # Fell behind: give up at once when the last second's rate cannot deliver the rest in time.
                rate_1s = (seen[-1][1] - seen[0][1]) / max(1e-3, seen[-1][0] - seen[0][0])
                if not t_deliv and tn - tl > 1.0 and (expect - sub.count) > rate_1s * (o.lat_tail_wait - (tn - tl)):
                    res["gave_up"] = True
                    res["notes"].append(f"subscriber has {sub.count}/{expect} {tn - tl:.1f} s after the load, "
                                        f"at {rate_1s:,.0f}/s: stopped waiting")
                    break
                if t_deliv and confirmed and lsn_num(confirmed) >= end_n:
                    break
                if t_deliv and time.monotonic() - t_deliv > 10:
                    res["notes"].append(f"slot confirmed_flush_lsn {confirmed} < endpos {endpos} 10 s after every event arrived")
                    break
                if not t_deliv and proc.exited and time.monotonic() - proc.t_exit > 5:
                    res["notes"].append(f"{contender} exited (code {proc.code}) with {sub.count}/{expect} at the subscriber")
                    break
                if time.monotonic() - tl > o.lat_tail_wait:
                    res["gave_up"] = True
                    res["notes"].append(f"subscriber has {sub.count}/{expect} {o.lat_tail_wait:g} s after the load: stopped waiting")
                    break
                time.sleep(0.05)
            if res.get("gave_up"):
                proc.stop(signal.SIGTERM, 5)
            elif contender == "walbus":
                proc.stop(signal.SIGTERM, 15)
            elif not proc.wait(15):
                proc.stop(signal.SIGKILL, 5)
            rep = sub.stop()
            if not rep:
                raise RuntimeError(f"no report from the latency subscriber: {sub.err()}")
            win = t_load1 - t_load0
            d = lambda i: (cpu1[i] - cpu0[i]) if cpu0[i] is not None and cpu1[i] is not None else None  # noqa: E731
            lm = rep.get("latency_ms") or {}
            dist = rep.get("distinct") or 0
            res.update({
                "rows_loaded": loaded, "load_s": round(win, 3), "load_rows_per_s": round(loaded / win, 1),
                "load_max_behind_ms": round(max(behind), 2), "wal_bytes": int(self.q(
                    f"SELECT pg_wal_lsn_diff('{endpos}', '{start_lsn}')")[0][0]),
                "latency_ms": lm, "warmup_events": rep.get("warmup_events"), "by_second": rep.get("by_second"),
                "delivered_per_s": round(dist / ((rep["last_recv_ms"] - rep["first_commit_ms"]) / 1000), 1)
                if dist and rep.get("last_recv_ms") else None,
                "tail_ms": round(rep["last_recv_ms"] - t_load1 * 1000, 1) if rep.get("last_recv_ms") else None,
                "subscriber": {k: rep.get(k) for k in ("received", "distinct", "dups", "bad", "bad_sample", "cpu_s")},
                "cpu_pct": round(100 * d(0) / win, 1) if d(0) is not None else None,
                "walsender_cpu_pct": round(100 * d(1) / win, 1) if d(1) is not None else None,
                "broker_cpu_pct": round(100 * d(2) / win, 1) if d(2) is not None else None,
                "machine_busy_pct": round(busy_pct(cpu0[3], cpu1[3]), 1),
                "peak_rss_kb": proc.maxrss_kb(), "exit_code": proc.code,
            })
            _, cf = self.slot_state(slot)
            res["lsn_acknowledged"] = bool(cf and lsn_num(cf) >= end_n)
            res["kept_up"] = bool(res["delivered_per_s"] and res["delivered_per_s"] >= 0.95 * res["load_rows_per_s"])
            stored = self.stored(sink, "narrow", stream) if sink in ("redis", "jetstream") else None
            if loaded != expect:
                res["notes"].append(f"loaded {loaded}/{expect} rows")
            if dist < expect:
                res["notes"].append(f"subscriber got {dist}/{expect} events")
            if rep.get("dups"):
                res["notes"].append(f"{rep['dups']} duplicates")
            if rep.get("bad"):
                res["notes"].append(f"{rep['bad']} events without id/source.ts, e.g. {rep.get('bad_sample')}")
            if stored is not None and stored < expect:
                res["notes"].append(f"broker has {stored}/{expect}")
            if not res["lsn_acknowledged"]:
                res["notes"].append(f"slot confirmed_flush_lsn {cf} < endpos {endpos}")
            if proc.code != 0:
                res["notes"].append(f"{contender} exit {proc.code}: {tail(os.path.join(self.out_dir, slot + '.stderr'))}")
            if not res["kept_up"]:
                res["notes"].append(f"fell behind: delivered {res['delivered_per_s'] or 0:,.0f}/s of {res['load_rows_per_s']:,.0f} rows/s")
            res["ok"] = (loaded == expect and dist >= expect and not rep.get("bad") and (stored is None or stored >= expect)
                         and res["lsn_acknowledged"] and proc.code == 0)
        except (RuntimeError, OSError, wire.WireError) as e:
            res["notes"].append(f"error: {e}")
            if proc:
                proc.stop(signal.SIGKILL, 5)
                res["stderr_tail"] = tail(os.path.join(self.out_dir, slot + ".stderr"))
        finally:
            if sub:
                sub.stop()
            for c in loaders:
                c.close()
            self.cleanup_sink(sink, stream)
            self.drop_slot(slot)
        lm = res.get("latency_ms") or {}
        log(f"    -> {'ok' if res['ok'] else 'behind' if res.get('gave_up') else 'FAILED'}"
            + (f" p50 {lm['p50']:.2f} ms, p99 {lm['p99']:.2f} ms, max {lm['max']:.1f} ms; "
               f"loaded {res['load_rows_per_s']:,.0f}/s, delivered {res['delivered_per_s'] or 0:,.0f}/s" if lm else "")
            + (f" ({'; '.join(res['notes'])})" if res["notes"] else ""))
        return res

    # -------------------------------------------------- memory
    def run_memory(self):
        o = self.o
        out = self.memory
        if not self.walbus:
            return out
        for table in ("narrow", "wide"):
            for tx, total in o.memory_cases:
                if self.interrupted:
                    return out
                W = Workload(f"mem_{table}_{tx}", "memory", f"{total:,} {table} rows in tx of {tx:,}", total, table,
                             insert_sql(table, total, tx))
                log(f"memory: {W.desc}")
                self.q("TRUNCATE narrow, wide")
                self.q("CHECKPOINT")
                slots = []
                for s in o.memory_sinks:
                    slot = f"pb_mem_{table}_{tx}_{s}"
                    self.drop_slot(slot)
                    self.q(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
                    slots.append((s, slot))
                W.start_lsn = self.q("SELECT pg_current_wal_lsn()")[0][0]
                t = time.monotonic()
                self.q(W.load)
                load_s = time.monotonic() - t
                W.endpos = self.q("SELECT pg_current_wal_lsn()")[0][0]
                wal = int(self.q(f"SELECT pg_wal_lsn_diff('{W.endpos}', '{W.start_lsn}')")[0][0])
                self.q("CHECKPOINT")
                log(f"  loaded in {load_s:.1f} s, {wal / 1e6:.0f} MB of WAL")
                for s, slot in slots:
                    # With the counting subscriber (nats, mqtt): a broker that also forwards
                    # reads slower, which is when unbounded buffers showed (146 MB on wide/mqtt).
                    r = self.drain(W, "walbus", s, slot, stdout_null=True)
                    r.update({"table": table, "tx_rows": tx, "rows": total, "wal_bytes": wal})
                    out.append(r)
        return out

    # -------------------------------------------------- profile
    def run_profile(self):
        o = self.o
        if not self.walbus:
            return None
        vg = shutil.which("valgrind")
        if not vg:
            msg = "profile: valgrind not installed (apt-get install valgrind): no callgrind figures"
            log(msg)
            self.notes.append(msg)
            return None
        n = o.profile_rows
        log(f"profile: callgrind, walbus stdout sink, {n:,} narrow rows in tx of {o.tx_rows:,}, and a 0-event run")
        self.q("TRUNCATE narrow, wide")
        self.q("CHECKPOINT")
        for slot in ("pb_prof_n", "pb_prof_0"):
            self.drop_slot(slot)
        self.q("SELECT pg_create_logical_replication_slot('pb_prof_n', 'pgoutput')")
        W = Workload("profile", "profile", f"{n:,} narrow rows", n, "narrow", insert_sql("narrow", n, o.tx_rows))
        W.start_lsn = self.q("SELECT pg_current_wal_lsn()")[0][0]
        self.q(W.load)
        W.endpos = self.q("SELECT pg_current_wal_lsn()")[0][0]
        self.q("SELECT pg_create_logical_replication_slot('pb_prof_0', 'pgoutput')")
        self.q("CHECKPOINT")
        outs = {}
        for slot, events in (("pb_prof_0", 0), ("pb_prof_n", n)):
            cg = os.path.join(self.out_dir, f"callgrind.{slot}.out")
            wrapper = (vg, "--tool=callgrind", f"--callgrind-out-file={cg}", "--dump-instr=no")
            if events:
                r = self.drain(W, "walbus", "stdout", slot, stdout_null=True, wrapper=wrapper)
                ok = r["ok"]
            else:
                ok = self.idle_run(slot, wrapper)
            if not ok:
                self.notes.append(f"profile: the callgrind run on {slot} failed")
                return None
            outs[events] = cg
        ir = {k: callgrind_total(v) for k, v in outs.items()}
        per_event = (ir[n] - ir[0]) / n
        top_incl = callgrind_top(outs[n], outs[0], inclusive=True)
        top_self = callgrind_top(outs[n], outs[0], inclusive=False)
        log(f"  -> {per_event:,.0f} instructions per event (total {ir[n]:,}, 0-event run {ir[0]:,})")
        return {"events": n, "ir_total": ir[n], "ir_zero_events": ir[0], "ir_per_event": round(per_event, 1),
                "top_inclusive": top_incl, "top_self": top_self, "callgrind_file": outs[n]}

    def idle_run(self, slot, wrapper):
        """walbus (under callgrind) on a slot with nothing to send: streaming, caught up, then SIGTERM."""
        W = Workload("idle", "idle", "0 events", 0, "narrow", None)
        proc = self.spawn("walbus", "stdout", slot, None, 0, None, events_file="/dev/null", wrapper=wrapper)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            r = self.q(f"""SELECT r.state, r.reply_time IS NOT NULL FROM pg_replication_slots s
                           JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = '{slot}'""")
            if r and r[0][0] == "streaming" and r[0][1] == "t":
                break
            if proc.exited:
                break
            time.sleep(0.1)
        time.sleep(1.0)
        ok = proc.stop(signal.SIGTERM, 60) and proc.code == 0
        del W
        self.drop_slot(slot)
        return ok

    # -------------------------------------------------- main
    def run(self):
        o = self.o
        W = workloads(o)
        self.workload_meta = {}
        for name in THROUGHPUT:
            if name in o.workloads and not self.interrupted:
                wl = W[name]
                self.guard(name, lambda: self.results.extend(self.run_workload(wl)))
                if wl.endpos:
                    self.workload_meta[name] = {"title": wl.title, "desc": wl.desc, "events": wl.events,
                                                "load_s": round(wl.load_s, 2), "wal_bytes": wl.wal_bytes,
                                                "start_lsn": wl.start_lsn, "endpos": wl.endpos}
        if "latency" in o.workloads:
            for rate in o.rates:
                for c in ("walbus", "peer"):
                    if (c == "walbus" and not self.walbus) or (c == "peer" and not self.peer):
                        continue
                    for s in o.sinks:
                        if not self.interrupted:
                            self.guard(f"latency {rate} {c}/{s}", lambda: self.latency.append(self.run_latency(rate, c, s)))
                            time.sleep(0.3)
        if "memory" in o.workloads and not self.interrupted:
            self.guard("memory", self.run_memory)
        if "profile" in o.workloads and not self.interrupted:
            self.guard("profile", lambda: setattr(self, "profile", self.run_profile()))

    def guard(self, what, fn):
        """One stage; an unexpected error is recorded and the benchmark goes on with the next."""
        try:
            fn()
        except (RuntimeError, OSError, wire.WireError) as e:
            msg = f"{what}: error: {e}"
            log(msg)
            self.notes.append(msg)


# ---------------------------------------------------------------- subscriber process
class Subscriber:
    def __init__(self, argv, stdin=None):
        self.p = Proc(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin)
        self.ready = threading.Event()
        self.count, self.t_done, self.report, self.expect = 0, None, None, int(argv[argv.index("--expect") + 1])
        self._err = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self._err.extend(self.p.p.stderr), daemon=True).start()

    def _read(self):
        for line in self.p.p.stdout:
            line = line.decode().rstrip("\n")
            if line == "ready":
                self.ready.set()
            elif line.startswith("count "):
                self.count = int(line[6:])
                if self.count >= self.expect and not self.t_done:
                    self.t_done = time.monotonic()
            elif line.startswith("report "):
                self.report = json.loads(line[7:])

    def alive(self):
        return not self.p.exited

    def err(self):
        return b"".join(self._err).decode(errors="replace").strip()[-300:]

    def stop(self):
        if not self.p.exited:
            self.p.kill(signal.SIGTERM)
            self.p.wait(10)
            if not self.p.exited:
                self.p.stop(signal.SIGKILL, 5)
        for _ in range(40):  # the reader thread takes the report line after the exit
            if self.report is not None:
                break
            time.sleep(0.025)
        return self.report


# ---------------------------------------------------------------- helpers
def count_lines(path):
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                return n
            n += b.count(b"\n")


def last_json_line(path):
    try:
        with open(path) as f:
            lines = [x for x in f.read().splitlines() if x.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


# entry frames that hold ~100 % inclusive and say nothing: left out of the inclusive top list
SKIP_FRAMES = ("start_thread", "clone", "_start", "__libc_start_main", "__libc_start_call_main", "main",
               "(below main)", "std::thread::_State_impl", "execute_native_thread_routine", "0x",
               "walbus::cli::", "walbus::bridge::Pipeline::Run(")


def callgrind_functions(path, inclusive):
    """{function: (Ir, object)} from callgrind_annotate (inclusive or self costs)."""
    ca = shutil.which("callgrind_annotate")
    if not ca:
        return {}
    try:
        txt = sh([ca, f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100", path])
    except subprocess.CalledProcessError:
        return {}
    out = {}
    for line in txt.splitlines():
        s = line.strip()
        if not s or not s[0].isdigit() or "PROGRAM TOTALS" in s:
            continue
        parts = s.split(None, 1)
        try:
            ir = int(parts[0].replace(",", ""))
        except ValueError:
            continue
        rest = parts[1] if len(parts) > 1 else ""
        if rest.startswith("("):  # "(12.34%)  file:function [object]"
            rest = rest.split(None, 1)[1] if " " in rest else ""
        head, _, obj = rest.rpartition(" [")
        if not head:
            head, obj = rest, ""
        fn = head.split(":", 1)[1] if ":" in head.split("(")[0] else head
        fn = fn.strip()
        prev = out.get(fn, (0, ""))
        out[fn] = (prev[0] + ir, os.path.basename(obj.rstrip("]")) or prev[1])
    return out


def callgrind_top(path_n, path_0, inclusive, n=10):
    """The functions that cost most in the drain itself: the N-event run minus the 0-event run
    (start-up, connecting and shutting down cancel out), as % of the drain's instructions."""
    fn_n, fn_0 = callgrind_functions(path_n, inclusive), callgrind_functions(path_0, inclusive)
    total = callgrind_total(path_n) - callgrind_total(path_0)
    rows = []
    for fn, (ir, obj) in fn_n.items():
        d = ir - fn_0.get(fn, (0, ""))[0]
        if d <= 0 or fn in ("???", "") or (inclusive and fn.startswith(SKIP_FRAMES)):
            continue
        rows.append({"function": fn, "object": obj, "ir": d, "pct": round(100.0 * d / total, 2)})
    rows.sort(key=lambda r: -r["ir"])
    return rows[:n]


def machine_info():
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "kernel": platform.release(), "cores": os.cpu_count()}
    try:
        lc = sh(["lscpu"])
        for line in lc.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                info["cpu"] = v.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    try:
        with open("/proc/meminfo") as f:
            info["ram_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return info


def versions(b):
    v = {}
    try:
        v["postgresql"] = b.q("SHOW server_version")[0][0]
    except (wire.WireError, OSError, AttributeError):
        pass
    for name, cmd in (("nats-server", ["nats-server", "--version"]), ("redis-server", ["redis-server", "--version"]),
                      ("pg_recvlogical", ["pg_recvlogical", "--version"])):
        try:
            v[name] = sh(cmd).splitlines()[0]
        except (subprocess.CalledProcessError, FileNotFoundError, IndexError):
            pass
    try:
        v["mosquitto"] = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    except (FileNotFoundError, IndexError):
        pass
    if b.walbus:
        v["walbus"] = b.walbus["version"]
    try:
        v["walbus_commit"] = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
        if sh(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"]):
            v["walbus_commit"] += "+dirty"
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    if b.peer:
        v["node"] = b.peer["node_version"]
    return v


# ---------------------------------------------------------------- table
def fmt(x, d=0):
    return "-" if x is None else f"{x:,.{d}f}"


def build_table(results, latency, rates):
    """Rows: workload x contender x sink. Latency (a paced narrow-row load) sits on the narrow rows."""
    by = {(r["workload"], r["contender"], r["sink"]): r for r in results}
    lat = {(r["rate"], r["contender"], r["sink"]): r for r in latency}
    rows = []
    keys = [(r["workload"], r["contender"], r["sink"]) for r in results]
    if latency and not any(k[0] == "narrow" for k in keys):
        keys += [("narrow", r["contender"], r["sink"]) for r in latency if r["rate"] == rates[0]]
    for wl, c, s in keys:
        r = by.get((wl, c, s), {})
        ceil = by.get((wl, "ceiling", "-"), {}).get("events_per_s") if by.get((wl, "ceiling", "-"), {}).get("ok") else None
        peer = by.get((wl, "peer", s), {})
        peer_eps = peer.get("events_per_s") if peer.get("ok") else None
        eps = r.get("events_per_s") if r else None
        row = {"workload": wl, "contender": c, "sink": s, "events_per_s": eps, "ok": r.get("ok") if r else None,
               "x_ceiling": round(eps / ceil, 3) if eps and ceil else None,
               "x_peer": round(eps / peer_eps, 2) if eps and peer_eps and c == "walbus" else None,
               "cpu_us_per_event": r.get("cpu_us_per_event"),
               "peak_rss_mb": round(r["peak_rss_kb"] / 1024, 1) if r.get("peak_rss_kb") else None,
               "broker_cpu_s": r.get("broker_cpu_s"),
               "broker_cpu_us_per_event": r.get("broker_cpu_us_per_event")}
        for rate in rates:
            lr = lat.get((rate, c, s)) if wl == "narrow" else None
            lm = (lr or {}).get("latency_ms") or {}
            row[f"p50_{rate}"] = lm.get("p50")
            row[f"p99_{rate}"] = lm.get("p99")
            row[f"kept_up_{rate}"] = lr.get("kept_up") if lr else None
            row[f"lat_ok_{rate}"] = (lr.get("ok") or lr.get("gave_up", False)) if lr else None
            row[f"delivered_{rate}"] = lr.get("delivered_per_s") if lr else None
        rows.append(row)
    return rows


def latency_cell(r, rate):
    p50, p99 = r.get(f"p50_{rate}"), r.get(f"p99_{rate}")
    if r.get(f"kept_up_{rate}") is False:
        d = r.get(f"delivered_{rate}")
        return f"behind: {d / 1000:.1f}k/s" if d else "behind"
    if r.get(f"lat_ok_{rate}") is False:
        return "FAILED"
    return f"{p50:.1f} / {p99:.1f}" if p50 is not None else ""


def table_text(rows, rates):
    hdr = ["workload", "contender", "sink", "events/s", "x ceil", "x peer", "CPU us/ev", "peak RSS MB", "broker us/ev"]
    hdr += [f"p50/p99 ms @{r // 1000}k/s" for r in rates]
    lines = []
    for r in rows:
        cells = [r["workload"], r["contender"], r["sink"],
                 (fmt(r["events_per_s"]) + ("" if r["ok"] in (True, None) else " FAILED")) if r["events_per_s"] or r["ok"] is False else "",
                 fmt(r["x_ceiling"], 2) if r["x_ceiling"] else "", fmt(r["x_peer"], 2) if r["x_peer"] else "",
                 fmt(r["cpu_us_per_event"], 2) if r["cpu_us_per_event"] is not None else "",
                 fmt(r["peak_rss_mb"], 1) if r["peak_rss_mb"] else "",
                 fmt(r["broker_cpu_us_per_event"], 2) if r.get("broker_cpu_us_per_event") is not None else ""]
        for rate in rates:
            cells.append(latency_cell(r, rate))
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(hdr)]
    right = set(range(3, len(hdr)))
    f = lambda cells: "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([f(hdr), "  ".join("-" * w for w in widths)] + [f(c) for c in lines])


def main():
    o = parse_args()
    if os.geteuid() != 0:
        die("must run as root (PostgreSQL runs as the OS user postgres via su)")
    for tool in ("pg_recvlogical", "nats-server", "redis-server", "mosquitto", "psql"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            die(f"{tool} not found: run compose/install-deps.sh")
    b = Bench(o)

    def on_int(*_):
        b.interrupted = True
        log("interrupted: finishing the current run, then stopping the servers")
    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGTERM, on_int)
    la0 = loadavg()
    # How busy the machine is before anything of ours starts (load average would still
    # count a build that just finished): 3 s of /proc/stat.
    c0 = sys_cpu()
    time.sleep(3)
    busy_before = round(busy_pct(c0, sys_cpu()), 1)
    t0 = time.monotonic()
    try:
        b.setup()
        if "walbus" in o.contenders and not b.walbus:
            b.notes.append(f"walbus: not built ({o.walbus_bin})")
        b.run()
        vers = versions(b)
    finally:
        if o.keep:
            log(f"--keep: servers left running (PostgreSQL port {PORTS['pg']}); the next run stops them")
        else:
            b.srv.stop_all()
    total_s = time.monotonic() - t0
    rows = build_table(b.results, b.latency, o.rates)
    text = table_text(rows, o.rates)
    doc = {
        "meta": {"machine": machine_info(), "versions": vers, "loadavg_start": la0, "loadavg_end": loadavg(), "busy_before_pct": busy_before,
                 "total_s": round(total_s, 1), "quick": o.quick, "note": o.note, "notes": b.notes,
                 "options": {k: v for k, v in vars(o).items() if k not in ("note",)}},
        "workloads": getattr(b, "workload_meta", {}),
        "table": rows, "table_text": text, "results": b.results, "latency": b.latency,
        "memory": b.memory, "profile": b.profile,
    }
    os.makedirs(os.path.dirname(os.path.abspath(o.out)), exist_ok=True)
    with open(o.out, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    print()
    for name, m in doc["workloads"].items():
        print(f"{name}: {m['desc']} ({m['wal_bytes'] / 1e6:,.0f} MB WAL)")
    if b.latency:
        print(f"latency: narrow rows in tx of 10 at {', '.join(f'{r:,}' for r in o.rates)} rows/s for "
              f"{o.lat_seconds:g} s (+{o.lat_warmup:g} s warm-up); commit -> subscriber receipt; columns on the narrow rows")
    print()
    print(text)
    if b.memory:
        print("\nmemory (walbus peak RSS MB, max_in_flight default):")
        for m in b.memory:
            print(f"  {m['table']:6} tx {m['tx_rows']:>9,} rows  sink {m['sink']:8} "
                  f"{fmt(m.get('peak_rss_kb', 0) / 1024 if m.get('peak_rss_kb') else None, 1):>7} MB"
                  f"{'' if m['ok'] else '  FAILED'}")
    if b.profile:
        p = b.profile
        print(f"\ncallgrind: {p['ir_per_event']:,.0f} instructions per event (walbus, stdout sink, narrow rows)")
    for n in b.notes:
        print(n)
    failed = [r for r in b.results + b.latency + b.memory if not r.get("ok") and not r.get("gave_up")]
    if failed:
        print(f"\n{len(failed)} run(s) FAILED: see notes in {o.out}")
    print(f"\nresults: {o.out}")
    full = (not o.quick and set(o.workloads) == set(STAGES) and set(o.sinks) == set(ALL_SINKS)
            and set(o.contenders) == {"ceiling", "walbus", "peer"})
    if o.docs or (o.docs is None and full):
        import render
        render.main(["render", o.out])
    else:
        print("docs not rendered (a --quick or partial run); to render: tests/bench/render.py " + o.out)
    print(f"total time: {total_s / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
