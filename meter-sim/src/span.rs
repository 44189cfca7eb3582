//! Time spans of the command line: the intervals whose END lies in `(from, to]`.
//!
//! Timestamps are RFC 3339 (`2026-11-20T10:00:00Z`; an offset is converted to UTC) and must lie on a
//! 15-minute boundary. `from` is exclusive and `to` inclusive, so `--from 10:00 --to 10:15` is exactly one
//! interval, the one ending at 10:15 (`[10:00, 10:15)`).

use chrono::{DateTime, Utc};

use crate::model::INTERVAL_SECS;

/// Why a time or span is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("invalid timestamp {0:?}: expected RFC 3339, e.g. 2026-11-20T10:00:00Z")]
    Parse(String),
    #[error("{0} is not on a 15-minute boundary (expected hh:00, hh:15, hh:30 or hh:45 with zero seconds)")]
    NotOnBoundary(String),
    #[error("--from {from} is after --to {to}")]
    Reversed { from: String, to: String },
}

/// Parses an RFC 3339 timestamp on a 15-minute boundary.
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, SpanError> {
    let t = DateTime::parse_from_rfc3339(s.trim())
        .map_err(|_| SpanError::Parse(s.chars().take(64).collect()))?
        .with_timezone(&Utc);
    if t.timestamp().rem_euclid(INTERVAL_SECS) != 0 || t.timestamp_subsec_nanos() != 0 {
        return Err(SpanError::NotOnBoundary(s.to_string()));
    }
    Ok(t)
}

/// The intervals ending in `(from, to]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Span {
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Span, SpanError> {
        for t in [from, to] {
            if t.timestamp().rem_euclid(INTERVAL_SECS) != 0 || t.timestamp_subsec_nanos() != 0 {
                return Err(SpanError::NotOnBoundary(t.to_rfc3339()));
            }
        }
        if from > to {
            return Err(SpanError::Reversed { from: from.to_rfc3339(), to: to.to_rfc3339() });
        }
        Ok(Span { from, to })
    }

    /// Parses both ends.
    pub fn parse(from: &str, to: &str) -> Result<Span, SpanError> {
        Span::new(parse_ts(from)?, parse_ts(to)?)
    }

    /// Number of intervals.
    pub fn len(&self) -> u64 {
        u64::try_from((self.to - self.from).num_seconds() / INTERVAL_SECS).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The interval ends, oldest first.
    pub fn ends(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let from = self.from;
        (1..=self.len()).map(move |j| from + chrono::Duration::seconds(j as i64 * INTERVAL_SECS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_exclusive_inclusive() {
        let s = Span::parse("2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z").expect("span");
        assert_eq!(s.len(), 4);
        let ends: Vec<String> = s.ends().map(|t| t.to_rfc3339()).collect();
        assert_eq!(ends.first().map(String::as_str), Some("2026-11-20T10:15:00+00:00"));
        assert_eq!(ends.last().map(String::as_str), Some("2026-11-20T11:00:00+00:00"));
        assert!(Span::parse("2026-11-20T10:00:00Z", "2026-11-20T10:00:00Z").expect("empty").is_empty());
        assert_eq!(Span::parse("2026-11-20T11:00:00+01:00", "2026-11-20T10:15:00Z").map(|s| s.len()), Ok(1));
    }

    #[test]
    fn bad_input_is_refused_clearly() {
        assert!(matches!(parse_ts("yesterday"), Err(SpanError::Parse(_))));
        assert!(matches!(parse_ts("2026-11-20T10:07:00Z"), Err(SpanError::NotOnBoundary(_))));
        assert!(matches!(parse_ts("2026-11-20T10:15:00.5Z"), Err(SpanError::NotOnBoundary(_))));
        assert!(matches!(Span::parse("2026-11-20T11:00:00Z", "2026-11-20T10:00:00Z"), Err(SpanError::Reversed { .. })));
    }
}
