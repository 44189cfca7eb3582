//! Local (Europe/Belgrade) calendar of the portal: days, months and years as UTC instants, the
//! 15-minute grid of a day (92, 96 or 100 intervals), and the views a household looks at.
//!
//! Readings carry the interval **end** in UTC, so the 15-minute interval `(end − 15 min, end]` belongs to the
//! local day its start falls in; a day's intervals end at `midnight + 15 min ..= next midnight`.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Belgrade;

/// Length of an interval.
pub const INTERVAL: Duration = Duration::minutes(15);

/// The UTC instant of local midnight at the start of `day` (midnight exists on every Belgrade day: the DST
/// changes happen at 02:00 and 03:00).
pub fn midnight(day: NaiveDate) -> DateTime<Utc> {
    let naive = day.and_time(chrono::NaiveTime::MIN);
    match Belgrade.from_local_datetime(&naive).earliest() {
        Some(t) => t.with_timezone(&Utc),
        // Unreachable for Belgrade; an hour-off instant is better than a panic.
        None => Utc.from_utc_datetime(&naive),
    }
}

/// The local day of an instant.
pub fn local_day(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&Belgrade).date_naive()
}

/// The local day an interval ending at `end` belongs to (the day of its start).
pub fn day_of_interval(end: DateTime<Utc>) -> NaiveDate {
    local_day(end - INTERVAL)
}

/// The first day of the month `year-month`, if it exists.
pub fn first_of_month(year: i32, month: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, month, 1)
}

/// The first day of the month after the one holding `day`.
pub fn next_month(day: NaiveDate) -> NaiveDate {
    let (y, m) = if day.month() == 12 { (day.year() + 1, 1) } else { (day.year(), day.month() + 1) };
    first_of_month(y, m).unwrap_or(day)
}

/// The first day of the month before the one holding `day`.
pub fn previous_month(day: NaiveDate) -> NaiveDate {
    let (y, m) = if day.month() == 1 { (day.year() - 1, 12) } else { (day.year(), day.month() - 1) };
    first_of_month(y, m).unwrap_or(day)
}

/// Days in the month holding `day`.
pub fn days_in_month(day: NaiveDate) -> u32 {
    let first = first_of_month(day.year(), day.month()).unwrap_or(day);
    u32::try_from((next_month(first) - first).num_days()).unwrap_or(30)
}

/// The interval ends of a local day: `midnight + 15 min ..= next midnight` (92 on the spring DST day, 100 on
/// the autumn one, 96 otherwise).
pub fn day_grid(day: NaiveDate) -> Vec<DateTime<Utc>> {
    let (start, end) = (midnight(day), midnight(day.succ_opt().unwrap_or(day)));
    let mut out = Vec::with_capacity(100);
    let mut t = start + INTERVAL;
    while t <= end {
        out.push(t);
        t += INTERVAL;
    }
    out
}

/// The same local date and time one year earlier (29 February → 28 February; a local time that does not
/// exist that day → the earliest valid one after it), as a UTC instant.
pub fn one_year_earlier(t: DateTime<Utc>) -> DateTime<Utc> {
    let local = t.with_timezone(&Belgrade).naive_local();
    let date = local.date();
    let day = NaiveDate::from_ymd_opt(date.year() - 1, date.month(), date.day())
        .or_else(|| NaiveDate::from_ymd_opt(date.year() - 1, date.month(), date.day() - 1))
        .unwrap_or(date);
    let mut naive = day.and_time(local.time());
    for _ in 0..8 {
        if let Some(x) = Belgrade.from_local_datetime(&naive).earliest() {
            return x.with_timezone(&Utc);
        }
        naive += INTERVAL;
    }
    t - Duration::days(365)
}

/// What a household looks at: a day by 15 minutes, a month by days, a year by months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// A local day by 15 minutes.
    Day(NaiveDate),
    /// A local month by days (the first day of the month).
    Month(NaiveDate),
    /// A year by months.
    Year(i32),
}

/// Why a view's parameters were refused (the message says what is expected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ViewError(pub String);

