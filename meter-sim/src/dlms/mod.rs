//! A DLMS/COSEM server for the simulated fleet (`meter-sim dlms`), built on `dlms-cosem-rs`.
//!
//! One process serves meters `0..N`: it listens on one port of 0.0.0.0 (or a 127/8 address) and tells
//! the meters apart by the LOCAL address of each accepted connection — meter `i` is
//! [`crate::fleet::loopback_address`]`(i)` (127.0.0.2 for index 0; 127.0.0.1 is never a meter). A
//! connection to any other address is closed at once.
//!
//! * [`objects`]: the COSEM objects and the values they show (the model's, so `meter-sim expect` holds).
//! * [`conn`]: the per-connection sans-I/O state machine (TCP wrapper or HDLC), also the fuzz target.
//! * [`keys`]: per-meter keys, system titles and passwords, deterministic from the seed.
//! * [`faults`]: fault injection and exactly which data each fault removes.
//! * [`sim`]: the shared state: meter clocks, invocation counters, counters of the run.
//! * [`serve`]: the tokio server.
//! * [`push`]: DataNotification push to a head-end (`meter-sim dlms-push`).
//!
//! # Associations
//! Client SAP 16: public, no security, read-only subset (clock, serial, logical device name, invocation
//! counter, association). Client SAP 1: management, either LLS (mechanism 1, the meter's password from
//! [`keys`]) or HLS-GMAC (mechanism 5) with suite-0 authenticated encryption (glo- ciphering, the
//! meter's `ek`/`ak`, client system title any). The engine negotiates the PDU size; replies larger than
//! the client's max PDU go by GET block transfer.
//!
//! # Invocation counters
//! The meter's own counter continues across sessions within a process (kept per meter that used
//! security). 0.0.43.1.0.255 shows the highest counter the meter has accepted from a client, so a client
//! continues at value + 1 (what Gurux's reader does).

//!
//! # Memory
//! Nothing is held per meter that is not connected except, for meters that have been connected to, a
//! small [`sim::MeterState`] (session count, clock SET offset, breaker state, invocation counters). A
//! public session holds a ~5 KB engine, a management session a ~50 KB one (the engine builds a whole
//! attribute value before cutting it into blocks, so its buffers must hold a 7-day load profile).
//! Measured: 3,000 concurrent public sessions of a 205,000-meter process: 33 MiB RSS.
//!
//! # dlms-cosem-rs 0.1.0: what we work around
//! * One `ServerConfig` has ONE authentication mechanism and refuses an AARQ with another, so the
//!   connection peeks at the AARQ (client SAP + mechanism) and builds the matching engine.
//! * Its HDLC segmenter sets the final bit only on the LAST segment; with a window of one the server
//!   must hand the line back after every frame and Gurux rejects the segment otherwise, so each segment
//!   is re-encoded with F set. `hdlc::Connection` also does not continue a segmented send on RR; the
//!   connection does that itself.
//! * The engine cannot see a closed socket: invocation counters and the replay window are saved from
//!   the engine when the connection ends and restored into the next one
//!   (`Server::resume_replay_window`).

pub mod conn;
pub mod faults;
pub mod keys;
pub mod objects;
pub mod push;
pub mod serve;
pub mod sim;

pub use conn::{Connection, Step};
pub use faults::{FaultRates, SessionFault};
pub use keys::{meter_keys, MeterKeys};
pub use sim::{Sim, SimConfig, Summary};
