//! Two steps of a run that need the database beyond the month's boundary readings:
//!
//! - [`apply_corrections`] — **estimates replaced by actual data are corrected on the next bill**
//!   (BILLING.md, VEE). For every household of the run whose bill in the latest run of the previous month used
//!   estimates (`estimated_share > 0`), that month is recomputed for the household with the readings stored
//!   now; when the recomputed total or kWh differ from what was billed, the household's bill of this month
//!   gets a `correction` line (kWh difference, amount = recomputed total − billed total, RSD to the para, may be
//!   negative), included in its total, and a `correction` problem row naming the corrected period, run, version
//!   and bill. Only the previous month is looked at, and only its latest bill of the household, so a
//!   correction is applied once: re-running this month gives the same line again (a new version of the same
//!   month), and the next month corrects this month, never the one before.
//! - [`interval_reconciliation`] — **per hour: master − Σ apartments = common areas + losses**; an hour in
//!   which Σ apartments exceed the master by more than [`Rules::interval_tolerance_wh`] is a
//!   `negative_common_interval` problem for the operator. The hourly energy comes from the rollup
//!   `readings_hourly` (1.0.1.8.0, channel 1): the energy of hour `h` of a meter is
//!   `first_value(h + 1 h) − first_value(h)` when both hours start with a reading at the full hour
//!   (`first_ts = hour`), i.e. the register at the hour's start and end. The query sums the registers per
//!   building, hour and side (master / flats) first, so the energy is the difference of two sums and the
//!   window runs over building-hours, not meter-hours. An hour is checked for a building when its master and
//!   as many household meters as the building has households have a full-hour register at both ends of the
//!   hour (the same meters: their id sum is compared too).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Europe::Belgrade;
use rust_decimal::Decimal;
use tokio_postgres::Client;

use billing_core::money::wh_to_kwh;
use billing_core::run::{
    compute_building, refresh_totals, BillingMonth, BuildingIn, BuildingResult, LineOut, Problem, Rules, RunError,
    CH_TOTAL,
};
use billing_core::tariff::TariffSet;

use crate::db::{load_inventory_of, load_reads};
use crate::model::{RunOptions, StoreError};

/// The month before `m`.
pub fn previous_month(m: &BillingMonth) -> Result<BillingMonth, RunError> {
    let first = m.period.first_day();
    let (y, mo) = if first.month() == 1 { (first.year() - 1, 12) } else { (first.year(), first.month() - 1) };
    BillingMonth::new(y, mo)
}

fn dec(s: &str, what: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(s).map_err(|e| StoreError::Stored(format!("{what} {s:?}: {e}")))
}

/// A household's bill in the latest run of the previous month that used estimates.
struct Earlier {
    household_id: i32,
    bill_id: i64,
    run_id: i64,
    version: i32,
    total_kwh: Decimal,
    /// The bill's total without its own correction lines (what that month's consumption was billed).
    total: Decimal,
    estimated_share: Decimal,
}

fn problem(
    b: &BuildingResult,
    household: Option<(i32, &str)>,
    meter_id: Option<i32>,
    kind: &'static str,
    detail: String,
) -> Problem {
    Problem {
        building_id: b.summary.building_id,
        building_code: b.summary.building_code.clone(),
        household_id: household.map(|h| h.0),
        household_code: household.map(|h| h.1.to_string()),
        meter_id,
        kind,
        detail,
    }
}

