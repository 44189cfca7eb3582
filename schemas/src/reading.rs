//! The stored reading and its flags.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A meter's serial number: 1 to 32 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MeterSerial(String);

/// Why a text is not a meter serial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid meter serial: expected 1-32 characters of A-Z a-z 0-9 . _ -")]
pub struct SerialError;

impl MeterSerial {
    pub fn new(s: impl Into<String>) -> Result<Self, SerialError> {
        let s = s.into();
        if Self::is_valid(&s) {
            Ok(Self(s))
        } else {
            Err(SerialError)
        }
    }

    pub fn is_valid(s: &str) -> bool {
        (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MeterSerial {
    type Error = SerialError;
    fn try_from(s: String) -> Result<Self, SerialError> {
        Self::new(s)
    }
}

impl From<MeterSerial> for String {
    fn from(s: MeterSerial) -> String {
        s.0
    }
}

impl fmt::Display for MeterSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quality flags of one reading (the low byte of `readings.flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quality(pub u8);

impl Quality {
    /// The meter's clock was invalid when the value was captured.
    pub const CLOCK_INVALID: Quality = Quality(0x01);
    /// The meter's clock was doubtful (e.g. after a power failure).
    pub const CLOCK_DOUBTFUL: Quality = Quality(0x02);
    /// A power outage happened in the interval.
    pub const POWER_OUTAGE: Quality = Quality(0x04);
    /// The meter reported a device error for the interval.
    pub const DEVICE_ERROR: Quality = Quality(0x08);
    /// The value is an estimate (VEE), not a measurement.
    pub const ESTIMATED: Quality = Quality(0x10);
    /// The value was interpolated between measurements (VEE).
    pub const INTERPOLATED: Quality = Quality(0x20);
    /// The value was edited by an operator.
    pub const EDITED: Quality = Quality(0x40);

    /// Names used in the MQTT payload's `status` array, in bit order.
    pub const NAMES: [(&'static str, Quality); 4] = [
        ("clock_invalid", Self::CLOCK_INVALID),
        ("clock_doubtful", Self::CLOCK_DOUBTFUL),
        ("power_outage", Self::POWER_OUTAGE),
        ("device_error", Self::DEVICE_ERROR),
    ];

    pub fn from_name(name: &str) -> Option<Quality> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, q)| *q)
    }

    pub const fn contains(self, other: Quality) -> bool {
        self.0 & other.0 == other.0
    }

    #[must_use]
    pub const fn with(self, other: Quality) -> Quality {
        Quality(self.0 | other.0)
    }

    /// The names of the set flags that the payload can carry.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES.iter().filter(|(_, q)| self.contains(*q)).map(|(n, _)| *n).collect()
    }
}

/// Where a reading came from (the high byte of `readings.flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Source {
    Mqtt = 1,
    Dlms = 2,
    Modbus = 3,
    Estimate = 4,
    Manual = 5,
}

impl Source {
    pub fn from_u8(v: u8) -> Option<Source> {
        Some(match v {
            1 => Source::Mqtt,
            2 => Source::Dlms,
            3 => Source::Modbus,
            4 => Source::Estimate,
            5 => Source::Manual,
            _ => return None,
        })
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Dlms => "dlms",
            Source::Modbus => "modbus",
            Source::Estimate => "estimate",
            Source::Manual => "manual",
        }
    }
}

/// Packs quality and source into the `smallint` stored in `readings.flags`.
pub const fn pack_flags(quality: Quality, source: Source) -> i16 {
    (((source as u16) << 8) | quality.0 as u16) as i16
}

/// Splits `readings.flags` into quality and source.
pub fn unpack_flags(flags: i16) -> (Quality, Option<Source>) {
    let f = flags as u16;
    (Quality((f & 0xff) as u8), Source::from_u8((f >> 8) as u8))
}

/// One stored value: row of the `readings` table, in the column order of the binary COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Interval end (registers: capture time), UTC.
    pub ts: DateTime<Utc>,
    /// Integer value in the channel's unit and scaler.
    pub value: i64,
    pub meter_id: i32,
    pub channel_id: i16,
    /// [`pack_flags`] of quality and source.
    pub flags: i16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip() {
        let q = Quality::POWER_OUTAGE.with(Quality::CLOCK_DOUBTFUL);
        let packed = pack_flags(q, Source::Modbus);
        assert_eq!(unpack_flags(packed), (q, Some(Source::Modbus)));
        assert_eq!(q.names(), vec!["clock_doubtful", "power_outage"]);
    }

    #[test]
    fn serials() {
        assert!(MeterSerial::new("SIM00000001").is_ok());
        assert!(MeterSerial::new("").is_err());
        assert!(MeterSerial::new("a b").is_err());
        assert!(MeterSerial::new("x".repeat(33)).is_err());
    }
}
