//! One client connection to one simulated meter, as a sans-I/O state machine: bytes in, bytes out.
//!
//! [`Connection::on_bytes`] takes whatever arrived on the socket and the wall-clock time, appends what to
//! send to `out` and says whether to keep the connection open. The caller (the tokio server, the fuzz
//! target, the tests) owns the socket and applies [`Connection::latency`] and the no-answer fault.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dlms_cosem_rs::acse::{Aarq, AuthMechanism};
use dlms_cosem_rs::codec::{Decode, Encode};
use dlms_cosem_rs::security::{KeyRing, RustCryptoProvider, Secret, SecurityPolicy, SecuritySuite, SystemTitle};
use dlms_cosem_rs::server::{Server, ServerConfig, ServerState};
use dlms_cosem_rs::transport::hdlc::{self, Address, Control, Found, Frame, Framer, Parameters, Role};
use dlms_cosem_rs::transport::wrapper::{StreamReassembler, Wpdu};

use super::faults::SessionFault;
use super::keys::meter_keys;
use super::objects::{Level, MeterStore};
use super::sim::Sim;
use crate::hash;

/// The engine's value buffer: bounds the largest attribute value (a 7-day load profile fits).
pub const VALUE_BUFFER: usize = 24 * 1024;
/// The largest APDU the server accepts (announced in the AARE).
pub const SERVER_MAX_PDU: u16 = 1024;
/// The most unprocessed input kept before the connection is closed.
const MAX_INPUT: usize = 16 * 1024;

/// HLS challenges: splitmix64 over a per-session seed. Predictable, which is fine for a simulator.
#[derive(Debug)]
pub struct ChallengeRng(Cell<u64>);

impl dlms_cosem_rs::security::RandomSource for ChallengeRng {
    fn fill(&self, out: &mut [u8]) -> dlms_cosem_rs::codec::Result<()> {
        for chunk in out.chunks_mut(8) {
            let v = hash::mix(self.0.get());
            self.0.set(self.0.get().wrapping_add(0x9E37_79B9_7F4A_7C15));
            let b = v.to_be_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Ok(())
    }
}

/// The engine as this simulator instantiates it for management associations.
pub type MeterServer = Server<MeterStore, RustCryptoProvider<ChallengeRng>, VALUE_BUFFER>;
/// The value buffer of public associations (no profile access): keeps their sessions small.
pub const PUBLIC_VALUE_BUFFER: usize = 2048;
/// The engine for public associations.
pub type PublicServer = Server<MeterStore, RustCryptoProvider<ChallengeRng>, PUBLIC_VALUE_BUFFER>;

/// The engine of one association, sized for what it may read.
#[derive(Debug)]
enum Engine {
    Public(Box<PublicServer>),
    Management(Box<MeterServer>),
}

macro_rules! engine {
    ($e:expr, $s:ident => $body:expr) => {
        match $e {
            Engine::Public($s) => $body,
            Engine::Management($s) => $body,
        }
    };
}

/// Which association configuration a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assoc {
    /// SAP 16, no authentication, no ciphering.
    Public,
    /// SAP 1, low-level security (the meter's password), no ciphering.
    Lls,
    /// SAP 1, HLS-GMAC with suite-0 authenticated encryption (glo- ciphering).
    Hls,
}

/// What the caller does after [`Connection::on_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send `out` (if any) and keep reading.
    Continue,
    /// Send `out` (if any), then close.
    Close,
}

#[derive(Debug)]
struct HdlcLink {
    link: Option<hdlc::Connection>,
    framer: Framer,
    /// The LSDU being received (LLC + APDU).
    incoming: Vec<u8>,
    /// The LSDU being sent, not yet framed.
    outgoing: Vec<u8>,
    local: Address,
    peer: Address,
    /// The send sequence number the next new I-frame from the client carries.
    expect_ns: u8,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    sim: Arc<Sim>,
    meter: usize,
    session: u32,
    fault: SessionFault,
    wrong_keys: bool,
    wrong_password: bool,
    latency: Duration,
    input: Vec<u8>,
    hdlc: Option<HdlcLink>,
    server: Option<(Assoc, u16, Engine)>,
    requests: u32,
    replies: u32,
    /// Ciphered GET replies sent (the tamper fault counts them).
    ciphered_gets: u32,
    closed: bool,
}

