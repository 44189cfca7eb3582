//! `meter-sim dlms-push` against a listener standing in for the head-end: one connection per meter from
//! the meter's loopback address, one DataNotification per interval, values equal to the model's.

use std::io::Read;
use std::net::{IpAddr, TcpListener};
use std::process::Command;

use chrono::{DateTime, Utc};
use dlms_cosem_rs::client::{NotificationListener, SingleMeterKeys};
use dlms_cosem_rs::security::{KeyRing, RustCryptoProvider, SecurityPolicy, SecuritySuite, SystemTitle};
use dlms_cosem_rs::transport::wrapper::StreamReassembler;
use meter_sim::dlms::meter_keys;
use meter_sim::{fleet, loopback_address, Model};

#[test]
fn push_sends_every_interval_of_every_meter() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let child = Command::new(env!("CARGO_BIN_EXE_meter-sim"))
        .args(["dlms-push", "--meters", "3", "--seed", "9", "--head-end", &addr.to_string()])
        .args(["--from", "2025-10-26T00:00:00Z", "--to", "2025-10-26T01:00:00Z", "--ciphered"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dlms-push");
    let model = Model::new(9);
    let mut seen = Vec::new();
    for _ in 0..3 {
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
        let mut n = 0;
        while pos < bytes.len() {
            let (w, used) = StreamReassembler::new(u16::MAX).next_pdu(&bytes[pos..]).expect("pdu").expect("complete");
            pos += used;
            let mut scratch = [0u8; 512];
            let note = l.handle(w.apdu, &mut scratch).expect("notification");
            let body = note.body.as_structure().expect("body");
            let dlms_cosem_rs::axdr::Data::OctetString(t) = body.get(1).expect("ts") else { panic!("ts") };
            let ts: DateTime<Utc> = meter_sim::dlms::objects::parse_datetime(t).expect("ts");
            let reg = model.registers_at(meter, ts).expect("model");
            assert_eq!(body.get(2).expect("1.8.0").as_u64(), Some(reg.import_total() as u64));
            n += 1;
        }
        assert_eq!(n, 4, "meter {meter}");
        seen.push(meter);
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2]);
    let out = child.wait_with_output().expect("wait");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["notifications"].as_u64(), Some(12), "{summary}");
}
