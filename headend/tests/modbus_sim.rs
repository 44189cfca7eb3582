//! ModbusPoller against the simulator (in process): correct values, classified faults, pool limits, and
//! no panic on garbage replies.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use headend::modbus::{load_map, ModbusError, ModbusPoller, ModbusTarget, PollerConfig, TargetAddress, TransportKind};
use meter_sim::modbus::{channel_values, serve, FaultRates, SimConfig, SimHandle};
use meter_sim::Model;
use schemas::modbus_map::RegisterMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SEED: u64 = 11;

fn maps() -> Vec<Arc<RegisterMap>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/modbus");
    ["eastron-sdm630.toml", "schneider-iem3255.toml"]
        .iter()
        .map(|f| Arc::new(load_map(&dir.join(f)).unwrap_or_else(|e| panic!("{e}"))))
        .collect()
}

fn at() -> DateTime<Utc> {
    "2025-11-20T08:15:00Z".parse().expect("ts")
}

async fn sim(meters: usize, gateways: usize, faults: FaultRates) -> SimHandle {
    serve(SimConfig {
        meters,
        seed: SEED,
        gateways,
        port: 0,
        host: "127.0.0.1".parse().expect("ip"),
        maps: maps(),
        faults,
        at: Some(at()),
    })
    .await
    .expect("sim serves")
}

fn target(sim: &SimHandle, maps: &[Arc<RegisterMap>], i: usize) -> ModbusTarget {
    let addr: TargetAddress = sim.address(i).expect("placed").parse().expect("address");
    ModbusTarget::new(&addr, maps[i % maps.len()].clone())
}

/// What a reader must see for meter `i`: the model's values through the map's encoding.
fn expected(model: &Model, map: &RegisterMap, i: usize) -> BTreeMap<i16, i64> {
    let truth = channel_values(model, i, at()).expect("model");
    map.entries.iter().map(|e| (e.channel.id, e.quantise(truth[&e.channel.id]).expect("quantise"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn modbus_poller_reads_every_meter_exactly() {
    let (meters, gateways) = (120, 3);
    let sim = sim(meters, gateways, FaultRates::default()).await;
    let maps = maps();
    let poller = Arc::new(ModbusPoller::new(PollerConfig { max_connections: 2, ..PollerConfig::default() }));
    let model = Model::with_meters(SEED, meters);
    let mut tasks = Vec::new();
    for i in 0..meters {
        let (p, t) = (poller.clone(), target(&sim, &maps, i));
        tasks.push(tokio::spawn(async move { (i, p.read_meter(&t).await) }));
    }
    for t in tasks {
        let (i, r) = t.await.expect("task");
        let reading = r.unwrap_or_else(|e| panic!("meter {i}: {e}"));
        assert!(reading.invalid.is_empty());
        let got: BTreeMap<i16, i64> = reading.values.iter().map(|v| (v.channel_id, v.value)).collect();
        assert_eq!(got, expected(&model, &maps[i % 2], i), "meter {i}");
        // Integer energy registers (Schneider Int64 Wh) carry the model's exact Wh.
        if i % 2 == 1 {
            let truth = channel_values(&model, i, at()).expect("model");
            assert_eq!(got[&1], truth[&1]);
            assert_eq!(got[&4], truth[&4]);
        }
    }
    assert!(poller.open_connections() <= 2, "pool limit");
    let stats = poller.stats();
    // Coalescing: SDM630 is read in 4 requests, iEM3255 in 5.
    assert_eq!(stats.requests.load(std::sync::atomic::Ordering::Relaxed), 60 * 4 + 60 * 5);
    assert!(stats.errors().is_empty(), "{:?}", stats.errors());
    let readings =
        headend::modbus::to_readings(42, at(), &poller.read_meter(&target(&sim, &maps, 0)).await.expect("read"));
    assert_eq!(readings.len(), maps[0].entries.len());
    assert!(readings
        .iter()
        .all(|r| r.meter_id == 42
            && r.flags == schemas::reading::pack_flags(Default::default(), schemas::Source::Modbus)));
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn modbus_faults_give_correct_values_or_classified_errors() {
    let (meters, gateways) = (200, 4);
    let faults = FaultRates { exception: 0.05, timeout: 0.03, gateway_fail: 0.1, seed: 5 };
    let sim = sim(meters, gateways, faults).await;
    let maps = maps();
    let poller = Arc::new(ModbusPoller::new(PollerConfig {
        max_connections: 3,
        request_timeout: Duration::from_millis(150),
        retries: 2,
        backoff: Duration::from_millis(5),
        ..PollerConfig::default()
    }));
    let model = Model::with_meters(SEED, meters);
    let mut tasks = Vec::new();
    for i in 0..meters {
        let (p, t) = (poller.clone(), target(&sim, &maps, i));
        tasks.push(tokio::spawn(async move { (i, p.read_meter(&t).await) }));
    }
    let mut by_reason: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut ok = 0;
    for t in tasks {
        let (i, r) = t.await.expect("task");
        match r {
            Ok(reading) => {
                assert!(!sim.gateway_failed(i), "meter {i} is dead behind its gateway but answered");
                let got: BTreeMap<i16, i64> = reading.values.iter().map(|v| (v.channel_id, v.value)).collect();
                assert_eq!(got, expected(&model, &maps[i % 2], i), "meter {i}");
                ok += 1;
            }
            Err(e) => {
                *by_reason.entry(e.reason()).or_default() += 1;
                if sim.gateway_failed(i) {
                    assert_eq!(e.reason(), "gateway_target_failed", "meter {i}: {e}");
                } else {
                    assert!(matches!(e.reason(), "illegal_address" | "busy" | "timeout"), "meter {i}: {e}");
                }
            }
        }
    }
    let errors = poller.stats().errors();
    assert!(ok > meters / 2, "ok {ok}, errors {by_reason:?}");
    assert!(by_reason.contains_key("gateway_target_failed"), "{by_reason:?}");
    assert!(errors.get("timeout").copied().unwrap_or(0) > 0, "{errors:?}");
    assert!(errors.get("busy").copied().unwrap_or(0) > 0, "{errors:?}");
    let summary = sim.summary();
    assert!(summary.timeouts > 0 && summary.exceptions.contains_key("busy"), "{summary:?}");
    sim.stop();
}

/// How a junk gateway answers a request (`None`: close the connection).
type Reply = fn(&[u8]) -> Option<Vec<u8>>;

/// A gateway that answers every request with `reply(request)` (or closes when it returns None).
async fn junk_gateway(reply: Reply) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 260];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    match reply(&buf[..n]) {
                        Some(out) => {
                            if s.write_all(&out).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    }
                }
            });
        }
    });
    addr.to_string()
}

