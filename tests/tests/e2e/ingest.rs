//! MQTT → head-end → PostgreSQL, end to end: every reading equals the model, duplicates are stored
//! once, bad messages land in dead letters, and nothing is lost or doubled when the head-end is
//! killed, the database restarts or the broker restarts mid-run.

use std::time::Duration;

use crate::pipeline::Pipeline;
use tests::procs;

/// Two days around the autumn DST change in Belgrade (2026-10-25 has 25 local hours).
const FROM: &str = "2026-10-24T00:00:00Z";
const TO: &str = "2026-10-26T00:00:00Z";
const INTERVALS_2_DAYS: i64 = 192;
const VALUES_PER_MESSAGE: i64 = 5;

fn i(v: &serde_json::Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_else(|| panic!("summary has no {key}: {v}"))
}

#[test]
fn two_thousand_meters_two_days_every_reading_equals_the_model() {
    let meters = 2000;
    let mut p = Pipeline::new("model", meters, 7, false).expect("pipeline");
    let headend = p.start_headend().expect("head-end");
    let summary = p
        .publish(
            FROM,
            TO,
            &["--duplicates", "0.02", "--reorder", "0.05", "--malformed", "0.002", "--unknown-meters", "0.001"],
        )
        .expect("simulator");
    let expected = meters as i64 * INTERVALS_2_DAYS * VALUES_PER_MESSAGE;
    assert_eq!(i(&summary, "readings"), expected, "the simulator published every interval: {summary}");
    p.wait_for_readings(expected, Duration::from_secs(300)).expect("everything stored");

    let checked = p.verify(FROM, TO).expect("stored readings equal the model");
    assert_eq!(checked as i64, expected);

    // Duplicates were stored once and counted; bad messages are dead letters with their reason.
    let faults = &summary["faults"];
    let dead = p.dead_letters().expect("dead letters");
    let malformed =
        dead.get("malformed_json").copied().unwrap_or(0) + dead.get("schema_violation").copied().unwrap_or(0);
    assert_eq!(malformed, i(faults, "malformed"), "{dead:?}");
    assert_eq!(dead.get("unknown_meter").copied().unwrap_or(0), i(faults, "unknown_meters"), "{dead:?}");
    assert!(i(faults, "duplicates") > 0 && i(faults, "malformed") > 0 && i(faults, "unknown_meters") > 0);
    let total_dead: i64 = dead.values().sum();
    assert_eq!(total_dead, malformed + i(faults, "unknown_meters"), "no other refusals: {dead:?}");

    // Every message was acknowledged after its commit, and the metrics add up.
    let start = std::time::Instant::now();
    let metrics = loop {
        let m = headend.metrics().expect("metrics");
        if procs::metric(&m, "headend_mqtt_acks_total") == Some(i(&summary, "messages") as f64) {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not every message acknowledged:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(procs::metric(&metrics, "headend_readings_stored_total"), Some(expected as f64));
    assert_eq!(
        procs::metric(&metrics, "headend_readings_duplicate_total"),
        Some((i(faults, "duplicates") * VALUES_PER_MESSAGE) as f64),
        "each duplicate message's readings counted as duplicates"
    );
    check_readings_api(&p, &headend);

    // The hourly rollup of the plain-PostgreSQL path catches up with what was stored.
    let start = std::time::Instant::now();
    loop {
        let samples = p.query_i64("SELECT coalesce(sum(samples), 0)::bigint FROM readings_hourly").expect("rollup");
        if samples == expected {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "rollup has {samples} of {expected} samples");
        std::thread::sleep(Duration::from_millis(500));
    }
    check_ledger(&p, &headend);
    drop(headend);
}

/// The read-completeness ledger counted each stored 1.8.0 interval exactly once (duplicates not
/// twice), by local day; the DST day (100 intervals) is complete for every meter, and the API's
/// read rate and missing-interval list say so.
fn check_ledger(p: &Pipeline, headend: &tests::procs::Headend) {
    let off = p
        .query_i64(
            "SELECT count(*)::bigint FROM
                 (SELECT meter_id, headend_local_day(ts) AS day, count(*) AS n FROM readings
                  WHERE channel_id = 1 GROUP BY 1, 2) r
             FULL JOIN read_ledger l USING (meter_id, day)
             WHERE l.received IS DISTINCT FROM r.n",
        )
        .expect("ledger");
    assert_eq!(off, 0, "ledger rows that disagree with the stored readings");
    let total = p.query_i64("SELECT sum(received)::bigint FROM read_ledger").expect("ledger total");
    assert_eq!(total, p.meters as i64 * INTERVALS_2_DAYS);

    let (status, body) =
        procs::http_get_auth(headend.http, "/api/v1/read-rate?day=2026-10-25", &p.token).expect("GET read-rate");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["meters"], p.meters as i64, "{v}");
    assert_eq!(v["complete"], p.meters as i64, "{v}");
    assert_eq!(v["expected_intervals"], p.meters as i64 * 100, "25 local hours: {v}");
    assert_eq!(v["received"], p.meters as i64 * 100, "{v}");
    assert_eq!(v["within_72h"], 0, "the intervals are weeks old, not late by hours: {v}");

    let (status, body) = procs::http_get_auth(
        headend.http,
        "/api/v1/meters/SIM00000003/missing?from=2026-10-25&to=2026-10-25",
        &p.token,
    )
    .expect("GET");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["missing"].as_array().map(Vec::len), Some(0), "{v}");
    // The day before is only partly in the published span (it starts at 02:00 local).
    let (_, body) = procs::http_get_auth(
        headend.http,
        "/api/v1/meters/SIM00000003/missing?from=2026-10-24&to=2026-10-24",
        &p.token,
    )
    .expect("GET");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["missing"].as_array().map(Vec::len), Some(8), "00:00-02:00 local are before the span: {v}");
    assert_eq!(v["missing"][0], "2026-10-23T22:15:00Z", "{v}");
}

