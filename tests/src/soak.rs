//! Soak: a simulated fleet publishes hours of 15-minute readings, paced in simulated time
//! (`meter-sim mqtt --speed`), through a private Mosquitto into a head-end writing to a private
//! PostgreSQL cluster, while the broker is restarted, PostgreSQL crashes (`pg_ctl -m immediate`)
//! and the head-end is SIGKILLed at points drawn from a seed. Then every stored reading is compared
//! with the simulator's model — nothing missing, nothing extra, every value equal — and the
//! head-end's resident memory, sampled all along, shows whether it stays flat.
//!
//! `cargo xtask soak` runs it at the fleet's size (205k meters, 6 simulated hours at 10× speed) and
//! prints the report BENCHMARKS.md quotes; the end-to-end tests run a small fleet fast.
//!
//! Progress is read from `read_ledger` (the writer counts every newly stored 1.8.0 interval there
//! in the same transaction as the readings), so it is exact across restarts and lost replies, and
//! cheap to ask every second.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use meter_sim::{Model, Span};

use crate::broker::Broker;
use crate::pg::{PgCluster, TestDatabase};
use crate::procs::{self, Headend, HeadendSpec, Proc};

/// The channels the soak publishes: the three energy registers and the export register.
pub const CHANNELS: &str = "1.0.1.8.0,1.0.1.8.1,1.0.1.8.2,1.0.2.8.0";
const CHANNEL_COUNT: i64 = 4;
/// Simulated seconds per interval.
const INTERVAL_S: f64 = 900.0;

/// What is done to the system at a fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Mosquitto stopped (it saves its persistent sessions and queues) and started again.
    BrokerRestart,
    /// PostgreSQL stopped like a crash (`immediate`: no checkpoint, clients cut) and started again.
    DatabaseCrash,
    /// The head-end SIGKILLed and started again (the same persistent MQTT session).
    HeadendKill,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::BrokerRestart => "broker_restart",
            FaultKind::DatabaseCrash => "database_crash",
            FaultKind::HeadendKill => "headend_kill",
        }
    }
}

/// SplitMix64: a seeded sequence, so the same seed gives the same fault points.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Where in the run faults fall.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aim {
    /// Anywhere: most points fall between two intervals' bursts, when nothing is in flight.
    Anywhere,
    /// Moved to the start of the interval they fall in (interval k is published `k × interval_s`
    /// after the start) plus a random part of `window_s`: while that interval's messages are
    /// being received, written and acknowledged.
    Bursts { interval_s: f64, window_s: f64 },
}

/// The fault points of a run of `run_s` real seconds: `per_kind` of each kind in an order drawn
/// from `seed`, each at a random point in the first half of its own slot of the run's middle 80 %,
/// so two faults are at least half a slot apart and none falls on the first or last tenth; then
/// aimed (see [`Aim`]).
pub fn schedule(seed: u64, per_kind: u32, run_s: f64, aim: Aim) -> Vec<(f64, FaultKind)> {
    let mut rng = SplitMix(seed);
    let mut kinds = Vec::new();
    for _ in 0..per_kind {
        kinds.extend([FaultKind::BrokerRestart, FaultKind::DatabaseCrash, FaultKind::HeadendKill]);
    }
    for i in (1..kinds.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        kinds.swap(i, j);
    }
    let (lo, hi) = (0.1 * run_s, 0.9 * run_s);
    let slot = (hi - lo) / kinds.len().max(1) as f64;
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let at = lo + slot * i as f64 + rng.unit() * slot * 0.5;
            let at = match aim {
                Aim::Anywhere => at,
                Aim::Bursts { interval_s, window_s } => {
                    (at / interval_s).floor().max(1.0) * interval_s + rng.unit() * window_s
                }
            };
            (at, k)
        })
        .collect()
}

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub meters: usize,
    /// Start of the published span (exclusive), on a 15-minute boundary.
    pub from: DateTime<Utc>,
    /// Simulated hours published.
    pub hours: u32,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Seed of the fleet and its model.
    pub seed: u64,
    /// Seed of the fault points.
    pub fault_seed: u64,
    /// Faults of each kind (broker restart, database crash, head-end kill).
    pub faults_per_kind: u32,
    /// Aim the faults at the intervals' bursts: the first `window` of an interval.
    pub aim_window: Option<Duration>,
    /// How long the broker and the database stay down.
    pub outage: Duration,
    /// How often progress and memory are sampled.
    pub sample_every: Duration,
    /// Logs of the processes.
    pub dir: PathBuf,
    /// Further `HEADEND_…` settings of the head-end.
    pub headend_env: Vec<(String, String)>,
}

