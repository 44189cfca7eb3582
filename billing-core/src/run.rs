//! A billing run for one calendar month, computed from register readings at the period boundaries (pure; the
//! database side and the files are in the `billing` crate: `billing::db`, `billing::export`).
//!
//! # The period
//!
//! `--period YYYY-MM` is the calendar month in **Europe/Belgrade** local time: from local midnight of the 1st to
//! local midnight of the 1st of the next month, as UTC instants ([`BillingMonth`]). October 2026 is therefore
//! `2026-09-30T22:00Z .. 2026-10-31T23:00Z` (744 + 1 hours: the month holds the end of summer time).
//!
//! # Consumption from two readings per register
//!
//! A reading's `ts` is the **end** of its interval and energy registers are cumulative Wh, so the energy of the
//! period is `register(period end) − register(period start)` for VT (1.0.1.8.1, channel 2) and NT (1.0.1.8.2,
//! channel 3) of each household meter, and 1.0.1.8.0 (channel 1) of the master meter. That is 2 readings per
//! meter and register — two index look-ups instead of ~2,900 intervals — so **billing needs no raw-interval
//! scan and no ingest-time daily VT/NT rollup** (the rollup proposed in issue 4 for billing's speed is not
//! needed for monthly bills; interval-level VEE is [`crate::vee::vee_series`], not run over every meter). The meter
//! assigns energy to VT/NT itself, so the tariff's night windows are the meter's, not recomputed here.
//!
//! # VEE at the boundaries ([`crate::vee`])
//!
//! When no reading exists at exactly a boundary instant, the register there is **estimated** from the nearest
//! actual readings before and after it within [`MAX_BOUNDARY_DISTANCE`] (24 h): linear interpolation when they
//! are at most [`VeeConfig::max_interpolation_gap`] (3 h) apart, else the like-day profile (same weekday and
//! local time, 1–4 weeks earlier) shapes the known energy between them, or extrapolates from one side. With
//! neither (no like-day history), the nearest reading is used as is. The **estimated kWh** of a bill are the
//! Wh that depend on an estimate (e.g. from the last actual reading to the estimated end register); its
//! `estimated_share` = estimated / total kWh (6 decimals) and the bill is marked estimated above
//! [`Rules::estimated_threshold`] (default 0: any estimate marks it). Each estimate is listed as an
//! `estimated_reading` problem (method, readings used, estimated Wh). No reading within 24 h, or a register
//! that decreased: **no bill**, a [`Problem`] instead. Also checked: ΔVT + ΔNT against Δ1.0.1.8.0 when all are
//! actual (`sum_mismatch`, the bill stands) and consumption above approved kW × period hours (`spike_power`,
//! the bill is held).
//!
//! # Meter exchange
//!
//! A household whose meter was removed inside the month (`meters.removed_on`) and replaced (`installed_on`
//! on or after that day) is billed the sum of both deltas: old meter from the period start to its last reading
//! before local midnight after the removal day; new meter from its reading at local midnight of the
//! installation day (0 when none is stored: a new register) to the period end. Meters in service at the same
//! time otherwise are a `several_meters` problem.
//!
//! # The building
//!
//! `common + losses = master (1.0.1.8.0) − Σ apartments (VT + NT)` ([`crate::allocation::Reconciliation`]),
//! only when every household of the building was billed (otherwise the missing flat's consumption would be
//! counted as common) and the master has its boundary readings; a negative result is a problem for the
//! operator. The common kWh are split in whole Wh by the split key ([`SplitKey`], default floor area) with
//! [`crate::allocation::allocate_wh`], so the shares add up exactly.
//!
//! **Decision — the common-area share is stated, not charged**: each bill carries `common_kwh` (its share in
//! kWh, shown beside the lines in the exports) but the bill lines and total are the household's own metered
//! consumption, exactly [`compute_bill`] of its VT/NT deltas. Common areas are a separate supply (the building
//! assembly's account); charging them through household bills would need a pricing rule for that supply that
//! no source states.
//!
//! # After the computation (`billing::checks`, database)
//!
//! The run then adds the corrections of the previous month's estimated bills (a `correction` line on this
//! month's bill) and the per-hour reconciliation from `readings_hourly` (`negative_common_interval`
//! problems); [`refresh_totals`] brings the summaries up to date.
//!
//! The 1/N comparison ([`crate::old_split`]) divides the master's VT and NT deltas by N (households of the
//! building in the inventory) and bills that like the household. Note that the 1/N bill contains common areas
//! and losses while the metered bill does not (see the decision above).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Belgrade;
use rust_decimal::Decimal;
use schemas::inventory::Region;
use serde::Serialize;

use crate::allocation::{allocate_wh, Member, Reconciliation, SplitKey};
use crate::bill::{compute_bill, Bill, BillInput, Consumption, LineKind, Unit};
use crate::interval::TimeOfUse;
use crate::money::{round_para, wh_to_kwh};
use crate::old_split::{compare, one_over_n_bill};
use crate::period::Period;
use crate::tariff::TariffSet;
pub use crate::vee::Read;
use crate::vee::{Quality, VeeConfig};

/// Channel id of 1.0.1.8.0 (active energy import, total), Wh.
pub const CH_TOTAL: i16 = 1;
/// Channel id of 1.0.1.8.1 (VT), Wh.
pub const CH_VT: i16 = 2;
/// Channel id of 1.0.1.8.2 (NT), Wh.
pub const CH_NT: i16 = 3;
/// How far from a period boundary a reading may be to stand in for the boundary reading.
pub const MAX_BOUNDARY_DISTANCE: Duration = Duration::hours(24);

fn obis(ch: i16) -> &'static str {
    match ch {
        CH_TOTAL => "1.0.1.8.0",
        CH_VT => "1.0.1.8.1",
        CH_NT => "1.0.1.8.2",
        _ => "?",
    }
}

/// A run's parameters that could not be parsed (the database side has its own errors in the `billing` crate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("period {0:?}: expected YYYY-MM")]
    Period(String),
    #[error("split key {0:?}: expected equal, area or residents")]
    SplitKey(String),
}

/// A calendar month in Europe/Belgrade time and its UTC boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingMonth {
    pub period: Period,
    /// Local midnight of the 1st, in UTC.
    pub start: DateTime<Utc>,
    /// Local midnight of the 1st of the next month, in UTC.
    pub end: DateTime<Utc>,
}

