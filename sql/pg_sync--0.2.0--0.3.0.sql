-- pg_sync 0.2.0 -> 0.3.0: no catalog write on behalf of PUBLIC; client ids
-- bound to roles; only policies of synced tables bump the epoch.

-- Client ids are bound to the role that uses them. Clients recorded before
-- 0.3.0 get role 0 ("unclaimed"): the first role to use the id claims it.
ALTER TABLE pg_sync.clients ADD COLUMN role regrole NOT NULL DEFAULT 0;
ALTER TABLE pg_sync.clients ALTER COLUMN role DROP DEFAULT;
ALTER TABLE pg_sync.clients DROP CONSTRAINT clients_pkey, ADD PRIMARY KEY (role, client_id);
ALTER TABLE pg_sync.push_results ADD COLUMN role regrole NOT NULL DEFAULT 0;
ALTER TABLE pg_sync.push_results ALTER COLUMN role DROP DEFAULT;
ALTER TABLE pg_sync.push_results DROP CONSTRAINT push_results_pkey, ADD PRIMARY KEY (role, client_id, seq);
ALTER TABLE pg_sync.conflicts ADD COLUMN client_role regrole;

-- The SECURITY DEFINER bookkeeping helpers were executable by PUBLIC; their
-- work is now done by pg_sync's own code (pg_sync/src/privileged.rs).
DROP FUNCTION pg_sync._client_begin(text);
DROP FUNCTION pg_sync._result_get(text, bigint);
DROP FUNCTION pg_sync._result_put(text, bigint, jsonb);
DROP FUNCTION pg_sync._conflict_add(jsonb);
DROP FUNCTION pg_sync._pulled(text, text);
DROP FUNCTION pg_sync._results_get(text, bigint[]);
DROP FUNCTION pg_sync._results_put(text, jsonb);
DROP FUNCTION pg_sync._conflicts_add(jsonb);
DROP FUNCTION pg_sync._conflict_get(bigint);
DROP FUNCTION pg_sync._conflict_resolved(bigint, jsonb);
DROP FUNCTION pg_sync._compact(interval);

CREATE OR REPLACE FUNCTION pg_sync._try(p_sql text, a jsonb, b bigint[], c jsonb) RETURNS jsonb
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

DROP VIEW pg_sync.status;
-- Synced tables are named, not numbered, so pg_dump / pg_restore keeps them.
ALTER TABLE pg_sync.tables ALTER COLUMN relid TYPE regclass USING relid::regclass;
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

CREATE OR REPLACE FUNCTION pg_sync._on_access_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c
               JOIN pg_policy p ON p.oid = c.objid
               JOIN pg_sync.tables t ON t.relid = p.polrelid) THEN
        PERFORM pg_sync._bump_epoch();
    END IF;
END;
$$;
ALTER EVENT TRIGGER pg_sync_access_ddl DISABLE;
DROP EVENT TRIGGER pg_sync_access_ddl;
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

REVOKE EXECUTE ON FUNCTION pg_sync._bump_epoch(), pg_sync._on_ddl(), pg_sync._on_access_ddl(),
    pg_sync._on_policy_drop() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION sync_enable(regclass, jsonb), sync_disable(regclass),
    sync_compact(interval), sync_resync_all() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_sync.track(), pg_sync.track_delete(), pg_sync.track_truncate() FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('pg_sync.tables', '');
SELECT pg_catalog.pg_extension_config_dump('pg_sync.conflicts', '');
SELECT pg_catalog.pg_extension_config_dump('pg_sync.conflicts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pg_sync.clients', '');
SELECT pg_catalog.pg_extension_config_dump('pg_sync.push_results', '');

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
