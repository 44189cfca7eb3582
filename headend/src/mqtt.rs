//! The MQTT source: a persistent QoS 1 session (clean session off) with manual acknowledgements.
//!
//! Every received message becomes an [`Envelope`] for the writer; the acknowledgement (PUBACK) is
//! sent only when the writer reports the batch holding it committed. Acknowledgements carry the
//! connection generation (epoch) they arrived on: after a reconnect the broker redelivers whatever
//! was not acknowledged, so tokens of an older connection are dropped rather than sent on the new
//! one (their messages come again and are stored idempotently).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use schemas::payload::ReadingPayload;
use schemas::reading::Source;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{IngestConfig, MqttConfig};
use crate::directory::MeterDirectory;
use crate::ingest::{self, DeadLetter, Window};
use crate::metrics::Metrics;
use crate::writer::{AckToken, Envelope, Held, WriterHandle};

/// A broker URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BadUrl {
    #[error("invalid MQTT URL {0:?}: expected mqtt[s]://[user[:password]@]host[:port]")]
    Url(String),
    #[error("MQTT TLS: {0}")]
    Tls(String),
}

/// Broker options from an `mqtt://` (or `mqtts://`, TLS) URL and the configuration.
pub fn options(cfg: &MqttConfig) -> Result<MqttOptions, BadUrl> {
    // The URL may carry the broker password: the error (which is logged) shows it masked.
    let url = schemas::mqtt_auth::BrokerUrl::parse(&cfg.url)
        .ok_or_else(|| BadUrl::Url(crate::config::redact_url(&cfg.url)))?;
    if !url.tls && cfg.ca_file.is_some() {
        return Err(BadUrl::Tls("mqtt.ca_file is set but the URL is not mqtts://".into()));
    }
    let mut o = MqttOptions::new(cfg.effective_client_id(), url.host, url.port);
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(cfg.keep_alive)
        .set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes)
        .set_request_channel_capacity(cfg.request_queue)
        .set_inflight(100);
    if let Some((user, password)) = url.credentials {
        o.set_credentials(user, password);
    }
    if url.tls {
        let config = schemas::mqtt_auth::tls_client_config(cfg.ca_file.as_deref()).map_err(BadUrl::Tls)?;
        o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config)));
    }
    Ok(o)
}

/// Shared state other components read (readiness).
#[derive(Default)]
pub struct MqttState {
    /// `mqtt.enabled = false`: no broker is used, readiness does not wait for one.
    pub disabled: bool,
    pub connected: std::sync::atomic::AtomicBool,
    /// The broker granted the subscription on the current connection. Until then messages published
    /// to a new session are not routed to it, so readiness waits for this too.
    pub subscribed: std::sync::atomic::AtomicBool,
    epoch: AtomicU64,
}

