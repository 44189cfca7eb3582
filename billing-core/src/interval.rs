//! Interval helpers: which tariff (VT or NT) an interval belongs to, and exact VT/NT sums.
//!
//! Readings carry the interval **end** in UTC (`ts`, 15-minute intervals). An interval belongs to the window
//! its **start** falls in, in Europe/Belgrade local time (BILLING.md), so DST days are handled by the time zone
//! database: the spring day (last Sunday of March) has 23 local hours, the autumn day (last Sunday of October)
//! 25, and the repeated 02:00–03:00 hour of the autumn day counts twice in whichever window contains hour 2.

use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::Europe::Belgrade;
use rust_decimal::Decimal;
use schemas::inventory::Region;

use crate::money::wh_to_kwh;

/// Length of a billing interval.
pub const INTERVAL: Duration = Duration::minutes(15);

/// Higher (day) or lower (night) tariff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeOfUse {
    Vt,
    Nt,
}

/// A night (NT) window `[from, to)` in local hours, wrapping midnight when `from > to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NightWindow {
    from: u32,
    to: u32,
}

impl NightWindow {
    /// `None` unless both hours are 0–23 and differ.
    pub const fn new(from: u32, to: u32) -> Option<NightWindow> {
        if from < 24 && to < 24 && from != to {
            Some(NightWindow { from, to })
        } else {
            None
        }
    }

    /// The default window of a region ([`Region::night_window`]).
    pub const fn of_region(region: Region) -> NightWindow {
        let (from, to) = region.night_window();
        NightWindow { from, to }
    }

    pub const fn from_hour(self) -> u32 {
        self.from
    }

    pub const fn to_hour(self) -> u32 {
        self.to
    }

    /// Whether a local hour of day (0–23) is in the window.
    pub const fn contains_hour(self, hour: u32) -> bool {
        if self.from < self.to {
            hour >= self.from && hour < self.to
        } else {
            hour >= self.from || hour < self.to
        }
    }

    /// The tariff of the 15-minute interval that **ends** at `end` (UTC): judged by its start in local time.
    pub fn classify(self, end: DateTime<Utc>) -> TimeOfUse {
        let start = end - INTERVAL;
        if self.contains_hour(start.with_timezone(&Belgrade).hour()) {
            TimeOfUse::Nt
        } else {
            TimeOfUse::Vt
        }
    }
}

/// Energy split by tariff, in whole Wh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VtNtWh {
    pub vt_wh: i64,
    pub nt_wh: i64,
}

impl VtNtWh {
    /// VT in kWh, exact.
    pub fn vt_kwh(&self) -> Decimal {
        wh_to_kwh(self.vt_wh)
    }

    /// NT in kWh, exact.
    pub fn nt_kwh(&self) -> Decimal {
        wh_to_kwh(self.nt_wh)
    }

    /// VT + NT in kWh, exact (saturating; the sum of two non-negative i64 Wh fits a Decimal).
    pub fn total_kwh(&self) -> Decimal {
        self.vt_kwh() + self.nt_kwh()
    }
}

/// Why an interval series could not be summed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    #[error("interval ending {ts} has negative energy {wh} Wh")]
    Negative { ts: DateTime<Utc>, wh: i64 },
    #[error("the sum overflows at the interval ending {ts}")]
    Overflow { ts: DateTime<Utc> },
}

