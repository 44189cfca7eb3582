//! Modbus register maps: which registers of a meter model hold which channel, and how to convert them.
//!
//! Shared by the head-end (decodes what it reads) and the simulator (encodes what it serves), so both
//! read the SAME map files (`config/modbus/*.toml`). This module holds the types, the validation and the
//! exact conversions; parsing TOML text is left to the callers ([`MapFile`] derives `Deserialize`), so
//! this crate needs no TOML dependency.
//!
//! # File format (TOML)
//! ```toml
//! model = "Eastron SDM630"
//! manual = "SDM630 Modbus protocol"        # the vendor document the addresses come from
//! manual_version = "V2 (2017)"
//! word_order = "big"                        # default for 32/64-bit entries: "big" (ABCD) or "little" (CDAB)
//! max_gap = 0                               # unused registers a coalesced read may span (default 0)
//!
//! [[register]]
//! name = "import_total"                     # unique in the file
//! function = "input"                        # "input" (0x04) or "holding" (0x03)
//! address = 0x0048                          # 0-based PROTOCOL address (what goes in the frame)
//! type = "f32"                              # u16 i16 u32 i32 u64 i64 f32 f64
//! word_order = "big"                        # optional, overrides the file's default
//! scale = "1"                               # optional exact decimal multiplier ("0.01", "1e-3"); default 1
//! unit = "kWh"                              # unit of raw × scale: the channel's unit or k/M/m of it
//! obis = "1.0.1.8.0.255"                    # target channel in schemas::channel::CHANNELS
//! ```
//! `physical value in unit = raw × scale`; the stored integer is that value converted to the channel's
//! unit and scaler. Integer registers convert exactly (i128 arithmetic); when the register's resolution is
//! finer than the channel's, instantaneous channels round half away from zero and cumulative (energy)
//! channels are rejected at load time, because a stored Wh must be exact. Float registers are correctly
//! rounded (half to even) from the exact binary value of the float.
//!
//! Bytes within a register are always big-endian (Modbus). `word_order = "big"` puts the most significant
//! register first (ABCD), `"little"` the least significant first (CDAB, "word swap").

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;

use crate::channel::{by_obis, ChannelDef, ChannelKind};
use crate::obis::ObisCode;

/// At most this many registers in one read request (Modbus: 125 for functions 0x03 and 0x04).
pub const MAX_REGISTERS_PER_READ: u16 = 125;

/// The register map file as written (before validation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapFile {
    pub model: String,
    pub manual: String,
    pub manual_version: String,
    #[serde(default)]
    pub word_order: WordOrder,
    #[serde(default)]
    pub max_gap: u16,
    /// Free text: how the manual's register numbers map to protocol addresses.
    #[serde(default)]
    pub addressing: Option<String>,
    #[serde(rename = "register")]
    pub registers: Vec<EntryFile>,
}

/// One `[[register]]` of a map file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryFile {
    pub name: String,
    pub function: Function,
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    #[serde(default)]
    pub word_order: Option<WordOrder>,
    #[serde(default)]
    pub scale: Option<String>,
    pub unit: String,
    pub obis: String,
}

/// Read function of a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// 0x03 read holding registers.
    Holding,
    /// 0x04 read input registers.
    Input,
}

impl Function {
    pub const fn code(self) -> u8 {
        match self {
            Function::Holding => 0x03,
            Function::Input => 0x04,
        }
    }
}

/// Order of the 16-bit registers of a 32/64-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// Most significant register first (ABCD).
    #[default]
    Big,
    /// Least significant register first (CDAB, word swap).
    Little,
}

/// Encoding of a value in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DataType {
    /// Number of 16-bit registers.
    pub const fn words(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    pub const fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }
}

/// A validated entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub function: Function,
    pub address: u16,
    pub data_type: DataType,
    pub word_order: WordOrder,
    /// `raw × factor` is the stored integer (before rounding): `factor = mantissa × 10^exponent`,
    /// including the scale, the unit prefix and the channel's scaler.
    pub factor: Decimal,
    pub unit: String,
    pub channel: &'static ChannelDef,
}

/// A validated register map.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterMap {
    /// Where the map came from (file path), for messages.
    pub source: String,
    pub model: String,
    pub manual: String,
    pub manual_version: String,
    pub max_gap: u16,
    pub entries: Vec<Entry>,
}

