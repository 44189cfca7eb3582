//! `meter-sim modbus`: arguments and the run loop (serve until Ctrl-C/SIGTERM or `--duration`, then
//! print a JSON summary on stdout).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::server::{serve, FaultRates, SimConfig};

/// Help text of the subcommand.
pub const HELP: &str = "\
Serves N simulated Modbus TCP meters behind G gateways: gateway g listens on --host:(--port + g); meter i
(serial SIM{i+1:08}) is on gateway i mod G with unit id i / G + 1 (so N <= 247 G), uses register map
i mod M of the --map files (default: every config/modbus/*.toml, sorted) and holds the model's values at
the last 15-minute interval end before now (or --at), encoded per its map: energy 1.8.0/1.8.1/1.8.2/2.8.0
exactly as `meter-sim expect` prints them (up to the register's resolution, e.g. float32 kWh), voltage
for all phases, power = last interval's energy x 4, current = power / 3 / voltage, frequency 50 Hz.

Faults, decided by hashes of (--fault-seed, meter, request number): --exception-rate answers busy (0x06)
or illegal address (0x02); --timeout-rate sends no reply; --gateway-fail-rate makes whole meters answer
0x0B (gateway target failed) to every request. On exit prints ONE JSON line:
{\"meters\",\"gateways\",\"requests\",\"replies\",\"registers\",\"timeouts\",\"exceptions\":{reason:count}}.";

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err("must be a rate in [0, 1]".into());
    }
    Ok(r)
}

/// Arguments of `meter-sim modbus`.
#[derive(Debug, clap::Args)]
pub struct ModbusArgs {
    /// Number of meters: indices 0..N.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub meters: u32,
    /// Seed of the fleet and model.
    #[arg(long)]
    pub seed: u64,
    /// Number of gateways (TCP listeners). The default matches `meter-sim inventory --protocol modbus`.
    #[arg(long, default_value_t = super::layout::DEFAULT_GATEWAYS as u32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub gateways: u32,
    /// Port of gateway 0; gateway g listens on port + g (0: any free ports, printed on stderr).
    #[arg(long, default_value_t = 5020)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Register map files; meter i uses map i mod M (default: config/modbus/*.toml).
    #[arg(long = "map")]
    pub maps: Vec<PathBuf>,
    /// Serve the values of this interval end (RFC 3339, on a 15-minute boundary) instead of the last one.
    #[arg(long)]
    pub at: Option<String>,
    /// Rate of exception replies (busy / illegal address) per request.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub exception_rate: f64,
    /// Rate of requests left without reply.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub timeout_rate: f64,
    /// Rate of meters whose gateway answers 0x0B (target failed) to every request.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub gateway_fail_rate: f64,
    /// Seed of the fault decisions (default: --seed).
    #[arg(long)]
    pub fault_seed: Option<u64>,
    /// Stop after this long (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

/// Runs the subcommand.
pub fn run(a: ModbusArgs) -> anyhow::Result<()> {
    let paths = if a.maps.is_empty() { super::default_map_paths() } else { a.maps.clone() };
    let maps = super::load_maps(&paths)?;
    let at = match &a.at {
        None => None,
        Some(s) => {
            let t: DateTime<Utc> =
                DateTime::parse_from_rfc3339(s).with_context(|| format!("--at {s:?}"))?.with_timezone(&Utc);
            crate::model::check_boundary(t).with_context(|| format!("--at {s:?}"))?;
            Some(t)
        }
    };
    let cfg = SimConfig {
        meters: a.meters as usize,
        seed: a.seed,
        gateways: a.gateways as usize,
        port: a.port,
        host: a.host,
        maps,
        faults: FaultRates {
            exception: a.exception_rate,
            timeout: a.timeout_rate,
            gateway_fail: a.gateway_fail_rate,
            seed: a.fault_seed.unwrap_or(a.seed),
        },
        at,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let summary = runtime.block_on(async move {
        let handle = serve(cfg).await.context("binding the gateways")?;
        let first = handle.addrs().first().map(ToString::to_string).unwrap_or_default();
        let last = handle.addrs().last().map(ToString::to_string).unwrap_or_default();
        tracing::info!(gateways = handle.addrs().len(), first = %first, last = %last, "modbus gateways listening");
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        match a.duration {
            Some(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = stop => {}
                }
            }
            None => stop.await,
        }
        let s = handle.summary();
        handle.stop();
        anyhow::Ok(s)
    })?;
    println!("{}", serde_json::to_string(&summary).context("summary")?);
    Ok(())
}
