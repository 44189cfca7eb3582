//! Per-meter security material, deterministic from `(seed, meter index)`.
//!
//! * system title: `"SIM"` followed by `index + 1` as a 5-byte big-endian number (seed-independent, so
//!   the title names the meter like the serial does);
//! * global unicast encryption key `ek` and authentication key `ak` (AES-128): two 64-bit words each,
//!   `hash(seed, TAG, index, 1)` ‖ `hash(seed, TAG, index, 2)` big-endian, with TAG = `EK` / `AK` below
//!   and `hash` the simulator's seeded splitmix64 word hash;
//! * LLS password: 8 ASCII characters from `[0-9A-Z]` (minus `O`/`I`), from `hash(seed, PW, index)`.
//!
//! `meter-sim keys` prints them as CSV (`serial,system_title,ek,ak,password`, all hex).

use std::io::Write;

use crate::fleet;
use crate::hash;

const EK: u64 = 0xD1_0001;
const AK: u64 = 0xD1_0002;
const PW: u64 = 0xD1_0003;
const PASSWORD_ALPHABET: &[u8; 34] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// The security material of one meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterKeys {
    /// The meter's (server's) system title.
    pub system_title: [u8; 8],
    /// Global unicast encryption key.
    pub ek: [u8; 16],
    /// Authentication key.
    pub ak: [u8; 16],
    /// LLS password (ASCII).
    pub password: [u8; 8],
}

fn key(seed: u64, tag: u64, index: usize) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&hash::hash(&[seed, tag, index as u64, 1]).to_be_bytes());
    k[8..].copy_from_slice(&hash::hash(&[seed, tag, index as u64, 2]).to_be_bytes());
    k
}

/// The system title of meter `index`: `SIM` + (index + 1) in 5 bytes.
pub fn system_title(index: usize) -> [u8; 8] {
    let n = (index as u64 + 1).to_be_bytes();
    [b'S', b'I', b'M', n[3], n[4], n[5], n[6], n[7]]
}

/// The keys of meter `index` under `seed`.
pub fn meter_keys(seed: u64, index: usize) -> MeterKeys {
    let mut h = hash::hash(&[seed, PW, index as u64]);
    let mut password = [0u8; 8];
    for b in &mut password {
        *b = PASSWORD_ALPHABET[(h % PASSWORD_ALPHABET.len() as u64) as usize];
        h /= PASSWORD_ALPHABET.len() as u64;
    }
    MeterKeys { system_title: system_title(index), ek: key(seed, EK, index), ak: key(seed, AK, index), password }
}

/// Writes the key CSV of meters `0..meters`: header `serial,system_title,ek,ak,password`, hex values.
///
/// # Errors
/// When writing fails.
pub fn write_csv(mut out: impl Write, seed: u64, meters: usize) -> std::io::Result<()> {
    writeln!(out, "serial,system_title,ek,ak,password")?;
    for i in 0..meters {
        let k = meter_keys(seed, i);
        writeln!(
            out,
            "{},{},{},{},{}",
            fleet::serial(i),
            hex::encode(k.system_title),
            hex::encode(k.ek),
            hex::encode(k.ak),
            hex::encode(k.password)
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_distinct() {
        let a = meter_keys(7, 0);
        assert_eq!(a, meter_keys(7, 0));
        assert_ne!(a.ek, meter_keys(7, 1).ek);
        assert_ne!(a.ek, meter_keys(8, 0).ek);
        assert_ne!(a.ek, a.ak);
        assert_eq!(&a.system_title, b"SIM\0\0\0\0\x01");
        assert!(a.password.iter().all(u8::is_ascii_alphanumeric));
        let mut csv = Vec::new();
        write_csv(&mut csv, 7, 2).expect("csv");
        let text = String::from_utf8(csv).expect("utf8");
        assert!(text.starts_with("serial,system_title,ek,ak,password\nSIM00000001,53494d0000000001,"));
        assert_eq!(text.lines().count(), 3);
    }
}