/// A positive exact decimal `mantissa × 10^exponent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub mantissa: u64,
    pub exponent: i32,
}

impl Decimal {
    /// Parses `123`, `0.001`, `2.5`, `1e-3`, `1.5E2` (positive, non-zero).
    pub fn parse(s: &str) -> Option<Decimal> {
        let s = s.trim();
        let (num, exp) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
            None => (s, 0),
        };
        let (int, frac) = match num.split_once('.') {
            Some((a, b)) => (a, b),
            None => (num, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() || digits.len() > 18 {
            return None;
        }
        let mantissa: u64 = digits.parse().ok()?;
        let exponent = exp.checked_sub(i32::try_from(frac.len()).ok()?)?;
        Some(Decimal { mantissa, exponent }.normalised())
    }

    fn normalised(mut self) -> Decimal {
        while self.mantissa != 0 && self.mantissa.is_multiple_of(10) {
            self.mantissa /= 10;
            self.exponent += 1;
        }
        self
    }

    fn times_pow10(self, e: i32) -> Decimal {
        Decimal { mantissa: self.mantissa, exponent: self.exponent + e }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}e{}", self.mantissa, self.exponent)
    }
}

/// Why a map file is not usable: the file, the entry (if any) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MapError {
    pub file: String,
    pub entry: Option<String>,
    pub message: String,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entry {
            Some(e) => write!(f, "register map {}: entry {e:?}: {}", self.file, self.message),
            None => write!(f, "register map {}: {}", self.file, self.message),
        }
    }
}

impl MapError {
    pub fn new(file: &str, entry: Option<&str>, message: impl Into<String>) -> Self {
        MapError { file: file.to_string(), entry: entry.map(str::to_string), message: message.into() }
    }
}

/// Why a register value cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("expected {expected} registers, got {got}")]
    Length { expected: usize, got: usize },
    #[error("not a finite number")]
    NotFinite,
    #[error("out of the stored integer's range")]
    OutOfRange,
}

/// Unit prefixes accepted in front of a channel's unit.
fn unit_prefix(unit: &str, channel_unit: &str) -> Option<i32> {
    if unit == channel_unit {
        return Some(0);
    }
    if channel_unit.is_empty() {
        return None;
    }
    let prefix = unit.strip_suffix(channel_unit)?;
    match prefix {
        "k" => Some(3),
        "M" => Some(6),
        "m" => Some(-3),
        _ => None,
    }
}