fn local_midnight(day: NaiveDate) -> Option<DateTime<Utc>> {
    Belgrade.from_local_datetime(&day.and_hms_opt(0, 0, 0)?).earliest().map(|t| t.with_timezone(&Utc))
}

impl BillingMonth {
    pub fn new(year: i32, month: u32) -> Result<BillingMonth, RunError> {
        let bad = || RunError::Period(format!("{year}-{month:02}"));
        let period = Period::month(year, month).map_err(|_| bad())?;
        let next = period.last_day().succ_opt().ok_or_else(bad)?;
        let start = local_midnight(period.first_day()).ok_or_else(bad)?;
        let end = local_midnight(next).ok_or_else(bad)?;
        Ok(BillingMonth { period, start, end })
    }

    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Result<BillingMonth, RunError> {
        let bad = || RunError::Period(s.to_string());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (y, m) = (y.parse::<i32>().map_err(|_| bad())?, m.parse::<u32>().map_err(|_| bad())?);
        BillingMonth::new(y, m).map_err(|_| bad())
    }

    /// `YYYY-MM`.
    pub fn label(&self) -> String {
        self.period.first_day().format("%Y-%m").to_string()
    }

    /// Length in seconds (> 0).
    pub fn seconds(&self) -> i64 {
        (self.end - self.start).num_seconds().max(1)
    }
}

/// The configurable rules of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How common areas + losses are split over households.
    pub split: SplitKey,
    /// A bill is marked estimated when its estimated share is above this fraction (0 = any estimate).
    pub estimated_threshold: Decimal,
    /// VEE rules (interpolation limit, like-day weeks, spike and sum-check limits).
    pub vee: VeeConfig,
    /// Per-hour reconciliation: Σ apartments may exceed the master by this many Wh before the hour is a
    /// `negative_common_interval` problem (meter accuracy; default 100 Wh, a default to confirm).
    pub interval_tolerance_wh: i64,
    /// Run the per-hour reconciliation (`--interval-check`; off by default: it reads one rollup row per meter
    /// and hour of the month, minutes at 205k households).
    pub interval_check: bool,
}

/// Default of [`Rules::interval_tolerance_wh`].
pub const DEFAULT_INTERVAL_TOLERANCE_WH: i64 = 100;

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            split: SplitKey::FloorArea,
            estimated_threshold: Decimal::ZERO,
            vee: VeeConfig::default(),
            interval_tolerance_wh: DEFAULT_INTERVAL_TOLERANCE_WH,
            interval_check: false,
        }
    }
}

/// Recomputes the totals of a building summary from its bills after lines were added (corrections): metered
/// total, min/median/max bill, estimated bills and the problem count.
pub fn refresh_totals(r: &mut BuildingResult) {
    let mut totals: Vec<Decimal> = r.bills.iter().map(|b| b.total).collect();
    totals.sort();
    let s = &mut r.summary;
    s.metered_total = totals.iter().sum();
    s.min_bill = totals.first().copied();
    s.median_bill = median(&totals);
    s.max_bill = totals.last().copied();
    s.problems = r.problems.len();
    s.negative_common_intervals = r.problems.iter().filter(|p| p.kind == "negative_common_interval").count();
}

/// The smallest and largest household share of `common_wh` under every simple split key; a key that cannot
/// split (e.g. no residents recorded) is left out.
fn split_key_results(common_wh: i64, members: &[Member]) -> Vec<KeyResult> {
    [SplitKey::Equal, SplitKey::FloorArea, SplitKey::Residents]
        .into_iter()
        .filter_map(|k| {
            let parts = allocate_wh(common_wh, k, members).ok()?;
            Some(KeyResult {
                key: split_key_name(k),
                min_kwh: wh_to_kwh(*parts.iter().min()?),
                max_kwh: wh_to_kwh(*parts.iter().max()?),
            })
        })
        .collect()
}

/// Rebuilds a building summary from its stored bills and problems (a stored run does not store summaries).
/// The master is `Σ apartments + common` when the building was reconciled (the stored common kWh are
/// `master − Σ apartments` exactly), else unknown; the master's own estimated share is not stored (`None`).
/// The split-key results are recomputed from the common kWh and the households' current floor area and
/// residents. `members` are the billed households in bill order.
pub fn rebuild_summary(b: &mut BuildingResult, members: &[Member]) {
    let bills = &b.bills;
    let s = &mut b.summary;
    s.bills = bills.len();
    s.estimated_bills = bills.iter().filter(|x| x.estimated).count();
    s.apartments_kwh = bills.iter().map(|x| x.total_kwh).sum();
    let reconciled = !bills.is_empty() && bills.len() == s.households && bills.iter().all(|x| x.common_kwh.is_some());
    s.common_kwh = reconciled.then(|| bills.iter().filter_map(|x| x.common_kwh).sum());
    s.master_kwh = s.common_kwh.map(|c| c + s.apartments_kwh);
    s.master_estimated_share = None;
    s.common_percent = match (s.common_kwh, s.master_kwh) {
        (Some(c), Some(m)) if !m.is_zero() => Some(round_para(c * Decimal::ONE_HUNDRED / m)),
        _ => None,
    };
    let with_old: Vec<&HouseholdBill> = bills.iter().filter(|x| x.old_split_total.is_some()).collect();
    s.one_over_n_total = (!with_old.is_empty() && with_old.len() == bills.len())
        .then(|| with_old.iter().filter_map(|x| x.old_split_total).sum());
    s.pay_more = with_old.iter().filter(|x| x.difference.is_some_and(|d| d > Decimal::ZERO)).count();
    s.pay_less = with_old.iter().filter(|x| x.difference.is_some_and(|d| d < Decimal::ZERO)).count();
    s.pay_same = with_old.iter().filter(|x| x.difference.is_some_and(|d| d.is_zero())).count();
    s.interval_hours_checked = None;
    let common_wh = s.common_kwh.map(|c| (c * Decimal::ONE_THOUSAND).trunc()).and_then(|w| {
        let t = w.normalize();
        i64::try_from(t.mantissa() / 10i128.pow(t.scale())).ok()
    });
    s.split_keys = common_wh.map(|common| split_key_results(common, members)).unwrap_or_default();
    // Metered total, min / median / max bill, problem counts.
    refresh_totals(b);
}

/// Parses a `--split` value.
pub fn parse_split_key(s: &str) -> Result<SplitKey, RunError> {
    match s {
        "equal" => Ok(SplitKey::Equal),
        "area" => Ok(SplitKey::FloorArea),
        "residents" => Ok(SplitKey::Residents),
        _ => Err(RunError::SplitKey(s.to_string())),
    }
}

