//! The async client session.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

use dlms_cosem_rs::acse::{AuthMechanism, Diagnostic, UserDiagnostic};
use dlms_cosem_rs::axdr::{Data, DateTime as EngineDateTime};
use dlms_cosem_rs::client::{AssociationStep, ClientConfig, ClientSession, Response};
use dlms_cosem_rs::codec::{Decode, Reader};
use dlms_cosem_rs::cosem::{EntryDescriptor, RangeDescriptor};
use dlms_cosem_rs::security::{
    KeyRing, RandomSource, RustCryptoProvider, Secret, SecurityPolicy, SecuritySuite, SystemTitle,
};
use dlms_cosem_rs::xdlms::{
    AttributeDescriptor, AttributeDescriptorWithSelection, Conformance, ExceptionResponse, GetDataResult,
    MethodDescriptor, SelectiveAccess, ServiceError,
};

use crate::error::{dar, DataAccessError, Error, Result};
use crate::transport::{
    HdlcAddress, HdlcCodec, HdlcControl, HdlcFrame, HdlcParameters, WrapperCodec, WrapperFrame, LLC_REQUEST,
    LLC_RESPONSE,
};
use crate::value::{CosemDateTime, Value};

/// Conformance bits in the wire layout of the InitiateRequest's 24-bit block
/// (bit 0 = LSB = action), as in IEC 62056-5-3 / the project's DLMS.md.
pub mod conformance {
    /// action
    pub const ACTION: u32 = 1 << 0;
    /// event-notification
    pub const EVENT_NOTIFICATION: u32 = 1 << 1;
    /// selective-access
    pub const SELECTIVE_ACCESS: u32 = 1 << 2;
    /// set
    pub const SET: u32 = 1 << 3;
    /// get
    pub const GET: u32 = 1 << 4;
    /// data-notification
    pub const DATA_NOTIFICATION: u32 = 1 << 7;
    /// multiple-references
    pub const MULTIPLE_REFERENCES: u32 = 1 << 9;
    /// block-transfer-with-action
    pub const BLOCK_TRANSFER_WITH_ACTION: u32 = 1 << 10;
    /// block-transfer-with-set
    pub const BLOCK_TRANSFER_WITH_SET: u32 = 1 << 11;
    /// block-transfer-with-get
    pub const BLOCK_TRANSFER_WITH_GET: u32 = 1 << 12;
    /// general-block-transfer
    pub const GENERAL_BLOCK_TRANSFER: u32 = 1 << 21;
    /// general-protection
    pub const GENERAL_PROTECTION: u32 = 1 << 22;
    /// What this crate proposes by default: 0x00_7E_1F, the block Gurux proposes
    /// (get, set, action, selective access, event notification, multiple references,
    /// block transfer with get/set/action, attribute0-with-get, priority management).
    pub const DEFAULT: u32 = 0x00_7E1F;
}

fn conformance_to_engine(wire: u32) -> Conformance {
    let b = wire.to_be_bytes();
    Conformance::from_bytes([b[1], b[2], b[3]])
}

fn conformance_from_engine(c: Conformance) -> u32 {
    let [a, b, d] = c.to_bytes();
    u32::from_be_bytes([0, a, b, d])
}

/// An OBIS code `A.B.C.D.E.F`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Obis(pub [u8; 6]);

impl Obis {
    /// From its six groups.
    #[must_use]
    pub const fn new(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8) -> Self {
        Self([a, b, c, d, e, f])
    }

    fn engine(self) -> dlms_cosem_rs::Obis {
        dlms_cosem_rs::Obis(self.0)
    }
}

impl fmt::Display for Obis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a}.{b}.{c}.{d}.{e}.{g}")
    }
}

impl FromStr for Obis {
    type Err = Error;

    /// Accepts `1.0.1.8.0.255` and `1-0:1.8.0*255` (and 5 groups, F defaulting to 255).
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(['.', '-', ':', '*']).collect();
        let bad = || Error::InvalidArgument(format!("not an OBIS code: {s:?}"));
        let mut out = [0u8, 0, 0, 0, 0, 255];
        if parts.len() != 6 && parts.len() != 5 {
            return Err(bad());
        }
        for (slot, p) in out.iter_mut().zip(parts) {
            *slot = p.trim().parse().map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

/// A reference to one attribute: interface class, logical name, attribute index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttrRef {
    /// Interface class id (1 Data, 3 Register, 7 Profile generic, 8 Clock, …).
    pub class_id: u16,
    /// Logical name.
    pub obis: Obis,
    /// Attribute index (2 = value for most classes).
    pub attribute: i8,
}

impl AttrRef {
    /// Shorthand constructor.
    #[must_use]
    pub const fn new(class_id: u16, obis: Obis, attribute: i8) -> Self {
        Self { class_id, obis, attribute }
    }

