//! The batching writer. Sources push [`Envelope`]s (one received message each: its rows, or its
//! dead letter) into a bounded queue; a batcher cuts batches by rows and by age; `connections`
//! workers each write a batch in one transaction:
//!
//! 1. binary `COPY` of the rows into a session-local staging table,
//! 2. `INSERT INTO readings … SELECT … ON CONFLICT DO NOTHING` (idempotent: redeliveries and
//!    repeats are counted as duplicates, never stored twice),
//! 3. the batch's hours into `rollup_pending` (plain PostgreSQL), its dead letters into
//!    `dead_letters`, and for a polled session ([`PollMark`]) its success in `meter_poll_status`
//!    and its events in `meter_events` — so the poll's outcome is stored if and only if its readings
//!    are (a replica taking the meter over trusts it: see `collect::scheduler`),
//! 4. `COMMIT`.
//!
//! Only then are the batch's acknowledgement tokens released, in batch order, on the `committed`
//! channel (invariant: no acknowledgement before the commit), and polled sessions told that their
//! readings are stored. Transient errors are retried with
//! backoff on a fresh connection (the same batch again: readings by their key and dead letters by
//! `message_key` are idempotent, so a COMMIT whose reply was lost stores nothing twice). A batch the
//! database refuses outright is halved until the refused message is alone; that message becomes a
//! `store_failed` dead letter with its raw payload and the database's reason, the rest is stored.
//! Every source's readings pass the MQTT time window here (`timestamp_out_of_range`).

use std::collections::{BTreeMap, HashSet};
#[cfg(test)]
use std::sync::atomic::{AtomicU32, Ordering};
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
use crate::ingest::{DeadLetter, Window};
use crate::metrics::Metrics;

/// What a source needs to acknowledge a message once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    /// The source's connection generation the message arrived on.
    pub epoch: u64,
    pub pkid: u16,
}

/// A polled session's outcome, stored in the transaction of its readings: `last_success_at` in
/// `meter_poll_status` (never moved backwards) and the events it read. `stored` is told once the
/// transaction has committed (or the message has become a dead letter).
#[derive(Debug)]
pub struct PollMark {
    pub meter_id: i32,
    pub at: DateTime<Utc>,
    pub events: Vec<crate::collect::MeterEvent>,
    /// The events' `source` (`schemas::reading::Source`).
    pub event_source: i16,
    pub stored: Option<tokio::sync::oneshot::Sender<()>>,
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

/// A queued message, with a polled session's outcome and the bytes it holds of the budget.
#[derive(Debug)]
struct Queued {
    env: Envelope,
    polled: Option<PollMark>,
    held: Option<Held>,
}

impl From<Envelope> for Queued {
    fn from(env: Envelope) -> Self {
        Queued { env, polled: None, held: None }
    }
}

/// The byte budget of received messages (`writer.queue_bytes`): a source holds a message's bytes
/// from the moment it has it (the MQTT intake: before it reads the next publish) until the batch
/// holding it has committed. A source waits while the budget is spent, so memory is bounded by
/// bytes whatever the payload sizes; a message larger than the whole budget takes all of it.
#[derive(Clone)]
pub struct Budget {
    permits: Arc<tokio::sync::Semaphore>,
    total: u32,
    peak: Arc<std::sync::atomic::AtomicI64>,
    metrics: Arc<Metrics>,
}

/// Bytes of the [`Budget`] held by one message; given back when dropped.
pub struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    bytes: u32,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").field("total", &self.total).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

impl Budget {
    fn new(total: u32, metrics: Arc<Metrics>) -> Self {
        let total = total.max(1);
        metrics.ingest_budget_bytes.set(i64::from(total));
        Budget { permits: Arc::new(tokio::sync::Semaphore::new(total as usize)), total, peak: Arc::default(), metrics }
    }

    /// Waits until `bytes` (at most the whole budget) are free and holds them.
    pub async fn hold(&self, bytes: usize) -> Held {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, self.total);
        let Ok(permit) = self.permits.clone().acquire_many_owned(n).await else {
            unreachable!("the budget's semaphore is never closed")
        };
        self.metrics.ingest_held_bytes.add(i64::from(n));
        let now = i64::from(self.total) - i64::try_from(self.permits.available_permits()).unwrap_or(0);
        let peak = self.peak.fetch_max(now, std::sync::atomic::Ordering::AcqRel).max(now);
        self.metrics.ingest_held_bytes_peak.set(peak);
        Held { _permit: permit, bytes: n, metrics: self.metrics.clone() }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics.ingest_held_bytes.sub(i64::from(self.bytes));
    }
}

/// Bytes every message holds of the [`Budget`] beyond its own: its bookkeeping (acknowledgement
/// token, queue slot).
pub const MESSAGE_OVERHEAD: usize = 64;

/// Bytes a received MQTT publish holds of the [`Budget`] until its batch commits (taken before it
/// is parsed, so from its payload and topic).
pub fn publish_cost(payload: usize, topic: usize) -> usize {
    payload + topic + MESSAGE_OVERHEAD
}

impl Envelope {
    /// Bytes this message holds of the budget: its raw bytes (a dead letter's payload shares them
    /// or replaces them), its rows and its origin.
    fn cost(&self) -> usize {
        let dead = self.dead.as_ref().map_or(0, |d| d.payload.len() + d.detail.len());
        self.raw.len().max(dead)
            + self.rows.len() * std::mem::size_of::<Reading>()
            + self.origin.len()
            + MESSAGE_OVERHEAD
    }
}

