//! Any bytes from a meter: the wrapper and HDLC codecs, `decode_apdu` (with and without
//! keys) and the A-XDR value decoder must return errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dlms::fuzzing::feed(data);
});
