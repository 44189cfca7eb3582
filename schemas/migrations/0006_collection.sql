-- Collection by polling (DLMS, Modbus) and the read-completeness ledger.

-- The local day an interval belongs to (by its START: an interval ENDING at local midnight belongs
-- to the day before), and how many 15-minute intervals that day has (92 / 96 / 100 with DST).
-- The operator's zone is fixed here on purpose: the ledger, the read rate and the bills agree on it.
CREATE FUNCTION headend_local_day(ts timestamptz) RETURNS date
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT ((ts - interval '15 minutes') AT TIME ZONE 'Europe/Belgrade')::date $$;

CREATE FUNCTION headend_intervals_in_day(d date) RETURNS smallint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (extract(epoch FROM ((d + 1)::timestamp AT TIME ZONE 'Europe/Belgrade')
                             - (d::timestamp AT TIME ZONE 'Europe/Belgrade')) / 900)::smallint $$;

-- Received intervals of the load-profile channel (1.8.0), counted once each when first stored, and
-- how many of them arrived within 1 h / 24 h / 72 h of the interval's end.
ALTER TABLE read_ledger
    ADD COLUMN within_1h  smallint NOT NULL DEFAULT 0,
    ADD COLUMN within_24h smallint NOT NULL DEFAULT 0,
    ADD COLUMN within_72h smallint NOT NULL DEFAULT 0;
CREATE INDEX read_ledger_day_idx ON read_ledger (day);

-- What a poll learnt about a meter, used on later reads (max PDU, list size, selective access…).
CREATE TABLE meter_capabilities (
    meter_id      integer PRIMARY KEY REFERENCES meters (id),
    protocol      text NOT NULL,
    max_pdu       integer,
    max_list      integer,
    selective_access boolean,
    security      text,
    details       jsonb NOT NULL DEFAULT '{}',
    probed_at     timestamptz NOT NULL DEFAULT now()
);

-- The last poll of each meter: when, how, and the meter clock's deviation.
CREATE TABLE meter_poll_status (
    meter_id      integer PRIMARY KEY REFERENCES meters (id),
    last_attempt_at timestamptz NOT NULL,
    last_success_at timestamptz,
    last_error    text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    clock_deviation_ms bigint,
    clock_flagged boolean NOT NULL DEFAULT false
);

-- DLMS invocation counters of the head-end's ciphered sessions: the next counter to use per meter
-- and client. Written before a counter is used, so a restart never reuses one.
CREATE TABLE dlms_invocation_counters (
    meter_id      integer NOT NULL REFERENCES meters (id),
    client_sap    smallint NOT NULL,
    next_counter  bigint NOT NULL CHECK (next_counter BETWEEN 0 AND 4294967295),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, client_sap)
);

-- Operator commands to meters (remote disconnect / reconnect, clock sync): the audit trail.
CREATE TABLE meter_commands (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter_id      integer NOT NULL REFERENCES meters (id),
    command       text NOT NULL CHECK (command IN ('disconnect', 'reconnect', 'clock_sync')),
    requested_by  text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    outcome       text CHECK (outcome IN ('done', 'failed')),
    detail        text
);
CREATE INDEX meter_commands_meter_idx ON meter_commands (meter_id, requested_at);
