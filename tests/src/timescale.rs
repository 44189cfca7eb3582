//! TimescaleDB for the tests' second storage path: the extension built from the vendored source
//! (`../shared/vendor/timescaledb-<VERSION>.tar.gz`) into the machine's PostgreSQL once, and a
//! cluster of the test command's own that preloads it (the system cluster is left as it is).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::pg::{self, PgCluster};

/// The TimescaleDB release the tests build (the last one supporting PostgreSQL 15).
pub const VERSION: &str = "2.28.3";

/// The port of the test command's TimescaleDB cluster.
pub const PORT: u16 = 54330;

/// The settings of that cluster: the library preloaded, no telemetry, and background workers for
/// the policies of the many short-lived test databases (one scheduler each).
pub const SETTINGS: &[&str] = &[
    "shared_preload_libraries = 'timescaledb'",
    "timescaledb.telemetry_level = off",
    "max_worker_processes = 40",
    "timescaledb.max_background_workers = 32",
    "fsync = off",
    "full_page_writes = off",
];

/// The `pg_config` of the server whose binaries the harness uses (`pg::bindir`).
fn pg_config() -> anyhow::Result<PathBuf> {
    let bindir = pg::bindir().context("PostgreSQL server binaries not found")?;
    let exe = bindir.join("pg_config");
    if exe.exists() {
        Ok(exe)
    } else {
        Ok(PathBuf::from("pg_config"))
    }
}

fn pg_config_value(what: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new(pg_config()?).arg(what).output().context("running pg_config")?;
    if !out.status.success() {
        bail!("pg_config {what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The server's major version (`15`), from `pg_config --version` (`PostgreSQL 15.20 (Debian …)`).
fn major() -> anyhow::Result<String> {
    let out = Command::new(pg_config()?).arg("--version").output().context("running pg_config")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').next())
        .map(str::to_string)
        .with_context(|| format!("pg_config --version: {text}"))
}

/// Whether this version's libraries are in the server's library folder.
pub fn installed() -> bool {
    pg_config_value("--pkglibdir").is_ok_and(|lib| {
        ["timescaledb", "timescaledb-tsl"].iter().all(|l| lib.join(format!("{l}-{VERSION}.so")).exists())
    })
}

/// Where the source is built: `HEADEND_CACHE_DIR` (default `/var/cache/headend`), outside the checkout.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("HEADEND_CACHE_DIR").map_or_else(|| PathBuf::from("/var/cache/headend"), PathBuf::from)
}

/// The vendored source: `TIMESCALEDB_SOURCE`, else `../shared/vendor/` next to the checkout.
fn source_tarball() -> PathBuf {
    std::env::var_os("TIMESCALEDB_SOURCE").map_or_else(
        || crate::repo_root().join(format!("../shared/vendor/timescaledb-{VERSION}.tar.gz")),
        PathBuf::from,
    )
}

fn run(mut c: Command, what: &str, log: &Path) -> anyhow::Result<()> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let status = c.stdout(out).stderr(err).status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); see {}", log.display());
    }
    Ok(())
}

/// Builds and installs TimescaleDB into the machine's PostgreSQL unless this version is there
/// already. Returns how long the build took (`None`: nothing to do). Needs root (it installs into
/// the server's folders and apt-gets the build dependencies when missing).
pub fn ensure_installed() -> anyhow::Result<Option<Duration>> {
    if installed() {
        return Ok(None);
    }
    if !crate::is_root() {
        bail!(
            "TimescaleDB {VERSION} is not installed in this PostgreSQL and only root can install it: \
             run `cargo xtask test` once as root, or build {} yourself (see ../shared/vendor/README.md)",
            source_tarball().display()
        );
    }
    let started = Instant::now();
    let major = major()?;
    let mut missing = Vec::new();
    if !Path::new(&format!("/usr/include/postgresql/{major}/server/postgres.h")).exists() {
        missing.push(format!("postgresql-server-dev-{major}"));
    }
    if Command::new("cmake").arg("--version").output().is_err() {
        missing.push("cmake".to_string());
    }
    let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
    crate::services::apt_install(&missing)?;

    let tarball = source_tarball();
    if !tarball.exists() {
        bail!("the TimescaleDB source is not at {} (set TIMESCALEDB_SOURCE)", tarball.display());
    }
    let cache = cache_dir();
    let src = cache.join(format!("timescaledb-{VERSION}"));
    std::fs::create_dir_all(&cache)?;
    // A build of an earlier attempt is reused only when it finished; otherwise start clean.
    let built = src.join("build/.headend-built");
    if !built.exists() {
        if src.exists() {
            std::fs::remove_dir_all(&src)?;
        }
        eprintln!("xtask: building TimescaleDB {VERSION} in {} (once per machine; minutes)", src.display());
        let mut tar = Command::new("tar");
        tar.arg("-xzf").arg(&tarball).arg("-C").arg(&cache);
        run(tar, "tar", &cache.join("tar.log"))?;
        let mut bootstrap = Command::new("nice");
        bootstrap
            .args(["-n", "10", "./bootstrap", "-DREGRESS_CHECKS=OFF", "-DTAP_CHECKS=OFF", "-DWARNINGS_AS_ERRORS=OFF"])
            .arg(format!("-DPG_CONFIG={}", pg_config()?.display()))
            .env("BUILD_FORCE_REMOVE", "true")
            .current_dir(&src);
        run(bootstrap, "timescaledb bootstrap", &cache.join("bootstrap.log"))?;
        let mut make = Command::new("nice");
        make.args(["-n", "10", "make", "-C", "build", "-j2"]).current_dir(&src);
        run(make, "timescaledb make", &cache.join("make.log"))?;
        std::fs::write(&built, VERSION)?;
    }
    let mut install = Command::new("make");
    install.args(["-C", "build", "install"]).current_dir(&src);
    run(install, "timescaledb make install", &cache.join("install.log"))?;
    if !installed() {
        bail!("make install ran but timescaledb-{VERSION}.so is not in {}", pg_config_value("--pkglibdir")?.display());
    }
    Ok(Some(started.elapsed()))
}

/// Where the TimescaleDB cluster keeps its data: outside the checkout (`/var/tmp/headend-dev/` as
/// root, where the `postgres` user can reach it; else `.data/` of the checkout).
fn data_dir() -> PathBuf {
    if crate::is_root() {
        PathBuf::from("/var/tmp/headend-dev/pg-timescale")
    } else {
        crate::repo_root().join(".data/pg-timescale")
    }
}

/// The test command's TimescaleDB cluster on [`PORT`], created when missing and started when not
/// running. It is left running afterwards (like the system's server), so the next run and targeted
/// `cargo nextest` runs find it. Returns its admin URL and whether it was started now.
pub fn ensure_cluster() -> anyhow::Result<(String, bool)> {
    let mut cluster = PgCluster::open_or_init(&data_dir(), PORT, SETTINGS)?;
    let started = !cluster.is_running();
    if started {
        cluster.start()?;
    }
    let url = cluster.url("postgres");
    cluster.keep_running();
    Ok((url, started))
}

/// The TimescaleDB server the tests use: `TIMESCALE_DATABASE_URL` (set by `cargo xtask test`), else
/// the test command's cluster on [`PORT`].
pub fn admin_url() -> String {
    std::env::var("TIMESCALE_DATABASE_URL").unwrap_or_else(|_| format!("postgres://postgres@127.0.0.1:{PORT}/postgres"))
}