/// One look at the system.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the simulator started.
    pub t: f64,
    /// Meter-intervals stored (1.8.0 readings in `read_ledger`).
    pub intervals: i64,
    /// The head-end's resident memory (VmRSS), bytes.
    pub rss: u64,
    /// Which head-end process (1, then one more per kill).
    pub incarnation: u32,
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// Seconds since the simulator started.
    pub at: f64,
    /// Seconds until the system was back (the broker or database accepting connections, the new
    /// head-end ready).
    pub recovery: f64,
}

/// One head-end process's life, from its last metrics.
#[derive(Debug, Clone)]
pub struct Incarnation {
    pub peak_rss: u64,
    pub stored: f64,
    pub duplicates: f64,
    pub writer_errors: f64,
    pub mqtt_connection_errors: f64,
}

/// What a soak saw.
#[derive(Debug)]
pub struct Soak {
    pub meters: usize,
    pub intervals: usize,
    pub speed: f64,
    pub expected: i64,
    pub stored: i64,
    /// Readings equal to the model (all of them, or the run failed).
    pub verified: usize,
    pub dead_letters: Vec<(String, i64)>,
    pub faults: Vec<FaultRecord>,
    pub samples: Vec<Sample>,
    pub incarnations: Vec<Incarnation>,
    /// Seconds since the simulator started at which it published each interval's first message.
    pub published_at: Vec<f64>,
    /// The simulator's summary line.
    pub simulator: serde_json::Value,
    /// Seconds from the simulator's start to the last reading stored.
    pub elapsed: f64,
}

/// A database client that reconnects after the server went away.
struct Probe {
    url: String,
    client: Option<tokio_postgres::Client>,
}

impl Probe {
    async fn client(&mut self) -> anyhow::Result<&tokio_postgres::Client> {
        if self.client.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            let connect = tokio_postgres::connect(&self.url, tokio_postgres::NoTls);
            let (c, conn) =
                tokio::time::timeout(Duration::from_secs(2), connect).await.context("connect timeout")??;
            tokio::spawn(conn);
            self.client = Some(c);
        }
        self.client.as_ref().context("no client")
    }

    async fn i64(&mut self, sql: &str) -> anyhow::Result<i64> {
        let c = self.client().await?;
        match tokio::time::timeout(Duration::from_secs(30), c.query_one(sql, &[])).await {
            Ok(Ok(row)) => Ok(row.get::<_, Option<i64>>(0).unwrap_or(0)),
            Ok(Err(e)) => {
                self.client = None;
                Err(e.into())
            }
            Err(_) => {
                self.client = None;
                bail!("query timed out")
            }
        }
    }
}

fn incarnation(headend: &Headend, metrics: &str) -> Incarnation {
    Incarnation {
        peak_rss: headend.proc.peak_rss_bytes().unwrap_or(0),
        stored: procs::metric(metrics, "headend_readings_stored_total").unwrap_or(0.0),
        duplicates: procs::metric(metrics, "headend_readings_duplicate_total").unwrap_or(0.0),
        writer_errors: procs::metric_sum(metrics, "headend_writer_errors_total"),
        mqtt_connection_errors: procs::metric(metrics, "headend_mqtt_connection_errors_total").unwrap_or(0.0),
    }
}

