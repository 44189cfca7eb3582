//! The Modbus side of the generic collector: [`ModbusCollector`] implements [`Poller`].
//!
//! A Modbus meter has no load profile, event log or clock in the shipped maps: a session reads the
//! current registers once and stores them at the interval end the read belongs to (the last 15-minute
//! boundary at or before the reply), which is exactly what the simulator serves. A profile task is
//! satisfied by that one interval (`profile_until`), so the read-completeness ledger counts a Modbus
//! meter polled every interval like a DLMS meter whose profile was read.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use futures::FutureExt as _;
use schemas::modbus_map::RegisterMap;

use super::client::{to_readings, ModbusError, ModbusPoller};
use super::target::{ModbusTarget, TargetAddress};
use crate::collect::{Capabilities, Collected, PollError, Poller, Target, Tasks};

/// Interval length the readings are aligned to.
pub const INTERVAL_SECS: i64 = 900;

/// Polls Modbus meters with a shared [`ModbusPoller`] and a set of register maps.
pub struct ModbusCollector {
    pub poller: Arc<ModbusPoller>,
    /// Maps by name (file stem); an address `host:port/unit/name` picks one.
    pub maps: BTreeMap<String, Arc<RegisterMap>>,
    /// The map of addresses that name none.
    pub default_map: Option<String>,
}

/// The interval end a read at `t` belongs to.
pub fn interval_end(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    Utc.timestamp_opt(s - s.rem_euclid(INTERVAL_SECS), 0).single().unwrap_or(t)
}

impl ModbusCollector {
    /// The target of an inventory address, or a non-retryable error naming what is wrong.
    pub fn target(&self, address: &str) -> Result<ModbusTarget, PollError> {
        let a: TargetAddress =
            address.parse().map_err(|e: super::TargetError| PollError::new("address", e.to_string(), false))?;
        let name = a.map.as_ref().or(self.default_map.as_ref()).ok_or_else(|| {
            PollError::new("address", format!("{address}: no register map named and no default map"), false)
        })?;
        let map = self
            .maps
            .get(name)
            .ok_or_else(|| PollError::new("address", format!("{address}: unknown register map {name:?}"), false))?;
        Ok(ModbusTarget::new(&a, map.clone()))
    }
}

impl From<ModbusError> for PollError {
    fn from(e: ModbusError) -> Self {
        let retryable = e.is_retryable();
        PollError::new(e.reason(), e.to_string(), retryable)
    }
}

impl Poller for ModbusCollector {
    fn protocol(&self) -> &'static str {
        "modbus"
    }

    fn poll<'a>(
        &'a self,
        target: &'a Target,
        tasks: &'a Tasks,
        _known: Option<&'a Capabilities>,
    ) -> BoxFuture<'a, Result<Collected, PollError>> {
        async move {
            let mut collected = Collected::default();
            if tasks.profile_after.is_none() && !tasks.registers {
                return Ok(collected);
            }
            let t = self.target(&target.address)?;
            let reading = self.poller.read_meter(&t).await?;
            let ts = interval_end(reading.time);
            if tasks.profile_after.is_some_and(|after| ts > after) || tasks.registers {
                collected.readings = to_readings(target.meter_id, ts, &reading);
            }
            if tasks.profile_after.is_some() {
                collected.profile_until = Some(ts);
            }
            Ok(collected)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_align_to_the_interval_end() {
        let t: DateTime<Utc> = "2026-11-24T10:14:59Z".parse().expect("ts");
        assert_eq!(interval_end(t), "2026-11-24T10:00:00Z".parse::<DateTime<Utc>>().expect("ts"));
        let t: DateTime<Utc> = "2026-11-24T10:15:00Z".parse().expect("ts");
        assert_eq!(interval_end(t), t);
    }
}
