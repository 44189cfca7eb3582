//! The DLMS server driven sans-I/O through `Connection::on_bytes` by dlms-cosem-rs's own client, and a
//! deterministic mutation test of the connection state machine (the fuzz target's always-on sibling).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use dlms_cosem_rs::acse::AuthMechanism;
use dlms_cosem_rs::axdr::Data;
use dlms_cosem_rs::client::{AssociationStep, BlockCollector, ClientConfig, ClientSession, Response};
use dlms_cosem_rs::codec::{Decode, Encode, Reader};
use dlms_cosem_rs::cosem::{EntryDescriptor, RangeDescriptor};
use dlms_cosem_rs::obis::Obis;
use dlms_cosem_rs::security::{KeyRing, RustCryptoProvider, Secret, SecurityPolicy, SecuritySuite, SystemTitle};
use dlms_cosem_rs::transport::wrapper::{StreamReassembler, Wpdu};
use dlms_cosem_rs::xdlms::AttributeDescriptor;
use meter_sim::dlms::objects::{cosem_datetime, parse_datetime};
use meter_sim::dlms::{meter_keys, Connection, Sim, SimConfig, Step};

const SEED: u64 = 42;

fn wall() -> DateTime<Utc> {
    "2025-03-31T08:07:30Z".parse().expect("ts")
}

fn sim() -> Arc<Sim> {
    Arc::new(Sim::new(SimConfig::new(SEED, 300)))
}

struct Rng;
impl dlms_cosem_rs::security::RandomSource for Rng {
    fn fill(&self, out: &mut [u8]) -> dlms_cosem_rs::codec::Result<()> {
        for (i, b) in out.iter_mut().enumerate() {
            *b = 0x40 + i as u8;
        }
        Ok(())
    }
}

struct Client {
    conn: Connection,
    session: ClientSession<RustCryptoProvider<Rng>>,
    sap: u16,
}

impl Client {
    fn new(sim: &Arc<Sim>, meter: usize, mechanism: AuthMechanism, max_pdu: u16) -> Client {
        let keys = meter_keys(SEED, meter);
        let (sap, security, password) = match mechanism {
            AuthMechanism::None => (16, SecurityPolicy::NONE, None),
            AuthMechanism::Low => (1, SecurityPolicy::NONE, Secret::new(&keys.password).ok()),
            _ => (1, SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0), None),
        };
        let config = ClientConfig {
            client_sap: sap as u8,
            system_title: Some(SystemTitle::new(*b"TST00001")),
            mechanism,
            password,
            security,
            max_pdu_size: max_pdu,
            ..Default::default()
        };
        let session = ClientSession::new(config, RustCryptoProvider::with_rng(KeyRing::new(keys.ek, keys.ak), Rng));
        Client { conn: Connection::accept(sim.clone(), meter), session, sap }
    }

    /// Sends one APDU, returns the reply APDU.
    fn exchange(&mut self, apdu: &[u8]) -> Vec<u8> {
        let mut framed = Vec::new();
        Wpdu::new(self.sap, 1, apdu).expect("wpdu").encode(&mut framed).expect("encode");
        let mut out = Vec::new();
        // Byte by byte for the first half: the reassembly must cope.
        let half = framed.len() / 2;
        for b in &framed[..half] {
            assert_eq!(self.conn.on_bytes(std::slice::from_ref(b), wall(), &mut out), Step::Continue);
        }
        assert_eq!(self.conn.on_bytes(&framed[half..], wall(), &mut out), Step::Continue);
        let (w, used) = StreamReassembler::new(u16::MAX).next_pdu(&out).expect("pdu").expect("complete");
        assert_eq!(used, out.len());
        assert_eq!((w.header.source, w.header.destination), (1, self.sap));
        w.apdu.to_vec()
    }

    fn associate(&mut self) -> AssociationStep {
        let mut buf = [0u8; 2048];
        let n = self.session.associate_request(&mut buf).expect("aarq");
        let reply = self.exchange(&buf[..n]);
        let step = self.session.handle_associate_response(&reply).expect("aare");
        if step != AssociationStep::HlsReplyRequired {
            return step;
        }
        let n = self.session.hls_reply_request(&mut buf).expect("hls");
        let reply = self.exchange(&buf[..n]);
        self.session.handle_hls_reply_response(&reply).expect("hls reply")
    }

    /// GET with block transfer; returns the encoded value.
    fn get(
        &mut self,
        class: u16,
        obis: Obis,
        attr: i8,
        access: Option<dlms_cosem_rs::xdlms::SelectiveAccess<'_>>,
    ) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; 4096];
        let n = self.session.get_request(AttributeDescriptor::new(class, obis, attr), access, &mut buf).expect("get");
        let mut reply = self.exchange(&buf[..n]);
        let mut store = vec![0u8; 65536];
        let mut collector = BlockCollector::new(&mut store);
        loop {
            let mut scratch = vec![0u8; 65536];
            match self.session.handle_response(&reply, &mut scratch).map_err(|e| format!("{e:?}"))? {
                Response::Data(d) => {
                    let mut v = Vec::new();
                    d.encode(&mut v).expect("encode");
                    return Ok(v);
                }
                Response::Block { last, number, data } => {
                    collector.push(number, data).expect("block");
                    if last {
                        return Ok(collector.bytes().to_vec());
                    }
                    let n = self.session.get_next_block_request(number, &mut buf).expect("next");
                    reply = self.exchange(&buf[..n]);
                }
                other => return Err(format!("{other:?}")),
            }
        }
    }
}

