//! Voltage quality (EN 50160): meters whose L1 voltage (1.0.32.7.0) left 230 V ± 10 % (207–253 V) in a
//! local day, with how many 15-minute values were outside and the day's lowest and highest value.
//!
//! The out-of-range values are found through the partial index of migration 8, which holds only them
//! (its predicate repeats [`super::VOLTAGE_LOW`] and [`super::VOLTAGE_HIGH`]); the day's minimum and
//! maximum are read for the page's meters only.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::{day_span, limit_offset, OpsError, PER_PAGE, VOLTAGE_HIGH, VOLTAGE_LOW};

/// One meter's day outside the band.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VoltageRow {
    pub serial: String,
    pub transformer: Option<String>,
    pub feeder: Option<String>,
    pub building: String,
    /// Values outside 207–253 V that day, of which below and above.
    pub outside: i64,
    pub below: i64,
    pub above: i64,
    /// The day's lowest and highest L1 voltage, in V.
    pub min_volts: f64,
    pub max_volts: f64,
    /// Interval end of the first value outside.
    pub first_outside: DateTime<Utc>,
}

/// A page of meters with voltage outside the band.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VoltagePage {
    pub day: NaiveDate,
    /// The band, in V.
    pub low_volts: f64,
    pub high_volts: f64,
    /// Meters outside the band that day, over all pages.
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
    /// Most values outside first.
    pub meters: Vec<VoltageRow>,
}

