//! Energy per transformer or feeder and hour of a local day, from the hourly rollup.
//!
//! A building's master meter measures all of its flats (and its common areas and losses), so the load of a
//! group is the sum of the master meters on it, plus the flats of buildings without a master in service:
//! ~2.4k meters instead of 205k. The energy of hour `[h, h+1)` is a meter's register at `h+1` minus its
//! register at `h` (`first_value` of the buckets starting there, when their first interval ends exactly on
//! the hour); a meter missing either end is left out of that hour, and `meters` says how many counted.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::{day_span, kwh, OpsError};

/// What to group the load by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    Transformer,
    Feeder,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "transformer" => Some(GroupBy::Transformer),
            "feeder" => Some(GroupBy::Feeder),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            GroupBy::Transformer => "transformer",
            GroupBy::Feeder => "feeder",
        }
    }
}

/// The most groups one report shows.
pub const MAX_TOP: i64 = 50;

/// One group's load over the day.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupLoad {
    /// The transformer or feeder.
    pub name: String,
    /// Meters measuring the group's load (masters, and flats of buildings without one).
    pub meters: i64,
    /// Energy of the day (the hours with data).
    pub total_kwh: f64,
    /// The highest hourly energy, which is also the hour's mean power in kW.
    pub peak_kwh: f64,
    /// Start of that hour.
    pub peak_hour: Option<DateTime<Utc>>,
    /// Energy per hour of `LoadReport::hours`; null when no meter of the group had both ends of the hour.
    pub hourly_kwh: Vec<Option<f64>>,
    /// Meters counted in each hour.
    pub hourly_meters: Vec<i64>,
}

/// The top groups of a local day.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoadReport {
    pub day: NaiveDate,
    pub by: GroupBy,
    /// Hour starts of the local day (23, 24 or 25 of them).
    pub hours: Vec<DateTime<Utc>>,
    /// Groups with any energy that day.
    pub groups_with_data: i64,
    /// The `top` groups by energy, largest first.
    pub groups: Vec<GroupLoad>,
}

