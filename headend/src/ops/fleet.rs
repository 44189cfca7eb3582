//! The dashboard's headline numbers.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::{day_span, local_day, meters, OpsError};

/// A count per reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ByReason {
    pub reason: String,
    pub count: i64,
}

/// The fleet at a glance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Headline {
    /// Meters installed and not removed today.
    pub in_service: i64,
    /// Meters with at least one load-profile interval of today (local) stored.
    pub reporting_today: i64,
    /// Meters in service with no load-profile reading in the last 24 hours.
    pub not_reporting: i64,
    /// Refused messages since local midnight, by reason.
    pub dead_letters_today: Vec<ByReason>,
    /// Polled meters whose last session failed, by the failure's reason.
    pub poll_failures: Vec<ByReason>,
}

/// The headline numbers at `now`.
pub async fn headline(c: &impl GenericClient, now: DateTime<Utc>) -> Result<Headline, OpsError> {
    let today = local_day(now);
    let (start, _) = day_span(today);
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM meters WHERE installed_on <= $1 AND (removed_on IS NULL OR removed_on > $1)),
                    (SELECT count(*) FROM read_ledger WHERE day = $1 AND received > 0)",
            &[&today],
        )
        .await?;
    let filter = meters::Filter { hours: 24, ..meters::Filter::default() };
    let not_reporting = meters::count(c, &filter, now).await?;
    let by = |rows: Vec<tokio_postgres::Row>| -> Vec<ByReason> {
        rows.iter().map(|r| ByReason { reason: r.get(0), count: r.get(1) }).collect()
    };
    let dead = c
        .query(
            "SELECT reason, count(*) FROM dead_letters WHERE received_at >= $1
             GROUP BY reason ORDER BY count(*) DESC, reason LIMIT 50",
            &[&start],
        )
        .await?;
    // `last_error` is `reason: detail` (collect::PollError); the reason is a short, fixed label.
    let failures = c
        .query(
            "SELECT split_part(last_error, ':', 1), count(*) FROM meter_poll_status
             WHERE consecutive_failures > 0 AND last_error IS NOT NULL
             GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 50",
            &[],
        )
        .await?;
    Ok(Headline {
        in_service: row.get(0),
        reporting_today: row.get(1),
        not_reporting,
        dead_letters_today: by(dead),
        poll_failures: by(failures),
    })
}

/// The local days of the dashboard's trend: the last `n` days up to today.
pub fn trend_days(now: DateTime<Utc>, n: i64) -> (chrono::NaiveDate, chrono::NaiveDate) {
    let today = local_day(now);
    (today - Duration::days(n - 1), today)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::ledger;
    use crate::db::testdb::TestDb;
    use crate::ops::testdata;

    #[tokio::test]
    async fn read_rates_of_a_span_equal_each_day_and_count_installations_and_removals() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        testdata::fleet(&c).await;
        // A1 installed on the 3rd, A2 removed on the 4th (in service until the 3rd), C1 installed and
        // removed on the 5th (never in service), C2 removed before the span.
        c.batch_execute(
            "UPDATE meters SET installed_on = '2026-11-03' WHERE serial = 'A1';
             UPDATE meters SET removed_on = '2026-11-04' WHERE serial = 'A2';
             UPDATE meters SET installed_on = '2026-11-05', removed_on = '2026-11-05' WHERE serial = 'C1';
             UPDATE meters SET removed_on = '2026-10-20' WHERE serial = 'C2';
             INSERT INTO read_ledger (meter_id, day, expected, received, within_1h, within_24h, within_72h)
             SELECT id, d::date, 96, CASE WHEN serial = 'M1' THEN 90 ELSE 96 END, 50, 96, 96
             FROM meters, generate_series('2026-11-01'::date, '2026-11-05', '1 day') d
             WHERE serial IN ('M1', 'M2', 'A3');",
        )
        .await
        .expect("data");
        let (from, to): (chrono::NaiveDate, chrono::NaiveDate) =
            ("2026-11-01".parse().expect("d"), "2026-11-05".parse().expect("d"));
        let span = ledger::read_rates(&c, from, to).await.expect("span");
        assert_eq!(span.len(), 5);
        let fleet: Vec<i64> = span.iter().map(|r| r.meters).collect();
        assert_eq!(fleet, [5, 5, 6, 5, 5]);
        for r in &span {
            assert_eq!(*r, ledger::read_rate(&c, r.day).await.expect("day"));
            assert_eq!((r.complete, r.received, r.within_1h), (2, 282, 150));
            assert_eq!(r.expected_intervals, r.meters * 96);
        }
        let head = headline(&c, "2026-11-05T12:00:00Z".parse().expect("now")).await.expect("headline");
        assert_eq!(head.in_service, 5);
    }
}
