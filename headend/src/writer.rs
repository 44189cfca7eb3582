//! The batching writer. Sources push [`Envelope`]s (one received message each: its rows, or its
//! dead letter) into a bounded queue; a batcher cuts batches by rows and by age; `connections`
//! workers each write a batch in one transaction:
//!
//! 1. binary `COPY` of the rows into a session-local staging table,
//! 2. `INSERT INTO readings … SELECT … ON CONFLICT DO NOTHING` (idempotent: redeliveries and
//!    repeats are counted as duplicates, never stored twice),
//! 3. the batch's hours into `rollup_pending` (plain PostgreSQL), its dead letters into
//!    `dead_letters`,
//! 4. `COMMIT`.
//!
//! Only then are the batch's acknowledgement tokens released, in batch order, on the `committed`
//! channel (invariant: no acknowledgement before the commit). Transient errors are retried with
//! backoff on a fresh connection; a batch that fails permanently is stored as dead letters
//! (`store_failed`) with every raw payload, so nothing is lost and the pipeline moves on.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use futures::pin_mut;
use schemas::migrations::Storage;
use schemas::reading::Reading;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::config::WriterConfig;
use crate::db;
use crate::ingest::DeadLetter;
use crate::metrics::Metrics;

/// What a source needs to acknowledge a message once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    /// The source's connection generation the message arrived on.
    pub epoch: u64,
    pub pkid: u16,
}

/// One received message.
#[derive(Debug)]
pub struct Envelope {
    pub rows: Vec<Reading>,
    pub dead: Option<DeadLetter>,
    pub ack: Option<AckToken>,
    /// The device's send time, for the ingest delay histogram.
    pub sent: Option<DateTime<Utc>>,
    /// Which intake received it (`mqtt`, …), where from, and its raw bytes: kept in case the
    /// batch must be dead-lettered.
    pub source: &'static str,
    pub origin: Arc<str>,
    pub raw: Bytes,
}

/// The sending side, cloned by sources. The writer finishes once every handle is dropped and the
/// queue has been written.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Envelope>,
}

impl WriterHandle {
    /// Queues a message; waits while the queue is full (backpressure).
    pub async fn send(&self, env: Envelope) -> Result<(), WriterClosed> {
        self.tx.send(env).await.map_err(|_| WriterClosed)
    }
}

/// The writer has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the writer has stopped")]
pub struct WriterClosed;

struct Batch {
    seq: u64,
    rows: Vec<Reading>,
    dead: Vec<DeadLetter>,
    acks: Vec<AckToken>,
    sent: Vec<DateTime<Utc>>,
    raw: Vec<(&'static str, Arc<str>, Bytes)>,
}

impl Batch {
    fn new(seq: u64) -> Self {
        Batch { seq, rows: Vec::new(), dead: Vec::new(), acks: Vec::new(), sent: Vec::new(), raw: Vec::new() }
    }

    fn push(&mut self, e: Envelope) {
        self.rows.extend_from_slice(&e.rows);
        self.dead.extend(e.dead);
        self.acks.extend(e.ack);
        self.sent.extend(e.sent);
        if !e.rows.is_empty() {
            self.raw.push((e.source, e.origin, e.raw));
        }
    }
}

/// Starts the writer. Returns the handle for sources and the task that ends when the writer has
/// written everything queued after the last handle was dropped.
pub fn spawn(
    cfg: WriterConfig,
    database_url: String,
    storage: Storage,
    metrics: Arc<Metrics>,
    committed: mpsc::UnboundedSender<Vec<AckToken>>,
) -> (WriterHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(cfg.queue_messages.max(1));
    let workers = cfg.connections.clamp(1, 8);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(workers);
    let batch_rx = Arc::new(tokio::sync::Mutex::new(batch_rx));
    let (done_tx, done_rx) = mpsc::unbounded_channel::<(u64, Vec<AckToken>)>();
    let partitions = Arc::new(Mutex::new(HashSet::new()));
    let task = tokio::spawn(async move {
        let mut handles = Vec::new();
        for n in 0..workers {
            let w = Worker {
                n,
                url: database_url.clone(),
                storage,
                cfg: cfg.clone(),
                metrics: metrics.clone(),
                client: None,
                partitions: partitions.clone(),
            };
            handles.push(tokio::spawn(w.run(batch_rx.clone(), done_tx.clone())));
        }
        drop(done_tx);
        let sequencer = tokio::spawn(sequence(done_rx, committed));
        batcher(rx, batch_tx, cfg, metrics).await;
        for h in handles {
            let _ = h.await;
        }
        let _ = sequencer.await;
    });
    (WriterHandle { tx }, task)
}

async fn batcher(mut rx: mpsc::Receiver<Envelope>, out: mpsc::Sender<Batch>, cfg: WriterConfig, metrics: Arc<Metrics>) {
    let mut seq = 0u64;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut batch = Batch::new(seq);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + cfg.max_wait;
        let mut closed = false;
        while batch.rows.len() < cfg.batch_rows {
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut buf, 1024)).await {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => buf.drain(..).for_each(|e| batch.push(e)),
                Err(_) => break,
            }
        }
        metrics.writer_queue_messages.set(i64::try_from(rx.len()).unwrap_or(i64::MAX));
        if out.send(batch).await.is_err() {
            break;
        }
        seq += 1;
        if closed {
            break;
        }
    }
}