/// The `top` groups by energy of local day `day`.
pub async fn report(c: &impl GenericClient, by: GroupBy, day: NaiveDate, top: i64) -> Result<LoadReport, OpsError> {
    let (start, end) = day_span(day);
    let hours: Vec<DateTime<Utc>> = (0..).map(|i| start + Duration::hours(i)).take_while(|h| *h < end).collect();
    let feeder = by == GroupBy::Feeder;
    let rows = c
        .query(
            "WITH lm AS MATERIALIZED (
                 SELECT m.id, CASE WHEN $4 THEN m.feeder ELSE m.transformer END AS grp
                 FROM meters m
                 WHERE m.kind = 'master' AND m.installed_on <= $1 AND (m.removed_on IS NULL OR m.removed_on > $1)
                 UNION ALL
                 SELECT m.id, CASE WHEN $4 THEN m.feeder ELSE m.transformer END
                 FROM meters m
                 WHERE m.kind = 'household' AND m.installed_on <= $1 AND (m.removed_on IS NULL OR m.removed_on > $1)
                   AND NOT EXISTS (
                        SELECT 1 FROM meters x WHERE x.building_id = m.building_id AND x.kind = 'master'
                          AND x.installed_on <= $1 AND (x.removed_on IS NULL OR x.removed_on > $1))
             ), sizes AS (
                 SELECT grp, count(*) AS meters FROM lm WHERE grp IS NOT NULL GROUP BY grp
             ), reg AS (
                 -- Per meter by primary key (LATERAL: never a scan of the whole day's rollup).
                 SELECT lm.grp, r.hour, r.next_value - r.first_value AS wh
                 FROM lm CROSS JOIN LATERAL (
                     SELECT hour, first_value, lead(first_value) OVER w AS next_value, lead(hour) OVER w AS next_hour
                     FROM readings_hourly
                     WHERE meter_id = lm.id AND channel_id = 1 AND hour >= $2 AND hour <= $3 AND first_ts = hour
                     WINDOW w AS (ORDER BY hour)
                 ) r
                 WHERE lm.grp IS NOT NULL AND r.next_hour = r.hour + interval '1 hour'
             ), hourly AS (
                 SELECT grp, hour, sum(wh)::bigint AS wh, count(*) AS meters FROM reg GROUP BY grp, hour
             ), totals AS (
                 SELECT grp, sum(wh) AS wh FROM hourly GROUP BY grp
             ), top AS (
                 SELECT grp FROM totals ORDER BY wh DESC, grp LIMIT $5
             )
             SELECT (SELECT count(*) FROM totals), h.grp, s.meters, h.hour, h.wh, h.meters
             FROM hourly h JOIN top t ON t.grp = h.grp JOIN sizes s ON s.grp = h.grp
             ORDER BY h.grp, h.hour",
            &[&day, &start, &end, &feeder, &top.clamp(1, MAX_TOP)],
        )
        .await?;
    let groups_with_data = rows.first().map_or(0, |r| r.get(0));
    let index: HashMap<DateTime<Utc>, usize> = hours.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    let mut groups: Vec<GroupLoad> = Vec::new();
    for r in &rows {
        let name: String = r.get(1);
        if groups.last().is_none_or(|g| g.name != name) {
            groups.push(GroupLoad {
                name,
                meters: r.get(2),
                total_kwh: 0.0,
                peak_kwh: 0.0,
                peak_hour: None,
                hourly_kwh: vec![None; hours.len()],
                hourly_meters: vec![0; hours.len()],
            });
        }
        let (hour, wh, n): (DateTime<Utc>, i64, i64) = (r.get(3), r.get(4), r.get(5));
        let (Some(g), Some(&i)) = (groups.last_mut(), index.get(&hour)) else { continue };
        let e = kwh(wh);
        g.hourly_kwh[i] = Some(e);
        g.hourly_meters[i] = n;
        g.total_kwh += e;
        if g.peak_hour.is_none() || e > g.peak_kwh {
            g.peak_kwh = e;
            g.peak_hour = Some(hour);
        }
    }
    groups.sort_by(|a, b| b.total_kwh.total_cmp(&a.total_kwh).then_with(|| a.name.cmp(&b.name)));
    Ok(LoadReport { day, by, hours, groups_with_data, groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;
    use crate::ops::testdata;

    #[tokio::test]
    async fn load_sums_master_meters_per_hour() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        testdata::fleet(&c).await;
        // Masters M1 (T1) and M2 (T2) use 1 kWh and 2 kWh an hour; flat A1's readings are ignored (B1 has a
        // master). The hourly rollup as the refresher writes it: bucket `hour` starts with the interval ending at
        // `hour`.
        let day: NaiveDate = "2026-11-20".parse().expect("day");
        let (start, end) = day_span(day);
        c.execute(
            "INSERT INTO readings_hourly
                 (hour, first_ts, last_ts, min_value, max_value, first_value, last_value, sum_value, meter_id, samples, channel_id)
             SELECT h, h, h + interval '45 minutes', 0, 0, k * (1 + extract(epoch FROM h - $1)::bigint / 3600) * 1000,
                    0, 0, m.id, 4, 1
             FROM meters m
             JOIN (VALUES ('M1', 1), ('M2', 2), ('A1', 50)) AS v(serial, k) ON v.serial = m.serial
             CROSS JOIN generate_series($1::timestamptz, $2::timestamptz, interval '1 hour') h
             WHERE NOT (m.serial = 'M2' AND h = $1 + interval '5 hours')",
            &[&start, &end],
        )
        .await
        .expect("rollup");
        let r = report(&c, GroupBy::Transformer, day, 10).await.expect("report");
        assert_eq!(r.hours.len(), 24);
        assert_eq!(r.groups_with_data, 2);
        let names: Vec<&str> = r.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["T2", "T1"]);
        let t1 = &r.groups[1];
        assert_eq!((t1.meters, t1.total_kwh), (1, 24.0));
        assert!(t1.hourly_kwh.iter().all(|h| *h == Some(1.0)));
        // M2 misses the register at 05:00 UTC: hours 04 and 05 have no data.
        let t2 = &r.groups[0];
        assert_eq!(t2.total_kwh, 44.0);
        assert_eq!((t2.hourly_kwh[4], t2.hourly_kwh[5], t2.hourly_kwh[6]), (None, None, Some(2.0)));
        let f = report(&c, GroupBy::Feeder, day, 1).await.expect("feeder");
        assert_eq!(f.groups.len(), 1);
        assert_eq!((f.groups[0].name.as_str(), f.groups[0].meters, f.groups[0].total_kwh), ("F1", 2, 68.0));
    }
}
