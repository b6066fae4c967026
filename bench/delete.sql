-- P1 single-row DELETE: each transaction deletes the next preloaded task
-- (rows {first} and up, in order, from a sequence), so every DELETE hits a row.
-- The subquery makes nextval run once per statement, not once per scanned row.
DELETE FROM {table} WHERE id = (SELECT md5('task-' || nextval('{seq}'))::uuid::text);
