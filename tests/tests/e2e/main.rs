//! End-to-end tests: real binaries, a real PostgreSQL and a real Mosquitto (one test binary; see
//! .config/nextest.toml for how they share the machine).

mod billing;
mod browser;
mod dlms;
mod harness;
mod ingest;
mod modbus;
use tests::model;
mod mqtt_auth;
mod ops;
mod pipeline;
mod portal;
mod portal_bills;
mod scaleout;
mod security;