/// The sending side, cloned by sources. The writer finishes once every handle is dropped and the
/// queue has been written.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Queued>,
    budget: Budget,
}

impl WriterHandle {
    /// Queues a message; waits while the byte budget or the queue is full (backpressure).
    pub async fn send(&self, env: Envelope) -> Result<(), WriterClosed> {
        let held = self.budget.hold(env.cost()).await;
        self.send_held(env, held).await
    }

    /// Queues a message whose bytes the source already holds (taken before it was parsed).
    pub async fn send_held(&self, env: Envelope, held: Held) -> Result<(), WriterClosed> {
        self.tx.send(Queued { env, polled: None, held: Some(held) }).await.map_err(|_| WriterClosed)
    }

    /// Queues a polled session's readings with its outcome, stored in the same transaction.
    pub async fn send_polled(&self, env: Envelope, polled: PollMark) -> Result<(), WriterClosed> {
        let held = self.budget.hold(env.cost()).await;
        self.tx.send(Queued { env, polled: Some(polled), held: Some(held) }).await.map_err(|_| WriterClosed)
    }

    /// The byte budget, for a source that must hold a message's bytes before it has an envelope.
    #[must_use]
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

/// The writer has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the writer has stopped")]
pub struct WriterClosed;

/// One message of a batch. Its number, with the writer's instance, names its dead letters in
/// `dead_letters.message_key`, so a batch written again (a COMMIT whose reply was lost) adds none
/// twice; and it keeps its own rows so a refused batch can be cut down to the offending message.
struct Message {
    id: u64,
    rows: Vec<Reading>,
    dead: Vec<DeadLetter>,
    /// A polled session's outcome (its `stored` sender is kept by the batch).
    polled: Option<PollMark>,
    source: &'static str,
    origin: Arc<str>,
    raw: Bytes,
    /// Its bytes of the budget, given back when the message is dropped (after its commit).
    _held: Option<Held>,
}

impl Message {
    /// Polled and pushed readings get the time window MQTT payloads get in `ingest::to_rows` (a
    /// meter whose clock says 2031 must not create 2031 partitions). Rows outside it are taken
    /// out and kept as one `timestamp_out_of_range` dead letter: the message's raw bytes when no
    /// row is left (a push, an MQTT payload), else the refused rows as JSON (a polled session
    /// keeps its good rows).
    fn refuse_out_of_window(&mut self, window: Window, now: DateTime<Utc>) {
        let (oldest, newest) = window.bounds(now);
        let inside = |r: &Reading| oldest <= r.ts && r.ts <= newest;
        if self.rows.iter().all(inside) {
            return;
        }
        let total = self.rows.len();
        let (keep, out): (Vec<Reading>, Vec<Reading>) = std::mem::take(&mut self.rows).into_iter().partition(inside);
        let why = out.first().and_then(|r| window.check(r.ts, now).err()).map(|r| r.detail).unwrap_or_default();
        let detail = format!("{} of {total} readings outside the window; the first: {why}", out.len());
        let payload = if keep.is_empty() {
            self.raw.clone()
        } else {
            Bytes::from(serde_json::to_vec(&RefusedRows(&out)).unwrap_or_default())
        };
        self.dead.push(DeadLetter::new(self.source, &self.origin, "timestamp_out_of_range", detail, payload));
        self.rows = keep;
    }
}

/// Refused rows as JSON `[[ts, channel, value, flags], …]` (as the poller keeps a session's rows).
struct RefusedRows<'a>(&'a [Reading]);

impl serde::Serialize for RefusedRows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for r in self.0 {
            seq.serialize_element(&(r.ts, r.channel_id, r.value, r.flags))?;
        }
        seq.end()
    }
}

struct Batch {
    seq: u64,
    messages: Vec<Message>,
    /// Readings in `messages`.
    rows: usize,
    acks: Vec<AckToken>,
    sent: Vec<DateTime<Utc>>,
    /// Polled sessions waiting for the commit.
    stored: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Batch {
    fn new(seq: u64) -> Self {
        Batch { seq, messages: Vec::new(), rows: 0, acks: Vec::new(), sent: Vec::new(), stored: Vec::new() }
    }

    fn push(&mut self, id: u64, q: Queued, window: Window, now: DateTime<Utc>) {
        let Queued { env: e, mut polled, held } = q;
        self.stored.extend(polled.as_mut().and_then(|p| p.stored.take()));
        let mut m = Message {
            id,
            rows: e.rows,
            dead: e.dead.into_iter().collect(),
            polled,
            source: e.source,
            origin: e.origin,
            raw: e.raw,
            _held: held,
        };
        m.refuse_out_of_window(window, now);
        self.rows += m.rows.len();
        self.acks.extend(e.ack);
        self.sent.extend(e.sent);
        self.messages.push(m);
    }
}

/// A number for this writer, different from any other writer's (replicas, restarts) with
/// overwhelming probability: the first part of its dead letters' keys.
fn instance_id() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        nanos.unsigned_abs() ^ u64::from(std::process::id()).rotate_left(40)
    })
}

/// Starts the writer. Returns the handle for sources and the task that ends when the writer has
/// written everything queued after the last handle was dropped.
pub fn spawn(
    cfg: WriterConfig,
    database_url: String,
    storage: Storage,
    window: Window,
    metrics: Arc<Metrics>,
    committed: mpsc::UnboundedSender<Vec<AckToken>>,
) -> (WriterHandle, JoinHandle<()>) {
    spawn_with(cfg, database_url, storage, window, metrics, committed, Faults::default())
}

