//! The pollers of the protocols the configuration asks for.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use deadpool_postgres::Pool;

use super::dlms::DlmsPoller;
use super::keys::{Counters, KeyStore};
use super::{Commander, Poller};
use crate::config::{DlmsAuth, HeadendConfig, PollProtocol};

/// The protocol clients of this head-end.
#[derive(Default)]
pub struct Pollers {
    pub by_protocol: HashMap<PollProtocol, Arc<dyn Poller>>,
    /// Operator commands (DLMS).
    pub commander: Option<Arc<dyn Commander>>,
    /// The DLMS key store, when configured (also used by the push listener).
    pub keys: Option<Arc<KeyStore>>,
}

/// One poller per protocol. Building one opens nothing: sessions connect when they run. A key file
/// or register map that cannot be read stops the start-up with the reason.
pub async fn build(cfg: &HeadendConfig, pool: &Pool) -> anyhow::Result<Pollers> {
    let mut p = Pollers::default();
    let keys = match &cfg.dlms.keys_file {
        Some(path) => {
            let ks = KeyStore::load(path).context("dlms.keys_file")?;
            tracing::info!(meters = ks.len(), "DLMS keys loaded");
            Some(Arc::new(ks))
        }
        None => None,
    };
    let counters = (cfg.dlms.auth == DlmsAuth::Gmac).then(|| Arc::new(Counters::new(pool.clone(), cfg.dlms.client)));
    let sync = cfg.collect.clock_sync.then_some((cfg.collect.clock_threshold, cfg.collect.clock_sync_max_step));
    p.keys = keys.clone();
    let dlms = Arc::new(DlmsPoller::new(cfg.dlms.clone(), keys, counters, sync));
    p.by_protocol.insert(PollProtocol::Dlms, dlms.clone());
    p.commander = Some(dlms);
    if cfg.collect.enabled && cfg.collect.groups.iter().any(|g| g.protocol == PollProtocol::Modbus) {
        let m = &cfg.modbus;
        let maps = crate::modbus::load_dir(&m.maps_dir).context("modbus.maps_dir")?;
        if let Some(d) = &m.default_map {
            anyhow::ensure!(maps.contains_key(d), "modbus.default_map {d:?} is not a map in {}", m.maps_dir.display());
        }
        tracing::info!(maps = ?maps.keys().collect::<Vec<_>>(), "Modbus register maps loaded");
        let poller = crate::modbus::ModbusPoller::new(crate::modbus::PollerConfig {
            max_connections: m.max_connections,
            connect_timeout: m.connect_timeout,
            request_timeout: m.request_timeout,
            retries: m.retries,
            backoff: m.backoff,
        });
        let collector =
            crate::modbus::ModbusCollector { poller: Arc::new(poller), maps, default_map: m.default_map.clone() };
        p.by_protocol.insert(PollProtocol::Modbus, Arc::new(collector));
    }
    Ok(p)
}
