//! Consumption from cumulative registers, pure: 15-minute intervals from consecutive readings, and the
//! energy of longer slots (days, months, the whole view) from register values at their boundaries.
//!
//! **Nothing is invented.** An interval's energy is `register(end) − register(end − 15 min)` of the same meter;
//! when either reading is missing (or the register went down), the interval is a gap (`None`). A slot's energy
//! is the register at its end minus the register at its start; a missing value makes the slot a gap, never an
//! estimate (estimates are billing's business, marked on the bill).
//!
//! **Meter exchange.** A household's meters each count over their own service window: from local midnight of
//! `installed_on` to local midnight after `removed_on` ([`MeterSpan`]). A slot's energy is the sum over the
//! meters in service during it of their own deltas, clipped to their windows. At an installation inside the
//! slot the meter's first reading of that day is its start; at a removal inside the slot its last reading
//! of the removal day is its end (as billing does, `billing_core::run`).
//!
//! **The slot not over yet** (today in a month, this month in a year) counts up to the meter's latest reading
//! before `now`: it is `partial`, and [`Slot::until`] says up to when.
//!
//! Registers: 1.0.1.8.0 (total import, channel 1) for the consumption, 1.0.1.8.1 / 1.0.1.8.2 (VT / NT,
//! channels 2 and 3) for the VT/NT split, all in Wh.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::calendar::{midnight, INTERVAL};

/// Channel of 1.0.1.8.0 (total import), 1.0.1.8.1 (VT) and 1.0.1.8.2 (NT), as in `schemas::CHANNELS`.
pub use billing_core::run::{CH_NT, CH_TOTAL, CH_VT};

/// The three registers, in [`Energy`] order.
pub const REGISTERS: [i16; 3] = [CH_TOTAL, CH_VT, CH_NT];

fn register_index(channel: i16) -> Option<usize> {
    REGISTERS.iter().position(|c| *c == channel)
}

/// A meter of the household and its service window `[from, to)` (UTC instants of local midnights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterSpan {
    pub id: i32,
    pub from: DateTime<Utc>,
    /// Local midnight after the removal day; `None` while in service.
    pub to: Option<DateTime<Utc>>,
}

impl MeterSpan {
    /// The window of a meter installed on `installed_on` and removed on `removed_on` (inclusive).
    pub fn new(id: i32, installed_on: NaiveDate, removed_on: Option<NaiveDate>) -> MeterSpan {
        MeterSpan { id, from: midnight(installed_on), to: removed_on.and_then(|d| d.succ_opt()).map(midnight) }
    }

    /// Whether the window meets `[start, end)`.
    pub fn meets(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.from < end && self.to.is_none_or(|to| to > start)
    }
}

/// Energy in Wh of one slot, per register; `None` = unknown (a gap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Energy {
    /// 1.0.1.8.0.
    pub total: Option<i64>,
    /// 1.0.1.8.1.
    pub vt: Option<i64>,
    /// 1.0.1.8.2.
    pub nt: Option<i64>,
}

impl Energy {
    fn from_array(a: [Option<i64>; 3]) -> Energy {
        Energy { total: a[0], vt: a[1], nt: a[2] }
    }

    /// VT + NT when both are known (what a bill counts), else the total register.
    pub fn billed_or_total(&self) -> Option<i64> {
        match (self.vt, self.nt) {
            (Some(v), Some(n)) => v.checked_add(n),
            _ => self.total,
        }
    }

    /// Σ of known values; `None` for a register when every slot lacks it.
    pub fn sum<'a>(items: impl IntoIterator<Item = &'a Energy>) -> Energy {
        let mut acc: [Option<i64>; 3] = [None; 3];
        for e in items {
            for (a, v) in acc.iter_mut().zip([e.total, e.vt, e.nt]) {
                if let Some(v) = v {
                    *a = Some(a.unwrap_or(0).saturating_add(v));
                }
            }
        }
        Energy::from_array(acc)
    }
}

/// A stored reading: `(meter, channel, interval end, register Wh)`.
pub type Reading = (i32, i16, DateTime<Utc>, i64);

