//! Many concurrent connections to a 205,000-meter `meter-sim dlms`: every connection reaches the meter
//! its destination address names (public association + GET serial), across the whole address range.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use meter_sim::loopback_address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AARQ: &[u8] = &[
    0x00, 0x01, 0x00, 0x10, 0x00, 0x01, 0x00, 0x1F, 0x60, 0x1D, 0xA1, 0x09, 0x06, 0x07, 0x60, 0x85, 0x74, 0x05, 0x08,
    0x01, 0x01, 0xBE, 0x10, 0x04, 0x0E, 0x01, 0x00, 0x00, 0x00, 0x06, 0x5F, 0x1F, 0x04, 0x00, 0x00, 0x7E, 0x1F, 0x04,
    0xB0,
];
const GET_SERIAL: &[u8] = &[
    0x00, 0x01, 0x00, 0x10, 0x00, 0x01, 0x00, 0x0D, 0xC0, 0x01, 0xC1, 0x00, 0x01, 0x00, 0x00, 0x60, 0x01, 0x00, 0xFF,
    0x02, 0x00,
];

async fn read_pdu(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).await?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([h[6], h[7]]))];
    s.read_exact(&mut body).await?;
    Ok(body)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(1024)
}

/// Starts `meter-sim dlms` for `meters` meters on a free port and waits until it says it listens: the
/// child and its port.
fn spawn_sim(meters: usize) -> (std::process::Child, u16) {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meter-sim"))
        .args(["dlms", "--meters", &meters.to_string(), "--seed", "5", "--port", &port.to_string(), "--no-progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meter-sim dlms");
    let mut line = String::new();
    BufReader::new(child.stderr.take().expect("stderr")).read_line(&mut line).expect("read");
    assert!(line.contains("listening"), "{line}");
    (child, port)
}

#[test]
fn thousands_of_concurrent_sessions_reach_the_right_meters() {
    const METERS: usize = 205_000;
    // 3,000 sessions, fewer when the open-file limit is low (client and server each hold one per session).
    let concurrent = open_file_limit().saturating_sub(100).clamp(100, 3000);
    let (child, port) = spawn_sim(METERS);
    let pid = child.id();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (ok, rss) = rt.block_on(async move {
        let mut streams = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..concurrent {
            // Spread over the whole range, ends included.
            let meter = if k == concurrent - 1 { METERS - 1 } else { k * (METERS / concurrent) };
            tasks.spawn(async move {
                let mut s = TcpStream::connect(SocketAddr::new(loopback_address(meter).into(), port)).await?;
                s.write_all(AARQ).await?;
                let aare = read_pdu(&mut s).await?;
                assert_eq!(aare[0], 0x61);
                s.write_all(GET_SERIAL).await?;
                let reply = read_pdu(&mut s).await?;
                let serial = meter_sim::serial(meter);
                assert_eq!(&reply[6..], serial.as_bytes(), "meter {meter}");
                std::io::Result::Ok(s)
            });
        }
        let mut ok = 0;
        while let Some(r) = tasks.join_next().await {
            streams.push(r.expect("task").expect("session"));
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss = rss_kib(pid);
        // A connection to a non-meter address is closed at once.
        let mut foreign = TcpStream::connect(SocketAddr::new(loopback_address(METERS).into(), port)).await.expect("c");
        let _ = foreign.write_all(AARQ).await;
        let mut b = [0u8; 1];
        assert_eq!(foreign.read(&mut b).await.unwrap_or(0), 0);
        drop(streams);
        (ok, rss)
    });
    assert_eq!(ok, concurrent);
    eprintln!("{concurrent} concurrent associated sessions: server RSS {} MiB", rss / 1024);
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    let out = child.wait_with_output().expect("wait");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["sessions"].as_u64(), Some(concurrent as u64), "{summary}");
    assert_eq!(summary["foreign_address"].as_u64(), Some(1), "{summary}");
    assert_eq!(summary["protocol_errors"].as_u64(), Some(0), "{summary}");
}

/// A whole round: every one of 205,000 meters once (public association + GET serial + release), 1,000
/// sessions at a time. Slow in debug builds: `cargo test -p meter-sim --release --test dlms_load -- --ignored`.
#[test]
#[ignore = "a full 205,000-meter round; run explicitly"]
fn a_full_round_of_205000_meters() {
    const METERS: usize = 205_000;
    let (child, port) = spawn_sim(METERS);
    let started = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(1000));
        let mut tasks = tokio::task::JoinSet::new();
        for meter in 0..METERS {
            let permit = sem.clone().acquire_owned().await.expect("permit");
            tasks.spawn(async move {
                let _permit = permit;
                let mut s = TcpStream::connect(SocketAddr::new(loopback_address(meter).into(), port)).await?;
                s.write_all(AARQ).await?;
                read_pdu(&mut s).await?;
                s.write_all(GET_SERIAL).await?;
                let reply = read_pdu(&mut s).await?;
                assert_eq!(&reply[6..], meter_sim::serial(meter).as_bytes());
                s.write_all(&[0x00, 0x01, 0x00, 0x10, 0x00, 0x01, 0x00, 0x05, 0x62, 0x03, 0x80, 0x01, 0x00]).await?;
                read_pdu(&mut s).await?;
                std::io::Result::Ok(())
            });
            while let Some(r) = tasks.try_join_next() {
                r.expect("task").expect("session");
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("task").expect("session");
        }
    });
    let secs = started.elapsed().as_secs_f64();
    eprintln!("205,000 sessions in {secs:.1} s ({:.0}/s)", METERS as f64 / secs);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let out = child.wait_with_output().expect("wait");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["sessions"].as_u64(), Some(METERS as u64), "{summary}");
}
