//! The inventory CSV: one row per meter, with its household and building repeated on each row.
//!
//! Written by `meter-sim inventory`, read by `headend inventory import`. Header row required; columns
//! may come in any order; empty cells are absent values.
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `building` | yes | building code, unique |
//! | `address`, `municipality` | yes | the building's address and municipality |
//! | `region` | yes | `belgrade`, `novi_sad` or `central` (selects the night-tariff window) |
//! | `household` | household meters | household code, unique; empty for a master meter |
//! | `apartment` | household meters | flat number within the building |
//! | `floor_area_m2` | household meters | decimal, > 0 |
//! | `residents` | household meters | integer, ≥ 0 |
//! | `approved_power_kw` | household meters | decimal, > 0 |
//! | `tariff` | household meters | tariff code, e.g. `eps-household-2025` |
//! | `meter` | yes | meter serial, unique |
//! | `meter_kind` | yes | `household` or `master` |
//! | `protocol` | yes | `mqtt`, `dlms` or `modbus` |
//! | `meter_address` | no | protocol address: `host:port` (DLMS, Modbus `host:port/unit`) |
//! | `feeder`, `transformer` | no | grid topology |
//! | `installed_on` | yes | date, `YYYY-MM-DD` |
//! | `removed_on` | no | date, `YYYY-MM-DD` |

use serde::{Deserialize, Serialize};

/// Region of a building; each has its own night (NT) window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    Belgrade,
    NoviSad,
    Central,
}

impl Region {
    pub const ALL: [Region; 3] = [Region::Belgrade, Region::NoviSad, Region::Central];

    pub const fn as_str(self) -> &'static str {
        match self {
            Region::Belgrade => "belgrade",
            Region::NoviSad => "novi_sad",
            Region::Central => "central",
        }
    }

    /// The night (NT, lower tariff) window as local hours `[start, end)`, wrapping midnight.
    pub const fn night_window(self) -> (u32, u32) {
        match self {
            Region::Belgrade => (0, 8),
            Region::NoviSad => (23, 7),
            Region::Central => (22, 6),
        }
    }

    /// Whether a local hour of day falls in the night window.
    pub const fn is_night_hour(self, hour: u32) -> bool {
        let (start, end) = self.night_window();
        if start < end {
            hour >= start && hour < end
        } else {
            hour >= start || hour < end
        }
    }
}

/// A household meter or a building's master meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterKind {
    Household,
    Master,
}

/// How the head-end reaches a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Mqtt,
    Dlms,
    Modbus,
}

/// One row of the inventory CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryRow {
    pub building: String,
    pub address: String,
    pub municipality: String,
    pub region: Region,
    #[serde(default)]
    pub household: Option<String>,
    #[serde(default)]
    pub apartment: Option<String>,
    /// Decimal text (e.g. `54.30`); kept as text so no float touches the inventory.
    #[serde(default)]
    pub floor_area_m2: Option<String>,
    #[serde(default)]
    pub residents: Option<i16>,
    /// Decimal text (e.g. `11.04`).
    #[serde(default)]
    pub approved_power_kw: Option<String>,
    #[serde(default)]
    pub tariff: Option<String>,
    pub meter: String,
    pub meter_kind: MeterKind,
    pub protocol: Protocol,
    #[serde(default)]
    pub meter_address: Option<String>,
    #[serde(default)]
    pub feeder: Option<String>,
    #[serde(default)]
    pub transformer: Option<String>,
    pub installed_on: chrono::NaiveDate,
    #[serde(default)]
    pub removed_on: Option<chrono::NaiveDate>,
}

/// The header of the CSV, in the order `meter-sim inventory` writes it.
pub const HEADER: [&str; 18] = [
    "building",
    "address",
    "municipality",
    "region",
    "household",
    "apartment",
    "floor_area_m2",
    "residents",
    "approved_power_kw",
    "tariff",
    "meter",
    "meter_kind",
    "protocol",
    "meter_address",
    "feeder",
    "transformer",
    "installed_on",
    "removed_on",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn night_windows_wrap_midnight() {
        assert!(Region::Belgrade.is_night_hour(0) && Region::Belgrade.is_night_hour(7));
        assert!(!Region::Belgrade.is_night_hour(8) && !Region::Belgrade.is_night_hour(23));
        assert!(Region::NoviSad.is_night_hour(23) && Region::NoviSad.is_night_hour(6));
        assert!(!Region::NoviSad.is_night_hour(7) && !Region::NoviSad.is_night_hour(22));
        assert!(Region::Central.is_night_hour(22) && Region::Central.is_night_hour(5));
        assert!(!Region::Central.is_night_hour(6) && !Region::Central.is_night_hour(21));
        for r in Region::ALL {
            assert_eq!((0..24).filter(|h| r.is_night_hour(*h)).count(), 8);
        }
    }
}
