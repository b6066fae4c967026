-- pg_sync 0.1.0 -> 0.2.0
-- Conflicts are looked up per client (a device's conflict list).
CREATE INDEX conflicts_client_idx ON pg_sync.conflicts (client_id, seq);