/// Runs the source until `shutdown`, then stops reading, lets the writer finish (dropping the
/// handle it was given) and sends the acknowledgements of what it committed before disconnecting.
/// `writer_done` turns true when the writer has committed everything.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cfg: MqttConfig,
    ingest: IngestConfig,
    directory: Arc<MeterDirectory>,
    writer: WriterHandle,
    committed: mpsc::UnboundedReceiver<Vec<AckToken>>,
    mut writer_done: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    state: Arc<MqttState>,
    shutdown: CancellationToken,
) -> Result<(), BadUrl> {
    let opts = options(&cfg)?;
    let (client, mut eventloop) = AsyncClient::new(opts, cfg.request_queue);
    let acker = tokio::spawn(acknowledge(client.clone(), committed, state.clone(), metrics.clone()));
    let window = Window { max_age: ingest.max_age, max_future: ingest.max_future };
    // The intake (parse, resolve, queue for the writer) runs on a task of its own, so that waiting
    // for the writer (backpressure) or for the database never stops this loop from polling the
    // connection: keep-alives, acknowledgements and shutdown go on. The channel cannot fill with
    // QoS 1 messages: they stay unacknowledged until committed, and a session has at most 65,535
    // packet ids in flight. Its bytes are bounded by the writer's byte budget: each publish holds
    // its share before the next packet is read (see below).
    let budget = writer.budget().clone();
    let (intake_tx, intake_rx) = mpsc::channel::<(Publish, u64, Held)>(INTAKE_QUEUE);
    let intake_stop = CancellationToken::new();
    let intake = Intake { cfg: cfg.clone(), window, directory, writer, metrics: metrics.clone() };
    let intake_task = tokio::spawn(intake.run(intake_rx, intake_stop.clone()));
    let mut source = Some(intake_tx);
    let mut delay = Duration::from_millis(100);
    let mut drain_deadline = None;
    loop {
        let event = tokio::select! {
            biased;
            _ = shutdown.cancelled(), if source.is_some() => {
                tracing::info!("stopping MQTT intake; flushing the writer before acknowledging");
                // The intake stops and drops the writer handle: the writer flushes and finishes.
                // Messages still queued for the intake are never acknowledged: the broker keeps them.
                source = None;
                intake_stop.cancel();
                drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(60));
                continue;
            }
            changed = writer_done.wait_for(|d| *d), if source.is_none() => {
                let _ = changed;
                break;
            }
            _ = sleep_until_opt(drain_deadline) => {
                tracing::warn!("writer did not finish in time; unacknowledged messages will be redelivered");
                break;
            }
            ev = eventloop.poll() => ev,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                metrics.mqtt_messages.inc();
                if let Some(tx) = &source {
                    let epoch = state.epoch.load(Ordering::Acquire);
                    // Hold the publish's bytes of the budget before reading the next packet. While
                    // the budget is spent (the database is slower than the broker, or publishers
                    // send the largest packets the broker allows) the socket is not read and the
                    // broker queues; a wait longer than the keep-alive ends the connection and the
                    // broker redelivers what was not acknowledged. Nothing is lost either way.
                    let held = tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => continue,
                        h = budget.hold(crate::writer::publish_cost(p.payload.len(), p.topic.len())) => h,
                    };
                    if tx.send((p, epoch, held)).await.is_err() {
                        tracing::error!("the intake stopped (the writer is gone); leaving the broker");
                        break;
                    }
                }
                // After shutdown began, publishes are left unacknowledged: the broker keeps them.
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                state.epoch.fetch_add(1, Ordering::AcqRel);
                state.connected.store(true, Ordering::Release);
                metrics.mqtt_connected.set(1);
                delay = Duration::from_millis(100);
                tracing::info!(session_present = ack.session_present, "connected to the broker");
                // Subscribing again is harmless and covers a broker that lost the session.
                if let Err(e) = client.try_subscribe(cfg.subscription.clone(), QoS::AtLeastOnce) {
                    tracing::error!(error = %e, "could not queue the subscription");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(s))) => {
                let granted = s.return_codes.iter().all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                state.subscribed.store(granted, Ordering::Release);
                if granted {
                    tracing::info!(filter = %cfg.subscription, codes = ?s.return_codes, "subscribed");
                } else {
                    tracing::error!(filter = %cfg.subscription, "the broker refused the subscription");
                }
            }
            Ok(_) => {}
            Err(e) => {
                state.connected.store(false, Ordering::Release);
                state.subscribed.store(false, Ordering::Release);
                // Tokens of this connection are stale from now on (the broker redelivers).
                state.epoch.fetch_add(1, Ordering::AcqRel);
                metrics.mqtt_connected.set(0);
                metrics.mqtt_connection_errors.inc();
                tracing::warn!(error = %e, retry_in = ?delay, "broker connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled(), if source.is_some() => {}
                }
                delay = (delay * 2).min(cfg.reconnect_max_delay);
            }
        }
    }
    // Let the acknowledgements drain through the event loop, then leave.
    drop(source);
    intake_stop.cancel();
    let _ = intake_task.await;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !acker.is_finished() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                ev = eventloop.poll() => if ev.is_err() { break },
            }
        }
    })
    .await;
    // Keep polling until the broker closes the connection: rumqttc reports Outgoing::Disconnect
    // when the packet is queued, not when it (and the acknowledgements before it) left the socket.
    // The broker closes only after reading DISCONNECT, so every PUBACK before it has arrived.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while eventloop.poll().await.is_ok() {} }).await;
    state.connected.store(false, Ordering::Release);
    state.subscribed.store(false, Ordering::Release);
    metrics.mqtt_connected.set(0);
    Ok(())
}

/// Stands in for [`run`] when `mqtt.enabled = false` (a replica that only polls or takes DLMS
/// pushes): holds the intake's writer handle until `shutdown`, then lets the writer finish. Nothing
/// is acknowledged, so what the writer reports as committed is discarded.
pub async fn idle(
    writer: WriterHandle,
    mut committed: mpsc::UnboundedReceiver<Vec<AckToken>>,
    mut writer_done: watch::Receiver<bool>,
    shutdown: CancellationToken,
) -> Result<(), BadUrl> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            acks = committed.recv() => if acks.is_none() {
                shutdown.cancelled().await;
                break;
            },
        }
    }
    drop(writer);
    // The writer finishes once every handle is gone; its end closes `committed`.
    let drain = async {
        while committed.recv().await.is_some() {}
        let _ = writer_done.wait_for(|d| *d).await;
    };
    if tokio::time::timeout(Duration::from_secs(60), drain).await.is_err() {
        tracing::warn!("writer did not finish in time");
    }
    Ok(())
}