/// Failure points the tests arm; nothing in production builds.
#[derive(Clone, Default)]
pub(crate) struct Faults {
    /// This many successful COMMITs are reported as failed (the connection dies right after), as
    /// when a COMMIT's reply is lost: the writer must write the same batch again.
    #[cfg(test)]
    lost_commit_replies: Arc<AtomicU32>,
}

fn spawn_with(
    cfg: WriterConfig,
    database_url: String,
    storage: Storage,
    window: Window,
    metrics: Arc<Metrics>,
    committed: mpsc::UnboundedSender<Vec<AckToken>>,
    faults: Faults,
) -> (WriterHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(cfg.queue_messages.max(1));
    let budget = Budget::new(cfg.queue_bytes, metrics.clone());
    let workers = cfg.connections.clamp(1, 8);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(workers);
    let batch_rx = Arc::new(tokio::sync::Mutex::new(batch_rx));
    let (done_tx, done_rx) = mpsc::unbounded_channel::<(u64, Vec<AckToken>)>();
    let partitions = Arc::new(Mutex::new(HashSet::new()));
    let instance = instance_id();
    let task = tokio::spawn(async move {
        let mut handles = Vec::new();
        for n in 0..workers {
            let w = Worker {
                n,
                instance,
                url: database_url.clone(),
                storage,
                cfg: cfg.clone(),
                metrics: metrics.clone(),
                client: None,
                partitions: partitions.clone(),
                faults: faults.clone(),
            };
            handles.push(tokio::spawn(w.run(batch_rx.clone(), done_tx.clone())));
        }
        drop(done_tx);
        let sequencer = tokio::spawn(sequence(done_rx, committed));
        batcher(rx, batch_tx, cfg, window, metrics).await;
        for h in handles {
            let _ = h.await;
        }
        let _ = sequencer.await;
    });
    (WriterHandle { tx, budget }, task)
}

