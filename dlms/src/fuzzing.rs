//! Shared by the cargo-fuzz target `dlms_frames` and the always-on mutation test: feed
//! arbitrary bytes to every parser that faces the network. Must never panic.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::transport::{HdlcCodec, WrapperCodec};
use crate::{decode_apdu, Keys, Value};

/// Run `data` through the wrapper and HDLC decoders (default and small limits),
/// `decode_apdu` with and without keys, and `Value::decode`.
pub fn feed(data: &[u8]) {
    let keys = Keys {
        encryption_key: *b"0123456789abcdef",
        authentication_key: [0xD0; 16],
        system_title: Some(*b"SIM\x00\x12\x34\x56\x78"),
    };
    let _ = decode_apdu(data, None);
    let _ = decode_apdu(data, Some(&keys));
    let _ = Value::decode(data);
    for max in [4096, 16] {
        let mut codec = WrapperCodec::new(max);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }
    for max in [0x7FF, 64] {
        let mut codec = HdlcCodec::new(max);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
        let _ = codec.decode_eof(&mut buf);
    }
}
