-- pg_sync 0.4.0 -> 0.5.0: write marks, so a pull reads only the tables
-- written since its cursor (an idle pull no longer costs a query per table).

CREATE TABLE pg_sync.last_writes (
    relid oid PRIMARY KEY,
    xid   xid8 NOT NULL
);
INSERT INTO pg_sync.last_writes (relid, xid)
SELECT relid::oid, pg_current_xact_id() FROM pg_sync.tables;

-- Backends started before this update may still run the 0.4.0 triggers,
-- which do not raise marks: pulls read every table until the server has
-- restarted since now (the first push after the restart notes it).
ALTER TABLE pg_sync.meta ADD COLUMN marks_trusted boolean NOT NULL DEFAULT false,
    ADD COLUMN marks_since timestamptz;
UPDATE pg_sync.meta SET marks_since = now();
ALTER TABLE pg_sync.meta ALTER COLUMN marks_trusted SET DEFAULT true;

CREATE FUNCTION pg_sync._write_xid(tbl regclass) RETURNS xid8
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_write_xid';

-- Rows inserted while the tracking triggers are bypassed raise the mark too.
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT relid FROM pg_sync.tables LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN _sync_xid SET DEFAULT pg_sync._write_xid(%L::pg_catalog.regclass)',
                       r.relid, r.relid::oid);
    END LOOP;
END;
$$;

-- A restored table gets its write mark back when its tracking trigger is
-- created (marks are not dumped).
CREATE OR REPLACE FUNCTION pg_sync._on_trigger_ddl() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record; v_role text; v_stale boolean;
BEGIN
    -- Runs as the user who created the trigger (no elevated rights): an
    -- owner creating the trigger on its own table can only touch that table.
    FOR r IN SELECT t.tgrelid::regclass AS rel FROM pg_event_trigger_ddl_commands() c
             JOIN pg_trigger t ON t.oid = c.objid
             WHERE c.classid = 'pg_trigger'::regclass AND t.tgname = 'zz_pg_sync_track'
    LOOP
        -- 0.5.0: a restored table gets its write mark back (marks are not
        -- dumped; without one, every pull reads the table).
        IF has_table_privilege('pg_sync.last_writes', 'INSERT')
           AND has_table_privilege('pg_sync.last_writes', 'UPDATE') THEN
            INSERT INTO pg_sync.last_writes AS w (relid, xid) VALUES (r.rel, pg_current_xact_id())
            ON CONFLICT (relid) DO UPDATE SET xid = GREATEST(w.xid, EXCLUDED.xid);
        END IF;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM ONLY %s WHERE _sync_xid >= pg_current_xact_id())',
                       r.rel) INTO v_stale;
        CONTINUE WHEN NOT v_stale;
        v_role := current_setting('session_replication_role');
        IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            PERFORM set_config('session_replication_role', 'replica', true);
        END IF;
        EXECUTE format('UPDATE ONLY %s SET _sync_xid = pg_current_xact_id() '
                       'WHERE _sync_xid >= pg_current_xact_id()', r.rel);
        PERFORM set_config('session_replication_role', v_role, true);
    END LOOP;
END;
$$;

-- Streams: named filters over one synced table that devices subscribe to.
CREATE TABLE pg_sync.streams (
    name       text PRIMARY KEY,
    relid      regclass NOT NULL,
    filter     text NOT NULL,
    sql        text NOT NULL,
    params     text[] NOT NULL,
    types      regtype[] NOT NULL,
    deps       regclass[] NOT NULL,
    volatile   boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON pg_sync.streams TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('pg_sync.streams', '');
CREATE FUNCTION sync_stream(name text, tbl regclass, filter text) RETURNS jsonb
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'sync_stream_wrapper';
REVOKE EXECUTE ON FUNCTION sync_stream(text, regclass, text) FROM PUBLIC;
CREATE FUNCTION sync_stream_drop(name text) RETURNS boolean
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'sync_stream_drop_wrapper';
REVOKE EXECUTE ON FUNCTION sync_stream_drop(text) FROM PUBLIC;
