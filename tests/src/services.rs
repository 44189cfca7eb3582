//! PostgreSQL and MQTT for `cargo xtask demo` / `cargo xtask test`: use what is configured or
//! already running, else start the project's own (data under `.data/`), installing the Debian
//! packages first when the programs are missing.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::broker::{mosquitto_exe, Broker};
use crate::pg::{self, PgCluster};

/// Installs Debian packages with apt-get (as root only; otherwise says what to install).
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !crate::is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        bail!("missing programs: install the Debian packages {} (apt-get install {0})", packages.join(" "));
    }
    eprintln!("xtask: installing {} with apt-get", packages.join(" "));
    let quiet = |c: &mut Command| {
        c.env("DEBIAN_FRONTEND", "noninteractive");
    };
    let mut update = Command::new("apt-get");
    update.args(["-qq", "update"]);
    quiet(&mut update);
    let _ = update.status();
    let mut install = Command::new("apt-get");
    install.args(["-qq", "-y", "install", "--no-install-recommends"]).args(packages);
    quiet(&mut install);
    let status = install.status().context("running apt-get")?;
    if !status.success() {
        bail!("apt-get install {} failed", packages.join(" "));
    }
    Ok(())
}

/// Installs PostgreSQL and Mosquitto when their programs are not on this machine.
pub fn ensure_packages() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if pg::bindir().is_none() {
        missing.push("postgresql");
    }
    if mosquitto_exe().is_none() {
        missing.push("mosquitto");
    }
    apt_install(&missing)
}

/// The services in use; those this value started stop when it is dropped.
pub struct Services {
    /// A URL of the server's `postgres` database (databases are created next to it).
    pub admin_url: String,
    pub mqtt_url: String,
    pub started: Vec<String>,
    _pg: Option<PgCluster>,
    _broker: Option<Broker>,
}

/// The port of the project's own PostgreSQL cluster, when no usable server was found.
pub const PROJECT_PG_PORT: u16 = 54329;

/// Where the project's own cluster keeps its data: `.data/pg` in the repository, or, as root (the
/// server runs as the `postgres` user, who may not enter a checkout under /root),
/// `/var/tmp/headend-dev/pg`.
fn project_pg_dir() -> std::path::PathBuf {
    if crate::is_root() {
        std::path::PathBuf::from("/var/tmp/headend-dev/pg")
    } else {
        crate::repo_root().join(".data/pg")
    }
}

/// Whether a PostgreSQL connection with this URL succeeds (server up, authentication accepted).
fn can_connect(url: &str) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return false };
    rt.block_on(async {
        matches!(
            tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(url, tokio_postgres::NoTls)).await,
            Ok(Ok(_))
        )
    })
}

fn addr_of_db(url: &str) -> anyhow::Result<SocketAddr> {
    let cfg: tokio_postgres::Config = url.parse().context("DATABASE_URL")?;
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    resolve(&host, port)
}

fn addr_of_mqtt(url: &str) -> anyhow::Result<SocketAddr> {
    let rest =
        url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")).context("MQTT_URL: mqtt://host:port")?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h).trim_end_matches('/');
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().context("MQTT_URL port")?),
        None => (hostport, 1883),
    };
    resolve(host, port)
}

fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs()?.next().with_context(|| format!("cannot resolve {host}"))
}

impl Services {
    /// PostgreSQL: `DATABASE_URL` if set (it must answer), else 127.0.0.1:5432 if a trust
    /// connection as `postgres` works, else the project's own cluster on port 54329. MQTT: `MQTT_URL` if set, else
    /// 127.0.0.1:`default_mqtt_port` if something answers there, else the project's Mosquitto
    /// (config/mosquitto.conf) started there with its data in `.data/mqtt`.
    pub fn ensure(default_mqtt_port: u16) -> anyhow::Result<Services> {
        let mut started = Vec::new();
        let data = crate::repo_root().join(".data");
        let (admin_url, pg) = match std::env::var("DATABASE_URL") {
            Ok(url) => {
                let addr = addr_of_db(&url)?;
                crate::wait_for_port(addr, Duration::from_secs(10))
                    .with_context(|| format!("DATABASE_URL is set but nothing answers at {addr}"))?;
                (url, None)
            }
            Err(_) => {
                let local = "postgres://postgres@127.0.0.1:5432/postgres".to_string();
                if can_connect(&local) {
                    (local, None)
                } else {
                    // Our own cluster on a port of its own: a distribution's cluster on 5432 may
                    // be starting, or want a password.
                    ensure_packages()?;
                    let mut cluster = PgCluster::open_or_init(&project_pg_dir(), PROJECT_PG_PORT, &[])?;
                    if !cluster.is_running() {
                        cluster.start()?;
                        started
                            .push(format!("PostgreSQL on port {PROJECT_PG_PORT} (data in {})", cluster.data.display()));
                    }
                    (cluster.url("postgres"), Some(cluster))
                }
            }
        };
        let (mqtt_url, broker) = match std::env::var("MQTT_URL") {
            Ok(url) => {
                let addr = addr_of_mqtt(&url)?;
                crate::wait_for_port(addr, Duration::from_secs(10))
                    .with_context(|| format!("MQTT_URL is set but nothing answers at {addr}"))?;
                (url, None)
            }
            Err(_) => {
                let url = format!("mqtt://127.0.0.1:{default_mqtt_port}");
                if crate::answers(([127, 0, 0, 1], default_mqtt_port).into()) {
                    (url, None)
                } else {
                    ensure_packages()?;
                    let b = Broker::in_folder(&data.join("mqtt"), default_mqtt_port)?;
                    started.push(format!("Mosquitto on port {default_mqtt_port} (config/mosquitto.conf)"));
                    (url, Some(b))
                }
            }
        };
        Ok(Services { admin_url, mqtt_url, started, _pg: pg, _broker: broker })
    }
}
