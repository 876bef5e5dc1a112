#!/usr/bin/env python3
"""The fault suite's checker: compares what every broker holds (or what a live
subscriber received) with the committed truth PostgreSQL recorded in fx_oplog.

    tests/faults/check.py RUN_DIR      # re-check a finished run's files

Inputs in RUN_DIR (written by faults.py and faults_reader):
  truth.tsv   op_id, xid, tbl, k, op (i/u/d), ver  -- one row per committed row change
  js3.tsv     JetStream stream on the 3-node cluster (R3)      exactly once
  js1.tsv     JetStream stream on the single nats-server (R1)  exactly once
  redis.tsv   Redis Streams, id = "lsn"                        exactly once
  mqtt.tsv    a persistent-session QoS 1 subscriber            at least once
  nats.tsv    a core NATS subscriber                           at least once
  run.json    the run's facts (faults injected, load counts, walbus restarts, drain)

An event is identified by what the load wrote into the row: an insert or update
by its op_id (fresh for every change), a delete by (table, key), since keys are
never reused. Per sink it counts:
  lost        committed changes never delivered (must be 0)
  lost_gap    (at-least-once sinks) changes missing only in a window where the
              subscriber's broker connection was down -- a broker crash or a
              subscriber that was away; core NATS keeps nothing for an absent
              subscriber and mosquitto's persistence is periodic, so such loss
              is the broker's, not walbus's (walbus had the broker's ack)
  duplicates  deliveries beyond the first (must be 0 for exactly-once sinks)
  aborted     events carrying the ABORT/SUBABORT mark of a rolled-back change (must be 0)
  phantom     other events matching no committed change, e.g. a delete from a
              rolled-back transaction (must be 0)
  order       per key, a change delivered for the first time after a later
              change of the same key (must be 0)
  stream_order (exactly-once sinks) per table, stored entries not strictly
              increasing in (commit LSN, seq) (must be 0)
  mismatch    the event names the change but disagrees with the truth (xid,
              table, key, version) or with itself (id vs source, Redis entry
              id, Nats-Msg-Id), or one change carries two different ids across
              deliveries and sinks (must be 0)
Exit status 0 when every must-be-0 count is 0 and run.json reports no hang or
unexpected walbus exit, else 1.
"""
import json
import os
import sys
from collections import defaultdict

EXACTLY_ONCE = ("js3", "js1", "redis")
AT_LEAST_ONCE = ("mqtt", "nats")
SINK_TITLES = {
    "js3": "JetStream R3 (3-node cluster)",
    "js1": "JetStream R1 (single server)",
    "redis": "Redis Streams (id = lsn)",
    "mqtt": "MQTT QoS 1 (mosquitto)",
    "nats": "NATS core (subscriber)",
}
MAX_SAMPLES = 5


def lsn_text(v):
    return "%X/%X" % (v >> 32, v & 0xFFFFFFFF)


class Truth:
    def __init__(self, path):
        self.expected = {}  # ident -> (tbl, k, ver, op, xid32)
        per_key = defaultdict(list)
        self.xids = set()
        with open(path) as f:
            for line in f:
                op_id, xid, tbl, k, op, ver = line.rstrip("\n").split("\t")
                op_id, k, ver, xid = int(op_id), int(k), int(ver), int(xid)
                ident = ("d", tbl, k) if op == "d" else ("iu", op_id)
                self.expected[ident] = (tbl, k, ver, op, xid & 0xFFFFFFFF)
                # Per key, changes in commit order: versions increase, the
                # delete (same version as the last update) comes last.
                per_key[(tbl, k)].append((ver, op == "d", ident))
                self.xids.add(xid)
        self.index = {}  # ident -> position in its key's history
        for hist in per_key.values():
            hist.sort()
            for i, (_, _, ident) in enumerate(hist):
                self.index[ident] = i
        self.keys = len(per_key)


