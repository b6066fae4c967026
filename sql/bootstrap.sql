-- pg_sync internal catalog. Runs first in CREATE EXTENSION pg_sync.

-- The pg_ prefix is reserved for system schemas; creating ours needs this
-- superuser-only setting for one statement.
SET LOCAL allow_system_table_mods = on;
CREATE SCHEMA pg_sync;
RESET allow_system_table_mods;
COMMENT ON SCHEMA pg_sync IS 'pg_sync: change tracking catalog, tombstones, conflict log';

-- One row per synced table.
CREATE TABLE pg_sync.tables (
    relid      regclass PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    options    jsonb NOT NULL DEFAULT '{}',
    enabled_at timestamptz NOT NULL DEFAULT now()
);

-- Global counters: the schema version clients compare against, and the
-- compaction horizon (cursors older than it must resync).
CREATE TABLE pg_sync.meta (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    schema_version bigint NOT NULL DEFAULT 1,
    compacted_xid  xid8 NOT NULL DEFAULT '0',
    compacted_at   timestamptz,
    -- 0.5.0: pulls use write marks once no backend can run triggers of an
    -- older version (true on a fresh install; after an update, from the
    -- first restart of the server, noted by the first push after it).
    marks_trusted  boolean NOT NULL DEFAULT true,
    marks_since    timestamptz
);
INSERT INTO pg_sync.meta DEFAULT VALUES;

-- Deleted rows: what a client needs to remove the row, kept until compaction.
-- pk is the key as canonical JSON text (jsonb_build_object(...)::text), in
-- the C collation: plain, fast btree keys.
CREATE TABLE pg_sync.tombstones (
    relid oid NOT NULL,
    pk    text COLLATE "C" NOT NULL,
    xid   xid8 NOT NULL,
    hlc   bigint NOT NULL,
    old   jsonb,
    at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tombstones_pull_idx ON pg_sync.tombstones (relid, xid, pk);
CREATE INDEX tombstones_pk_idx ON pg_sync.tombstones (relid, pk);

-- Clients that pushed or pulled: last push and the highest sequence number
-- seen. A client id is bound to the role that uses it: the same id used by
-- two roles names two different clients, so no role can read, pre-empt or
-- block another role's idempotency records. Role 0 marks a client recorded
-- before 0.3.0; the first role to use its id claims it.
CREATE TABLE pg_sync.clients (
    client_id  text NOT NULL,
    last_seq   bigint NOT NULL DEFAULT 0,
    last_push  timestamptz,
    pushes     bigint NOT NULL DEFAULT 0,
    last_pull  timestamptz,
    last_cursor text,
    role       regrole NOT NULL,
    PRIMARY KEY (role, client_id)
);

-- The answer given to each pushed change, so a retried change gets the same
-- answer and is never applied twice.
CREATE TABLE pg_sync.push_results (
    client_id text NOT NULL,
    seq       bigint NOT NULL,
    result    jsonb NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    role      regrole NOT NULL,
    PRIMARY KEY (role, client_id, seq)
);

-- 0.4.0: who ran each transaction that pushed (one row per sync_push
-- transaction), so a conflict record can name the client whose push last
-- wrote the row: the winner a device shows in its conflict inbox. Pruned
-- with the push results by sync_compact. Not dumped: xids belong to this
-- database's history.
CREATE TABLE pg_sync.push_xacts (
    xid       xid8 PRIMARY KEY,
    role      regrole NOT NULL,
    client_id text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);

-- 0.5.0: write marks. Per synced table, the newest transaction that wrote
-- it, raised in place by the tracking triggers (and by the _sync_xid
-- default) and never lowered: a pull reads only the tables written since
-- its cursor. Read by pulls through pg_sync's elevated reader; not readable
-- by PUBLIC. Not dumped: xids belong to this database's history (a restored
-- table without a mark is read by every pull until it is enabled again).
CREATE TABLE pg_sync.last_writes (
    relid oid PRIMARY KEY,
    xid   xid8 NOT NULL
);

-- 0.5.0: streams, named filters over one synced table that devices
-- subscribe to with typed parameters (sync_stream). sql holds the filter
-- with ($n::text::<type>) parameters; deps the other tables it reads.
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

-- Every conflict that was not a clean merge. Never truncated by pg_sync.
CREATE TABLE pg_sync.conflicts (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    table_name   text NOT NULL,
    pk           jsonb NOT NULL,
    column_name  text,
    strategy     text NOT NULL,
    outcome      text NOT NULL,
    reason       text NOT NULL,
    server_value jsonb,
    client_value jsonb,
    server_ver   text,
    client_ver   text,
    client_id    text,
    seq          bigint,
    resolved_at  timestamptz,
    resolution   jsonb,
    client_role  regrole,
    -- 0.4.0: the client and role whose push last wrote the row before the
    -- conflicting change, as far as pg_sync.push_xacts knows it.
    winner_client text,
    winner_role  regrole
);
CREATE INDEX conflicts_open_idx ON pg_sync.conflicts (table_name) WHERE resolved_at IS NULL;