/// The name of a simple split key as stored (`equal`, `area`, `residents`).
pub fn split_key_name(k: SplitKey) -> &'static str {
    match k {
        SplitKey::Equal => "equal",
        SplitKey::FloorArea => "area",
        SplitKey::Residents => "residents",
        SplitKey::Weighted { .. } => "weighted",
    }
}

/// The readings of one meter at (or nearest to) the start and end of its window in the period (the period, or
/// the part of it between the meter's installation and removal), per channel id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterReads {
    /// At the start instant, or the nearest within 24 h.
    pub start: BTreeMap<i16, Read>,
    /// At the end instant, or the nearest within 24 h; for a meter removed inside the period, its last reading.
    pub end: BTreeMap<i16, Read>,
    /// When no reading is at the start instant: the nearest actual readings `[before, after]` within 24 h.
    pub around_start: BTreeMap<i16, [Option<Read>; 2]>,
    /// When no reading is at the end instant: the nearest actual readings `[before, after]` within 24 h.
    pub around_end: BTreeMap<i16, [Option<Read>; 2]>,
    /// Actual readings of earlier weeks for like-day estimates, per channel: instant → Wh.
    pub history: BTreeMap<i16, BTreeMap<DateTime<Utc>, i64>>,
}

/// A meter of the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterIn {
    pub id: i32,
    pub serial: String,
    /// Installation day (`meters.installed_on`); `None` = before the period.
    pub installed_on: Option<NaiveDate>,
    /// Removal day, inclusive (`meters.removed_on`); `None` = still in service.
    pub removed_on: Option<NaiveDate>,
}

/// The part of a billing month a meter was in service: `[start, end]` as UTC instants, and whether it was
/// installed / removed inside the month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub installed_inside: bool,
    pub removed_inside: bool,
}

impl MeterIn {
    /// The meter's window in `month`: from local midnight of its installation day (if inside the month) to local
    /// midnight after its removal day (if inside the month).
    pub fn window(&self, month: &BillingMonth) -> MeterWindow {
        let inst = self.installed_on.and_then(local_midnight).filter(|t| *t > month.start);
        let rem = self.removed_on.and_then(|d| d.succ_opt()).and_then(local_midnight).filter(|t| *t < month.end);
        MeterWindow {
            start: inst.unwrap_or(month.start),
            end: rem.unwrap_or(month.end),
            installed_inside: inst.is_some(),
            removed_inside: rem.is_some(),
        }
    }
}

/// A household of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdIn {
    pub id: i32,
    pub code: String,
    pub apartment: String,
    pub floor_area_m2: Decimal,
    pub residents: u32,
    pub approved_power_kw: Decimal,
    pub tariff: String,
    /// Meters in service during the period.
    pub meters: Vec<MeterIn>,
}

/// A building of the inventory with its households and master meter(s) in service during the period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildingIn {
    pub id: i32,
    pub code: String,
    pub region: Region,
    pub masters: Vec<MeterIn>,
    pub households: Vec<HouseholdIn>,
}

/// A data-quality problem: something could not be billed or reconciled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub building_id: i32,
    pub building_code: String,
    pub household_id: Option<i32>,
    pub household_code: Option<String>,
    pub meter_id: Option<i32>,
    /// `missing_boundary_reading`, `register_decreased`, `no_meter`, `several_meters`, `unknown_tariff`,
    /// `bill_error`, `no_master`, `several_masters`, `not_reconciled`, `negative_common`, `allocation_error`,
    /// `old_split_error`; VEE: `estimated_reading` (a boundary register estimated: how and how much),
    /// `sum_mismatch` (ΔVT + ΔNT ≠ Δtotal), `spike_power` (more than the connection can deliver: held),
    /// `missing_removal_reading` (a meter removed inside the period without a reading); `billing::checks`:
    /// `correction` (a correction line of the previous month, its reference), `correction_not_billed`,
    /// `correction_not_computed`, `negative_common_interval` (an hour with the apartments above the master).
    pub kind: &'static str,
    pub detail: String,
}

/// One bill line as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineOut {
    pub line_no: i16,
    pub tariff_code: String,
    pub kind: &'static str,
    pub zone: Option<String>,
    pub tou: Option<&'static str>,
    pub quantity: Decimal,
    pub unit: &'static str,
    pub unit_price: Decimal,
    pub amount: Decimal,
    /// What a `correction` line corrects (period, earlier run and bill, billed vs recomputed); `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A household's bill in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HouseholdBill {
    pub household_id: i32,
    pub household_code: String,
    pub apartment: String,
    pub building_id: i32,
    pub building_code: String,
    pub meter_serial: String,
    pub vt_kwh: Decimal,
    pub nt_kwh: Decimal,
    pub total_kwh: Decimal,
    /// The household's share of common areas + losses, kWh (stated, not charged); `None` when the building
    /// could not be reconciled.
    pub common_kwh: Option<Decimal>,
    pub estimated_share: Decimal,
    pub estimated: bool,
    pub total: Decimal,
    pub old_split_total: Option<Decimal>,
    pub difference: Option<Decimal>,
    pub difference_percent: Option<Decimal>,
    pub lines: Vec<LineOut>,
}

/// The building summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildingSummary {
    pub building_id: i32,
    pub building_code: String,
    pub region: Region,
    pub split_key: &'static str,
    pub households: usize,
    pub bills: usize,
    pub estimated_bills: usize,
    pub master_kwh: Option<Decimal>,
    pub master_estimated_share: Option<Decimal>,
    pub apartments_kwh: Decimal,
    pub common_kwh: Option<Decimal>,
    pub common_percent: Option<Decimal>,
    /// Σ metered bill totals.
    pub metered_total: Decimal,
    /// Σ 1/N bill totals (over the billed households); `None` without the master's VT/NT.
    pub one_over_n_total: Option<Decimal>,
    pub min_bill: Option<Decimal>,
    pub median_bill: Option<Decimal>,
    pub max_bill: Option<Decimal>,
    /// Households whose metered bill is above / below / equal to their 1/N bill.
    pub pay_more: usize,
    pub pay_less: usize,
    pub pay_same: usize,
    pub problems: usize,
    /// The household shares of common + losses under every simple split key (empty when not reconciled).
    pub split_keys: Vec<KeyResult>,
    /// Hours in which Σ apartments exceeded the master by more than the tolerance (`negative_common_interval`
    /// problems, `billing::checks::interval_reconciliation`).
    pub negative_common_intervals: usize,
    /// Hours the per-interval reconciliation could check (master and every flat with both hour boundaries in
    /// `readings_hourly`); `None` when not known (a run read back from the database).
    pub interval_hours_checked: Option<usize>,
}

