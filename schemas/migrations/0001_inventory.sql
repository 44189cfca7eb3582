-- Inventory: buildings, households, meters and the channel catalogue.

CREATE TABLE buildings (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code          text NOT NULL UNIQUE,
    address       text NOT NULL,
    municipality  text NOT NULL,
    region        text NOT NULL CHECK (region IN ('belgrade', 'novi_sad', 'central')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE households (
    id                 integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code               text NOT NULL UNIQUE,
    building_id        integer NOT NULL REFERENCES buildings (id),
    apartment          text NOT NULL,
    floor_area_m2      numeric(8, 2) NOT NULL CHECK (floor_area_m2 > 0),
    residents          smallint NOT NULL CHECK (residents >= 0),
    approved_power_kw  numeric(6, 2) NOT NULL CHECK (approved_power_kw > 0),
    tariff             text NOT NULL,
    UNIQUE (building_id, apartment)
);

-- A meter measures either a household (kind 'household') or a whole building (kind 'master').
-- building_id is set for both kinds, so a building's meters are one index look-up away.
CREATE TABLE meters (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial         text NOT NULL UNIQUE,
    kind           text NOT NULL CHECK (kind IN ('household', 'master')),
    protocol       text NOT NULL CHECK (protocol IN ('mqtt', 'dlms', 'modbus')),
    address        text,
    building_id    integer NOT NULL REFERENCES buildings (id),
    household_id   integer REFERENCES households (id),
    feeder         text,
    transformer    text,
    installed_on   date NOT NULL,
    removed_on     date,
    CHECK ((kind = 'household') = (household_id IS NOT NULL)),
    CHECK (removed_on IS NULL OR removed_on >= installed_on)
);
CREATE INDEX meters_building_idx ON meters (building_id);
CREATE INDEX meters_household_idx ON meters (household_id);
-- At most one master meter in service per building.
CREATE UNIQUE INDEX meters_one_master_idx ON meters (building_id) WHERE kind = 'master' AND removed_on IS NULL;

-- The channel catalogue; `headend migrate` upserts it from schemas::CHANNELS.
CREATE TABLE channels (
    id      smallint PRIMARY KEY,
    obis    text NOT NULL UNIQUE,
    name    text NOT NULL,
    unit    text NOT NULL,
    scaler  smallint NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('cumulative', 'instantaneous'))
);
