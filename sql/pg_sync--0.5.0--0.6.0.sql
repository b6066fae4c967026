-- pg_sync 0.5.0 -> 0.6.0: pull pages of format 2 (blocks of rows as
-- arrays, one version per row when its columns share it), which devices
-- ask for through their cursor.

CREATE FUNCTION pg_sync._ver_compact(ver bigint[], attnums smallint[]) RETURNS json
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ver_compact_wrapper';
