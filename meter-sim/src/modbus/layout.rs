//! Where a simulated Modbus meter lives: meter `i` of a fleet behind `G` gateways is on gateway `i mod G`
//! (TCP port `P + i mod G` on 127.0.0.1) with unit id `i / G + 1` (1..=247), so a gateway serves at most
//! 247 meters and the layout does not depend on the fleet's size. Its register map is `i mod M` of the
//! `M` maps given.

/// Gateways of `meter-sim modbus` by default, and of the addresses `meter-sim inventory --protocol modbus`
/// writes (100 gateways hold 24,700 meters).
pub const DEFAULT_GATEWAYS: usize = 100;

/// Highest Modbus unit id of a device behind a gateway.
pub const MAX_UNIT: u8 = 247;

/// `(gateway, unit)` of meter `index`, or `None` when the gateways cannot hold it (unit > 247).
pub fn placement(index: usize, gateways: usize) -> Option<(usize, u8)> {
    if gateways == 0 {
        return None;
    }
    let unit = index / gateways + 1;
    u8::try_from(unit).ok().filter(|u| *u <= MAX_UNIT).map(|u| (index % gateways, u))
}

/// The meter at `(gateway, unit)` in a fleet of `meters` behind `gateways` gateways.
pub fn meter_at(gateway: usize, unit: u8, gateways: usize, meters: usize) -> Option<usize> {
    if gateway >= gateways || unit == 0 || unit > MAX_UNIT {
        return None;
    }
    let index = (usize::from(unit) - 1) * gateways + gateway;
    (index < meters).then_some(index)
}

/// The head-end's `meters.address` of meter `index`: `127.0.0.1:{port + gateway}/{unit}`.
pub fn address(index: usize, gateways: usize, port: u16) -> Option<String> {
    let (g, unit) = placement(index, gateways)?;
    let port = port.checked_add(u16::try_from(g).ok()?)?;
    Some(format!("127.0.0.1:{port}/{unit}"))
}

/// Which of `maps` register maps meter `index` uses.
pub const fn map_index(index: usize, maps: usize) -> usize {
    if maps == 0 {
        0
    } else {
        index % maps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_round_trips() {
        for gateways in [1, 3, 100] {
            for i in 0..(247 * gateways) {
                let (g, u) = placement(i, gateways).expect("fits");
                assert!((1..=MAX_UNIT).contains(&u));
                assert_eq!(meter_at(g, u, gateways, 247 * gateways), Some(i));
            }
            assert_eq!(placement(247 * gateways, gateways), None);
        }
        assert_eq!(address(0, 100, 5020).as_deref(), Some("127.0.0.1:5020/1"));
        assert_eq!(address(250, 100, 5020).as_deref(), Some("127.0.0.1:5070/3"));
        assert_eq!(meter_at(0, 3, 100, 150), None, "beyond the fleet");
        assert_eq!(meter_at(0, 2, 100, 150), Some(100));
    }
}