/// Runs a soak to the end: every reading stored and checked, or an error saying what went wrong.
pub fn run(cfg: &SoakConfig) -> anyhow::Result<Soak> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut cluster = PgCluster::temporary()?;
    let db = rt.block_on(TestDatabase::create(&cluster.url("postgres"), "soak"))?;
    let mut broker = Broker::temporary()?;
    let env = [("DATABASE_URL", db.url.as_str()), ("HEADEND_DATABASE__TIMESCALE", "off")];
    procs::run_bin("headend", &["migrate"], &env)?;
    let inv = cfg.dir.join("inventory.csv").to_string_lossy().to_string();
    let (m, sd) = (cfg.meters.to_string(), cfg.seed.to_string());
    procs::run_bin("meter-sim", &["inventory", "--meters", &m, "--seed", &sd, "--out", &inv], &[])?;
    procs::run_bin("headend", &["inventory", "import", &inv], &env)?;

    let intervals = cfg.hours as usize * 4;
    let to = cfg.from + chrono::Duration::hours(i64::from(cfg.hours));
    let expected = (cfg.meters * intervals) as i64 * CHANNEL_COUNT;
    let mut spec_env = vec![
        ("HEADEND_INGEST__MAX_AGE".to_string(), "3650days".to_string()),
        ("HEADEND_DATABASE__TIMESCALE".to_string(), "off".to_string()),
    ];
    spec_env.extend(cfg.headend_env.iter().cloned());
    let spec = HeadendSpec {
        database_url: db.url.clone(),
        mqtt_url: broker.url(),
        client_id: "headend-soak".into(),
        subscription: "meters/+/readings".into(),
        env: spec_env,
    };
    let mut born = 1u32;
    let mut headend = Headend::start(&spec, &cfg.dir.join("headend-1.log"))?;

    let mut sim_cmd = Command::new(procs::bin("meter-sim")?);
    let (from_s, to_s) = (cfg.from.to_rfc3339(), to.to_rfc3339());
    sim_cmd.args(["mqtt", "--meters", &m, "--seed", &sd, "--from", &from_s, "--to", &to_s]);
    sim_cmd.args(["--channels", CHANNELS, "--url", &broker.url(), "--speed", &cfg.speed.to_string()]);
    // Outlive the outages: reconnect for a minute, wait long for acknowledgements.
    sim_cmd.args(["--connect-attempts", "20", "--ack-timeout", "300s", "--no-progress"]);
    let sim_log = cfg.dir.join("meter-sim.out");
    let start = Instant::now();
    let start_utc = Utc::now();
    let mut sim = Proc::spawn("meter-sim", sim_cmd, &sim_log)?;

    let run_s = f64::from(cfg.hours) * 3600.0 / cfg.speed;
    let aim = match cfg.aim_window {
        Some(w) => Aim::Bursts { interval_s: INTERVAL_S / cfg.speed, window_s: w.as_secs_f64() },
        None => Aim::Anywhere,
    };
    let mut plan = schedule(cfg.fault_seed, cfg.faults_per_kind, run_s, aim).into_iter().peekable();
    let mut probe = Probe { url: db.url.clone(), client: None };
    let ledger = "SELECT sum(received)::bigint FROM read_ledger";
    let mut samples: Vec<Sample> = Vec::new();
    let mut faults = Vec::new();
    let mut incarnations = Vec::new();
    let mut last_metrics = String::new();
    let mut sim_done: Option<Instant> = None;
    let want_intervals = (cfg.meters * intervals) as i64;
    loop {
        let t = start.elapsed().as_secs_f64();
        if let Ok(n) = rt.block_on(probe.i64(ledger)) {
            let rss = headend.proc.rss_bytes().unwrap_or(0);
            samples.push(Sample { t, intervals: n, rss, incarnation: born });
        }
        if let Ok(text) = headend.metrics() {
            last_metrics = text;
        }
        if plan.peek().is_some_and(|(at, _)| t >= *at) {
            let (_, kind) = plan.next().context("planned fault")?;
            eprintln!("soak: {} at {t:.1} s", kind.as_str());
            match kind {
                FaultKind::BrokerRestart => {
                    broker.stop()?;
                    std::thread::sleep(cfg.outage);
                    broker.start()?;
                }
                FaultKind::DatabaseCrash => {
                    cluster.stop("immediate")?;
                    std::thread::sleep(cfg.outage);
                    cluster.start()?;
                }
                FaultKind::HeadendKill => {
                    incarnations.push(incarnation(&headend, &last_metrics));
                    headend.proc.kill()?;
                    born += 1;
                    headend = Headend::start(&spec, &cfg.dir.join(format!("headend-{born}.log")))?;
                }
            }
            faults.push(FaultRecord { kind, at: t, recovery: start.elapsed().as_secs_f64() - t });
        }
        if sim_done.is_none() && !sim.is_running() {
            let status = sim.wait(Duration::from_secs(5))?;
            if !status.success() {
                bail!("the simulator failed ({status}): {}", sim.log_tail(3000));
            }
            sim_done = Some(Instant::now());
        }
        if let Some(done) = sim_done {
            if samples.last().is_some_and(|s| s.intervals >= want_intervals) {
                break;
            }
            if done.elapsed() > Duration::from_secs(600) {
                let got = samples.last().map_or(0, |s| s.intervals);
                bail!("{got} of {want_intervals} meter-intervals stored 10 minutes after the simulator ended");
            }
        }
        std::thread::sleep(cfg.sample_every);
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Ok(text) = headend.metrics() {
        last_metrics = text;
    }
    incarnations.push(incarnation(&headend, &last_metrics));
    drop(headend);

    let text = std::fs::read_to_string(&sim_log)?;
    let line = text.lines().rev().find(|l| l.starts_with('{')).context("the simulator printed no summary")?;
    let simulator: serde_json::Value = serde_json::from_str(line)?;
    let first: DateTime<Utc> =
        simulator["first_publish"].as_str().context("summary lacks first_publish")?.parse().context("first_publish")?;
    let first_s = (first - start_utc).num_milliseconds() as f64 / 1000.0;
    let published_at = (0..intervals).map(|k| first_s + k as f64 * INTERVAL_S / cfg.speed).collect();

    let stored = rt.block_on(probe.i64("SELECT count(*) FROM readings"))?;
    let dead_letters = rt.block_on(async {
        let c = probe.client().await?;
        let rows = c.query("SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY 1", &[]).await?;
        anyhow::Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect::<Vec<_>>())
    })?;
    let verified = rt.block_on(verify(&mut probe, cfg, Span { from: cfg.from, to }))?;
    Ok(Soak {
        meters: cfg.meters,
        intervals,
        speed: cfg.speed,
        expected,
        stored,
        verified,
        dead_letters,
        faults,
        samples,
        incarnations,
        published_at,
        simulator,
        elapsed,
    })
}

