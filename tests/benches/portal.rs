//! Portal benchmark (not a timed test): N meters × a month of 15-minute readings stored through
//! the real pipeline (MQTT → head-end → PostgreSQL), then 200 concurrent household clients, each
//! with its own account and token, asking for their own data:
//!
//! - `month_json`: `GET /api/v1/households/{code}/consumption?resolution=day&date=YYYY-MM` (the
//!   household month API: daily kWh and VT/NT of a month);
//! - `month_page`: `GET /portal/usage?household={code}&view=month&date=YYYY-MM` (the same as a page);
//! - `month_15min_json`: `GET /api/v1/meters/{serial}/readings` for the month, one channel (2,880+
//!   15-minute points);
//! - `ops_first_paint`: an operator's `/ops` dashboard HTML plus its stylesheet and scripts, one
//!   client on the loaded database (what a browser needs before it can paint);
//! - `month_json_1_client` (the service time) and `month_json_paced_2s` / `month_page_paced_2s`: 200
//!   people who each wait 2 s between requests (about 100 requests a second).
//!
//! Closed-loop runs (no pause) measure capacity: their latency is clients ÷ throughput.
//!
//! The physical limits, measured in the same run with the same 200 clients: `/livez` (the HTTP
//! stack and loopback, no database) and the month's raw SQL (the same readings query through a
//! plain tokio-postgres pool, no HTTP, no authentication).
//!
//! Run: `cargo xtask bench-portal` (release binaries, private Mosquitto, a database of its own).
//! Options after `--`: `--meters N` (default 2000), `--days D` (30), `--clients C` (200),
//! `--seconds S` per measurement (15).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, Utc};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use tests::broker::Broker;
use tests::httpload::{for_seconds, load, Http, Run};
use tests::pg::TestDatabase;
use tests::procs::{self, Headend, HeadendSpec};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)) {
        Some(v) => v.parse().map_err(|_| anyhow::anyhow!("{name}: cannot parse {v:?}")),
        None => Ok(default),
    }
}

