//! A household's own data for the portal and the API: queries and pure computation, no HTML (pages in
//! [`crate::web::portal`], JSON in [`crate::api::household`]).
//!
//! | module | what |
//! |---|---|
//! | [`calendar`] | Europe/Belgrade days, months, years as UTC instants; a day's 15-minute grid (92/96/100); the views |
//! | [`usage`] | consumption from cumulative registers: 15-minute intervals, slots from register values at their boundaries, gaps as gaps, meter exchanges |
//! | [`cost`] | EPS zone progress of the month, the next kWh's price, bill to date and projection (billing-core) |
//! | [`db`] | the SQL: the household with its meters, register look-ups by primary key, bounded reading ranges, the building's flats |
//! | [`export`] | downloads: CSV of 15-minute intervals, Green Button (NAESB ESPI Atom XML) |
//! | [`bills`] | past bills from the billing tables |
//! | [`events`] | outages and alarms |
//!
//! Which household a request may see is decided before these functions run ([`crate::api::visible_household`]).
//!
//! **Cost of a view** (one household): the household row with its meters (one query), then one statement of
//! register look-ups — a month's days are its 32 local midnights × 3 registers by primary key, a year's months
//! its 13 month starts, plus the latest reading of the running slot — or, for a day, one range of its ~300
//! readings. The summary adds one statement for last year's registers and one for the building's flats at two
//! instants (both sent together).

pub mod bills;
pub mod calendar;
pub mod cost;
pub mod db;
pub mod events;
pub mod export;
pub mod usage;

use billing_core::money::wh_to_kwh;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Europe::Belgrade;
use rust_decimal::Decimal;
use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use calendar::{day_grid, local_day, midnight, next_month, one_year_earlier, View};
use cost::{Contract, Estimate, ZoneProgress};
pub use db::Household;
use usage::{Energy, Found, Lookup, Plan, Reading, Slot, SlotState};

/// The building comparison needs at least this many other flats with readings, so that no
/// neighbour's consumption can be worked out from the median.
pub const MIN_NEIGHBOURS: usize = 5;

/// Why a household's data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HouseholdError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("inventory: {0}")]
    Inventory(String),
}

fn kwh(wh: Option<i64>) -> Option<Decimal> {
    wh.map(wh_to_kwh)
}

/// Whether a slot is over, running or still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Over: its energy is final (or a gap).
    Past,
    /// Holds the present: counted up to `until`.
    Running,
    /// Not begun.
    Future,
}

impl From<SlotState> for State {
    fn from(s: SlotState) -> State {
        match s {
            SlotState::Past => State::Past,
            SlotState::Running => State::Running,
            SlotState::Future => State::Future,
        }
    }
}

/// The energy of one slot (an interval, a day, a month). A value absent in a slot that has begun is a gap:
/// readings are missing and nothing is estimated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsagePoint {
    /// Slot start (UTC).
    pub start: DateTime<Utc>,
    /// Slot end (UTC); for an interval, the reading's `ts`.
    pub end: DateTime<Utc>,
    /// Local (Europe/Belgrade) label: `14:15` (interval start; on the autumn DST day the repeated hour with its
    /// offset, `02:00 +02` then `02:00 +01`), `2026-11-20` (day), `2026-11` (month).
    pub label: String,
    /// From 1.0.1.8.0.
    pub kwh: Option<Decimal>,
    /// From 1.0.1.8.1 (higher tariff).
    pub vt_kwh: Option<Decimal>,
    /// From 1.0.1.8.2 (lower tariff).
    pub nt_kwh: Option<Decimal>,
    pub state: State,
    /// For a running slot: the time of the latest reading counted.
    pub until: Option<DateTime<Utc>>,
}

impl UsagePoint {
    /// Begun and without a value.
    pub fn is_gap(&self) -> bool {
        self.state != State::Future && self.kwh.is_none()
    }

    fn of(label: String, s: &Slot) -> UsagePoint {
        UsagePoint {
            start: s.start,
            end: s.end,
            label,
            kwh: kwh(s.energy.total),
            vt_kwh: kwh(s.energy.vt),
            nt_kwh: kwh(s.energy.nt),
            state: s.state.into(),
            until: s.until,
        }
    }
}

/// The energy of a whole period, from its registers at both ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PeriodUse {
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub kwh: Option<Decimal>,
    pub vt_kwh: Option<Decimal>,
    pub nt_kwh: Option<Decimal>,
    pub state: State,
    /// Up to when it is counted: the latest reading for a running period, else its end; absent when unknown.
    pub until: Option<DateTime<Utc>>,
}

