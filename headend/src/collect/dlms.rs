//! The DLMS/COSEM poller: one association per session over the project's `dlms` crate.
//!
//! A session: connect (wrapper or HDLC) → associate (none, LLS or HLS-GMAC) → one GET with-list for
//! the clock and the billing registers (their scaler_units and the profile's capture objects too,
//! until the meter's capability profile holds them) → clock sync when allowed → load profile by
//! range from the last stored interval → event log by range → release.
//!
//! Values are converted to the channel's stored integer exactly (`raw · 10^(scaler − channel
//! scaler)`); a value that would need rounding is refused rather than stored approximately.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Europe::Belgrade;
use dlms::{AttrRef, Authentication, ClientOptions, CosemDateTime, Obis, ScalerUnit, Session, TransportOptions, Value};
use futures::future::BoxFuture;
use schemas::reading::{pack_flags, Quality, Reading, Source};
use serde_json::json;

use super::keys::{Counters, KeyStore};
use super::{Capabilities, Collected, Commander, MeterCommand, MeterEvent, PollError, Poller, Target, Tasks};
use crate::config::{DlmsAuth, DlmsConfig, DlmsTransport};

pub const CLOCK: Obis = Obis::new(0, 0, 1, 0, 0, 255);
pub const LOAD_PROFILE: Obis = Obis::new(1, 0, 99, 1, 0, 255);
pub const EVENT_LOG: Obis = Obis::new(0, 0, 99, 98, 0, 255);
pub const DISCONNECT_CONTROL: Obis = Obis::new(0, 0, 96, 3, 10, 255);
pub const INVOCATION_COUNTER: Obis = Obis::new(0, 0, 43, 1, 0, 255);

/// The billing registers read by a session, with their channel ids.
pub const REGISTERS: [(Obis, i16); 4] = [
    (Obis::new(1, 0, 1, 8, 0, 255), 1),
    (Obis::new(1, 0, 1, 8, 1, 255), 2),
    (Obis::new(1, 0, 1, 8, 2, 255), 3),
    (Obis::new(1, 0, 2, 8, 0, 255), 4),
];

/// Invocation counters reserved per ciphered session (a session sends a few dozen APDUs at most;
/// block transfer of a long back-fill a few more).
const COUNTERS_PER_SESSION: u32 = 256;

pub struct DlmsPoller {
    cfg: DlmsConfig,
    keys: Option<Arc<KeyStore>>,
    counters: Option<Arc<Counters>>,
    clock_sync: Option<(std::time::Duration, std::time::Duration)>,
}

impl DlmsPoller {
    /// `clock_sync`: `(threshold, max_step)` when the head-end may set meter clocks.
    pub fn new(
        cfg: DlmsConfig,
        keys: Option<Arc<KeyStore>>,
        counters: Option<Arc<Counters>>,
        clock_sync: Option<(std::time::Duration, std::time::Duration)>,
    ) -> Self {
        Self { cfg, keys, counters, clock_sync }
    }

    /// `host[:port]` of a meter address, with the configured default port.
    fn socket(&self, address: &str) -> String {
        let has_port =
            address.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !address.ends_with(']');
        if has_port {
            address.to_string()
        } else {
            format!("{address}:{}", self.cfg.port)
        }
    }

    async fn options(&self, target: &Target, known: Option<&Capabilities>) -> Result<ClientOptions, PollError> {
        let transport = match self.cfg.transport {
            DlmsTransport::Wrapper => {
                TransportOptions::Wrapper { client_sap: self.cfg.client, server_sap: self.cfg.server_logical }
            }
            DlmsTransport::Hdlc => TransportOptions::Hdlc {
                client_address: u8::try_from(self.cfg.client).unwrap_or(16),
                server_logical: self.cfg.server_logical,
                server_physical: self.cfg.server_physical,
            },
        };
        let mut o = ClientOptions::new(transport);
        o.max_receive_pdu = self.cfg.max_pdu;
        o.connect_timeout = self.cfg.connect_timeout;
        o.timeout = self.cfg.step_timeout;
        // A meter's probed list size (1 when it lacks multiple-references) wins over the default.
        let probed = known.and_then(|c| c.max_list).and_then(|n| usize::try_from(n).ok());
        o.max_list_len = probed.unwrap_or(self.cfg.max_list).clamp(1, self.cfg.max_list.max(1));
        o.authentication = match self.cfg.auth {
            DlmsAuth::None => Authentication::None,
            DlmsAuth::Low => Authentication::Low { password: self.meter_keys(target)?.password.clone() },
            DlmsAuth::Gmac => {
                let k = self.meter_keys(target)?;
                let first = self.reserve(target, None).await?;
                Authentication::Gmac {
                    system_title: self.own_title(),
                    encryption_key: k.ek,
                    authentication_key: k.ak,
                    invocation_counter: first.saturating_sub(1),
                }
            }
        };
        Ok(o)
    }

