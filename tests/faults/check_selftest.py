#!/usr/bin/env python3
"""Self-test of tests/faults/check.py on hand-made run directories: a clean run
passes, and each kind of defect (a lost change, a duplicate in an
exactly-once sink, an aborted or phantom event, a per-key reordering, a wrong
id) is counted where it belongs and fails the run. Runs in well under a
second; ctest runs it as `faults_checker_selftest`."""
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402

XID = {1: 700, 2: 701, 3: 702, 4: 703}
# (op_id, tx, tbl, k, op, ver): tx 1 inserts keys 1 and 2, tx 2 updates key 1
# twice, tx 3 deletes key 2 (fx_b: key only) and inserts key 3, tx 4 updates 3.
TRUTH = [
    (1, 1, "fx_a", 1, "i", 0),
    (2, 1, "fx_b", 2, "i", 0),
    (3, 2, "fx_a", 1, "u", 1),
    (4, 2, "fx_a", 1, "u", 2),
    (5, 3, "fx_b", 2, "d", 0),
    (6, 3, "fx_c", 3, "i", 0),
    (7, 4, "fx_c", 3, "u", 1),
]
COMMIT_LSN = {1: 0x1000, 2: 0x2000, 3: 0x3000, 4: 0x4000}


def envelope(op_id, tx, tbl, k, op, ver, seq, payload="ok", xid=None, eid=None):
    lsn = COMMIT_LSN[tx]
    row = {"id": k, "ver": ver, "op_id": op_id, "payload": payload}
    env = {
        "id": eid or "%016X:%d" % (lsn, seq),
        "op": {"i": "insert", "u": "update", "d": "delete"}[op],
        "source": {"db": "postgres", "schema": "public", "table": tbl, "lsn": "0/0",
                   "commit_lsn": check.lsn_text(lsn), "xid": xid if xid is not None else XID[tx],
                   "ts": "2026-01-01T00:00:00Z", "seq": seq},
        "key": {"id": k},
        "before": row if op == "d" and tbl != "fx_b" else None,
        "after": None if op == "d" else row,
    }
    return json.dumps(env, separators=(",", ":"))


def events():
    """Every committed change's envelope, in commit order, with its seq."""
    out, seq_of = [], {}
    for op_id, tx, tbl, k, op, ver in TRUTH:
        seq = seq_of.get(tx, 0)
        seq_of[tx] = seq + 1
        out.append(dict(op_id=op_id, tx=tx, tbl=tbl, k=k, op=op, ver=ver, seq=seq))
    return out


def env_of(e, **kw):
    return envelope(e["op_id"], e["tx"], e["tbl"], e["k"], e["op"], e["ver"], e["seq"], **kw)


class CheckerSelfTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="walbus-faults-selftest-")
        self.evs = events()
        with open(os.path.join(self.dir, "truth.tsv"), "w") as f:
            for op_id, tx, tbl, k, op, ver in TRUTH:
                f.write("%d\t%d\t%s\t%d\t%s\t%d\n" % (op_id, XID[tx] + (1 << 32), tbl, k, op, ver))
        self.js = {"js3": list(self.evs), "js1": list(self.evs)}
        self.redis = list(self.evs)
        self.mqtt = [("C", None)] + [("M", e) for e in self.evs]
        self.nats = [("C", None)] + [("M", e) for e in self.evs]
        self.extra = {}

    def tearDown(self):
        shutil.rmtree(self.dir)

    def write(self):
        for name, evs in self.js.items():
            with open(os.path.join(self.dir, name + ".tsv"), "w") as f:
                f.write("#stream\t%d\t1\t%d\n" % (len(evs), len(evs)))
                for i, e in enumerate(evs, 1):
                    payload = e["raw"] if "raw" in e else env_of(e)
                    msgid = e.get("msgid") or json.loads(payload)["id"]
                    f.write("%d\tjs.x\t%s\t%s\n" % (i, msgid, payload))
        by_key = {}
        for e in self.redis:
            by_key.setdefault("fx.public." + e["tbl"], []).append(e)
        with open(os.path.join(self.dir, "redis.tsv"), "w") as f:
            for key in sorted(by_key):
                f.write("#xlen\t%s\t%d\n" % (key, len(by_key[key])))
                for e in by_key[key]:
                    entry = e.get("entry") or "%d-%d" % (COMMIT_LSN[e["tx"]], e["seq"])
                    payload = env_of(e)
                    f.write("%s\t%s\t%s\t%s\n" % (key, entry, json.loads(payload)["id"], payload))
        for name, lines in (("mqtt", self.mqtt), ("nats", self.nats)):
            epoch = 0
            with open(os.path.join(self.dir, name + ".tsv"), "w") as f:
                for kind, e in lines:
                    if kind == "C":
                        epoch += 1
                        f.write("C\t%d\t0\tconnected\n" % epoch)
                    elif kind == "L":
                        f.write("L\t%d\t0\tlost\n" % epoch)
                    else:
                        payload = e["raw"] if "raw" in e else env_of(e)
                        f.write("M\t%d\tt\t%s\n" % (epoch, payload))
        with open(os.path.join(self.dir, "run.json"), "w") as f:
            json.dump({"seed": 1, "form": "selftest", "seconds": 0, "fault_counts": {"walbus_kill9": 1},
                       "load": {}, "walbus": {}, "problems": self.extra.get("problems", [])}, f)

    def run_check(self):
        self.write()
        r = check.check_run(self.dir)
        check.format_table(r)  # must not raise
        return r

    def test_clean_run_passes_with_duplicates_where_allowed(self):
        # MQTT re-delivers the first two changes after a walbus restart.
        self.mqtt += [("M", self.evs[0]), ("M", self.evs[1])]
        r = self.run_check()
        self.assertTrue(r["ok"], r["problems"])
        self.assertEqual(r["expected_events"], 7)
        self.assertEqual(r["sinks"]["mqtt"]["duplicates"], 2)
        self.assertEqual(r["sinks"]["js3"]["delivered"], 7)

    def test_lost_change_in_exactly_once_sink_fails(self):
        del self.redis[3]
        r = self.run_check()
        self.assertFalse(r["ok"])
        self.assertEqual(r["sinks"]["redis"]["lost"], 1)

    def test_lost_change_in_subscriber_outside_a_gap_fails(self):
        del self.mqtt[4]
        r = self.run_check()
        self.assertFalse(r["ok"])
        self.assertEqual(r["sinks"]["mqtt"]["lost"], 1)
        self.assertEqual(r["sinks"]["mqtt"]["lost_gap"], 0)

    def test_loss_inside_a_subscriber_gap_is_the_brokers(self):
        # Connection lost after change 2, back before change 5: changes 3 and 4
        # (between the last one before and the first new one after) never came.
        self.nats = [("C", None), ("M", self.evs[0]), ("M", self.evs[1]), ("L", None), ("C", None),
                     ("M", self.evs[1]), ("M", self.evs[4]), ("M", self.evs[5]), ("M", self.evs[6])]
        r = self.run_check()
        self.assertTrue(r["ok"], r["problems"])
        self.assertEqual(r["sinks"]["nats"]["lost_gap"], 2)
        self.assertEqual(r["sinks"]["nats"]["lost"], 0)

    def test_duplicate_in_exactly_once_sink_fails(self):
        self.js["js3"].insert(2, self.evs[1])
        r = self.run_check()
        self.assertFalse(r["ok"])
        self.assertEqual(r["sinks"]["js3"]["duplicates"], 1)
        self.assertGreaterEqual(r["sinks"]["js3"]["stream_order"], 1)

    def test_event_of_aborted_transaction_fails(self):
        bad = dict(op_id=99, tx=4, tbl="fx_a", k=50, op="i", ver=0, seq=5)
        self.js["js1"].append(dict(bad, raw=envelope(99, 4, "fx_a", 50, "i", 0, 5, payload="ABORT")))
        self.mqtt.append(("M", dict(bad, raw=envelope(99, 4, "fx_a", 50, "i", 0, 5, payload="SUBABORT"))))
        r = self.run_check()
        self.assertFalse(r["ok"])
        self.assertEqual(r["sinks"]["js1"]["aborted"], 1)
        self.assertEqual(r["sinks"]["mqtt"]["aborted"], 1)

    def test_phantom_delete_fails(self):
        # A delete of key 1, which no committed transaction deleted.
        self.nats.append(("M", dict(raw=envelope(0, 4, "fx_a", 1, "d", 2, 9))))
        r = self.run_check()
        self.assertFalse(r["ok"])
        self.assertEqual(r["sinks"]["nats"]["phantom"], 1)

    def test_reordered_key_fails(self):
        # Key 1's two updates swapped in MQTT (first deliveries out of order).
        m = self.mqtt
        m[3], m[4] = m[4], m[3]
        r = self.run_check()
        self.assertFalse(r["ok"])
        self.assertEqual(r["sinks"]["mqtt"]["order"], 1)

    def test_wrong_ids_fail(self):
        self.js["js3"][0] = dict(self.evs[0], msgid="0000000000000001:0")
        self.redis[1] = dict(self.evs[1], entry="1-1")
        self.js["js1"][2] = dict(self.evs[2], raw=env_of(self.evs[2], xid=5))
        r = self.run_check()
        self.assertFalse(r["ok"])
        self.assertEqual(r["sinks"]["js3"]["mismatch"], 1)
        self.assertEqual(r["sinks"]["redis"]["mismatch"], 1)
        self.assertEqual(r["sinks"]["js1"]["mismatch"], 1)

    def test_same_change_under_two_ids_fails(self):
        # MQTT re-delivers change 1 under another id: ids must be stable.
        self.mqtt.append(("M", dict(self.evs[0], raw=env_of(self.evs[0], eid="0000000000001000:7"))))
        r = self.run_check()
        self.assertFalse(r["ok"])
        self.assertGreaterEqual(r["sinks"]["mqtt"]["mismatch"], 1)

    def test_run_problems_fail(self):
        self.extra["problems"] = ["walbus did not drain"]
        r = self.run_check()
        self.assertFalse(r["ok"])


if __name__ == "__main__":
    unittest.main()
