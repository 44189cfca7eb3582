//! DLMS polling end to end: `meter-sim dlms` serves 2,000 meters with two days of load profile and
//! faults (refused, silent, dropped and corrupted sessions, slow replies, drifting clocks); the
//! head-end polls them. Which sessions fail is predicted from the simulator's fault function, so the
//! test knows exactly which meters must be missing after each round; every stored value must equal
//! the model, the ledger and the missing-interval API must show exactly the failed meters' gaps, and
//! the next rounds (started through the operator API) back-fill them until the fleet is complete.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use meter_sim::dlms::faults::{FaultRates, SessionFault};
use tests::procs::{self, Proc};

use crate::pipeline::Pipeline;
use schemas::migrations::Storage;

/// Meters of the polling test on the plain path; the TimescaleDB variant polls fewer (CI time).
const METERS: usize = 2000;
const TIMESCALE_METERS: usize = 300;
const SEED: u64 = 11;
const FAULT_SEED: u64 = 12;

fn rates() -> FaultRates {
    FaultRates {
        seed: FAULT_SEED,
        refuse: 0.01,
        no_answer: 0.005,
        drop: 0.01,
        corrupt: 0.01,
        tamper: 0.0,
        latency_rate: 0.02,
        latency_ms: 100..=400,
        wrong_keys: 0.0,
        wrong_password: 0.0,
        clock_drift: 0.02,
    }
}

fn failed_in(session: u32, meters: &BTreeSet<usize>) -> BTreeSet<usize> {
    let r = rates();
    meters.iter().copied().filter(|&i| r.session_fault(i, session) != SessionFault::None).collect()
}

fn floor15(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::minutes(15)).unwrap_or(t)
}

const CONFIG: &str = r#"
[collect]
enabled = true
retries = 0
max_sessions = 200
max_sessions_per_cell = 200
new_connections_per_second = 0
backfill_max = "3days"
clock_threshold = "30s"

[[collect.groups]]
name = "dlms"
protocol = "dlms"
profile_every = "1day"
registers_every = "1day"
events_every = "1day"
clock_every = "1day"
offset = "0s"

[dlms]
# The management client with the meter's password (LLS): the public client may read only the
# clock, serial and invocation counter.
client = 1
auth = "low"
keys_file = "@KEYS@"
connect_timeout = "3s"
step_timeout = "2s"
"#;

/// A DLMS fleet for one test: the pipeline (inventory addresses on a free port), the keys file and
/// `meter-sim dlms` serving the fleet.
struct Rig {
    p: Pipeline,
    port: u16,
    keys: std::path::PathBuf,
    sim: Proc,
    sim_log: std::path::PathBuf,
}

impl Rig {
    fn start(tag: &str, meters: usize, seed: u64, sim_args: &[&str]) -> Rig {
        Self::start_on(Storage::Plain, tag, meters, seed, sim_args)
    }

    /// [`Rig::start`] on a storage path.
    fn start_on(storage: Storage, tag: &str, meters: usize, seed: u64, sim_args: &[&str]) -> Rig {
        let port = tests::free_port().expect("port");
        let p = Pipeline::with_inventory_on(storage, tag, meters, seed, &["--protocol", "dlms"], |csv| {
            csv.replace(":4059,", &format!(":{port},"))
        })
        .expect("pipeline");
        let keys = write_keys(&p, meters, seed);
        let mut cmd = Command::new(procs::bin("meter-sim").expect("meter-sim"));
        let (n, sd, pt) = (meters.to_string(), seed.to_string(), port.to_string());
        cmd.args(["dlms", "--meters", &n, "--seed", &sd, "--port", &pt, "--no-progress"]).args(sim_args);
        let sim_log = p.dir.path().join("meter-sim-dlms.out");
        let sim = Proc::spawn("meter-sim", cmd, &sim_log).expect("simulator");
        tests::wait_for_port(([127, 0, 0, 2], port).into(), Duration::from_secs(30)).expect("simulator listening");
        Rig { p, port, keys, sim, sim_log }
    }

    /// Starts the head-end with `config` ([`CONFIG`] or an edit of it).
    fn headend(&mut self, config: &str) -> procs::Headend {
        let cfg = self.p.dir.path().join("headend.toml");
        let text = config.replace("@KEYS@", &self.keys.to_string_lossy());
        std::fs::write(&cfg, text).expect("config");
        if !self.p.spec.env.iter().any(|(k, _)| k == "HEADEND_CONFIG") {
            self.p.spec.env.push(("HEADEND_CONFIG".into(), cfg.to_string_lossy().into()));
        }
        self.p.start_headend().expect("head-end")
    }

    /// Stops the simulator; its JSON summary.
    fn stop_sim(&mut self) -> serde_json::Value {
        self.sim.signal("TERM").expect("SIGTERM");
        self.sim.wait(Duration::from_secs(30)).expect("simulator exits");
        Pipeline::summary_of(&self.sim_log).expect("simulator summary")
    }
}

/// `meter-sim keys` for the fleet, as the head-end's `dlms.keys_file`.
fn write_keys(p: &Pipeline, meters: usize, seed: u64) -> std::path::PathBuf {
    let keys = p.dir.path().join("keys.csv");
    let csv = procs::run_bin("meter-sim", &["keys", "--meters", &meters.to_string(), "--seed", &seed.to_string()], &[])
        .expect("keys");
    std::fs::write(&keys, csv).expect("keys file");
    keys
}

#[test]
fn dlms_polling_with_faults_stores_the_model_and_backfills_the_gaps() {
    polling_with_faults(Storage::Plain, METERS);
}

/// The same on TimescaleDB: the polled profile (the last two days) lands in the hypertable, and the
/// hourly continuous aggregate agrees with it.
#[test]
fn timescale_dlms_polling_with_faults_stores_the_model_and_backfills_the_gaps() {
    let p = polling_with_faults(Storage::Timescale, TIMESCALE_METERS);
    assert!(p.query_i64("SELECT count(*) FROM show_chunks('readings')").expect("chunks") >= 2, "chunks by day");
    crate::ingest::run_policy(&p, "policy_refresh_continuous_aggregate");
    assert_eq!(crate::ingest::hourly_disagreements(&p), 0, "readings_hourly equals the polled readings");
}

