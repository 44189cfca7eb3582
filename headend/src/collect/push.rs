//! DLMS push listener: meters connect and send DataNotifications in the TCP wrapper (IEC 62056-47),
//! plain or general-glo-ciphered with their own keys. Each notification becomes readings for the
//! writer; one that cannot be used becomes a dead letter with its raw bytes and a reason, and a
//! broken frame ends only its own connection.
//!
//! Body layout (what `meter-sim dlms-push` sends, and a push setup's object list would say):
//! `structure { serial (octet/visible string), capture time (date-time), values… }` where the values
//! are `dlms.push_objects` in order, each already in its channel's stored unit (Wh).
//!
//! Replay protection: the highest invocation counter accepted from each meter is kept in
//! `dlms_push_counters` (migration 11). A ciphered push is stored only when one conditional upsert
//! raises that value, so a frame replayed after a restart, or sent to a second listener replica, is
//! refused; each replica also starts from the stored values so most replays are refused in memory.
//!
//! DataNotification is unconfirmed in DLMS: the meter gets no acknowledgement, so a reading queued
//! here but not yet committed when the head-end dies is lost unless the meter pushes it again (or
//! the poller back-fills it from the load profile, which the ledger makes visible).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use chrono_tz::Europe::Belgrade;
use deadpool_postgres::Pool;
use dlms::push::{Notification, PushListener};
use dlms::transport::WrapperCodec;
use futures::StreamExt;
use schemas::reading::{pack_flags, Quality, Reading, Source};
use tokio::net::TcpListener;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::keys::KeyStore;
use crate::directory::MeterDirectory;
use crate::ingest::DeadLetter;
use crate::metrics::Metrics;
use crate::writer::{Envelope, WriterHandle};

const SOURCE: &str = "dlms_push";
/// Largest APDU accepted from a pushing meter.
const MAX_APDU: usize = 4096;

/// What the listener needs.
pub struct PushContext {
    pub listener: Mutex<PushListener>,
    /// System title → meter serial, for ciphered pushes.
    pub titles: HashMap<[u8; 8], String>,
    /// Channel ids of the body's values after serial and time.
    pub channels: Vec<i16>,
    pub directory: Arc<MeterDirectory>,
    pub writer: WriterHandle,
    pub metrics: Arc<Metrics>,
    /// Where the accepted invocation counters are kept.
    pub pool: Pool,
}

/// The parts of [`PushContext`] that come from elsewhere in the head-end.
pub struct PushShared {
    pub directory: Arc<MeterDirectory>,
    pub writer: WriterHandle,
    pub metrics: Arc<Metrics>,
    pub pool: Pool,
}

impl PushContext {
    /// Registers every meter with keys, resuming its replay window at its stored counter.
    ///
    /// # Errors
    /// The stored counters cannot be read (the listener must not start without them).
    pub async fn load(
        keys: Option<&KeyStore>,
        require_ciphered: bool,
        channels: Vec<i16>,
        shared: PushShared,
    ) -> anyhow::Result<Self> {
        let PushShared { directory, writer, metrics, pool } = shared;
        let stored: HashMap<String, i64> = pool
            .get()
            .await
            .context("database")?
            .query("SELECT m.serial, c.highest FROM dlms_push_counters c JOIN meters m ON m.id = c.meter_id", &[])
            .await
            .context("reading dlms_push_counters")?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut listener = PushListener::new(require_ciphered);
        let mut titles = HashMap::new();
        if let Some(ks) = keys {
            for (title, (serial, k)) in ks.by_system_title() {
                let highest = stored.get(&serial).map(|h| u32::try_from(*h).unwrap_or(u32::MAX));
                listener.add_meter(title, k.ek, k.ak, highest);
                titles.insert(title, serial);
            }
        }
        Ok(Self { listener: Mutex::new(listener), titles, channels, directory, writer, metrics, pool })
    }

    /// Raises the meter's stored counter to `counter`; `false` when it already stood at or above it
    /// (a replay, possibly accepted by another replica or before a restart).
    async fn raise_counter(&self, meter_id: i32, counter: u32) -> Result<bool, String> {
        let client = self.pool.get().await.map_err(|e| format!("database: {e}"))?;
        let raised = client
            .query_opt(
                "INSERT INTO dlms_push_counters AS c (meter_id, highest) VALUES ($1, $2)
                 ON CONFLICT (meter_id) DO UPDATE SET highest = EXCLUDED.highest, updated_at = now()
                 WHERE c.highest < EXCLUDED.highest
                 RETURNING 1",
                &[&meter_id, &i64::from(counter)],
            )
            .await
            .map_err(|e| format!("storing the invocation counter: {e}"))?;
        Ok(raised.is_some())
    }
}

/// How many push connections may be open, and for how long one may stay silent.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: std::time::Duration,
}