/// Adds the corrections of the previous month to `results` (the run's buildings, computed from `buildings`).
pub async fn apply_corrections(
    client: &Client,
    opts: &RunOptions,
    tariffs: &TariffSet,
    buildings: &[BuildingIn],
    results: &mut [BuildingResult],
) -> Result<(), StoreError> {
    let prev = previous_month(&opts.month)?;
    let first = prev.period.first_day();
    let any: bool =
        client.query_one("SELECT EXISTS (SELECT 1 FROM billing_runs WHERE period = $1)", &[&first]).await?.get(0);
    if !any {
        return Ok(());
    }
    // Household → (building index, household code).
    let mut household: HashMap<i32, (usize, &str)> = HashMap::new();
    for (bi, b) in buildings.iter().enumerate() {
        for h in &b.households {
            household.insert(h.id, (bi, h.code.as_str()));
        }
    }
    let ids: Vec<i32> = household.keys().copied().collect();
    let rows = client
        .query(
            "SELECT x.household_id, x.bill_id, x.run_id, x.version, x.total_kwh::text,
                    (x.total - COALESCE((SELECT sum(l.amount) FROM bill_lines l
                                         WHERE l.bill_id = x.bill_id AND l.kind = 'correction'), 0))::text,
                    x.estimated_share::text
             FROM (SELECT DISTINCT ON (b.household_id) b.household_id, b.id AS bill_id, r.id AS run_id, r.version,
                          b.total_kwh, b.total, b.estimated_share
                   FROM billing_runs r JOIN bills b ON b.run_id = r.id
                   WHERE r.period = $1 AND b.household_id = ANY($2)
                   ORDER BY b.household_id, r.version DESC) x
             WHERE x.estimated_share > 0
             ORDER BY x.household_id",
            &[&first, &ids],
        )
        .await?;
    let mut earlier = Vec::with_capacity(rows.len());
    for r in rows {
        earlier.push(Earlier {
            household_id: r.get(0),
            bill_id: r.get(1),
            run_id: r.get(2),
            version: r.get(3),
            total_kwh: dec(r.get(4), "total kWh")?,
            total: dec(r.get(5), "total")?,
            estimated_share: dec(r.get(6), "estimated share")?,
        });
    }
    if earlier.is_empty() {
        return Ok(());
    }

    // The previous month, recomputed with the data stored now, for the buildings concerned.
    let mut building_ids: Vec<i32> = earlier
        .iter()
        .filter_map(|e| household.get(&e.household_id).and_then(|(bi, _)| buildings.get(*bi)).map(|b| b.id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    building_ids.sort_unstable();
    let mut inventory = load_inventory_of(client, &prev, None, Some(&building_ids)).await?;
    // Only the households to recompute and their meters: their bills do not depend on the master or the
    // other flats (the building-level results of this recomputation are not used).
    let wanted: HashSet<i32> = earlier.iter().map(|e| e.household_id).collect();
    for b in &mut inventory {
        b.masters.clear();
        b.households.retain(|h| wanted.contains(&h.id));
    }
    let reads = load_reads(client, &prev, &inventory, &opts.rules.vee).await?;
    let mut recomputed = HashMap::new();
    let mut failed: HashMap<i32, Vec<String>> = HashMap::new();
    for b in &inventory {
        let r = compute_building(b, &reads, &prev, tariffs, &opts.rules);
        for p in r.problems {
            if let Some(h) = p.household_id {
                if p.kind != "estimated_reading" && p.kind != "sum_mismatch" {
                    failed.entry(h).or_default().push(format!("{}: {}", p.kind, p.detail));
                }
            }
        }
        for bill in r.bills {
            recomputed.insert(bill.household_id, bill);
        }
    }

    let label = prev.label();
    let mut touched = HashSet::new();
    for e in &earlier {
        let Some(&(bi, code)) = household.get(&e.household_id) else { continue };
        let Some(result) = results.get_mut(bi) else { continue };
        let reference = format!(
            "correction of {label}: bill {} of run {} (version {}) billed {} kWh, {} RSD with estimates (estimated \
             share {})",
            e.bill_id, e.run_id, e.version, e.total_kwh, e.total, e.estimated_share
        );
        let Some(now) = recomputed.get(&e.household_id) else {
            let why = failed.get(&e.household_id).map(|v| v.join("; ")).unwrap_or_else(|| "not billed".into());
            let p = problem(
                result,
                Some((e.household_id, code)),
                None,
                "correction_not_computed",
                format!("{reference}; cannot be recomputed now ({why}): no correction"),
            );
            result.problems.push(p);
            touched.insert(bi);
            continue;
        };
        let (kwh, amount) = (now.total_kwh - e.total_kwh, now.total - e.total);
        if kwh.is_zero() && amount.is_zero() {
            continue;
        }
        let still = if now.estimated_share > Decimal::ZERO {
            format!(", still estimated (share {})", now.estimated_share)
        } else {
            String::new()
        };
        let detail = format!(
            "{reference}; recomputed with the readings stored now: {} kWh, {} RSD{still}; difference {kwh} kWh, \
             {amount} RSD",
            now.total_kwh, now.total
        );
        let tariff_code = now.lines.first().map(|l| l.tariff_code.clone()).unwrap_or_default();
        match result.bills.iter_mut().find(|b| b.household_id == e.household_id) {
            Some(bill) => {
                let line_no = bill.lines.iter().map(|l| l.line_no).max().unwrap_or(0).saturating_add(1);
                bill.lines.push(LineOut {
                    line_no,
                    tariff_code,
                    kind: "correction",
                    zone: None,
                    tou: None,
                    quantity: kwh,
                    unit: "kwh",
                    // Not a price: the amount is the difference of two bill totals.
                    unit_price: Decimal::ZERO,
                    amount,
                    detail: Some(detail.clone()),
                });
                bill.total += amount;
                let p = problem(result, Some((e.household_id, code)), None, "correction", detail);
                result.problems.push(p);
            }
            None => {
                let p = problem(
                    result,
                    Some((e.household_id, code)),
                    None,
                    "correction_not_billed",
                    format!("{detail}; no bill this month to carry it: to be settled by the operator"),
                );
                result.problems.push(p);
            }
        }
        touched.insert(bi);
    }
    for bi in touched {
        if let Some(r) = results.get_mut(bi) {
            refresh_totals(r);
        }
    }
    Ok(())
}

/// The per-hour reconciliation of every building of the run with one master and at least one household:
/// adds a `negative_common_interval` problem per hour in which Σ apartments exceed the master by more than the
/// tolerance, and sets the summary's counts. One SQL aggregate over `readings_hourly` for all buildings; nothing
/// when the rollup holds no hour of the month.
pub async fn interval_reconciliation(
    client: &Client,
    month: &BillingMonth,
    buildings: &[BuildingIn],
    rules: &Rules,
    results: &mut [BuildingResult],
) -> Result<(), StoreError> {
    if !rules.interval_check {
        return Ok(());
    }
    let has_rollup: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM readings_hourly WHERE hour >= $1 AND hour <= $2 AND channel_id = $3)",
            &[&month.start, &month.end, &CH_TOTAL],
        )
        .await?
        .get(0);
    let (mut meters, mut owners, mut is_master) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bids, mut counts) = (Vec::new(), Vec::new());
    let mut index = HashMap::new();
    for (bi, b) in buildings.iter().enumerate() {
        let [master] = b.masters.as_slice() else { continue };
        if b.households.is_empty() {
            continue;
        }
        index.insert(b.id, (bi, master.id));
        bids.push(b.id);
        counts.push(i64::try_from(b.households.len()).unwrap_or(i64::MAX));
        for m in std::iter::once(master).chain(b.households.iter().flat_map(|h| h.meters.iter())) {
            meters.push(m.id);
            owners.push(b.id);
            is_master.push(m.id == master.id);
        }
    }
    if !has_rollup || bids.is_empty() {
        for &(bi, _) in index.values() {
            if let Some(r) = results.get_mut(bi) {
                r.summary.interval_hours_checked = Some(0);
            }
        }
        return Ok(());
    }
    // Rows with a NULL hour: hours checked per building; the others: the hours over the tolerance.
    // The meter list comes from `unnest` (estimated at 100 rows), so the planner would probe the rollup meter by
    // meter (nested loop, ≈ 3× slower measured on 3.1 M rollup rows); a hash join over a (parallel) scan of
    // the month is the plan wanted. Session setting, reset right after.
    client.batch_execute("SET enable_nestloop = off").await?;
    let rows = client
        .query(
            "WITH m AS (SELECT * FROM unnest($1::int4[], $2::int4[], $3::bool[]) AS m(meter_id, building_id, is_master)),
             n AS (SELECT * FROM unnest($4::int4[], $5::int8[]) AS n(building_id, households)),
             s AS (
                 SELECT m.building_id, h.hour,
                        sum(h.first_value) FILTER (WHERE m.is_master) AS master_reg,
                        count(*) FILTER (WHERE m.is_master) AS masters,
                        sum(h.first_value) FILTER (WHERE NOT m.is_master) AS flats_reg,
                        count(*) FILTER (WHERE NOT m.is_master) AS flats,
                        sum(m.meter_id::int8) FILTER (WHERE NOT m.is_master) AS flat_ids
                 FROM m JOIN readings_hourly h ON h.meter_id = m.meter_id
                 WHERE h.channel_id = $6 AND h.hour >= $7 AND h.hour <= $8 AND h.first_ts = h.hour
                 GROUP BY m.building_id, h.hour
             ),
             c AS (
                 SELECT s.building_id, s.hour, s.masters, s.flats, s.flat_ids, n.households,
                        lead(s.hour) OVER w AS next_hour,
                        lead(s.masters) OVER w AS next_masters,
                        lead(s.flats) OVER w AS next_flats,
                        lead(s.flat_ids) OVER w AS next_flat_ids,
                        (lead(s.master_reg) OVER w - s.master_reg)::int8 AS master_wh,
                        (lead(s.flats_reg) OVER w - s.flats_reg)::int8 AS flats_wh
                 FROM s JOIN n USING (building_id)
                 WINDOW w AS (PARTITION BY s.building_id ORDER BY s.hour)
             ),
             k AS (
                 SELECT building_id, hour, master_wh, flats_wh FROM c
                 WHERE next_hour = hour + interval '1 hour' AND hour < $8
                   AND masters = 1 AND next_masters = 1 AND flats = households AND next_flats = households
                   AND flat_ids = next_flat_ids
             )
             SELECT building_id, NULL::timestamptz, count(*)::int8, NULL::int8 FROM k GROUP BY building_id
             UNION ALL
             SELECT building_id, hour, master_wh, flats_wh FROM k WHERE flats_wh - master_wh > $9::int8
             ORDER BY 1, 2 NULLS FIRST",
            &[&meters, &owners, &is_master, &bids, &counts, &CH_TOTAL, &month.start, &month.end, &rules.interval_tolerance_wh],
        )
        .await;
    client.batch_execute("RESET enable_nestloop").await?;
    let rows = rows?;
    for &(bi, _) in index.values() {
        if let Some(r) = results.get_mut(bi) {
            r.summary.interval_hours_checked = Some(0);
        }
    }
    for row in rows {
        let Some(&(bi, master)) = index.get(&row.get::<_, i32>(0)) else { continue };
        let Some(r) = results.get_mut(bi) else { continue };
        let hour: Option<DateTime<Utc>> = row.get(1);
        let Some(hour) = hour else {
            let n: i64 = row.get(2);
            r.summary.interval_hours_checked = Some(usize::try_from(n).unwrap_or(0));
            continue;
        };
        let (master_wh, flats_wh): (i64, i64) = (row.get(2), row.get::<_, Option<i64>>(3).unwrap_or(0));
        let excess = flats_wh.saturating_sub(master_wh);
        let local = hour.with_timezone(&Belgrade).format("%Y-%m-%d %H:%M %Z");
        let detail = format!(
            "hour {local} ({hour}): apartments {} kWh exceed the master {} kWh by {} kWh (tolerance {} Wh)",
            wh_to_kwh(flats_wh),
            wh_to_kwh(master_wh),
            wh_to_kwh(excess),
            rules.interval_tolerance_wh
        );
        let p = problem(r, None, Some(master), "negative_common_interval", detail);
        r.problems.push(p);
    }
    for &(bi, _) in index.values() {
        if let Some(r) = results.get_mut(bi) {
            refresh_totals(r);
        }
    }
    Ok(())
}
