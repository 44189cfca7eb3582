//! The database side of a run: read the inventory and the boundary readings of the head-end's schema
//! (migrations 0001–0003), store the run (migration 0004: `billing_runs`, `bills`, `bill_lines`,
//! `billing_problems`).
//!
//! Boundary readings: one query per boundary for the readings at exactly the instant (`ts = boundary`, one
//! day partition), then, only for the (meter, channel) pairs still missing, the nearest reading within 24 h
//! before and after by primary-key look-ups (`LATERAL … ORDER BY ts LIMIT 1`).
//!
//! Versions: a run takes a transaction-level advisory lock, numbers itself `max(version) + 1` for its period
//! and writes everything in that one transaction, so a run is stored whole or not at all.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemas::inventory::Region;
use serde::Serialize;
use tokio_postgres::Client;

use crate::run::{
    compute_building, split_key_name, BillingMonth, BuildingIn, BuildingResult, HouseholdIn, MeterIn, MeterReads, Read,
    Rules, RunError, CH_NT, CH_TOTAL, CH_VT,
};
use crate::tariff::TariffSet;

/// What to bill.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub month: BillingMonth,
    pub building: Option<String>,
    pub rules: Rules,
}

/// The stored run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunMeta {
    pub run_id: i64,
    pub version: i32,
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub building: Option<String>,
    pub tariff_code: String,
    pub split_key: &'static str,
    pub created_at: DateTime<Utc>,
}

/// A stored run and its results.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub meta: RunMeta,
    pub buildings: Vec<BuildingResult>,
    pub timings: RunTimings,
}

/// Where a run spent its time.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunTimings {
    /// Inventory and boundary readings.
    pub load: std::time::Duration,
    /// Bills, reconciliation, allocation, 1/N.
    pub compute: std::time::Duration,
    /// The run, bills, lines and problems, committed.
    pub store: std::time::Duration,
}

fn dec(s: &str, what: &str) -> Result<Decimal, RunError> {
    Decimal::from_str(s).map_err(|e| RunError::Inventory(format!("{what} {s:?}: {e}")))
}

fn region(s: &str) -> Result<Region, RunError> {
    Region::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| RunError::Inventory(format!("region {s:?}")))
}

