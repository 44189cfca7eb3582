//! The channels the simulator can report and the payload it builds from model values.

use chrono::{DateTime, Utc};
use schemas::obis::{ObisCode, ObisParseError};
use schemas::payload::{Number, ReadingPayload};
use schemas::reading::{MeterSerial, Quality};

use crate::fleet;
use crate::model::{IntervalValues, Registers};

/// The default `--channels`: all channels the model produces.
pub const DEFAULT_CHANNELS: &str = "1.0.1.8.0,1.0.1.8.1,1.0.1.8.2,1.0.2.8.0,1.0.32.7.0";

/// A channel of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// 1.0.1.8.0, Wh: import total (= VT + NT).
    ImportTotal,
    /// 1.0.1.8.1, Wh: import tariff 1 (VT, day).
    ImportVt,
    /// 1.0.1.8.2, Wh: import tariff 2 (NT, night).
    ImportNt,
    /// 1.0.2.8.0, Wh: export total.
    Export,
    /// 1.0.32.7.0, V with one decimal: voltage L1.
    Voltage,
}

/// Why a `--channels` list is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Invalid(#[from] ObisParseError),
    #[error("channel {0} is not produced by the simulator (supported: {DEFAULT_CHANNELS})")]
    Unsupported(String),
    #[error("channel {0} is listed twice")]
    Duplicate(String),
    #[error("no channel given")]
    Empty,
}

impl Channel {
    pub const ALL: [Channel; 5] =
        [Channel::ImportTotal, Channel::ImportVt, Channel::ImportNt, Channel::Export, Channel::Voltage];

    pub const fn obis(self) -> ObisCode {
        match self {
            Channel::ImportTotal => ObisCode::new(1, 0, 1, 8, 0, 255),
            Channel::ImportVt => ObisCode::new(1, 0, 1, 8, 1, 255),
            Channel::ImportNt => ObisCode::new(1, 0, 1, 8, 2, 255),
            Channel::Export => ObisCode::new(1, 0, 2, 8, 0, 255),
            Channel::Voltage => ObisCode::new(1, 0, 32, 7, 0, 255),
        }
    }

    pub fn from_obis(obis: &ObisCode) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.obis() == *obis)
    }

    /// The value of this channel: energy as an exact integer in Wh, voltage as volts with one decimal
    /// (`tenths / 10`, which the head-end stores back as the same integer of tenths).
    pub fn value(self, registers: &Registers, voltage_dv: i32) -> Number {
        match self {
            Channel::ImportTotal => Number::Int(registers.import_total()),
            Channel::ImportVt => Number::Int(registers.import_vt),
            Channel::ImportNt => Number::Int(registers.import_nt),
            Channel::Export => Number::Int(registers.export),
            Channel::Voltage => Number::Float(f64::from(voltage_dv) / 10.0),
        }
    }
}

/// Parses a comma-separated list of OBIS codes (any notation `schemas::ObisCode` accepts), keeping its order.
pub fn parse_channels(list: &str) -> Result<Vec<Channel>, ChannelError> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let obis: ObisCode = part.parse()?;
        let channel = Channel::from_obis(&obis).ok_or_else(|| ChannelError::Unsupported(part.to_string()))?;
        if out.contains(&channel) {
            return Err(ChannelError::Duplicate(part.to_string()));
        }
        out.push(channel);
    }
    if out.is_empty() {
        return Err(ChannelError::Empty);
    }
    Ok(out)
}

/// The serial of a simulated meter as a [`MeterSerial`].
#[allow(clippy::expect_used)]
pub fn meter_serial(index: usize) -> MeterSerial {
    // `SIM` + digits is always a valid serial (1–32 characters of [A-Za-z0-9]).
    MeterSerial::new(fleet::serial(index)).expect("simulated serials are valid")
}

/// The payload of one meter and interval: values in the order of `channels`, no status.
pub fn payload(
    meter: MeterSerial,
    ts: DateTime<Utc>,
    registers: &Registers,
    voltage_dv: i32,
    channels: &[Channel],
    sent: Option<DateTime<Utc>>,
) -> ReadingPayload {
    ReadingPayload {
        meter,
        ts,
        values: channels.iter().map(|c| (c.obis(), c.value(registers, voltage_dv))).collect(),
        status: Quality::default(),
        sent,
    }
}

impl IntervalValues {
    /// The payload the publisher sends for this meter and interval (with `sent`), or `expect` prints
    /// (without).
    pub fn payload(&self, channels: &[Channel], sent: Option<DateTime<Utc>>) -> ReadingPayload {
        payload(meter_serial(self.meter), self.ts, &self.registers, self.voltage_dv, channels, sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_in_order() {
        assert_eq!(parse_channels(DEFAULT_CHANNELS), Ok(Channel::ALL.to_vec()));
        assert_eq!(parse_channels("1-0:32.7.0, 1.0.1.8.2.255"), Ok(vec![Channel::Voltage, Channel::ImportNt]));
        assert!(matches!(parse_channels("1.0.1.8.0,1-0:1.8.0"), Err(ChannelError::Duplicate(_))));
        assert!(matches!(parse_channels("1.0.52.7.0"), Err(ChannelError::Unsupported(_))));
        assert!(matches!(parse_channels("x"), Err(ChannelError::Invalid(_))));
        assert_eq!(parse_channels(" , "), Err(ChannelError::Empty));
    }

    #[test]
    fn every_channel_is_in_the_catalogue() {
        for c in Channel::ALL {
            assert!(schemas::channel::by_obis(&c.obis()).is_some(), "{c:?}");
        }
    }

    #[test]
    fn payload_json_round_trips() {
        let regs = Registers { import_vt: 1_234_567, import_nt: 765_432, export: 0 };
        let ts = DateTime::parse_from_rfc3339("2026-11-20T10:15:00Z").map(|t| t.with_timezone(&Utc)).expect("ts");
        let p = payload(meter_serial(0), ts, &regs, 2298, &Channel::ALL, None);
        let json = String::from_utf8(p.to_json()).expect("utf8");
        assert_eq!(
            json,
            r#"{"meter":"SIM00000001","ts":"2026-11-20T10:15:00Z","values":{"1.0.1.8.0":1999999,"1.0.1.8.1":1234567,"1.0.1.8.2":765432,"1.0.2.8.0":0,"1.0.32.7.0":229.8}}"#
        );
        assert_eq!(ReadingPayload::parse(json.as_bytes()), Ok(p));
        // 230.0 V stays a float and maps back to 2300 tenths.
        let p = payload(meter_serial(0), ts, &regs, 2300, &[Channel::Voltage], None);
        let back = ReadingPayload::parse(&p.to_json()).expect("parse");
        let ch = schemas::channel::by_obis(&Channel::Voltage.obis()).expect("channel");
        assert_eq!(ch.to_stored(back.values[0].1.as_f64()), Some(2300));
    }
}
