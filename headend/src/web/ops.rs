//! The operator dashboard (operators and admins; households get 403):
//!
//! | page | what |
//! |---|---|
//! | `/ops` | headline numbers, read rate of the last 14 days (trend chart and table) |
//! | `/ops/meters` | meters not reporting / failing / all, filtered, 50 a page |
//! | `/ops/meters/{serial}` | one meter: inventory, last 48 h, capability profile, poll history, events, commands (and the disconnect / reconnect / retry-polling form) |
//! | `/ops/load` | energy per transformer / feeder and hour of a day |
//! | `/ops/voltage` | meters outside 230 V ± 10 % in a day |
//! | `/ops/events` | meter events fleet-wide, newest first |
//! | `/ops/buildings`, `/ops/buildings/{code}` | building reconciliation from the billing tables |
//! | `/ops/accounts` | accounts, activation codes, invitations, disabling (admins) |
//!
//! The data come from [`crate::ops`], the query strings are parsed by the JSON twins' parsers
//! ([`crate::api::ops`]); every number is in a table (charts only repeat them).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Europe::Belgrade;
use rust_decimal::prelude::FromPrimitive;
use rust_decimal::Decimal;
use schemas::MeterSerial;
use serde::Deserialize;
use serde_json::json;

use super::format::{here, local_day, local_time, month_label, number};
use super::{message_page, render, Chrome, Lang};
use crate::api::meters::{commands_of, execute_command, CommandRecord};
use crate::api::ops as params;
use crate::api::ApiError;
use crate::auth::store::{self, AccountInfo, InviteFor};
use crate::auth::{urlencode, Admin, Operator, Principal, Role};
use crate::collect::ledger;
use crate::collect::MeterCommand;
use crate::http::AppState;
use crate::ops::{self, buildings, events, fleet, load, meters, voltage};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ops", get(dashboard))
        .route("/ops/meters", get(meter_list))
        .route("/ops/meters/{serial}", get(meter_page))
        .route("/ops/meters/{serial}/commands", post(meter_command))
        .route("/ops/load", get(load_page))
        .route("/ops/voltage", get(voltage_page))
        .route("/ops/events", get(event_list))
        .route("/ops/buildings", get(building_list))
        .route("/ops/buildings/{code}", get(building_page))
        .route("/ops/accounts", get(accounts_page).post(account_create))
        .route("/ops/accounts/invite", post(account_invite))
        .route("/ops/accounts/{username}/disable", post(account_disable))
}

// ---------------------------------------------------------------------------------------------
// Formatting (numbers grouped per language: 1.234,5 in Serbian, 1,234.5 in English)

fn int(lang: Lang, n: i64) -> String {
    number(lang, Decimal::from(n), 0)
}

fn real(lang: Lang, x: f64, dp: u32) -> String {
    Decimal::from_f64(x).map_or_else(|| "–".into(), |d| number(lang, d, dp))
}

/// A share as a percentage with one decimal: `97,3 %` / `97.3 %`.
fn pct(lang: Lang, ratio: f64) -> String {
    format!("{} %", real(lang, ratio * 100.0, 1))
}

fn kwh_dec(lang: Lang, x: Decimal) -> String {
    number(lang, x, 1)
}

fn opt_dec(lang: Lang, x: Option<Decimal>, dp: u32) -> String {
    x.map_or_else(|| "–".into(), |d| number(lang, d, dp))
}

fn opt_when(lang: Lang, t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "–".into(), |t| local_time(lang, t))
}

/// How long ago, roughly: `26 h`, `3 d`, `45 min`.
fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = t else { return "–".into() };
    let m = (now - t).num_minutes().max(0);
    match m {
        0..=119 => format!("{m} min"),
        120..=4319 => format!("{} h", m / 60),
        _ => format!("{} d", m / 1440),
    }
}

/// Chart data for `assets/app.js`, safe inside `<script type="application/json">`.
fn chart(x: &[i64], series: &[(&str, Vec<Option<f64>>, &str)]) -> String {
    let series: Vec<serde_json::Value> =
        series.iter().map(|(label, values, color)| json!({"label": label, "values": values, "color": color})).collect();
    json!({"x": x, "series": series}).to_string().replace('<', "\\u003c")
}

/// `path?k=v&…` with the non-empty values, percent-encoded.
fn href(path: &str, query: &[(&str, String)]) -> String {
    let q: Vec<String> = query
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", urlencode(v).replace('/', "%2F")))
        .collect();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// The previous / next links of a numbered list.
pub struct Pager {
    pub page: i64,
    pub pages: i64,
    pub total: String,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// `query` without the page; the links add it.
    fn new(lang: Lang, path: &str, query: &[(&str, String)], page: i64, total: i64) -> Pager {
        let pages = ops::pages(total);
        let link = |p: i64| {
            let mut q = query.to_vec();
            q.push(("page", if p > 1 { p.to_string() } else { String::new() }));
            href(path, &q)
        };
        Pager {
            page,
            pages,
            total: int(lang, total),
            prev: (page > 1).then(|| link((page - 1).min(pages))),
            next: (page < pages).then(|| link(page + 1)),
        }
    }
}

/// The ops pages' tab bar.
pub struct Tabs {
    pub current: &'static str,
    pub admin: bool,
}

fn tabs(who: &Principal, current: &'static str) -> Tabs {
    Tabs { current, admin: who.role == Role::Admin }
}

fn bad_request(e: ApiError) -> Response {
    message_page(StatusCode::BAD_REQUEST, "400", &e.message)
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "ops page failed on the database");
    message_page(StatusCode::SERVICE_UNAVAILABLE, "503", "Database unavailable. / Baza nije dostupna.")
}

fn not_found() -> Response {
    message_page(StatusCode::NOT_FOUND, "404", "No such page. / Ova stranica ne postoji.")
}

