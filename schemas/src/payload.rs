//! The MQTT reading payload: one JSON object per meter and interval, published on
//! `meters/<serial>/readings`. Its contract is `mqtt/reading.schema.json`; [`ReadingPayload::parse`]
//! enforces the same rules (a test keeps the two in agreement) without a schema engine on the hot path.
//!
//! ```json
//! {"meter":"SIM00000001","ts":"2026-11-20T10:15:00Z",
//!  "values":{"1.0.1.8.0":1234567,"1.0.32.7.0":229.8},"status":["power_outage"]}
//! ```

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::obis::ObisCode;
use crate::reading::{MeterSerial, Quality};

/// Largest accepted payload.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Most values in one payload.
pub const MAX_VALUES: usize = 64;

/// The JSON Schema of the payload, as shipped in `schemas/mqtt/reading.schema.json`.
pub const JSON_SCHEMA: &str = include_str!("../mqtt/reading.schema.json");

/// A number as the meter sent it: integers stay exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl Serialize for Number {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Number::Int(i) => s.serialize_i64(i),
            Number::Float(f) => s.serialize_f64(f),
        }
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                i64::try_from(v).map(Number::Int).map_err(|_| E::custom("number out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number::Float(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A validated reading payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadingPayload {
    /// The meter's serial number.
    pub meter: MeterSerial,
    /// End of the measuring interval (registers: capture time), UTC.
    pub ts: DateTime<Utc>,
    /// Values by OBIS code, in the payload's order, no code twice.
    #[serde(serialize_with = "ser_values")]
    pub values: Vec<(ObisCode, Number)>,
    /// Status flags the meter reported for the interval.
    #[serde(skip_serializing_if = "is_empty_quality", serialize_with = "ser_status")]
    pub status: Quality,
    /// When the device or concentrator sent the message (optional; used for latency metrics only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<DateTime<Utc>>,
}

fn is_empty_quality(q: &Quality) -> bool {
    q.0 == 0
}

fn ser_status<S: serde::Serializer>(q: &Quality, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(q.names())
}

fn ser_values<S: serde::Serializer>(v: &[(ObisCode, Number)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, n)| (short_obis(k), n)))
}

/// `1.0.1.8.0` for codes whose F group is 255, else six groups.
fn short_obis(o: &ObisCode) -> String {
    let [a, b, c, d, e, f] = o.0;
    if f == 255 {
        format!("{a}.{b}.{c}.{d}.{e}")
    } else {
        o.to_string()
    }
}

/// Why a payload was refused. [`PayloadError::reason`] is the bounded label used in metrics and
/// dead letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {0} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("schema violation: {0}")]
    Schema(String),
}

impl PayloadError {
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::TooLarge(_) => "payload_too_large",
            PayloadError::Malformed(_) => "malformed_json",
            PayloadError::Schema(_) => "schema_violation",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    meter: MeterSerial,
    ts: DateTime<Utc>,
    values: Values,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    sent: Option<DateTime<Utc>>,
}

struct Values(Vec<(ObisCode, Number)>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of OBIS code to number")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Values, A::Error> {
                let mut out: Vec<(ObisCode, Number)> = Vec::with_capacity(8);
                while let Some(key) = map.next_key::<ObisCode>()? {
                    let n: Number = map.next_value()?;
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format_args!("OBIS code {key} appears twice")));
                    }
                    if out.len() == MAX_VALUES {
                        return Err(de::Error::custom(format_args!("more than {MAX_VALUES} values")));
                    }
                    out.push((key, n));
                }
                if out.is_empty() {
                    return Err(de::Error::custom("values is empty"));
                }
                Ok(Values(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Default)]
struct Status(Quality);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Status;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of status names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Status, A::Error> {
                let mut q = Quality::default();
                let mut n = 0;
                while let Some(name) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    n += 1;
                    if n > Quality::NAMES.len() {
                        return Err(de::Error::custom("too many status entries"));
                    }
                    let flag = Quality::from_name(&name)
                        .ok_or_else(|| de::Error::custom(format_args!("unknown status {name:?}")))?;
                    q = q.with(flag);
                }
                Ok(Status(q))
            }
        }
        d.deserialize_seq(V)
    }
}