impl RegisterMap {
    /// Validates a parsed file; `source` names it in errors.
    pub fn from_file(source: &str, file: MapFile) -> Result<RegisterMap, MapError> {
        let err = |entry: Option<&str>, m: String| MapError::new(source, entry, m);
        if file.model.trim().is_empty() {
            return Err(err(None, "`model` is empty".into()));
        }
        if file.manual.trim().is_empty() || file.manual_version.trim().is_empty() {
            return Err(err(None, "`manual` and `manual_version` must name the vendor document".into()));
        }
        if file.registers.is_empty() {
            return Err(err(None, "no [[register]] entry".into()));
        }
        let mut names = HashSet::new();
        let mut channels = HashSet::new();
        let mut entries: Vec<Entry> = Vec::with_capacity(file.registers.len());
        for e in file.registers {
            let name = e.name.as_str();
            if name.trim().is_empty() {
                return Err(err(None, "an entry has an empty name".into()));
            }
            if !names.insert(e.name.clone()) {
                return Err(err(Some(name), "name used twice".into()));
            }
            let words = e.data_type.words();
            if u32::from(e.address) + u32::from(words) > 0x1_0000 {
                return Err(err(Some(name), format!("address {} + {words} registers passes 65535", e.address)));
            }
            let obis: ObisCode = e.obis.parse().map_err(|x| err(Some(name), format!("obis {:?}: {x}", e.obis)))?;
            let channel = by_obis(&obis)
                .ok_or_else(|| err(Some(name), format!("obis {} is not a channel of the catalogue", e.obis)))?;
            if !channels.insert(channel.id) {
                return Err(err(Some(name), format!("channel {} is mapped twice", e.obis)));
            }
            let prefix = unit_prefix(&e.unit, channel.unit).ok_or_else(|| {
                err(
                    Some(name),
                    format!(
                        "unit {:?} does not match channel {} ({:?}; allowed: {:?} or k/M/m of it)",
                        e.unit, e.obis, channel.unit, channel.unit
                    ),
                )
            })?;
            let scale = match &e.scale {
                None => Decimal { mantissa: 1, exponent: 0 },
                Some(s) => Decimal::parse(s).ok_or_else(|| {
                    err(Some(name), format!("scale {s:?} is not a positive exact decimal (e.g. \"0.01\", \"1e-3\")"))
                })?,
            };
            let factor = scale.times_pow10(prefix - i32::from(channel.scaler));
            if !(-40..=40).contains(&factor.exponent) {
                return Err(err(Some(name), format!("scale {factor} is out of range")));
            }
            if channel.kind == ChannelKind::Cumulative && !e.data_type.is_float() && factor.exponent < 0 {
                return Err(err(
                    Some(name),
                    format!(
                        "an integer register with resolution {factor} of the stored unit cannot be stored exactly in \
                         cumulative channel {} ({}{})",
                        e.obis,
                        channel.unit,
                        if channel.scaler == 0 { String::new() } else { format!(" ×10^{}", channel.scaler) }
                    ),
                ));
            }
            let entry = Entry {
                name: e.name.clone(),
                function: e.function,
                address: e.address,
                data_type: e.data_type,
                word_order: e.word_order.unwrap_or(file.word_order),
                factor,
                unit: e.unit.clone(),
                channel,
            };
            for other in &entries {
                if other.function == entry.function && overlaps(other, &entry) {
                    return Err(err(
                        Some(name),
                        format!(
                            "registers {}..{} overlap entry {:?} ({}..{})",
                            entry.address,
                            u32::from(entry.address) + u32::from(words),
                            other.name,
                            other.address,
                            u32::from(other.address) + u32::from(other.data_type.words())
                        ),
                    ));
                }
            }
            entries.push(entry);
        }
        if file.max_gap > MAX_REGISTERS_PER_READ {
            return Err(err(None, format!("max_gap {} exceeds {MAX_REGISTERS_PER_READ}", file.max_gap)));
        }
        Ok(RegisterMap {
            source: source.to_string(),
            model: file.model,
            manual: file.manual,
            manual_version: file.manual_version,
            max_gap: file.max_gap,
            entries,
        })
    }

    /// The read requests covering every entry: entries of one function sorted by address, merged while
    /// the gap is at most `max_gap` and the request stays within [`MAX_REGISTERS_PER_READ`].
    pub fn plan(&self) -> Vec<Block> {
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        order.sort_by_key(|&i| (self.entries[i].function, self.entries[i].address));
        let mut blocks: Vec<Block> = Vec::new();
        for i in order {
            let e = &self.entries[i];
            let end = u32::from(e.address) + u32::from(e.data_type.words());
            if let Some(b) = blocks.last_mut() {
                let b_end = u32::from(b.start) + u32::from(b.count);
                if b.function == e.function
                    && u32::from(e.address) <= b_end + u32::from(self.max_gap)
                    && end - u32::from(b.start) <= u32::from(MAX_REGISTERS_PER_READ)
                {
                    b.count = (end - u32::from(b.start)) as u16;
                    b.entries.push(i);
                    continue;
                }
            }
            blocks.push(Block { function: e.function, start: e.address, count: e.data_type.words(), entries: vec![i] });
        }
        blocks
    }

    /// Decodes one block's registers into `(entry index, stored value or why not)`.
    pub fn decode_block(&self, block: &Block, words: &[u16]) -> Vec<(usize, Result<i64, ValueError>)> {
        block
            .entries
            .iter()
            .map(|&i| {
                let e = &self.entries[i];
                let off = usize::from(e.address - block.start);
                let n = usize::from(e.data_type.words());
                let r = match words.get(off..off + n) {
                    Some(w) => e.decode(w),
                    None => Err(ValueError::Length { expected: usize::from(block.count), got: words.len() }),
                };
                (i, r)
            })
            .collect()
    }

    /// The entry of a channel, if mapped.
    pub fn entry_for(&self, channel_id: i16) -> Option<&Entry> {
        self.entries.iter().find(|e| e.channel.id == channel_id)
    }
}