    fn own_title(&self) -> [u8; 8] {
        hex::decode(&self.cfg.system_title).ok().and_then(|v| v.try_into().ok()).unwrap_or(*b"HES\0\0\0\0\x01")
    }

    fn meter_keys(&self, target: &Target) -> Result<&super::keys::MeterKeys, PollError> {
        self.keys
            .as_ref()
            .and_then(|k| k.get(&target.serial))
            .ok_or_else(|| PollError::new("no_keys", format!("no keys for meter {}", target.serial), false))
    }

    async fn reserve(&self, target: &Target, resync: Option<u32>) -> Result<u32, PollError> {
        let Some(c) = &self.counters else {
            return Err(PollError::new("no_keys", "ciphered sessions need the invocation counter store", false));
        };
        let r = match resync {
            Some(expected) => c.resync(target.meter_id, expected, COUNTERS_PER_SESSION).await,
            None => c.take(target.meter_id, COUNTERS_PER_SESSION).await,
        };
        r.map_err(|e| PollError::new("counter_store", e.to_string(), true))
    }

    /// Opens and associates a session. With HLS-GMAC, a meter that refuses our invocation counter
    /// gets its counter read with the public client, and the association is tried once more above it.
    async fn open(
        &self,
        target: &Target,
        known: Option<&Capabilities>,
    ) -> Result<(Session, dlms::Negotiated), PollError> {
        let addr = self.socket(&target.address);
        let mut opts = self.options(target, known).await?;
        let mut resynced = false;
        loop {
            let mut s = Session::connect_tcp(addr.as_str(), &opts).await.map_err(map_err)?;
            match s.associate().await {
                Ok(n) => return Ok((s, n)),
                Err(dlms::Error::AuthenticationRejected { reason, .. })
                    if self.cfg.auth == DlmsAuth::Gmac && !resynced =>
                {
                    drop(s);
                    tracing::info!(meter = %target.serial, %reason, "invocation counter refused; resynchronising");
                    let expected = Session::read_invocation_counter(addr.as_str(), &opts).await.map_err(map_err)?;
                    let first = self.reserve(target, Some(expected.saturating_add(1))).await?;
                    if let Authentication::Gmac { invocation_counter, .. } = &mut opts.authentication {
                        *invocation_counter = first.saturating_sub(1);
                    }
                    resynced = true;
                }
                Err(e) => return Err(map_err(e)),
            }
        }
    }

    async fn session(
        &self,
        target: &Target,
        tasks: &Tasks,
        known: Option<&Capabilities>,
    ) -> Result<Collected, PollError> {
        let (mut s, negotiated) = self.open(target, known).await?;
        let out = self.work(&mut s, &negotiated, tasks, known).await;
        // Release even after a failed step; its own failure does not spoil what was read.
        let _ = s.release().await;
        out
    }

    fn capabilities(&self, profile: &MeterProfile, n: &dlms::Negotiated) -> Capabilities {
        let mut c = profile.to_capabilities(n);
        // Without multiple-references the client reads a list one attribute at a time.
        let with_list = n.conformance & dlms::conformance::MULTIPLE_REFERENCES != 0;
        c.max_list = Some(if with_list { u32::try_from(self.cfg.max_list).unwrap_or(u32::MAX) } else { 1 });
        c.security = Some(
            match self.cfg.auth {
                DlmsAuth::None => "none",
                DlmsAuth::Low => "lls",
                DlmsAuth::Gmac => "hls-gmac-suite0",
            }
            .to_string(),
        );
        c
    }