/// Compares every stored reading with the model, a chunk of meters at a time (memory stays small
/// at 205k meters): same keys, same values, nothing more. Returns how many readings matched.
async fn verify(probe: &mut Probe, cfg: &SoakConfig, span: Span) -> anyhow::Result<usize> {
    let model = Model::with_meters(cfg.seed, cfg.meters);
    let codes: Vec<schemas::ObisCode> = CHANNELS.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let chans = crate::model::channels(&codes)?;
    let c = probe.client().await?;
    let meters: Vec<(i32, String)> =
        c.query("SELECT id, serial FROM meters ORDER BY id", &[]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut matched = 0usize;
    let (mut wrong, mut missing, mut extra) = (0usize, 0usize, 0usize);
    let mut first_problem: Option<String> = None;
    for chunk in meters.chunks(500) {
        let ids: Vec<i32> = chunk.iter().map(|(id, _)| *id).collect();
        let rows = c
            .query(
                "SELECT meter_id, channel_id, ts, value FROM readings WHERE meter_id = ANY($1)
                 ORDER BY meter_id, channel_id, ts",
                &[&ids],
            )
            .await?;
        let mut rows = rows.iter().peekable();
        for (id, serial) in chunk {
            let mut want = crate::model::meter_rows(&model, serial, span, &chans)?;
            want.sort_by_key(|(ch, ts, _)| (*ch, *ts));
            let mut got = Vec::new();
            while let Some(r) = rows.next_if(|r| r.get::<_, i32>(0) == *id) {
                got.push((r.get::<_, i16>(1), r.get::<_, DateTime<Utc>>(2), r.get::<_, i64>(3)));
            }
            let (mut w, mut g) = (want.iter().peekable(), got.iter().peekable());
            loop {
                let order = match (w.peek(), g.peek()) {
                    (None, None) => break,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some(a), Some(b)) => (a.0, a.1).cmp(&(b.0, b.1)),
                };
                match order {
                    std::cmp::Ordering::Equal => {
                        let (a, b) = (w.next().context("model row")?, g.next().context("stored row")?);
                        if a.2 == b.2 {
                            matched += 1;
                        } else {
                            wrong += 1;
                            first_problem
                                .get_or_insert(format!("{serial} ch {} {}: {} ≠ model {}", a.0, a.1, b.2, a.2));
                        }
                    }
                    std::cmp::Ordering::Less => {
                        let a = w.next().context("model row")?;
                        missing += 1;
                        first_problem.get_or_insert(format!("{serial} ch {} {} missing", a.0, a.1));
                    }
                    std::cmp::Ordering::Greater => {
                        let b = g.next().context("stored row")?;
                        extra += 1;
                        first_problem.get_or_insert(format!("{serial} ch {} {} not in the model", b.0, b.1));
                    }
                }
            }
        }
    }
    if wrong + missing + extra > 0 {
        bail!("{wrong} wrong, {missing} missing, {extra} not in the model (first: {first_problem:?})");
    }
    Ok(matched)
}

