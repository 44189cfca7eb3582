//! Headless Chromium for the tests that use the pages as a person would: Debian's `chromium` and
//! `chromium-driver` (installed by `cargo xtask test` when missing, see [`ensure_installed`]),
//! chromedriver on a free port, a WebDriver session through fantoccini, a fresh profile per
//! browser. Everything is killed when the [`Browser`] is dropped.
//!
//! The methods are synchronous (the browser owns its runtime) and wait for elements instead of
//! sleeping: on a busy 2-core machine a page may take seconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::procs::Proc;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The Debian packages that provide [`CHROMIUM`] and [`CHROMEDRIVER`].
pub const PACKAGES: [&str; 2] = ["chromium", "chromium-driver"];
/// Fonts for readable screenshots (Chromium only recommends fonts, and apt-get installs without
/// recommends here).
const FONT_PACKAGE: &str = "fonts-dejavu-core";
const FONT_DIR: &str = "/usr/share/fonts/truetype/dejavu";

/// How long a page, an element or a navigation may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// The viewport of every page (and the width of the screenshots).
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 900;

/// Installs Chromium and chromedriver (and a font) with apt-get when they are missing; what
/// `cargo xtask test` calls before the tests.
pub fn ensure_installed() -> anyhow::Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(PACKAGES[0]);
    }
    if !Path::new(CHROMEDRIVER).exists() {
        missing.push(PACKAGES[1]);
    }
    if !missing.is_empty() && !Path::new(FONT_DIR).is_dir() {
        missing.push(FONT_PACKAGE);
    }
    crate::services::apt_install(&missing)
}

/// Fails with the command that installs the browser when it is missing (the browser tests never
/// skip silently).
pub fn check_installed() -> anyhow::Result<()> {
    for p in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(p).exists() {
            bail!(
                "{p} is missing: the browser tests need Debian's headless Chromium. Run `cargo xtask test` \
                 (it installs it), or as root `apt-get install {}`",
                PACKAGES.join(" ")
            );
        }
    }
    Ok(())
}

/// Where screenshots go: `target/screenshots/` (or under `CARGO_TARGET_DIR`); not committed.
pub fn screenshot_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| crate::repo_root().join("target"));
    target.join("screenshots")
}

/// `target/screenshots/<name>.png`, its folder created.
fn screenshot_path(name: &str) -> anyhow::Result<PathBuf> {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{name}.png")))
}

/// The browser's command-line flags. Without the background-networking ones Chromium keeps trying
/// to reach Google's hosts, which a closed network refuses many times a second.
fn chromium_args(profile: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.push(format!("--window-size={WIDTH},{HEIGHT}"));
    args
}

/// A headless Chromium driven over WebDriver, with `base` (e.g. `http://127.0.0.1:8080`) as the
/// site that paths are relative to.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Proc,
    profile: tempfile::TempDir,
    base: String,
}

impl Browser {
    /// Starts chromedriver and a new browser session.
    pub fn start(base: &str) -> anyhow::Result<Browser> {
        check_installed()?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let profile = tempfile::Builder::new().prefix("hes-chromium-").tempdir()?;
        let port = crate::free_port()?;
        let log = profile.path().join("chromedriver.log");
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"));
        let mut driver = Proc::spawn("chromedriver", cmd, &log)?;
        if let Err(e) = crate::wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(30)) {
            let tail = driver.log_tail(2000);
            let _ = driver.kill();
            bail!("chromedriver did not start: {e}; log: {tail}");
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("pageLoadStrategy".into(), json!("normal"));
        caps.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": chromium_args(profile.path()) }));
        let url = format!("http://127.0.0.1:{port}");
        let connected = rt.block_on(async {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            tokio::time::timeout(WAIT, ClientBuilder::new(connector).capabilities(caps).connect(&url)).await
        });
        let mut b = Browser { rt, client: None, driver, profile, base: base.trim_end_matches('/').to_owned() };
        match connected {
            Ok(Ok(c)) => b.client = Some(c),
            Ok(Err(e)) => bail!("no browser session from chromedriver: {e}; log: {}", b.driver.log_tail(3000)),
            Err(_) => bail!("no browser session within {WAIT:?}; log: {}", b.driver.log_tail(3000)),
        }
        b.block(|c| async move { c.set_window_size(WIDTH, HEIGHT).await.map_err(Into::into) })?;
        Ok(b)
    }

