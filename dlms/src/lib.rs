//! The project's DLMS/COSEM layer. The protocol engine is `dlms-cosem-rs`; this crate keeps it
//! behind the project's own types so it can be replaced.
//!
//! * [`transport`]: tokio codecs for the IEC 62056-47 wrapper and HDLC frames.
//! * [`Session`]: an async client (association incl. LLS and HLS-GMAC, GET with block
//!   transfer, GET with-list, profile reads, SET, ACTION, release) over TCP, wrapper or HDLC.
//! * [`Value`]: owned values with JSON, UTC date-time and exact scaling helpers.
//! * [`decode_apdu`]: any APDU (or wrapper/HDLC frame) to JSON, deciphering when keys are given.

mod decode;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod push;
mod session;
pub mod transport;
mod value;

pub use decode::{decode_apdu, decode_hex, Keys};
pub use error::{DataAccessError, DecodeError, Error, Result};
pub use session::{conformance, AttrRef, Authentication, ClientOptions, Negotiated, Obis, Session, TransportOptions};
pub use value::{decimal_string, unit_name, CosemDateTime, ScalerUnit, Value, DEVIATION_UNSPECIFIED};
