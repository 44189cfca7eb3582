//! The harness shared by the end-to-end tests, the benchmarks and `cargo xtask`:
//!
//! - [`services`]: find or start PostgreSQL and an MQTT broker (installing Debian packages when they
//!   are missing), so that the two README commands work on a fresh machine.
//! - [`pg`]: a private PostgreSQL cluster (initdb in a folder of its own, any port) that a test may
//!   stop and restart; databases created per test.
//! - [`broker`]: a private Mosquitto with the project's `config/mosquitto.conf`.
//! - [`timescale`]: TimescaleDB built from the vendored source into the machine's PostgreSQL, and a
//!   cluster that preloads it (the second storage path).
//! - [`httpload`]: clients in a loop against the API, for the benchmarks.
//! - [`model`]: the rows the simulator's model says the database must hold.
//! - [`soak`]: hours of a paced fleet while the broker, PostgreSQL and the head-end are restarted or
//!   killed at seeded points (`cargo xtask soak`, and a small fleet in the end-to-end tests).
//! - [`procs`]: the workspace's binaries (`headend`, `meter-sim`) as child processes that are killed
//!   when dropped.
//!
//! Nothing here mocks a database or a broker: the tests run against the real servers.

pub mod broker;
pub mod browser;
pub mod httpload;
pub mod model;
pub mod pg;
pub mod procs;
pub mod services;
pub mod soak;
pub mod timescale;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Whether something accepts TCP connections at `addr`.
pub fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Waits until `addr` accepts connections, for at most `limit`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if answers(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("nothing answered at {addr} within {limit:?}")
}

/// Whether this process runs as root (initdb refuses to; Mosquitto drops privileges).
pub fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}
