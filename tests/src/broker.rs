//! A private Mosquitto with the project's configuration (`config/mosquitto.conf`), on its own port
//! and persistence folder, that a test may restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// The project's broker configuration with the listener, persistence folder and logging replaced.
pub fn project_config(port: u16, persistence: &Path, log: Option<&Path>) -> anyhow::Result<String> {
    project_config_secure(port, persistence, log, &BrokerSecurity::default())
}

/// The broker's password file and ACL (`headend mqtt-users` writes both).
#[derive(Debug, Clone)]
pub struct BrokerAuth {
    pub password_file: PathBuf,
    pub acl_file: PathBuf,
}

/// The certificate and key (PEM files) of a TLS listener.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// What a broker demands of its clients beyond the project's configuration.
#[derive(Debug, Clone, Default)]
pub struct BrokerSecurity {
    /// Users and ACL; anonymous clients refused.
    pub auth: Option<BrokerAuth>,
    /// The listener speaks TLS only.
    pub tls: Option<BrokerTls>,
}

/// [`project_config`] with `security`'s users, ACL and TLS listener.
pub fn project_config_secure(
    port: u16,
    persistence: &Path,
    log: Option<&Path>,
    security: &BrokerSecurity,
) -> anyhow::Result<String> {
    let auth = security.auth.as_ref();
    let path = crate::repo_root().join("config/mosquitto.conf");
    let base = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = String::new();
    for line in base.lines() {
        let key = line.split_whitespace().next().unwrap_or("");
        if matches!(key, "listener" | "persistence_location" | "log_dest" | "pid_file" | "user") {
            continue;
        }
        // The shipped logins (users and ACL under /etc/mosquitto/headend) are replaced below.
        if matches!(key, "allow_anonymous" | "password_file" | "acl_file") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("\nlistener {port} 127.0.0.1\n"));
    if let Some(t) = &security.tls {
        out.push_str(&format!("certfile {}\nkeyfile {}\n", t.cert_file.display(), t.key_file.display()));
    }
    out.push_str(&format!("persistence_location {}/\n", persistence.display()));
    match log {
        Some(l) => out.push_str(&format!("log_dest file {}\n", l.display())),
        None => out.push_str("log_dest none\n"),
    }
    match auth {
        Some(a) => out.push_str(&format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            a.password_file.display(),
            a.acl_file.display()
        )),
        // The demo's and the tests' brokers listen on 127.0.0.1 only.
        None => out.push_str("allow_anonymous true\n"),
    }
    // As root Mosquitto would switch to the mosquitto user, who cannot write our folders.
    if crate::is_root() {
        out.push_str("user root\n");
    }
    Ok(out)
}

/// The Mosquitto executable: `MOSQUITTO`, else `mosquitto` on PATH or in /usr/sbin.
pub fn mosquitto_exe() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOSQUITTO") {
        return Some(PathBuf::from(p));
    }
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join("mosquitto");
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// A running private broker.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    /// The listener speaks TLS (`url()` is `mqtts://`).
    tls: bool,
    conf: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker with the project's configuration in a temporary folder on a free port.
    pub fn temporary() -> anyhow::Result<Broker> {
        let dir = tempfile::Builder::new().prefix("hes-mqtt-").tempdir()?;
        let port = crate::free_port()?;
        let mut b = Broker::in_folder(dir.path(), port)?;
        b._dir = Some(dir);
        Ok(b)
    }

    /// Starts a broker whose configuration, persistence and log live in `dir`.
    pub fn in_folder(dir: &Path, port: u16) -> anyhow::Result<Broker> {
        Broker::in_folder_with(dir, port, &BrokerSecurity::default())
    }

    /// A temporary broker that refuses anonymous clients and applies `auth`'s users and ACL.
    pub fn temporary_with_auth(auth: &BrokerAuth) -> anyhow::Result<Broker> {
        Broker::temporary_secure(&BrokerSecurity { auth: Some(auth.clone()), tls: None })
    }

    /// A temporary broker with `security`'s users, ACL and TLS listener.
    pub fn temporary_secure(security: &BrokerSecurity) -> anyhow::Result<Broker> {
        let dir = tempfile::Builder::new().prefix("hes-mqtt-").tempdir()?;
        let port = crate::free_port()?;
        let mut b = Broker::in_folder_with(dir.path(), port, security)?;
        b._dir = Some(dir);
        Ok(b)
    }

    fn in_folder_with(dir: &Path, port: u16, security: &BrokerSecurity) -> anyhow::Result<Broker> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, project_config_secure(port, dir, Some(&dir.join("mosquitto.log")), security)?)?;
        let mut b = Broker { child: None, port, tls: security.tls.is_some(), conf, _dir: None };
        b.start()?;
        Ok(b)
    }

    /// Starts the broker process (again) and waits for its port.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let exe = mosquitto_exe().context("mosquitto not found (install the mosquitto package)")?;
        let child = Command::new(exe)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto")?;
        self.child = Some(child);
        crate::wait_for_port(([127, 0, 0, 1], self.port).into(), Duration::from_secs(10))?;
        // Something else may hold the port: make sure the answering broker is ours.
        std::thread::sleep(Duration::from_millis(100));
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                anyhow::bail!("mosquitto exited ({status}); is port {} taken by another broker?", self.port);
            }
        }
        Ok(())
    }

    /// Stops the broker cleanly (SIGTERM: it saves its persistent sessions and queues).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            crate::procs::signal(&child, "TERM")?;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