/// Accepts pushing meters until `stop`; each connection runs in its own task. A connection over
/// `limits.max_connections` is closed at once (`busy`), one silent for `limits.idle_timeout` is
/// closed (`idle`): memory is bounded by connections x one frame, plus the writer's byte budget
/// for what was received.
pub async fn run(socket: TcpListener, ctx: Arc<PushContext>, limits: Limits, stop: CancellationToken) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    if conns.len() >= limits.max_connections {
                        ctx.metrics.dlms_push.with_label_values(&["busy"]).inc();
                        tracing::debug!(%peer, open = conns.len(), "push connection refused: too many open");
                        drop(stream);
                        continue;
                    }
                    let ctx = ctx.clone();
                    let stop = stop.clone();
                    conns.spawn(async move {
                        tokio::select! {
                            () = stop.cancelled() => {}
                            () = connection(stream, peer, &ctx, limits.idle_timeout) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "push listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    while conns.join_next().await.is_some() {}
}

async fn connection(stream: tokio::net::TcpStream, peer: SocketAddr, ctx: &PushContext, idle: std::time::Duration) {
    let origin = peer.to_string();
    let mut frames = FramedRead::new(stream, WrapperCodec::new(MAX_APDU));
    loop {
        let Ok(next) = tokio::time::timeout(idle, frames.next()).await else {
            ctx.metrics.dlms_push.with_label_values(&["idle"]).inc();
            tracing::debug!(%peer, "push connection closed: idle");
            return;
        };
        let Some(frame) = next else { return };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                // The stream is out of step: nothing after this can be framed reliably.
                ctx.metrics.dlms_push.with_label_values(&["bad_frame"]).inc();
                tracing::info!(%peer, error = %e, "push connection closed on a bad frame");
                let dead = DeadLetter::new(SOURCE, &origin, "push_malformed", e.to_string(), Bytes::new());
                let _ = ctx.writer.send(dead_envelope(dead, &origin)).await;
                return;
            }
        };
        let raw = frame.apdu.clone();
        let env = match handle(ctx, &frame.apdu).await {
            Ok((rows, serial)) => {
                ctx.metrics.dlms_push.with_label_values(&["ok"]).inc();
                ctx.metrics.readings_received.inc_by(rows.len() as u64);
                Envelope { rows, dead: None, ack: None, sent: None, source: SOURCE, origin: serial.into(), raw }
            }
            Err((reason, detail)) => {
                ctx.metrics.dlms_push.with_label_values(&[reason]).inc();
                tracing::debug!(%peer, reason, %detail, "push refused");
                dead_envelope(DeadLetter::new(SOURCE, &origin, reason, detail, raw), &origin)
            }
        };
        if ctx.writer.send(env).await.is_err() {
            return;
        }
    }
}

fn dead_envelope(dead: DeadLetter, origin: &str) -> Envelope {
    Envelope {
        rows: Vec::new(),
        dead: Some(dead),
        ack: None,
        sent: None,
        source: SOURCE,
        origin: origin.into(),
        raw: Bytes::new(),
    }
}

/// One notification → its meter's readings, or a dead-letter reason.
async fn handle(ctx: &PushContext, apdu: &[u8]) -> Result<(Vec<Reading>, String), (&'static str, String)> {
    let n: Notification = {
        let mut l = ctx.listener.lock().unwrap_or_else(|p| p.into_inner());
        l.handle(apdu).map_err(|e| match e {
            dlms::Error::AuthenticationRejected { reason, .. } => ("push_rejected", reason),
            other => ("push_malformed", other.to_string()),
        })?
    };
    let fields = n.body.as_slice().ok_or(("push_malformed", "the body is not a structure".to_string()))?;
    if fields.len() != 2 + ctx.channels.len() {
        return Err((
            "push_malformed",
            format!("the body has {} fields, expected serial, time and {} values", fields.len(), ctx.channels.len()),
        ));
    }
    let serial = fields[0]
        .as_bytes()
        .and_then(|b| std::str::from_utf8(b).ok())
        .filter(|s| schemas::MeterSerial::is_valid(s))
        .ok_or(("push_malformed", "the first field is not a meter serial".to_string()))?
        .to_string();
    if let Some(title) = n.system_title {
        // A ciphered push speaks for the meter whose keys opened it, and for no other.
        if ctx.titles.get(&title).is_none_or(|s| *s != serial) {
            return Err(("push_rejected", format!("meter {serial} pushed under another meter's system title")));
        }
    }
    let dt = fields[1].as_datetime().ok_or(("push_malformed", "the second field is not a date-time".to_string()))?;
    let ts =
        dt.as_datetime_utc(&Belgrade).ok_or(("push_malformed", "the capture time is not a valid time".to_string()))?;
    let meter_id = match ctx.directory.resolve(&serial).await {
        Ok(Some(id)) => id,
        Ok(None) => return Err(("unknown_meter", format!("meter {serial} is not in the inventory"))),
        Err(e) => return Err(("store_failed", format!("inventory unavailable: {e}"))),
    };
    let mut q = 0u8;
    if dt.status != 0xFF && dt.status & 0x01 != 0 {
        q |= Quality::CLOCK_INVALID.0;
    }
    if dt.status != 0xFF && dt.status & 0x02 != 0 {
        q |= Quality::CLOCK_DOUBTFUL.0;
    }
    let flags = pack_flags(Quality(q), Source::Dlms);
    let mut rows = Vec::with_capacity(ctx.channels.len());
    for (ch, v) in ctx.channels.iter().zip(&fields[2..]) {
        let value =
            v.as_i64().ok_or(("impossible_value", format!("channel {ch}: {} is not an integer", v.type_name())))?;
        if value < 0 {
            return Err(("impossible_value", format!("channel {ch}: negative register {value}")));
        }
        rows.push(Reading { ts, value, meter_id, channel_id: *ch, flags });
    }
    if let Some(counter) = n.invocation_counter {
        // Last, so that only a push whose readings go to the writer spends its counter.
        match ctx.raise_counter(meter_id, counter).await {
            Ok(true) => {}
            Ok(false) => {
                return Err((
                    "push_rejected",
                    format!("meter {serial}: invocation counter {counter} was accepted before"),
                ))
            }
            Err(e) => return Err(("store_failed", e)),
        }
    }
    Ok((rows, serial))
}