/// `Ok` value or the response that ends the request.
macro_rules! or_return {
    ($e:expr, $f:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $f(e),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Dashboard

struct Kpi {
    label: &'static str,
    value: String,
    href: &'static str,
    class: &'static str,
}

struct RateRow {
    day: String,
    meters: String,
    complete: String,
    complete_ratio: f64,
    received: String,
    h1: String,
    h24: String,
    h72: String,
}

#[derive(Template)]
#[template(path = "ops.html")]
struct DashboardPage {
    chrome: Chrome,
    tabs: Tabs,
    kpis: Vec<Kpi>,
    dead: Vec<(String, String)>,
    /// Reason, meters, the failing-meter list of that reason.
    failures: Vec<(String, String, String)>,
    rates: Vec<RateRow>,
    chart: String,
    from: String,
    to: String,
}

/// The read rates of closed days (before yesterday) last computed: 205k meters × 12 days are ~2.5M
/// ledger rows (half a second), and those days change only by late back-fills. Kept for
/// [`CLOSED_DAYS_TTL`]; yesterday and today are always read afresh. The JSON twin is never cached.
struct ClosedDays {
    at: std::time::Instant,
    from: NaiveDate,
    to: NaiveDate,
    days: Vec<ledger::ReadRate>,
}

static CLOSED_DAYS: std::sync::Mutex<Option<ClosedDays>> = std::sync::Mutex::new(None);
const CLOSED_DAYS_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// The dashboard's read-rate trend `from..=to` (`to` today).
async fn trend(
    c: &tokio_postgres::Client,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<ledger::ReadRate>, tokio_postgres::Error> {
    let closed_to = to - chrono::Duration::days(2);
    if closed_to < from {
        return ledger::read_rates(c, from, to).await;
    }
    let cached = CLOSED_DAYS.lock().ok().and_then(|g| {
        g.as_ref()
            .filter(|c| c.at.elapsed() < CLOSED_DAYS_TTL && c.from == from && c.to == closed_to)
            .map(|c| c.days.clone())
    });
    let mut days = match cached {
        Some(v) => v,
        None => {
            let v = ledger::read_rates(c, from, closed_to).await?;
            if let Ok(mut g) = CLOSED_DAYS.lock() {
                *g = Some(ClosedDays { at: std::time::Instant::now(), from, to: closed_to, days: v.clone() });
            }
            v
        }
    };
    days.extend(ledger::read_rates(c, closed_to + chrono::Duration::days(1), to).await?);
    Ok(days)
}

async fn dashboard(State(s): State<AppState>, operator: Operator, lang: Lang, uri: Uri) -> Response {
    let who = operator.0;
    let now = Utc::now();
    let (from, to) = fleet::trend_days(now, 14);
    // The two halves on two connections at once: the page waits for the slower one only.
    let (head, rates) = tokio::join!(
        async {
            let c = s.pool.get().await.map_err(|e| e.to_string())?;
            fleet::headline(&**c, now).await.map_err(|e| e.to_string())
        },
        async {
            let c = s.pool.get().await.map_err(|e| e.to_string())?;
            trend(&c, from, to).await.map_err(|e| e.to_string())
        }
    );
    let head = or_return!(head, unavailable);
    let rates = or_return!(rates, unavailable);
    let silent_class = if head.not_reporting > 0 { "warn" } else { "ok" };
    let kpis = vec![
        Kpi {
            label: "ops.kpi.in_service",
            value: int(lang, head.in_service),
            href: "/ops/meters?status=all",
            class: "",
        },
        Kpi { label: "ops.kpi.reporting_today", value: int(lang, head.reporting_today), href: "", class: "" },
        Kpi {
            label: "ops.kpi.not_reporting",
            value: int(lang, head.not_reporting),
            href: "/ops/meters?status=not_reporting",
            class: silent_class,
        },
        Kpi {
            label: "ops.kpi.dead_letters",
            value: int(lang, head.dead_letters_today.iter().map(|d| d.count).sum()),
            href: "",
            class: "",
        },
        Kpi {
            label: "ops.kpi.poll_failures",
            value: int(lang, head.poll_failures.iter().map(|d| d.count).sum()),
            href: "/ops/meters?status=failing",
            class: "",
        },
    ];
    let x: Vec<i64> = rates.iter().map(|r| ops::midnight(r.day).timestamp()).collect();
    let series = |f: fn(&ledger::ReadRate) -> f64| rates.iter().map(|r| Some((f(r) * 1000.0).round() / 10.0)).collect();
    let chart = chart(
        &x,
        &[
            (lang.t("ops.rate.complete"), series(|r| r.complete_ratio), "#0b5cad"),
            (lang.t("ops.rate.within_1h"), series(|r| r.within_1h_ratio), "#e07b00"),
            (lang.t("ops.rate.within_24h"), series(|r| r.within_24h_ratio), "#2e9d4a"),
            (lang.t("ops.rate.within_72h"), series(|r| r.within_72h_ratio), "#8e44ad"),
        ],
    );
    let rows = rates
        .iter()
        .rev()
        .map(|r| RateRow {
            day: local_day(lang, r.day),
            meters: int(lang, r.meters),
            complete: pct(lang, r.complete_ratio),
            complete_ratio: r.complete_ratio,
            received: pct(lang, r.received_ratio),
            h1: pct(lang, r.within_1h_ratio),
            h24: pct(lang, r.within_24h_ratio),
            h72: pct(lang, r.within_72h_ratio),
        })
        .collect();
    let pairs = |v: &[fleet::ByReason]| v.iter().map(|d| (d.reason.clone(), int(lang, d.count))).collect();
    render(&DashboardPage {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "ops.title"),
        tabs: tabs(&who, "dashboard"),
        kpis,
        dead: pairs(&head.dead_letters_today),
        failures: head
            .poll_failures
            .iter()
            .map(|d| {
                let list = href("/ops/meters", &[("status", "failing".into()), ("reason", d.reason.clone())]);
                (d.reason.clone(), int(lang, d.count), list)
            })
            .collect(),
        rates: rows,
        chart,
        from: from.to_string(),
        to: to.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Meters

struct MeterItem {
    serial: String,
    href: String,
    kind: String,
    protocol: String,
    feeder: String,
    transformer: String,
    building: String,
    municipality: String,
    last_reading: String,
    silent: String,
    last_success: String,
    error: String,
    failures: String,
}

#[derive(Template)]
#[template(path = "ops_meters.html")]
struct MetersPage {
    chrome: Chrome,
    tabs: Tabs,
    status: &'static str,
    hours: i64,
    transformer: String,
    feeder: String,
    municipality: String,
    protocol: String,
    serial: String,
    reason: String,
    choices: meters::Choices,
    rows: Vec<MeterItem>,
    pager: Pager,
    json: String,
}

async fn meter_list(
    State(s): State<AppState>,
    operator: Operator,
    lang: Lang,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = operator.0;
    let (f, page) = or_return!(params::meter_filter(&q), bad_request);
    let now = Utc::now();
    let client = or_return!(s.pool.get().await, unavailable);
    let list = or_return!(meters::list(&**client, &f, page, now).await, unavailable);
    let choices = or_return!(meters::choices(&**client, 2000).await, unavailable);
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let query = vec![
        ("status", f.status.as_str().to_owned()),
        ("hours", if f.hours == 24 { String::new() } else { f.hours.to_string() }),
        ("transformer", opt(&f.transformer)),
        ("feeder", opt(&f.feeder)),
        ("municipality", opt(&f.municipality)),
        ("protocol", opt(&f.protocol)),
        ("serial", opt(&f.serial)),
        ("reason", opt(&f.reason)),
    ];
    let rows = list
        .meters
        .iter()
        .map(|m| MeterItem {
            serial: m.serial.clone(),
            href: format!("/ops/meters/{}", urlencode(&m.serial)),
            kind: lang.t(&format!("ops.kind.{}", m.kind)).to_owned(),
            protocol: m.protocol.clone(),
            feeder: m.feeder.clone().unwrap_or_default(),
            transformer: m.transformer.clone().unwrap_or_default(),
            building: m.building.clone(),
            municipality: m.municipality.clone(),
            last_reading: m.last_reading.map_or_else(|| lang.t("ops.never").to_owned(), |t| local_time(lang, t)),
            silent: ago(m.last_reading, now),
            last_success: opt_when(lang, m.last_success_at),
            error: m.last_error.clone().unwrap_or_default(),
            failures: if m.consecutive_failures > 0 {
                int(lang, i64::from(m.consecutive_failures))
            } else {
                String::new()
            },
        })
        .collect();
    let mut json_q = query.clone();
    json_q.push(("page", if page > 1 { page.to_string() } else { String::new() }));
    render(&MetersPage {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "ops.meters.title"),
        tabs: tabs(&who, "meters"),
        status: f.status.as_str(),
        hours: f.hours,
        transformer: opt(&f.transformer),
        feeder: opt(&f.feeder),
        municipality: opt(&f.municipality),
        protocol: opt(&f.protocol),
        serial: opt(&f.serial),
        reason: opt(&f.reason),
        choices,
        rows,
        pager: Pager::new(lang, "/ops/meters", &query, page, list.total),
        json: href("/api/v1/ops/meters", &json_q),
    })
}

struct KeyValue {
    key: &'static str,
    value: String,
}

struct LatestRow {
    obis: String,
    name: &'static str,
    value: String,
    unit: &'static str,
    at: String,
}

struct HourRow {
    hour: String,
    kwh: String,
    volts: String,
}

struct LedgerRow {
    day: String,
    received: String,
    complete: bool,
    h1: String,
    h24: String,
    h72: String,
}

struct EventItem {
    at: String,
    serial: String,
    href: String,
    transformer: String,
    kind: String,
    source: String,
    detail: String,
}

struct CommandItem {
    id: i64,
    command: String,
    by: String,
    note: String,
    at: String,
    outcome: String,
    class: &'static str,
    detail: String,
    highlight: bool,
}

#[derive(Template)]
#[template(path = "ops_meter.html")]
struct MeterPage {
    chrome: Chrome,
    tabs: Tabs,
    serial: String,
    /// The serial percent-encoded for URLs.
    serial_enc: String,
    inventory: Vec<KeyValue>,
    latest: Vec<LatestRow>,
    hours: Vec<HourRow>,
    energy_chart: String,
    voltage_chart: String,
    capability: Vec<KeyValue>,
    capability_details: String,
    poll: Vec<KeyValue>,
    ledger: Vec<LedgerRow>,
    events: Vec<EventItem>,
    commands: Vec<CommandItem>,
    can_command: bool,
    command_error: Option<String>,
    building_href: String,
}

fn event_items(lang: Lang, list: &[events::EventRow]) -> Vec<EventItem> {
    list.iter()
        .map(|e| EventItem {
            at: local_time(lang, e.ts),
            serial: e.serial.clone(),
            href: format!("/ops/meters/{}", urlencode(&e.serial)),
            transformer: e.transformer.clone().unwrap_or_default(),
            kind: event_label(lang, &e.kind),
            source: e.source.unwrap_or("").to_owned(),
            detail: e.detail.clone().unwrap_or_default(),
        })
        .collect()
}

fn event_label(lang: Lang, kind: &str) -> String {
    // The portal's names of the same codes (one table, one set of texts).
    if events::kinds().any(|(_, n)| n == kind) {
        lang.t(&format!("portal.event.{kind}")).to_owned()
    } else {
        kind.replace('_', " ")
    }
}

fn command_items(lang: Lang, list: &[CommandRecord], highlight: Option<i64>) -> Vec<CommandItem> {
    list.iter()
        .map(|c| CommandItem {
            id: c.id,
            command: lang.t(&format!("ops.cmd.{}", c.command)).to_owned(),
            by: c.requested_by.clone(),
            note: c.note.clone().unwrap_or_default(),
            at: local_time(lang, c.requested_at),
            outcome: match c.outcome.as_deref() {
                Some("done") => lang.t("ops.cmd.done").to_owned(),
                Some("failed") => lang.t("ops.cmd.failed").to_owned(),
                _ => lang.t("ops.cmd.running").to_owned(),
            },
            class: match c.outcome.as_deref() {
                Some("done") => "ok",
                Some("failed") => "bad",
                _ => "warn",
            },
            detail: c.detail.clone().unwrap_or_default(),
            highlight: highlight == Some(c.id),
        })
        .collect()
}

#[derive(Deserialize)]
struct MeterQuery {
    /// The command just issued (its outcome is highlighted).
    command: Option<i64>,
    /// Why the last command form was refused (a locale key suffix).
    refused: Option<String>,
}

async fn meter_page(
    State(s): State<AppState>,
    operator: Operator,
    lang: Lang,
    uri: Uri,
    Path(serial): Path<String>,
    Query(q): Query<MeterQuery>,
) -> Response {
    let who = operator.0;
    let now = Utc::now();
    let client = or_return!(s.pool.get().await, unavailable);
    let Some(d) = or_return!(meters::detail(&**client, &serial, now).await, unavailable) else {
        return not_found();
    };
    let ev = or_return!(events::page(&**client, None, None, Some(&d.inventory.serial), None).await, unavailable);
    let cmds = or_return!(commands_of(&client, &d.inventory.serial, 20).await, |e: ApiError| unavailable(e.message));
    let inv = &d.inventory;
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "–".into());
    let mut inventory = vec![
        KeyValue { key: "ops.meter.kind", value: lang.t(&format!("ops.kind.{}", inv.kind)).to_owned() },
        KeyValue { key: "ops.meter.protocol", value: inv.protocol.clone() },
        KeyValue { key: "ops.meter.address", value: text(&inv.address) },
        KeyValue { key: "ops.meter.building", value: format!("{} · {}", inv.building, inv.building_address) },
        KeyValue { key: "ops.meter.municipality", value: format!("{} ({})", inv.municipality, inv.region) },
        KeyValue { key: "ops.meter.feeder", value: text(&inv.feeder) },
        KeyValue { key: "ops.meter.transformer", value: text(&inv.transformer) },
        KeyValue { key: "ops.meter.installed", value: local_day(lang, inv.installed_on) },
    ];
    if let Some(r) = inv.removed_on {
        inventory.push(KeyValue { key: "ops.meter.removed", value: local_day(lang, r) });
    }
    if let Some(h) = &inv.household {
        inventory.push(KeyValue {
            key: "ops.meter.household",
            value: format!("{h} · {} {}", lang.t("ops.meter.apartment"), inv.apartment.clone().unwrap_or_default()),
        });
    }
    let latest = d
        .latest
        .iter()
        .map(|l| LatestRow {
            obis: l.obis.clone(),
            name: l.name,
            value: real(lang, l.value, if l.unit == "Wh" { 0 } else { 1 }),
            unit: l.unit,
            at: local_time(lang, l.ts),
        })
        .collect();
    // Hourly table of the 48 hours: energy and the voltage range.
    /// An hour: its start, energy (Wh), lowest and highest voltage.
    type Hour = (DateTime<Utc>, Option<i64>, Option<(f64, f64)>);
    let mut hours: Vec<Hour> = Vec::new();
    for i in &d.intervals {
        let start = i.ts - chrono::Duration::minutes(15);
        let hour = start - chrono::Duration::seconds(start.timestamp().rem_euclid(3600));
        if hours.last().is_none_or(|h| h.0 != hour) {
            hours.push((hour, None, None));
        }
        if let Some(h) = hours.last_mut() {
            if let Some(wh) = i.wh {
                h.1 = Some(h.1.unwrap_or(0) + wh);
            }
            if let Some(v) = i.volts {
                h.2 = Some(h.2.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
            }
        }
    }
    let hour_rows = hours
        .iter()
        .rev()
        .map(|(h, wh, v)| HourRow {
            hour: local_time(lang, *h),
            kwh: wh.map_or_else(|| "–".into(), |w| real(lang, ops::kwh(w), 3)),
            volts: v.map_or_else(|| "–".into(), |(lo, hi)| format!("{} – {}", real(lang, lo, 1), real(lang, hi, 1))),
        })
        .collect();
    let x: Vec<i64> = d.intervals.iter().map(|i| i.ts.timestamp()).collect();
    let energy_chart = chart(
        &x,
        &[(lang.t("ops.meter.energy"), d.intervals.iter().map(|i| i.wh.map(|w| w as f64)).collect(), "#0b5cad")],
    );
    let voltage_chart = chart(
        &x,
        &[
            (lang.t("ops.meter.voltage"), d.intervals.iter().map(|i| i.volts).collect(), "#e07b00"),
            ("207 V", x.iter().map(|_| Some(207.0)).collect(), "#c62828"),
            ("253 V", x.iter().map(|_| Some(253.0)).collect(), "#c62828"),
        ],
    );
    let yes_no = |b: Option<bool>| match b {
        Some(true) => lang.t("ops.yes").to_owned(),
        Some(false) => lang.t("ops.no").to_owned(),
        None => "–".into(),
    };
    let opt_int = |v: Option<i32>| v.map_or_else(|| "–".into(), |n| int(lang, i64::from(n)));
    let (capability, capability_details) = match &d.capability {
        Some(c) => (
            vec![
                KeyValue { key: "ops.cap.protocol", value: c.protocol.clone() },
                KeyValue { key: "ops.cap.max_pdu", value: opt_int(c.max_pdu) },
                KeyValue { key: "ops.cap.max_list", value: opt_int(c.max_list) },
                KeyValue { key: "ops.cap.selective_access", value: yes_no(c.selective_access) },
                KeyValue { key: "ops.cap.security", value: text(&c.security) },
                KeyValue { key: "ops.cap.probed_at", value: local_time(lang, c.probed_at) },
            ],
            c.details.clone(),
        ),
        None => (Vec::new(), String::new()),
    };
    let poll = match &d.poll {
        Some(p) => vec![
            KeyValue { key: "ops.poll.last_attempt", value: local_time(lang, p.last_attempt_at) },
            KeyValue { key: "ops.poll.last_success", value: opt_when(lang, p.last_success_at) },
            KeyValue { key: "ops.poll.last_error", value: text(&p.last_error) },
            KeyValue { key: "ops.poll.failures", value: int(lang, i64::from(p.consecutive_failures)) },
            KeyValue {
                key: "ops.poll.clock",
                value: p.clock_deviation_ms.map_or_else(
                    || "–".into(),
                    |ms| {
                        let flag = if p.clock_flagged { lang.t("ops.poll.clock_flagged") } else { "" };
                        format!("{} s {flag}", real(lang, ms as f64 / 1000.0, 1))
                    },
                ),
            },
        ],
        None => Vec::new(),
    };
    let ledger = d
        .ledger
        .iter()
        .map(|l| LedgerRow {
            day: local_day(lang, l.day),
            received: format!("{} / {}", l.received, l.expected),
            complete: l.received >= l.expected,
            h1: l.within_1h.to_string(),
            h24: l.within_24h.to_string(),
            h72: l.within_72h.to_string(),
        })
        .collect();
    let command_error = q.refused.as_deref().and_then(|r| {
        ["note", "confirm", "command", "bad_request", "conflict", "not_found", "unavailable"]
            .iter()
            .find(|k| **k == r)
            .map(|k| lang.t(&format!("ops.cmd.refused.{k}")).to_owned())
    });
    render(&MeterPage {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "ops.meter.title"),
        tabs: tabs(&who, "meters"),
        serial: inv.serial.clone(),
        serial_enc: urlencode(&inv.serial),
        inventory,
        latest,
        hours: hour_rows,
        energy_chart,
        voltage_chart,
        capability,
        capability_details,
        poll,
        ledger,
        events: event_items(lang, &ev.events),
        commands: command_items(lang, &cmds, q.command),
        can_command: inv.protocol == "dlms" && inv.address.is_some() && inv.removed_on.is_none(),
        command_error,
        building_href: format!("/ops/buildings/{}", urlencode(&inv.building)),
    })
}

#[derive(Deserialize)]
struct CommandForm {
    #[serde(default)]
    command: String,
    #[serde(default)]
    note: String,
    /// The confirmation checkbox (`yes`).
    #[serde(default)]
    confirm: String,
}

/// POST `/ops/meters/{serial}/commands`: the form's second step is its required note and confirmation
/// box; the command runs like `POST /api/v1/meters/{serial}/commands` and the page shows its outcome.
async fn meter_command(
    State(s): State<AppState>,
    operator: Operator,
    Path(serial): Path<String>,
    Form(f): Form<CommandForm>,
) -> Response {
    let who = operator.0;
    let Ok(serial) = MeterSerial::new(serial) else { return not_found() };
    let back = format!("/ops/meters/{}", urlencode(serial.as_str()));
    let refuse = |why: &str| Redirect::to(&format!("{back}?refused={why}#commands")).into_response();
    let command = match f.command.as_str() {
        "disconnect" => MeterCommand::Disconnect,
        "reconnect" => MeterCommand::Reconnect,
        "retry_polling" => MeterCommand::RetryPolling,
        _ => return refuse("command"),
    };
    if f.note.trim().is_empty() {
        return refuse("note");
    }
    if f.confirm != "yes" {
        return refuse("confirm");
    }
    match execute_command(&s, &who, &serial, command, Some(f.note)).await {
        Ok(out) => Redirect::to(&format!("{back}?command={}#commands", out.id)).into_response(),
        Err(e) => refuse(e.code),
    }
}

// ---------------------------------------------------------------------------------------------
// Load

struct LoadRow {
    name: String,
    /// The group's meters (transformers only: the meter list filters by transformer).
    href: String,
    meters: String,
    total: String,
    peak: String,
    peak_hour: String,
}

struct LoadHour {
    hour: String,
    values: Vec<String>,
}

#[derive(Template)]
#[template(path = "ops_load.html")]
struct LoadPage {
    chrome: Chrome,
    tabs: Tabs,
    by: &'static str,
    day: String,
    top: i64,
    groups_with_data: String,
    names: Vec<String>,
    rows: Vec<LoadRow>,
    matrix: Vec<LoadHour>,
    chart: String,
    json: String,
}

async fn load_page(
    State(s): State<AppState>,
    operator: Operator,
    lang: Lang,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = operator.0;
    let (by, day, top) = or_return!(params::load_params(&q), bad_request);
    let client = or_return!(s.pool.get().await, unavailable);
    let r = or_return!(load::report(&**client, by, day, top).await, unavailable);
    let palette = ["#0b5cad", "#e07b00", "#2e9d4a", "#8e44ad", "#c62828", "#5b6878", "#1f6fd1", "#b26a00"];
    let x: Vec<i64> = r.hours.iter().map(|h| h.timestamp()).collect();
    let series: Vec<(&str, Vec<Option<f64>>, &str)> = r
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.as_str(), g.hourly_kwh.clone(), palette[i % palette.len()]))
        .collect();
    let rows = r
        .groups
        .iter()
        .map(|g| LoadRow {
            name: g.name.clone(),
            href: if by == load::GroupBy::Transformer {
                href("/ops/meters", &[("status", "all".into()), ("transformer", g.name.clone())])
            } else {
                href("/ops/meters", &[("status", "all".into()), ("feeder", g.name.clone())])
            },
            meters: int(lang, g.meters),
            total: real(lang, g.total_kwh, 1),
            peak: real(lang, g.peak_kwh, 1),
            peak_hour: g
                .peak_hour
                .map_or_else(|| "–".into(), |h| h.with_timezone(&Belgrade).format("%H:00").to_string()),
        })
        .collect();
    let matrix = r
        .hours
        .iter()
        .enumerate()
        .map(|(i, h)| LoadHour {
            hour: h.with_timezone(&Belgrade).format("%H:00").to_string(),
            values: r
                .groups
                .iter()
                .map(|g| g.hourly_kwh.get(i).copied().flatten().map_or_else(|| "–".into(), |v| real(lang, v, 1)))
                .collect(),
        })
        .collect();
    let query = [("by", by.as_str().to_owned()), ("day", day.to_string()), ("top", top.to_string())];
    render(&LoadPage {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "ops.load.title"),
        tabs: tabs(&who, "load"),
        by: by.as_str(),
        day: day.to_string(),
        top,
        groups_with_data: int(lang, r.groups_with_data),
        names: r.groups.iter().map(|g| g.name.clone()).collect(),
        rows,
        matrix,
        chart: chart(&x, &series),
        json: href("/api/v1/ops/load", &query),
    })
}

