//! Meter events fleet-wide (`meter_events`), newest first, a page at a time by keyset: the next page
//! starts after the last row's `(ts, meter, code)`, so a page costs the same however deep it is (the
//! `(ts, meter_id, code)` index of migration 8).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::{OpsError, PER_PAGE};

/// The event codes with a name: one table for the whole head-end, the household portal's
/// ([`crate::household::events::LOG_CODES`], DLMS standard event log, IDIS numbering).
pub fn kinds() -> impl Iterator<Item = (i32, &'static str)> {
    crate::household::events::LOG_CODES.iter().map(|(c, n, _)| (*c, *n))
}

/// The name of an event code (`event_17` for codes without one).
pub fn kind_name(code: i32) -> String {
    crate::household::events::log_code(code).0
}

/// Where a page starts: after this row of the previous page (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ts: DateTime<Utc>,
    pub meter_id: i32,
    pub code: i32,
}

impl Cursor {
    /// `<unix microseconds>_<meter id>_<code>`, as in the `before` parameter.
    pub fn encode(&self) -> String {
        format!("{}_{}_{}", self.ts.timestamp_micros(), self.meter_id, self.code)
    }

    pub fn parse(s: &str) -> Option<Cursor> {
        let mut p = s.split('_');
        let ts = DateTime::from_timestamp_micros(p.next()?.parse().ok()?)?;
        let meter_id = p.next()?.parse().ok()?;
        let code = p.next()?.parse().ok()?;
        p.next().is_none().then_some(Cursor { ts, meter_id, code })
    }
}

/// One event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventRow {
    /// When the meter recorded it.
    pub ts: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub serial: String,
    pub transformer: Option<String>,
    pub code: i32,
    /// `power_down`, `power_up`, … or `event_<n>`.
    pub kind: String,
    /// How it was read (`dlms`, `mqtt`, …).
    pub source: Option<&'static str>,
    /// The raw record (JSON text, at most 300 characters).
    pub detail: Option<String>,
}

/// A page of events and where the next one starts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventRow>,
    /// The `before` of the next (older) page; absent on the last one.
    pub next: Option<String>,
}

/// The events before `before` (newest first), optionally of one code, one transformer, one meter.
pub async fn page(
    c: &impl GenericClient,
    code: Option<i32>,
    transformer: Option<&str>,
    serial: Option<&str>,
    before: Option<Cursor>,
) -> Result<EventPage, OpsError> {
    let (ts, meter, kind) = (before.map(|b| b.ts), before.map(|b| b.meter_id), before.map(|b| b.code));
    let rows = c
        .query(
            "SELECT e.ts, e.received_at, m.serial, m.transformer, e.code, e.source, left(e.detail::text, 300), e.meter_id
             FROM meter_events e JOIN meters m ON m.id = e.meter_id
             WHERE ($1::int IS NULL OR e.code = $1) AND ($2::text IS NULL OR m.transformer = $2)
               AND ($3::timestamptz IS NULL OR (e.ts, e.meter_id, e.code) < ($3, $4, $5))
               AND ($7::text IS NULL OR m.serial = $7)
             ORDER BY e.ts DESC, e.meter_id DESC, e.code DESC
             LIMIT $6",
            &[&code, &transformer, &ts, &meter, &kind, &(PER_PAGE + 1), &serial],
        )
        .await?;
    let more = rows.len() as i64 > PER_PAGE;
    let mut events = Vec::with_capacity(rows.len());
    let mut last = None;
    for r in rows.iter().take(PER_PAGE as usize) {
        let code: i32 = r.get(4);
        let source: i16 = r.get(5);
        last = Some(Cursor { ts: r.get(0), meter_id: r.get(7), code });
        events.push(EventRow {
            ts: r.get(0),
            received_at: r.get(1),
            serial: r.get(2),
            transformer: r.get(3),
            code,
            kind: kind_name(code),
            source: u8::try_from(source).ok().and_then(schemas::reading::Source::from_u8).map(|s| s.as_str()),
            detail: r.get(6),
        });
    }
    Ok(EventPage { events, next: if more { last.map(|c| c.encode()) } else { None } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;
    use crate::ops::testdata;

    #[test]
    fn cursors_round_trip() {
        let c = Cursor { ts: "2026-11-20T10:00:00.123456Z".parse().expect("ts"), meter_id: 7, code: 2 };
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
        for bad in ["", "1_2", "x_1_2", "1_2_3_4", "1_2_x"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
        assert_eq!(kind_name(1), "power_down");
        assert_eq!(kind_name(9999), "event_9999");
    }

    #[tokio::test]
    async fn events_page_newest_first_by_keyset() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        testdata::fleet(&c).await;
        // 60 power-downs and power-ups per meter pair at the same instants (ties broken by meter and code).
        c.batch_execute(
            "INSERT INTO meter_events (meter_id, ts, code, source)
             SELECT m.id, '2026-11-20T00:00:00Z'::timestamptz + n * interval '1 minute', c, 2
             FROM meters m, generate_series(1, 15) n, (VALUES (1), (2)) v(c) WHERE m.serial IN ('A1', 'C1')",
        )
        .await
        .expect("events");
        let first = page(&c, None, None, None, None).await.expect("page");
        assert_eq!(first.events.len(), 50);
        assert_eq!(first.events[0].ts, "2026-11-20T00:15:00Z".parse::<DateTime<Utc>>().expect("ts"));
        assert_eq!(first.events[0].source, Some("dlms"));
        let next = Cursor::parse(first.next.as_deref().expect("more")).expect("cursor");
        let second = page(&c, None, None, None, Some(next)).await.expect("page");
        assert_eq!(second.events.len(), 10);
        assert!(second.next.is_none());
        let mut all: Vec<(DateTime<Utc>, String, i32)> =
            first.events.iter().chain(&second.events).map(|e| (e.ts, e.serial.clone(), e.code)).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "no event twice");
        assert_eq!(n, 60);
        let ups = page(&c, Some(2), Some("T2"), None, None).await.expect("page");
        assert_eq!(ups.events.len(), 15);
        assert!(ups.events.iter().all(|e| e.serial == "C1" && e.kind == "power_up"));
        let one = page(&c, None, None, Some("A1"), None).await.expect("page");
        assert_eq!(one.events.len(), 30);
    }
}
