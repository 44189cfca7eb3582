//! The household portal's consumption on the real database: 60 simulated meters publish ten local days
//! around the October/November 2026 month boundary (the autumn DST day included), the register at the end
//! of November, and two instants a year earlier. The household's meter is exchanged on 2 November (the
//! inventory says so; both meters keep reporting, as the simulator does). The household account then reads
//! its consumption as JSON and as pages, and every number is checked against the simulator's model (not
//! the database): 15-minute intervals of the 100-interval day, the days of a month and its gaps, the months
//! of a year, the summary (month so far across the exchange, VT/NT, zones from the tariff file, bill to date
//! and projection billed with billing-core, last year, the building's median flat). The CSV and Green
//! Button downloads parse and add up; another household's code answers 404 like a code that does not exist.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use billing::{compute_bill, BillInput, Period, Tariff, TariffSet};
use chrono::{DateTime, Utc};
use meter_sim::{Fleet, Model};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::pipeline::{ts, Pipeline};
use schemas::migrations::Storage;
use tests::procs;

/// Published interval ends in (FROM, TO]: from local midnight of 25 October 2026 (CEST) to local midnight of
/// 4 November (CET).
const FROM: &str = "2026-10-24T21:45:00Z";
const OCT_25: &str = "2026-10-24T22:00:00Z";
const TO: &str = "2026-11-03T23:00:00Z";
/// Single registers: local midnight of 1 December 2026, and of 1 and 3 November 2025.
const INSTANTS: [&str; 3] = ["2026-11-30T23:00:00Z", "2025-10-31T23:00:00Z", "2025-11-02T23:00:00Z"];
/// Local midnights of 1, 2 (the meter exchange) and 3 November 2026 (the summary's instant: `date=2026-11-02`).
const NOV_1: &str = "2026-10-31T23:00:00Z";
const NOV_2: &str = "2026-11-01T23:00:00Z";
const NOV_3: &str = "2026-11-02T23:00:00Z";

fn kwh(wh: i64) -> Decimal {
    Decimal::new(wh, 3)
}

/// A JSON decimal (a string, as rust_decimal writes it), or `None` for null.
fn num(v: &Value) -> Option<Decimal> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Decimal::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))),
        other => Some(Decimal::from_str(&other.to_string()).unwrap_or_else(|e| panic!("{other}: {e}"))),
    }
}

/// `x` with `dp` decimals as a Serbian page prints it: `1.234,567`.
fn sr(x: Decimal, dp: u32) -> String {
    let mut r = x.round_dp(dp);
    r.rescale(dp);
    let text = r.abs().to_string();
    let (int, frac) = text.split_once('.').unwrap_or((text.as_str(), ""));
    let digits: Vec<char> = int.chars().collect();
    let groups: Vec<String> = digits.rchunks(3).rev().map(|c| c.iter().collect()).collect();
    let sign = if r.is_sign_negative() && !r.is_zero() { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{}", groups.join("."))
    } else {
        format!("{sign}{},{frac}", groups.join("."))
    }
}

/// Tags open and close in order, and nothing is outside the root (no XML parser in the tree).
fn well_formed(xml: &str) -> Result<(), String> {
    let body = xml.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n").ok_or("no XML declaration")?;
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find('<') {
        if stack.is_empty() && !rest[..i].trim().is_empty() {
            return Err("text outside the root".into());
        }
        let after = &rest[i + 1..];
        let end = after.find('>').ok_or("unclosed tag")?;
        let tag = &after[..end];
        rest = &after[end + 1..];
        let name = tag.trim_start_matches('/').split([' ', '/', '\n']).next().unwrap_or("");
        if tag.starts_with('/') {
            if stack.pop() != Some(name) {
                return Err(format!("</{name}> closes the wrong element"));
            }
            if stack.is_empty() && !rest.trim().is_empty() {
                return Err("content after the root".into());
            }
        } else if !tag.ends_with('/') {
            stack.push(name);
        }
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed: {stack:?}"))
    }
}

/// The middle of the values (the two middle ones' mean rounded half up), as the portal computes it.
fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2] + 1).div_euclid(2)
    }
}

struct Http {
    addr: SocketAddr,
    token: String,
}

