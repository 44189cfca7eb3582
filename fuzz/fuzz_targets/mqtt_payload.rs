//! Any bytes on an MQTT topic: the payload parser and the ingest rules must answer with rows or a
//! refusal from the fixed set of reasons, never panic.
#![no_main]

use headend::ingest::{to_rows, Window};
use headend::metrics::DEAD_LETTER_REASONS;
use libfuzzer_sys::fuzz_target;
use schemas::payload::ReadingPayload;
use schemas::reading::Source;

fuzz_target!(|data: &[u8]| {
    match ReadingPayload::parse(data) {
        Ok(p) => {
            let window = Window {
                max_age: std::time::Duration::from_secs(400 * 86_400),
                max_future: std::time::Duration::from_secs(3600),
            };
            let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("fixed time");
            match to_rows(&p, 1, Source::Mqtt, now, window) {
                Ok(rows) => assert_eq!(rows.len(), p.values.len()),
                Err(r) => assert!(DEAD_LETTER_REASONS.contains(&r.reason), "unexpected reason {}", r.reason),
            }
            // What parses must survive its own round trip.
            let again = ReadingPayload::parse(&p.to_json()).expect("round trip");
            assert_eq!(again.meter, p.meter);
            assert_eq!(again.values.len(), p.values.len());
        }
        Err(e) => assert!(DEAD_LETTER_REASONS.contains(&e.reason()), "unexpected reason {}", e.reason()),
    }
});
