//! Soak (a benchmark binary, not a timed test): N meters publish H simulated hours of 15-minute
//! readings at S× speed through Mosquitto → head-end → PostgreSQL, while the broker restarts,
//! PostgreSQL crashes and the head-end is SIGKILLed at points drawn from a seed; then every stored
//! reading is compared with the simulator's model and the head-end's memory per simulated hour is
//! reported (`tests::soak`).
//!
//! Run: `cargo xtask soak` (release binaries; 205,000 meters, 6 hours at 10×: 36 minutes of
//! publishing). Options after `--`: `--meters N`, `--hours H`, `--speed S`, `--seed N`,
//! `--fault-seed N`, `--faults-per-kind N` (2), `--outage-s N` (5), `--sample-ms N` (1000),
//! `--aim-window-s W` (faults moved into the first W seconds of an interval, its burst; default
//! anywhere).

use std::time::Duration;

use anyhow::Context;
use tests::soak::{self, SoakConfig};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)) {
        Some(v) => v.parse().map_err(|_| anyhow::anyhow!("{name}: cannot parse {v:?}")),
        None => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` also runs benches with `--bench` when asked for tests only; be quiet then.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let dir = tempfile::Builder::new().prefix("hes-soak-").tempdir()?;
    let cfg = SoakConfig {
        meters: arg("--meters", 205_000)?,
        from: "2026-11-20T00:00:00Z".parse().context("from")?,
        hours: arg("--hours", 6)?,
        speed: arg("--speed", 10.0)?,
        seed: arg("--seed", 1)?,
        fault_seed: arg("--fault-seed", 1)?,
        faults_per_kind: arg("--faults-per-kind", 2)?,
        aim_window: match arg("--aim-window-s", 0.0)? {
            w if w > 0.0 => Some(Duration::from_secs_f64(w)),
            _ => None,
        },
        outage: Duration::from_secs(arg("--outage-s", 5)?),
        sample_every: Duration::from_millis(arg("--sample-ms", 1000)?),
        dir: dir.path().to_path_buf(),
        headend_env: vec![("RUST_LOG".into(), "warn".into())],
    };
    eprintln!(
        "soak: {} meters × {} simulated hours at {}× ({:.0} s of publishing), {} fault(s) of each kind",
        cfg.meters,
        cfg.hours,
        cfg.speed,
        f64::from(cfg.hours) * 3600.0 / cfg.speed,
        cfg.faults_per_kind
    );
    let outcome = soak::run(&cfg);
    let result = match outcome {
        Ok(s) => s,
        Err(e) => {
            let kept = dir.keep();
            anyhow::bail!("{e:#}\nlogs kept in {}", kept.display());
        }
    };
    println!("{}", serde_json::to_string_pretty(&result.report())?);
    println!(
        "reproduce: cargo xtask soak -- --meters {} --hours {} --speed {} --seed {} --fault-seed {} --faults-per-kind {}{}",
        cfg.meters,
        cfg.hours,
        cfg.speed,
        cfg.seed,
        cfg.fault_seed,
        cfg.faults_per_kind,
        cfg.aim_window.map_or(String::new(), |w| format!(" --aim-window-s {}", w.as_secs_f64()))
    );
    Ok(())
}