/// The buildings to bill with their households and meters in service during the month.
pub async fn load_inventory(
    client: &Client,
    month: &BillingMonth,
    building: Option<&str>,
) -> Result<Vec<BuildingIn>, RunError> {
    let rows = client
        .query("SELECT id, code, region FROM buildings WHERE ($1::text IS NULL OR code = $1) ORDER BY id", &[&building])
        .await?;
    if let (Some(code), true) = (building, rows.is_empty()) {
        return Err(RunError::UnknownBuilding(code.to_string()));
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
            residents: u32::try_from(residents).map_err(|_| RunError::Inventory(format!("{code}: residents")))?,
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
            "SELECT id, serial, kind, building_id, household_id FROM meters
             WHERE building_id = ANY($1) AND installed_on <= $2 AND (removed_on IS NULL OR removed_on >= $3)
             ORDER BY id",
            &[&ids, &last, &first],
        )
        .await?;
    for r in rows {
        let meter = MeterIn { id: r.get(0), serial: r.get(1) };
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

/// The readings of `meters` at `at`, or the nearest within 24 h, for channels 1–3.
async fn boundary_reads(
    client: &Client,
    meters: &[i32],
    at: DateTime<Utc>,
) -> Result<HashMap<i32, BTreeMap<i16, Read>>, RunError> {
    let channels: Vec<i16> = vec![CH_TOTAL, CH_VT, CH_NT];
    let mut out: HashMap<i32, BTreeMap<i16, Read>> = HashMap::new();
    let rows = client
        .query(
            "SELECT meter_id, channel_id, ts, value FROM readings
             WHERE ts = $1 AND channel_id = ANY($2) AND meter_id = ANY($3)",
            &[&at, &channels, &meters],
        )
        .await?;
    for r in rows {
        out.entry(r.get(0)).or_default().insert(r.get(1), Read { ts: r.get(2), wh: r.get(3) });
    }
    let (mut pm, mut pc): (Vec<i32>, Vec<i16>) = (Vec::new(), Vec::new());
    for m in meters {
        for c in &channels {
            if !out.get(m).is_some_and(|x| x.contains_key(c)) {
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
        let slot = out.entry(r.get(0)).or_default();
        let ch: i16 = r.get(1);
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

/// Boundary readings of every meter of `buildings`.
pub async fn load_reads(
    client: &Client,
    month: &BillingMonth,
    buildings: &[BuildingIn],
) -> Result<HashMap<i32, MeterReads>, RunError> {
    let meters: Vec<i32> = buildings
        .iter()
        .flat_map(|b| b.masters.iter().chain(b.households.iter().flat_map(|h| h.meters.iter())))
        .map(|m| m.id)
        .collect();
    let mut start = boundary_reads(client, &meters, month.start).await?;
    let mut end = boundary_reads(client, &meters, month.end).await?;
    Ok(meters
        .iter()
        .map(|m| {
            (*m, MeterReads { start: start.remove(m).unwrap_or_default(), end: end.remove(m).unwrap_or_default() })
        })
        .collect())
}

/// Bills per statement when storing.
const CHUNK: usize = 5_000;

fn opt_s(d: Option<Decimal>) -> Option<String> {
    d.map(|x| x.to_string())
}

/// Stores a run in one transaction and returns its identity.
pub async fn store_run(
    client: &mut Client,
    opts: &RunOptions,
    tariff_code: &str,
    buildings: &[BuildingResult],
) -> Result<RunMeta, RunError> {
    let tx = client.transaction().await?;
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
    let bills: Vec<&crate::run::HouseholdBill> = buildings.iter().flat_map(|b| b.bills.iter()).collect();
    for chunk in bills.chunks(CHUNK) {
        let h: Vec<i32> = chunk.iter().map(|b| b.household_id).collect();
        let bld: Vec<i32> = chunk.iter().map(|b| b.building_id).collect();
        let vt: Vec<String> = chunk.iter().map(|b| b.vt_kwh.to_string()).collect();
        let nt: Vec<String> = chunk.iter().map(|b| b.nt_kwh.to_string()).collect();
        let tk: Vec<String> = chunk.iter().map(|b| b.total_kwh.to_string()).collect();
        let ck: Vec<Option<String>> = chunk.iter().map(|b| opt_s(b.common_kwh)).collect();
        let t: Vec<String> = chunk.iter().map(|b| b.total.to_string()).collect();
        let es: Vec<String> = chunk.iter().map(|b| b.estimated_share.to_string()).collect();
        let e: Vec<bool> = chunk.iter().map(|b| b.estimated).collect();
        let o: Vec<Option<String>> = chunk.iter().map(|b| opt_s(b.old_split_total)).collect();
        let d: Vec<Option<String>> = chunk.iter().map(|b| opt_s(b.difference)).collect();
        let dp: Vec<Option<String>> = chunk.iter().map(|b| opt_s(b.difference_percent)).collect();
        let rows = tx
            .query(
                "INSERT INTO bills (run_id, household_id, building_id, vt_kwh, nt_kwh, total_kwh, common_kwh, total,
                                    estimated_share, estimated, old_split_total, difference, difference_percent)
                 SELECT $1, u.h, u.b, u.vt::numeric, u.nt::numeric, u.tk::numeric, u.ck::numeric, u.t::numeric,
                        u.es::numeric, u.e, u.o::numeric, u.d::numeric, u.dp::numeric
                 FROM unnest($2::int4[], $3::int4[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                             $9::text[], $10::bool[], $11::text[], $12::text[], $13::text[])
                      AS u(h, b, vt, nt, tk, ck, t, es, e, o, d, dp)
                 RETURNING id, household_id",
                &[&meta.run_id, &h, &bld, &vt, &nt, &tk, &ck, &t, &es, &e, &o, &d, &dp],
            )
            .await?;
        let ids: HashMap<i32, i64> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
        let (mut bid, mut no, mut tc, mut kind, mut zone, mut tou) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut q, mut unit, mut up, mut amt) = (vec![], vec![], vec![], vec![]);
        for b in chunk {
            let Some(&id) = ids.get(&b.household_id) else { continue };
            for l in &b.lines {
                bid.push(id);
                no.push(l.line_no);
                tc.push(l.tariff_code.clone());
                kind.push(l.kind);
                zone.push(l.zone.clone());
                tou.push(l.tou);
                q.push(l.quantity.to_string());
                unit.push(l.unit);
                up.push(l.unit_price.to_string());
                amt.push(l.amount.to_string());
            }
        }
        tx.execute(
            "INSERT INTO bill_lines (bill_id, line_no, tariff_code, kind, zone, tou, quantity, unit, unit_price, amount)
             SELECT u.b, u.n, u.tc, u.k, u.z, u.tou, u.q::numeric, u.u, u.up::numeric, u.a::numeric
             FROM unnest($1::int8[], $2::int2[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::text[]) AS u(b, n, tc, k, z, tou, q, u, up, a)",
            &[&bid, &no, &tc, &kind, &zone, &tou, &q, &unit, &up, &amt],
        )
        .await?;
    }
    let problems: Vec<&crate::run::Problem> = buildings.iter().flat_map(|b| b.problems.iter()).collect();
    if !problems.is_empty() {
        let b: Vec<i32> = problems.iter().map(|p| p.building_id).collect();
        let h: Vec<Option<i32>> = problems.iter().map(|p| p.household_id).collect();
        let m: Vec<Option<i32>> = problems.iter().map(|p| p.meter_id).collect();
        let k: Vec<&str> = problems.iter().map(|p| p.kind).collect();
        let d: Vec<&str> = problems.iter().map(|p| p.detail.as_str()).collect();
        tx.execute(
            "INSERT INTO billing_problems (run_id, building_id, household_id, meter_id, kind, detail)
             SELECT $1, u.b, u.h, u.m, u.k, u.d
             FROM unnest($2::int4[], $3::int4[], $4::int4[], $5::text[], $6::text[]) AS u(b, h, m, k, d)",
            &[&meta.run_id, &b, &h, &m, &k, &d],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(meta)
}

/// A whole run: read, compute every building, store. The caller writes the exports.
pub async fn run(client: &mut Client, opts: &RunOptions, tariffs: &TariffSet) -> Result<RunOutcome, RunError> {
    let t0 = std::time::Instant::now();
    let buildings = load_inventory(client, &opts.month, opts.building.as_deref()).await?;
    let reads = load_reads(client, &opts.month, &buildings).await?;
    let t1 = std::time::Instant::now();
    let results: Vec<BuildingResult> =
        buildings.iter().map(|b| compute_building(b, &reads, &opts.month, tariffs, &opts.rules)).collect();
    let t2 = std::time::Instant::now();
    let codes: Vec<&str> = tariffs.tariffs().iter().map(|t| t.code.as_str()).collect();
    let meta = store_run(client, opts, &codes.join("+"), &results).await?;
    let timings = RunTimings { load: t1 - t0, compute: t2 - t1, store: t2.elapsed() };
    Ok(RunOutcome { meta, buildings: results, timings })
}

/// The address of each building code among `codes`.
pub async fn load_addresses(client: &Client, codes: &[&str]) -> Result<HashMap<String, String>, RunError> {
    let codes: Vec<&str> = codes.to_vec();
    let rows = client.query("SELECT code, address FROM buildings WHERE code = ANY($1)", &[&codes]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A stored run read back from the database ([`load_run`]).
#[derive(Debug, Clone, Serialize)]
pub struct StoredRun {
    pub meta: RunMeta,
    pub buildings: Vec<BuildingResult>,
}

/// The `&'static` name among `known` equal to `s` (stored text columns back into the run's types).
fn known(s: &str, what: &str, names: &[&'static str]) -> Result<&'static str, RunError> {
    names.iter().copied().find(|n| *n == s).ok_or_else(|| RunError::Stored(format!("unknown {what} {s:?}")))
}

const LINE_KINDS: [&str; 9] = [
    "energy",
    "power_charge",
    "supplier_charge",
    "payment_discount",
    "renewable_fee",
    "efficiency_fee",
    "excise",
    "vat",
    "tv_fee",
];
const UNITS: [&str; 4] = ["kwh", "kw_month", "month", "rsd"];
const PROBLEM_KINDS: [&str; 12] = [
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
];

fn sdec(s: &str, what: &str) -> Result<Decimal, RunError> {
    Decimal::from_str(s).map_err(|e| RunError::Stored(format!("{what} {s:?}: {e}")))
}

fn osdec(s: Option<String>, what: &str) -> Result<Option<Decimal>, RunError> {
    s.map(|s| sdec(&s, what)).transpose()
}

/// Reads a stored run of `month`: `version`, or the latest one. Bills, lines and problems are as stored; the
/// building summaries are rebuilt from them ([`rebuild_summary`]).
pub async fn load_run(client: &Client, month: &BillingMonth, version: Option<i32>) -> Result<StoredRun, RunError> {
    let first = month.period.first_day();
    let last = month.period.last_day();
    let no_run = || RunError::NoRun { period: month.label(), version };
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
    let split = split_key_name(crate::run::parse_split_key(&split_name)?);
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
    let mut lines: HashMap<i64, Vec<crate::run::LineOut>> = HashMap::new();
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
        lines.entry(r.get(0)).or_default().push(crate::run::LineOut {
            line_no: r.get(1),
            tariff_code: r.get(2),
            kind: known(r.get(3), "line kind", &LINE_KINDS)?,
            zone: r.get(4),
            tou: tou.map(|t| known(&t, "time of use", &["vt", "nt"])).transpose()?,
            quantity: sdec(r.get(6), "quantity")?,
            unit: known(r.get(7), "unit", &UNITS)?,
            unit_price: sdec(r.get(8), "unit price")?,
            amount: sdec(r.get(9), "amount")?,
        });
    }

    // Buildings of the run (with bills or problems), in id order.
    let mut buildings: Vec<BuildingResult> = Vec::new();
    let mut members: Vec<Vec<crate::allocation::Member>> = Vec::new();
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
            summary: crate::run::BuildingSummary {
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
        m.push(crate::allocation::Member {
            floor_area_m2: sdec(r.get(17), "floor area")?,
            residents: u32::try_from(residents).unwrap_or(0),
        });
        let difference_percent = osdec(r.get(16), "difference percent")?;
        b.bills.push(crate::run::HouseholdBill {
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
        b.problems.push(crate::run::Problem {
            building_id,
            building_code: b.summary.building_code.clone(),
            household_id: r.get(1),
            household_code: r.get(2),
            meter_id: r.get(3),
            kind: known(r.get(4), "problem kind", &PROBLEM_KINDS)?,
            detail: r.get(5),
        });
    }
    for (b, m) in buildings.iter_mut().zip(&members) {
        rebuild_summary(b, m);
    }
    Ok(StoredRun { meta, buildings })
}

/// Rebuilds a building summary from its stored bills and problems (the run does not store summaries).
/// The master is `Σ apartments + common` when the building was reconciled (the stored common kWh are
/// `master − Σ apartments` exactly), else unknown; the master's own estimated share is not stored (`None`).
/// The split-key results are recomputed from the common kWh and the households' current floor area and
/// residents. `members` are the billed households in bill order.
pub fn rebuild_summary(b: &mut BuildingResult, members: &[crate::allocation::Member]) {
    use crate::allocation::{allocate_wh, SplitKey};
    let bills = &b.bills;
    let s = &mut b.summary;
    let mut totals: Vec<Decimal> = bills.iter().map(|x| x.total).collect();
    totals.sort();
    s.bills = bills.len();
    s.estimated_bills = bills.iter().filter(|x| x.estimated).count();
    s.apartments_kwh = bills.iter().map(|x| x.total_kwh).sum();
    let reconciled = !bills.is_empty() && bills.len() == s.households && bills.iter().all(|x| x.common_kwh.is_some());
    s.common_kwh = reconciled.then(|| bills.iter().filter_map(|x| x.common_kwh).sum());
    s.master_kwh = s.common_kwh.map(|c| c + s.apartments_kwh);
    s.master_estimated_share = None;
    s.common_percent = match (s.common_kwh, s.master_kwh) {
        (Some(c), Some(m)) if !m.is_zero() => Some(crate::money::round_para(c * Decimal::ONE_HUNDRED / m)),
        _ => None,
    };
    s.metered_total = totals.iter().sum();
    let with_old: Vec<&crate::run::HouseholdBill> = bills.iter().filter(|x| x.old_split_total.is_some()).collect();
    s.one_over_n_total = (!with_old.is_empty() && with_old.len() == bills.len())
        .then(|| with_old.iter().filter_map(|x| x.old_split_total).sum());
    s.min_bill = totals.first().copied();
    s.median_bill = crate::run::median(&totals);
    s.max_bill = totals.last().copied();
    s.pay_more = with_old.iter().filter(|x| x.difference.is_some_and(|d| d > Decimal::ZERO)).count();
    s.pay_less = with_old.iter().filter(|x| x.difference.is_some_and(|d| d < Decimal::ZERO)).count();
    s.pay_same = with_old.iter().filter(|x| x.difference.is_some_and(|d| d.is_zero())).count();
    s.problems = b.problems.len();
    s.split_keys.clear();
    let common_wh = s.common_kwh.map(|c| (c * Decimal::ONE_THOUSAND).trunc()).and_then(|w| {
        let t = w.normalize();
        i64::try_from(t.mantissa() / 10i128.pow(t.scale())).ok()
    });
    if let Some(common) = common_wh {
        for k in [SplitKey::Equal, SplitKey::FloorArea, SplitKey::Residents] {
            if let Ok(parts) = allocate_wh(common, k, members) {
                if let (Some(min), Some(max)) = (parts.iter().min(), parts.iter().max()) {
                    s.split_keys.push(crate::run::KeyResult {
                        key: split_key_name(k),
                        min_kwh: crate::money::wh_to_kwh(*min),
                        max_kwh: crate::money::wh_to_kwh(*max),
                    });
                }
            }
        }
    }
}
