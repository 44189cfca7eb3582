//! What the database must hold after the simulator published a span: every meter's payloads from
//! the simulator's model (`meter_sim::expect`), as stored rows (serial, channel id, ts, value).

use anyhow::Context;
use chrono::{DateTime, Utc};
use meter_sim::channels::Channel;
use meter_sim::expect::expected_payloads;
use meter_sim::{Model, Span};
use schemas::payload::Number;
use schemas::ObisCode;

/// A stored reading as the tests compare it: meter serial, channel id, interval end, value.
pub type Row = (String, i16, DateTime<Utc>, i64);

pub fn expected_rows(
    seed: u64,
    meters: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    channels: &[ObisCode],
) -> anyhow::Result<Vec<Row>> {
    let model = Model::with_meters(seed, meters);
    let chans: Vec<Channel> = channels
        .iter()
        .map(|o| Channel::from_obis(o).with_context(|| format!("{o} not simulated")))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for index in 0..meters {
        let serial = meter_sim::serial(index);
        for p in expected_payloads(&model, &serial, Span { from, to }, &chans)? {
            for (obis, n) in &p.values {
                let def = schemas::channel::by_obis(obis).with_context(|| format!("{obis} not in the catalogue"))?;
                let stored = match *n {
                    Number::Int(v) if def.scaler == 0 => v,
                    _ => def.to_stored(n.as_f64()).with_context(|| format!("{obis} value {n:?}"))?,
                };
                out.push((serial.clone(), def.id, p.ts, stored));
            }
        }
    }
    Ok(out)
}