// ---------------------------------------------------------------------------------------------
// Voltage

struct VoltageItem {
    serial: String,
    href: String,
    transformer: String,
    building: String,
    outside: String,
    below: String,
    above: String,
    min: String,
    max: String,
    first: String,
}

#[derive(Template)]
#[template(path = "ops_voltage.html")]
struct VoltagePageView {
    chrome: Chrome,
    tabs: Tabs,
    day: String,
    transformer: String,
    rows: Vec<VoltageItem>,
    pager: Pager,
    json: String,
}

async fn voltage_page(
    State(s): State<AppState>,
    operator: Operator,
    lang: Lang,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = operator.0;
    let (day, transformer, page) = or_return!(params::voltage_params(&q), bad_request);
    let client = or_return!(s.pool.get().await, unavailable);
    let v = or_return!(voltage::page(&**client, day, transformer.as_deref(), page).await, unavailable);
    let rows = v
        .meters
        .iter()
        .map(|m| VoltageItem {
            serial: m.serial.clone(),
            href: format!("/ops/meters/{}", urlencode(&m.serial)),
            transformer: m.transformer.clone().unwrap_or_default(),
            building: m.building.clone(),
            outside: int(lang, m.outside),
            below: int(lang, m.below),
            above: int(lang, m.above),
            min: real(lang, m.min_volts, 1),
            max: real(lang, m.max_volts, 1),
            first: local_time(lang, m.first_outside),
        })
        .collect();
    let query = vec![("day", day.to_string()), ("transformer", transformer.clone().unwrap_or_default())];
    let mut json_q = query.clone();
    json_q.push(("page", if page > 1 { page.to_string() } else { String::new() }));
    render(&VoltagePageView {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "ops.voltage.title"),
        tabs: tabs(&who, "voltage"),
        day: day.to_string(),
        transformer: transformer.unwrap_or_default(),
        rows,
        pager: Pager::new(lang, "/ops/voltage", &query, page, v.total),
        json: href("/api/v1/ops/voltage", &json_q),
    })
}

