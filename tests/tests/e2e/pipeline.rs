//! A whole pipeline for one test: private broker, a fresh database (on the shared server or a
//! private cluster), schema, the simulator's inventory, head-end processes, the simulator, and the
//! check of every stored reading against the simulator's model.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use schemas::migrations::Storage;
use schemas::ObisCode;
use tests::broker::Broker;
use tests::pg::{PgCluster, TestDatabase};
use tests::procs::{self, Headend, HeadendSpec, Proc};

/// The channels the simulator publishes by default.
pub const CHANNELS: &str = "1.0.1.8.0,1.0.1.8.1,1.0.1.8.2,1.0.2.8.0,1.0.32.7.0";

pub struct Pipeline {
    pub rt: tokio::runtime::Runtime,
    /// Logs of the head-ends and the simulator; kept (and named on stderr) when a test fails.
    pub dir: tempfile::TempDir,
    pub broker: Broker,
    pub cluster: Option<PgCluster>,
    pub db: TestDatabase,
    pub spec: HeadendSpec,
    pub meters: usize,
    pub seed: u64,
    /// The storage path the database was migrated with (`database.timescale` = off or on).
    pub storage: Storage,
    headends: usize,
    /// An API token of the operator account `e2e-operator`, made after migration.
    pub token: String,
}

/// A stored reading as the tests look at it.
pub struct Stored {
    pub serial: String,
    pub address: String,
    pub channel: i16,
    pub ts: DateTime<Utc>,
    pub value: i64,
    pub flags: i16,
}

pub fn ts(s: &str) -> DateTime<Utc> {
    s.parse().expect("RFC 3339 time")
}

/// `database.timescale` for a storage path: plain pipelines say `off` explicitly, so a server that
/// preloads TimescaleDB still tests the plain path.
pub fn timescale_setting(storage: Storage) -> &'static str {
    match storage {
        Storage::Plain => "off",
        Storage::Timescale => "on",
    }
}

/// The server a pipeline's database is made on.
enum Server {
    /// The shared server of `DATABASE_URL`.
    Shared,
    /// A private cluster the test may stop and start.
    Private,
    /// The test command's TimescaleDB cluster (`TIMESCALE_DATABASE_URL`, started when missing).
    Timescale,
}

impl Pipeline {
    /// Everything up to a migrated database holding the simulator's inventory of `meters` meters
    /// (plain PostgreSQL).
    pub fn new(tag: &str, meters: usize, seed: u64, private_cluster: bool) -> anyhow::Result<Pipeline> {
        Self::with_inventory(tag, meters, seed, private_cluster, &["--protocol", "mqtt"], |csv| csv)
    }

    /// [`Pipeline::new`] on a storage path: plain on the shared server, TimescaleDB on the test
    /// command's TimescaleDB cluster.
    pub fn on(storage: Storage, tag: &str, meters: usize, seed: u64) -> anyhow::Result<Pipeline> {
        Self::with_inventory_on(storage, tag, meters, seed, &["--protocol", "mqtt"], |csv| csv)
    }

    /// [`Pipeline::new`] with further `meter-sim inventory` arguments and a rewrite of the CSV
    /// before import (e.g. the simulator's port in DLMS addresses).
    pub fn with_inventory(
        tag: &str,
        meters: usize,
        seed: u64,
        private_cluster: bool,
        inventory_args: &[&str],
        rewrite: impl FnOnce(String) -> String,
    ) -> anyhow::Result<Pipeline> {
        let server = if private_cluster { Server::Private } else { Server::Shared };
        Self::build(server, tag, meters, seed, inventory_args, rewrite)
    }

    /// [`Pipeline::with_inventory`] on a storage path (see [`Pipeline::on`]).
    pub fn with_inventory_on(
        storage: Storage,
        tag: &str,
        meters: usize,
        seed: u64,
        inventory_args: &[&str],
        rewrite: impl FnOnce(String) -> String,
    ) -> anyhow::Result<Pipeline> {
        let server = match storage {
            Storage::Plain => Server::Shared,
            Storage::Timescale => Server::Timescale,
        };
        Self::build(server, tag, meters, seed, inventory_args, rewrite)
    }

