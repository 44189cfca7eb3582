//! The household portal's bills and events on the real database, with bills made by the real
//! `billing run`: one simulated building publishes its registers at three local month boundaries
//! (all `billing run` reads), October is billed twice (versions 1 and 2) and November once. A
//! household then sees exactly the stored bills with the old 1/N split next to them, lines that add
//! up to the total, a CSV that parses, its outages (a power-outage flag published through the
//! broker, and meter-log events as the DLMS poller stores them) 50 a page — and another
//! household's bill answers the same 404 as a month without a bill.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use meter_sim::channels::parse_channels;
use meter_sim::expect::expected_payloads;
use meter_sim::{Fleet, Model, Span};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use rust_decimal::Decimal;
use schemas::reading::Quality;
use serde_json::Value;

use crate::pipeline::{ts, Pipeline, CHANNELS};
use tests::procs;

/// Register instants at the local (Europe/Belgrade) starts of October, November and December 2026:
/// each published as the one interval ending there.
const BOUNDARIES: [(&str, &str); 3] = [
    ("2026-09-30T21:45:00Z", "2026-09-30T22:00:00Z"),
    ("2026-10-31T22:45:00Z", "2026-10-31T23:00:00Z"),
    ("2026-11-30T22:45:00Z", "2026-11-30T23:00:00Z"),
];
/// Three intervals a meter flags with `power_outage` (interval ends 10:15, 10:30, 10:45 UTC).
const OUTAGE: (&str, &str) = ("2026-11-20T10:00:00Z", "2026-11-20T10:45:00Z");
/// Meter-log events stored for the faulty meter (pairs of power down / power up): with the outage,
/// 121 events, three pages.
const LOGGED_OUTAGES: usize = 60;

fn dec(v: &Value) -> Decimal {
    let s = v.as_str().unwrap_or_else(|| panic!("a decimal as a JSON string, got {v}"));
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// `x` to two decimals grouped the Serbian way (`4.622,65`): what the page must print.
fn sr_money(x: Decimal) -> String {
    let text = format!("{:.2}", x.abs());
    let (int, frac) = text.split_once('.').expect("two decimals");
    let digits: Vec<char> = int.chars().collect();
    let groups: Vec<String> = digits.rchunks(3).rev().map(|c| c.iter().collect()).collect();
    let sign = if x.is_sign_negative() && !x.is_zero() { "-" } else { "" };
    format!("{sign}{},{frac}", groups.join("."))
}

/// The fields of one CSV record (RFC 4180 quoting).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Requests with one account's API token (pages and API alike).
struct Caller {
    http: SocketAddr,
    token: String,
}

impl Caller {
    fn get(&self, path: &str, extra: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("Authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        procs::http_request(self.http, "GET", path, &headers, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn json(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.get(path, &[]);
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}")))
    }
}

/// Publishes `payloads` through the broker (QoS 1) and returns when the broker acknowledged them all.
fn publish_raw(port: u16, payloads: &[(String, Vec<u8>)]) {
    let mut o = MqttOptions::new("e2e-portal-faults", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 100);
    for (topic, body) in payloads {
        client.publish(topic.as_str(), QoS::AtLeastOnce, false, body.clone()).expect("publish");
    }
    let mut acked = 0;
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                if acked == payloads.len() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("broker connection: {e}"),
        }
    }
    let _ = client.disconnect();
}