/// 15-minute intervals ending at `ends` from the readings of the household's meters (channels 1–3). A meter's
/// interval counts when it lies in the meter's service window and both its readings (`end − 15 min` and
/// `end`) exist; the interval's energy is the sum over those meters (an exchange day: the old meter's
/// intervals, then the new one's), a gap when there is none. Readings outside a meter's window are ignored.
pub fn intervals(ends: &[DateTime<Utc>], readings: &[Reading], meters: &[MeterSpan]) -> Vec<Energy> {
    let mut at: HashMap<(i32, usize, DateTime<Utc>), i64> = HashMap::with_capacity(readings.len());
    for &(m, ch, ts, v) in readings {
        if let Some(i) = register_index(ch) {
            at.insert((m, i, ts), v);
        }
    }
    ends.iter()
        .map(|&end| {
            let mut e: [Option<i64>; 3] = [None; 3];
            let serving = meters.iter().filter(|m| m.from <= end - INTERVAL && m.to.is_none_or(|to| end <= to));
            let serving: Vec<i32> = serving.map(|m| m.id).collect();
            for (i, slot) in e.iter_mut().enumerate() {
                for &m in &serving {
                    if let (Some(a), Some(b)) = (at.get(&(m, i, end - INTERVAL)), at.get(&(m, i, end))) {
                        if b >= a {
                            *slot = Some(slot.unwrap_or(0).saturating_add(b - a));
                        }
                    }
                }
            }
            Energy::from_array(e)
        })
        .collect()
}

/// How a register value is looked up in `readings` (by primary key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lookup {
    /// The reading at exactly this instant.
    At(DateTime<Utc>),
    /// The latest reading in `(lo, hi]`.
    LastIn(DateTime<Utc>, DateTime<Utc>),
    /// The earliest reading in `[lo, hi)`.
    FirstIn(DateTime<Utc>, DateTime<Utc>),
}

/// A register value found: when, and Wh per register (channels 1, 2, 3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Point {
    pub values: [Option<(DateTime<Utc>, i64)>; 3],
}

/// The lookups' results, by meter and lookup.
pub type Found = HashMap<(i32, Lookup), Point>;

/// Whether a slot is over, running (holds `now`) or still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Past,
    Running,
    Future,
}

/// One meter's part of a slot: its register at the start and at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part {
    meter: i32,
    start: Lookup,
    end: Lookup,
    /// The end is the meter's latest reading before `now` (not a removal or the slot's end).
    running: bool,
}

/// A slot to compute.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotPlan {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    state: SlotState,
    parts: Vec<Part>,
}

/// The register look-ups for the slots between consecutive `boundaries`, given the meters' windows and `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    slots: Vec<SlotPlan>,
}

/// A computed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub state: SlotState,
    pub energy: Energy,
    /// For a running slot: the time of the latest reading counted (the earliest over the meters and
    /// registers); `None` when nothing was read yet or the slot is over.
    pub until: Option<DateTime<Utc>>,
}

impl Slot {
    pub fn is_gap(&self) -> bool {
        self.state != SlotState::Future && self.energy.total.is_none()
    }
}

/// The longest a window edge's reading is looked for (a meter installed or removed during a day).
const EDGE_SEARCH: Duration = Duration::days(1);

impl Plan {
    /// One slot per pair of consecutive `boundaries`.
    pub fn new(boundaries: &[DateTime<Utc>], meters: &[MeterSpan], now: DateTime<Utc>) -> Plan {
        let slots = boundaries.windows(2).map(|w| plan_slot(w[0], w[1], meters, now)).collect();
        Plan { slots }
    }

    /// Every look-up the plan needs, by meter, without duplicates.
    pub fn lookups(&self) -> Vec<(i32, Lookup)> {
        let set: BTreeSet<(i32, Lookup)> = self
            .slots
            .iter()
            .flat_map(|s| s.parts.iter())
            .flat_map(|p| [(p.meter, p.start), (p.meter, p.end)])
            .collect();
        set.into_iter().collect()
    }

    /// The slots' energy from the look-ups' results.
    pub fn evaluate(&self, found: &Found) -> Vec<Slot> {
        self.slots.iter().map(|s| evaluate_slot(s, found)).collect()
    }
}

