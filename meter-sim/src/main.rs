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
    /// Serve N simulated DLMS/COSEM meters (TCP wrapper or HDLC), one loopback address per meter.
    #[command(after_help = DLMS_HELP)]
    Dlms(DlmsArgs),
    /// Push the meters' load profile to a head-end as DLMS DataNotifications over the TCP wrapper.
    #[command(after_help = DLMS_PUSH_HELP)]
    DlmsPush(DlmsPushArgs),
    /// Print the CSV serial,system_title,ek,ak,password (hex) of the DLMS meters' security material.
    Keys(KeysArgs),
    /// Serve N simulated Modbus TCP meters behind G gateways (ports P..P+G-1) and print a JSON summary at exit.
    #[command(after_help = meter_sim::modbus::cli::HELP)]
    Modbus(meter_sim::modbus::cli::ModbusArgs),
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
    /// Protocol column; dlms puts meter_address 127.x.y.z:4059, where 127.x.y.z is 127.0.0.0 + index + 2 (one
    /// loopback address per meter; 127.0.0.1 is never a meter), and modbus 127.0.0.1:(5020 + index mod 100)/
    /// (index / 100 + 1), the gateway and unit of `meter-sim modbus` with its default --port and --gateways.
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
    /// With --per-meter-connections: each meter logs in as its serial with the password derived
    /// from this site secret (the file `headend mqtt-users --secret-file` reads).
    #[arg(long, requires = "per_meter_connections")]
    password_secret: Option<PathBuf>,
    /// For an mqtts:// broker: PEM file of the certificate authorities to trust (default: the
    /// system's roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
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
        Command::Dlms(a) => run_dlms(a),
        Command::DlmsPush(a) => run_dlms_push(a),
        Command::Keys(a) => run_keys(a),
        Command::Modbus(a) => meter_sim::modbus::cli::run(a),
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
        password_secret: match &a.password_secret {
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?.trim_ascii().to_vec())
            }
            None => None,
        },
        ca_file: a.ca_file,
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

const DLMS_HELP: &str = "\
Listens on --bind:--port and serves meter i on its loopback address 127.0.0.0 + i + 2 (127.0.0.2 is
SIM00000001; connections to any other address are closed). Client SAP 16: public, read-only; SAP 1:
LLS with the meter's password or HLS-GMAC with suite-0 ciphering (keys: `meter-sim keys`). Values are
the model's (`meter-sim expect`): registers at the last interval end at or before the meter's clock,
the load profile 1.0.99.1.0.255 holds every interval end of the last --history up to that one.
Meter clock = wall clock + (--at − start time, or --clock-offset) + drift fault / clock SET.

Faults (decided per session or meter by hashes of --fault-seed, see meter_sim::dlms::faults):
  --refuse (close at once), --no-answer (never reply), --drop (close on request 2..5),
  --corrupt (one reply's APDU tag inverted), --tamper (HLS: a ciphered GET reply's GMAC tag altered),
  --latency-rate/--latency (slow session),
  --wrong-keys (per meter: HLS fails), --wrong-password (per meter: LLS fails),
  --clock-drift (per meter: clock off by 1..15 min).
On SIGINT/SIGTERM prints ONE JSON summary line on stdout: {meters, sessions, foreign_address,
associations, associations_refused, requests, replies, protocol_errors, faults:{refused, no_answer,
dropped, corrupted, tampered, delayed, wrong_keys_sessions, wrong_password_sessions}, clock_sets,
elapsed_s}.";

const DLMS_PUSH_HELP: &str = "\
For every meter, one TCP connection to --head-end (bound to the meter's loopback address when the
head-end is on loopback) carrying one DataNotification per interval end in (from, to]: wrapper ports
1 -> 16, APDU 0F <long-invoke-id> 0C <date-time ts> body structure{serial octet-string, date-time ts,
1.8.0 double-long-unsigned Wh, 2.8.0 double-long-unsigned Wh}; --ciphered wraps it in
general-glo-ciphering with the meter's keys; --tamper RATE alters that share of the ciphered frames'
GMAC tags (decided per meter and interval from --fault-seed: meter_sim::dlms::push::Tamper). Prints a
JSON summary line {meters, intervals, notifications, tampered, failed_meters, elapsed_s} at the end.";

