//! The Modbus TCP poller: pooled gateway connections, one request at a time per connection.
//!
//! - Pool: one tokio-modbus TCP context per gateway (`host:port`), opened on first use and kept; at most
//!   [`PollerConfig::max_connections`] open overall. A request that needs a new connection when the pool
//!   is full closes an idle connection of another gateway, or waits until one is free; a connection that
//!   finishes a request while others wait for a slot is closed.
//! - Serialisation: a gateway's connection is behind an async mutex, so requests to the unit ids behind
//!   one gateway never overlap (RS-485 gateways handle one transaction at a time).
//! - Each request is bounded by [`PollerConfig::request_timeout`]; transport failures (connect, timeout,
//!   I/O, protocol garbage) drop the connection (a late reply would otherwise be taken for the next one)
//!   and are retried with exponential backoff; device exceptions are not retried except "busy".
//! - A meter's map is read in as few requests as possible ([`RegisterMap::plan`]: contiguous entries
//!   merged, at most 125 registers each).

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use schemas::modbus_map::{Block, Function, RegisterMap, ValueError};
use schemas::reading::{pack_flags, Quality, Reading, Source};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;

use super::target::ModbusTarget;

/// Limits and timing of the poller.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// Open gateway connections overall.
    pub max_connections: usize,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time for one request's reply.
    pub request_timeout: Duration,
    /// Further attempts of a request after a transport failure or a busy device.
    pub retries: u32,
    /// First backoff; doubled per attempt.
    pub backoff: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            max_connections: 256,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
            retries: 2,
            backoff: Duration::from_millis(100),
        }
    }
}

/// Transport-level failure: nothing usable came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Connect,
    Timeout,
    Io,
    /// A reply that is not a valid answer to the request (garbage, wrong transaction, wrong length).
    Protocol,
}

/// A Modbus exception reply of the device or gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionKind {
    IllegalFunction,
    IllegalAddress,
    IllegalValue,
    DeviceFailure,
    Busy,
    GatewayPathUnavailable,
    GatewayTargetFailed,
    /// Any other code (acknowledge, memory parity, non-standard).
    Other(u8),
}

impl ExceptionKind {
    pub fn from_code(code: u8) -> Self {
        match code {
            0x01 => ExceptionKind::IllegalFunction,
            0x02 => ExceptionKind::IllegalAddress,
            0x03 => ExceptionKind::IllegalValue,
            0x04 => ExceptionKind::DeviceFailure,
            0x06 => ExceptionKind::Busy,
            0x0A => ExceptionKind::GatewayPathUnavailable,
            0x0B => ExceptionKind::GatewayTargetFailed,
            c => ExceptionKind::Other(c),
        }
    }

    pub const fn reason(self) -> &'static str {
        match self {
            ExceptionKind::IllegalFunction => "illegal_function",
            ExceptionKind::IllegalAddress => "illegal_address",
            ExceptionKind::IllegalValue => "illegal_value",
            ExceptionKind::DeviceFailure => "device_failure",
            ExceptionKind::Busy => "busy",
            ExceptionKind::GatewayPathUnavailable => "gateway_path_unavailable",
            ExceptionKind::GatewayTargetFailed => "gateway_target_failed",
            ExceptionKind::Other(_) => "other_exception",
        }
    }
}

/// Why a meter could not be read: transport failure or device exception.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModbusError {
    #[error("transport ({}) with {gateway}: {detail}", kind_reason(*.kind))]
    Transport { kind: TransportKind, gateway: String, detail: String },
    #[error("exception {} (0x{code:02X}) from unit {unit} for function 0x{function:02X} at {address}", .kind.reason())]
    Exception { kind: ExceptionKind, code: u8, unit: u8, function: u8, address: u16 },
}

const fn kind_reason(k: TransportKind) -> &'static str {
    match k {
        TransportKind::Connect => "connect",
        TransportKind::Timeout => "timeout",
        TransportKind::Io => "io",
        TransportKind::Protocol => "protocol",
    }
}

impl ModbusError {
    /// Stable label for metrics: `connect`, `timeout`, `io`, `protocol`, or the exception's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ModbusError::Transport { kind, .. } => kind_reason(*kind),
            ModbusError::Exception { kind, .. } => kind.reason(),
        }
    }

    pub fn is_transport(&self) -> bool {
        matches!(self, ModbusError::Transport { .. })
    }

    /// Worth another attempt later (transport failures, busy device or gateway).
    pub fn is_retryable(&self) -> bool {
        match self {
            ModbusError::Transport { .. } => true,
            ModbusError::Exception { kind, .. } => {
                matches!(
                    kind,
                    ExceptionKind::Busy | ExceptionKind::GatewayTargetFailed | ExceptionKind::GatewayPathUnavailable
                )
            }
        }
    }
}