impl Http {
    fn get(&self, path: &str, extra: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
        let auth = format!("Bearer {}", self.token);
        let mut h = vec![("Authorization", auth.as_str())];
        h.extend_from_slice(extra);
        procs::http_request(self.addr, "GET", path, &h, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn json(&self, path: &str) -> Value {
        let (status, _, body) = self.get(path, &[]);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}

/// The inventory with household `code`'s meter `old` removed on 1 November 2026 and meter `new` (taken from
/// another flat of the same building, whose household then has no meter and leaves the inventory)
/// installed for it on 2 November.
fn exchange(csv: &str, old: &str, new: &str) -> String {
    let row = |serial: &str| csv.lines().find(|l| l.contains(&format!(",{serial},"))).expect("meter row").to_owned();
    // Building and household columns of the old meter's row, the meter columns of the new one.
    let household = row(old).split_once(&format!(",{old},")).expect("serial").0.to_owned();
    let meter_cols = row(new).split_once(&format!(",{new},")).expect("serial").1.to_owned();
    let (head, _installed) = meter_cols.trim_end_matches(',').rsplit_once(',').expect("installed_on");
    let mut out = String::new();
    for l in csv.lines() {
        if l.contains(&format!(",{old},")) {
            out.push_str(&format!("{l}2026-11-01\n"));
        } else if l.contains(&format!(",{new},")) {
            out.push_str(&format!("{household},{new},{head},2026-11-02,\n"));
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn a_household_sees_its_own_consumption_as_the_model_says() {
    household_portal(Storage::Plain);
}

/// The same on TimescaleDB.
#[test]
fn timescale_a_household_sees_its_own_consumption_as_the_model_says() {
    household_portal(Storage::Timescale);
}

fn household_portal(storage: Storage) {
    let (seed, meters) = (42, 60);
    let fleet = Fleet::new(seed);
    let building = fleet.building(0);
    // Flats of the first building in this fleet (the master meter is index 0).
    let flats: Vec<u16> = (1..=building.flats).filter(|a| fleet.flat(&building, *a).meter < meters).collect();
    // The household: the first flat whose meter was in service a year before (for the comparison).
    let cutoff = chrono::NaiveDate::from_ymd_opt(2025, 10, 1).expect("date");
    let flat =
        flats.iter().map(|a| fleet.flat(&building, *a)).find(|f| f.installed_on <= cutoff).expect("an old meter");
    let other = fleet.flat(&building, if flat.apartment == flats[0] { flats[1] } else { flats[0] });
    // The new meter comes from the building's last flat in this fleet.
    let donor = fleet.flat(&building, *flats.last().expect("flats"));
    assert!(![flat.apartment, other.apartment].contains(&donor.apartment));
    let (code, index, new_index) = (flat.household_code(), flat.meter, donor.meter);
    let (old_serial, new_serial) = (meter_sim::serial(index), meter_sim::serial(new_index));

    let mut p = Pipeline::with_inventory_on(storage, "portal", meters, seed, &["--protocol", "mqtt"], |csv| {
        exchange(&csv, &old_serial, &new_serial)
    })
    .expect("pipeline");
    let headend = p.start_headend().expect("head-end");
    let mut expected = p.publish(FROM, TO, &[]).expect("simulator")["readings"].as_i64().expect("readings");
    for at in INSTANTS {
        let before = (ts(at) - chrono::Duration::minutes(15)).to_rfc3339();
        expected += p.publish(&before, at, &[]).expect("simulator")["readings"].as_i64().expect("readings");
    }
    p.wait_for_readings(expected, Duration::from_secs(600)).expect("readings stored");

    let url = p.db.url.clone();
    procs::create_account(&url, "flat-owner", "household", &[&code], "portal-e2e-password").expect("account");
    let me = Http { addr: headend.http, token: procs::api_token(&url, "flat-owner", "e2e").expect("token") };
    let operator = Http { addr: headend.http, token: p.token.clone() };

    let model = Model::with_meters(seed, meters);
    let reg = |i: usize, t: &str| model.registers_at(i, ts(t)).expect("model");
    let total = |i: usize, a: &str, b: &str| reg(i, b).import_total() - reg(i, a).import_total();
    let at = |t: DateTime<Utc>| model.registers_at(index, t).expect("model");
    // (total, VT, NT) Wh of the household over [a, b]: the old meter until the exchange (local midnight of
    // 2 November), the new one after it.
    let delta = |i: usize, a: &str, b: &str| {
        let (x, y) = (reg(i, a), reg(i, b));
        (y.import_total() - x.import_total(), y.import_vt - x.import_vt, y.import_nt - x.import_nt)
    };
    let own = |a: &str, b: &str| {
        if ts(b) <= ts(NOV_2) {
            delta(index, a, b)
        } else if ts(a) >= ts(NOV_2) {
            delta(new_index, a, b)
        } else {
            let (p, q) = (delta(index, a, NOV_2), delta(new_index, NOV_2, b));
            (p.0 + q.0, p.1 + q.1, p.2 + q.2)
        }
    };

    // A day by 15 minutes: the autumn DST day has 100 intervals, each the model's register difference.
    let day = me.json(&format!("/api/v1/households/{code}/consumption?resolution=15min&date=2026-10-25"));
    let points = day["points"].as_array().expect("points");
    assert_eq!(points.len(), 100, "25 local hours");
    for p in points {
        let end: DateTime<Utc> = p["end"].as_str().expect("end").parse().expect("time");
        let (a, b) = (at(end - chrono::Duration::minutes(15)), at(end));
        assert_eq!(num(&p["kwh"]), Some(kwh(b.import_total() - a.import_total())), "interval ending {end}");
        assert_eq!(num(&p["vt_kwh"]), Some(kwh(b.import_vt - a.import_vt)));
        assert_eq!(num(&p["nt_kwh"]), Some(kwh(b.import_nt - a.import_nt)));
    }
    assert_eq!((points[7]["label"].as_str(), points[8]["label"].as_str()), (Some("01:45"), Some("02:00 +02")));
    assert_eq!(points[12]["label"], "02:00 +01", "the repeated hour");
    assert_eq!(num(&day["total"]["kwh"]), Some(kwh(total(index, OCT_25, "2026-10-25T23:00:00Z"))));
    assert_eq!(day["gaps"], 0);

    // The days of October: the 1st to the 24th are gaps (nothing published), the rest exact.
    let oct = me.json(&format!("/api/v1/households/{code}/consumption?resolution=day&date=2026-10"));
    let points = oct["points"].as_array().expect("points");
    assert_eq!(points.len(), 31);
    assert_eq!(oct["gaps"], 24);
    assert!(points[..24].iter().all(|p| p["kwh"].is_null() && p["state"] == "past"));
    for (i, p) in points.iter().enumerate().skip(24) {
        let (a, b): (DateTime<Utc>, DateTime<Utc>) = (
            p["start"].as_str().expect("start").parse().expect("t"),
            p["end"].as_str().expect("end").parse().expect("t"),
        );
        assert_eq!(num(&p["kwh"]), Some(kwh(at(b).import_total() - at(a).import_total())), "October {}", i + 1);
        assert_eq!(num(&p["nt_kwh"]), Some(kwh(at(b).import_nt - at(a).import_nt)));
    }
    assert!(oct["total"]["kwh"].is_null(), "no register at the start of October");
    assert_eq!((oct["previous"].as_str(), oct["next"].as_str()), (Some("2026-09"), Some("2026-11")));

    // November: days 1–3 (the old meter on the 1st, the new one from the 2nd), then gaps; the month from
    // the registers at its ends and at the exchange.
    let nov = me.json(&format!("/api/v1/households/{code}/consumption?resolution=day&date=2026-11"));
    let points = nov["points"].as_array().expect("points");
    assert_eq!(points.len(), 30);
    assert_eq!(num(&points[0]["kwh"]), Some(kwh(own(NOV_1, NOV_2).0)));
    assert_eq!(num(&points[1]["kwh"]), Some(kwh(own(NOV_2, NOV_3).0)));
    assert_eq!(num(&points[2]["vt_kwh"]), Some(kwh(own(NOV_3, TO).1)));
    assert!(points[3]["kwh"].is_null());
    let nov_wh = own(NOV_1, INSTANTS[0]).0;
    assert_eq!(num(&nov["total"]["kwh"]), Some(kwh(nov_wh)));

    // The months of 2026: November is known from its boundary registers, the others are gaps.
    let year = me.json(&format!("/api/v1/households/{code}/consumption?resolution=month&date=2026"));
    let months = year["points"].as_array().expect("points");
    assert_eq!(months.len(), 12);
    assert_eq!(num(&months[10]["kwh"]), Some(kwh(nov_wh)));
    assert_eq!(months[10]["label"], "2026-11");
    assert!(months.iter().enumerate().all(|(i, m)| i == 10 || m["kwh"].is_null()));

    // The summary as of the end of 2 November.
    let s = me.json(&format!("/api/v1/households/{code}/summary?date=2026-11-02"));
    assert_eq!(s["as_of"], NOV_3);
    assert_eq!(num(&s["today"]["kwh"]), Some(kwh(own(NOV_2, NOV_3).0)));
    assert_eq!(num(&s["yesterday"]["kwh"]), Some(kwh(own(NOV_1, NOV_2).0)));
    let (month_wh, vt, nt) = own(NOV_1, NOV_3);
    assert_eq!(num(&s["month"]["kwh"]), Some(kwh(month_wh)));
    assert_eq!((num(&s["month"]["vt_kwh"]), num(&s["month"]["nt_kwh"])), (Some(kwh(vt)), Some(kwh(nt))));
    assert_eq!(s["month"]["until"], NOV_3);
    // Zones from the tariff file (November has 30 days: the file's limits), consumption VT + NT.
    let tariff = Tariff::eps_household_2025().expect("tariff");
    let z = &s["zones"];
    assert_eq!(num(&z["consumed_kwh"]), Some(kwh(vt + nt)));
    let limits: Vec<Option<Decimal>> =
        z["zones"].as_array().expect("zones").iter().map(|z| num(&z["up_to_kwh"])).collect();
    assert_eq!(limits, tariff.zones.iter().map(|z| z.up_to_kwh).collect::<Vec<_>>());
    assert_eq!(z["next_kwh"]["zone"], "green", "two days of a flat stay green");
    assert_eq!(num(&z["next_kwh"]["vt_price"]), Some(tariff.zones[0].vt));
    // Bill to date (1–2 November) and the projection (two days of thirty: × 15), billed with billing-core.
    let set = TariffSet::single(tariff.clone());
    let kw: Decimal = flat.approved_power_kw.parse().expect("kW");
    let bill = |p: Period, vt: i64, nt: i64| {
        compute_bill(&BillInput::two_rate(p, kwh(vt), kwh(nt), kw, building.region), &set).expect("bill").total
    };
    let first_two =
        Period::new(Period::month(2026, 11).expect("m").first_day(), "2026-11-02".parse().expect("d")).expect("period");
    let to_date = bill(first_two, vt, nt);
    let projected = bill(Period::month(2026, 11).expect("month"), vt * 15, nt * 15);
    assert_eq!(num(&s["bill_to_date"]["total"]), Some(to_date));
    assert_eq!(num(&s["projection"]["total"]), Some(projected));
    assert_eq!(num(&s["projection"]["vt_kwh"]), Some(kwh(vt * 15)));
    // Last year over the same local span, and the building's median flat.
    let ly = total(index, INSTANTS[1], INSTANTS[2]);
    assert_eq!(num(&s["last_year"]["kwh"]), Some(kwh(ly)));
    // The median leaves out this household (its meters were not in service all along) and the donor flat.
    let values: Vec<i64> = flats
        .iter()
        .filter(|a| ![flat.apartment, donor.apartment].contains(a))
        .map(|a| total(fleet.flat(&building, *a).meter, NOV_1, NOV_3))
        .collect();
    assert_eq!(s["building"]["households"], values.len());
    assert_eq!(num(&s["building"]["median_kwh"]), Some(kwh(median(values))));
    assert_eq!(num(&s["building"]["own_kwh"]), Some(kwh(month_wh)));

    // Operators see any household (support desk); another household's code is the same 404 as a missing one.
    assert_eq!(operator.json(&format!("/api/v1/households/{code}/summary?date=2026-11-02")), s);
    for path in [
        format!("/api/v1/households/{}/consumption", other.household_code()),
        "/api/v1/households/H99999999/consumption".to_owned(),
        format!("/api/v1/households/{}/summary", other.household_code()),
    ] {
        let (status, _, body) = me.get(&path, &[]);
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["error"]["code"], "not_found");
    }
    let (status, _, _) =
        procs::http_request(headend.http, "GET", &format!("/api/v1/households/{code}/summary"), &[], None)
            .expect("anonymous");
    assert_eq!(status, 401);

    // The pages: the numbers are in the HTML (Serbian by default, English on request).
    let (status, _, page) = me.get(&format!("/portal?household={code}&date=2026-11-02"), &[]);
    assert_eq!(status, 200, "{page}");
    for n in [sr(kwh(month_wh), 3), sr(kwh(vt), 3), sr(to_date, 2), sr(projected, 2), sr(kwh(ly), 3)] {
        assert!(page.contains(&n), "overview shows {n}");
    }
    assert!(page.contains("data-chart=\"today-chart\"") && page.contains("/assets/app.js"));
    let (status, _, page) = me.get("/portal?date=2026-11-02", &[("Accept-Language", "en")]);
    assert_eq!(status, 200, "the account's own household without ?household=");
    assert!(page.contains(&kwh(month_wh).to_string()) && page.contains("Consumption overview"));
    let (status, _, page) = me.get(&format!("/portal/usage?household={code}&view=day&date=2026-10-25"), &[]);
    assert_eq!(status, 200);
    assert_eq!(page.matches("<tr><td>").count(), 100, "a table row per interval");
    let (a, b) = (at(ts("2026-10-25T12:00:00Z")), at(ts("2026-10-25T12:15:00Z")));
    assert!(page.contains(&sr(kwh(b.import_total() - a.import_total()), 3)));
    let (status, _, page) = me.get(&format!("/portal/usage?household={code}&view=month&date=2026-11"), &[]);
    assert_eq!(status, 200);
    assert!(page.contains(&sr(kwh(total(index, NOV_1, NOV_2)), 3)) && page.contains(&sr(kwh(nov_wh), 3)));
    assert!(page.contains("date=2026-10\" rel=\"prev\"") && page.contains("date=2026-12\" rel=\"next\""));
    let (status, _, page) = me.get(&format!("/portal/usage?household={code}&view=year&date=2026"), &[]);
    assert_eq!(status, 200);
    assert!(page.contains(&sr(kwh(nov_wh), 3)));
    let (status, _, page) = me.get(&format!("/portal/downloads?household={code}"), &[]);
    assert_eq!(status, 200);
    assert!(page.contains("intervals.csv") && page.contains("green-button.xml"));
    let (status, _, _) = operator.get(&format!("/portal/usage?household={code}"), &[]);
    assert_eq!(status, 200, "operators open any household's pages");
    for path in [
        format!("/portal?household={}", other.household_code()),
        format!("/portal/usage?household={}", other.household_code()),
        "/portal/usage?household=H99999999".to_owned(),
        format!("/portal/downloads/intervals.csv?household={}&month=2026-11", other.household_code()),
    ] {
        assert_eq!(me.get(&path, &[]).0, 404, "{path}");
    }

    // CSV of November: a row per interval, the model's energy where published, empty elsewhere.
    let (status, headers, csv) =
        me.get(&format!("/portal/downloads/intervals.csv?household={code}&month=2026-11"), &[]);
    assert_eq!(status, 200);
    assert_eq!(Http::header(&headers, "content-type"), "text/csv; charset=utf-8");
    assert_eq!(
        Http::header(&headers, "content-disposition"),
        format!("attachment; filename=\"{code}-2026-11-intervals.csv\"")
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "start_local,end_utc,kwh,vt_kwh,nt_kwh,status");
    assert_eq!(lines.len(), 1 + 30 * 96);
    let actual: Vec<Vec<&str>> =
        lines[1..].iter().map(|l| l.split(',').collect::<Vec<_>>()).filter(|f| f[5] == "actual").collect();
    assert_eq!(actual.len(), 3 * 96, "1–3 November");
    let sum: Decimal = actual.iter().map(|f| Decimal::from_str(f[2]).expect("kWh")).sum();
    assert_eq!(sum, kwh(own(NOV_1, TO).0), "the old meter on the 1st, the new one after");
    assert_eq!(lines[1].split(',').take(2).collect::<Vec<_>>(), ["2026-11-01T00:00:00+01:00", "2026-10-31T23:15:00Z"]);

    // Green Button of October: well-formed, the readings of the published intervals, in Wh.
    let (status, headers, xml) =
        me.get(&format!("/portal/downloads/green-button.xml?household={code}&month=2026-10"), &[]);
    assert_eq!(status, 200);
    assert_eq!(Http::header(&headers, "content-type"), "application/atom+xml; charset=utf-8");
    assert!(Http::header(&headers, "content-disposition").starts_with("attachment; filename="));
    well_formed(&xml).unwrap_or_else(|e| panic!("Green Button XML: {e}"));
    for tag in ["<espi:UsagePoint>", "<espi:MeterReading/>", "<espi:ReadingType>", "<espi:uom>72</espi:uom>"] {
        assert!(xml.contains(tag), "{tag}");
    }
    let values: Vec<i64> =
        xml.split("<espi:value>").skip(1).map(|v| v.split('<').next().expect("value").parse().expect("Wh")).collect();
    assert_eq!(values.len(), 100 + 6 * 96, "25–31 October");
    assert_eq!(values.iter().sum::<i64>(), total(index, OCT_25, NOV_1));
    assert_eq!(xml.matches("<espi:IntervalBlock>").count(), 7, "one block per local day with data");
    drop(headend);
}