impl PeriodUse {
    fn of(s: &Slot) -> PeriodUse {
        PeriodUse {
            first_day: local_day(s.start),
            last_day: local_day(s.end - Duration::seconds(1)),
            start: s.start,
            end: s.end,
            kwh: kwh(s.energy.total),
            vt_kwh: kwh(s.energy.vt),
            nt_kwh: kwh(s.energy.nt),
            state: s.state.into(),
            until: counted_to(s),
        }
    }
}

/// Up to when a slot is counted.
fn counted_to(s: &Slot) -> Option<DateTime<Utc>> {
    match s.state {
        SlotState::Past if s.energy.total.is_some() => Some(s.end),
        SlotState::Running => s.until,
        _ => None,
    }
}

/// A household's consumption in one view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConsumptionReport {
    pub household: String,
    /// `15min` (a day), `day` (a month), `month` (a year).
    pub resolution: String,
    /// The view's date: `YYYY-MM-DD`, `YYYY-MM` or `YYYY`.
    pub date: String,
    /// The views before and after (same resolution).
    pub previous: String,
    pub next: String,
    pub unit: String,
    pub points: Vec<UsagePoint>,
    /// The whole view from its registers at both ends (known even when some slots are gaps).
    pub total: PeriodUse,
    /// Slots begun without a value.
    pub gaps: usize,
}

/// Comparison with the same span one year earlier (the household's own meters then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LastYear {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub kwh: Decimal,
    /// This year's kWh over the same local span.
    pub own_kwh: Decimal,
    /// `(own − last year) / last year × 100`, one decimal; absent when last year was 0.
    pub change_percent: Option<Decimal>,
}

/// Comparison with the building's median flat over the same span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BuildingMedian {
    pub building: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Other households of the building with readings at both ends (this one not included; the
    /// comparison is given only when there are at least five).
    pub households: usize,
    pub median_kwh: Decimal,
    pub own_kwh: Decimal,
    /// `(own − median) / median × 100`, one decimal.
    pub change_percent: Option<Decimal>,
}

/// The overview of a household at an instant: today and yesterday, the month so far with its zones and
/// cost, and the comparisons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Summary {
    pub household: String,
    pub apartment: String,
    pub address: String,
    /// The instant the summary is for (now, or the end of the asked day).
    pub as_of: DateTime<Utc>,
    pub today: PeriodUse,
    pub yesterday: PeriodUse,
    /// The billing (calendar) month so far.
    pub month: PeriodUse,
    pub zones: Option<ZoneProgress>,
    pub bill_to_date: Option<Estimate>,
    /// The month's consumption so far scaled to the whole month, billed.
    pub projection: Option<Estimate>,
    pub last_year: Option<LastYear>,
    pub building: Option<BuildingMedian>,
}

/// `(a − b) / b × 100` to one decimal; `None` when `b` is 0.
pub fn change_percent(a: i64, b: i64) -> Option<Decimal> {
    (b != 0).then(|| (Decimal::from(a - b) * Decimal::ONE_HUNDRED / Decimal::from(b)).round_dp(1))
}

/// The slots of `plans` from one statement of look-ups.
async fn evaluate(c: &impl GenericClient, plans: &[&Plan]) -> Result<Vec<Vec<Slot>>, HouseholdError> {
    let mut lookups: Vec<(i32, Lookup)> = plans.iter().flat_map(|p| p.lookups()).collect();
    lookups.sort();
    lookups.dedup();
    let found = db::lookup(c, &lookups).await?;
    Ok(plans.iter().map(|p| p.evaluate(&found)).collect())
}

/// Resolves look-ups against readings already loaded (a day's range).
fn found_in(lookups: &[(i32, Lookup)], readings: &[Reading]) -> Found {
    let mut found = Found::new();
    for &(m, l) in lookups {
        for &(_, ch, ts, v) in readings.iter().filter(|r| r.0 == m) {
            let Some(reg) = usage::REGISTERS.iter().position(|c| *c == ch) else { continue };
            let slot = &mut found.entry((m, l)).or_default().values[reg];
            let better = match (l, *slot) {
                (Lookup::At(t), _) => ts == t,
                (Lookup::LastIn(lo, hi), old) => ts > lo && ts <= hi && old.is_none_or(|(o, _)| ts > o),
                (Lookup::FirstIn(lo, hi), old) => ts >= lo && ts < hi && old.is_none_or(|(o, _)| ts < o),
            };
            if better {
                *slot = Some((ts, v));
            }
        }
    }
    found
}

