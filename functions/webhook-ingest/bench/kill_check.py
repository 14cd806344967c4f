#!/usr/bin/env python3
"""The kill -9 check of run.sh: every delivery id that wrk saw answered 202
must be a message in the bus database (the dispatcher delivers from that
table), and its body must be whole: read from its segment file at the row's
offset and length, matching the row's CRC-32 and parsing as JSON. Reads the
files with Python's own SQLite and zlib, not the bus's code.
Usage: kill_check.py BUS_DB ACCEPTED_DIR   (exit 1 when any 202 is missing)"""
import json
import pathlib
import sqlite3
import sys
import zlib

db, accepted_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
segments = db.parent / "bus-segments"
accepted = set()
for f in accepted_dir.glob("*.ids"):
    accepted.update(line for line in f.read_text().split("\n") if line)
conn = sqlite3.connect(db)
stored, damaged, files = set(), [], {}
for attributes, data, segment, offset, length, crc in conn.execute(
    "SELECT attributes, data, segment, seg_offset, seg_len, seg_crc FROM messages"
    " WHERE topic = 'patchpanda-github-events'"
):
    delivery = json.loads(attributes).get("github_delivery")
    if not delivery:
        continue
    if segment is not None:
        if segment not in files:
            files[segment] = open(segments / f"{segment}.seg", "rb")
        f = files[segment]
        f.seek(offset)
        data = f.read(length)
        if len(data) != length or zlib.crc32(data) != crc:
            damaged.append(delivery)
            continue
    try:
        json.loads(data)
    except ValueError:
        damaged.append(delivery)
        continue
    stored.add(delivery)
missing = accepted - stored
print(
    f"kill -9: {len(accepted)} deliveries answered 202 before the kill, "
    f"{len(stored)} whole messages in the bus after the restart "
    f"({len(files)} segment files), {len(damaged)} damaged, {len(missing)} 202s missing"
)
if missing or damaged:
    print("missing:", sorted(missing)[:20], "damaged:", damaged[:20])
    sys.exit(1)
if not accepted:
    print("kill -9: nothing was accepted; the check proved nothing")
    sys.exit(1)