/// Releases acknowledgement tokens in batch order.
async fn sequence(
    mut done: mpsc::UnboundedReceiver<(u64, Vec<AckToken>)>,
    committed: mpsc::UnboundedSender<Vec<AckToken>>,
) {
    let mut next = 0u64;
    let mut waiting = BTreeMap::new();
    while let Some((seq, acks)) = done.recv().await {
        waiting.insert(seq, acks);
        while let Some(acks) = waiting.remove(&next) {
            if !acks.is_empty() {
                let _ = committed.send(acks);
            }
            next += 1;
        }
    }
}

struct Worker {
    n: usize,
    url: String,
    storage: Storage,
    cfg: WriterConfig,
    metrics: Arc<Metrics>,
    client: Option<Client>,
    partitions: Arc<Mutex<HashSet<NaiveDate>>>,
}

/// How a batch write failed.
enum Failure {
    Transient(tokio_postgres::Error),
    Permanent(tokio_postgres::Error),
}

const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS readings_staging (
    ts timestamptz NOT NULL, value bigint NOT NULL, meter_id integer NOT NULL,
    channel_id smallint NOT NULL, flags smallint NOT NULL) ON COMMIT DELETE ROWS;
    SET TIME ZONE 'UTC';";

/// The channel whose intervals the read-completeness ledger counts: active energy import, 1.8.0.
const LEDGER_CHANNEL: i16 = 1;

/// Moves the staged rows into `readings` (a duplicate is skipped, never counted twice) and counts
/// each newly stored interval of the ledger channel in `read_ledger`, by local day, with how late it
/// arrived. Rows are upserted in key order so concurrent writers do not deadlock. Returns the
/// number of readings stored.
///
/// Rows of other channels (three quarters of a typical batch) go in first without `RETURNING`: only
/// the ledger channel's newly stored rows are returned and counted.
const STORE_OTHERS: &str = "INSERT INTO readings (ts, value, meter_id, channel_id, flags)
    SELECT ts, value, meter_id, channel_id, flags FROM readings_staging
    WHERE NOT (channel_id = $1 AND extract(epoch FROM ts)::bigint % 900 = 0)
    ON CONFLICT DO NOTHING";

const STORE: &str = "WITH ins AS (
        INSERT INTO readings (ts, value, meter_id, channel_id, flags)
        SELECT ts, value, meter_id, channel_id, flags FROM readings_staging
        WHERE channel_id = $1 AND extract(epoch FROM ts)::bigint % 900 = 0
        ON CONFLICT DO NOTHING
        RETURNING meter_id, ts
    ), counted AS (
        SELECT meter_id, headend_local_day(ts) AS day, count(*) AS n,
               count(*) FILTER (WHERE now() - ts <= interval '1 hour') AS h1,
               count(*) FILTER (WHERE now() - ts <= interval '24 hours') AS h24,
               count(*) FILTER (WHERE now() - ts <= interval '72 hours') AS h72
        FROM ins
        GROUP BY 1, 2
    ), ledger AS (
        INSERT INTO read_ledger AS l
            (meter_id, day, expected, received, within_1h, within_24h, within_72h, first_complete_at, updated_at)
        SELECT meter_id, day, headend_intervals_in_day(day), n, h1, h24, h72,
               CASE WHEN n >= headend_intervals_in_day(day) THEN now() END, now()
        FROM counted ORDER BY meter_id, day
        ON CONFLICT (meter_id, day) DO UPDATE SET
            received = l.received + EXCLUDED.received,
            within_1h = l.within_1h + EXCLUDED.within_1h,
            within_24h = l.within_24h + EXCLUDED.within_24h,
            within_72h = l.within_72h + EXCLUDED.within_72h,
            first_complete_at = COALESCE(l.first_complete_at,
                CASE WHEN l.received + EXCLUDED.received >= l.expected THEN now() END),
            updated_at = now()
        RETURNING 1
    )
    SELECT count(*) FROM ins";

