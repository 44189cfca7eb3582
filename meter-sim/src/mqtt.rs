//! The MQTT publisher: every meter's reading for every interval of a span, QoS 1, with optional faults.
//!
//! # What is published
//! For each interval END `ts` in `(from, to]`, interval by interval, every meter `0..N` (ascending) publishes
//! `schemas::payload::ReadingPayload` JSON on `<prefix>/<serial>/readings` (QoS 1, retain false): `meter`,
//! `ts`, `values` by OBIS code in the order of the channel list, and `sent` (when the message was built, UTC,
//! millisecond precision). Values come from [`crate::model`] (a batch evaluator: one pass per interval).
//!
//! # Connections
//! Concentrator mode (default): `K` connections, meter `i` on connection `i mod K` (so a meter's messages
//! keep their order), each a rumqttc client with a clean session and an in-flight window. Per-meter mode:
//! one connection per meter (at most [`MAX_PER_METER_CONNECTIONS`]; in-flight window capped at 16).
//! The run ends only when the broker has acknowledged (PUBACK) every publish. A connection that drops is
//! re-established (bounded attempts) and its unacknowledged publishes are sent again.
//!
//! # Faults
//! Rates in `[0, 1]`, decided per real message by a hash of `(fault seed, meter, interval)`. They only ADD
//! messages or move real ones; every real message is always published once:
//! - duplicates: the same bytes published again later (later in the interval's batch or after the next
//!   interval's batch);
//! - reorder: a real message moved to the end of its interval's batch (shuffled), or published after the
//!   NEXT interval's batch (the meter's older reading then arrives after its newer one);
//! - malformed: an extra garbage payload on the real meter's topic (truncated JSON, wrong value types, a bad
//!   OBIS code, or a non-JSON binary blob);
//! - unknown meters: an extra well-formed payload for a serial `UNK########` that is not in the fleet, on its
//!   own topic.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use schemas::reading::MeterSerial;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::channels::{self, Channel};
use crate::fleet;
use crate::hash;
use crate::model::{Model, ModelError};
use crate::span::Span;

/// Default broker URL.
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";
/// Default topic prefix: topics are `<prefix>/<serial>/readings`.
pub const DEFAULT_TOPIC_PREFIX: &str = "meters";
/// Most meters in per-meter-connection mode (open files are limited to 20,000 per process).
pub const MAX_PER_METER_CONNECTIONS: usize = 5_000;
/// Connections opened at once (then their CONNACKs are awaited): Mosquitto listens with a backlog of 100,
/// and a dropped SYN costs a one-second retransmission.
const CONNECT_WAVE: usize = 100;
/// In-flight window of a connection in per-meter mode.
const PER_METER_INFLIGHT: u16 = 16;

/// How fast to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// As fast as the broker acknowledges.
    Unpaced,
    /// At most this many messages per second (faults included).
    Rate(f64),
    /// Simulated time runs this many times faster than real time: the interval ending at `ts` is published
    /// when `factor × elapsed` reaches `ts − from` (900 = one interval per second).
    Speed(f64),
}

/// How meters share connections to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// `K` connections (a concentrator); meter `i` uses connection `i mod K`.
    Shared(usize),
    /// One connection per meter.
    PerMeter,
}

/// Fault rates (each in `[0, 1]`) and the seed that decides them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    pub duplicates: f64,
    pub reorder: f64,
    pub malformed: f64,
    pub unknown_meters: f64,
    pub seed: u64,
}

/// Everything the publisher needs.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// `mqtt://[user[:password]@]host[:port]` (also `tcp://`).
    pub url: String,
    pub topic_prefix: String,
    pub meters: usize,
    pub span: Span,
    pub seed: u64,
    pub channels: Vec<Channel>,
    pub pacing: Pacing,
    pub connections: Connections,
    /// In-flight window per connection (QoS 1 publishes awaiting PUBACK).
    pub inflight: u16,
    pub faults: Faults,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Longest wait for the broker to accept or acknowledge anything while publishes are outstanding.
    pub ack_timeout: Duration,
    /// Connection attempts (initial and after a drop) before giving up.
    pub connect_attempts: u32,
    /// With per-meter connections: each meter logs in as its serial with the password derived from
    /// this site secret (`schemas::mqtt_auth`), as the broker's generated password file expects.
    pub password_secret: Option<Vec<u8>>,
    /// For an `mqtts://` broker: the PEM file of the authorities to trust (else the system's).
    pub ca_file: Option<std::path::PathBuf>,
}

