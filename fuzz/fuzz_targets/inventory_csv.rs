//! Any bytes as an inventory CSV: the parser answers with rows or a typed error, never panics, and
//! every row it accepts carries a valid serial.
#![no_main]

use headend::inventory::{parse, InventoryError};
use libfuzzer_sys::fuzz_target;
use schemas::reading::MeterSerial;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(rows) => {
            for (_, row) in rows {
                assert!(MeterSerial::is_valid(&row.meter), "accepted serial {:?}", row.meter);
            }
        }
        Err(InventoryError::Read(_) | InventoryError::Invalid(_)) => {}
        Err(e) => panic!("parsing alone cannot fail with {e}"),
    }
});