    async fn work(
        &self,
        s: &mut Session,
        negotiated: &dlms::Negotiated,
        tasks: &Tasks,
        known: Option<&Capabilities>,
    ) -> Result<Collected, PollError> {
        let mut profile = known.map(MeterProfile::from_capabilities).unwrap_or_default();
        let mut out = Collected::default();

        // One with-list: clock, registers, and whatever the capability profile still lacks.
        let mut list: Vec<(Item, AttrRef)> = Vec::new();
        let need_scalers = profile.scalers.is_empty();
        let need_capture = tasks.profile_after.is_some() && profile.capture.is_empty();
        if tasks.clock || tasks.registers {
            list.push((Item::Clock, AttrRef::new(8, CLOCK, 2)));
        }
        if tasks.registers {
            for (obis, _) in REGISTERS {
                list.push((Item::Register(obis), AttrRef::new(3, obis, 2)));
            }
        }
        if need_scalers && (tasks.registers || tasks.profile_after.is_some()) {
            for (obis, _) in REGISTERS {
                list.push((Item::Scaler(obis), AttrRef::new(3, obis, 3)));
            }
        }
        if need_capture {
            list.push((Item::Capture, AttrRef::new(7, LOAD_PROFILE, 3)));
        }
        let mut meter_now: Option<DateTime<Utc>> = None;
        let mut clock_status = 0u8;
        let mut register_values: Vec<(Obis, i64)> = Vec::new();
        if !list.is_empty() {
            let attrs: Vec<AttrRef> = list.iter().map(|(_, a)| *a).collect();
            let answers = s.get_list(&attrs).await.map_err(map_err)?;
            let read_at = Utc::now();
            for ((item, _), answer) in list.iter().zip(answers) {
                let v = match answer {
                    Ok(v) => v,
                    Err(e) => {
                        return Err(PollError::new("data_access", format!("{item:?}: {}", e.name()), false));
                    }
                };
                match item {
                    Item::Clock => {
                        let dt = v.as_datetime().ok_or_else(|| malformed("the clock is not a date-time"))?;
                        clock_status = if dt.status == 0xFF { 0 } else { dt.status };
                        let t =
                            dt.as_datetime_utc(&Belgrade).ok_or_else(|| malformed("the clock is not a valid time"))?;
                        meter_now = Some(t);
                        out.clock_deviation = Some(t - read_at);
                    }
                    Item::Register(obis) => {
                        let raw =
                            v.as_i64().ok_or_else(|| malformed(&format!("register {obis} is {}", v.type_name())))?;
                        register_values.push((*obis, raw));
                    }
                    Item::Scaler(obis) => {
                        let su =
                            ScalerUnit::from_value(&v).ok_or_else(|| malformed("scaler_unit is not a structure"))?;
                        profile.scalers.push((*obis, su));
                    }
                    Item::Capture => profile.capture = capture_columns(&v)?,
                }
            }
            if need_scalers || need_capture {
                out.capabilities = Some(self.capabilities(&profile, negotiated));
            }
        }
        if out.capabilities.is_none() && known.is_none() {
            out.capabilities = Some(self.capabilities(&profile, negotiated));
        }

        let flags = |extra: Quality| pack_flags(Quality(clock_quality(clock_status).0 | extra.0), Source::Dlms);
        if tasks.registers {
            // Registers are stamped with the meter's own clock when it is trustworthy (a drifted
            // meter's values are still its values, but their time is marked doubtful).
            let drift = out.clock_deviation.map(|d| d.num_seconds().abs()).unwrap_or(0);
            let threshold = self.clock_sync.map_or(10, |(t, _)| t.as_secs()) as i64;
            let (ts, q) = match meter_now {
                Some(t) if drift <= threshold => (t, Quality::default()),
                _ => (Utc::now(), Quality::CLOCK_DOUBTFUL),
            };
            let ts = DateTime::from_timestamp(ts.timestamp(), 0).unwrap_or(ts);
            for (obis, raw) in &register_values {
                let Some(&(_, channel)) = REGISTERS.iter().find(|(o, _)| o == obis) else { continue };
                let value = profile.stored(*obis, *raw, channel)?;
                out.readings.push(Reading { ts, value, meter_id: 0, channel_id: channel, flags: flags(q) });
            }
        }

        if let (Some((threshold, max_step)), Some(dev)) = (self.clock_sync, out.clock_deviation) {
            let off = dev.num_milliseconds().unsigned_abs();
            if off > threshold.as_millis() as u64 && off <= max_step.as_millis() as u64 {
                s.set(AttrRef::new(8, CLOCK, 2), &Value::DateTime(CosemDateTime::from_utc(Utc::now())))
                    .await
                    .map_err(map_err)?;
                out.clock_synced = true;
            }
        }

        if let Some(after) = tasks.profile_after {
            let from = CosemDateTime::from_utc(after + chrono::Duration::seconds(1));
            let to = CosemDateTime::from_utc(Utc::now());
            let buffer = s.get_profile_range(LOAD_PROFILE, from, to).await.map_err(map_err)?;
            let rows = buffer.as_slice().ok_or_else(|| malformed("the load profile buffer is not an array"))?;
            for row in rows {
                let cols = row.as_slice().ok_or_else(|| malformed("a profile row is not a structure"))?;
                let mut ts: Option<(DateTime<Utc>, u8)> = None;
                for (col, v) in profile.capture.iter().zip(cols) {
                    if let Column::Clock = col {
                        let dt =
                            v.as_datetime().ok_or_else(|| malformed("a profile row's clock is not a date-time"))?;
                        let t = dt.as_datetime_utc(&Belgrade).ok_or_else(|| malformed("a profile row's clock"))?;
                        ts = Some((t, if dt.status == 0xFF { 0 } else { dt.status }));
                    }
                }
                let Some((ts, status)) = ts else { return Err(malformed("a profile row without a clock column")) };
                if ts <= after {
                    continue; // a meter that ignores the range's start: already stored
                }
                for (col, v) in profile.capture.iter().zip(cols) {
                    if let Column::Register(obis, channel) = col {
                        let raw = v.as_i64().ok_or_else(|| malformed("a profile value is not an integer"))?;
                        let value = profile.stored(*obis, raw, *channel)?;
                        let q = pack_flags(clock_quality(status), Source::Dlms);
                        out.readings.push(Reading { ts, value, meter_id: 0, channel_id: *channel, flags: q });
                    }
                }
                out.profile_until = Some(out.profile_until.map_or(ts, |u: DateTime<Utc>| u.max(ts)));
            }
        }

        if let Some(after) = tasks.events_after {
            let from = CosemDateTime::from_utc(after + chrono::Duration::seconds(1));
            let to = CosemDateTime::from_utc(Utc::now());
            let buffer = s.get_profile_range(EVENT_LOG, from, to).await.map_err(map_err)?;
            for row in buffer.as_slice().unwrap_or_default() {
                let cols = row.as_slice().unwrap_or_default();
                let ts = cols.first().and_then(|v| v.as_datetime_utc(&Belgrade));
                let code = cols.get(1).and_then(Value::as_i64).and_then(|c| i32::try_from(c).ok());
                let (Some(ts), Some(code)) = (ts, code) else { return Err(malformed("an event log row")) };
                if ts <= after {
                    continue;
                }
                out.events.push(MeterEvent { ts, code, detail: row.to_json() });
                out.events_until = Some(out.events_until.map_or(ts, |u: DateTime<Utc>| u.max(ts)));
            }
        }
        Ok(out)
    }
}

