//! Tokio codecs for the two DLMS transports: the IEC 62056-47 TCP wrapper and HDLC
//! (IEC 62056-46) frames. Framing checks (version, lengths, HCS/FCS) are the engine's
//! where it has them; these types only adapt them to `tokio_util::codec`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use dlms_cosem_rs::codec::Encode;
use dlms_cosem_rs::transport::hdlc::{self, Address, Control, Found, Frame, Framer};

use crate::error::Error;

/// Wrapper header length.
pub const WRAPPER_HEADER_LEN: usize = 8;

/// One wrapper PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapperFrame {
    /// Source wPort (client SAP in a request).
    pub source: u16,
    /// Destination wPort (logical device in a request).
    pub destination: u16,
    /// The APDU.
    pub apdu: Bytes,
}

/// Codec for the IEC 62056-47 wrapper: `0001 | src | dst | len | APDU`.
#[derive(Debug, Clone, Copy)]
pub struct WrapperCodec {
    max_apdu: usize,
}

impl WrapperCodec {
    /// A codec refusing PDUs whose announced APDU length exceeds `max_apdu` (≤ 65535).
    #[must_use]
    pub fn new(max_apdu: usize) -> Self {
        Self { max_apdu: max_apdu.min(usize::from(u16::MAX)) }
    }
}

impl Default for WrapperCodec {
    fn default() -> Self {
        Self::new(usize::from(u16::MAX))
    }
}

impl Decoder for WrapperCodec {
    type Item = WrapperFrame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<WrapperFrame>, Error> {
        let Some(header) = src.get(..WRAPPER_HEADER_LEN) else {
            return Ok(None);
        };
        let word = |i: usize| {
            u16::from_be_bytes([header.get(i).copied().unwrap_or(0), header.get(i + 1).copied().unwrap_or(0)])
        };
        let (version, source, destination, len) = (word(0), word(2), word(4), usize::from(word(6)));
        if version != 0x0001 {
            return Err(Error::WrapperVersion(version));
        }
        if len > self.max_apdu {
            return Err(Error::FrameTooLong { len, max: self.max_apdu });
        }
        if src.len() < WRAPPER_HEADER_LEN + len {
            src.reserve(WRAPPER_HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(WRAPPER_HEADER_LEN);
        let apdu = src.split_to(len).freeze();
        Ok(Some(WrapperFrame { source, destination, apdu }))
    }
}

impl Encoder<WrapperFrame> for WrapperCodec {
    type Error = Error;

    fn encode(&mut self, item: WrapperFrame, dst: &mut BytesMut) -> Result<(), Error> {
        let len = item.apdu.len();
        if len > self.max_apdu {
            return Err(Error::FrameTooLong { len, max: self.max_apdu });
        }
        let wpdu = dlms_cosem_rs::transport::wrapper::Wpdu::new(item.source, item.destination, &item.apdu)?;
        let mut out = Vec::with_capacity(WRAPPER_HEADER_LEN + len);
        wpdu.encode(&mut out)?;
        dst.put_slice(&out);
        Ok(())
    }
}

/// An HDLC address: one, two or four bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HdlcAddress {
    /// One byte (client SAP, or a server addressed by one byte).
    Single(u8),
    /// Upper (logical) and lower (physical) address.
    Server {
        /// Logical device.
        logical: u16,
        /// Physical device.
        physical: u16,
    },
}

impl HdlcAddress {
    pub(crate) fn to_engine(self) -> Address {
        match self {
            Self::Single(v) => Address::Single(v),
            Self::Server { logical, physical } => Address::server(logical, physical),
        }
    }

