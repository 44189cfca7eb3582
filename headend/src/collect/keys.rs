//! DLMS key store and invocation counters.
//!
//! Keys come from a CSV file `serial,system_title,ek,ak,password` (hex, as `meter-sim keys` writes
//! it; a key management system exports the same). They are held in memory only, never logged:
//! `Debug` prints the serial and "<redacted>".
//!
//! Invocation counters of the head-end's ciphered requests must only ever increase for a meter. The
//! store reserves them in blocks in `dlms_invocation_counters` (written before any counter of the
//! block is used), so a restart continues above everything a previous run may have sent and never
//! reuses one; the unused rest of a block is skipped, which costs nothing against 2^32.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use deadpool_postgres::Pool;

/// Counters reserved per database write.
const BLOCK: i64 = 1_000;

/// One meter's secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct MeterKeys {
    pub system_title: [u8; 8],
    /// Global unicast encryption key (block cipher key).
    pub ek: [u8; 16],
    /// Authentication key.
    pub ak: [u8; 16],
    /// LLS password (may be empty).
    pub password: Vec<u8>,
}

impl std::fmt::Debug for MeterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterKeys").field("system_title", &hex::encode(self.system_title)).finish_non_exhaustive()
    }
}

/// Why the key file was refused (the line, never the key material).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} line {line}: {what}")]
    Line { path: String, line: usize, what: String },
}

/// Keys by meter serial.
#[derive(Default)]
pub struct KeyStore {
    keys: HashMap<String, MeterKeys>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyStore({} meters, keys redacted)", self.keys.len())
    }
}

impl KeyStore {
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io { path: p.clone(), source })?;
        Self::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, KeyFileError> {
        let mut keys = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') || (line == 1 && l.starts_with("serial")) {
                continue;
            }
            let bad = |what: &str| KeyFileError::Line { path: path.to_string(), line, what: what.to_string() };
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            if f.len() != 5 {
                return Err(bad("expected 5 fields: serial,system_title,ek,ak,password"));
            }
            if !schemas::MeterSerial::is_valid(f[0]) {
                return Err(bad("invalid meter serial"));
            }
            let mk = MeterKeys {
                system_title: fixed(f[1]).ok_or_else(|| bad("system_title: expected 16 hex digits"))?,
                ek: fixed(f[2]).ok_or_else(|| bad("ek: expected 32 hex digits"))?,
                ak: fixed(f[3]).ok_or_else(|| bad("ak: expected 32 hex digits"))?,
                password: hex::decode(f[4]).map_err(|_| bad("password: expected hex"))?,
            };
            if keys.insert(f[0].to_string(), mk).is_some() {
                return Err(bad("meter listed twice"));
            }
        }
        Ok(Self { keys })
    }

    pub fn get(&self, serial: &str) -> Option<&MeterKeys> {
        self.keys.get(serial)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every meter's system title and serial: how a ciphered push is attributed to its meter.
    pub fn by_system_title(&self) -> HashMap<[u8; 8], (String, MeterKeys)> {
        self.keys.iter().map(|(s, k)| (k.system_title, (s.clone(), k.clone()))).collect()
    }
}

fn fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

/// Invocation counters for the head-end's ciphered sessions, reserved in blocks.
pub struct Counters {
    pool: Pool,
    client_sap: i16,
    blocks: Mutex<HashMap<i32, (i64, i64)>>,
}

impl Counters {
    pub fn new(pool: Pool, client_sap: u16) -> Self {
        Self { pool, client_sap: i16::try_from(client_sap).unwrap_or(i16::MAX), blocks: Mutex::new(HashMap::new()) }
    }

    /// `n` consecutive counters for one session; the first is returned.
    pub async fn take(&self, meter_id: i32, n: u32) -> anyhow::Result<u32> {
        let n = i64::from(n.max(1));
        {
            let mut b = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((next, end)) = b.get_mut(&meter_id) {
                if *next + n <= *end {
                    let first = *next;
                    *next += n;
                    return Ok(u32::try_from(first)?);
                }
            }
        }
        self.reserve(meter_id, n, None).await
    }

