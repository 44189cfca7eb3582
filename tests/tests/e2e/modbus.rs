//! Modbus polling end to end through the same scheduler, writer and ledger as DLMS: `meter-sim
//! modbus` serves 300 meters behind 100 gateways (two real register maps) with exceptions, lost
//! replies and failed gateway targets; the head-end polls them. Every stored value is the model's
//! (as the meter's map can represent it), failures are counted by reason, and rounds started through
//! the API fill every meter except those behind a failed gateway target, which keep failing with
//! that reason.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use schemas::modbus_map::RegisterMap;
use tests::procs::{self, Proc};

use crate::pipeline::Pipeline;

const METERS: usize = 300;
const SEED: u64 = 21;

const CONFIG: &str = r#"
[collect]
enabled = true
retries = 0
max_sessions = 64
new_connections_per_second = 0

[[collect.groups]]
name = "modbus"
protocol = "modbus"
profile_every = "1day"
registers_every = "1day"
events_every = "1day"
clock_every = "1day"
offset = "0s"

[modbus]
request_timeout = "1s"
connect_timeout = "2s"
retries = 1
backoff = "50ms"
"#;

fn maps() -> BTreeMap<String, Arc<RegisterMap>> {
    let dir = tests::repo_root().join("config/modbus");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).expect("config/modbus") {
        let path = e.expect("entry").path();
        if path.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&path).expect("map");
            let file: schemas::modbus_map::MapFile = toml::from_str(&text).expect("map parses");
            let map = RegisterMap::from_file(&path.to_string_lossy(), file).expect("map valid");
            let stem = path.file_stem().expect("stem").to_string_lossy().into_owned();
            out.insert(stem, Arc::new(map));
        }
    }
    out
}

/// 100 free consecutive ports for the gateways, below the ephemeral range (32768+) so no outgoing
/// connection takes one meanwhile.
fn port_block() -> u16 {
    let pid = std::process::id() as usize;
    for attempt in 0..120usize {
        let base = 20_000 + u16::try_from((pid + attempt * 37) % 120).unwrap_or(0) * 100;
        let all_free = (0..100).all(|g| std::net::TcpListener::bind(("127.0.0.1", base + g)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no block of 100 free ports between 20000 and 32000");
}

#[test]
fn modbus_meters_polled_with_faults_store_the_model_and_fill_up() {
    let base = port_block();
    let mut p = Pipeline::with_inventory("modbus", METERS, SEED, false, &["--protocol", "modbus"], |csv| {
        let mut out = csv;
        for g in (0..100u16).rev() {
            out = out.replace(&format!("127.0.0.1:{}/", 5020 + g), &format!("127.0.0.1:{}/", base + g));
        }
        out
    })
    .expect("pipeline");
    let mut sim_cmd = Command::new(procs::bin("meter-sim").expect("meter-sim"));
    sim_cmd.args([
        "modbus",
        "--meters",
        &METERS.to_string(),
        "--seed",
        &SEED.to_string(),
        "--port",
        &base.to_string(),
        "--exception-rate",
        "0.02",
        "--timeout-rate",
        "0.01",
        "--gateway-fail-rate",
        "0.02",
    ]);
    let sim_log = p.dir.path().join("meter-sim-modbus.out");
    let _sim = Proc::spawn("meter-sim", sim_cmd, &sim_log).expect("simulator");
    tests::wait_for_port(([127, 0, 0, 1], base + 99).into(), Duration::from_secs(30)).expect("gateways listening");

    let cfg = p.dir.path().join("headend.toml");
    let maps_dir = tests::repo_root().join("config/modbus");
    std::fs::write(&cfg, format!("{CONFIG}maps_dir = {:?}\n", maps_dir.to_string_lossy())).expect("config");
    p.spec.env.push(("HEADEND_CONFIG".into(), cfg.to_string_lossy().into()));
    let headend = p.start_headend().expect("head-end");

    let maps = maps();
    let model = meter_sim::Model::with_meters(SEED, METERS);
    let mut failed_before = usize::MAX;
    let mut sessions = 0usize;
    let mut polled = METERS;
    for round in 0..6 {
        if round > 0 {
            crate::pipeline::start_round(&headend, &p.token);
        }
        sessions += polled;
        let failed = crate::pipeline::wait_round(&headend, "modbus", sessions);
        let with_data = wait_meters(&p, METERS - failed);
        assert_eq!(with_data, METERS - failed);
        check_values(&p, &model, &maps);
        assert!(failed <= failed_before, "round {round}: {failed} failed after {failed_before}");
        if failed == failed_before {
            break;
        }
        failed_before = failed;
        polled = failed;
    }
    // What is left fails for its gateway target, every time, and says so.
    let errors: Vec<String> = p.rt.block_on(async {
        let c = p.db.client().await.expect("db");
        c.query("SELECT last_error FROM meter_poll_status WHERE last_error IS NOT NULL", &[])
            .await
            .expect("status")
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    assert_eq!(errors.len(), failed_before, "{errors:?}");
    assert!(!errors.is_empty(), "some gateway targets fail");
    assert!(errors.iter().all(|e| e.starts_with("gateway_target_failed")), "{errors:?}");
    let m = headend.metrics().expect("metrics");
    let n = procs::metric_labelled(
        &m,
        "headend_poll_sessions_total",
        &[("protocol", "modbus"), ("outcome", "gateway_target_failed")],
    );
    assert!(n.unwrap_or(0.0) > 0.0, "failures counted by reason:\n{m}");
}

fn wait_meters(p: &Pipeline, n: usize) -> usize {
    let start = Instant::now();
    loop {
        let got = p.query_i64("SELECT count(DISTINCT meter_id)::bigint FROM readings").expect("count") as usize;
        if got >= n || start.elapsed() > Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(500));
            return p.query_i64("SELECT count(DISTINCT meter_id)::bigint FROM readings").expect("count") as usize;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every stored value is the model's value at its interval, as the meter's register map represents
/// it (exact for integer registers, the nearest float for float registers).
fn check_values(p: &Pipeline, model: &meter_sim::Model, maps: &BTreeMap<String, Arc<RegisterMap>>) {
    let rows: Vec<(String, String, i16, DateTime<Utc>, i64)> =
        p.stored().expect("rows").into_iter().map(|r| (r.serial, r.address, r.channel, r.ts, r.value)).collect();
    assert!(!rows.is_empty());
    let mut channels = BTreeSet::new();
    for (serial, address, ch, ts, value) in rows {
        let i = model.index_of(&serial).expect("serial");
        let map_name = address.rsplit('/').next().expect("map in address");
        let map = maps.get(map_name).expect("known map");
        let want = meter_sim::modbus::values::channel_values(model, i, ts).expect("model");
        let exact = want.get(&ch).copied().expect("a simulated channel");
        let entry = map.entry_for(ch).expect("a mapped channel");
        let representable = entry.quantise(exact).expect("quantise");
        assert_eq!(value, representable, "{serial} ({map_name}) channel {ch} at {ts}: model {exact}");
        channels.insert(ch);
    }
    assert!(channels.contains(&1) && channels.contains(&4), "{channels:?}");
}
