//! `meter-sim dlms-push` against a listener standing in for the head-end: one connection per meter from
//! the meter's loopback address, one DataNotification per interval, values equal to the model's; with
//! `--tamper`, exactly the chosen frames fail their tag check.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, TcpListener};
use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use dlms_cosem_rs::client::{NotificationListener, SingleMeterKeys};
use dlms_cosem_rs::security::{KeyRing, RustCryptoProvider, SecurityPolicy, SecuritySuite, SystemTitle};
use dlms_cosem_rs::transport::wrapper::StreamReassembler;
use meter_sim::dlms::meter_keys;
use meter_sim::dlms::push::Tamper;
use meter_sim::{fleet, loopback_address, Model};

const FROM: &str = "2025-10-26T00:00:00Z";

/// What one notification became at the listener: its interval end and 1.8.0, or the refusal.
type Received = Result<(DateTime<Utc>, u64), String>;

/// Runs `meter-sim dlms-push --ciphered` for `meters` meters (seed 9) over `(FROM, to]` with `extra`
/// arguments; every meter's frames as the listener saw them, in order, and the summary.
fn push(meters: usize, to: &str, extra: &[&str]) -> (BTreeMap<usize, Vec<Received>>, serde_json::Value) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let child = Command::new(env!("CARGO_BIN_EXE_meter-sim"))
        .args(["dlms-push", "--meters", &meters.to_string(), "--seed", "9", "--head-end", &addr.to_string()])
        .args(["--from", FROM, "--to", to, "--ciphered"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dlms-push");
    let mut seen = BTreeMap::new();
    for _ in 0..meters {
        let (mut s, peer) = listener.accept().expect("accept");
        let IpAddr::V4(v4) = peer.ip() else { panic!("v4") };
        let meter = fleet::index_of_loopback(v4).expect("a meter's address");
        assert_eq!(loopback_address(meter), v4);
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).expect("read");
        let keys = meter_keys(9, meter);
        let mut l = NotificationListener::new(
            RustCryptoProvider::new(KeyRing::default()),
            SingleMeterKeys::new(SystemTitle::new(keys.system_title), KeyRing::new(keys.ek, keys.ak)),
            SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0),
        );
        let mut pos = 0;
        let mut frames = Vec::new();
        while pos < bytes.len() {
            let (w, used) = StreamReassembler::new(u16::MAX).next_pdu(&bytes[pos..]).expect("pdu").expect("complete");
            pos += used;
            let mut scratch = [0u8; 512];
            frames.push(l.handle(w.apdu, &mut scratch).map_err(|e| format!("{e:?}")).map(|note| {
                let body = note.body.as_structure().expect("body");
                let dlms_cosem_rs::axdr::Data::OctetString(t) = body.get(1).expect("ts") else { panic!("ts") };
                let ts: DateTime<Utc> = meter_sim::dlms::objects::parse_datetime(t).expect("ts");
                (ts, body.get(2).expect("1.8.0").as_u64().expect("u64"))
            }));
        }
        assert!(seen.insert(meter, frames).is_none(), "meter {meter} connected twice");
    }
    let out = child.wait_with_output().expect("wait");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    (seen, summary)
}

#[test]
fn push_sends_every_interval_of_every_meter() {
    let (seen, summary) = push(3, "2025-10-26T01:00:00Z", &[]);
    let model = Model::new(9);
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    for (meter, frames) in &seen {
        assert_eq!(frames.len(), 4, "meter {meter}");
        for f in frames {
            let (ts, import) = f.as_ref().expect("a valid notification");
            assert_eq!(*import, model.registers_at(*meter, *ts).expect("model").import_total() as u64);
        }
    }
    assert_eq!(summary["notifications"].as_u64(), Some(12), "{summary}");
    assert_eq!(summary["tampered"].as_u64(), Some(0), "{summary}");
}

/// `--tamper`: exactly the frames [`Tamper::hits`] names fail the tag check; the frames after them
/// (next invocation counter) are accepted with the model's values.
#[test]
fn tamper_alters_exactly_the_chosen_frames() {
    let tamper = Tamper { seed: 5, rate: 0.3 };
    let (seen, summary) = push(3, "2025-10-26T02:00:00Z", &["--tamper", "0.3", "--fault-seed", "5"]);
    let model = Model::new(9);
    let from: DateTime<Utc> = FROM.parse().expect("ts");
    let mut tampered = 0;
    for (meter, frames) in &seen {
        assert_eq!(frames.len(), 8, "meter {meter}");
        for (k, f) in frames.iter().enumerate() {
            let ts = from + Duration::minutes(15 * (k as i64 + 1));
            if tamper.hits(*meter, ts) {
                tampered += 1;
                let e = f.as_ref().expect_err("a tampered frame is refused");
                assert!(e.contains("BadTag"), "{e}");
            } else {
                let import = model.registers_at(*meter, ts).expect("model").import_total() as u64;
                assert_eq!(f.as_ref().expect("an intact frame"), &(ts, import), "meter {meter} at {ts}");
            }
        }
    }
    assert!(tampered > 0 && tampered < 24, "{tampered}");
    assert_eq!(summary["tampered"].as_u64(), Some(tampered), "{summary}");
    assert_eq!(summary["notifications"].as_u64(), Some(24), "{summary}");
}
