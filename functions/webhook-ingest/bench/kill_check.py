#!/usr/bin/env python3
"""The kill -9 check of run.sh: every delivery id that wrk saw answered 202
must be a message in the bus database (the dispatcher delivers from that
table). Reads the database with Python's own SQLite, not the bus's code.
Usage: kill_check.py BUS_DB ACCEPTED_DIR   (exit 1 when any 202 is missing)"""
import json
import pathlib
import sqlite3
import sys

db, accepted_dir = sys.argv[1], pathlib.Path(sys.argv[2])
accepted = set()
for f in accepted_dir.glob("*.ids"):
    accepted.update(line for line in f.read_text().split("\n") if line)
conn = sqlite3.connect(db)
stored = set()
for (attributes,) in conn.execute(
    "SELECT attributes FROM messages WHERE topic = 'patchpanda-github-events'"
):
    delivery = json.loads(attributes).get("github_delivery")
    if delivery:
        stored.add(delivery)
missing = accepted - stored
print(
    f"kill -9: {len(accepted)} deliveries answered 202 before the kill, "
    f"{len(stored)} messages in the bus after the restart, {len(missing)} 202s missing"
)
if missing:
    print("missing:", sorted(missing)[:20])
    sys.exit(1)
if not accepted:
    print("kill -9: nothing was accepted; the check proved nothing")
    sys.exit(1)