#[test]
fn households_see_their_own_bills_and_outages() {
    let seed = 23;
    let fleet = Fleet::new(seed);
    let meters = fleet.building_start(1); // the first building: its master meter and every flat
    let mut p = Pipeline::new("portal_bills", meters, seed, false).expect("pipeline");
    let headend = p.start_headend().expect("head-end");
    let mut expected = 0;
    for (from, to) in BOUNDARIES {
        expected += p.publish(from, to, &[]).expect("simulator")["readings"].as_i64().expect("readings");
    }
    p.wait_for_readings(expected, Duration::from_secs(120)).expect("boundary registers stored");

    // A fault on household A's meter, through the broker and the head-end: three intervals flagged.
    let (a_serial, b_serial) = (meter_sim::serial(1), meter_sim::serial(2));
    let model = Model::with_meters(seed, meters);
    let channels = parse_channels(CHANNELS).expect("channels");
    let faulty: Vec<(String, Vec<u8>)> =
        expected_payloads(&model, &a_serial, Span { from: ts(OUTAGE.0), to: ts(OUTAGE.1) }, &channels)
            .expect("payloads")
            .into_iter()
            .map(|mut pl| {
                pl.status = Quality::POWER_OUTAGE;
                (format!("meters/{a_serial}/readings"), pl.to_json())
            })
            .collect();
    assert_eq!(faulty.len(), 3);
    publish_raw(p.broker.port, &faulty);
    let per_payload = i64::try_from(channels.len()).expect("channels");
    p.wait_for_readings(expected + 3 * per_payload, Duration::from_secs(60)).expect("flagged readings stored");
    drop(headend);

    // The real billing: October twice (versions 1 and 2), November once.
    let env = [("DATABASE_URL", p.db.url.as_str())];
    for period in ["2026-10", "2026-11", "2026-10"] {
        procs::run_bin("billing", &["run", "--period", period], &env).expect("billing run");
    }

    // What the DLMS poller writes for a meter's event log: time, code, source (2 = dlms), the row.
    let (a_code, b_code, stored) =
        p.rt.block_on(async {
            let c = p.db.client().await?;
            let codes: HashMap<String, String> = c
                .query(
                    "SELECT m.serial, h.code FROM meters m JOIN households h ON h.id = m.household_id
                     WHERE m.serial = ANY($1)",
                    &[&vec![a_serial.clone(), b_serial.clone()]],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let (a, b) = (codes[&a_serial].clone(), codes[&b_serial].clone());
            c.execute(
                "INSERT INTO meter_events (meter_id, ts, code, source, detail)
                 SELECT m.id, t.ts, t.code, 2, jsonb_build_array(t.ts, t.code)
                 FROM meters m, (SELECT timestamptz '2026-08-01 03:00+00' + i * interval '1 day' AS ts, 1 AS code
                                 FROM generate_series(0, $2 - 1) i
                                 UNION ALL
                                 SELECT timestamptz '2026-08-01 03:17+00' + i * interval '1 day', 2
                                 FROM generate_series(0, $2 - 1) i) t
                 WHERE m.serial = $1",
                &[&a_serial, &i32::try_from(LOGGED_OUTAGES).expect("count")],
            )
            .await?;
            // The latest version's bill of each period, as stored.
            let rows = c
                .query(
                    "SELECT DISTINCT ON (r.period) to_char(r.period, 'YYYY-MM'), r.version, b.total::text,
                            b.vt_kwh::text, b.nt_kwh::text, b.old_split_total::text, b.difference::text,
                            b.difference_percent::text, (SELECT count(*) FROM bill_lines l WHERE l.bill_id = b.id)
                     FROM bills b JOIN billing_runs r ON r.id = b.run_id JOIN households h ON h.id = b.household_id
                     WHERE h.code = $1 ORDER BY r.period DESC, r.version DESC",
                    &[&a],
                )
                .await?;
            let stored: Vec<(String, i32, Vec<Option<String>>, i64)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), (2..8).map(|i| r.get::<_, Option<String>>(i)).collect(), r.get(8)))
                .collect();
            anyhow::Ok((a, b, stored))
        })
        .expect("database");
    assert_eq!(stored.iter().map(|s| (s.0.as_str(), s.1)).collect::<Vec<_>>(), [("2026-11", 1), ("2026-10", 2)]);

    let headend = p.start_headend().expect("head-end again");
    procs::create_account(&p.db.url, "ana", "household", &[&a_code], "ana-password-1").expect("account A");
    procs::create_account(&p.db.url, "bojan", "household", &[&b_code], "bojan-password-1").expect("account B");
    let ana = Caller { http: headend.http, token: procs::api_token(&p.db.url, "ana", "e2e").expect("token A") };
    let bojan = Caller { http: headend.http, token: procs::api_token(&p.db.url, "bojan", "e2e").expect("token B") };
    let operator = Caller { http: headend.http, token: p.token.clone() };

    // The list: exactly the stored figures of each period's latest version, with the old split.
    let (status, list) = ana.json(&format!("/api/v1/households/{a_code}/bills"));
    assert_eq!(status, 200, "{list}");
    let bills = list["bills"].as_array().expect("bills");
    assert_eq!(bills.len(), 2);
    for (b, (period, version, figures, _)) in bills.iter().zip(&stored) {
        assert_eq!(b["period"], period.as_str());
        assert_eq!(b["version"], *version);
        let api: Vec<Option<Decimal>> =
            ["total", "vt_kwh", "nt_kwh", "old_split_total", "difference", "difference_percent"]
                .iter()
                .map(|k| (!b[k].is_null()).then(|| dec(&b[k])))
                .collect();
        let db: Vec<Option<Decimal>> =
            figures.iter().map(|f| f.as_deref().map(|s| Decimal::from_str(s).expect("stored decimal"))).collect();
        assert_eq!(api, db, "{period}: the stored figures");
        assert!(api[3].is_some(), "{period}: the master meter was read, so the old split is there");
        let own = api[0].expect("total") - dec(&b["corrections"]);
        assert_eq!(api[4], Some(own - api[3].expect("old")), "{period}: difference = own bill − old split");
    }

    // One bill: every line, adding up to the total.
    let (status, bill) = ana.json(&format!("/api/v1/households/{a_code}/bills/2026-10"));
    assert_eq!(status, 200, "{bill}");
    let total = dec(&bill["total"]);
    let lines = bill["lines"].as_array().expect("lines");
    assert_eq!(i64::try_from(lines.len()).expect("n"), stored[1].3, "every stored line");
    assert_eq!(lines.iter().map(|l| dec(&l["amount"])).sum::<Decimal>(), total, "lines add up to the total");
    assert!(lines.iter().any(|l| l["kind"] == "energy" && l["tou"] == "vt" && l["unit"] == "kwh"));
    assert_eq!(bill["version"], 2);
    assert_eq!(bill["meters"], serde_json::json!([a_serial]));
    assert!(!bill["common_kwh"].is_null(), "the building was reconciled");

    // The pages (Serbian by default; English by cookie), with the old split side by side.
    let (status, _, page) = ana.get("/portal/bills", &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&format!("{} RSD", sr_money(total))), "the Serbian total {} on the list", sr_money(total));
    assert!(page.contains("Po starom načinu (1/N zgrade) platili biste"));
    let old = dec(&bills[1]["old_split_total"]);
    assert!(page.contains(&format!("{} RSD", sr_money(old))), "the old split {old} on the list");
    assert!(page.contains("class=\"tabs\""), "the portal's tabs");
    let (_, _, en) = ana.get("/portal/bills", &[("Cookie", "hes_lang=en")]);
    let en_total = sr_money(total).replace('.', "_").replace(',', ".").replace('_', ",");
    assert!(en.contains(&format!("{en_total} RSD")), "the English total {en_total}");
    assert!(en.contains("Under the old split"));

    let (status, _, invoice) = ana.get("/portal/bills/2026-10", &[]);
    assert_eq!(status, 200, "{invoice}");
    for l in lines {
        assert!(invoice.contains(&sr_money(dec(&l["amount"]))), "line {} on the invoice", l["line_no"]);
    }
    assert!(invoice.contains("verzija 2") && invoice.contains("Zajednička potrošnja"));

    // The CSV: parses, one record per line, the amounts add up to the total.
    let (status, headers, csv) = ana.get(&format!("/portal/bills/2026-10.csv?household={a_code}"), &[]);
    assert_eq!(status, 200, "{csv}");
    let ctype = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str());
    assert_eq!(ctype, Some("text/csv; charset=utf-8"));
    let mut records = csv.lines().map(csv_fields);
    let header = records.next().expect("header");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("column {name}"));
    let records: Vec<Vec<String>> = records.collect();
    assert_eq!(records.len(), lines.len());
    assert!(records
        .iter()
        .all(|r| r.len() == header.len() && r[col("household")] == a_code && r[col("version")] == "2"));
    let csv_sum: Decimal = records.iter().map(|r| Decimal::from_str(&r[col("amount_rsd")]).expect("amount")).sum();
    assert_eq!(csv_sum, total);

    // Another household's bill: the same 404 as a month without a bill, in the pages and the API.
    let missing_page = ana.get(&format!("/portal/bills/2031-01?household={a_code}"), &[]);
    let others_page = ana.get(&format!("/portal/bills/2026-10?household={b_code}"), &[]);
    assert_eq!((missing_page.0, others_page.0), (404, 404));
    assert_eq!(others_page.2, missing_page.2, "same body");
    assert_eq!(ana.get(&format!("/portal/bills/2026-10.csv?household={b_code}"), &[]).2, missing_page.2);
    let missing_api = ana.get(&format!("/api/v1/households/{a_code}/bills/2031-01"), &[]);
    let others_api = ana.get(&format!("/api/v1/households/{b_code}/bills/2026-10"), &[]);
    assert_eq!((missing_api.0, others_api.0), (404, 404));
    assert_eq!(others_api.2, missing_api.2, "same body");
    assert_eq!(ana.json(&format!("/api/v1/households/{b_code}/bills")).0, 404);
    assert_eq!(ana.json(&format!("/api/v1/households/{b_code}/events")).0, 404);
    // … while B and an operator do see it.
    assert_eq!(bojan.json(&format!("/api/v1/households/{b_code}/bills/2026-10")).0, 200);
    assert_eq!(bojan.get("/portal/bills/2026-10", &[]).0, 200);
    assert_eq!(operator.json(&format!("/api/v1/households/{a_code}/bills/2026-10")).1["total"], bill["total"]);
    assert_eq!(operator.get(&format!("/portal/bills?household={a_code}"), &[]).0, 200);
    let (status, headers, _) = operator.get("/portal/events", &[]);
    let to = headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.as_str());
    assert_eq!((status, to), (303, Some("/portal")), "staff choose a household first");
    assert_eq!(ana.json(&format!("/api/v1/households/{a_code}/bills/2026-13")).0, 400);

    // Events: the outage flag run first (newest), then the meter log; 50 a page.
    let (status, first) = ana.json(&format!("/api/v1/households/{a_code}/events"));
    assert_eq!(status, 200, "{first}");
    let total_events = 2 * LOGGED_OUTAGES + 1;
    assert_eq!(first["total"], total_events);
    assert_eq!(first["pages"], 3);
    let events = first["events"].as_array().expect("events");
    assert_eq!(events.len(), 50);
    let e = &events[0];
    assert_eq!(
        (e["code"].as_str(), e["origin"].as_str(), e["category"].as_str()),
        (Some("flag_power_outage"), Some("reading_flag"), Some("outage"))
    );
    assert_eq!(
        (e["ts"].as_str(), e["until"].as_str(), e["intervals"].as_i64()),
        (Some("2026-11-20T10:00:00Z"), Some("2026-11-20T10:45:00Z"), Some(3))
    );
    assert_eq!(e["meter"], a_serial.as_str());
    let up = &events[1];
    assert_eq!(
        (up["code"].as_str(), up["log_code"].as_i64(), up["outage_seconds"].as_i64()),
        (Some("power_up"), Some(2), Some(17 * 60))
    );
    assert_eq!(events[2]["code"], "power_down");
    let times: Vec<&str> = events.iter().filter_map(|e| e["ts"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let (_, last) = ana.json(&format!("/api/v1/households/{a_code}/events?page=3"));
    assert_eq!(last["events"].as_array().map(Vec::len), Some(total_events - 100));
    let (status, past) = ana.json(&format!("/api/v1/households/{a_code}/events?page=4"));
    assert_eq!(
        (status, past["events"].as_array().map(Vec::len), &past["total"]),
        (200, Some(0), &Value::from(total_events))
    );
    for bad in ["0", "-1", "x", "10001"] {
        assert_eq!(ana.json(&format!("/api/v1/households/{a_code}/events?page={bad}")).0, 400, "page={bad}");
    }
    assert_eq!(bojan.json(&format!("/api/v1/households/{b_code}/events")).1["total"], 0);

    let (status, _, page) = ana.get("/portal/events", &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Nestanak struje (prema očitavanjima)") && page.contains("Napajanje vraćeno"));
    let pager = page.split("class=\"pager\"").nth(1).unwrap_or_default();
    let next = pager.split("href=\"").nth(1).and_then(|h| h.split('"').next()).unwrap_or_default();
    assert_eq!(
        next.replace("&#38;", "&").replace("&amp;", "&"),
        format!("/portal/events?household={a_code}&page=2"),
        "{pager}"
    );
    assert!(page.contains("20.11.2026. 11:00"), "local time (UTC+1 in November)");
    let (_, _, en) = ana.get("/portal/events?page=3", &[("Cookie", "hes_lang=en")]);
    assert!(en.contains("Power down") && en.contains("Page 3 / 3"), "the last page in English");
    assert_eq!(ana.get("/portal/events?page=0", &[]).0, 400);

    // Documented: the three routes are in the OpenAPI document.
    let (_, doc) = ana.json("/api/openapi.json");
    let paths: HashMap<String, Value> = serde_json::from_value(doc["paths"].clone()).expect("paths");
    for route in [
        "/api/v1/households/{code}/bills",
        "/api/v1/households/{code}/bills/{period}",
        "/api/v1/households/{code}/events",
    ] {
        assert!(paths.contains_key(route), "{route} documented");
    }
}
