//! The database side of a run: read the inventory and the boundary readings of the head-end's schema
//! (migrations 0001–0003), store the run (migration 0004: `billing_runs`, `bills`, `bill_lines`,
//! `billing_problems`).
//!
//! Boundary readings: one query per boundary for the readings at exactly the instant (`ts = boundary`, one
//! day partition), then, only for the (meter, channel) pairs still missing, the nearest reading within 24 h
//! before and after by primary-key look-ups (`LATERAL … ORDER BY ts LIMIT 1`), and for those that VEE cannot
//! interpolate the like-day readings 1–4 weeks earlier (exact primary-key look-ups). Meters installed or
//! removed inside the month: their reading at installation and their last reading before removal.
//!
//! Storing: bill ids are reserved from the identity sequence, then bills, lines and problems go in by CSV
//! `COPY` (≈ 10× fewer round trips and no text→numeric `unnest` casts); with `--out` the exports are written on
//! a blocking thread while the database ingests (`pipeline::run_with_exports`, which calls [`begin_run`] and
//! [`store_rows`] itself).
//!
//! Versions: a run takes a transaction-level advisory lock, numbers itself `max(version) + 1` for its period
//! and writes everything in that one transaction, so a run is stored whole or not at all.

use billing_core::run::LINE_KINDS;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemas::inventory::Region;
use tokio_postgres::Client;

use billing_core::allocation::Member;
use billing_core::run::{
    parse_split_key, rebuild_summary, split_key_name, BillingMonth, BuildingIn, BuildingResult, BuildingSummary,
    HouseholdBill, HouseholdIn, LineOut, MeterIn, MeterReads, Problem, Read, CH_NT, CH_TOTAL, CH_VT,
};
use billing_core::vee::{weeks_earlier, VeeConfig};

use crate::model::{RunMeta, RunOptions, StoreError, StoredRun};

fn dec(s: &str, what: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(s).map_err(|e| StoreError::Inventory(format!("{what} {s:?}: {e}")))
}

fn region(s: &str) -> Result<Region, StoreError> {
    Region::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| StoreError::Inventory(format!("region {s:?}")))
}

/// The buildings to bill with their households and meters in service during the month.
pub async fn load_inventory(
    client: &Client,
    month: &BillingMonth,
    building: Option<&str>,
) -> Result<Vec<BuildingIn>, StoreError> {
    load_inventory_of(client, month, building, None).await
}

/// [`load_inventory`], restricted to the building ids `ids` when given.
pub async fn load_inventory_of(
    client: &Client,
    month: &BillingMonth,
    building: Option<&str>,
    ids: Option<&[i32]>,
) -> Result<Vec<BuildingIn>, StoreError> {
    let only: Option<Vec<i32>> = ids.map(<[i32]>::to_vec);
    let rows = client
        .query(
            "SELECT id, code, region FROM buildings
             WHERE ($1::text IS NULL OR code = $1) AND ($2::int4[] IS NULL OR id = ANY($2)) ORDER BY id",
            &[&building, &only],
        )
        .await?;
    if let (Some(code), true) = (building, rows.is_empty()) {
        return Err(StoreError::UnknownBuilding(code.to_string()));
    }
    let mut buildings = Vec::with_capacity(rows.len());
    let mut index = HashMap::new();
    for r in rows {
        index.insert(r.get::<_, i32>(0), buildings.len());
        buildings.push(BuildingIn {
            id: r.get(0),
            code: r.get(1),
            region: region(r.get(2))?,
            masters: Vec::new(),
            households: Vec::new(),
        });
    }
    let ids: Vec<i32> = buildings.iter().map(|b| b.id).collect();
    let rows = client
        .query(
            "SELECT id, code, building_id, apartment, floor_area_m2::text, residents, approved_power_kw::text, tariff
             FROM households WHERE building_id = ANY($1) ORDER BY building_id, id",
            &[&ids],
        )
        .await?;
    let mut households: HashMap<i32, (usize, usize)> = HashMap::new();
    for r in rows {
        let Some(&bi) = index.get(&r.get::<_, i32>(2)) else { continue };
        let Some(b) = buildings.get_mut(bi) else { continue };
        let code: String = r.get(1);
        let residents: i16 = r.get(5);
        households.insert(r.get(0), (bi, b.households.len()));
        b.households.push(HouseholdIn {
            id: r.get(0),
            apartment: r.get(3),
            floor_area_m2: dec(r.get(4), "floor area")?,
            residents: u32::try_from(residents).map_err(|_| StoreError::Inventory(format!("{code}: residents")))?,
            approved_power_kw: dec(r.get(6), "approved power")?,
            tariff: r.get(7),
            meters: Vec::new(),
            code,
        });
    }
    let first = month.period.first_day();
    let last = month.period.last_day();
    let rows = client
        .query(
            "SELECT id, serial, kind, building_id, household_id, installed_on, removed_on FROM meters
             WHERE building_id = ANY($1) AND installed_on <= $2 AND (removed_on IS NULL OR removed_on >= $3)
             ORDER BY id",
            &[&ids, &last, &first],
        )
        .await?;
    for r in rows {
        let meter = MeterIn { id: r.get(0), serial: r.get(1), installed_on: r.get(5), removed_on: r.get(6) };
        let kind: &str = r.get(2);
        let household: Option<i32> = r.get(4);
        match (kind, household) {
            ("household", Some(h)) => {
                if let Some(hh) = households.get(&h).and_then(|&(bi, hi)| buildings.get_mut(bi)?.households.get_mut(hi))
                {
                    hh.meters.push(meter);
                }
            }
            _ => {
                if let Some(b) = index.get(&r.get::<_, i32>(3)).and_then(|&bi| buildings.get_mut(bi)) {
                    b.masters.push(meter);
                }
            }
        }
    }
    Ok(buildings)
}

