//! Scale-out on one machine: polling replicas sharing the fleet through bucket leases in
//! PostgreSQL (one killed mid-round, the survivors take its buckets without a restart); intake
//! replicas on one MQTT shared subscription (one killed mid-stream); a rolling restart of the intake
//! replicas under load. Every stored reading is checked against the simulator's model.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use tests::procs::{self, Headend, Proc};

use crate::pipeline::Pipeline;

const POLL_METERS: usize = 300;
const POLL_SEED: u64 = 23;
/// The simulated inventory puts these 300 meters on five transformers; the test spreads them over
/// 24 cells so that the 32 buckets (one per cell hash) reach all three pollers.
const CELLS: usize = 24;
const LEASE_BUCKETS: usize = 32;
/// `collect.max_sessions` below: a poller has at most twice as many session tasks alive.
const MAX_SESSIONS: usize = 6;

const POLL_CONFIG: &str = r#"
[collect]
enabled = true
retries = 0
max_sessions = @MAX_SESSIONS@
max_sessions_per_cell = 2
new_connections_per_second = 0
backfill_max = "3days"
lease_buckets = 32
lease_period = "3s"

[[collect.groups]]
name = "dlms"
protocol = "dlms"
profile_every = "1day"
registers_every = "1day"
events_every = "1day"
clock_every = "1day"
offset = "0s"

[dlms]
client = 1
auth = "low"
keys_file = "@KEYS@"
connect_timeout = "3s"
step_timeout = "3s"
"#;

fn floor15(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::minutes(15)).unwrap_or(t)
}

