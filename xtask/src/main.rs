//! Project automation in Rust (`cargo xtask …`, alias in .cargo/config.toml):
//!
//! - `demo`: the whole pipeline on defaults — PostgreSQL and a broker (found or started, installed
//!   when missing), schema, a simulated inventory, the head-end, the simulator publishing a day of
//!   readings — then prints where to look.
//! - `test`: the one command that runs every check: formatting, clippy, and all tests (unit and
//!   end-to-end) against a real PostgreSQL and a real Mosquitto. `.ci/run` calls it.
//! - `bench-ingest`: the MQTT → PostgreSQL benchmark (see BENCHMARKS.md).
//! - `bench-dlms`: a DLMS polling round over the simulated fleet against the raw loopback TCP
//!   ceiling and the gurux-dlms client (see BENCHMARKS.md).
//! - `bench-portal`: 200 concurrent households on a month of readings (see BENCHMARKS.md).
//! - `bench-storage`: bytes per reading, plain PostgreSQL against TimescaleDB compressed (see
//!   BENCHMARKS.md).
//! - `soak`: 205k meters for 6 simulated hours at 10× through broker restarts, PostgreSQL crashes
//!   and head-end kills at seeded points, checked against the model (see BENCHMARKS.md).
//! - `fuzz`: runs the cargo-fuzz targets for a while.
//! - `chart`: renders, lints and validates the Helm chart (`helm/ci/run.sh`; also a step of `test`).

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tests::procs::{self, Headend, HeadendSpec};
use tests::services::Services;