/// One channel's stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelValue {
    pub channel_id: i16,
    pub value: i64,
}

/// A register that was read but holds no storable value (NaN, out of range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    pub entry: String,
    pub channel_id: i16,
    pub error: ValueError,
}

/// What one meter returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterReading {
    /// When the last request was answered.
    pub time: DateTime<Utc>,
    pub values: Vec<ChannelValue>,
    pub invalid: Vec<InvalidValue>,
    /// Requests sent (attempts included) and registers received.
    pub requests: u32,
    pub registers: u32,
}

/// Readings of a meter read at `ts` (e.g. the interval end the poll belongs to), flagged as Modbus.
pub fn to_readings(meter_id: i32, ts: DateTime<Utc>, reading: &MeterReading) -> Vec<Reading> {
    let flags = pack_flags(Quality::default(), Source::Modbus);
    reading.values.iter().map(|v| Reading { ts, value: v.value, meter_id, channel_id: v.channel_id, flags }).collect()
}

/// Counters of a poller, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct PollerStats {
    pub requests: AtomicU64,
    pub registers: AtomicU64,
    pub connects: AtomicU64,
    pub meters_ok: AtomicU64,
    pub meters_failed: AtomicU64,
    /// Failed attempts by reason (a retried attempt counts too).
    errors: StdMutex<BTreeMap<&'static str, u64>>,
}

impl PollerStats {
    fn count_error(&self, reason: &'static str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// Failed attempts by reason.
    pub fn errors(&self) -> BTreeMap<&'static str, u64> {
        self.errors.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

struct Conn {
    ctx: Context,
    _permit: OwnedSemaphorePermit,
}

struct Gateway {
    key: String,
    conn: Mutex<Option<Conn>>,
}

/// Reads Modbus meters through pooled gateway connections. Cheap to share (`Arc`).
pub struct ModbusPoller {
    cfg: PollerConfig,
    gateways: StdMutex<HashMap<String, Arc<Gateway>>>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    stats: PollerStats,
}

impl ModbusPoller {
    pub fn new(cfg: PollerConfig) -> Self {
        let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
        ModbusPoller {
            cfg,
            gateways: StdMutex::new(HashMap::new()),
            slots,
            waiting: AtomicUsize::new(0),
            stats: PollerStats::default(),
        }
    }

    pub fn stats(&self) -> &PollerStats {
        &self.stats
    }

    /// Open connections now.
    pub fn open_connections(&self) -> usize {
        self.cfg.max_connections.max(1) - self.slots.available_permits()
    }

    fn gateway(&self, key: &str) -> Arc<Gateway> {
        let mut map = match self.gateways.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(key.to_string())
            .or_insert_with(|| Arc::new(Gateway { key: key.to_string(), conn: Mutex::new(None) }))
            .clone()
    }

    /// Closes one idle connection of any gateway; true if one was closed.
    fn evict_idle(&self) -> bool {
        let gateways: Vec<Arc<Gateway>> = match self.gateways.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return false,
        };
        for g in gateways {
            if let Ok(mut guard) = g.conn.try_lock() {
                if guard.take().is_some() {
                    return true;
                }
            }
        }
        false
    }

    async fn slot(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = self.slots.clone().try_acquire_owned() {
                return p;
            }
            if self.evict_idle() {
                continue;
            }
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let got = tokio::time::timeout(Duration::from_millis(20), self.slots.clone().acquire_owned()).await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if let Ok(Ok(p)) = got {
                return p;
            }
        }
    }

