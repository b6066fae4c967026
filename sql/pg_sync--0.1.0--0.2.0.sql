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
