//! What the publisher sends for one meter: the payloads of every interval of a span, without `sent`.
//!
//! `meter-sim expect` prints them as JSON lines; tests call [`expected_payloads`] directly.

use std::io::Write;

use schemas::payload::ReadingPayload;

use crate::channels::Channel;
use crate::model::{Model, ModelError};
use crate::span::Span;

/// Why the expected payloads cannot be produced.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
}

/// Calls `f` with the payload of every interval of `span` for meter `serial` (household or master), in order.
pub fn for_each_payload(
    model: &Model,
    serial: &str,
    span: Span,
    channels: &[Channel],
    mut f: impl FnMut(ReadingPayload) -> Result<(), ExpectError>,
) -> Result<(), ExpectError> {
    let index = model.index_of(serial)?;
    let mut series = model.series(index)?;
    for ts in span.ends() {
        f(series.interval(ts)?.payload(channels, None))?;
    }
    Ok(())
}

/// The payloads of meter `serial` for every interval of `span`: exactly what the publisher sends, minus `sent`.
pub fn expected_payloads(
    model: &Model,
    serial: &str,
    span: Span,
    channels: &[Channel],
) -> Result<Vec<ReadingPayload>, ExpectError> {
    let mut out = Vec::with_capacity(usize::try_from(span.len()).unwrap_or(0).min(1 << 20));
    for_each_payload(model, serial, span, channels, |p| {
        out.push(p);
        Ok(())
    })?;
    Ok(out)
}

/// Writes the payloads as JSON lines; returns how many were written.
pub fn write_expected(
    mut out: impl Write,
    model: &Model,
    serial: &str,
    span: Span,
    channels: &[Channel],
) -> Result<u64, ExpectError> {
    let mut n = 0u64;
    for_each_payload(model, serial, span, channels, |p| {
        out.write_all(&p.to_json())?;
        out.write_all(b"\n")?;
        n += 1;
        Ok(())
    })?;
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::{parse_channels, DEFAULT_CHANNELS};

    #[test]
    fn lines_parse_and_match_the_model() {
        let model = Model::new(4);
        let span = Span::parse("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z").expect("span");
        let channels = parse_channels(DEFAULT_CHANNELS).expect("channels");
        let master = model.fleet().building(1).master_meter();
        for serial in ["SIM00000002", &crate::fleet::serial(master)] {
            let mut buf = Vec::new();
            let n = write_expected(&mut buf, &model, serial, span, &channels).expect("write");
            assert_eq!(n, span.len());
            let expected = expected_payloads(&model, serial, span, &channels).expect("payloads");
            let lines: Vec<&[u8]> = buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
            assert_eq!(lines.len(), expected.len());
            for (line, (p, ts)) in lines.iter().zip(expected.iter().zip(span.ends())) {
                let parsed = ReadingPayload::parse(line).expect("parse");
                assert_eq!(&parsed, p);
                assert_eq!(parsed.ts, ts);
                assert_eq!(parsed.sent, None);
                let index = crate::fleet::index_of(serial).expect("index");
                let v = model.interval(index, ts).expect("model");
                assert_eq!(parsed.values[0].1, schemas::payload::Number::Int(v.registers.import_total()));
            }
        }
    }

    #[test]
    fn unknown_serials_are_an_error() {
        let model = Model::new(4);
        let span = Span::parse("2026-10-24T22:00:00Z", "2026-10-24T23:00:00Z").expect("span");
        let e = expected_payloads(&model, "UNK00000001", span, &Channel::ALL).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("unknown meter"));
    }
}