/// The polling test on one storage path with `meters` meters; its pipeline afterwards.
fn polling_with_faults(storage: Storage, meters: usize) -> Pipeline {
    let r = rates();
    let (refuse, no_answer, drop_rate, corrupt) =
        (r.refuse.to_string(), r.no_answer.to_string(), r.drop.to_string(), r.corrupt.to_string());
    let (latency_rate, drift, fault_seed) =
        (r.latency_rate.to_string(), r.clock_drift.to_string(), FAULT_SEED.to_string());
    let mut rig = Rig::start_on(
        storage,
        "dlms",
        meters,
        SEED,
        &[
            "--history",
            "2d",
            "--refuse",
            &refuse,
            "--no-answer",
            &no_answer,
            "--drop",
            &drop_rate,
            "--corrupt",
            &corrupt,
            "--latency-rate",
            &latency_rate,
            "--latency",
            "100ms..400ms",
            "--clock-drift",
            &drift,
            "--fault-seed",
            &fault_seed,
        ],
    );
    let started = Utc::now();
    let headend = rig.headend(CONFIG);
    let p = &rig.p;

    let all: BTreeSet<usize> = (0..meters).collect();
    let mut missing = failed_in(0, &all);
    assert!(!missing.is_empty() && missing.len() < meters / 10, "the faults hit some meters: {}", missing.len());
    let mut sessions = meters;
    let mut failures = missing.len();
    wait_round(&headend, sessions, missing.len());
    wait_stored_meters(p, meters - missing.len());
    check_round(p, &headend, &missing, started);
    check_clocks(p, &missing);
    // The standard event logs were read too, and the capability profile of each meter kept.
    let events = p.query_i64("SELECT count(DISTINCT meter_id)::bigint FROM meter_events").expect("events");
    assert!(events > 0, "event logs read");
    let caps = p
        .query_i64(
            "SELECT count(*)::bigint FROM meter_capabilities
             WHERE max_pdu > 0 AND details->'capture' = '[\"clock\", \"1.0.1.8.0.255\", \"1.0.2.8.0.255\"]'",
        )
        .expect("capabilities");
    assert_eq!(caps as usize, meters - missing.len(), "capability profiles of the meters read");

    // Further rounds on request poll exactly the meters that failed, until none is left.
    let mut round = 1u32;
    while !missing.is_empty() {
        assert!(round < 6, "meters still missing after {round} rounds: {missing:?}");
        let polled = missing.len();
        crate::pipeline::start_round(&headend, &p.token);
        missing = failed_in(round, &missing);
        sessions += polled;
        failures += missing.len();
        wait_round(&headend, sessions, missing.len());
        wait_stored_meters(p, meters - missing.len());
        check_round(p, &headend, &missing, started);
        round += 1;
    }

    // Without the token, no rounds and no commands.
    let (status, _) = procs::http_post(headend.http, "/api/v1/collect/rounds", &[], "").expect("POST");
    assert_eq!(status, 401);

    // The simulator saw exactly the sessions the head-end ran, and its fault counts match.
    let summary = rig.stop_sim();
    // (+1: the test's own probe of the listening port.)
    assert_eq!(summary["sessions"].as_u64(), Some(sessions as u64 + 1), "{summary}");
    let f = &summary["faults"];
    let injected: u64 = ["refused", "no_answer", "dropped", "corrupted"].iter().filter_map(|k| f[k].as_u64()).sum();
    assert_eq!(injected as usize, failures, "every injected session fault, and nothing else, failed a session");
    assert_eq!(summary["protocol_errors"].as_u64(), Some(0), "the head-end spoke correct DLMS: {summary}");
    drop(headend);
    rig.p
}

/// Waits for the round that brings the head-end to `sessions` sessions in all, and checks that it
/// had `failed` failures.
fn wait_round(headend: &procs::Headend, sessions: usize, failed: usize) {
    let got = crate::pipeline::wait_round(headend, "dlms", sessions);
    assert_eq!(got, failed, "failed sessions of the round");
}