#[tokio::test]
async fn modbus_garbage_replies_are_transport_errors_not_panics() {
    let maps = maps();
    let poller = ModbusPoller::new(PollerConfig {
        request_timeout: Duration::from_millis(200),
        retries: 1,
        backoff: Duration::from_millis(1),
        ..PollerConfig::default()
    });
    let replies: [Reply; 8] = [
        // Random bytes.
        |_| Some(vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02]),
        // Valid MBAP header announcing more bytes than will come, then silence.
        |r| Some(vec![r[0], r[1], 0, 0, 0, 200, r[6], r[7]]),
        // Wrong transaction id.
        |r| Some(vec![r[0] ^ 0xff, r[1], 0, 0, 0, 3, r[6], 0x83, 0x02]),
        // Wrong protocol id and a zero length.
        |r| Some(vec![r[0], r[1], 0x12, 0x34, 0, 0]),
        // Right header, byte count disagreeing with the length.
        |r| Some(vec![r[0], r[1], 0, 0, 0, 5, r[6], r[7], 40, 0x12, 0x34]),
        // Fewer registers than asked (one register).
        |r| Some(vec![r[0], r[1], 0, 0, 0, 5, r[6], r[7], 2, 0x12, 0x34]),
        // Unknown exception code for the right function.
        |r| Some(vec![r[0], r[1], 0, 0, 0, 3, r[6], r[7] | 0x80, 0x7f]),
        // Close the connection.
        |_| None,
    ];
    for (k, reply) in replies.into_iter().enumerate() {
        let gw = junk_gateway(reply).await;
        let t = ModbusTarget::new(&format!("{gw}/1").parse::<TargetAddress>().expect("address"), maps[k % 2].clone());
        match poller.read_meter(&t).await {
            Ok(r) => panic!("case {k}: garbage accepted: {r:?}"),
            Err(e @ ModbusError::Transport { .. }) => {
                assert!(matches!(e.reason(), "protocol" | "io" | "timeout"), "case {k}: {e}")
            }
            Err(e @ ModbusError::Exception { .. }) => assert_eq!(e.reason(), "other_exception", "case {k}: {e}"),
        }
    }
    // Nobody listening: a connect error.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let t = ModbusTarget::new(&format!("{closed}/1").parse::<TargetAddress>().expect("address"), maps[0].clone());
    let e = poller.read_meter(&t).await.expect_err("nobody listens");
    assert!(matches!(e, ModbusError::Transport { kind: TransportKind::Connect, .. }), "{e}");
}