/// SIGTERM mid-run: the head-end stops intake, commits, acknowledges and exits 0; SIGKILL mid-run:
/// whatever was not acknowledged is redelivered. Restarted each time, it ends with every reading
/// exactly once.
#[test]
fn headend_terminated_and_killed_mid_run_loses_and_doubles_nothing() {
    let meters = 1000;
    let to = "2026-10-25T00:00:00Z";
    let from = FROM;
    let expected = meters as i64 * 96 * VALUES_PER_MESSAGE;
    let mut p = Pipeline::new("kill", meters, 11, false).expect("pipeline");
    let mut headend = p.start_headend().expect("head-end");
    let (mut sim, sim_log) = p.spawn_publisher(from, to, &["--rate", "8000"]).expect("simulator");

    wait_stored_at_least(&p, expected / 5);
    headend.proc.signal("TERM").expect("SIGTERM");
    let status = headend.proc.wait(Duration::from_secs(60)).expect("graceful exit");
    assert!(status.success(), "graceful shutdown exits 0: {status}; log: {}", headend.proc.log_tail(3000));
    let mut headend = p.start_headend().expect("head-end again");

    wait_stored_at_least(&p, expected / 2);
    // The graceful stop acknowledged everything it had committed: nothing committed came again.
    let m = headend.metrics().expect("metrics");
    assert_eq!(procs::metric(&m, "headend_readings_duplicate_total"), Some(0.0), "redelivered after SIGTERM:\n{m}");
    headend.proc.kill().expect("SIGKILL");
    let stored = p.query_i64("SELECT count(*) FROM readings").expect("count");
    assert!(stored < expected, "killed mid-run ({stored} of {expected} stored)");
    std::thread::sleep(Duration::from_millis(500));
    let headend = p.start_headend().expect("head-end after the kill");

    let status = sim.wait(Duration::from_secs(300)).expect("simulator ends");
    assert!(status.success(), "simulator: {}", sim.log_tail(2000));
    let summary = Pipeline::summary_of(&sim_log).expect("summary");
    assert_eq!(i(&summary, "readings"), expected);
    p.wait_for_readings(expected, Duration::from_secs(300)).expect("everything stored");
    assert_eq!(p.verify(from, to).expect("equal to the model") as i64, expected);
    drop(headend);
}

/// PostgreSQL crashes mid-run: the writer sees and counts the outage; the head-end is then killed
/// while holding uncommitted batches and restarted once the database is back. Anything acknowledged
/// before its commit would be missing; every reading ends up stored once.
#[test]
fn database_restart_mid_run_loses_and_doubles_nothing() {
    let meters = 1000;
    let to = "2026-10-25T00:00:00Z";
    let expected = meters as i64 * 96 * VALUES_PER_MESSAGE;
    let mut p = Pipeline::new("dbrestart", meters, 13, true).expect("pipeline");
    let mut headend = p.start_headend().expect("head-end");
    let (mut sim, _) = p.spawn_publisher(FROM, to, &["--rate", "8000"]).expect("simulator");
    wait_stored_at_least(&p, expected / 4);
    let cluster = p.cluster.as_mut().expect("private cluster");
    cluster.stop("immediate").expect("database down (crash)");
    assert!(sim.is_running(), "the database went down while the simulator was still publishing");
    std::thread::sleep(Duration::from_secs(2));
    let m = headend.metrics().expect("metrics");
    assert!(procs::metric_sum(&m, "headend_writer_errors_total") > 0.0, "the outage was seen and counted:\n{m}");
    // Killed while it holds uncommitted batches: anything it acknowledged early would be lost.
    headend.proc.kill().expect("SIGKILL during the outage");
    std::thread::sleep(Duration::from_secs(1));
    p.cluster.as_mut().expect("private cluster").start().expect("database up");
    let headend = p.start_headend().expect("head-end after the outage");
    let status = sim.wait(Duration::from_secs(300)).expect("simulator ends");
    assert!(status.success(), "simulator: {}", sim.log_tail(2000));
    p.wait_for_readings(expected, Duration::from_secs(300)).expect("everything stored");
    assert_eq!(p.verify(FROM, to).expect("equal to the model") as i64, expected);
    drop(headend);
}

