//! Modbus TCP collection: register maps per meter model and a pooled, serialised poller.
//!
//! - [`map`]: loading the register map files (`config/modbus/*.toml`, format in
//!   [`schemas::modbus_map`], shared with the simulator) with clear start-up errors.
//! - [`client`]: [`ModbusPoller`]: gateway connections pooled and limited, one request at a time per
//!   connection, several unit ids behind one gateway, timeouts, retries, reconnects; errors in two
//!   layers ([`ModbusError`]: transport vs device exception), counted by reason.
//! - [`target`]: the `meters.address` format `host:port/unit[/map]`.
//! - [`collector`]: [`ModbusCollector`], the [`crate::collect::Poller`] of Modbus meters.
//!
//! The generic scheduler calls [`ModbusPoller::read_meter`] and turns the result into readings with
//! [`to_readings`].

pub mod client;
pub mod collector;
pub mod map;
pub mod target;

pub use client::{
    to_readings, ChannelValue, ExceptionKind, InvalidValue, MeterReading, ModbusError, ModbusPoller, PollerConfig,
    PollerStats, TransportKind,
};
pub use collector::ModbusCollector;
pub use map::{load_dir, load_map, parse_map};
pub use target::{ModbusTarget, TargetAddress, TargetError};
