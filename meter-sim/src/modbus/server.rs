//! The simulated gateways: one tokio-modbus TCP server per gateway.
//!
//! A request for unit `u` on gateway `g` reads meter [`meter_at`]`(g, u)`; its registers are the
//! [`channel_values`] at the serving time's interval end, encoded per its map. Faults are decided by
//! hashes of `(fault seed, meter, request number of that meter)`, so a run is reproducible:
//! - `gateway_fail`: the meter is dead behind its gateway; every request gets 0x0B (gateway target
//!   device failed to respond). Decided per meter.
//! - `timeout`: no reply at all to that request.
//! - `exception`: an exception reply; half "server device busy" (0x06), half "illegal data address" (0x02).
//!
//! Requests must cover only mapped registers (else 0x02), 1..=125 registers (else 0x03); other function
//! codes get 0x01; a unit id without a meter gets 0x0B.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use schemas::modbus_map::{Function, RegisterMap};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::layout::{map_index, meter_at};
use super::values::channel_values;
use crate::hash;
use crate::model::{Model, INTERVAL_SECS};

/// Fault rates in `[0, 1]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FaultRates {
    pub exception: f64,
    pub timeout: f64,
    pub gateway_fail: f64,
    pub seed: u64,
}

/// What to serve.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub meters: usize,
    pub seed: u64,
    pub gateways: usize,
    /// First port; gateway `g` listens on `port + g`. 0: any free ports (see [`SimHandle::addrs`]).
    pub port: u16,
    pub host: std::net::IpAddr,
    pub maps: Vec<Arc<RegisterMap>>,
    pub faults: FaultRates,
    /// Serve the values of this interval end instead of the last one completed before now.
    pub at: Option<DateTime<Utc>>,
}

/// Counters, printed as JSON at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimSummary {
    pub meters: usize,
    pub gateways: usize,
    pub requests: u64,
    pub replies: u64,
    pub registers: u64,
    pub timeouts: u64,
    pub exceptions: BTreeMap<String, u64>,
}

const TAG_GATEWAY_FAIL: u64 = 0x4d42_4746;
const TAG_REQUEST: u64 = 0x4d42_5251;

type Image = HashMap<(Function, u16), u16>;

struct State {
    cfg: SimConfig,
    model: Model,
    /// Request number per meter.
    counters: Vec<AtomicU64>,
    /// Register images of the current interval end, per meter.
    images: Mutex<(i64, HashMap<usize, Arc<Image>>)>,
    requests: AtomicU64,
    replies: AtomicU64,
    registers: AtomicU64,
    timeouts: AtomicU64,
    exceptions: Mutex<BTreeMap<String, u64>>,
}

impl State {
    fn interval_end(&self) -> DateTime<Utc> {
        if let Some(at) = self.cfg.at {
            return at;
        }
        let now = Utc::now().timestamp();
        let end = now - now.rem_euclid(INTERVAL_SECS);
        Utc.timestamp_opt(end, 0).single().unwrap_or_else(Utc::now)
    }

    fn image(&self, index: usize) -> Option<Arc<Image>> {
        let ts = self.interval_end();
        if let Ok(g) = self.images.lock() {
            if g.0 == ts.timestamp() {
                if let Some(img) = g.1.get(&index) {
                    return Some(img.clone());
                }
            }
        }
        let map = self.cfg.maps.get(map_index(index, self.cfg.maps.len()))?;
        let values = channel_values(&self.model, index, ts).ok()?;
        let mut img = Image::new();
        for e in &map.entries {
            let v = values.get(&e.channel.id).copied().unwrap_or(0);
            for (k, w) in e.encode(v).into_iter().enumerate() {
                img.insert((e.function, e.address.wrapping_add(k as u16)), w);
            }
        }
        let img = Arc::new(img);
        if let Ok(mut g) = self.images.lock() {
            if g.0 != ts.timestamp() {
                *g = (ts.timestamp(), HashMap::new());
            }
            g.1.insert(index, img.clone());
        }
        Some(img)
    }

    fn exception(&self, code: ExceptionCode) -> Result<Option<Response>, ExceptionCode> {
        let name = match code {
            ExceptionCode::IllegalFunction => "illegal_function",
            ExceptionCode::IllegalDataAddress => "illegal_address",
            ExceptionCode::IllegalDataValue => "illegal_value",
            ExceptionCode::ServerDeviceBusy => "busy",
            ExceptionCode::GatewayTargetDevice => "gateway_target_failed",
            _ => "other",
        };
        if let Ok(mut m) = self.exceptions.lock() {
            *m.entry(name.to_string()).or_default() += 1;
        }
        Err(code)
    }