/// Readings of a set of meters at one boundary instant.
#[derive(Default)]
struct AtBoundary {
    /// The reading at the instant, or the nearest within 24 h.
    reads: HashMap<i32, BTreeMap<i16, Read>>,
    /// For pairs without a reading at the instant: the nearest before and after within 24 h.
    around: HashMap<i32, BTreeMap<i16, [Option<Read>; 2]>>,
}

/// The readings of `meters` at `at`, or the nearest within 24 h before and after, for channels 1–3.
async fn boundary_reads(client: &Client, meters: &[i32], at: DateTime<Utc>) -> Result<AtBoundary, StoreError> {
    let channels: Vec<i16> = vec![CH_TOTAL, CH_VT, CH_NT];
    let mut out = AtBoundary::default();
    let rows = client
        .query(
            "SELECT meter_id, channel_id, ts, value FROM readings
             WHERE ts = $1 AND channel_id = ANY($2) AND meter_id = ANY($3)",
            &[&at, &channels, &meters],
        )
        .await?;
    for r in rows {
        out.reads.entry(r.get(0)).or_default().insert(r.get(1), Read { ts: r.get(2), wh: r.get(3) });
    }
    let (mut pm, mut pc): (Vec<i32>, Vec<i16>) = (Vec::new(), Vec::new());
    for m in meters {
        for c in &channels {
            if !out.reads.get(m).is_some_and(|x| x.contains_key(c)) {
                pm.push(*m);
                pc.push(*c);
            }
        }
    }
    if pm.is_empty() {
        return Ok(out);
    }
    let rows = client
        .query(
            "SELECT p.meter_id, p.channel_id, n.ts, n.value
             FROM unnest($1::int4[], $2::int2[]) AS p(meter_id, channel_id)
             CROSS JOIN LATERAL (
                 (SELECT ts, value FROM readings r
                  WHERE r.meter_id = p.meter_id AND r.channel_id = p.channel_id
                    AND r.ts < $3 AND r.ts >= $3 - interval '24 hours'
                  ORDER BY ts DESC LIMIT 1)
                 UNION ALL
                 (SELECT ts, value FROM readings r
                  WHERE r.meter_id = p.meter_id AND r.channel_id = p.channel_id
                    AND r.ts > $3 AND r.ts <= $3 + interval '24 hours'
                  ORDER BY ts LIMIT 1)
             ) n",
            &[&pm, &pc, &at],
        )
        .await?;
    for r in rows {
        let read = Read { ts: r.get(2), wh: r.get(3) };
        let (m, ch): (i32, i16) = (r.get(0), r.get(1));
        let side = out.around.entry(m).or_default().entry(ch).or_insert([None, None]);
        side[usize::from(read.ts > at)] = Some(read);
        let slot = out.reads.entry(m).or_default();
        // The nearest wins; on a tie the earlier reading.
        let better = slot.get(&ch).is_none_or(|old| {
            let (d_new, d_old) = ((read.ts - at).abs(), (old.ts - at).abs());
            d_new < d_old || (d_new == d_old && read.ts < old.ts)
        });
        if better {
            slot.insert(ch, read);
        }
    }
    Ok(out)
}

