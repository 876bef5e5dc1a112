#!/usr/bin/env python3
"""Builds the seed corpora of tests/fuzz/corpus/<target>/ from the fixtures.

  fuzz_pgoutput       every message of tests/fixtures/pgoutput/*.txt
  fuzz_array_literal  flag byte 0 (',' delimiter) + every distinct text column
                      value of those messages (arrays and scalars alike),
                      plus the array_out forms of pgwire/array_literal.h
  fuzz_config         tests/fixtures/conf/*.toml, conf/walbus.example.toml,
                      conf/examples/*.toml

Files are named by the SHA-1 of their bytes, as libFuzzer names its own, so
running it again adds nothing twice. Existing entries are kept.
Usage: tests/fuzz/make_corpus.py   (from anywhere)
"""
import glob
import hashlib
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(HERE, "corpus")
MAX_VALUE = 512  # array/scalar seeds longer than this add size, not coverage


def write(target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, hashlib.sha1(data).hexdigest())
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)


def fixture_messages():
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/pgoutput/*.txt"))):
        if path.endswith("types_catalog.txt"):
            continue
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                fields = line.split()
                if len(fields) != 3:
                    sys.exit(f"{path}: expected '<lsn> <xid> <hex>': {line[:60]}")
                yield bytes.fromhex(fields[2])


def tuple_values(buf, pos):
    """Text values of one TupleData at pos; returns (values, new pos)."""
    (natts,) = struct.unpack_from(">H", buf, pos)
    pos += 2
    values = []
    for _ in range(natts):
        kind = buf[pos : pos + 1]
        pos += 1
        if kind == b"t" or kind == b"b":
            (n,) = struct.unpack_from(">I", buf, pos)
            pos += 4
            values.append(buf[pos : pos + n])
            pos += n
    return values, pos


def column_values(msg):
    """Text column values of an Insert/Update/Delete (as proto.c writes them)."""
    try:
        t = msg[:1]
        pos = 5  # type byte + relation OID
        values = []
        if t == b"I":
            pos += 1  # 'N'
            values, _ = tuple_values(msg, pos)
        elif t in (b"U", b"D"):
            while pos < len(msg) and msg[pos : pos + 1] in (b"K", b"O", b"N"):
                pos += 1
                v, pos = tuple_values(msg, pos)
                values += v
        return values
    except (struct.error, IndexError):
        return []


HAND_ARRAYS = [
    b"{}", b"{1,2,NULL}", b'{"a b","with \\"q\\"","back\\\\slash",NULL,"NULL"}',
    b"{{1,2},{3,4}}", b"[0:1]={1,2}", b"[1:2][1:1]={{1},{2}}", b"  {null, nULL}  ",
    b"{t,f}", b"{1.5,NaN,Infinity,-Infinity,1e10}", b'{"{\\"a\\": [1, 2]}",null}',
    b'{"\\\\x00ff",NULL}', b"{{{{{{1}}}}}}", b'{"\xc3\xa9t\xc3\xa9"}',
]
HAND_BOX = [b"{(3,4),(1,2);(1,1),(0,0)}"]


def main():
    n = {"fuzz_pgoutput": 0, "fuzz_array_literal": 0, "fuzz_config": 0}
    values = set()
    for msg in fixture_messages():
        write("fuzz_pgoutput", msg)
        n["fuzz_pgoutput"] += 1
        for v in column_values(msg):
            if len(v) <= MAX_VALUE:
                values.add(v)
    for v in sorted(values) + HAND_ARRAYS:
        write("fuzz_array_literal", b"\x00" + v)
        n["fuzz_array_literal"] += 1
    for v in HAND_BOX:
        write("fuzz_array_literal", b"\x01" + v)
        n["fuzz_array_literal"] += 1
    tomls = sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/conf/*.toml")))
    tomls += [os.path.join(ROOT, "conf/walbus.example.toml")]
    tomls += sorted(glob.glob(os.path.join(ROOT, "conf/examples/*.toml")))
    for path in tomls:
        with open(path, "rb") as f:
            write("fuzz_config", f.read())
        n["fuzz_config"] += 1
    for target, count in n.items():
        print(f"{target}: {count} seeds")


if __name__ == "__main__":
    main()
