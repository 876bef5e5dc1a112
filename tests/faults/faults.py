#!/usr/bin/env python3
"""The walbus fault-injection suite (docs/faults.md). Run it through
tests/faults/run.sh, which builds what is missing and calls this file.

One walbus streams a sustained PostgreSQL load into five sinks at once while
processes and servers are killed and restarted at seeded random moments; then
the load stops, walbus drains (the slot's confirmed_flush_lsn reaches the WAL
end), every broker is read back, and check.py compares it with the committed
truth PostgreSQL recorded (fx_oplog).

Servers, all on 127.0.0.1 ports 56150-56299, started through compose/*.sh and
stopped by PID: PostgreSQL 15 (56150), redis-server with appendonly yes and
appendfsync always (56151), mosquitto with persistence (56152), a single
nats-server with JetStream (56153, monitoring 56154), and a three-node NATS
cluster with JetStream (compose/nats-cluster.sh, clients 56160-56162, routes
56170-56172, monitoring 56180-56182). walbus's metrics: 56190.
"""
import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402

PG_PORT = 56150
REDIS_PORT = 56151
MQTT_PORT = 56152
NATS_PORT = 56153
NATS_HTTP_PORT = 56154
CLUSTER_BASE = 56160
METRICS_PORT = 56190

SLOT = "fx_slot"
STREAM3 = "FX3"
STREAM1 = "FX1"
REDIS_KEYS = ["fx.public.fx_a", "fx.public.fx_b", "fx.public.fx_c"]

KINDS = [
    "walbus_kill9",
    "pg_stop_fast",
    "pg_stop_immediate",
    "redis_kill9",
    "mosquitto_kill9",
    "nats_kill9",
    "cluster_kill_node",
    "cluster_kill_leader",
]
# Relative weights after the first round (which has every kind once).
WEIGHTS = {
    "walbus_kill9": 3,
    "pg_stop_fast": 2,
    "pg_stop_immediate": 2,
    "redis_kill9": 2,
    "mosquitto_kill9": 2,
    "nats_kill9": 2,
    "cluster_kill_node": 2,
    "cluster_kill_leader": 2,
}

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _die_with_parent():
    # PR_SET_PDEATHSIG: children started here die with this script.
    _libc.prctl(1, signal.SIGKILL)


def alive(pid):
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


