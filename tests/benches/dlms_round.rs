//! DLMS polling benchmark (not a timed test): one full polling round of N simulated meters — the
//! simulator (`meter-sim dlms`, one process), the release head-end and PostgreSQL all on this box —
//! compared in the same run with the physical limit and with an independent client:
//!
//! - the raw loopback TCP ceiling: a tokio client and server in this process (2 worker threads),
//!   one connection per session to a distinct 127.x.y.z, as many request/response exchanges per
//!   session as the DLMS session made (counted by the simulator), close;
//! - the head-end's round: per meter connect, associate (LLS password, or HLS-GMAC with suite-0
//!   ciphering), one GET with-list (clock, 4 registers, on first contact their scaler_units and the
//!   profile's capture objects), the load profile from the last hour (4 intervals), the event log,
//!   release; the round time is the head-end's own `headend_poll_round_duration_seconds`;
//! - the gurux-dlms Python client reading a sample of the same meters, one session after another.
//!
//! Run: `cargo xtask bench-dlms` (builds the release binaries, finds PostgreSQL). Options after
//! `--`: `--meters N` (205000), `--auth both|low|gmac` (both), `--sample N` gurux sessions (300,
//! 0 = none), `--max-sessions N` (head-end collect.max_sessions and the raw client's concurrency,
//! 2000), `--per-second N` (collect.new_connections_per_second, 0 = unlimited), `--raw-concurrency
//! N` (raw connections at once, default max-sessions up to 4000: both ends count as open files).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tests::broker::Broker;
use tests::pg::TestDatabase;
use tests::procs::{self, Headend, HeadendSpec, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sizes of the raw exchanges: a DLMS request over the wrapper is 20–90 bytes, a reply 20–250.
const RAW_REQUEST: usize = 64;
const RAW_REPLY: usize = 160;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn num(name: &str, default: usize) -> anyhow::Result<usize> {
    arg(name).map_or(Ok(default), |v| v.parse().with_context(|| format!("{name} {v}")))
}

/// `q`-quantile of a labelled Prometheus histogram: (interpolated inside its bucket, bucket bound).
fn histogram_quantile(metrics: &str, name: &str, q: f64) -> Option<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, rest.rsplit_once(' ')?.1.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some((lower.0, le));
            }
            let inside = if count > lower.1 { (rank - lower.1) / (count - lower.1) } else { 1.0 };
            return Some((lower.0 + (le - lower.0) * inside, le));
        }
        lower = (le, count);
    }
    None
}

/// `name{labels} value` lines of a counter family, by the value of `label`.
fn by_label(metrics: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let v = rest.split(&format!("{label}=\"")).nth(1)?.split('"').next()?.to_string();
            Some((v, rest.rsplit_once(' ')?.1.trim().parse().ok()?))
        })
        .collect()
}

/// CPU seconds (user + system) a process has used so far, from /proc (ticks of 1/100 s).
fn cpu_secs(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok()) else { return 0.0 };
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// CPU seconds of the PostgreSQL backends now serving database `db` (the server is shared with
/// other work; its background writers and backends that exited meanwhile are not counted).
fn postgres_cpu_secs(db: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    let needle = format!(" {db} ");
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with("postgres:") && c.contains(&needle))
        })
        .map(|pid| cpu_secs(Some(pid)))
        .sum()
}

/// CPU seconds (busy, all cores) of the whole machine so far, from /proc/stat.
fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else { return 0.0 };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal …: busy = all but idle and iowait.
    let busy: f64 = v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum();
    busy / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The raw ceiling: `sessions` connections, each to its own 127.x.y.z, `exchanges` request/reply