fn clock_quality(status: u8) -> Quality {
    let mut q = 0u8;
    if status & 0x01 != 0 {
        q |= Quality::CLOCK_INVALID.0;
    }
    if status & 0x02 != 0 {
        q |= Quality::CLOCK_DOUBTFUL.0;
    }
    Quality(q)
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Clock,
    Register(Obis),
    Scaler(Obis),
    Capture,
}

/// A load-profile column, from its capture objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Clock,
    Register(Obis, i16),
    Other,
}

/// What the poller keeps about a meter between sessions (inside [`Capabilities::details`]).
#[derive(Debug, Default)]
struct MeterProfile {
    scalers: Vec<(Obis, ScalerUnit)>,
    capture: Vec<Column>,
}

impl MeterProfile {
    fn from_capabilities(c: &Capabilities) -> Self {
        let mut p = MeterProfile::default();
        if let Some(list) = c.details.get("scalers").and_then(|v| v.as_object()) {
            for (k, v) in list {
                let (Ok(obis), Some(s), Some(u)) = (
                    k.parse::<Obis>(),
                    v.get(0).and_then(serde_json::Value::as_i64),
                    v.get(1).and_then(serde_json::Value::as_u64),
                ) else {
                    continue;
                };
                if let (Ok(scaler), Ok(unit)) = (i8::try_from(s), u8::try_from(u)) {
                    p.scalers.push((obis, ScalerUnit { scaler, unit }));
                }
            }
        }
        if let Some(cols) = c.details.get("capture").and_then(|v| v.as_array()) {
            p.capture = cols
                .iter()
                .map(|c| match c.as_str() {
                    Some("clock") => Column::Clock,
                    Some(o) => o
                        .parse::<Obis>()
                        .ok()
                        .and_then(|obis| {
                            REGISTERS.iter().find(|(r, _)| *r == obis).map(|(_, ch)| Column::Register(obis, *ch))
                        })
                        .unwrap_or(Column::Other),
                    None => Column::Other,
                })
                .collect();
        }
        p
    }

