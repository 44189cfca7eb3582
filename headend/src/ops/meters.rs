//! Meters not reporting (or failing, or all of them) with filters, a page at a time; one meter's page.
//!
//! **Not reporting** = in service today and no load-profile (1.0.1.8.0) reading with an interval end in the
//! last `hours` hours. At 205k meters that is one anti-join: a meter with a ledger row of a local day that
//! starts after the cut-off has a reading after it (the writer counts the ledger in the readings'
//! transaction), so today's ledger rows, hashed, clear most of the fleet; only the rest is looked up in
//! `readings` by primary key (partitions of the last `hours` only).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::{day_span, limit_offset, local_day, OpsError, ENERGY_CHANNEL, PER_PAGE, VOLTAGE_CHANNEL};

/// Which meters a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No load-profile reading in the last `hours` hours.
    #[default]
    NotReporting,
    /// Polled meters whose last session failed.
    Failing,
    /// Every meter in service.
    All,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "not_reporting" => Some(Status::NotReporting),
            "failing" => Some(Status::Failing),
            "all" => Some(Status::All),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Status::NotReporting => "not_reporting",
            Status::Failing => "failing",
            Status::All => "all",
        }
    }
}

/// The filters of a list (absent = any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub status: Status,
    /// For [`Status::NotReporting`]: silent for more than this many hours (1 to 2,160).
    pub hours: i64,
    pub transformer: Option<String>,
    pub feeder: Option<String>,
    /// Of the meter's building.
    pub municipality: Option<String>,
    pub protocol: Option<String>,
    /// Serial prefix (case-insensitive).
    pub serial: Option<String>,
    /// Polled meters whose current run of failures has this reason (the label of
    /// `meter_poll_status.last_error`, e.g. `authentication_rejected`).
    pub reason: Option<String>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            status: Status::NotReporting,
            hours: 24,
            transformer: None,
            feeder: None,
            municipality: None,
            protocol: None,
            serial: None,
            reason: None,
        }
    }
}

/// The longest silence a filter may ask about (90 days).
pub const MAX_HOURS: i64 = 2_160;

/// One meter of a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeterRow {
    pub serial: String,
    /// `household` or `master`.
    pub kind: String,
    pub protocol: String,
    pub feeder: Option<String>,
    pub transformer: Option<String>,
    pub building: String,
    pub municipality: String,
    pub address: String,
    pub household: Option<String>,
    /// Interval end of the newest stored load-profile reading.
    pub last_reading: Option<DateTime<Utc>>,
    /// Polled meters: the last successful session, the last attempt, why the last one failed, and how
    /// many failed in a row.
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: i32,
}

/// A page of meters.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeterPage {
    pub status: Status,
    /// The silence threshold used for `not_reporting`.
    pub hours: i64,
    /// Meters matching the filters, over all pages.
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
    pub meters: Vec<MeterRow>,
}

/// The statement's filters and its parameters. The SQL is made of fixed fragments only; every value
/// is a parameter.
struct Query<'a> {
    sql: String,
    params: Vec<&'a (dyn ToSql + Sync)>,
}

struct Bound {
    today: NaiveDate,
    since_day: NaiveDate,
    cutoff: DateTime<Utc>,
    serial: Option<String>,
}

fn bind(f: &Filter, now: DateTime<Utc>) -> Bound {
    let cutoff = now - Duration::hours(f.hours.clamp(1, MAX_HOURS));
    // The first local day starting at or after the cut-off: a ledger row of that day or later proves a
    // reading after the cut-off.
    let d = local_day(cutoff);
    let since_day = if day_span(d).0 >= cutoff { d } else { d.succ_opt().unwrap_or(d) };
    let serial = f.serial.as_ref().map(|s| {
        let escaped = s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        format!("{escaped}%")
    });
    Bound { today: local_day(now), since_day, cutoff, serial }
}

