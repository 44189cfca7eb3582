//! `meter-sim`: inventory, MQTT publisher and expected payloads of a deterministic simulated fleet.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use meter_sim::channels::{parse_channels, DEFAULT_CHANNELS};
use meter_sim::mqtt::{self, Connections, Faults, Pacing, PublishConfig};
use meter_sim::{expect, fleet, inventory, Model, Span};
use schemas::inventory::Protocol;

const CONVENTIONS: &str = "\
Conventions:
  Meter index i (0-based) has serial SIM{i+1:08}; a fleet of N meters is the first N indices of an endless,
  seed-only sequence of buildings (master meter first, then one meter per flat), so a meter's identity and
  values never depend on N. The last building may be cut: its master still measures every flat.
  Timestamps are RFC 3339 (UTC, or an offset converted to UTC) on 15-minute boundaries and name interval
  ENDS; a span --from/--to covers the intervals ending in (from, to]: from exclusive, to inclusive.
  Values are exact: energy in integer Wh, voltage in volts with one decimal. The model covers local days
  2024-01-01 to 2099-12-31 (Europe/Belgrade).";

#[derive(Parser)]
#[command(name = "meter-sim", version, about = "Deterministic smart-meter simulator", after_help = CONVENTIONS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the inventory CSV of a fleet (contract: schemas::inventory), one row per meter.
    #[command(after_help = CONVENTIONS)]
    Inventory(InventoryArgs),
    /// Publish every meter's readings for every interval of a span over MQTT (QoS 1) and print a JSON summary.
    #[command(after_help = MQTT_HELP)]
    Mqtt(MqttArgs),
    /// Print, as JSON lines, the payloads the publisher sends for one meter (without `sent`).
    #[command(after_help = CONVENTIONS)]
    Expect(ExpectArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    Mqtt,
    Dlms,
    Modbus,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Protocol {
        match p {
            ProtocolArg::Mqtt => Protocol::Mqtt,
            ProtocolArg::Dlms => Protocol::Dlms,
            ProtocolArg::Modbus => Protocol::Modbus,
        }
    }
}

fn parse_meters(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("{s:?} is not a number of meters"))?;
    if n == 0 || n > fleet::MAX_INDEX + 1 {
        return Err(format!("must be in 1..={}", fleet::MAX_INDEX + 1));
    }
    Ok(n)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err("must be a rate in [0, 1]".into());
    }
    Ok(r)
}

fn parse_positive(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(r.is_finite() && r > 0.0) {
        return Err("must be a positive number".into());
    }
    Ok(r)
}