    pub(crate) fn from_engine(a: Address) -> Self {
        match a {
            Address::Single(v) => Self::Single(v),
            Address::Double { upper, lower } => Self::Server { logical: u16::from(upper), physical: u16::from(lower) },
            Address::Quad { upper, lower } => Self::Server { logical: upper, physical: lower },
        }
    }
}

/// Frame kinds by control field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HdlcControl {
    /// Information frame.
    I {
        /// N(S)
        ns: u8,
        /// N(R)
        nr: u8,
        /// Poll/final.
        pf: bool,
    },
    /// Receive ready.
    Rr {
        /// N(R)
        nr: u8,
        /// Poll/final.
        pf: bool,
    },
    /// Receive not ready.
    Rnr {
        /// N(R)
        nr: u8,
        /// Poll/final.
        pf: bool,
    },
    /// SNRM (0x93).
    Snrm,
    /// UA (0x73).
    Ua,
    /// DISC (0x53).
    Disc,
    /// DM (0x1F).
    Dm,
    /// FRMR.
    Frmr,
    /// UI.
    Ui,
}

impl HdlcControl {
    fn from_engine(c: Control) -> Self {
        match c {
            Control::I { ns, nr, pf } => Self::I { ns, nr, pf },
            Control::Rr { nr, pf } => Self::Rr { nr, pf },
            Control::Rnr { nr, pf } => Self::Rnr { nr, pf },
            Control::Snrm => Self::Snrm,
            Control::Ua => Self::Ua,
            Control::Disc => Self::Disc,
            Control::Dm => Self::Dm,
            Control::Frmr => Self::Frmr,
            Control::Ui => Self::Ui,
        }
    }

    fn to_engine(self) -> Control {
        match self {
            Self::I { ns, nr, pf } => Control::I { ns, nr, pf },
            Self::Rr { nr, pf } => Control::Rr { nr, pf },
            Self::Rnr { nr, pf } => Control::Rnr { nr, pf },
            Self::Snrm => Control::Snrm,
            Self::Ua => Control::Ua,
            Self::Disc => Control::Disc,
            Self::Dm => Control::Dm,
            Self::Frmr => Control::Frmr,
            Self::Ui => Control::Ui,
        }
    }
}

/// One HDLC frame (format type 3, `A0`/`A8`), owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HdlcFrame {
    /// Segmentation bit: the information continues in the next frame (`A8`).
    pub segmented: bool,
    /// Destination address.
    pub destination: HdlcAddress,
    /// Source address.
    pub source: HdlcAddress,
    /// Control field.
    pub control: HdlcControl,
    /// Information field (empty when absent).
    pub information: Bytes,
}

impl HdlcFrame {
    /// Encode with flags, HCS and FCS (CRC-16/X.25).
    ///
    /// # Errors
    /// When the frame is longer than the 11-bit length field allows.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let frame = Frame {
            segmented: self.segmented,
            destination: self.destination.to_engine(),
            source: self.source.to_engine(),
            control: self.control.to_engine(),
            information: &self.information,
        };
        let mut out = Vec::with_capacity(frame.encoded_len());
        frame.encode(&mut out)?;
        Ok(out)
    }

    pub(crate) fn from_engine(f: &Frame<'_>) -> Self {
        Self {
            segmented: f.segmented,
            destination: HdlcAddress::from_engine(f.destination),
            source: HdlcAddress::from_engine(f.source),
            control: HdlcControl::from_engine(f.control),
            information: Bytes::copy_from_slice(f.information),
        }
    }

    /// Decode exactly one frame starting at its opening flag (HCS and FCS verified).
    ///
    /// # Errors
    /// Truncated, bad flag/format, bad checksum.
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), Error> {
        let (f, used) = hdlc::decode_frame(bytes).map_err(|e| Error::Framing(e.to_string()))?;
        Ok((Self::from_engine(&f), used))
    }
}

/// A resynchronising HDLC frame finder as a tokio codec. Noise, frames with a bad HCS or
/// FCS and frames longer than the maximum are discarded (counted in
/// [`HdlcCodec::discarded`]), as a link layer facing line noise must.
#[derive(Debug, Clone)]
pub struct HdlcCodec {
    framer: Framer,
    max_frame: usize,
    discarded: usize,
}

impl HdlcCodec {
    /// A codec accepting frames up to `max_frame` bytes between the flags (≤ 2047).
    #[must_use]
    pub fn new(max_frame: usize) -> Self {
        Self { framer: Framer::new(), max_frame: max_frame.min(0x7FF), discarded: 0 }
    }

