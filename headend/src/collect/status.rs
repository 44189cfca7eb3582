//! What each poll learnt — outcome, clock deviation, capabilities, events — written in batches (a
//! round of 200,000 sessions is a few dozen statements, not 200,000).

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use super::{Capabilities, MeterEvent};

/// One finished session.
#[derive(Debug)]
pub struct SessionReport {
    pub meter_id: i32,
    pub at: DateTime<Utc>,
    /// `None` on success, else the failure's reason and detail.
    pub error: Option<String>,
    pub clock_deviation_ms: Option<i64>,
    pub clock_flagged: bool,
    pub capabilities: Option<(&'static str, Capabilities)>,
    pub events: Vec<MeterEvent>,
    pub source: i16,
}

/// Receives reports and writes them every `every` or every `batch` reports. Ends when every sender
/// is dropped and the rest is written. A database failure is logged and the batch retried later:
/// status is advisory (readings go through the writer), so nothing here blocks polling.
pub async fn run(pool: Pool, mut rx: mpsc::Receiver<SessionReport>, every: Duration, batch: usize) {
    let mut buf: Vec<SessionReport> = Vec::with_capacity(batch);
    loop {
        let deadline = tokio::time::Instant::now() + every;
        let mut closed = false;
        while buf.len() < batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => buf.push(r),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if !buf.is_empty() {
            match write(&pool, &buf).await {
                Ok(()) => buf.clear(),
                Err(e) => {
                    tracing::warn!(error = %e, reports = buf.len(), "poll status not written; will retry");
                    if buf.len() > batch * 10 {
                        // The database has been away for long: keep the newest only.
                        buf.drain(..buf.len() - batch * 10);
                    }
                    if closed {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
            }
        }
        if closed {
            return;
        }
    }
}

async fn write(pool: &Pool, reports: &[SessionReport]) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Per meter: the last report decides the status; the batch's last success and its trailing
    // failures carry over. Meters in key order, for lock ordering.
    let mut sorted: Vec<&SessionReport> = reports.iter().collect();
    sorted.sort_by_key(|r| (r.meter_id, r.at));
    let mut caps: Vec<(i32, &str, &Capabilities)> = Vec::new();
    let (mut ids, mut at, mut err, mut dev, mut flagged) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut success, mut fails) = (Vec::new(), Vec::new());
    for group in sorted.chunk_by(|a, b| a.meter_id == b.meter_id) {
        let Some(last) = group.last() else { continue };
        let ok = group.iter().rev().find(|r| r.error.is_none()).map(|r| r.at);
        let trailing = group.iter().rev().take_while(|r| r.error.is_some()).count();
        ids.push(last.meter_id);
        at.push(last.at);
        err.push(last.error.as_deref());
        dev.push(group.iter().rev().find_map(|r| r.clock_deviation_ms));
        flagged.push(group.iter().rev().find(|r| r.clock_deviation_ms.is_some()).is_some_and(|r| r.clock_flagged));
        success.push(ok);
        fails.push(i32::try_from(trailing).unwrap_or(i32::MAX));
        if let Some((p, c)) = group.iter().rev().find_map(|r| r.capabilities.as_ref()) {
            caps.push((last.meter_id, *p, c));
        }
    }
    tx.execute(
        "INSERT INTO meter_poll_status AS s
             (meter_id, last_attempt_at, last_success_at, last_error, consecutive_failures, clock_deviation_ms, clock_flagged)
         SELECT id, at, ok, err, fails, dev, flagged
         FROM unnest($1::int[], $2::timestamptz[], $3::text[], $4::bigint[], $5::bool[], $6::timestamptz[],
                     $7::int[]) AS u(id, at, err, dev, flagged, ok, fails)
         ON CONFLICT (meter_id) DO UPDATE SET
             last_attempt_at = EXCLUDED.last_attempt_at,
             last_success_at = COALESCE(EXCLUDED.last_success_at, s.last_success_at),
             last_error = EXCLUDED.last_error,
             consecutive_failures = CASE WHEN EXCLUDED.last_success_at IS NOT NULL THEN EXCLUDED.consecutive_failures
                                         ELSE s.consecutive_failures + EXCLUDED.consecutive_failures END,
             clock_deviation_ms = COALESCE(EXCLUDED.clock_deviation_ms, s.clock_deviation_ms),
             clock_flagged = CASE WHEN EXCLUDED.clock_deviation_ms IS NULL THEN s.clock_flagged ELSE EXCLUDED.clock_flagged END",
        &[&ids, &at, &err, &dev, &flagged, &success, &fails],
    )
    .await?;

    if !caps.is_empty() {
        let ids: Vec<i32> = caps.iter().map(|c| c.0).collect();
        let proto: Vec<&str> = caps.iter().map(|c| c.1).collect();
        let pdu: Vec<Option<i32>> = caps.iter().map(|c| c.2.max_pdu.and_then(|v| i32::try_from(v).ok())).collect();
        let list: Vec<Option<i32>> = caps.iter().map(|c| c.2.max_list.and_then(|v| i32::try_from(v).ok())).collect();
        let sel: Vec<Option<bool>> = caps.iter().map(|c| c.2.selective_access).collect();
        let sec: Vec<Option<&str>> = caps.iter().map(|c| c.2.security.as_deref()).collect();
        let det: Vec<serde_json::Value> = caps.iter().map(|c| c.2.details.clone()).collect();
        tx.execute(
            "INSERT INTO meter_capabilities AS c (meter_id, protocol, max_pdu, max_list, selective_access, security, details, probed_at)
             SELECT id, p, pdu, list, sel, sec, COALESCE(det, '{}'), now()
             FROM unnest($1::int[], $2::text[], $3::int[], $4::int[], $5::bool[], $6::text[], $7::jsonb[])
                  AS u(id, p, pdu, list, sel, sec, det)
             ON CONFLICT (meter_id) DO UPDATE SET protocol = EXCLUDED.protocol, max_pdu = EXCLUDED.max_pdu,
                 max_list = EXCLUDED.max_list, selective_access = EXCLUDED.selective_access,
                 security = EXCLUDED.security, details = EXCLUDED.details, probed_at = now()",
            &[&ids, &proto, &pdu, &list, &sel, &sec, &det],
        )
        .await?;
    }

    let mut ev_meter = Vec::new();
    let mut ev_ts = Vec::new();
    let mut ev_code = Vec::new();
    let mut ev_src = Vec::new();
    let mut ev_detail = Vec::new();
    for r in reports {
        for e in &r.events {
            ev_meter.push(r.meter_id);
            ev_ts.push(e.ts);
            ev_code.push(e.code);
            ev_src.push(r.source);
            ev_detail.push(e.detail.clone());
        }
    }
    if !ev_meter.is_empty() {
        tx.execute(
            "INSERT INTO meter_events (meter_id, ts, code, source, detail)
             SELECT * FROM unnest($1::int[], $2::timestamptz[], $3::int[], $4::smallint[], $5::jsonb[])
             ON CONFLICT DO NOTHING",
            &[&ev_meter, &ev_ts, &ev_code, &ev_src, &ev_detail],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Capabilities stored by earlier sessions, by meter.
pub async fn load_capabilities(
    pool: &Pool,
    protocol: &str,
) -> anyhow::Result<std::collections::HashMap<i32, Capabilities>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT meter_id, max_pdu, max_list, selective_access, security, details
             FROM meter_capabilities WHERE protocol = $1",
            &[&protocol],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let caps = Capabilities {
                max_pdu: r.get::<_, Option<i32>>(1).and_then(|v| u32::try_from(v).ok()),
                max_list: r.get::<_, Option<i32>>(2).and_then(|v| u32::try_from(v).ok()),
                selective_access: r.get(3),
                security: r.get(4),
                details: r.get(5),
            };
            (r.get(0), caps)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;

    fn report(meter_id: i32, at: &str, error: Option<&str>, dev: Option<i64>) -> SessionReport {
        SessionReport {
            meter_id,
            at: at.parse().expect("ts"),
            error: error.map(str::to_string),
            clock_deviation_ms: dev,
            clock_flagged: dev.is_some_and(|d| d.abs() > 10_000),
            capabilities: None,
            events: Vec::new(),
            source: 2,
        }
    }

    #[tokio::test]
    async fn a_batch_keeps_the_last_status_the_last_success_and_counts_failures_in_a_row() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        c.batch_execute(
            "INSERT INTO buildings (code, address, municipality, region) VALUES ('B', 'A', 'M', 'belgrade');
             INSERT INTO meters (serial, kind, protocol, building_id, installed_on)
             SELECT 'X1', 'master', 'dlms', id, '2026-01-01' FROM buildings",
        )
        .await
        .expect("inventory");
        let id: i32 = c.query_one("SELECT id FROM meters", &[]).await.expect("meter").get(0);
        let pool = crate::app::pool(&db.url, 2).expect("pool");
        let status = || async {
            let r = c
                .query_one(
                    "SELECT last_success_at, last_error, consecutive_failures, clock_deviation_ms, clock_flagged
                     FROM meter_poll_status",
                    &[],
                )
                .await
                .expect("status");
            let ok: Option<DateTime<Utc>> = r.get(0);
            (
                ok.map(|t| t.to_rfc3339()),
                r.get::<_, Option<String>>(1),
                r.get::<_, i32>(2),
                r.get::<_, Option<i64>>(3),
                r.get::<_, bool>(4),
            )
        };
        // A success, then a failure in the same batch: the success is kept, one failure in a row.
        write(
            &pool,
            &[
                report(id, "2026-11-24T10:00:00Z", None, Some(20_000)),
                report(id, "2026-11-24T10:05:00Z", Some("timeout: x"), None),
            ],
        )
        .await
        .expect("write");
        assert_eq!(
            status().await,
            (Some("2026-11-24T10:00:00+00:00".into()), Some("timeout: x".into()), 1, Some(20_000), true)
        );
        // Two more failures: three in a row; the clock reading stays.
        write(
            &pool,
            &[
                report(id, "2026-11-24T11:00:00Z", Some("refused: y"), None),
                report(id, "2026-11-24T11:05:00Z", Some("refused: y"), None),
            ],
        )
        .await
        .expect("write");
        assert_eq!(status().await.2, 3);
        assert_eq!(status().await.3, Some(20_000));
        // A success resets the count and clears the error.
        write(&pool, &[report(id, "2026-11-24T12:00:00Z", None, Some(1_000))]).await.expect("write");
        assert_eq!(status().await, (Some("2026-11-24T12:00:00+00:00".into()), None, 0, Some(1_000), false));
    }
}