fn matching<'a>(f: &'a Filter, b: &'a Bound) -> Query<'a> {
    let mut sql = String::from(
        "SELECT m.id, m.serial, m.feeder, m.transformer
         FROM meters m JOIN buildings b ON b.id = m.building_id
         WHERE m.installed_on <= $1 AND (m.removed_on IS NULL OR m.removed_on > $1)
           AND ($2::text IS NULL OR m.transformer = $2) AND ($3::text IS NULL OR m.feeder = $3)
           AND ($4::text IS NULL OR b.municipality = $4) AND ($5::text IS NULL OR m.protocol = $5)
           AND ($6::text IS NULL OR m.serial ILIKE $6)
           AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM meter_poll_status s WHERE s.meter_id = m.id
                                            AND s.consecutive_failures > 0 AND split_part(s.last_error, ':', 1) = $7))",
    );
    let mut params: Vec<&'a (dyn ToSql + Sync)> =
        vec![&b.today, &f.transformer, &f.feeder, &f.municipality, &f.protocol, &b.serial, &f.reason];
    match f.status {
        Status::NotReporting => {
            sql.push_str(
                " AND NOT EXISTS (SELECT 1 FROM read_ledger l WHERE l.meter_id = m.id AND l.day >= $8 AND l.received > 0)
                  AND NOT EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = m.id AND r.channel_id = 1 AND r.ts > $9)",
            );
            params.push(&b.since_day);
            params.push(&b.cutoff);
        }
        Status::Failing => sql.push_str(
            " AND EXISTS (SELECT 1 FROM meter_poll_status s WHERE s.meter_id = m.id AND s.consecutive_failures > 0)",
        ),
        Status::All => {}
    }
    Query { sql, params }
}

/// How many meters match `f` at `now`.
pub async fn count(c: &impl GenericClient, f: &Filter, now: DateTime<Utc>) -> Result<i64, OpsError> {
    let b = bind(f, now);
    let q = matching(f, &b);
    Ok(c.query_one(&format!("SELECT count(*) FROM ({}) hit", q.sql), &q.params).await?.get(0))
}

/// Page `page` (from 1) of the meters matching `f` at `now`, by feeder, transformer and serial.
pub async fn list(c: &impl GenericClient, f: &Filter, page: i64, now: DateTime<Utc>) -> Result<MeterPage, OpsError> {
    debug_assert_eq!(ENERGY_CHANNEL, 1, "the statements name the channel literally");
    let b = bind(f, now);
    let q = matching(f, &b);
    let (limit, offset) = limit_offset(page);
    let n = q.params.len();
    let sql = format!(
        "WITH hit AS ({}),
         pg AS (SELECT id FROM hit ORDER BY feeder NULLS LAST, transformer NULLS LAST, serial LIMIT ${} OFFSET ${})
         SELECT t.total, m.serial, m.kind, m.protocol, m.feeder, m.transformer, b.code, b.municipality, b.address, h.code,
                (SELECT r.ts FROM readings r WHERE r.meter_id = m.id AND r.channel_id = 1 ORDER BY r.ts DESC LIMIT 1),
                s.last_success_at, s.last_attempt_at, s.last_error, COALESCE(s.consecutive_failures, 0)
         FROM (SELECT count(*) AS total FROM hit) t
         LEFT JOIN pg ON true
         LEFT JOIN meters m ON m.id = pg.id
         LEFT JOIN buildings b ON b.id = m.building_id
         LEFT JOIN households h ON h.id = m.household_id
         LEFT JOIN meter_poll_status s ON s.meter_id = m.id
         ORDER BY m.feeder NULLS LAST, m.transformer NULLS LAST, m.serial",
        q.sql,
        n + 1,
        n + 2
    );
    let mut params = q.params;
    params.push(&limit);
    params.push(&offset);
    let rows = c.query(&sql, &params).await?;
    let total = rows.first().map_or(0, |r| r.get(0));
    let meters = rows
        .iter()
        .filter_map(|r| {
            Some(MeterRow {
                serial: r.get::<_, Option<String>>(1)?,
                kind: r.get(2),
                protocol: r.get(3),
                feeder: r.get(4),
                transformer: r.get(5),
                building: r.get(6),
                municipality: r.get(7),
                address: r.get(8),
                household: r.get(9),
                last_reading: r.get(10),
                last_success_at: r.get(11),
                last_attempt_at: r.get(12),
                last_error: r.get(13),
                consecutive_failures: r.get(14),
            })
        })
        .collect();
    Ok(MeterPage { status: f.status, hours: f.hours, total, page, per_page: PER_PAGE, meters })
}

