-- Readings with TimescaleDB: a hypertable in 1-day chunks, compressed by meter and channel after an
-- age the head-end configures (storage.compress_after), and an hourly continuous aggregate with the
-- same columns as the plain path's rollup table. Not exercised on machines without the extension;
-- the migrator only selects it where `CREATE EXTENSION timescaledb` succeeds.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE readings (
    ts          timestamptz NOT NULL,
    value       bigint NOT NULL,
    meter_id    integer NOT NULL,
    channel_id  smallint NOT NULL,
    flags       smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (meter_id, channel_id, ts)
);

SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'), create_default_indexes => false);

ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'meter_id, channel_id',
    timescaledb.compress_orderby = 'ts'
);

CREATE MATERIALIZED VIEW readings_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS hour,
       min(ts) AS first_ts, max(ts) AS last_ts,
       min(value) AS min_value, max(value) AS max_value,
       first(value, ts) AS first_value, last(value, ts) AS last_value,
       sum(value) AS sum_value,
       meter_id,
       count(*)::integer AS samples,
       channel_id
FROM readings
GROUP BY meter_id, channel_id, time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_hourly',
    start_offset => INTERVAL '30 days', end_offset => INTERVAL '15 minutes', schedule_interval => INTERVAL '5 minutes');

-- Kept so code and queries are the same on both paths; never filled with TimescaleDB.
CREATE TABLE rollup_pending (
    hour    timestamptz NOT NULL,
    writer  integer NOT NULL,
    PRIMARY KEY (hour, writer)
);

CREATE FUNCTION headend_ensure_partition(day date) RETURNS boolean
LANGUAGE sql AS $$ SELECT false $$;

CREATE FUNCTION headend_drop_partitions_before(cutoff date) RETURNS integer
LANGUAGE sql AS $$ SELECT count(*)::integer FROM drop_chunks('readings', older_than => cutoff::timestamptz) $$;

CREATE FUNCTION headend_refresh_hour(h timestamptz) RETURNS bigint
LANGUAGE sql AS $$ SELECT 0::bigint $$;