// ---------------------------------------------------------------------------------------------
// Events

#[derive(Template)]
#[template(path = "ops_events.html")]
struct EventsPage {
    chrome: Chrome,
    tabs: Tabs,
    kind: String,
    transformer: String,
    serial: String,
    kinds: Vec<(&'static str, String)>,
    rows: Vec<EventItem>,
    newer: Option<String>,
    older: Option<String>,
}

async fn event_list(
    State(s): State<AppState>,
    operator: Operator,
    lang: Lang,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = operator.0;
    let (code, transformer, serial, before) = or_return!(params::event_params(&q), bad_request);
    let client = or_return!(s.pool.get().await, unavailable);
    let page =
        or_return!(events::page(&**client, code, transformer.as_deref(), serial.as_deref(), before).await, unavailable);
    let kind = code.map(events::kind_name).unwrap_or_default();
    let query = vec![
        ("kind", kind.clone()),
        ("transformer", transformer.clone().unwrap_or_default()),
        ("serial", serial.clone().unwrap_or_default()),
    ];
    let older = page.next.as_ref().map(|n| {
        let mut q = query.clone();
        q.push(("before", n.clone()));
        href("/ops/events", &q)
    });
    render(&EventsPage {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "ops.events.title"),
        tabs: tabs(&who, "events"),
        kind,
        transformer: transformer.unwrap_or_default(),
        serial: serial.unwrap_or_default(),
        kinds: events::kinds().map(|(_, n)| (n, event_label(lang, n))).collect(),
        rows: event_items(lang, &page.events),
        newer: before.is_some().then(|| href("/ops/events", &query)),
        older,
    })
}

