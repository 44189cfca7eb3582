//! The harness itself: a private cluster stops and starts with its data; a private broker keeps a
//! persistent session's queued messages across a restart (what the restart tests rely on).

use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use tests::broker::Broker;
use tests::pg::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_cluster_survives_a_restart_with_its_data() {
    let mut cluster = PgCluster::temporary().expect("private cluster");
    let url = cluster.url("postgres");
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    c.batch_execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)").await.expect("write");
    drop(c);
    cluster.stop("fast").expect("stop");
    assert!(tokio_postgres::connect(&url, tokio_postgres::NoTls).await.is_err(), "stopped means unreachable");
    cluster.start().expect("start again");
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("reconnect");
    tokio::spawn(conn);
    let v: i32 = c.query_one("SELECT v FROM kept", &[]).await.expect("read").get(0);
    assert_eq!(v, 42);
}

fn session(port: u16, id: &str, clean: bool) -> (Client, rumqttc::Connection) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean).set_keep_alive(Duration::from_secs(5));
    Client::new(o, 100)
}

#[test]
fn private_broker_keeps_queued_messages_across_a_restart() {
    let mut broker = Broker::temporary().expect("private broker");
    // A persistent subscriber registers its session, then goes away.
    let (sub, mut conn) = session(broker.port, "keeper", false);
    sub.subscribe("kept/#", QoS::AtLeastOnce).expect("subscribe");
    for ev in conn.iter() {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = ev {
            break;
        }
    }
    sub.disconnect().expect("disconnect");
    for ev in conn.iter() {
        if ev.is_err() {
            break;
        }
    }
    // 3000 messages are queued for it: beyond Mosquitto's default limit of 1000.
    let (publ, mut pconn) = session(broker.port, "pub", true);
    let n = 3000;
    std::thread::spawn(move || {
        for i in 0..n {
            publ.publish(format!("kept/{i}"), QoS::AtLeastOnce, false, vec![1u8]).expect("publish");
        }
    });
    let mut acked = 0;
    for ev in pconn.iter() {
        if let Ok(Event::Incoming(Packet::PubAck(_))) = ev {
            acked += 1;
            if acked == n {
                break;
            }
        }
    }
    broker.stop().expect("stop");
    broker.start().expect("start again");
    let (_sub, mut conn) = session(broker.port, "keeper", false);
    let mut got = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for ev in conn.iter() {
        if let Ok(Event::Incoming(Packet::Publish(_))) = ev {
            got += 1;
            if got == n {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "received {got} of {n}");
    }
    assert_eq!(got, n, "every queued message survived the restart");
}

/// The test command's TimescaleDB cluster (found running, or started) preloads the extension built
/// from the vendored source, and a fresh database gets exactly that version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescale_cluster_preloads_the_vendored_extension() {
    assert!(tests::timescale::installed(), "TimescaleDB {} is installed", tests::timescale::VERSION);
    if std::env::var_os("TIMESCALE_DATABASE_URL").is_none() {
        tests::timescale::ensure_cluster().expect("TimescaleDB cluster");
    }
    let db = tests::pg::TestDatabase::create(&tests::timescale::admin_url(), "tscluster").await.expect("database");
    let c = db.client().await.expect("connect");
    let preload: String = c.query_one("SHOW shared_preload_libraries", &[]).await.expect("show").get(0);
    assert!(preload.contains("timescaledb"), "{preload}");
    c.batch_execute("CREATE EXTENSION timescaledb").await.expect("create extension");
    let v: String =
        c.query_one("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", &[]).await.expect("v").get(0);
    assert_eq!(v, tests::timescale::VERSION);
}
