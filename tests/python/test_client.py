#!/usr/bin/python3
"""sqlite_sync from Python's standard sqlite3 module.

Run with Debian's /usr/bin/python3 (its sqlite3 module can load extensions):

    SQLITE_SYNC_LIB=target/debug/libsqlite_sync.so /usr/bin/python3 tests/python/test_client.py
"""

import base64
import json
import os
import sqlite3
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.environ.get(
    "SQLITE_SYNC_LIB",
    os.path.join(HERE, "..", "..", "target", "debug", "libsqlite_sync.so"),
)

SCHEMA = {
    "format": 1,
    "version": 1,
    "tables": [
        {
            "name": "tasks",
            "pk": ["id"],
            "columns": [
                {"name": "id", "type": "text", "nullable": False},
                {"name": "title", "type": "text"},
                {"name": "done", "type": "boolean"},
                {"name": "priority", "type": "integer"},
                {"name": "estimate", "type": "real"},
                {"name": "due", "type": "timestamptz"},
                {"name": "meta", "type": "json"},
                {"name": "tags", "type": "json", "strategy": "set_union"},
                {"name": "data", "type": "blob"},
            ],
        }
    ],
}
VER = ["0000000000400abc"] * 9


def connect():
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.enable_load_extension(True)
    # The entry point follows from the file name (sqlite3_sqlitesync_init).
    db.load_extension(os.path.splitext(LIB)[0])
    db.enable_load_extension(False)
    return db


def one(db, sql, *args):
    return db.execute(sql, args).fetchone()[0]


def call(db, sql, *args):
    return json.loads(one(db, sql, *args))


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.db = connect()
        self.init = call(self.db, "SELECT sync_init(?)", json.dumps(SCHEMA))

    def test_init(self):
        self.assertTrue(self.init["changed"])
        self.assertEqual(self.init["schema_version"], 1)
        self.assertEqual(one(self.db, "SELECT sync_client_id()"), self.init["client_id"])
        # Before the first pull: a cursor with no positions that asks for
        # page format 2.
        cur = one(self.db, "SELECT sync_cursor()")
        self.assertTrue(cur.startswith("c1."))
        body = base64.urlsafe_b64decode(cur[3:] + "=" * (-len(cur[3:]) % 4))
        self.assertEqual(json.loads(body), {"v": 1, "s": 0, "t": {}, "w": 2})
        st = call(self.db, "SELECT sync_status()")
        self.assertEqual(st["pending"], 0)
        self.assertFalse(st["in_flight"])

    def test_write_push_ack(self):
        db = self.db
        db.execute(
            "INSERT INTO tasks (id, title, done, priority, estimate, meta, tags, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("t1", "héllo", True, 3, 1.5, '{"a": 1}', '["x"]', b"\x00\xff"),
        )
        db.execute("UPDATE tasks SET title = 'again' WHERE id = 't1'")
        self.assertEqual(one(db, "SELECT sync_pending('tasks', 't1')"), 1)
        batch_text = one(db, "SELECT sync_changes()")
        self.assertEqual(one(db, "SELECT sync_changes()"), batch_text)
        batch = json.loads(batch_text)
        self.assertEqual(batch["client_id"], self.init["client_id"])
        (ch,) = batch["changes"]
        self.assertEqual(ch["op"], "insert")
        self.assertEqual(
            ch["cols"],
            {"id": "t1", "title": "again", "done": True, "priority": 3, "estimate": 1.5,
             "due": None, "meta": {"a": 1}, "tags": ["x"], "data": "\\x00ff"},
        )
        result = {
            "format": 1,
            "client_id": batch["client_id"],
            "results": [
                {"seq": ch["seq"], "table": "tasks", "pk": ch["pk"], "status": "applied",
                 "row": ch["cols"], "ver": VER}
            ],
        }
        summary = call(db, "SELECT sync_ack(?)", json.dumps(result))
        self.assertEqual(summary["confirmed"], 1)
        self.assertEqual(one(db, "SELECT sync_pending('tasks', 't1')"), 0)
        self.assertEqual(call(db, "SELECT sync_status()")["pending"], 0)
        self.assertEqual(
            db.execute("SELECT title, done, data FROM tasks").fetchall(),
            [("again", 1, b"\x00\xff")],
        )
        # Acknowledging twice changes nothing.
        self.assertEqual(call(db, "SELECT sync_ack(?)", json.dumps(result))["ignored"], 1)

    def test_apply_and_rebase(self):
        db = self.db
        row = {"id": "s1", "title": "server", "done": False, "priority": 1, "estimate": 2.0,
               "due": "2026-01-01T00:00:00+00:00", "meta": {"k": [1, 2]}, "tags": ["a"],
               "data": "\\x01"}
        page = {"format": 1, "schema_version": 1, "cursor": "c1", "has_more": False,
                "changes": [{"table": "tasks", "op": "upsert", "pk": {"id": "s1"},
                             "row": row, "ver": VER}]}
        res = call(db, "SELECT sync_apply(?)", json.dumps(page))
        self.assertEqual(res, {"upserts": 1, "deletes": 0, "cursor": "c1", "has_more": False})
        self.assertEqual(one(db, "SELECT sync_cursor()"), "c1")
        db.execute("UPDATE tasks SET title = 'mine' WHERE id = 's1'")
        row2 = dict(row, title="theirs", priority=9)
        page2 = dict(page, cursor="c2", changes=[
            {"table": "tasks", "op": "upsert", "pk": {"id": "s1"}, "row": row2,
             "ver": ["0000000000800abc"] * 9}])
        call(db, "SELECT sync_apply(?)", json.dumps(page2))
        self.assertEqual(
            db.execute("SELECT title, priority, json(meta) FROM tasks").fetchall(),
            [("mine", 9, '{"k":[1,2]}')],
        )
        batch = call(db, "SELECT sync_changes()")
        self.assertEqual(batch["changes"][0]["base"], {"title": VER[1]})

    def test_errors(self):
        db = self.db
        for sql, arg, needle in [
            ("SELECT sync_apply(?)", "{oops", "JSON"),
            ("SELECT sync_init(?)", json.dumps({"format": 1, "version": 2, "tables": [
                {"name": "x", "pk": [], "columns": [{"name": "a", "type": "text"}]}]}),
             "primary key"),
            ("SELECT sync_ack(?)", json.dumps({"format": 5, "client_id": "x", "results": []}),
             "format"),
        ]:
            with self.assertRaises(sqlite3.OperationalError) as cm:
                db.execute(sql, (arg,)).fetchone()
            self.assertIn(needle, str(cm.exception))
        with self.assertRaises(sqlite3.IntegrityError):
            db.execute("INSERT INTO tasks (id) VALUES ('dup')")
            db.execute("INSERT INTO tasks (id) VALUES ('dup')")


if __name__ == "__main__":
    if not os.path.exists(LIB):
        print(f"{LIB} is missing: run `cargo build --manifest-path sqlite_sync/Cargo.toml` first", file=sys.stderr)
        sys.exit(2)
    unittest.main(verbosity=2)