fn decode(v: &[u8]) -> Data<'_> {
    Data::decode(&mut Reader::new(v)).expect("data")
}

fn u(v: &[u8]) -> u64 {
    decode(v).as_u64().expect("number")
}

#[test]
fn public_client_reads_the_allowed_subset_only() {
    let sim = sim();
    let mut c = Client::new(&sim, 0, AuthMechanism::None, 1024);
    assert_eq!(c.associate(), AssociationStep::Established);
    let serial = c.get(1, Obis::new(0, 0, 96, 1, 0, 255), 2, None).expect("serial");
    assert_eq!(serial, b"\x0a\x0bSIM00000001");
    assert_eq!(u(&c.get(1, Obis::new(0, 0, 43, 1, 0, 255), 2, None).expect("ic")), 0);
    let clock = c.get(8, Obis::new(0, 0, 1, 0, 0, 255), 2, None).expect("clock");
    // 08:07:30 UTC on 2025-03-31 = 10:07:30 CEST: deviation −120, DST bit.
    assert_eq!(clock[..2], [0x09, 0x0C]);
    assert_eq!(clock[2..], cosem_datetime(wall()));
    assert_eq!(&clock[2..], &[0x07, 0xE9, 3, 31, 1, 10, 7, 30, 0, 0xFF, 0x88, 0x80]);
    assert!(c.get(3, Obis::new(1, 0, 1, 8, 0, 255), 2, None).is_err(), "registers need management");
}

#[test]
fn lls_reads_registers_equal_to_the_model() {
    let sim = sim();
    let meter = 5;
    let mut c = Client::new(&sim, meter, AuthMechanism::Low, 1024);
    assert_eq!(c.associate(), AssociationStep::Established);
    let ts: DateTime<Utc> = "2025-03-31T08:00:00Z".parse().expect("ts");
    let r = sim.model.registers_at(meter, ts).expect("model");
    let get = |c: &mut Client, obis: [u8; 6], attr| c.get(3, Obis::from_bytes(obis), attr, None).expect("get");
    assert_eq!(u(&get(&mut c, [1, 0, 1, 8, 0, 255], 2)), r.import_total() as u64);
    assert_eq!(u(&get(&mut c, [1, 0, 1, 8, 1, 255], 2)), r.import_vt as u64);
    assert_eq!(u(&get(&mut c, [1, 0, 1, 8, 2, 255], 2)), r.import_nt as u64);
    assert_eq!(u(&get(&mut c, [1, 0, 2, 8, 0, 255], 2)), r.export as u64);
    assert_eq!(get(&mut c, [1, 0, 1, 8, 0, 255], 3), [2, 2, 0x0F, 0, 0x16, 30]);
    assert_eq!(get(&mut c, [1, 0, 32, 7, 0, 255], 3), [2, 2, 0x0F, 0xFF, 0x16, 35]);
    assert_eq!(u(&get(&mut c, [1, 0, 32, 7, 0, 255], 2)), sim.model.voltage_dv(meter, ts).expect("v") as u64);
    let energy = sim.model.interval(meter, ts).expect("iv").energy.import_total();
    assert_eq!(u(&get(&mut c, [1, 0, 1, 7, 0, 255], 2)), (energy * 4) as u64);

    // Wrong password: refused.
    let mut bad = Client::new(&sim, meter, AuthMechanism::Low, 1024);
    bad.conn = Connection::accept(sim.clone(), meter + 1);
    assert!(matches!(bad.associate(), AssociationStep::Rejected { .. }));
}

