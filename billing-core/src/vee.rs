//! Validation, estimation and editing (VEE) of cumulative energy registers, as BILLING.md's "VEE before
//! billing" describes it. Pure functions; the run ([`crate::run`]) applies them at the period boundaries and
//! [`vee_series`] applies them to a whole interval series.
//!
//! # Validation ([`vee_series`])
//!
//! | finding | rule |
//! |---|---|
//! | `register_decreased` | a cumulative reading below the last accepted one; the reading is dropped (it becomes a gap) |
//! | `gap` | missing 15-minute register readings (one finding per run of missing instants) |
//! | `spike_power` | an interval's energy above approved kW × 0.25 h × [`VeeConfig::power_margin`]: more than the connection can deliver |
//! | `spike` | in a 24 h window (96 intervals), the highest interval above [`VeeConfig::spike_ratio`] × the third-highest and above [`VeeConfig::spike_min_wh`] (BILLING.md: "highest interval vs. the third-highest in 24 h") |
//! | `zero_consumption` | a run of actual zero-energy intervals of at least [`VeeConfig::zero_run`] |
//! | `not_estimable` | a gap that could be neither interpolated nor estimated from like days |
//!
//! The run adds two checks on registers ([`crate::run`]): `sum_mismatch` (ΔVT + ΔNT vs Δtotal 1.0.1.8.0
//! beyond [`VeeConfig::sum_tolerance_wh`]) and `spike_power` on the whole period (consumption above approved
//! kW × period hours × margin).
//!
//! # Estimation
//!
//! - **Short gaps** (≤ [`VeeConfig::max_interpolation_gap`], default 3 h, between two actual readings): linear
//!   interpolation of the cumulative register, rounded down to the Wh — quality [`Quality::Interpolated`].
//! - **Longer gaps**: **like day** — the same household's energy over the same local clock times on the same
//!   weekday 1…[`VeeConfig::like_day_weeks`] weeks earlier (a cumulative register makes that a difference of two
//!   readings per week: `R(t2 − w) − R(t1 − w)`), averaged over the weeks that have both readings — quality
//!   [`Quality::LikeDay`]. When the gap is bounded by actual readings on both sides the energy across it is
//!   *known* (the register difference): the like-day profile only shapes it, scaled to add up exactly. An
//!   unbounded gap (no reading after it, or before it) takes the like-day energy as is.
//! - Every estimated interval carries its quality flag; estimates are validated again (they are never negative
//!   and never above the power limit, else `not_estimable`).
//! - **Estimated kWh of a bill**: the energy whose amount depends on an estimate — an unbounded gap's energy,
//!   or the part inside the period of a gap that spans a period boundary. Energy inside a gap bounded by two
//!   actual readings within the period is measured (only its shape is estimated).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, LocalResult, Offset, TimeZone, Utc};
use chrono_tz::Europe::Belgrade;
use rust_decimal::Decimal;

use crate::interval::INTERVAL;

/// A register reading: the cumulative Wh at the end of an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub ts: DateTime<Utc>,
    pub wh: i64,
}

/// Quality of a register value or interval (NEM12 letter and Green Button code in [`Quality::nem12`] and
/// [`Quality::green_button`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Actual,
    /// Linear interpolation of the cumulative register across a short gap.
    Interpolated,
    /// From like days (same weekday, previous weeks).
    LikeDay,
}

impl Quality {
    /// NEM12: A actual, E estimated.
    pub fn nem12(self) -> char {
        match self {
            Quality::Actual => 'A',
            Quality::Interpolated | Quality::LikeDay => 'E',
        }
    }

    /// Green Button: 0 valid, 8 estimated from a reference day, 9 interpolated.
    pub fn green_button(self) -> u8 {
        match self {
            Quality::Actual => 0,
            Quality::LikeDay => 8,
            Quality::Interpolated => 9,
        }
    }

    pub fn is_estimated(self) -> bool {
        self != Quality::Actual
    }
}