    fn engine(self) -> AttributeDescriptor {
        AttributeDescriptor::new(self.class_id, self.obis.engine(), self.attribute)
    }
}

/// How the client reaches the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportOptions {
    /// IEC 62056-47 wrapper (TCP port 4059).
    Wrapper {
        /// Client SAP (16 public, 1 management, …).
        client_sap: u16,
        /// Server logical device (1 management).
        server_sap: u16,
    },
    /// HDLC (over TCP here; the same link layer serves serial ports).
    Hdlc {
        /// Client address (SAP), e.g. 16.
        client_address: u8,
        /// Server upper (logical device) address, e.g. 1.
        server_logical: u16,
        /// Server lower (physical) address, e.g. 17.
        server_physical: u16,
    },
}

impl TransportOptions {
    fn client_sap(&self) -> u8 {
        match self {
            Self::Wrapper { client_sap, .. } => u8::try_from(*client_sap).unwrap_or(0x10),
            Self::Hdlc { client_address, .. } => *client_address,
        }
    }
}

/// How the client authenticates. `Debug` never prints secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum Authentication {
    /// No security (public client).
    None,
    /// Low-level security: a password.
    Low {
        /// The password.
        password: Vec<u8>,
    },
    /// HLS-GMAC (mechanism 5) with security suite 0, all APDUs glo-ciphered
    /// (authenticated and encrypted).
    Gmac {
        /// Client system title.
        system_title: [u8; 8],
        /// Global unicast encryption key (block cipher key, EK).
        encryption_key: [u8; 16],
        /// Authentication key (AK).
        authentication_key: [u8; 16],
        /// The last invocation counter used under these keys (persisted value).
        invocation_counter: u32,
    },
}

impl fmt::Debug for Authentication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Low { .. } => f.debug_struct("Low").field("password", &"<redacted>").finish(),
            Self::Gmac { system_title, invocation_counter, .. } => f
                .debug_struct("Gmac")
                .field("system_title", &hex::encode(system_title))
                .field("encryption_key", &"<redacted>")
                .field("authentication_key", &"<redacted>")
                .field("invocation_counter", invocation_counter)
                .finish(),
        }
    }
}

/// Client options.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Transport and addresses.
    pub transport: TransportOptions,
    /// Authentication mechanism and secrets.
    pub authentication: Authentication,
    /// Largest APDU the client proposes to receive.
    pub max_receive_pdu: u16,
    /// Conformance block proposed, in wire layout (see [`conformance`]).
    pub conformance: u32,
    /// Timeout for the TCP connect and for the HDLC SNRM/UA.
    pub connect_timeout: Duration,
    /// Timeout for each request/response exchange (each block is its own step).
    pub timeout: Duration,
    /// At most this many attributes per GET with-list request.
    pub max_list_len: usize,
    /// Largest reassembled response (block transfer / HDLC segments) accepted.
    pub max_response_len: usize,
    /// HDLC information field length proposed in SNRM (both directions).
    pub hdlc_max_info: u16,
}

impl ClientOptions {
    /// Defaults for a transport: no authentication, PDU 1024, 10 s timeouts.
    #[must_use]
    pub fn new(transport: TransportOptions) -> Self {
        Self {
            transport,
            authentication: Authentication::None,
            max_receive_pdu: 1024,
            conformance: conformance::DEFAULT,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            max_list_len: 10,
            max_response_len: 1 << 20,
            hdlc_max_info: 128,
        }
    }
}

/// What the association negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The server's max receive PDU size.
    pub max_pdu: u16,
    /// Negotiated conformance, wire layout (see [`conformance`]).
    pub conformance: u32,
    /// DLMS version (6).
    pub dlms_version: u8,
    /// The meter's system title from the AARE, if any.
    pub server_system_title: Option<[u8; 8]>,
    /// HDLC parameters, when on HDLC.
    pub hdlc: Option<HdlcParameters>,
}

/// Randomness for HLS challenges: the OS's `/dev/urandom`.
#[derive(Debug, Clone, Copy, Default)]
struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&self, out: &mut [u8]) -> dlms_cosem_rs::Result<()> {
        use std::io::Read;
        let unsupported = || dlms_cosem_rs::Error::new(dlms_cosem_rs::ErrorKind::Unsupported, 0);
        let mut f = std::fs::File::open("/dev/urandom").map_err(|_| unsupported())?;
        f.read_exact(out).map_err(|_| unsupported())
    }
}

/// The request buffer before association, and the least after (an AARQ or a GET of a few
/// attributes takes a few hundred bytes).
const REQUEST_BUFFER: usize = 2048;
/// The largest request buffer, for meters that accept long APDUs.
const MAX_REQUEST_BUFFER: usize = 8192;