/// Actual readings at exactly the given `(meter, channel, ts)` points (primary-key look-ups).
async fn point_reads(
    client: &Client,
    points: &[(i32, i16, DateTime<Utc>)],
) -> Result<Vec<(i32, i16, DateTime<Utc>, i64)>, StoreError> {
    if points.is_empty() {
        return Ok(Vec::new());
    }
    let m: Vec<i32> = points.iter().map(|p| p.0).collect();
    let c: Vec<i16> = points.iter().map(|p| p.1).collect();
    let t: Vec<DateTime<Utc>> = points.iter().map(|p| p.2).collect();
    let rows = client
        .query(
            "SELECT r.meter_id, r.channel_id, r.ts, r.value
             FROM unnest($1::int4[], $2::int2[], $3::timestamptz[]) AS p(meter_id, channel_id, ts)
             JOIN readings r ON r.meter_id = p.meter_id AND r.channel_id = p.channel_id AND r.ts = p.ts",
            &[&m, &c, &t],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
}

/// Boundary readings of every meter of `buildings`: at the month's boundaries (or the readings around them,
/// plus the like-day history VEE needs for the missing ones), and for a meter installed or removed inside the
/// month its reading at installation and its last reading before removal.
pub async fn load_reads(
    client: &Client,
    month: &BillingMonth,
    buildings: &[BuildingIn],
    vee: &VeeConfig,
) -> Result<HashMap<i32, MeterReads>, StoreError> {
    let all: Vec<&MeterIn> = buildings
        .iter()
        .flat_map(|b| b.masters.iter().chain(b.households.iter().flat_map(|h| h.meters.iter())))
        .collect();
    let meters: Vec<i32> = all.iter().map(|m| m.id).collect();
    let mut start = boundary_reads(client, &meters, month.start).await?;
    let mut end = boundary_reads(client, &meters, month.end).await?;
    let mut out: HashMap<i32, MeterReads> = meters
        .iter()
        .map(|m| {
            (
                *m,
                MeterReads {
                    start: start.reads.remove(m).unwrap_or_default(),
                    end: end.reads.remove(m).unwrap_or_default(),
                    around_start: start.around.remove(m).unwrap_or_default(),
                    around_end: end.around.remove(m).unwrap_or_default(),
                    history: BTreeMap::new(),
                },
            )
        })
        .collect();

    // Meter exchange: the reading at installation, the last reading before removal.
    let channels = [CH_TOTAL, CH_VT, CH_NT];
    let mut installs = Vec::new();
    let (mut rm, mut rc, mut rs, mut re) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for m in &all {
        let w = m.window(month);
        for ch in channels {
            if w.installed_inside {
                installs.push((m.id, ch, w.start));
            }
            if w.removed_inside {
                rm.push(m.id);
                rc.push(ch);
                rs.push(w.start);
                re.push(w.end);
            }
        }
    }
    for (m, ch, ts, wh) in point_reads(client, &installs).await? {
        if let Some(r) = out.get_mut(&m) {
            r.start.insert(ch, Read { ts, wh });
        }
    }
    for m in &all {
        if m.window(month).installed_inside {
            if let Some(r) = out.get_mut(&m.id) {
                r.start.retain(|_, x| x.ts == m.window(month).start);
                r.around_start.clear();
            }
        }
    }
    if !rm.is_empty() {
        let rows = client
            .query(
                "SELECT p.meter_id, p.channel_id, n.ts, n.value
                 FROM unnest($1::int4[], $2::int2[], $3::timestamptz[], $4::timestamptz[]) AS p(meter_id, channel_id, s, e)
                 CROSS JOIN LATERAL (SELECT ts, value FROM readings r
                                     WHERE r.meter_id = p.meter_id AND r.channel_id = p.channel_id
                                       AND r.ts > p.s AND r.ts <= p.e ORDER BY ts DESC LIMIT 1) n",
                &[&rm, &rc, &rs, &re],
            )
            .await?;
        for m in rm.iter().collect::<std::collections::HashSet<_>>() {
            if let Some(r) = out.get_mut(m) {
                r.end.clear();
                r.around_end.clear();
            }
        }
        for row in rows {
            if let Some(r) = out.get_mut(&row.get::<_, i32>(0)) {
                r.end.insert(row.get(1), Read { ts: row.get(2), wh: row.get(3) });
            }
        }
    }

    // Like-day history for the boundaries that VEE has to estimate.
    let mut points = Vec::new();
    for (m, r) in &out {
        for (at, around) in [(month.start, &r.around_start), (month.end, &r.around_end)] {
            for (ch, [b, a]) in around {
                // A short bounded gap is interpolated: no like days needed.
                if let (Some(b), Some(a)) = (b, a) {
                    if a.ts - b.ts <= vee.max_interpolation_gap {
                        continue;
                    }
                }
                let instants = [Some(at), b.map(|x| x.ts), a.map(|x| x.ts)];
                for t in instants.into_iter().flatten() {
                    for w in 1..=vee.like_day_weeks {
                        if let Some(e) = weeks_earlier(t, w) {
                            points.push((*m, *ch, e));
                        }
                    }
                }
            }
        }
    }
    points.sort_unstable();
    points.dedup();
    for (m, ch, ts, wh) in point_reads(client, &points).await? {
        if let Some(r) = out.get_mut(&m) {
            r.history.entry(ch).or_default().insert(ts, wh);
        }
    }
    Ok(out)
}

/// Bytes per COPY message when storing.
const COPY_CHUNK: usize = 1 << 20;

/// A CSV `COPY … FROM STDIN` in chunks. Empty text is written unquoted, i.e. NULL; every other field is
/// quoted, so codes and details with commas, quotes or newlines go in as they are.
struct CsvCopy {
    sink: std::pin::Pin<Box<tokio_postgres::CopyInSink<std::io::Cursor<Vec<u8>>>>>,
    buf: Vec<u8>,
}

impl CsvCopy {
    async fn new(tx: &tokio_postgres::Transaction<'_>, stmt: &str) -> Result<CsvCopy, StoreError> {
        Ok(CsvCopy { sink: Box::pin(tx.copy_in(stmt).await?), buf: Vec::with_capacity(COPY_CHUNK + 4096) })
    }

    async fn row(&mut self, fields: &[String]) -> Result<(), StoreError> {
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            if !f.is_empty() {
                self.buf.push(b'"');
                for b in f.bytes() {
                    if b == b'"' {
                        self.buf.push(b'"');
                    }
                    self.buf.push(b);
                }
                self.buf.push(b'"');
            }
        }
        self.buf.push(b'\n');
        if self.buf.len() >= COPY_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        use futures::SinkExt;
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(COPY_CHUNK + 4096));
        self.sink.send(std::io::Cursor::new(chunk)).await?;
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, StoreError> {
        if !self.buf.is_empty() {
            self.flush().await?;
        }
        Ok(self.sink.as_mut().finish().await?)
    }
}