/// The configurable VEE rules (defaults as BILLING.md suggests; every number is a default to confirm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VeeConfig {
    /// Longest gap estimated by linear interpolation (BILLING.md: "a configured maximum, e.g. 3 h").
    pub max_interpolation_gap: Duration,
    /// How many previous weeks a like day may come from.
    pub like_day_weeks: u32,
    /// An interval above approved kW × 0.25 h × this factor is a `spike_power`.
    pub power_margin: Decimal,
    /// A 24 h window whose highest interval is above this × its third-highest has a `spike`.
    pub spike_ratio: i64,
    /// … and only when the highest interval is above this many Wh.
    pub spike_min_wh: i64,
    /// A run of zero intervals this long is `zero_consumption`.
    pub zero_run: Duration,
    /// Largest accepted |ΔVT + ΔNT − Δtotal| in Wh.
    pub sum_tolerance_wh: i64,
}

impl Default for VeeConfig {
    fn default() -> VeeConfig {
        VeeConfig {
            max_interpolation_gap: Duration::hours(3),
            like_day_weeks: 4,
            power_margin: Decimal::ONE,
            spike_ratio: 10,
            spike_min_wh: 500,
            zero_run: Duration::hours(24),
            sum_tolerance_wh: 10,
        }
    }
}

/// A VEE finding (becomes a `billing_problems` row in a run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: &'static str,
    pub at: DateTime<Utc>,
    pub detail: String,
}

/// `ts` moved `weeks` weeks back at the same Europe/Belgrade local clock time (DST-aware); `None` when that
/// local time does not exist (the spring-forward hour). An ambiguous time takes the same UTC offset order.
pub fn weeks_earlier(ts: DateTime<Utc>, weeks: u32) -> Option<DateTime<Utc>> {
    let here = ts.with_timezone(&Belgrade);
    let local = here.naive_local() - Duration::weeks(i64::from(weeks));
    let t = match Belgrade.from_local_datetime(&local) {
        LocalResult::Single(t) => t,
        // The repeated autumn hour: the same UTC offset as `ts` (summer time first).
        LocalResult::Ambiguous(a, b) => {
            if a.offset().fix() == here.offset().fix() {
                a
            } else {
                b
            }
        }
        LocalResult::None => return None,
    };
    Some(t.with_timezone(&Utc))
}

/// Like-day energy over `(t1, t2]`: the mean over weeks 1…`weeks` of `R(t2 − w) − R(t1 − w)` where both
/// readings exist and the difference is ≥ 0, rounded to the Wh; `None` without any such week.
pub fn like_day_wh(
    history: &dyn Fn(DateTime<Utc>) -> Option<i64>,
    t1: DateTime<Utc>,
    t2: DateTime<Utc>,
    weeks: u32,
) -> Option<i64> {
    let mut sum: i128 = 0;
    let mut n: i128 = 0;
    for w in 1..=weeks {
        let (Some(a), Some(b)) = (weeks_earlier(t1, w), weeks_earlier(t2, w)) else { continue };
        if let (Some(ra), Some(rb)) = (history(a), history(b)) {
            if rb >= ra {
                sum += i128::from(rb - ra);
                n += 1;
            }
        }
    }
    if n == 0 {
        return None;
    }
    i64::try_from((sum + n / 2) / n).ok()
}

/// The register at a boundary instant `at` estimated from the nearest actual readings `before` (< at) and
/// `after` (> at) and the household's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundaryEstimate {
    pub wh: i64,
    pub quality: Quality,
}

/// Estimates the register at `at` (see the module rules): interpolation across a short gap, like-day shaping of
/// a long bounded gap, like-day extrapolation from one side. `None` when nothing applies.
pub fn estimate_boundary(
    at: DateTime<Utc>,
    before: Option<Read>,
    after: Option<Read>,
    history: &dyn Fn(DateTime<Utc>) -> Option<i64>,
    cfg: &VeeConfig,
) -> Option<BoundaryEstimate> {
    let before = before.filter(|b| b.ts < at);
    let after = after.filter(|a| a.ts > at);
    match (before, after) {
        (Some(b), Some(a)) => {
            if a.wh < b.wh {
                return None;
            }
            let span = (a.ts - b.ts).num_seconds();
            let part = (at - b.ts).num_seconds();
            let delta = i128::from(a.wh - b.wh);
            let linear = |q| BoundaryEstimate {
                wh: b.wh + i64::try_from(delta * i128::from(part) / i128::from(span)).unwrap_or(0),
                quality: q,
            };
            if a.ts - b.ts <= cfg.max_interpolation_gap {
                return Some(linear(Quality::Interpolated));
            }
            match (
                like_day_wh(history, b.ts, at, cfg.like_day_weeks),
                like_day_wh(history, at, a.ts, cfg.like_day_weeks),
            ) {
                (Some(l1), Some(l2)) if l1 + l2 > 0 => Some(BoundaryEstimate {
                    wh: b.wh + i64::try_from(delta * i128::from(l1) / i128::from(l1 + l2)).unwrap_or(0),
                    quality: Quality::LikeDay,
                }),
                // Bounded: the energy is known; without a profile it is spread linearly.
                _ => Some(linear(Quality::Interpolated)),
            }
        }
        (Some(b), None) => like_day_wh(history, b.ts, at, cfg.like_day_weeks)
            .map(|l| BoundaryEstimate { wh: b.wh.saturating_add(l), quality: Quality::LikeDay }),
        (None, Some(a)) => like_day_wh(history, at, a.ts, cfg.like_day_weeks)
            .map(|l| BoundaryEstimate { wh: (a.wh - l).max(0), quality: Quality::LikeDay }),
        (None, None) => None,
    }
}

