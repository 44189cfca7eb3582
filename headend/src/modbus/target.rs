//! Meter addresses of Modbus meters: `host:port/unit` (e.g. `127.0.0.1:5020/7`), optionally followed by
//! `/map` naming the register map (the file stem in `config/modbus/`, e.g. `10.1.2.3:502/3/eastron-sdm630`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use schemas::modbus_map::RegisterMap;

/// A parsed `meters.address` of a Modbus meter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetAddress {
    /// `host:port` of the gateway (or of the meter itself): the connection pool's key.
    pub gateway: String,
    /// Unit id (slave address) behind the gateway, 1..=247 (0 is broadcast, 248..=255 reserved; 255 is
    /// accepted too, as many TCP-native meters answer it).
    pub unit: u8,
    /// The register map's name, when the address names one.
    pub map: Option<String>,
}

/// Why an address is not `host:port/unit[/map]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("modbus address {address:?}: {reason} (expected host:port/unit[/map], e.g. 127.0.0.1:5020/7)")]
pub struct TargetError {
    pub address: String,
    pub reason: String,
}

impl FromStr for TargetAddress {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, TargetError> {
        let fail = |reason: &str| TargetError { address: s.to_string(), reason: reason.to_string() };
        let mut parts = s.trim().split('/');
        let gateway = parts.next().unwrap_or_default();
        let unit = parts.next().ok_or_else(|| fail("no /unit"))?;
        let map = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return Err(fail("too many '/'"));
        }
        let (host, port) = gateway.rsplit_once(':').ok_or_else(|| fail("no :port"))?;
        let host_ok = !host.is_empty()
            && (host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                || (host.starts_with('[') && host.ends_with(']')));
        if !host_ok {
            return Err(fail("bad host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(fail("port must be 1..=65535")),
        }
        let unit: u8 = unit.parse().map_err(|_| fail("unit must be a number 1..=247 or 255"))?;
        if unit == 0 || (248..255).contains(&unit) {
            return Err(fail("unit must be 1..=247 or 255"));
        }
        if let Some(m) = &map {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return Err(fail("bad map name"));
            }
        }
        Ok(TargetAddress { gateway: gateway.to_string(), unit, map })
    }
}

impl fmt::Display for TargetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.gateway, self.unit)?;
        if let Some(m) = &self.map {
            write!(f, "/{m}")?;
        }
        Ok(())
    }
}

/// One meter to read: where, and with which register map.
#[derive(Debug, Clone)]
pub struct ModbusTarget {
    pub gateway: String,
    pub unit: u8,
    pub map: Arc<RegisterMap>,
}

impl ModbusTarget {
    pub fn new(address: &TargetAddress, map: Arc<RegisterMap>) -> Self {
        ModbusTarget { gateway: address.gateway.clone(), unit: address.unit, map }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_clear_errors() {
        let a: TargetAddress = "127.0.0.1:5020/7".parse().expect("valid");
        assert_eq!((a.gateway.as_str(), a.unit, a.map), ("127.0.0.1:5020", 7, None));
        let b: TargetAddress = "gw-3.example:502/247/eastron-sdm630".parse().expect("valid");
        assert_eq!(b.map.as_deref(), Some("eastron-sdm630"));
        assert_eq!(b.to_string(), "gw-3.example:502/247/eastron-sdm630");
        for (bad, why) in [
            ("127.0.0.1:5020", "no /unit"),
            ("127.0.0.1/7", "no :port"),
            ("127.0.0.1:0/7", "port"),
            ("127.0.0.1:5020/0", "unit"),
            ("127.0.0.1:5020/300", "unit"),
            ("127.0.0.1:5020/250", "unit"),
            ("127.0.0.1:5020/1/a/b", "too many"),
            (":5020/1", "bad host"),
            ("host:5020/1/", "bad map"),
        ] {
            let e = bad.parse::<TargetAddress>().expect_err(bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }
}
