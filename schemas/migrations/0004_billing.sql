-- Billing (issue 4): runs, bills, bill lines and the data-quality problems of a run.
-- Written by `billing run`; a run is never updated: re-running a period adds a new version.

CREATE TABLE billing_runs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    period         date NOT NULL CHECK (extract(day FROM period) = 1),   -- first day of the billed month
    building_code  text,                                                 -- the --building filter; NULL = all
    tariff_code    text NOT NULL,
    split_key      text NOT NULL CHECK (split_key IN ('equal', 'area', 'residents')),
    version        integer NOT NULL CHECK (version >= 1),                -- 1, 2, … per period
    period_start   timestamptz NOT NULL,                                 -- local midnight of the 1st, in UTC
    period_end     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (period, version)
);

CREATE TABLE bills (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id              bigint NOT NULL REFERENCES billing_runs (id) ON DELETE CASCADE,
    household_id        integer NOT NULL REFERENCES households (id),
    building_id         integer NOT NULL REFERENCES buildings (id),
    vt_kwh              numeric(15, 3) NOT NULL,
    nt_kwh              numeric(15, 3) NOT NULL,
    total_kwh           numeric(15, 3) NOT NULL,
    common_kwh          numeric(15, 3),          -- the household's share of common areas + losses (informational)
    total               numeric(15, 2) NOT NULL, -- RSD, Σ bill_lines.amount
    estimated_share     numeric(9, 6) NOT NULL,  -- share of the period not covered by actual boundary readings
    estimated           boolean NOT NULL,
    old_split_total     numeric(15, 2),          -- the bill under the old 1/N split of the master meter
    difference          numeric(15, 2),          -- total − old_split_total
    difference_percent  numeric(9, 2),
    UNIQUE (run_id, household_id)
);
CREATE INDEX bills_household_idx ON bills (household_id);

CREATE TABLE bill_lines (
    bill_id      bigint NOT NULL REFERENCES bills (id) ON DELETE CASCADE,
    line_no      smallint NOT NULL,
    tariff_code  text NOT NULL,
    kind         text NOT NULL,      -- energy, power_charge, supplier_charge, payment_discount, renewable_fee, …
    zone         text,               -- energy lines
    tou          text,               -- energy lines: vt, nt; NULL = single rate
    quantity     numeric NOT NULL,
    unit         text NOT NULL CHECK (unit IN ('kwh', 'kw_month', 'month', 'rsd')),
    unit_price   numeric NOT NULL,
    amount       numeric(15, 2) NOT NULL,
    PRIMARY KEY (bill_id, line_no)
);

CREATE TABLE billing_problems (
    run_id        bigint NOT NULL REFERENCES billing_runs (id) ON DELETE CASCADE,
    building_id   integer REFERENCES buildings (id),
    household_id  integer REFERENCES households (id),
    meter_id      integer REFERENCES meters (id),
    kind          text NOT NULL,
    detail        text NOT NULL
);
CREATE INDEX billing_problems_run_idx ON billing_problems (run_id);
