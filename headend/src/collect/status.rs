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
    // The last report of a meter wins; keep the order of the key for lock ordering.
    let mut latest: Vec<&SessionReport> = reports.iter().collect();
    latest.sort_by_key(|r| (r.meter_id, r.at));
    latest.dedup_by(|later, earlier| {
        if later.meter_id == earlier.meter_id {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    let ids: Vec<i32> = latest.iter().map(|r| r.meter_id).collect();
    let at: Vec<DateTime<Utc>> = latest.iter().map(|r| r.at).collect();
    let err: Vec<Option<&str>> = latest.iter().map(|r| r.error.as_deref()).collect();
    let dev: Vec<Option<i64>> = latest.iter().map(|r| r.clock_deviation_ms).collect();
    let flagged: Vec<bool> = latest.iter().map(|r| r.clock_flagged).collect();
    tx.execute(
        "INSERT INTO meter_poll_status AS s
             (meter_id, last_attempt_at, last_success_at, last_error, consecutive_failures, clock_deviation_ms, clock_flagged)
         SELECT id, at, CASE WHEN err IS NULL THEN at END, err, CASE WHEN err IS NULL THEN 0 ELSE 1 END, dev, flagged
         FROM unnest($1::int[], $2::timestamptz[], $3::text[], $4::bigint[], $5::bool[]) AS u(id, at, err, dev, flagged)
         ON CONFLICT (meter_id) DO UPDATE SET
             last_attempt_at = EXCLUDED.last_attempt_at,
             last_success_at = COALESCE(EXCLUDED.last_success_at, s.last_success_at),
             last_error = EXCLUDED.last_error,
             consecutive_failures = CASE WHEN EXCLUDED.last_error IS NULL THEN 0 ELSE s.consecutive_failures + 1 END,
             clock_deviation_ms = COALESCE(EXCLUDED.clock_deviation_ms, s.clock_deviation_ms),
             clock_flagged = CASE WHEN EXCLUDED.clock_deviation_ms IS NULL THEN s.clock_flagged ELSE EXCLUDED.clock_flagged END",
        &[&ids, &at, &err, &dev, &flagged],
    )
    .await?;

    let caps: Vec<(i32, &str, &Capabilities)> =
        latest.iter().filter_map(|r| r.capabilities.as_ref().map(|(p, c)| (r.meter_id, *p, c))).collect();
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