/// The common-area split under one key: the smallest and largest household share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyResult {
    pub key: &'static str,
    pub min_kwh: Decimal,
    pub max_kwh: Decimal,
}

/// Everything a run produced for one building.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildingResult {
    pub summary: BuildingSummary,
    pub bills: Vec<HouseholdBill>,
    pub problems: Vec<Problem>,
}

/// A register's delta over a meter's window and how much of it depends on estimates.
#[derive(Debug, Clone, Copy)]
struct RegDelta {
    wh: i64,
    /// Wh of the delta that depend on an estimated boundary value (VEE).
    estimated_wh: i64,
    /// How each boundary was obtained (start, end).
    quality: [Quality; 2],
}

/// A boundary register value, how it was obtained, and the Wh that depend on the estimate.
struct Boundary {
    wh: i64,
    quality: Quality,
    estimated_wh: i64,
    note: Option<String>,
}

/// The register at `at` for channel `ch`: the actual reading at the instant, else the VEE estimate from the
/// readings around it and like days ([`crate::vee::estimate_boundary`]); `is_start` tells which side of the
/// instant is inside the window. Falls back to the nearest reading within 24 h as is, counted as estimated
/// in proportion to its distance (the energy between it and the instant, at the window's mean rate).
fn boundary(reads: &MeterReads, ch: i16, at: DateTime<Utc>, is_start: bool, cfg: &VeeConfig) -> Option<Boundary> {
    let (map, around) = if is_start { (&reads.start, &reads.around_start) } else { (&reads.end, &reads.around_end) };
    let nearest = map.get(&ch).filter(|r| (r.ts - at).abs() <= MAX_BOUNDARY_DISTANCE);
    if let Some(r) = nearest.filter(|r| r.ts == at) {
        return Some(Boundary { wh: r.wh, quality: Quality::Actual, estimated_wh: 0, note: None });
    }
    let [mut before, mut after] = around.get(&ch).copied().unwrap_or([None, None]);
    if before.is_none() && after.is_none() {
        match nearest {
            Some(r) if r.ts < at => before = Some(*r),
            Some(r) => after = Some(*r),
            None => return None,
        }
    }
    let near = |r: Option<Read>| r.filter(|r| (r.ts - at).abs() <= MAX_BOUNDARY_DISTANCE);
    let (before, after) = (near(before), near(after));
    let empty = BTreeMap::new();
    let hist = reads.history.get(&ch).unwrap_or(&empty);
    let lookup = |t: DateTime<Utc>| hist.get(&t).copied();
    if let Some(e) = crate::vee::estimate_boundary(at, before, after, &lookup, cfg) {
        // The Wh inside the window that depend on the estimate.
        let estimated_wh = match (is_start, before, after) {
            (true, _, Some(a)) => a.wh - e.wh,
            (true, Some(b), None) => e.wh - b.wh,
            (false, Some(b), _) => e.wh - b.wh,
            (false, None, Some(a)) => a.wh - e.wh,
            _ => 0,
        }
        .max(0);
        let how = match e.quality {
            Quality::Interpolated => "interpolated",
            Quality::LikeDay => "like-day",
            Quality::Actual => "actual",
        };
        let note = format!(
            "{} at {at}: {} Wh {how} from {} / {} ({estimated_wh} Wh estimated)",
            obis(ch),
            e.wh,
            before.map_or("-".to_string(), |r| format!("{} Wh at {}", r.wh, r.ts)),
            after.map_or("-".to_string(), |r| format!("{} Wh at {}", r.wh, r.ts)),
        );
        return Some(Boundary { wh: e.wh, quality: e.quality, estimated_wh, note: Some(note) });
    }
    // Nothing to estimate from: the nearest reading as is (estimated by its distance, counted below).
    let r = nearest.copied().or(before).or(after)?;
    Some(Boundary {
        wh: r.wh,
        quality: Quality::Interpolated,
        estimated_wh: -(r.ts - at).num_seconds().abs(),
        note: Some(format!("{} at {at}: nearest reading {} Wh at {} used as is", obis(ch), r.wh, r.ts)),
    })
}

/// The delta of register `ch` over `w`, with VEE at both ends. Errors are `(problem kind, detail)`; estimate
/// notes are appended to `notes`.
fn register_in(
    reads: &MeterReads,
    ch: i16,
    w: &MeterWindow,
    cfg: &VeeConfig,
    notes: &mut Vec<String>,
) -> Result<RegDelta, (&'static str, String)> {
    let missing = |what: &str, at: DateTime<Utc>| {
        ("missing_boundary_reading", format!("no {} reading within 24 h of the period {what} {at}", obis(ch)))
    };
    // A meter installed inside the window starts from its reading at installation, or 0 (a new register).
    let s = if w.installed_inside {
        let wh = reads.start.get(&ch).filter(|r| r.ts == w.start).map_or(0, |r| r.wh);
        Boundary { wh, quality: Quality::Actual, estimated_wh: 0, note: None }
    } else {
        boundary(reads, ch, w.start, true, cfg).ok_or_else(|| missing("start", w.start))?
    };
    // A meter removed inside the window ends with its last reading (it stopped measuring).
    let e = if w.removed_inside {
        let r = reads.end.get(&ch).filter(|r| r.ts <= w.end && r.ts > w.start).ok_or_else(|| {
            (
                "missing_removal_reading",
                format!("no {} reading between {} and the removal {}", obis(ch), w.start, w.end),
            )
        })?;
        Boundary { wh: r.wh, quality: Quality::Actual, estimated_wh: 0, note: None }
    } else {
        boundary(reads, ch, w.end, false, cfg).ok_or_else(|| missing("end", w.end))?
    };
    let wh = e.wh.checked_sub(s.wh).unwrap_or(-1);
    if wh < 0 {
        return Err((
            "register_decreased",
            format!("{} went from {} Wh at {} to {} Wh at {}", obis(ch), s.wh, w.start, e.wh, w.end),
        ));
    }
    // Distance-based share of the nearest-reading fallback: seconds (negative marker) → Wh at the mean rate.
    let secs = (w.end - w.start).num_seconds().max(1);
    let est = |b: &Boundary| -> i64 {
        if b.estimated_wh < 0 {
            i64::try_from(i128::from(wh) * i128::from(-b.estimated_wh) / i128::from(secs)).unwrap_or(wh)
        } else {
            b.estimated_wh
        }
    };
    let estimated_wh = (est(&s) + est(&e)).min(wh);
    notes.extend(s.note.into_iter().chain(e.note));
    Ok(RegDelta { wh, estimated_wh, quality: [s.quality, e.quality] })
}