fn wait_stored_meters(p: &Pipeline, n: usize) {
    let start = Instant::now();
    loop {
        let got = p.query_i64("SELECT count(DISTINCT meter_id)::bigint FROM readings").expect("count");
        if got as usize == n {
            // …and the writer has nothing left in flight.
            std::thread::sleep(Duration::from_millis(500));
            let again = p.query_i64("SELECT count(*)::bigint FROM readings").expect("count");
            std::thread::sleep(Duration::from_millis(500));
            if p.query_i64("SELECT count(*)::bigint FROM readings").expect("count") == again {
                return;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{got} of {n} meters have readings");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every stored value equals the model; meters in `missing` have nothing, the others have every
/// load-profile interval of the checked window and their four registers; the ledger agrees.
fn check_round(p: &Pipeline, headend: &procs::Headend, missing: &BTreeSet<usize>, started: DateTime<Utc>) {
    let model = meter_sim::Model::with_meters(SEED, p.meters);
    let rows: Vec<(String, i16, DateTime<Utc>, i64, i16)> =
        p.stored().expect("rows").into_iter().map(|r| (r.serial, r.channel, r.ts, r.value, r.flags)).collect();
    // Every value is the model's value at its interval (registers: the last interval end at or
    // before their capture time).
    let mut profile: HashMap<usize, BTreeSet<(i16, DateTime<Utc>)>> = HashMap::new();
    let mut registers: HashMap<usize, usize> = HashMap::new();
    let r = rates();
    for (serial, ch, ts, value, flags) in &rows {
        let i = model.index_of(serial).expect("a fleet serial");
        assert!(!missing.contains(&i), "{serial} failed its sessions but has readings");
        // A register read from a drifting meter carries the head-end's time, marked clock-doubtful;
        // the simulated meter computed it at its own (drifted) time.
        let doubtful = flags & 0x02 != 0;
        assert_eq!(
            doubtful,
            floor15(*ts) != *ts && r.drift_secs(i) != 0,
            "{serial} channel {ch} at {ts}: flags {flags}"
        );
        let at = if doubtful { *ts + chrono::Duration::seconds(r.drift_secs(i)) } else { *ts };
        let regs = model.registers_at(i, floor15(at)).expect("model");
        let want = regs.channel(*ch).unwrap_or_else(|| panic!("unexpected channel {ch}"));
        assert_eq!(*value, want, "{serial} channel {ch} at {ts}");
        if floor15(*ts) == *ts && (*ch == 1 || *ch == 4) {
            profile.entry(i).or_default().insert((*ch, *ts));
        }
        if floor15(*ts) != *ts {
            *registers.entry(i).or_default() += 1;
        }
    }
    // The window every meter's two-day profile covers, whatever its drift (±15 min) and whenever
    // it was polled.
    let hi = floor15(started) - chrono::Duration::minutes(30);
    let lo = floor15(started) - chrono::Duration::hours(47);
    let mut t = lo;
    let mut window = Vec::new();
    while t <= hi {
        window.push(t);
        t += chrono::Duration::minutes(15);
    }
    for i in (0..p.meters).filter(|i| !missing.contains(i)) {
        let got = profile
            .get(&i)
            .map_or(0, |s| window.iter().filter(|t| s.contains(&(1, **t)) && s.contains(&(4, **t))).count());
        assert_eq!(got, window.len(), "{} lacks profile intervals", meter_sim::serial(i));
        // A register read exactly on an interval end coincides with the profile row (same value).
        assert!(registers.get(&i).copied().unwrap_or(0) <= 4, "{}", meter_sim::serial(i));
    }
    let with_registers = registers.values().filter(|n| **n == 4).count();
    assert!(with_registers >= (p.meters - missing.len()) * 99 / 100, "{with_registers} meters with 4 registers");

    // The ledger has no row for a missing meter, and a full day for the others where the window
    // covers one.
    let ledger_meters =
        p.query_i64("SELECT count(DISTINCT meter_id)::bigint FROM read_ledger WHERE received > 0").expect("ledger");
    assert_eq!(ledger_meters as usize, p.meters - missing.len());
    let off = p
        .query_i64(
            "SELECT count(*)::bigint FROM
                 (SELECT meter_id, headend_local_day(ts) AS day, count(*) AS n FROM readings
                  WHERE channel_id = 1 AND extract(epoch FROM ts)::bigint % 900 = 0 GROUP BY 1, 2) r
             FULL JOIN read_ledger l USING (meter_id, day)
             WHERE l.received IS DISTINCT FROM r.n",
        )
        .expect("ledger");
    assert_eq!(off, 0, "ledger rows that disagree with the stored profile");
    // The missing-interval API lists every interval of the window's days for a failed meter.
    if let Some(&i) = missing.iter().next() {
        let day = (lo + chrono::Duration::hours(12)).with_timezone(&chrono_tz::Europe::Belgrade).date_naive();
        let path = format!("/api/v1/meters/{}/missing?from={day}&to={day}", meter_sim::serial(i));
        let (status, body) = procs::http_get_auth(headend.http, &path, &p.token).expect("GET missing");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let n = v["missing"].as_array().map_or(0, Vec::len);
        assert!(n >= 92, "a failed meter misses its whole day: {v}");
    }
}

/// Drifting meters are flagged with their deviation; the others are not.
fn check_clocks(p: &Pipeline, missing: &BTreeSet<usize>) {
    let r = rates();
    let status: Vec<(String, Option<i64>, bool)> = p.rt.block_on(async {
        let c = p.db.client().await.expect("db");
        c.query(
            "SELECT m.serial, s.clock_deviation_ms, s.clock_flagged FROM meter_poll_status s JOIN meters m ON m.id = s.meter_id",
            &[],
        )
        .await
        .expect("status")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    });
    assert_eq!(status.len(), p.meters, "every meter has a poll status");
    let mut drifting = 0;
    for (serial, dev, flagged) in status {
        let i = meter_sim::Model::new(SEED).index_of(&serial).expect("serial");
        if missing.contains(&i) {
            continue;
        }
        let drift_ms = r.drift_secs(i) * 1000;
        let dev = dev.expect("clock read");
        assert!((dev - drift_ms).abs() < 5_000, "{serial}: deviation {dev} ms, drift {drift_ms} ms");
        assert_eq!(flagged, drift_ms != 0, "{serial}");
        drifting += usize::from(drift_ms != 0);
    }
    assert!(drifting > 0, "some meters drift");
}

/// The span every push test sends: eight interval ends.
const PUSH_FROM: &str = "2026-11-20T10:00:00Z";
const PUSH_TO: &str = "2026-11-20T12:00:00Z";

/// A pipeline of `meters` DLMS meters and a push-only head-end (as the chart runs it: no MQTT intake)
/// that requires ciphered pushes, with further `[dlms]` settings; its listener's port.
fn push_listener(tag: &str, meters: usize, seed: u64, dlms: &str) -> (Pipeline, procs::Headend, u16) {
    let mut p =
        Pipeline::with_inventory(tag, meters, seed, false, &["--protocol", "dlms"], |csv| csv).expect("pipeline");
    let keys = write_keys(&p, meters, seed);
    let port = tests::free_port().expect("port");
    let cfg = p.dir.path().join("headend.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nenabled = false\n[dlms]\nkeys_file = {:?}\npush_listen = \"127.0.0.1:{port}\"\npush_require_ciphered = true\n{dlms}",
            keys.to_string_lossy()
        ),
    )
    .expect("config");
    p.spec.env.push(("HEADEND_CONFIG".into(), cfg.to_string_lossy().into()));
    let headend = p.start_headend().expect("head-end");
    (p, headend, port)
}

/// Pushed frames with a wrong GMAC tag (`meter-sim dlms-push --tamper`): each is refused, counted
/// (`push_rejected`) and kept as a dead letter, and nothing of it is stored; the meter's next frame,
/// intact, is stored; every stored value equals the model.
#[test]
fn dlms_push_with_a_wrong_tag_is_refused_and_never_stored() {
    const N: usize = 40;
    const SEED: u64 = 33;
    let tamper = meter_sim::dlms::push::Tamper { seed: 34, rate: 0.15 };
    let (p, headend, port) = push_listener("dlmstamper", N, SEED, "");
    let rows = pushed_rows(SEED, N);
    let model = meter_sim::Model::with_meters(SEED, N);
    let hit = |serial: &str, ts: DateTime<Utc>| tamper.hits(model.index_of(serial).expect("serial"), ts);
    let tampered: BTreeSet<(String, DateTime<Utc>)> =
        rows.iter().filter(|(serial, _, ts, _)| hit(serial, *ts)).map(|(s, _, ts, _)| (s.clone(), *ts)).collect();
    let frames = (N * 8) as i64;
    assert!(!tampered.is_empty() && tampered.len() < (frames / 4) as usize, "{}", tampered.len());
    let summary = dlms_push(N, SEED, port, &["--ciphered", "--tamper", "0.15", "--fault-seed", "34"]);
    assert_eq!(summary["tampered"].as_u64(), Some(tampered.len() as u64), "{summary}");

    let good = frames - tampered.len() as i64;
    p.wait_for_readings(good * 2, Duration::from_secs(60)).expect("stored");
    wait_dead(&p, tampered.len() as i64, tampered.len() as i64);
    let m = headend.metrics().expect("metrics");
    let outcome = |o: &str| procs::metric_labelled(&m, "headend_dlms_push_total", &[("outcome", o)]);
    assert_eq!(outcome("push_rejected"), Some(tampered.len() as f64), "{m}");
    assert_eq!(outcome("ok"), Some(good as f64), "{m}");
    let stored: HashMap<(String, i16, DateTime<Utc>), i64> =
        p.stored().expect("rows").into_iter().map(|r| ((r.serial, r.channel, r.ts), r.value)).collect();
    assert_eq!(stored.len() as i64, good * 2, "two registers per intact frame, nothing else");
    for (serial, ch, ts, v) in &rows {
        let got = stored.get(&(serial.clone(), *ch, *ts));
        if tampered.contains(&(serial.clone(), *ts)) {
            assert_eq!(got, None, "{serial} {ts}: a tampered frame's value was stored");
        } else {
            assert_eq!(got, Some(v), "{serial} channel {ch} at {ts}");
        }
    }
}

/// The push listener is bounded by connections and by silence: with `push_max_connections = 4`, a
/// fifth connection is closed at once (`busy`); connections that send nothing for
/// `push_idle_timeout` are closed (`idle`), which frees the listener for meters that push. A burst
/// of 20 pushing meters then gets four at a time: each meter is stored whole (equal to the model)
/// or refused whole and counted, never half.
#[test]
fn dlms_push_connections_are_limited_and_silent_ones_closed() {
    use std::io::Read;
    const N: usize = 20;
    const SEED: u64 = 35;
    let (p, headend, port) =
        push_listener("dlmspushlimits", N, SEED, "push_max_connections = 4\npush_idle_timeout = \"1s\"\n");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut silent: Vec<std::net::TcpStream> =
        (0..4).map(|_| std::net::TcpStream::connect(addr).expect("connect")).collect();
    // Let the listener take the four before the fifth comes.
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = std::net::TcpStream::connect(addr).expect("connect");
    fifth.set_read_timeout(Some(Duration::from_millis(900))).expect("timeout");
    let mut buf = [0u8; 16];
    let opened = Instant::now();
    assert_eq!(fifth.read(&mut buf).expect("closed, not timed out"), 0, "the fifth connection is closed at once");
    assert!(opened.elapsed() < Duration::from_millis(900), "before any idle timeout");
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let waited = Instant::now();
        assert_eq!(s.read(&mut buf).expect("closed by the head-end"), 0, "a silent connection is closed");
        assert!(waited.elapsed() < Duration::from_secs(5));
    }
    let m = headend.metrics().expect("metrics");
    let outcome = |o: &str| procs::metric_labelled(&m, "headend_dlms_push_total", &[("outcome", o)]);
    assert_eq!(outcome("busy"), Some(1.0), "{m}");
    assert_eq!(outcome("idle"), Some(4.0), "{m}");

    let summary = dlms_push(N, SEED, port, &["--ciphered", "--connections", "2"]);
    assert_eq!(summary["notifications"].as_u64(), Some(N as u64 * 8), "{summary}");
    // The simulator's meters connect faster than each session is stored (their frames sit in the
    // socket): the listener takes at most four at a time and closes the rest at accept. Every
    // meter is then either stored whole or refused whole, and counted.
    let rows = pushed_rows(SEED, N);
    let start = Instant::now();
    let (m, busy, ok) = loop {
        let m = headend.metrics().expect("metrics");
        let outcome = |o: &str| procs::metric_labelled(&m, "headend_dlms_push_total", &[("outcome", o)]).unwrap_or(0.0);
        let (busy, ok) = (outcome("busy") as usize - 1, outcome("ok") as usize);
        if busy + ok / 8 >= N {
            break (m, busy, ok);
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not every meter accounted for:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(ok > 0, "a meter got through once the silent connections were closed:\n{m}");
    assert_eq!(ok % 8, 0, "whole meters only:\n{m}");
    assert_eq!(busy + ok / 8, N, "{m}");
    p.wait_for_readings(ok as i64 * 2, Duration::from_secs(60)).expect("stored");
    let stored: HashMap<(String, i16, DateTime<Utc>), i64> =
        p.stored().expect("rows").into_iter().map(|r| ((r.serial, r.channel, r.ts), r.value)).collect();
    assert_eq!(stored.len(), ok * 2, "two registers per accepted frame, nothing else");
    let meters: BTreeSet<&String> = stored.keys().map(|k| &k.0).collect();
    assert_eq!(meters.len(), ok / 8);
    for (serial, ch, ts, v) in rows.iter().filter(|r| meters.contains(&r.0)) {
        assert_eq!(stored.get(&(serial.clone(), *ch, *ts)), Some(v), "{serial} channel {ch} at {ts}");
    }
    assert_eq!(
        p.dead_letters().expect("dead letters").values().sum::<i64>(),
        0,
        "a refused connection is not a message"
    );
}

/// The model's (serial, channel, ts, value) of what `meter-sim dlms-push` sends over the push span.
fn pushed_rows(seed: u64, meters: usize) -> Vec<(String, i16, DateTime<Utc>, i64)> {
    let registers = ["1.0.1.8.0".parse().expect("obis"), "1.0.2.8.0".parse().expect("obis")];
    crate::model::expected_rows(seed, meters, crate::pipeline::ts(PUSH_FROM), crate::pipeline::ts(PUSH_TO), &registers)
        .expect("model")
}

/// Runs `meter-sim dlms-push` for `meters` meters of `seed` over the push span to the listener on
/// `port`, with further arguments; its summary.
fn dlms_push(meters: usize, seed: u64, port: u16, extra: &[&str]) -> serde_json::Value {
    let (n, sd, target) = (meters.to_string(), seed.to_string(), format!("127.0.0.1:{port}"));
    let mut args =
        vec!["dlms-push", "--meters", &n, "--seed", &sd, "--head-end", &target, "--from", PUSH_FROM, "--to", PUSH_TO];
    args.extend_from_slice(extra);
    let out = procs::run_bin("meter-sim", &args, &[]).expect("dlms-push");
    serde_json::from_str(out.trim()).expect("summary")
}

/// Waits until `want` dead letters are kept; `rejected` of them are `push_rejected` and none is
/// anything else.
fn wait_dead(p: &Pipeline, want: i64, rejected: i64) {
    let start = Instant::now();
    loop {
        let dead = p.dead_letters().expect("dead letters");
        let total: i64 = dead.values().sum();
        if total >= want {
            assert_eq!(dead.get("push_rejected").copied().unwrap_or(0), rejected, "refused pushes: {dead:?}");
            assert_eq!(total, want, "{dead:?}");
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "dead letters so far: {dead:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// DLMS push: 200 meters push two hours of ciphered DataNotifications (general-glo-ciphering with
/// each meter's own keys). Every value is stored and equals the model; the same frames pushed again
/// (a replay: the simulator's counters restart at 1) are refused and kept as dead letters — by a
/// second replica that never saw the originals (the counters stored in the database refuse them)
/// and by the first one after a restart — and so are plain pushes, because the listener requires
/// ciphering. Nothing is stored twice.
#[test]
fn dlms_push_ciphered_is_stored_once_and_replays_are_refused() {
    const N: usize = 200;
    const SEED: u64 = 31;
    let (mut p, headend, port) = push_listener("dlmspush", N, SEED, "");
    // A second push replica on the same database, started before any push.
    let port_b = tests::free_port().expect("port");
    let mut spec_b = p.spec.clone();
    spec_b.client_id.push_str("-b");
    spec_b.env.push(("HEADEND_DLMS__PUSH_LISTEN".into(), format!("127.0.0.1:{port_b}")));
    let replica_b = procs::Headend::start(&spec_b, &p.dir.path().join("headend-b.log")).expect("replica b");
    let push_to = |port: u16, extra: &[&str]| dlms_push(N, SEED, port, extra);
    let push = |extra: &[&str]| push_to(port, extra);
    let notifications = (N * 8) as i64;

    push(&["--ciphered"]);
    p.wait_for_readings(notifications * 2, Duration::from_secs(60)).expect("stored");
    let rows = pushed_rows(SEED, N);
    let stored = p.query_i64("SELECT count(*)::bigint FROM readings").expect("count");
    assert_eq!(stored, rows.len() as i64);
    let mismatched: i64 = p.rt.block_on(async {
        let c = p.db.client().await.expect("db");
        let mut bad = 0;
        for (serial, ch, ts, v) in &rows {
            let got: Option<i64> = c
                .query_opt(
                    "SELECT r.value FROM readings r JOIN meters m ON m.id = r.meter_id
                     WHERE m.serial = $1 AND r.channel_id = $2 AND r.ts = $3",
                    &[serial, ch, ts],
                )
                .await
                .expect("query")
                .map(|r| r.get(0));
            bad += i64::from(got != Some(*v));
        }
        bad
    });
    assert_eq!(mismatched, 0, "stored pushes equal the model");

    let m = headend.metrics().expect("metrics");
    assert_eq!(
        procs::metric_labelled(&m, "headend_dlms_push_total", &[("outcome", "ok")]),
        Some(notifications as f64),
        "{m}"
    );
    // The same ciphered frames to the replica that never saw them: its memory has no counters for
    // these meters, the database's refuse every frame.
    push_to(port_b, &["--ciphered"]);
    wait_dead(&p, notifications, notifications);
    let m = replica_b.metrics().expect("metrics");
    assert_eq!(procs::metric_labelled(&m, "headend_dlms_push_total", &[("outcome", "ok")]), None, "{m}");
    drop(replica_b);

    // The first replica restarted: the same frames again are refused, and plain frames too.
    drop(headend);
    let _headend = p.start_headend().expect("head-end restarted");
    push(&["--ciphered"]);
    push(&[]);
    wait_dead(&p, 3 * notifications, 2 * notifications);
    assert_eq!(p.query_i64("SELECT count(*)::bigint FROM readings").expect("count"), stored, "nothing stored twice");
    let counters = p.query_i64("SELECT count(*)::bigint FROM dlms_push_counters WHERE highest = 8").expect("counters");
    assert_eq!(counters, N as i64, "each meter's highest accepted counter (8 pushes) is stored");
}

/// HLS-GMAC polling with per-meter keys from the key store: meters with wrong keys fail (counted as
/// authentication failures) and every other meter is read. The invocation counters are persisted:
/// a restarted head-end continues above them (the meters would refuse a reused counter), and when
/// the stored counters are lost the head-end resynchronises from each meter's 0.0.43.1.0.255.
#[test]
fn dlms_gmac_polling_persists_and_resynchronises_invocation_counters() {
    const N: usize = 100;
    const SEED: u64 = 41;
    let wrong = FaultRates { seed: 42, wrong_keys: 0.05, ..FaultRates::default() };
    let wrong_keys: BTreeSet<usize> = (0..N).filter(|&i| wrong.wrong_keys(i)).collect();
    assert!(!wrong_keys.is_empty() && wrong_keys.len() < N / 4, "{wrong_keys:?}");
    let mut rig = Rig::start("dlmsgmac", N, SEED, &["--history", "2h", "--wrong-keys", "0.05", "--fault-seed", "42"]);
    // Every run calls the meters with wrong keys again: no authentication cool-down here.
    let config = CONFIG
        .replace("auth = \"low\"", "auth = \"gmac\"")
        .replace("[collect]\n", "[collect]\nauth_cooldown = \"0s\"\n");

    let counters =
        |p: &Pipeline| p.query_i64("SELECT count(*)::bigint FROM dlms_invocation_counters").expect("counters");
    for run in 0..3 {
        if run == 2 {
            // The counter store is lost (restored from an old backup, say): the meters remember more.
            let p = &rig.p;
            p.rt.block_on(async {
                let c = p.db.client().await.expect("db");
                c.execute("DELETE FROM dlms_invocation_counters", &[]).await.expect("delete");
            });
        }
        let started = Utc::now();
        let mut headend = rig.headend(&config);
        let p = &rig.p;
        wait_round(&headend, N, wrong_keys.len());
        let m = headend.metrics().expect("metrics");
        let auth_failed = procs::metric_labelled(
            &m,
            "headend_poll_sessions_total",
            &[("protocol", "dlms"), ("outcome", "authentication_rejected")],
        );
        assert_eq!(auth_failed, Some(wrong_keys.len() as f64), "run {run}:\n{m}");
        assert_eq!(counters(p), N as i64, "a counter block reserved per meter");
        wait_status(p, N, run, started);
        let failing: BTreeSet<usize> = p.rt.block_on(async {
            let c = p.db.client().await.expect("db");
            c.query(
                "SELECT m.serial FROM meter_poll_status s JOIN meters m ON m.id = s.meter_id WHERE s.last_error IS NOT NULL",
                &[],
            )
            .await
            .expect("status")
            .iter()
            .map(|r| meter_sim::Model::new(SEED).index_of(r.get(0)).expect("serial"))
            .collect()
        });
        assert_eq!(failing, wrong_keys, "run {run}: only the meters with wrong keys fail");
        if run == 2 {
            let log = headend.proc.log_tail(1 << 20);
            let resyncs = log.matches("invocation counter refused; resynchronising").count();
            assert!(resyncs >= N - wrong_keys.len(), "every good meter resynchronised ({resyncs})");
        }
        headend.proc.signal("TERM").expect("SIGTERM");
        headend.proc.wait(Duration::from_secs(30)).expect("head-end stops");
    }
    let meters_with_data = rig.p.query_i64("SELECT count(DISTINCT meter_id)::bigint FROM readings").expect("count");
    assert_eq!(meters_with_data as usize, N - wrong_keys.len());
}

/// A ciphered reply with a wrong GMAC tag (the simulator alters the tag of a session's register list
/// or of its first load-profile block, as an on-path attacker would): the head-end refuses it, counts
/// the session as an authentication failure with the reason in the meter's poll status, and stores
/// nothing of that session — not even the register list read before a tampered profile block.
/// Every other meter is read and equals the model.
#[test]
fn dlms_gmac_reply_with_a_wrong_tag_is_refused_and_its_session_stores_nothing() {
    const N: usize = 60;
    let faults = FaultRates { seed: 46, tamper: 0.1, ..FaultRates::default() };
    let tampered: BTreeSet<usize> =
        (0..N).filter(|&i| matches!(faults.session_fault(i, 0), SessionFault::Tamper { .. })).collect();
    let after_registers = tampered.iter().filter(|&&i| faults.session_fault(i, 0) == SessionFault::Tamper { reply: 2 });
    assert!(!tampered.is_empty() && tampered.len() < N / 4, "{tampered:?}");
    assert!(after_registers.count() > 0, "some sessions lose a profile block after a good register list");
    let mut rig = Rig::start("dlmstamper", N, SEED, &["--history", "2h", "--tamper", "0.1", "--fault-seed", "46"]);
    let started = Utc::now();
    let headend = rig.headend(&CONFIG.replace("auth = \"low\"", "auth = \"gmac\""));
    wait_round(&headend, N, tampered.len());
    let m = headend.metrics().expect("metrics");
    let auth_failed = procs::metric_labelled(
        &m,
        "headend_poll_sessions_total",
        &[("protocol", "dlms"), ("outcome", "authentication_rejected")],
    );
    assert_eq!(auth_failed, Some(tampered.len() as f64), "{m}");
    let p = &rig.p;
    wait_status(p, N, 0, started);
    let failing: Vec<(String, String)> = p.rt.block_on(async {
        let c = p.db.client().await.expect("db");
        c.query(
            "SELECT m.serial, s.last_error FROM meter_poll_status s JOIN meters m ON m.id = s.meter_id
             WHERE s.last_error IS NOT NULL",
            &[],
        )
        .await
        .expect("status")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    });
    let model = meter_sim::Model::with_meters(SEED, N);
    let failing_meters: BTreeSet<usize> = failing.iter().map(|(s, _)| model.index_of(s).expect("serial")).collect();
    assert_eq!(failing_meters, tampered, "only the meters with a tampered reply fail");
    for (serial, error) in &failing {
        assert!(error.contains("authentication tag mismatch"), "{serial}: {error}");
    }
    wait_stored_meters(p, N - tampered.len());
    for r in p.stored().expect("rows") {
        let i = model.index_of(&r.serial).expect("serial");
        assert!(
            !tampered.contains(&i),
            "{}: a session with a tampered reply stored {} at {}",
            r.serial,
            r.channel,
            r.ts
        );
        let regs = model.registers_at(i, floor15(r.ts)).expect("model");
        let want = regs.channel(r.channel).unwrap_or_else(|| panic!("unexpected channel {}", r.channel));
        assert_eq!(r.value, want, "{} channel {} at {}", r.serial, r.channel, r.ts);
    }
    let summary = rig.stop_sim();
    assert_eq!(summary["faults"]["tampered"].as_u64(), Some(tampered.len() as u64), "{summary}");
}

/// LLS meters whose password is wrong (`meter-sim dlms --wrong-password`): their sessions are refused
/// and counted as authentication failures, the operators' failing list filtered by that reason shows
/// exactly them, and they cool down — a restarted head-end (the cool-down is read from the database)
/// does not call them in its round while it polls every other meter, until an operator lifts one
/// meter's cool-down (`retry_polling`, audited): that meter alone is called in the round it
/// requests. With `auth_cooldown = "0s"` they are called, and refused, every round.
#[test]
fn dlms_authentication_failures_cool_down_and_are_listed_for_operators() {
    const N: usize = 60;
    let faults = FaultRates { seed: 47, wrong_password: 0.1, ..FaultRates::default() };
    let wrong: BTreeSet<usize> = (0..N).filter(|&i| faults.wrong_password(i)).collect();
    assert!(!wrong.is_empty() && wrong.len() < N / 4, "{wrong:?}");
    let mut rig =
        Rig::start("dlmscooldown", N, SEED, &["--history", "2h", "--wrong-password", "0.1", "--fault-seed", "47"]);
    let round_meters = |h: &procs::Headend, result: &str| {
        let m = h.metrics().expect("metrics");
        procs::metric_labelled(&m, "headend_poll_round_meters", &[("group", "dlms"), ("result", result)])
    };
    // A graceful stop hands the leases back, so the next head-end polls every meter from scratch
    // (a killed one's meters would be taken over: those polled successfully are not due again).
    let stop = |mut h: procs::Headend| {
        h.proc.signal("TERM").expect("SIGTERM");
        h.proc.wait(Duration::from_secs(30)).expect("head-end stops");
    };
    let auth_failed = |h: &procs::Headend| {
        let m = h.metrics().expect("metrics");
        procs::metric_labelled(
            &m,
            "headend_poll_sessions_total",
            &[("protocol", "dlms"), ("outcome", "authentication_rejected")],
        )
    };

    let headend = rig.headend(CONFIG);
    wait_round(&headend, N, wrong.len());
    assert_eq!(auth_failed(&headend), Some(wrong.len() as f64));
    let model = meter_sim::Model::with_meters(SEED, N);
    let p = &rig.p;
    wait_status(p, N, 0, Utc::now() - chrono::Duration::minutes(10));
    let (status, body) = procs::http_get_auth(
        headend.http,
        "/api/v1/ops/meters?status=failing&reason=authentication_rejected",
        &p.token,
    )
    .expect("GET failing meters");
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("json");
    let listed: BTreeSet<usize> = page["meters"]
        .as_array()
        .expect("meters")
        .iter()
        .map(|m| model.index_of(m["serial"].as_str().expect("serial")).expect("a fleet serial"))
        .collect();
    assert_eq!(listed, wrong, "the operators' list of authentication failures");
    let meters_with_data = p.query_i64("SELECT count(DISTINCT meter_id)::bigint FROM readings").expect("count");
    assert_eq!(meters_with_data as usize, N - wrong.len());
    stop(headend);

    // Restarted at once: the refused meters are cooling down (1 h), the others are polled again.
    let headend = rig.headend(CONFIG);
    wait_round(&headend, N - wrong.len(), 0);
    assert_eq!(round_meters(&headend, "cooling_down"), Some(wrong.len() as f64));
    assert_eq!(auth_failed(&headend), None, "no refused meter was called");
    // An operator lifts one meter's cool-down (its password put right, say): a round is requested
    // and calls that meter alone; the others keep cooling down. A household cannot.
    let retried = meter_sim::fleet::serial(*wrong.first().expect("a wrong meter"));
    let path = format!("/api/v1/meters/{retried}/commands");
    let body = r#"{"command":"retry_polling","note":"password reset on site, ticket 7"}"#;
    let (status, reply) = procs::http_post(headend.http, &path, &[], body).expect("POST");
    assert_eq!(status, 401, "no token, no command: {reply}");
    let auth = format!("Bearer {}", rig.p.token);
    let (status, reply) = procs::http_post(headend.http, &path, &[("Authorization", &auth)], body).expect("POST");
    assert_eq!(status, 200, "{reply}");
    let v: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
    assert_eq!(v["outcome"], "done", "{v}");
    assert!(v["detail"].as_str().unwrap_or_default().contains("lifted after 1 refusal"), "{v}");
    wait_round(&headend, N - wrong.len() + 1, 1);
    assert_eq!(auth_failed(&headend), Some(1.0), "only the retried meter was called");
    assert_eq!(round_meters(&headend, "cooling_down"), Some((wrong.len() - 1) as f64));
    let audited = rig
        .p
        .query_i64("SELECT count(*)::bigint FROM meter_commands WHERE command = 'retry_polling' AND outcome = 'done'")
        .expect("audit");
    assert_eq!(audited, 1, "the lifted cool-down is in the audit trail");
    stop(headend);

    // Without a cool-down they are called and refused again.
    let started = Utc::now();
    let headend = rig.headend(&CONFIG.replace("[collect]\n", "[collect]\nauth_cooldown = \"0s\"\n"));
    wait_round(&headend, N, wrong.len());
    assert_eq!(round_meters(&headend, "cooling_down"), Some(0.0));
    let p = &rig.p;
    wait_status(p, N, 2, started);
    let again = p
        .query_i64(
            "SELECT count(*)::bigint FROM meter_poll_status
             WHERE last_error LIKE 'authentication_rejected:%' AND consecutive_failures = 2",
        )
        .expect("status");
    assert_eq!(again as usize, wrong.len() - 1, "two refusals in a row each, the retried meter three");
    stop(headend);
    let summary = rig.stop_sim();
    let sessions = 2 * wrong.len() as u64 + 1;
    assert_eq!(summary["faults"]["wrong_password_sessions"].as_u64(), Some(sessions), "{summary}");
}

/// Waits until every meter's poll status of this run is written (they are flushed every second).
fn wait_status(p: &Pipeline, n: usize, run: usize, since: DateTime<Utc>) {
    let start = Instant::now();
    let sql =
        format!("SELECT count(*)::bigint FROM meter_poll_status WHERE last_attempt_at >= '{}'", since.to_rfc3339());
    while p.query_i64(&sql).expect("status") < n as i64 {
        assert!(start.elapsed() < Duration::from_secs(20), "run {run}: poll status not written");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The same collection over HDLC framing (SNRM/UA, I-frames, segmentation in both directions):
/// 100 meters, two hours of profile each, every value equal to the model.
#[test]
fn dlms_polling_over_hdlc_reads_every_meter() {
    const N: usize = 100;
    const SEED: u64 = 51;
    let mut rig = Rig::start("dlmshdlc", N, SEED, &["--hdlc", "--history", "2h"]);
    let started = Utc::now();
    let headend = rig.headend(&CONFIG.replace("auth = \"low\"", "auth = \"low\"\ntransport = \"hdlc\""));
    let (p, port, keys) = (&rig.p, rig.port, &rig.keys);
    wait_round(&headend, N, 0);
    wait_stored_meters(p, N);
    let model = meter_sim::Model::with_meters(SEED, N);
    let rows: Vec<(String, i16, DateTime<Utc>, i64)> =
        p.stored().expect("rows").into_iter().map(|r| (r.serial, r.channel, r.ts, r.value)).collect();
    let mut profile_rows = 0;
    for (serial, ch, ts, v) in &rows {
        let i = model.index_of(serial).expect("serial");
        let regs = model.registers_at(i, floor15(*ts)).expect("model");
        let want = regs.channel(*ch).unwrap_or_else(|| panic!("unexpected channel {ch}"));
        assert_eq!(*v, want, "{serial} channel {ch} at {ts}");
        profile_rows += usize::from(floor15(*ts) == *ts && (*ch == 1 || *ch == 4));
    }
    // Eight intervals in two hours (seven when the round straddled an interval end), two channels.
    assert!(profile_rows >= N * 7 * 2, "{profile_rows} profile rows");

    // The engineers' tool reads the same meter over HDLC and prints scaled values with units.
    let keys_text = std::fs::read_to_string(keys).expect("keys");
    let line = keys_text.lines().find(|l| l.starts_with("SIM00000001,")).expect("meter 1 keys");
    let password =
        String::from_utf8(hex::decode(line.rsplit(',').next().expect("password")).expect("hex")).expect("text");
    let out = procs::run_bin(
        "headend",
        &[
            "meter",
            "read",
            "--host",
            "127.0.0.2",
            "--port",
            &port.to_string(),
            "--hdlc",
            "--client",
            "1",
            "--auth",
            "low",
            "--password",
            &password,
            "--obis",
            "0.0.1.0.0.255,1.0.1.8.0.255,9.9.9.9.9.9",
            "--profile",
            "1.0.99.1.0.255",
            "--entries",
            "1-2",
        ],
        &[],
    )
    .expect("headend meter read");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let clock: DateTime<Utc> = v["objects"][0]["utc"].as_str().expect("clock").parse().expect("time");
    let want = model.registers_at(0, floor15(clock)).expect("model").import_total();
    assert_eq!(v["objects"][1]["unit"], "Wh", "{v}");
    assert_eq!(v["objects"][1]["scaled"], want.to_string(), "{v}");
    assert_eq!(v["objects"][2]["error"]["data_access_result"], "object-undefined", "{v}");
    assert_eq!(v["profile"]["rows"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(Utc::now() - started < chrono::Duration::minutes(5));
}

/// Clock sync and operator commands: with `collect.clock_sync`, drifting meter clocks are set
/// during the poll (the simulator counts the SETs) and no longer flagged; a remote disconnect and
/// reconnect through the API reach the meter's disconnect control and are kept in the audit trail.
#[test]
fn dlms_clock_sync_and_remote_disconnect_are_carried_out_and_audited() {
    const N: usize = 60;
    const SEED: u64 = 61;
    let drift = FaultRates { seed: 62, clock_drift: 0.2, ..FaultRates::default() };
    let drifting: BTreeSet<usize> = (0..N).filter(|&i| drift.drift_secs(i) != 0).collect();
    assert!(!drifting.is_empty());
    let mut rig = Rig::start("dlmscmd", N, SEED, &["--history", "1h", "--clock-drift", "0.2", "--fault-seed", "62"]);
    let headend = rig.headend(&CONFIG.replace(
        "clock_threshold = \"30s\"",
        "clock_threshold = \"30s\"\nclock_sync = true\nclock_sync_max_step = \"20m\"",
    ));
    let p = &rig.p;
    wait_round(&headend, N, 0);
    let m = headend.metrics().expect("metrics");
    assert_eq!(procs::metric(&m, "headend_clock_synced_total"), Some(drifting.len() as f64), "{m}");
    wait_status(p, N, 0, Utc::now() - chrono::Duration::minutes(5));
    let flagged = p.query_i64("SELECT count(*)::bigint FROM meter_poll_status WHERE clock_flagged").expect("flags");
    assert_eq!(flagged, 0, "synchronised clocks are not left flagged");

    let auth = format!("Bearer {}", p.token);
    let post = |path: &str, body: &str, token: Option<&str>| {
        let headers: Vec<(&str, &str)> = token.map(|t| vec![("Authorization", t)]).unwrap_or_default();
        procs::http_post(headend.http, path, &headers, body).expect("POST")
    };
    let path = "/api/v1/meters/SIM00000003/commands";
    let (status, _) = post(path, r#"{"command":"disconnect","requested_by":"op"}"#, None);
    assert_eq!(status, 401, "no token, no command");
    let (status, body) = post(path, r#"{"command":"explode","requested_by":"op"}"#, Some(&auth));
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(path, r#"{"command":"disconnect","requested_by":"operator 7, ticket 42"}"#, Some(&auth));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["outcome"], "done", "{v}");
    assert!(v["detail"].as_str().unwrap_or_default().contains("false"), "breaker open afterwards: {v}");
    let (status, body) = post(path, r#"{"command":"reconnect","requested_by":"operator 7, ticket 42"}"#, Some(&auth));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(v["detail"].as_str().unwrap_or_default().contains("true"), "breaker closed again: {v}");
    type Audit = (String, String, Option<String>, Option<String>);
    let audit: Vec<Audit> = p.rt.block_on(async {
        let c = p.db.client().await.expect("db");
        c.query("SELECT command, requested_by, note, outcome FROM meter_commands ORDER BY id", &[])
            .await
            .expect("audit")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    });
    let row = |c: &str| {
        (c.to_string(), "e2e-operator".to_string(), Some("operator 7, ticket 42".to_string()), Some("done".to_string()))
    };
    assert_eq!(audit, vec![row("disconnect"), row("reconnect")], "the account that asked and its note are audited");
    let summary = rig.stop_sim();
    assert_eq!(summary["clock_sets"].as_u64(), Some(drifting.len() as u64), "{summary}");
}

/// API requests stuck in the database — every connection of the API's pool
/// (`http.database_connections` = 2) waiting on a lock an attacker or a runaway report holds, 32
/// more clients asking without pause — hold up neither polling nor storage: register rounds every
/// 15 s keep completing, every session ok, their readings stored. The API never takes more than its
/// 2 connections, the requests beyond them get 503 instead of piling up, probes and metrics still
/// answer, and once the lock goes the API answers again. (Were the API on the pollers' pool, the
/// clients would take all its connections and the rounds would stall.)
#[test]
fn api_stuck_in_the_database_holds_up_neither_polling_nor_storage() {
    const N: usize = 40;
    const SEED: u64 = 53;
    let mut rig = Rig::start("apistuck", N, SEED, &[]);
    let config = CONFIG.replace("registers_every = \"1day\"", "registers_every = \"15s\"")
        + "\n[http]\ndatabase_connections = 2\n";
    let headend = rig.headend(&config);
    let p = &rig.p;
    let ok = |m: &str| {
        procs::metric_labelled(m, "headend_poll_sessions_total", &[("protocol", "dlms"), ("outcome", "ok")])
            .unwrap_or(0.0)
    };
    // The first round (everything due at start) is in.
    let start = Instant::now();
    while ok(&headend.metrics().expect("metrics")) < N as f64 {
        assert!(start.elapsed() < Duration::from_secs(60), "first round not finished");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The lock: held by a transaction of the test until it rolls back.
    let locker = p.rt.block_on(p.db.client()).expect("client");
    p.rt.block_on(locker.batch_execute("BEGIN; LOCK TABLE billing_runs IN ACCESS EXCLUSIVE MODE")).expect("lock");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (stop, token, addr) = (stop.clone(), p.token.clone(), headend.http);
            std::thread::spawn(move || {
                let mut statuses: HashMap<u16, usize> = HashMap::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = procs::http_get_auth(addr, "/api/v1/ops/buildings", &token).map_or(0, |(s, _)| s);
                    *statuses.entry(status).or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let waiting = || {
        p.query_i64(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'
             AND query LIKE '%billing_runs%'",
            p.db.name
        ))
        .expect("pg_stat_activity")
    };
    let start = Instant::now();
    while waiting() < 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "the API's connections never reached the lock");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Two further register rounds while the API is stuck.
    let before_ok = ok(&headend.metrics().expect("metrics"));
    let before_rows = p.query_i64("SELECT count(*) FROM readings").expect("count");
    let mut most_waiting = 0;
    let start = Instant::now();
    loop {
        most_waiting = most_waiting.max(waiting());
        let m = headend.metrics().expect("metrics while the API is stuck");
        if ok(&m) >= before_ok + 2.0 * N as f64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "polling stalled with the API: {} sessions ok since the lock; {m}",
            ok(&m) - before_ok
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = headend.metrics().expect("metrics");
    assert_eq!(procs::metric_sum(&m, "headend_poll_sessions_total"), ok(&m), "every session ok:\n{m}");
    wait_stored_meters(p, N);
    let after_rows = p.query_i64("SELECT count(*) FROM readings").expect("count");
    assert!(
        after_rows >= before_rows + 2 * 4 * N as i64,
        "two rounds of four registers stored while the API was stuck: {before_rows} → {after_rows}"
    );
    assert_eq!(most_waiting, 2, "the API holds at most its own 2 connections");
    assert_eq!(procs::http_get(headend.http, "/livez").expect("livez").0, 200);

    // The lock goes: the API answers again.
    p.rt.block_on(locker.batch_execute("ROLLBACK")).expect("unlock");
    let start = Instant::now();
    loop {
        if procs::http_get_auth(headend.http, "/api/v1/ops/buildings", &p.token).expect("GET").0 == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the API did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for c in clients {
        for (s, n) in c.join().expect("client thread") {
            *statuses.entry(s).or_default() += n;
        }
    }
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "requests beyond the pool were refused: {statuses:?}");
    assert!(statuses.keys().all(|s| [200, 503].contains(s)), "only answers or busy: {statuses:?}");
    drop(headend);
}