fn plan_slot(a: DateTime<Utc>, b: DateTime<Utc>, meters: &[MeterSpan], now: DateTime<Utc>) -> SlotPlan {
    let state = if a >= now {
        SlotState::Future
    } else if b > now {
        SlotState::Running
    } else {
        SlotState::Past
    };
    let mut parts = Vec::new();
    if state != SlotState::Future {
        for m in meters.iter().filter(|m| m.meets(a, b)) {
            let s = a.max(m.from);
            let removed_inside = m.to.filter(|to| *to < b);
            let start = if m.from > a { Lookup::FirstIn(m.from, m.from + EDGE_SEARCH) } else { Lookup::At(a) };
            let (end, running) = match removed_inside {
                Some(to) if to <= now => (Lookup::LastIn(s.max(to - EDGE_SEARCH), to), false),
                _ if state == SlotState::Running => (Lookup::LastIn(s, now), true),
                _ => (Lookup::At(b), false),
            };
            if s < now {
                parts.push(Part { meter: m.id, start, end, running });
            }
        }
    }
    SlotPlan { start: a, end: b, state, parts }
}

fn evaluate_slot(s: &SlotPlan, found: &Found) -> Slot {
    let mut e: [Option<i64>; 3] = [None; 3];
    // A running slot is counted up to its meters' latest readings (the earliest of them); when no meter
    // in service reaches `now` (removed, not replaced), up to the last reading counted.
    let (mut until_running, mut until_any): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
    if s.state != SlotState::Future {
        for (i, slot) in e.iter_mut().enumerate() {
            let mut acc = Some(0i64);
            for p in &s.parts {
                let start = found.get(&(p.meter, p.start)).and_then(|x| x.values[i]);
                let end = found.get(&(p.meter, p.end)).and_then(|x| x.values[i]);
                let delta = match (start, end) {
                    (Some((ta, va)), Some((tb, vb))) if tb >= ta && vb >= va => Some(vb - va),
                    _ => None,
                };
                if i == 0 && s.state == SlotState::Running {
                    if let (Some((tb, _)), Some(_)) = (end, delta) {
                        until_any = Some(until_any.map_or(tb, |u| u.max(tb)));
                        if p.running {
                            until_running = Some(until_running.map_or(tb, |u| u.min(tb)));
                        }
                    }
                }
                acc = acc.zip(delta).map(|(x, d)| x.saturating_add(d));
            }
            // A slot no meter was in service during is unknown, not zero.
            *slot = if s.parts.is_empty() { None } else { acc };
        }
    }
    let until = if e[0].is_none() { None } else { until_running.or(until_any) };
    Slot { start: s.start, end: s.end, state: s.state, energy: Energy::from_array(e), until }
}

