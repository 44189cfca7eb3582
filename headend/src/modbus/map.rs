//! Loading register map files (format: [`schemas::modbus_map`]). Every error names the file, the entry and
//! what is wrong, so a bad map stops the head-end at start-up with a message an operator can act on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use schemas::modbus_map::{MapError, MapFile, RegisterMap};

/// Parses and validates map text; `source` names it in errors.
pub fn parse_map(source: &str, text: &str) -> Result<RegisterMap, MapError> {
    let file: MapFile = toml::from_str(text).map_err(|e| MapError::new(source, None, e.to_string().trim_end()))?;
    RegisterMap::from_file(source, file)
}

/// Reads, parses and validates one map file.
pub fn load_map(path: &Path) -> Result<RegisterMap, MapError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| MapError::new(&source, None, format!("cannot read: {e}")))?;
    parse_map(&source, &text)
}

/// Loads every `*.toml` of a directory, keyed by file stem (`eastron-sdm630`), the name a meter address
/// may carry (`host:port/unit/eastron-sdm630`).
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Arc<RegisterMap>>, MapError> {
    let source = dir.display().to_string();
    let rd = std::fs::read_dir(dir).map_err(|e| MapError::new(&source, None, format!("cannot list: {e}")))?;
    let mut out = BTreeMap::new();
    for item in rd {
        let path = item.map_err(|e| MapError::new(&source, None, format!("cannot list: {e}")))?.path();
        if path.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        out.insert(stem, Arc::new(load_map(&path)?));
    }
    if out.is_empty() {
        return Err(MapError::new(&source, None, "no *.toml register map"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn shipped(name: &str) -> RegisterMap {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/modbus").join(name);
        match load_map(&path) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// Registers from a capture written as hex bytes (the response's register data, big-endian).
    fn words(hex: &str) -> Vec<u16> {
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .flat_map(|chunk| {
                (0..chunk.len()).step_by(2).map(move |i| u8::from_str_radix(&chunk[i..i + 2], 16).unwrap_or(0xEE))
            })
            .collect();
        bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])).collect()
    }

    fn decode_all(map: &RegisterMap, capture: &[(u16, &str)]) -> BTreeMap<i16, i64> {
        let plan = map.plan();
        assert_eq!(plan.len(), capture.len(), "one captured block per request: {plan:?}");
        let mut out = BTreeMap::new();
        for (block, (start, hex)) in plan.iter().zip(capture) {
            assert_eq!(block.start, *start);
            let w = words(hex);
            assert_eq!(w.len(), usize::from(block.count), "block at {start}");
            for (i, v) in map.decode_block(block, &w) {
                let v = v.unwrap_or_else(|e| panic!("{}: {e}", map.entries[i].name));
                out.insert(map.entries[i].channel.id, v);
            }
        }
        out
    }

    #[test]
    fn eastron_sdm630_decodes_a_captured_block() {
        let map = shipped("eastron-sdm630.toml");
        assert_eq!(map.entries.len(), 11);
        let got = decode_all(
            &map,
            &[
                // 230.1 V, 229.5 V, 231.0 V, 5.25 A, 0.125 A, 10.0 A
                (0x0000, "4366199a 43658000 43670000 40a80000 3e000000 41200000"),
                (0x0034, "45580000"), // 3456.0 W
                (0x003E, "3f733333"), // 0.95
                // 49.98 Hz, 12345.678 kWh (float32: 12345.677734375), 0.5 kWh
                (0x0046, "4247eb85 4640e6b6 3f000000"),
            ],
        );
        let want: BTreeMap<i16, i64> = [
            (5, 2301),
            (6, 2295),
            (7, 2310),
            (8, 5250),
            (9, 125),
            (10, 10_000),
            (11, 3456),
            (15, 950),
            (16, 4998),
            (1, 12_345_678),
            (4, 500),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn schneider_iem3255_decodes_a_captured_block() {
        let map = shipped("schneider-iem3255.toml");
        assert_eq!(map.entries.len(), 11);
        let got = decode_all(
            &map,
            &[
                (2999, "40a80000 3e000000 41200000"),        // 5.25 A, 0.125 A, 10.0 A
                (3027, "4366199a 43658000 43670000"),        // 230.1 V, 229.5 V, 231.0 V
                (3059, "405d2f1b"),                          // 3.456 kW
                (3203, "0000001cbe991a14 000000000000002a"), // Int64 123456789012 Wh, 42 Wh
                (45119, "49742400 47f12040"),                // 1e6 Wh, 123456.5 Wh (half to even)
            ],
        );
        let want: BTreeMap<i16, i64> = [
            (8, 5250),
            (9, 125),
            (10, 10_000),
            (5, 2301),
            (6, 2295),
            (7, 2310),
            (11, 3456),
            (1, 123_456_789_012),
            (4, 42),
            (2, 1_000_000),
            (3, 123_456),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn every_shipped_map_loads_and_round_trips() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/modbus");
        let maps = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(maps.len() >= 2);
        for (name, map) in &maps {
            for e in &map.entries {
                for v in [0i64, 1, 2301, 5250, 999_999] {
                    assert_eq!(e.quantise(v), Ok(v), "{name} {}", e.name);
                }
            }
        }
    }

    #[test]
    fn bad_maps_fail_with_file_entry_and_reason() {
        let head = "model = \"m\"\nmanual = \"d\"\nmanual_version = \"1\"\n";
        let reg = |extra: &str| {
            format!("{head}[[register]]\nname = \"a\"\nfunction = \"input\"\naddress = 0\ntype = \"f32\"\nunit = \"V\"\nobis = \"1.0.32.7.0.255\"\n{extra}")
        };
        let cases = [
            (format!("{head}bogus = 1\n[[register]]\n"), "unknown field"),
            (reg("").replace("f32", "f16"), "unknown variant"),
            (reg("").replace("\"V\"", "\"A\""), "unit \"A\" does not match"),
            (reg("").replace("1.0.32.7.0.255", "1.0.99.99.0.255"), "not a channel"),
            (
                reg("[[register]]\nname = \"b\"\nfunction = \"input\"\naddress = 1\ntype = \"u16\"\nunit = \"A\"\nobis = \"1.0.31.7.0.255\"\n"),
                "overlap entry \"a\"",
            ),
            (reg("scale = \"ten\"\n"), "scale"),
        ];
        for (text, want) in cases {
            let e = parse_map("bad.toml", &text).expect_err(want);
            let msg = e.to_string();
            assert!(msg.contains("bad.toml") && msg.contains(want), "{msg}");
        }
        let e = parse_map("bad.toml", &reg("").replace("1.0.32.7.0.255", "1.0.99.99.0.255")).expect_err("obis");
        assert_eq!(e.entry.as_deref(), Some("a"));
    }
}