impl Soak {
    /// Seconds from each interval's first publish until all its meters' readings were stored
    /// (`None`: never seen complete). Intervals complete in order: the simulator publishes interval
    /// k+1 only after interval k, so the ledger passing k × meters means interval k is in.
    pub fn lags(&self) -> Vec<Option<f64>> {
        (0..self.intervals)
            .map(|k| {
                let need = ((k + 1) * self.meters) as i64;
                let done = self.samples.iter().find(|s| s.intervals >= need)?;
                Some(done.t - self.published_at[k])
            })
            .collect()
    }

    /// The interval (0-based) being published at `t` seconds.
    fn interval_at(&self, t: f64) -> usize {
        self.published_at.iter().rposition(|p| *p <= t).unwrap_or(0)
    }

    /// The report: faults, per-interval commit lag, memory per simulated hour, each head-end
    /// process, the check against the model.
    pub fn report(&self) -> serde_json::Value {
        let lags = self.lags();
        // A fault touches the intervals published from its start to its recovery, and the next one
        // (the backlog drains into it).
        let touched: Vec<std::ops::RangeInclusive<usize>> = self
            .faults
            .iter()
            .map(|f| self.interval_at(f.at)..=(self.interval_at(f.at + f.recovery) + 1).min(self.intervals - 1))
            .collect();
        let worst = |r: &std::ops::RangeInclusive<usize>| {
            r.clone().filter_map(|k| lags[k]).fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))))
        };
        let clean: Vec<f64> = lags
            .iter()
            .enumerate()
            .filter(|(k, _)| !touched.iter().any(|r| r.contains(k)))
            .filter_map(|(_, l)| *l)
            .collect();
        let mut sorted = clean.clone();
        sorted.sort_by(f64::total_cmp);
        let q = |p: f64| sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied();
        let mb = |b: u64| (b as f64 / 1_048_576.0 * 10.0).round() / 10.0;
        let hours: Vec<serde_json::Value> = (0..self.intervals.div_ceil(4))
            .map(|h| {
                let from = self.published_at[h * 4];
                let to = self.published_at.get(h * 4 + 4).copied().unwrap_or(f64::INFINITY);
                let inside: Vec<&Sample> = self.samples.iter().filter(|s| s.t >= from && s.t < to).collect();
                let max = inside.iter().map(|s| s.rss).max().unwrap_or(0);
                // Just before the next hour's first burst: what the process keeps between bursts.
                let settled = inside.last().map_or(0, |s| s.rss);
                let procs: Vec<u32> = {
                    let mut v: Vec<u32> = inside.iter().map(|s| s.incarnation).collect();
                    v.dedup();
                    v
                };
                serde_json::json!({"hour": h + 1, "rss_max_mb": mb(max), "rss_settled_mb": mb(settled),
                    "headend_processes": procs})
            })
            .collect();
        serde_json::json!({
            "meters": self.meters,
            "intervals": self.intervals,
            "speed": self.speed,
            "readings_expected": self.expected,
            "readings_stored": self.stored,
            "readings_equal_to_model": self.verified,
            "dead_letters": self.dead_letters.iter().map(|(r, n)| serde_json::json!({"reason": r, "count": n})).collect::<Vec<_>>(),
            "elapsed_s": (self.elapsed * 10.0).round() / 10.0,
            "faults": self.faults.iter().zip(&touched).map(|(f, r)| serde_json::json!({
                "kind": f.kind.as_str(), "at_s": (f.at * 10.0).round() / 10.0,
                "intervals_touched": [r.start() + 1, r.end() + 1], "recovery_s": (f.recovery * 10.0).round() / 10.0,
                "worst_lag_s": worst(r).map(|l| (l * 10.0).round() / 10.0)})).collect::<Vec<_>>(),
            "lag_s_intervals_untouched": {"count": clean.len(), "p50": q(0.5).map(|l| (l * 100.0).round() / 100.0),
                "max": q(1.0).map(|l| (l * 100.0).round() / 100.0)},
            "lag_s_per_interval": lags.iter().map(|l| l.map(|l| (l * 10.0).round() / 10.0)).collect::<Vec<_>>(),
            "rss_per_simulated_hour": hours,
            "headend_processes": self.incarnations.iter().map(|i| serde_json::json!({
                "peak_rss_mb": mb(i.peak_rss), "readings_stored": i.stored, "duplicates_ignored": i.duplicates,
                "writer_errors": i.writer_errors, "mqtt_connection_errors": i.mqtt_connection_errors})).collect::<Vec<_>>(),
            "simulator": self.simulator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_fault_points_spread_over_the_run() {
        let a = schedule(7, 2, 2160.0, Aim::Anywhere);
        assert_eq!(a, schedule(7, 2, 2160.0, Aim::Anywhere));
        assert_ne!(a, schedule(8, 2, 2160.0, Aim::Anywhere));
        assert_eq!(a.len(), 6);
        for kind in [FaultKind::BrokerRestart, FaultKind::DatabaseCrash, FaultKind::HeadendKill] {
            assert_eq!(a.iter().filter(|(_, k)| *k == kind).count(), 2, "{a:?}");
        }
        // Six slots of 288 s between 216 s and 1944 s: each fault in the first half of its own.
        let slot = 0.8 * 2160.0 / 6.0;
        for (i, (at, _)) in a.iter().enumerate() {
            let lo = 216.0 + slot * i as f64;
            assert!(*at >= lo && *at < lo + slot / 2.0, "fault {i} at {at}: {a:?}");
        }
        assert!(a.windows(2).all(|w| w[1].0 - w[0].0 >= slot / 2.0), "{a:?}");
        assert!(schedule(7, 0, 100.0, Aim::Anywhere).is_empty());
    }

    #[test]
    fn aimed_faults_fall_at_the_start_of_an_interval() {
        let aim = Aim::Bursts { interval_s: 90.0, window_s: 9.0 };
        let a = schedule(3, 2, 2160.0, aim);
        assert_eq!(a.len(), 6);
        for (at, _) in &a {
            let into = at % 90.0;
            assert!(*at >= 90.0 && into < 9.0, "{at} is {into} s into its interval: {a:?}");
        }
        assert!(a.windows(2).all(|w| w[1].0 > w[0].0), "in order, apart: {a:?}");
    }
}
