use std::collections::{HashMap, HashSet};

use schemas::payload::ReadingPayload;

use super::*;
use crate::expect::expected_payloads;

fn broker_url() -> String {
    std::env::var("MQTT_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

fn unique_prefix(name: &str) -> String {
    format!("msim-test-{name}-{}-{:x}", std::process::id(), now_ns() as u64 & 0xFFFF_FFFF)
}

#[test]
fn urls_are_parsed() {
    let o = options("mqtt://user:pw@broker.example:1884", "c").expect("url");
    assert_eq!(o.broker_address(), ("broker.example".to_string(), 1884));
    assert_eq!(options("tcp://127.0.0.1", "c").expect("url").broker_address(), ("127.0.0.1".to_string(), 1883));
    assert_eq!(options("mqtt://[::1]:1883/", "c").expect("url").broker_address(), ("::1".to_string(), 1883));
    for bad in ["http://x", "mqtt://", "mqtt://host:port", "127.0.0.1:1883", "mqtt://:1883"] {
        assert!(matches!(options(bad, "c"), Err(PublishError::BadUrl(_))), "{bad}");
    }
}

#[test]
fn malformed_payloads_never_parse_and_unknown_serials_are_not_in_the_fleet() {
    let ts = crate::span::parse_ts("2026-11-20T10:15:00Z").expect("ts");
    let model = Model::new(1);
    let real = model.interval(3, ts).expect("model").payload(&Channel::ALL, Some(sent_now())).to_json();
    let mut kinds = HashSet::new();
    for i in 0..2_000u64 {
        let h = hash::mix(i);
        let g = malformed_payload(h, &real, "SIM00000004", ts);
        kinds.insert(h % 4);
        assert!(ReadingPayload::parse(&g).is_err(), "parsed: {}", String::from_utf8_lossy(&g));
        let u = unknown_serial(h);
        assert!(fleet::index_of(&u).is_none() && MeterSerial::is_valid(&u), "{u}");
    }
    assert_eq!(kinds.len(), 4);
}

#[test]
fn configuration_errors_are_clear() {
    let span = Span::parse("2026-11-20T10:00:00Z", "2026-11-20T10:15:00Z").expect("span");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut cfg = PublishConfig::new(6_000, span, 1);
    cfg.connections = Connections::PerMeter;
    let e = rt.block_on(publish(&cfg)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("5000") && e.contains("per-meter"), "{e}");
    let mut cfg = PublishConfig::new(10, span, 1);
    cfg.faults.duplicates = 1.5;
    assert!(matches!(rt.block_on(publish(&cfg)), Err(PublishError::Config(_))));
    cfg.faults.duplicates = 0.0;
    cfg.pacing = Pacing::Rate(0.0);
    assert!(matches!(rt.block_on(publish(&cfg)), Err(PublishError::Config(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_an_error() {
    let span = Span::parse("2026-11-20T10:00:00Z", "2026-11-20T10:15:00Z").expect("span");
    let mut cfg = PublishConfig::new(10, span, 1);
    cfg.url = "mqtt://127.0.0.1:9".into(); // discard port: nothing listens there
    cfg.connect_attempts = 2;
    let started = std::time::Instant::now();
    let e = publish(&cfg).await.err();
    assert!(matches!(e, Some(PublishError::Unreachable { .. })), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("unreachable") && msg.contains("127.0.0.1:9"), "{msg}");
}

/// Subscribes to `<prefix>/#` and collects every message until told to stop.
async fn subscribe(prefix: &str) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let mut o = options(&broker_url(), &format!("{prefix}-sub")).expect("url");
    o.set_inflight(100);
    let (client, mut el) = AsyncClient::new(o, 100);
    client.subscribe(format!("{prefix}/#"), QoS::AtLeastOnce).await.expect("subscribe");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx).await.expect("SUBACK in time").expect("SUBACK");
    (client, rx)
}

async fn collect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>, n: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        match tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
            Ok(Some(m)) => out.push(m),
            _ => break,
        }
    }
    // Then whatever else comes (nothing, unless the broker delivered something twice).
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_the_model_with_faults() {
    let prefix = unique_prefix("faults");
    let (sub, mut rx) = subscribe(&prefix).await;
    let span = Span::parse("2026-10-24T23:15:00Z", "2026-10-25T00:15:00Z").expect("span");
    let mut cfg = PublishConfig::new(150, span, 77);
    cfg.url = broker_url();
    cfg.topic_prefix = prefix.clone();
    cfg.pacing = Pacing::Rate(3_000.0);
    cfg.connections = Connections::Shared(3);
    cfg.faults = Faults { duplicates: 0.1, reorder: 0.15, malformed: 0.08, unknown_meters: 0.05, seed: 5 };
    let summary = publish(&cfg).await.expect("publish");
    let f = summary.faults;
    assert!(f.duplicates > 0 && f.reordered > 0 && f.malformed > 0 && f.unknown_meters > 0, "{summary:?}");
    assert_eq!(summary.messages, 150 * 4 + f.duplicates + f.malformed + f.unknown_meters);
    assert_eq!(summary.readings, 150 * 4 * 5);
    assert!(summary.last_ack.is_some() && summary.first_publish.is_some() && summary.elapsed_s > 0.0);

    let got = collect(&mut rx, summary.messages).await;
    let _ = sub.disconnect().await;
    assert_eq!(got.len() as u64, summary.messages, "every message arrives once");

    let model = Model::new(77);
    let mut expected: HashMap<(String, DateTime<Utc>), ReadingPayload> = HashMap::new();
    for i in 0..150 {
        for p in expected_payloads(&model, &fleet::serial(i), span, &cfg.channels).expect("expected") {
            expected.insert((p.meter.to_string(), p.ts), p);
        }
    }
    let (mut real, mut malformed, mut unknown) = (0u64, 0u64, 0u64);
    let mut seen: HashMap<(String, DateTime<Utc>), u64> = HashMap::new();
    let mut order: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for (topic, bytes) in &got {
        match ReadingPayload::parse(bytes) {
            Err(_) => {
                malformed += 1;
                let serial = topic.split('/').nth(1).unwrap_or_default();
                assert!(fleet::index_of(serial).is_some_and(|i| i < 150), "garbage on a real meter's topic {topic}");
            }
            Ok(mut p) => {
                assert_eq!(topic, &format!("{prefix}/{}/readings", p.meter));
                assert!(p.sent.is_some());
                if p.meter.as_str().starts_with("UNK") {
                    unknown += 1;
                    continue;
                }
                real += 1;
                p.sent = None;
                let key = (p.meter.to_string(), p.ts);
                assert_eq!(expected.get(&key), Some(&p), "payload of {key:?} equals the model");
                *seen.entry(key).or_default() += 1;
                order.entry(p.meter.to_string()).or_default().push(p.ts);
            }
        }
    }
    assert_eq!(seen.len(), expected.len(), "every meter and interval arrives");
    assert_eq!(real, 150 * 4 + f.duplicates);
    assert_eq!(malformed, f.malformed);
    assert_eq!(unknown, f.unknown_meters);
    // Some meter received an older reading after a newer one (reorder across intervals).
    let out_of_order = order.values().filter(|ts| ts.windows(2).any(|w| w[1] < w[0])).count();
    assert!(out_of_order > 0, "reordering across intervals happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_meter_connections_deliver_everything() {
    let prefix = unique_prefix("per-meter");
    let (sub, mut rx) = subscribe(&prefix).await;
    let span = Span::parse("2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z").expect("span");
    let mut cfg = PublishConfig::new(40, span, 3);
    cfg.url = broker_url();
    cfg.topic_prefix = prefix.clone();
    cfg.connections = Connections::PerMeter;
    cfg.channels = vec![Channel::ImportVt, Channel::ImportNt, Channel::Voltage];
    cfg.pacing = Pacing::Speed(900.0 * 8.0);
    let summary = publish(&cfg).await.expect("publish");
    assert_eq!(summary.messages, 80);
    assert_eq!(summary.faults, FaultCounts::default());
    let got = collect(&mut rx, 80).await;
    let _ = sub.disconnect().await;
    assert_eq!(got.len(), 80);
    let model = Model::new(3);
    for (_, bytes) in got {
        let mut p = ReadingPayload::parse(&bytes).expect("valid");
        p.sent = None;
        let index = fleet::index_of(p.meter.as_str()).expect("fleet serial");
        let v = model.interval(index, p.ts).expect("model");
        assert_eq!(p, v.payload(&cfg.channels, None));
    }
}

/// A TCP proxy to the broker that cuts its first connection after `cut_after` bytes from the client.
async fn flaky_proxy(cut_after: usize) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, port) = options(&broker_url(), "p").expect("url").broker_address();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let Ok(upstream) = tokio::net::TcpStream::connect((host.as_str(), port)).await else { return };
            let limit = if first { cut_after } else { usize::MAX };
            first = false;
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut ur, &mut cw).await;
                });
                let mut buf = vec![0u8; 4096];
                let mut total = 0usize;
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = n.min(limit - total);
                    if uw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    total += n;
                    if total >= limit {
                        break;
                    }
                }
                // Dropping both halves (and aborting the other direction) closes both connections.
                down.abort();
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_resumed_without_losing_messages() {
    let prefix = unique_prefix("drop");
    let (sub, mut rx) = subscribe(&prefix).await;
    let (proxy, accepted) = flaky_proxy(40_000).await;
    let span = Span::parse("2026-11-20T10:00:00Z", "2026-11-20T10:30:00Z").expect("span");
    let mut cfg = PublishConfig::new(400, span, 9);
    cfg.url = format!("mqtt://{proxy}");
    cfg.topic_prefix = prefix.clone();
    cfg.connections = Connections::Shared(1);
    cfg.inflight = 50;
    cfg.pacing = Pacing::Rate(4_000.0);
    let summary = publish(&cfg).await.expect("publish survives the drop");
    assert_eq!(summary.messages, 800);
    assert_eq!(accepted.load(Ordering::Relaxed), 2, "the publisher reconnected once");
    // At least once: every reading arrives, possibly twice around the cut.
    let got = collect(&mut rx, 800).await;
    let _ = sub.disconnect().await;
    let mut keys = HashSet::new();
    let model = Model::new(9);
    for (_, bytes) in &got {
        let mut p = ReadingPayload::parse(bytes).expect("valid");
        p.sent = None;
        let index = fleet::index_of(p.meter.as_str()).expect("serial");
        assert_eq!(p, model.interval(index, p.ts).expect("model").payload(&cfg.channels, None));
        keys.insert((index, p.ts));
    }
    let missing: Vec<(usize, DateTime<Utc>)> =
        (0..400).flat_map(|i| span.ends().map(move |t| (i, t))).filter(|k| !keys.contains(k)).collect();
    assert_eq!(keys.len(), 800, "every meter and interval arrived ({} messages); missing {missing:?}", got.len());
}

/// A "broker" that accepts the connection (CONNACK) and then never acknowledges anything.
async fn silent_broker() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                if s.read(&mut buf).await.is_err() || s.write_all(&[0x20, 0x02, 0x00, 0x00]).await.is_err() {
                    return;
                }
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_acknowledgements_time_out() {
    let addr = silent_broker().await;
    let span = Span::parse("2026-11-20T10:00:00Z", "2026-11-20T10:15:00Z").expect("span");
    for meters in [5, 500] {
        let mut cfg = PublishConfig::new(meters, span, 1);
        cfg.url = format!("mqtt://{addr}");
        cfg.connections = Connections::Shared(1);
        cfg.inflight = 20;
        cfg.ack_timeout = Duration::from_millis(800);
        let started = std::time::Instant::now();
        let e = publish(&cfg).await.err();
        assert!(matches!(e, Some(PublishError::AckTimeout { .. })), "{meters}: {e:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
