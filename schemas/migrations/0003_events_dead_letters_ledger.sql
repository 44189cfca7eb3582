-- Meter event logs, dead letters and the read-completeness ledger.

CREATE TABLE meter_events (
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    meter_id     integer NOT NULL REFERENCES meters (id),
    code         integer NOT NULL,
    source       smallint NOT NULL,
    detail       jsonb,
    PRIMARY KEY (meter_id, ts, code)
);

-- Everything refused on the way in, kept with the raw bytes so it can be inspected and replayed.
CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    source       text NOT NULL,
    origin       text,
    reason       text NOT NULL,
    detail       text NOT NULL,
    payload      bytea NOT NULL
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);

-- Expected versus received intervals per meter and local day.
CREATE TABLE read_ledger (
    meter_id     integer NOT NULL REFERENCES meters (id),
    day          date NOT NULL,
    expected     smallint NOT NULL,
    received     smallint NOT NULL,
    first_complete_at timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, day)
);

-- Readings with decoded flags, for people and reports.
CREATE VIEW readings_decoded AS
SELECT m.serial, c.obis, r.ts,
       r.value * power(10::numeric, c.scaler) AS value, c.unit,
       r.flags & 255 AS quality,
       CASE r.flags >> 8 WHEN 1 THEN 'mqtt' WHEN 2 THEN 'dlms' WHEN 3 THEN 'modbus'
                         WHEN 4 THEN 'estimate' WHEN 5 THEN 'manual' END AS source
FROM readings r
JOIN meters m ON m.id = r.meter_id
JOIN channels c ON c.id = r.channel_id;