/// Cuts batches: a batch is handed to the workers once it holds `batch_rows` readings (it may
/// pass that by the messages already queued, taken in one go) or its first message has waited
/// `max_wait`, or when the sources are gone. Batches are numbered from 0, the order in which
/// `sequence` releases their acknowledgements.
async fn batcher(
    mut rx: mpsc::Receiver<Queued>,
    out: mpsc::Sender<Batch>,
    cfg: WriterConfig,
    window: Window,
    metrics: Arc<Metrics>,
) {
    let mut seq = 0u64;
    let mut id = 0u64;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut batch = Batch::new(seq);
        batch.push(id, first, window, Utc::now());
        id += 1;
        let deadline = tokio::time::Instant::now() + cfg.max_wait;
        let mut closed = false;
        while batch.rows < cfg.batch_rows {
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut buf, 1024)).await {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {
                    let now = Utc::now();
                    for e in buf.drain(..) {
                        batch.push(id, e, window, now);
                        id += 1;
                    }
                }
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
    /// This writer's [`instance_id`].
    instance: u64,
    url: String,
    storage: Storage,
    cfg: WriterConfig,
    metrics: Arc<Metrics>,
    client: Option<Client>,
    partitions: Arc<Mutex<HashSet<NaiveDate>>>,
    #[cfg_attr(not(test), allow(dead_code))]
    faults: Faults,
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
            for s in batch.stored.drain(..) {
                let _ = s.send(());
            }
            let _ = done.send((batch.seq, std::mem::take(&mut batch.acks)));
        }
    }

    /// Writes a batch, retrying transient failures for as long as it takes. A part of the batch
    /// the database refuses outright is halved until the refused message is alone: that message
    /// becomes a `store_failed` dead letter with the database's reason (and its raw bytes), every
    /// other message is stored. Each part is its own transaction, and every write is idempotent
    /// (readings by their key, dead letters by `message_key`), so a part written again after a
    /// lost COMMIT reply stores nothing twice.
    async fn write_until_done(&mut self, batch: &mut Batch) {
        let (mut stored, mut duplicates) = (0, 0);
        // Parts still to write, as ranges of the batch's messages; the last one is written next.
        let mut parts: Vec<std::ops::Range<usize>> = Vec::with_capacity(32);
        parts.push(0..batch.messages.len());
        while let Some(part) = parts.pop() {
            let e = match self.write_retrying(&batch.messages[part.clone()]).await {
                Ok((s, d)) => {
                    stored += s;
                    duplicates += d;
                    continue;
                }
                Err(e) => e,
            };
            self.metrics.writer_errors.with_label_values(&["permanent"]).inc();
            let error = db::describe(&e);
            if part.len() > 1 {
                tracing::warn!(worker = self.n, %error, messages = part.len(), "part of a batch refused by the database; halving it");
                let mid = part.start + part.len() / 2;
                parts.push(mid..part.end);
                parts.push(part.start..mid);
                continue;
            }
            let m = &mut batch.messages[part.start];
            if m.rows.is_empty() {
                // Even its dead letters were refused: keep the batch (unacknowledged) and retry.
                tracing::error!(worker = self.n, %error, "dead letters refused by the database; retrying");
                self.client = None;
                tokio::time::sleep(self.cfg.retry_max).await;
            } else {
                tracing::error!(worker = self.n, %error, origin = %m.origin, "message refused by the database; storing it as a dead letter");
                let detail = format!("database refused the message: {error}");
                m.dead.push(DeadLetter::new(m.source, &m.origin, "store_failed", detail, m.raw.clone()));
                m.rows.clear();
                // Its outcome may be what was refused (a meter gone from the inventory): the
                // session's status report still records it.
                m.polled = None;
            }
            parts.push(part);
        }
        let now = Utc::now();
        let m = &self.metrics;
        m.writer_batches.inc();
        m.writer_batch_rows.observe(batch.rows as f64);
        m.readings_stored.inc_by(stored);
        m.readings_duplicate.inc_by(duplicates);
        for d in batch.messages.iter().flat_map(|msg| &msg.dead) {
            m.dead_letters.with_label_values(&[d.reason]).inc();
        }
        for s in &batch.sent {
            let delay = (now - *s).num_milliseconds();
            if delay >= 0 {
                m.ingest_delay_seconds.observe(delay as f64 / 1000.0);
            }
        }
    }

    /// Writes `messages` in one transaction, retrying transient failures with backoff on a fresh
    /// connection for as long as it takes. Returns (rows stored, duplicates), or the error of a
    /// permanent refusal.
    async fn write_retrying(&mut self, messages: &[Message]) -> Result<(u64, u64), tokio_postgres::Error> {
        // Sorted rows insert into the primary key's b-tree in order: fewer page visits.
        let mut rows = Vec::with_capacity(messages.iter().map(|m| m.rows.len()).sum());
        for m in messages {
            rows.extend_from_slice(&m.rows);
        }
        rows.sort_unstable_by_key(|r| (r.meter_id, r.channel_id, r.ts));
        let instance = self.instance;
        let dead: Vec<(String, &DeadLetter)> = messages
            .iter()
            .flat_map(|m| m.dead.iter().enumerate().map(move |(i, d)| (format!("{instance:016x}-{}-{i}", m.id), d)))
            .collect();
        let polled: Vec<&PollMark> = messages.iter().filter_map(|m| m.polled.as_ref()).collect();
        let mut delay = self.cfg.retry_initial;
        loop {
            let started = Instant::now();
            match self.write(&rows, &dead, &polled).await {
                Ok(done) => {
                    self.metrics.writer_commit_seconds.observe(started.elapsed().as_secs_f64());
                    return Ok(done);
                }
                Err(Failure::Permanent(e)) => return Err(e),
                Err(Failure::Transient(e)) => {
                    if e.code().is_some_and(|c| c.code() == "23514") {
                        // No partition for a row: forget the batch's days so they are ensured again.
                        let mut known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
                        for r in &rows {
                            known.remove(&r.ts.date_naive());
                        }
                    }
                    self.metrics.writer_errors.with_label_values(&["transient"]).inc();
                    tracing::warn!(worker = self.n, error = %db::describe(&e), retry_in = ?delay, rows = rows.len(), "batch write failed, retrying");
                    self.client = None;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.cfg.retry_max);
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
    async fn write(
        &mut self,
        rows: &[Reading],
        dead: &[(String, &DeadLetter)],
        polled: &[&PollMark],
    ) -> Result<(u64, u64), Failure> {
        self.ensure_partitions(rows).await?;
        let plain = self.storage == Storage::Plain;
        let client = self.connection().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let mut stored = 0;
        if !rows.is_empty() {
            let sink = tx
                .copy_in("COPY readings_staging (ts, value, meter_id, channel_id, flags) FROM STDIN BINARY")
                .await
                .map_err(classify)?;
            let writer =
                BinaryCopyInWriter::new(sink, &[Type::TIMESTAMPTZ, Type::INT8, Type::INT4, Type::INT2, Type::INT2]);
            pin_mut!(writer);
            for r in rows {
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
                let mut hours: Vec<DateTime<Utc>> = rows.iter().map(|r| hour_of(r.ts)).collect();
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
        insert_dead_letters(&tx, dead).await?;
        insert_poll_marks(&tx, polled).await?;
        tx.commit().await.map_err(classify)?;
        #[cfg(test)]
        self.lose_commit_reply().await?;
        let total = rows.len() as u64;
        Ok((stored, total.saturating_sub(stored)))
    }

    /// The test stand-in for a COMMIT whose reply never arrived: the transaction is committed, but
    /// the connection dies before the writer learns it.
    #[cfg(test)]
    async fn lose_commit_reply(&mut self) -> Result<(), Failure> {
        let armed =
            self.faults.lost_commit_replies.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if armed.is_err() {
            return Ok(());
        }
        let client = self.client.take().expect("the batch's connection");
        let e = match client.batch_execute("SELECT pg_terminate_backend(pg_backend_pid())").await {
            Err(e) => e,
            Ok(()) => client.batch_execute("SELECT 1").await.expect_err("the connection was terminated"),
        };
        Err(classify(e))
    }
}

/// Inserts dead letters by their keys: one already stored (the same batch written again after
/// its COMMIT's reply was lost) is skipped.
async fn insert_dead_letters(
    tx: &tokio_postgres::Transaction<'_>,
    dead: &[(String, &DeadLetter)],
) -> Result<(), Failure> {
    if dead.is_empty() {
        return Ok(());
    }
    let key: Vec<&str> = dead.iter().map(|(k, _)| k.as_str()).collect();
    let source: Vec<&str> = dead.iter().map(|(_, d)| d.source).collect();
    let origin: Vec<&str> = dead.iter().map(|(_, d)| d.origin.as_str()).collect();
    let reason: Vec<&str> = dead.iter().map(|(_, d)| d.reason).collect();
    let detail: Vec<&str> = dead.iter().map(|(_, d)| d.detail.as_str()).collect();
    let payload: Vec<&[u8]> = dead.iter().map(|(_, d)| &d.payload[..]).collect();
    tx.execute(
        "INSERT INTO dead_letters (message_key, source, origin, reason, detail, payload)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])
         ON CONFLICT (message_key) DO NOTHING",
        &[&key, &source, &origin, &reason, &detail, &payload],
    )
    .await
    .map_err(classify)?;
    Ok(())
}

/// Records polled sessions' successes and events (meters in key order, one row per meter: the
/// latest success of the batch; `last_success_at` never moves backwards).
async fn insert_poll_marks(tx: &tokio_postgres::Transaction<'_>, polled: &[&PollMark]) -> Result<(), Failure> {
    if polled.is_empty() {
        return Ok(());
    }
    let mut latest: BTreeMap<i32, DateTime<Utc>> = BTreeMap::new();
    for p in polled {
        let at = latest.entry(p.meter_id).or_insert(p.at);
        *at = (*at).max(p.at);
    }
    let ids: Vec<i32> = latest.keys().copied().collect();
    let at: Vec<DateTime<Utc>> = latest.values().copied().collect();
    tx.execute(
        "INSERT INTO meter_poll_status AS s (meter_id, last_attempt_at, last_success_at)
         SELECT id, at, at FROM unnest($1::int[], $2::timestamptz[]) AS u(id, at) ORDER BY id
         ON CONFLICT (meter_id) DO UPDATE SET
             last_attempt_at = GREATEST(s.last_attempt_at, EXCLUDED.last_attempt_at),
             last_success_at = GREATEST(s.last_success_at, EXCLUDED.last_success_at)",
        &[&ids, &at],
    )
    .await
    .map_err(classify)?;
    let events: Vec<(i32, i16, &crate::collect::MeterEvent)> =
        polled.iter().flat_map(|p| p.events.iter().map(|e| (p.meter_id, p.event_source, e))).collect();
    if !events.is_empty() {
        let meter: Vec<i32> = events.iter().map(|e| e.0).collect();
        let ts: Vec<DateTime<Utc>> = events.iter().map(|e| e.2.ts).collect();
        let code: Vec<i32> = events.iter().map(|e| e.2.code).collect();
        let source: Vec<i16> = events.iter().map(|e| e.1).collect();
        let detail: Vec<&serde_json::Value> = events.iter().map(|e| &e.2.detail).collect();
        tx.execute(
            "INSERT INTO meter_events (meter_id, ts, code, source, detail)
             SELECT * FROM unnest($1::int[], $2::timestamptz[], $3::int[], $4::smallint[], $5::jsonb[])
             ORDER BY 1, 2, 3
             ON CONFLICT DO NOTHING",
            &[&meter, &ts, &code, &source, &detail],
        )
        .await
        .map_err(classify)?;
    }
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

/// The acknowledgement order and the batcher, without a database.
#[cfg(test)]
mod order {
    use std::time::Duration;

    use super::*;

    fn token(pkid: u16) -> AckToken {
        AckToken { epoch: 1, pkid }
    }

    fn message(pkid: u16, rows: usize) -> Envelope {
        let ts: DateTime<Utc> = hour_of(Utc::now());
        let rows = (0..rows)
            .map(|i| Reading { ts, value: 1, meter_id: 1, channel_id: i16::try_from(i + 1).expect("small"), flags: 0 })
            .collect();
        Envelope {
            rows,
            dead: None,
            ack: Some(token(pkid)),
            sent: None,
            source: "mqtt",
            origin: "meters/M1/readings".into(),
            raw: Bytes::from(format!("m{pkid}")),
        }
    }

    async fn nothing_released(rx: &mut mpsc::UnboundedReceiver<Vec<AckToken>>) {
        let got = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await;
        assert!(got.is_err(), "released too early: {got:?}");
    }

    #[tokio::test]
    async fn acknowledgements_are_released_in_batch_order_only() {
        let (done, done_rx) = mpsc::unbounded_channel();
        let (committed, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(sequence(done_rx, committed));
        // Batches 2 and 1 commit before batch 0: nothing may be acknowledged yet.
        done.send((2, vec![token(5), token(6)])).expect("send");
        done.send((1, vec![])).expect("send");
        nothing_released(&mut rx).await;
        done.send((0, vec![token(1), token(2)])).expect("send");
        assert_eq!(rx.recv().await, Some(vec![token(1), token(2)]));
        // Batch 1 had no tokens (push, polling): nothing sent for it, batch 2 follows at once.
        assert_eq!(rx.recv().await, Some(vec![token(5), token(6)]));
        // Batch 4 without batch 3 stays held back, even when the workers stop.
        done.send((4, vec![token(9)])).expect("send");
        nothing_released(&mut rx).await;
        drop(done);
        task.await.expect("sequencer");
        assert_eq!(rx.recv().await, None, "batch 4 was never released");
    }

    /// The byte budget: a holder waits while the bytes are spent and goes on when they are given
    /// back; a message larger than the whole budget takes all of it (never waits forever); the
    /// gauges follow.
    #[tokio::test]
    async fn the_byte_budget_holds_back_until_bytes_are_given_back() {
        let metrics = Arc::new(Metrics::new());
        let budget = Budget::new(1000, metrics.clone());
        let a = budget.hold(600).await;
        let b = budget.hold(400).await;
        assert_eq!(metrics.ingest_held_bytes.get(), 1000);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.hold(5000).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the budget is spent: the next holder waits");
        drop(a);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "an oversize message waits for the whole budget");
        drop(b);
        let big = tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("goes on").expect("task");
        assert_eq!(big.bytes, 1000, "clamped to the budget");
        assert_eq!(metrics.ingest_held_bytes.get(), 1000);
        drop(big);
        assert_eq!(metrics.ingest_held_bytes.get(), 0);
        assert_eq!(metrics.ingest_held_bytes_peak.get(), 1000);
        assert_eq!(metrics.ingest_budget_bytes.get(), 1000);
    }

    /// A polled or pushed message costs its raw bytes, its rows and its origin.
    #[test]
    fn an_envelope_costs_its_bytes_and_rows() {
        let m = message(1, 4);
        let want = m.raw.len() + 4 * std::mem::size_of::<Reading>() + m.origin.len() + 64;
        assert_eq!(m.cost(), want);
    }

    fn config(batch_rows: usize, max_wait: Duration) -> WriterConfig {
        WriterConfig { batch_rows, max_wait, ..WriterConfig::default() }
    }

    const WINDOW: Window = Window { max_age: Duration::from_secs(86_400), max_future: Duration::from_secs(3_600) };

    fn pkids(b: &Batch) -> Vec<u16> {
        b.acks.iter().map(|a| a.pkid).collect()
    }

    /// (acknowledged pkids, message numbers, readings) of a batch.
    fn contents(b: &Batch) -> (Vec<u16>, Vec<u64>, usize) {
        (pkids(b), b.messages.iter().map(|m| m.id).collect(), b.rows)
    }

    /// A batch is handed on as soon as it holds `batch_rows` readings, without waiting `max_wait`;
    /// batches are numbered from 0 and messages across batches, and the last batch is written when
    /// the sources are gone.
    #[tokio::test(start_paused = true)]
    async fn batches_are_cut_by_rows_in_order() {
        let (tx, rx) = mpsc::channel(16);
        let (out, mut batches) = mpsc::channel(16);
        for (pkid, rows) in [(1, 4), (2, 2), (3, 2), (4, 1)] {
            tx.send(message(pkid, rows).into()).await.expect("queue");
        }
        drop(tx);
        let started = tokio::time::Instant::now();
        let metrics = Arc::new(Metrics::new());
        batcher(rx, out, config(4, Duration::from_secs(3600)), WINDOW, metrics).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "no batch waited for max_wait");
        let mut got = Vec::new();
        while let Some(b) = batches.recv().await {
            got.push((b.seq, contents(&b)));
        }
        // Message 1 fills a batch alone; 2 then takes what is queued (3 and 4) in one go.
        assert_eq!(got, vec![(0, (vec![1], vec![0], 4)), (1, (vec![2, 3, 4], vec![1, 2, 3], 5))]);
    }

    /// A batch that does not fill up is written once its first message has waited `max_wait`,
    /// while the sources are still there; dead letters carry no rows and do not fill a batch; a
    /// message outside the time window becomes a dead letter (the writer's entry check).
    #[tokio::test(start_paused = true)]
    async fn a_batch_is_cut_by_age() {
        let (tx, rx) = mpsc::channel(16);
        let (out, mut batches) = mpsc::channel(16);
        let metrics = Arc::new(Metrics::new());
        let task = tokio::spawn(batcher(rx, out, config(4, Duration::from_millis(200)), WINDOW, metrics));
        let started = tokio::time::Instant::now();
        tx.send(message(1, 1).into()).await.expect("queue");
        let mut dead = message(2, 0);
        dead.dead = Some(DeadLetter::new("mqtt", "t", "malformed_json", "bad", Bytes::from_static(b"{")));
        tx.send(dead.into()).await.expect("queue");
        let mut future = message(3, 3);
        future.rows.iter_mut().for_each(|r| r.ts = "2031-01-01T00:00:00Z".parse().expect("ts"));
        tx.send(future.into()).await.expect("queue");
        let b = batches.recv().await.expect("a batch before the sources are gone");
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!((b.seq, contents(&b)), (0, (vec![1, 2, 3], vec![0, 1, 2], 1)));
        let reasons: Vec<Vec<&str>> = b.messages.iter().map(|m| m.dead.iter().map(|d| d.reason).collect()).collect();
        assert_eq!(reasons, vec![vec![], vec!["malformed_json"], vec!["timestamp_out_of_range"]]);
        assert_eq!(&b.messages[2].dead[0].payload[..], b"m3", "a message with no row left keeps its raw bytes");
        tx.send(message(4, 1).into()).await.expect("queue");
        drop(tx);
        let b = batches.recv().await.expect("the last batch");
        assert_eq!((b.seq, contents(&b)), (1, (vec![4], vec![3], 1)));
        task.await.expect("batcher");
        assert!(batches.recv().await.is_none());
    }
}

/// The writer on a real database: lost COMMIT replies, refused messages, the time window.
#[cfg(test)]
mod store {
    use std::time::Duration;

    use super::*;
    use crate::db::testdb::TestDb;

    const WINDOW: Window = Window { max_age: Duration::from_secs(30 * 86_400), max_future: Duration::from_secs(3_600) };

    /// A building with one meter; returns the meter's id.
    async fn inventory(c: &Client) -> i32 {
        c.batch_execute(
            "INSERT INTO buildings (code, address, municipality, region) VALUES ('B', 'A', 'M', 'belgrade');
             INSERT INTO meters (serial, kind, protocol, building_id, installed_on)
             SELECT 'W1', 'master', 'dlms', id, '2026-01-01' FROM buildings",
        )
        .await
        .expect("inventory");
        c.query_one("SELECT id FROM meters", &[]).await.expect("meter").get(0)
    }

    /// A quarter-hour two hours ago, plus `n` quarter-hours.
    fn quarter(n: i64) -> DateTime<Utc> {
        hour_of(Utc::now()) - chrono::Duration::hours(2) + chrono::Duration::minutes(15 * n)
    }

    fn row(meter_id: i32, channel_id: i16, ts: DateTime<Utc>) -> Reading {
        Reading { ts, value: 1000, meter_id, channel_id, flags: 0 }
    }

    /// An MQTT message with the 1.8.0 (ledger) and 1.8.1 registers of one interval.
    fn message(pkid: u16, meter_id: i32, ts: DateTime<Utc>) -> Envelope {
        Envelope {
            rows: vec![row(meter_id, 1, ts), row(meter_id, 2, ts)],
            dead: None,
            ack: Some(AckToken { epoch: 1, pkid }),
            sent: None,
            source: "mqtt",
            origin: "meters/W1/readings".into(),
            raw: Bytes::from(format!("m{pkid}")),
        }
    }

    fn refused(pkid: u16) -> Envelope {
        let raw = Bytes::from(format!("m{pkid}"));
        Envelope {
            rows: Vec::new(),
            dead: Some(DeadLetter::new("mqtt", "meters/W1/readings", "malformed_json", "bad", raw.clone())),
            ack: Some(AckToken { epoch: 1, pkid }),
            sent: None,
            source: "mqtt",
            origin: "meters/W1/readings".into(),
            raw,
        }
    }

    /// Writes `messages` through a writer (one batch: nothing else is queued, and the batch ends
    /// when the queue closes) and waits until everything is committed; returns the tokens released.
    async fn write(db: &TestDb, faults: Faults, messages: Vec<Envelope>) -> (Vec<u16>, Arc<Metrics>) {
        let cfg = WriterConfig {
            connections: 1,
            batch_rows: 1_000_000,
            max_wait: Duration::from_secs(60),
            queue_messages: 64,
            queue_bytes: 1 << 20,
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
        };
        let metrics = Arc::new(Metrics::new());
        let (committed, mut released) = mpsc::unbounded_channel();
        let (handle, task) =
            spawn_with(cfg, db.url.clone(), Storage::Plain, WINDOW, metrics.clone(), committed, faults);
        for m in messages {
            handle.send(m).await.expect("queue");
        }
        drop(handle);
        tokio::time::timeout(Duration::from_secs(60), task).await.expect("the writer finishes").expect("writer");
        let mut pkids = Vec::new();
        while let Ok(acks) = released.try_recv() {
            pkids.extend(acks.iter().map(|a| a.pkid));
        }
        (pkids, metrics)
    }

    async fn count(c: &Client, sql: &str) -> i64 {
        c.query_one(sql, &[]).await.expect(sql).get(0)
    }

    /// A polled session's success and events are stored in the transaction of its readings, and
    /// the session is told only once that has committed. Two successes of one meter in a batch make
    /// one row (the later); a batch written again after a lost COMMIT reply stores the events once
    /// and never moves the success backwards.
    #[tokio::test]
    async fn a_polled_sessions_outcome_is_committed_with_its_readings() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        let meter = inventory(&c).await;
        let faults = Faults::default();
        faults.lost_commit_replies.store(1, Ordering::SeqCst);
        let cfg = WriterConfig {
            connections: 1,
            batch_rows: 1_000_000,
            max_wait: Duration::from_secs(60),
            queue_messages: 64,
            queue_bytes: 1 << 20,
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
        };
        let (committed, _released) = mpsc::unbounded_channel();
        let (handle, task) =
            spawn_with(cfg, db.url.clone(), Storage::Plain, WINDOW, Arc::new(Metrics::new()), committed, faults);
        let event = crate::collect::MeterEvent { ts: quarter(1), code: 7, detail: serde_json::json!({"e": 1}) };
        let polled = |rows: Vec<Reading>| Envelope {
            rows,
            dead: None,
            ack: None,
            sent: None,
            source: "dlms",
            origin: "W1".into(),
            raw: Bytes::from_static(b"[]"),
        };
        let mark = |at: DateTime<Utc>, stored| PollMark {
            meter_id: meter,
            at,
            events: vec![event.clone()],
            event_source: 2,
            stored: Some(stored),
        };
        let at = quarter(6);
        let (s1, mut told1) = tokio::sync::oneshot::channel();
        let (s2, told2) = tokio::sync::oneshot::channel();
        let rows = vec![row(meter, 1, quarter(4)), row(meter, 2, quarter(4))];
        handle.send_polled(polled(rows), mark(at, s1)).await.expect("queue");
        handle.send_polled(polled(Vec::new()), mark(quarter(2), s2)).await.expect("queue");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(told1.try_recv().is_err(), "told before the batch was written");
        assert_eq!(count(&c, "SELECT count(*) FROM meter_poll_status").await, 0);
        drop(handle);
        tokio::time::timeout(Duration::from_secs(60), task).await.expect("the writer finishes").expect("writer");
        told1.await.expect("told after the commit");
        told2.await.expect("told after the commit");
        assert_eq!(count(&c, "SELECT count(*) FROM readings").await, 2);
        assert_eq!(count(&c, "SELECT count(*) FROM meter_events").await, 1, "the event once");
        let r =
            c.query_one("SELECT last_success_at, last_attempt_at FROM meter_poll_status", &[]).await.expect("status");
        assert_eq!((r.get::<_, DateTime<Utc>>(0), r.get::<_, DateTime<Utc>>(1)), (at, at), "the later success");
    }

    #[tokio::test]
    async fn a_batch_written_again_after_a_lost_commit_reply_stores_everything_once() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        let meter = inventory(&c).await;
        let faults = Faults::default();
        faults.lost_commit_replies.store(1, Ordering::SeqCst);
        let messages = vec![message(1, meter, quarter(0)), refused(2), message(3, meter, quarter(1))];
        let (acks, metrics) = write(&db, faults.clone(), messages).await;

        assert_eq!(faults.lost_commit_replies.load(Ordering::SeqCst), 0, "the reply was lost once");
        assert_eq!(metrics.writer_errors.with_label_values(&["transient"]).get(), 1, "and the batch written again");
        assert_eq!(acks, vec![1, 2, 3], "every message acknowledged once, in order");
        assert_eq!(count(&c, "SELECT count(*) FROM readings").await, 4);
        assert_eq!(count(&c, "SELECT count(*) FROM dead_letters").await, 1, "the dead letter stored once");
        assert_eq!(count(&c, "SELECT sum(received)::bigint FROM read_ledger").await, 2, "each interval counted once");
        assert_eq!(metrics.dead_letters.with_label_values(&["malformed_json"]).get(), 1);
        // The writer cannot know the first COMMIT happened: the second write finds the rows there.
        assert_eq!(metrics.readings_stored.get() + metrics.readings_duplicate.get(), 4);
    }

    /// Message 3 passes every check in Rust but its meter is not in the inventory (removed after
    /// the directory resolved it): the ledger's foreign key refuses the batch. Only that message
    /// becomes a dead letter, with the database's reason; the others are stored.
    #[tokio::test]
    async fn a_refused_batch_is_bisected_to_the_offending_message() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        let meter = inventory(&c).await;
        let messages = (1..=5u16)
            .map(|pkid| message(pkid, if pkid == 3 { meter + 1000 } else { meter }, quarter(i64::from(pkid))))
            .collect();
        let (acks, metrics) = write(&db, Faults::default(), messages).await;

        assert_eq!(acks, vec![1, 2, 3, 4, 5], "every message acknowledged once, in order");
        assert_eq!(count(&c, "SELECT count(*) FROM readings").await, 8, "the four good messages are stored");
        assert_eq!(count(&c, &format!("SELECT count(*) FROM readings WHERE meter_id = {meter}")).await, 8);
        let dead = c.query("SELECT reason, detail, payload FROM dead_letters", &[]).await.expect("dead letters");
        assert_eq!(dead.len(), 1, "only the offending message is a dead letter");
        assert_eq!(dead[0].get::<_, &str>(0), "store_failed");
        let detail: &str = dead[0].get(1);
        assert!(detail.contains("read_ledger"), "the database's reason: {detail}");
        assert_eq!(dead[0].get::<_, &[u8]>(2), b"m3");
        assert_eq!(metrics.dead_letters.with_label_values(&["store_failed"]).get(), 1);
        assert_eq!(metrics.readings_stored.get(), 8);
        assert_eq!(count(&c, "SELECT sum(received)::bigint FROM read_ledger").await, 4);
    }

    /// Polled and pushed readings get the MQTT window: a meter whose clock says 2031 (or a month
    /// ago, beyond `max_age`) writes no 2031 partition and no row; the rows are dead letters.
    #[tokio::test]
    async fn polled_and_pushed_readings_outside_the_window_are_dead_letters() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        let meter = inventory(&c).await;
        let future: DateTime<Utc> = "2031-06-01T00:00:00Z".parse().expect("ts");
        let past = quarter(0) - chrono::Duration::days(60);
        let polled = Envelope {
            rows: vec![
                row(meter, 1, quarter(0)),
                row(meter, 1, future),
                row(meter, 1, past),
                row(meter, 2, quarter(0)),
            ],
            dead: None,
            ack: None,
            sent: None,
            source: "dlms",
            origin: "W1".into(),
            raw: Bytes::from_static(b"[all rows]"),
        };
        let pushed = Envelope {
            rows: vec![row(meter, 1, future), row(meter, 2, future)],
            dead: None,
            ack: None,
            sent: None,
            source: "dlms_push",
            origin: "W1".into(),
            raw: Bytes::from_static(b"apdu"),
        };
        let (_, metrics) = write(&db, Faults::default(), vec![polled, pushed]).await;

        assert_eq!(count(&c, "SELECT count(*) FROM readings").await, 2, "the polled rows inside the window");
        let partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass";
        assert_eq!(count(&c, partitions).await, 1, "only the day of the rows inside the window");
        assert_eq!(count(&c, &format!("{partitions} AND inhrelid::regclass::text LIKE 'readings\\_p2031%'")).await, 0);
        let dead = c
            .query("SELECT source, reason, detail, payload FROM dead_letters ORDER BY source", &[])
            .await
            .expect("dead letters");
        let got: Vec<(&str, &str)> = dead.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(got, vec![("dlms", "timestamp_out_of_range"), ("dlms_push", "timestamp_out_of_range")]);
        // The polled session keeps its good rows; its dead letter holds the two refused ones.
        let polled_payload = String::from_utf8(dead[0].get::<_, Vec<u8>>(3)).expect("json");
        assert!(
            polled_payload.contains("2031-06-01") && polled_payload.contains(&past.to_rfc3339()[..10]),
            "{polled_payload}"
        );
        assert!(dead[0].get::<_, &str>(2).contains("2 of 4"), "{}", dead[0].get::<_, &str>(2));
        // The push had nothing else: its dead letter is the whole notification.
        assert_eq!(dead[1].get::<_, &[u8]>(3), b"apdu");
        assert_eq!(metrics.dead_letters.with_label_values(&["timestamp_out_of_range"]).get(), 2);
    }
}
