// sqlite_sync from Node with better-sqlite3 (from the npm registry).
// Run: SQLITE_SYNC_LIB=target/debug/libsqlite_sync.so node tests/node/client.test.js
'use strict';
const assert = require('node:assert/strict');
const path = require('node:path');
const Database = require('better-sqlite3');

const LIB = process.env.SQLITE_SYNC_LIB ||
  path.join(__dirname, '..', '..', 'target', 'debug', 'libsqlite_sync.so');
const SCHEMA = {
  format: 1, version: 1,
  tables: [{
    name: 'tasks', pk: ['id'],
    columns: [
      { name: 'id', type: 'text', nullable: false },
      { name: 'title', type: 'text' },
      { name: 'done', type: 'boolean' },
      { name: 'priority', type: 'integer' },
      { name: 'meta', type: 'json' },
    ],
  }],
};
const VER = Array(5).fill('0000000000400abc');

const db = new Database(':memory:');
db.loadExtension(LIB);
const one = (sql, ...args) => db.prepare(sql).pluck().get(...args);
const call = (sql, ...args) => JSON.parse(one(sql, ...args));

// Set up from the server's schema.
const init = call('SELECT sync_init(?)', JSON.stringify(SCHEMA));
assert.equal(init.schema_version, 1);
assert.equal(one('SELECT sync_client_id()'), init.client_id);

// Offline writes through the table are queued, coalesced and stable.
db.prepare('INSERT INTO tasks (id, title, done, priority, meta) VALUES (?, ?, ?, ?, ?)')
  .run('t1', 'from node', 1, 2, '{"a":1}');
db.exec("UPDATE tasks SET title = 'edited' WHERE id = 't1'");
assert.equal(one("SELECT sync_pending('tasks', 't1')"), 1);
const batchText = one('SELECT sync_changes()');
assert.equal(one('SELECT sync_changes()'), batchText);
const batch = JSON.parse(batchText);
assert.equal(batch.changes.length, 1);
const ch = batch.changes[0];
assert.equal(ch.op, 'insert');
assert.deepEqual(ch.cols, { id: 't1', title: 'edited', done: true, priority: 2, meta: { a: 1 } });

// The server's answer confirms it.
const summary = call('SELECT sync_ack(?)', JSON.stringify({
  format: 1, client_id: batch.client_id,
  results: [{ seq: ch.seq, table: 'tasks', pk: ch.pk, status: 'applied', row: ch.cols, ver: VER }],
}));
assert.equal(summary.confirmed, 1);
assert.equal(call('SELECT sync_status()').pending, 0);

// A pull page: a server row arrives, a local edit rebases on top.
const row = { id: 's1', title: 'server', done: false, priority: 1, meta: null };
call('SELECT sync_apply(?)', JSON.stringify({
  format: 1, schema_version: 1, cursor: 'c1', has_more: false,
  changes: [{ table: 'tasks', op: 'upsert', pk: { id: 's1' }, row, ver: VER }],
}));
assert.equal(one('SELECT sync_cursor()'), 'c1');
db.exec("UPDATE tasks SET title = 'mine' WHERE id = 's1'");
call('SELECT sync_apply(?)', JSON.stringify({
  format: 1, schema_version: 1, cursor: 'c2', has_more: false,
  changes: [{ table: 'tasks', op: 'upsert', pk: { id: 's1' },
              row: { ...row, title: 'theirs', priority: 9 }, ver: Array(5).fill('0000000000800abc') }],
}));
assert.deepEqual(db.prepare("SELECT title, priority FROM tasks WHERE id = 's1'").get(),
  { title: 'mine', priority: 9 });

// Bad input is a clear error.
assert.throws(() => one('SELECT sync_apply(?)', '{not json'), /JSON/i);
console.log('node client: ok');
