//! From a received message to storable rows, or to a dead letter with a reason. Pure: no I/O, so
//! every rule is unit-tested and fuzzable.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemas::channel::{self, ChannelKind};
use schemas::payload::{Number, ReadingPayload};
use schemas::reading::{pack_flags, Reading, Source};

/// Largest cumulative register accepted, in stored units (10^15 Wh = 1 TWh).
const MAX_CUMULATIVE: i64 = 1_000_000_000_000_000;
/// Largest magnitude of an instantaneous value, in stored units.
const MAX_INSTANTANEOUS: i64 = 1_000_000_000_000;

/// A refused message, kept in `dead_letters` with its raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Which intake refused it (`mqtt`, …).
    pub source: &'static str,
    /// Where it came from (the MQTT topic, a meter address).
    pub origin: String,
    /// One of [`crate::metrics::DEAD_LETTER_REASONS`].
    pub reason: &'static str,
    /// A readable explanation.
    pub detail: String,
    pub payload: Bytes,
}

impl DeadLetter {
    pub fn new(
        source: &'static str,
        origin: &str,
        reason: &'static str,
        detail: impl Into<String>,
        payload: Bytes,
    ) -> Self {
        // PostgreSQL text cannot hold NUL; keep the rest as it was.
        let clean = |s: &str| s.replace('\0', "\u{FFFD}");
        DeadLetter { source, origin: clean(origin), reason, detail: clean(&detail.into()), payload }
    }
}

/// Why a parsed payload cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub detail: String,
}

impl Refusal {
    fn new(reason: &'static str, detail: String) -> Self {
        Refusal { reason, detail }
    }
}

/// Limits on what is accepted.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub max_age: Duration,
    pub max_future: Duration,
}

impl Window {
    /// The oldest and the newest interval accepted at `now`.
    pub fn bounds(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let oldest = now - chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::MAX);
        let newest = now + chrono::Duration::from_std(self.max_future).unwrap_or(chrono::Duration::MAX);
        (oldest, newest)
    }

    /// Why `ts` is refused at `now` (`timestamp_out_of_range`), if it is. The one time check of
    /// every source: MQTT payloads here, polled and pushed readings at the writer's entry.
    pub fn check(&self, ts: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), Refusal> {
        let (oldest, newest) = self.bounds(now);
        if ts < oldest || ts > newest {
            return Err(Refusal::new(
                "timestamp_out_of_range",
                format!(
                    "ts {} is outside the accepted window [{}, {}]",
                    ts.to_rfc3339(),
                    oldest.to_rfc3339(),
                    newest.to_rfc3339()
                ),
            ));
        }
        Ok(())
    }
}

/// Turns a validated payload of a known meter into rows, checking time window, channels and values.
/// All or nothing: one bad value refuses the whole message (its raw bytes are kept).
pub fn to_rows(
    p: &ReadingPayload,
    meter_id: i32,
    source: Source,
    now: DateTime<Utc>,
    window: Window,
) -> Result<Vec<Reading>, Refusal> {
    window.check(p.ts, now)?;
    let flags = pack_flags(p.status, source);
    let mut rows = Vec::with_capacity(p.values.len());
    for (obis, n) in &p.values {
        let ch = channel::by_obis(obis).ok_or_else(|| {
            Refusal::new("unknown_channel", format!("OBIS code {obis} is not in the channel catalogue"))
        })?;
        let impossible = |why: &str| Refusal::new("impossible_value", format!("{obis} = {}: {why}", fmt_number(*n)));
        let value = match (*n, ch.scaler) {
            (Number::Int(i), 0) => i,
            _ => ch.to_stored(n.as_f64()).ok_or_else(|| match ch.kind {
                ChannelKind::Cumulative => impossible(&format!("not a whole number of {}", ch.unit)),
                ChannelKind::Instantaneous => impossible("out of range"),
            })?,
        };
        match ch.kind {
            ChannelKind::Cumulative if !(0..=MAX_CUMULATIVE).contains(&value) => {
                return Err(impossible("a cumulative register is negative or beyond 10^15"));
            }
            ChannelKind::Instantaneous if value.abs() > MAX_INSTANTANEOUS => return Err(impossible("out of range")),
            _ => {}
        }
        rows.push(Reading { ts: p.ts, value, meter_id, channel_id: ch.id, flags });
    }
    Ok(rows)
}

fn fmt_number(n: Number) -> String {
    match n {
        Number::Int(i) => i.to_string(),
        Number::Float(f) => f.to_string(),
    }
}

