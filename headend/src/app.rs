//! `headend serve`: wires the components and runs them until SIGTERM/SIGINT, then shuts down in
//! order: readiness off → MQTT intake stops → the writer flushes and commits → acknowledgements
//! are sent → the broker session is left → HTTP stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::HeadendConfig;
use crate::directory::MeterDirectory;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::mqtt::{self, MqttState};
use crate::{collect, db, maintenance, writer};

/// A small pool: the head-end makes one for the API and the pages (`http.database_connections`) and
/// one for meter look-ups and polling; the writer has its own connections.
pub fn pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    let pg: tokio_postgres::Config = url.parse().context("database.url")?;
    let mgr =
        Manager::from_config(pg, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(mgr)
        .max_size(size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .context("database pool")
}

/// Runs the head-end until `shutdown` is cancelled (the binary cancels it on SIGTERM/SIGINT).
/// `bound` receives the HTTP address once listening (port 0 picks a free one).
pub async fn serve(
    cfg: HeadendConfig,
    shutdown: CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    if cfg.mqtt.enabled {
        // A broker URL that cannot work stops the start, before anything listens.
        mqtt::options(&cfg.mqtt)?;
    }
    let metrics = Arc::new(Metrics::new());
    let probe = db::connect_retrying(&cfg.database.url, cfg.database.connect_timeout)
        .await
        .context("connecting to the database")?;
    let storage = db::storage(&probe).await?.context("the database is not migrated: run `headend migrate` first")?;
    drop(probe);
    tracing::info!(storage = storage.as_str(), "database ready");

    // The pages and the API get connections of their own: portal load waits for these, never for
    // the ones meter look-ups, invocation counters and poll status need.
    let http_pool = pool(&cfg.database.url, cfg.http.database_connections.max(1))?;
    let pool = pool(&cfg.database.url, 16)?;
    let directory = Arc::new(MeterDirectory::new(pool.clone(), cfg.ingest.unknown_meter_ttl));
    let meters = directory.load_all().await.context("loading the meter inventory")?;
    tracing::info!(meters, "inventory loaded");

    let (committed_tx, committed_rx) = mpsc::unbounded_channel();
    // Every source's readings get the MQTT payloads' time window, at the writer's entry.
    let window = crate::ingest::Window { max_age: cfg.ingest.max_age, max_future: cfg.ingest.max_future };
    let (writer, writer_task) =
        writer::spawn(cfg.writer.clone(), cfg.database.url.clone(), storage, window, metrics.clone(), committed_tx);
    let (done_tx, done_rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = writer_task.await;
        let _ = done_tx.send(true);
    });

    let pollers = collect::pollers::build(&cfg, &pool).await.context("setting up the DLMS/Modbus clients")?;
    let collect_stop = CancellationToken::new();
    let (poll_now, poll_now_rx) = watch::channel(0u64);
    let mut collectors = start_collectors(&cfg, &pollers, &pool, &writer, &metrics, poll_now_rx, &collect_stop);
    if let Some(addr) = cfg.dlms.push_listen {
        let socket = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the DLMS push listener {addr}"))?;
        tracing::info!(%addr, ciphered_only = cfg.dlms.push_require_ciphered, "DLMS push listener");
        let shared = collect::push::PushShared {
            directory: directory.clone(),
            writer: writer.clone(),
            metrics: metrics.clone(),
            pool: pool.clone(),
        };
        let ctx = Arc::new(
            collect::push::PushContext::load(
                pollers.keys.as_deref(),
                cfg.dlms.push_require_ciphered,
                cfg.dlms.push_channels()?,
                shared,
            )
            .await
            .context("starting the DLMS push listener")?,
        );
        let limits = collect::push::Limits {
            max_connections: cfg.dlms.push_max_connections.max(1),
            idle_timeout: cfg.dlms.push_idle_timeout,
        };
        collectors.push(tokio::spawn(collect::push::run(socket, ctx, limits, collect_stop.clone())));
    }

    let mqtt_state = Arc::new(MqttState::new(!cfg.mqtt.enabled));
    let accepting = Arc::new(AtomicBool::new(true));
    let intake_stop = CancellationToken::new();
    let mqtt_task = if cfg.mqtt.enabled {
        tokio::spawn(mqtt::run(
            cfg.mqtt.clone(),
            cfg.ingest.clone(),
            directory,
            writer,
            committed_rx,
            done_rx,
            metrics.clone(),
            mqtt_state.clone(),
            intake_stop.clone(),
        ))
    } else {
        tracing::info!("MQTT intake off (mqtt.enabled = false)");
        tokio::spawn(mqtt::idle(writer, committed_rx, done_rx, intake_stop.clone()))
    };

    let upkeep_stop = CancellationToken::new();
    let upkeep = tokio::spawn(maintenance::run(
        cfg.storage.clone(),
        cfg.database.url.clone(),
        storage,
        metrics.clone(),
        upkeep_stop.clone(),
    ));

    let mut state =
        AppState::new(http_pool, metrics, mqtt_state, accepting.clone(), cfg.http.clone(), cfg.auth.clone());
    state.commander = pollers.commander.clone();
    state.poll_now = cfg.collect.enabled.then(|| Arc::new(poll_now));
    let listener =
        tokio::net::TcpListener::bind(cfg.http.listen).await.with_context(|| format!("binding {}", cfg.http.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP listening");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    let http_stop = CancellationToken::new();
    let http_task = {
        let stop = http_stop.clone();
        tokio::spawn(async move {
            // The peer address feeds login throttling (auth.attempts_per_minute).
            let app = http::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
        })
    };

    let mut failed = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = &mut Box::pin(wait_mqtt_failure(&mqtt_task)) => {
            tracing::error!("MQTT source ended unexpectedly: {r}");
            failed = Some(r);
        }
    }
    tracing::info!("shutting down: readiness off, stopping intake");
    accepting.store(false, Ordering::Release);
    // Pollers first: their sessions finish and hand their readings to the writer, then their
    // writer handles drop, so the writer can drain and the MQTT acknowledgements go out.
    collect_stop.cancel();
    for task in collectors {
        let _ = task.await;
    }
    intake_stop.cancel();
    match mqtt_task.await {
        Ok(Ok(())) => tracing::info!("intake stopped; writer flushed and acknowledgements sent"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "MQTT source failed");
            failed = Some(e.to_string());
        }
        Err(e) => {
            tracing::error!(error = %e, "MQTT source panicked");
            failed = Some(format!("panicked: {e}"));
        }
    }
    upkeep_stop.cancel();
    let _ = upkeep.await;
    http_stop.cancel();
    http_task.await.context("HTTP task")?.context("HTTP server")?;
    tracing::info!("stopped");
    match failed {
        // The process must not look like a clean stop to its supervisor.
        Some(why) => anyhow::bail!("the MQTT source ended: {why}"),
        None => Ok(()),
    }
}