/// The autumn DST day shows 02:00–02:45 twice: those labels get their UTC offset (`02:00 +02`, `02:00 +01`).
fn mark_repeated_hour(points: &mut [UsagePoint]) {
    let mut seen = std::collections::HashMap::new();
    for p in points.iter() {
        *seen.entry(p.label.clone()).or_insert(0) += 1;
    }
    for p in points.iter_mut().filter(|p| seen.get(&p.label).is_some_and(|n| *n > 1)) {
        p.label = format!("{} {}", p.label, p.start.with_timezone(&Belgrade).format("%:::z"));
    }
}

fn slot_label(view: View, s: &Slot) -> String {
    match view {
        View::Day(_) => s.start.with_timezone(&Belgrade).format("%H:%M").to_string(),
        View::Month(_) => local_day(s.start).format("%Y-%m-%d").to_string(),
        View::Year(_) => local_day(s.start).format("%Y-%m").to_string(),
    }
}

/// The household's consumption in `view` at `now` (slots after `now` are `future`).
pub async fn consumption(
    c: &impl GenericClient,
    h: &Household,
    view: View,
    now: DateTime<Utc>,
) -> Result<ConsumptionReport, HouseholdError> {
    let (start, end) = view.span();
    let spans = h.spans();
    let whole = Plan::new(&[start, end], &spans, now);
    let (slots, total) = match view {
        View::Day(day) => {
            let ids = h.meter_ids_in(start, end);
            let readings = db::readings(c, &ids, start, end.min(now)).await?;
            let grid = day_grid(day);
            let energy = usage::intervals(&grid, &readings, &spans);
            let slots: Vec<Slot> = grid
                .iter()
                .zip(energy)
                .map(|(&e, energy)| {
                    let state = if e > now { SlotState::Future } else { SlotState::Past };
                    let energy = if state == SlotState::Future { Energy::default() } else { energy };
                    Slot { start: e - calendar::INTERVAL, end: e, state, energy, until: None }
                })
                .collect();
            let total = whole.evaluate(&found_in(&whole.lookups(), &readings));
            (slots, total)
        }
        View::Month(_) | View::Year(_) => {
            let plan = Plan::new(&view.boundaries(), &spans, now);
            let mut out = evaluate(c, &[&plan, &whole]).await?.into_iter();
            (out.next().unwrap_or_default(), out.next().unwrap_or_default())
        }
    };
    let mut points: Vec<UsagePoint> = slots.iter().map(|s| UsagePoint::of(slot_label(view, s), s)).collect();
    mark_repeated_hour(&mut points);
    let total = total.first().map(PeriodUse::of).unwrap_or_else(|| PeriodUse::of(&empty_slot(start, end)));
    Ok(ConsumptionReport {
        household: h.code.clone(),
        resolution: view.kind().resolution().to_owned(),
        date: view.param(),
        previous: view.previous().param(),
        next: view.next().param(),
        unit: "kWh".to_owned(),
        gaps: points.iter().filter(|p| p.is_gap()).count(),
        points,
        total,
    })
}

fn empty_slot(start: DateTime<Utc>, end: DateTime<Utc>) -> Slot {
    Slot { start, end, state: SlotState::Future, energy: Energy::default(), until: None }
}

