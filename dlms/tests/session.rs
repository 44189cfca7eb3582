//! The client `Session` against the engine's own server (`dlms_cosem_rs::server::Server`)
//! over in-memory duplex streams and loopback TCP, on the wrapper and on HDLC.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

use dlms::transport::{
    HdlcAddress, HdlcCodec, HdlcControl, HdlcFrame, HdlcParameters, WrapperCodec, WrapperFrame, LLC_RESPONSE,
};
use dlms::{
    AttrRef, Authentication, ClientOptions, CosemDateTime, DataAccessError, Error, Obis, ScalerUnit, Session,
    TransportOptions, Value,
};
use dlms_cosem_rs::acse::AuthMechanism;
use dlms_cosem_rs::axdr::Data;
use dlms_cosem_rs::codec::Writer;
use dlms_cosem_rs::cosem::{AttributeAccess, MethodAccess};
use dlms_cosem_rs::security::{
    FixedRandom, KeyRing, RustCryptoProvider, Secret, SecurityPolicy, SecuritySuite, SystemTitle,
};
use dlms_cosem_rs::server::{ObjectStore, Server, ServerConfig, StoreResult};
use dlms_cosem_rs::xdlms::{ActionResult, DataAccessResult, SelectiveAccess};

const EK: [u8; 16] = *b"0123456789ABCDEF";
const AK: [u8; 16] = [0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF];
const CLIENT_TITLE: [u8; 8] = *b"HDE\x00\x00\x00\x00\x01";
const METER_TITLE: [u8; 8] = *b"SIM\x00\x12\x34\x56\x78";

const ENERGY: Obis = Obis::new(1, 0, 1, 8, 0, 255);
const VOLTAGE: Obis = Obis::new(1, 0, 32, 7, 0, 255);
const SERIAL: Obis = Obis::new(0, 0, 96, 1, 0, 255);
const CLOCK: Obis = Obis::new(0, 0, 1, 0, 0, 255);
const PROFILE: Obis = Obis::new(1, 0, 99, 1, 0, 255);
const DISCONNECT: Obis = Obis::new(0, 0, 96, 3, 10, 255);
const IC_OBJECT: Obis = Obis::new(0, 0, 43, 1, 0, 255);

fn row_time(i: u32) -> CosemDateTime {
    // Quarter-hours from 2024-03-01 00:00, deviation -60 (UTC+1).
    let minutes = i * 15;
    CosemDateTime {
        year: 2024,
        month: 3,
        day: 1 + u8::try_from(minutes / 1440).unwrap(),
        weekday: 0xFF,
        hour: u8::try_from((minutes / 60) % 24).unwrap(),
        minute: u8::try_from(minutes % 60).unwrap(),
        second: 0,
        hundredths: 0,
        deviation: -60,
        status: 0,
    }
}

fn key(t: &CosemDateTime) -> [u8; 7] {
    let b = t.to_bytes();
    [b[0], b[1], b[2], b[3], b[5], b[6], b[7]]
}

#[derive(Default)]
struct Meter {
    clock: Option<CosemDateTime>,
    disconnected: bool,
    rows: u32,
    invocation_counter_for_client: u32,
}

fn write(v: &Value, w: &mut dyn Writer) -> StoreResult<()> {
    w.write_bytes(&v.encode()).map_err(|_| DataAccessResult::OtherReason)
}

impl Meter {
    fn row(i: u32) -> Value {
        Value::Structure(vec![Value::DateTime(row_time(i)), Value::U32(1000 + i * 7)])
    }

