//! Simulated Modbus TCP meters behind gateways.
//!
//! - [`layout`]: which gateway and unit id serve meter `i`, and its inventory address.
//! - [`values`]: the channel values of a meter at an interval end, from the model (the same values
//!   `meter-sim expect` prints for the model's channels), plus derived ones (current, power, frequency…).
//! - [`server`]: one TCP listener per gateway (tokio-modbus server) serving each meter's registers
//!   encoded per its register map (`config/modbus/*.toml`, the head-end's files), with deterministic
//!   faults: exceptions, missing replies, failed gateway targets.

pub mod cli;
pub mod layout;
pub mod server;
pub mod values;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemas::modbus_map::{MapError, MapFile, RegisterMap};

pub use layout::{address, map_index, meter_at, placement, DEFAULT_GATEWAYS, MAX_UNIT};
pub use server::{serve, FaultRates, SimConfig, SimHandle, SimSummary};
pub use values::channel_values;

/// Parses and validates one register map file (same rules as the head-end).
pub fn load_map(path: &Path) -> Result<RegisterMap, MapError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| MapError::new(&source, None, format!("cannot read: {e}")))?;
    let file: MapFile = toml::from_str(&text).map_err(|e| MapError::new(&source, None, e.to_string().trim_end()))?;
    RegisterMap::from_file(&source, file)
}

/// The shipped maps (`config/modbus/*.toml` of the workspace), sorted by file name: the default `--map`
/// list. Meter `i` uses map `i mod len` ([`map_index`]).
pub fn default_map_paths() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/modbus");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The names (file stems) of [`default_map_paths`], in the order meters use them.
pub fn default_map_names() -> Vec<String> {
    default_map_paths().iter().filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).collect()
}

/// Loads maps in order.
pub fn load_maps(paths: &[PathBuf]) -> Result<Vec<Arc<RegisterMap>>, MapError> {
    if paths.is_empty() {
        return Err(MapError::new("--map", None, "no register map given or found in config/modbus"));
    }
    paths.iter().map(|p| load_map(p).map(Arc::new)).collect()
}
