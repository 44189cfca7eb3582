//! decode_apdu on ciphered APDUs, Value helpers, and an always-on mutation fuzz over all
//! vectors (deterministic PRNG), so CI covers panics without cargo-fuzz.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use chrono::{FixedOffset, TimeZone, Utc};
use dlms::transport::{HdlcCodec, WrapperCodec};
use dlms::{decimal_string, decode_apdu, decode_hex, CosemDateTime, Keys, ScalerUnit, Value};
use dlms_cosem_rs::security::{KeyRing, Protector, RustCryptoProvider, SecurityPolicy, SecuritySuite, SystemTitle};
use tokio_util::codec::Decoder;

const EK: [u8; 16] = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F];
const AK: [u8; 16] = [0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF];
const TITLE: [u8; 8] = *b"SIM\x00\x12\x34\x56\x78";

fn protect(plain: &[u8], ic: u32) -> Vec<u8> {
    let policy = SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0);
    let p = Protector::new(RustCryptoProvider::new(KeyRing::new(EK, AK)), policy);
    let mut out = vec![0u8; plain.len() + 32];
    let payload = p.protect(&SystemTitle::new(TITLE), ic, &AK, plain, &mut out).unwrap().to_vec();
    let mut body = vec![0x30];
    body.extend_from_slice(&ic.to_be_bytes());
    body.extend_from_slice(&payload);
    body
}

fn keys(title: Option<[u8; 8]>) -> Keys {
    Keys { encryption_key: EK, authentication_key: AK, system_title: title }
}

#[test]
fn glo_get_response_is_deciphered() {
    let plain = hex::decode("C401C1000600001391").unwrap();
    let body = protect(&plain, 5);
    let mut apdu = vec![0xCC, u8::try_from(body.len()).unwrap()];
    apdu.extend_from_slice(&body);
    // Without keys: the envelope only.
    let j = decode_apdu(&apdu, None).unwrap();
    assert_eq!(j["type"], "ciphered");
    assert_eq!(j["invocation_counter"], 5);
    assert_eq!(j["encrypted"], true);
    assert!(j.get("deciphered").is_none());
    // With keys and the meter's system title: the inner GET response.
    let j = decode_apdu(&apdu, Some(&keys(Some(TITLE)))).unwrap();
    assert_eq!(j["deciphered"]["type"], "get-response-normal");
    assert_eq!(j["deciphered"]["result"]["data"]["value"], 5009);
    // Wrong key: a reported error, not a panic and not a wrong plaintext.
    let mut bad = keys(Some(TITLE));
    bad.authentication_key[0] ^= 1;
    let j = decode_apdu(&apdu, Some(&bad)).unwrap();
    assert!(j["deciphered"]["error"].is_string());
}

#[test]
fn general_glo_data_notification_is_deciphered() {
    let plain = hex::decode("0FC00000010C07E80102FF03040500FFC400020209060100010800FF060001E240").unwrap();
    let body = protect(&plain, 77);
    let mut apdu = vec![0xDB, 0x08];
    apdu.extend_from_slice(&TITLE);
    apdu.push(u8::try_from(body.len()).unwrap());
    apdu.extend_from_slice(&body);
    // Inside a wrapper, as a push arrives over IP; the system title comes from the APDU.
    let mut wpdu = vec![0x00, 0x01, 0x00, 0x01, 0x00, 0x10, 0x00, u8::try_from(apdu.len()).unwrap()];
    wpdu.extend_from_slice(&apdu);
    let j = decode_apdu(&wpdu, Some(&keys(None))).unwrap();
    assert_eq!(j["apdu"]["system_title"], hex::encode(TITLE));
    let inner = &j["apdu"]["deciphered"];
    assert_eq!(inner["type"], "data-notification");
    assert_eq!(inner["body"]["value"][1]["value"], 123_456);
    // The hex entry point used by the CLI.
    let j2 = decode_hex(&hex::encode(&wpdu), Some(&keys(None))).unwrap();
    assert_eq!(j, j2);
}

