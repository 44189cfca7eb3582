//! The head-end: collects meter readings (MQTT today; DLMS and Modbus to come) and stores them in
//! PostgreSQL/TimescaleDB. See ARCHITECTURE.md for the map.

pub mod db;
pub mod inventory;