class SinkCheck:
    """Counts for one sink; feed deliveries in the order the sink holds them."""

    def __init__(self, name, truth, ids):
        self.name = name
        self.truth = truth
        self.ids = ids  # shared across sinks: ident -> envelope id
        self.exactly_once = name in EXACTLY_ONCE
        self.count = defaultdict(int)
        self.pos_of = {}  # ident -> (commit_lsn, seq)
        self.key_max = {}  # (tbl,k) -> highest history index delivered so far (first occurrences)
        self.table_last = {}  # tbl -> last (lsn, seq) along the stored order
        self.global_last = None
        self.c = dict(delivered=0, distinct=0, lost=0, lost_gap=0, duplicates=0, aborted=0,
                      phantom=0, order=0, stream_order=0, mismatch=0, bad=0, global_order=0)
        self.samples = defaultdict(list)
        self.reported = None  # what the broker said it holds (stream msgs / XLEN sum)

    def sample(self, what, text):
        if len(self.samples[what]) < MAX_SAMPLES:
            self.samples[what].append(text)

    def bad(self, where, text):
        self.c["bad"] += 1
        self.sample("bad", "%s: %s" % (where, text[:300]))

    def deliver(self, where, payload, carried=None, entry_id=None):
        """One delivery. Returns (ident, pos) or (None, None)."""
        self.c["delivered"] += 1
        try:
            env = json.loads(payload)
            src = env["source"]
            tbl, op, eid = src["table"], env["op"], env["id"]
            hex_lsn, seq_text = eid.split(":")
            pos = (int(hex_lsn, 16), int(seq_text))
            key = env["key"]["id"] if isinstance(env.get("key"), dict) else None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.bad(where, "unparsable envelope (%s): %s" % (e, payload))
            return None, None
        mism = []
        if src.get("commit_lsn") != lsn_text(pos[0]) or src.get("seq") != pos[1]:
            mism.append("id %s vs source commit_lsn %s seq %s" % (eid, src.get("commit_lsn"), src.get("seq")))
        if carried is not None and carried != eid:
            mism.append("carried id %s vs envelope id %s" % (carried, eid))
        if entry_id is not None and entry_id != "%d-%d" % pos:
            mism.append("Redis entry id %s, expected %d-%d" % (entry_id, pos[0], pos[1]))
        ident, ver, payload_mark = None, None, None
        if op in ("insert", "update"):
            after = env.get("after") or {}
            ident = ("iu", after.get("op_id"))
            ver, payload_mark = after.get("ver"), after.get("payload")
        elif op == "delete":
            ident = ("d", tbl, key)
            before = env.get("before")
            ver = before.get("ver") if isinstance(before, dict) else None
            payload_mark = before.get("payload") if isinstance(before, dict) else None
        if payload_mark in ("ABORT", "SUBABORT") and op != "delete":
            self.c["aborted"] += 1
            self.sample("aborted", "%s: %s %s key %s id %s (%s)" % (where, op, tbl, key, eid, payload_mark))
            return None, None
        exp = self.truth.expected.get(ident) if ident else None
        if exp is None:
            self.c["phantom"] += 1
            self.sample("phantom", "%s: %s %s key %s id %s xid %s matches no committed change"
                        % (where, op, tbl, key, eid, src.get("xid")))
            return None, None
        e_tbl, e_k, e_ver, e_op, e_xid = exp
        if (e_tbl, e_k, e_op) != (tbl, key, op[0]):
            mism.append("%s %s key %s, truth says %s %s key %s" % (op, tbl, key, e_op, e_tbl, e_k))
        if ver is not None and ver != e_ver:
            mism.append("version %s, truth %s" % (ver, e_ver))
        if src.get("xid") != e_xid:
            mism.append("xid %s, truth %s" % (src.get("xid"), e_xid))
        known = self.ids.get(ident)
        if known is None:
            self.ids[ident] = eid
        elif known != eid:
            mism.append("delivered with id %s, elsewhere with %s" % (eid, known))
        if mism:
            self.c["mismatch"] += 1
            self.sample("mismatch", "%s: %s" % (where, "; ".join(mism)))
        # Order along the stored/received sequence.
        if self.exactly_once:
            last = self.table_last.get(tbl)
            if last is not None and pos <= last:
                self.c["stream_order"] += 1
                self.sample("stream_order", "%s: %s %s after %s in table %s"
                            % (where, eid, op, "%016X:%d" % last, tbl))
            self.table_last[tbl] = pos
            if self.global_last is not None and pos <= self.global_last:
                self.c["global_order"] += 1
            self.global_last = pos
        n = self.count[ident]
        if n == 0:
            idx = self.truth.index[ident]
            kk = (tbl, key)
            top = self.key_max.get(kk, -1)
            if idx < top:
                self.c["order"] += 1
                self.sample("order", "%s: %s of %s key %s (version %s) first delivered after a later change of that key"
                            % (where, eid, tbl, key, ver))
            else:
                self.key_max[kk] = idx
            self.pos_of[ident] = pos
        self.count[ident] = n + 1
        return ident, pos

    def finish(self, positions, gaps=None):
        """Counts missing changes; `positions` maps ident -> pos from any sink
        (to place a change lost here); `gaps` lists (lo, hi) windows where an
        at-least-once subscriber was disconnected."""
        dup = 0
        for n in self.count.values():
            dup += n - 1
        self.c["duplicates"] = dup
        self.c["distinct"] = len(self.count)
        for ident in self.truth.expected:
            if ident in self.count:
                continue
            pos = positions.get(ident)
            if gaps and pos is not None and any(lo < pos < hi for lo, hi in gaps):
                self.c["lost_gap"] += 1
                continue
            self.c["lost"] += 1
            exp = self.truth.expected[ident]
            self.sample("lost", "%s key %s version %s op %s xid %s (id %s)"
                        % (exp[0], exp[1], exp[2], exp[3], exp[4], self.ids.get(ident, "never delivered anywhere")))

    def problems(self):
        must_zero = ["lost", "aborted", "phantom", "order", "mismatch", "bad"]
        if self.exactly_once:
            must_zero += ["duplicates", "stream_order"]
        out = ["%s: %s = %d" % (self.name, k, self.c[k]) for k in must_zero if self.c[k]]
        if self.reported is not None and self.reported != self.c["delivered"]:
            out.append("%s: the broker reports %d messages, %d were read" % (self.name, self.reported, self.c["delivered"]))
        return out


