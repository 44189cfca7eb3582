//! Owned COSEM values, converted from the engine's borrowed `Data`.

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::{json, Value as Json};

use dlms_cosem_rs::axdr::{Data, DataBuf};

use crate::error::{Error, Result};

/// Deviation value meaning "not specified".
pub const DEVIATION_UNSPECIFIED: i16 = i16::MIN; // 0x8000

/// A COSEM date-time (12 bytes), with its wildcards kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CosemDateTime {
    /// Year, 0xFFFF unspecified.
    pub year: u16,
    /// Month 1–12, 0xFF unspecified (0xFD/0xFE DST markers).
    pub month: u8,
    /// Day of month, 0xFF unspecified.
    pub day: u8,
    /// Day of week 1 = Monday, 0xFF unspecified.
    pub weekday: u8,
    /// Hour, 0xFF unspecified.
    pub hour: u8,
    /// Minute, 0xFF unspecified.
    pub minute: u8,
    /// Second, 0xFF unspecified.
    pub second: u8,
    /// Hundredths, 0xFF unspecified.
    pub hundredths: u8,
    /// Deviation in minutes, **minus** the UTC offset (UTC+2 → -120);
    /// [`DEVIATION_UNSPECIFIED`] (0x8000) when absent.
    pub deviation: i16,
    /// Clock status bits (0x01 invalid, 0x02 doubtful, 0x04 different base,
    /// 0x08 invalid status, 0x80 DST active); 0xFF unspecified.
    pub status: u8,
}

impl CosemDateTime {
    /// Parse the 12-byte encoding.
    #[must_use]
    pub fn from_bytes(b: [u8; 12]) -> Self {
        let [y0, y1, month, day, weekday, hour, minute, second, hundredths, d0, d1, status] = b;
        Self {
            year: u16::from_be_bytes([y0, y1]),
            month,
            day,
            weekday,
            hour,
            minute,
            second,
            hundredths,
            deviation: i16::from_be_bytes([d0, d1]),
            status,
        }
    }