fn overlaps(a: &Entry, b: &Entry) -> bool {
    let (a0, a1) = (u32::from(a.address), u32::from(a.address) + u32::from(a.data_type.words()));
    let (b0, b1) = (u32::from(b.address), u32::from(b.address) + u32::from(b.data_type.words()));
    a0 < b1 && b0 < a1
}

/// One read request: `count` registers from `start`, covering `entries` (indices into the map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub function: Function,
    pub start: u16,
    pub count: u16,
    pub entries: Vec<usize>,
}

fn pow10(e: u32) -> Option<u128> {
    10u128.checked_pow(e)
}

/// Rounds `num / den` (den > 0) half away from zero.
fn div_round_away(num: i128, den: i128) -> i128 {
    let q = num / den;
    let r = num % den;
    if 2 * r.unsigned_abs() >= den.unsigned_abs() {
        q + num.signum()
    } else {
        q
    }
}

/// Rounds `num / den` half to even, for non-negative `num` and positive `den`; `None` when `den` overflows.
fn div_round_even(num: u128, den: u128) -> u128 {
    let q = num / den;
    let r = num % den;
    let twice = r.checked_mul(2);
    match twice {
        Some(t) if t < den => q,
        Some(t) if t == den => q + (q & 1),
        _ => q + 1,
    }
}

impl Entry {
    /// Assembles the registers into the raw bits, most significant word first.
    fn bits(&self, words: &[u16]) -> u64 {
        let mut ordered: [u16; 4] = [0; 4];
        let n = words.len().min(4);
        for (k, w) in words.iter().take(n).enumerate() {
            let pos = match self.word_order {
                WordOrder::Big => k,
                WordOrder::Little => n - 1 - k,
            };
            ordered[pos] = *w;
        }
        ordered[..n].iter().fold(0u64, |acc, w| (acc << 16) | u64::from(*w))
    }

    /// The registers of raw bits (inverse of [`Entry::bits`]).
    fn words_of(&self, bits: u64) -> Vec<u16> {
        let n = usize::from(self.data_type.words());
        let mut big: Vec<u16> = (0..n).map(|k| (bits >> (16 * (n - 1 - k))) as u16).collect();
        if self.word_order == WordOrder::Little {
            big.reverse();
        }
        big
    }

    /// Decodes this entry's registers (exactly `data_type.words()` of them) to the stored integer.
    pub fn decode(&self, words: &[u16]) -> Result<i64, ValueError> {
        let n = usize::from(self.data_type.words());
        if words.len() != n {
            return Err(ValueError::Length { expected: n, got: words.len() });
        }
        let bits = self.bits(words);
        match self.data_type {
            DataType::U16 | DataType::U32 | DataType::U64 => self.stored_of_int(i128::from(bits)),
            DataType::I16 => self.stored_of_int(i128::from(bits as u16 as i16)),
            DataType::I32 => self.stored_of_int(i128::from(bits as u32 as i32)),
            DataType::I64 => self.stored_of_int(i128::from(bits as i64)),
            DataType::F32 => self.stored_of_float(f64::from(f32::from_bits(bits as u32))),
            DataType::F64 => self.stored_of_float(f64::from_bits(bits)),
        }
    }

    fn stored_of_int(&self, raw: i128) -> Result<i64, ValueError> {
        let m = i128::from(self.factor.mantissa);
        let e = self.factor.exponent;
        let v = if e >= 0 {
            let p = pow10(e.unsigned_abs()).and_then(|p| i128::try_from(p).ok()).ok_or(ValueError::OutOfRange)?;
            raw.checked_mul(m).and_then(|x| x.checked_mul(p)).ok_or(ValueError::OutOfRange)?
        } else {
            let scaled = raw.checked_mul(m).ok_or(ValueError::OutOfRange)?;
            match pow10(e.unsigned_abs()).and_then(|p| i128::try_from(p).ok()) {
                Some(p) => div_round_away(scaled, p),
                None => 0,
            }
        };
        i64::try_from(v).map_err(|_| ValueError::OutOfRange)
    }