impl Worker {
    async fn run(
        mut self,
        batches: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>,
        done: mpsc::UnboundedSender<(u64, Vec<AckToken>)>,
    ) {
        loop {
            let batch = { batches.lock().await.recv().await };
            let Some(mut batch) = batch else { break };
            self.write_until_done(&mut batch).await;
            let _ = done.send((batch.seq, std::mem::take(&mut batch.acks)));
        }
    }

    /// Writes a batch, retrying transient failures for as long as it takes; falls back to dead
    /// letters on a permanent failure.
    async fn write_until_done(&mut self, batch: &mut Batch) {
        // Sorted rows insert into the primary key's b-tree in order: fewer page visits.
        batch.rows.sort_unstable_by_key(|r| (r.meter_id, r.channel_id, r.ts));
        let mut delay = self.cfg.retry_initial;
        let mut fallback = false;
        loop {
            let started = Instant::now();
            let result = if fallback { self.write_as_dead_letters(batch).await } else { self.write(batch).await };
            match result {
                Ok((stored, dup)) => {
                    let now = Utc::now();
                    let m = &self.metrics;
                    m.writer_commit_seconds.observe(started.elapsed().as_secs_f64());
                    m.writer_batches.inc();
                    m.writer_batch_rows.observe(batch.rows.len() as f64);
                    m.readings_stored.inc_by(stored);
                    m.readings_duplicate.inc_by(dup);
                    for d in &batch.dead {
                        m.dead_letters.with_label_values(&[d.reason]).inc();
                    }
                    for s in &batch.sent {
                        let delay = (now - *s).num_milliseconds();
                        if delay >= 0 {
                            m.ingest_delay_seconds.observe(delay as f64 / 1000.0);
                        }
                    }
                    return;
                }
                Err(Failure::Transient(e)) => {
                    if e.code().is_some_and(|c| c.code() == "23514") {
                        // No partition for a row: forget the batch's days so they are ensured again.
                        let mut known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
                        for r in &batch.rows {
                            known.remove(&r.ts.date_naive());
                        }
                    }
                    self.metrics.writer_errors.with_label_values(&["transient"]).inc();
                    tracing::warn!(worker = self.n, error = %db::describe(&e), retry_in = ?delay, rows = batch.rows.len(), "batch write failed, retrying");
                    self.client = None;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.cfg.retry_max);
                }
                Err(Failure::Permanent(e)) => {
                    self.metrics.writer_errors.with_label_values(&["permanent"]).inc();
                    tracing::error!(worker = self.n, error = %db::describe(&e), messages = batch.raw.len(), "batch refused by the database; storing its messages as dead letters");
                    if fallback {
                        // Even the dead letters were refused: keep the batch (unacknowledged) and retry.
                        self.client = None;
                        tokio::time::sleep(self.cfg.retry_max).await;
                    } else {
                        let detail = format!("database refused the batch: {}", db::describe(&e));
                        let raw = std::mem::take(&mut batch.raw);
                        for (source, origin, payload) in raw {
                            batch.dead.push(DeadLetter::new(source, &origin, "store_failed", detail.clone(), payload));
                        }
                        batch.rows.clear();
                        fallback = true;
                    }
                }
            }
        }
    }

    async fn connection(&mut self) -> Result<&mut Client, Failure> {
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            _ => {
                let c = db::connect(&self.url).await.map_err(Failure::Transient)?;
                c.batch_execute(STAGING).await.map_err(classify)?;
                c
            }
        };
        Ok(self.client.insert(client))
    }

    async fn ensure_partitions(&mut self, rows: &[Reading]) -> Result<(), Failure> {
        if self.storage != Storage::Plain {
            return Ok(());
        }
        let days: Vec<NaiveDate> = {
            let known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            let mut days: Vec<NaiveDate> =
                rows.iter().map(|r| r.ts.date_naive()).filter(|d| !known.contains(d)).collect();
            days.sort_unstable();
            days.dedup();
            days
        };
        if days.is_empty() {
            return Ok(());
        }
        let metrics = self.metrics.clone();
        let client = self.connection().await?;
        for day in &days {
            let created: bool =
                client.query_one("SELECT headend_ensure_partition($1)", &[day]).await.map_err(classify)?.get(0);
            if created {
                metrics.partitions_created.inc();
                tracing::info!(%day, "partition created");
            }
        }
        self.partitions.lock().unwrap_or_else(|p| p.into_inner()).extend(days);
        Ok(())
    }

    /// Returns (rows stored, duplicates).
    async fn write(&mut self, batch: &Batch) -> Result<(u64, u64), Failure> {
        self.ensure_partitions(&batch.rows).await?;
        let plain = self.storage == Storage::Plain;
        let client = self.connection().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let mut stored = 0;
        if !batch.rows.is_empty() {
            let sink = tx
                .copy_in("COPY readings_staging (ts, value, meter_id, channel_id, flags) FROM STDIN BINARY")
                .await
                .map_err(classify)?;
            let writer =
                BinaryCopyInWriter::new(sink, &[Type::TIMESTAMPTZ, Type::INT8, Type::INT4, Type::INT2, Type::INT2]);
            pin_mut!(writer);
            for r in &batch.rows {
                writer
                    .as_mut()
                    .write(&[&r.ts, &r.value, &r.meter_id, &r.channel_id, &r.flags])
                    .await
                    .map_err(classify)?;
            }
            writer.finish().await.map_err(classify)?;
            let others = tx.execute(STORE_OTHERS, &[&LEDGER_CHANNEL]).await.map_err(classify)?;
            let n: i64 = tx.query_one(STORE, &[&LEDGER_CHANNEL]).await.map_err(classify)?.get(0);
            stored = others + n.unsigned_abs();
            if plain && stored > 0 {
                let mut hours: Vec<DateTime<Utc>> = batch.rows.iter().map(|r| hour_of(r.ts)).collect();
                hours.sort_unstable();
                hours.dedup();
                // Sorted, so two writers never wait on each other's marks in opposite orders.
                tx.execute(
                    "INSERT INTO rollup_pending (hour, writer)
                     SELECT h, pg_backend_pid() FROM unnest($1::timestamptz[]) AS h
                     ON CONFLICT (hour, writer) DO UPDATE SET writer = EXCLUDED.writer",
                    &[&hours],
                )
                .await
                .map_err(classify)?;
            }
        }
        insert_dead_letters(&tx, &batch.dead).await?;
        tx.commit().await.map_err(classify)?;
        let total = batch.rows.len() as u64;
        Ok((stored, total.saturating_sub(stored)))
    }

    async fn write_as_dead_letters(&mut self, batch: &Batch) -> Result<(u64, u64), Failure> {
        let client = self.connection().await?;
        let tx = client.transaction().await.map_err(classify)?;
        insert_dead_letters(&tx, &batch.dead).await?;
        tx.commit().await.map_err(classify)?;
        Ok((0, 0))
    }
}

