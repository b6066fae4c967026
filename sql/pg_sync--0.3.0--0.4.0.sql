-- pg_sync 0.3.0 -> 0.4.0: conflict records name the winner of a conflict
-- (the client and role whose push last wrote the row), for the conflict
-- inbox of devices.

CREATE TABLE pg_sync.push_xacts (
    xid       xid8 PRIMARY KEY,
    role      regrole NOT NULL,
    client_id text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE pg_sync.conflicts ADD COLUMN winner_client text, ADD COLUMN winner_role regrole;

-- Pull pages render a row's column versions with one call per row.
CREATE FUNCTION pg_sync._ver_json(ver bigint[], attnums smallint[]) RETURNS json
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ver_json_wrapper';