fn check_profile_rows(sim: &Sim, meter: usize, value: &[u8], expected: &[DateTime<Utc>]) {
    let Data::Array(rows) = decode(value) else { panic!("array") };
    assert_eq!(rows.len(), expected.len());
    for (row, ts) in rows.iter().zip(expected) {
        let Data::Structure(cells) = row.expect("row") else { panic!("structure") };
        let Data::OctetString(t) = cells.get(0).expect("clock") else { panic!("clock") };
        assert_eq!(parse_datetime(t), Some(*ts));
        let r = sim.model.registers_at(meter, *ts).expect("model");
        assert_eq!(cells.get(1).expect("1.8.0").as_u64(), Some(r.import_total() as u64));
        assert_eq!(cells.get(2).expect("2.8.0").as_u64(), Some(r.export as u64));
    }
}

#[test]
fn hls_ciphered_profile_by_range_and_entry_with_block_transfer() {
    let sim = sim();
    let meter = 7;
    let profile = Obis::new(1, 0, 99, 1, 0, 255);
    let mut c = Client::new(&sim, meter, AuthMechanism::HighGmac, 256);
    assert_eq!(c.associate(), AssociationStep::Established);
    // The spring DST day 2025-03-30 (local): 92 intervals, ends from 2025-03-29T23:15Z to 2025-03-30T22:00Z.
    let from: DateTime<Utc> = "2025-03-29T23:00:00Z".parse().expect("ts");
    let to: DateTime<Utc> = "2025-03-30T22:00:00Z".parse().expect("ts");
    let mut sa = [0u8; 128];
    let range = RangeDescriptor::by_clock(
        dlms_cosem_rs::axdr::DateTime::from_bytes(cosem_datetime(from)),
        dlms_cosem_rs::axdr::DateTime::from_bytes(cosem_datetime(to)),
    );
    let v = c.get(7, profile, 2, Some(range.to_selective_access(&mut sa).expect("sa"))).expect("range");
    // Inclusive on both ends: the previous day's last interval end (= from) and the 92 of the day.
    let expected: Vec<_> = (0..=92).map(|k| from + Duration::minutes(15 * k)).collect();
    check_profile_rows(&sim, meter, &v, &expected);

    // By entry: rows 2..=4 of the 3-day buffer ending at 08:00Z.
    let end: DateTime<Utc> = "2025-03-31T08:00:00Z".parse().expect("ts");
    let first = end - Duration::minutes(15 * 287);
    let v = c
        .get(7, profile, 2, Some(EntryDescriptor::entries(2, 4).to_selective_access(&mut sa).expect("sa")))
        .expect("entry");
    let expected: Vec<_> = (1..=3).map(|k| first + Duration::minutes(15 * k)).collect();
    check_profile_rows(&sim, meter, &v, &expected);

    // The whole buffer (about 8 KB) through 256-byte blocks.
    let v = c.get(7, profile, 2, None).expect("all");
    let expected: Vec<_> = (0..288).map(|k| first + Duration::minutes(15 * k)).collect();
    check_profile_rows(&sim, meter, &v, &expected);
    assert_eq!(u(&c.get(7, profile, 7, None).expect("entries")), 288);
    assert_eq!(u(&c.get(7, profile, 4, None).expect("period")), 900);
}

