//! What grid operators look at, as queries returning plain data: no HTML (pages in
//! [`crate::web::ops`], JSON in [`crate::api::ops`]). Every list is a page of at most
//! [`PER_PAGE`] rows with its total; nothing reads the whole fleet into memory.
//!
//! | module | what | cost at 205k meters |
//! |---|---|---|
//! | [`fleet`] | the dashboard's headline numbers | the in-service count, today's ledger rows, today's dead letters, poll status grouped |
//! | [`meters`] | meters not reporting (or failing, or all) with filters; one meter's page | one anti-join: today's ledger hashed, an index probe of `readings` only for the meters it does not clear |
//! | [`load`] | energy per transformer / feeder and hour of a local day, from `readings_hourly` | the master meters only (a master measures its whole building): ~2.4k meters × 25 hourly rows |
//! | [`voltage`] | meters with L1 voltage outside 207–253 V in a local day | the partial index of out-of-range voltage readings (migration 8) |
//! | [`events`] | meter events fleet-wide, newest first, keyset pages | the `(ts, meter_id, code)` index (migration 8) |
//! | [`buildings`] | building reconciliation from the billing tables | one run's bills grouped by building |

pub mod buildings;
pub mod events;
pub mod fleet;
pub mod load;
pub mod meters;
pub mod voltage;

use chrono::{DateTime, NaiveDate, Utc};

pub use crate::household::calendar::{local_day, midnight};

/// Rows on one page of every list.
pub const PER_PAGE: i64 = 50;
/// The highest page number accepted (50 × 4,100 > 205k meters).
pub const MAX_PAGE: i64 = 4_100;

/// The load-profile channel (1.0.1.8.0): the ledger's, and what "reporting" means.
pub const ENERGY_CHANNEL: i16 = 1;
/// Voltage L1 (1.0.32.7.0), in 0.1 V.
pub const VOLTAGE_CHANNEL: i16 = 5;
/// EN 50160: 230 V ± 10 %, in 0.1 V. The partial index of migration 8 has these bounds written
/// into its predicate; a query must repeat them literally to use it.
pub const VOLTAGE_LOW: i64 = 2070;
pub const VOLTAGE_HIGH: i64 = 2530;

/// Why an operator query failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The UTC instants bounding local day `day`: interval ends in `(start, end]`.
pub fn day_span(day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    (midnight(day), midnight(day.succ_opt().unwrap_or(day)))
}

/// Today in Europe/Belgrade.
pub fn today() -> NaiveDate {
    local_day(Utc::now())
}

/// `LIMIT` and `OFFSET` of page `page` (from 1).
pub fn limit_offset(page: i64) -> (i64, i64) {
    (PER_PAGE, (page.clamp(1, MAX_PAGE) - 1) * PER_PAGE)
}

/// Pages needed for `total` rows (at least 1).
pub fn pages(total: i64) -> i64 {
    ((total + PER_PAGE - 1) / PER_PAGE).max(1)
}

/// Wh to kWh for display and JSON (energy, never money).
pub fn kwh(wh: i64) -> f64 {
    wh as f64 / 1000.0
}

#[cfg(test)]
pub(crate) mod testdata {
    //! A small inventory and readings written with SQL, for the query tests.

    use tokio_postgres::Client;

    /// Two buildings (B1 on transformer T1 / feeder F1 in Zemun, B2 on T2 / F1 in Vračar), each with a master
    /// and three flats; meter serials M1 (master of B1), A1..A3, M2, C1..C3; C3 is a Modbus meter.
    pub async fn fleet(c: &Client) {
        c.batch_execute(
            "INSERT INTO buildings (code, address, municipality, region) VALUES
                 ('B1', 'Glavna 1', 'Zemun', 'belgrade'), ('B2', 'Njegoševa 2', 'Vračar', 'belgrade');
             INSERT INTO households (code, building_id, apartment, floor_area_m2, residents, approved_power_kw, tariff)
             SELECT 'H' || b.code || '-' || a, b.id, a::text, 50, 2, 6.9, 'eps-household-2025'
             FROM buildings b, generate_series(1, 3) a;
             INSERT INTO meters (serial, kind, protocol, building_id, household_id, feeder, transformer, installed_on)
             SELECT CASE b.code WHEN 'B1' THEN 'M1' ELSE 'M2' END, 'master', 'mqtt', b.id, NULL, 'F1',
                    CASE b.code WHEN 'B1' THEN 'T1' ELSE 'T2' END, '2025-01-01'
             FROM buildings b;
             INSERT INTO meters (serial, kind, protocol, building_id, household_id, feeder, transformer, installed_on)
             SELECT CASE b.code WHEN 'B1' THEN 'A' ELSE 'C' END || h.apartment, 'household',
                    CASE WHEN b.code = 'B2' AND h.apartment = '3' THEN 'modbus' ELSE 'mqtt' END,
                    b.id, h.id, 'F1', CASE b.code WHEN 'B1' THEN 'T1' ELSE 'T2' END, '2025-01-01'
             FROM households h JOIN buildings b ON b.id = h.building_id;",
        )
        .await
        .expect("test fleet");
    }
}