    /// After the meter refused our counter: continue above `meter_expects` (what it reports in
    /// 0.0.43.1.0.255), never below anything reserved before.
    pub async fn resync(&self, meter_id: i32, meter_expects: u32, n: u32) -> anyhow::Result<u32> {
        self.reserve(meter_id, i64::from(n.max(1)), Some(i64::from(meter_expects))).await
    }

    /// Reserves a block for every meter given that has none left for `n` counters, in one statement
    /// per 10,000 meters (a round's first contacts would otherwise be one commit each).
    pub async fn prefetch(&self, meter_ids: &[i32], n: u32) -> anyhow::Result<()> {
        let n = i64::from(n.max(1));
        let size = BLOCK.max(n);
        let wanted: Vec<i32> = {
            let b = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
            meter_ids.iter().copied().filter(|id| b.get(id).is_none_or(|(next, end)| next + n > *end)).collect()
        };
        let client = self.pool.get().await?;
        for chunk in wanted.chunks(10_000) {
            let mut ids = chunk.to_vec();
            // Key order, so concurrent replicas never wait on each other in opposite orders.
            ids.sort_unstable();
            let rows = client
                .query(
                    "INSERT INTO dlms_invocation_counters AS c (meter_id, client_sap, next_counter)
                     SELECT id, $2, 1 + $3::bigint FROM unnest($1::int[]) AS id ORDER BY id
                     ON CONFLICT (meter_id, client_sap) DO UPDATE
                         SET next_counter = c.next_counter + $3::bigint, updated_at = now()
                     RETURNING meter_id, next_counter - $3::bigint",
                    &[&ids, &self.client_sap, &size],
                )
                .await?;
            let mut b = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
            for r in rows {
                let (id, start): (i32, i64) = (r.get(0), r.get(1));
                if start + size <= i64::from(u32::MAX) {
                    b.insert(id, (start, start + size));
                }
            }
        }
        Ok(())
    }

    async fn reserve(&self, meter_id: i32, n: i64, at_least: Option<i64>) -> anyhow::Result<u32> {
        let size = BLOCK.max(n);
        let client = self.pool.get().await?;
        // The row holds the first counter not yet reserved; reserve [start, start + size).
        let row = client
            .query_one(
                "INSERT INTO dlms_invocation_counters AS c (meter_id, client_sap, next_counter)
                 VALUES ($1, $2, GREATEST(1, COALESCE($4::bigint, 1)) + $3::bigint)
                 ON CONFLICT (meter_id, client_sap) DO UPDATE
                     SET next_counter = GREATEST(c.next_counter, COALESCE($4::bigint, 0)) + $3::bigint,
                         updated_at = now()
                 RETURNING next_counter - $3::bigint",
                &[&meter_id, &self.client_sap, &size, &at_least],
            )
            .await?;
        let start: i64 = row.get(0);
        if start + size > i64::from(u32::MAX) {
            anyhow::bail!("invocation counter of meter {meter_id} is exhausted: new keys are needed");
        }
        self.blocks.lock().unwrap_or_else(|p| p.into_inner()).insert(meter_id, (start + n, start + size));
        Ok(u32::try_from(start)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "serial,system_title,ek,ak,password
SIM00000001,4d4d4d0000bc614e,000102030405060708090a0b0c0d0e0f,d0d1d2d3d4d5d6d7d8d9dadbdcdddedf,3132333435363738
";

    #[test]
    fn keys_load_and_never_print() {
        let ks = KeyStore::parse(FILE, "keys.csv").expect("parses");
        let k = ks.get("SIM00000001").expect("meter");
        assert_eq!(k.ek[15], 0x0f);
        assert_eq!(k.password, b"12345678");
        let shown = format!("{k:?} {ks:?}");
        assert!(!shown.contains("0001020304") && !shown.contains("d0d1d2"), "{shown}");
        assert!(!shown.contains("3132333435"), "{shown}");
    }

    #[test]
    fn bad_lines_name_the_line_not_the_key() {
        let err = KeyStore::parse("serial,system_title,ek,ak,password\nSIM1,00,aa,bb,cc\n", "k.csv").expect_err("bad");
        let msg = err.to_string();
        assert!(msg.contains("line 2") && msg.contains("system_title"), "{msg}");
        let err = KeyStore::parse(&format!("{FILE}{}", FILE.lines().nth(1).unwrap_or_default()), "k.csv")
            .expect_err("duplicate");
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