#[test]
fn keys_from_hex() {
    let k = Keys::from_hex(
        "000102030405060708090A0B0C0D0E0F",
        "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF",
        Some("53494D0012345678"),
    )
    .unwrap();
    assert_eq!((k.encryption_key, k.authentication_key, k.system_title), (EK, AK, Some(TITLE)));
    assert!(Keys::from_hex("00", "D0", None).is_err());
}

#[test]
fn keys_debug_is_redacted() {
    let s = format!("{:?}", keys(Some(TITLE)));
    assert!(s.contains("redacted"));
    assert!(!s.contains("d0d1") && !s.contains("208, 209"));
}

#[test]
fn datetime_deviation_and_default_zone() {
    // 2024-06-01 12:00 local, deviation -120 (UTC+2) → 10:00 UTC.
    let mut t = CosemDateTime {
        year: 2024,
        month: 6,
        day: 1,
        weekday: 6,
        hour: 12,
        minute: 0,
        second: 0,
        hundredths: 0,
        deviation: -120,
        status: 0x80,
    };
    assert_eq!(t.as_datetime_utc(&Utc).unwrap(), Utc.with_ymd_and_hms(2024, 6, 1, 10, 0, 0).unwrap());
    // Deviation unspecified (0x8000): the caller's zone decides.
    t.deviation = i16::MIN;
    let cet = FixedOffset::east_opt(3600).unwrap();
    assert_eq!(t.as_datetime_utc(&cet).unwrap(), Utc.with_ymd_and_hms(2024, 6, 1, 11, 0, 0).unwrap());
    assert_eq!(t.as_datetime_utc(&Utc).unwrap(), Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap());
    // Wildcards → None.
    t.year = 0xFFFF;
    assert!(t.as_datetime_utc(&Utc).is_none());
    // Round trip through bytes and from_utc.
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 22, 0, 5).unwrap();
    let c = CosemDateTime::from_utc(now);
    assert_eq!(CosemDateTime::from_bytes(c.to_bytes()), c);
    assert_eq!(c.as_datetime_utc(&cet).unwrap(), now);
    assert_eq!(c.weekday, 2, "Tuesday");
}

#[test]
fn scaling_is_exact() {
    assert_eq!(decimal_string(123_456_789, -2), "1234567.89");
    assert_eq!(decimal_string(5, -3), "0.005");
    assert_eq!(decimal_string(-5, -3), "-0.005");
    assert_eq!(decimal_string(1200, -2), "12");
    assert_eq!(decimal_string(12, 3), "12000");
    assert_eq!(decimal_string(0, 3), "0");
    assert_eq!(decimal_string(0, -3), "0");
    assert_eq!(decimal_string(i128::from(u64::MAX), -1), "1844674407370955161.5");
    let su = ScalerUnit::from_value(&Value::decode(&[0x02, 0x02, 0x0F, 0xFF, 0x16, 0x1B]).unwrap()).unwrap();
    assert_eq!((su.scaler, su.unit_name()), (-1, Some("W")));
    assert_eq!(su.scaled(&Value::I32(-12345)).as_deref(), Some("-1234.5"));
    assert_eq!(su.scaled(&Value::OctetString(vec![])), None);
    for (code, name) in [(30, "Wh"), (27, "W"), (35, "V"), (33, "A"), (29, "var"), (32, "varh")] {
        assert_eq!(dlms::unit_name(code), Some(name));
    }
}

#[test]
fn value_round_trips_and_json() {
    let v = Value::Structure(vec![
        Value::Null,
        Value::Bool(true),
        Value::I8(-1),
        Value::I16(-300),
        Value::I32(-70000),
        Value::I64(-1 << 40),
        Value::U8(200),
        Value::U16(60000),
        Value::U32(4_000_000_000),
        Value::U64(u64::MAX),
        Value::Enum(30),
        Value::F32(1.5),
        Value::F64(-2.25),
        Value::OctetString(vec![1, 0, 1, 8, 0, 255]),
        Value::VisibleString(b"ABC".to_vec()),
        Value::Utf8String("zähler".into()),
        Value::BitString { bits: 10, bytes: vec![0b1010_0000, 0b0100_0000] },
        Value::Array(vec![Value::U8(1); 200]),
    ]);
    let bytes = v.encode();
    assert_eq!(Value::decode(&bytes).unwrap(), v);
    let j = v.to_json();
    assert_eq!(j["type"], "structure");
    assert_eq!(j["value"][9]["value"], u64::MAX);
    assert_eq!(j["value"][13]["obis"], "1.0.1.8.0.255");
    assert_eq!(j["value"][16]["value"], "1010000001");
    assert_eq!(j["value"][15]["value"], "zähler");
}