/// The values the list's filters offer: distinct transformers, feeders, municipalities, protocols and
/// reasons of current poll failures (at most `limit` of each, sorted).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Choices {
    pub transformers: Vec<String>,
    pub feeders: Vec<String>,
    pub municipalities: Vec<String>,
    pub protocols: Vec<String>,
    pub reasons: Vec<String>,
}

pub async fn choices(c: &impl GenericClient, limit: i64) -> Result<Choices, OpsError> {
    let rows = c
        .query(
            "(SELECT 1, transformer FROM meters WHERE transformer IS NOT NULL GROUP BY transformer ORDER BY 2 LIMIT $1)
             UNION ALL
             (SELECT 2, feeder FROM meters WHERE feeder IS NOT NULL GROUP BY feeder ORDER BY 2 LIMIT $1)
             UNION ALL
             (SELECT 3, municipality FROM buildings GROUP BY municipality ORDER BY 2 LIMIT $1)
             UNION ALL
             (SELECT 4, protocol FROM meters GROUP BY protocol ORDER BY 2 LIMIT $1)
             UNION ALL
             (SELECT 5, split_part(last_error, ':', 1) FROM meter_poll_status
              WHERE consecutive_failures > 0 AND last_error IS NOT NULL GROUP BY 2 ORDER BY 2 LIMIT $1)",
            &[&limit],
        )
        .await?;
    let mut out = Choices::default();
    for r in &rows {
        let v: String = r.get(1);
        match r.get::<_, i32>(0) {
            1 => out.transformers.push(v),
            2 => out.feeders.push(v),
            3 => out.municipalities.push(v),
            4 => out.protocols.push(v),
            _ => out.reasons.push(v),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// One meter

/// A meter's inventory record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Inventory {
    pub id: i32,
    pub serial: String,
    pub kind: String,
    pub protocol: String,
    /// Where it is polled (`host[:port]`, `host:port/unit/map`); none for MQTT meters.
    pub address: Option<String>,
    pub feeder: Option<String>,
    pub transformer: Option<String>,
    pub installed_on: NaiveDate,
    pub removed_on: Option<NaiveDate>,
    pub building: String,
    pub building_address: String,
    pub municipality: String,
    pub region: String,
    pub household: Option<String>,
    pub apartment: Option<String>,
}

/// The last poll of a meter (`meter_poll_status`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PollStatus {
    pub last_attempt_at: DateTime<Utc>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: i32,
    pub clock_deviation_ms: Option<i64>,
    pub clock_flagged: bool,
}

/// What polling learnt about the meter (`meter_capabilities`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Capability {
    pub protocol: String,
    pub max_pdu: Option<i32>,
    pub max_list: Option<i32>,
    pub selective_access: Option<bool>,
    pub security: Option<String>,
    /// Protocol-specific details (JSON text, at most 4,000 characters).
    pub details: String,
    pub probed_at: DateTime<Utc>,
}

/// One local day of the read ledger.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerDay {
    pub day: NaiveDate,
    pub expected: i16,
    pub received: i16,
    pub within_1h: i16,
    pub within_24h: i16,
    pub within_72h: i16,
    pub first_complete_at: Option<DateTime<Utc>>,
}

/// The newest value of a channel.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Latest {
    pub obis: String,
    pub name: &'static str,
    pub unit: &'static str,
    pub ts: DateTime<Utc>,
    /// In the channel's unit.
    pub value: f64,
}

/// One interval of the last 48 hours.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Interval {
    /// Interval end.
    pub ts: DateTime<Utc>,
    /// Energy of the interval (register difference to the previous interval end), when both ends are stored.
    pub wh: Option<i64>,
    /// Voltage L1 in V.
    pub volts: Option<f64>,
}