    fn profile(&self, sa: Option<SelectiveAccess<'_>>) -> StoreResult<Value> {
        let all: Vec<u32> = (0..self.rows).collect();
        let pick: Vec<u32> = match sa {
            None => all,
            Some(sa) if sa.selector == 2 => {
                let f = |i| sa.parameters.field(i).ok().and_then(|d| d.as_u64()).unwrap_or(0);
                let (from, to) = (f(0), f(1));
                all.into_iter().filter(|i| u64::from(*i + 1) >= from && (to == 0 || u64::from(*i + 1) <= to)).collect()
            }
            Some(sa) if sa.selector == 1 => {
                let t = |i| {
                    sa.parameters
                        .field(i)
                        .ok()
                        .and_then(|d| d.as_bytes())
                        .and_then(CosemDateTime::from_slice)
                        .ok_or(DataAccessResult::TypeUnmatched)
                };
                let (from, to) = (key(&t(1)?), key(&t(2)?));
                all.into_iter().filter(|i| key(&row_time(*i)) >= from && key(&row_time(*i)) <= to).collect()
            }
            Some(_) => return Err(DataAccessResult::OtherReason),
        };
        Ok(Value::Array(pick.into_iter().map(Self::row).collect()))
    }
}

impl ObjectStore for Meter {
    fn get_attribute(
        &self,
        class_id: u16,
        logical_name: dlms_cosem_rs::Obis,
        attribute_id: i8,
        sa: Option<SelectiveAccess<'_>>,
        w: &mut dyn Writer,
    ) -> StoreResult<()> {
        let v = match (class_id, Obis(logical_name.0), attribute_id) {
            (1, IC_OBJECT, 2) => Value::U32(self.invocation_counter_for_client),
            (3, ENERGY, 2) => Value::U32(123_456_789),
            (3, ENERGY, 3) => Value::Structure(vec![Value::I8(-2), Value::Enum(30)]),
            (3, VOLTAGE, 2) => Value::U16(2301),
            (3, VOLTAGE, 3) => Value::Structure(vec![Value::I8(-1), Value::Enum(35)]),
            (1, SERIAL, 2) => Value::OctetString(b"SIM0001".to_vec()),
            (8, CLOCK, 2) => Value::DateTime(self.clock.unwrap_or_else(|| row_time(0))),
            (7, PROFILE, 2) => self.profile(sa)?,
            (70, DISCONNECT, 2) => Value::Bool(!self.disconnected),
            (3, Obis([1, 0, 2, 8, 0, 255]), 2) => return Err(DataAccessResult::HardwareFault),
            _ => return Err(DataAccessResult::ObjectUndefined),
        };
        write(&v, w)
    }

    fn set_attribute(
        &mut self,
        class_id: u16,
        logical_name: dlms_cosem_rs::Obis,
        attribute_id: i8,
        _sa: Option<SelectiveAccess<'_>>,
        value: Data<'_>,
    ) -> StoreResult<()> {
        match (class_id, Obis(logical_name.0), attribute_id) {
            (8, CLOCK, 2) => {
                let t = value.as_bytes().and_then(CosemDateTime::from_slice).ok_or(DataAccessResult::TypeUnmatched)?;
                self.clock = Some(t);
                Ok(())
            }
            _ => Err(DataAccessResult::ReadWriteDenied),
        }
    }

    fn invoke_method(
        &mut self,
        class_id: u16,
        logical_name: dlms_cosem_rs::Obis,
        method_id: i8,
        _parameters: Option<Data<'_>>,
        _w: &mut dyn Writer,
    ) -> Result<bool, ActionResult> {
        match (class_id, Obis(logical_name.0), method_id) {
            (70, DISCONNECT, 1) => {
                self.disconnected = true;
                Ok(false)
            }
            (70, DISCONNECT, 2) => {
                self.disconnected = false;
                Ok(false)
            }
            _ => Err(ActionResult::ObjectUndefined),
        }
    }

    fn attribute_access(&self, class_id: u16, name: dlms_cosem_rs::Obis, attribute_id: i8) -> AttributeAccess {
        if (class_id, Obis(name.0), attribute_id) == (8, CLOCK, 2) {
            AttributeAccess::READ | AttributeAccess::WRITE
        } else {
            AttributeAccess::READ
        }
    }