/// The value of a sorted list's middle (the mean of the two middle values, rounded half up, for an even
/// count); `None` when empty.
pub fn median(values: &mut [i64]) -> Option<i64> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => values.get(n / 2).copied(),
        _ => {
            let (a, b) = (i128::from(values[n / 2 - 1]), i128::from(values[n / 2]));
            i64::try_from((a + b + 1).div_euclid(2)).ok()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::household::calendar::{day_grid, View};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// Readings of meter `m` on channel 1 at `ends` with a register rising by `wh(i)` per interval.
    fn rising(m: i32, ends: &[DateTime<Utc>], start: i64, wh: impl Fn(usize) -> i64) -> Vec<Reading> {
        let mut v = start;
        let mut out = Vec::new();
        for (i, e) in ends.iter().enumerate() {
            if i > 0 {
                v += wh(i);
            }
            out.push((m, CH_TOTAL, *e, v));
        }
        out
    }

    #[test]
    fn dst_days_give_92_and_100_intervals_of_their_own_energy() {
        for (day, n) in [("2026-03-29", 92), ("2026-10-25", 100), ("2026-11-20", 96)] {
            let view = View::Day(d(day));
            let b = view.boundaries();
            let grid = day_grid(d(day));
            assert_eq!(grid.len(), n);
            let readings = rising(7, &b, 1_000_000, |i| i as i64);
            let e = intervals(&grid, &readings, &[MeterSpan::new(7, d("2025-01-01"), None)]);
            assert_eq!(e.len(), n);
            assert!(e.iter().enumerate().all(|(i, x)| x.total == Some(i as i64 + 1)), "{day}");
            assert!(e.iter().all(|x| x.vt.is_none() && x.nt.is_none()));
        }
    }

    #[test]
    fn a_missing_reading_makes_two_gaps_and_nothing_is_invented() {
        let b = View::Day(d("2026-11-20")).boundaries();
        let mut readings = rising(1, &b, 500, |_| 10);
        readings.remove(40); // the reading ending interval 40 (and starting interval 41)
        readings.retain(|r| r.2 < b[90]); // nothing after interval 89
        let meter = [MeterSpan::new(1, d("2025-01-01"), None)];
        let e = intervals(&b[1..], &readings, &meter);
        assert_eq!(e[38].total, Some(10));
        assert_eq!((e[39].total, e[40].total), (None, None));
        assert_eq!(e[41].total, Some(10));
        assert_eq!(e[88].total, Some(10));
        assert!(e[89..].iter().all(|x| x.total.is_none()));
        // A register going down is a gap too.
        let mut down = rising(1, &b[..3], 500, |_| 10);
        down[2].3 = 400;
        assert_eq!(intervals(&b[1..3], &down, &meter)[1].total, None);
    }

    fn found(entries: &[(i32, Lookup, DateTime<Utc>, i64)]) -> Found {
        let mut f = Found::new();
        for &(m, l, ts, v) in entries {
            f.entry((m, l)).or_default().values[0] = Some((ts, v));
        }
        f
    }

    #[test]
    fn days_of_a_month_from_registers_at_local_midnights() {
        let view = View::Month(d("2026-10-01"));
        let b = view.boundaries();
        let meter = MeterSpan::new(3, d("2025-01-10"), None);
        let now = t("2026-12-01T00:00:00Z");
        let plan = Plan::new(&b, &[meter], now);
        let lookups = plan.lookups();
        assert_eq!(lookups.len(), 32, "one look-up per midnight");
        assert!(lookups.iter().all(|(m, l)| *m == 3 && matches!(l, Lookup::At(_))));
        // Registers: +1000 Wh per day, except midnight of the 10th is missing.
        let f = found(
            &b.iter()
                .enumerate()
                .filter(|(i, _)| *i != 9)
                .map(|(i, ts)| (3, Lookup::At(*ts), *ts, 50_000 + 1000 * i as i64))
                .collect::<Vec<_>>(),
        );
        let slots = plan.evaluate(&f);
        assert_eq!(slots.len(), 31);
        assert_eq!(slots[0].energy.total, Some(1000));
        assert!(slots[8].is_gap() && slots[9].is_gap(), "the two days around a missing midnight");
        assert_eq!(slots.iter().filter(|s| !s.is_gap()).count(), 29);
        // The whole month from its two ends.
        let whole = Plan::new(&[b[0], b[31]], &[meter], now).evaluate(&f);
        assert_eq!(whole[0].energy.total, Some(31_000));
    }

    #[test]
    fn the_running_slot_counts_to_the_latest_reading_and_the_future_is_empty() {
        let b = View::Month(d("2026-11-01")).boundaries();
        let meter = MeterSpan::new(1, d("2025-01-10"), None);
        let now = t("2026-11-03T10:07:00Z");
        let plan = Plan::new(&b, &[meter], now);
        let lookups = plan.lookups();
        assert!(lookups.contains(&(1, Lookup::LastIn(b[2], now))));
        assert!(!lookups.iter().any(|(_, l)| *l == Lookup::At(b[3])), "no look-up for the future");
        let f = found(&[
            (1, Lookup::At(b[0]), b[0], 100),
            (1, Lookup::At(b[1]), b[1], 200),
            (1, Lookup::At(b[2]), b[2], 300),
            (1, Lookup::LastIn(b[2], now), t("2026-11-03T10:00:00Z"), 340),
        ]);
        let s = plan.evaluate(&f);
        assert_eq!(s[1].state, SlotState::Past);
        assert_eq!(
            (s[2].state, s[2].energy.total, s[2].until),
            (SlotState::Running, Some(40), Some(t("2026-11-03T10:00:00Z")))
        );
        assert!(s[3..].iter().all(|x| x.state == SlotState::Future && !x.is_gap()));
    }

    #[test]
    fn a_meter_exchange_sums_both_meters_over_their_windows() {
        // Old meter removed on the 10th (inclusive), new one installed on the 11th.
        let b = View::Month(d("2026-10-01")).boundaries();
        let old = MeterSpan::new(1, d("2025-01-01"), Some(d("2026-10-10")));
        let new = MeterSpan::new(2, d("2026-10-11"), None);
        let now = t("2027-01-01T00:00:00Z");
        let whole = Plan::new(&[b[0], b[31]], &[old, new], now);
        let l = whole.lookups();
        assert!(l.contains(&(1, Lookup::At(b[0]))));
        assert!(l.contains(&(1, Lookup::LastIn(b[10] - EDGE_SEARCH, b[10]))));
        assert!(l.contains(&(2, Lookup::FirstIn(b[10], b[10] + EDGE_SEARCH))));
        assert!(l.contains(&(2, Lookup::At(b[31]))));
        let f = found(&[
            (1, Lookup::At(b[0]), b[0], 10_000),
            (1, Lookup::LastIn(b[10] - EDGE_SEARCH, b[10]), b[10] - INTERVAL, 12_000),
            (2, Lookup::FirstIn(b[10], b[10] + EDGE_SEARCH), b[10] + INTERVAL, 5),
            (2, Lookup::At(b[31]), b[31], 3_005),
        ]);
        assert_eq!(whole.evaluate(&f)[0].energy.total, Some(5_000));
        // Daily slots: the old meter alone until the 10th, the new one from the 11th.
        let days = Plan::new(&b, &[old, new], now);
        let s = days.evaluate(&f);
        assert!(s[0].is_gap(), "the 1st needs the old meter's midnight of the 2nd");
        // Day 10: old meter from midnight (missing) … ; day 11: new meter from its first reading to midnight (missing).
        assert!(s[10].is_gap());
    }

    #[test]
    fn on_an_exchange_day_each_meter_counts_in_its_own_window() {
        // Old meter removed on the 19th (inclusive), new one installed on the 20th; both report all day.
        let day = View::Day(d("2026-11-20"));
        let b = day.boundaries();
        let old = MeterSpan::new(1, d("2025-01-01"), Some(d("2026-11-19")));
        let new = MeterSpan::new(2, d("2026-11-20"), None);
        let mut readings = rising(1, &b, 90_000, |_| 1000);
        readings.extend(rising(2, &b, 0, |_| 10));
        let e = intervals(&b[1..], &readings, &[old, new]);
        assert!(e.iter().all(|x| x.total == Some(10)), "only the new meter on its first day");
        let prev = View::Day(d("2026-11-19")).boundaries();
        let mut readings = rising(1, &prev, 90_000, |_| 1000);
        readings.extend(rising(2, &prev, 0, |_| 10));
        let e = intervals(&prev[1..], &readings, &[old, new]);
        assert!(e.iter().all(|x| x.total == Some(1000)), "only the old meter on its last day");
    }

    #[test]
    fn a_running_month_with_an_exchange_counts_to_the_new_meters_latest_reading() {
        let b = View::Month(d("2026-11-01")).boundaries();
        let old = MeterSpan::new(1, d("2025-01-01"), Some(d("2026-11-01")));
        let new = MeterSpan::new(2, d("2026-11-02"), None);
        let now = t("2026-11-03T10:07:00Z");
        let plan = Plan::new(&[b[0], b[30]], &[old, new], now);
        let l = plan.lookups();
        let (removal, install, latest) =
            (Lookup::LastIn(b[0], b[1]), Lookup::FirstIn(b[1], b[1] + EDGE_SEARCH), Lookup::LastIn(b[1], now));
        let want: BTreeSet<(i32, Lookup)> = [(1, Lookup::At(b[0])), (1, removal), (2, install), (2, latest)].into();
        assert_eq!(l.into_iter().collect::<BTreeSet<_>>(), want);
        let f = found(&[
            (1, Lookup::At(b[0]), b[0], 1_000),
            (1, removal, b[1], 1_500),
            (2, install, b[1], 7),
            (2, latest, t("2026-11-03T10:00:00Z"), 107),
        ]);
        let s = plan.evaluate(&f)[0];
        assert_eq!((s.energy.total, s.until), (Some(600), Some(t("2026-11-03T10:00:00Z"))));
    }

    #[test]
    fn a_slot_without_any_meter_is_a_gap() {
        let b = View::Year(2024).boundaries();
        let meter = MeterSpan::new(1, d("2025-06-01"), None);
        let s = Plan::new(&b, &[meter], t("2026-01-01T00:00:00Z")).evaluate(&Found::new());
        assert!(s.iter().all(Slot::is_gap));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5]), Some(5));
        assert_eq!(median(&mut [9, 1, 5]), Some(5));
        assert_eq!(median(&mut [4, 1, 3, 10]), Some(4)); // (3 + 4) / 2 rounded half up
    }
}