class Suite:
    def __init__(self, args):
        self.args = args
        self.src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.out = os.path.abspath(args.out)
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.load_t0 = None
        self.faults = []
        self.problems = []
        self.walbus = None
        self.walbus_starts = 0
        self.walbus_unexpected = []
        self.load = None
        self.subs = {}
        self.log_f = None
        self.cluster_ok = True
        self._sub_scan = {}

    # --- small helpers ---------------------------------------------------------------

    def log(self, msg):
        line = "[%7.2f] %s" % (time.monotonic() - self.t0, msg)
        print(line, flush=True)
        if self.log_f:
            self.log_f.write(line + "\n")
            self.log_f.flush()

    def path(self, *parts):
        return os.path.join(self.out, *parts)

    def script(self, name, *argv, env=None, check_rc=True, timeout=120):
        e = dict(os.environ)
        e.update(env or {})
        cmd = [os.path.join(self.src, "compose", name)] + [str(a) for a in argv]
        r = subprocess.run(cmd, env=e, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        if check_rc and r.returncode != 0:
            raise RuntimeError("%s %s failed (%d): %s%s" % (name, " ".join(map(str, argv)), r.returncode,
                                                            r.stdout, r.stderr))
        return r

    def psql(self, sql, timeout=30, check_rc=True):
        e = dict(os.environ, PGCONNECT_TIMEOUT="5")
        r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres", "-c", sql],
                           env=e, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if check_rc and r.returncode != 0:
            raise RuntimeError("psql failed: %s: %s" % (sql[:100], r.stderr.strip()))
        return r.stdout.strip() if r.returncode == 0 else None

    def start_child(self, name, argv, out_path, err_path, append=False):
        mode = "a" if append else "w"
        out = open(out_path, mode) if out_path else subprocess.DEVNULL
        err = open(err_path, mode)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                             preexec_fn=_die_with_parent, close_fds=True)
        if out_path:
            out.close()
        err.close()
        return p

    def now(self):
        return round(time.monotonic() - (self.load_t0 or self.t0), 2)

    # --- servers -----------------------------------------------------------------------

    def pg_env(self):
        return {"WALBUS_PG_DIR": self.path("pg"),
                "WALBUS_PG_OPTS": "-c max_connections=60 -c deadlock_timeout=200ms"}

    def redis_env(self):
        return {"WALBUS_REDIS_DIR": self.path("redis"), "WALBUS_REDIS_AOF": "1",
                "WALBUS_REDIS_OPTS": "--appendfsync always"}

    def mqtt_env(self):
        # Persistence on; the in-memory state (sessions, queued messages) is
        # written every second, so a restarted broker still knows the
        # subscriber's persistent session and its subscription.
        return {"WALBUS_MQTT_DIR": self.path("mosquitto"), "WALBUS_MQTT_PERSIST": "1",
                "WALBUS_MQTT_EXTRA": "autosave_interval 1"}

    def nats_env(self):
        return {"WALBUS_NATS_DIR": self.path("nats"), "WALBUS_NATS_HTTP_PORT": str(NATS_HTTP_PORT)}

    def cluster_env(self):
        return {"WALBUS_NATSC_DIR": self.path("natsc"), "WALBUS_NATSC_WAIT": "60"}

    def pg_start(self):
        self.script("pg.sh", "start", PG_PORT, env=self.pg_env())

    def redis_start(self):
        self.script("redis.sh", "start", REDIS_PORT, env=self.redis_env())

    def mqtt_start(self):
        self.script("mosquitto.sh", "start", MQTT_PORT, env=self.mqtt_env())

    def nats_start(self):
        self.script("nats.sh", "start", NATS_PORT, env=self.nats_env())

    def cluster(self, *argv, check_rc=True, timeout=120):
        return self.script("nats-cluster.sh", *(list(argv) + [CLUSTER_BASE]), env=self.cluster_env(),
                           check_rc=check_rc, timeout=timeout)

    def stop_everything(self):
        """Stops whatever runs in this run's directories (also a previous run's)."""
        for p in [self.load, self.walbus] + list(self.subs.values()):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        for name, env, argv in [
            ("pg.sh", self.pg_env(), ["stop", PG_PORT]),
            ("redis.sh", self.redis_env(), ["stop", REDIS_PORT]),
            ("mosquitto.sh", self.mqtt_env(), ["stop", MQTT_PORT]),
            ("nats.sh", self.nats_env(), ["stop", NATS_PORT]),
            ("nats-cluster.sh", self.cluster_env(), ["stop", CLUSTER_BASE]),
        ]:
            try:
                self.script(name, *argv, env=env, check_rc=False, timeout=60)
            except (OSError, subprocess.SubprocessError):
                pass

    def kill_by_pidfile(self, pidfile):
        pid = read_pid(pidfile)
        if pid <= 0 or not alive(pid):
            return 0
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            if not alive(pid):
                break
            time.sleep(0.02)
        # mosquitto.sh tests liveness with kill -0, which a zombie passes.
        try:
            os.unlink(pidfile)
        except OSError:
            pass
        return pid

    def sub_connects(self, name):
        """How many times subscriber `name` has connected so far (its C lines),
        reading only what was appended since the last call."""
        st = self._sub_scan.setdefault(name, {"offset": 0, "count": 0, "partial": b""})
        try:
            with open(self.path("%s.tsv" % name), "rb") as f:
                f.seek(st["offset"])
                data = f.read()
        except OSError:
            return st["count"]
        st["offset"] += len(data)
        data = st["partial"] + data
        lines = data.split(b"\n")
        st["partial"] = lines.pop()
        st["count"] += sum(1 for line in lines if line.startswith(b"C\t"))
        return st["count"]

    def wait_sub_reconnect(self, name, before, rec):
        """After its broker restarted: waits (up to 30 s) until subscriber
        `name` has connected again, so that it is connected when the next
        fault comes (what it misses while away is the broker's loss)."""
        t = time.monotonic()
        while time.monotonic() - t < 30:
            if self.sub_connects(name) > before:
                rec["subscriber_back_s"] = round(time.monotonic() - t, 2)
                return
            time.sleep(0.1)
        rec["subscriber_back_s"] = None
        self.log("WARNING: the %s subscriber did not reconnect within 30 s" % name)

    def cluster_leader(self):
        r = self.cluster("leader", STREAM3, check_rc=False, timeout=30)
        return int(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip().isdigit() else 0

    # --- walbus and helpers -----------------------------------------------------------------

    def write_config(self):
        urls = self.cluster("urls").stdout.strip()
        cfg = """# generated by tests/faults/faults.py
[source]
dsn = "host=127.0.0.1 port={pg} user=postgres dbname=postgres connect_timeout=5"
slot = "{slot}"
publication = "fx_pub"
status_interval_ms = 1000

[metrics]
listen = "127.0.0.1:{metrics}"

[[sink]]
name = "js3"
type = "jetstream"
url = "{urls}"
stream = "{s3}"
replicas = 3
duplicate_window = "30m"
topic = "js3.{{db}}.{{schema}}.{{table}}.{{op}}"

[[sink]]
name = "js1"
type = "jetstream"
url = "nats://127.0.0.1:{nats}"
stream = "{s1}"
replicas = 1
duplicate_window = "30m"
topic = "js1.{{db}}.{{schema}}.{{table}}.{{op}}"

[[sink]]
name = "core"
type = "nats"
url = "nats://127.0.0.1:{nats}"
topic = "core.{{db}}.{{schema}}.{{table}}.{{op}}"

[[sink]]
name = "redis"
type = "redis"
url = "redis://127.0.0.1:{redis}"
key = "fx.{{schema}}.{{table}}"
id = "lsn"

[[sink]]
name = "mqtt"
type = "mqtt"
url = "tcp://127.0.0.1:{mqtt}"
client_id = "walbus-fx"
qos = 1
topic = "fx/{{schema}}/{{table}}/{{op}}"
max_in_flight = 2000
""".format(pg=PG_PORT, slot=SLOT, metrics=METRICS_PORT, urls=urls, s3=STREAM3, s1=STREAM1,
           nats=NATS_PORT, redis=REDIS_PORT, mqtt=MQTT_PORT)
        with open(self.path("walbus.toml"), "w") as f:
            f.write(cfg)

    def walbus_start(self, why):
        with open(self.path("walbus.log"), "a") as f:
            f.write("=== faults.py: start #%d (%s) at %.2f s\n" % (self.walbus_starts + 1, why, self.now()))
        self.walbus = self.start_child("walbus", [self.args.walbus, "run", "-c", self.path("walbus.toml")],
                                       None, self.path("walbus.log"), append=True)
        self.walbus_starts += 1

    def walbus_check(self):
        """Restarts walbus if it exited on its own (recorded as a problem)."""
        if self.walbus is None or self.walbus.poll() is None:
            return
        rc = self.walbus.returncode
        tail = ""
        try:
            with open(self.path("walbus.log")) as f:
                tail = "".join(f.readlines()[-5:])
        except OSError:
            pass
        self.walbus_unexpected.append({"t": self.now(), "exit_code": rc, "log_tail": tail})
        self.log("PROBLEM: walbus exited on its own with %s; log tail:\n%s" % (rc, tail))
        self.walbus_start("after an unexpected exit")

    def wait_log(self, text, since_size, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with open(self.path("walbus.log")) as f:
                f.seek(since_size)
                if text in f.read():
                    return True
            if self.walbus.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    # --- faults --------------------------------------------------------------------------

    def fault(self, kind):
        t = self.now()
        rec = {"t": t, "kind": kind}
        rng = self.rng
        if kind == "walbus_kill9":
            pid = self.walbus.pid
            self.walbus.kill()
            self.walbus.wait()
            down = rng.uniform(0.0, 1.5)
            time.sleep(down)
            self.walbus_start("after kill -9")
            rec.update(pid=pid, down_s=round(down, 2))
        elif kind in ("pg_stop_fast", "pg_stop_immediate"):
            how = "stop" if kind == "pg_stop_fast" else "stop-immediate"
            pid = read_pid(self.path("pg", "data", "postmaster.pid"))
            self.script("pg.sh", how, PG_PORT, env=self.pg_env())
            down = rng.uniform(0.5, 4.0)
            # Now and then walbus is also killed while PostgreSQL is down: it
            # must start and wait for the server.
            if rng.random() < 0.2:
                self.walbus.kill()
                self.walbus.wait()
                rec["walbus_killed_too"] = True
                time.sleep(down / 2)
                self.walbus_start("kill -9 while PostgreSQL was down")
                time.sleep(down / 2)
            else:
                time.sleep(down)
            self.pg_start()
            rec.update(pid=pid, down_s=round(down, 2))
        elif kind == "redis_kill9":
            pid = self.kill_by_pidfile(self.path("redis", "redis.pid"))
            down = rng.uniform(0.3, 3.0)
            time.sleep(down)
            self.redis_start()
            rec.update(pid=pid, down_s=round(down, 2))
        elif kind == "mosquitto_kill9":
            before = self.sub_connects("mqtt")
            pid = self.kill_by_pidfile(self.path("mosquitto", "mosquitto.pid"))
            down = rng.uniform(0.3, 3.0)
            time.sleep(down)
            self.mqtt_start()
            rec.update(pid=pid, down_s=round(down, 2))
            self.wait_sub_reconnect("mqtt", before, rec)
        elif kind == "nats_kill9":
            before = self.sub_connects("nats")
            pid = read_pid(self.path("nats", "nats.pid"))
            self.script("nats.sh", "kill", NATS_PORT, env=self.nats_env())
            down = rng.uniform(0.3, 3.0)
            time.sleep(down)
            self.nats_start()
            rec.update(pid=pid, down_s=round(down, 2))
            self.wait_sub_reconnect("nats", before, rec)
        elif kind in ("cluster_kill_node", "cluster_kill_leader"):
            leader = self.cluster_leader()
            if kind == "cluster_kill_leader":
                node = leader or rng.choice([1, 2, 3])
            else:
                node = rng.choice([n for n in (1, 2, 3) if n != leader])
            pid = int(self.cluster("pid", node).stdout.strip() or 0)
            self.cluster("kill-node", node)
            down = rng.uniform(1.0, 6.0)
            time.sleep(down)
            self.cluster("start-node", node)
            t_wait = time.monotonic()
            healthy = self.cluster("wait-healthy", STREAM3, check_rc=False, timeout=120).returncode == 0
            new_leader = self.cluster_leader()
            rec.update(node=node, pid=pid, leader_before=leader, leader_after=new_leader,
                       down_s=round(down, 2), healthy_after_s=round(time.monotonic() - t_wait, 2))
            if not healthy:
                rec["healthy"] = False
                self.log("WARNING: the cluster was not healthy 60 s after restarting node %d" % node)
        else:
            raise ValueError(kind)
        self.faults.append(rec)
        self.log("fault %d: %s" % (len(self.faults), json.dumps(rec)))

    def schedule(self):
        """The next fault kind: a shuffled round of every kind first, then weighted."""
        if not hasattr(self, "_round"):
            self._round = list(KINDS)
            self.rng.shuffle(self._round)
        if self._round:
            return self._round.pop(0)
        kinds = list(WEIGHTS)
        return self.rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]

    # --- the run ----------------------------------------------------------------------------

    def run(self):
        a = self.args
        if os.path.isdir(self.out):
            self.stop_everything()
            shutil.rmtree(self.out)
        os.makedirs(self.out)
        self.log_f = open(self.path("faults.log"), "w")
        self.log("seed %d, %s form, %d s of faults, load %.0f tx/s, out %s"
                 % (a.seed, "short" if a.short else "long", a.seconds, a.rate, self.out))
        try:
            return self._run()
        finally:
            if not a.keep:
                self.stop_everything()
            self.log_f.close()

    def _run(self):
        a = self.args
        # Servers.
        self.pg_start()
        self.redis_start()
        self.mqtt_start()
        self.nats_start()
        self.cluster("start")
        self.cluster("wait-healthy", timeout=120)
        self.log("servers up")
        self.psql(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.sql")).read())

        # Subscribers, connected before walbus publishes anything.
        reader = os.path.join(a.tools, "faults_reader")
        self.subs["mqtt"] = self.start_child(
            "mqtt-sub", [reader, "mqtt-sub", "--url", "tcp://127.0.0.1:%d" % MQTT_PORT,
                         "--client-id", "fx-checker", "--topic", "fx/#", "--out", self.path("mqtt.tsv")],
            None, self.path("mqtt-sub.log"))
        self.subs["nats"] = self.start_child(
            "nats-sub", [reader, "nats-sub", "--url", "nats://127.0.0.1:%d" % NATS_PORT,
                         "--subject", "core.>", "--out", self.path("nats.tsv")],
            None, self.path("nats-sub.log"))
        for name, p in self.subs.items():
            end = time.monotonic() + 30
            while time.monotonic() < end:
                with open(self.path("%s-sub.log" % name)) as f:
                    if "ready" in f.read():
                        break
                if p.poll() is not None:
                    raise RuntimeError("the %s subscriber exited: see %s-sub.log" % (name, name))
                time.sleep(0.1)
            else:
                raise RuntimeError("the %s subscriber did not get ready" % name)
        # mosquitto writes its state (the subscriber's session) every second.
        time.sleep(2.5)

        self.write_config()
        self.walbus_start("initial")
        if not self.wait_log("INFO streaming", 0, 60):
            raise RuntimeError("walbus did not start streaming: see %s" % self.path("walbus.log"))
        self.cluster("wait-healthy", STREAM3, timeout=120)
        self.log("walbus streaming; stream %s healthy" % STREAM3)

        # Load.
        self.load = self.start_child(
            "load", [os.path.join(a.tools, "faults_load"), "--dsn",
                     "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=5" % PG_PORT,
                     "--rate", str(a.rate), "--threads", "3", "--seed", str(a.seed),
                     "--stats", self.path("load.json")],
            None, self.path("load.log"))
        self.load_t0 = time.monotonic()
        time.sleep(3)

        # Faults until the time is up.
        end = self.load_t0 + a.seconds
        while time.monotonic() < end:
            self.walbus_check()
            if self.load.poll() is not None:
                raise RuntimeError("the load generator exited: see load.log")
            self.fault(self.schedule())
            gap_end = min(end, time.monotonic() + self.rng.uniform(1.0, 5.0))
            while time.monotonic() < gap_end:
                self.walbus_check()
                time.sleep(0.2)
        self.walbus_check()
        self.log("faults done: %d injected" % len(self.faults))

        # Stop the load; everything up again; drain.
        self.load.send_signal(signal.SIGTERM)
        try:
            self.load.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.load.kill()
            self.problems.append("the load generator did not stop within 120 s of SIGTERM")
        self.pg_start()
        self.redis_start()
        self.mqtt_start()
        self.nats_start()
        self.cluster("start")
        if self.cluster("wait-healthy", STREAM3, check_rc=False, timeout=120).returncode != 0:
            self.problems.append("the NATS cluster was not healthy after the run")
        self.walbus_check()
        target = self.psql("SELECT pg_current_wal_lsn()")
        self.log("load stopped; draining to %s" % target)
        t_drain = time.monotonic()
        drained = False
        confirmed = None
        while time.monotonic() - t_drain < a.drain_timeout:
            self.walbus_check()
            r = self.psql("SELECT confirmed_flush_lsn, confirmed_flush_lsn >= '%s'::pg_lsn FROM "
                          "pg_replication_slots WHERE slot_name = '%s'" % (target, SLOT), check_rc=False)
            if r:
                confirmed, done = r.split("|")
                if done == "t":
                    drained = True
                    break
            time.sleep(0.5)
        drain_s = round(time.monotonic() - t_drain, 1)
        if drained:
            self.log("drained in %.1f s (confirmed %s)" % (drain_s, confirmed))
        else:
            self.problems.append("walbus did not drain: confirmed_flush_lsn %s < %s after %d s (hang)"
                                 % (confirmed, target, a.drain_timeout))
            self.log("PROBLEM: " + self.problems[-1])
            self.snapshot_diagnostics()
        self.walbus.send_signal(signal.SIGTERM)
        try:
            walbus_rc = self.walbus.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.walbus.kill()
            walbus_rc = "killed after 30 s"
            self.problems.append("walbus did not stop within 30 s of SIGTERM")
        if walbus_rc != 0:
            self.problems.append("walbus exited with %s after SIGTERM" % walbus_rc)

        # The subscribers: until nothing new arrives for 3 s.
        last_sizes, still_since = None, time.monotonic()
        quiet_end = time.monotonic() + 90
        while time.monotonic() < quiet_end:
            sizes = [os.path.getsize(self.path("%s.tsv" % n)) for n in self.subs]
            if sizes != last_sizes:
                last_sizes, still_since = sizes, time.monotonic()
            elif time.monotonic() - still_since > 3:
                break
            time.sleep(0.3)
        for p in self.subs.values():
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

        # Read every broker back, and the truth.
        reader = os.path.join(a.tools, "faults_reader")
        t_read = time.monotonic()
        for name, argv in [
            ("js3", ["js-dump", "--url", self.cluster("urls").stdout.strip(), "--stream", STREAM3,
                     "--subjects", "js3.>"]),
            ("js1", ["js-dump", "--url", "nats://127.0.0.1:%d" % NATS_PORT, "--stream", STREAM1,
                     "--subjects", "js1.>"]),
            ("redis", ["redis-dump", "--port", str(REDIS_PORT), "--keys", ",".join(REDIS_KEYS)]),
        ]:
            r = subprocess.run([reader] + argv + ["--out", self.path(name + ".tsv")],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                self.problems.append("reading %s failed: %s" % (name, r.stderr.strip()))
        with open(self.path("truth.tsv"), "w") as f:
            r = subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres",
                                "-d", "postgres", "-c",
                                "COPY (SELECT op_id, xid::text, tbl, k, op, ver FROM fx_oplog ORDER BY op_id) "
                                "TO STDOUT"], stdout=f, stderr=subprocess.PIPE, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError("reading fx_oplog failed: %s" % r.stderr)
        self.log("read back every broker in %.1f s" % (time.monotonic() - t_read))

        counts = {k: 0 for k in KINDS}
        for rec in self.faults:
            counts[rec["kind"]] += 1
        load = {}
        try:
            with open(self.path("load.json")) as f:
                load = json.load(f)
        except (OSError, ValueError):
            self.problems.append("the load generator wrote no statistics")
        if self.walbus_unexpected:
            self.problems.append("walbus exited on its own %d time(s): %s"
                                 % (len(self.walbus_unexpected),
                                    "; ".join("rc %s at %s s" % (u["exit_code"], u["t"]) for u in self.walbus_unexpected)))
        run = {
            "seed": a.seed, "form": "short" if a.short else "long", "seconds": a.seconds,
            "fault_counts": counts, "fault_log": self.faults, "load": load,
            "walbus": {"starts": self.walbus_starts, "unexpected_exits": len(self.walbus_unexpected),
                       "unexpected": self.walbus_unexpected, "drain_seconds": drain_s if drained else None,
                       "exit_code": walbus_rc, "log_lines": self.walbus_log_summary()},
            "problems": self.problems,
        }
        with open(self.path("run.json"), "w") as f:
            json.dump(run, f, indent=2)
        result = check.check_run(self.out)
        table = check.format_table(result)
        print(table, flush=True)
        self.log_f.write(table + "\n")
        with open(self.path("table.txt"), "w") as f:
            f.write(table + "\n")
        print("files: %s (result.json, table.txt, walbus.log, faults.log)" % self.out, flush=True)
        return 0 if result["ok"] else 1

    def walbus_log_summary(self):
        counts = {"ERROR": 0, "WARN": 0, "sink is up": 0, "streaming": 0}
        try:
            with open(self.path("walbus.log")) as f:
                for line in f:
                    for k in counts:
                        if k in line:
                            counts[k] += 1
        except OSError:
            pass
        return counts

    def snapshot_diagnostics(self):
        diag = {}
        diag["slot"] = self.psql("SELECT * FROM pg_replication_slots", check_rc=False)
        diag["wal"] = self.psql("SELECT pg_current_wal_lsn()", check_rc=False)
        diag["cluster"] = self.cluster("status", STREAM3, check_rc=False).stdout
        try:
            import urllib.request
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % METRICS_PORT, timeout=3) as r:
                diag["metrics"] = r.read().decode()
        except Exception as e:  # noqa: BLE001 -- diagnostics only
            diag["metrics"] = "unavailable: %s" % e
        with open(self.path("hang-diagnostics.json"), "w") as f:
            json.dump(diag, f, indent=2)
        self.log("diagnostics in %s" % self.path("hang-diagnostics.json"))


def main():
    p = argparse.ArgumentParser(description="walbus fault-injection suite")
    p.add_argument("--short", action="store_true", help="the CI form: fewer faults, about 100 s of load")
    p.add_argument("--seconds", type=float, help="seconds of load with faults (default 100 short, 900 long)")
    p.add_argument("--seed", type=int, help="seed of the fault schedule (default: time-based, printed)")
    p.add_argument("--rate", type=float, default=150.0, help="load transactions per second (default 150)")
    p.add_argument("--drain-timeout", type=int, default=300, help="seconds walbus may take to drain")
    p.add_argument("--out", default="/tmp/walbus-faults", help="run directory (deleted at start)")
    p.add_argument("--walbus", required=True, help="the walbus binary")
    p.add_argument("--tools", required=True, help="directory with faults_load and faults_reader")
    p.add_argument("--keep", action="store_true", help="leave the servers running afterwards")
    args = p.parse_args()
    if args.seconds is None:
        args.seconds = 100.0 if args.short else 900.0
    if args.seed is None:
        args.seed = int(time.time()) % 1000000
    suite = Suite(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        return suite.run()
    except KeyboardInterrupt as e:
        print("faults.py: interrupted (%s); servers stopped" % e, file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print("faults.py: FAIL: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
