//! The inventory CSV of a simulated fleet (contract: `schemas::inventory`).
//!
//! One row per meter, in meter order: each building's master meter (household columns empty,
//! `meter_kind` = `master`) followed by its flats. `meter_address` depends on the protocol: empty for
//! MQTT, `127.x.y.z:4059` for DLMS, where `127.x.y.z` is [`loopback_address`] of the meter index (one
//! loopback address per simulated meter), and `127.0.0.1:{5020 + gateway}/{unit}/{map}` for Modbus: the layout
//! of `meter-sim modbus` with its default 100 gateways ([`crate::modbus::layout`]; 24,700 meters at most,
//! later ones get no address).
//!
//! When `N` cuts the last building, only its flats with an index below `N` get a row: the others are
//! flats without a smart meter yet, still measured by the building's master meter.

use std::io::Write;

use schemas::inventory::{InventoryRow, MeterKind, Protocol, HEADER};

use crate::fleet::{self, Building, Fleet};

pub use crate::fleet::loopback_address;

/// TCP port of a simulated DLMS/COSEM meter (IANA `dlms-cosem`).
pub const DLMS_PORT: u16 = 4059;
/// TCP port of a simulated Modbus meter (502 needs privileges; 5020 is the usual unprivileged choice).
pub const MODBUS_PORT: u16 = 5020;
/// Modbus unit id of a meter on its own address (the simulator uses [`crate::modbus::layout`] instead).
pub const MODBUS_UNIT: u8 = 1;

/// Why the inventory could not be written.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("writing the inventory CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing the inventory CSV: {0}")]
    Io(#[from] std::io::Error),
}

/// The protocol address of meter `index`, if the protocol has one.
pub fn meter_address(index: usize, protocol: Protocol) -> Option<String> {
    match protocol {
        Protocol::Mqtt => None,
        Protocol::Dlms => Some(format!("{}:{DLMS_PORT}", loopback_address(index))),
        Protocol::Modbus => {
            // The map is named in the address (`host:port/unit/map`): the head-end reads each meter
            // with the map `meter-sim modbus` serves it with by default (i mod M of the shipped maps).
            let maps = crate::modbus::default_map_names();
            let addr = crate::modbus::layout::address(index, crate::modbus::layout::DEFAULT_GATEWAYS, MODBUS_PORT)?;
            match maps.get(crate::modbus::layout::map_index(index, maps.len())) {
                Some(name) => Some(format!("{addr}/{name}")),
                None => Some(addr),
            }
        }
    }
}

fn building_row(b: &Building, meter: usize, kind: MeterKind, protocol: Protocol) -> InventoryRow {
    InventoryRow {
        building: b.code(),
        address: b.address(),
        municipality: b.municipality.to_string(),
        region: b.region,
        household: None,
        apartment: None,
        floor_area_m2: None,
        residents: None,
        approved_power_kw: None,
        tariff: None,
        meter: fleet::serial(meter),
        meter_kind: kind,
        protocol,
        meter_address: meter_address(meter, protocol),
        feeder: Some(b.feeder()),
        transformer: Some(b.transformer()),
        installed_on: b.installed_on,
        removed_on: None,
    }
}

/// The rows of the first `meters` meters, in meter order.
pub fn rows(fleet: &Fleet, meters: usize, protocol: Protocol) -> impl Iterator<Item = InventoryRow> + '_ {
    fleet.buildings(meters).flat_map(move |b| {
        let last = b.meters().end.min(meters);
        let master = building_row(&b, b.master_meter(), MeterKind::Master, protocol);
        let flats: Vec<InventoryRow> = (1..=b.flats)
            .map(|a| fleet.flat(&b, a))
            .filter(|f| f.meter < last)
            .map(|f| InventoryRow {
                household: Some(f.household_code()),
                apartment: Some(f.apartment.to_string()),
                floor_area_m2: Some(f.floor_area_text()),
                residents: Some(i16::from(f.residents)),
                approved_power_kw: Some(f.approved_power_kw.to_string()),
                tariff: Some(f.tariff.to_string()),
                installed_on: f.installed_on,
                ..building_row(&b, f.meter, MeterKind::Household, protocol)
            })
            .collect();
        std::iter::once(master).chain(flats)
    })
}