def read_js(path, check):
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#stream"):
                check.reported = int(line.split("\t")[1])
                continue
            if line.startswith("X\t"):
                check.bad(path, "line with a separator inside the payload")
                continue
            seq, subject, msgid, payload = line.split("\t", 3)
            check.deliver("%s seq %s" % (check.name, seq), payload, carried=msgid)


def read_redis(path, check):
    check.reported = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#xlen"):
                check.reported += int(line.split("\t")[2])
                continue
            if line.startswith("X\t"):
                check.bad(path, "line with a separator inside the payload")
                continue
            key, entry, idfield, payload = line.split("\t", 3)
            check.deliver("redis %s %s" % (key, entry), payload, carried=idfield, entry_id=entry)


def read_subscriber(path, check):
    """Returns the subscriber's disconnection windows as (lo, hi) positions: lo
    the highest position received before the disconnection, hi the lowest
    position received for the first time after it."""
    gaps = []  # [lo, hi]
    open_gaps = []
    running_max = (0, 0)
    connections = disconnects = errors = 0
    seen = set()
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            kind = line[:1]
            if kind == "C":
                connections += 1
                if connections > 1:
                    g = [running_max, None]
                    gaps.append(g)
                    open_gaps.append(g)
                continue
            if kind == "L":
                disconnects += 1
                continue
            if kind == "E":
                errors += 1
                check.sample("subscriber_errors", line)
                continue
            if kind == "X":
                check.bad("%s line %d" % (path, n), "line with a separator inside the payload")
                continue
            _, epoch, topic, payload = line.split("\t", 3)
            ident, pos = check.deliver("%s line %d (connection %s)" % (check.name, n, epoch), payload)
            if pos is None:
                continue
            if ident not in seen:
                seen.add(ident)
                for g in open_gaps:
                    g[1] = pos
                open_gaps = []
            if pos > running_max:
                running_max = pos
    inf = (1 << 64, 0)
    return [(lo, hi if hi is not None else inf) for lo, hi in gaps], dict(
        connections=connections, disconnects=disconnects, errors=errors)