/// Page `page` of the meters (optionally of one transformer) whose L1 voltage left the band in `day`.
pub async fn page(
    c: &impl GenericClient,
    day: NaiveDate,
    transformer: Option<&str>,
    page: i64,
) -> Result<VoltagePage, OpsError> {
    const _: () = assert!(VOLTAGE_LOW == 2070 && VOLTAGE_HIGH == 2530, "the statement and index say 2070 and 2530");
    let (start, end) = day_span(day);
    let (limit, offset) = limit_offset(page);
    // `channel_id = 5 AND (value < 2070 OR value > 2530)` is the partial index's predicate, word for word.
    let rows = c
        .query(
            "WITH o AS MATERIALIZED (
                 SELECT r.meter_id, count(*) AS outside, count(*) FILTER (WHERE r.value < 2070) AS below,
                        min(r.ts) AS first_outside
                 FROM readings r
                 WHERE r.channel_id = 5 AND (r.value < 2070 OR r.value > 2530) AND r.ts > $1 AND r.ts <= $2
                 GROUP BY r.meter_id
             ), hit AS (
                 SELECT o.*, m.serial, m.transformer, m.feeder, m.building_id FROM o JOIN meters m ON m.id = o.meter_id
                 WHERE $3::text IS NULL OR m.transformer = $3
             ), pg AS (
                 SELECT * FROM hit ORDER BY outside DESC, serial LIMIT $4 OFFSET $5
             )
             SELECT t.total, pg.serial, pg.transformer, pg.feeder, b.code, pg.outside, pg.below, pg.first_outside,
                    mm.lo, mm.hi
             FROM (SELECT count(*) AS total FROM hit) t
             LEFT JOIN pg ON true
             LEFT JOIN buildings b ON b.id = pg.building_id
             LEFT JOIN LATERAL (
                 SELECT min(r.value) AS lo, max(r.value) AS hi FROM readings r
                 WHERE r.meter_id = pg.meter_id AND r.channel_id = 5 AND r.ts > $1 AND r.ts <= $2
             ) mm ON true
             ORDER BY pg.outside DESC, pg.serial",
            &[&start, &end, &transformer, &limit, &offset],
        )
        .await?;
    let total = rows.first().map_or(0, |r| r.get(0));
    let meters = rows
        .iter()
        .filter_map(|r| {
            let outside: i64 = r.get::<_, Option<i64>>(5)?;
            let below: i64 = r.get(6);
            Some(VoltageRow {
                serial: r.get(1),
                transformer: r.get(2),
                feeder: r.get(3),
                building: r.get(4),
                outside,
                below,
                above: outside - below,
                first_outside: r.get(7),
                min_volts: r.get::<_, Option<i64>>(8).unwrap_or(0) as f64 / 10.0,
                max_volts: r.get::<_, Option<i64>>(9).unwrap_or(0) as f64 / 10.0,
            })
        })
        .collect();
    Ok(VoltagePage {
        day,
        low_volts: VOLTAGE_LOW as f64 / 10.0,
        high_volts: VOLTAGE_HIGH as f64 / 10.0,
        total,
        page,
        per_page: PER_PAGE,
        meters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;
    use crate::ops::testdata;

    #[tokio::test]
    async fn meters_outside_the_band_are_listed_with_counts_and_extremes() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        testdata::fleet(&c).await;
        let day: NaiveDate = "2026-11-20".parse().expect("day");
        // Every meter at 230.0 V all day; A1 at 260.0 V for 3 intervals, C2 at 200.0 V once and 254.0 V once,
        // A2 exactly at the limits (not outside), and A3 at 190 V on the next day (not this one).
        c.batch_execute(
            "SELECT headend_ensure_partition(d::date) FROM generate_series('2026-11-19'::date, '2026-11-21', '1 day') d;
             INSERT INTO readings (ts, value, meter_id, channel_id)
             SELECT '2026-11-19T23:00:00Z'::timestamptz + n * interval '15 minutes', 2300, m.id, 5
             FROM meters m, generate_series(1, 96) n;
             UPDATE readings r SET value = 2600 FROM meters m WHERE m.id = r.meter_id AND m.serial = 'A1'
                 AND r.channel_id = 5 AND r.ts IN ('2026-11-20T10:00Z', '2026-11-20T10:15Z', '2026-11-20T10:30Z');
             UPDATE readings r SET value = CASE WHEN r.ts = '2026-11-20T01:00Z' THEN 2000 ELSE 2540 END
                 FROM meters m WHERE m.id = r.meter_id AND m.serial = 'C2'
                 AND r.channel_id = 5 AND r.ts IN ('2026-11-20T01:00Z', '2026-11-20T20:00Z');
             UPDATE readings r SET value = CASE WHEN r.ts = '2026-11-20T01:00Z' THEN 2070 ELSE 2530 END
                 FROM meters m WHERE m.id = r.meter_id AND m.serial = 'A2'
                 AND r.channel_id = 5 AND r.ts IN ('2026-11-20T01:00Z', '2026-11-20T20:00Z');
             INSERT INTO readings (ts, value, meter_id, channel_id)
             SELECT '2026-11-21T08:00:00Z', 1900, id, 5 FROM meters WHERE serial = 'A3';",
        )
        .await
        .expect("readings");
        let p = page(&c, day, None, 1).await.expect("voltage");
        assert_eq!(p.total, 2);
        let a1 = &p.meters[0];
        assert_eq!((a1.serial.as_str(), a1.outside, a1.below, a1.above), ("A1", 3, 0, 3));
        assert_eq!((a1.min_volts, a1.max_volts), (230.0, 260.0));
        let c2 = &p.meters[1];
        assert_eq!((c2.serial.as_str(), c2.outside, c2.below, c2.above), ("C2", 2, 1, 1));
        assert_eq!((c2.min_volts, c2.max_volts), (200.0, 254.0));
        assert_eq!(c2.first_outside, "2026-11-20T01:00:00Z".parse::<DateTime<Utc>>().expect("ts"));
        assert_eq!(page(&c, day, Some("T2"), 1).await.expect("voltage").meters.len(), 1);
        let past = page(&c, day, None, 2).await.expect("voltage");
        assert_eq!((past.total, past.meters.len()), (2, 0));
        // The out-of-range look-up can use the partial index (every partition made after migration 8 has it).
        let partial: Vec<String> = c
            .query(
                "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE i.indpred IS NOT NULL
                   AND i.indrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'readings'::regclass)",
                &[],
            )
            .await
            .expect("indexes")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(partial.len() >= 3, "one per partition: {partial:?}");
        c.batch_execute("SET enable_seqscan = off").await.expect("set");
        let plan: Vec<String> = c
            .query(
                "EXPLAIN SELECT r.meter_id FROM readings r
                 WHERE r.channel_id = 5 AND (r.value < 2070 OR r.value > 2530)
                   AND r.ts > '2026-11-19T23:00Z' AND r.ts <= '2026-11-20T23:00Z'",
                &[],
            )
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(partial.iter().any(|i| plan.contains(i.as_str())), "{plan}");
    }
}