    fn method_access(&self, _c: u16, _n: dlms_cosem_rs::Obis, _m: i8) -> MethodAccess {
        MethodAccess::ACCESS
    }
}

type TestServer = Server<Meter, RustCryptoProvider<FixedRandom>, 16384>;

#[derive(Clone, Copy)]
enum Sec {
    None,
    Low,
    Gmac,
}

fn server(sec: Sec, max_pdu: u16, rows: u32) -> Box<TestServer> {
    let mut cfg = ServerConfig { max_pdu_size: max_pdu, ..Default::default() };
    let mut ring = KeyRing::default();
    match sec {
        Sec::None => {}
        Sec::Low => {
            cfg.mechanism = AuthMechanism::Low;
            cfg.password = Some(Secret::new(b"12345678").unwrap());
        }
        Sec::Gmac => {
            cfg.mechanism = AuthMechanism::HighGmac;
            cfg.system_title = Some(SystemTitle::new(METER_TITLE));
            cfg.security = SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0);
            ring = KeyRing::new(EK, AK);
        }
    }
    let meter = Meter { rows, ..Default::default() };
    Box::new(Server::new(cfg, meter, RustCryptoProvider::with_rng(ring, FixedRandom(0x5A))))
}

/// Serve one wrapper connection; returns the server (for inspection) when the client closes.
async fn serve_wrapper<S: AsyncRead + AsyncWrite + Unpin>(io: S, srv: Arc<Mutex<Box<TestServer>>>) {
    let mut framed = Framed::new(io, WrapperCodec::default());
    srv.lock().unwrap().reset();
    while let Some(Ok(f)) = framed.next().await {
        let reply = {
            let mut out = vec![0u8; 20000];
            let mut s = srv.lock().unwrap();
            match s.handle(&f.apdu, &mut out) {
                Ok(n) if n > 0 => Some(out[..n].to_vec()),
                _ => None,
            }
        };
        if let Some(r) = reply {
            let wf = WrapperFrame { source: f.destination, destination: f.source, apdu: Bytes::from(r) };
            if framed.send(wf).await.is_err() {
                break;
            }
        }
    }
}