    /// Reads every entry of the target's map. Values that cannot be stored (NaN…) are listed in
    /// `invalid`; any failed request fails the meter.
    pub async fn read_meter(&self, target: &ModbusTarget) -> Result<MeterReading, ModbusError> {
        let gw = self.gateway(&target.gateway);
        let map: &RegisterMap = &target.map;
        let mut reading = MeterReading {
            time: Utc::now(),
            values: Vec::with_capacity(map.entries.len()),
            invalid: Vec::new(),
            requests: 0,
            registers: 0,
        };
        for block in map.plan() {
            let words = match self.request_with_retries(&gw, target.unit, &block, &mut reading.requests).await {
                Ok(w) => w,
                Err(e) => {
                    self.stats.meters_failed.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            reading.registers += u32::from(block.count);
            for (i, r) in map.decode_block(&block, &words) {
                let e = &map.entries[i];
                match r {
                    Ok(value) => reading.values.push(ChannelValue { channel_id: e.channel.id, value }),
                    Err(error) => {
                        reading.invalid.push(InvalidValue { entry: e.name.clone(), channel_id: e.channel.id, error })
                    }
                }
            }
        }
        reading.time = Utc::now();
        self.stats.meters_ok.fetch_add(1, Ordering::Relaxed);
        Ok(reading)
    }

    async fn request_with_retries(
        &self,
        gw: &Gateway,
        unit: u8,
        block: &Block,
        requests: &mut u32,
    ) -> Result<Vec<u16>, ModbusError> {
        let mut attempt = 0u32;
        loop {
            *requests += 1;
            let r = self.request(gw, unit, block).await;
            let err = match r {
                Ok(w) => return Ok(w),
                Err(e) => e,
            };
            self.stats.count_error(err.reason());
            let again = match &err {
                ModbusError::Transport { .. } => true,
                ModbusError::Exception { kind, .. } => *kind == ExceptionKind::Busy,
            };
            if !again || attempt >= self.cfg.retries {
                return Err(err);
            }
            let backoff = self.cfg.backoff.saturating_mul(1u32 << attempt.min(10));
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    async fn request(&self, gw: &Gateway, unit: u8, block: &Block) -> Result<Vec<u16>, ModbusError> {
        let transport = |kind, detail: String| ModbusError::Transport { kind, gateway: gw.key.clone(), detail };
        let mut guard = gw.conn.lock().await;
        if guard.is_none() {
            let permit = self.slot().await;
            let stream = match tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(gw.key.as_str())).await
            {
                Err(_) => return Err(transport(TransportKind::Connect, "connect timed out".into())),
                Ok(Err(e)) => return Err(transport(TransportKind::Connect, e.to_string())),
                Ok(Ok(s)) => s,
            };
            let _ = stream.set_nodelay(true);
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
            *guard = Some(Conn { ctx: tokio_modbus::client::tcp::attach_slave(stream, Slave(unit)), _permit: permit });
        }
        let Some(conn) = guard.as_mut() else {
            return Err(transport(TransportKind::Io, "no connection".into()));
        };
        conn.ctx.set_slave(Slave(unit));
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let reply = {
            let fut = async {
                match block.function {
                    Function::Holding => conn.ctx.read_holding_registers(block.start, block.count).await,
                    Function::Input => conn.ctx.read_input_registers(block.start, block.count).await,
                }
            };
            // tokio-modbus debug-asserts the register count of a reply; a short reply must be a
            // protocol error here, never a panic of the poller's task.
            tokio::time::timeout(self.cfg.request_timeout, AssertUnwindSafe(fut).catch_unwind()).await
        };
        let result = match reply {
            Ok(Err(_panic)) => {
                Err(transport(TransportKind::Protocol, "malformed reply (rejected by the decoder)".into()))
            }
            Err(_) => Err(transport(TransportKind::Timeout, format!("no reply within {:?}", self.cfg.request_timeout))),
            Ok(Ok(Err(tokio_modbus::Error::Protocol(e)))) => Err(transport(TransportKind::Protocol, e.to_string())),
            Ok(Ok(Err(tokio_modbus::Error::Transport(e)))) => {
                let kind = match e.kind() {
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => TransportKind::Protocol,
                    _ => TransportKind::Io,
                };
                Err(transport(kind, e.to_string()))
            }
            Ok(Ok(Ok(Err(code)))) => {
                let code = u8::from(code);
                Err(ModbusError::Exception {
                    kind: ExceptionKind::from_code(code),
                    code,
                    unit,
                    function: block.function.code(),
                    address: block.start,
                })
            }
            Ok(Ok(Ok(Ok(words)))) if words.len() == usize::from(block.count) => Ok(words),
            Ok(Ok(Ok(Ok(words)))) => Err(transport(
                TransportKind::Protocol,
                format!("{} registers in reply, {} requested", words.len(), block.count),
            )),
        };
        if let Ok(w) = &result {
            self.stats.registers.fetch_add(w.len() as u64, Ordering::Relaxed);
        }
        match &result {
            Err(ModbusError::Transport { .. }) => *guard = None,
            _ if self.waiting.load(Ordering::SeqCst) > 0 => *guard = None,
            _ => {}
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stable_labels() {
        for (code, reason) in [
            (1, "illegal_function"),
            (2, "illegal_address"),
            (3, "illegal_value"),
            (4, "device_failure"),
            (6, "busy"),
            (0x0A, "gateway_path_unavailable"),
            (0x0B, "gateway_target_failed"),
            (0x05, "other_exception"),
        ] {
            let e =
                ModbusError::Exception { kind: ExceptionKind::from_code(code), code, unit: 1, function: 3, address: 0 };
            assert_eq!(e.reason(), reason);
            assert!(!e.is_transport());
        }
        let t = ModbusError::Transport { kind: TransportKind::Timeout, gateway: "g:1".into(), detail: String::new() };
        assert_eq!(t.reason(), "timeout");
        assert!(t.is_retryable());
    }
}