/// The delta of register `ch` of a master meter over the whole month.
fn register(
    reads: &MeterReads,
    ch: i16,
    m: &BillingMonth,
    cfg: &VeeConfig,
) -> Result<RegDelta, (&'static str, String)> {
    let w = MeterWindow { start: m.start, end: m.end, installed_inside: false, removed_inside: false };
    register_in(reads, ch, &w, cfg, &mut Vec::new())
}

/// Every `LineOut::kind` (the `bill_lines.kind` column): the tariff's lines as [`line_out`] names
/// them, then `correction` (an earlier estimated bill corrected, added by the edge's checks).
pub const LINE_KINDS: [&str; 11] = [
    "energy",
    "power_charge",
    "supplier_charge",
    "payment_discount",
    "renewable_fee",
    "efficiency_fee",
    "excise",
    "vat",
    "tv_fee",
    "rounding",
    "correction",
];

fn line_out(no: usize, tariff_code: &str, l: &crate::bill::Line) -> LineOut {
    let (kind, zone, tou) = match &l.kind {
        LineKind::Energy { zone, tou } => (
            "energy",
            Some(zone.clone()),
            tou.map(|t| match t {
                TimeOfUse::Vt => "vt",
                TimeOfUse::Nt => "nt",
            }),
        ),
        LineKind::PowerCharge => ("power_charge", None, None),
        LineKind::SupplierCharge => ("supplier_charge", None, None),
        LineKind::PaymentDiscount(_) => ("payment_discount", None, None),
        LineKind::RenewableFee => ("renewable_fee", None, None),
        LineKind::EfficiencyFee => ("efficiency_fee", None, None),
        LineKind::Excise => ("excise", None, None),
        LineKind::Vat => ("vat", None, None),
        LineKind::TvFee => ("tv_fee", None, None),
        LineKind::Rounding => ("rounding", None, None),
    };
    LineOut {
        line_no: i16::try_from(no + 1).unwrap_or(i16::MAX),
        tariff_code: tariff_code.to_string(),
        kind,
        zone,
        tou,
        quantity: l.quantity,
        unit: match l.unit {
            Unit::Kwh => "kwh",
            Unit::KwMonth => "kw_month",
            Unit::Month => "month",
            Unit::Rsd => "rsd",
        },
        unit_price: l.unit_price,
        amount: l.amount,
        detail: None,
    }
}

/// The stored/exported lines of a bill, numbered from 1 in bill order.
pub fn lines_of(bill: &Bill) -> Vec<LineOut> {
    let mut out = Vec::new();
    for seg in &bill.segments {
        for l in &seg.lines {
            out.push(line_out(out.len(), &seg.tariff_code, l));
        }
    }
    out
}

pub(crate) fn median(sorted: &[Decimal]) -> Option<Decimal> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => sorted.get(n / 2).copied(),
        _ => Some(round_para((sorted.get(n / 2 - 1)? + sorted.get(n / 2)?) / Decimal::TWO)),
    }
}

struct Billed<'a> {
    h: &'a HouseholdIn,
    meter: &'a MeterIn,
    serials: String,
    input: BillInput,
    bill: Bill,
    vt_wh: i64,
    nt_wh: i64,
    share: Decimal,
}

/// The meters of a household in installation order when they form an exchange sequence (each one removed on
/// or before the day the next one is installed); `None` when several are in service at the same time.
fn exchange_sequence(meters: &[MeterIn]) -> Option<Vec<&MeterIn>> {
    let mut ms: Vec<&MeterIn> = meters.iter().collect();
    ms.sort_by_key(|m| (m.installed_on, m.id));
    for pair in ms.windows(2) {
        let (Some(old), Some(new)) = (pair.first(), pair.get(1)) else { return None };
        match (old.removed_on, new.installed_on) {
            (Some(r), Some(i)) if r <= i => {}
            _ => return None,
        }
    }
    Some(ms)
}