// ---------------------------------------------------------------------------------------------
// Buildings

struct BuildingItem {
    code: String,
    href: String,
    period: String,
    municipality: String,
    households: String,
    bills: String,
    master: String,
    flats: String,
    common: String,
    percent: String,
    negative: bool,
    problems: String,
    billed: String,
    one_over_n: String,
    version: i32,
}

fn building_item(lang: Lang, r: &buildings::Reconciliation) -> BuildingItem {
    BuildingItem {
        code: r.building.clone(),
        href: href(
            &format!("/ops/buildings/{}", urlencode(&r.building)),
            &[("period", r.period.format("%Y-%m").to_string())],
        ),
        period: month_label(lang, r.period),
        municipality: r.municipality.clone(),
        households: int(lang, r.households),
        bills: int(lang, r.bills),
        master: opt_dec(lang, r.master_kwh, 1),
        flats: kwh_dec(lang, r.flats_kwh),
        common: opt_dec(lang, r.common_kwh, 1),
        percent: r.common_percent.map_or_else(|| "–".into(), |p| format!("{} %", number(lang, p, 1))),
        negative: r.negative,
        problems: int(lang, r.problems),
        billed: number(lang, r.billed_rsd, 2),
        one_over_n: opt_dec(lang, r.one_over_n_rsd, 2),
        version: r.version,
    }
}