type Engine = ClientSession<RustCryptoProvider<OsRandom>, 4096>;

enum Link<S> {
    Wrapper(Framed<S, WrapperCodec>),
    Hdlc { framed: Framed<S, HdlcCodec>, ns: u8, nr: u8, params: HdlcParameters },
}

/// An async DLMS client session over any `AsyncRead + AsyncWrite` stream.
///
/// One request at a time; every exchange is bounded by [`ClientOptions::timeout`].
pub struct Session<S = TcpStream> {
    link: Link<S>,
    opts: ClientOptions,
    engine: Option<Box<Engine>>,
    negotiated: Option<Negotiated>,
    invocation_counter: Option<u32>,
    /// The request buffer, kept between requests (a session makes several).
    scratch: Vec<u8>,
}

impl<S> fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("opts", &self.opts)
            .field("negotiated", &self.negotiated)
            .field("invocation_counter", &self.invocation_counter)
            .finish_non_exhaustive()
    }
}

impl Session<TcpStream> {
    /// Connect over TCP (bounded by `connect_timeout`); on HDLC also opens the link
    /// (SNRM/UA). Call [`Session::associate`] next.
    ///
    /// # Errors
    /// I/O, timeout, or the meter refusing the link.
    pub async fn connect_tcp(addr: impl ToSocketAddrs, opts: &ClientOptions) -> Result<Self> {
        let stream = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout("TCP connect"))??;
        let _ = stream.set_nodelay(true);
        Self::connect(stream, opts).await
    }

    /// Read the meter's invocation counter for our client (0.0.43.1.0.255, class 1,
    /// attribute 2) with the public client (SAP 16, no security), to resynchronise after
    /// [`Error::AuthenticationRejected`]. Continue with `counter` (use it as the last
    /// used value: the next frame sends `counter + 1`).
    ///
    /// # Errors
    /// As the session calls it makes.
    pub async fn read_invocation_counter(addr: impl ToSocketAddrs, opts: &ClientOptions) -> Result<u32> {
        let mut public = opts.clone();
        public.authentication = Authentication::None;
        public.transport = match opts.transport {
            TransportOptions::Wrapper { server_sap, .. } => TransportOptions::Wrapper { client_sap: 16, server_sap },
            TransportOptions::Hdlc { server_logical, server_physical, .. } => {
                TransportOptions::Hdlc { client_address: 16, server_logical, server_physical }
            }
        };
        let mut s = Self::connect_tcp(addr, &public).await?;
        s.associate().await?;
        let v = s.get(AttrRef::new(1, Obis::new(0, 0, 43, 1, 0, 255), 2)).await;
        let _ = s.release().await;
        let v = v?;
        v.as_i64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::Unexpected(format!("invocation counter is {}", v.type_name())))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Wrap a connected stream; on HDLC open the link (SNRM/UA, bounded by
    /// `connect_timeout`).
    ///
    /// # Errors
    /// I/O, timeout, or the meter answering DM.
    pub async fn connect(stream: S, opts: &ClientOptions) -> Result<Self> {
        let max = usize::from(opts.max_receive_pdu).max(2048).min(usize::from(u16::MAX));
        // Read and write buffers sized for one APDU we accept (they grow when a frame is
        // larger): tokio-util's default of 8 KB each is most of a session's memory when
        // thousands are open at once.
        let io_buffer = (usize::from(opts.max_receive_pdu) + 16).clamp(256, 8192);
        let link = match opts.transport {
            TransportOptions::Wrapper { .. } => {
                Link::Wrapper(Framed::with_capacity(stream, WrapperCodec::new(max), io_buffer))
            }
            TransportOptions::Hdlc { .. } => Link::Hdlc {
                framed: Framed::with_capacity(stream, HdlcCodec::default(), io_buffer),
                ns: 0,
                nr: 0,
                params: HdlcParameters::default(),
            },
        };
        let mut s = Self {
            invocation_counter: match opts.authentication {
                Authentication::Gmac { invocation_counter, .. } => Some(invocation_counter),
                _ => None,
            },
            link,
            opts: opts.clone(),
            engine: None,
            negotiated: None,
            scratch: Vec::new(),
        };
        if matches!(s.link, Link::Hdlc { .. }) {
            let t = s.opts.connect_timeout;
            tokio::time::timeout(t, s.snrm()).await.map_err(|_| Error::Timeout("HDLC UA"))??;
        }
        Ok(s)
    }

    fn addresses(&self) -> (HdlcAddress, HdlcAddress) {
        match self.opts.transport {
            TransportOptions::Hdlc { client_address, server_logical, server_physical } => (
                HdlcAddress::Single(client_address),
                HdlcAddress::Server { logical: server_logical, physical: server_physical },
            ),
            TransportOptions::Wrapper { .. } => (HdlcAddress::Single(0), HdlcAddress::Single(0)),
        }
    }

    async fn send_hdlc(&mut self, control: HdlcControl, segmented: bool, info: Vec<u8>) -> Result<()> {
        let (client, server) = self.addresses();
        let Link::Hdlc { framed, .. } = &mut self.link else { return Err(Error::NotAssociated) };
        framed
            .send(HdlcFrame { segmented, destination: server, source: client, control, information: Bytes::from(info) })
            .await
    }

    async fn next_hdlc(&mut self) -> Result<HdlcFrame> {
        let (client, _) = self.addresses();
        let Link::Hdlc { framed, .. } = &mut self.link else { return Err(Error::NotAssociated) };
        loop {
            let frame = framed.next().await.ok_or(Error::Closed)??;
            if frame.destination == client {
                return Ok(frame);
            }
            tracing::debug!(?frame.destination, "HDLC frame for another station ignored");
        }
    }

    async fn snrm(&mut self) -> Result<()> {
        let proposed = HdlcParameters {
            max_info_tx: self.opts.hdlc_max_info,
            max_info_rx: self.opts.hdlc_max_info,
            window_tx: 1,
            window_rx: 1,
        };
        self.send_hdlc(HdlcControl::Snrm, false, proposed.encode()).await?;
        loop {
            let f = self.next_hdlc().await?;
            match f.control {
                HdlcControl::Ua => {
                    let params = HdlcParameters::negotiate_from_ua(proposed, &f.information)?;
                    if let Link::Hdlc { ns, nr, params: p, .. } = &mut self.link {
                        *ns = 0;
                        *nr = 0;
                        *p = params;
                    }
                    return Ok(());
                }
                HdlcControl::Dm | HdlcControl::Frmr | HdlcControl::Disc => {
                    return Err(Error::Rejected(format!("HDLC link refused ({:?})", f.control)))
                }
                _ => continue,
            }
        }
    }

    /// Send one APDU and wait for one, within the per-step timeout.
    async fn exchange(&mut self, apdu: &[u8]) -> Result<Vec<u8>> {
        let t = self.opts.timeout;
        tokio::time::timeout(t, self.exchange_inner(apdu)).await.map_err(|_| Error::Timeout("response"))?
    }

    async fn exchange_inner(&mut self, apdu: &[u8]) -> Result<Vec<u8>> {
        match &mut self.link {
            Link::Wrapper(framed) => {
                let TransportOptions::Wrapper { client_sap, server_sap } = self.opts.transport else {
                    return Err(Error::NotAssociated);
                };
                framed
                    .send(WrapperFrame {
                        source: client_sap,
                        destination: server_sap,
                        apdu: Bytes::copy_from_slice(apdu),
                    })
                    .await?;
                loop {
                    let f = framed.next().await.ok_or(Error::Closed)??;
                    if f.destination == client_sap && f.source == server_sap {
                        return Ok(f.apdu.to_vec());
                    }
                    tracing::debug!(f.source, f.destination, "wrapper PDU for other ports ignored");
                }
            }
            Link::Hdlc { .. } => self.exchange_hdlc(apdu).await,
        }
    }

    async fn exchange_hdlc(&mut self, apdu: &[u8]) -> Result<Vec<u8>> {
        let Link::Hdlc { params, .. } = &self.link else { return Err(Error::NotAssociated) };
        let max_info = usize::from(params.max_info_tx.max(16));
        let mut lsdu = LLC_REQUEST.to_vec();
        lsdu.extend_from_slice(apdu);
        let chunks: Vec<Vec<u8>> = lsdu.chunks(max_info).map(<[u8]>::to_vec).collect();
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = i + 1 == count;
            let (ns, nr) = match &mut self.link {
                Link::Hdlc { ns, nr, .. } => {
                    let cur = *ns;
                    *ns = (*ns + 1) % 8;
                    (cur, *nr)
                }
                Link::Wrapper(_) => return Err(Error::NotAssociated),
            };
            self.send_hdlc(HdlcControl::I { ns, nr, pf: true }, !last, chunk).await?;
            if !last {
                // The meter acknowledges each segment with RR before we send the next.
                loop {
                    let f = self.next_hdlc().await?;
                    match f.control {
                        HdlcControl::Rr { .. } => break,
                        HdlcControl::Dm | HdlcControl::Disc | HdlcControl::Frmr => {
                            return Err(Error::Framing(format!("meter dropped the link ({:?})", f.control)))
                        }
                        _ => continue,
                    }
                }
            }
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            let f = self.next_hdlc().await?;
            match f.control {
                HdlcControl::I { ns, pf, .. } => {
                    let Link::Hdlc { nr, .. } = &mut self.link else { return Err(Error::NotAssociated) };
                    if ns == (*nr + 7) % 8 {
                        continue; // a repeat of the frame just accepted
                    }
                    if ns != *nr {
                        return Err(Error::Framing(format!("HDLC N(S) {ns}, expected {nr}")));
                    }
                    *nr = (*nr + 1) % 8;
                    let nr_now = *nr;
                    if out.len().saturating_add(f.information.len()) > self.opts.max_response_len.saturating_add(3) {
                        return Err(Error::FrameTooLong {
                            len: out.len() + f.information.len(),
                            max: self.opts.max_response_len,
                        });
                    }
                    out.extend_from_slice(&f.information);
                    if !f.segmented {
                        break;
                    }
                    if pf {
                        self.send_hdlc(HdlcControl::Rr { nr: nr_now, pf: true }, false, Vec::new()).await?;
                    }
                }
                HdlcControl::Dm | HdlcControl::Disc | HdlcControl::Frmr => {
                    return Err(Error::Framing(format!("meter dropped the link ({:?})", f.control)))
                }
                _ => continue,
            }
        }
        out.strip_prefix(&LLC_RESPONSE[..])
            .or_else(|| out.strip_prefix(&LLC_REQUEST[..]))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::Framing("HDLC information without LLC header".into()))
    }

    fn engine_config(&self) -> Result<(ClientConfig, KeyRing)> {
        let mut cfg = ClientConfig {
            client_sap: self.opts.transport.client_sap(),
            max_pdu_size: self.opts.max_receive_pdu,
            conformance: conformance_to_engine(self.opts.conformance),
            ..ClientConfig::default()
        };
        let mut ring = KeyRing::default();
        match &self.opts.authentication {
            Authentication::None => {}
            Authentication::Low { password } => {
                cfg.mechanism = AuthMechanism::Low;
                cfg.password =
                    Some(Secret::new(password).map_err(|_| Error::InvalidArgument("password too long".into()))?);
            }
            Authentication::Gmac { system_title, encryption_key, authentication_key, .. } => {
                cfg.mechanism = AuthMechanism::HighGmac;
                cfg.system_title = Some(SystemTitle::new(*system_title));
                cfg.security = SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0);
                cfg.invocation_counter = self.invocation_counter.unwrap_or(0);
                ring = KeyRing::new(*encryption_key, *authentication_key);
            }
        }
        Ok((cfg, ring))
    }

    /// Open the application association (AARQ/AARE, plus the HLS-GMAC passes 3–4).
    ///
    /// # Errors
    /// [`Error::AuthenticationRejected`] when the meter refuses our credentials or
    /// invocation counter; [`Error::Rejected`] for other refusals; I/O and timeouts.
    pub async fn associate(&mut self) -> Result<Negotiated> {
        let (cfg, ring) = self.engine_config()?;
        let mut engine: Box<Engine> = Box::new(ClientSession::new(cfg, RustCryptoProvider::with_rng(ring, OsRandom)));
        let mut buf = vec![0u8; REQUEST_BUFFER];
        let n = engine.associate_request(&mut buf)?;
        let answer = self.exchange(buf.get(..n).unwrap_or_default()).await?;
        self.invocation_counter = self.invocation_counter.map(|_| engine.invocation_counter());
        let step = engine.handle_associate_response(&answer).map_err(Error::from)?;
        match step {
            AssociationStep::Established => {}
            AssociationStep::HlsReplyRequired => {
                let n = engine.hls_reply_request(&mut buf)?;
                self.invocation_counter = Some(engine.invocation_counter());
                let answer = self.exchange(buf.get(..n).unwrap_or_default()).await?;
                match engine.handle_hls_reply_response(&answer) {
                    Ok(AssociationStep::Established) => {}
                    Ok(AssociationStep::Exception(e)) => return Err(exception_error(&e)),
                    Ok(other) => {
                        return Err(Error::AuthenticationRejected {
                            reason: format!("HLS reply refused: {other:?}"),
                            expected_invocation_counter: None,
                        })
                    }
                    Err(e) => {
                        // A plain exception (e.g. deciphering error) instead of the ciphered answer.
                        if answer.first() == Some(&0xD8) {
                            if let Ok(ex) = ExceptionResponse::from_bytes(answer.get(1..).unwrap_or_default()) {
                                return Err(exception_error(&ex));
                            }
                        }
                        return Err(Error::AuthenticationRejected {
                            reason: format!("meter's HLS proof did not verify: {e}"),
                            expected_invocation_counter: None,
                        });
                    }
                }
            }
            AssociationStep::Rejected { result, diagnostic } => {
                let auth = matches!(
                    diagnostic,
                    Diagnostic::User(
                        UserDiagnostic::AuthenticationFailure
                            | UserDiagnostic::AuthenticationRequired
                            | UserDiagnostic::AuthenticationMechanismNameNotRecognised
                            | UserDiagnostic::AuthenticationMechanismNameRequired
                    )
                );
                let reason = format!("{result:?}, diagnostic {diagnostic:?}");
                return Err(if auth {
                    Error::AuthenticationRejected { reason, expected_invocation_counter: None }
                } else {
                    Error::Rejected(reason)
                });
            }
            AssociationStep::Exception(e) => return Err(exception_error(&e)),
        }
        let init = engine.negotiated().ok_or_else(|| Error::Unexpected("AARE without InitiateResponse".into()))?;
        let negotiated = Negotiated {
            max_pdu: init.server_max_receive_pdu_size,
            conformance: conformance_from_engine(init.negotiated_conformance),
            dlms_version: init.negotiated_dlms_version,
            server_system_title: engine.server_system_title().map(|t| t.0),
            hdlc: match &self.link {
                Link::Hdlc { params, .. } => Some(*params),
                Link::Wrapper(_) => None,
            },
        };
        self.negotiated = Some(negotiated.clone());
        self.engine = Some(engine);
        Ok(negotiated)
    }

    /// What the association negotiated, once associated.
    #[must_use]
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The last invocation counter this client sent under (HLS-GMAC only). Persist it
    /// and pass it back in [`Authentication::Gmac::invocation_counter`] next time.
    #[must_use]
    pub fn invocation_counter(&self) -> Option<u32> {
        self.invocation_counter
    }

    fn engine(&mut self) -> Result<&mut Engine> {
        self.engine.as_deref_mut().ok_or(Error::NotAssociated)
    }

    fn has(&self, bit: u32) -> bool {
        self.negotiated.as_ref().is_some_and(|n| n.conformance & bit != 0)
    }

    /// Build a request with the engine, exchange it, and update the counter.
    async fn request<F>(&mut self, build: F) -> Result<Vec<u8>>
    where
        F: FnOnce(&mut Engine, &mut [u8]) -> dlms_cosem_rs::Result<usize>,
    {
        let mut buf = std::mem::take(&mut self.scratch);
        // A request never exceeds what the meter accepts (its max receive PDU) plus ciphering.
        let size = self.negotiated.as_ref().map_or(MAX_REQUEST_BUFFER, |n| usize::from(n.max_pdu) + 64);
        buf.resize(size.clamp(REQUEST_BUFFER, MAX_REQUEST_BUFFER), 0);
        let built = match self.engine.as_deref_mut() {
            Some(engine) => build(engine, &mut buf).map(|n| (n, engine.invocation_counter())).map_err(Error::from),
            None => Err(Error::NotAssociated),
        };
        let out = match built {
            Ok((n, ic)) => {
                if self.invocation_counter.is_some() {
                    self.invocation_counter = Some(ic);
                }
                self.exchange(buf.get(..n).unwrap_or_default()).await
            }
            Err(e) => Err(e),
        };
        self.scratch = buf;
        out
    }

    /// GET one attribute; block transfer is followed transparently.
    ///
    /// # Errors
    /// [`Error::DataAccess`] with the meter's data-access-result, or transport errors.
    pub async fn get(&mut self, attr: AttrRef) -> Result<Value> {
        self.get_selective(attr, None).await
    }

    async fn get_selective(&mut self, attr: AttrRef, access: Option<(u8, Vec<u8>)>) -> Result<Value> {
        let answer = self
            .request(|e, out| {
                let sa = match &access {
                    Some((selector, params)) => {
                        Some(SelectiveAccess { selector: *selector, parameters: Data::from_bytes_in(params)? })
                    }
                    None => None,
                };
                e.get_request(attr.engine(), sa, out)
            })
            .await?;
        let raw = self.follow_blocks(answer).await?;
        match raw {
            Single::Value(v) => Ok(v),
            Single::Blocks(bytes) => Value::decode(&bytes),
        }
    }

    /// Handle a GET response, fetching further blocks; returns either a decoded value
    /// (normal response) or the concatenated raw block data.
    async fn follow_blocks(&mut self, mut answer: Vec<u8>) -> Result<Single> {
        let mut collected: Vec<u8> = Vec::new();
        let mut expected: u32 = 1;
        loop {
            let mut plain = vec![0u8; answer.len() + 64];
            let engine = self.engine()?;
            let next = match engine.handle_response(&answer, &mut plain)? {
                Response::Data(d) => return Ok(Single::Value(Value::from_data(&d)?)),
                Response::DataList(list) => {
                    // A with-list answer: re-encode count + items for the caller.
                    let mut raw = Vec::new();
                    push_len(&mut raw, list.len());
                    raw.extend_from_slice(list.as_bytes());
                    return Ok(Single::Blocks(raw));
                }
                Response::DataError(e) => {
                    return Err(dar(e).map_or_else(|| Error::Unexpected("success as error".into()), Error::DataAccess))
                }
                Response::Block { last, number, data } => {
                    if number != expected {
                        return Err(Error::Unexpected(format!("block {number}, expected {expected}")));
                    }
                    if collected.len().saturating_add(data.len()) > self.opts.max_response_len {
                        return Err(Error::FrameTooLong {
                            len: collected.len() + data.len(),
                            max: self.opts.max_response_len,
                        });
                    }
                    collected.extend_from_slice(data);
                    if last {
                        return Ok(Single::Blocks(collected));
                    }
                    expected = expected.wrapping_add(1);
                    number
                }
                Response::Exception(e) => return Err(exception_error(&e)),
                other => return Err(Error::Unexpected(format!("{other:?}"))),
            };
            answer = self.request(|e, out| e.get_next_block_request(next, out)).await?;
        }
    }

    /// GET several attributes. Uses GET with-list (chunked by
    /// [`ClientOptions::max_list_len`]) when the meter agreed to multiple-references,
    /// otherwise one GET each. Per-item refusals come back as `Err(DataAccessError)`.
    ///
    /// # Errors
    /// Transport, protocol and association errors (not per-item refusals).
    pub async fn get_list(&mut self, attrs: &[AttrRef]) -> Result<Vec<Result<Value, DataAccessError>>> {
        let mut out = Vec::with_capacity(attrs.len());
        if !self.has(conformance::MULTIPLE_REFERENCES) || attrs.len() == 1 {
            for a in attrs {
                match self.get(*a).await {
                    Ok(v) => out.push(Ok(v)),
                    Err(Error::DataAccess(e)) => out.push(Err(e)),
                    Err(e) => return Err(e),
                }
            }
            return Ok(out);
        }
        for chunk in attrs.chunks(self.opts.max_list_len.max(1)) {
            let items: Vec<AttributeDescriptorWithSelection<'static>> = chunk
                .iter()
                .map(|a| AttributeDescriptorWithSelection { descriptor: a.engine(), access: None })
                .collect();
            let answer = self.request(|e, buf| e.get_request_with_list(&items, buf)).await?;
            let raw = match self.follow_blocks(answer).await? {
                Single::Blocks(b) => b,
                Single::Value(_) => return Err(Error::Unexpected("normal response to a with-list request".into())),
            };
            let results = parse_result_list(&raw)?;
            if results.len() != chunk.len() {
                return Err(Error::Unexpected(format!("{} results for {} attributes", results.len(), chunk.len())));
            }
            out.extend(results);
        }
        Ok(out)
    }

    /// Read a profile's buffer (class 7, attribute 2) by range (selector 1) on the
    /// clock column (8 / 0.0.1.0.0.255 / 2), all columns.
    ///
    /// # Errors
    /// As [`Session::get`].
    pub async fn get_profile_range(&mut self, obis: Obis, from: CosemDateTime, to: CosemDateTime) -> Result<Value> {
        let rd = RangeDescriptor::by_clock(
            EngineDateTime::from_bytes(from.to_bytes()),
            EngineDateTime::from_bytes(to.to_bytes()),
        );
        let mut buf = [0u8; 128];
        let sa = rd.to_selective_access(&mut buf)?;
        let params = encode_data(&sa.parameters)?;
        self.get_selective(AttrRef::new(7, obis, 2), Some((1, params))).await
    }

    /// Read a profile's buffer by entry (selector 2): rows `from..=to` (1-based), all
    /// columns.
    ///
    /// # Errors
    /// As [`Session::get`].
    pub async fn get_profile_entries(&mut self, obis: Obis, from: u32, to: u32) -> Result<Value> {
        let mut buf = [0u8; 64];
        let sa = EntryDescriptor::entries(from, to).to_selective_access(&mut buf)?;
        let params = encode_data(&sa.parameters)?;
        self.get_selective(AttrRef::new(7, obis, 2), Some((2, params))).await
    }

    /// SET one attribute.
    ///
    /// # Errors
    /// [`Error::DataAccess`] with the meter's result, or transport errors.
    pub async fn set(&mut self, attr: AttrRef, value: &Value) -> Result<()> {
        let bytes = value.encode();
        let answer = self
            .request(|e, out| {
                let d = Data::from_bytes_in(&bytes)?;
                e.set_request(attr.engine(), None, d, out)
            })
            .await?;
        let mut plain = vec![0u8; answer.len() + 64];
        match self.engine()?.handle_response(&answer, &mut plain)? {
            Response::Ok => Ok(()),
            Response::DataError(e) => {
                Err(dar(e).map_or(Error::Unexpected("success as error".into()), Error::DataAccess))
            }
            Response::Exception(e) => Err(exception_error(&e)),
            other => Err(Error::Unexpected(format!("{other:?}"))),
        }
    }

    /// Invoke a method; returns its return value, if any.
    ///
    /// # Errors
    /// [`Error::Action`] with the meter's action-result, or transport errors.
    pub async fn action(
        &mut self,
        class_id: u16,
        obis: Obis,
        method: i8,
        params: Option<Value>,
    ) -> Result<Option<Value>> {
        let bytes = params.as_ref().map(Value::encode);
        let answer = self
            .request(|e, out| {
                let d = match &bytes {
                    Some(b) => Some(Data::from_bytes_in(b)?),
                    None => None,
                };
                e.action_request(MethodDescriptor::new(class_id, obis.engine(), method), d, out)
            })
            .await?;
        let mut plain = vec![0u8; answer.len() + 64];
        match self.engine()?.handle_response(&answer, &mut plain)? {
            Response::ActionResult { result, value } => {
                if result.is_success() {
                    value.map(|d| Value::from_data(&d)).transpose()
                } else {
                    Err(Error::Action(
                        DataAccessError::from_code(result.as_u8()).unwrap_or(DataAccessError::OtherReason),
                    ))
                }
            }
            Response::Exception(e) => Err(exception_error(&e)),
            other => Err(Error::Unexpected(format!("{other:?}"))),
        }
    }

    /// Release the association (RLRQ/RLRE), on HDLC disconnect the link (DISC/UA),
    /// then close the stream. Every step is bounded by the timeout; a meter that does
    /// not answer the RLRQ is still disconnected.
    ///
    /// # Errors
    /// The first error met; the stream is closed regardless.
    pub async fn release(mut self) -> Result<()> {
        let mut first_err: Option<Error> = None;
        if self.engine.is_some() {
            match self.request(|e, out| e.release_request(out)).await {
                Ok(answer) => {
                    let mut plain = vec![0u8; answer.len() + 64];
                    if let Ok(e) = self.engine() {
                        if let Err(err) = e.handle_response(&answer, &mut plain) {
                            first_err.get_or_insert(Error::from(err));
                        }
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if matches!(self.link, Link::Hdlc { .. }) {
            let t = self.opts.timeout;
            let disc = async {
                self.send_hdlc(HdlcControl::Disc, false, Vec::new()).await?;
                loop {
                    let f = self.next_hdlc().await?;
                    if matches!(f.control, HdlcControl::Ua | HdlcControl::Dm) {
                        return Ok::<(), Error>(());
                    }
                }
            };
            match tokio::time::timeout(t, disc).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::Timeout("HDLC DISC"));
                }
            }
        }
        let stream = match &mut self.link {
            Link::Wrapper(f) => f.get_mut(),
            Link::Hdlc { framed, .. } => framed.get_mut(),
        };
        let _ = stream.shutdown().await;
        first_err.map_or(Ok(()), Err)
    }
}