    /// Parse from a slice that must be exactly 12 bytes.
    #[must_use]
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let a: [u8; 12] = b.try_into().ok()?;
        Some(Self::from_bytes(a))
    }

    /// The 12-byte encoding.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 12] {
        let y = self.year.to_be_bytes();
        let d = self.deviation.to_be_bytes();
        [
            y[0],
            y[1],
            self.month,
            self.day,
            self.weekday,
            self.hour,
            self.minute,
            self.second,
            self.hundredths,
            d[0],
            d[1],
            self.status,
        ]
    }

    /// A fully specified date-time from a UTC instant, written with deviation 0 and
    /// status 0 (what range selectors and clock writes use).
    #[must_use]
    pub fn from_utc(t: chrono::DateTime<Utc>) -> Self {
        use chrono::{Datelike, Timelike};
        Self {
            year: u16::try_from(t.year()).unwrap_or(0xFFFF),
            month: u8::try_from(t.month()).unwrap_or(0xFF),
            day: u8::try_from(t.day()).unwrap_or(0xFF),
            weekday: u8::try_from(t.weekday().number_from_monday()).unwrap_or(0xFF),
            hour: u8::try_from(t.hour()).unwrap_or(0xFF),
            minute: u8::try_from(t.minute()).unwrap_or(0xFF),
            second: u8::try_from(t.second()).unwrap_or(0xFF),
            hundredths: 0,
            deviation: 0,
            status: 0,
        }
    }

    /// The deviation, `None` when unspecified (0x8000).
    #[must_use]
    pub fn deviation_minutes(&self) -> Option<i16> {
        (self.deviation != DEVIATION_UNSPECIFIED).then_some(self.deviation)
    }

    /// Plausible as a date-time: month/day/hour/minute/second in range or wildcard.
    #[must_use]
    pub fn is_plausible(&self) -> bool {
        let ok = |v: u8, lo: u8, hi: u8| v == 0xFF || (lo..=hi).contains(&v);
        (ok(self.month, 1, 12) || matches!(self.month, 0xFD | 0xFE))
            && (ok(self.day, 1, 31) || matches!(self.day, 0xFD | 0xFE))
            && ok(self.weekday, 1, 7)
            && ok(self.hour, 0, 23)
            && ok(self.minute, 0, 59)
            && ok(self.second, 0, 59)
            && ok(self.hundredths, 0, 99)
            && (self.deviation == DEVIATION_UNSPECIFIED || (-840..=840).contains(&self.deviation))
    }

    /// The instant in UTC. The civil fields are local time; when the deviation is given
    /// UTC = local + deviation (deviation is minus the UTC offset), otherwise the local
    /// time is interpreted in `default_zone`. `None` when any of year, month, day, hour,
    /// minute, second is a wildcard or the date does not exist.
    #[must_use]
    pub fn as_datetime_utc<Tz: TimeZone>(&self, default_zone: &Tz) -> Option<chrono::DateTime<Utc>> {
        if self.year == 0xFFFF || self.month > 12 || self.day > 31 || self.hour > 23 || self.minute > 59 {
            return None;
        }
        if self.second > 59 {
            return None;
        }
        let hundredths = if self.hundredths > 99 { 0 } else { u32::from(self.hundredths) };
        let naive = NaiveDate::from_ymd_opt(i32::from(self.year), u32::from(self.month), u32::from(self.day))?
            .and_hms_milli_opt(u32::from(self.hour), u32::from(self.minute), u32::from(self.second), hundredths * 10)?;
        match self.deviation_minutes() {
            Some(dev) => {
                let utc = naive.checked_add_signed(chrono::Duration::minutes(i64::from(dev)))?;
                Some(Utc.from_utc_datetime(&utc))
            }
            None => default_zone.from_local_datetime(&naive).earliest().map(|t| t.with_timezone(&Utc)),
        }
    }

    /// JSON form: the fields, plus `utc` (RFC 3339) when the deviation is specified.
    #[must_use]
    pub fn to_json(&self) -> Json {
        let mut v = json!({
            "year": if self.year == 0xFFFF { Json::Null } else { json!(self.year) },
            "month": self.month,
            "day": self.day,
            "weekday": self.weekday,
            "hour": self.hour,
            "minute": self.minute,
            "second": self.second,
            "hundredths": self.hundredths,
            "deviation": self.deviation_minutes(),
            "status": self.status,
        });
        if self.deviation_minutes().is_some() {
            if let Some(t) = self.as_datetime_utc(&Utc) {
                if let Some(o) = v.as_object_mut() {
                    o.insert("utc".into(), json!(t.to_rfc3339()));
                }
            }
        }
        v
    }
}

/// An owned COSEM value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// null-data
    Null,
    /// boolean
    Bool(bool),
    /// integer (i8)
    I8(i8),
    /// long (i16)
    I16(i16),
    /// double-long (i32)
    I32(i32),
    /// long64
    I64(i64),
    /// unsigned (u8)
    U8(u8),
    /// long-unsigned (u16)
    U16(u16),
    /// double-long-unsigned (u32)
    U32(u32),
    /// long64-unsigned
    U64(u64),
    /// enum
    Enum(u8),
    /// bcd
    Bcd(i8),
    /// float32
    F32(f32),
    /// float64
    F64(f64),
    /// octet-string
    OctetString(Vec<u8>),
    /// visible-string (kept as bytes; meters put non-ASCII in it)
    VisibleString(Vec<u8>),
    /// utf8-string
    Utf8String(String),
    /// bit-string: `bits` bits, MSB first.
    BitString {
        /// Number of bits.
        bits: usize,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// date-time, either the 0x19 tag or an octet-string of 12 recognised by context.
    DateTime(CosemDateTime),
    /// date (5 bytes)
    Date([u8; 5]),
    /// time (4 bytes)
    Time([u8; 4]),
    /// array
    Array(Vec<Value>),
    /// structure
    Structure(Vec<Value>),
    /// don't-care
    DontCare,
}