/// Bills one building: every household from its boundary readings, the reconciliation, the common-area split
/// and the 1/N comparison. Never fails: whatever cannot be billed is listed in `problems`.
pub fn compute_building(
    b: &BuildingIn,
    reads: &HashMap<i32, MeterReads>,
    month: &BillingMonth,
    tariffs: &TariffSet,
    rules: &Rules,
) -> BuildingResult {
    let key = rules.split;
    let mut problems = Vec::new();
    let problem = |h: Option<&HouseholdIn>, meter_id: Option<i32>, kind: &'static str, detail: String| Problem {
        building_id: b.id,
        building_code: b.code.clone(),
        household_id: h.map(|h| h.id),
        household_code: h.map(|h| h.code.clone()),
        meter_id,
        kind,
        detail,
    };
    let empty = MeterReads::default();

    // 1. Households.
    let mut billed: Vec<Billed<'_>> = Vec::new();
    for h in &b.households {
        let meters = match h.meters.as_slice() {
            [] => {
                problems.push(problem(Some(h), None, "no_meter", "no household meter in service".into()));
                continue;
            }
            ms => match exchange_sequence(ms) {
                Some(seq) => seq,
                None => {
                    let serials: Vec<&str> = ms.iter().map(|m| m.serial.as_str()).collect();
                    problems.push(problem(
                        Some(h),
                        None,
                        "several_meters",
                        format!(
                            "meters {} in service at the same time during the period (not an exchange: the old \
                             meter must be removed on or before the day the new one is installed)",
                            serials.join(", ")
                        ),
                    ));
                    continue;
                }
            },
        };
        let Some(&meter) = meters.last() else { continue };
        if !tariffs.tariffs().iter().any(|t| t.code == h.tariff) {
            problems.push(problem(
                Some(h),
                Some(meter.id),
                "unknown_tariff",
                format!("tariff {:?} not loaded", h.tariff),
            ));
            continue;
        }
        // Σ over the meters (one, or old + new on a meter exchange) of their deltas over their own windows.
        let (mut vt_wh, mut nt_wh, mut est_wh) = (0i64, 0i64, 0i64);
        let mut failed = false;
        let mut notes: Vec<(i32, String)> = Vec::new();
        for m in &meters {
            let r = reads.get(&m.id).unwrap_or(&empty);
            let w = m.window(month);
            let mut n = Vec::new();
            let (vt, nt) =
                match (register_in(r, CH_VT, &w, &rules.vee, &mut n), register_in(r, CH_NT, &w, &rules.vee, &mut n)) {
                    (Ok(vt), Ok(nt)) => (vt, nt),
                    (Err((kind, detail)), _) | (_, Err((kind, detail))) => {
                        problems.push(problem(Some(h), Some(m.id), kind, format!("meter {}: {detail}", m.serial)));
                        failed = true;
                        break;
                    }
                };
            notes.extend(n.into_iter().map(|x| (m.id, format!("meter {}: {x}", m.serial))));
            // Sum check: ΔVT + ΔNT against Δ1.0.1.8.0, when all three are actual readings.
            if let Ok(total) = register_in(r, CH_TOTAL, &w, &rules.vee, &mut Vec::new()) {
                let all_actual =
                    [vt.quality, nt.quality, total.quality].iter().flatten().all(|q| *q == Quality::Actual);
                let diff = vt.wh.saturating_add(nt.wh).saturating_sub(total.wh);
                if all_actual && diff.abs() > rules.vee.sum_tolerance_wh {
                    problems.push(problem(
                        Some(h),
                        Some(m.id),
                        "sum_mismatch",
                        format!(
                            "meter {}: VT {} Wh + NT {} Wh differs from 1.0.1.8.0 {} Wh by {diff} Wh (tolerance {} Wh)",
                            m.serial, vt.wh, nt.wh, total.wh, rules.vee.sum_tolerance_wh
                        ),
                    ));
                }
            }
            vt_wh = vt_wh.saturating_add(vt.wh);
            nt_wh = nt_wh.saturating_add(nt.wh);
            est_wh = est_wh.saturating_add(vt.estimated_wh).saturating_add(nt.estimated_wh);
        }
        if failed {
            continue;
        }
        // Plausibility of the whole period: no more than the approved power for every hour of it.
        let hours = Decimal::from(month.seconds()) / Decimal::from(3600);
        let limit_wh = h.approved_power_kw * hours * Decimal::ONE_THOUSAND * rules.vee.power_margin;
        if Decimal::from(vt_wh.saturating_add(nt_wh)) > limit_wh {
            problems.push(problem(
                Some(h),
                Some(meter.id),
                "spike_power",
                format!(
                    "{} Wh in the period is more than {} kW × {hours} h: held for review, no bill",
                    vt_wh.saturating_add(nt_wh),
                    h.approved_power_kw
                ),
            ));
            continue;
        }
        for (mid, note) in notes {
            problems.push(problem(Some(h), Some(mid), "estimated_reading", note));
        }
        let (vt_kwh, nt_kwh) = (wh_to_kwh(vt_wh), wh_to_kwh(nt_wh));
        let total_wh = vt_wh.saturating_add(nt_wh);
        let est_wh = est_wh.clamp(0, total_wh);
        let share =
            if total_wh == 0 { Decimal::ZERO } else { (Decimal::from(est_wh) / Decimal::from(total_wh)).round_dp(6) };
        // Whole Wh up to i64::MAX each: the sum fits a Decimal; compute_bill refuses absurd values.
        let mut input = BillInput::two_rate(month.period, vt_kwh, nt_kwh, h.approved_power_kw, b.region);
        input.estimated_kwh = wh_to_kwh(est_wh);
        let serials = meters.iter().map(|m| m.serial.as_str()).collect::<Vec<_>>().join(", ");
        match compute_bill(&input, tariffs) {
            Ok(bill) => billed.push(Billed { h, meter, serials, input, bill, vt_wh, nt_wh, share }),
            Err(e) => problems.push(problem(Some(h), Some(meter.id), "bill_error", e.to_string())),
        }
    }

    // 2. The master meter.
    let master = match b.masters.as_slice() {
        [m] => Some(m),
        [] => {
            problems.push(problem(None, None, "no_master", "no master meter in service".into()));
            None
        }
        _ => {
            problems.push(problem(None, None, "several_masters", "several master meters in service".into()));
            None
        }
    };
    let master_total = match master {
        Some(m) => match register(reads.get(&m.id).unwrap_or(&empty), CH_TOTAL, month, &rules.vee) {
            Ok(d) => Some(d),
            Err((kind, detail)) => {
                problems.push(problem(None, Some(m.id), kind, format!("master {}: {detail}", m.serial)));
                None
            }
        },
        None => None,
    };

    // 3. Reconciliation and the common-area split.
    let apartments_wh: Vec<i64> = billed.iter().map(|x| x.vt_wh.saturating_add(x.nt_wh)).collect();
    let mut common_parts: Option<Vec<i64>> = None;
    let mut split_keys = Vec::new();
    let mut reconciliation = None;
    if let Some(mt) = master_total {
        if b.households.is_empty() {
            // Nothing to reconcile: the whole master is common areas + losses of a building without flats.
        } else if billed.len() == b.households.len() {
            match Reconciliation::new(mt.wh, &apartments_wh) {
                Ok(rec) => {
                    reconciliation = Some(rec);
                    match rec.common(None) {
                        Ok(common) => {
                            let members: Vec<Member> = billed
                                .iter()
                                .map(|x| Member { floor_area_m2: x.h.floor_area_m2, residents: x.h.residents })
                                .collect();
                            match allocate_wh(common, key, &members) {
                                Ok(parts) => common_parts = Some(parts),
                                Err(e) => problems.push(problem(None, None, "allocation_error", e.to_string())),
                            }
                            split_keys = split_key_results(common, &members);
                        }
                        Err(e) => problems.push(problem(
                            None,
                            None,
                            "negative_common",
                            format!(
                                "apartments ({} Wh) exceed the master ({} Wh) by {} Wh",
                                e.apartments_wh, e.master_wh, e.excess_wh
                            ),
                        )),
                    }
                }
                Err(e) => problems.push(problem(None, None, "allocation_error", e.to_string())),
            }
        } else {
            problems.push(problem(
                None,
                None,
                "not_reconciled",
                format!(
                    "{} of {} households billed: common areas cannot be told from unbilled flats",
                    billed.len(),
                    b.households.len()
                ),
            ));
        }
    }

    // 4. 1/N and the bills.
    let n = u32::try_from(b.households.len()).unwrap_or(u32::MAX);
    // The master's VT/NT for 1/N; their problems are listed only when its total was fine (else listed above).
    let master_vt_nt = match (master, master_total) {
        (Some(m), Some(_)) => {
            let r = reads.get(&m.id).unwrap_or(&empty);
            match (register(r, CH_VT, month, &rules.vee), register(r, CH_NT, month, &rules.vee)) {
                (Ok(vt), Ok(nt)) => Some(Consumption::TwoRate { vt_kwh: wh_to_kwh(vt.wh), nt_kwh: wh_to_kwh(nt.wh) }),
                (Err((kind, detail)), _) | (_, Err((kind, detail))) => {
                    problems.push(problem(
                        None,
                        Some(m.id),
                        kind,
                        format!("master {}: {detail} (no 1/N comparison)", m.serial),
                    ));
                    None
                }
            }
        }
        _ => None,
    };
    let mut bills = Vec::with_capacity(billed.len());
    for (i, x) in billed.iter().enumerate() {
        let cmp = match master_vt_nt {
            Some(building) => match one_over_n_bill(&x.input, building, n, tariffs) {
                Ok(old) => Some(compare(&x.bill, &old)),
                Err(e) => {
                    problems.push(problem(Some(x.h), Some(x.meter.id), "old_split_error", e.to_string()));
                    None
                }
            },
            None => None,
        };
        bills.push(HouseholdBill {
            household_id: x.h.id,
            household_code: x.h.code.clone(),
            apartment: x.h.apartment.clone(),
            building_id: b.id,
            building_code: b.code.clone(),
            meter_serial: x.serials.clone(),
            vt_kwh: wh_to_kwh(x.vt_wh),
            nt_kwh: wh_to_kwh(x.nt_wh),
            total_kwh: wh_to_kwh(x.vt_wh.saturating_add(x.nt_wh)),
            common_kwh: common_parts.as_ref().and_then(|p| p.get(i)).map(|wh| wh_to_kwh(*wh)),
            estimated_share: x.share,
            estimated: x.share > rules.estimated_threshold,
            total: x.bill.total,
            old_split_total: cmp.map(|c| c.one_over_n),
            difference: cmp.map(|c| c.difference),
            difference_percent: cmp.and_then(|c| c.percent),
            lines: lines_of(&x.bill),
        });
    }

    // 5. Summary.
    let mut totals: Vec<Decimal> = bills.iter().map(|b| b.total).collect();
    totals.sort();
    let with_old: Vec<&HouseholdBill> = bills.iter().filter(|b| b.old_split_total.is_some()).collect();
    let summary = BuildingSummary {
        building_id: b.id,
        building_code: b.code.clone(),
        region: b.region,
        split_key: split_key_name(key),
        households: b.households.len(),
        bills: bills.len(),
        estimated_bills: bills.iter().filter(|b| b.estimated).count(),
        master_kwh: master_total.map(|m| wh_to_kwh(m.wh)),
        master_estimated_share: master_total.map(|m| {
            if m.wh == 0 {
                Decimal::ZERO
            } else {
                (Decimal::from(m.estimated_wh) / Decimal::from(m.wh)).min(Decimal::ONE).round_dp(6)
            }
        }),
        apartments_kwh: wh_to_kwh(apartments_wh.iter().fold(0i64, |a, x| a.saturating_add(*x))),
        common_kwh: common_parts.as_ref().and(reconciliation).map(|r| wh_to_kwh(r.common_wh)),
        common_percent: common_parts.as_ref().and(reconciliation).and_then(|r| r.common_percent()),
        metered_total: totals.iter().sum(),
        one_over_n_total: (!with_old.is_empty() && with_old.len() == bills.len())
            .then(|| with_old.iter().filter_map(|b| b.old_split_total).sum()),
        min_bill: totals.first().copied(),
        median_bill: median(&totals),
        max_bill: totals.last().copied(),
        pay_more: with_old.iter().filter(|b| b.difference.is_some_and(|d| d > Decimal::ZERO)).count(),
        pay_less: with_old.iter().filter(|b| b.difference.is_some_and(|d| d < Decimal::ZERO)).count(),
        pay_same: with_old.iter().filter(|b| b.difference.is_some_and(|d| d.is_zero())).count(),
        problems: problems.len(),
        split_keys,
        negative_common_intervals: 0,
        interval_hours_checked: None,
    };
    BuildingResult { summary, bills, problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_belgrade_local_midnights() {
        let m = BillingMonth::parse("2026-10").unwrap();
        assert_eq!(m.start.to_rfc3339(), "2026-09-30T22:00:00+00:00");
        assert_eq!(m.end.to_rfc3339(), "2026-10-31T23:00:00+00:00");
        assert_eq!(m.seconds(), (31 * 24 + 1) * 3600);
        let m = BillingMonth::parse("2026-03").unwrap();
        assert_eq!(m.start.to_rfc3339(), "2026-02-28T23:00:00+00:00");
        assert_eq!(m.end.to_rfc3339(), "2026-03-31T22:00:00+00:00");
        assert_eq!(m.seconds(), (31 * 24 - 1) * 3600);
        assert_eq!(m.label(), "2026-03");
        for bad in ["2026-13", "2026-1", "26-10", "2026-00", "x", "2026-1a", "", "2026-10-01", "+202-10"] {
            assert!(BillingMonth::parse(bad).is_err(), "{bad}");
        }
    }

    fn t(h: i64) -> DateTime<Utc> {
        BillingMonth::parse("2026-10").unwrap().start + Duration::hours(h)
    }

    /// Reads with VT/NT/total deltas `d` (Wh) over October 2026, at the exact boundaries.
    fn reads(d: [i64; 3]) -> MeterReads {
        let m = BillingMonth::parse("2026-10").unwrap();
        let mut r = MeterReads::default();
        for (ch, delta) in [(CH_VT, d[0]), (CH_NT, d[1]), (CH_TOTAL, d[2])] {
            r.start.insert(ch, Read { ts: m.start, wh: 1_000 });
            r.end.insert(ch, Read { ts: m.end, wh: 1_000 + delta });
        }
        r
    }

    fn building(flats: usize) -> BuildingIn {
        BuildingIn {
            id: 1,
            code: "B".into(),
            region: Region::NoviSad,
            masters: vec![MeterIn { id: 100, serial: "M".into(), ..Default::default() }],
            households: (0..flats)
                .map(|i| HouseholdIn {
                    id: i32::try_from(i).unwrap() + 1,
                    code: format!("H{i}"),
                    apartment: i.to_string(),
                    floor_area_m2: Decimal::from(40 + i),
                    residents: 2,
                    approved_power_kw: Decimal::new(69, 1),
                    tariff: "eps-household-2025".into(),
                    meters: vec![MeterIn {
                        id: i32::try_from(i).unwrap() + 1,
                        serial: format!("S{i}"),
                        ..Default::default()
                    }],
                })
                .collect(),
        }
    }

    fn compute(b: &BuildingIn, r: &HashMap<i32, MeterReads>) -> BuildingResult {
        let tariffs = TariffSet::single(crate::tariff::Tariff::eps_household_2025().unwrap());
        compute_building(b, r, &BillingMonth::parse("2026-10").unwrap(), &tariffs, &Rules::default())
    }

    fn kinds(r: &BuildingResult) -> Vec<&'static str> {
        r.problems.iter().map(|p| p.kind).collect()
    }

    #[test]
    fn negative_common_is_a_problem_not_an_allocation() {
        let b = building(2);
        let r = HashMap::from([(1, reads([100, 50, 150])), (2, reads([10, 5, 15])), (100, reads([100, 60, 160]))]);
        let out = compute(&b, &r);
        assert_eq!(out.bills.len(), 2);
        assert_eq!(kinds(&out), ["negative_common"]);
        assert!(out.bills.iter().all(|b| b.common_kwh.is_none()));
        assert_eq!(out.summary.common_kwh, None);
    }

    #[test]
    fn decreasing_registers_unknown_tariffs_and_meter_counts_are_problems() {
        let mut b = building(5);
        b.households[1].tariff = "other".into();
        b.households[2].meters.clear();
        b.households[3].meters.push(MeterIn { id: 99, serial: "X".into(), ..Default::default() });
        b.masters.clear();
        let r = HashMap::from([(1, reads([-1, 5, 4])), (5, reads([10, 5, 15]))]);
        let out = compute(&b, &r);
        assert_eq!(out.bills.len(), 1);
        assert_eq!(kinds(&out), ["register_decreased", "unknown_tariff", "no_meter", "several_meters", "no_master"]);
        assert_eq!(out.summary.one_over_n_total, None);
        assert_eq!(out.summary.problems, 5);
    }

    #[test]
    fn nearest_reading_sets_the_estimated_share() {
        let b = building(1);
        let mut m = reads([100_000, 50_000, 150_000]);
        // VT start 3 h late, NT end 1 h early: 4 h of 745 not covered.
        m.start.insert(CH_VT, Read { ts: t(3), wh: 1_000 });
        let end = BillingMonth::parse("2026-10").unwrap().end;
        m.end.insert(CH_NT, Read { ts: end - Duration::hours(1), wh: 51_000 });
        let out = compute(&b, &HashMap::from([(1, m), (100, reads([0, 0, 200_000]))]));
        let bill = &out.bills[0];
        // No reading on the other side and no like-day history: the nearest reading is used as is and the energy
        // between it and the boundary, at the period's mean rate, is estimated: VT 100,000 Wh × 3 h / 745 h = 402,
        // NT 50,000 Wh × 1 h / 745 h = 67 → 469 of 150,000 Wh.
        assert_eq!(bill.estimated_share, (Decimal::from(469) / Decimal::from(150_000)).round_dp(6));
        assert!(bill.estimated);
        // Beyond 24 h: no bill.
        let mut far = reads([1, 1, 2]);
        far.start.insert(CH_NT, Read { ts: t(-25), wh: 1_000 });
        let out = compute(&b, &HashMap::from([(1, far)]));
        assert!(out.bills.is_empty());
        assert_eq!(kinds(&out), ["missing_boundary_reading", "missing_boundary_reading"]);
    }

    #[test]
    fn a_master_without_vt_nt_reconciles_but_has_no_one_over_n() {
        let b = building(2);
        let mut m = reads([0, 0, 200]);
        m.end.remove(&CH_VT);
        let r = HashMap::from([(1, reads([100, 50, 150])), (2, reads([10, 5, 15])), (100, m)]);
        let out = compute(&b, &r);
        assert_eq!(kinds(&out), ["missing_boundary_reading"]);
        assert_eq!(out.summary.common_kwh, Some(Decimal::new(35, 3)));
        assert!(out.bills.iter().all(|b| b.old_split_total.is_none()));
        assert_eq!(out.bills.iter().map(|b| b.common_kwh.unwrap()).sum::<Decimal>(), Decimal::new(35, 3));
        // A building without households: nothing billed, nothing to reconcile, no problem.
        let out = compute(&building(0), &HashMap::from([(100, reads([1, 1, 2]))]));
        assert!(out.bills.is_empty() && out.problems.is_empty());
    }

    #[test]
    fn sum_mismatch_and_impossible_consumption_are_vee_problems() {
        let b = building(2);
        // Flat 1: VT 100,000 + NT 50,000 Wh but 1.0.1.8.0 says 150,011 Wh: 11 Wh off, above the 10 Wh tolerance.
        // Flat 2: 6.9 kW × 745 h = 5,140.5 kWh at most; 5,200 kWh is impossible, the bill is held.
        let r = HashMap::from([
            (1, reads([100_000, 50_000, 150_011])),
            (2, reads([5_000_000, 200_000, 5_200_000])),
            (100, reads([6_000_000, 300_000, 6_300_000])),
        ]);
        let out = compute(&b, &r);
        assert_eq!(kinds(&out), ["sum_mismatch", "spike_power", "not_reconciled"]);
        assert_eq!(out.bills.len(), 1);
        assert!(out.problems[0].detail.contains("by -11 Wh"), "{}", out.problems[0].detail);
        assert!(!out.bills[0].estimated);
    }

    #[test]
    fn median_of_even_and_odd() {
        use rust_decimal_macros::dec;
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[dec!(1)]), Some(dec!(1)));
        assert_eq!(median(&[dec!(1), dec!(2.01)]), Some(dec!(1.51)));
        assert_eq!(median(&[dec!(1), dec!(2), dec!(9)]), Some(dec!(2)));
    }
}