    /// Bytes discarded so far (noise, bad checksums, oversize frames).
    #[must_use]
    pub fn discarded(&self) -> usize {
        self.discarded
    }
}

impl Default for HdlcCodec {
    fn default() -> Self {
        Self::new(0x7FF)
    }
}

impl Decoder for HdlcCodec {
    type Item = HdlcFrame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<HdlcFrame>, Error> {
        loop {
            if src.is_empty() {
                return Ok(None);
            }
            let found = self.framer.next_frame(src).map_err(|e| Error::Framing(e.to_string()))?;
            match found {
                Found::Frame { frame, consumed } => {
                    let len = frame.encoded_len().saturating_sub(2);
                    let item = HdlcFrame::from_engine(&frame);
                    src.advance(consumed.min(src.len()));
                    if len > self.max_frame {
                        self.discarded = self.discarded.saturating_add(len);
                        continue;
                    }
                    return Ok(Some(item));
                }
                Found::Incomplete { discard } => {
                    let discard = discard.min(src.len());
                    self.discarded = self.discarded.saturating_add(discard);
                    src.advance(discard);
                    // A candidate that announces more than we accept will never be
                    // delivered: drop its flag and rescan instead of waiting for it.
                    let announced = match (src.get(1), src.get(2)) {
                        (Some(a), Some(b)) => usize::from(u16::from_be_bytes([*a, *b]) & 0x7FF),
                        _ => 0,
                    };
                    if announced > self.max_frame {
                        src.advance(1);
                        self.discarded = self.discarded.saturating_add(1);
                        continue;
                    }
                    return Ok(None);
                }
            }
        }
    }
}

impl Encoder<HdlcFrame> for HdlcCodec {
    type Error = Error;

    fn encode(&mut self, item: HdlcFrame, dst: &mut BytesMut) -> Result<(), Error> {
        let bytes = item.to_bytes()?;
        if bytes.len().saturating_sub(2) > self.max_frame {
            return Err(Error::FrameTooLong { len: bytes.len() - 2, max: self.max_frame });
        }
        dst.put_slice(&bytes);
        Ok(())
    }
}

/// HDLC link parameters as negotiated by SNRM/UA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdlcParameters {
    /// Largest information field the client may send.
    pub max_info_tx: u16,
    /// Largest information field the client accepts.
    pub max_info_rx: u16,
    /// Client's transmit window.
    pub window_tx: u32,
    /// Client's receive window.
    pub window_rx: u32,
}

impl HdlcParameters {
    /// Parse the UA information field (`81 80 len {id len value}*`) and negotiate it
    /// against what the client proposed: each send limit is capped by the other side's
    /// receive limit. An empty field means the defaults (128 bytes, window 1).
    ///
    /// # Errors
    /// When the field is malformed.
    pub fn negotiate_from_ua(proposed: Self, ua_info: &[u8]) -> Result<Self, Error> {
        let peer = hdlc::Parameters::decode(ua_info).map_err(|e| Error::Framing(e.to_string()))?;
        let n = proposed.to_engine().negotiate(peer);
        Ok(Self {
            max_info_tx: n.max_info_tx,
            max_info_rx: n.max_info_rx,
            window_tx: n.window_tx,
            window_rx: n.window_rx,
        })
    }

    pub(crate) fn to_engine(self) -> hdlc::Parameters {
        hdlc::Parameters {
            max_info_tx: self.max_info_tx,
            max_info_rx: self.max_info_rx,
            window_tx: self.window_tx,
            window_rx: self.window_rx,
        }
    }

    /// Encode as an SNRM information field.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.to_engine().encode(&mut out);
        out
    }
}

impl Default for HdlcParameters {
    fn default() -> Self {
        Self { max_info_tx: 128, max_info_rx: 128, window_tx: 1, window_rx: 1 }
    }
}

/// LLC header on requests.
pub const LLC_REQUEST: [u8; 3] = [0xE6, 0xE6, 0x00];
/// LLC header on responses.
pub const LLC_RESPONSE: [u8; 3] = [0xE6, 0xE7, 0x00];
