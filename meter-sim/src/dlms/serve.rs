//! The tokio side of `meter-sim dlms`: one listener, one task per connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::conn::{Connection, Step};
use super::sim::{Sim, Summary};
use crate::fleet;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Close a connection after this long without input.
    pub idle_timeout: Duration,
    /// Show a progress line on stderr (only when it is a terminal).
    pub progress: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { idle_timeout: Duration::from_secs(120), progress: false }
    }
}

/// The meter a connection's local address names, if it is one of the fleet's.
pub fn meter_of(sim: &Sim, local: SocketAddr) -> Option<usize> {
    let v4 = match local.ip() {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => a.to_ipv4_mapped()?,
    };
    fleet::index_of_loopback(v4).filter(|i| *i < sim.config.meters)
}

async fn connection(sim: Arc<Sim>, mut sock: TcpStream, idle: Duration) {
    let Some(meter) = sock.local_addr().ok().and_then(|a| meter_of(&sim, a)) else {
        sim.stats.foreign_address.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut conn = Connection::accept(sim.clone(), meter);
    if conn.refuses() {
        return;
    }
    let _ = sock.set_nodelay(true);
    let latency = conn.latency();
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::new();
    loop {
        let n = match tokio::time::timeout(idle, sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        let step = conn.on_bytes(&buf[..n], Utc::now(), &mut out);
        if !out.is_empty() {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if sock.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        if step == Step::Close {
            break;
        }
    }
    conn.close();
}

/// Serves until `shutdown` completes; returns the summary.
pub async fn serve(
    sim: Arc<Sim>,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Summary {
    let started = Instant::now();
    let pb = (options.progress && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb
    });
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                if let Some(pb) = &pb {
                    let s = sim.summary(0.0);
                    pb.set_message(format!(
                        "sessions {} associations {} requests {} refused-assoc {} faults r{}/n{}/d{}/c{}/t{}",
                        s.sessions, s.associations, s.requests, s.associations_refused,
                        s.faults.refused, s.faults.no_answer, s.faults.dropped, s.faults.corrupted,
                        s.faults.tampered
                    ));
                    pb.tick();
                }
            }
            accepted = listener.accept() => {
                match accepted {
                    Ok((sock, _)) => {
                        tokio::spawn(connection(sim.clone(), sock, options.idle_timeout));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    sim.summary(started.elapsed().as_secs_f64())
}