-- The catalog is written only by pg_sync's own code: the tracking triggers
-- and the bookkeeping of sync_push / sync_pull switch to the catalog owner
-- for exactly those writes, with search_path pinned (pg_sync/src/privileged.rs).
-- No SQL-callable function writes the catalog on behalf of PUBLIC.

-- Runs one statement of a pushed change inside its own subtransaction, so a
-- failing change (constraint violation, bad value) is rolled back alone and
-- reported with the constraint's name.
-- It runs as the caller with the caller's search_path (the statement's own
-- triggers and policies may depend on it), so every name in its body is
-- schema-qualified.
CREATE FUNCTION pg_sync._try(p_sql text, a jsonb, b bigint[], c jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
    v_state text; v_msg text; v_detail text; v_constraint text; v_column text;
BEGIN
    EXECUTE p_sql INTO r USING a, b, c;
    RETURN pg_catalog.jsonb_build_object('ok', r);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
        v_detail = PG_EXCEPTION_DETAIL, v_constraint = CONSTRAINT_NAME, v_column = COLUMN_NAME;
    RETURN pg_catalog.jsonb_build_object('error', v_msg, 'sqlstate', v_state,
        'detail', CASE WHEN v_state OPERATOR(pg_catalog.=) ANY (ARRAY['23503', '23505'])
                       THEN nullif(v_detail, '') END,
        'constraint', coalesce(nullif(v_constraint, ''),
            CASE WHEN v_state OPERATOR(pg_catalog.=) '23502' AND v_column OPERATOR(pg_catalog.<>) ''
                 THEN pg_catalog.concat(v_column, '_not_null') END));
END;
$$;

-- Schema changes of synced tables bump the schema version clients see.
CREATE FUNCTION pg_sync._on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c
               JOIN pg_sync.tables t ON t.relid = c.objid) THEN
        UPDATE pg_sync.meta SET schema_version = schema_version + 1;
    END IF;
END;
$$;
CREATE EVENT TRIGGER pg_sync_ddl ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION pg_sync._on_ddl();

GRANT USAGE ON SCHEMA pg_sync TO PUBLIC;
-- Tombstones are read by sync_pull as the caller; rows of tables the caller
-- cannot read are hidden.
ALTER TABLE pg_sync.tombstones ENABLE ROW LEVEL SECURITY;
CREATE POLICY tombstones_readable ON pg_sync.tombstones FOR SELECT
    USING (has_table_privilege(relid, 'SELECT'));
GRANT SELECT ON pg_sync.tombstones TO PUBLIC;
GRANT SELECT ON pg_sync.tables, pg_sync.meta TO PUBLIC;

-- Per table: rows tracked, tombstones, oldest retained change; per client:
-- last push and pull and the cursor it holds. Each role sees the tables it
-- may read and the clients of the roles it belongs to.
CREATE VIEW pg_sync.status AS
SELECT 'table'::text AS kind, t.name,
       coalesce(s.n_live_tup, 0) AS rows_tracked,
       (SELECT count(*) FROM pg_sync.tombstones d WHERE d.relid = t.relid) AS tombstones,
       (SELECT min(d.at) FROM pg_sync.tombstones d WHERE d.relid = t.relid) AS oldest_tombstone,
       NULL::timestamptz AS last_push, NULL::timestamptz AS last_pull,
       NULL::bigint AS last_seq, NULL::text AS last_cursor, NULL::regrole AS role
FROM pg_sync.tables t LEFT JOIN pg_stat_user_tables s ON s.relid = t.relid
WHERE pg_catalog.has_table_privilege(t.relid, 'SELECT')
UNION ALL
SELECT 'client', c.client_id, NULL, NULL, NULL, c.last_push, c.last_pull, c.last_seq, c.last_cursor, c.role
FROM pg_sync.clients c
WHERE pg_catalog.pg_has_role(c.role, 'USAGE');

GRANT SELECT ON pg_sync.status TO PUBLIC;

-- 0.2.0: conflicts are looked up per client (a device's conflict list).
CREATE INDEX conflicts_client_idx ON pg_sync.conflicts (client_id, seq);

-- 0.2.0: the visibility epoch. Rows can leave a client's visible set without
-- being written (a policy or a grant changes, a membership table changes):
-- bumping the epoch makes every client resync, so it drops what it may no
-- longer see. Policy commands on synced tables bump it automatically;
-- sync_resync_all() bumps it on demand.
ALTER TABLE pg_sync.meta ADD COLUMN epoch bigint NOT NULL DEFAULT 1;

CREATE FUNCTION pg_sync._bump_epoch() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE pg_sync.meta SET epoch = epoch + 1 RETURNING epoch;
$$;

-- Policy commands on synced tables (and only on them) bump the epoch.
CREATE FUNCTION pg_sync._on_access_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c
               JOIN pg_policy p ON p.oid = c.objid
               JOIN pg_sync.tables t ON t.relid = p.polrelid) THEN
        PERFORM pg_sync._bump_epoch();
    END IF;
