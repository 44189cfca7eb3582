//! Ingest benchmark (not a timed test): one 15-minute round of N meters × 4 channels through
//! Mosquitto → head-end → PostgreSQL, compared in the same run with the physical limits:
//!
//! - raw broker throughput: the same messages published by the same simulator to a plain
//!   subscriber that acknowledges at once;
//! - raw binary COPY: the very rows the head-end stored, copied again into the same table (same
//!   partition, same primary key) in one transaction.
//!
//! Run: `cargo xtask bench-ingest` (builds the release binaries, finds PostgreSQL, starts a private
//! Mosquitto). Options after `--`: `--api-clients N` (64) and `--api-connections N` (8, the API's
//! database pool) for the interval published under API load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use futures::pin_mut;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tests::broker::Broker;
use tests::pg::TestDatabase;
use tests::procs::{self, Headend, HeadendSpec};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const CHANNELS: &str = "1.0.1.8.0,1.0.1.8.1,1.0.1.8.2,1.0.2.8.0";
const FROM: &str = "2026-11-20T09:45:00Z";
const TO: &str = "2026-11-20T10:00:00Z";
const NEXT: &str = "2026-11-20T10:15:00Z";
const LAST: &str = "2026-11-20T10:30:00Z";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn ts(v: &serde_json::Value, key: &str) -> anyhow::Result<DateTime<Utc>> {
    v[key].as_str().with_context(|| format!("summary lacks {key}: {v}"))?.parse().context("timestamp")
}

/// The upper bound of the histogram bucket holding the q-quantile.
fn histogram_quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    buckets.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| *le)
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

fn simulate(meters: usize, url: &str, prefix: &str) -> anyhow::Result<serde_json::Value> {
    simulate_span(meters, url, prefix, FROM, TO)
}