/// Sums a series of `(interval end UTC, Wh)` into VT and NT, exactly. Negative energy is refused (it is a VEE
/// matter, not a billing one); duplicates are not detected here — pass each interval once.
pub fn sum_vt_nt<I>(window: NightWindow, series: I) -> Result<VtNtWh, IntervalError>
where
    I: IntoIterator<Item = (DateTime<Utc>, i64)>,
{
    let mut acc = VtNtWh::default();
    for (ts, wh) in series {
        if wh < 0 {
            return Err(IntervalError::Negative { ts, wh });
        }
        let slot = match window.classify(ts) {
            TimeOfUse::Vt => &mut acc.vt_wh,
            TimeOfUse::Nt => &mut acc.nt_wh,
        };
        *slot = slot.checked_add(wh).ok_or(IntervalError::Overflow { ts })?;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};
    use rust_decimal_macros::dec;

    /// Interval ends (UTC) of every 15-minute interval whose start lies in the local day `date`.
    fn local_day(date: NaiveDate) -> Vec<DateTime<Utc>> {
        let start = |d: NaiveDate| -> DateTime<Utc> {
            Belgrade.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap()).single().unwrap().with_timezone(&Utc)
        };
        let (a, b) = (start(date), start(date.succ_opt().unwrap()));
        let mut out = Vec::new();
        let mut t = a + INTERVAL;
        while t <= b {
            out.push(t);
            t += INTERVAL;
        }
        out
    }

    #[test]
    fn classifies_by_local_start() {
        let w = NightWindow::of_region(Region::Belgrade);
        // 2026-01-15 07:00 UTC = 08:00 CET: the interval ending then started at 07:45 local → NT.
        assert_eq!(w.classify(Utc.with_ymd_and_hms(2026, 1, 15, 7, 0, 0).unwrap()), TimeOfUse::Nt);
        assert_eq!(w.classify(Utc.with_ymd_and_hms(2026, 1, 15, 7, 15, 0).unwrap()), TimeOfUse::Vt);
        // Summer: 06:00 UTC = 08:00 CEST.
        assert_eq!(w.classify(Utc.with_ymd_and_hms(2026, 7, 15, 6, 0, 0).unwrap()), TimeOfUse::Nt);
        assert_eq!(w.classify(Utc.with_ymd_and_hms(2026, 7, 15, 6, 15, 0).unwrap()), TimeOfUse::Vt);
        // Novi Sad: 22:00 UTC in winter = 23:00 CET → the interval ending 22:15 UTC is NT, 22:00 UTC VT.
        let ns = NightWindow::of_region(Region::NoviSad);
        assert_eq!(ns.classify(Utc.with_ymd_and_hms(2026, 1, 15, 22, 15, 0).unwrap()), TimeOfUse::Nt);
        assert_eq!(ns.classify(Utc.with_ymd_and_hms(2026, 1, 15, 22, 0, 0).unwrap()), TimeOfUse::Vt);
        assert!(NightWindow::new(3, 3).is_none() && NightWindow::new(24, 3).is_none());
    }

    #[test]
    fn dst_days_every_region() {
        let spring = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let autumn = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        assert_eq!(local_day(spring).len(), 92, "23-hour day");
        assert_eq!(local_day(autumn).len(), 100, "25-hour day");
        for region in Region::ALL {
            let w = NightWindow::of_region(region);
            // Each interval i carries i+1 Wh, so the sums also check which intervals were counted.
            for (day, nt_hours) in [(spring, 7), (autumn, 9)] {
                let ends = local_day(day);
                let n = ends.len() as i64;
                let nt_count = ends.iter().filter(|t| w.classify(**t) == TimeOfUse::Nt).count();
                assert_eq!(nt_count, nt_hours * 4, "{region:?} {day}");
                assert_eq!(ends.len() - nt_count, 64, "{region:?} {day}: VT is always 16 local hours");
                let sums = sum_vt_nt(w, ends.iter().enumerate().map(|(i, t)| (*t, i as i64 + 1))).unwrap();
                assert_eq!(sums.vt_wh + sums.nt_wh, n * (n + 1) / 2);
            }
        }
        // Belgrade, autumn: the repeated hour 02:00-03:00 local (00:00-02:00 UTC) is NT both times.
        let w = NightWindow::of_region(Region::Belgrade);
        for m in (15..=120).step_by(15) {
            let end = Utc.with_ymd_and_hms(2026, 10, 25, 0, 0, 0).unwrap() + Duration::minutes(m);
            assert_eq!(w.classify(end), TimeOfUse::Nt);
        }
        // Spring: 01:00 UTC is 03:00 CEST; Belgrade NT ends at 08:00 CEST = 06:00 UTC.
        assert_eq!(w.classify(Utc.with_ymd_and_hms(2026, 3, 29, 6, 0, 0).unwrap()), TimeOfUse::Nt);
        assert_eq!(w.classify(Utc.with_ymd_and_hms(2026, 3, 29, 6, 15, 0).unwrap()), TimeOfUse::Vt);
        // Central, autumn: NT starts 22:00 CET = 21:00 UTC.
        let c = NightWindow::of_region(Region::Central);
        assert_eq!(c.classify(Utc.with_ymd_and_hms(2026, 10, 25, 21, 0, 0).unwrap()), TimeOfUse::Vt);
        assert_eq!(c.classify(Utc.with_ymd_and_hms(2026, 10, 25, 21, 15, 0).unwrap()), TimeOfUse::Nt);
    }

    #[test]
    fn sums_are_exact_kwh() {
        let w = NightWindow::of_region(Region::Belgrade);
        let t = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
        let s = sum_vt_nt(w, [(t, 1), (t + INTERVAL, 2), (Utc.with_ymd_and_hms(2026, 1, 15, 1, 0, 0).unwrap(), 7)])
            .unwrap();
        assert_eq!((s.vt_kwh(), s.nt_kwh(), s.total_kwh()), (dec!(0.003), dec!(0.007), dec!(0.010)));
        assert!(matches!(sum_vt_nt(w, [(t, -1)]), Err(IntervalError::Negative { .. })));
        assert!(matches!(sum_vt_nt(w, [(t, i64::MAX), (t, 1)]), Err(IntervalError::Overflow { .. })));
    }
}