/// The meter serial a topic names at `level` (0-based, after a `$share/<group>/` prefix), if any.
pub fn serial_in_topic(topic: &str, level: i32) -> Option<&str> {
    let level = usize::try_from(level).ok()?;
    let mut parts = topic.split('/');
    if topic.starts_with("$share/") {
        parts.next();
        parts.next();
    }
    parts.nth(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(s: &str) -> ReadingPayload {
        ReadingPayload::parse(s.as_bytes()).expect("valid payload")
    }

    fn now() -> DateTime<Utc> {
        "2026-11-20T12:00:00Z".parse().expect("time")
    }

    const W: Window = Window { max_age: Duration::from_secs(86_400), max_future: Duration::from_secs(3_600) };

    #[test]
    fn converts_values_with_the_channel_scaler() {
        let p = payload(
            r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1234,"1.0.32.7.0":229.7},"status":["power_outage"]}"#,
        );
        let rows = to_rows(&p, 7, Source::Mqtt, now(), W).expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].meter_id, rows[0].channel_id, rows[0].value), (7, 1, 1234));
        assert_eq!((rows[1].channel_id, rows[1].value), (5, 2297));
        let (q, s) = schemas::reading::unpack_flags(rows[0].flags);
        assert!(q.contains(schemas::Quality::POWER_OUTAGE));
        assert_eq!(s, Some(Source::Mqtt));
    }

    #[test]
    fn refuses_with_reasons() {
        let reason = |s: &str| to_rows(&payload(s), 1, Source::Mqtt, now(), W).expect_err("refused").reason;
        assert_eq!(
            reason(r#"{"meter":"A","ts":"2026-11-18T10:15:00Z","values":{"1.0.1.8.0":1}}"#),
            "timestamp_out_of_range"
        );
        assert_eq!(
            reason(r#"{"meter":"A","ts":"2026-11-20T14:00:00Z","values":{"1.0.1.8.0":1}}"#),
            "timestamp_out_of_range"
        );
        assert_eq!(reason(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.99.8.0":1}}"#), "unknown_channel");
        assert_eq!(
            reason(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":-5}}"#),
            "impossible_value"
        );
        assert_eq!(
            reason(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":12.5}}"#),
            "impossible_value"
        );
        assert_eq!(
            reason(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.32.7.0":1e300}}"#),
            "impossible_value"
        );
        assert_eq!(
            reason(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1000000000000000000}}"#),
            "impossible_value"
        );
    }

    #[test]
    fn whole_floats_are_accepted_for_energy() {
        let p = payload(r#"{"meter":"A","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1234.0}}"#);
        assert_eq!(to_rows(&p, 1, Source::Mqtt, now(), W).expect("rows")[0].value, 1234);
    }

    #[test]
    fn topic_levels() {
        assert_eq!(serial_in_topic("meters/SIM1/readings", 1), Some("SIM1"));
        assert_eq!(serial_in_topic("$share/g/meters/SIM1/readings", 1), Some("SIM1"));
        assert_eq!(serial_in_topic("meters", 1), None);
        assert_eq!(serial_in_topic("meters/SIM1/readings", -1), None);
    }

    #[test]
    fn dead_letters_drop_nul_from_text() {
        let d = DeadLetter::new("mqtt", "a\0b", "malformed_json", "x\0y", Bytes::from_static(b"\0"));
        assert_eq!(d.origin, "a\u{FFFD}b");
        assert_eq!(d.detail, "x\u{FFFD}y");
        assert_eq!(&d.payload[..], b"\0", "raw bytes are kept as they came");
    }
}

/// Random and mutated inputs through the parser and the rules: the cheap, always-on sibling of the
/// `mqtt_payload` fuzz target (`cargo xtask fuzz`).
#[cfg(test)]
mod robustness {
    use super::*;
    use crate::metrics::DEAD_LETTER_REASONS;

    fn check(bytes: &[u8]) {
        let now: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().expect("time");
        let w = Window { max_age: Duration::from_secs(400 * 86_400), max_future: Duration::from_secs(3600) };
        match ReadingPayload::parse(bytes) {
            Ok(p) => {
                if let Err(r) = to_rows(&p, 1, Source::Mqtt, now, w) {
                    assert!(DEAD_LETTER_REASONS.contains(&r.reason));
                }
            }
            Err(e) => assert!(DEAD_LETTER_REASONS.contains(&e.reason())),
        }
    }

    #[test]
    fn never_panics_on_mutations_of_a_good_payload() {
        let good = br#"{"meter":"SIM00000001","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1234567,"1.0.1.8.1":1000,"1.0.32.7.0":229.8},"status":["power_outage"],"sent":"2026-11-20T10:15:01.123Z"}"#;
        let mut next = crate::test_support::xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let mut b = good.to_vec();
            for _ in 0..(next() % 6 + 1) {
                let i = (next() as usize) % b.len();
                match next() % 4 {
                    0 => b[i] = next() as u8,
                    1 => {
                        b.remove(i);
                    }
                    2 => {
                        const ALPHABET: &[u8] = b"{}[]\",:0-9eE.\\u";
                        b.insert(i, ALPHABET[(next() % ALPHABET.len() as u64) as usize]);
                    }
                    _ => b.truncate(i),
                }
                if b.is_empty() {
                    break;
                }
            }
            check(&b);
        }
        for len in 0..64 {
            let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            check(&random);
        }
    }
}