/// Starts the polling collectors when `collect.enabled`: one task per group, a status writer, and
/// the pollers of the protocols configured. Returns the tasks, which end after `stop`.
fn start_collectors(
    cfg: &HeadendConfig,
    pollers: &collect::pollers::Pollers,
    pool: &Pool,
    writer: &writer::WriterHandle,
    metrics: &Arc<Metrics>,
    wake: watch::Receiver<u64>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    if !cfg.collect.enabled {
        return Vec::new();
    }
    let (status_tx, status_rx) = mpsc::channel(10_000);
    let status = tokio::spawn(collect::status::run(pool.clone(), status_rx, std::time::Duration::from_secs(1), 5_000));
    let c = &cfg.collect;
    let leases = Arc::new(collect::leases::Leases::new(
        collect::leases::holder_id(&cfg.mqtt.effective_client_id()),
        c.lease_buckets,
        c.lease_period,
    ));
    let shared = Arc::new(collect::scheduler::Shared {
        cfg: c.clone(),
        pool: pool.clone(),
        writer: writer.clone(),
        metrics: metrics.clone(),
        limits: collect::limits::Limits::new(c.max_sessions, c.max_sessions_per_cell, c.new_connections_per_second),
        leases: leases.clone(),
        status: status_tx,
        wake,
    });
    let mut tasks = collect::scheduler::spawn_groups(shared, &pollers.by_protocol, stop);
    tracing::info!(groups = tasks.len(), holder = %leases.holder, "polling collectors started");
    // The leases are renewed until the groups stop, then handed back once their sessions ended.
    let (pool, metrics, stop) = (pool.clone(), metrics.clone(), stop.clone());
    tasks.push(tokio::spawn(async move { leases.run(pool, metrics, stop).await }));
    // The status writer ends when the last session's sender (inside `shared`) is gone.
    tasks.push(status);
    tasks
}