impl View {
    /// The view of a resolution (`15min` / `day` / `month`, or the page names `day` / `month` / `year` with
    /// `pages = true`) and a date (`YYYY-MM-DD`, `YYYY-MM`, `YYYY`; a longer date is accepted and cut, so a
    /// day view's date also opens its month), defaulting to the period holding `today`.
    pub fn parse(kind: ViewKind, date: Option<&str>, today: NaiveDate) -> Result<View, ViewError> {
        let date = date.map(str::trim).filter(|d| !d.is_empty());
        let year_of = |d: &str| -> Result<i32, ViewError> {
            d.get(..4)
                .filter(|y| y.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|y| y.parse().ok())
                .filter(|y| (2000..=2100).contains(y))
                .ok_or_else(|| ViewError(format!("date {d:?}: expected a year 2000–2100 such as 2026")))
        };
        match kind {
            ViewKind::Day => match date {
                None => Ok(View::Day(today)),
                Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .ok()
                    .filter(|x| (2000..=2100).contains(&x.year()))
                    .map(View::Day)
                    .ok_or_else(|| ViewError(format!("date {d:?}: expected a day such as 2026-11-20"))),
            },
            ViewKind::Month => match date {
                None => Ok(View::Month(first_of_month(today.year(), today.month()).unwrap_or(today))),
                Some(d) => {
                    let y = year_of(d)?;
                    d.get(5..7)
                        .filter(|_| d.as_bytes().get(4) == Some(&b'-'))
                        .and_then(|m| m.parse::<u32>().ok())
                        .and_then(|m| first_of_month(y, m))
                        .filter(|_| d.len() == 7 || NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok())
                        .map(View::Month)
                        .ok_or_else(|| ViewError(format!("date {d:?}: expected a month such as 2026-11")))
                }
            },
            ViewKind::Year => match date {
                None => Ok(View::Year(today.year())),
                Some(d) if d.len() == 4 => Ok(View::Year(year_of(d)?)),
                Some(d) => match View::parse(ViewKind::Month, Some(d), today) {
                    Ok(View::Month(m)) => Ok(View::Year(m.year())),
                    _ => Err(ViewError(format!("date {d:?}: expected a year such as 2026"))),
                },
            },
        }
    }

    pub fn kind(self) -> ViewKind {
        match self {
            View::Day(_) => ViewKind::Day,
            View::Month(_) => ViewKind::Month,
            View::Year(_) => ViewKind::Year,
        }
    }

    /// The view's date parameter: `YYYY-MM-DD`, `YYYY-MM` or `YYYY`.
    pub fn param(self) -> String {
        match self {
            View::Day(d) => d.format("%Y-%m-%d").to_string(),
            View::Month(d) => d.format("%Y-%m").to_string(),
            View::Year(y) => format!("{y:04}"),
        }
    }

    /// The view before this one (the previous day, month or year).
    pub fn previous(self) -> View {
        match self {
            View::Day(d) => View::Day(d.pred_opt().unwrap_or(d)),
            View::Month(d) => View::Month(previous_month(d)),
            View::Year(y) => View::Year(y - 1),
        }
    }

    /// The view after this one.
    pub fn next(self) -> View {
        match self {
            View::Day(d) => View::Day(d.succ_opt().unwrap_or(d)),
            View::Month(d) => View::Month(next_month(d)),
            View::Year(y) => View::Year(y + 1),
        }
    }

    /// First and last local day of the view.
    pub fn days(self) -> (NaiveDate, NaiveDate) {
        match self {
            View::Day(d) => (d, d),
            View::Month(d) => (d, next_month(d).pred_opt().unwrap_or(d)),
            View::Year(y) => {
                let first = first_of_month(y, 1).unwrap_or_default();
                (first, first_of_month(y + 1, 1).and_then(|d| d.pred_opt()).unwrap_or(first))
            }
        }
    }

    /// The view's period as UTC instants `[start, end)`.
    pub fn span(self) -> (DateTime<Utc>, DateTime<Utc>) {
        let (first, last) = self.days();
        (midnight(first), midnight(last.succ_opt().unwrap_or(last)))
    }

    /// The boundaries of the view's slots, `n + 1` instants for `n` slots: interval edges of a day (the
    /// first is the day's midnight), local midnights of a month, local month starts of a year.
    pub fn boundaries(self) -> Vec<DateTime<Utc>> {
        match self {
            View::Day(d) => {
                let mut out = vec![midnight(d)];
                out.extend(day_grid(d));
                out
            }
            View::Month(first) => {
                let (_, last) = self.days();
                first.iter_days().take_while(|d| *d <= last.succ_opt().unwrap_or(last)).map(midnight).collect()
            }
            View::Year(y) => {
                (1..=12).filter_map(|m| first_of_month(y, m)).chain(first_of_month(y + 1, 1)).map(midnight).collect()
            }
        }
    }
}

/// The resolution of a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    Day,
    Month,
    Year,
}