/// The month's readings query straight through tokio-postgres (no HTTP, no authentication), with
/// the same concurrency: the database's ceiling for `month_15min_json`.
async fn raw_sql(
    db_url: &str,
    meters: &[i32],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    clients: usize,
    seconds: f64,
) -> anyhow::Result<Run> {
    let pool_size = 16; // the head-end's default pool
    let mut conns = Vec::new();
    for _ in 0..pool_size {
        let (c, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        conns.push(Arc::new(tokio::sync::Mutex::new(c)));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let meters = Arc::new(meters.to_vec());
    let mut tasks = Vec::new();
    for k in 0..clients {
        let (conn, meters) = (conns[k % pool_size].clone(), meters.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let c = conn.lock().await;
                let rows = c
                    .query(
                        "SELECT channel_id, ts, value, flags FROM readings
                         WHERE meter_id = $1 AND channel_id = ANY($2) AND ts > $3 AND ts <= $4
                         ORDER BY channel_id, ts LIMIT 100001",
                        &[&meters[k % meters.len()], &vec![1i16], &from, &to],
                    )
                    .await?;
                drop(c);
                std::hint::black_box(rows.len());
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut run = Run::new("raw_sql_month_15min");
    for t in tasks {
        run.latencies.extend(t.await??);
    }
    run.seconds = start.elapsed().as_secs_f64();
    eprintln!("bench: raw_sql_month_15min: {}", run.json());
    Ok(run)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let meters: usize = arg("--meters", 2000)?;
    let days: i64 = arg("--days", 30)?;
    let clients: usize = arg("--clients", 200)?;
    let seconds: f64 = arg("--seconds", 15.0)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::Builder::new().prefix("hes-bench-portal-").tempdir()?;
    let broker = Broker::temporary()?;
    let db = rt.block_on(TestDatabase::create(&tests::pg::admin_url(), "bench_portal"))?;
    let env = [("DATABASE_URL", db.url.as_str())];
    procs::run_bin("headend", &["migrate"], &env)?;
    let inv = dir.path().join("inventory.csv").to_string_lossy().to_string();
    procs::run_bin("meter-sim", &["inventory", "--meters", &meters.to_string(), "--seed", "1", "--out", &inv], &[])?;
    procs::run_bin("headend", &["inventory", "import", &inv], &env)?;
    let spec = HeadendSpec {
        database_url: db.url.clone(),
        mqtt_url: broker.url(),
        client_id: "headend-bench-portal".into(),
        subscription: "meters/+/readings".into(),
        env: vec![
            ("HEADEND_INGEST__MAX_AGE".into(), "3650days".into()),
            ("HEADEND_AUTH__ATTEMPTS_PER_MINUTE".into(), "100000".into()),
            ("RUST_LOG".into(), "warn".into()),
        ],
    };
    let headend = Headend::start(&spec, &dir.path().join("headend.log"))?;

    // A whole local month: the previous calendar month of a fixed date, in full.
    let month_start = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).context("date")?;
    let tz = chrono_tz::Europe::Belgrade;
    let local_midnight = |d: chrono::NaiveDate| -> anyhow::Result<DateTime<Utc>> {
        Ok(d.and_hms_opt(0, 0, 0).context("time")?.and_local_timezone(tz).single().context("midnight")?.to_utc())
    };
    let from = local_midnight(month_start)?;
    let to = from + chrono::Duration::days(days);
    let month = format!("{:04}-{:02}", month_start.year(), month_start.month());
    eprintln!(
        "bench: storing {meters} meters × {days} days of 15-minute readings through the pipeline, a day at a time"
    );
    // A day at a time, each acknowledged before the next: a backlog of millions of messages makes
    // Mosquitto (one thread) too busy to answer the head-end's keep-alives.
    let t = Instant::now();
    let mut messages = 0.0;
    for d in 0..days {
        let (a, b) = (from + chrono::Duration::days(d), from + chrono::Duration::days(d + 1));
        let out = procs::run_bin(
            "meter-sim",
            &[
                "mqtt",
                "--meters",
                &meters.to_string(),
                "--seed",
                "1",
                "--from",
                &a.to_rfc3339(),
                "--to",
                &b.to_rfc3339(),
                "--url",
                &broker.url(),
                "--channels",
                "1.0.1.8.0,1.0.1.8.1,1.0.1.8.2,1.0.32.7.0",
                "--no-progress",
            ],
            &[],
        )?;
        let summary: serde_json::Value = serde_json::from_str(out.lines().last().context("no summary")?)?;
        messages += summary["messages"].as_f64().unwrap_or(0.0);
        let deadline = Instant::now() + Duration::from_secs(600);
        while procs::metric(&headend.metrics()?, "headend_mqtt_acks_total").unwrap_or(0.0) < messages {
            if Instant::now() > deadline {
                bail!("day {d} not stored within 10 minutes");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let fill_s = t.elapsed().as_secs_f64();
    let stored = procs::metric(&headend.metrics()?, "headend_readings_stored_total").unwrap_or(0.0);
    eprintln!("bench: {stored} readings stored in {fill_s:.0} s");

    // One household account and token per client, each for its own household.
    let households: Vec<(String, String, i32)> = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        c.batch_execute("VACUUM ANALYZE").await?;
        let rows = c
            .query(
                "SELECT h.code, m.serial, m.id FROM households h JOIN meters m ON m.household_id = h.id
                 ORDER BY h.id LIMIT $1",
                &[&(clients as i64)],
            )
            .await?;
        anyhow::Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    })?;
    eprintln!("bench: creating {} household accounts and tokens", households.len());
    let mut tokens = Vec::new();
    for (i, (code, _, _)) in households.iter().enumerate() {
        let user = format!("bench{i:04}");
        procs::create_account(&db.url, &user, "household", &[code], "bench-password-1")?;
        tokens.push(procs::api_token(&db.url, &user, "bench")?);
    }
    procs::create_account(&db.url, "bench-operator", "operator", &[], "bench-password-1")?;
    let op_token = procs::api_token(&db.url, "bench-operator", "bench")?;

    let base = format!("http://{}", headend.http);
    let targets = |f: &dyn Fn(&(String, String, i32)) -> String| -> Arc<Vec<(String, String)>> {
        Arc::new(households.iter().zip(&tokens).map(|(h, t)| (format!("{base}{}", f(h)), t.clone())).collect())
    };
    let (from_s, to_s) = (from.format("%Y-%m-%dT%H:%M:%SZ").to_string(), to.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    let result = rt.block_on(async {
        let http: Http = tests::httpload::client(clients);
        let closed = Duration::ZERO;
        let livez = load(&http, "livez", targets(&|_| "/livez".into()), clients, closed, for_seconds(seconds)).await?;
        let month_json = load(
            &http,
            "month_json",
            targets(&|h| format!("/api/v1/households/{}/consumption?resolution=day&date={month}", h.0)),
            clients,
            closed,
            for_seconds(seconds),
        )
        .await?;
        let month_page = load(
            &http,
            "month_page",
            targets(&|h| format!("/portal/usage?household={}&view=month&date={month}", h.0)),
            clients,
            closed,
            for_seconds(seconds),
        )
        .await?;
        let month_15 = load(
            &http,
            "month_15min_json",
            targets(&|h| format!("/api/v1/meters/{}/readings?from={from_s}&to={to_s}&obis=1.0.1.8.0", h.1)),
            clients,
            closed,
            for_seconds(seconds),
        )
        .await?;
        // One client alone (the service time), and 200 people who each wait 2 s between requests
        // (about 100 requests a second: a busy evening on the portal).
        let month_json_url =
            |h: &(String, String, i32)| format!("/api/v1/households/{}/consumption?resolution=day&date={month}", h.0);
        let month_page_url =
            |h: &(String, String, i32)| format!("/portal/usage?household={}&view=month&date={month}", h.0);
        let one = load(&http, "month_json_1_client", targets(&month_json_url), 1, closed, for_seconds(seconds)).await?;
        let think = Duration::from_secs(2);
        let json_paced =
            load(&http, "month_json_paced_2s", targets(&month_json_url), clients, think, for_seconds(seconds * 2.0))
                .await?;
        let page_paced =
            load(&http, "month_page_paced_2s", targets(&month_page_url), clients, think, for_seconds(seconds * 2.0))
                .await?;
        let ids: Vec<i32> = households.iter().map(|h| h.2).collect();
        let raw = raw_sql(&db.url, &ids, from, to, clients, seconds).await?;
        // The operator's first paint: the dashboard HTML and what it links, one client, 20 times.
        let mut paint = Run::new("ops_first_paint");
        let t0 = Instant::now();
        for _ in 0..20 {
            let t = Instant::now();
            for path in
                ["/ops", "/assets/app.css", "/assets/uPlot.min.css", "/assets/uPlot.iife.min.js", "/assets/app.js"]
            {
                let req = hyper::Request::get(format!("{base}{path}"))
                    .header("authorization", format!("Bearer {op_token}"))
                    .body(Empty::<Bytes>::new())?;
                let resp = http.request(req).await?;
                if !resp.status().is_success() {
                    paint.errors += 1;
                }
                resp.into_body().collect().await?;
            }
            paint.latencies.push(t.elapsed());
        }
        paint.seconds = t0.elapsed().as_secs_f64();
        anyhow::Ok([livez, month_json, month_page, month_15, raw, paint, one, json_paced, page_paced])
    })?;
    let rss = headend.proc.peak_rss_bytes().unwrap_or(0);
    let [livez, month_json, month_page, month_15, raw, paint, one, json_paced, page_paced] = &result;
    let ratio = |a: &Run, b: &Run| (a.latencies.len() as f64 / a.seconds) / (b.latencies.len() as f64 / b.seconds);
    let out = serde_json::json!({
        "meters": meters, "days": days, "clients": clients, "seconds_each": seconds,
        "readings_stored": stored, "fill_seconds": fill_s.round(),
        "livez": livez.json(), "month_json": month_json.json(), "month_page": month_page.json(),
        "month_15min_json": month_15.json(), "raw_sql_month_15min": raw.json(), "ops_first_paint": paint.json(),
        "month_json_1_client": one.json(), "month_json_paced_2s": json_paced.json(), "month_page_paced_2s": page_paced.json(),
        "ratio_month_json_to_livez_throughput": (ratio(month_json, livez) * 1000.0).round() / 1000.0,
        "ratio_month_15min_json_to_raw_sql_throughput": (ratio(month_15, raw) * 1000.0).round() / 1000.0,
        "headend_peak_rss_mb": (rss as f64 / 1048576.0).round(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    for r in &result {
        if r.errors > 0 {
            eprintln!("bench: {} had {} failed requests", r.name, r.errors);
        }
    }
    println!("reproduce: cargo xtask bench-portal -- --meters {meters} --days {days} --clients {clients} --seconds {seconds}");
    Ok(())
}
