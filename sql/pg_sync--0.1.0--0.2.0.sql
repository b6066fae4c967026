-- pg_sync 0.1.0 -> 0.2.0
-- Conflicts are looked up per client (a device's conflict list).
CREATE INDEX conflicts_client_idx ON pg_sync.conflicts (client_id, seq);

-- 0.2.0: stored results are read and written once per push, not per change.
CREATE FUNCTION pg_sync._results_get(p_client text, p_seqs bigint[]) RETURNS TABLE (seq bigint, result jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.seq, r.result FROM pg_sync.push_results r
    WHERE r.client_id = p_client AND r.seq = ANY (p_seqs);
$$;

CREATE FUNCTION pg_sync._results_put(p_client text, p_results jsonb) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO pg_sync.push_results (client_id, seq, result)
    SELECT p_client, (e->>'seq')::bigint, e FROM jsonb_array_elements(p_results) e;
    UPDATE pg_sync.clients
       SET last_seq = greatest(last_seq, (SELECT max((e->>'seq')::bigint) FROM jsonb_array_elements(p_results) e))
     WHERE client_id = p_client;
$$;

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

CREATE FUNCTION pg_sync._on_access_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TAG = 'DROP POLICY' AND EXISTS (SELECT 1 FROM pg_sync.tables)
       OR EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c
                  JOIN pg_policy p ON p.oid = c.objid
                  JOIN pg_sync.tables t ON t.relid = p.polrelid) THEN
        PERFORM pg_sync._bump_epoch();
    END IF;
END;
$$;
REVOKE ALL ON FUNCTION pg_sync._bump_epoch() FROM PUBLIC;
CREATE EVENT TRIGGER pg_sync_access_ddl ON ddl_command_end
    WHEN TAG IN ('CREATE POLICY', 'ALTER POLICY', 'DROP POLICY')
    EXECUTE FUNCTION pg_sync._on_access_ddl();

-- 0.2.0: every client resyncs on demand.
CREATE FUNCTION "sync_resync_all"() RETURNS bigint
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'sync_resync_all_wrapper';

-- 0.2.0: tombstone keys as canonical JSON text in the C collation: cheaper
-- index entries and comparisons on every delete.
DROP INDEX pg_sync.tombstones_pull_idx;
DROP INDEX pg_sync.tombstones_pk_idx;
ALTER TABLE pg_sync.tombstones ALTER COLUMN pk TYPE text COLLATE "C" USING pk::text;
CREATE INDEX tombstones_pull_idx ON pg_sync.tombstones (relid, xid, pk);
CREATE INDEX tombstones_pk_idx ON pg_sync.tombstones (relid, pk);

-- 0.2.0: the pull page as JSON text, never parsed on the server.
CREATE FUNCTION sync_pull_json(cursor text DEFAULT NULL, max_changes int DEFAULT 10000, client_id text DEFAULT NULL)
RETURNS json VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_pull_json';

-- 0.2.0: a push's conflict records are written in one statement; the ids
-- come back in the order of the records.
CREATE FUNCTION pg_sync._conflicts_add(p jsonb) RETURNS bigint[]
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH ins AS (
        INSERT INTO pg_sync.conflicts (table_name, pk, column_name, strategy, outcome, reason,
                                       server_value, client_value, server_ver, client_ver, client_id, seq)
        SELECT e->>'table', e->'pk', e->>'column', e->>'strategy', e->>'outcome', e->>'reason',
               e->'server_value', e->'client_value', e->>'server_ver', e->>'client_ver',
               e->>'client_id', (e->>'seq')::bigint
        FROM jsonb_array_elements(p) WITH ORDINALITY AS x(e, ord)
        ORDER BY ord
        RETURNING id)
    SELECT array_agg(id ORDER BY id) FROM ins;
$$;

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
