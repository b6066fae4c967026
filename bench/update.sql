-- P1 single-row UPDATE of a random existing task: title, status, updated_at
-- (the indexed primary key is untouched). Rows 1..{rows} are never deleted.
\set n random(1, {rows})
UPDATE {table} SET title = 'Edited task ' || :n, status = 'in_progress', updated_at = now()
WHERE id = md5('task-' || :n)::uuid::text;
