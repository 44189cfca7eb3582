//! A billing period: whole days, both ends inclusive, and its "months" for the monthly charges.

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;

/// Longest billing period, days.
pub const MAX_DAYS: i64 = 3660;

/// Why a period was refused (the message reads `period: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("period: {0}")]
pub struct PeriodError(String);

/// A billing period: whole days, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    first: NaiveDate,
    last: NaiveDate,
}

impl Period {
    /// `first..=last`; refused when `last < first` or longer than [`MAX_DAYS`].
    pub fn new(first: NaiveDate, last: NaiveDate) -> Result<Period, PeriodError> {
        if last < first {
            return Err(PeriodError(format!("last day {last} is before first day {first}")));
        }
        if (last - first).num_days() + 1 > MAX_DAYS {
            return Err(PeriodError(format!("longer than {MAX_DAYS} days")));
        }
        Ok(Period { first, last })
    }

    /// The calendar month `year-month`.
    pub fn month(year: i32, month: u32) -> Result<Period, PeriodError> {
        let first = NaiveDate::from_ymd_opt(year, month, 1);
        let next = if month == 12 {
            NaiveDate::from_ymd_opt(year + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(year, month + 1, 1)
        };
        match (first, next.and_then(|n| n.pred_opt())) {
            (Some(f), Some(l)) => Period::new(f, l),
            _ => Err(PeriodError(format!("{year}-{month:02} is not a month"))),
        }
    }

    pub fn first_day(&self) -> NaiveDate {
        self.first
    }

    pub fn last_day(&self) -> NaiveDate {
        self.last
    }

    /// Number of days, ≥ 1.
    pub fn days(&self) -> i64 {
        (self.last - self.first).num_days() + 1
    }

    /// Months for the monthly charges: Σ over calendar months of days covered / days in that month.
    pub fn months(&self) -> Decimal {
        let mut total = Decimal::ZERO;
        let mut day = self.first;
        loop {
            let (y, m) = (day.year(), day.month());
            let dim = days_in_month(y, m);
            let month_last = NaiveDate::from_ymd_opt(y, m, dim).unwrap_or(day);
            let last = month_last.min(self.last);
            let covered = (last - day).num_days() + 1;
            total += if covered == i64::from(dim) { Decimal::ONE } else { Decimal::from(covered) / Decimal::from(dim) };
            match last.succ_opt() {
                Some(next) if last < self.last => day = next,
                _ => return total,
            }
        }
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    (28..=31).rev().find(|d| NaiveDate::from_ymd_opt(y, m, *d).is_some()).unwrap_or(28)
}