/// One 15-minute interval after VEE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalOut {
    /// Interval end (UTC).
    pub end: DateTime<Utc>,
    pub wh: i64,
    pub quality: Quality,
}

/// The VEE of one register over `(from, to]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesResult {
    /// Every interval of `(from, to]`; missing when a gap could not be estimated.
    pub intervals: Vec<IntervalOut>,
    pub findings: Vec<Finding>,
    /// Σ energy of estimated intervals.
    pub estimated_interval_wh: i64,
    /// Σ energy whose amount depends on an estimate (unbounded gaps; the bill's estimated kWh).
    pub estimated_wh: i64,
    /// Σ energy of all intervals.
    pub total_wh: i64,
}

/// Validates and estimates one cumulative register over `(from, to]` (interval ends on the 15-minute grid).
/// `readings` are the stored readings (any order), including the history before `from` that like days need
/// and any readings after `to` that bound a final gap; `approved_kw` is the household's connection power.
pub fn vee_series(
    readings: &[Read],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    approved_kw: Decimal,
    cfg: &VeeConfig,
) -> SeriesResult {
    let mut findings = Vec::new();
    // 1. Decreasing registers: a reading below the last accepted one is dropped.
    let mut sorted: Vec<Read> = readings.to_vec();
    sorted.sort_by_key(|r| r.ts);
    sorted.dedup_by_key(|r| r.ts);
    let mut accepted: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
    let mut last: Option<Read> = None;
    for r in sorted {
        if let Some(l) = last {
            if r.wh < l.wh {
                findings.push(Finding {
                    kind: "register_decreased",
                    at: r.ts,
                    detail: format!("{} Wh at {} after {} Wh at {}: reading dropped", r.wh, r.ts, l.wh, l.ts),
                });
                continue;
            }
        }
        accepted.insert(r.ts, r.wh);
        last = Some(r);
    }
    let actual = |t: DateTime<Utc>| accepted.get(&t).copied();

    // 2. The grid from..=to and its actual values.
    let n = usize::try_from((to - from).num_minutes() / 15).unwrap_or(0);
    let grid: Vec<DateTime<Utc>> = (0..=n).map(|k| from + INTERVAL * i32::try_from(k).unwrap_or(0)).collect();
    let mut value: Vec<Option<(i64, Quality)>> =
        grid.iter().map(|t| actual(*t).map(|w| (w, Quality::Actual))).collect();
    let mut estimated_wh: i64 = 0;

    // 3. Gaps and their estimates.
    let mut k = 0;
    while k <= n {
        if value[k].is_some() {
            k += 1;
            continue;
        }
        let start = k;
        while k <= n && value[k].is_none() {
            k += 1;
        }
        let end = k; // first known index after the gap, or n + 1
        let missing = end - start;
        findings.push(Finding {
            kind: "gap",
            at: grid[start],
            detail: format!("{missing} register reading(s) missing from {} to {}", grid[start], grid[end - 1]),
        });
        // Bounds: inside the grid, or the nearest accepted reading outside it.
        let left = if start > 0 {
            value[start - 1].map(|(w, _)| Read { ts: grid[start - 1], wh: w })
        } else {
            accepted.range(..grid[start]).next_back().map(|(t, w)| Read { ts: *t, wh: *w })
        };
        let right = if end <= n {
            value[end].map(|(w, _)| Read { ts: grid[end], wh: w })
        } else {
            accepted.range(grid[n] + Duration::seconds(1)..).next().map(|(t, w)| Read { ts: *t, wh: *w })
        };
        let history = |t: DateTime<Utc>| actual(t);
        let mut ok = true;
        for i in start..end {
            match estimate_boundary(grid[i], left, right, &history, cfg) {
                Some(e) => value[i] = Some((e.wh, e.quality)),
                None => ok = false,
            }
        }
        // Monotonic after rounding: never below the previous value.
        for i in start..end {
            if let (Some((p, _)), Some((v, q))) = (if i > 0 { value[i - 1] } else { None }, value[i]) {
                if v < p {
                    value[i] = Some((p, q));
                }
            }
        }
        if !ok {
            findings.push(Finding {
                kind: "not_estimable",
                at: grid[start],
                detail: format!("no bounding readings or like days for the gap from {}", grid[start]),
            });
            for v in value.iter_mut().take(end).skip(start) {
                *v = None;
            }
            continue;
        }
        // Energy that depends on an estimate: the whole gap when one side is unbounded, else only the part of a
        // bounded gap that crosses the edge of the grid (its split between periods is estimated).
        let inside = |a: usize, b: usize| -> i64 {
            match (value.get(a).copied().flatten(), value.get(b).copied().flatten()) {
                (Some((x, _)), Some((y, _))) => y - x,
                _ => 0,
            }
        };
        let bounded_inside = matches!((left, right), (Some(l), Some(r)) if l.ts >= grid[0] && r.ts <= grid[n]);
        if !bounded_inside {
            estimated_wh += inside(start.saturating_sub(1), end.min(n));
        }
    }

    // 4. Intervals, spikes, zero runs.
    let limit = approved_kw * Decimal::new(250, 0) * cfg.power_margin;
    let mut intervals = Vec::with_capacity(n);
    for k in 1..=n {
        let (Some((a, qa)), Some((b, qb))) = (value[k - 1], value[k]) else { continue };
        // An interval is estimated when either of its register values is.
        let quality = if qb.is_estimated() { qb } else { qa };
        let wh = b - a;
        if Decimal::from(wh) > limit {
            let kind = "spike_power";
            findings.push(Finding {
                kind,
                at: grid[k],
                detail: format!(
                    "{wh} Wh in the 15 min ending {}: above {} kW × 0.25 h × {} = {} Wh",
                    grid[k],
                    approved_kw,
                    cfg.power_margin,
                    limit.round_dp(3)
                ),
            });
        }
        intervals.push(IntervalOut { end: grid[k], wh, quality });
    }
    for window in intervals.chunks(96) {
        let mut top: Vec<i64> = window.iter().filter(|i| !i.quality.is_estimated()).map(|i| i.wh).collect();
        if top.len() < 3 {
            continue;
        }
        top.sort_unstable_by(|a, b| b.cmp(a));
        let (max, third) = (top[0], top[2]);
        if max > cfg.spike_min_wh && max > third.saturating_mul(cfg.spike_ratio) {
            let at = window.iter().find(|i| i.wh == max).map_or(window[0].end, |i| i.end);
            findings.push(Finding {
                kind: "spike",
                at,
                detail: format!(
                    "{max} Wh in the 15 min ending {at}: above {} × the third-highest ({third} Wh) in 24 h",
                    cfg.spike_ratio
                ),
            });
        }
    }
    let zero_len = usize::try_from(cfg.zero_run.num_minutes() / 15).unwrap_or(usize::MAX).max(1);
    let mut run = 0usize;
    for (i, iv) in intervals.iter().enumerate() {
        if iv.wh == 0 && !iv.quality.is_estimated() {
            run += 1;
            if run == zero_len {
                let first = &intervals[i + 1 - zero_len];
                findings.push(Finding {
                    kind: "zero_consumption",
                    at: first.end - INTERVAL,
                    detail: format!(
                        "no consumption for at least {} h from {}",
                        cfg.zero_run.num_hours(),
                        first.end - INTERVAL
                    ),
                });
            }
        } else {
            run = 0;
        }
    }
    let total_wh = intervals.iter().map(|i| i.wh).sum();
    let estimated_interval_wh = intervals.iter().filter(|i| i.quality.is_estimated()).map(|i| i.wh).sum();
    SeriesResult { intervals, findings, estimated_interval_wh, estimated_wh, total_wh }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Readings at `from`, `from + 15 min`, … starting at `start_wh`, one per interval energy in `wh`.
    fn series(from: DateTime<Utc>, start_wh: i64, wh: &[i64]) -> Vec<Read> {
        let mut out = vec![Read { ts: from, wh: start_wh }];
        let mut acc = start_wh;
        for (k, e) in wh.iter().enumerate() {
            acc += e;
            out.push(Read { ts: from + INTERVAL * (i32::try_from(k).unwrap() + 1), wh: acc });
        }
        out
    }

    fn kinds(r: &SeriesResult) -> Vec<&'static str> {
        r.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn weeks_earlier_keeps_the_local_clock_across_dst() {
        // 2026-10-27 13:00 CET (12:00Z) → 2026-10-20 13:00 CEST (11:00Z): summer time ended on 2026-10-25.
        assert_eq!(weeks_earlier(t("2026-10-27T12:00:00Z"), 1), Some(t("2026-10-20T11:00:00Z")));
        assert_eq!(weeks_earlier(t("2026-11-20T12:00:00Z"), 2), Some(t("2026-11-06T12:00:00Z")));
        // 2026-04-05 02:30 CEST (00:30Z) − 1 week = 2026-03-29 02:30, which does not exist (spring forward).
        assert_eq!(weeks_earlier(t("2026-04-05T00:30:00Z"), 1), None);
    }

    #[test]
    fn a_short_bounded_gap_is_interpolated_and_the_bill_is_not_estimated() {
        let from = t("2026-11-16T23:00:00Z");
        let mut r = series(from, 1_000, &[100; 96]);
        // Readings at 02:15, 02:30, 02:45 (local 03:15…) missing: a 45-minute gap, 1 h between its bounds.
        r.retain(|x| !(x.ts > from + Duration::hours(2) && x.ts < from + Duration::hours(3)));
        let out = vee_series(&r, from, from + Duration::hours(24), dec!(5.75), &VeeConfig::default());
        assert_eq!(kinds(&out), ["gap"]);
        assert_eq!(out.intervals.len(), 96);
        let est: Vec<(i64, Quality)> =
            out.intervals.iter().filter(|i| i.quality.is_estimated()).map(|i| (i.wh, i.quality)).collect();
        assert_eq!(est, vec![(100, Quality::Interpolated); 4]);
        assert_eq!((out.total_wh, out.estimated_interval_wh, out.estimated_wh), (9_600, 400, 0));
        // Uneven energy across the gap: 1 h between 1,800 and 2,203 Wh → 1,900, 2,001, 2,102 (floored).
        let b = Read { ts: from, wh: 1_800 };
        let a = Read { ts: from + Duration::hours(1), wh: 2_203 };
        let none = |_: DateTime<Utc>| None;
        let at =
            |m: i64| estimate_boundary(from + Duration::minutes(m), Some(b), Some(a), &none, &VeeConfig::default());
        assert_eq!([15, 30, 45].map(|m| at(m).unwrap().wh), [1_900, 2_001, 2_102]);
        assert_eq!(at(30).unwrap().quality, Quality::Interpolated);
    }

    #[test]
    fn a_long_gap_at_the_end_takes_like_days() {
        let from = t("2026-11-16T23:00:00Z"); // Tuesday 2026-11-17 00:00 local
        let mut r = Vec::new();
        // Two weeks earlier 60 Wh per interval, one week earlier 40 Wh: like-day mean 50 Wh per interval.
        r.extend(series(from - Duration::weeks(2), 0, &[60; 96]));
        r.extend(series(from - Duration::weeks(1), 10_000, &[40; 96]));
        // The day itself: 100 Wh per interval for 12 h, then nothing (unbounded gap of 12 h).
        r.extend(series(from, 20_000, &[100; 48]));
        let out = vee_series(&r, from, from + Duration::hours(24), dec!(5.75), &VeeConfig::default());
        assert_eq!(kinds(&out), ["gap"]);
        assert_eq!(out.intervals.len(), 96);
        assert!(out.intervals[48..].iter().all(|i| i.quality == Quality::LikeDay && i.wh == 50));
        assert_eq!((out.total_wh, out.estimated_wh, out.estimated_interval_wh), (4_800 + 2_400, 2_400, 2_400));
        assert_eq!(
            (Quality::LikeDay.nem12(), Quality::LikeDay.green_button(), Quality::Interpolated.green_button()),
            ('E', 8, 9)
        );
        // Without history the gap cannot be estimated.
        let alone = series(from, 20_000, &[100; 48]);
        let out = vee_series(&alone, from, from + Duration::hours(24), dec!(5.75), &VeeConfig::default());
        assert_eq!(kinds(&out), ["gap", "not_estimable"]);
        assert_eq!(out.intervals.len(), 48);
    }

    #[test]
    fn a_long_bounded_gap_is_shaped_by_the_like_day_and_adds_up() {
        let from = t("2026-11-16T23:00:00Z");
        // One week earlier: 0 Wh for 3 h, then 100 Wh per interval for 3 h.
        let hist = series(from - Duration::weeks(1), 5_000, &[[0; 12], [100; 12]].concat());
        let hist: BTreeMap<DateTime<Utc>, i64> = hist.iter().map(|r| (r.ts, r.wh)).collect();
        let h = |x: DateTime<Utc>| hist.get(&x).copied();
        // Now: 6 h without readings between 10,000 and 11,200 Wh.
        let b = Read { ts: from, wh: 10_000 };
        let a = Read { ts: from + Duration::hours(6), wh: 11_200 };
        let cfg = VeeConfig::default();
        let at = |hh: i64| estimate_boundary(from + Duration::hours(hh), Some(b), Some(a), &h, &cfg).unwrap();
        assert_eq!(at(3), BoundaryEstimate { wh: 10_000, quality: Quality::LikeDay });
        assert_eq!(at(4).wh, 10_400); // 400 of the like day's 1,200 Wh, scaled to the known 1,200 Wh
        assert_eq!(at(5).wh, 10_800);
        // One side only: the like-day energy is added to the last actual reading.
        let e = estimate_boundary(from + Duration::hours(6), Some(b), None, &h, &cfg).unwrap();
        assert_eq!(e, BoundaryEstimate { wh: 11_200, quality: Quality::LikeDay });
        let e = estimate_boundary(from, None, Some(a), &h, &cfg).unwrap();
        assert_eq!(e.wh, 10_000);
        assert_eq!(estimate_boundary(from + Duration::hours(1), None, None, &h, &cfg), None);
    }

    #[test]
    fn decreasing_registers_spikes_and_zero_runs_are_found() {
        let from = t("2026-11-16T23:00:00Z");
        let mut wh = vec![100; 96];
        wh[40] = 2_000; // 2 kWh in 15 min: above 5.75 kW × 0.25 h = 1,437.5 Wh, and 20 × the third-highest
        let mut r = series(from, 1_000, &wh);
        r[10].wh = 500; // a decreasing reading: dropped and interpolated (100 Wh either side)
        let out = vee_series(&r, from, from + Duration::hours(24), dec!(5.75), &VeeConfig::default());
        assert_eq!(kinds(&out), ["register_decreased", "gap", "spike_power", "spike"]);
        assert_eq!(out.intervals[9].wh, 100);
        assert_eq!(out.intervals[9].quality, Quality::Interpolated);
        assert_eq!(out.intervals[40].wh, 2_000);
        assert_eq!(out.findings[2].at, from + Duration::minutes(15 * 41));
        // A whole day without consumption.
        let r = series(from, 1_000, &[0; 96]);
        let out = vee_series(&r, from, from + Duration::hours(24), dec!(5.75), &VeeConfig::default());
        assert_eq!(kinds(&out), ["zero_consumption"]);
        assert_eq!(out.findings[0].at, from);
    }

    #[test]
    fn a_gap_across_the_period_end_counts_only_its_part_inside() {
        let from = t("2026-11-16T23:00:00Z");
        let to = from + Duration::hours(24);
        // Readings until 1 h before the end and from 1 h after it: 2 h bounded gap, interpolated; 800 Wh in
        // 2 h, 400 of them inside the period are estimated.
        let mut r = series(from, 0, &[100; 92]);
        r.push(Read { ts: to + Duration::hours(1), wh: 9_200 + 800 });
        let out = vee_series(&r, from, to, dec!(5.75), &VeeConfig::default());
        assert_eq!(kinds(&out), ["gap"]);
        assert_eq!(out.total_wh, 9_200 + 400);
        assert_eq!(out.estimated_wh, 400);
    }
}
