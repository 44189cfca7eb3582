//! The workspace's binaries as child processes: found next to the running test executable (or in
//! `CARGO_TARGET_DIR`), killed when dropped, their stderr kept in a log file for failures.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The path of a workspace binary built in the same profile as the running executable.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(format!("HES_BIN_{}", name.replace('-', "_").to_uppercase())) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<xtask>
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("binary {name} not found near {}: build it first (cargo build --workspace --bins)", exe.display())
}

/// Sends a signal (`TERM`, `KILL`, `INT`, `STOP`, `CONT`) to a child process.
pub fn signal(child: &Child, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status()?;
    if !status.success() {
        bail!("kill -{sig} {} failed", child.id());
    }
    Ok(())
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child =
            cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc { name: name.to_string(), child: Some(child), log: log.to_path_buf() })
    }

    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        match &self.child {
            Some(c) => signal(c, sig),
            None => bail!("{} is not running", self.name),
        }
    }

    /// Waits for the process to exit, for at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else { bail!("{} is not running", self.name) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if start.elapsed() > limit {
                bail!("{} did not exit within {limit:?}; log: {}", self.name, self.log_tail(4000));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, like a crash or an OOM kill.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident memory (VmHWM) in bytes, from /proc, while running.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_bytes("VmHWM:")
    }

    /// Resident memory now (VmRSS) in bytes, from /proc, while running.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.status_bytes("VmRSS:")
    }

    /// A `kB` field of `/proc/<pid>/status`, in bytes.
    fn status_bytes(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kb: u64 =
            status.lines().find_map(|l| l.strip_prefix(field))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The end of the process's log, for failure messages.
    pub fn log_tail(&self, bytes: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(bytes);
        let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        text[start..].to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal HTTP/1.0 GET: (status, body). Enough for probes and metrics without a client crate.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    read_response(s)
}

/// An HTTP response: status, headers (names lower-cased), body.
pub type Response = (u16, Vec<(String, String)>, String);

/// [`http_get`] with `Authorization: Bearer <token>`.
pub fn http_get_auth(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<(u16, String)> {
    let (status, _, body) = http_request(addr, "GET", path, &[("Authorization", &format!("Bearer {token}"))], None)?;
    Ok((status, body))
}

/// A minimal HTTP/1.0 request with any method, headers and (optional) body: (status, response
/// headers lower-cased, body). For the security tests, which need to send what browsers and
/// attackers send (cookies, forged origins, form bodies).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let body = body.unwrap_or("");
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("HTTP status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, body.to_string()))
}

/// Creates an active account through the CLI (`headend account create --password-stdin`), linked
/// to `households` (inventory codes) when it is a household account.
pub fn create_account(
    database_url: &str,
    username: &str,
    role: &str,
    households: &[&str],
    password: &str,
) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin("headend")?);
    cmd.args(["account", "create", "--username", username, "--role", role, "--password-stdin"]);
    if !households.is_empty() {
        cmd.arg("--household").arg(households.join(","));
    }
    cmd.env("DATABASE_URL", database_url).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().context("running headend account create")?;
    child.stdin.take().context("stdin")?.write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("headend account create {username} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A new API token for `username` (`headend account token`).
pub fn api_token(database_url: &str, username: &str, name: &str) -> anyhow::Result<String> {
    let out = run_bin(
        "headend",
        &["account", "token", "--username", username, "--name", name],
        &[("DATABASE_URL", database_url)],
    )?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).context("token JSON")?;
    v["token"].as_str().map(str::to_owned).context("no token in the output")
}

/// An operator account `e2e-operator` and an API token for it: what end-to-end tests use to call
/// the operator API.
pub fn operator_token(database_url: &str) -> anyhow::Result<String> {
    create_account(database_url, "e2e-operator", "operator", &[], "e2e-operator-password")?;
    api_token(database_url, "e2e-operator", "e2e")
}

/// Reads an HTTP/1.0 response to the end: (status, body).
fn read_response(mut s: TcpStream) -> anyhow::Result<(u16, String)> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("HTTP status line")?;
    Ok((status, body.to_string()))
}

/// A minimal HTTP/1.0 POST with a JSON body and extra headers: (status, body).
pub fn http_post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )?;
    read_response(s)
}

/// The value of a metric with exactly these labels (`name{a="x",b="y"}`), if present.
pub fn metric_labelled(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    // The exposition lists labels sorted by name.
    let mut sorted = labels.to_vec();
    sorted.sort_unstable();
    let want: String = sorted.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(",");
    let key = format!("{name}{{{want}}}");
    text.lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The value of an unlabelled metric in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The sum of a metric over all its label sets (0 when absent).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
        .sum()
}

/// A `headend serve` process with its HTTP address.
pub struct Headend {
    pub proc: Proc,
    pub http: SocketAddr,
}

/// How to run a head-end.
#[derive(Clone, Debug)]
pub struct HeadendSpec {
    pub database_url: String,
    pub mqtt_url: String,
    pub client_id: String,
    pub subscription: String,
    /// Further `HEADEND_…` settings.
    pub env: Vec<(String, String)>,
}

impl Headend {
    /// Starts `headend serve` and waits until `/readyz` answers 200 (database and broker reachable).
    pub fn start(spec: &HeadendSpec, log: &Path) -> anyhow::Result<Headend> {
        let http: SocketAddr = ([127, 0, 0, 1], crate::free_port()?).into();
        Headend::start_at(spec, log, http)
    }

    /// [`Headend::start`] with the HTTP server on `http`.
    pub fn start_at(spec: &HeadendSpec, log: &Path, http: SocketAddr) -> anyhow::Result<Headend> {
        let mut cmd = Command::new(bin("headend")?);
        cmd.arg("serve")
            .env("DATABASE_URL", &spec.database_url)
            .env("MQTT_URL", &spec.mqtt_url)
            .env("HEADEND_HTTP__LISTEN", http.to_string())
            .env("HEADEND_MQTT__CLIENT_ID", &spec.client_id)
            .env("HEADEND_MQTT__SUBSCRIPTION", &spec.subscription)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn("headend", cmd, log)?;
        let mut h = Headend { proc, http };
        h.wait_ready(Duration::from_secs(60))?;
        Ok(h)
    }

    pub fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if !self.proc.is_running() {
                bail!("headend exited; log: {}", self.proc.log_tail(4000));
            }
            if let Ok((200, _)) = http_get(self.http, "/readyz") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("headend not ready within {limit:?}; log: {}", self.proc.log_tail(4000))
    }

    /// The current metrics text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        Ok(http_get(self.http, "/metrics")?.1)
    }
}

/// Runs a workspace binary to completion; returns its stdout, failing with its stderr.
pub fn run_bin(name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut cmd = Command::new(bin(name)?);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().with_context(|| format!("running {name}"))?;
    if !out.status.success() {
        bail!("{name} {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}