def check_run(run_dir):
    truth = Truth(os.path.join(run_dir, "truth.tsv"))
    ids = {}
    checks = {}
    positions = {}
    for name in EXACTLY_ONCE:
        c = SinkCheck(name, truth, ids)
        path = os.path.join(run_dir, name + ".tsv")
        if not os.path.exists(path):
            c.bad(path, "missing: the sink could not be read")
        elif name == "redis":
            read_redis(path, c)
        else:
            read_js(path, c)
        checks[name] = c
        for ident, pos in c.pos_of.items():
            positions.setdefault(ident, pos)
    sub_info = {}
    gaps_of = {}
    for name in AT_LEAST_ONCE:
        c = SinkCheck(name, truth, ids)
        path = os.path.join(run_dir, name + ".tsv")
        if not os.path.exists(path):
            c.bad(path, "missing: the subscriber wrote nothing")
            gaps_of[name] = []
        else:
            gaps_of[name], sub_info[name] = read_subscriber(path, c)
        checks[name] = c
        for ident, pos in c.pos_of.items():
            positions.setdefault(ident, pos)
    for name, c in checks.items():
        c.finish(positions, gaps_of.get(name))

    run = {}
    run_path = os.path.join(run_dir, "run.json")
    if os.path.exists(run_path):
        with open(run_path) as f:
            run = json.load(f)
    problems = []
    for c in checks.values():
        problems += c.problems()
    for p in run.get("problems", []):
        problems.append(p)
    if not truth.expected:
        problems.append("no committed change at all: the load did not run")
    result = {
        "seed": run.get("seed"),
        "form": run.get("form"),
        "seconds": run.get("seconds"),
        "faults": run.get("fault_counts", {}),
        "faults_total": sum(run.get("fault_counts", {}).values()),
        "load": run.get("load", {}),
        "walbus": run.get("walbus", {}),
        "committed_transactions": len(truth.xids),
        "expected_events": len(truth.expected),
        "keys": truth.keys,
        "sinks": {n: dict(c.c, exactly_once=c.exactly_once, reported=c.reported,
                          title=SINK_TITLES[n], samples=dict(c.samples)) for n, c in checks.items()},
        "subscribers": sub_info,
        "problems": problems,
        "ok": not problems,
    }
    with open(os.path.join(run_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    return result


def format_table(result):
    lines = []
    faults = result["faults"]
    lines.append("faults injected (seed %s, %s form, %s s of load)" % (result["seed"], result["form"], result["seconds"]))
    lines.append("  %-28s %6s" % ("fault kind", "count"))
    for kind in sorted(faults):
        lines.append("  %-28s %6d" % (kind, faults[kind]))
    lines.append("  %-28s %6d" % ("total", result["faults_total"]))
    load = result["load"]
    lines.append("load: %d committed transactions (%s acknowledged, %s with a rolled-back subtransaction, "
                 "%s outcome unknown to the client), %s rolled back + %s raised + %s conflicts aborted; "
                 "%d row changes expected over %d keys"
                 % (result["committed_transactions"], load.get("committed", "?"),
                    load.get("committed_with_rolled_back_subtransaction", "?"), load.get("unknown_outcome", "?"),
                    load.get("rolled_back", "?"), load.get("raised", "?"), load.get("conflicts", "?"),
                    result["expected_events"], result["keys"]))
    w = result["walbus"]
    if w:
        lines.append("walbus: %s starts, %s unexpected exits, drained in %s s, exit code %s"
                     % (w.get("starts"), w.get("unexpected_exits"), w.get("drain_seconds"), w.get("exit_code")))
    hdr = ("sink", "checked", "delivered", "lost", "lost_gap", "dup", "aborted", "phantom", "order", "mismatch")
    lines.append("  %-32s %9s %9s %6s %8s %8s %7s %7s %6s %8s" % hdr)
    for name in EXACTLY_ONCE + AT_LEAST_ONCE:
        c = result["sinks"][name]
        order = c["order"] + c["stream_order"]
        lines.append("  %-32s %9d %9d %6d %8s %8d %7d %7d %6d %8d"
                     % (c["title"], result["expected_events"], c["delivered"], c["lost"],
                        c["lost_gap"] if name in AT_LEAST_ONCE else "-", c["duplicates"],
                        c["aborted"], c["phantom"], order, c["mismatch"] + c["bad"]))
    lines.append("RESULT: %s" % ("PASS" if result["ok"] else "FAIL"))
    for p in result["problems"]:
        lines.append("  problem: %s" % p)
    for name in EXACTLY_ONCE + AT_LEAST_ONCE:
        for what, texts in result["sinks"][name]["samples"].items():
            if what == "subscriber_errors" or not result["ok"] or what == "lost":
                for t in texts:
                    lines.append("  %s %s: %s" % (name, what, t))
    return "\n".join(lines)


def main():
    if len(sys.argv) != 2:
        print("usage: check.py RUN_DIR", file=sys.stderr)
        return 2
    result = check_run(sys.argv[1])
    print(format_table(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
