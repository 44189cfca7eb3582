-- Operator dashboard (issue 12): the indexes its pages need at 205k meters.

-- Voltage outside EN 50160 (230 V ± 10 % = 207–253 V; values in 0.1 V) on L1 (channel 5, 1.0.32.7.0): a
-- partial index holding only those readings, so a day's list reads a handful of rows instead of the day's
-- 20M voltage readings. The ops queries repeat this predicate word for word (headend::ops::voltage).
-- Made on the parent only, so that the migration does not read every stored reading while it holds the
-- writers off: each partition made from now on gets it when it is created, and the partitions of the last
-- two days and ahead get it here. Older days are read without it (correct, slower).
CREATE INDEX readings_voltage_out_idx ON ONLY readings (ts)
    WHERE channel_id = 5 AND (value < 2070 OR value > 2530);

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'readings'::regclass
          AND c.relname ~ '^readings_p[0-9]{8}$'
          AND to_date(substr(c.relname, 11), 'YYYYMMDD') >= current_date - 2
    LOOP
        EXECUTE format('CREATE INDEX %I ON %I (ts) WHERE channel_id = 5 AND (value < 2070 OR value > 2530)',
                       r.relname || '_voltage_out_idx', r.relname);
        EXECUTE format('ALTER INDEX readings_voltage_out_idx ATTACH PARTITION %I', r.relname || '_voltage_out_idx');
    END LOOP;
END;
$$;

-- Meter events fleet-wide, newest first, by keyset (ts, meter, code).
CREATE INDEX meter_events_ts_idx ON meter_events (ts, meter_id, code);

-- The meter lists' filters and the load per transformer / feeder.
CREATE INDEX meters_transformer_idx ON meters (transformer);
CREATE INDEX meters_feeder_idx ON meters (feeder);
