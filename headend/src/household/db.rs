//! The portal's SQL: a household with its building and meters, register look-ups by primary key, a bounded
//! range of readings, and the registers of a building's flats at two instants. Every query is indexed
//! (`readings` by `(meter_id, channel_id, ts)`, partitions pruned by `ts`) and bounded.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use schemas::inventory::Region;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use super::calendar::local_day;
use super::usage::{Found, Lookup, MeterSpan, Reading, REGISTERS};
use super::HouseholdError;

/// Most meters a household can have had (exchanges); more is an inventory error and is cut.
pub const MAX_METERS: i64 = 20;
/// Most readings a range query returns: a month of 15-minute readings of three registers for a few meters.
pub const MAX_RANGE_ROWS: i64 = 40_000;
/// Most rows of a building's registers at two instants (150 flats, exchanges included).
pub const MAX_BUILDING_ROWS: i64 = 4_000;

/// A household with its building and meters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Household {
    pub id: i32,
    pub code: String,
    pub apartment: String,
    pub approved_power_kw: Decimal,
    pub tariff: String,
    pub building_id: i32,
    pub building_code: String,
    pub address: String,
    pub region: Region,
    /// In installation order.
    pub meters: Vec<HouseholdMeter>,
}

/// One of the household's meters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdMeter {
    pub id: i32,
    pub serial: String,
    pub installed_on: NaiveDate,
    pub removed_on: Option<NaiveDate>,
}

impl Household {
    /// The meters' service windows.
    pub fn spans(&self) -> Vec<MeterSpan> {
        self.meters.iter().map(|m| MeterSpan::new(m.id, m.installed_on, m.removed_on)).collect()
    }