impl ViewKind {
    /// The API's `resolution`: `15min` (a day), `day` (a month), `month` (a year).
    pub fn from_resolution(s: &str) -> Option<ViewKind> {
        match s {
            "15min" => Some(ViewKind::Day),
            "day" => Some(ViewKind::Month),
            "month" => Some(ViewKind::Year),
            _ => None,
        }
    }

    pub const fn resolution(self) -> &'static str {
        match self {
            ViewKind::Day => "15min",
            ViewKind::Month => "day",
            ViewKind::Year => "month",
        }
    }

    /// The page's `view`: `day`, `month`, `year`.
    pub fn from_page(s: &str) -> Option<ViewKind> {
        match s {
            "day" => Some(ViewKind::Day),
            "month" => Some(ViewKind::Month),
            "year" => Some(ViewKind::Year),
            _ => None,
        }
    }

    pub const fn page(self) -> &'static str {
        match self {
            ViewKind::Day => "day",
            ViewKind::Month => "month",
            ViewKind::Year => "year",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn dst_days_have_92_and_100_intervals() {
        assert_eq!(day_grid(d("2026-03-29")).len(), 92);
        assert_eq!(day_grid(d("2026-10-25")).len(), 100);
        assert_eq!(day_grid(d("2026-10-26")).len(), 96);
        assert_eq!(day_grid(d("2026-11-20")).first(), Some(&t("2026-11-19T23:15:00Z")));
        assert_eq!(day_grid(d("2026-11-20")).last(), Some(&t("2026-11-20T23:00:00Z")));
        assert_eq!(View::Day(d("2026-10-25")).boundaries().len(), 101);
    }

    #[test]
    fn local_midnights_and_months() {
        assert_eq!(midnight(d("2026-07-01")), t("2026-06-30T22:00:00Z"));
        assert_eq!(midnight(d("2026-12-01")), t("2026-11-30T23:00:00Z"));
        assert_eq!(day_of_interval(t("2026-11-30T23:00:00Z")), d("2026-11-30"));
        assert_eq!(day_of_interval(t("2026-11-30T23:15:00Z")), d("2026-12-01"));
        let oct = View::Month(d("2026-10-01"));
        let b = oct.boundaries();
        assert_eq!(b.len(), 32);
        assert_eq!((b[0], b[31]), (t("2026-09-30T22:00:00Z"), t("2026-10-31T23:00:00Z")));
        assert_eq!(oct.span(), (b[0], b[31]));
        let y = View::Year(2026).boundaries();
        assert_eq!(y.len(), 13);
        assert_eq!(y[12], t("2026-12-31T23:00:00Z"));
        assert_eq!(days_in_month(d("2028-02-10")), 29);
    }

    #[test]
    fn views_parse_and_move() {
        let today = d("2026-11-20");
        let p = |k, s: Option<&str>| View::parse(k, s, today);
        assert_eq!(p(ViewKind::Day, None), Ok(View::Day(today)));
        assert_eq!(p(ViewKind::Month, None), Ok(View::Month(d("2026-11-01"))));
        assert_eq!(p(ViewKind::Month, Some("2026-02")), Ok(View::Month(d("2026-02-01"))));
        assert_eq!(p(ViewKind::Month, Some("2026-02-17")), Ok(View::Month(d("2026-02-01"))));
        assert_eq!(p(ViewKind::Year, Some("2025")), Ok(View::Year(2025)));
        assert_eq!(p(ViewKind::Year, Some("2025-04")), Ok(View::Year(2025)));
        for bad in ["2026-13", "26-01", "2026/01", "x", "2026-1"] {
            assert!(p(ViewKind::Month, Some(bad)).is_err(), "{bad}");
        }
        assert!(p(ViewKind::Day, Some("2026-02-30")).is_err());
        assert!(p(ViewKind::Year, Some("1999")).is_err());
        assert_eq!(View::Month(d("2026-01-01")).previous(), View::Month(d("2025-12-01")));
        assert_eq!(View::Month(d("2026-12-01")).next().param(), "2027-01");
        assert_eq!(View::Day(d("2026-03-01")).previous().param(), "2026-02-28");
    }

    #[test]
    fn a_year_earlier_keeps_local_time() {
        // 2026-11-02 10:00 local (CET) → 2025-11-02 10:00 local (CET).
        assert_eq!(one_year_earlier(t("2026-11-02T09:00:00Z")), t("2025-11-02T09:00:00Z"));
        // Local midnight of 1 November stays local midnight.
        assert_eq!(one_year_earlier(midnight(d("2026-11-01"))), midnight(d("2025-11-01")));
        // 29 February.
        assert_eq!(local_day(one_year_earlier(midnight(d("2028-02-29")))), d("2027-02-28"));
    }
}