#[derive(Parser)]
#[command(about = "Automation for the smart-meter head-end")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the pipeline on defaults and print where to look (Ctrl-C stops it).
    Demo {
        /// Simulated meters (buildings of 20-150 flats, one master meter each).
        #[arg(long, default_value_t = 2000)]
        meters: usize,
        /// Hours of 15-minute readings to publish, ending now.
        #[arg(long, default_value_t = 24)]
        hours: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// HTTP address of the head-end.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Stop once everything is stored instead of serving until Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
    /// Run every check: rustfmt, clippy, unit and end-to-end tests on real services.
    Test {
        /// Skip rustfmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Seconds each fuzz target runs after the tests (0: none).
        #[arg(long, default_value_t = 10)]
        fuzz_seconds: u64,
        /// Arguments passed on to the test runner (e.g. a filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmark MQTT → head-end → PostgreSQL against raw COPY and raw broker throughput.
    BenchIngest {
        #[arg(long, default_value_t = 205_000)]
        meters: usize,
        /// Extra arguments for the benchmark binary.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmark a DLMS polling round (simulator + head-end + PostgreSQL) against the raw loopback
    /// TCP ceiling and the gurux-dlms Python client.
    BenchDlms {
        #[arg(long, default_value_t = 205_000)]
        meters: usize,
        /// low (LLS password), gmac (HLS-GMAC, suite 0) or both.
        #[arg(long, default_value = "both", value_parser = ["low", "gmac", "both"])]
        auth: String,
        /// Extra arguments for the benchmark binary (--sample, --max-sessions, --per-second).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmark the household portal and the operator dashboard: 200 concurrent households on a
    /// month of readings, against /livez and the raw SQL in the same run.
    BenchPortal {
        /// Extra arguments for the benchmark binary (--meters, --days, --clients, --seconds).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Bytes per reading on the same data (2,000 meters × 30 days × 15 minutes × 4 channels by
    /// default): plain PostgreSQL against TimescaleDB compressed, and the raw data.
    BenchStorage {
        /// Extra arguments for the benchmark binary (--meters, --days, --seed).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Soak: a fleet publishing simulated hours (paced) while the broker restarts, PostgreSQL
    /// crashes and the head-end is killed at seeded points; every reading checked against the
    /// model, memory sampled throughout.
    Soak {
        /// Extra arguments for the soak binary (--meters, --hours, --speed, --seed, --fault-seed,
        /// --faults-per-kind, --outage-s, --sample-ms).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Render, lint and validate the Helm chart helm/headend (helm/ci/run.sh, Python venv cached
    /// outside the checkout).
    Chart,
    /// Run each fuzz target (cargo-fuzz) for a while.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Demo { meters, hours, seed, listen, exit } => demo(meters, hours, seed, &listen, exit),
        Cmd::Test { no_lint, fuzz_seconds, args } => test(no_lint, fuzz_seconds, &args),
        Cmd::BenchIngest { meters, args } => bench_ingest(meters, &args),
        Cmd::BenchDlms { meters, auth, args } => bench_dlms(meters, &auth, &args),
        Cmd::BenchPortal { args } => bench_portal(&args),
        Cmd::BenchStorage { args } => bench_storage(&args),
        Cmd::Soak { args } => soak(&args),
        Cmd::Fuzz { seconds } => fuzz(seconds),
        Cmd::Chart => chart_check(),
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn step(what: &str, mut cmd: Command) -> anyhow::Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd.current_dir(tests::repo_root()).status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn has_nextest() -> bool {
    cargo().args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success())
}

fn test(no_lint: bool, fuzz_seconds: u64, args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let services = Services::ensure(1883)?;
    for s in &services.started {
        eprintln!("xtask: started {s}");
    }
    eprintln!("xtask: PostgreSQL {} · MQTT {}", services.admin_url, services.mqtt_url);
    // The browser tests drive Debian's headless Chromium through chromedriver.
    tests::browser::ensure_installed()?;
    // The TimescaleDB storage path: the extension built from ../shared/vendor into this machine's
    // PostgreSQL once (cached in /var/cache/headend), and a cluster of our own that preloads it.
    if let Some(took) = tests::timescale::ensure_installed()? {
        eprintln!(
            "xtask: TimescaleDB {} built and installed in {:.0} s",
            tests::timescale::VERSION,
            took.as_secs_f64()
        );
    }
    let (timescale_url, ts_started) = tests::timescale::ensure_cluster()?;
    if ts_started {
        eprintln!("xtask: started the TimescaleDB cluster on port {} (left running)", tests::timescale::PORT);
    }
    eprintln!("xtask: TimescaleDB {timescale_url}");
    if !no_lint {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--check"]);
        step("cargo fmt --check", fmt)?;
        let mut clippy = cargo();
        clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
        step("cargo clippy", clippy)?;
    }
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    step("cargo build --bins (the end-to-end tests run the binaries)", build)?;
    chart_check()?;
    let mut t = cargo();
    if has_nextest() {
        t.args(["nextest", "run", "--workspace", "--no-fail-fast"]).args(args);
    } else {
        // Without nextest's test groups, one test at a time: the end-to-end tests each run a
        // broker, a head-end and a simulator on a 2-core machine.
        t.args(["test", "--workspace", "--no-fail-fast"]).args(args).args(["--", "--test-threads=1"]);
    }
    t.env("DATABASE_URL", &services.admin_url)
        .env("TIMESCALE_DATABASE_URL", &timescale_url)
        .env("MQTT_URL", &services.mqtt_url);
    step("tests", t)?;
    if fuzz_seconds > 0 {
        fuzz(fuzz_seconds)?;
    }
    eprintln!("xtask: all checks passed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn floor_15min(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    let s = t.timestamp();
    chrono::DateTime::from_timestamp(s - s.rem_euclid(900), 0).unwrap_or(t)
}

/// Meters of the demo inventory that never report (the operator's "not reporting" list).
const DEMO_SILENT: usize = 25;
/// Meters (the first building or two) whose last `DEMO_HISTORY_DAYS` are published, so that the
/// household portal has a whole billed month and the month so far.
const DEMO_HISTORY_METERS: usize = 120;
const DEMO_HISTORY_DAYS: i64 = 45;

/// Creates (or, when it exists, resets the password of) a demo account through the CLI.
fn demo_account(
    env: &[(&str, &str)],
    username: &str,
    role: &str,
    household: Option<&str>,
    password: &str,
) -> anyhow::Result<()> {
    let run = |args: &[&str]| headend_with_input(env, args, password);
    let mut args = vec!["account", "create", "--username", username, "--role", role, "--password-stdin"];
    if let Some(h) = household {
        args.extend(["--household", h]);
    }
    let out = run(&args)?;
    if out.status.success() {
        return Ok(());
    }
    // An earlier demo made it: give it this run's password.
    let out = run(&["account", "password", "--username", username])?;
    if !out.status.success() {
        bail!("demo account {username}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Runs `headend ARGS` with `input` and a newline on standard input (a password, never an
/// argument); its output.
fn headend_with_input(env: &[(&str, &str)], args: &[&str], input: &str) -> anyhow::Result<std::process::Output> {
    use std::io::Write;
    let mut cmd = Command::new(procs::bin("headend")?);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    child.stdin.take().context("stdin")?.write_all(format!("{input}\n").as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// A readable random password for the demo logins (printed once, on this machine only).
fn demo_password() -> String {
    let mut b = [0u8; 9];
    if getrandom::fill(&mut b).is_err() {
        b = [7; 9];
    }
    format!("demo-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// The demo's broker with per-meter logins (`headend mqtt-users`).
struct DemoBroker {
    _broker: tests::broker::Broker,
    /// Without credentials: the simulator derives each meter's from the secret.
    broker_url: String,
    /// With the head-end's reader login.
    headend_url: String,
    secret: std::path::PathBuf,
    users: std::path::PathBuf,
}

/// A site secret (made once, kept in `.data`), the broker's users and ACL from the imported
/// inventory, a private Mosquitto that applies them.
fn demo_broker(data: &std::path::Path, env: &[(&str, &str)]) -> anyhow::Result<DemoBroker> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let secret = data.join("demo-mqtt-site-secret");
    if !secret.exists() {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&secret)?;
        writeln!(f, "{}", demo_password())?;
    }
    let users = data.join("demo-broker-users");
    let reader = demo_password();
    let (secret_s, users_s) = (secret.to_string_lossy().to_string(), users.to_string_lossy().to_string());
    let out = headend_with_input(env, &["mqtt-users", "--secret-file", &secret_s, "--out", &users_s], &reader)?;
    if !out.status.success() {
        bail!("headend mqtt-users: {}", String::from_utf8_lossy(&out.stderr));
    }
    let broker = tests::broker::Broker::temporary_with_auth(&tests::broker::BrokerAuth {
        password_file: users.join("passwd"),
        acl_file: users.join("acl"),
    })?;
    let broker_url = broker.url();
    let headend_url = broker_url.replacen("mqtt://", &format!("mqtt://headend:{reader}@"), 1);
    eprintln!("xtask: broker {broker_url} with per-meter logins (users and ACL in {})", users.display());
    Ok(DemoBroker { _broker: broker, broker_url, headend_url, secret, users })
}

fn demo(meters: usize, hours: u32, seed: u64, listen: &str, exit: bool) -> anyhow::Result<()> {
    let data = tests::repo_root().join(".data");
    std::fs::create_dir_all(&data)?;
    let mut build = cargo();
    build.args(["build", "-p", "headend", "-p", "meter-sim", "-p", "billing", "--bins"]);
    step("building headend, meter-sim and billing", build)?;
    // A broker with the project's configuration unless MQTT_URL names one: a stock Mosquitto drops
    // QoS 1 messages queued beyond 1000 for a consumer that acknowledges after commit.
    let services = Services::ensure(18830)?;
    for s in &services.started {
        eprintln!("xtask: started {s}");
    }
    let db_url = tests::pg::with_database(&services.admin_url, "headend_demo")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&services.admin_url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let exists = c.query_opt("SELECT 1 FROM pg_database WHERE datname = 'headend_demo'", &[]).await?.is_some();
        if !exists {
            c.batch_execute("CREATE DATABASE headend_demo").await?;
        }
        anyhow::Ok(())
    })?;
    let env = [("DATABASE_URL", db_url.as_str()), ("MQTT_URL", services.mqtt_url.as_str())];
    eprintln!("xtask: migrating {db_url}");
    let report = procs::run_bin("headend", &["migrate"], &env)?;
    eprintln!("xtask: {}", report.trim());
    // The inventory holds DEMO_SILENT more meters than publish: they are the ones not reporting.
    let inventory = data.join("demo-inventory.csv");
    let inv = inventory.to_string_lossy().to_string();
    let in_inventory = (meters + DEMO_SILENT).to_string();
    procs::run_bin(
        "meter-sim",
        &["inventory", "--meters", &in_inventory, "--seed", &seed.to_string(), "--out", &inv],
        &env,
    )?;
    let report = procs::run_bin("headend", &["inventory", "import", &inv], &env)?;
    eprintln!("xtask: inventory import: {}", report.trim());

    // Meters log in to the broker as themselves, as in production (unless MQTT_URL names a broker).
    let secured = match std::env::var_os("MQTT_URL") {
        None if meters + DEMO_SILENT <= 5000 => Some(demo_broker(&data, &env)?),
        _ => None,
    };
    let headend_mqtt = secured.as_ref().map_or(services.mqtt_url.clone(), |b| b.headend_url.clone());
    let http: std::net::SocketAddr = listen.parse().context("--listen")?;
    let spec = HeadendSpec {
        database_url: db_url.clone(),
        mqtt_url: headend_mqtt,
        client_id: "headend-demo".into(),
        subscription: "meters/+/readings".into(),
        env: vec![("HEADEND_HTTP__LISTEN".into(), http.to_string())],
    };
    let log = data.join("headend-demo.log");
    let mut headend = Headend::start_at(&spec, &log, http)?;
    eprintln!("xtask: head-end serving on http://{http} (log: {})", log.display());

    let to = floor_15min(chrono::Utc::now());
    let from = to - chrono::Duration::hours(i64::from(hours));
    let history_from = to - chrono::Duration::days(DEMO_HISTORY_DAYS);
    let mut published = 0.0;
    let history_meters = DEMO_HISTORY_METERS.min(meters);
    eprintln!(
        "xtask: simulating {history_meters} meters for the last {DEMO_HISTORY_DAYS} days (the household portal's history), \
         then {meters} meters from {} to {} (with 1% duplicates and a few bad messages); {DEMO_SILENT} meters stay silent",
        from.to_rfc3339(),
        to.to_rfc3339()
    );
    for (n, span_from, faults) in [(history_meters, history_from, false), (meters, from, true)] {
        let (n_s, seed_s, from_s, to_s) = (n.to_string(), seed.to_string(), span_from.to_rfc3339(), to.to_rfc3339());
        let mut args =
            vec!["mqtt", "--meters", &n_s, "--seed", &seed_s, "--from", &from_s, "--to", &to_s, "--no-progress"];
        if faults {
            args.extend(["--duplicates", "0.01", "--malformed", "0.001"]);
        }
        let secret;
        let sim_env: Vec<(&str, &str)> = match &secured {
            Some(b) => {
                secret = b.secret.to_string_lossy().to_string();
                args.extend(["--per-meter-connections", "--password-secret", &secret]);
                vec![("MQTT_URL", b.broker_url.as_str())]
            }
            // Without per-meter logins a publisher may also speak for meters not in the inventory.
            None => {
                if faults {
                    args.extend(["--unknown-meters", "0.001"]);
                }
                env.to_vec()
            }
        };
        let summary = procs::run_bin("meter-sim", &args, &sim_env)?;
        let summary: serde_json::Value = serde_json::from_str(summary.trim()).context("simulator summary")?;
        eprintln!("xtask: simulator: {summary}");
        published += summary["messages"].as_f64().unwrap_or(0.0);
    }
    let start = Instant::now();
    loop {
        let m = headend.metrics()?;
        let acked = procs::metric(&m, "headend_mqtt_acks_total").unwrap_or(0.0);
        if acked >= published {
            break;
        }
        if start.elapsed() > Duration::from_secs(900) {
            bail!("the head-end acknowledged {acked} of {published} messages in 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = headend.metrics()?;
    let stored = procs::metric(&m, "headend_readings_stored_total").unwrap_or(0.0);
    let dup = procs::metric(&m, "headend_readings_duplicate_total").unwrap_or(0.0);

    // Last month's bills for the first building (its meters have the whole month).
    let local = to.with_timezone(&chrono_tz::Europe::Belgrade);
    let this_month =
        chrono::NaiveDate::from_ymd_opt(chrono::Datelike::year(&local), chrono::Datelike::month(&local), 1)
            .context("month")?;
    let last_month = this_month.pred_opt().context("month")?.format("%Y-%m").to_string();
    match procs::run_bin("billing", &["run", "--period", &last_month, "--building", "B000001"], &env) {
        Ok(_) => eprintln!("xtask: billed {last_month} for building B000001"),
        Err(e) => eprintln!("xtask: billing {last_month} failed (the portal shows no bill): {e:#}"),
    }

    // Logins that work: a household of the first building and an operator; passwords made now.
    let household = "H00000002";
    let (hh_pw, op_pw, admin_pw) = (demo_password(), demo_password(), demo_password());
    demo_account(&env, "household", "household", Some(household), &hh_pw)?;
    demo_account(&env, "operator", "operator", None, &op_pw)?;
    demo_account(&env, "admin", "admin", None, &admin_pw)?;
    let invite = procs::run_bin("headend", &["account", "invite", "--household", "H00000003"], &env)?;
    let invite: serde_json::Value = serde_json::from_str(invite.trim()).context("invite")?;
    let sample = "SIM00000002";
    println!(
        "\nDemo ready: {published} messages published, {stored} readings stored, {dup} duplicates ignored.\n\
         \n  household portal  http://{http}/login   user household  password {hh_pw}   (household {household}, meter {sample})\n  \
         operator          http://{http}/login   user operator   password {op_pw}\n  \
         admin             http://{http}/login   user admin      password {admin_pw}\n  \
         activation        http://{http}/activate   code {}   (a new household account for H00000003)\n  \
         API               http://{http}/api/openapi.json   (tokens: headend account token --username operator --name NAME)\n  \
         broker            {}\n  \
         metrics           http://{http}/metrics\n  \
         database          psql {db_url}   (tables readings, dead_letters, meters, bills; view readings_decoded)\n  \
         head-end log      {}\n",
        invite["activation_code"].as_str().unwrap_or("?"),
        secured.as_ref().map_or(format!("{} (no per-meter logins)", services.mqtt_url), |b| format!(
            "{} — each meter logs in as its serial (password from the site secret {}), \
             anonymous clients refused, users and ACL in {}",
            b.broker_url,
            b.secret.display(),
            b.users.display()
        )),
        log.display()
    );
    if exit {
        headend.proc.signal("TERM")?;
        headend.proc.wait(Duration::from_secs(60))?;
        return Ok(());
    }
    println!("Press Ctrl-C to stop.");
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if !headend.proc.is_running() {
            bail!("the head-end stopped; see {}", log.display());
        }
    }
}

fn bench_ingest(meters: usize, args: &[String]) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "headend", "-p", "meter-sim", "--bins"]);
    step("building release binaries", build)?;
    let services = Services::ensure(1883)?;
    let mut bench = cargo();
    bench
        .args(["bench", "-p", "tests", "--bench", "ingest", "--"])
        .arg("--meters")
        .arg(meters.to_string())
        .args(args)
        .env("DATABASE_URL", &services.admin_url);
    step("ingest benchmark", bench)
}

fn bench_dlms(meters: usize, auth: &str, args: &[String]) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "headend", "-p", "meter-sim", "--bins"]);
    step("building release binaries", build)?;
    let services = Services::ensure(1883)?;
    let mut bench = cargo();
    bench
        .args(["bench", "-p", "tests", "--bench", "dlms_round", "--"])
        .args(["--meters", &meters.to_string(), "--auth", auth])
        .args(args)
        .env("DATABASE_URL", &services.admin_url);
    step("DLMS polling benchmark", bench)
}

fn bench_portal(args: &[String]) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "headend", "-p", "meter-sim", "--bins"]);
    step("building release binaries", build)?;
    let services = Services::ensure(1883)?;
    let mut bench = cargo();
    bench.args(["bench", "-p", "tests", "--bench", "portal", "--"]).args(args).env("DATABASE_URL", &services.admin_url);
    step("portal benchmark", bench)
}

fn soak(args: &[String]) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "headend", "-p", "meter-sim", "--bins"]);
    step("building release binaries", build)?;
    // PostgreSQL's server binaries and Mosquitto (installed when missing); the soak runs its own.
    Services::ensure(1883)?;
    let mut soak = cargo();
    soak.args(["bench", "-p", "tests", "--bench", "soak", "--"]).args(args);
    step("soak", soak)
}

