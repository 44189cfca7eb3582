//! OBIS codes: six value groups `A-B:C.D.E*F`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An OBIS code. Parsed from `1.0.1.8.0`, `1.0.1.8.0.255`, `1-0:1.8.0` or `1-0:1.8.0*255`; the
/// F group defaults to 255 when absent. Displayed as six dot-separated groups (`1.0.1.8.0.255`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObisCode(pub [u8; 6]);

/// Why a text is not an OBIS code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid OBIS code {0:?}: expected A.B.C.D.E[.F] or A-B:C.D.E[*F] with groups 0..=255")]
pub struct ObisParseError(pub String);

impl ObisCode {
    pub const fn new(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8) -> Self {
        Self([a, b, c, d, e, f])
    }

    /// The six groups as bytes, as they travel in a DLMS attribute descriptor.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }
}

impl FromStr for ObisCode {
    type Err = ObisParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ObisParseError(s.chars().take(40).collect());
        if s.is_empty() || s.len() > 23 {
            return Err(err());
        }
        let mut groups = [0u8; 6];
        let mut n = 0usize;
        for part in s.split(['.', '-', ':', '*']) {
            if n == 6 || part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            groups[n] = part.parse::<u8>().map_err(|_| err())?;
            n += 1;
        }
        match n {
            5 => groups[5] = 255,
            6 => {}
            _ => return Err(err()),
        }
        Ok(Self(groups))
    }
}

impl fmt::Display for ObisCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a}.{b}.{c}.{d}.{e}.{g}")
    }
}

impl Serialize for ObisCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObisCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Option<&str>) {
        let got = input.parse::<ObisCode>().ok().map(|o| o.to_string());
        assert_eq!(got.as_deref(), expect, "input {input:?}");
    }

    #[test]
    fn parses_the_usual_notations() {
        check("1.0.1.8.0", Some("1.0.1.8.0.255"));
        check("1.0.1.8.0.255", Some("1.0.1.8.0.255"));
        check("1-0:1.8.0", Some("1.0.1.8.0.255"));
        check("1-0:1.8.0*255", Some("1.0.1.8.0.255"));
        check("0.0.96.1.0.255", Some("0.0.96.1.0.255"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in
            ["", "1.0.1.8", "1.0.1.8.0.255.1", "1..1.8.0", "256.0.1.8.0", "a.b.c.d.e", "1.0.1.8.0.", "+1.0.1.8.0"]
        {
            check(bad, None);
        }
    }
}