    fn build(
        server: Server,
        tag: &str,
        meters: usize,
        seed: u64,
        inventory_args: &[&str],
        rewrite: impl FnOnce(String) -> String,
    ) -> anyhow::Result<Pipeline> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let dir = tempfile::Builder::new().prefix(&format!("hes-e2e-{tag}-")).tempdir()?;
        let broker = Broker::temporary()?;
        let (cluster, admin, storage) = match server {
            Server::Shared => (None, tests::pg::admin_url(), Storage::Plain),
            Server::Private => {
                let c = PgCluster::temporary()?;
                let url = c.url("postgres");
                (Some(c), url, Storage::Plain)
            }
            Server::Timescale => {
                if std::env::var_os("TIMESCALE_DATABASE_URL").is_none() {
                    tests::timescale::ensure_cluster()?;
                }
                (None, tests::timescale::admin_url(), Storage::Timescale)
            }
        };
        let db = rt.block_on(TestDatabase::create(&admin, tag))?;
        let timescale = timescale_setting(storage);
        let env = [("DATABASE_URL", db.url.as_str()), ("HEADEND_DATABASE__TIMESCALE", timescale)];
        let report = procs::run_bin("headend", &["migrate"], &env)?;
        let report: serde_json::Value = serde_json::from_str(report.trim()).context("migrate report")?;
        if report["storage"] != storage.as_str() {
            bail!("migrated for {} storage, wanted {}: {report}", report["storage"], storage.as_str());
        }
        let inv = dir.path().join("inventory.csv");
        let inv_s = inv.to_string_lossy().to_string();
        let (m, sd) = (meters.to_string(), seed.to_string());
        let mut args = vec!["inventory", "--meters", &m, "--seed", &sd, "--out", &inv_s];
        args.extend_from_slice(inventory_args);
        procs::run_bin("meter-sim", &args, &[])?;
        let csv = std::fs::read_to_string(&inv)?;
        std::fs::write(&inv, rewrite(csv))?;
        procs::run_bin("headend", &["inventory", "import", &inv_s], &env)?;
        let token = procs::operator_token(&db.url)?;
        let spec = HeadendSpec {
            database_url: db.url.clone(),
            mqtt_url: broker.url(),
            client_id: format!("headend-{tag}"),
            subscription: "meters/+/readings".into(),
            env: vec![
                // The tests publish fixed past days (a DST change included).
                ("HEADEND_INGEST__MAX_AGE".into(), "3650days".into()),
                ("HEADEND_WRITER__MAX_WAIT".into(), "100ms".into()),
                ("HEADEND_DATABASE__TIMESCALE".into(), timescale.into()),
            ],
        };
        Ok(Pipeline { rt, dir, broker, cluster, db, spec, meters, seed, storage, headends: 0, token })
    }

    /// Starts a head-end (the same persistent MQTT session every time) and waits until ready.
    pub fn start_headend(&mut self) -> anyhow::Result<Headend> {
        self.headends += 1;
        let log = self.dir.path().join(format!("headend-{}.log", self.headends));
        Headend::start(&self.spec, &log)
    }

    fn sim_args(&self, from: &str, to: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "mqtt",
            "--meters",
            &self.meters.to_string(),
            "--seed",
            &self.seed.to_string(),
            "--from",
            from,
            "--to",
            to,
            "--url",
            &self.broker.url(),
            "--channels",
            CHANNELS,
            "--no-progress",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Runs the simulator to the end (every message acknowledged by the broker); its summary.
    pub fn publish(&self, from: &str, to: &str, extra: &[&str]) -> anyhow::Result<serde_json::Value> {
        let args = self.sim_args(from, to, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = procs::run_bin("meter-sim", &args, &[])?;
        let last = out.lines().last().context("simulator printed no summary")?;
        Ok(serde_json::from_str(last)?)
    }

    /// Starts the simulator in the background; [`Pipeline::summary_of`] reads its summary later.
    pub fn spawn_publisher(&self, from: &str, to: &str, extra: &[&str]) -> anyhow::Result<(Proc, PathBuf)> {
        let mut cmd = Command::new(procs::bin("meter-sim")?);
        cmd.args(self.sim_args(from, to, extra));
        let log = self.dir.path().join("meter-sim.out");
        Ok((Proc::spawn("meter-sim", cmd, &log)?, log))
    }

    pub fn summary_of(log: &PathBuf) -> anyhow::Result<serde_json::Value> {
        let text = std::fs::read_to_string(log)?;
        let line = text.lines().rev().find(|l| l.starts_with('{')).context("no summary line")?;
        Ok(serde_json::from_str(line)?)
    }

    pub fn query_i64(&self, sql: &str) -> anyhow::Result<i64> {
        self.rt.block_on(async {
            let c = self.db.client().await?;
            Ok(c.query_one(sql, &[]).await?.get::<_, i64>(0))
        })
    }

    /// Waits until `readings` holds `n` rows (and no more arrive), for at most `limit`.
    pub fn wait_for_readings(&self, n: i64, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = -1;
        while start.elapsed() < limit {
            match self.query_i64("SELECT count(*) FROM readings") {
                Ok(count) if count == n => return Ok(()),
                Ok(count) if count > n => bail!("{count} readings stored, more than the {n} published"),
                Ok(count) => last = count,
                Err(_) => {} // the database may be restarting
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("{last} of {n} readings stored after {limit:?}; dead letters: {:?}", self.dead_letters())
    }

    /// Every stored reading with its meter's serial and address.
    pub fn stored(&self) -> anyhow::Result<Vec<Stored>> {
        self.rt.block_on(async {
            let c = self.db.client().await?;
            let rows = c
                .query(
                    "SELECT m.serial, COALESCE(m.address, ''), r.channel_id, r.ts, r.value, r.flags
                     FROM readings r JOIN meters m ON m.id = r.meter_id",
                    &[],
                )
                .await?;
            anyhow::Ok(
                rows.iter()
                    .map(|r| Stored {
                        serial: r.get(0),
                        address: r.get(1),
                        channel: r.get(2),
                        ts: r.get(3),
                        value: r.get(4),
                        flags: r.get(5),
                    })
                    .collect(),
            )
        })
    }

    /// Compares every stored reading with the model: same keys, same values, nothing more.
    pub fn verify(&self, from: &str, to: &str) -> anyhow::Result<usize> {
        let channels: Vec<ObisCode> = CHANNELS.split(',').map(|c| c.parse()).collect::<Result<_, _>>()?;
        let expected = crate::model::expected_rows(self.seed, self.meters, ts(from), ts(to), &channels)?;
        let stored: Vec<crate::model::Row> =
            self.stored()?.into_iter().map(|r| (r.serial, r.channel, r.ts, r.value)).collect();
        let mut want: HashMap<(String, i16, DateTime<Utc>), i64> = HashMap::with_capacity(expected.len());
        for (serial, ch, t, v) in expected {
            want.insert((serial, ch, t), v);
        }
        let n = want.len();
        let mut wrong = Vec::new();
        let mut extra = 0usize;
        for (serial, ch, t, v) in stored {
            match want.remove(&(serial.clone(), ch, t)) {
                Some(w) if w == v => {}
                Some(w) => wrong.push(format!("{serial} channel {ch} at {t}: stored {v}, model {w}")),
                None => extra += 1,
            }
        }
        if !wrong.is_empty() || extra > 0 || !want.is_empty() {
            let missing: Vec<String> = want.keys().take(5).map(|k| format!("{k:?}")).collect();
            bail!(
                "{} wrong values (first: {:?}), {extra} readings not in the model, {} missing (first: {missing:?})",
                wrong.len(),
                wrong.first(),
                want.len()
            );
        }
        Ok(n)
    }

    /// Dead letters by reason.
    pub fn dead_letters(&self) -> anyhow::Result<HashMap<String, i64>> {
        self.rt.block_on(async {
            let c = self.db.client().await?;
            let rows = c.query("SELECT reason, count(*) FROM dead_letters GROUP BY reason", &[]).await?;
            anyhow::Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect())
        })
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = std::mem::replace(&mut self.dir, tempfile::TempDir::new().expect("temp dir")).keep();
            eprintln!("test failed: logs kept in {}", kept.display());
        }
    }
}

/// Waits for the polling round that brings the head-end to `sessions` sessions in all (retries
/// between sessions off) and returns how many sessions of that round failed (`group`'s gauge).
pub fn wait_round(headend: &Headend, group: &str, sessions: usize) -> usize {
    let start = Instant::now();
    let failed =
        |m: &str| procs::metric_labelled(m, "headend_poll_round_meters", &[("group", group), ("result", "failed")]);
    loop {
        let m = headend.metrics().expect("metrics");
        let done = procs::metric_sum(&m, "headend_poll_sessions_total") as usize;
        let in_flight = procs::metric(&m, "headend_poll_sessions_in_flight").unwrap_or(1.0);
        if done >= sessions && in_flight == 0.0 && failed(&m).is_some() {
            assert_eq!(done, sessions, "sessions run (retries are off)");
            // The gauges are set when the round ends, just after the last session.
            std::thread::sleep(Duration::from_millis(300));
            let m = headend.metrics().expect("metrics");
            return failed(&m).expect("round gauge") as usize;
        }
        assert!(start.elapsed() < Duration::from_secs(240), "round not finished: {done} of {sessions} sessions");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts a polling round now through the operator API (`POST /api/v1/collect/rounds`).
pub fn start_round(headend: &Headend, token: &str) {
    let auth = format!("Bearer {token}");
    let (status, body) =
        procs::http_post(headend.http, "/api/v1/collect/rounds", &[("Authorization", &auth)], "").expect("POST rounds");
    assert_eq!(status, 202, "{body}");
}
