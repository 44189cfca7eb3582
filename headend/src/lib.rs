//! The head-end: collects meter readings (MQTT today; DLMS and Modbus to come) and stores them in
//! PostgreSQL/TimescaleDB. See ARCHITECTURE.md for the map.

pub mod api;
pub mod app;
pub mod auth;
pub mod collect;
pub mod config;
pub mod db;
pub mod diag;
pub mod directory;
pub mod household;
pub mod http;
pub mod ingest;
pub mod inventory;
pub mod maintenance;
pub mod metrics;
pub mod modbus;
pub mod mqtt;
pub mod ops;
pub mod web;
pub mod writer;

/// Helpers shared by unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    /// A tiny deterministic generator (xorshift64) for mutation tests.
    pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed.max(1);
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }
}
