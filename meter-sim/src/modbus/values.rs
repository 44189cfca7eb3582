//! The values a simulated Modbus meter holds at an interval end, as stored integers per channel id
//! (`schemas::channel`).
//!
//! From the model: 1.8.0, 1.8.1, 1.8.2, 2.8.0 (exact Wh, as `meter-sim expect` prints) and the voltage
//! (0.1 V, used for all three phases). Derived, deterministic: active power import/export = the last
//! interval's energy × 4 (average W), current per phase = import power / 3 / voltage (mA, rounded half
//! up), power factor 0.950–0.999 by meter, frequency 50.00 Hz, reactive energy 0.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::model::{Model, ModelError};

/// Stored value of every catalogue channel for meter `index` at interval end `ts`.
pub fn channel_values(model: &Model, index: usize, ts: DateTime<Utc>) -> Result<BTreeMap<i16, i64>, ModelError> {
    let iv = model.interval(index, ts)?;
    let r = iv.registers;
    let power = iv.energy.import_total() * 4;
    let dv = i64::from(iv.voltage_dv.max(1));
    // mA = W / 3 / (dV / 10) × 1000 = W × 10000 / (3 × dV), rounded half up.
    let current = (power * 10_000 * 2 + 3 * dv) / (2 * 3 * dv);
    let mut out = BTreeMap::new();
    for id in 1..=4 {
        out.extend(r.channel(id).map(|v| (id, v)));
    }
    for id in [5, 6, 7] {
        out.insert(id, i64::from(iv.voltage_dv));
    }
    for id in [8, 9, 10] {
        out.insert(id, current);
    }
    out.insert(11, power);
    out.insert(12, iv.energy.export * 4);
    out.insert(13, 0);
    out.insert(14, 0);
    out.insert(15, 950 + (index % 50) as i64);
    out.insert(16, 5000);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use schemas::payload::Number;

    use super::*;
    use crate::channels::Channel;
    use crate::expect::expected_payloads;
    use crate::span::Span;

    #[test]
    fn modbus_values_are_what_expect_prints() {
        let model = Model::with_meters(3, 300);
        let span = Span::parse("2025-03-30T00:00:00Z", "2025-03-30T02:00:00Z").expect("span");
        for index in [0usize, 1, 150, 299] {
            let serial = crate::fleet::serial(index);
            for p in expected_payloads(&model, &serial, span, &Channel::ALL).expect("expect") {
                let v = channel_values(&model, index, p.ts).expect("values");
                for (obis, value) in &p.values {
                    let ch = schemas::channel::by_obis(obis).expect("channel");
                    let want = match value {
                        Number::Int(i) => *i,
                        Number::Float(f) => ch.to_stored(*f).expect("stored"),
                    };
                    assert_eq!(v[&ch.id], want, "meter {index} {obis} at {}", p.ts);
                }
            }
        }
    }
}
