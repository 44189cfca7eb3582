//! The operator dashboard on the real database, through the broker and the head-end: 200 simulated
//! meters publish the last 30 hours up to now, except the last four of the fleet (the end of the third
//! building, on its own transformer): two stop 26 hours ago and two never publish. Then:
//!
//! - meters not reporting, filtered by that transformer (and not filtered), are exactly those four,
//!   with their last readings; a longer silence threshold keeps only the two that never reported;
//! - the read-rate JSON equals what the ledger holds, day by day;
//! - the meter list pages through all 200 meters, 50 a page, with the total;
//! - a voltage set out of range with SQL is listed for its day with its count and extreme;
//! - the load of a transformer per hour equals its master meter's register differences;
//! - every `/api/v1/ops` route and `/ops` page refuses a household (403) and an anonymous caller;
//!   accounts are for admins only; the admin's forms work with the session's CSRF token and fail
//!   without it; a command form without its note is sent back.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
use serde_json::Value;
use tests::procs;

use crate::pipeline::Pipeline;
use schemas::migrations::Storage;

const SEED: u64 = 42;
/// Seed 42: buildings of 72 and 119 meters, and 9 of the third (its master is meter index 191).
const METERS: usize = 200;
/// The third building's transformer.
const TRANSFORMER: &str = "TS-NI-0172";
const PASSWORD: &str = "ops-e2e-password-1";

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> procs::Response {
    procs::http_request(addr, "GET", path, headers, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn json(addr: SocketAddr, path: &str, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    let (status, _, body) = get(addr, path, &[("Authorization", &auth)]);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

fn serials(page: &Value) -> Vec<String> {
    page["meters"]
        .as_array()
        .expect("meters")
        .iter()
        .map(|m| m["serial"].as_str().expect("serial").to_owned())
        .collect()
}

fn cookie<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .find_map(|(_, v)| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or(""))
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_field(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap_or("").to_owned()
}

/// Logs in through the login form as a browser does; the session cookie.
fn login(addr: SocketAddr, username: &str) -> String {
    let (_, headers, html) = get(addr, "/login", &[]);
    let pre = cookie(&headers, "hes_pre").expect("pre-login cookie").to_owned();
    assert_eq!(csrf_field(&html), pre, "the login form carries the pre-login token");
    let body = format!("csrf={pre}&username={username}&password={PASSWORD}&next=");
    let (status, headers, _) = procs::http_request(
        addr,
        "POST",
        "/login",
        &[("Cookie", &format!("hes_pre={pre}")), ("Content-Type", "application/x-www-form-urlencoded")],
        Some(&body),
    )
    .expect("POST /login");
    assert!(status == 303 || status == 302, "login answered {status}");
    cookie(&headers, "hes_session").expect("session cookie").to_owned()
}

#[test]
fn operators_find_silent_meters_and_read_the_grid() {
    operators_dashboard(Storage::Plain);
}

/// The same on TimescaleDB: the load per transformer comes from the continuous aggregate (its
/// real-time part for hours the refresh policy has not materialised yet).
#[test]
fn timescale_operators_find_silent_meters_and_read_the_grid() {
    operators_dashboard(Storage::Timescale);
}

fn operators_dashboard(storage: Storage) {
    let mut p = Pipeline::on(storage, "ops", METERS, SEED).expect("pipeline");
    let url = p.db.url.clone();
    for (user, role, households) in [("ops-admin", "admin", vec![]), ("ops-house", "household", vec!["H00000002"])] {
        procs::create_account(&url, user, role, &households, PASSWORD).expect("account");
    }
    let admin_token = procs::api_token(&url, "ops-admin", "e2e").expect("admin token");
    let house_token = procs::api_token(&url, "ops-house", "e2e").expect("household token");
    let token = p.token.clone();
    let headend = p.start_headend().expect("head-end");
    let addr = headend.http;

    // The last 30 hours up to the last 15-minute boundary: 198 meters until 26 hours ago, 196 after.
    let to = Utc::now().duration_trunc(TimeDelta::minutes(15)).expect("boundary");
    let (from, cut) = (to - TimeDelta::hours(30), to - TimeDelta::hours(26));
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut expected = 0;
    for (meters, a, b) in [(METERS - 2, from, cut), (METERS - 4, cut, to)] {
        p.meters = meters;
        expected += p.publish(&rfc(a), &rfc(b), &[]).expect("simulator")["readings"].as_i64().expect("readings");
    }
    p.meters = METERS;
    p.wait_for_readings(expected, Duration::from_secs(300)).expect("readings stored");
    let stopped = ["SIM00000197", "SIM00000198"];
    let never = ["SIM00000199", "SIM00000200"];
    let silent: Vec<&str> = stopped.iter().chain(&never).copied().collect();

    // Not reporting: exactly the silent four, by transformer and over the fleet.
    let by_t = json(addr, &format!("/api/v1/ops/meters?status=not_reporting&transformer={TRANSFORMER}"), &token);
    assert_eq!(serials(&by_t), silent, "{by_t}");
    assert_eq!(by_t["total"], 4);
    let all = json(addr, "/api/v1/ops/meters", &token);
    assert_eq!(serials(&all), silent);
    for m in by_t["meters"].as_array().expect("meters") {
        let serial = m["serial"].as_str().expect("serial");
        let last = m["last_reading"].as_str().map(|t| t.parse::<DateTime<Utc>>().expect("time"));
        assert_eq!(last, stopped.contains(&serial).then_some(cut), "{serial}");
        assert_eq!(m["transformer"], TRANSFORMER);
    }
    let longer = json(addr, &format!("/api/v1/ops/meters?hours=27&transformer={TRANSFORMER}"), &token);
    assert_eq!(serials(&longer), never);
    let page =
        get(addr, &format!("/ops/meters?transformer={TRANSFORMER}"), &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(page.0, 200);
    for s in &silent {
        assert!(page.2.contains(&format!("/ops/meters/{s}")), "the page links {s}");
    }

    // Pagination: 200 meters in service, 50 a page, each once.
    let mut seen = HashSet::new();
    for n in 1..=4 {
        let pg = json(addr, &format!("/api/v1/ops/meters?status=all&page={n}"), &token);
        assert_eq!((pg["total"].as_i64(), pg["per_page"].as_i64()), (Some(200), Some(50)));
        let s = serials(&pg);
        assert_eq!(s.len(), 50, "page {n}");
        seen.extend(s);
    }
    assert_eq!(seen.len(), 200);
    let past = json(addr, "/api/v1/ops/meters?status=all&page=5", &token);
    assert_eq!((past["total"].as_i64(), serials(&past).len()), (Some(200), 0));
    let (_, _, html) = get(addr, "/ops/meters?status=all&page=2", &[("Authorization", &format!("Bearer {token}"))]);
    assert!(html.contains("2 / 4") && html.contains("page=3"), "the pager of page 2");

    // Read rate: what the ledger holds, day by day (and the one-day route agrees).
    let today = to.with_timezone(&chrono_tz::Europe::Belgrade).date_naive();
    let first = today - TimeDelta::days(2);
    let rates = json(addr, &format!("/api/v1/ops/read-rate?from={first}&to={today}"), &token);
    let rates = rates.as_array().expect("days");
    assert_eq!(rates.len(), 3);
    let ledger: Vec<(NaiveDate, i64, i64, i64, i64)> =
        p.rt.block_on(async {
            let c = p.db.client().await?;
            let rows = c
                .query(
                    "SELECT d::date, count(l.meter_id) FILTER (WHERE l.received >= l.expected),
                            COALESCE(sum(LEAST(l.received, l.expected)), 0)::bigint,
                            COALESCE(sum(LEAST(l.within_1h, l.expected)), 0)::bigint,
                            headend_intervals_in_day(d::date)::bigint * 200
                     FROM generate_series($1::date, $2::date, '1 day') d
                     LEFT JOIN read_ledger l ON l.day = d::date
                     GROUP BY d ORDER BY d",
                    &[&first, &today],
                )
                .await?;
            anyhow::Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect())
        })
        .expect("ledger");
    for (r, (day, complete, received, h1, expected)) in rates.iter().zip(&ledger) {
        assert_eq!(r["day"], day.to_string());
        assert_eq!(r["meters"], 200);
        assert_eq!(
            (r["complete"].as_i64(), r["received"].as_i64(), r["within_1h"].as_i64()),
            (Some(*complete), Some(*received), Some(*h1)),
            "{day}"
        );
        assert_eq!(r["expected_intervals"].as_i64(), Some(*expected));
        assert_eq!(*r, json(addr, &format!("/api/v1/read-rate?day={day}"), &token));
    }
    assert!(ledger.iter().map(|l| l.2).sum::<i64>() > 0, "the ledger counted the readings");

    // Voltage: two values of SIM00000010 set to 260.0 V.
    // Two interval ends of one local day (an interval belongs to the day of its start).
    let day_of =
        |t: DateTime<Utc>| (t - TimeDelta::minutes(15)).with_timezone(&chrono_tz::Europe::Belgrade).date_naive();
    let mut t = to - TimeDelta::hours(3);
    if day_of(t) != day_of(t + TimeDelta::minutes(15)) {
        t -= TimeDelta::minutes(30);
    }
    let v_ts = [t, t + TimeDelta::minutes(15)];
    let v_day = day_of(t);
    let n: u64 =
        p.rt.block_on(async {
            let c = p.db.client().await?;
            anyhow::Ok(
                c.execute(
                    "UPDATE readings SET value = 2600
                     WHERE meter_id = (SELECT id FROM meters WHERE serial = 'SIM00000010') AND channel_id = 5
                       AND ts = ANY($1)",
                    &[&v_ts.to_vec()],
                )
                .await?,
            )
        })
        .expect("update");
    assert_eq!(n, 2);
    let volts = json(addr, &format!("/api/v1/ops/voltage?day={v_day}"), &token);
    assert_eq!(volts["total"], 1, "{volts}");
    let m = &volts["meters"][0];
    assert_eq!(
        (m["serial"].as_str(), m["outside"].as_i64(), m["above"].as_i64()),
        (Some("SIM00000010"), Some(2), Some(2))
    );
    assert_eq!(m["max_volts"].as_f64(), Some(260.0));
    let (_, _, html) =
        get(addr, &format!("/ops/voltage?day={v_day}"), &[("Authorization", &format!("Bearer {token}"))]);
    assert!(html.contains("/ops/meters/SIM00000010"));

    // Load: the first building's transformer is its master meter (SIM00000001); one hour of it.
    let hour = to.duration_trunc(TimeDelta::hours(1)).expect("hour") - TimeDelta::hours(3);
    let l_day = hour.with_timezone(&chrono_tz::Europe::Belgrade).date_naive();
    let want_wh: i64 = {
        let start = Instant::now();
        loop {
            let got = p.rt.block_on(async {
                let c = p.db.client().await?;
                let r = c
                    .query_one(
                        "SELECT (SELECT count(*) FROM readings_hourly h JOIN meters m ON m.id = h.meter_id
                                 WHERE m.serial = 'SIM00000001' AND h.channel_id = 1 AND h.hour IN ($1, $2)),
                                (SELECT max(value) - min(value) FROM readings r JOIN meters m ON m.id = r.meter_id
                                 WHERE m.serial = 'SIM00000001' AND r.channel_id = 1 AND r.ts IN ($1, $2))",
                        &[&hour, &(hour + TimeDelta::hours(1))],
                    )
                    .await?;
                anyhow::Ok((r.get::<_, i64>(0), r.get::<_, Option<i64>>(1)))
            });
            if let Ok((2, Some(wh))) = got {
                break wh;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the hourly rollup was not refreshed: {got:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let load = json(addr, &format!("/api/v1/ops/load?by=transformer&day={l_day}&top=50"), &token);
    let hours: Vec<DateTime<Utc>> =
        load["hours"].as_array().expect("hours").iter().map(|h| h.as_str().expect("h").parse().expect("t")).collect();
    let i = hours.iter().position(|h| *h == hour).expect("the hour is in the day");
    let group = load["groups"].as_array().expect("groups").iter().find(|g| g["name"] == "TS-BG-0450").expect("group");
    assert_eq!(group["meters"], 1);
    assert_eq!(group["hourly_kwh"][i].as_f64(), Some(want_wh as f64 / 1000.0));

    // Events and the meter page.
    p.rt.block_on(async {
        let c = p.db.client().await?;
        c.execute(
            "INSERT INTO meter_events (meter_id, ts, code, source)
             SELECT id, $1, 1, 2 FROM meters WHERE serial = 'SIM00000198'",
            &[&cut],
        )
        .await?;
        anyhow::Ok(())
    })
    .expect("event");
    let ev = json(addr, &format!("/api/v1/ops/events?kind=power_down&transformer={TRANSFORMER}"), &token);
    assert_eq!(ev["events"][0]["serial"], "SIM00000198", "{ev}");
    let auth = format!("Bearer {token}");
    let (status, _, html) = get(addr, "/ops/meters/SIM00000198", &[("Authorization", &auth)]);
    assert_eq!(status, 200);
    assert!(html.contains(TRANSFORMER) && html.contains("energy-chart"), "the meter page");
    assert_eq!(get(addr, "/ops/meters/SIM99999999", &[("Authorization", &auth)]).0, 404);
    // A command without its note is sent back to the form (no DLMS meter here; nothing audited).
    let (status, headers, _) = procs::http_request(
        addr,
        "POST",
        "/ops/meters/SIM00000198/commands",
        &[("Authorization", &auth), ("Content-Type", "application/x-www-form-urlencoded")],
        Some("command=disconnect&note=&confirm=yes"),
    )
    .expect("POST command");
    let location = headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.as_str());
    assert_eq!((status, location), (303, Some("/ops/meters/SIM00000198?refused=note#commands")));

    // Who may open what.
    let pages = [
        "/ops",
        "/ops/meters",
        "/ops/meters/SIM00000198",
        "/ops/load",
        "/ops/voltage",
        "/ops/events",
        "/ops/buildings",
        "/ops/buildings/B000001",
        "/ops/accounts",
    ];
    let api = [
        "/api/v1/ops/read-rate",
        "/api/v1/ops/summary",
        "/api/v1/ops/meters",
        "/api/v1/ops/load",
        "/api/v1/ops/voltage",
        "/api/v1/ops/events",
        "/api/v1/ops/buildings",
    ];
    let doc = json(addr, "/api/openapi.json", &token);
    let documented: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .filter(|p| p.starts_with("/api/v1/ops/"))
        .collect();
    assert_eq!(documented.len(), api.len(), "every ops route is tested: {documented:?}");
    let house = format!("Bearer {house_token}");
    let admin = format!("Bearer {admin_token}");
    for path in pages.iter().chain(&api) {
        assert_eq!(get(addr, path, &[("Authorization", &house)]).0, 403, "household on {path}");
        let anonymous = get(addr, path, &[]).0;
        assert!(anonymous == 401 || anonymous == 303, "anonymous on {path}: {anonymous}");
        let operator = get(addr, path, &[("Authorization", &auth)]).0;
        let admin_status = get(addr, path, &[("Authorization", &admin)]).0;
        assert_eq!(admin_status, 200, "admin on {path}");
        assert_eq!(operator, if *path == "/ops/accounts" { 403 } else { 200 }, "operator on {path}");
    }
    for (path, body) in [
        ("/ops/meters/SIM00000198/commands", "command=disconnect&note=x&confirm=yes"),
        ("/ops/accounts", "username=x-user&role=operator&households="),
        ("/ops/accounts/invite", "household=H00000003"),
        ("/ops/accounts/ops-admin/disable", ""),
    ] {
        let headers = [("Authorization", house.as_str()), ("Content-Type", "application/x-www-form-urlencoded")];
        let (status, _, _) = procs::http_request(addr, "POST", path, &headers, Some(body)).expect("POST");
        assert_eq!(status, 403, "household POST {path}");
    }

    // The admin's forms in a browser session: with the session's CSRF token they work, without it not.
    let session = format!("hes_session={}", login(addr, "ops-admin"));
    let (status, _, html) = get(addr, "/ops/accounts", &[("Cookie", &session)]);
    assert_eq!(status, 200);
    let csrf = csrf_field(&html);
    assert!(csrf.len() >= 32, "the form carries the session's token");
    let form = [("Cookie", session.as_str()), ("Content-Type", "application/x-www-form-urlencoded")];
    let (status, _, _) =
        procs::http_request(addr, "POST", "/ops/accounts/invite", &form, Some("household=H00000003")).expect("POST");
    assert_eq!(status, 403, "no CSRF token");
    let (status, _, html) = procs::http_request(
        addr,
        "POST",
        "/ops/accounts/invite",
        &form,
        Some(&format!("csrf={csrf}&household=H00000003")),
    )
    .expect("POST");
    assert_eq!(status, 201, "{html}");
    assert!(html.contains("<code>"), "the activation code is shown once");
    let (status, _, html) = procs::http_request(
        addr,
        "POST",
        "/ops/accounts",
        &form,
        Some(&format!("csrf={csrf}&username=new-operator&role=operator&households=")),
    )
    .expect("POST");
    assert_eq!(status, 201, "{html}");
    let accounts = json(addr, "/api/v1/accounts", &admin_token);
    assert!(accounts.as_array().expect("accounts").iter().any(|a| a["username"] == "new-operator"));
    let (status, _, _) =
        procs::http_request(addr, "POST", "/ops/accounts/new-operator/disable", &form, Some(&format!("csrf={csrf}")))
            .expect("POST");
    assert_eq!(status, 303);
    let accounts = json(addr, "/api/v1/accounts", &admin_token);
    let new = accounts.as_array().expect("accounts").iter().find(|a| a["username"] == "new-operator").expect("listed");
    assert_eq!(new["disabled"], true);
    drop(headend);
}