#[derive(Args)]
struct InventoryArgs {
    /// Number of meters (masters included).
    #[arg(long, value_parser = parse_meters)]
    meters: usize,
    /// Seed of the fleet.
    #[arg(long)]
    seed: u64,
    /// Protocol column; dlms puts meter_address 127.x.y.z:4059 and modbus 127.x.y.z:5020/1, where 127.x.y.z is
    /// 127.0.0.0 + index + 1 (one loopback address per meter).
    #[arg(long, value_enum, default_value = "mqtt")]
    protocol: ProtocolArg,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

const MQTT_HELP: &str = "\
Publishes, interval by interval (all meters of interval 1, then interval 2, ...), one message per meter on
<prefix>/<serial>/readings: {\"meter\",\"ts\",\"values\":{OBIS: value, in --channels order},\"sent\"}, QoS 1,
retain false. Ends when the broker has acknowledged every publish, then prints ONE JSON line on stdout:
{\"meters\",\"intervals\",\"messages\",\"readings\",\"faults\":{\"duplicates\",\"reordered\",\"malformed\",
\"unknown_meters\"},\"elapsed_s\",\"messages_per_s\",\"first_publish\",\"last_publish\",\"last_ack\"}.

Faults only add messages or move real ones (every real message is published exactly once): duplicates
re-publish a message later, reorder moves one to the end of its interval or after the next interval,
malformed adds garbage on a real meter's topic, unknown-meters adds valid payloads for UNK######## serials.
They are decided by hashes of (fault seed, meter, interval), so a run is reproducible.

Conventions:
  --from/--to are RFC 3339 interval ENDS on 15-minute boundaries; the intervals ending in (from, to] are
  published: from exclusive, to inclusive. Serial of meter index i: SIM{i+1:08}.";

#[derive(Args)]
struct MqttArgs {
    /// Number of meters: indices 0..N (masters included).
    #[arg(long, value_parser = parse_meters)]
    meters: usize,
    /// Start of the span (exclusive), RFC 3339 on a 15-minute boundary.
    #[arg(long)]
    from: String,
    /// End of the span (inclusive), RFC 3339 on a 15-minute boundary.
    #[arg(long)]
    to: String,
    /// Seed of the fleet and model.
    #[arg(long)]
    seed: u64,
    /// Broker URL mqtt://[user[:password]@]host[:port].
    #[arg(long, env = "MQTT_URL", default_value = mqtt::DEFAULT_URL)]
    url: String,
    /// Topics are <prefix>/<serial>/readings.
    #[arg(long, default_value = mqtt::DEFAULT_TOPIC_PREFIX)]
    topic_prefix: String,
    /// Comma-separated OBIS codes, in payload order.
    #[arg(long, default_value = DEFAULT_CHANNELS)]
    channels: String,
    /// Pace to at most this many messages per second (default: as fast as possible).
    #[arg(long, value_parser = parse_positive, conflicts_with = "speed")]
    rate: Option<f64>,
    /// Pace in simulated time: the interval ending at ts is published when FACTOR × elapsed real time reaches
    /// ts − from (900 = one interval per second).
    #[arg(long, value_parser = parse_positive)]
    speed: Option<f64>,
    /// Number of broker connections (concentrator mode); meter i uses connection i mod K.
    #[arg(long, default_value_t = 4, conflicts_with = "per_meter_connections", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// One connection per meter (at most 5,000 meters; in-flight window 16 per connection).
    #[arg(long)]
    per_meter_connections: bool,
    /// QoS 1 publishes in flight per connection.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..))]
    inflight: u16,
    /// Rate of duplicate messages (0..1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    duplicates: f64,
    /// Rate of reordered messages (0..1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    reorder: f64,
    /// Rate of extra malformed payloads (0..1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    malformed: f64,
    /// Rate of extra payloads for unknown meters (0..1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    unknown_meters: f64,
    /// Seed of the fault decisions (default: --seed).
    #[arg(long)]
    fault_seed: Option<u64>,
    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// Give up when the broker accepts or acknowledges nothing for this long while publishes are outstanding.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ack_timeout: Duration,
    /// Connection attempts (initially and after a drop) before giving up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    connect_attempts: u32,
}

#[derive(Args)]
struct ExpectArgs {
    /// Seed of the fleet and model.
    #[arg(long)]
    seed: u64,
    /// Meter serial (household or master), e.g. SIM00000001.
    #[arg(long)]
    meter: String,
    /// Start of the span (exclusive), RFC 3339 on a 15-minute boundary.
    #[arg(long)]
    from: String,
    /// End of the span (inclusive), RFC 3339 on a 15-minute boundary.
    #[arg(long)]
    to: String,
    /// Comma-separated OBIS codes, in payload order.
    #[arg(long, default_value = DEFAULT_CHANNELS)]
    channels: String,
}

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    match Cli::parse().command {
        Command::Inventory(a) => run_inventory(a),
        Command::Mqtt(a) => run_mqtt(a),
        Command::Expect(a) => run_expect(a),
    }
}

fn run_inventory(a: InventoryArgs) -> anyhow::Result<()> {
    let fleet = fleet::Fleet::covering(a.seed, a.meters);
    let protocol = Protocol::from(a.protocol);
    let rows = match &a.out {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut w = BufWriter::new(file);
            let n = inventory::write_csv(&mut w, &fleet, a.meters, protocol)?;
            w.flush().with_context(|| format!("writing {}", path.display()))?;
            n
        }
        None => inventory::write_csv(BufWriter::new(std::io::stdout().lock()), &fleet, a.meters, protocol)?,
    };
    tracing::info!(rows, "inventory written");
    Ok(())
}

fn run_mqtt(a: MqttArgs) -> anyhow::Result<()> {
    let span = Span::parse(&a.from, &a.to)?;
    let channels = parse_channels(&a.channels).context("--channels")?;
    let pacing = match (a.rate, a.speed) {
        (Some(r), _) => Pacing::Rate(r),
        (None, Some(s)) => Pacing::Speed(s),
        (None, None) => Pacing::Unpaced,
    };
    let cfg = PublishConfig {
        url: a.url,
        topic_prefix: a.topic_prefix,
        meters: a.meters,
        span,
        seed: a.seed,
        channels,
        pacing,
        connections: if a.per_meter_connections {
            Connections::PerMeter
        } else {
            Connections::Shared(a.connections as usize)
        },
        inflight: a.inflight,
        faults: Faults {
            duplicates: a.duplicates,
            reorder: a.reorder,
            malformed: a.malformed,
            unknown_meters: a.unknown_meters,
            seed: a.fault_seed.unwrap_or(a.seed),
        },
        progress: !a.no_progress,
        ack_timeout: a.ack_timeout,
        connect_attempts: a.connect_attempts,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let summary = runtime.block_on(mqtt::publish(&cfg))?;
    let line = serde_json::to_string(&summary).context("summary")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing the summary")?;
    Ok(())
}

fn run_expect(a: ExpectArgs) -> anyhow::Result<()> {
    let span = Span::parse(&a.from, &a.to)?;
    let channels = parse_channels(&a.channels).context("--channels")?;
    let model = Model::new(a.seed);
    let out = BufWriter::new(std::io::stdout().lock());
    expect::write_expected(out, &model, &a.meter, span, &channels)?;
    Ok(())
}