fn bench_storage(args: &[String]) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "headend", "--bins"]);
    step("building release binaries", build)?;
    let services = Services::ensure(1883)?;
    // The TimescaleDB side: the extension built into this PostgreSQL and the test command's cluster.
    tests::timescale::ensure_installed()?;
    let (timescale_url, _) = tests::timescale::ensure_cluster()?;
    let mut bench = cargo();
    bench
        .args(["bench", "-p", "tests", "--bench", "storage", "--"])
        .args(args)
        .env("DATABASE_URL", &services.admin_url)
        .env("TIMESCALE_DATABASE_URL", &timescale_url);
    step("storage benchmark", bench)
}

/// The Helm chart: lint, render for every values file, validate each manifest against the
/// Kubernetes and CRD schemas, and load each role's configuration with the built `headend` (found
/// in target/ by the script) — `helm/ci/check_chart.py` through `helm/ci/run.sh`, which installs
/// helm-python-sdk and kubernetes-validate into a venv cached outside the checkout when missing.
fn chart_check() -> anyhow::Result<()> {
    let mut cmd = Command::new("bash");
    cmd.arg("helm/ci/run.sh");
    step("helm chart check (helm/ci/run.sh)", cmd)
}

/// Runs every fuzz target for `seconds` (libFuzzer through cargo-fuzz, installed when missing).
/// The instrumented build goes to a cache outside the checkout (`$HEADEND_CACHE_DIR/fuzz-target`,
/// like the TimescaleDB build) so a fresh clone rebuilds only the project's crates, and each run
/// starts from a fixed seed and the corpus kept there, so a finding can be reproduced.
fn fuzz(seconds: u64) -> anyhow::Result<()> {
    let root = tests::repo_root();
    if !cargo().args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success()) {
        let mut install = cargo();
        install.args(["install", "cargo-fuzz", "--locked"]);
        step("installing cargo-fuzz", install)?;
    }
    let cache = tests::timescale::cache_dir();
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| cache.join("fuzz-target"), std::path::PathBuf::from);
    let mut targets = std::fs::read_dir(root.join("fuzz/fuzz_targets"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().to_string()))
        .collect::<Vec<_>>();
    targets.sort();
    for t in targets {
        let corpus = cache.join("fuzz-corpus").join(&t);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let mut run = cargo();
        // cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
        run.env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", &target_dir)
            .args(["fuzz", "run", &t])
            .arg(&corpus)
            .args(["--", &format!("-max_total_time={seconds}"), "-seed=1"]);
        step(&format!("fuzzing {t} for {seconds} s"), run)?;
    }
    Ok(())
}