#[tokio::test]
async fn modbus_collector_polls_like_any_protocol() {
    use headend::collect::{Poller, Target, Tasks};
    use headend::modbus::ModbusCollector;

    let sim = sim(10, 2, FaultRates::default()).await;
    let maps = maps();
    let collector = ModbusCollector {
        poller: Arc::new(ModbusPoller::new(PollerConfig::default())),
        maps: [("eastron-sdm630".to_string(), maps[0].clone()), ("schneider-iem3255".to_string(), maps[1].clone())]
            .into_iter()
            .collect(),
        default_map: Some("eastron-sdm630".into()),
    };
    let model = Model::with_meters(SEED, 10);
    let tasks = Tasks { registers: true, profile_after: Some(at()), ..Tasks::default() };
    for (i, suffix) in [(0usize, ""), (3, "/schneider-iem3255")] {
        let target = Target {
            meter_id: 100 + i as i32,
            serial: "SIM".into(),
            address: format!("{}{suffix}", sim.address(i).expect("address")).into(),
            cell: "c".into(),
        };
        let before = Utc::now();
        let got = collector.poll(&target, &tasks, None).await.expect("poll");
        let until = got.profile_until.expect("profile task done");
        assert!(until <= Utc::now() && until > before - chrono::Duration::minutes(16));
        let values: BTreeMap<i16, i64> = got.readings.iter().map(|r| (r.channel_id, r.value)).collect();
        assert_eq!(values, expected(&model, &maps[i % 2], i), "meter {i}");
        assert!(got.readings.iter().all(|r| r.ts == until && r.meter_id == 100 + i as i32));
    }
    let bad = Target { meter_id: 1, serial: "SIM".into(), address: "127.0.0.1/1".into(), cell: "c".into() };
    let e = collector.poll(&bad, &tasks, None).await.expect_err("bad address");
    assert!(!e.retryable && e.reason == "address", "{e}");
    sim.stop();
}

/// Registers read per second from 10,000 simulated meters behind 100 gateways (not a CI test:
/// `cargo test -p headend --release --test modbus_sim -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn modbus_bench_10k_meters_behind_100_gateways() {
    let (meters, gateways) = (10_000, 100);
    let sim = sim(meters, gateways, FaultRates::default()).await;
    let maps = maps();
    // The physical limit in this run: the same requests, straight through tokio-modbus, one
    // connection per gateway, back to back (no pool, no map decoding, no retries).
    let raw_started = std::time::Instant::now();
    let mut gateways_tasks = Vec::new();
    for g in 0..gateways {
        let plan: Vec<(usize, Vec<schemas::modbus_map::Block>)> =
            (g..meters).step_by(gateways).map(|i| (i, maps[i % maps.len()].plan())).collect();
        let addr: TargetAddress = sim.address(g).expect("placed").parse().expect("address");
        gateways_tasks.push(tokio::spawn(async move {
            use tokio_modbus::client::Reader;
            use tokio_modbus::prelude::SlaveContext;
            let socket: std::net::SocketAddr = addr.gateway.parse().expect("socket");
            let mut ctx = tokio_modbus::client::tcp::connect(socket).await.expect("connect");
            let mut registers = 0u64;
            for (i, blocks) in plan {
                let unit: TargetAddress = format!("{}/{}", addr.gateway, i / gateways + 1).parse().expect("addr");
                ctx.set_slave(tokio_modbus::Slave(unit.unit));
                for b in blocks {
                    let words = match b.function {
                        schemas::modbus_map::Function::Holding => ctx.read_holding_registers(b.start, b.count).await,
                        schemas::modbus_map::Function::Input => ctx.read_input_registers(b.start, b.count).await,
                    };
                    registers += words.expect("transport").expect("no exception").len() as u64;
                }
            }
            registers
        }));
    }
    let mut raw_registers = 0u64;
    for t in gateways_tasks {
        raw_registers += t.await.expect("task");
    }
    let raw_per_s = raw_registers as f64 / raw_started.elapsed().as_secs_f64();

    let poller = Arc::new(ModbusPoller::new(PollerConfig { max_connections: gateways, ..PollerConfig::default() }));
    let started = std::time::Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(1000));
    let mut tasks = Vec::with_capacity(meters);
    for i in 0..meters {
        let (p, t, s) = (poller.clone(), target(&sim, &maps, i), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = s.acquire_owned().await;
            p.read_meter(&t).await.is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.expect("task"));
    }
    let secs = started.elapsed().as_secs_f64();
    let registers = poller.stats().registers.load(std::sync::atomic::Ordering::Relaxed);
    let per_s = registers as f64 / secs;
    println!(
        "{{\"meters\":{meters},\"gateways\":{gateways},\"ok\":{ok},\"registers\":{registers},\"elapsed_s\":{secs:.3},\"registers_per_s\":{per_s:.0},\"meters_per_s\":{:.0},\"raw_tokio_modbus_registers_per_s\":{raw_per_s:.0},\"ratio_to_raw\":{:.2}}}",
        ok as f64 / secs,
        per_s / raw_per_s
    );
    assert_eq!(ok, meters);
    sim.stop();
}
