//! The broker with per-meter credentials (`headend mqtt-users`): anonymous clients and wrong
//! passwords are refused, each simulated meter publishes with its own login and every reading is
//! stored, and a meter cannot report another meter's readings — the broker's ACL drops a publish on
//! another meter's topic, the head-end refuses a payload naming another meter on its own topic.
//! With a TLS listener (certificates made in the test), head-end and meters speak `mqtts://`
//! and trust only the site's authority.

use std::io::Write;
use std::time::{Duration, Instant};

use rumqttc::{Client, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tests::broker::{Broker, BrokerAuth, BrokerSecurity, BrokerTls};
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

const SECRET: &[u8] = b"e2e-site-secret-0123456789abcdef";

/// `headend mqtt-users` for the pipeline's inventory: the site secret's file and the folder with
/// `passwd` and `acl`.
fn broker_users(p: &Pipeline) -> (std::path::PathBuf, std::path::PathBuf) {
    let secret = p.dir.path().join("mqtt-site-secret");
    std::fs::write(&secret, [SECRET, b"\n"].concat()).expect("secret");
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
    assert_eq!(report["meters"], p.meters, "{report}");
    let passwd = std::fs::read_to_string(users.join("passwd")).expect("passwd");
    assert!(!passwd.contains(READER_PASSWORD), "no plaintext password in the file");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(users.join("passwd")).expect("passwd").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the password file is the owner's only: {mode:o}");
    (secret, users)
}

#[test]
fn meters_publish_only_with_their_own_credentials_and_only_their_own_readings() {
    const N: usize = 20;
    let mut p = Pipeline::new("mqttauth", N, 61, false).expect("pipeline");
    let (secret, users) = broker_users(&p);
    // The pipeline's broker, replaced by one that applies those users and their ACL.
    p.broker =
        Broker::temporary_with_auth(&BrokerAuth { password_file: users.join("passwd"), acl_file: users.join("acl") })
            .expect("broker with users");
    let port = p.broker.port;
    p.spec.mqtt_url = p.broker.url().replacen("mqtt://", &format!("mqtt://headend:{READER_PASSWORD}@"), 1);

    // From the attacker's side: no login, a wrong password, another meter's password.
    let (m0, m1) = (meter_sim::serial(0), meter_sim::serial(1));
    let pw = |s: &str| schemas::mqtt_auth::meter_password(SECRET, s);
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
        if dead.get("topic_not_authorised").copied().unwrap_or(0) >= 1 {
            assert_eq!(dead.values().sum::<i64>(), 1, "only the payload naming another meter: {dead:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "dead letters: {dead:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(p.verify(FROM, TO).expect("nothing but the model is stored"), expected as usize);
    drop(headend);
}

/// A certificate authority and a broker certificate for 127.0.0.1 signed by it, as PEM files in
/// `dir`: (CA certificate, broker certificate, broker key).
fn site_pki(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("broker key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("broker params");
    leaf.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    let cert = leaf.signed_by(&key, &issuer).expect("broker certificate");
    let files = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-broker.pem")),
        dir.join(format!("{name}-broker.key")),
    );
    std::fs::write(&files.0, ca_cert.pem()).expect("write");
    std::fs::write(&files.1, cert.pem()).expect("write");
    std::fs::write(&files.2, key.serialize_pem()).expect("write");
    (files.0, files.1, files.2)
}

/// TLS and per-meter logins together: the head-end and every meter speak `mqtts://` trusting the
/// site's authority and are stored; a plain-TCP client gets no session, and a client that trusts
/// another authority refuses the broker.
#[test]
fn over_tls_meters_and_head_end_trust_only_the_sites_authority() {
    let mut p = Pipeline::new("mqtttls", 10, 62, false).expect("pipeline");
    let (secret, users) = broker_users(&p);
    let (ca, cert, key) = site_pki(p.dir.path(), "site");
    let (other_ca, _, _) = site_pki(p.dir.path(), "other");
    p.broker = Broker::temporary_secure(&BrokerSecurity {
        auth: Some(BrokerAuth { password_file: users.join("passwd"), acl_file: users.join("acl") }),
        tls: Some(BrokerTls { cert_file: cert, key_file: key }),
    })
    .expect("TLS broker");
    let url = p.broker.url();
    assert!(url.starts_with("mqtts://"), "{url}");
    p.spec.mqtt_url = url.replacen("mqtts://", &format!("mqtts://headend:{READER_PASSWORD}@"), 1);
    p.spec.env.push(("HEADEND_MQTT__CA_FILE".into(), ca.to_string_lossy().into()));
    let headend = p.start_headend().expect("head-end over TLS");

    let secret = secret.to_string_lossy().to_string();
    let (ca, other_ca) = (ca.to_string_lossy().to_string(), other_ca.to_string_lossy().to_string());
    let login = ["--per-meter-connections", "--password-secret", secret.as_str(), "--connect-attempts", "1"];
    // From the attacker's side: plain MQTT on the TLS port, and a meter trusting another CA.
    let plain = MqttOptions::new("plain", "127.0.0.1", p.broker.port);
    let (_c, mut conn) = Client::new(plain, 10);
    let first = conn.iter().next().expect("an event");
    assert!(!matches!(first, Ok(Event::Incoming(Packet::ConnAck(_)))), "plain TCP got a session: {first:?}");
    let wrong_ca = p.publish(FROM, TO, &[&login[..], &["--ca-file", other_ca.as_str()]].concat());
    assert!(wrong_ca.is_err(), "a meter trusting another CA connected: {wrong_ca:?}");

    let summary = p.publish(FROM, TO, &[&login[..], &["--ca-file", ca.as_str()]].concat()).expect("publish over TLS");
    let expected = summary["readings"].as_i64().expect("readings");
    p.wait_for_readings(expected, Duration::from_secs(60)).expect("stored");
    assert_eq!(p.verify(FROM, TO).expect("model"), expected as usize);
    assert!(p.dead_letters().expect("dead letters").is_empty());
    drop(headend);
}
