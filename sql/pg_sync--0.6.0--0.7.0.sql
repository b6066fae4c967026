-- pg_sync 0.6.0 -> 0.7.0: sync_pull_chunks, the pull page as rows of text
-- written while it is rendered (the backend never holds the page).

CREATE FUNCTION sync_pull_chunks(cursor text DEFAULT NULL, max_changes int DEFAULT 10000, client_id text DEFAULT NULL)
RETURNS SETOF text VOLATILE ROWS 100 LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_pull_chunks';