#[derive(Template)]
#[template(path = "ops_buildings.html")]
struct BuildingsPage {
    chrome: Chrome,
    tabs: Tabs,
    periods: Vec<(String, String)>,
    period: String,
    show: &'static str,
    rows: Vec<BuildingItem>,
    pager: Pager,
    json: String,
}

async fn building_list(
    State(s): State<AppState>,
    operator: Operator,
    lang: Lang,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = operator.0;
    let (period, show, page) = or_return!(params::building_params(&q), bad_request);
    let client = or_return!(s.pool.get().await, unavailable);
    let periods = or_return!(buildings::periods(&**client, 36).await, unavailable);
    let chrome = Chrome::new(lang, Some(&who), &here(&uri), "ops.buildings.title");
    let list = match period.or_else(|| periods.first().copied()) {
        Some(p) => Some(or_return!(buildings::page(&**client, p, show, page).await, unavailable)),
        None => None,
    };
    let shown = list.as_ref().and_then(|l| l.period).map(|p| p.format("%Y-%m").to_string()).unwrap_or_default();
    let query = vec![("period", shown.clone()), ("show", show.as_str().to_owned())];
    let mut json_q = query.clone();
    json_q.push(("page", if page > 1 { page.to_string() } else { String::new() }));
    render(&BuildingsPage {
        chrome,
        tabs: tabs(&who, "buildings"),
        periods: periods.iter().map(|p| (p.format("%Y-%m").to_string(), month_label(lang, *p))).collect(),
        period: shown,
        show: show.as_str(),
        rows: list.as_ref().map(|l| l.buildings.iter().map(|b| building_item(lang, b)).collect()).unwrap_or_default(),
        pager: Pager::new(lang, "/ops/buildings", &query, page, list.as_ref().map_or(0, |l| l.total)),
        json: href("/api/v1/ops/buildings", &json_q),
    })
}