fn client_sap_of(a: Address) -> u16 {
    match a {
        Address::Single(v) => u16::from(v),
        Address::Double { upper, .. } => u16::from(upper),
        Address::Quad { upper, .. } => upper,
    }
}

impl Connection {
    /// A new connection to meter `index` (records the session and decides its faults).
    pub fn accept(sim: Arc<Sim>, meter: usize) -> Connection {
        let session = sim.with_meter(meter, |m| {
            let s = m.sessions;
            m.sessions = m.sessions.saturating_add(1);
            s
        });
        let faults = &sim.config.faults;
        let fault = faults.session_fault(meter, session);
        let latency = faults.latency(meter, session);
        let wrong_keys = faults.wrong_keys(meter);
        let wrong_password = faults.wrong_password(meter);
        let st = &sim.stats;
        st.sessions.fetch_add(1, Ordering::Relaxed);
        match fault {
            SessionFault::Refuse => st.refused.fetch_add(1, Ordering::Relaxed),
            SessionFault::NoAnswer => st.no_answer.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if !latency.is_zero() {
            st.delayed.fetch_add(1, Ordering::Relaxed);
        }
        let hdlc = sim.config.hdlc.then(|| HdlcLink {
            link: None,
            framer: Framer::new(),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            local: Address::server(1, 17),
            peer: Address::client(16),
            expect_ns: 0,
        });
        Connection {
            sim,
            meter,
            session,
            fault,
            wrong_keys,
            wrong_password,
            latency,
            input: Vec::new(),
            hdlc,
            server: None,
            requests: 0,
            replies: 0,
            ciphered_gets: 0,
            closed: false,
        }
    }

    pub const fn meter(&self) -> usize {
        self.meter
    }

    pub const fn session(&self) -> u32 {
        self.session
    }

    pub const fn fault(&self) -> SessionFault {
        self.fault
    }

    /// How long to wait before sending each reply.
    pub const fn latency(&self) -> Duration {
        self.latency
    }

    /// True when the connection must be closed at once without reading (the refuse fault).
    pub fn refuses(&self) -> bool {
        self.fault == SessionFault::Refuse
    }

    /// Feed received bytes; appends what to send to `out`.
    pub fn on_bytes(&mut self, input: &[u8], wall: DateTime<Utc>, out: &mut Vec<u8>) -> Step {
        if self.closed || self.fault == SessionFault::Refuse {
            self.closed = true;
            return Step::Close;
        }
        if self.fault == SessionFault::NoAnswer {
            return Step::Continue;
        }
        self.input.extend_from_slice(input);
        let step = if self.hdlc.is_some() { self.hdlc_input(wall, out) } else { self.wrapper_input(wall, out) };
        if step == Step::Close {
            self.close();
        } else if self.input.len() > MAX_INPUT {
            self.protocol_error();
            self.close();
            return Step::Close;
        }
        step
    }

    /// The connection has ended (either side): persists invocation counters.
    pub fn close(&mut self) {
        self.closed = true;
        self.persist();
        self.server = None;
    }

    fn protocol_error(&self) {
        self.sim.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }

    fn persist(&self) {
        if let Some((_, _, engine)) = &self.server {
            let (ic, peer) =
                engine!(engine, s => (s.invocation_counter(), s.replay_owner().zip(s.peer_invocation_counter())));
            self.sim.with_meter(self.meter, |m| {
                m.server_ic = m.server_ic.max(ic);
                if let Some((title, hi)) = peer {
                    m.client_ic = Some((title.0, hi));
                }
            });
        }
    }

    fn wrapper_input(&mut self, wall: DateTime<Utc>, out: &mut Vec<u8>) -> Step {
        loop {
            let (src, dst, apdu, used) = match StreamReassembler::new(SERVER_MAX_PDU.max(2048)).next_pdu(&self.input) {
                Ok(Some((w, used))) => (w.header.source, w.header.destination, w.apdu.to_vec(), used),
                Ok(None) => return Step::Continue,
                Err(_) => {
                    self.protocol_error();
                    return Step::Close;
                }
            };
            self.input.drain(..used);
            match self.apdu(src, &apdu, wall) {
                Err(()) => return Step::Close,
                Ok(None) => {}
                Ok(Some(mut reply)) => {
                    self.tamper(&mut reply);
                    if self.corrupt_now() {
                        if let Some(b) = reply.first_mut() {
                            *b = !*b;
                        }
                    }
                    let Ok(w) = Wpdu::new(dst, src, &reply) else { return Step::Close };
                    if w.encode(out).is_err() {
                        return Step::Close;
                    }
                }
            }
        }
    }

    /// Counts a reply; true when this one is to be corrupted.
    fn corrupt_now(&mut self) -> bool {
        self.replies += 1;
        self.sim.stats.replies.fetch_add(1, Ordering::Relaxed);
        if self.fault == (SessionFault::Corrupt { reply: self.replies }) {
            self.sim.stats.corrupted.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The tamper fault: inverts the last byte (of the GMAC tag) of the chosen ciphered GET reply.
    fn tamper(&mut self, reply: &mut [u8]) {
        // glo-get-response, ded-get-response: `tag | length | SC | IC(4) | ciphertext | tag(12)`.
        if !matches!(reply.first(), Some(0xCC | 0xD4)) || reply.len() < 20 {
            return;
        }
        self.ciphered_gets += 1;
        if self.fault == (SessionFault::Tamper { reply: self.ciphered_gets }) {
            if let Some(b) = reply.last_mut() {
                *b = !*b;
            }
            self.sim.stats.tampered.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn build_server(&self, assoc: Assoc, sap: u16, wall: DateTime<Utc>) -> Engine {
        let mut keys = meter_keys(self.sim.config.seed, self.meter);
        if self.wrong_keys {
            for b in keys.ek.iter_mut().chain(keys.ak.iter_mut()) {
                *b = !*b;
            }
        }
        let state = self.sim.meter(self.meter).unwrap_or_default();
        let config = ServerConfig {
            system_title: Some(SystemTitle::new(keys.system_title)),
            mechanism: match assoc {
                Assoc::Public => AuthMechanism::None,
                Assoc::Lls => AuthMechanism::Low,
                Assoc::Hls => AuthMechanism::HighGmac,
            },
            password: if assoc == Assoc::Lls {
                let mut password = keys.password;
                if self.wrong_password {
                    password[7] = if password[7] == b'Z' { b'Y' } else { b'Z' };
                }
                Secret::new(&password).ok()
            } else {
                None
            },
            security: if assoc == Assoc::Hls {
                SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0)
            } else {
                SecurityPolicy::NONE
            },
            max_pdu_size: SERVER_MAX_PDU,
            invocation_counter: state.server_ic,
            ..ServerConfig::default()
        };
        let level = if assoc == Assoc::Public { Level::Public } else { Level::Management };
        let store = MeterStore::new(self.sim.clone(), self.meter, level, sap, wall);
        let rng = ChallengeRng(Cell::new(hash::hash(&[
            self.sim.config.seed,
            self.meter as u64,
            u64::from(self.session),
            wall.timestamp_nanos_opt().unwrap_or(0) as u64,
        ])));
        let provider = RustCryptoProvider::with_rng(KeyRing::new(keys.ek, keys.ak), rng);
        let mut engine = if assoc == Assoc::Public {
            Engine::Public(Box::new(Server::new(config, store, provider)))
        } else {
            Engine::Management(Box::new(Server::new(config, store, provider)))
        };
        if let Some((title, hi)) = state.client_ic {
            engine!(&mut engine, s => s.resume_replay_window(SystemTitle::new(title), hi));
        }
        if assoc == Assoc::Hls && self.wrong_keys {
            self.sim.stats.wrong_keys_sessions.fetch_add(1, Ordering::Relaxed);
        }
        if assoc == Assoc::Lls && self.wrong_password {
            self.sim.stats.wrong_password_sessions.fetch_add(1, Ordering::Relaxed);
        }
        engine
    }

    /// Serves one APDU from client `sap`. `Err` = close the connection.
    fn apdu(&mut self, sap: u16, apdu: &[u8], wall: DateTime<Utc>) -> Result<Option<Vec<u8>>, ()> {
        self.requests += 1;
        self.sim.stats.requests.fetch_add(1, Ordering::Relaxed);
        if let SessionFault::Drop { after } = self.fault {
            if self.requests > after {
                self.sim.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(());
            }
        }
        let is_aarq = apdu.first() == Some(&0x60);
        let wanted = match sap {
            16 => Assoc::Public,
            1 if is_aarq => match Aarq::from_bytes(apdu).ok().and_then(|a| a.mechanism_name) {
                Some(AuthMechanism::HighGmac) => Assoc::Hls,
                _ => Assoc::Lls,
            },
            1 => self.server.as_ref().map_or(Assoc::Lls, |s| s.0),
            _ => {
                // Not a client of this meter: a real meter ignores it.
                self.protocol_error();
                return Err(());
            }
        };
        let rebuild = match &self.server {
            Some((a, s, _)) => *a != wanted || *s != sap,
            None => true,
        };
        if rebuild {
            self.persist();
            let server = self.build_server(wanted, sap, wall);
            self.server = Some((wanted, sap, server));
        }
        let ic_stored = self.sim.meter(self.meter).and_then(|m| m.client_ic).map_or(0, |c| c.1);
        let Some((_, _, engine)) = self.server.as_mut() else { return Err(()) };
        let now = self.sim.meter_now(self.meter, wall);
        let mut buf = vec![0u8; VALUE_BUFFER + 512];
        let (handled, state) = engine!(engine, server => {
            let ic_live = server.peer_invocation_counter().unwrap_or(0);
            let store = server.store_mut();
            store.wall = wall;
            store.now = now;
            store.ic_value = ic_stored.max(ic_live);
            let handled = server.handle(apdu, &mut buf);
            (handled, server.state())
        });
        let n = match handled {
            Ok(n) => n,
            Err(_) => {
                self.protocol_error();
                return Err(());
            }
        };
        if is_aarq {
            let st = &self.sim.stats;
            match state {
                ServerState::Associated | ServerState::AwaitingHlsReply => {
                    st.associations.fetch_add(1, Ordering::Relaxed)
                }
                _ => st.associations_refused.fetch_add(1, Ordering::Relaxed),
            };
        }
        if apdu.first() == Some(&0x62) {
            self.persist();
        }
        buf.truncate(n);
        Ok((n > 0).then_some(buf))
    }

    fn hdlc_input(&mut self, wall: DateTime<Utc>, out: &mut Vec<u8>) -> Step {
        loop {
            let Some(h) = self.hdlc.as_mut() else { return Step::Close };
            let found = match h.framer.next_frame(&self.input) {
                Ok(f) => f,
                Err(_) => return Step::Close,
            };
            let (frame_owned, consumed) = match found {
                Found::Frame { frame, consumed } => (
                    (frame.segmented, frame.destination, frame.source, frame.control, frame.information.to_vec()),
                    consumed,
                ),
                Found::Incomplete { discard } => {
                    self.input.drain(..discard.min(self.input.len()));
                    return Step::Continue;
                }
            };
            self.input.drain(..consumed.min(self.input.len()));
            let (segmented, destination, source, control, information) = frame_owned;
            let frame = Frame { segmented, destination, source, control, information: &information };
            if self.hdlc_frame(&frame, wall, out) == Step::Close {
                return Step::Close;
            }
        }
    }

    fn hdlc_frame(&mut self, frame: &Frame<'_>, wall: DateTime<Utc>, out: &mut Vec<u8>) -> Step {
        if matches!(frame.control, Control::Snrm | Control::Disc) {
            // A new or ended link ends the association.
            self.persist();
            self.server = None;
        }
        let Some(h) = self.hdlc.as_mut() else { return Step::Close };
        if frame.control == Control::Snrm {
            // Whatever server address the client uses is this meter (the IP address chose it).
            h.local = frame.destination;
            h.peer = frame.source;
            h.link = Some(hdlc::Connection::new(Role::Server, h.local, h.peer, Parameters::default()));
            h.incoming.clear();
            h.outgoing.clear();
            h.expect_ns = 0;
        }
        // A new I-frame (not the repeat of the last one) carries the next piece of the client's LSDU.
        let new_info = matches!(frame.control, Control::I { ns, .. } if ns == h.expect_ns);
        let Some(link) = h.link.as_mut() else {
            // Not connected: answer DM to anything but SNRM.
            let dm = Frame::control_only(frame.source, frame.destination, Control::Dm);
            return if dm.encode(out).is_ok() { Step::Continue } else { Step::Close };
        };
        let mut scratch = [0u8; 4096];
        let mut reasm = hdlc::Reassembler::new(&mut scratch);
        let event = match link.handle(frame, &mut reasm) {
            Ok(e) => e,
            Err(_) => {
                self.protocol_error();
                return Step::Close;
            }
        };
        if new_info {
            h.expect_ns = (h.expect_ns + 1) % 8;
            h.incoming.extend_from_slice(frame.information);
            if h.incoming.len() > MAX_INPUT {
                self.protocol_error();
                return Step::Close;
            }
        }
        let mut fb = [0u8; 4096];
        match event {
            hdlc::Event::AcknowledgeRequired => {
                let Ok(n) = link.acknowledge(&mut fb) else { return Step::Close };
                out.extend_from_slice(&fb[..n]);
                if frame.control == Control::Disc {
                    h.link = None;
                }
                Step::Continue
            }
            hdlc::Event::PollRequired => {
                let Ok(n) = link.poll(&mut fb) else { return Step::Close };
                out.extend_from_slice(&fb[..n]);
                Step::Continue
            }
            hdlc::Event::Lsdu => {
                let lsdu = std::mem::take(&mut h.incoming);
                let apdu = lsdu.strip_prefix(&hdlc::LLC_REQUEST[..]).unwrap_or(&lsdu[..]).to_vec();
                let sap = client_sap_of(frame.source);
                match self.apdu(sap, &apdu, wall) {
                    Err(()) => Step::Close,
                    Ok(None) => Step::Continue,
                    Ok(Some(mut reply)) => {
                        self.tamper(&mut reply);
                        let corrupt = self.corrupt_now();
                        let Some(h) = self.hdlc.as_mut() else { return Step::Close };
                        h.outgoing.clear();
                        h.outgoing.extend_from_slice(&hdlc::LLC_RESPONSE);
                        h.outgoing.extend_from_slice(&reply);
                        Self::hdlc_send_next(h, corrupt, out)
                    }
                }
            }
            hdlc::Event::Idle => {
                if matches!(frame.control, Control::Rr { .. }) && !h.outgoing.is_empty() {
                    return Self::hdlc_send_next(h, false, out);
                }
                Step::Continue
            }
            hdlc::Event::Connected | hdlc::Event::Disconnected => Step::Continue,
        }
    }

    /// Sends the next segment of the outgoing LSDU (the rest waits for the client's RR).
    fn hdlc_send_next(h: &mut HdlcLink, corrupt: bool, out: &mut Vec<u8>) -> Step {
        let Some(link) = h.link.as_mut() else { return Step::Close };
        let Ok(mut seg) = link.segmenter(&h.outgoing) else { return Step::Close };
        let mut fb = [0u8; 4096];
        let n = match link.next_frame(&mut seg, &mut fb) {
            Ok(Some(n)) => n,
            Ok(None) => return Step::Continue,
            Err(_) => return Step::Close,
        };
        let remaining = seg.remaining();
        let sent = h.outgoing.len() - remaining;
        h.outgoing.drain(..sent);
        // dlms-cosem-rs clears the final bit on all but the last segment; with a window of one the
        // server hands the line back after EVERY frame (the client answers each with RR), and clients
        // such as Gurux reject a segment without it. Re-encode the frame with F set.
        let mut n = n;
        if let Ok((frame, _)) = hdlc::decode_frame(&fb[..n]) {
            if let Control::I { ns, nr, pf: false } = frame.control {
                let info = frame.information.to_vec();
                let fixed = Frame { control: Control::I { ns, nr, pf: true }, information: &info, ..frame };
                let mut v = Vec::with_capacity(n);
                if fixed.encode(&mut v).is_ok() && v.len() <= fb.len() {
                    fb[..v.len()].copy_from_slice(&v);
                    n = v.len();
                }
            }
        }
        if corrupt && n > 12 {
            // Inside the information field: the FCS no longer matches.
            fb[n - 4] = !fb[n - 4];
        }
        out.extend_from_slice(&fb[..n]);
        Step::Continue
    }
}
