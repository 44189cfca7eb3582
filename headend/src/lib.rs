//! The head-end: collects meter readings (MQTT today; DLMS and Modbus to come) and stores them in
//! PostgreSQL/TimescaleDB. See ARCHITECTURE.md for the map.

pub mod app;
pub mod config;
pub mod db;
pub mod directory;
pub mod http;
pub mod ingest;
pub mod inventory;
pub mod maintenance;
pub mod metrics;
pub mod mqtt;
pub mod writer;
