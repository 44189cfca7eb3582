//! What the database must hold after the simulator published a span: every meter's payloads from
//! the simulator's model (`meter_sim::expect`), as stored rows (serial, channel id, ts, value).

use anyhow::Context;
use chrono::{DateTime, Utc};
use meter_sim::channels::Channel;
use meter_sim::expect::for_each_payload;
use meter_sim::{Model, Span};
use schemas::payload::Number;
use schemas::ObisCode;

/// A stored reading as the tests compare it: meter serial, channel id, interval end, value.
pub type Row = (String, i16, DateTime<Utc>, i64);

/// The simulator's channels for OBIS codes (every one must be simulated).
pub fn channels(codes: &[ObisCode]) -> anyhow::Result<Vec<Channel>> {
    codes.iter().map(|o| Channel::from_obis(o).with_context(|| format!("{o} not simulated"))).collect()
}

/// One meter's rows as stored: (channel id, interval end, stored value), in publishing order.
pub fn meter_rows(
    model: &Model,
    serial: &str,
    span: Span,
    channels: &[Channel],
) -> anyhow::Result<Vec<(i16, DateTime<Utc>, i64)>> {
    let mut out = Vec::new();
    let mut failure = None;
    for_each_payload(model, serial, span, channels, |p| {
        for (obis, n) in &p.values {
            let Some(def) = schemas::channel::by_obis(obis) else {
                failure = Some(format!("{obis} not in the catalogue"));
                continue;
            };
            let stored = match *n {
                Number::Int(v) if def.scaler == 0 => Some(v),
                _ => def.to_stored(n.as_f64()),
            };
            match stored {
                Some(v) => out.push((def.id, p.ts, v)),
                None => failure = Some(format!("{obis} value {n:?} not storable")),
            }
        }
        Ok(())
    })?;
    match failure {
        Some(f) => anyhow::bail!("{serial}: {f}"),
        None => Ok(out),
    }
}

/// Every meter's rows for the span ending in (from, to].
pub fn expected_rows(
    seed: u64,
    meters: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    channels: &[ObisCode],
) -> anyhow::Result<Vec<Row>> {
    let model = Model::with_meters(seed, meters);
    let chans = self::channels(channels)?;
    let mut out = Vec::new();
    for index in 0..meters {
        let serial = meter_sim::serial(index);
        for (ch, ts, v) in meter_rows(&model, &serial, Span { from, to }, &chans)? {
            out.push((serial.clone(), ch, ts, v));
        }
    }
    Ok(out)
}