/// Publishes the interval (from, to] of every meter while polling the head-end; the moment
/// `headend_readings_stored_total` reached `target`, and the simulator's summary.
fn round(
    headend: &Headend,
    broker_url: &str,
    meters: usize,
    from: &'static str,
    to: &'static str,
    target: f64,
) -> anyhow::Result<(DateTime<Utc>, serde_json::Value)> {
    // Poll the head-end while the simulator runs, so the commit time is not delayed by the
    // simulator's own exit.
    let url = broker_url.to_string();
    let sim = std::thread::spawn(move || simulate_span(meters, &url, "meters", from, to));
    let deadline = Instant::now() + Duration::from_secs(600);
    let committed_at = loop {
        let m = headend.metrics()?;
        if procs::metric(&m, "headend_readings_stored_total").unwrap_or(0.0) >= target {
            break Utc::now();
        }
        if Instant::now() > deadline {
            bail!("not all readings committed within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let summary = sim.join().map_err(|_| anyhow::anyhow!("simulator thread panicked"))??;
    Ok((committed_at, summary))
}

fn simulate_span(meters: usize, url: &str, prefix: &str, from: &str, to: &str) -> anyhow::Result<serde_json::Value> {
    let out = procs::run_bin(
        "meter-sim",
        &[
            "mqtt",
            "--meters",
            &meters.to_string(),
            "--seed",
            "1",
            "--from",
            from,
            "--to",
            to,
            "--channels",
            CHANNELS,
            "--url",
            url,
            "--topic-prefix",
            prefix,
            "--no-progress",
        ],
        &[],
    )?;
    Ok(serde_json::from_str(out.lines().last().context("no summary")?)?)
}

/// Publisher → broker → a subscriber that acknowledges at once: the broker's ceiling.
async fn raw_broker(meters: usize, broker: &Broker) -> anyhow::Result<(f64, f64)> {
    let mut o = MqttOptions::new("bench-raw-sub", "127.0.0.1", broker.port);
    o.set_clean_session(true).set_max_packet_size(1 << 20, 1 << 20).set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(o, 1000);
    client.subscribe("raw/+/readings", QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = el.poll().await? {
            break;
        }
    }
    let counter = tokio::spawn(async move {
        let mut n = 0usize;
        let mut last = Utc::now();
        while n < meters {
            match tokio::time::timeout(Duration::from_secs(60), el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                    n += 1;
                    last = Utc::now();
                }
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        (n, last)
    });
    let url = broker.url();
    let summary = tokio::task::spawn_blocking(move || simulate(meters, &url, "raw")).await??;
    let (n, last) = counter.await?;
    if n < meters {
        bail!("raw subscriber received {n} of {meters} messages");
    }
    // The same clock as the pipeline's: from the simulator's first publish.
    let first = ts(&summary, "first_publish")?;
    let end_to_end = n as f64 / ((last - first).num_milliseconds().max(1) as f64 / 1000.0);
    let publish_only = summary["messages_per_s"].as_f64().unwrap_or(0.0);
    Ok((end_to_end, publish_only))
}

/// The stored rows, copied out and back into the same (emptied) table in one transaction.
async fn raw_copy(url: &str) -> anyhow::Result<(usize, f64)> {
    let mut c = connect(url).await?;
    c.batch_execute("SET TIME ZONE 'UTC'").await?;
    let rows = c
        // The first interval's rows: the round the pipeline's rate is measured on.
        .query(
            "SELECT ts, value, meter_id, channel_id, flags FROM readings WHERE ts <= $1::text::timestamptz
             ORDER BY meter_id, channel_id, ts",
            &[&TO],
        )
        .await?;
    let rows: Vec<(DateTime<Utc>, i64, i32, i16, i16)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect();
    c.batch_execute("TRUNCATE readings; CHECKPOINT").await?;
    let start = Instant::now();
    let tx = c.transaction().await?;
    let sink = tx.copy_in("COPY readings (ts, value, meter_id, channel_id, flags) FROM STDIN BINARY").await?;
    let w = BinaryCopyInWriter::new(sink, &[Type::TIMESTAMPTZ, Type::INT8, Type::INT4, Type::INT2, Type::INT2]);
    pin_mut!(w);
    for r in &rows {
        w.as_mut().write(&[&r.0, &r.1, &r.2, &r.3, &r.4]).await?;
    }
    w.finish().await?;
    tx.commit().await?;
    let secs = start.elapsed().as_secs_f64();
    Ok((rows.len(), rows.len() as f64 / secs))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` also runs benches with `--bench` when asked for tests only; be quiet then.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let meters: usize = arg("--meters").map_or(Ok(205_000), |m| m.parse()).context("--meters")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::Builder::new().prefix("hes-bench-").tempdir()?;
    let broker = Broker::temporary()?;
    let db = rt.block_on(TestDatabase::create(&tests::pg::admin_url(), "bench"))?;
    let env = [("DATABASE_URL", db.url.as_str())];
    procs::run_bin("headend", &["migrate"], &env)?;
    let inv = dir.path().join("inventory.csv").to_string_lossy().to_string();
    procs::run_bin("meter-sim", &["inventory", "--meters", &meters.to_string(), "--seed", "1", "--out", &inv], &[])?;
    procs::run_bin("headend", &["inventory", "import", &inv], &env)?;
    rt.block_on(async {
        let c = connect(&db.url).await?;
        c.execute("SELECT headend_ensure_partition('2026-11-20')", &[]).await?;
        anyhow::Ok(())
    })?;
    let api_clients: usize = arg("--api-clients").map_or(Ok(64), |m| m.parse()).context("--api-clients")?;
    // The API's own pool (`http.database_connections`, default 8).
    let api_connections: usize = arg("--api-connections").map_or(Ok(8), |m| m.parse()).context("--api-connections")?;
    let spec = HeadendSpec {
        database_url: db.url.clone(),
        mqtt_url: broker.url(),
        client_id: "headend-bench".into(),
        subscription: "meters/+/readings".into(),
        env: vec![
            ("HEADEND_INGEST__MAX_AGE".into(), "3650days".into()),
            ("RUST_LOG".into(), "warn".into()),
            ("HEADEND_HTTP__DATABASE_CONNECTIONS".into(), api_connections.to_string()),
        ],
    };
    let headend = Headend::start(&spec, &dir.path().join("headend.log"))?;
    let expected = (meters * 4) as f64;

    eprintln!("bench: publishing {meters} meters × 1 interval × 4 channels through the head-end");
    let (committed_at, summary) = round(&headend, &broker.url(), meters, FROM, TO, expected)?;
    let first_publish = ts(&summary, "first_publish")?;
    let last_publish = ts(&summary, "last_publish")?;
    let metrics = headend.metrics()?;
    let p99 = histogram_quantile(&metrics, "headend_ingest_delay_seconds", 0.99);
    let p50 = histogram_quantile(&metrics, "headend_ingest_delay_seconds", 0.50);
    let total_s = (committed_at - first_publish).num_milliseconds() as f64 / 1000.0;
    let tail_s = (committed_at - last_publish).num_milliseconds() as f64 / 1000.0;
    let pipeline_rate = expected / total_s;
    let pipeline_msgs = meters as f64 / total_s;

    // The next two intervals: one quiet, one while operators hammer the API (their own database
    // pool, `http.database_connections`): how much API load takes from ingest.
    eprintln!("bench: the next interval, quiet");
    let (at, s2) = round(&headend, &broker.url(), meters, TO, NEXT, expected * 2.0)?;
    let quiet_s = (at - ts(&s2, "first_publish")?).num_milliseconds() as f64 / 1000.0;
    eprintln!("bench: the interval after, while {api_clients} API clients ask without pause");
    let token = procs::operator_token(&db.url)?;
    let base = format!("http://{}", headend.http);
    let targets: Vec<(String, String)> = (0..api_clients)
        .map(|k| {
            let serial = format!("SIM{:08}", (k * 7919) % meters + 1);
            let path = match k % 4 {
                0 => "/api/v1/ops/summary".to_string(),
                1 => "/api/v1/ops/meters".to_string(),
                _ => format!("/api/v1/meters/{serial}/readings?from={FROM}&to={LAST}&obis=1.0.1.8.0,1.0.2.8.0"),
            };
            (format!("{base}{path}"), token.clone())
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let api = {
        let stop = stop.clone();
        let http = tests::httpload::client(api_clients);
        rt.spawn(async move {
            let done = move || stop.load(Ordering::Relaxed);
            tests::httpload::load(&http, "api_during_ingest", Arc::new(targets), api_clients, Duration::ZERO, done)
                .await
        })
    };
    // Let the clients fill the API's pool before the round starts.
    std::thread::sleep(Duration::from_secs(2));
    let (at, s3) = round(&headend, &broker.url(), meters, NEXT, LAST, expected * 3.0)?;
    stop.store(true, Ordering::Relaxed);
    let api = rt.block_on(api)??;
    let loaded_s = (at - ts(&s3, "first_publish")?).num_milliseconds() as f64 / 1000.0;
    let rss = headend.proc.peak_rss_bytes().unwrap_or(0);
    drop(headend);

    eprintln!("bench: raw binary COPY of the same rows into the same table");
    let (copied, copy_rate) = rt.block_on(raw_copy(&db.url))?;
    eprintln!("bench: raw broker throughput (publisher → Mosquitto → subscriber that acks at once)");
    let (broker_rate, publish_only) = rt.block_on(raw_broker(meters, &broker))?;

    let result = serde_json::json!({
        "meters": meters,
        "readings": expected,
        "pipeline_readings_per_s": pipeline_rate.round(),
        "pipeline_messages_per_s": pipeline_msgs.round(),
        "first_publish_to_last_commit_s": total_s,
        "last_publish_to_last_commit_s": tail_s,
        "publish_to_commit_p50_s_bucket": p50,
        "publish_to_commit_p99_s_bucket": p99,
        "headend_peak_rss_mb": (rss as f64 / 1048576.0).round(),
        "raw_copy_rows": copied,
        "raw_copy_rows_per_s": copy_rate.round(),
        "raw_broker_messages_per_s": broker_rate.round(),
        "simulator_publish_messages_per_s": publish_only.round(),
        "ratio_pipeline_to_raw_copy": (pipeline_rate / copy_rate * 100.0).round() / 100.0,
        "ratio_pipeline_to_raw_broker": (pipeline_msgs / broker_rate * 100.0).round() / 100.0,
        "next_interval_quiet_first_publish_to_last_commit_s": quiet_s,
        "next_interval_under_api_load_first_publish_to_last_commit_s": loaded_s,
        "ratio_ingest_rate_under_api_load_to_quiet": (quiet_s / loaded_s * 100.0).round() / 100.0,
        "api_clients": api_clients,
        "api_database_connections": api_connections,
        "api_during_ingest": api.json(),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    println!(
        "reproduce: cargo xtask bench-ingest --meters {meters} -- --api-clients {api_clients} --api-connections {api_connections}"
    );
    Ok(())
}