fn opt_s(d: Option<Decimal>) -> Option<String> {
    d.map(|x| x.to_string())
}

/// Stores a run in one transaction and returns its identity.
pub async fn store_run(
    client: &mut Client,
    opts: &RunOptions,
    tariff_code: &str,
    buildings: &[BuildingResult],
) -> Result<RunMeta, StoreError> {
    let tx = client.transaction().await?;
    let meta = begin_run(&tx, opts, tariff_code).await?;
    store_rows(&tx, &meta, buildings).await?;
    tx.commit().await?;
    Ok(meta)
}

/// Locks the runs, numbers the new run `max(version) + 1` of its period and inserts it (inside `tx`).
pub async fn begin_run(
    tx: &tokio_postgres::Transaction<'_>,
    opts: &RunOptions,
    tariff_code: &str,
) -> Result<RunMeta, StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('billing_run'))", &[]).await?;
    let first = opts.month.period.first_day();
    let key = split_key_name(opts.rules.split);
    let row = tx
        .query_one(
            "INSERT INTO billing_runs (period, building_code, tariff_code, split_key, version, period_start, period_end)
             SELECT $1, $2, $3, $4, COALESCE(max(version), 0) + 1, $5, $6 FROM billing_runs WHERE period = $1
             RETURNING id, version, created_at",
            &[&first, &opts.building, &tariff_code, &key, &opts.month.start, &opts.month.end],
        )
        .await?;
    let meta = RunMeta {
        run_id: row.get(0),
        version: row.get(1),
        period: opts.month.label(),
        period_start: opts.month.start,
        period_end: opts.month.end,
        building: opts.building.clone(),
        tariff_code: tariff_code.to_string(),
        split_key: key,
        created_at: row.get(2),
    };
    Ok(meta)
}

