-- Readings without TimescaleDB: native range partitioning by UTC day, partitions created ahead by
-- headend_ensure_partition (called by the head-end's maintenance task and by the writer before a batch
-- that reaches a day not seen yet), and an hourly rollup the head-end refreshes from a queue of
-- changed hours.
--
-- Row layout: 8-byte columns first, so a row is 24 bytes of data with no padding.
-- flags = quality bits (low byte) | source << 8 (see schemas::reading::pack_flags).

CREATE TABLE readings (
    ts          timestamptz NOT NULL,
    value       bigint NOT NULL,
    meter_id    integer NOT NULL,
    channel_id  smallint NOT NULL,
    flags       smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (meter_id, channel_id, ts)
) PARTITION BY RANGE (ts);

CREATE FUNCTION headend_ensure_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('readings_p%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Replicas may race to create the same day: serialise creators.
    PERFORM pg_advisory_xact_lock(hashtext('headend_ensure_partition'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
        part,
        (day::timestamp AT TIME ZONE 'UTC'),
        ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    RETURN true;
END;
$$;

-- Drops whole days older than the cutoff; returns how many partitions went.
CREATE FUNCTION headend_drop_partitions_before(cutoff date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'readings'::regclass
          AND c.relname ~ '^readings_p[0-9]{8}$'
          AND to_date(substr(c.relname, 11), 'YYYYMMDD') < cutoff
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        n := n + 1;
    END LOOP;
    RETURN n;
END;
$$;

-- Hourly rollup per meter and channel, the same columns as the TimescaleDB continuous aggregate.
-- For cumulative channels `last` is the register at the end of the hour's last interval.
CREATE TABLE readings_hourly (
    hour        timestamptz NOT NULL,
    first_ts    timestamptz NOT NULL,
    last_ts     timestamptz NOT NULL,
    min_value   bigint NOT NULL,
    max_value   bigint NOT NULL,
    first_value bigint NOT NULL,
    last_value  bigint NOT NULL,
    sum_value   numeric NOT NULL,
    meter_id    integer NOT NULL,
    samples     integer NOT NULL,
    channel_id  smallint NOT NULL,
    PRIMARY KEY (meter_id, channel_id, hour)
);
CREATE INDEX readings_hourly_hour_idx ON readings_hourly (hour);

-- Hours whose rollup is stale (the analogue of TimescaleDB's invalidation log). Each writer
-- connection upserts (hour, its backend pid) in the same transaction as its readings, which locks
-- that row until commit; the refresher deletes an hour's rows first (waiting for writers still
-- holding them) and only then recomputes the hour with a snapshot that includes their commits.
-- Keying by writer keeps parallel writers from waiting on each other's marks.
CREATE TABLE rollup_pending (
    hour    timestamptz NOT NULL,
    writer  integer NOT NULL,
    PRIMARY KEY (hour, writer)
);

CREATE FUNCTION headend_refresh_hour(h timestamptz) RETURNS bigint
LANGUAGE sql AS $$
    WITH agg AS (
        SELECT meter_id, channel_id,
               min(ts) AS first_ts, max(ts) AS last_ts,
               min(value) AS min_value, max(value) AS max_value,
               (array_agg(value ORDER BY ts))[1] AS first_value,
               (array_agg(value ORDER BY ts DESC))[1] AS last_value,
               sum(value) AS sum_value, count(*)::integer AS samples
        FROM readings
        WHERE ts >= h AND ts < h + interval '1 hour'
        GROUP BY meter_id, channel_id
    ), up AS (
        INSERT INTO readings_hourly AS r
            (hour, first_ts, last_ts, min_value, max_value, first_value, last_value, sum_value, meter_id, samples, channel_id)
        SELECT h, first_ts, last_ts, min_value, max_value, first_value, last_value, sum_value, meter_id, samples, channel_id
        FROM agg
        ON CONFLICT (meter_id, channel_id, hour) DO UPDATE SET
            first_ts = EXCLUDED.first_ts, last_ts = EXCLUDED.last_ts,
            min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,
            first_value = EXCLUDED.first_value, last_value = EXCLUDED.last_value,
            sum_value = EXCLUDED.sum_value, samples = EXCLUDED.samples
        WHERE (r.first_ts, r.last_ts, r.min_value, r.max_value, r.first_value, r.last_value, r.sum_value, r.samples)
           IS DISTINCT FROM
              (EXCLUDED.first_ts, EXCLUDED.last_ts, EXCLUDED.min_value, EXCLUDED.max_value,
               EXCLUDED.first_value, EXCLUDED.last_value, EXCLUDED.sum_value, EXCLUDED.samples)
        RETURNING 1
    )
    SELECT count(*) FROM up;
$$;
