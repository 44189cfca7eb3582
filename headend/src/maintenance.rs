//! Storage upkeep, on its own connection, never in the ingest path:
//! - plain PostgreSQL: daily partitions created ahead, the hourly rollup brought up to date from
//!   `rollup_pending`, partitions past the retention dropped;
//! - TimescaleDB: the compression policy registered (the extension runs it, and its continuous
//!   aggregate refreshes itself); chunks past the retention dropped (keeping the rollup's hours).
//!
//! Replicas coordinate with advisory locks: one refresher at a time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use schemas::migrations::Storage;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::config::StorageConfig;
use crate::db;
use crate::metrics::Metrics;

/// Creates partitions for yesterday up to `ahead` days from today. Returns how many were new.
pub async fn ensure_partitions(client: &Client, today: NaiveDate, ahead: u32) -> Result<u32, tokio_postgres::Error> {
    let mut created = 0;
    for offset in -1..=i64::from(ahead) {
        let day = today + chrono::Duration::days(offset);
        let new: bool = client.query_one("SELECT headend_ensure_partition($1)", &[&day]).await?.get(0);
        created += u32::from(new);
    }
    Ok(created)
}

/// Recomputes every hour waiting in `rollup_pending`, oldest first, one transaction per hour.
/// Returns how many hours were refreshed. Skips (returns 0) when another replica is at it.
pub async fn refresh_rollup(client: &mut Client) -> Result<u64, tokio_postgres::Error> {
    let locked: bool = client.query_one("SELECT pg_try_advisory_lock(hashtext('headend_rollup'))", &[]).await?.get(0);
    if !locked {
        return Ok(0);
    }
    let result = refresh_locked(client).await;
    client.execute("SELECT pg_advisory_unlock(hashtext('headend_rollup'))", &[]).await?;
    result
}

async fn refresh_locked(client: &mut Client) -> Result<u64, tokio_postgres::Error> {
    // At most 64 hours a tick, so partitions and retention are never starved by a busy ingest.
    let hours: Vec<chrono::DateTime<Utc>> = client
        .query("SELECT DISTINCT hour FROM rollup_pending ORDER BY hour LIMIT 64", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut refreshed = 0;
    for h in hours {
        // Its own short transaction: the DELETE waits for writers still holding a mark of this hour
        // (so their rows are committed before the refresh below takes its snapshot) and releases
        // the marks at once, so writers never wait for a refresh. Marks written after it stay for
        // the next tick.
        client.execute("DELETE FROM rollup_pending WHERE hour = $1", &[&h]).await?;
        if let Err(e) = client.query_one("SELECT headend_refresh_hour($1)", &[&h]).await {
            // Put the mark back so the hour is refreshed later (best effort: a lost connection
            // leaves the hour stale until new readings for it arrive).
            let _ = client
                .execute("INSERT INTO rollup_pending (hour, writer) VALUES ($1, 0) ON CONFLICT DO NOTHING", &[&h])
                .await;
            return Err(e);
        }
        refreshed += 1;
    }
    Ok(refreshed)
}

/// How often the read-rate gauges are recomputed from the ledger.
const READ_RATE_EVERY: Duration = Duration::from_secs(60);

/// Sets `headend_read_rate_ratio` from yesterday's (local) ledger.
pub async fn refresh_read_rate(c: &Client, metrics: &Metrics) -> Result<(), tokio_postgres::Error> {
    let rate = crate::collect::ledger::read_rate(c, crate::collect::ledger::yesterday(Utc::now())).await?;
    for (measure, v) in [
        ("complete_meters", rate.complete_ratio),
        ("received", rate.received_ratio),
        ("within_1h", rate.within_1h_ratio),
        ("within_24h", rate.within_24h_ratio),
        ("within_72h", rate.within_72h_ratio),
    ] {
        metrics.read_rate.with_label_values(&[measure]).set(v);
    }
    Ok(())
}

/// Runs upkeep until cancelled. Errors are counted and logged; the loop goes on.
pub async fn run(
    cfg: StorageConfig,
    url: String,
    storage: Storage,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut client: Option<Client> = None;
    let mut last_upkeep: Option<tokio::time::Instant> = None;
    let mut last_rate: Option<tokio::time::Instant> = None;
    let tick = if storage == Storage::Plain {
        cfg.rollup_interval.min(cfg.maintenance_interval)
    } else {
        cfg.maintenance_interval
    };
    loop {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = db::connect(&url).await.ok();
        }
        if let Some(c) = client.as_mut() {
            let upkeep_due = last_upkeep.is_none_or(|t| t.elapsed() >= cfg.maintenance_interval);
            let result = async {
                if upkeep_due {
                    upkeep(c, &cfg, storage, &metrics).await?;
                    last_upkeep = Some(tokio::time::Instant::now());
                }
                if storage == Storage::Plain {
                    let n = refresh_rollup(c).await?;
                    metrics.rollup_hours_refreshed.inc_by(n);
                }
                if last_rate.is_none_or(|t| t.elapsed() >= READ_RATE_EVERY) {
                    refresh_read_rate(c, &metrics).await?;
                    last_rate = Some(tokio::time::Instant::now());
                }
                Ok::<_, tokio_postgres::Error>(())
            }
            .await;
            if let Err(e) = result {
                metrics.maintenance_errors.inc();
                tracing::warn!(error = %e, "maintenance failed; will retry");
                client = None;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick.max(Duration::from_millis(100))) => {}
        }
    }
}