    /// Runs `f` with the WebDriver client, bounded by [`WAIT`].
    pub fn block<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let c = self.client.clone().context("the browser session is closed")?;
        self.rt.block_on(async move {
            match tokio::time::timeout(WAIT + Duration::from_secs(10), f(c)).await {
                Ok(r) => r,
                Err(_) => bail!("the browser did not answer within {WAIT:?}"),
            }
        })
    }

    /// The absolute URL of `path` on the site.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Opens `path` (waits for the page to load).
    pub fn goto(&self, path: &str) -> anyhow::Result<()> {
        let url = self.url(path);
        self.block(|c| async move { c.goto(&url).await.with_context(|| format!("opening {url}")) })
    }

    /// The current path and query (`/portal?household=…`).
    pub fn path(&self) -> anyhow::Result<String> {
        let u = self.block(|c| async move { Ok(c.current_url().await?) })?;
        Ok(match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        })
    }

    /// Waits until the current path starts with `prefix` (after a form or a link).
    pub fn wait_for_path(&self, prefix: &str) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            let p = self.path()?;
            if p.starts_with(prefix) {
                return Ok(p);
            }
            if start.elapsed() > WAIT {
                bail!("still at {p} after {WAIT:?}, expected {prefix}…; page text: {}", self.body_text(600));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the first element matching `css`.
    pub fn find(&self, css: &str) -> anyhow::Result<Element> {
        let found = self.block(|c| async move {
            c.wait()
                .at_most(WAIT)
                .every(Duration::from_millis(100))
                .for_element(Locator::Css(css))
                .await
                .map_err(anyhow::Error::from)
        });
        found.with_context(|| format!("no element {css} on {}; page text: {}", self.here(), self.body_text(600)))
    }

    /// Every element matching `css` now (no waiting).
    pub fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        self.block(|c| async move { Ok(c.find_all(Locator::Css(css)).await?) })
    }

    /// Whether an element matches `css` now (no waiting).
    pub fn exists(&self, css: &str) -> bool {
        self.find_all(css).is_ok_and(|v| !v.is_empty())
    }

    /// Types `text` into the field `css`, as a person would (after clearing it).
    pub fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self.find(css)?;
        self.rt.block_on(async {
            e.clear().await?;
            e.send_keys(text).await
        })?;
        Ok(())
    }

    /// Clicks the element `css`.
    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        let e = self.find(css)?;
        self.rt.block_on(e.click()).with_context(|| format!("clicking {css}"))
    }

    /// Chooses the option with value `value` in the select `css`.
    pub fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let e = self.find(css)?;
        self.rt.block_on(e.select_by_value(value)).with_context(|| format!("choosing {value} in {css}"))
    }

    /// The visible text of the first element matching `css` (waits for it).
    pub fn text(&self, css: &str) -> anyhow::Result<String> {
        let e = self.find(css)?;
        Ok(self.rt.block_on(e.text())?)
    }

    /// The visible texts of every element matching `css` now.
    pub fn texts(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let all = self.find_all(css)?;
        self.rt.block_on(async {
            let mut out = Vec::with_capacity(all.len());
            for e in all {
                out.push(e.text().await?);
            }
            Ok(out)
        })
    }

    /// An attribute of the first element matching `css` (waits for the element).
    pub fn attr(&self, css: &str, name: &str) -> anyhow::Result<Option<String>> {
        let e = self.find(css)?;
        Ok(self.rt.block_on(e.attr(name))?)
    }

    /// The page's title.
    pub fn title(&self) -> anyhow::Result<String> {
        self.block(|c| async move { Ok(c.title().await?) })
    }

    /// Runs a script in the page and returns its value.
    pub fn eval(&self, script: &str) -> anyhow::Result<Value> {
        self.block(|c| async move { Ok(c.execute(script, Vec::new()).await?) })
    }

    /// Waits until `script` returns `true` in the page; `what` names the condition for the failure.
    pub fn wait_until(&self, what: &str, script: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if self.eval(script)? == Value::Bool(true) {
                return Ok(());
            }
            if start.elapsed() > WAIT {
                bail!("{what}: not so after {WAIT:?} on {}; page text: {}", self.here(), self.body_text(600));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The value of a cookie of the site (HttpOnly ones included), if set.
    pub fn cookie(&self, name: &str) -> anyhow::Result<Option<String>> {
        let all = self.block(|c| async move { Ok(c.get_all_cookies().await?) })?;
        Ok(all.into_iter().find(|c| c.name() == name).map(|c| c.value().to_owned()))
    }

    /// The page's visible text, cut to `max` characters (for failure messages).
    pub fn body_text(&self, max: usize) -> String {
        let text = self
            .eval("return document.body ? document.body.innerText : ''")
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        text.chars().take(max).collect()
    }

    fn here(&self) -> String {
        self.path().unwrap_or_else(|e| format!("(unknown page: {e})"))
    }

    /// Saves a PNG of the whole page (not only the viewport) as `target/screenshots/<name>.png`.
    pub fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = screenshot_path(name)?;
        // The window is taller than the page's viewport by the browser's own frame.
        let sizes = self.eval(
            "var d = document.documentElement; \
             return [Math.ceil(Math.max(d.scrollHeight, document.body ? document.body.scrollHeight : 0)), \
                     Math.max(0, window.outerHeight - window.innerHeight)]",
        )?;
        let page = sizes[0].as_u64().unwrap_or(0);
        let frame = sizes[1].as_u64().unwrap_or(0);
        let height = u32::try_from((page + frame).clamp(u64::from(HEIGHT), 12_000)).unwrap_or(HEIGHT);
        let png = self.block(|c| async move {
            if height > HEIGHT {
                c.set_window_size(WIDTH, height).await?;
                // Let the layout (and the charts' resize handlers) settle at the new size.
                c.execute(
                    "return await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
                    Vec::new(),
                )
                .await?;
            }
            let png = c.screenshot().await;
            if height > HEIGHT {
                c.set_window_size(WIDTH, HEIGHT).await?;
            }
            Ok(png?)
        })?;
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Saves a PNG of what the window shows now (the first screen of a page, unless scrolled) as
    /// `target/screenshots/<name>.png`: smaller than a whole page, for the README.
    pub fn screenshot_screen(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = screenshot_path(name)?;
        let png = self.block(|c| async move { Ok(c.screenshot().await?) })?;
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Ends the session and stops the browser and chromedriver.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        let closed = match self.client.take() {
            Some(c) => self.rt.block_on(async {
                match tokio::time::timeout(Duration::from_secs(15), c.close()).await {
                    Ok(r) => r.map_err(anyhow::Error::from),
                    Err(_) => Err(anyhow::anyhow!("the browser did not close within 15 s")),
                }
            }),
            None => Ok(()),
        };
        let _ = self.driver.kill();
        kill_browsers_of(self.profile.path());
        closed
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Kills what is left of the Chromium processes started with this profile folder (chromedriver
/// ends them when the session closes; a failed test may not get that far). Only processes whose
/// command line names this browser's own profile are touched.
fn kill_browsers_of(profile: &Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        if cmdline.split(|b| *b == 0).any(|arg| arg == needle.as_bytes()) {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
    }
}