/// The summary of a household at `as_of` (now, or the end of a past day).
pub async fn summary(c: &impl GenericClient, h: &Household, as_of: DateTime<Utc>) -> Result<Summary, HouseholdError> {
    let today = local_day(as_of - Duration::seconds(1));
    let yesterday = today.pred_opt().unwrap_or(today);
    let tomorrow = today.succ_opt().unwrap_or(today);
    let month_first =
        calendar::first_of_month(chrono::Datelike::year(&today), chrono::Datelike::month(&today)).unwrap_or(today);
    let spans = h.spans();
    let plans = [
        Plan::new(&[midnight(today), midnight(tomorrow)], &spans, as_of),
        Plan::new(&[midnight(yesterday), midnight(today)], &spans, as_of),
        Plan::new(&[midnight(month_first), midnight(next_month(month_first))], &spans, as_of),
    ];
    let slots = evaluate(c, &plans.iter().collect::<Vec<_>>()).await?;
    let slot = |i: usize| slots.get(i).and_then(|s| s.first()).copied().unwrap_or_else(|| empty_slot(as_of, as_of));
    let (today_s, yesterday_s, month_s) = (slot(0), slot(1), slot(2));
    let month = PeriodUse::of(&month_s);

    let contract = Contract { tariff: h.tariff.clone(), approved_power_kw: h.approved_power_kw, region: h.region };
    let cost = match (month.until, month_s.energy.vt, month_s.energy.nt) {
        (Some(until), Some(vt), Some(nt)) => Some(cost::month_cost(&contract, until, vt, nt)),
        _ => None,
    };

    // The same span last year and the building's flats over this span, sent together.
    let (mut last_year, mut building) = (None, None);
    if let (Some(until), Some(own)) = (month.until, month_s.energy.total) {
        let (ly_start, ly_end) = (one_year_earlier(month.start), one_year_earlier(until));
        let ly_plan = Plan::new(&[ly_start, ly_end], &spans, Utc::now());
        let ly_plans = [&ly_plan];
        let (ly, flats) =
            futures::try_join!(evaluate(c, &ly_plans), db::building_consumption(c, h.building_id, month.start, until))?;
        if let Some(wh) = ly.first().and_then(|s| s.first()).and_then(|s| s.energy.total) {
            last_year = Some(LastYear {
                start: ly_start,
                end: ly_end,
                kwh: wh_to_kwh(wh),
                own_kwh: wh_to_kwh(own),
                change_percent: change_percent(own, wh),
            });
        }
        // The other flats only, and at least MIN_NEIGHBOURS of them: with two flats the median would
        // give the neighbour's own consumption away (2 × median − own), with an odd few one flat's.
        let mut values: Vec<i64> = flats.iter().filter(|(id, _)| **id != h.id).map(|(_, wh)| *wh).collect();
        let n = values.len();
        if n < MIN_NEIGHBOURS {
            values.clear();
        }
        if let Some(median) = usage::median(&mut values) {
            building = Some(BuildingMedian {
                building: h.building_code.clone(),
                start: month.start,
                end: until,
                households: n,
                median_kwh: wh_to_kwh(median),
                own_kwh: wh_to_kwh(own),
                change_percent: change_percent(own, median),
            });
        }
    }
    let (zones, bill_to_date, projection) = match cost {
        Some(c) => (c.zones, c.to_date, c.projection),
        None => (None, None, None),
    };
    Ok(Summary {
        household: h.code.clone(),
        apartment: h.apartment.clone(),
        address: h.address.clone(),
        as_of,
        today: PeriodUse::of(&today_s),
        yesterday: PeriodUse::of(&yesterday_s),
        month,
        zones,
        bill_to_date,
        projection,
        last_year,
        building,
    })
}

/// One 15-minute interval of a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalRow {
    /// Interval end (UTC): the reading's `ts`.
    pub end: DateTime<Utc>,
    pub energy: Energy,
}

/// The 15-minute intervals of the local month starting on `first` that have ended by `now` (gaps
/// included, as rows without values).
pub async fn month_intervals(
    c: &impl GenericClient,
    h: &Household,
    first: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<IntervalRow>, HouseholdError> {
    let (start, end) = View::Month(first).span();
    let ids = h.meter_ids_in(start, end);
    let readings = db::readings(c, &ids, start, end.min(now)).await?;
    let mut ends = Vec::with_capacity(3000);
    let mut t = start + calendar::INTERVAL;
    while t <= end.min(now) {
        ends.push(t);
        t += calendar::INTERVAL;
    }
    let energy = usage::intervals(&ends, &readings, &h.spans());
    Ok(ends.into_iter().zip(energy).map(|(end, energy)| IntervalRow { end, energy }).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn look_ups_resolve_against_loaded_readings() {
        let r: Vec<Reading> = vec![
            (1, 1, t("2026-11-20T10:00:00Z"), 100),
            (1, 1, t("2026-11-20T10:15:00Z"), 110),
            (1, 2, t("2026-11-20T10:15:00Z"), 60),
            (2, 1, t("2026-11-20T10:30:00Z"), 999),
        ];
        let (a, b) = (t("2026-11-20T10:00:00Z"), t("2026-11-20T11:00:00Z"));
        let l = [(1, Lookup::At(a)), (1, Lookup::LastIn(a, b)), (1, Lookup::FirstIn(a, b))];
        let f = found_in(&l, &r);
        assert_eq!(f[&(1, Lookup::At(a))].values[0], Some((a, 100)));
        assert_eq!(f[&(1, Lookup::LastIn(a, b))].values[0], Some((t("2026-11-20T10:15:00Z"), 110)));
        assert_eq!(f[&(1, Lookup::LastIn(a, b))].values[1], Some((t("2026-11-20T10:15:00Z"), 60)));
        assert_eq!(f[&(1, Lookup::FirstIn(a, b))].values[0], Some((a, 100)));
        assert_eq!(f[&(1, Lookup::At(a))].values[1], None);
    }

    #[test]
    fn change_in_percent() {
        assert_eq!(change_percent(110, 100), Some(Decimal::new(100, 1)));
        assert_eq!(change_percent(2, 3), Some(Decimal::new(-333, 1)));
        assert_eq!(change_percent(5, 0), None);
    }
}