impl Value {
    /// Decode one A-XDR value; trailing bytes are an error.
    ///
    /// # Errors
    /// When the bytes are not one complete value.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let d = Data::from_bytes_in(bytes)?;
        Self::from_data(&d)
    }

    /// Convert from the engine's borrowed value.
    ///
    /// # Errors
    /// When a nested element is malformed.
    pub fn from_data(d: &Data<'_>) -> Result<Self> {
        Ok(match *d {
            Data::Null => Self::Null,
            Data::DontCare => Self::DontCare,
            Data::Array(s) => Self::Array(
                s.iter().map(|e| e.map_err(Error::from).and_then(|e| Self::from_data(&e))).collect::<Result<_>>()?,
            ),
            Data::Structure(s) => Self::Structure(
                s.iter().map(|e| e.map_err(Error::from).and_then(|e| Self::from_data(&e))).collect::<Result<_>>()?,
            ),
            Data::Boolean(b) => Self::Bool(b),
            Data::BitString(b) => Self::BitString { bits: b.len(), bytes: b.as_bytes().to_vec() },
            Data::DoubleLong(v) | Data::DeltaDoubleLong(v) => Self::I32(v),
            Data::DoubleLongUnsigned(v) | Data::DeltaDoubleLongUnsigned(v) => Self::U32(v),
            Data::OctetString(b) => Self::OctetString(b.to_vec()),
            Data::VisibleString(b) => Self::VisibleString(b.to_vec()),
            Data::Utf8String(b) => Self::Utf8String(String::from_utf8_lossy(b).into_owned()),
            Data::Bcd(v) => Self::Bcd(v),
            Data::Integer(v) | Data::DeltaInteger(v) => Self::I8(v),
            Data::Long(v) | Data::DeltaLong(v) => Self::I16(v),
            Data::Unsigned(v) | Data::DeltaUnsigned(v) => Self::U8(v),
            Data::LongUnsigned(v) | Data::DeltaLongUnsigned(v) => Self::U16(v),
            Data::CompactArray(c) => {
                let rows = c.to_rows()?;
                Self::Array(rows.iter().map(Self::from_buf).collect())
            }
            Data::Long64(v) => Self::I64(v),
            Data::Long64Unsigned(v) => Self::U64(v),
            Data::Enum(v) => Self::Enum(v),
            Data::Float32(v) => Self::F32(v),
            Data::Float64(v) => Self::F64(v),
            Data::DateTime(dt) => Self::DateTime(CosemDateTime::from_bytes(dt.to_bytes())),
            Data::Date(x) => Self::Date(x.to_bytes()),
            Data::Time(x) => Self::Time(x.to_bytes()),
        })
    }

    fn from_buf(d: &DataBuf) -> Self {
        match d {
            DataBuf::Null => Self::Null,
            DataBuf::DontCare => Self::DontCare,
            DataBuf::Array(v) => Self::Array(v.iter().map(Self::from_buf).collect()),
            DataBuf::Structure(v) => Self::Structure(v.iter().map(Self::from_buf).collect()),
            DataBuf::Boolean(b) => Self::Bool(*b),
            DataBuf::BitString { bits, bytes } => Self::BitString { bits: *bits, bytes: bytes.clone() },
            DataBuf::DoubleLong(v) | DataBuf::DeltaDoubleLong(v) => Self::I32(*v),
            DataBuf::DoubleLongUnsigned(v) | DataBuf::DeltaDoubleLongUnsigned(v) => Self::U32(*v),
            DataBuf::OctetString(b) => Self::OctetString(b.clone()),
            DataBuf::VisibleString(b) => Self::VisibleString(b.clone()),
            DataBuf::Utf8String(b) => Self::Utf8String(String::from_utf8_lossy(b).into_owned()),
            DataBuf::Bcd(v) => Self::Bcd(*v),
            DataBuf::Integer(v) | DataBuf::DeltaInteger(v) => Self::I8(*v),
            DataBuf::Long(v) | DataBuf::DeltaLong(v) => Self::I16(*v),
            DataBuf::Unsigned(v) | DataBuf::DeltaUnsigned(v) => Self::U8(*v),
            DataBuf::LongUnsigned(v) | DataBuf::DeltaLongUnsigned(v) => Self::U16(*v),
            DataBuf::Long64(v) => Self::I64(*v),
            DataBuf::Long64Unsigned(v) => Self::U64(*v),
            DataBuf::Enum(v) => Self::Enum(*v),
            DataBuf::Float32(v) => Self::F32(*v),
            DataBuf::Float64(v) => Self::F64(*v),
            DataBuf::DateTime(dt) => Self::DateTime(CosemDateTime::from_bytes(dt.to_bytes())),
            DataBuf::Date(x) => Self::Date(x.to_bytes()),
            DataBuf::Time(x) => Self::Time(x.to_bytes()),
        }
    }

    /// Encode as A-XDR. A [`Value::DateTime`] is written as `09 0C` + 12 bytes, the
    /// form meters expect for clock writes and range selectors.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Null => out.push(0),
            Self::DontCare => out.push(0xFF),
            Self::Array(v) | Self::Structure(v) => {
                out.push(if matches!(self, Self::Array(_)) { 1 } else { 2 });
                push_len(out, v.len());
                for e in v {
                    e.encode_into(out);
                }
            }
            Self::Bool(b) => out.extend_from_slice(&[3, u8::from(*b)]),
            Self::BitString { bits, bytes } => {
                out.push(4);
                push_len(out, *bits);
                out.extend_from_slice(bytes);
            }
            Self::I32(v) => {
                out.push(5);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Self::U32(v) => {
                out.push(6);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Self::OctetString(b) | Self::VisibleString(b) => {
                out.push(if matches!(self, Self::OctetString(_)) { 9 } else { 0x0A });
                push_len(out, b.len());
                out.extend_from_slice(b);
            }
            Self::Utf8String(s) => {
                out.push(0x0C);
                push_len(out, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Self::Bcd(v) => out.extend_from_slice(&[0x0D, v.to_be_bytes()[0]]),
            Self::I8(v) => out.extend_from_slice(&[0x0F, v.to_be_bytes()[0]]),
            Self::I16(v) => {
                out.push(0x10);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Self::U8(v) => out.extend_from_slice(&[0x11, *v]),
            Self::U16(v) => {
                out.push(0x12);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Self::I64(v) => {
                out.push(0x14);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Self::U64(v) => {
                out.push(0x15);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Self::Enum(v) => out.extend_from_slice(&[0x16, *v]),
            Self::F32(v) => {
                out.push(0x17);
                out.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            Self::F64(v) => {
                out.push(0x18);
                out.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            Self::DateTime(dt) => {
                out.extend_from_slice(&[0x09, 0x0C]);
                out.extend_from_slice(&dt.to_bytes());
            }
            Self::Date(d) => {
                out.push(0x1A);
                out.extend_from_slice(d);
            }
            Self::Time(t) => {
                out.push(0x1B);
                out.extend_from_slice(t);
            }
        }
    }

    /// The integer value of any integer or enum type.
    #[must_use]
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Self::I8(v) => i64::from(v),
            Self::I16(v) => i64::from(v),
            Self::I32(v) => i64::from(v),
            Self::I64(v) => v,
            Self::U8(v) | Self::Enum(v) => i64::from(v),
            Self::U16(v) => i64::from(v),
            Self::U32(v) => i64::from(v),
            Self::U64(v) => i64::try_from(v).ok()?,
            _ => return None,
        })
    }

    fn as_i128(&self) -> Option<i128> {
        match *self {
            Self::U64(v) => Some(i128::from(v)),
            _ => self.as_i64().map(i128::from),
        }
    }

    /// The date-time, from a [`Value::DateTime`] or a 12-byte octet-string.
    #[must_use]
    pub fn as_datetime(&self) -> Option<CosemDateTime> {
        match self {
            Self::DateTime(dt) => Some(*dt),
            Self::OctetString(b) => CosemDateTime::from_slice(b),
            _ => None,
        }
    }

    /// The instant in UTC; see [`CosemDateTime::as_datetime_utc`].
    #[must_use]
    pub fn as_datetime_utc<Tz: TimeZone>(&self, default_zone: &Tz) -> Option<chrono::DateTime<Utc>> {
        self.as_datetime()?.as_datetime_utc(default_zone)
    }

    /// Bytes of an octet/visible/utf8 string.
    #[must_use]
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::OctetString(b) | Self::VisibleString(b) => Some(b),
            Self::Utf8String(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// Elements of an array or structure.
    #[must_use]
    pub fn as_slice(&self) -> Option<&[Value]> {
        match self {
            Self::Array(v) | Self::Structure(v) => Some(v),
            _ => None,
        }
    }

    /// The A-XDR type name.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null-data",
            Self::Bool(_) => "boolean",
            Self::I8(_) => "integer",
            Self::I16(_) => "long",
            Self::I32(_) => "double-long",
            Self::I64(_) => "long64",
            Self::U8(_) => "unsigned",
            Self::U16(_) => "long-unsigned",
            Self::U32(_) => "double-long-unsigned",
            Self::U64(_) => "long64-unsigned",
            Self::Enum(_) => "enum",
            Self::Bcd(_) => "bcd",
            Self::F32(_) => "float32",
            Self::F64(_) => "float64",
            Self::OctetString(_) => "octet-string",
            Self::VisibleString(_) => "visible-string",
            Self::Utf8String(_) => "utf8-string",
            Self::BitString { .. } => "bit-string",
            Self::DateTime(_) => "date-time",
            Self::Date(_) => "date",
            Self::Time(_) => "time",
            Self::Array(_) => "array",
            Self::Structure(_) => "structure",
            Self::DontCare => "dont-care",
        }
    }

    /// JSON: `{"type": <A-XDR type>, "value": …}`. Octet strings are hex; a 12-byte
    /// octet string that is a plausible date-time also carries `datetime`, and a 6-byte
    /// one carries `obis`. Floats that are not finite become `null`.
    #[must_use]
    pub fn to_json(&self) -> Json {
        let t = self.type_name();
        let value = match self {
            Self::Null | Self::DontCare => Json::Null,
            Self::Bool(b) => json!(b),
            Self::F32(v) => serde_json::Number::from_f64(f64::from(*v)).map_or(Json::Null, Json::Number),
            Self::F64(v) => serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number),
            Self::U64(v) => json!(v),
            Self::OctetString(b) => {
                let mut o = json!({"type": t, "value": hex::encode(b)});
                if let Some(obj) = o.as_object_mut() {
                    if let Some(dt) = CosemDateTime::from_slice(b).filter(CosemDateTime::is_plausible) {
                        obj.insert("datetime".into(), dt.to_json());
                    }
                    if let [a, bb, c, d, e, f] = b.as_slice() {
                        obj.insert("obis".into(), json!(format!("{a}.{bb}.{c}.{d}.{e}.{f}")));
                    }
                }
                return o;
            }
            Self::VisibleString(b) => json!(String::from_utf8_lossy(b)),
            Self::Utf8String(s) => json!(s),
            Self::BitString { bits, bytes } => {
                let s: String = (0..*bits)
                    .map(|i| {
                        let byte = bytes.get(i / 8).copied().unwrap_or(0);
                        if byte & (0x80 >> (i % 8)) != 0 {
                            '1'
                        } else {
                            '0'
                        }
                    })
                    .collect();
                json!(s)
            }
            Self::DateTime(dt) => dt.to_json(),
            Self::Date(d) => json!(hex::encode(d)),
            Self::Time(x) => json!(hex::encode(x)),
            Self::Array(v) | Self::Structure(v) => Json::Array(v.iter().map(Value::to_json).collect()),
            other => other.as_i64().map_or(Json::Null, |v| json!(v)),
        };
        json!({"type": t, "value": value})
    }
}

fn push_len(out: &mut Vec<u8>, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
    } else if let Ok(v) = u8::try_from(n) {
        out.extend_from_slice(&[0x81, v]);
    } else if let Ok(v) = u16::try_from(n) {
        out.push(0x82);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0x84);
        out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
    }
}