struct FlatItem {
    household: String,
    apartment: String,
    vt: String,
    nt: String,
    total: String,
    common: String,
    rsd: String,
    old: String,
    diff: String,
    diff_class: &'static str,
    estimated: bool,
}

#[derive(Template)]
#[template(path = "ops_building.html")]
struct BuildingPageView {
    chrome: Chrome,
    tabs: Tabs,
    d: buildings::BuildingDetail,
    masters: String,
    transformer_href: String,
    months: Vec<BuildingItem>,
    shown: String,
    bills: Vec<FlatItem>,
    chart: String,
}

#[derive(Deserialize)]
struct PeriodQuery {
    period: Option<String>,
}

async fn building_page(
    State(s): State<AppState>,
    operator: Operator,
    lang: Lang,
    uri: Uri,
    Path(code): Path<String>,
    Query(q): Query<PeriodQuery>,
) -> Response {
    let who = operator.0;
    let period = or_return!(params::month_param(q.period.as_deref()), bad_request);
    let client = or_return!(s.pool.get().await, unavailable);
    let Some(d) = or_return!(buildings::detail(&**client, &code, period).await, unavailable) else {
        return not_found();
    };
    let months: Vec<BuildingItem> = d.months.iter().map(|m| building_item(lang, m)).collect();
    let chrono_months: Vec<&buildings::Reconciliation> = d.months.iter().rev().collect();
    let x: Vec<i64> = chrono_months.iter().map(|m| ops::midnight(m.period).timestamp()).collect();
    let f = |v: Option<Decimal>| v.and_then(|d| rust_decimal::prelude::ToPrimitive::to_f64(&d));
    let chart = chart(
        &x,
        &[
            (lang.t("ops.buildings.flats"), chrono_months.iter().map(|m| f(Some(m.flats_kwh))).collect(), "#0b5cad"),
            (lang.t("ops.buildings.common"), chrono_months.iter().map(|m| f(m.common_kwh)).collect(), "#e07b00"),
        ],
    );
    let bills = d
        .bills
        .iter()
        .map(|b| FlatItem {
            household: b.household.clone(),
            apartment: b.apartment.clone(),
            vt: number(lang, b.vt_kwh, 1),
            nt: number(lang, b.nt_kwh, 1),
            total: number(lang, b.total_kwh, 1),
            common: opt_dec(lang, b.common_kwh, 1),
            rsd: number(lang, b.total_rsd, 2),
            old: opt_dec(lang, b.old_split_rsd, 2),
            diff: opt_dec(lang, b.difference_rsd, 2),
            diff_class: match b.difference_rsd {
                Some(x) if x < Decimal::ZERO => "ok",
                Some(x) if x > Decimal::ZERO => "bad",
                _ => "",
            },
            estimated: b.estimated,
        })
        .collect();
    let transformer_href = d
        .transformer
        .as_ref()
        .map(|t| href("/ops/meters", &[("status", "all".into()), ("transformer", t.clone())]))
        .unwrap_or_default();
    render(&BuildingPageView {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "ops.building.title"),
        tabs: tabs(&who, "buildings"),
        masters: d.masters.join(", "),
        transformer_href,
        months,
        shown: d.period.map(|p| month_label(lang, p)).unwrap_or_default(),
        bills,
        chart,
        d,
    })
}

// ---------------------------------------------------------------------------------------------
// Accounts (admins)

struct AccountItem {
    username: String,
    role: &'static str,
    households: String,
    state: &'static str,
    class: &'static str,
    created: String,
    tokens: String,
    can_disable: bool,
    disable_href: String,
}

/// A one-time activation code just made (shown once, in this response only).
struct Issued {
    whom: String,
    code: String,
    days: u64,
}

#[derive(Template)]
#[template(path = "ops_accounts.html")]
struct AccountsPage {
    chrome: Chrome,
    tabs: Tabs,
    rows: Vec<AccountItem>,
    page: i64,
    prev: Option<String>,
    next: Option<String>,
    issued: Option<Issued>,
    error: Option<String>,
    notice: Option<&'static str>,
    form_username: String,
    form_role: String,
    form_households: String,
    form_household: String,
}

const ACCOUNTS_PER_PAGE: i64 = 100;

async fn accounts_view(
    s: &AppState,
    who: &Principal,
    lang: Lang,
    page: i64,
    fill: impl FnOnce(&mut AccountsPage),
) -> Response {
    let client = or_return!(s.pool.get().await, unavailable);
    let list: Vec<AccountInfo> =
        or_return!(store::list(&client, ACCOUNTS_PER_PAGE + 1, (page - 1) * ACCOUNTS_PER_PAGE).await, unavailable);
    let more = list.len() as i64 > ACCOUNTS_PER_PAGE;
    let rows = list
        .iter()
        .take(ACCOUNTS_PER_PAGE as usize)
        .map(|a| {
            let (state, class) = if a.disabled {
                ("ops.accounts.disabled", "bad")
            } else if a.locked {
                ("ops.accounts.locked", "warn")
            } else if a.active {
                ("ops.accounts.active", "ok")
            } else {
                ("ops.accounts.pending", "warn")
            };
            AccountItem {
                username: a.username.clone(),
                role: match a.role {
                    Role::Household => "ops.role.household",
                    Role::Operator => "ops.role.operator",
                    Role::Admin => "ops.role.admin",
                },
                households: a.households.join(", "),
                state,
                class,
                created: local_day(lang, a.created_at.with_timezone(&Belgrade).date_naive()),
                tokens: a.tokens.join(", "),
                can_disable: !a.disabled && a.username != who.username,
                disable_href: format!("/ops/accounts/{}/disable", urlencode(&a.username)),
            }
        })
        .collect();
    let link = |p: i64| if p > 1 { format!("/ops/accounts?page={p}") } else { "/ops/accounts".to_owned() };
    let mut view = AccountsPage {
        chrome: Chrome::new(lang, Some(who), "/ops/accounts", "ops.accounts.title"),
        tabs: tabs(who, "accounts"),
        rows,
        page,
        prev: (page > 1).then(|| link(page - 1)),
        next: more.then(|| link(page + 1)),
        issued: None,
        error: None,
        notice: None,
        form_username: String::new(),
        form_role: "household".into(),
        form_households: String::new(),
        form_household: String::new(),
    };
    fill(&mut view);
    render(&view)
}