#[test]
fn invocation_counters_increase_across_sessions_and_wrong_keys_fail() {
    let sim = sim();
    let mut c = Client::new(&sim, 3, AuthMechanism::HighGmac, 1024);
    assert_eq!(c.associate(), AssociationStep::Established);
    c.get(3, Obis::new(1, 0, 1, 8, 0, 255), 2, None).expect("read");
    c.conn.close();
    let after_first = sim.meter(3).expect("state");
    assert!(after_first.server_ic >= 2, "{after_first:?}");
    let client_ic = after_first.client_ic.expect("client ic").1;
    // The public client sees the client counter.
    let mut p = Client::new(&sim, 3, AuthMechanism::None, 1024);
    assert_eq!(p.associate(), AssociationStep::Established);
    assert_eq!(u(&p.get(1, Obis::new(0, 0, 43, 1, 0, 255), 2, None).expect("ic")), u64::from(client_ic));

    let mut cfg = SimConfig::new(SEED, 300);
    cfg.faults.wrong_keys = 1.0;
    let bad = Arc::new(Sim::new(cfg));
    let mut c = Client::new(&bad, 3, AuthMechanism::HighGmac, 1024);
    assert!(!matches!(c.associate(), AssociationStep::Established));
}

/// The wrong-password fault: LLS is refused with authentication-failure; public and HLS still work.
#[test]
fn a_wrong_password_refuses_lls_only() {
    use dlms_cosem_rs::acse::{AssociationResult, Diagnostic, UserDiagnostic};
    let sim = sim_with(|c| c.faults.wrong_password = 1.0);
    let mut c = Client::new(&sim, 5, AuthMechanism::Low, 1024);
    match c.associate() {
        AssociationStep::Rejected { result, diagnostic } => {
            assert_eq!(result, AssociationResult::RejectedPermanent);
            assert_eq!(diagnostic, Diagnostic::User(UserDiagnostic::AuthenticationFailure));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.summary(0.0).faults.wrong_password_sessions, 1);
    for mechanism in [AuthMechanism::None, AuthMechanism::HighGmac] {
        let mut c = Client::new(&sim, 5, mechanism, 1024);
        assert_eq!(c.associate(), AssociationStep::Established, "{mechanism:?}");
    }
}

#[test]
fn foreign_client_sap_closes() {
    let sim = sim();
    let mut conn = Connection::accept(sim, 0);
    let mut framed = Vec::new();
    let aarq = hex_bytes("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0");
    Wpdu::new(0x20, 1, &aarq).expect("wpdu").encode(&mut framed).expect("encode");
    let mut out = Vec::new();
    assert_eq!(conn.on_bytes(&framed, wall(), &mut out), Step::Close);
    assert!(out.is_empty());
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// Deterministic mutations of valid sessions (wrapper and HDLC): nothing panics, output stays bounded.
#[test]
fn mutated_input_never_panics() {
    let seeds: Vec<Vec<u8>> = vec![
        hex_bytes("000100100001001F601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0"),
        hex_bytes("000100100001000DC001C100070100630100FF0200"),
        hex_bytes("7EA00802232193BD647E"),
        hex_bytes("7EA02C02232110AF9FE6E600601DA109060760857405080101BE10040E01000000065F1F0400001E1DFFFFC5E47E"),
    ];
    let mut x: u64 = 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for hdlc in [false, true] {
        let mut cfg = SimConfig::new(SEED, 50);
        cfg.hdlc = hdlc;
        let sim = Arc::new(Sim::new(cfg));
        let mut answered = 0;
        for round in 0..3000 {
            let mut conn = Connection::accept(sim.clone(), round % 50);
            let mut out = Vec::new();
            for _ in 0..(next() % 4 + 1) {
                let mut input = seeds[(next() % seeds.len() as u64) as usize].clone();
                for _ in 0..(next() % 6) {
                    let i = (next() % input.len() as u64) as usize;
                    match next() % 4 {
                        0 => input[i] ^= 1 << (next() % 8),
                        1 => input[i] = next() as u8,
                        2 => input.truncate(i.max(1)),
                        _ => input.insert(i, next() as u8),
                    }
                }
                if conn.on_bytes(&input, wall(), &mut out) == Step::Close {
                    break;
                }
            }
            assert!(out.len() < 1 << 20);
            answered += usize::from(!out.is_empty());
            conn.close();
        }
        assert!(answered > 300, "hdlc {hdlc}: only {answered} sessions got an answer");
    }
}

fn sim_with(f: impl FnOnce(&mut SimConfig)) -> Arc<Sim> {
    let mut cfg = SimConfig::new(SEED, 300);
    f(&mut cfg);
    Arc::new(Sim::new(cfg))
}

const AARQ_PUBLIC: &str = "000100100001001F601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0";
/// GET 0.0.96.1.0.255 attribute 2 (serial), invoke id 1.
const GET_SERIAL: &str = "000100100001000DC001C100010000600100FF0200";

fn feed(conn: &mut Connection, hex: &str) -> (Step, Vec<u8>) {
    let mut out = Vec::new();
    let step = conn.on_bytes(&hex_bytes(hex), wall(), &mut out);
    (step, out)
}

#[test]
fn faults_remove_exactly_what_the_documentation_says() {
    use meter_sim::dlms::SessionFault;
    // Refuse: closed before anything is read.
    let sim = sim_with(|c| c.faults.refuse = 1.0);
    let mut conn = Connection::accept(sim.clone(), 1);
    assert!(conn.refuses());
    assert_eq!(feed(&mut conn, AARQ_PUBLIC), (Step::Close, vec![]));
    // No answer: everything is swallowed.
    let sim = sim_with(|c| c.faults.no_answer = 1.0);
    let mut conn = Connection::accept(sim.clone(), 1);
    assert_eq!(feed(&mut conn, AARQ_PUBLIC), (Step::Continue, vec![]));
    assert_eq!(feed(&mut conn, GET_SERIAL), (Step::Continue, vec![]));
    // Drop: the first `after` requests are answered, the next closes the connection unanswered.
    let sim = sim_with(|c| c.faults.drop = 1.0);
    for meter in 0..20 {
        let mut conn = Connection::accept(sim.clone(), meter);
        let SessionFault::Drop { after } = conn.fault() else { panic!("{:?}", conn.fault()) };
        assert_eq!(sim.config.faults.session_fault(meter, 0), conn.fault());
        let (step, out) = feed(&mut conn, AARQ_PUBLIC);
        assert_eq!(step, Step::Continue);
        assert!(!out.is_empty());
        for k in 2..=after + 1 {
            let (step, out) = feed(&mut conn, GET_SERIAL);
            if k <= after {
                assert_eq!(step, Step::Continue);
                assert_eq!(
                    out[8..],
                    hex_bytes("C401C1000A0B")[..]
                        .iter()
                        .chain(meter_sim::serial(meter).as_bytes())
                        .copied()
                        .collect::<Vec<_>>()[..]
                );
            } else {
                assert_eq!((step, out.len()), (Step::Close, 0));
            }
        }
    }
    // Corrupt: reply number `reply` has its APDU tag inverted, the others are intact.
    let sim = sim_with(|c| c.faults.corrupt = 1.0);
    for meter in 0..20 {
        let mut conn = Connection::accept(sim.clone(), meter);
        let SessionFault::Corrupt { reply } = conn.fault() else { panic!("{:?}", conn.fault()) };
        let (_, out) = feed(&mut conn, AARQ_PUBLIC);
        assert_eq!(out[8], if reply == 1 { !0x61 } else { 0x61 });
        for k in 2..=5 {
            let (step, out) = feed(&mut conn, GET_SERIAL);
            assert_eq!(step, Step::Continue);
            assert_eq!(out[8], if reply == k { !0xC4 } else { 0xC4 }, "reply {k} of meter {meter}");
        }
    }
    // Sessions are counted per meter; the k-th session's fault is session_fault(meter, k).
    let sim = sim_with(|c| {
        c.faults.refuse = 0.3;
        c.faults.drop = 0.3;
    });
    for k in 0..10 {
        let conn = Connection::accept(sim.clone(), 9);
        assert_eq!(conn.session(), k);
        assert_eq!(conn.fault(), sim.config.faults.session_fault(9, k));
    }
    // Clock drift: the clock is off by whole minutes; the registers follow the drifted clock.
    let sim = sim_with(|c| c.faults.clock_drift = 1.0);
    let drift = sim.config.faults.drift_secs(4);
    assert_ne!(drift, 0);
    assert_eq!(sim.meter_now(4, wall()), wall() + Duration::seconds(drift));
}

/// The tamper fault: association replies and plain sessions are untouched; in an HLS session the
/// `reply`-th ciphered GET reply fails the client's tag check, and the other replies decode.
#[test]
fn tamper_alters_the_tag_of_one_ciphered_get_reply() {
    use meter_sim::dlms::SessionFault;
    let sim = sim_with(|c| c.faults.tamper = 1.0);
    let register = Obis::new(1, 0, 1, 8, 0, 255);
    let mut chosen = [0; 2];
    for meter in 0..12 {
        let mut c = Client::new(&sim, meter, AuthMechanism::HighGmac, 1024);
        let SessionFault::Tamper { reply } = c.conn.fault() else { panic!("{:?}", c.conn.fault()) };
        chosen[reply as usize - 1] += 1;
        assert_eq!(c.associate(), AssociationStep::Established);
        for k in 1..=3 {
            let r = c.get(3, register, 2, None);
            if k == reply {
                let e = r.expect_err("the tampered reply is refused");
                assert!(e.contains("BadTag"), "{e}");
            } else {
                r.unwrap_or_else(|e| panic!("meter {meter}, reply {k}: {e}"));
            }
        }
    }
    assert!(chosen[0] > 0 && chosen[1] > 0, "{chosen:?}");
    assert_eq!(sim.summary(0.0).faults.tampered, 12);
    // LLS: nothing is ciphered, so nothing is altered.
    let mut c = Client::new(&sim, 20, AuthMechanism::Low, 1024);
    assert_eq!(c.associate(), AssociationStep::Established);
    for _ in 0..3 {
        c.get(3, register, 2, None).expect("a plain read");
    }
    assert_eq!(sim.summary(0.0).faults.tampered, 12);
}

#[test]
fn clock_set_is_stored_per_meter() {
    let sim = sim();
    let mut c = Client::new(&sim, 6, AuthMechanism::Low, 1024);
    assert_eq!(c.associate(), AssociationStep::Established);
    let mut buf = [0u8; 256];
    let target: DateTime<Utc> = "2025-04-01T00:00:00Z".parse().expect("ts");
    let value = cosem_datetime(target);
    let mut enc = vec![0x09, 0x0C];
    enc.extend_from_slice(&value);
    let data = decode(&enc);
    let n = c
        .session
        .set_request(AttributeDescriptor::new(8, Obis::new(0, 0, 1, 0, 0, 255), 2), None, data, &mut buf)
        .expect("set");
    let reply = c.exchange(&buf[..n]);
    let mut scratch = [0u8; 256];
    assert!(matches!(c.session.handle_response(&reply, &mut scratch).expect("resp"), Response::Ok), "{reply:02x?}");
    assert_eq!(sim.meter_now(6, wall()), target);
    assert_eq!(sim.meter_now(7, wall()), wall());
    let clock = c.get(8, Obis::new(0, 0, 1, 0, 0, 255), 2, None).expect("clock");
    assert_eq!(clock[2..], value);
}

#[test]
fn push_notifications_decode_to_the_model() {
    use dlms_cosem_rs::client::{NotificationListener, SingleMeterKeys};
    use meter_sim::dlms::push;
    let model = meter_sim::Model::new(SEED);
    let ts: DateTime<Utc> = "2025-10-26T01:15:00Z".parse().expect("ts");
    for ciphered in [false, true] {
        let meter = 12;
        let mut sender = push::sender(SEED, meter, ciphered);
        let pdu = push::notification(&model, &mut sender, meter, ts).expect("pdu");
        let (w, used) = StreamReassembler::new(u16::MAX).next_pdu(&pdu).expect("wrapper").expect("complete");
        assert_eq!(used, pdu.len());
        assert_eq!((w.header.source, w.header.destination), (1, 16));
        let keys = meter_keys(SEED, meter);
        let policy = if ciphered {
            SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0)
        } else {
            SecurityPolicy::NONE
        };
        let mut listener = NotificationListener::new(
            RustCryptoProvider::new(KeyRing::default()),
            SingleMeterKeys::new(SystemTitle::new(keys.system_title), KeyRing::new(keys.ek, keys.ak)),
            policy,
        );
        let mut scratch = [0u8; 512];
        let n = listener.handle(w.apdu, &mut scratch).expect("notification");
        if ciphered {
            assert_eq!(w.apdu[0], 0xDB);
            assert_eq!(n.system_title, Some(SystemTitle::new(keys.system_title)));
        } else {
            assert_eq!(w.apdu[0], 0x0F);
        }
        let body = n.body.as_structure().expect("structure");
        let reg = model.registers_at(meter, ts).expect("model");
        assert_eq!(body.get(0).expect("serial"), Data::OctetString(b"SIM00000013"));
        let Data::OctetString(t) = body.get(1).expect("clock") else { panic!("clock") };
        assert_eq!(parse_datetime(t), Some(ts));
        // 03:15 CEST/CET ambiguity: 01:15Z on the autumn DST day is 02:15 CET (deviation −60, no DST bit).
        assert_eq!(t[9..], [0xFF, 0xC4, 0x00]);
        assert_eq!(body.get(2).expect("1.8.0").as_u64(), Some(reg.import_total() as u64));
        assert_eq!(body.get(3).expect("2.8.0").as_u64(), Some(reg.export as u64));
    }
}

#[test]
fn disconnect_control_and_event_log() {
    use dlms_cosem_rs::xdlms::MethodDescriptor;
    let sim = sim();
    let breaker = Obis::new(0, 0, 96, 3, 10, 255);
    let mut c = Client::new(&sim, 8, AuthMechanism::Low, 1024);
    assert_eq!(c.associate(), AssociationStep::Established);
    assert_eq!(c.get(70, breaker, 2, None).expect("state"), [0x03, 0x01]);
    let mut buf = [0u8; 128];
    for (method, state) in [(1, [0x03, 0x00]), (2, [0x03, 0x01])] {
        let n = c
            .session
            .action_request(MethodDescriptor::new(70, breaker, method), Some(Data::Integer(0)), &mut buf)
            .expect("action");
        let reply = c.exchange(&buf[..n]);
        let mut scratch = [0u8; 128];
        let r = c.session.handle_response(&reply, &mut scratch).expect("response");
        assert!(
            matches!(r, Response::ActionResult { result: dlms_cosem_rs::xdlms::ActionResult::Success, .. }),
            "{r:?}"
        );
        assert_eq!(c.get(70, breaker, 2, None).expect("state"), state);
    }
    // The public client may not switch the breaker.
    let mut p = Client::new(&sim, 8, AuthMechanism::None, 1024);
    assert_eq!(p.associate(), AssociationStep::Established);
    let n =
        p.session.action_request(MethodDescriptor::new(70, breaker, 1), Some(Data::Integer(0)), &mut buf).expect("a");
    let reply = p.exchange(&buf[..n]);
    let mut scratch = [0u8; 128];
    let r = p.session.handle_response(&reply, &mut scratch).expect("response");
    assert!(!matches!(r, Response::ActionResult { result: dlms_cosem_rs::xdlms::ActionResult::Success, .. }), "{r:?}");
    // The event log is an array of {date-time, event code}.
    let v = c.get(7, Obis::new(0, 0, 99, 98, 0, 255), 2, None).expect("events");
    let Data::Array(rows) = decode(&v) else { panic!("array") };
    for row in rows.iter() {
        let Data::Structure(cells) = row.expect("row") else { panic!("row") };
        assert!(matches!(cells.get(1).expect("code"), Data::Unsigned(1 | 2)));
    }
}
