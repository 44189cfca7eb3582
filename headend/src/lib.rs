//! The head-end: collects meter readings (MQTT today; DLMS and Modbus to come) and stores them in
//! PostgreSQL/TimescaleDB. See ARCHITECTURE.md for the map.

pub mod db;
pub mod inventory;
pub mod config;
pub mod metrics;
pub mod directory;
pub mod ingest;
pub mod writer;
pub mod mqtt;
pub mod maintenance;
pub mod http;
pub mod app;