enum Single {
    Value(Value),
    Blocks(Vec<u8>),
}

fn encode_data(d: &Data<'_>) -> Result<Vec<u8>> {
    use dlms_cosem_rs::codec::Encode;
    let mut v = Vec::new();
    d.encode(&mut v)?;
    Ok(v)
}

fn push_len(out: &mut Vec<u8>, n: usize) {
    if let Ok(b) = u8::try_from(n) {
        if b < 0x80 {
            out.push(b);
            return;
        }
    }
    let be = u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    out.push(0x84);
    out.extend_from_slice(&be);
}

fn parse_result_list(raw: &[u8]) -> Result<Vec<Result<Value, DataAccessError>>> {
    let mut r = Reader::new(raw);
    let n = r.length()?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        match GetDataResult::decode(&mut r)? {
            GetDataResult::Data(d) => out.push(Ok(Value::from_data(&d)?)),
            GetDataResult::Error(e) => out.push(Err(dar(e).unwrap_or(DataAccessError::OtherReason))),
        }
    }
    Ok(out)
}

fn exception_error(e: &ExceptionResponse) -> Error {
    match e.service_error {
        ServiceError::InvocationCounterError | ServiceError::DecipheringError => Error::AuthenticationRejected {
            reason: format!("exception-response {:?}", e.service_error),
            expected_invocation_counter: e.expected_invocation_counter,
        },
        _ => Error::Exception { state_error: e.state_error.as_u8(), service_error: e.service_error.as_u8() },
    }
}
