//! When a periodic task is due. Periods of a day or more fall on local (Europe/Belgrade) midnights,
//! so "daily registers at midnight" means the operator's midnight, across DST changes; shorter
//! periods fall on multiples of the period since the Unix epoch (UTC), which is the same as local
//! multiples for every period that divides an hour.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Belgrade;

const DAY: u64 = 86_400;

/// One periodic task: every `every`, starting `offset` after each slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub every: Duration,
    pub offset: Duration,
}

impl Period {
    pub const fn new(every: Duration, offset: Duration) -> Self {
        Self { every, offset }
    }

    /// The latest slot at or before `now` (offset included).
    pub fn latest(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let shifted = now - chrono::Duration::from_std(self.offset).unwrap_or_default();
        self.base_at_or_before(shifted) + chrono::Duration::from_std(self.offset).unwrap_or_default()
    }

    /// The first slot strictly after `now`.
    pub fn next(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let offset = chrono::Duration::from_std(self.offset).unwrap_or_default();
        let base = self.base_at_or_before(now - offset);
        self.base_after(base) + offset
    }

    /// Due when the latest slot has passed since the task last succeeded.
    pub fn is_due(&self, last_done: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        last_done.is_none_or(|done| done < self.latest(now))
    }

    fn days(&self) -> Option<u64> {
        let secs = self.every.as_secs().max(1);
        (secs >= DAY).then(|| (secs / DAY).max(1))
    }

    fn base_at_or_before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self.days() {
            Some(n) => {
                let mut date = t.with_timezone(&Belgrade).date_naive();
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                let rem = u64::try_from((date - epoch).num_days()).unwrap_or(0) % n;
                date = date.checked_sub_days(Days::new(rem)).unwrap_or(date);
                local_midnight(date)
            }
            None => {
                let every = i64::try_from(self.every.as_secs().max(1)).unwrap_or(i64::MAX);
                let s = t.timestamp();
                DateTime::from_timestamp(s - s.rem_euclid(every), 0).unwrap_or(t)
            }
        }
    }

    fn base_after(&self, base: DateTime<Utc>) -> DateTime<Utc> {
        match self.days() {
            Some(n) => {
                let date = base.with_timezone(&Belgrade).date_naive();
                local_midnight(date.checked_add_days(Days::new(n)).unwrap_or(date))
            }
            None => base + chrono::Duration::seconds(i64::try_from(self.every.as_secs().max(1)).unwrap_or(i64::MAX)),
        }
    }
}

/// The first instant of a local date (midnight exists on every Belgrade date: DST changes at 02:00/03:00).
pub fn local_midnight(date: NaiveDate) -> DateTime<Utc> {
    let naive = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    Belgrade
        .from_local_datetime(&naive)
        .earliest()
        .map_or_else(|| Utc.from_utc_datetime(&naive), |t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    #[test]
    fn quarter_hours_fall_on_utc_multiples() {
        let p = Period::new(Duration::from_secs(900), Duration::from_secs(60));
        assert_eq!(p.latest(t("2026-11-24T10:16:00Z")), t("2026-11-24T10:16:00Z"));
        assert_eq!(p.latest(t("2026-11-24T10:15:59Z")), t("2026-11-24T10:01:00Z"));
        assert_eq!(p.next(t("2026-11-24T10:16:00Z")), t("2026-11-24T10:31:00Z"));
        assert!(p.is_due(None, t("2026-11-24T10:16:00Z")));
        assert!(!p.is_due(Some(t("2026-11-24T10:16:30Z")), t("2026-11-24T10:30:00Z")));
        assert!(p.is_due(Some(t("2026-11-24T10:16:30Z")), t("2026-11-24T10:31:00Z")));
    }

    #[test]
    fn daily_slots_are_local_midnights_across_dst() {
        let p = Period::new(Duration::from_secs(86_400), Duration::from_secs(300));
        // Winter: midnight in Belgrade is 23:00 UTC.
        assert_eq!(p.latest(t("2026-11-24T10:00:00Z")), t("2026-11-23T23:05:00Z"));
        assert_eq!(p.next(t("2026-11-24T10:00:00Z")), t("2026-11-24T23:05:00Z"));
        // Summer: 22:00 UTC.
        assert_eq!(p.latest(t("2026-07-01T10:00:00Z")), t("2026-06-30T22:05:00Z"));
        // The night of the spring change (29 March 2026): the next midnight is 22:00 UTC.
        assert_eq!(p.next(t("2026-03-29T10:00:00Z")), t("2026-03-29T22:05:00Z"));
        // The autumn change (25 October 2026): the day has 25 hours.
        assert_eq!(p.latest(t("2026-10-25T22:30:00Z")), t("2026-10-24T22:05:00Z"));
        assert_eq!(p.next(t("2026-10-25T10:00:00Z")), t("2026-10-25T23:05:00Z"));
    }

    #[test]
    fn due_after_a_missed_day() {
        let p = Period::new(Duration::from_secs(86_400), Duration::ZERO);
        assert!(p.is_due(Some(t("2026-11-22T23:30:00Z")), t("2026-11-24T10:00:00Z")));
        assert!(!p.is_due(Some(t("2026-11-23T23:00:00Z")), t("2026-11-24T10:00:00Z")));
    }
}