    fn to_capabilities(&self, n: &dlms::Negotiated) -> Capabilities {
        let scalers: serde_json::Map<String, serde_json::Value> =
            self.scalers.iter().map(|(o, su)| (o.to_string(), json!([su.scaler, su.unit]))).collect();
        let capture: Vec<String> = self
            .capture
            .iter()
            .map(|c| match c {
                Column::Clock => "clock".to_string(),
                Column::Register(o, _) => o.to_string(),
                Column::Other => "other".to_string(),
            })
            .collect();
        Capabilities {
            max_pdu: Some(u32::from(n.max_pdu)),
            max_list: None,
            selective_access: Some(n.conformance & dlms::conformance::SELECTIVE_ACCESS != 0),
            security: None,
            details: json!({
                "conformance": format!("{:06x}", n.conformance),
                "multiple_references": n.conformance & dlms::conformance::MULTIPLE_REFERENCES != 0,
                "block_transfer": n.conformance & dlms::conformance::BLOCK_TRANSFER_WITH_GET != 0,
                "scalers": scalers,
                "capture": capture,
            }),
        }
    }

    /// The stored integer of a raw register value: `raw · 10^(scaler − channel scaler)`, exact.
    fn stored(&self, obis: Obis, raw: i64, channel: i16) -> Result<i64, PollError> {
        let su = self
            .scalers
            .iter()
            .find(|(o, _)| *o == obis)
            .map(|(_, s)| *s)
            .ok_or_else(|| malformed(&format!("no scaler_unit known for {obis}")))?;
        let ch = schemas::channel::by_id(channel).ok_or_else(|| malformed("unknown channel"))?;
        scale_exact(raw, i32::from(su.scaler) - i32::from(ch.scaler))
            .ok_or_else(|| malformed(&format!("{obis}: {raw} x 10^{} is not an exact stored value", su.scaler)))
    }
}

/// `raw · 10^exp` when it is an integer that fits.
pub fn scale_exact(raw: i64, exp: i32) -> Option<i64> {
    if exp >= 0 {
        10i64.checked_pow(exp.unsigned_abs()).and_then(|m| raw.checked_mul(m))
    } else {
        let d = 10i64.checked_pow(exp.unsigned_abs())?;
        (raw % d == 0).then(|| raw / d)
    }
}