/// pairs each, at most `concurrency` at once; client and server in this process. Sessions/s.
async fn raw_ceiling(sessions: usize, exchanges: usize, concurrency: usize) -> anyhow::Result<(f64, usize)> {
    // The kernel's largest accept queue (net.core.somaxconn): tokio's default of 1024 overflows
    // when thousands of connections open at once, and a dropped SYN costs a 1 s retransmit.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(([0, 0, 0, 0], 0).into())?;
    let listener = socket.listen(4096)?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let mut req = [0u8; RAW_REQUEST];
                let reply = [0x5Au8; RAW_REPLY];
                while sock.read_exact(&mut req).await.is_ok() {
                    if sock.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let failed = Arc::new(AtomicUsize::new(0));
    let window = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0..sessions {
        let permit = window.clone().acquire_owned().await?;
        let failed = failed.clone();
        set.spawn(async move {
            let addr = std::net::SocketAddr::from((meter_sim::fleet::loopback_address(i), port));
            let r = async {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                let req = [0xA5u8; RAW_REQUEST];
                let mut reply = [0u8; RAW_REPLY];
                for _ in 0..exchanges {
                    s.write_all(&req).await?;
                    s.read_exact(&mut reply).await?;
                }
                std::io::Result::Ok(())
            }
            .await;
            if r.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
    let secs = start.elapsed().as_secs_f64();
    server.abort();
    let failed = failed.load(Ordering::Relaxed);
    Ok(((sessions - failed) as f64 / secs, failed))
}

struct Fleet {
    meters: usize,
    port: u16,
    inventory: String,
    keys: String,
    max_sessions: usize,
    per_second: usize,
    sample: usize,
    python: Option<String>,
}

fn gurux(fleet: &Fleet, auth: &str) -> anyhow::Result<serde_json::Value> {
    let Some(py) = &fleet.python else { return Ok(serde_json::Value::Null) };
    let script = tests::repo_root().join("tests/benches/peers/gurux_round.py");
    let out = Command::new(py)
        .arg(script)
        .args(["--port", &fleet.port.to_string(), "--keys", &fleet.keys, "--meters", &fleet.meters.to_string()])
        .args(["--sample", &fleet.sample.to_string(), "--auth", auth])
        .output()
        .context("running the gurux client")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| {
        format!("gurux client output {line:?} ({}): {}", out.status, String::from_utf8_lossy(&out.stderr))
    })
}

/// One head-end round over the whole fleet with `auth`, on a fresh database and a fresh simulator.
fn head_end_round(
    rt: &tokio::runtime::Runtime,
    fleet: &Fleet,
    broker: &Broker,
    dir: &Path,
    auth: &str,
) -> anyhow::Result<serde_json::Value> {
    let db = rt.block_on(TestDatabase::create(&tests::pg::admin_url(), &format!("bench_dlms_{auth}")))?;
    let env = [("DATABASE_URL", db.url.as_str())];
    procs::run_bin("headend", &["migrate"], &env)?;
    procs::run_bin("headend", &["inventory", "import", &fleet.inventory], &env)?;

    let sim_log = dir.join(format!("meter-sim-{auth}.log"));
    let mut sim_cmd = Command::new(procs::bin("meter-sim")?);
    sim_cmd.args(["dlms", "--meters", &fleet.meters.to_string(), "--seed", "1", "--port", &fleet.port.to_string()]);
    sim_cmd.args(["--history", "1h", "--no-progress"]);
    let mut sim = Proc::spawn("meter-sim", sim_cmd, &sim_log)?;
    tests::wait_for_port(([127, 0, 0, 1], fleet.port).into(), Duration::from_secs(30))?;

    let cfg = dir.join(format!("headend-{auth}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"
[collect]
enabled = true
retries = 0
max_sessions = {max}
max_sessions_per_cell = {max}
new_connections_per_second = {rate}
# The simulator keeps one hour of load profile: a first round reads the last 4 intervals.
backfill_max = "1h"
clock_threshold = "30s"

[[collect.groups]]
name = "dlms"
protocol = "dlms"
profile_every = "15m"
registers_every = "1day"
events_every = "1day"
clock_every = "1day"
offset = "0s"

[dlms]
client = 1
auth = "{auth}"
keys_file = {keys:?}
connect_timeout = "10s"
step_timeout = "10s"
"#,
            max = fleet.max_sessions,
            rate = fleet.per_second,
            keys = fleet.keys,
        ),
    )?;
    let spec = HeadendSpec {
        database_url: db.url.clone(),
        mqtt_url: broker.url(),
        client_id: format!("headend-bench-dlms-{auth}"),
        subscription: "meters/+/readings".into(),
        env: vec![
            ("HEADEND_CONFIG".into(), cfg.to_string_lossy().into()),
            ("HEADEND_INGEST__MAX_AGE".into(), "3650days".into()),
            ("RUST_LOG".into(), "warn".into()),
        ],
    };
    eprintln!("bench: head-end round over {} meters, auth {auth}", fleet.meters);
    let t0 = Instant::now();
    let (sim_cpu0, machine_cpu0, pg_cpu0) = (cpu_secs(sim.pid()), machine_cpu_secs(), postgres_cpu_secs(&db.name));
    let headend = Headend::start(&spec, &dir.join(format!("headend-{auth}.log")))?;
    let ready_s = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(1200);
    let mut last_sessions = 0.0;
    let mut sessions_done_s = 0.0;
    let metrics = loop {
        let m = headend.metrics()?;
        let sessions = procs::metric_sum(&m, "headend_poll_sessions_total");
        if sessions > last_sessions {
            last_sessions = sessions;
            sessions_done_s = t0.elapsed().as_secs_f64();
        }
        if procs::metric_labelled(&m, "headend_poll_round_duration_seconds", &[("group", "dlms")]).is_some() {
            break m;
        }
        if Instant::now() > deadline {
            bail!("the round did not end within 20 minutes: {sessions} sessions");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let round_s = procs::metric_labelled(&metrics, "headend_poll_round_duration_seconds", &[("group", "dlms")])
        .context("round duration")?;
    let ok = procs::metric_labelled(&metrics, "headend_poll_round_meters", &[("group", "dlms"), ("result", "ok")])
        .unwrap_or(0.0);
    let outcomes = by_label(&metrics, "headend_poll_sessions_total", "outcome");
    let p50 = histogram_quantile(&metrics, "headend_poll_session_duration_seconds", 0.50);
    let p99 = histogram_quantile(&metrics, "headend_poll_session_duration_seconds", 0.99);
    // Everything read is stored: wait until the committed count stops growing.
    let mut stored = -1.0;
    let mut stored_at = t0.elapsed().as_secs_f64();
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_millis(1500) && Instant::now() < deadline {
        let s = procs::metric(&headend.metrics()?, "headend_readings_stored_total").unwrap_or(0.0);
        if s > stored {
            stored = s;
            stored_at = t0.elapsed().as_secs_f64();
            still = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = t0.elapsed().as_secs_f64();
    let headend_cpu = cpu_secs(headend.proc.pid());
    let sim_cpu = cpu_secs(sim.pid()) - sim_cpu0;
    let machine_cpu = machine_cpu_secs() - machine_cpu0;
    let pg_cpu = postgres_cpu_secs(&db.name) - pg_cpu0;
    let headend_rss = headend.proc.peak_rss_bytes().unwrap_or(0);
    let sim_rss = sim.peak_rss_bytes().unwrap_or(0);
    drop(headend);

    let gurux = if fleet.sample > 0 {
        eprintln!("bench: gurux-dlms client, {} sessions, auth {auth}", fleet.sample);
        gurux(fleet, auth)?
    } else {
        serde_json::Value::Null
    };
    sim.signal("TERM")?;
    sim.wait(Duration::from_secs(60))?;
    let summary = std::fs::read_to_string(&sim_log)?
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .context("simulator summary")?;
    let sim_sessions = summary["sessions"].as_f64().unwrap_or(0.0);
    let requests = summary["requests"].as_f64().unwrap_or(0.0);
    // The probe of the listening port is one session without requests; gurux's sessions count too.
    let gurux_ok = gurux["ok"].as_f64().unwrap_or(0.0);
    let gurux_exchanges = if auth == "gmac" { 6.0 } else { 5.0 };
    let headend_requests = requests - gurux_ok * gurux_exchanges;
    let exchanges = headend_requests / last_sessions.max(1.0);
    let mb = |b: u64| (b as f64 / 1048576.0).round();
    Ok(serde_json::json!({
        "auth": auth,
        "meters": fleet.meters,
        "sessions": last_sessions,
        "ok": ok,
        "outcomes": outcomes,
        "round_s": round3(round_s),
        "sessions_per_s": (ok / round_s).round(),
        "session_p50_s": p50.map(|p| round3(p.0)),
        "session_p50_bucket_le": p50.map(|p| p.1),
        "session_p99_s": p99.map(|p| round3(p.0)),
        "session_p99_bucket_le": p99.map(|p| p.1),
        "headend_start_to_ready_s": round3(ready_s),
        "headend_start_to_last_session_s": round3(sessions_done_s),
        "headend_start_to_last_commit_s": round3(stored_at),
        "readings_stored": stored,
        "cpu_s_headend": round3(headend_cpu),
        "cpu_s_simulator": round3(sim_cpu),
        "cpu_s_postgres": round3(pg_cpu),
        "cpu_s_machine": round3(machine_cpu),
        "cpu_wall_s": round3(wall),
        "headend_peak_rss_mb": mb(headend_rss),
        "simulator_peak_rss_mb": mb(sim_rss),
        "simulator_sessions": sim_sessions,
        "simulator_protocol_errors": summary["protocol_errors"],
        "exchanges_per_session": round3(exchanges),
        "gurux": gurux,
    }))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` also runs benches with `--bench` when asked for tests only; be quiet then.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let meters = num("--meters", 205_000)?;
    let auths: Vec<&str> = match arg("--auth").as_deref() {
        None | Some("both") => vec!["low", "gmac"],
        Some("low") => vec!["low"],
        Some("gmac") => vec!["gmac"],
        Some(other) => bail!("--auth {other}: low, gmac or both"),
    };
    let sample = num("--sample", 300)?;
    let max_sessions = num("--max-sessions", 2000)?;
    let per_second = num("--per-second", 0)?;
    // Both ends of each raw connection are in this process: keep 2 × concurrency well below the
    // open-file limit (20,000 on the project's machine).
    let raw_concurrency = num("--raw-concurrency", max_sessions.min(4000))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::Builder::new().prefix("hes-bench-dlms-").tempdir()?;
    // HES_BENCH_KEEP=1 keeps the logs and configuration for a look afterwards.
    let kept = std::env::var_os("HES_BENCH_KEEP").is_some().then(|| dir.path().to_path_buf());
    let broker = Broker::temporary()?;
    let port = tests::free_port()?;
    let inventory = dir.path().join("inventory.csv").to_string_lossy().to_string();
    let m = meters.to_string();
    procs::run_bin(
        "meter-sim",
        &["inventory", "--meters", &m, "--seed", "1", "--protocol", "dlms", "--out", &inventory],
        &[],
    )?;
    let csv = std::fs::read_to_string(&inventory)?;
    std::fs::write(&inventory, csv.replace(":4059,", &format!(":{port},")))?;
    let keys = dir.path().join("keys.csv").to_string_lossy().to_string();
    std::fs::write(&keys, procs::run_bin("meter-sim", &["keys", "--meters", &m, "--seed", "1"], &[])?)?;
    let python = if sample > 0 {
        let out = Command::new("bash").arg(tests::repo_root().join("scripts/python-peers.sh")).output()?;
        if !out.status.success() {
            bail!("scripts/python-peers.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Some(String::from_utf8(out.stdout)?.trim().to_string())
    } else {
        None
    };
    let fleet = Fleet { meters, port, inventory, keys, max_sessions, per_second, sample, python };

    let mut results = Vec::new();
    for auth in &auths {
        let mut r = head_end_round(&rt, &fleet, &broker, dir.path(), auth)?;
        let exchanges = r["exchanges_per_session"].as_f64().unwrap_or(5.0).round().max(1.0) as usize;
        eprintln!("bench: raw loopback TCP ceiling, {meters} sessions × {exchanges} exchanges");
        let (raw, raw_failed) = rt.block_on(raw_ceiling(meters, exchanges, raw_concurrency))?;
        let rate = r["sessions_per_s"].as_f64().unwrap_or(0.0);
        let gurux_rate = r["gurux"]["sessions_per_s"].as_f64();
        r["raw_exchanges"] = exchanges.into();
        r["raw_sessions_per_s"] = raw.round().into();
        r["raw_failed"] = raw_failed.into();
        r["ratio_to_raw"] = ((rate / raw * 100.0).round() / 100.0).into();
        r["ratio_to_gurux"] = gurux_rate.map(|g| (rate / g * 10.0).round() / 10.0).into();
        eprintln!("bench: {}", serde_json::to_string(&r)?);
        results.push(r);
    }
    let result = serde_json::json!({
        "meters": meters,
        "max_sessions": max_sessions,
        "raw_concurrency": raw_concurrency,
        "new_connections_per_second": per_second,
        "rounds": results,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    for r in &results {
        println!(
            "{}: {} meters in {} s = {} sessions/s = {} × raw loopback ({} sessions/s, {} exchanges) = {} × gurux ({} sessions/s); p50/p99 {}/{} s; head-end peak RSS {} MB",
            r["auth"], meters, r["round_s"], r["sessions_per_s"], r["ratio_to_raw"], r["raw_sessions_per_s"],
            r["raw_exchanges"], r["ratio_to_gurux"], r["gurux"]["sessions_per_s"], r["session_p50_s"],
            r["session_p99_s"], r["headend_peak_rss_mb"]
        );
    }
    let auth = arg("--auth").unwrap_or_else(|| "both".into());
    if let Some(path) = kept {
        std::mem::forget(dir);
        eprintln!("bench: logs kept in {}", path.display());
    }
    println!(
        "reproduce: cargo xtask bench-dlms --meters {meters} --auth {auth} -- --sample {sample} --max-sessions {max_sessions} --per-second {per_second}"
    );
    Ok(())
}