/// Bills, lines and problems of a run, by COPY (inside `tx`).
pub async fn store_rows(
    tx: &tokio_postgres::Transaction<'_>,
    meta: &RunMeta,
    buildings: &[BuildingResult],
) -> Result<(), StoreError> {
    // Bill ids reserved from the identity sequence, so that bills and lines go in by COPY (COPY writes the
    // given identity values, like OVERRIDING SYSTEM VALUE).
    let bills: Vec<&HouseholdBill> = buildings.iter().flat_map(|b| b.bills.iter()).collect();
    let n = i32::try_from(bills.len()).map_err(|_| StoreError::Stored("too many bills".into()))?;
    let ids: Vec<i64> = tx
        .query("SELECT nextval(pg_get_serial_sequence('bills', 'id')) FROM generate_series(1, $1::int)", &[&n])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let run_id = meta.run_id.to_string();
    let mut w = CsvCopy::new(
        tx,
        "COPY bills (id, run_id, household_id, building_id, vt_kwh, nt_kwh, total_kwh, common_kwh, total,
                     estimated_share, estimated, old_split_total, difference, difference_percent)
         FROM STDIN (FORMAT csv)",
    )
    .await?;
    for (b, id) in bills.iter().zip(&ids) {
        w.row(&[
            id.to_string(),
            run_id.clone(),
            b.household_id.to_string(),
            b.building_id.to_string(),
            b.vt_kwh.to_string(),
            b.nt_kwh.to_string(),
            b.total_kwh.to_string(),
            opt_s(b.common_kwh).unwrap_or_default(),
            b.total.to_string(),
            b.estimated_share.to_string(),
            b.estimated.to_string(),
            opt_s(b.old_split_total).unwrap_or_default(),
            opt_s(b.difference).unwrap_or_default(),
            opt_s(b.difference_percent).unwrap_or_default(),
        ])
        .await?;
    }
    w.finish().await?;
    let mut w = CsvCopy::new(
        tx,
        "COPY bill_lines (bill_id, line_no, tariff_code, kind, zone, tou, quantity, unit, unit_price, amount)
         FROM STDIN (FORMAT csv)",
    )
    .await?;
    for (b, id) in bills.iter().zip(&ids) {
        let id = id.to_string();
        for l in &b.lines {
            w.row(&[
                id.clone(),
                l.line_no.to_string(),
                l.tariff_code.clone(),
                l.kind.to_string(),
                l.zone.clone().unwrap_or_default(),
                l.tou.unwrap_or_default().to_string(),
                l.quantity.to_string(),
                l.unit.to_string(),
                l.unit_price.to_string(),
                l.amount.to_string(),
            ])
            .await?;
        }
    }
    w.finish().await?;
    let problems: Vec<&Problem> = buildings.iter().flat_map(|b| b.problems.iter()).collect();
    if !problems.is_empty() {
        let mut w = CsvCopy::new(
            tx,
            "COPY billing_problems (run_id, building_id, household_id, meter_id, kind, detail) FROM STDIN (FORMAT csv)",
        )
        .await?;
        for p in problems {
            w.row(&[
                run_id.clone(),
                p.building_id.to_string(),
                p.household_id.map(|x| x.to_string()).unwrap_or_default(),
                p.meter_id.map(|x| x.to_string()).unwrap_or_default(),
                p.kind.to_string(),
                p.detail.clone(),
            ])
            .await?;
        }
        w.finish().await?;
    }
    Ok(())
}

