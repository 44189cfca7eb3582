//! Interoperability: the independent Gurux DLMS client (Python, `tests/peers/gurux_read.py`) reads
//! meters served by the built `meter-sim dlms`, and every value must equal the model's.
//!
//! Needs `scripts/python-peers.sh` (a venv with gurux-dlms). Set `HES_SKIP_PEERS=1` to skip.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meter_sim::dlms::meter_keys;
use meter_sim::{loopback_address, Model};
use serde_json::Value;

const SEED: u64 = 42;
/// The meters' clock at start: 7.5 minutes into an interval, so the reads see the 08:00 registers.
const AT: &str = "2025-03-31T08:07:30Z";
const REG_TS: &str = "2025-03-31T08:00:00Z";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> Option<String> {
    if std::env::var("HES_SKIP_PEERS").is_ok_and(|v| v == "1") {
        eprintln!("HES_SKIP_PEERS=1: skipping the Gurux interoperability test");
        return None;
    }
    let out = Command::new("bash").arg(workspace().join("scripts/python-peers.sh")).output().expect("python-peers.sh");
    assert!(out.status.success(), "python-peers.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).expect("utf8").trim().to_string())
}

struct SimServer {
    child: Child,
    port: u16,
}

impl SimServer {
    fn start(extra: &[&str]) -> SimServer {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_meter-sim"))
            .args(["dlms", "--meters", "30", "--seed", &SEED.to_string(), "--port", &port.to_string()])
            .args(["--at", AT, "--no-progress"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("meter-sim dlms");
        let stderr = child.stderr.take().expect("stderr");
        let mut line = String::new();
        BufReader::new(stderr).read_line(&mut line).expect("read");
        assert!(line.contains("listening"), "{line}");
        SimServer { child, port }
    }

    /// SIGTERM, then the JSON summary.
    fn stop(mut self) -> Value {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "meter-sim did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        BufReader::new(self.child.stdout.take().expect("stdout")).read_line(&mut out).expect("summary");
        serde_json::from_str(&out).expect("summary json")
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the Gurux script; `Ok(results)` or `Err(stderr)`.
fn gurux(py: &str, port: u16, meter: usize, auth: &str, extra: &[&str], ops: &str) -> Result<Vec<Value>, String> {
    let keys = meter_keys(SEED, meter);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/gurux_read.py");
    let host = loopback_address(meter).to_string();
    let port = port.to_string();
    let mut cmd = Command::new(py);
    cmd.arg(script).args(["--host", &host, "--port", &port, "--auth", auth]);
    match auth {
        "low" => {
            cmd.args(["--password", &hex::encode(keys.password)]);
        }
        "gmac" => {
            cmd.args(["--ek", &hex::encode(keys.ek), "--ak", &hex::encode(keys.ak)]);
        }
        _ => {}
    }
    let out = cmd.args(extra).arg(ops).output().expect("python");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    // Gurux prints notes on stdout; the result is the last line.
    let last = stdout.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(last).map_err(|e| format!("{e}: {stdout}"))?;
    Ok(v["results"].as_array().cloned().unwrap_or_default())
}

fn ts(s: &str) -> DateTime<Utc> {
    s.parse().expect("ts")
}

fn check_rows(model: &Model, meter: usize, rows: &Value, expected: &[DateTime<Utc>]) {
    let rows = rows.as_array().expect("rows");
    let got: Vec<DateTime<Utc>> = rows.iter().map(|r| ts(r[0].as_str().expect("ts"))).collect();
    assert_eq!(got, expected, "meter {meter}");
    for r in rows {
        let t = ts(r[0].as_str().expect("ts"));
        let reg = model.registers_at(meter, t).expect("model");
        assert_eq!(r[1].as_i64(), Some(reg.import_total()), "1.8.0 meter {meter} at {t}");
        assert_eq!(r[2].as_i64(), Some(reg.export), "2.8.0 meter {meter} at {t}");
    }
}

fn quarter_hours(from: &str, n: i64) -> Vec<DateTime<Utc>> {
    (0..n).map(|k| ts(from) + chrono::Duration::minutes(15 * k)).collect()
}

fn registers_and_profile(py: &str, port: u16, meter: usize, auth: &str, extra: &[&str]) {
    let model = Model::new(SEED);
    let reg = model.registers_at(meter, ts(REG_TS)).expect("model");
    let iv = model.interval(meter, ts(REG_TS)).expect("model");
    let ops = r#"[["register","1.0.1.8.0.255"],["register","1.0.1.8.1.255"],["register","1.0.1.8.2.255"],
        ["register","1.0.2.8.0.255"],["register","1.0.32.7.0.255"],["register","1.0.1.7.0.255"],
        ["register","1.0.31.7.0.255"],["data","0.0.96.1.0.255"],["entries"],
        ["range","2025-03-29T23:00:00Z","2025-03-30T22:00:00Z"],["entry",2,3],["clock"]]"#;
    let r = gurux(py, port, meter, auth, extra, ops).unwrap_or_else(|e| panic!("meter {meter} {auth}: {e}"));
    assert_eq!(r.len(), 12);
    for (i, want) in [reg.import_total(), reg.import_vt, reg.import_nt, reg.export].into_iter().enumerate() {
        assert_eq!(r[i]["value"].as_f64(), Some(want as f64), "register {i} of meter {meter}");
        assert_eq!(r[i]["unit"].as_i64(), Some(30));
        assert_eq!(r[i]["scaler"].as_f64(), Some(1.0));
    }
    let volts = f64::from(model.voltage_dv(meter, ts(REG_TS)).expect("v")) / 10.0;
    assert!((r[4]["value"].as_f64().expect("v") - volts).abs() < 1e-6, "{:?} vs {volts}", r[4]);
    assert_eq!((r[4]["scaler"].as_f64(), r[4]["unit"].as_i64()), (Some(0.1), Some(35)));
    let watts = iv.energy.import_total() * 4;
    assert_eq!(r[5]["value"].as_f64(), Some(watts as f64));
    assert_eq!(r[5]["unit"].as_i64(), Some(27));
    let amps = (watts * 1000 / i64::from(model.voltage_dv(meter, ts(REG_TS)).expect("v"))) as f64 / 100.0;
    assert!((r[6]["value"].as_f64().expect("a") - amps).abs() < 1e-6);
    assert_eq!(r[7]["value"].as_str(), Some(meter_sim::serial(meter).as_str()));
    assert_eq!(r[8]["value"].as_i64(), Some(288));
    // Range on the spring DST day (92 intervals), both ends inclusive.
    check_rows(&model, meter, &r[9]["rows"], &quarter_hours("2025-03-29T23:00:00Z", 93));
    // Entries 2..=4 of the 288-row buffer ending at 08:00Z.
    let first = ts(REG_TS) - chrono::Duration::minutes(15 * 287);
    let second = (first + chrono::Duration::minutes(15)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    check_rows(&model, meter, &r[10]["rows"], &quarter_hours(&second, 3));
    let clock = ts(r[11]["value"].as_str().expect("clock"));
    assert!((clock - ts(AT)).num_seconds().abs() < 120, "clock {clock}");
}

#[test]
fn gurux_reads_equal_the_model_over_the_wrapper_and_hdlc() {
    let Some(py) = python() else { return };
    let server = SimServer::start(&[]);
    // A master meter (index 0) and flats; LLS, then HLS-GMAC + ciphering with small PDUs (block transfer).
    registers_and_profile(&py, server.port, 0, "low", &[]);
    registers_and_profile(&py, server.port, 4, "gmac", &["--max-pdu", "128"]);
    // A second HLS session continues the invocation counters (read through the public client first).
    registers_and_profile(&py, server.port, 4, "gmac", &["--ic-first", "--max-pdu", "256"]);
    // Public: serial and invocation counter; registers are not public.
    let r = gurux(&py, server.port, 9, "none", &[], r#"[["data","0.0.96.1.0.255"],["data","0.0.43.1.0.255"]]"#)
        .expect("public");
    assert_eq!(r[0]["value"].as_str(), Some("SIM00000010"));
    assert!(gurux(&py, server.port, 9, "none", &[], r#"[["register","1.0.1.8.0.255"]]"#).is_err());
    // A wrong password (meter 10's, at meter 11) is refused.
    let mut wrong = Command::new(&py);
    let out = wrong
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/gurux_read.py"))
        .args(["--host", &loopback_address(11).to_string(), "--port", &server.port.to_string(), "--auth", "low"])
        .args(["--password", &hex::encode(meter_keys(SEED, 10).password), r#"[["data","0.0.96.1.0.255"]]"#])
        .output()
        .expect("python");
    assert!(!out.status.success());
    let summary = server.stop();
    assert!(summary["sessions"].as_u64().expect("sessions") >= 7, "{summary}");
    assert!(summary["associations_refused"].as_u64().expect("refused") >= 1, "{summary}");

    let server = SimServer::start(&["--hdlc"]);
    registers_and_profile(&py, server.port, 2, "low", &["--hdlc"]);
    registers_and_profile(&py, server.port, 3, "gmac", &["--hdlc", "--max-pdu", "200"]);
    let summary = server.stop();
    assert_eq!(summary["protocol_errors"].as_u64(), Some(0), "{summary}");
}