/// Everything the meter page shows (commands come from [`crate::api::meters::commands_of`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeterDetail {
    pub inventory: Inventory,
    pub poll: Option<PollStatus>,
    pub capability: Option<Capability>,
    /// The last 14 local days, newest first.
    pub ledger: Vec<LedgerDay>,
    /// The newest value of each channel within the 48 hours shown.
    pub latest: Vec<Latest>,
    /// Intervals of the 48 hours up to the newest load-profile reading (or now), oldest first.
    pub intervals: Vec<Interval>,
}

/// The page of meter `serial`, or `None` when there is no such meter.
pub async fn detail(c: &impl GenericClient, serial: &str, now: DateTime<Utc>) -> Result<Option<MeterDetail>, OpsError> {
    let Some(r) = c
        .query_opt(
            "SELECT m.id, m.serial, m.kind, m.protocol, m.address, m.feeder, m.transformer, m.installed_on, m.removed_on,
                    b.code, b.address, b.municipality, b.region, h.code, h.apartment,
                    s.last_attempt_at, s.last_success_at, s.last_error, s.consecutive_failures, s.clock_deviation_ms,
                    s.clock_flagged,
                    k.protocol, k.max_pdu, k.max_list, k.selective_access, k.security, left(k.details::text, 4000),
                    k.probed_at,
                    (SELECT r.ts FROM readings r WHERE r.meter_id = m.id AND r.channel_id = 1 ORDER BY r.ts DESC LIMIT 1)
             FROM meters m JOIN buildings b ON b.id = m.building_id
             LEFT JOIN households h ON h.id = m.household_id
             LEFT JOIN meter_poll_status s ON s.meter_id = m.id
             LEFT JOIN meter_capabilities k ON k.meter_id = m.id
             WHERE m.serial = $1",
            &[&serial],
        )
        .await?
    else {
        return Ok(None);
    };
    let id: i32 = r.get(0);
    let inventory = Inventory {
        id,
        serial: r.get(1),
        kind: r.get(2),
        protocol: r.get(3),
        address: r.get(4),
        feeder: r.get(5),
        transformer: r.get(6),
        installed_on: r.get(7),
        removed_on: r.get(8),
        building: r.get(9),
        building_address: r.get(10),
        municipality: r.get(11),
        region: r.get(12),
        household: r.get(13),
        apartment: r.get(14),
    };
    let poll = r.get::<_, Option<DateTime<Utc>>>(15).map(|at| PollStatus {
        last_attempt_at: at,
        last_success_at: r.get(16),
        last_error: r.get(17),
        consecutive_failures: r.get(18),
        clock_deviation_ms: r.get(19),
        clock_flagged: r.get(20),
    });
    let capability = r.get::<_, Option<String>>(21).map(|protocol| Capability {
        protocol,
        max_pdu: r.get(22),
        max_list: r.get(23),
        selective_access: r.get(24),
        security: r.get(25),
        details: r.get::<_, Option<String>>(26).unwrap_or_default(),
        probed_at: r.get(27),
    });
    let last: Option<DateTime<Utc>> = r.get(28);
    let to = last.unwrap_or(now);
    let from = to - Duration::hours(48);

    let ledger = c
        .query(
            "SELECT day, expected, received, within_1h, within_24h, within_72h, first_complete_at
             FROM read_ledger WHERE meter_id = $1 AND day > $2 ORDER BY day DESC LIMIT 14",
            &[&id, &(local_day(now) - Duration::days(14))],
        )
        .await?
        .iter()
        .map(|r| LedgerDay {
            day: r.get(0),
            expected: r.get(1),
            received: r.get(2),
            within_1h: r.get(3),
            within_24h: r.get(4),
            within_72h: r.get(5),
            first_complete_at: r.get(6),
        })
        .collect();

    // One interval before the window, so the first interval's energy is known.
    let rows = c
        .query(
            "SELECT channel_id, ts, value FROM readings
             WHERE meter_id = $1 AND ts > $2 AND ts <= $3
             ORDER BY channel_id, ts LIMIT 4000",
            &[&id, &(from - Duration::minutes(15)), &to],
        )
        .await?;
    let mut latest: Vec<Latest> = Vec::new();
    let mut energy: Vec<(DateTime<Utc>, i64)> = Vec::new();
    let mut volts: std::collections::BTreeMap<DateTime<Utc>, f64> = std::collections::BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let ch: i16 = row.get(0);
        let (ts, value): (DateTime<Utc>, i64) = (row.get(1), row.get(2));
        if ch == ENERGY_CHANNEL {
            energy.push((ts, value));
        } else if ch == VOLTAGE_CHANNEL && ts > from {
            volts.insert(ts, value as f64 / 10.0);
        }
        let last_of_channel = rows.get(i + 1).is_none_or(|n| n.get::<_, i16>(0) != ch);
        if let (true, Some(def)) = (last_of_channel, schemas::channel::by_id(ch)) {
            latest.push(Latest {
                obis: def.obis.to_string(),
                name: def.name,
                unit: def.unit,
                ts,
                value: def.to_physical(value),
            });
        }
    }
    let mut intervals: Vec<Interval> = Vec::new();
    for (i, &(ts, v)) in energy.iter().enumerate() {
        if ts <= from {
            continue;
        }
        let wh = i
            .checked_sub(1)
            .and_then(|p| energy.get(p))
            .filter(|(pt, _)| ts - *pt == Duration::minutes(15))
            .map(|(_, pv)| v - pv);
        intervals.push(Interval { ts, wh, volts: volts.remove(&ts) });
    }
    intervals.extend(volts.into_iter().map(|(ts, v)| Interval { ts, wh: None, volts: Some(v) }));
    intervals.sort_by_key(|i| i.ts);
    Ok(Some(MeterDetail { inventory, poll, capability, ledger, latest, intervals }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;
    use crate::ops::testdata;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[tokio::test]
    async fn not_reporting_lists_exactly_the_silent_meters_with_filters_and_pages() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        testdata::fleet(&c).await;
        let now = t("2026-11-20T12:00:00Z");
        c.batch_execute(
            "SELECT headend_ensure_partition(d::date) FROM generate_series('2026-11-18'::date, '2026-11-21', '1 day') d",
        )
        .await
        .expect("partitions");
        // Every meter reports at 11:45 except A2 (last at 2026-11-19 06:00, 30 h ago) and C1 (never); A3 has
        // today's ledger row (so the ledger clears it without a look-up).
        c.batch_execute(
            "INSERT INTO readings (ts, value, meter_id, channel_id)
             SELECT '2026-11-20T11:45:00Z', 1, id, 1 FROM meters WHERE serial NOT IN ('A2', 'C1');
             INSERT INTO readings (ts, value, meter_id, channel_id)
             SELECT '2026-11-19T06:00:00Z', 1, id, 1 FROM meters WHERE serial = 'A2';
             INSERT INTO read_ledger (meter_id, day, expected, received)
             SELECT id, '2026-11-20', 96, 47 FROM meters WHERE serial = 'A3';
             INSERT INTO meter_poll_status (meter_id, last_attempt_at, last_success_at, last_error, consecutive_failures)
             SELECT id, '2026-11-20T11:00:00Z', NULL, 'timeout: no answer in 5 s', 4 FROM meters WHERE serial = 'C1';",
        )
        .await
        .expect("readings");
        let f = Filter::default();
        let page = list(&c, &f, 1, now).await.expect("list");
        let serials: Vec<&str> = page.meters.iter().map(|m| m.serial.as_str()).collect();
        assert_eq!(serials, ["A2", "C1"]);
        assert_eq!(page.total, 2);
        assert_eq!(count(&c, &f, now).await.expect("count"), 2);
        assert_eq!(page.meters[0].last_reading, Some(t("2026-11-19T06:00:00Z")));
        assert_eq!(page.meters[1].last_reading, None);
        assert_eq!(page.meters[1].last_error.as_deref(), Some("timeout: no answer in 5 s"));
        assert_eq!(page.meters[1].consecutive_failures, 4);

        // 31 hours: A2 reported within them.
        let f31 = Filter { hours: 31, ..Filter::default() };
        let p = list(&c, &f31, 1, now).await.expect("list");
        assert_eq!(p.meters.iter().map(|m| m.serial.as_str()).collect::<Vec<_>>(), ["C1"]);
        // Filters.
        let by_t1 = Filter { transformer: Some("T1".into()), ..Filter::default() };
        assert_eq!(list(&c, &by_t1, 1, now).await.expect("list").meters.len(), 1);
        let by_place = Filter { municipality: Some("Vračar".into()), ..Filter::default() };
        assert_eq!(list(&c, &by_place, 1, now).await.expect("list").meters[0].serial, "C1");
        let modbus = Filter { protocol: Some("modbus".into()), ..Filter::default() };
        assert_eq!(list(&c, &modbus, 1, now).await.expect("list").total, 0);
        let failing = Filter { status: Status::Failing, ..Filter::default() };
        assert_eq!(list(&c, &failing, 1, now).await.expect("list").meters[0].serial, "C1");
        let prefix = Filter { status: Status::All, serial: Some("a".into()), ..Filter::default() };
        assert_eq!(list(&c, &prefix, 1, now).await.expect("list").total, 3);
        // By the failure's reason, whatever the list.
        for status in [Status::Failing, Status::All, Status::NotReporting] {
            let timeouts = Filter { status, reason: Some("timeout".into()), ..Filter::default() };
            let p = list(&c, &timeouts, 1, now).await.expect("list");
            assert_eq!(p.meters.iter().map(|m| m.serial.as_str()).collect::<Vec<_>>(), ["C1"], "{status:?}");
            let auth = Filter { status, reason: Some("authentication_rejected".into()), ..Filter::default() };
            assert_eq!(count(&c, &auth, now).await.expect("count"), 0, "{status:?}");
        }
        let wild = Filter { status: Status::All, serial: Some("%".into()), ..Filter::default() };
        assert_eq!(list(&c, &wild, 1, now).await.expect("list").total, 0, "LIKE wildcards are literal");
        // A page past the end still has the total.
        let all = Filter { status: Status::All, ..Filter::default() };
        let past = list(&c, &all, 2, now).await.expect("list");
        assert_eq!((past.total, past.meters.len()), (8, 0));

        let ch = choices(&c, 100).await.expect("choices");
        assert_eq!(ch.transformers, ["T1", "T2"]);
        assert_eq!(ch.feeders, ["F1"]);
        assert_eq!(ch.municipalities, ["Vračar", "Zemun"]);
        assert_eq!(ch.protocols, ["modbus", "mqtt"]);
        assert_eq!(ch.reasons, ["timeout"]);
    }

    #[tokio::test]
    async fn the_meter_page_has_energy_per_interval_and_voltage() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        testdata::fleet(&c).await;
        c.batch_execute(
            "SELECT headend_ensure_partition('2026-11-20');
             INSERT INTO readings (ts, value, meter_id, channel_id)
             SELECT '2026-11-20T10:00:00Z'::timestamptz + n * interval '15 minutes', 1000 + n * n, m.id, 1
             FROM meters m, generate_series(0, 3) n WHERE m.serial = 'A1';
             INSERT INTO readings (ts, value, meter_id, channel_id)
             SELECT '2026-11-20T10:15:00Z', 2301, id, 5 FROM meters WHERE serial = 'A1';",
        )
        .await
        .expect("readings");
        let d = detail(&c, "A1", t("2026-11-20T12:00:00Z")).await.expect("detail").expect("found");
        assert_eq!(d.inventory.building, "B1");
        assert_eq!(d.inventory.household.as_deref(), Some("HB1-1"));
        let wh: Vec<Option<i64>> = d.intervals.iter().map(|i| i.wh).collect();
        assert_eq!(wh, [None, Some(1), Some(3), Some(5)]);
        assert_eq!(d.intervals[1].volts, Some(230.1));
        assert_eq!(d.latest.len(), 2);
        assert_eq!(d.latest[0].value, 1009.0);
        assert!(detail(&c, "NOPE", Utc::now()).await.expect("detail").is_none());
    }
}
