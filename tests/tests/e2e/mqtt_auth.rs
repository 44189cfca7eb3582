//! The broker with per-meter credentials (`headend mqtt-users`): anonymous clients and wrong
//! passwords are refused, each simulated meter publishes with its own login and every reading is
//! stored, and a meter cannot report another meter's readings — the broker's ACL drops a publish on
//! another meter's topic, the head-end refuses a payload naming another meter on its own topic.

use std::io::Write;
use std::time::{Duration, Instant};

use rumqttc::{Client, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tests::broker::{Broker, BrokerAuth};
use tests::procs;

use crate::pipeline::Pipeline;

const FROM: &str = "2026-11-20T00:00:00Z";
const TO: &str = "2026-11-20T02:00:00Z";
const READER_PASSWORD: &str = "reader-pw-e2e-7f3a";

/// Connects as `login` (none: anonymous); the broker's CONNACK code.
fn connack(port: u16, id: &str, login: Option<(&str, &str)>) -> ConnectReturnCode {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (_client, mut conn) = Client::new(o, 10);
    for ev in conn.iter().take(5) {
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(c))) => return c.code,
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
            Err(e) => panic!("{id}: {e}"),
        }
    }
    panic!("{id}: no CONNACK");
}

/// Publishes `(topic, payload)` pairs as `login` with QoS 1 and waits for every PUBACK (Mosquitto
/// acknowledges a publish its ACL drops too: MQTT 3.1.1 has no refusal for it).
fn publish_as(port: u16, login: (&str, &str), msgs: &[(String, String)]) {
    let mut o = MqttOptions::new(format!("e2e-{}", login.0), "127.0.0.1", port);
    o.set_credentials(login.0, login.1);
    let (client, mut conn) = Client::new(o, 10);
    for (t, p) in msgs {
        client.publish(t.clone(), QoS::AtLeastOnce, false, p.clone().into_bytes()).expect("queue");
    }
    let mut acked = 0;
    for ev in conn.iter() {
        match ev.expect("connection") {
            Event::Incoming(Packet::PubAck(_)) => {
                acked += 1;
                if acked == msgs.len() {
                    break;
                }
            }
            Event::Incoming(Packet::ConnAck(c)) => assert_eq!(c.code, ConnectReturnCode::Success),
            _ => {}
        }
    }
    let _ = client.disconnect();
}

#[test]
fn meters_publish_only_with_their_own_credentials_and_only_their_own_readings() {
    const N: usize = 20;
    let mut p = Pipeline::new("mqttauth", N, 61, false).expect("pipeline");
    let secret = p.dir.path().join("mqtt-site-secret");
    std::fs::write(&secret, "e2e-site-secret-0123456789abcdef\n").expect("secret");
    let users = p.dir.path().join("broker-users");
    let mut cmd = std::process::Command::new(procs::bin("headend").expect("headend"));
    cmd.args(["mqtt-users", "--secret-file"])
        .arg(&secret)
        .arg("--out")
        .arg(&users)
        .env("DATABASE_URL", &p.spec.database_url)
        .env_remove("HEADEND_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("mqtt-users");
    child.stdin.take().expect("stdin").write_all(format!("{READER_PASSWORD}\n").as_bytes()).expect("stdin");
    let out = child.wait_with_output().expect("mqtt-users");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(report["meters"], N, "{report}");
    let passwd = std::fs::read_to_string(users.join("passwd")).expect("passwd");
    assert!(!passwd.contains(READER_PASSWORD), "no plaintext password in the file");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(users.join("passwd")).expect("passwd").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the password file is the owner's only: {mode:o}");

    // The pipeline's broker, replaced by one that applies those users and their ACL.
    p.broker =
        Broker::temporary_with_auth(&BrokerAuth { password_file: users.join("passwd"), acl_file: users.join("acl") })
            .expect("broker with users");
    let port = p.broker.port;
    p.spec.mqtt_url = p.broker.url().replacen("mqtt://", &format!("mqtt://headend:{READER_PASSWORD}@"), 1);

    // From the attacker's side: no login, a wrong password, another meter's password.
    let (m0, m1) = (meter_sim::serial(0), meter_sim::serial(1));
    let pw = |s: &str| schemas::mqtt_auth::meter_password(b"e2e-site-secret-0123456789abcdef", s);
    assert_ne!(connack(port, "anon", None), ConnectReturnCode::Success, "anonymous");
    assert_ne!(connack(port, "wrong", Some((&m0, "guessed"))), ConnectReturnCode::Success, "wrong password");
    assert_ne!(connack(port, "other", Some((&m0, &pw(&m1)))), ConnectReturnCode::Success, "another meter's password");
    assert_ne!(connack(port, "reader", Some(("headend", "guessed"))), ConnectReturnCode::Success, "reader");
    assert_eq!(connack(port, "own", Some((&m0, &pw(&m0)))), ConnectReturnCode::Success, "the meter's own login");

    // The head-end subscribes with its own login, on the shared subscription the replicas use
    // (ready means the broker granted it under the ACL).
    p.spec.subscription = "$share/headend/meters/+/readings".into();
    let headend = p.start_headend().expect("head-end with the reader login");
    // Every meter on its own connection and login.
    let summary = p
        .publish(FROM, TO, &["--per-meter-connections", "--password-secret", &secret.to_string_lossy()])
        .expect("publish");
    let expected = summary["readings"].as_i64().expect("readings");
    assert!(expected >= (N * 8 * 5) as i64, "{summary}");
    p.wait_for_readings(expected, Duration::from_secs(60)).expect("every meter's readings stored");
    assert_eq!(p.verify(FROM, TO).expect("model"), expected as usize);

    // Meter 0 with its own login: on meter 1's topic (the ACL drops it), then on its own topic
    // naming meter 1 (the head-end refuses it). Both outside the published span, so a stored one
    // would show as a reading the model does not have.
    let payload = |meter: &str| {
        format!(r#"{{"meter":"{meter}","ts":"2026-11-20T05:00:00Z","values":{{"1.0.1.8.0":999999999}}}}"#)
    };
    publish_as(
        port,
        (&m0, &pw(&m0)),
        &[(format!("meters/{m1}/readings"), payload(&m1)), (format!("meters/{m0}/readings"), payload(&m1))],
    );
    let start = Instant::now();
    loop {
        let dead = p.dead_letters().expect("dead letters");
        if dead.get("topic_mismatch").copied().unwrap_or(0) >= 1 {
            assert_eq!(dead.values().sum::<i64>(), 1, "only the payload naming another meter: {dead:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "dead letters: {dead:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(p.verify(FROM, TO).expect("nothing but the model is stored"), expected as usize);
    drop(headend);
}