// ------------------------------------------------------------------ mutation fuzz

const VECTORS: &[&str] = &[
    "7EA00802232193BD647E",
    "7EA01F21022373E6C781801205019A06019A070400000001080400000001CCA27E",
    "7EA02C02232110AF9FE6E600601DA109060760857405080101BE10040E01000000065F1F0400001E1DFFFFC5E47E",
    "601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0",
    "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738BE10040E01000000065F1F0400007E1F04B0",
    "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F40007",
    "611FA109060760857405080101A203020101A305A103020101BE0604040E010601",
    "C001C1000100002B0100FF0200",
    "C401C1000600001391",
    "C401C10101",
    "C002C100000001",
    "C402C101000000130101",
    "C001C100070100630100FF0201010204020412000809060000010000FF0F02120000090C07E10A010700000000FFC480090C07E10A010701000000FFC4800100",
    "C001C100070100630100FF020102020406000000020600000004120001120000",
    "C003C10300030100010800FF020000030100200700FF020000010000600100FF0200",
    "C101C100080000010000FF0200090C07E50118FF0E303950FFC400",
    "C501C100",
    "C301C10046000060030AFF01010F00",
    "6203800100",
    "6303800100",
    "0FC00000010C07E80102FF03040500FFC400020209060100010800FF060001E240",
    "0001001000010009C401C1000600001391",
    "D80102",
    "C403C102000600000001010B",
];

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::try_from(self.next() % (n as u64)).unwrap()
        }
    }
}

fn mutate(rng: &mut XorShift, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len().max(1));
        match rng.below(7) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at] = [0x00, 0xFF, 0x7E, 0x80, 0x81, 0x82, 0x84, 0x7F][rng.below(8)],
            2 => v.insert(at.min(v.len()), u8::try_from(rng.below(256)).unwrap()),
            3 if !v.is_empty() => {
                v.remove(at);
            }
            4 => v.truncate(at),
            5 if !v.is_empty() => {
                let end = (at + rng.below(16)).min(v.len());
                let chunk = v[at..end].to_vec();
                v.splice(at..at, chunk);
            }
            _ => {
                let n = v.len();
                if n > 2 {
                    v.swap(rng.below(n), rng.below(n));
                }
            }
        }
    }
    v
}

/// Exactly what the cargo-fuzz target does.
fn feed(data: &[u8]) {
    let k = keys(Some(TITLE));
    let _ = decode_apdu(data, None);
    let _ = decode_apdu(data, Some(&k));
    let _ = Value::decode(data);
    let mut w = WrapperCodec::new(4096);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = w.decode(&mut buf) {}
    let mut h = HdlcCodec::default();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = h.decode(&mut buf) {}
    let mut h = HdlcCodec::new(64);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = h.decode(&mut buf) {}
    dlms::fuzzing::feed(data);
}

#[test]
fn mutation_fuzz_never_panics() {
    let mut corpus: Vec<Vec<u8>> = VECTORS.iter().map(|s| hex::decode(s).unwrap()).collect();
    // Ciphered samples too, so the decipher path is mutated.
    let c = protect(&hex::decode("C401C1000600001391").unwrap(), 9);
    let mut glo = vec![0xCC, u8::try_from(c.len()).unwrap()];
    glo.extend_from_slice(&c);
    corpus.push(glo);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let iterations = std::env::var("DLMS_MUTATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(30_000);
    for _ in 0..iterations {
        let base = &corpus[rng.below(corpus.len())];
        let m = mutate(&mut rng, base);
        feed(&m);
    }
    // Pure noise as well.
    for len in 0..64 {
        let noise: Vec<u8> = (0..len).map(|_| u8::try_from(rng.below(256)).unwrap()).collect();
        feed(&noise);
    }
}
