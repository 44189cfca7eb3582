//! The read-completeness ledger's read side. The writer counts every newly stored interval of the
//! load-profile channel (1.8.0) in `read_ledger` by meter and local day, in the same transaction as
//! the readings, with how late it arrived; whatever the source (MQTT push, DLMS, Modbus).
//!
//! Read rate for a day: the meters in service that day are the denominator (a meter that sent
//! nothing has no ledger row and counts as missing); a meter is complete when it has every interval
//! of the local day (92, 96 or 100 with DST).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

/// Completeness of one local day over the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReadRate {
    pub day: NaiveDate,
    /// Meters in service that day.
    pub meters: i64,
    /// Meters with every interval of the day.
    pub complete: i64,
    /// Intervals expected over all meters, and received (at all, and within 1 h / 24 h / 72 h of
    /// the interval's end).
    pub expected_intervals: i64,
    pub received: i64,
    pub within_1h: i64,
    pub within_24h: i64,
    pub within_72h: i64,
    /// `complete / meters`, and the received counts as shares of `expected_intervals`.
    pub complete_ratio: f64,
    pub received_ratio: f64,
    pub within_1h_ratio: f64,
    pub within_24h_ratio: f64,
    pub within_72h_ratio: f64,
}

/// The read rate of a local day.
pub async fn read_rate(client: &impl GenericClient, day: NaiveDate) -> Result<ReadRate, tokio_postgres::Error> {
    let mut days = read_rates(client, day, day).await?;
    Ok(days.pop().unwrap_or_else(|| ReadRate::of(day, 0, 0, 0, [0; 4])))
}

/// The read rate of every local day in `from..=to`, oldest first, in one statement: the fleet of
/// each day from the inventory's installations and removals in the span (a meter counts from its
/// installation day, or `from`, until its removal day), the ledger's rows of the span grouped by day.
pub async fn read_rates(
    client: &impl GenericClient,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<ReadRate>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH days AS (
                 SELECT d::date AS day FROM generate_series($1::date, $2::date, interval '1 day') AS d
             ), changes AS MATERIALIZED (
                 SELECT GREATEST(installed_on, $1::date) AS day, count(*) AS delta FROM meters
                 WHERE installed_on <= $2 AND (removed_on IS NULL OR removed_on > $1) GROUP BY 1
                 UNION ALL
                 SELECT removed_on, -count(*) FROM meters WHERE removed_on > $1 AND removed_on <= $2 GROUP BY 1
             ), l AS (
                 SELECT day,
                        count(*) FILTER (WHERE received >= expected) AS complete,
                        COALESCE(sum(LEAST(received, expected)), 0)::bigint AS received,
                        COALESCE(sum(LEAST(within_1h, expected)), 0)::bigint AS h1,
                        COALESCE(sum(LEAST(within_24h, expected)), 0)::bigint AS h24,
                        COALESCE(sum(LEAST(within_72h, expected)), 0)::bigint AS h72
                 FROM read_ledger WHERE day BETWEEN $1 AND $2 GROUP BY day
             ), fleet AS (
                 SELECT d.day, COALESCE((SELECT sum(c.delta) FROM changes c WHERE c.day <= d.day), 0)::bigint AS meters
                 FROM days d
             )
             SELECT f.day, f.meters, COALESCE(l.complete, 0), f.meters * headend_intervals_in_day(f.day),
                    COALESCE(l.received, 0), COALESCE(l.h1, 0), COALESCE(l.h24, 0), COALESCE(l.h72, 0)
             FROM fleet f LEFT JOIN l ON l.day = f.day
             ORDER BY f.day",
            &[&from, &to],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ReadRate::of(r.get(0), r.get(1), r.get(2), r.get(3), [r.get(4), r.get(5), r.get(6), r.get(7)]))
        .collect())
}

impl ReadRate {
    /// A day's figures with their ratios: `received` is `[received, within 1 h, 24 h, 72 h]`.
    fn of(day: NaiveDate, meters: i64, complete: i64, expected: i64, received: [i64; 4]) -> ReadRate {
        let ratio = |n: i64, d: i64| if d > 0 { n as f64 / d as f64 } else { 0.0 };
        let [received, h1, h24, h72] = received;
        ReadRate {
            day,
            meters,
            complete,
            expected_intervals: expected,
            received,
            within_1h: h1,
            within_24h: h24,
            within_72h: h72,
            complete_ratio: ratio(complete, meters),
            received_ratio: ratio(received, expected),
            within_1h_ratio: ratio(h1, expected),
            within_24h_ratio: ratio(h24, expected),
            within_72h_ratio: ratio(h72, expected),
        }
    }
}

/// Interval ends of the load-profile channel missing for one meter in local days `from..=to`
/// (intervals in the future are not missing yet).
pub async fn missing_intervals(
    client: &impl GenericClient,
    meter_id: i32,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DateTime<Utc>>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH span AS (
                 SELECT ($1::date::timestamp AT TIME ZONE 'Europe/Belgrade') AS a,
                        (($2::date + 1)::timestamp AT TIME ZONE 'Europe/Belgrade') AS b
             )
             SELECT g.ts FROM span,
                  generate_series(span.a + interval '15 minutes', LEAST(span.b, now()), interval '15 minutes') AS g(ts)
             WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = $3 AND r.channel_id = 1 AND r.ts = g.ts)
             ORDER BY g.ts",
            &[&from, &to, &meter_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The local date of "yesterday" at `now`.
pub fn yesterday(now: DateTime<Utc>) -> NaiveDate {
    let today = now.with_timezone(&chrono_tz::Europe::Belgrade).date_naive();
    today.pred_opt().unwrap_or(today)
}
