//! MQTT → head-end → PostgreSQL, end to end: every reading equals the model, duplicates are stored
//! once, bad messages land in dead letters, and nothing is lost or doubled when the head-end is
//! killed, the database restarts or the broker restarts mid-run.

use std::time::Duration;

use crate::pipeline::Pipeline;
use schemas::migrations::Storage;
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
    every_reading_equals_the_model(Storage::Plain, 2000);
}

/// The same on TimescaleDB (fewer meters: CI time), then what only that path has: a hypertable in
/// chunks, compressed chunks read back equal to the model and written to again, the continuous
/// aggregate's policy materialising weeks-old data, and retention by chunk.
#[test]
fn timescale_two_days_every_reading_equals_the_model_compressed_and_rolled_up() {
    let (p, headend, expected) = every_reading_equals_the_model(Storage::Timescale, 300);
    check_timescale(&p, &headend, expected);
    drop(headend);
}

/// A reading that arrives 60 days late, after the continuous aggregate's refresh policy has moved
/// its watermark to the present, reaches `readings_hourly` when the policy runs next (migration 12;
/// with migration 2's 30-day window it never did: neither materialised nor real-time).
#[test]
fn timescale_a_reading_60_days_late_reaches_the_hourly_rollup() {
    let meters = 20;
    let mut p = Pipeline::on(Storage::Timescale, "late", meters, 5).expect("pipeline");
    let headend = p.start_headend().expect("head-end");
    let hour = |t: chrono::DateTime<chrono::Utc>| {
        chrono::DurationRound::duration_trunc(t, chrono::Duration::hours(1)).expect("hour")
    };
    let now = hour(chrono::Utc::now());
    let per_hour = meters as i64 * 4 * VALUES_PER_MESSAGE;
    let (from, to) = ((now - chrono::Duration::hours(3)).to_rfc3339(), (now - chrono::Duration::hours(2)).to_rfc3339());
    assert_eq!(i(&p.publish(&from, &to, &[]).expect("simulator"), "readings"), per_hour);
    p.wait_for_readings(per_hour, Duration::from_secs(60)).expect("recent hour stored");
    run_policy(&p, "policy_refresh_continuous_aggregate");
    assert!(materialized_hours(&p) > 0, "the recent hour materialised: the watermark is near now");

    let late = now - chrono::Duration::days(60);
    let (from, to) = ((late - chrono::Duration::hours(1)).to_rfc3339(), late.to_rfc3339());
    assert_eq!(i(&p.publish(&from, &to, &[]).expect("simulator"), "readings"), per_hour);
    p.wait_for_readings(2 * per_hour, Duration::from_secs(60)).expect("late hour stored");
    run_policy(&p, "policy_refresh_continuous_aggregate");
    let late_rows = p.rt.block_on(async {
        let c = p.db.client().await.expect("db");
        let since = late - chrono::Duration::hours(2);
        c.query_one(
            "SELECT count(*), coalesce(sum(samples), 0)::bigint FROM readings_hourly WHERE hour >= $1 AND hour < $2",
            &[&since, &late],
        )
        .await
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .expect("late hours")
    });
    // Interval ends in (late − 1 h, late]: three in the hour before `late`, one at `late` itself.
    assert_eq!(late_rows.1, per_hour - meters as i64 * VALUES_PER_MESSAGE, "the late hour's samples: {late_rows:?}");
    assert_eq!(hourly_disagreements(&p), 0, "readings_hourly equals the raw readings hour by hour");
    drop(headend);
}