/// The simulator's inventory with the DLMS port of this test and meter `i` on cell `TS-T-<i mod 24>`.
fn rewrite(csv: String, port: u16) -> String {
    let mut out = String::with_capacity(csv.len());
    for (n, line) in csv.lines().enumerate() {
        let line = line.replace(":4059,", &format!(":{port},"));
        let line = match (n, line.find(",TS-")) {
            (1.., Some(a)) => {
                let b = line[a + 1..].find(',').map_or(line.len(), |e| a + 1 + e);
                format!("{},TS-T-{:02}{}", &line[..a], (n - 1) % CELLS, &line[b..])
            }
            _ => line,
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The lease holder id a head-end logged at start.
fn holder_of(h: &Headend) -> String {
    let raw = h.proc.log_tail(1 << 20);
    // Without the terminal colours tracing puts around field names.
    let mut log = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for e in chars.by_ref() {
                if e == 'm' {
                    break;
                }
            }
        } else {
            log.push(c);
        }
    }
    let at = log.find("holder=").expect("the head-end logs its lease holder id") + "holder=".len();
    log[at..].split_whitespace().next().expect("holder id").to_string()
}

fn gauge(h: &Headend, name: &str) -> f64 {
    h.metrics().ok().and_then(|m| procs::metric(&m, name)).unwrap_or(0.0)
}

/// Three pollers share 300 DLMS meters (each session slowed down by the simulator so a round takes
/// several seconds); the one with sessions running is killed mid-round. Within a lease period the
/// other two hold every bucket between them, without a restart, and poll what the dead one left.
///
/// "Read once per round", precisely: every meter's load profile covers the window, each interval
/// stored once and counted once by the ledger (the profile is read by range from the last stored
/// interval, and storage is idempotent, so a profile read again stores nothing twice); every
/// meter's registers — stamped with the time they are read, so a second read would be a second
/// row — are stored exactly once; and the meters contacted twice are only those whose session the
/// dead poller had in flight, not committed, at the kill (at most its session tasks, twice
/// `max_sessions`). That holds because a session's success is committed with its readings and the
/// taker trusts exactly that; the hand-overs between live pollers (at start, as the three share out
/// the buckets) re-read nothing, since a bucket is handed back only once its sessions committed.
#[test]
fn three_pollers_one_killed_mid_round_every_meter_read_once() {
    let port = tests::free_port().expect("port");
    let mut p = Pipeline::with_inventory("leases", POLL_METERS, POLL_SEED, false, &["--protocol", "dlms"], |csv| {
        rewrite(csv, port)
    })
    .expect("pipeline");
    let cells = p.query_i64("SELECT count(DISTINCT transformer)::bigint FROM meters").expect("cells");
    assert_eq!(cells as usize, CELLS);
    let keys = p.dir.path().join("keys.csv");
    let (n, sd, pt) = (POLL_METERS.to_string(), POLL_SEED.to_string(), port.to_string());
    let csv = procs::run_bin("meter-sim", &["keys", "--meters", &n, "--seed", &sd], &[]).expect("keys");
    std::fs::write(&keys, csv).expect("keys file");
    let mut cmd = Command::new(procs::bin("meter-sim").expect("meter-sim"));
    cmd.args(["dlms", "--meters", &n, "--seed", &sd, "--port", &pt, "--no-progress", "--history", "2h"]).args([
        "--latency-rate",
        "1",
        "--latency",
        "100ms..200ms",
    ]);
    let sim_log = p.dir.path().join("meter-sim-dlms.out");
    let mut sim = Proc::spawn("meter-sim", cmd, &sim_log).expect("simulator");
    tests::wait_for_port(([127, 0, 0, 2], port).into(), Duration::from_secs(30)).expect("simulator listening");

    let cfg = p.dir.path().join("headend.toml");
    std::fs::write(
        &cfg,
        POLL_CONFIG.replace("@KEYS@", &keys.to_string_lossy()).replace("@MAX_SESSIONS@", &MAX_SESSIONS.to_string()),
    )
    .expect("config");
    p.spec.env.push(("HEADEND_CONFIG".into(), cfg.to_string_lossy().into()));
    let started = Utc::now();
    // The three start together, as a Deployment's pods do.
    let specs: Vec<_> = (0..3)
        .map(|k| {
            let mut s = p.spec.clone();
            s.client_id = format!("headend-leases-{k}");
            (s, p.dir.path().join(format!("poller-{k}.log")))
        })
        .collect();
    let mut pollers: Vec<Option<Headend>> = std::thread::scope(|sc| {
        let handles: Vec<_> = specs.iter().map(|(s, log)| sc.spawn(move || Headend::start(s, log))).collect();
        handles.into_iter().map(|h| Some(h.join().expect("thread").expect("poller"))).collect()
    });
    let holders: Vec<String> = pollers.iter().map(|h| holder_of(h.as_ref().expect("poller"))).collect();

    let polled = |p: &Pipeline| p.query_i64("SELECT count(*) FROM meter_poll_status WHERE last_success_at IS NOT NULL");
    // Mid-round: a third of the meters read, and the poller with the most sessions running dies.
    let start = Instant::now();
    let victim = loop {
        let done = polled(&p).expect("status");
        assert!(done < POLL_METERS as i64, "the round ended before the kill ({done} meters read)");
        if done >= POLL_METERS as i64 / 3 {
            let busy: Vec<(usize, f64, f64)> = pollers
                .iter()
                .enumerate()
                .map(|(k, h)| {
                    let h = h.as_ref().expect("poller");
                    (k, gauge(h, "headend_poll_sessions_in_flight"), gauge(h, "headend_poll_buckets_held"))
                })
                .collect();
            let (k, running, _) = busy.iter().copied().fold((0, -1.0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
            if running > 0.0 && busy.iter().all(|(_, _, held)| *held > 0.0) {
                break k;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no poller busy with a share of the buckets");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut dead = pollers[victim].take().expect("victim");
    dead.proc.kill().expect("SIGKILL");
    let killed_at = Instant::now();
    let read_before = polled(&p).expect("status");
    assert!(read_before < POLL_METERS as i64, "killed mid-round");

    // Within about one lease period (3 s) the survivors hold every bucket, the dead one none.
    let survivors: Vec<&Headend> = pollers.iter().flatten().collect();
    let live: Vec<&String> = holders.iter().enumerate().filter(|(k, _)| *k != victim).map(|(_, h)| h).collect();
    loop {
        let held: f64 = survivors.iter().map(|h| gauge(h, "headend_poll_buckets_held")).sum();
        let by_dead = p
            .query_i64(&format!(
                "SELECT count(*) FROM poll_leases WHERE holder = '{}' AND expires_at > now()",
                holders[victim]
            ))
            .expect("leases");
        if held as usize == LEASE_BUCKETS && by_dead == 0 {
            break;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(8), "survivors hold {held} of {LEASE_BUCKETS} buckets");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rebalanced = killed_at.elapsed();
    let per_holder: Vec<i64> = live
        .iter()
        .map(|h| {
            p.query_i64(&format!("SELECT count(*) FROM poll_leases WHERE holder = '{h}' AND expires_at > now()"))
                .expect("leases")
        })
        .collect();
    assert_eq!(per_holder.iter().sum::<i64>(), LEASE_BUCKETS as i64, "{per_holder:?}");
    assert!(per_holder.iter().all(|n| *n == (LEASE_BUCKETS / 2) as i64), "fair shares: {per_holder:?}");

    // Every meter is read, by someone, in this round.
    loop {
        if polled(&p).expect("status") == POLL_METERS as i64 {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "{} of {POLL_METERS} meters read",
            polled(&p).unwrap_or(0)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let failed = p.query_i64("SELECT count(*) FROM meter_poll_status WHERE last_error IS NOT NULL").expect("status");
    assert_eq!(failed, 0, "no session failed");
    std::thread::sleep(Duration::from_secs(1)); // the writer's last batch

    // Every stored value equals the model; every meter has every interval of the window once.
    let model = meter_sim::Model::with_meters(POLL_SEED, POLL_METERS);
    let mut profile: HashMap<usize, BTreeSet<(i16, DateTime<Utc>)>> = HashMap::new();
    let mut register_reads: HashMap<usize, BTreeSet<DateTime<Utc>>> = HashMap::new();
    for r in p.stored().expect("rows") {
        let i = model.index_of(&r.serial).expect("a fleet serial");
        let regs = model.registers_at(i, floor15(r.ts)).expect("model");
        let want = regs.channel(r.channel).unwrap_or_else(|| panic!("unexpected channel {}", r.channel));
        assert_eq!(r.value, want, "{} channel {} at {}", r.serial, r.channel, r.ts);
        if floor15(r.ts) == r.ts && (r.channel == 1 || r.channel == 4) {
            profile.entry(i).or_default().insert((r.channel, r.ts));
        }
        if r.channel == 2 {
            register_reads.entry(i).or_default().insert(r.ts);
        }
    }
    let hi = floor15(started) - chrono::Duration::minutes(15);
    let lo = floor15(started) - chrono::Duration::minutes(90);
    for i in 0..POLL_METERS {
        let got = profile.get(&i).map_or(0, |s| {
            let mut t = lo;
            let mut n = 0;
            while t <= hi {
                n += usize::from(s.contains(&(1, t)) && s.contains(&(4, t)));
                t += chrono::Duration::minutes(15);
            }
            n
        });
        assert_eq!(got, 6, "{} lacks profile intervals", meter_sim::serial(i));
    }
    // The registers of every meter are stored once: a session the dead poller committed is seen as
    // done by the taker, one it had not committed stored nothing.
    assert_eq!(register_reads.len(), POLL_METERS, "every meter's registers were read");
    let twice: Vec<String> = register_reads
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(i, s)| format!("{} {s:?}", meter_sim::serial(*i)))
        .collect();
    assert!(twice.is_empty(), "registers stored more than once: {twice:?}");
    // The ledger counted each stored profile interval once (the 1.8.0 register, stored on the
    // same channel at the second it was read, is not an interval).
    let off = p
        .query_i64(
            "SELECT count(*)::bigint FROM
                 (SELECT meter_id, headend_local_day(ts) AS day, count(*) AS n FROM readings
                  WHERE channel_id = 1 AND extract(epoch FROM ts)::bigint % 900 = 0 GROUP BY 1, 2) r
             FULL JOIN read_ledger l USING (meter_id, day)
             WHERE l.received IS DISTINCT FROM r.n",
        )
        .expect("ledger");
    assert_eq!(off, 0, "ledger rows that disagree with the stored readings");
    // Meters contacted again: only the dead poller's sessions in flight at the kill. Nothing is
    // due any more, so the simulator's count is final once it stops.
    drop(pollers);
    sim.signal("TERM").expect("SIGTERM");
    let status = sim.wait(Duration::from_secs(30)).expect("simulator ends");
    assert!(status.success(), "simulator: {}", sim.log_tail(2000));
    let summary = Pipeline::summary_of(&sim_log).expect("summary");
    let sessions = summary["associations"].as_u64().expect("associations") as usize;
    assert!(sessions >= POLL_METERS, "{summary}");
    let again = sessions - POLL_METERS;
    assert!(again <= 2 * MAX_SESSIONS, "{again} meters read again after the take-over: {summary}");
    eprintln!(
        "leases: victim poller {victim} killed with {read_before}/{POLL_METERS} meters read; survivors held all \
         {LEASE_BUCKETS} buckets after {rebalanced:?}; {again} meters contacted again, none stored twice"
    );
}

/// Two intake replicas on one shared subscription (`$share/headend/meters/+/readings`), each with
/// its own persistent session; the simulator publishes 200 meters × 1 day; one replica is killed
/// (SIGKILL) mid-stream. Mosquitto keeps handing the dead member its turn, queued in its session,
/// so the survivor alone does not get everything; the replica comes back with the same client id,
/// as a StatefulSet pod does, and receives its queue. Every reading is stored exactly once and
/// equals the model, and both replicas took a share.
#[test]
fn shared_subscription_replica_killed_mid_stream_loses_and_doubles_nothing() {
    let meters = 200;
    let (from, to) = ("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z");
    let expected = meters as i64 * 96 * 5;
    let mut p = Pipeline::new("share", meters, 29, false).expect("pipeline");
    p.spec.subscription = "$share/headend/meters/+/readings".into();
    let spec = |k: usize| {
        let mut s = p.spec.clone();
        s.client_id = format!("headend-share-{k}");
        s
    };
    let log = |k: usize, run: usize| p.dir.path().join(format!("intake-{k}-{run}.log"));
    let mut a = Headend::start(&spec(0), &log(0, 0)).expect("replica a");
    let b = Headend::start(&spec(1), &log(1, 0)).expect("replica b");
    let (mut sim, sim_log) = p.spawn_publisher(from, to, &["--rate", "2000"]).expect("simulator");
    wait_stored_at_least(&p, expected / 4);
    let m = a.metrics().expect("metrics");
    let a_stored = procs::metric(&m, "headend_readings_stored_total").unwrap_or(0.0);
    let b_stored = procs::metric(&b.metrics().expect("metrics"), "headend_readings_stored_total").unwrap_or(0.0);
    assert!(a_stored > 0.0 && b_stored > 0.0, "both replicas take a share: {a_stored} / {b_stored}");
    a.proc.kill().expect("SIGKILL");
    assert!(sim.is_running(), "killed mid-stream");
    let status = sim.wait(Duration::from_secs(120)).expect("simulator ends");
    assert!(status.success(), "simulator: {}", sim.log_tail(2000));
    let summary = Pipeline::summary_of(&sim_log).expect("summary");
    assert_eq!(summary["readings"].as_i64(), Some(expected), "{summary}");
    // The survivor drains what the broker routes to it; the dead member's turn waits for it.
    let start = Instant::now();
    let mut last = -1;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = p.query_i64("SELECT count(*) FROM readings").expect("count");
        if now == last {
            break;
        }
        last = now;
        assert!(start.elapsed() < Duration::from_secs(60), "the survivor never settles");
    }
    assert!(last < expected, "the dead member's share waits in its session ({last} of {expected} stored)");
    let a = Headend::start(&spec(0), &log(0, 1)).expect("replica a again");
    p.wait_for_readings(expected, Duration::from_secs(120)).expect("everything stored");
    assert_eq!(p.verify(from, to).expect("equal to the model") as i64, expected);
    assert_eq!(p.dead_letters().expect("dead letters").values().sum::<i64>(), 0, "nothing refused");
    drop((a, b));
}

/// A rolling restart under load: two replicas on the shared subscription; while the simulator
/// publishes, each is stopped with SIGTERM (it drains: commits, acknowledges, exits 0) and started
/// again before the next one. Nothing is lost, and nothing is delivered twice: the graceful stop
/// acknowledged everything it committed, so no reading comes back as a duplicate.
#[test]
fn rolling_restart_of_intake_replicas_under_load_loses_and_doubles_nothing() {
    let meters = 200;
    let (from, to) = ("2026-11-05T00:00:00Z", "2026-11-06T00:00:00Z");
    let expected = meters as i64 * 96 * 5;
    let mut p = Pipeline::new("rolling", meters, 31, false).expect("pipeline");
    p.spec.subscription = "$share/headend/meters/+/readings".into();
    let spec = |k: usize| {
        let mut s = p.spec.clone();
        s.client_id = format!("headend-rolling-{k}");
        s
    };
    let log = |k: usize, run: usize| p.dir.path().join(format!("intake-{k}-{run}.log"));
    let mut replicas = vec![
        Headend::start(&spec(0), &log(0, 0)).expect("replica 0"),
        Headend::start(&spec(1), &log(1, 0)).expect("1"),
    ];
    let (mut sim, sim_log) = p.spawn_publisher(from, to, &["--rate", "1500"]).expect("simulator");
    for (k, share) in [(0usize, 4i64), (1, 2)] {
        wait_stored_at_least(&p, expected / share);
        replicas[k].proc.signal("TERM").expect("SIGTERM");
        let status = replicas[k].proc.wait(Duration::from_secs(60)).expect("graceful exit");
        assert!(status.success(), "replica {k} drains and exits 0: {status}");
        assert!(sim.is_running(), "restarted under load");
        replicas[k] = Headend::start(&spec(k), &log(k, 1)).expect("replica restarted");
    }
    let status = sim.wait(Duration::from_secs(120)).expect("simulator ends");
    assert!(status.success(), "simulator: {}", sim.log_tail(2000));
    assert_eq!(Pipeline::summary_of(&sim_log).expect("summary")["readings"].as_i64(), Some(expected));
    p.wait_for_readings(expected, Duration::from_secs(120)).expect("everything stored");
    assert_eq!(p.verify(from, to).expect("equal to the model") as i64, expected);
    for h in &replicas {
        let m = h.metrics().expect("metrics");
        assert_eq!(procs::metric(&m, "headend_readings_duplicate_total"), Some(0.0), "nothing redelivered:\n{m}");
    }
}

fn wait_stored_at_least(p: &Pipeline, n: i64) {
    let start = Instant::now();
    while p.query_i64("SELECT count(*) FROM readings").unwrap_or(0) < n {
        assert!(start.elapsed() < Duration::from_secs(60), "fewer than {n} readings stored after a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
}