    fn handle(&self, gateway: usize, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let Some(index) = meter_at(gateway, req.slave, self.cfg.gateways, self.cfg.meters) else {
            return self.exception(ExceptionCode::GatewayTargetDevice);
        };
        let f = self.cfg.faults;
        if hash::chance(hash::hash(&[f.seed, TAG_GATEWAY_FAIL, index as u64]), f.gateway_fail) {
            return self.exception(ExceptionCode::GatewayTargetDevice);
        }
        let n = self.counters.get(index).map_or(0, |c| c.fetch_add(1, Ordering::Relaxed));
        let h = hash::hash(&[f.seed, TAG_REQUEST, index as u64, n]);
        if hash::chance(h, f.timeout) {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        if hash::chance(hash::hash(&[h]), f.exception) {
            let code = if h & 1 == 0 { ExceptionCode::ServerDeviceBusy } else { ExceptionCode::IllegalDataAddress };
            return self.exception(code);
        }
        let (function, addr, count) = match req.request {
            Request::ReadHoldingRegisters(a, c) => (Function::Holding, a, c),
            Request::ReadInputRegisters(a, c) => (Function::Input, a, c),
            _ => return self.exception(ExceptionCode::IllegalFunction),
        };
        if count == 0 || count > 125 {
            return self.exception(ExceptionCode::IllegalDataValue);
        }
        let Some(img) = self.image(index) else {
            return self.exception(ExceptionCode::ServerDeviceFailure);
        };
        let mut words = Vec::with_capacity(usize::from(count));
        for k in 0..count {
            match addr.checked_add(k).and_then(|a| img.get(&(function, a))) {
                Some(w) => words.push(*w),
                None => return self.exception(ExceptionCode::IllegalDataAddress),
            }
        }
        self.replies.fetch_add(1, Ordering::Relaxed);
        self.registers.fetch_add(u64::from(count), Ordering::Relaxed);
        Ok(Some(match function {
            Function::Holding => Response::ReadHoldingRegisters(words),
            Function::Input => Response::ReadInputRegisters(words),
        }))
    }
}

struct GatewayService {
    state: Arc<State>,
    gateway: usize,
}

impl tokio_modbus::server::Service for GatewayService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.state.handle(self.gateway, req))
    }
}

/// Running gateways; dropping the handle does not stop them, [`SimHandle::stop`] does.
pub struct SimHandle {
    state: Arc<State>,
    addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    /// Listening address of each gateway, in gateway order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The head-end address (`host:port/unit`) of meter `index`, if the gateways hold it.
    pub fn address(&self, index: usize) -> Option<String> {
        let (g, unit) = super::layout::placement(index, self.addrs.len())?;
        (index < self.state.cfg.meters).then(|| format!("{}/{unit}", self.addrs[g]))
    }

    /// The interval end whose values are served now.
    pub fn interval_end(&self) -> DateTime<Utc> {
        self.state.interval_end()
    }

    pub fn summary(&self) -> SimSummary {
        let s = &self.state;
        SimSummary {
            meters: s.cfg.meters,
            gateways: s.cfg.gateways,
            requests: s.requests.load(Ordering::Relaxed),
            replies: s.replies.load(Ordering::Relaxed),
            registers: s.registers.load(Ordering::Relaxed),
            timeouts: s.timeouts.load(Ordering::Relaxed),
            exceptions: s.exceptions.lock().map(|m| m.clone()).unwrap_or_default(),
        }
    }

    /// Whether meter `index` is dead behind its gateway (`gateway_fail` fault).
    pub fn gateway_failed(&self, index: usize) -> bool {
        let f = self.state.cfg.faults;
        hash::chance(hash::hash(&[f.seed, TAG_GATEWAY_FAIL, index as u64]), f.gateway_fail)
    }

    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Binds every gateway's listener and serves them on the current tokio runtime.
pub async fn serve(cfg: SimConfig) -> std::io::Result<SimHandle> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    if cfg.gateways == 0 || cfg.maps.is_empty() {
        return Err(invalid("at least one gateway and one register map".into()));
    }
    if cfg.meters > cfg.gateways * usize::from(super::layout::MAX_UNIT) {
        return Err(invalid(format!(
            "{} meters need at least {} gateways (247 unit ids each)",
            cfg.meters,
            cfg.meters.div_ceil(usize::from(super::layout::MAX_UNIT))
        )));
    }
    let mut listeners = Vec::with_capacity(cfg.gateways);
    for g in 0..cfg.gateways {
        let port = if cfg.port == 0 {
            0
        } else {
            u16::try_from(g)
                .ok()
                .and_then(|g| cfg.port.checked_add(g))
                .ok_or_else(|| invalid("port range passes 65535".into()))?
        };
        listeners.push(TcpListener::bind(SocketAddr::new(cfg.host, port)).await?);
    }
    let addrs = listeners.iter().map(|l| l.local_addr()).collect::<std::io::Result<Vec<_>>>()?;
    let state = Arc::new(State {
        model: Model::with_meters(cfg.seed, cfg.meters),
        counters: (0..cfg.meters).map(|_| AtomicU64::new(0)).collect(),
        images: Mutex::new((i64::MIN, HashMap::new())),
        requests: AtomicU64::new(0),
        replies: AtomicU64::new(0),
        registers: AtomicU64::new(0),
        timeouts: AtomicU64::new(0),
        exceptions: Mutex::new(BTreeMap::new()),
        cfg,
    });
    let mut tasks = Vec::with_capacity(listeners.len());
    for (gateway, listener) in listeners.into_iter().enumerate() {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = move |stream: tokio::net::TcpStream, _addr: SocketAddr| {
                let service = GatewayService { state: state.clone(), gateway };
                let _ = stream.set_nodelay(true);
                std::future::ready(Ok(Some((service, stream))))
            };
            if let Err(e) = server.serve(&on_connected, |e| tracing::debug!("modbus connection: {e}")).await {
                tracing::warn!(gateway, "modbus gateway stopped: {e}");
            }
        }));
    }
    Ok(SimHandle { state, addrs, tasks })
}