/// Resolves only if the MQTT task ends on its own (e.g. a bad URL), never on success.
async fn wait_mqtt_failure(task: &tokio::task::JoinHandle<Result<(), mqtt::BadUrl>>) -> String {
    loop {
        if task.is_finished() {
            return "the task finished".into();
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    use std::time::Duration;

    fn mqtt_url() -> String {
        std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
    }

    /// Publishes every payload with QoS 1 and waits for all PUBACKs.
    async fn publish_all(prefix: &str, msgs: &[(String, Vec<u8>)]) {
        let cfg =
            crate::config::MqttConfig { url: mqtt_url(), client_id: format!("{prefix}-pub"), ..Default::default() };
        let mut o: MqttOptions = crate::mqtt::options(&cfg).expect("url");
        o.set_clean_session(true).set_manual_acks(false);
        let (client, mut el) = AsyncClient::new(o, 1000);
        for (topic, payload) in msgs {
            client.publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone()).await.expect("queue publish");
        }
        let (mut sent, mut acked) = (0, 0);
        while acked < msgs.len() || sent < msgs.len() {
            match tokio::time::timeout(Duration::from_secs(10), el.poll()).await.expect("broker answers") {
                Ok(Event::Outgoing(Outgoing::Publish(_))) => sent += 1,
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
        let _ = client.disconnect().await;
    }

    async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
        c.query_one(sql, &[]).await.expect(sql).get(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readings_flow_from_mqtt_to_the_database_once() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        c.batch_execute(
            "INSERT INTO buildings (code, address, municipality, region) VALUES ('B1', 'Test 1', 'Vračar', 'belgrade');
             INSERT INTO households (code, building_id, apartment, floor_area_m2, residents, approved_power_kw, tariff)
               VALUES ('H1', 1, '1', 50, 2, 5.75, 'eps-household-2025');
             INSERT INTO meters (serial, kind, protocol, building_id, household_id, installed_on)
               VALUES ('M1', 'household', 'mqtt', 1, 1, '2025-01-01');",
        )
        .await
        .expect("inventory");
        let prefix = format!("hes-unit-{}", db.name);
        let mut cfg = HeadendConfig::default();
        cfg.database.url = db.url.clone();
        cfg.mqtt.url = mqtt_url();
        cfg.mqtt.client_id = format!("{prefix}-headend");
        cfg.mqtt.subscription = format!("{prefix}/meters/+/readings");
        cfg.mqtt.topic_serial_level = 2;
        cfg.http.listen = "127.0.0.1:0".parse().expect("addr");
        cfg.writer.max_wait = Duration::from_millis(50);
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(cfg, stop.clone(), Some(tx)));
        let addr = rx.await.expect("bound");
        // Ready means subscribed (SUBACK received).
        let ready = async {
            loop {
                if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let _ = s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await;
                    let mut buf = String::new();
                    let _ = s.read_to_string(&mut buf).await;
                    if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), ready).await.expect("ready");

        let now = chrono::Utc::now();
        let ts = |i: i64| {
            (now - chrono::Duration::hours(3) + chrono::Duration::minutes(15 * i))
                .format("%Y-%m-%dT%H:%M:00Z")
                .to_string()
        };
        let topic = format!("{prefix}/meters/M1/readings");
        let good = |i: i64| {
            format!(r#"{{"meter":"M1","ts":"{}","values":{{"1.0.1.8.0":{},"1.0.32.7.0":229.7}}}}"#, ts(i), 1000 + i)
                .into_bytes()
        };
        let mut msgs: Vec<(String, Vec<u8>)> = (0..4).map(|i| (topic.clone(), good(i))).collect();
        msgs.push((topic.clone(), good(0))); // duplicate
        msgs.push((topic.clone(), b"{not json".to_vec()));
        msgs.push((
            format!("{prefix}/meters/M2/readings"),
            br#"{"meter":"M2","ts":"2026-01-01T00:00:00Z","values":{"1.0.1.8.0":1}}"#.to_vec(),
        ));
        msgs.push((format!("{prefix}/meters/M9/readings"), good(5)));
        publish_all(&prefix, &msgs).await;

        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stored = count(&c, "SELECT count(*) FROM readings").await;
            let dead = count(&c, "SELECT count(*) FROM dead_letters").await;
            if stored == 8 && dead == 3 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "stored {stored}, dead {dead}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reasons: Vec<String> = c
            .query("SELECT reason FROM dead_letters ORDER BY reason", &[])
            .await
            .expect("reasons")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(reasons, ["malformed_json", "topic_not_authorised", "unknown_meter"]);
        let v: i64 = c
            .query_one("SELECT value FROM readings WHERE channel_id = 5 ORDER BY ts LIMIT 1", &[])
            .await
            .expect("voltage")
            .get(0);
        assert_eq!(v, 2297);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), server).await.expect("stops").expect("join").expect("serve ok");

        // Everything was acknowledged: the persistent session has nothing to redeliver.
        let cfg =
            crate::config::MqttConfig { url: mqtt_url(), client_id: format!("{prefix}-headend"), ..Default::default() };
        let (client, mut el) = AsyncClient::new(crate::mqtt::options(&cfg).expect("url"), 10);
        let mut redelivered = 0;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Ok(Event::Incoming(Packet::Publish(_))) = el.poll().await {
                    redelivered += 1;
                }
            }
        })
        .await;
        assert_eq!(redelivered, 0, "messages left unacknowledged");
        // Leave no session behind on the shared broker.
        let _ = client.try_disconnect();
    }

    /// A poll- or push-only replica (`mqtt.enabled = false`) is ready without any broker (the URL
    /// here leads nowhere) and stops cleanly, its writer drained.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_mqtt_off_the_head_end_is_ready_without_a_broker_and_stops_cleanly() {
        let db = TestDb::new().await;
        let _c = db.migrated().await;
        let mut cfg = HeadendConfig::default();
        cfg.database.url = db.url.clone();
        cfg.mqtt.enabled = false;
        cfg.mqtt.url = "mqtt://127.0.0.1:9".into();
        cfg.http.listen = "127.0.0.1:0".parse().expect("addr");
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(cfg, stop.clone(), Some(tx)));
        let addr = rx.await.expect("bound");
        let readyz = async {
            loop {
                if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let _ = s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await;
                    let mut buf = String::new();
                    let _ = s.read_to_string(&mut buf).await;
                    if !buf.is_empty() {
                        return buf;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let answer = tokio::time::timeout(Duration::from_secs(20), readyz).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert!(answer.contains(r#""broker":"disabled""#), "{answer}");
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(20), server).await.expect("stops in time");
        ended.expect("no panic").expect("serve ends without an error");
    }
}