/// The address of each building code among `codes`.
pub async fn load_addresses(
    client: &(impl tokio_postgres::GenericClient + Sync),
    codes: &[&str],
) -> Result<HashMap<String, String>, StoreError> {
    let codes: Vec<&str> = codes.to_vec();
    let rows = client.query("SELECT code, address FROM buildings WHERE code = ANY($1)", &[&codes]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The `&'static` name among `known` equal to `s` (stored text columns back into the run's types).
fn known(s: &str, what: &str, names: &[&'static str]) -> Result<&'static str, StoreError> {
    names.iter().copied().find(|n| *n == s).ok_or_else(|| StoreError::Stored(format!("unknown {what} {s:?}")))
}

const UNITS: [&str; 4] = ["kwh", "kw_month", "month", "rsd"];
const PROBLEM_KINDS: [&str; 20] = [
    "missing_boundary_reading",
    "register_decreased",
    "no_meter",
    "several_meters",
    "unknown_tariff",
    "bill_error",
    "no_master",
    "several_masters",
    "not_reconciled",
    "negative_common",
    "allocation_error",
    "old_split_error",
    "estimated_reading",
    "sum_mismatch",
    "spike_power",
    "missing_removal_reading",
    "correction",
    "correction_not_billed",
    "correction_not_computed",
    "negative_common_interval",
];

fn sdec(s: &str, what: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(s).map_err(|e| StoreError::Stored(format!("{what} {s:?}: {e}")))
}

fn osdec(s: Option<String>, what: &str) -> Result<Option<Decimal>, StoreError> {
    s.map(|s| sdec(&s, what)).transpose()
}

/// Reads a stored run of `month`: `version`, or the latest one. Bills, lines and problems are as stored; the
/// building summaries are rebuilt from them ([`rebuild_summary`]).
pub async fn load_run(client: &Client, month: &BillingMonth, version: Option<i32>) -> Result<StoredRun, StoreError> {
    let first = month.period.first_day();
    let last = month.period.last_day();
    let no_run = || StoreError::NoRun { period: month.label(), version };
    let row = client
        .query_opt(
            "SELECT id, version, period_start, period_end, building_code, tariff_code, split_key, created_at
             FROM billing_runs WHERE period = $1 AND ($2::int4 IS NULL OR version = $2)
             ORDER BY version DESC LIMIT 1",
            &[&first, &version],
        )
        .await?
        .ok_or_else(no_run)?;
    let split_name: String = row.get(6);
    let split = split_key_name(parse_split_key(&split_name)?);
    let meta = RunMeta {
        run_id: row.get(0),
        version: row.get(1),
        period: month.label(),
        period_start: row.get(2),
        period_end: row.get(3),
        building: row.get(4),
        tariff_code: row.get(5),
        split_key: split,
        created_at: row.get(7),
    };
    let run_id = meta.run_id;

    // Lines per bill id.
    let mut lines: HashMap<i64, Vec<LineOut>> = HashMap::new();
    for r in client
        .query(
            "SELECT l.bill_id, l.line_no, l.tariff_code, l.kind, l.zone, l.tou, l.quantity::text, l.unit,
                    l.unit_price::text, l.amount::text
             FROM bill_lines l JOIN bills b ON b.id = l.bill_id WHERE b.run_id = $1 ORDER BY l.bill_id, l.line_no",
            &[&run_id],
        )
        .await?
    {
        let tou: Option<String> = r.get(5);
        lines.entry(r.get(0)).or_default().push(LineOut {
            line_no: r.get(1),
            tariff_code: r.get(2),
            kind: known(r.get(3), "line kind", &LINE_KINDS)?,
            zone: r.get(4),
            tou: tou.map(|t| known(&t, "time of use", &["vt", "nt"])).transpose()?,
            quantity: sdec(r.get(6), "quantity")?,
            unit: known(r.get(7), "unit", &UNITS)?,
            unit_price: sdec(r.get(8), "unit price")?,
            amount: sdec(r.get(9), "amount")?,
            detail: None,
        });
    }

    // Buildings of the run (with bills or problems), in id order.
    let mut buildings: Vec<BuildingResult> = Vec::new();
    let mut members: Vec<Vec<Member>> = Vec::new();
    let mut index: HashMap<i32, usize> = HashMap::new();
    for r in client
        .query(
            "SELECT bl.id, bl.code, bl.region, (SELECT count(*) FROM households h WHERE h.building_id = bl.id)
             FROM buildings bl
             WHERE bl.id IN (SELECT building_id FROM bills WHERE run_id = $1
                             UNION SELECT building_id FROM billing_problems WHERE run_id = $1)
             ORDER BY bl.id",
            &[&run_id],
        )
        .await?
    {
        let households: i64 = r.get(3);
        index.insert(r.get(0), buildings.len());
        members.push(Vec::new());
        buildings.push(BuildingResult {
            summary: BuildingSummary {
                building_id: r.get(0),
                building_code: r.get(1),
                region: region(r.get(2))?,
                split_key: split,
                households: usize::try_from(households).unwrap_or(0),
                bills: 0,
                estimated_bills: 0,
                master_kwh: None,
                master_estimated_share: None,
                apartments_kwh: Decimal::ZERO,
                common_kwh: None,
                common_percent: None,
                metered_total: Decimal::ZERO,
                one_over_n_total: None,
                min_bill: None,
                median_bill: None,
                max_bill: None,
                pay_more: 0,
                pay_less: 0,
                pay_same: 0,
                problems: 0,
                split_keys: Vec::new(),
                negative_common_intervals: 0,
                interval_hours_checked: None,
            },
            bills: Vec::new(),
            problems: Vec::new(),
        });
    }

    for r in client
        .query(
            "SELECT b.id, b.household_id, h.code, h.apartment, b.building_id, bl.code,
                    COALESCE((SELECT string_agg(m.serial, ', ' ORDER BY m.id) FROM meters m
                              WHERE m.household_id = b.household_id AND m.kind = 'household'
                                AND m.installed_on <= $2 AND (m.removed_on IS NULL OR m.removed_on >= $3)), ''),
                    b.vt_kwh::text, b.nt_kwh::text, b.total_kwh::text, b.common_kwh::text, b.estimated_share::text,
                    b.estimated, b.total::text, b.old_split_total::text, b.difference::text,
                    b.difference_percent::text, h.floor_area_m2::text, h.residents
             FROM bills b JOIN households h ON h.id = b.household_id JOIN buildings bl ON bl.id = b.building_id
             WHERE b.run_id = $1 ORDER BY b.building_id, b.household_id",
            &[&run_id, &last, &first],
        )
        .await?
    {
        let Some(&bi) = index.get(&r.get::<_, i32>(4)) else { continue };
        let (Some(b), Some(m)) = (buildings.get_mut(bi), members.get_mut(bi)) else { continue };
        let residents: i16 = r.get(18);
        m.push(Member {
            floor_area_m2: sdec(r.get(17), "floor area")?,
            residents: u32::try_from(residents).unwrap_or(0),
        });
        let difference_percent = osdec(r.get(16), "difference percent")?;
        b.bills.push(HouseholdBill {
            household_id: r.get(1),
            household_code: r.get(2),
            apartment: r.get(3),
            building_id: r.get(4),
            building_code: r.get(5),
            meter_serial: r.get(6),
            vt_kwh: sdec(r.get(7), "vt kWh")?,
            nt_kwh: sdec(r.get(8), "nt kWh")?,
            total_kwh: sdec(r.get(9), "total kWh")?,
            common_kwh: osdec(r.get(10), "common kWh")?,
            estimated_share: sdec(r.get(11), "estimated share")?,
            estimated: r.get(12),
            total: sdec(r.get(13), "total")?,
            old_split_total: osdec(r.get(14), "old split total")?,
            difference: osdec(r.get(15), "difference")?,
            difference_percent,
            lines: lines.remove(&r.get::<_, i64>(0)).unwrap_or_default(),
        });
    }

    for r in client
        .query(
            "SELECT p.building_id, p.household_id, h.code, p.meter_id, p.kind, p.detail
             FROM billing_problems p LEFT JOIN households h ON h.id = p.household_id
             WHERE p.run_id = $1 ORDER BY p.building_id, p.household_id NULLS LAST, p.kind",
            &[&run_id],
        )
        .await?
    {
        let Some(building_id) = r.get::<_, Option<i32>>(0) else { continue };
        let Some(b) = index.get(&building_id).and_then(|&bi| buildings.get_mut(bi)) else { continue };
        b.problems.push(Problem {
            building_id,
            building_code: b.summary.building_code.clone(),
            household_id: r.get(1),
            household_code: r.get(2),
            meter_id: r.get(3),
            kind: known(r.get(4), "problem kind", &PROBLEM_KINDS)?,
            detail: r.get(5),
        });
    }
    // A correction line's reference is the detail of its household's `correction` problem.
    for b in &mut buildings {
        for bill in &mut b.bills {
            let detail = b
                .problems
                .iter()
                .find(|p| p.kind == "correction" && p.household_id == Some(bill.household_id))
                .map(|p| p.detail.clone());
            for l in bill.lines.iter_mut().filter(|l| l.kind == "correction") {
                l.detail.clone_from(&detail);
            }
        }
    }
    for (b, m) in buildings.iter_mut().zip(&members) {
        rebuild_summary(b, m);
    }
    Ok(StoredRun { meta, buildings })
}