/// Writes the inventory CSV (header [`HEADER`], then one row per meter); returns the number of rows.
pub fn write_csv(out: impl Write, fleet: &Fleet, meters: usize, protocol: Protocol) -> Result<usize, InventoryError> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(out);
    w.write_record(HEADER)?;
    let mut n = 0;
    for row in rows(fleet, meters, protocol) {
        w.serialize(&row)?;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(csv_bytes: &[u8]) -> Vec<InventoryRow> {
        let mut r = csv::Reader::from_reader(csv_bytes);
        let header: Vec<String> = r.headers().expect("header").iter().map(str::to_string).collect();
        assert_eq!(header, HEADER);
        r.deserialize().collect::<Result<Vec<InventoryRow>, _>>().expect("rows parse")
    }

    #[test]
    fn csv_parses_back_and_matches_the_fleet() {
        let fleet = Fleet::new(12);
        let meters = 500;
        let mut buf = Vec::new();
        assert_eq!(write_csv(&mut buf, &fleet, meters, Protocol::Mqtt).expect("write"), meters);
        let rows = parse(&buf);
        assert_eq!(rows.len(), meters);
        let mut households = std::collections::HashSet::new();
        for (i, row) in rows.iter().enumerate() {
            let info = fleet.meter(i).expect("meter");
            assert_eq!(row.meter, fleet::serial(i));
            assert_eq!(row.building, info.building.code());
            assert_eq!(row.region, info.building.region);
            assert_eq!(row.address, info.building.address());
            assert!(row.meter_address.is_none());
            match &info.flat {
                None => {
                    assert_eq!(row.meter_kind, MeterKind::Master);
                    assert!(row.household.is_none() && row.apartment.is_none() && row.tariff.is_none());
                    assert!(row.floor_area_m2.is_none() && row.residents.is_none() && row.approved_power_kw.is_none());
                }
                Some(f) => {
                    assert_eq!(row.meter_kind, MeterKind::Household);
                    assert_eq!(row.household.as_deref(), Some(format!("H{:08}", i + 1).as_str()));
                    assert_eq!(row.apartment, Some(f.apartment.to_string()));
                    assert_eq!(row.residents, Some(i16::from(f.residents)));
                    assert_eq!(row.tariff.as_deref(), Some("eps-household-2025"));
                    assert!(households.insert(row.household.clone()));
                    let area = row.floor_area_m2.as_deref().unwrap_or_default();
                    let v: f64 = area.parse().expect("decimal area");
                    assert!((25.0..120.0).contains(&v), "{area}");
                    assert!(["5.75", "6.90", "11.04"].contains(&row.approved_power_kw.as_deref().unwrap_or_default()));
                }
            }
            let y = chrono::Datelike::year(&row.installed_on);
            assert!((2024..=2025).contains(&y));
        }
        // A fleet of 500 cuts a building: its master is present, its later flats are not.
        let last = fleet.buildings(meters).last().expect("building");
        assert!(last.meters().end > meters);
    }

    #[test]
    fn dlms_and_modbus_rows_carry_loopback_addresses() {
        let fleet = Fleet::new(1);
        let mut buf = Vec::new();
        write_csv(&mut buf, &fleet, 300, Protocol::Dlms).expect("write");
        let rows = parse(&buf);
        assert_eq!(rows[0].meter_address.as_deref(), Some("127.0.0.2:4059"));
        assert_eq!(rows[254].meter_address.as_deref(), Some("127.0.1.0:4059"));
        assert!(rows.iter().all(|r| r.protocol == Protocol::Dlms));
        assert_eq!(meter_address(0, Protocol::Modbus).as_deref(), Some("127.0.0.1:5020/1/eastron-sdm630"));
        assert_eq!(meter_address(250, Protocol::Modbus).as_deref(), Some("127.0.0.1:5070/3/eastron-sdm630"));
        assert_eq!(meter_address(1, Protocol::Modbus).as_deref(), Some("127.0.0.1:5021/1/schneider-iem3255"));
    }
}