impl ReadingPayload {
    /// Parses and validates a payload. Never panics, whatever the bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge(bytes.len()));
        }
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => PayloadError::Schema(e.to_string()),
            _ => PayloadError::Malformed(e.to_string()),
        })?;
        Ok(ReadingPayload {
            meter: wire.meter,
            ts: wire.ts,
            values: wire.values.0,
            status: wire.status.0,
            sent: wire.sent,
        })
    }

    /// The payload as compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ReadingPayload {
        ReadingPayload::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> &'static str {
        match ReadingPayload::parse(s.as_bytes()) {
            Ok(p) => panic!("accepted {s}: {p:?}"),
            Err(e) => e.reason(),
        }
    }

    const GOOD: &str = r#"{"meter":"SIM00000001","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1234567,"1.0.32.7.0":229.8},"status":["power_outage"]}"#;

    #[test]
    fn parses_a_good_payload() {
        let p = ok(GOOD);
        assert_eq!(p.meter.as_str(), "SIM00000001");
        assert_eq!(p.values.len(), 2);
        assert_eq!(p.values[0], ("1.0.1.8.0".parse().expect("obis"), Number::Int(1_234_567)));
        assert_eq!(p.values[1].1, Number::Float(229.8));
        assert!(p.status.contains(Quality::POWER_OUTAGE));
        assert_eq!(ok(std::str::from_utf8(&p.to_json()).expect("utf8")), p, "round trip");
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let p = ok(r#"{"meter":"A","ts":"2026-03-29T03:00:00+02:00","values":{"1.0.1.8.0":1}}"#);
        assert_eq!(p.ts.to_rfc3339(), "2026-03-29T01:00:00+00:00");
    }

    #[test]
    fn refuses_bad_payloads_with_a_reason() {
        assert_eq!(err("{"), "malformed_json");
        assert_eq!(err("not json"), "malformed_json");
        assert_eq!(err(""), "malformed_json");
        assert_eq!(err("[]"), "schema_violation");
        assert_eq!(err(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z"}"#), "schema_violation");
        assert_eq!(err(r#"{"meter":"A","ts":"yesterday","values":{"1.0.1.8.0":1}}"#), "schema_violation");
        assert_eq!(err(r#"{"meter":"A B","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1}}"#), "schema_violation");
        assert_eq!(err(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{}}"#), "schema_violation");
        assert_eq!(err(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"x":1}}"#), "schema_violation");
        assert_eq!(err(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":"1"}}"#), "schema_violation");
        assert_eq!(
            err(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1,"1-0:1.8.0":2}}"#),
            "schema_violation"
        );
        assert_eq!(
            err(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1},"x":1}"#),
            "schema_violation"
        );
        assert_eq!(
            err(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1},"status":["on_fire"]}"#),
            "schema_violation"
        );
        assert_eq!(err(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1e999}}"#), "malformed_json");
        let big = format!(r#"{{"meter":"{}"}}"#, "A".repeat(MAX_PAYLOAD_BYTES));
        assert_eq!(err(&big), "payload_too_large");
    }

    /// The hand-written parser and the published JSON Schema agree on a set of samples.
    #[test]
    fn parser_agrees_with_the_json_schema() {
        let schema: serde_json::Value = serde_json::from_str(JSON_SCHEMA).expect("schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("valid schema");
        let samples = [
            GOOD,
            r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1},"sent":"2026-11-20T10:15:01.5Z"}"#,
            r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{}}"#,
            r#"{"meter":"A B","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1}}"#,
            r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"x":1}}"#,
            r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":"1"}}"#,
            r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1},"x":1}"#,
            r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1},"status":["on_fire"]}"#,
            r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1-0:1.8.0*255":1}}"#,
            r#"{"ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1}}"#,
        ];
        for s in samples {
            let v: serde_json::Value = serde_json::from_str(s).expect("sample is JSON");
            assert_eq!(validator.is_valid(&v), ReadingPayload::parse(s.as_bytes()).is_ok(), "disagree on {s}");
        }
    }
}
