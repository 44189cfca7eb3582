//! Any bytes into one simulated meter's DLMS connection (TCP wrapper or HDLC framing, in chunks as a
//! socket would deliver them): `meter_sim::dlms::Connection::on_bytes` never panics, its output stays
//! bounded, and a closed connection stays closed.
#![no_main]

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use meter_sim::dlms::{Connection, Sim, SimConfig, Step};

fn sim(hdlc: bool) -> Arc<Sim> {
    static WRAPPER: OnceLock<Arc<Sim>> = OnceLock::new();
    static HDLC: OnceLock<Arc<Sim>> = OnceLock::new();
    let cell = if hdlc { &HDLC } else { &WRAPPER };
    cell.get_or_init(|| {
        let mut cfg = SimConfig::new(7, 16);
        cfg.hdlc = hdlc;
        cfg.history_intervals = 96;
        Arc::new(Sim::new(cfg))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let wall = DateTime::<Utc>::from_timestamp(1_743_408_450, 0).unwrap_or_default();
    let mut conn = Connection::accept(sim(mode & 1 == 1), usize::from(mode >> 4));
    let mut out = Vec::new();
    // Chunks: a length byte, then that many bytes.
    let mut input = rest;
    let mut closed = false;
    while let Some((&len, tail)) = input.split_first() {
        let n = usize::from(len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        input = next;
        let before = out.len();
        let step = conn.on_bytes(chunk, wall, &mut out);
        if closed {
            assert_eq!(step, Step::Close);
            assert_eq!(out.len(), before, "a closed connection sent bytes");
        }
        closed |= step == Step::Close;
        assert!(out.len() < 4 << 20);
        if n == 0 {
            break;
        }
    }
    conn.close();
});
