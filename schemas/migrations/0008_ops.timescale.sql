-- Operator dashboard (issue 12): the indexes its pages need at 205k meters.

-- Voltage outside EN 50160 (230 V ± 10 % = 207–253 V; values in 0.1 V) on L1 (channel 5, 1.0.32.7.0): a
-- partial index holding only those readings (see the plain variant). On the hypertable it is made on every
-- chunk; compressed chunks are read without it.
CREATE INDEX readings_voltage_out_idx ON readings (ts)
    WHERE channel_id = 5 AND (value < 2070 OR value > 2530);

-- Meter events fleet-wide, newest first, by keyset (ts, meter, code).
CREATE INDEX meter_events_ts_idx ON meter_events (ts, meter_id, code);

-- The meter lists' filters and the load per transformer / feeder.
CREATE INDEX meters_transformer_idx ON meters (transformer);
CREATE INDEX meters_feeder_idx ON meters (feeder);