/// Columns of a profile from its capture_objects (array of {class, OBIS, attribute, data index}).
fn capture_columns(v: &Value) -> Result<Vec<Column>, PollError> {
    let list = v.as_slice().ok_or_else(|| malformed("capture_objects is not an array"))?;
    list.iter()
        .map(|c| {
            let f = c.as_slice().ok_or_else(|| malformed("a capture object is not a structure"))?;
            let obis = f
                .get(1)
                .and_then(Value::as_bytes)
                .and_then(|b| <[u8; 6]>::try_from(b).ok())
                .map(Obis)
                .ok_or_else(|| malformed("a capture object's logical name"))?;
            let class = f.first().and_then(Value::as_i64).unwrap_or(0);
            Ok(if class == 8 && obis == CLOCK {
                Column::Clock
            } else {
                REGISTERS.iter().find(|(o, _)| *o == obis).map_or(Column::Other, |(_, ch)| Column::Register(obis, *ch))
            })
        })
        .collect()
}

fn malformed(what: &str) -> PollError {
    PollError::new("unexpected_data", what.to_string(), false)
}

/// Failure labels: transport problems are retried, a meter's refusal is not.
pub fn map_err(e: dlms::Error) -> PollError {
    use dlms::Error as E;
    let (reason, retryable) = match &e {
        E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => ("refused", true),
        E::Io(_) => ("io", true),
        E::Timeout(_) => ("timeout", true),
        E::Closed => ("dropped", true),
        E::WrapperVersion(_) | E::FrameTooLong { .. } | E::Framing(_) => ("bad_frame", true),
        E::Protocol(_) | E::Unexpected(_) => ("bad_apdu", true),
        E::Rejected(_) => ("association_rejected", false),
        E::AuthenticationRejected { .. } => ("authentication_rejected", false),
        E::DataAccess(_) | E::Action(_) => ("data_access", false),
        E::Exception { .. } => ("exception", false),
        _ => ("other", false),
    };
    PollError::new(reason, e.to_string(), retryable)
}

impl Poller for DlmsPoller {
    fn protocol(&self) -> &'static str {
        "dlms"
    }

    fn prepare<'a>(&'a self, targets: &'a [Target]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let (DlmsAuth::Gmac, Some(c)) = (self.cfg.auth, &self.counters) {
                let ids: Vec<i32> = targets.iter().map(|t| t.meter_id).collect();
                if let Err(e) = c.prefetch(&ids, COUNTERS_PER_SESSION).await {
                    // Sessions then reserve one by one.
                    tracing::warn!(error = %e, "invocation counters not reserved for the round");
                }
            }
        })
    }

    fn poll<'a>(
        &'a self,
        target: &'a Target,
        tasks: &'a Tasks,
        known: Option<&'a Capabilities>,
    ) -> BoxFuture<'a, Result<Collected, PollError>> {
        Box::pin(async move {
            let mut c = self.session(target, tasks, known).await?;
            for r in &mut c.readings {
                r.meter_id = target.meter_id;
            }
            Ok(c)
        })
    }
}

impl Commander for DlmsPoller {
    fn execute<'a>(&'a self, target: &'a Target, command: MeterCommand) -> BoxFuture<'a, Result<String, PollError>> {
        Box::pin(async move {
            let Some(method) = command.disconnect_method() else {
                return Err(PollError::new(
                    "not_a_session",
                    format!("{} needs no DLMS session", command.as_str()),
                    false,
                ));
            };
            let (mut s, _) = self.open(target, None).await?;
            let result = async {
                s.action(70, DISCONNECT_CONTROL, method, Some(Value::I8(0))).await.map_err(map_err)?;
                let state = s.get(AttrRef::new(70, DISCONNECT_CONTROL, 2)).await.map_err(map_err)?;
                Ok::<_, PollError>(format!("output_state = {}", state.to_json()))
            }
            .await;
            let _ = s.release().await;
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_is_exact_or_refused() {
        assert_eq!(scale_exact(12_345, 0), Some(12_345));
        assert_eq!(scale_exact(12_345, 3), Some(12_345_000));
        assert_eq!(scale_exact(2_301, -1), None, "2301 dV -> V loses a digit");
        assert_eq!(scale_exact(2_300, -1), Some(230));
        assert_eq!(scale_exact(i64::MAX, 1), None);
    }
}