END;
$$;
CREATE EVENT TRIGGER pg_sync_access_ddl ON ddl_command_end
    WHEN TAG IN ('CREATE POLICY', 'ALTER POLICY')
    EXECUTE FUNCTION pg_sync._on_access_ddl();

CREATE FUNCTION pg_sync._on_policy_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() o
               JOIN pg_sync.tables t
                 ON t.relid = to_regclass(format('%I.%I', o.address_names[1], o.address_names[2]))
               WHERE o.object_type = 'policy') THEN
        PERFORM pg_sync._bump_epoch();
    END IF;
END;
$$;
CREATE EVENT TRIGGER pg_sync_policy_drop ON sql_drop
    WHEN TAG IN ('DROP POLICY')
    EXECUTE FUNCTION pg_sync._on_policy_drop();

-- 0.2.0: under row-level security a tombstone carries the old row; it is
-- visible only to roles whose SELECT policies on the synced table would have
-- let them see that row (permissive policies OR-ed, restrictive ones AND-ed,
-- nothing without a permissive policy), so neither sync_pull nor a direct
-- SELECT on pg_sync.tombstones reveals another tenant's deleted rows.
CREATE FUNCTION pg_sync._tomb_visible(p_relid oid, p_old jsonb) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rls boolean; v_bypass boolean; v_table text; v_alias text;
    v_perm text; v_restr text; v_ok boolean;
BEGIN
    SELECT c.relrowsecurity,
           (r.rolsuper OR r.rolbypassrls OR (c.relowner = r.oid AND NOT c.relforcerowsecurity)),
           format('%I.%I', n.nspname, c.relname), quote_ident(c.relname)
      INTO v_rls, v_bypass, v_table, v_alias
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, pg_roles r
     WHERE c.oid = p_relid AND r.rolname = current_user;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF NOT v_rls OR v_bypass THEN
        RETURN true;
    END IF;
    SELECT string_agg('(' || coalesce(pg_get_expr(p.polqual, p.polrelid), 'true') || ')', ' OR ')
               FILTER (WHERE p.polpermissive),
           string_agg('(' || coalesce(pg_get_expr(p.polqual, p.polrelid), 'true') || ')', ' AND ')
               FILTER (WHERE NOT p.polpermissive)
      INTO v_perm, v_restr
      FROM pg_policy p
     WHERE p.polrelid = p_relid AND p.polcmd IN ('r', '*')
       AND (p.polroles = '{0}' OR EXISTS (SELECT 1 FROM unnest(p.polroles) pr
                                          WHERE pg_has_role(current_user, pr, 'MEMBER')));
    IF v_perm IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM jsonb_populate_record(NULL::%s, $1) AS %s WHERE (%s)%s)',
                   v_table, v_alias, v_perm, coalesce(' AND ' || v_restr, ''))
       INTO v_ok USING p_old;
    RETURN v_ok;
END;
$$;
ALTER POLICY tombstones_readable ON pg_sync.tombstones
    USING (has_table_privilege(relid, 'SELECT') AND (old IS NULL OR pg_sync._tomb_visible(relid, old)));

-- 0.3.0: no internal function is executable by PUBLIC. _try and
-- _tomb_visible run as the caller (no elevated rights) and are used by
-- sync_push and the tombstone policy, so they stay executable.
REVOKE EXECUTE ON FUNCTION pg_sync._bump_epoch(), pg_sync._on_ddl(), pg_sync._on_access_ddl(),
    pg_sync._on_policy_drop() FROM PUBLIC;

-- 0.3.0: pg_dump keeps what a restore needs to go on syncing: which tables
-- are synced (by name: relid is a regclass), the conflict log, and the
-- clients' stored push results (so a batch retried after a restore is
-- still applied once). Tombstones, cursors' xids and the schema version
-- belong to the old history: devices resync after a restore.
SELECT pg_catalog.pg_extension_config_dump('pg_sync.tables', '');
SELECT pg_catalog.pg_extension_config_dump('pg_sync.conflicts', '');
SELECT pg_catalog.pg_extension_config_dump('pg_sync.conflicts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pg_sync.clients', '');
SELECT pg_catalog.pg_extension_config_dump('pg_sync.push_results', '');
-- 0.5.0: stream definitions are read by pulls as the caller, and dumped.
GRANT SELECT ON pg_sync.streams TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('pg_sync.streams', '');

-- 0.3.0: rows restored by pg_restore carry the _sync_xid of the database
-- they were dumped from, which can be ahead of this cluster's xids: such a
-- row would stay below no pull's horizon, and devices would miss it. The
-- data is loaded before the tracking triggers are created, so when a
-- restore (or sync_enable) creates a table's tracking trigger, rows with an
-- xid this cluster has not handed out yet take the current one (only when
-- there are such rows; other triggers do not fire for a superuser's restore).
CREATE FUNCTION pg_sync._on_trigger_ddl() RETURNS event_trigger
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
CREATE EVENT TRIGGER pg_sync_restore ON ddl_command_end WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION pg_sync._on_trigger_ddl();
REVOKE EXECUTE ON FUNCTION pg_sync._on_trigger_ddl() FROM PUBLIC;