    /// The meters whose window meets `[start, end)`.
    pub fn meter_ids_in(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<i32> {
        self.spans().iter().filter(|s| s.meets(start, end)).map(|s| s.id).collect()
    }
}

/// The household with inventory id `id` (already checked visible by the caller), or `None`.
pub async fn household(c: &impl GenericClient, id: i32) -> Result<Option<Household>, HouseholdError> {
    let rows = c
        .query(
            "SELECT h.id, h.code, h.apartment, h.approved_power_kw::text, h.tariff,
                    b.id, b.code, b.address, b.region,
                    m.id, m.serial, m.installed_on, m.removed_on
             FROM households h
             JOIN buildings b ON b.id = h.building_id
             LEFT JOIN meters m ON m.household_id = h.id
             WHERE h.id = $1
             ORDER BY m.installed_on, m.id
             LIMIT $2",
            &[&id, &MAX_METERS],
        )
        .await?;
    let Some(first) = rows.first() else { return Ok(None) };
    let kw: String = first.get(3);
    let region: String = first.get(8);
    let mut h = Household {
        id: first.get(0),
        code: first.get(1),
        apartment: first.get(2),
        approved_power_kw: Decimal::from_str(&kw)
            .map_err(|e| HouseholdError::Inventory(format!("power {kw:?}: {e}")))?,
        tariff: first.get(4),
        building_id: first.get(5),
        building_code: first.get(6),
        address: first.get(7),
        region: Region::ALL
            .into_iter()
            .find(|r| r.as_str() == region)
            .ok_or_else(|| HouseholdError::Inventory(format!("region {region:?}")))?,
        meters: Vec::new(),
    };
    for r in &rows {
        if let Some(id) = r.get::<_, Option<i32>>(9) {
            h.meters.push(HouseholdMeter { id, serial: r.get(10), installed_on: r.get(11), removed_on: r.get(12) });
        }
    }
    Ok(Some(h))
}

/// The code of the household with id `id`.
pub async fn household_code(c: &impl GenericClient, id: i32) -> Result<Option<String>, HouseholdError> {
    Ok(c.query_opt("SELECT code FROM households WHERE id = $1", &[&id]).await?.map(|r| r.get(0)))
}

/// A range look-up: meter, lower and upper bound.
type Range = (i32, DateTime<Utc>, DateTime<Utc>);

/// Resolves register look-ups in one statement: the exact instants by `ts = ANY(…)` (partitions pruned when
/// planning, primary-key probes), the latest/earliest reading in a range by `ORDER BY ts LIMIT 1` per meter
/// and register (a backward/forward index scan over the partitions of the ranges' span).
pub async fn lookup(c: &impl GenericClient, lookups: &[(i32, Lookup)]) -> Result<Found, HouseholdError> {
    let mut found = Found::new();
    if lookups.is_empty() {
        return Ok(found);
    }
    let mut at_meters: Vec<i32> = Vec::new();
    let mut at_ts: Vec<DateTime<Utc>> = Vec::new();
    // (meter, lo, hi) of the range look-ups, each side.
    let (mut last, mut first): (Vec<Range>, Vec<Range>) = (Vec::new(), Vec::new());
    for &(m, l) in lookups {
        match l {
            Lookup::At(t) => {
                if !at_meters.contains(&m) {
                    at_meters.push(m);
                }
                if !at_ts.contains(&t) {
                    at_ts.push(t);
                }
            }
            Lookup::LastIn(lo, hi) => last.push((m, lo, hi)),
            Lookup::FirstIn(lo, hi) => first.push((m, lo, hi)),
        }
    }
    let channels: Vec<i16> = REGISTERS.to_vec();
    let cols = |v: &[Range]| {
        (
            v.iter().map(|x| x.0).collect::<Vec<i32>>(),
            v.iter().map(|x| x.1).collect::<Vec<DateTime<Utc>>>(),
            v.iter().map(|x| x.2).collect::<Vec<DateTime<Utc>>>(),
        )
    };
    let (lm, llo, lhi) = cols(&last);
    let (fm, flo, fhi) = cols(&first);
    // The span of each side's ranges, repeated as constants so that the planner prunes the partitions
    // outside it (the per-row bounds alone are only known at run time).
    let span = |lo: &[DateTime<Utc>], hi: &[DateTime<Utc>]| {
        (lo.iter().min().copied().unwrap_or_default(), hi.iter().max().copied().unwrap_or_default())
    };
    let (l_span, f_span) = (span(&llo, &lhi), span(&flo, &fhi));
    // Only the arms with look-ups are sent (their SQL is fixed text with numbered parameters).
    let mut arms: Vec<String> = Vec::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&channels];
    if !at_ts.is_empty() {
        arms.push(format!(
            "SELECT 0::int4, 0::int8, meter_id, channel_id, ts, value FROM readings
             WHERE channel_id = ANY($1) AND meter_id = ANY(${}) AND ts = ANY(${})",
            params.len() + 1,
            params.len() + 2
        ));
        params.extend([&at_meters as &(dyn ToSql + Sync), &at_ts]);
    }
    for (k, (m, lo, hi), (a, b)) in [(1, (&lm, &llo, &lhi), &l_span), (2, (&fm, &flo, &fhi), &f_span)] {
        if m.is_empty() {
            continue;
        }
        // Latest in (lo, hi], or earliest in [lo, hi).
        let (above, below, order) = if k == 1 { (">", "<=", "DESC") } else { (">=", "<", "ASC") };
        let n = params.len();
        arms.push(format!(
            "SELECT {k}::int4, q.i, q.meter_id, c.channel_id, n.ts, n.value
             FROM unnest(${}::int4[], ${}::timestamptz[], ${}::timestamptz[]) WITH ORDINALITY AS q(meter_id, lo, hi, i)
             CROSS JOIN unnest($1::int2[]) AS c(channel_id)
             CROSS JOIN LATERAL (SELECT r.ts, r.value FROM readings r
                                 WHERE r.meter_id = q.meter_id AND r.channel_id = c.channel_id
                                   AND r.ts {above} q.lo AND r.ts {below} q.hi
                                   AND r.ts {above} ${} AND r.ts {below} ${}
                                 ORDER BY r.ts {order} LIMIT 1) n",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5
        ));
        params.extend([m as &(dyn ToSql + Sync), lo, hi, a, b]);
    }
    let rows = c.query(&arms.join("\nUNION ALL\n"), &params).await?;
    for r in rows {
        let (k, i, meter, channel, ts, value): (i32, i64, i32, i16, DateTime<Utc>, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        let Some(reg) = REGISTERS.iter().position(|c| *c == channel) else { continue };
        let idx = usize::try_from(i - 1).ok();
        let key = match k {
            0 => Lookup::At(ts),
            1 => match idx.and_then(|i| last.get(i)) {
                Some(&(_, lo, hi)) => Lookup::LastIn(lo, hi),
                None => continue,
            },
            _ => match idx.and_then(|i| first.get(i)) {
                Some(&(_, lo, hi)) => Lookup::FirstIn(lo, hi),
                None => continue,
            },
        };
        found.entry((meter, key)).or_default().values[reg] = Some((ts, value));
    }
    Ok(found)
}

/// The readings of registers 1–3 of `meters` with `from ≤ ts ≤ to` (at most [`MAX_RANGE_ROWS`]).
pub async fn readings(
    c: &impl GenericClient,
    meters: &[i32],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Reading>, HouseholdError> {
    if meters.is_empty() {
        return Ok(Vec::new());
    }
    let channels: Vec<i16> = REGISTERS.to_vec();
    let rows = c
        .query(
            "SELECT meter_id, channel_id, ts, value FROM readings
             WHERE meter_id = ANY($1) AND channel_id = ANY($2) AND ts >= $3 AND ts <= $4
             ORDER BY ts LIMIT $5",
            &[&meters, &channels, &from, &to, &MAX_RANGE_ROWS],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
}

/// 1.0.1.8.0 of every household meter of building `building` in service over the whole of `[start, end]`
/// at both instants, per household: the consumption of each household whose meters have both readings (a
/// meter exchanged in between leaves the household out). One statement, at most [`MAX_BUILDING_ROWS`] rows.
pub async fn building_consumption(
    c: &impl GenericClient,
    building: i32,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<HashMap<i32, i64>, HouseholdError> {
    let instants = vec![start, end];
    // In service from local midnight of `installed_on` to local midnight after `removed_on`.
    let (first_day, last_day) = (local_day(start), local_day(end - chrono::Duration::seconds(1)));
    let rows = c
        .query(
            "SELECT m.household_id, m.id, r.ts, r.value
             FROM meters m
             JOIN readings r ON r.meter_id = m.id AND r.channel_id = $3 AND r.ts = ANY($2)
             WHERE m.building_id = $1 AND m.kind = 'household'
               AND m.installed_on <= $5 AND (m.removed_on IS NULL OR m.removed_on >= $6)
             LIMIT $4",
            &[&building, &instants, &super::usage::CH_TOTAL, &MAX_BUILDING_ROWS, &first_day, &last_day],
        )
        .await?;
    // household → meter → registers (start, end)
    type Ends = (Option<i64>, Option<i64>);
    let mut per: HashMap<i32, HashMap<i32, Ends>> = HashMap::new();
    for r in &rows {
        let (h, m, ts, v): (i32, i32, DateTime<Utc>, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let e = per.entry(h).or_default().entry(m).or_default();
        if ts == start {
            e.0 = Some(v);
        } else {
            e.1 = Some(v);
        }
    }
    Ok(per
        .into_iter()
        .filter_map(|(h, meters)| {
            let mut sum = 0i64;
            for (a, b) in meters.values() {
                let (a, b) = ((*a)?, (*b)?);
                if b < a {
                    return None;
                }
                sum = sum.saturating_add(b - a);
            }
            Some((h, sum))
        })
        .collect())
}
