//! Deterministic smart-meter simulator for load and correctness tests of the head-end.
//!
//! Up to hundreds of thousands of electricity meters in apartment buildings of Belgrade, Novi Sad and
//! central Serbia, whose every value is a pure function of `(seed, meter, time)`: the same seed and meter
//! give the same values at any time, in any order, from any process, so an end-to-end test can check every
//! stored reading against the model.
//!
//! # Modules
//! - [`fleet`]: the layout. Meter index `i` ↦ serial `SIM{i+1:08}`; an infinite, seed-only sequence of
//!   buildings (20–150 flats each: master meter first, then one meter per flat); a fleet of `N` meters is
//!   the first `N` indices. Building and flat attributes (region, address, floor area, residents, hidden
//!   traits such as electric heating or PV) depend only on `(seed, index)`.
//! - [`model`]: the consumption model, closed form in exact integer Wh (see its documentation): registers
//!   1.0.1.8.1 (VT), 1.0.1.8.2 (NT), 1.0.1.8.0 (= VT + NT), 1.0.2.8.0 (export) and voltage 1.0.32.7.0 at any
//!   interval end, computable without state in O(96) per meter and day; master meters = Σ all flats +
//!   common areas + losses. [`model::Model::batch`] evaluates a whole fleet per interval cheaply.
//! - [`channels`]: the OBIS channels and the MQTT payload built from model values.
//! - [`span`]: the `(from, to]` convention of interval ends used by every command.
//! - [`inventory`]: the inventory CSV (`schemas::inventory`) of a fleet.
//! - [`mqtt`]: the QoS 1 publisher with deterministic fault injection and a JSON summary.
//! - [`dlms`]: the DLMS/COSEM server of the fleet (`meter-sim dlms`), keys and push.
//! - [`expect`]: the payloads the publisher sends for one meter (minus `sent`), for tests.
//!
//! # Conventions
//! Timestamps are interval ENDS in UTC on 15-minute boundaries; a span `(from, to]` excludes `from` and
//! includes `to`. An interval belongs to the local (Europe/Belgrade) day and tariff window of its START.
//! The model covers local days 2024-01-01 to 2099-12-31.

pub mod channels;
pub mod dlms;
pub mod expect;
pub mod fleet;
mod hash;
pub mod inventory;
pub mod modbus;
pub mod model;
pub mod mqtt;
pub mod span;

pub use channels::Channel;
pub use fleet::{index_of, loopback_address, serial, Fleet};
pub use model::{IntervalValues, Model, ModelError, Registers};
pub use span::Span;