/// The model test on one storage path: the pipeline, its head-end (still running) and the number
/// of readings stored.
fn every_reading_equals_the_model(storage: Storage, meters: usize) -> (Pipeline, procs::Headend, i64) {
    let mut p = Pipeline::on(storage, "model", meters, 7).expect("pipeline");
    let recorded = format!("SELECT count(*) FROM schema_migrations WHERE storage <> '{}'", p.storage.as_str());
    assert_eq!(p.query_i64(&recorded).expect("schema_migrations"), 0, "migrated for {storage:?}");
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

    // The hourly rollup catches up with what was stored (plain: refreshed from rollup_pending;
    // TimescaleDB: the continuous aggregate, real-time above its watermark). Below the watermark
    // TimescaleDB shows what its last refresh materialised: when the refresh policy happened to run
    // while these readings were arriving (the job of a new database starts whenever its scheduler
    // does), the hours written after it are stale until its next run, five minutes on. The test
    // does not wait for the schedule: it runs that next refresh itself.
    let start = std::time::Instant::now();
    let mut refreshed = false;
    loop {
        let samples = p.query_i64("SELECT coalesce(sum(samples), 0)::bigint FROM readings_hourly").expect("rollup");
        if samples == expected {
            break;
        }
        if storage == Storage::Timescale && !refreshed && start.elapsed() > Duration::from_secs(5) {
            run_policy(&p, "policy_refresh_continuous_aggregate");
            refreshed = true;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "rollup has {samples} of {expected} samples");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(hourly_disagreements(&p), 0, "readings_hourly equals the raw readings hour by hour");
    check_ledger(&p, &headend);
    (p, headend, expected)
}

/// Runs the job of a TimescaleDB policy (`proc_name` in `timescaledb_information.jobs`) now, in
/// this session (`CALL run_job`), and returns its id.
pub fn run_policy(p: &Pipeline, proc_name: &str) -> i32 {
    p.rt.block_on(async {
        let c = p.db.client().await?;
        let id: i32 = c
            .query_one("SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = $1", &[&proc_name])
            .await?
            .get(0);
        c.batch_execute(&format!("CALL run_job({id})")).await?;
        anyhow::Ok(id)
    })
    .unwrap_or_else(|e| panic!("running the {proc_name} job: {e:#}"))
}

/// Hour × meter × channel groups where `readings_hourly` disagrees with the raw readings (count,
/// sum, first/last, min/max), either side missing included.
pub fn hourly_disagreements(p: &Pipeline) -> i64 {
    p.query_i64(
        "SELECT count(*)::bigint FROM
             (SELECT date_bin('1 hour', ts, TIMESTAMPTZ 'epoch') AS hour, meter_id, channel_id, count(*)::integer AS samples,
                     sum(value) AS sum_value, min(value) AS min_value, max(value) AS max_value,
                     min(ts) AS first_ts, max(ts) AS last_ts,
                     (array_agg(value ORDER BY ts))[1] AS first_value,
                     (array_agg(value ORDER BY ts DESC))[1] AS last_value
              FROM readings GROUP BY 1, 2, 3) r
         FULL JOIN readings_hourly h USING (hour, meter_id, channel_id)
         WHERE (r.samples, r.sum_value, r.min_value, r.max_value, r.first_ts, r.last_ts, r.first_value, r.last_value)
               IS DISTINCT FROM
               (h.samples, h.sum_value, h.min_value, h.max_value, h.first_ts, h.last_ts, h.first_value, h.last_value)",
    )
    .expect("hourly comparison")
}

/// Rows materialised by the continuous aggregate (its hypertable, not the real-time part).
pub fn materialized_hours(p: &Pipeline) -> i64 {
    p.rt.block_on(async {
        let c = p.db.client().await?;
        let row = c
            .query_one(
                "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
                 FROM timescaledb_information.continuous_aggregates WHERE view_name = 'readings_hourly'",
                &[],
            )
            .await?;
        let table: String = row.get(0);
        anyhow::Ok(c.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get::<_, i64>(0))
    })
    .expect("materialized rows")
}

fn check_timescale(p: &Pipeline, headend: &procs::Headend, expected: i64) {
    // A hypertable with a chunk per UTC day (interval ends 2026-10-24 00:15 … 2026-10-26 00:00).
    let hypertables = p
        .query_i64("SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'")
        .expect("hypertables");
    assert_eq!(hypertables, 1, "readings is a hypertable");
    let chunks = p.query_i64("SELECT count(*) FROM show_chunks('readings')").expect("chunks");
    assert_eq!(chunks, 3, "one chunk per UTC day touched");

    // The refresh policy materialises these weeks-old hours (not only the real-time part), and
    // every hour equals the raw readings.
    let groups = p
        .query_i64("SELECT count(*) FROM (SELECT DISTINCT date_bin('1 hour', ts, TIMESTAMPTZ 'epoch'), meter_id, channel_id FROM readings) g")
        .expect("groups");
    run_policy(p, "policy_refresh_continuous_aggregate");
    assert_eq!(materialized_hours(p), groups, "the refresh policy materialised every hour");
    assert_eq!(hourly_disagreements(p), 0, "readings_hourly equals the raw readings hour by hour");

    // Compressed (what the compression policy does after storage.compress_after), every reading
    // still equals the model, and so does every hour.
    let compressed =
        p.query_i64("SELECT count(compress_chunk(c))::bigint FROM show_chunks('readings') c").expect("compress_chunk");
    assert_eq!(compressed, chunks);
    let still = p
        .query_i64(
            "SELECT count(*) FROM timescaledb_information.chunks
             WHERE hypertable_name = 'readings' AND is_compressed",
        )
        .expect("compressed chunks");
    assert_eq!(still, chunks, "every chunk compressed");
    let (before, after) =
        p.rt.block_on(async {
            let c = p.db.client().await?;
            let r = c
                .query_one(
                    "SELECT sum(before_compression_total_bytes)::bigint, sum(after_compression_total_bytes)::bigint
                     FROM chunk_compression_stats('readings')",
                    &[],
                )
                .await?;
            anyhow::Ok((r.get::<_, i64>(0), r.get::<_, i64>(1)))
        })
        .expect("compression stats");
    assert!(after * 4 < before, "compression saves space: {before} → {after} bytes");
    assert_eq!(p.verify(FROM, TO).expect("compressed readings equal the model") as i64, expected);
    assert_eq!(hourly_disagreements(p), 0, "readings_hourly over compressed chunks");
    check_readings_api(p, headend);

    // The head-end writes into compressed chunks: the first hour again is stored as duplicates,
    // nothing twice.
    let dup_before =
        procs::metric(&headend.metrics().expect("metrics"), "headend_readings_duplicate_total").unwrap_or(0.0);
    let summary = p.publish(FROM, "2026-10-24T01:00:00Z", &[]).expect("simulator again");
    let again = i(&summary, "readings");
    let start = std::time::Instant::now();
    loop {
        let m = headend.metrics().expect("metrics");
        let dup = procs::metric(&m, "headend_readings_duplicate_total").unwrap_or(0.0);
        if dup - dup_before >= again as f64 {
            assert_eq!(dup - dup_before, again as f64, "every reading of the hour again is a duplicate");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{dup} duplicates:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(p.query_i64("SELECT count(*) FROM readings").expect("count"), expected, "nothing stored twice");

    // Retention by chunk: the day before the cutoff goes, whole; the hourly rollup keeps its hours
    // (as the plain path's rollup table does).
    let hours_before =
        p.query_i64("SELECT count(*) FROM readings_hourly WHERE hour < '2026-10-25T00:00:00Z'").expect("hours");
    let dropped = p.query_i64("SELECT headend_drop_partitions_before('2026-10-25')::bigint").expect("retention");
    assert_eq!(dropped, 1, "the chunk of 2026-10-24 dropped");
    assert_eq!(p.query_i64("SELECT count(*) FROM show_chunks('readings')").expect("chunks"), chunks - 1);
    assert_eq!(
        p.query_i64("SELECT count(*) FROM readings WHERE ts < '2026-10-25T00:00:00Z'").expect("old"),
        0,
        "nothing older than the cutoff"
    );
    run_policy(p, "policy_refresh_continuous_aggregate");
    let hours_after =
        p.query_i64("SELECT count(*) FROM readings_hourly WHERE hour < '2026-10-25T00:00:00Z'").expect("hours");
    assert_eq!(hours_after, hours_before, "the hourly rollup outlives the raw readings");
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

/// Received messages are bounded by bytes, not only by count: with `writer.queue_bytes` at its
/// smallest (64 KiB), a publisher sending 200 KiB payloads (each refused: `payload_too_large`)
/// beside the simulator's traffic never makes the head-end hold more than 64 KiB of received
/// messages at once; every oversize payload is kept as a dead letter with all its bytes, every model
/// reading is stored, and the bytes held return to zero.
#[test]
fn received_bytes_held_stay_within_the_byte_budget_under_oversize_payloads() {
    const BUDGET: u32 = 65_536;
    const BIG: usize = 40;
    const BIG_BYTES: usize = 200 * 1024;
    let meters = 200;
    let to = "2026-10-24T06:00:00Z";
    let expected = meters as i64 * 24 * VALUES_PER_MESSAGE;
    let mut p = Pipeline::new("bytebudget", meters, 23, false).expect("pipeline");
    p.spec.env.push(("HEADEND_WRITER__QUEUE_BYTES".into(), BUDGET.to_string()));
    let headend = p.start_headend().expect("head-end");
    let port = p.broker.port;
    let flood = std::thread::spawn(move || {
        let mut o = rumqttc::MqttOptions::new("flood", "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20).set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = rumqttc::Client::new(o, BIG + 10);
        for _ in 0..BIG {
            client
                .publish("meters/SIM00000001/readings", rumqttc::QoS::AtLeastOnce, false, vec![b'x'; BIG_BYTES])
                .expect("publish");
        }
        let mut acked = 0;
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("flood connection: {e}"),
            }
            if acked == BIG {
                break;
            }
        }
    });
    let summary = p.publish(FROM, to, &[]).expect("simulator");
    flood.join().expect("flood publisher");
    assert_eq!(i(&summary, "readings"), expected);
    p.wait_for_readings(expected, Duration::from_secs(120)).expect("every reading stored");
    let start = std::time::Instant::now();
    loop {
        let dead = p.dead_letters().expect("dead letters");
        if dead.get("payload_too_large").copied().unwrap_or(0) >= BIG as i64 {
            assert_eq!(dead.get("payload_too_large").copied(), Some(BIG as i64), "{dead:?}");
            assert_eq!(dead.values().sum::<i64>(), BIG as i64, "nothing else refused: {dead:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "dead letters so far: {dead:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = p.query_i64("SELECT min(length(payload))::bigint FROM dead_letters").expect("payload sizes");
    assert_eq!(kept, BIG_BYTES as i64, "a refused payload is kept whole");
    assert_eq!(p.verify(FROM, to).expect("equal to the model") as i64, expected);
    let start = std::time::Instant::now();
    let m = loop {
        let m = headend.metrics().expect("metrics");
        if procs::metric(&m, "headend_ingest_held_bytes") == Some(0.0) {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "bytes still held after everything committed:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(procs::metric(&m, "headend_ingest_budget_bytes"), Some(f64::from(BUDGET)), "{m}");
    let peak = procs::metric(&m, "headend_ingest_held_bytes_peak").expect("peak");
    assert!(peak <= f64::from(BUDGET), "held {peak} bytes at once, above the budget of {BUDGET}");
    assert_eq!(peak, f64::from(BUDGET), "an oversize payload takes the whole budget, alone");
    drop(headend);
}

/// The soak at a small scale (`cargo xtask soak` runs 205k meters for 6 simulated hours): a
/// thousand meters publish six simulated hours paced at 600× while the broker restarts,
/// PostgreSQL crashes and the head-end is SIGKILLed at seeded points, each aimed at an interval's
/// burst (messages received, being written and acknowledged). Every reading of the model
/// is stored once and equal to the model, every interval completes, nothing is dead-lettered.
#[test]
fn soak_through_broker_restart_database_crash_and_kill_stores_every_reading_once() {
    let dir = tempfile::Builder::new().prefix("hes-e2e-soak-").tempdir().expect("temp dir");
    let cfg = tests::soak::SoakConfig {
        meters: 1000,
        from: crate::pipeline::ts("2026-11-20T00:00:00Z"),
        hours: 6,
        speed: 600.0,
        seed: 23,
        fault_seed: 5,
        faults_per_kind: 1,
        // Each fault while an interval's 1,000 messages are in flight (they take ~0.2 s here).
        aim_window: Some(Duration::from_millis(150)),
        outage: Duration::from_secs(2),
        sample_every: Duration::from_millis(100),
        dir: dir.path().to_path_buf(),
        headend_env: vec![("HEADEND_WRITER__MAX_WAIT".into(), "100ms".into())],
    };
    let soak = match tests::soak::run(&cfg) {
        Ok(s) => s,
        Err(e) => panic!("soak: {e:#}; logs kept in {}", dir.keep().display()),
    };
    let report = soak.report();
    eprintln!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
    assert_eq!(soak.expected, 1000 * 24 * 4);
    assert_eq!(soak.stored, soak.expected, "stored once each: {report}");
    assert_eq!(soak.verified as i64, soak.expected, "equal to the model: {report}");
    assert!(soak.dead_letters.is_empty(), "nothing dead-lettered: {report}");
    let kinds: Vec<&str> = soak.faults.iter().map(|f| f.kind.as_str()).collect();
    for kind in ["broker_restart", "database_crash", "headend_kill"] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 1, "{kind} happened once: {report}");
    }
    assert_eq!(soak.incarnations.len(), 2, "one head-end process before the kill, one after: {report}");
    // Both outages were seen by the head-end, not slept through.
    let seen = |f: fn(&tests::soak::Incarnation) -> f64| soak.incarnations.iter().map(f).sum::<f64>();
    assert!(seen(|i| i.mqtt_connection_errors) >= 1.0, "the broker restart was seen: {report}");
    assert!(soak.lags().iter().all(Option::is_some), "every interval completed: {report}");
    let hours = report["rss_per_simulated_hour"].as_array().expect("hours");
    assert_eq!(hours.len(), 6, "{report}");
}