    /// Correctly rounded (half to even) `x × factor`, from the exact binary value of `x`.
    fn stored_of_float(&self, x: f64) -> Result<i64, ValueError> {
        if !x.is_finite() {
            return Err(ValueError::NotFinite);
        }
        if x == 0.0 {
            return Ok(0);
        }
        let bits = x.to_bits();
        let negative = bits >> 63 == 1;
        let exp_bits = ((bits >> 52) & 0x7ff) as i32;
        let frac = bits & ((1u64 << 52) - 1);
        // x = m × 2^e exactly.
        let (m, e) = if exp_bits == 0 { (frac, -1074) } else { (frac | (1u64 << 52), exp_bits - 1075) };
        let mut num = u128::from(m).checked_mul(u128::from(self.factor.mantissa)).ok_or(ValueError::OutOfRange)?;
        let mut den: u128 = 1;
        let fe = self.factor.exponent;
        if fe >= 0 {
            num = pow10(fe.unsigned_abs()).and_then(|p| num.checked_mul(p)).ok_or(ValueError::OutOfRange)?;
        } else {
            den = pow10(fe.unsigned_abs()).ok_or(ValueError::OutOfRange)?;
        }
        if e >= 0 {
            let e = e.unsigned_abs();
            if e >= 128 || num.leading_zeros() < e {
                return Err(ValueError::OutOfRange);
            }
            num <<= e;
        } else {
            let s = e.unsigned_abs();
            match den.checked_mul(1u128.checked_shl(s).unwrap_or(0)).filter(|d| *d != 0) {
                Some(d) => den = d,
                // |x × factor| < 2^-(s - 128 + …): far below one half.
                None => return Ok(0),
            }
        }
        let q = div_round_even(num, den);
        let q = i128::try_from(q).map_err(|_| ValueError::OutOfRange)?;
        let v = if negative { -q } else { q };
        i64::try_from(v).map_err(|_| ValueError::OutOfRange)
    }

    /// Encodes a stored integer into this entry's registers, as a meter would hold it (rounded to the
    /// register's resolution; saturated to the type's range). Used by the simulator and tests.
    pub fn encode(&self, stored: i64) -> Vec<u16> {
        let m = i128::from(self.factor.mantissa);
        let e = self.factor.exponent;
        let bits: u64 = if self.data_type.is_float() {
            // raw = stored / factor, one correctly rounded f64 operation when the operands are exact.
            let x = if e >= 0 {
                stored as f64 / (self.factor.mantissa as f64 * 10f64.powi(e))
            } else {
                stored as f64 * 10f64.powi(-e) / self.factor.mantissa as f64
            };
            match self.data_type {
                DataType::F32 => u64::from((x as f32).to_bits()),
                _ => x.to_bits(),
            }
        } else {
            let raw: i128 = if e >= 0 {
                let p = pow10(e.unsigned_abs()).and_then(|p| i128::try_from(p).ok()).unwrap_or(i128::MAX);
                div_round_away(i128::from(stored), m.saturating_mul(p))
            } else {
                let p = pow10(e.unsigned_abs()).and_then(|p| i128::try_from(p).ok()).unwrap_or(i128::MAX);
                div_round_away(i128::from(stored).saturating_mul(p), m)
            };
            let (lo, hi): (i128, i128) = match self.data_type {
                DataType::U16 => (0, i128::from(u16::MAX)),
                DataType::I16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
                DataType::U32 => (0, i128::from(u32::MAX)),
                DataType::I32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
                DataType::U64 => (0, i128::from(u64::MAX)),
                _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
            };
            let raw = raw.clamp(lo, hi);
            match self.data_type {
                DataType::U64 => raw as u64,
                DataType::U16 | DataType::U32 => raw as u64,
                DataType::I16 => u64::from(raw as i16 as u16),
                DataType::I32 => u64::from(raw as i32 as u32),
                _ => raw as i64 as u64,
            }
        };
        self.words_of(bits)
    }