fn parse_signed_duration(s: &str) -> Result<i64, String> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let d = humantime::parse_duration(rest).map_err(|e| e.to_string())?;
    let secs = i64::try_from(d.as_secs()).map_err(|_| "too large".to_string())?;
    Ok(if neg { -secs } else { secs })
}

fn parse_latency(s: &str) -> Result<std::ops::RangeInclusive<u64>, String> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let a = humantime::parse_duration(a.trim()).map_err(|e| e.to_string())?.as_millis() as u64;
    let b = humantime::parse_duration(b.trim()).map_err(|e| e.to_string())?.as_millis() as u64;
    if a > b {
        return Err("the range must be LOW..HIGH".into());
    }
    Ok(a..=b)
}

#[derive(Args)]
struct DlmsArgs {
    /// Number of meters: indices 0..N (at most 16,777,213 addresses; tested up to 205,000).
    #[arg(long, value_parser = parse_meters)]
    meters: usize,
    /// Seed of the fleet, model and keys.
    #[arg(long)]
    seed: u64,
    /// TCP port.
    #[arg(long, default_value_t = 4059)]
    port: u16,
    /// Address to listen on. 0.0.0.0 (default) receives every 127/8 destination, and the destination
    /// (local) address of each connection names the meter; a single 127.x.y.z serves only that meter.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// HDLC framing over TCP (SNRM/UA, I-frames, segmentation, RR) instead of the TCP wrapper.
    #[arg(long)]
    hdlc: bool,
    /// The meters' clock at start-up (RFC 3339); it then runs with the wall clock.
    #[arg(long, conflicts_with = "clock_offset")]
    at: Option<String>,
    /// Offset of the meters' clock from the wall clock, e.g. -2h or 15m.
    #[arg(long, value_parser = parse_signed_duration, allow_hyphen_values = true)]
    clock_offset: Option<i64>,
    /// Load-profile depth (at most 7d).
    #[arg(long, default_value = "3d", value_parser = humantime::parse_duration)]
    history: Duration,
    /// Close a connection after this long without input.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Rate of sessions closed right after accept.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    refuse: f64,
    /// Rate of sessions that never answer.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    no_answer: f64,
    /// Rate of sessions closed mid-exchange.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    drop: f64,
    /// Rate of sessions with one corrupted reply.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    corrupt: f64,
    /// Rate of sessions with one ciphered GET reply whose authentication tag is wrong.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    tamper: f64,
    /// Delay of a slow session's replies, LOW..HIGH (e.g. 0.5s..5s).
    #[arg(long, default_value = "500ms..5s", value_parser = parse_latency)]
    latency: std::ops::RangeInclusive<u64>,
    /// Rate of slow sessions.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    latency_rate: f64,
    /// Rate of meters whose clock is off by 1..15 minutes.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    clock_drift: f64,
    /// Rate of meters with wrong keys (HLS fails).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    wrong_keys: f64,
    /// Rate of meters with a wrong LLS password (LLS fails).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    wrong_password: f64,
    /// Seed of the fault decisions (default: --seed).
    #[arg(long)]
    fault_seed: Option<u64>,
    /// No progress line (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args)]
struct DlmsPushArgs {
    /// Number of meters: indices 0..N.
    #[arg(long, value_parser = parse_meters)]
    meters: usize,
    /// Seed of the fleet, model and keys.
    #[arg(long)]
    seed: u64,
    /// The head-end's push listener, HOST:PORT.
    #[arg(long, visible_alias = "connect")]
    head_end: String,
    /// Start of the span (exclusive), RFC 3339 on a 15-minute boundary.
    #[arg(long)]
    from: String,
    /// End of the span (inclusive), RFC 3339 on a 15-minute boundary.
    #[arg(long)]
    to: String,
    /// general-glo-ciphering with the meter's keys.
    #[arg(long)]
    ciphered: bool,
    /// Meters pushing at the same time.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Rate of ciphered notifications sent with a wrong authentication tag.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, requires = "ciphered")]
    tamper: f64,
    /// Seed of the tamper decisions (default: --seed).
    #[arg(long)]
    fault_seed: Option<u64>,
}

#[derive(Args)]
struct KeysArgs {
    /// Number of meters: indices 0..N.
    #[arg(long, value_parser = parse_meters)]
    meters: usize,
    /// Seed of the fleet and keys.
    #[arg(long)]
    seed: u64,
}

fn run_dlms(a: DlmsArgs) -> anyhow::Result<()> {
    use meter_sim::dlms::{serve, FaultRates, Sim, SimConfig};
    let clock_offset_secs = match (&a.at, a.clock_offset) {
        (Some(at), _) => {
            let at = chrono::DateTime::parse_from_rfc3339(at).with_context(|| format!("--at {at}: not RFC 3339"))?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds()
        }
        (None, Some(o)) => o,
        (None, None) => 0,
    };
    anyhow::ensure!(
        a.meters <= meter_sim::fleet::LOOPBACK_METERS,
        "--meters: at most {} meters have a loopback address",
        meter_sim::fleet::LOOPBACK_METERS
    );
    let history = (a.history.as_secs() / 900).clamp(1, u64::from(meter_sim::dlms::sim::MAX_HISTORY_INTERVALS));
    let mut cfg = SimConfig::new(a.seed, a.meters);
    cfg.clock_offset_secs = clock_offset_secs;
    cfg.history_intervals = history as u32;
    cfg.hdlc = a.hdlc;
    cfg.faults = FaultRates {
        seed: a.fault_seed.unwrap_or(a.seed),
        refuse: a.refuse,
        no_answer: a.no_answer,
        drop: a.drop,
        corrupt: a.corrupt,
        tamper: a.tamper,
        latency_rate: a.latency_rate,
        latency_ms: a.latency,
        wrong_keys: a.wrong_keys,
        wrong_password: a.wrong_password,
        clock_drift: a.clock_drift,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let summary = runtime.block_on(async move {
        let sim = std::sync::Arc::new(Sim::new(cfg));
        // A deep accept queue: a polling round opens thousands of connections at once, and with the
        // default (1,024) the kernel drops SYNs that the clients retry only after a second.
        let addr = std::net::SocketAddr::new(a.bind, a.port);
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
            .context("socket")?;
        socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
        socket.bind(addr).with_context(|| format!("binding {addr}"))?;
        let listener = socket.listen(8192).with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr().context("local address")?;
        eprintln!("meter-sim dlms listening on {local} ({} meters, {})", a.meters, if a.hdlc { "HDLC" } else { "wrapper" });
        let shutdown = async {
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        let options = serve::ServeOptions { idle_timeout: a.idle_timeout, progress: !a.no_progress };
        anyhow::Ok(serve::serve(sim, listener, options, shutdown).await)
    })?;
    let line = serde_json::to_string(&summary).context("summary")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing the summary")?;
    out.flush().context("writing the summary")?;
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

fn run_dlms_push(a: DlmsPushArgs) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let span = Span::parse(&a.from, &a.to)?;
    let target = a
        .head_end
        .to_socket_addrs()
        .with_context(|| format!("--head-end {}", a.head_end))?
        .next()
        .with_context(|| format!("--head-end {}: no address", a.head_end))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let summary = runtime.block_on(meter_sim::dlms::push::push(
        a.seed,
        a.meters,
        span,
        target,
        a.ciphered,
        a.connections as usize,
        meter_sim::dlms::push::Tamper { seed: a.fault_seed.unwrap_or(a.seed), rate: a.tamper },
    ))?;
    let line = serde_json::to_string(&summary).context("summary")?;
    writeln!(std::io::stdout().lock(), "{line}").context("writing the summary")?;
    Ok(())
}

fn run_keys(a: KeysArgs) -> anyhow::Result<()> {
    meter_sim::dlms::keys::write_csv(BufWriter::new(std::io::stdout().lock()), a.seed, a.meters).context("writing keys")
}