impl PublishConfig {
    /// A configuration with the command line's defaults.
    pub fn new(meters: usize, span: Span, seed: u64) -> Self {
        PublishConfig {
            url: DEFAULT_URL.to_string(),
            topic_prefix: DEFAULT_TOPIC_PREFIX.to_string(),
            meters,
            span,
            seed,
            channels: Channel::ALL.to_vec(),
            pacing: Pacing::Unpaced,
            connections: Connections::Shared(4),
            inflight: 1000,
            faults: Faults { seed, ..Faults::default() },
            progress: false,
            ack_timeout: Duration::from_secs(30),
            connect_attempts: 5,
            password_secret: None,
            ca_file: None,
        }
    }
}

/// Counts of fault messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    pub duplicates: u64,
    pub reordered: u64,
    pub malformed: u64,
    pub unknown_meters: u64,
}

/// The one-line JSON summary printed at the end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub meters: usize,
    pub intervals: u64,
    /// Every message published, faults included.
    pub messages: u64,
    /// Values in real (non-fault) messages: meters × intervals × channels.
    pub readings: u64,
    pub faults: FaultCounts,
    /// From the first publish to the last acknowledgement.
    pub elapsed_s: f64,
    pub messages_per_s: f64,
    pub first_publish: Option<String>,
    pub last_publish: Option<String>,
    pub last_ack: Option<String>,
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid MQTT URL {0:?}: expected mqtt[s]://[user[:password]@]host[:port]")]
    BadUrl(String),
    #[error("MQTT TLS: {0}")]
    Tls(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "--per-meter-connections opens one connection per meter: {0} meters exceed the limit of \
         {MAX_PER_METER_CONNECTIONS} (open files are limited to 20,000 per process); use --connections instead"
    )]
    TooManyConnections(usize),
    #[error("broker at {url} unreachable after {attempts} connection attempts: {last}")]
    Unreachable { url: String, attempts: u32, last: String },
    #[error("the broker did not accept or acknowledge any of {outstanding} outstanding publishes within {timeout:?}")]
    AckTimeout { outstanding: u64, timeout: Duration },
    #[error("connection {conn} to the broker ended: {reason}")]
    Connection { conn: usize, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Broker options from an `mqtt://` URL.
pub fn options(url: &str, client_id: &str) -> Result<MqttOptions, PublishError> {
    options_with(url, client_id, None)
}

/// Broker options from an `mqtt://` or `mqtts://` (TLS, trusting the authorities in `ca_file` or
/// the system's roots) URL.
pub fn options_with(
    url: &str,
    client_id: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<MqttOptions, PublishError> {
    let parsed =
        schemas::mqtt_auth::BrokerUrl::parse(url).ok_or_else(|| PublishError::BadUrl(schemas::redact_url(url)))?;
    let mut o = MqttOptions::new(client_id, parsed.host, parsed.port);
    o.set_clean_session(true).set_keep_alive(Duration::from_secs(30)).set_max_packet_size(64 * 1024, 64 * 1024);
    if let Some((user, password)) = parsed.credentials {
        o.set_credentials(user, password);
    }
    if parsed.tls {
        let config = schemas::mqtt_auth::tls_client_config(ca_file).map_err(PublishError::Tls)?;
        o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config)));
    } else if ca_file.is_some() {
        return Err(PublishError::Tls("a CA file is given but the URL is not mqtts://".into()));
    }
    Ok(o)
}

fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn rfc3339_ns(ns: i64) -> Option<String> {
    (ns > 0).then(|| Utc.timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// `sent`: now, at millisecond precision.
fn sent_now() -> DateTime<Utc> {
    let ms = Utc::now().timestamp_millis();
    Utc.timestamp_millis_opt(ms).single().unwrap_or_else(Utc::now)
}

/// What a connection's event-loop task reports.
#[derive(Default)]
struct ConnShared {
    connected: AtomicBool,
    acked: AtomicU64,
    first_out_ns: AtomicI64,
    last_out_ns: AtomicI64,
    last_ack_ns: AtomicI64,
}

/// Polls one connection's event loop until it sends DISCONNECT or gives up reconnecting.
async fn drive(mut el: EventLoop, shared: Arc<ConnShared>, attempts: u32, url: String) -> Result<(), PublishError> {
    let mut failures = 0u32;
    let mut saved = Vec::new();
    let mut delay = Duration::from_millis(200);
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                shared.acked.fetch_add(1, Ordering::Release);
                shared.last_ack_ns.store(now_ns(), Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                let t = now_ns();
                let _ = shared.first_out_ns.compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
                shared.last_out_ns.store(t, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if failures > 0 {
                    tracing::info!(resent = saved.len(), "reconnected to the broker");
                }
                failures = 0;
                delay = Duration::from_millis(200);
                // A clean session starts empty: send again what the broker had not acknowledged.
                el.pending.extend(saved.drain(..));
                shared.connected.store(true, Ordering::Release);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return Ok(()),
            Err(e) => {
                shared.connected.store(false, Ordering::Release);
                failures += 1;
                saved.extend(el.pending.drain(..));
                if failures >= attempts {
                    return Err(PublishError::Unreachable { url, attempts, last: e.to_string() });
                }
                tracing::warn!(error = %e, retry_in = ?delay, "broker connection failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

struct Conn {
    client: AsyncClient,
    shared: Arc<ConnShared>,
    task: Option<JoinHandle<Result<(), PublishError>>>,
    queued: u64,
}

/// The sending side: connections, pacing, counters.
struct Sender {
    conns: Vec<Conn>,
    ack_timeout: Duration,
    pacing: Pacing,
    start: Instant,
    messages: u64,
}

impl Sender {
    async fn failure(&mut self, conn: usize) -> PublishError {
        if let Some(task) = self.conns.get_mut(conn).and_then(|c| c.task.take()) {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Err(e))) => return e,
                Ok(Ok(Ok(()))) => {}
                Ok(Err(e)) => return PublishError::Connection { conn, reason: e.to_string() },
                Err(_) => {}
            }
        }
        PublishError::Connection { conn, reason: "the event loop stopped".into() }
    }

    async fn send(&mut self, conn: usize, topic: String, payload: Vec<u8>) -> Result<(), PublishError> {
        if let Pacing::Rate(rate) = self.pacing {
            let due = self.start + Duration::from_secs_f64(self.messages as f64 / rate);
            if due > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due).await;
            }
        }
        let conn = conn % self.conns.len().max(1);
        let Some(c) = self.conns.get_mut(conn) else {
            return Err(PublishError::Config("no connection".into()));
        };
        match tokio::time::timeout(self.ack_timeout, c.client.publish(topic, QoS::AtLeastOnce, false, payload)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(self.failure(conn).await),
            Err(_) => {
                let outstanding = self.outstanding();
                return Err(PublishError::AckTimeout { outstanding, timeout: self.ack_timeout });
            }
        }
        c.queued += 1;
        self.messages += 1;
        if self.messages.is_multiple_of(512) {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    fn outstanding(&self) -> u64 {
        self.conns.iter().map(|c| c.queued.saturating_sub(c.shared.acked.load(Ordering::Acquire))).sum()
    }

    /// Waits until every publish is acknowledged.
    async fn wait_acked(&mut self) -> Result<(), PublishError> {
        let mut last = u64::MAX;
        let mut progress_at = Instant::now();
        loop {
            let outstanding = self.outstanding();
            if outstanding == 0 {
                return Ok(());
            }
            if outstanding != last {
                last = outstanding;
                progress_at = Instant::now();
            } else if progress_at.elapsed() > self.ack_timeout {
                return Err(PublishError::AckTimeout { outstanding, timeout: self.ack_timeout });
            }
            if let Some(i) = self.conns.iter().position(|c| c.task.as_ref().is_some_and(JoinHandle::is_finished)) {
                return Err(self.failure(i).await);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends DISCONNECT on every connection and waits (bounded) for the event loops to end; after a failure
    /// (`graceful` false) the event loops are stopped at once.
    async fn close(&mut self, graceful: bool) {
        for c in &self.conns {
            let _ = c.client.try_disconnect();
        }
        for c in &mut self.conns {
            if let Some(task) = c.task.take() {
                let abort = task.abort_handle();
                if !graceful || tokio::time::timeout(Duration::from_secs(3), task).await.is_err() {
                    abort.abort();
                }
            }
        }
    }
}

/// Opens the connections and waits until each is connected.
async fn connect(cfg: &PublishConfig, count: usize) -> Result<Sender, PublishError> {
    let per_meter = matches!(cfg.connections, Connections::PerMeter);
    let inflight = if per_meter { cfg.inflight.clamp(1, PER_METER_INFLIGHT) } else { cfg.inflight.max(1) };
    let cap = if per_meter { 32 } else { usize::from(inflight).max(64) };
    let nonce = (now_ns() as u64 ^ u64::from(std::process::id()).rotate_left(32)) & 0xFF_FFFF;
    let mut sender = Sender {
        conns: Vec::with_capacity(count),
        ack_timeout: cfg.ack_timeout,
        pacing: cfg.pacing,
        start: Instant::now(),
        messages: 0,
    };
    // Connect in waves, so a large per-meter fleet does not overflow the broker's listen backlog.
    let mut opened = 0;
    while opened < count {
        let wave = (count - opened).min(CONNECT_WAVE);
        for i in opened..opened + wave {
            let id = format!("msim-{}-{nonce:06x}-{i}", std::process::id());
            let mut o = match options_with(&cfg.url, &id, cfg.ca_file.as_deref()) {
                Ok(o) => o,
                Err(e) => {
                    sender.close(false).await;
                    return Err(e);
                }
            };
            o.set_inflight(inflight).set_request_channel_capacity(cap);
            if let (true, Some(secret)) = (per_meter, &cfg.password_secret) {
                let serial = fleet::serial(i);
                let password = schemas::mqtt_auth::meter_password(secret, &serial);
                o.set_credentials(serial, password);
            }
            let (client, el) = AsyncClient::new(o, cap);
            let shared = Arc::new(ConnShared::default());
            let task = tokio::spawn(drive(el, shared.clone(), cfg.connect_attempts.max(1), cfg.url.clone()));
            sender.conns.push(Conn { client, shared, task: Some(task), queued: 0 });
        }
        opened += wave;
        while !sender.conns.iter().all(|c| c.shared.connected.load(Ordering::Acquire)) {
            if let Some(i) = sender.conns.iter().position(|c| c.task.as_ref().is_some_and(JoinHandle::is_finished)) {
                let e = sender.failure(i).await;
                sender.close(false).await;
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(sender)
}

const TAG_DUP: u64 = 101;
const TAG_REORDER: u64 = 102;
const TAG_MALFORMED: u64 = 103;
const TAG_UNKNOWN: u64 = 104;

/// A message waiting to be published.
struct Pending {
    conn: usize,
    topic: String,
    payload: Vec<u8>,
    key: u64,
}

/// A garbage payload of one of four kinds, built from a real payload.
pub fn malformed_payload(h: u64, real: &[u8], serial: &str, ts: DateTime<Utc>) -> Vec<u8> {
    let ts = ts.to_rfc3339_opts(SecondsFormat::Secs, true);
    match h % 4 {
        // Truncated JSON: a strict prefix of an object is never valid JSON.
        0 => {
            let len = real.len().max(2);
            let cut = 1 + (h >> 8) as usize % (len - 1);
            real.get(..cut.min(real.len().saturating_sub(1))).unwrap_or(b"{").to_vec()
        }
        // Wrong types: a register as a string, or the timestamp as a number.
        1 => if (h >> 8) & 1 == 0 {
            format!(r#"{{"meter":"{serial}","ts":"{ts}","values":{{"1.0.1.8.0":"{}"}}}}"#, (h >> 16) % 1_000_000)
        } else {
            format!(
                r#"{{"meter":"{serial}","ts":{},"values":{{"1.0.1.8.0":{}}}}}"#,
                (h >> 16) % 2_000_000_000,
                h % 1000
            )
        }
        .into_bytes(),
        // A bad OBIS code (four groups, or a group above 255).
        2 => {
            let code = if (h >> 8) & 1 == 0 { "1.0.1.8" } else { "1.0.256.8.0" };
            format!(r#"{{"meter":"{serial}","ts":"{ts}","values":{{"{code}":{}}}}}"#, (h >> 16) % 1_000_000)
                .into_bytes()
        }
        // A binary blob (not UTF-8).
        _ => {
            let mut v = vec![0xFF, 0xFE, 0x00];
            v.extend_from_slice(&hash::mix(h).to_le_bytes());
            v.extend_from_slice(&hash::mix(h ^ 1).to_le_bytes());
            v
        }
    }
}

/// A serial that is not in the fleet.
pub fn unknown_serial(h: u64) -> String {
    format!("UNK{:08}", 1 + h % 99_999_999)
}

/// Publishes the span and returns the summary (see the module documentation).
pub async fn publish(cfg: &PublishConfig) -> Result<Summary, PublishError> {
    validate(cfg)?;
    let count = match cfg.connections {
        Connections::Shared(k) => k.clamp(1, cfg.meters),
        Connections::PerMeter => cfg.meters,
    };
    let model = Model::with_meters(cfg.seed, cfg.meters);
    let mut batch = model.batch(cfg.meters);
    let intervals = cfg.span.len();
    let mut sender = connect(cfg, count).await?;
    tracing::info!(connections = count, meters = cfg.meters, intervals, "connected; publishing");
    let result = run(cfg, &mut sender, &mut batch, count).await;
    let result = match result {
        Ok(faults) => sender.wait_acked().await.map(|()| faults),
        Err(e) => Err(e),
    };
    let (first, last_out, last_ack) = sender.conns.iter().fold((i64::MAX, 0i64, 0i64), |(f, lo, la), c| {
        let fo = c.shared.first_out_ns.load(Ordering::Relaxed);
        (
            if fo > 0 { f.min(fo) } else { f },
            lo.max(c.shared.last_out_ns.load(Ordering::Relaxed)),
            la.max(c.shared.last_ack_ns.load(Ordering::Relaxed)),
        )
    });
    sender.close(result.is_ok()).await;
    let faults = result?;
    let first = if first == i64::MAX { 0 } else { first };
    let elapsed_s = if first > 0 && last_ack >= first { (last_ack - first) as f64 / 1e9 } else { 0.0 };
    let messages = sender.messages;
    Ok(Summary {
        meters: cfg.meters,
        intervals,
        messages,
        readings: cfg.meters as u64 * intervals * cfg.channels.len() as u64,
        faults,
        elapsed_s: (elapsed_s * 1000.0).round() / 1000.0,
        messages_per_s: if elapsed_s > 0.0 { (messages as f64 / elapsed_s).round() } else { 0.0 },
        first_publish: rfc3339_ns(first),
        last_publish: rfc3339_ns(last_out),
        last_ack: rfc3339_ns(last_ack),
    })
}

fn validate(cfg: &PublishConfig) -> Result<(), PublishError> {
    let err = |m: String| Err(PublishError::Config(m));
    if cfg.meters == 0 || cfg.meters > fleet::MAX_INDEX + 1 {
        return err(format!("--meters must be in 1..={}", fleet::MAX_INDEX + 1));
    }
    if cfg.channels.is_empty() {
        return err("no channel to publish".into());
    }
    if matches!(cfg.connections, Connections::PerMeter) && cfg.meters > MAX_PER_METER_CONNECTIONS {
        return Err(PublishError::TooManyConnections(cfg.meters));
    }
    if matches!(cfg.connections, Connections::Shared(0)) {
        return err("--connections must be at least 1".into());
    }
    match cfg.pacing {
        Pacing::Rate(r) if !(r.is_finite() && r > 0.0) => return err(format!("--rate must be > 0, got {r}")),
        Pacing::Speed(s) if !(s.is_finite() && s > 0.0) => return err(format!("--speed must be > 0, got {s}")),
        _ => {}
    }
    let f = &cfg.faults;
    for (name, r) in [
        ("--duplicates", f.duplicates),
        ("--reorder", f.reorder),
        ("--malformed", f.malformed),
        ("--unknown-meters", f.unknown_meters),
    ] {
        if !(0.0..=1.0).contains(&r) {
            return err(format!("{name} must be a rate in [0, 1], got {r}"));
        }
    }
    if cfg.topic_prefix.is_empty() || cfg.topic_prefix.contains(['+', '#', '\0']) {
        return err(format!("invalid topic prefix {:?}", cfg.topic_prefix));
    }
    options_with(&cfg.url, "check", cfg.ca_file.as_deref())?;
    Ok(())
}

fn progress_bar(cfg: &PublishConfig) -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if !cfg.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let total = cfg.meters as u64 * cfg.span.len();
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} meter intervals ({per_sec})",
    ) {
        pb.set_style(style);
    }
    Some(pb)
}

/// The producer: interval by interval, all meters, faults mixed in.
async fn run(
    cfg: &PublishConfig,
    sender: &mut Sender,
    batch: &mut crate::model::Batch<'_>,
    count: usize,
) -> Result<FaultCounts, PublishError> {
    let f = cfg.faults;
    let fs = f.seed;
    let mut counts = FaultCounts::default();
    let pb = progress_bar(cfg);
    let topic = |serial: &str| format!("{}/{serial}/readings", cfg.topic_prefix);
    let conn_of = |meter: usize| meter % count.max(1);
    let need_voltage = cfg.channels.contains(&Channel::Voltage);
    sender.start = Instant::now();
    // Messages of the previous interval to publish after this interval's batch.
    let mut deferred: Vec<Pending> = Vec::new();
    for (j, ts) in cfg.span.ends().enumerate() {
        if let Pacing::Speed(factor) = cfg.pacing {
            let sim = (ts - cfg.span.from).num_seconds() as f64;
            let due = sender.start + Duration::from_secs_f64(sim / factor);
            tokio::time::sleep_until(due).await;
        }
        let j = j as u64;
        let regs = batch.registers_at(ts)?.to_vec();
        let mut tail: Vec<Pending> = Vec::new();
        let mut next: Vec<Pending> = Vec::new();
        for (meter, r) in regs.iter().enumerate() {
            let m = meter as u64;
            let voltage = if need_voltage { batch.voltage_dv(meter, ts) } else { 0 };
            let serial = fleet::serial(meter);
            let payload =
                channels::payload(channels::meter_serial(meter), ts, r, voltage, &cfg.channels, Some(sent_now()));
            let bytes = payload.to_json();
            let conn = conn_of(meter);
            let hd = hash::hash(&[fs, TAG_DUP, m, j]);
            let hr = hash::hash(&[fs, TAG_REORDER, m, j]);
            let hm = hash::hash(&[fs, TAG_MALFORMED, m, j]);
            let hu = hash::hash(&[fs, TAG_UNKNOWN, m, j]);
            let dup = hash::chance(hd, f.duplicates).then(|| bytes.clone());
            let garbage = hash::chance(hm, f.malformed).then(|| malformed_payload(hm >> 3, &bytes, &serial, ts));
            // Where the real message goes: now, at the end of this batch, or after the next batch.
            let mut placed_later = false;
            if hash::chance(hr, f.reorder) {
                counts.reordered += 1;
                placed_later = true;
                let p = Pending { conn, topic: topic(&serial), payload: bytes, key: hash::mix(hr) };
                if hr & (1 << 62) == 0 {
                    tail.push(p);
                } else {
                    next.push(p);
                }
            } else {
                sender.send(conn, topic(&serial), bytes).await?;
            }
            if let Some(copy) = dup {
                counts.duplicates += 1;
                // After the original: in this batch's tail only if the original went out already.
                let p = Pending { conn, topic: topic(&serial), payload: copy, key: hash::mix(hd) };
                if !placed_later && hd & (1 << 62) == 0 {
                    tail.push(p);
                } else {
                    next.push(p);
                }
            }
            if let Some(g) = garbage {
                counts.malformed += 1;
                sender.send(conn, topic(&serial), g).await?;
            }
            if hash::chance(hu, f.unknown_meters) {
                counts.unknown_meters += 1;
                let unk = unknown_serial(hash::mix(hu));
                if let Ok(s) = MeterSerial::new(unk.clone()) {
                    let p = channels::payload(s, ts, r, voltage, &cfg.channels, Some(sent_now()));
                    sender.send(conn, topic(&unk), p.to_json()).await?;
                }
            }
            if let Some(pb) = &pb {
                if meter % 1024 == 1023 {
                    pb.inc(1024);
                }
            }
        }
        // Shuffle the tail; duplicates stay after their originals (they only go to the tail when the original
        // was already published).
        tail.sort_by_key(|p| p.key);
        for p in tail.into_iter().chain(std::mem::take(&mut deferred)) {
            sender.send(p.conn, p.topic, p.payload).await?;
        }
        deferred = next;
        if let Some(pb) = &pb {
            pb.set_position((j + 1) * cfg.meters as u64);
        }
    }
    for p in deferred {
        sender.send(p.conn, p.topic, p.payload).await?;
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(counts)
}

#[cfg(test)]
mod tests;