/// A register's scaler_unit (attribute 3 of classes 3 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScalerUnit {
    /// Power of ten applied to the raw value.
    pub scaler: i8,
    /// Unit code (Blue Book table), e.g. 30 = Wh.
    pub unit: u8,
}

impl ScalerUnit {
    /// From the `structure { integer, enum }` value.
    #[must_use]
    pub fn from_value(v: &Value) -> Option<Self> {
        match v.as_slice()? {
            [s, u] => {
                let scaler = i8::try_from(s.as_i64()?).ok()?;
                let unit = u8::try_from(u.as_i64()?).ok()?;
                Some(Self { scaler, unit })
            }
            _ => None,
        }
    }

    /// The unit's symbol (`Wh`, `W`, `V`, `A`, `var`, …), `None` if unknown.
    #[must_use]
    pub fn unit_name(&self) -> Option<&'static str> {
        unit_name(self.unit)
    }

    /// The scaled value as an exact decimal string (no floating point): raw × 10^scaler.
    /// `None` when the value is not an integer.
    #[must_use]
    pub fn scaled(&self, value: &Value) -> Option<String> {
        Some(decimal_string(value.as_i128()?, self.scaler))
    }
}

/// Exact decimal rendering of `raw × 10^scaler`.
#[must_use]
pub fn decimal_string(raw: i128, scaler: i8) -> String {
    let neg = raw < 0;
    let digits = raw.unsigned_abs().to_string();
    let body = if scaler >= 0 {
        if raw == 0 {
            "0".to_string()
        } else {
            let mut s = digits;
            s.extend(std::iter::repeat_n('0', usize::from(scaler.unsigned_abs())));
            s
        }
    } else {
        let frac = usize::from(scaler.unsigned_abs());
        let padded =
            if digits.len() <= frac { format!("{}{}", "0".repeat(frac + 1 - digits.len()), digits) } else { digits };
        let (int, fr) = padded.split_at(padded.len() - frac);
        let fr = fr.trim_end_matches('0');
        if fr.is_empty() {
            int.to_string()
        } else {
            format!("{int}.{fr}")
        }
    };
    if neg && body != "0" {
        format!("-{body}")
    } else {
        body
    }
}