async fn insert_dead_letters(tx: &tokio_postgres::Transaction<'_>, dead: &[DeadLetter]) -> Result<(), Failure> {
    if dead.is_empty() {
        return Ok(());
    }
    let source: Vec<&str> = dead.iter().map(|d| d.source).collect();
    let origin: Vec<&str> = dead.iter().map(|d| d.origin.as_str()).collect();
    let reason: Vec<&str> = dead.iter().map(|d| d.reason).collect();
    let detail: Vec<&str> = dead.iter().map(|d| d.detail.as_str()).collect();
    let payload: Vec<&[u8]> = dead.iter().map(|d| &d.payload[..]).collect();
    tx.execute(
        "INSERT INTO dead_letters (source, origin, reason, detail, payload)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])",
        &[&source, &origin, &reason, &detail, &payload],
    )
    .await
    .map_err(classify)?;
    Ok(())
}

fn hour_of(ts: DateTime<Utc>) -> DateTime<Utc> {
    let secs = ts.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).unwrap_or(ts)
}

fn classify(e: tokio_postgres::Error) -> Failure {
    // A missing partition (23514, a routing check) means another process dropped or never created
    // it: worth a retry after ensuring partitions again.
    // 42P07 (a partition created concurrently, before migration 5 made that idempotent) too.
    if db::is_transient(&e) || e.code().is_some_and(|c| matches!(c.code(), "23514" | "42P07")) {
        Failure::Transient(e)
    } else {
        Failure::Permanent(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_truncate() {
        let ts: DateTime<Utc> = "2026-11-20T10:45:00Z".parse().expect("ts");
        assert_eq!(hour_of(ts).to_rfc3339(), "2026-11-20T10:00:00+00:00");
        let ts: DateTime<Utc> = "2026-11-20T11:00:00Z".parse().expect("ts");
        assert_eq!(hour_of(ts).to_rfc3339(), "2026-11-20T11:00:00+00:00");
    }
}