impl MqttState {
    /// The state of an intake that is switched off (`mqtt.enabled = false`) or not.
    #[must_use]
    pub fn new(disabled: bool) -> Self {
        Self { disabled, ..Self::default() }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sends PUBACKs for committed messages of the current connection.
async fn acknowledge(
    client: AsyncClient,
    mut committed: mpsc::UnboundedReceiver<Vec<AckToken>>,
    state: Arc<MqttState>,
    metrics: Arc<Metrics>,
) {
    while let Some(tokens) = committed.recv().await {
        for t in tokens {
            if t.epoch != state.epoch.load(Ordering::Acquire) {
                metrics.mqtt_stale_acks.inc();
                continue;
            }
            let mut p = Publish::new("", QoS::AtLeastOnce, Vec::<u8>::new());
            p.pkid = t.pkid;
            if client.ack(&p).await.is_err() {
                return;
            }
            metrics.mqtt_acks.inc();
        }
    }
}

/// Messages received and not yet taken by the intake (see `run`).
const INTAKE_QUEUE: usize = 65_536;

struct Intake {
    cfg: MqttConfig,
    window: Window,
    directory: Arc<MeterDirectory>,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
}

impl Intake {
    /// Takes received messages until `stop`; a message interrupted by `stop` is left
    /// unacknowledged (the broker redelivers it). Dropping `self` at the end releases the writer.
    async fn run(self, mut rx: mpsc::Receiver<(Publish, u64, Held)>, stop: CancellationToken) {
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                m = rx.recv() => m,
            };
            let Some((p, epoch, held)) = next else { break };
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = self.handle(p, epoch, held) => if r.is_err() { break },
            }
        }
    }

    async fn handle(&self, p: Publish, epoch: u64, held: Held) -> Result<(), crate::writer::WriterClosed> {
        let ack = (p.qos != QoS::AtMostOnce).then_some(AckToken { epoch, pkid: p.pkid });
        let origin: Arc<str> = Arc::from(p.topic.as_str());
        let mut env =
            Envelope { rows: Vec::new(), dead: None, ack, sent: None, source: "mqtt", origin, raw: p.payload };
        match self.classify(&env.origin, &env.raw).await {
            Ok((rows, sent)) => {
                self.metrics.readings_received.inc_by(rows.len() as u64);
                env.rows = rows;
                env.sent = sent;
            }
            Err((reason, detail)) => {
                tracing::debug!(topic = %env.origin, reason, %detail, "message refused");
                env.dead = Some(DeadLetter::new("mqtt", &env.origin, reason, detail, env.raw.clone()));
            }
        }
        self.writer.send_held(env, held).await
    }

    #[allow(clippy::type_complexity)]
    async fn classify(
        &self,
        topic: &str,
        raw: &[u8],
    ) -> Result<(Vec<schemas::Reading>, Option<chrono::DateTime<Utc>>), (&'static str, String)> {
        let payload = ReadingPayload::parse(raw).map_err(|e| (e.reason(), e.to_string()))?;
        if let Some(serial) = ingest::serial_in_topic(topic, self.cfg.topic_serial_level) {
            if serial != payload.meter.as_str() {
                return Err((
                    "topic_not_authorised",
                    format!("topic names meter {serial:?} but the payload {}", payload.meter),
                ));
            }
        }
        let meter_id = loop {
            match self.directory.resolve(payload.meter.as_str()).await {
                Ok(Some(id)) => break id,
                Ok(None) => return Err(("unknown_meter", format!("meter {} is not in the inventory", payload.meter))),
                Err(e) => {
                    // The database is down: neither store nor refuse; wait for it (backpressure).
                    tracing::warn!(error = %e, "cannot resolve meter; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let rows = ingest::to_rows(&payload, meter_id, Source::Mqtt, Utc::now(), self.window)
            .map_err(|r| (r.reason, r.detail))?;
        Ok((rows, payload.sent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> MqttConfig {
        MqttConfig { url: url.into(), client_id: "t".into(), ..MqttConfig::default() }
    }

    #[test]
    fn urls() {
        let o = options(&cfg("mqtt://127.0.0.1:18830")).expect("url");
        assert_eq!(o.broker_address(), ("127.0.0.1".to_string(), 18830));
        assert!(!o.clean_session());
        let o = options(&cfg("mqtt://u:p@broker")).expect("url");
        assert_eq!(o.broker_address(), ("broker".to_string(), 1883));
        let login = o.credentials().expect("credentials");
        assert_eq!((login.username.as_str(), login.password.as_str()), ("u", "p"));
        for bad in ["http://x", "mqtt://", "mqtt://h:port", "h:1883"] {
            assert!(options(&cfg(bad)).is_err(), "{bad}");
        }
    }
}