/// Unit symbol for a Blue Book unit code.
#[must_use]
pub fn unit_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "a",
        2 => "mo",
        3 => "wk",
        4 => "d",
        5 => "h",
        6 => "min",
        7 => "s",
        8 => "°",
        9 => "°C",
        10 => "currency",
        11 => "m",
        12 => "m/s",
        13 => "m³",
        14 => "m³ (corrected)",
        15 => "m³/h",
        16 => "m³/h (corrected)",
        17 => "m³/d",
        18 => "m³/d (corrected)",
        19 => "l",
        20 => "kg",
        21 => "N",
        22 => "Nm",
        23 => "Pa",
        24 => "bar",
        25 => "J",
        26 => "J/h",
        27 => "W",
        28 => "VA",
        29 => "var",
        30 => "Wh",
        31 => "VAh",
        32 => "varh",
        33 => "A",
        34 => "C",
        35 => "V",
        36 => "V/m",
        37 => "F",
        38 => "Ω",
        39 => "Ωm²/m",
        40 => "Wb",
        41 => "T",
        42 => "A/m",
        43 => "H",
        44 => "Hz",
        45 => "1/(Wh)",
        46 => "1/(varh)",
        47 => "1/(VAh)",
        48 => "V²h",
        49 => "A²h",
        50 => "kg/s",
        51 => "S",
        52 => "K",
        53 => "1/(V²h)",
        54 => "1/(A²h)",
        55 => "1/m³",
        56 => "%",
        57 => "Ah",
        60 => "Wh/m³",
        61 => "J/m³",
        62 => "Mol %",
        63 => "g/m³",
        64 => "Pa s",
        65 => "J/kg",
        70 => "dBm",
        71 => "dBµV",
        72 => "dB",
        255 => "count",
        _ => return None,
    })
}