    /// What a reader of this register gets for a meter whose true value is `stored`:
    /// `decode(encode(stored))` (equal to `stored` unless the register's resolution or a float's
    /// precision is coarser).
    pub fn quantise(&self, stored: i64) -> Result<i64, ValueError> {
        self.decode(&self.encode(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(t: DataType, order: WordOrder, scale: &str, unit: &str, obis: &str) -> Result<Entry, MapError> {
        let file = MapFile {
            model: "m".into(),
            manual: "doc".into(),
            manual_version: "1".into(),
            word_order: order,
            max_gap: 0,
            addressing: None,
            registers: vec![EntryFile {
                name: "x".into(),
                function: Function::Holding,
                address: 10,
                data_type: t,
                word_order: None,
                scale: Some(scale.into()),
                unit: unit.into(),
                obis: obis.into(),
            }],
        };
        RegisterMap::from_file("t.toml", file).map(|m| m.entries[0].clone())
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(Decimal::parse("0.001"), Some(Decimal { mantissa: 1, exponent: -3 }));
        assert_eq!(Decimal::parse("1000"), Some(Decimal { mantissa: 1, exponent: 3 }));
        assert_eq!(Decimal::parse("2.50"), Some(Decimal { mantissa: 25, exponent: -1 }));
        assert_eq!(Decimal::parse("1e-3"), Some(Decimal { mantissa: 1, exponent: -3 }));
        for bad in ["", "0", "-1", "1.2.3", "abc", ".", "1e"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn integers_convert_exactly_both_word_orders() {
        let wh = entry(DataType::I64, WordOrder::Big, "1", "Wh", "1.0.1.8.0.255").expect("valid");
        let words = [0x0000, 0x0001, 0x0002, 0x0003];
        assert_eq!(wh.decode(&words), Ok(0x0001_0002_0003));
        let little = entry(DataType::U32, WordOrder::Little, "1", "kWh", "1.0.1.8.0.255").expect("valid");
        assert_eq!(little.decode(&[0x5678, 0x1234]), Ok(0x1234_5678 * 1000));
        assert_eq!(little.encode(0x1234_5678 * 1000), vec![0x5678, 0x1234]);
        let volt = entry(DataType::U16, WordOrder::Big, "0.01", "V", "1.0.32.7.0.255").expect("valid");
        assert_eq!(volt.decode(&[23015]), Ok(2302), "230.15 V rounds half away to 230.2 V");
        let amps = entry(DataType::I16, WordOrder::Big, "1", "mA", "1.0.31.7.0.255").expect("valid");
        assert_eq!(amps.decode(&[0xFFFF]), Ok(-1));
        let e = entry(DataType::U32, WordOrder::Big, "0.1", "Wh", "1.0.1.8.0.255");
        assert!(e.expect_err("inexact").message.contains("cannot be stored exactly"));
    }

    #[test]
    fn floats_round_correctly() {
        let kwh = entry(DataType::F32, WordOrder::Big, "1", "kWh", "1.0.1.8.0.255").expect("valid");
        // 1234.567 kWh as f32 is 1234.5670166015625 → 1234567.0166 Wh → 1234567.
        let w = kwh.encode(1_234_567);
        assert_eq!(kwh.decode(&w), Ok(1_234_567));
        // Exactly half: 0.0005 kWh is not representable, use 2^-11 kWh = 0.48828125 Wh → 0.
        let half = entry(DataType::F64, WordOrder::Big, "1", "Wh", "1.0.1.8.0.255").expect("valid");
        let bits = 2.5f64.to_bits();
        let words: Vec<u16> = (0..4).map(|k| (bits >> (48 - 16 * k)) as u16).collect();
        assert_eq!(half.decode(&words), Ok(2), "2.5 rounds half to even");
        let nan = f32::NAN.to_bits();
        assert_eq!(kwh.decode(&[(nan >> 16) as u16, nan as u16]), Err(ValueError::NotFinite));
        let big = f32::MAX.to_bits();
        assert_eq!(kwh.decode(&[(big >> 16) as u16, big as u16]), Err(ValueError::OutOfRange));
        let tiny = f32::from_bits(1).to_bits();
        assert_eq!(kwh.decode(&[(tiny >> 16) as u16, tiny as u16]), Ok(0));
    }

    #[test]
    fn validation_names_file_entry_and_problem() {
        let e = entry(DataType::F32, WordOrder::Big, "1", "kW", "1.0.32.7.0.255").expect_err("unit");
        assert_eq!(e.file, "t.toml");
        assert_eq!(e.entry.as_deref(), Some("x"));
        assert!(e.to_string().contains("unit \"kW\""), "{e}");
        let e = entry(DataType::F32, WordOrder::Big, "1", "V", "1.0.99.7.0.255").expect_err("obis");
        assert!(e.message.contains("not a channel"), "{e}");
        let e = entry(DataType::F32, WordOrder::Big, "-1", "V", "1.0.32.7.0.255").expect_err("scale");
        assert!(e.message.contains("scale"), "{e}");
    }
}