async fn accounts_page(
    State(s): State<AppState>,
    admin: Admin,
    lang: Lang,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = admin.0;
    let page = or_return!(params::int_param(&q, "page", 1..=10_000, 1), bad_request);
    let notice = match q.get("done").map(String::as_str) {
        Some("disabled") => Some("ops.accounts.disabled_notice"),
        _ => None,
    };
    accounts_view(&s, &who, lang, page, |v| v.notice = notice).await
}

#[derive(Deserialize)]
struct NewAccountForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
    /// Household codes, separated by commas or spaces (household accounts).
    #[serde(default)]
    households: String,
}

/// The answer to a form: the list again, with the new code or the refusal; 201 / 4xx.
async fn form_answer(
    s: &AppState,
    who: &Principal,
    lang: Lang,
    result: Result<Issued, ApiError>,
    fill: impl FnOnce(&mut AccountsPage),
) -> Response {
    let status = match &result {
        Ok(_) => StatusCode::CREATED,
        Err(e) => e.status,
    };
    let mut r = accounts_view(s, who, lang, 1, |v| match result {
        Ok(issued) => v.issued = Some(issued),
        Err(e) => {
            v.error = Some(e.message);
            fill(v);
        }
    })
    .await;
    if r.status().is_success() {
        *r.status_mut() = status;
    }
    r
}

async fn account_create(
    State(s): State<AppState>,
    admin: Admin,
    lang: Lang,
    Form(f): Form<NewAccountForm>,
) -> Response {
    let who = admin.0;
    let result = create_with_code(&s, &who, &f).await;
    form_answer(&s, &who, lang, result, |v| {
        v.form_username = f.username.chars().take(64).collect();
        v.form_role = f.role.clone();
        v.form_households = f.households.chars().take(400).collect();
    })
    .await
}

/// Makes the account (households checked first, so a refusal leaves nothing half made) and its
/// one-time activation code.
async fn create_with_code(s: &AppState, who: &Principal, f: &NewAccountForm) -> Result<Issued, ApiError> {
    let username = f.username.trim().to_ascii_lowercase();
    let role = Role::parse(f.role.trim()).ok_or_else(|| ApiError::bad("role: household, operator or admin"))?;
    let households: Vec<String> = f
        .households
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let (min, valid) = (s.auth_cfg.min_password_len, s.auth_cfg.invite_valid);
    let code = store::create_pending(&client, &username, role, &households, &who.username, min, valid).await?;
    tracing::info!(account = %username, role = role.as_str(), by = %who.username, "account created on the ops page");
    Ok(Issued { whom: username, code, days: s.auth_cfg.invite_valid.as_secs() / 86_400 })
}

#[derive(Deserialize)]
struct InviteForm {
    #[serde(default)]
    household: String,
}

async fn account_invite(State(s): State<AppState>, admin: Admin, lang: Lang, Form(f): Form<InviteForm>) -> Response {
    let who = admin.0;
    let household = f.household.trim().to_owned();
    let result = async {
        if household.is_empty() {
            return Err(ApiError::bad("household: the household code"));
        }
        let client = s.pool.get().await.map_err(ApiError::unavailable)?;
        let code = store::create_invite(
            &client,
            &InviteFor::Household(household.clone()),
            &who.username,
            s.auth_cfg.invite_valid,
        )
        .await?;
        Ok(Issued { whom: household.clone(), code, days: s.auth_cfg.invite_valid.as_secs() / 86_400 })
    }
    .await;
    form_answer(&s, &who, lang, result, |v| v.form_household = household.chars().take(64).collect()).await
}

async fn account_disable(
    State(s): State<AppState>,
    admin: Admin,
    lang: Lang,
    Path(username): Path<String>,
) -> Response {
    let who = admin.0;
    let result = async {
        if username == who.username {
            return Err(ApiError::conflict("an admin cannot disable their own account"));
        }
        let client = s.pool.get().await.map_err(ApiError::unavailable)?;
        store::disable(&client, &username).await?;
        tracing::info!(account = %username, by = %who.username, "account disabled on the ops page");
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/ops/accounts?done=disabled").into_response(),
        Err(e) => {
            let status = e.status;
            let mut r = accounts_view(&s, &who, lang, 1, |v| v.error = Some(e.message)).await;
            *r.status_mut() = status;
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_links() {
        assert_eq!(int(Lang::Sr, 205_000), "205.000");
        assert_eq!(int(Lang::En, 205_000), "205,000");
        assert_eq!(pct(Lang::Sr, 0.9734), "97,3 %");
        assert_eq!(pct(Lang::En, 1.0), "100.0 %");
        assert_eq!(
            href(
                "/ops/meters",
                &[("status", "all".into()), ("transformer", "TS 1/2&x".into()), ("feeder", String::new())]
            ),
            "/ops/meters?status=all&transformer=TS%201%2F2%26x"
        );
        let p = Pager::new(Lang::En, "/ops/voltage", &[("day", "2026-11-20".into())], 2, 120);
        assert_eq!((p.pages, p.total.as_str()), (3, "120"));
        assert_eq!(p.prev.as_deref(), Some("/ops/voltage?day=2026-11-20"));
        assert_eq!(p.next.as_deref(), Some("/ops/voltage?day=2026-11-20&page=3"));
        let t: DateTime<Utc> = "2026-11-20T10:15:00Z".parse().expect("ts");
        assert_eq!(ago(Some(t), t + chrono::Duration::hours(26)), "26 h");
        let c = chart(&[1], &[("a</script>", vec![Some(1.0)], "#000")]);
        assert!(!c.contains("</"), "{c}");
    }
}
