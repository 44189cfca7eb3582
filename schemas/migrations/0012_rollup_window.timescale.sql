-- The hourly continuous aggregate's refresh policy looked back only 30 days (migration 2). A reading
-- that arrived later than that (a meter back after a long outage, a back-filled load profile, a
-- history import; ingest.max_age allows 400 days) never reached readings_hourly: it was neither
-- materialised nor in the real-time part, which starts at the watermark the policy had already
-- moved past it. The window now reaches back to the first reading (start_offset NULL). A refresh
-- only recomputes the hours invalidated since the last one, so the open start costs nothing when
-- nothing old arrived.
SELECT remove_continuous_aggregate_policy('readings_hourly', if_exists => true);
SELECT add_continuous_aggregate_policy('readings_hourly',
    start_offset => NULL, end_offset => INTERVAL '15 minutes', schedule_interval => INTERVAL '5 minutes');

-- With a window reaching back to the first reading, dropping raw chunks the usual way
-- (drop_chunks, add_retention_policy) would empty their hours in readings_hourly at the next
-- refresh: drop_chunks invalidates the dropped range. The plain path keeps its rollup rows when
-- partitions go, and so does this one now: retention is the head-end's maintenance calling
-- headend_drop_partitions_before on both paths (no retention policy), and that drops chunks
-- without invalidating the aggregate where the extension allows it
-- (timescaledb.skip_cagg_invalidation, 2.28 here; older versions invalidate and the rollup follows
-- the raw data).
SELECT remove_retention_policy('readings', if_exists => true);

CREATE OR REPLACE FUNCTION headend_drop_partitions_before(cutoff date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    skip text := current_setting('timescaledb.skip_cagg_invalidation', true);
BEGIN
    IF skip IS NOT NULL THEN
        PERFORM set_config('timescaledb.skip_cagg_invalidation', 'on', true);
    END IF;
    SELECT count(*)::integer INTO n FROM drop_chunks('readings', older_than => cutoff::timestamptz);
    IF skip IS NOT NULL THEN
        PERFORM set_config('timescaledb.skip_cagg_invalidation', skip, true);
    END IF;
    RETURN n;
END;
$$;
