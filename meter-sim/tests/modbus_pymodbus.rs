//! pymodbus (an independent Modbus client) reads the `meter-sim modbus` binary and gets the model's values.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meter_sim::modbus::{channel_values, load_map};
use meter_sim::Model;
use schemas::channel::by_obis;
use schemas::modbus_map::RegisterMap;
use schemas::ObisCode;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Two consecutive free ports (best effort: free when checked).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let Ok(a) = TcpListener::bind("127.0.0.1:0") else { continue };
        let Ok(port) = a.local_addr().map(|x| x.port()) else { continue };
        if port == u16::MAX {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports");
}

#[test]
fn pymodbus_reads_the_models_values() {
    let script = workspace().join("scripts/python-peers.sh");
    let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().expect("python-peers.sh runs");
    assert!(out.status.success(), "python-peers.sh failed");
    let python = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();

    let (meters, seed, gateways) = (40usize, 7u64, 2usize);
    let at: DateTime<Utc> = "2025-06-02T10:00:00Z".parse().expect("ts");
    let maps: Vec<PathBuf> = ["eastron-sdm630.toml", "schneider-iem3255.toml"]
        .iter()
        .map(|f| workspace().join("config/modbus").join(f))
        .collect();
    let port = free_port_pair();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meter-sim"));
    cmd.args(["modbus", "--meters", &meters.to_string(), "--seed", &seed.to_string()]).args([
        "--gateways",
        &gateways.to_string(),
        "--port",
        &port.to_string(),
        "--at",
        "2025-06-02T10:00:00Z",
    ]);
    for m in &maps {
        cmd.arg("--map").arg(m);
    }
    let sim = Kill(cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("sim starts"));
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in [port, port + 1] {
        while TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(Instant::now() < deadline, "sim does not listen on {p}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let indices = [0usize, 1, 2, 3, 17, 38, 39];
    let map_list = maps.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
    let py = Command::new(&python)
        .arg(workspace().join("meter-sim/tests/peers/pymodbus_read.py"))
        .args(["127.0.0.1", &port.to_string(), &gateways.to_string(), &map_list])
        .args(indices.iter().map(ToString::to_string))
        .output()
        .expect("python runs");
    assert!(py.status.success(), "pymodbus_read.py: {}", String::from_utf8_lossy(&py.stderr));
    let got: serde_json::Value = serde_json::from_slice(&py.stdout).expect("json");

    let parsed: Vec<RegisterMap> = maps.iter().map(|p| load_map(p).expect("map")).collect();
    let model = Model::with_meters(seed, meters);
    let mut checked = 0;
    for i in indices {
        let map = &parsed[i % parsed.len()];
        let truth = channel_values(&model, i, at).expect("model");
        let values = got[i.to_string()]["values"].as_object().expect("values");
        assert_eq!(values.len(), map.entries.len(), "meter {i}");
        for e in &map.entries {
            let obis: ObisCode = e.channel.obis;
            let ch = by_obis(&obis).expect("channel");
            let physical = values[&entry_obis(map, &e.name)].as_f64().expect("number");
            let stored = physical / 10f64.powi(i32::from(ch.scaler));
            let want = truth[&ch.id] as f64;
            let tol = if e.data_type.is_float() { want.abs() * 2f64.powi(-23) + 1e-6 } else { 1e-6 };
            assert!(
                (stored - want).abs() <= tol,
                "meter {i} {} ({}): pymodbus {stored}, model {want}",
                e.name,
                map.model
            );
            checked += 1;
        }
    }
    assert!(checked >= 70, "{checked}");
    drop(sim);
}

/// The obis string of an entry as written in the map file (pymodbus keys its values by it).
fn entry_obis(map: &RegisterMap, name: &str) -> String {
    let text = std::fs::read_to_string(&map.source).expect("map text");
    let file: toml::Value = toml::from_str(&text).expect("toml");
    file["register"]
        .as_array()
        .and_then(|regs| regs.iter().find(|r| r["name"].as_str() == Some(name)))
        .and_then(|r| r["obis"].as_str())
        .expect("entry")
        .to_string()
}