/// Serve one HDLC connection with small information fields, so both directions segment.
async fn serve_hdlc<S: AsyncRead + AsyncWrite + Unpin>(io: S, srv: Arc<Mutex<Box<TestServer>>>, max_info: u16) {
    let me = HdlcAddress::Server { logical: 1, physical: 17 };
    let mut framed = Framed::new(io, HdlcCodec::default());
    let (mut ns, mut nr) = (0u8, 0u8);
    let mut pending: Vec<u8> = Vec::new();
    srv.lock().unwrap().reset();
    let reply = |control, segmented, info: Vec<u8>, to| HdlcFrame {
        segmented,
        destination: to,
        source: me,
        control,
        information: Bytes::from(info),
    };
    while let Some(Ok(f)) = framed.next().await {
        if f.destination != me {
            continue;
        }
        let peer = f.source;
        match f.control {
            HdlcControl::Snrm => {
                let p = HdlcParameters { max_info_tx: max_info, max_info_rx: max_info, window_tx: 1, window_rx: 1 };
                ns = 0;
                nr = 0;
                framed.send(reply(HdlcControl::Ua, false, p.encode(), peer)).await.unwrap();
            }
            HdlcControl::Disc => {
                framed.send(reply(HdlcControl::Ua, false, Vec::new(), peer)).await.unwrap();
                break;
            }
            HdlcControl::I { ns: their, .. } => {
                assert_eq!(their, nr, "client N(S)");
                nr = (nr + 1) % 8;
                pending.extend_from_slice(&f.information);
                if f.segmented {
                    framed.send(reply(HdlcControl::Rr { nr, pf: true }, false, Vec::new(), peer)).await.unwrap();
                    continue;
                }
                let lsdu = std::mem::take(&mut pending);
                assert_eq!(&lsdu[..3], &[0xE6, 0xE6, 0x00]);
                let answer = {
                    let mut out = vec![0u8; 20000];
                    let mut s = srv.lock().unwrap();
                    match s.handle(&lsdu[3..], &mut out) {
                        Ok(n) if n > 0 => Some(out[..n].to_vec()),
                        _ => None,
                    }
                };
                let Some(answer) = answer else { continue };
                let mut out = LLC_RESPONSE.to_vec();
                out.extend_from_slice(&answer);
                let chunks: Vec<Vec<u8>> = out.chunks(usize::from(max_info)).map(<[u8]>::to_vec).collect();
                let count = chunks.len();
                for (i, c) in chunks.into_iter().enumerate() {
                    let last = i + 1 == count;
                    framed.send(reply(HdlcControl::I { ns, nr, pf: true }, !last, c, peer)).await.unwrap();
                    ns = (ns + 1) % 8;
                    if !last {
                        // Wait for the client's RR before the next segment.
                        loop {
                            let Some(Ok(rr)) = framed.next().await else { return };
                            if let HdlcControl::Rr { nr: their_nr, .. } = rr.control {
                                assert_eq!(their_nr, ns, "client N(R) in RR acknowledges our segments");
                                break;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn wrapper_opts(client_sap: u16) -> ClientOptions {
    let mut o = ClientOptions::new(TransportOptions::Wrapper { client_sap, server_sap: 1 });
    o.timeout = Duration::from_secs(5);
    o
}

fn hdlc_opts(client: u8) -> ClientOptions {
    let mut o =
        ClientOptions::new(TransportOptions::Hdlc { client_address: client, server_logical: 1, server_physical: 17 });
    o.timeout = Duration::from_secs(5);
    o
}

fn gmac(ic: u32) -> Authentication {
    Authentication::Gmac {
        system_title: CLIENT_TITLE,
        encryption_key: EK,
        authentication_key: AK,
        invocation_counter: ic,
    }
}

async fn wrapper_session(srv: Arc<Mutex<Box<TestServer>>>, opts: &ClientOptions) -> Session<tokio::io::DuplexStream> {
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::spawn(serve_wrapper(b, srv));
    Session::connect(a, opts).await.unwrap()
}

async fn hdlc_session(
    srv: Arc<Mutex<Box<TestServer>>>,
    opts: &ClientOptions,
    max_info: u16,
) -> Session<tokio::io::DuplexStream> {
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::spawn(serve_hdlc(b, srv, max_info));
    Session::connect(a, opts).await.unwrap()
}

/// The whole feature set on one association.
async fn exercise<S: AsyncRead + AsyncWrite + Unpin + Send>(s: &mut Session<S>) {
    // get + scaler_unit, exact decimal.
    let v = s.get(AttrRef::new(3, ENERGY, 2)).await.unwrap();
    assert_eq!(v, Value::U32(123_456_789));
    let su = ScalerUnit::from_value(&s.get(AttrRef::new(3, ENERGY, 3)).await.unwrap()).unwrap();
    assert_eq!((su.scaler, su.unit, su.unit_name()), (-2, 30, Some("Wh")));
    assert_eq!(su.scaled(&v).unwrap(), "1234567.89");
    // Errors by name.
    let e = s.get(AttrRef::new(3, Obis::new(1, 0, 2, 8, 0, 255), 2)).await.unwrap_err();
    assert!(matches!(e, Error::DataAccess(DataAccessError::HardwareFault)), "{e}");
    let e = s.get(AttrRef::new(3, Obis::new(9, 9, 9, 9, 9, 9), 2)).await.unwrap_err();
    assert!(matches!(e, Error::DataAccess(DataAccessError::ObjectUndefined)), "{e}");
    // get_list with a failing item in the middle.
    let list = s
        .get_list(&[
            AttrRef::new(3, ENERGY, 2),
            AttrRef::new(3, Obis::new(1, 0, 2, 8, 0, 255), 2),
            AttrRef::new(3, VOLTAGE, 2),
            AttrRef::new(1, SERIAL, 2),
        ])
        .await
        .unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0], Ok(Value::U32(123_456_789)));
    assert_eq!(list[1], Err(DataAccessError::HardwareFault));
    assert_eq!(list[2], Ok(Value::U16(2301)));
    assert_eq!(list[3], Ok(Value::OctetString(b"SIM0001".to_vec())));
    // Profile by entry and by range.
    let rows = s.get_profile_entries(PROFILE, 2, 4).await.unwrap();
    let rows = rows.as_slice().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].as_slice().unwrap()[1], Value::U32(1007));
    let from = row_time(4);
    let to = row_time(7);
    let rows = s.get_profile_range(PROFILE, from, to).await.unwrap();
    let rows = rows.as_slice().unwrap();
    assert_eq!(rows.len(), 4);
    let first = rows[0].as_slice().unwrap()[0].as_datetime_utc(&chrono::Utc).unwrap();
    assert_eq!(first.to_rfc3339(), "2024-03-01T00:00:00+00:00", "01:00 at UTC+1 is midnight UTC");
    // set + read back.
    let t = CosemDateTime { hour: 14, minute: 48, second: 57, hundredths: 80, ..row_time(0) };
    s.set(AttrRef::new(8, CLOCK, 2), &Value::DateTime(t)).await.unwrap();
    assert_eq!(s.get(AttrRef::new(8, CLOCK, 2)).await.unwrap().as_datetime(), Some(t));
    let e = s.set(AttrRef::new(3, ENERGY, 2), &Value::U32(0)).await.unwrap_err();
    assert!(matches!(e, Error::DataAccess(DataAccessError::ReadWriteDenied)), "{e}");
    // action.
    assert_eq!(s.action(70, DISCONNECT, 1, Some(Value::I8(0))).await.unwrap(), None);
    assert_eq!(s.get(AttrRef::new(70, DISCONNECT, 2)).await.unwrap(), Value::Bool(false));
    let e = s.action(70, DISCONNECT, 9, None).await.unwrap_err();
    assert!(matches!(e, Error::Action(DataAccessError::ObjectUndefined)), "{e}");
}

#[tokio::test]
async fn wrapper_no_security_everything() {
    let srv = Arc::new(Mutex::new(server(Sec::None, 1024, 96)));
    let mut s = wrapper_session(srv.clone(), &wrapper_opts(16)).await;
    let n = s.associate().await.unwrap();
    assert_eq!(n.max_pdu, 1024);
    assert!(n.conformance & dlms::conformance::GET != 0);
    assert!(n.server_system_title.is_none());
    exercise(&mut s).await;
    s.release().await.unwrap();
    assert!(srv.lock().unwrap().store().disconnected);
}

#[tokio::test]
async fn wrapper_block_transfer_with_small_pdu() {
    // 96 rows ≈ 2 KiB through a 128-byte client PDU: many GET blocks.
    let srv = Arc::new(Mutex::new(server(Sec::None, 256, 96)));
    let mut o = wrapper_opts(16);
    o.max_receive_pdu = 128;
    o.max_list_len = 3; // 8 attributes → 3 with-list requests
    let mut s = wrapper_session(srv, &o).await;
    s.associate().await.unwrap();
    let all = s.get(AttrRef::new(7, PROFILE, 2)).await.unwrap();
    let rows = all.as_slice().unwrap();
    assert_eq!(rows.len(), 96);
    assert_eq!(rows[95].as_slice().unwrap()[1], Value::U32(1000 + 95 * 7));
    // A with-list answer that itself needs blocks.
    let many: Vec<AttrRef> = (0..8).map(|_| AttrRef::new(1, SERIAL, 2)).collect();
    let list = s.get_list(&many).await.unwrap();
    assert!(list.iter().all(|r| r == &Ok(Value::OctetString(b"SIM0001".to_vec()))));
    // A with-list answer far larger than the PDU: it arrives in blocks.
    let list = s.get_list(&[AttrRef::new(7, PROFILE, 2), AttrRef::new(1, SERIAL, 2)]).await.unwrap();
    assert_eq!(list[0].as_ref().unwrap().as_slice().unwrap().len(), 96);
    assert_eq!(list[1], Ok(Value::OctetString(b"SIM0001".to_vec())));
    // Response too large for the configured limit → error, no panic.
    s.release().await.unwrap();
}

#[tokio::test]
async fn wrapper_lls() {
    let srv = Arc::new(Mutex::new(server(Sec::Low, 1024, 10)));
    let mut o = wrapper_opts(1);
    o.authentication = Authentication::Low { password: b"12345678".to_vec() };
    let mut s = wrapper_session(srv.clone(), &o).await;
    s.associate().await.unwrap();
    assert_eq!(s.get(AttrRef::new(3, ENERGY, 2)).await.unwrap(), Value::U32(123_456_789));
    s.release().await.unwrap();
    // Wrong password → authentication error.
    o.authentication = Authentication::Low { password: b"wrong".to_vec() };
    let mut s = wrapper_session(srv, &o).await;
    let e = s.associate().await.unwrap_err();
    eprintln!("wrong password: {e:?}");
    assert!(matches!(e, Error::AuthenticationRejected { .. }), "{e}");
}

#[tokio::test]
async fn wrapper_gmac_and_counter_resync() {
    let srv = Arc::new(Mutex::new(server(Sec::Gmac, 1024, 96)));
    let mut o = wrapper_opts(1);
    o.authentication = gmac(100);
    let mut s = wrapper_session(srv.clone(), &o).await;
    let n = s.associate().await.unwrap();
    assert_eq!(n.server_system_title, Some(METER_TITLE));
    exercise(&mut s).await;
    let ic = s.invocation_counter().unwrap();
    assert!(ic > 100, "counter advanced: {ic}");
    assert!(format!("{o:?}").contains("redacted"));
    assert!(!format!("{o:?}").contains("0123456789ABCDEF"));
    s.release().await.unwrap();

    // Reusing a stale counter: the meter refuses; the error is the distinct variant.
    let mut s = wrapper_session(srv.clone(), &o).await;
    let e = s.associate().await.unwrap_err();
    eprintln!("stale counter: {e:?}");
    assert!(matches!(e, Error::AuthenticationRejected { .. }), "{e}");

    // Continuing from the persisted counter works.
    o.authentication = gmac(ic);
    let mut s = wrapper_session(srv.clone(), &o).await;
    s.associate().await.unwrap();
    assert_eq!(s.get(AttrRef::new(3, VOLTAGE, 2)).await.unwrap(), Value::U16(2301));
    s.release().await.unwrap();

    // Wrong key → authentication error, no panic.
    let mut bad = wrapper_opts(1);
    bad.authentication = Authentication::Gmac {
        system_title: CLIENT_TITLE,
        encryption_key: EK,
        authentication_key: [0; 16],
        invocation_counter: ic + 1000,
    };
    let mut s = wrapper_session(srv, &bad).await;
    let e = s.associate().await.unwrap_err();
    eprintln!("wrong key: {e:?}");
    assert!(matches!(e, Error::AuthenticationRejected { .. }), "{e}");
}

#[tokio::test]
async fn hdlc_segmented_everything() {
    let srv = Arc::new(Mutex::new(server(Sec::None, 1024, 96)));
    let mut s = hdlc_session(srv.clone(), &hdlc_opts(16), 32).await;
    let n = s.associate().await.unwrap();
    let h = n.hdlc.unwrap();
    assert_eq!((h.max_info_tx, h.max_info_rx), (32, 32));
    exercise(&mut s).await;
    let all = s.get(AttrRef::new(7, PROFILE, 2)).await.unwrap();
    assert_eq!(all.as_slice().unwrap().len(), 96);
    s.release().await.unwrap();
}

#[tokio::test]
async fn hdlc_gmac_with_blocks() {
    let srv = Arc::new(Mutex::new(server(Sec::Gmac, 1024, 40)));
    let mut o = hdlc_opts(1);
    o.authentication = gmac(7);
    o.max_receive_pdu = 200;
    let mut s = hdlc_session(srv, &o, 64).await;
    s.associate().await.unwrap();
    let all = s.get(AttrRef::new(7, PROFILE, 2)).await.unwrap();
    assert_eq!(all.as_slice().unwrap().len(), 40);
    s.release().await.unwrap();
}

#[tokio::test]
async fn tcp_connect_and_public_counter_read() {
    let srv = Arc::new(Mutex::new(server(Sec::None, 1024, 4)));
    srv.lock().unwrap().store_mut().invocation_counter_for_client = 4242;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s2 = srv.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            serve_wrapper(sock, s2.clone()).await;
        }
    });
    let mut o = wrapper_opts(1);
    o.authentication = gmac(1);
    // Public client, no security, reads 0.0.43.1.0.255.
    assert_eq!(Session::read_invocation_counter(addr, &o).await.unwrap(), 4242);
    let mut s = Session::connect_tcp(addr, &wrapper_opts(16)).await.unwrap();
    s.associate().await.unwrap();
    assert_eq!(s.get(AttrRef::new(1, SERIAL, 2)).await.unwrap().as_bytes(), Some(&b"SIM0001"[..]));
    s.release().await.unwrap();
}

#[tokio::test]
async fn silent_server_times_out() {
    for opts in [wrapper_opts(16), hdlc_opts(16)] {
        let (a, b) = tokio::io::duplex(1024);
        let mut o = opts;
        o.timeout = Duration::from_millis(150);
        o.connect_timeout = Duration::from_millis(150);
        let started = std::time::Instant::now();
        let r = async {
            let mut s = Session::connect(a, &o).await?;
            s.associate().await
        }
        .await;
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(b);
    }
}

#[tokio::test]
async fn garbage_from_server_is_a_clear_error() {
    // Wrapper: a wrong version.
    let (a, mut b) = tokio::io::duplex(1024);
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        let _ = tokio::io::AsyncReadExt::read(&mut b, &mut buf).await;
        let _ = b.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let mut s = Session::connect(a, &wrapper_opts(16)).await.unwrap();
    let e = s.associate().await.unwrap_err();
    assert!(matches!(e, Error::WrapperVersion(_)), "{e}");

    // Wrapper: a valid header around garbage.
    let (a, mut b) = tokio::io::duplex(1024);
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        let _ = tokio::io::AsyncReadExt::read(&mut b, &mut buf).await;
        let _ = b.write_all(&[0, 1, 0, 1, 0, 16, 0, 5, 0x61, 0xFF, 0xFF, 0x00, 0x13]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let mut s = Session::connect(a, &wrapper_opts(16)).await.unwrap();
    let e = s.associate().await.unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");

    // Peer closes → Closed.
    let (a, b) = tokio::io::duplex(1024);
    drop(b);
    let mut s = Session::connect(a, &wrapper_opts(16)).await.unwrap();
    let e = s.associate().await.unwrap_err();
    assert!(matches!(e, Error::Closed | Error::Io(_)), "{e}");

    // HDLC: noise is discarded, so a meter that only sends noise times out.
    let (a, mut b) = tokio::io::duplex(1024);
    tokio::spawn(async move {
        let _ = b.write_all(&[0x7E, 0xA0, 0x05, 0x7E, 0x01, 0x02, 0x7E, 0x7E]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let mut o = hdlc_opts(16);
    o.connect_timeout = Duration::from_millis(200);
    let e = Session::connect(a, &o).await.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
}