async fn upkeep(
    c: &Client,
    cfg: &StorageConfig,
    storage: Storage,
    metrics: &Metrics,
) -> Result<(), tokio_postgres::Error> {
    let today = Utc::now().date_naive();
    match storage {
        Storage::Plain => {
            let n = ensure_partitions(c, today, cfg.partitions_ahead_days).await?;
            metrics.partitions_created.inc_by(u64::from(n));
        }
        Storage::Timescale => {
            let after = humantime::format_duration(cfg.compress_after).to_string();
            c.execute(
                "SELECT add_compression_policy('readings', $1::text::interval, if_not_exists => true)",
                &[&after],
            )
            .await?;
        }
    }
    // Retention the same way on both paths (whole days or chunks; no TimescaleDB retention policy:
    // its drop_chunks would empty the dropped hours of the continuous aggregate at the next refresh,
    // see migration 12). The hourly rollup keeps its rows.
    if let Some(keep) = cfg.retention {
        let days = i64::try_from(keep.as_secs() / 86_400).unwrap_or(i64::MAX).max(1);
        let cutoff = today - chrono::Duration::days(days);
        let dropped: i32 = c.query_one("SELECT headend_drop_partitions_before($1)", &[&cutoff]).await?.get(0);
        if dropped > 0 {
            tracing::info!(dropped, %cutoff, "partitions past retention dropped");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;

    #[tokio::test]
    async fn rollup_follows_inserts_and_late_data() {
        let db = TestDb::new().await;
        let mut c = db.migrated().await;
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        ensure_partitions(&c, day, 1).await.expect("partitions");
        let insert = "INSERT INTO readings (ts, value, meter_id, channel_id, flags) VALUES ($1, $2, 1, 1, 0)";
        let mark = "INSERT INTO rollup_pending (hour, writer) VALUES ($1, 1) ON CONFLICT DO NOTHING";
        let h: chrono::DateTime<Utc> = "2026-11-20T10:00:00Z".parse().expect("ts");
        for (min, v) in [(15, 100i64), (30, 130), (0, 90)] {
            let ts = h + chrono::Duration::minutes(min);
            c.execute(insert, &[&ts, &v]).await.expect("insert");
        }
        c.execute(mark, &[&h]).await.expect("mark");
        assert_eq!(refresh_rollup(&mut c).await.expect("refresh"), 1);
        let row = c
            .query_one(
                "SELECT samples, first_value, last_value, min_value, max_value FROM readings_hourly WHERE hour = $1",
                &[&h],
            )
            .await
            .expect("rollup row");
        assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (3, 90, 130));
        assert_eq!((row.get::<_, i64>(3), row.get::<_, i64>(4)), (90, 130));
        // Late reading for the same hour: marked again, the hour is recomputed.
        c.execute(insert, &[&(h + chrono::Duration::minutes(45)), &150i64]).await.expect("late");
        c.execute(mark, &[&h]).await.expect("mark");
        assert_eq!(refresh_rollup(&mut c).await.expect("refresh"), 1);
        let row =
            c.query_one("SELECT samples, last_value FROM readings_hourly WHERE hour = $1", &[&h]).await.expect("row");
        assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1)), (4, 150));
        assert_eq!(refresh_rollup(&mut c).await.expect("refresh"), 0, "nothing pending");
    }
}