/// The broker restarts while the head-end is still draining a backlog: the persistent session and
/// its queue survive, unacknowledged messages are redelivered, duplicates are ignored.
#[test]
fn broker_restart_mid_run_loses_and_doubles_nothing() {
    let meters = 1000;
    let to = "2026-10-25T00:00:00Z";
    let expected = meters as i64 * 96 * VALUES_PER_MESSAGE;
    let mut p = Pipeline::new("brokerrestart", meters, 17, false).expect("pipeline");
    // Register the head-end's persistent session, then stop it so a backlog builds at the broker.
    let mut headend = p.start_headend().expect("head-end");
    headend.proc.signal("TERM").expect("SIGTERM");
    headend.proc.wait(Duration::from_secs(60)).expect("exit");
    let summary = p.publish(FROM, to, &[]).expect("simulator");
    assert_eq!(i(&summary, "readings"), expected);
    let headend = p.start_headend().expect("head-end drains the backlog");
    wait_stored_at_least(&p, expected / 4);
    p.broker.stop().expect("broker down");
    let stored = p.query_i64("SELECT count(*) FROM readings").expect("count");
    assert!(stored < expected, "the broker went down mid-run ({stored} of {expected} stored)");
    p.broker.start().expect("broker up");
    p.wait_for_readings(expected, Duration::from_secs(300)).expect("everything stored");
    assert_eq!(p.verify(FROM, to).expect("equal to the model") as i64, expected);
    let m = headend.metrics().expect("metrics");
    assert!(procs::metric(&m, "headend_mqtt_connection_errors_total").unwrap_or(0.0) >= 1.0, "reconnected:\n{m}");
    drop(headend);
}

fn wait_stored_at_least(p: &Pipeline, n: i64) {
    let start = std::time::Instant::now();
    loop {
        if p.query_i64("SELECT count(*) FROM readings").unwrap_or(0) >= n {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "fewer than {n} readings stored after 2 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The readings API serves what the model says, and refuses bad requests with a clear status.
fn check_readings_api(p: &Pipeline, headend: &tests::procs::Headend) {
    let serial = "SIM00000002";
    let path = format!("/api/v1/meters/{serial}/readings?from={FROM}&to={TO}&obis=1.0.1.8.0,1.0.32.7.0");
    let (status, body) = procs::http_get(headend.http, &path).expect("GET readings");
    assert_eq!(status, 401, "no readings without a session or token: {body}");
    let (status, body) = procs::http_get_auth(headend.http, &path, &p.token).expect("GET readings");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let model = meter_sim::Model::with_meters(p.seed, p.meters);
    let span = meter_sim::Span { from: crate::pipeline::ts(FROM), to: crate::pipeline::ts(TO) };
    let chans = [meter_sim::Channel::ImportTotal, meter_sim::Channel::Voltage];
    let want = meter_sim::expect::expected_payloads(&model, serial, span, &chans).expect("model");
    let series = v["series"].as_array().expect("series");
    assert_eq!(series.len(), 2, "{v}");
    for (k, s) in series.iter().enumerate() {
        let points = s["points"].as_array().expect("points");
        assert_eq!(points.len(), want.len(), "{}", s["obis"]);
        for (pt, w) in points.iter().zip(&want) {
            let ts: chrono::DateTime<chrono::Utc> = pt["ts"].as_str().expect("ts").parse().expect("time");
            assert_eq!(ts, w.ts);
            let got = pt["value"].as_f64().expect("value");
            assert!((got - w.values[k].1.as_f64()).abs() < 1e-9, "{} at {ts}: {got} vs {:?}", s["obis"], w.values[k]);
        }
    }
    for (path, code) in [
        ("/api/v1/meters/NOPE0001/readings", 404),
        (&*format!("/api/v1/meters/{serial}/readings?obis=9.9.9"), 400),
        (&*format!("/api/v1/meters/{serial}/readings?from={TO}&to={FROM}"), 400),
        (&*format!("/api/v1/meters/{serial}/readings?from=yesterday"), 400),
        (&*format!("/api/v1/meters/{serial}/readings?limit=5"), 400),
    ] {
        let (status, body) = procs::http_get_auth(headend.http, path, &p.token).expect("GET");
        assert_eq!(status, code, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
        assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{path}: {body}");
    }
}
