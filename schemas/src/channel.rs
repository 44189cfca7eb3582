//! The channel catalogue: which OBIS codes the head-end stores, in which unit and with which scaler.
//!
//! Stored values are integers: `physical value = value × 10^scaler` in `unit`. Energy is kept in exact
//! Wh (scaler 0); instantaneous quantities carry a negative scaler (voltage in 0.1 V). `headend migrate`
//! upserts this table into `channels`, so this list is the single source of truth.

use crate::obis::ObisCode;

/// Cumulative registers only grow (energy); instantaneous values are samples (voltage, power).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Cumulative,
    Instantaneous,
}

impl ChannelKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Cumulative => "cumulative",
            ChannelKind::Instantaneous => "instantaneous",
        }
    }
}

/// One channel of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelDef {
    /// Primary key in `channels`; stored in every reading row as `channel_id`.
    pub id: i16,
    pub obis: ObisCode,
    pub name: &'static str,
    /// Unit of the physical value (DLMS unit names).
    pub unit: &'static str,
    /// Decimal exponent of the stored integer.
    pub scaler: i8,
    pub kind: ChannelKind,
}

impl ChannelDef {
    /// Converts a physical value to the stored integer. Cumulative channels must land on an exact integer
    /// (a meter reports whole Wh); instantaneous ones are rounded to the channel's resolution.
    pub fn to_stored(&self, physical: f64) -> Option<i64> {
        if !physical.is_finite() {
            return None;
        }
        let scaled = physical / 10f64.powi(i32::from(self.scaler));
        let rounded = scaled.round();
        if self.kind == ChannelKind::Cumulative && (scaled - rounded).abs() > 1e-6 {
            return None;
        }
        // i64 range with margin: f64 beyond 2^53 is no longer exact.
        if rounded.abs() > 9_007_199_254_740_992.0 {
            return None;
        }
        Some(rounded as i64)
    }

    /// The physical value of a stored integer.
    /// Divides for negative scalers, so the result is the double nearest the decimal (2297 with
    /// scaler -1 is exactly the double printed as 229.7).
    pub fn to_physical(&self, stored: i64) -> f64 {
        let v = stored as f64;
        if self.scaler < 0 {
            v / 10f64.powi(-i32::from(self.scaler))
        } else {
            v * 10f64.powi(i32::from(self.scaler))
        }
    }
}

const fn ch(
    id: i16,
    obis: [u8; 6],
    name: &'static str,
    unit: &'static str,
    scaler: i8,
    kind: ChannelKind,
) -> ChannelDef {
    ChannelDef { id, obis: ObisCode(obis), name, unit, scaler, kind }
}

use ChannelKind::{Cumulative as C, Instantaneous as I};

/// Every channel the head-end knows. Ids are stable: never renumber, only append.
pub const CHANNELS: &[ChannelDef] = &[
    ch(1, [1, 0, 1, 8, 0, 255], "active energy import, total", "Wh", 0, C),
    ch(2, [1, 0, 1, 8, 1, 255], "active energy import, tariff 1 (VT, day)", "Wh", 0, C),
    ch(3, [1, 0, 1, 8, 2, 255], "active energy import, tariff 2 (NT, night)", "Wh", 0, C),
    ch(4, [1, 0, 2, 8, 0, 255], "active energy export, total", "Wh", 0, C),
    ch(5, [1, 0, 32, 7, 0, 255], "voltage L1", "V", -1, I),
    ch(6, [1, 0, 52, 7, 0, 255], "voltage L2", "V", -1, I),
    ch(7, [1, 0, 72, 7, 0, 255], "voltage L3", "V", -1, I),
    ch(8, [1, 0, 31, 7, 0, 255], "current L1", "A", -3, I),
    ch(9, [1, 0, 51, 7, 0, 255], "current L2", "A", -3, I),
    ch(10, [1, 0, 71, 7, 0, 255], "current L3", "A", -3, I),
    ch(11, [1, 0, 1, 7, 0, 255], "active power import", "W", 0, I),
    ch(12, [1, 0, 2, 7, 0, 255], "active power export", "W", 0, I),
    ch(13, [1, 0, 3, 8, 0, 255], "reactive energy import, total", "varh", 0, C),
    ch(14, [1, 0, 4, 8, 0, 255], "reactive energy export, total", "varh", 0, C),
    ch(15, [1, 0, 13, 7, 0, 255], "power factor", "", -3, I),
    ch(16, [1, 0, 14, 7, 0, 255], "supply frequency", "Hz", -2, I),
];

/// Looks a channel up by OBIS code.
pub fn by_obis(obis: &ObisCode) -> Option<&'static ChannelDef> {
    CHANNELS.iter().find(|c| c.obis == *obis)
}

/// Looks a channel up by id.
pub fn by_id(id: i16) -> Option<&'static ChannelDef> {
    CHANNELS.iter().find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_codes_are_unique() {
        for (i, a) in CHANNELS.iter().enumerate() {
            for b in &CHANNELS[i + 1..] {
                assert_ne!(a.id, b.id);
                assert_ne!(a.obis, b.obis);
            }
        }
    }

    #[test]
    fn conversion_respects_kind() {
        let wh = by_id(1).expect("import");
        assert_eq!(wh.to_stored(1234.0), Some(1234));
        assert_eq!(wh.to_stored(1234.5), None, "energy must be whole Wh");
        assert_eq!(wh.to_stored(f64::NAN), None);
        let volt = by_id(5).expect("voltage");
        assert_eq!(volt.to_stored(230.14), Some(2301));
        assert_eq!(volt.to_stored(229.96), Some(2300));
        assert_eq!(volt.to_physical(2301).to_string(), "230.1");
        assert_eq!(wh.to_stored(1e300), None);
    }
}
