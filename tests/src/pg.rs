//! PostgreSQL for tests and the demo: a private cluster, and a database per test on any server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};

/// The folder with `initdb`, `pg_ctl` and `postgres`: `PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin`, else whatever `PATH` has.
pub fn bindir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PG_BINDIR") {
        return Some(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let out = Command::new("sh").args(["-c", "command -v initdb"]).output().ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.parent().filter(|_| out.status.success()).map(Path::to_path_buf)
}

/// A PostgreSQL cluster of our own: its data folder, port and socket folder. Stopped (immediately)
/// when dropped if it was started by this value.
pub struct PgCluster {
    bindir: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    _temp: Option<tempfile::TempDir>,
    stop_on_drop: bool,
}

/// Runs a PostgreSQL tool; as root through `runuser -u postgres` (initdb and postgres refuse root).
fn pg_command(bindir: &Path, tool: &str) -> Command {
    let exe = bindir.join(tool);
    if crate::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

fn run(mut c: Command, what: &str) -> anyhow::Result<()> {
    let out = c.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Gives a folder to the `postgres` user when running as root.
fn hand_over(dir: &Path) -> anyhow::Result<()> {
    if crate::is_root() {
        let mut c = Command::new("chown");
        c.arg("-R").arg("postgres:postgres").arg(dir);
        run(c, "chown")?;
    }
    Ok(())
}

impl PgCluster {
    /// A throw-away cluster in a temporary folder on a free port, tuned for tests (no fsync).
    pub fn temporary() -> anyhow::Result<PgCluster> {
        let temp = tempfile::Builder::new().prefix("hes-pg-").tempdir()?;
        // The postgres user must be able to reach the data folder.
        let mut c = Command::new("chmod");
        c.arg("755").arg(temp.path());
        run(c, "chmod")?;
        let data = temp.path().join("data");
        let port = crate::free_port()?;
        let mut cluster = PgCluster::open_or_init(&data, port, &["fsync=off", "full_page_writes=off"])?;
        cluster._temp = Some(temp);
        cluster.start()?;
        Ok(cluster)
    }

    /// A cluster in `data` (created by initdb when missing), on `port`, with extra settings written
    /// to its configuration. Not started.
    pub fn open_or_init(data: &Path, port: u16, settings: &[&str]) -> anyhow::Result<PgCluster> {
        let bindir = bindir().context("PostgreSQL server binaries not found (install the postgresql package)")?;
        if !data.join("PG_VERSION").exists() {
            std::fs::create_dir_all(data)?;
            hand_over(data)?;
            let mut c = pg_command(&bindir, "initdb");
            c.args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "-D"]).arg(data);
            run(c, "initdb")?;
        }
        let sockets = data.join("sockets");
        std::fs::create_dir_all(&sockets)?;
        hand_over(&sockets)?;
        let mut conf = format!(
            "\n# written by the head-end's test harness\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nmax_connections = 200\nshared_buffers = '512MB'\n\
             max_wal_size = '4GB'\nlog_min_messages = warning\n",
            sockets.display()
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        let auto = data.join("postgresql.auto.conf");
        std::fs::write(&auto, conf)?;
        hand_over(&auto)?;
        Ok(PgCluster { bindir, data: data.to_path_buf(), port, _temp: None, stop_on_drop: false })
    }

    /// Starts the cluster and waits until it accepts connections.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let mut c = pg_command(&self.bindir, "pg_ctl");
        c.arg("-D").arg(&self.data).arg("-l").arg(self.data.join("server.log")).args(["-w", "-t", "60", "start"]);
        run(c, "pg_ctl start")?;
        self.stop_on_drop = true;
        crate::wait_for_port(([127, 0, 0, 1], self.port).into(), Duration::from_secs(30))
    }

    /// Stops the cluster: `fast` (clean) or `immediate` (like a crash).
    pub fn stop(&mut self, mode: &str) -> anyhow::Result<()> {
        let mut c = pg_command(&self.bindir, "pg_ctl");
        c.arg("-D").arg(&self.data).args(["-w", "-t", "60", "-m", mode, "stop"]);
        run(c, "pg_ctl stop")?;
        self.stop_on_drop = false;
        Ok(())
    }

    /// Leaves the server running when this value is dropped.
    pub fn keep_running(&mut self) {
        self.stop_on_drop = false;
    }

    /// Whether the cluster's server is running.
    pub fn is_running(&self) -> bool {
        let mut c = pg_command(&self.bindir, "pg_ctl");
        c.arg("-D").arg(&self.data).arg("status");
        c.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// The URL of a database of this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.stop_on_drop {
            let _ = self.stop("immediate");
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database on a server, dropped (forcibly) with the value.
pub struct TestDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let cfg: tokio_postgres::Config = url.parse().context("database URL")?;
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let user = cfg.get_user().unwrap_or("postgres");
    Ok(format!("postgres://{user}@{host}:{port}/{db}"))
}

/// The server tests use for their databases: `DATABASE_URL` (an admin database on it), else the
/// local server.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl TestDatabase {
    /// Creates `hes_e2e_<tag>_<pid>_<n>` on the server of `admin_url`.
    pub async fn create(admin_url: &str, tag: &str) -> anyhow::Result<TestDatabase> {
        let name = format!("hes_e2e_{tag}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let c = connect(admin_url).await.with_context(|| format!("connecting to {admin_url}"))?;
        // Two calls: several statements in one string form an implicit transaction.
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
        c.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        let url = with_database(admin_url, &name)?;
        Ok(TestDatabase { admin_url: admin_url.to_string(), name, url })
    }

    /// A client of the database.
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.url).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // A fresh thread and runtime: Drop may run inside a runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async {
                    if let Ok(c) = connect(&admin).await {
                        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    }
                });
            }
        })
        .join();
    }
}
