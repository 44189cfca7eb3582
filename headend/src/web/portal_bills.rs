//! The household portal's bills and events: `/portal/bills` (past bills next to the old 1/N split),
//! `/portal/bills/{YYYY-MM}` (a printable invoice with every line), `/portal/bills/{YYYY-MM}.csv`, and
//! `/portal/events` (outages and alarms, 50 a page).
//!
//! `?household=CODE` picks one of the account's households (default: its first); operators and admins
//! may open any household's pages with it. A household that is not the account's, a period without a
//! bill and a malformed period all answer the same 404 page.

use billing_core::run::LINE_KINDS;
use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{Duration, Utc};
use chrono_tz::Europe::Belgrade;
use rust_decimal::Decimal;

use super::format::{file_part, here, local_day, local_time, month_label, number, rsd};
use super::{message_page, render, Chrome, Lang};
use crate::api::bills::parse_page;
use crate::api::ApiError;
use crate::auth::{urlencode, Principal};
use crate::household::bills::{self, BillDetail, BillLine, BillSummary};
use crate::household::events::{self, EventCategory, HouseholdEvent};
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal/bills", get(bills_page))
        .route("/portal/bills/{period}", get(bill_page))
        .route("/portal/events", get(events_page))
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// Energy to the Wh: `1.234,567 kWh`.
fn kwh(lang: Lang, x: Decimal) -> String {
    format!("{} kWh", number(lang, x, 3))
}

/// A difference with its sign (`+12,30` / `-12,30`), `unit` after it.
fn signed(lang: Lang, x: Decimal, unit: &str) -> String {
    let plus = if x > Decimal::ZERO { "+" } else { "" };
    format!("{plus}{} {unit}", number(lang, x, 2))
}

/// A quantity or unit price with the decimals it has (at least 2).
fn plain(lang: Lang, x: Decimal) -> String {
    number(lang, x, x.normalize().scale().max(2))
}

/// `2 h 05 min`, `22 min`, `45 s`.
fn duration(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    match (s / 3600, (s % 3600) / 60) {
        (0, 0) => format!("{s} s"),
        (0, m) => format!("{m} min"),
        (h, m) => format!("{h} h {m:02} min"),
    }
}

/// The `badge` class of a difference: paying less is good news.
fn diff_class(d: Option<Decimal>) -> &'static str {
    match d {
        Some(d) if d < Decimal::ZERO => "ok",
        Some(d) if d > Decimal::ZERO => "bad",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// Who and which household

/// The same 404 page for a household that is not the account's, a missing bill and a malformed period.
fn not_found() -> Response {
    message_page(StatusCode::NOT_FOUND, "404", "No such household or bill. / Ne postoji takvo domaćinstvo ili račun.")
}

/// An API error as a page.
fn error_page(e: ApiError) -> Response {
    match e.status {
        StatusCode::NOT_FOUND => not_found(),
        StatusCode::BAD_REQUEST => message_page(StatusCode::BAD_REQUEST, "400", &e.message),
        s => message_page(s, s.as_str(), "The service is temporarily unavailable. / Usluga trenutno nije dostupna."),
    }
}

/// A page's database connection and household `(id, code)`: the portal's choice
/// ([`super::portal::chosen_with`]) with this page's 404.
async fn open(
    s: &AppState,
    who: &Principal,
    q: &HashMap<String, String>,
) -> Result<(deadpool_postgres::Object, i32, String), Response> {
    let (c, h) = super::portal::chosen_with(s, who, q, error_page).await?;
    Ok((c, h.id, h.code))
}

// ---------------------------------------------------------------------------------------------
// The list of bills

/// One bill in the list.
struct BillRow {
    period: String,
    label: String,
    vt: String,
    nt: String,
    kwh: String,
    total: String,
    /// The month's own bill without corrections (what the old split is compared with), when it differs.
    corrections: Option<String>,
    estimated: bool,
    own: String,
    old: Option<String>,
    diff: Option<String>,
    pct: Option<String>,
    /// The difference without its sign, for the sentence that says "less" or "more" in words.
    by: Option<String>,
    cls: &'static str,
    /// Sentence key: you pay less / more / the same.
    verdict: &'static str,
}

fn bill_row(lang: Lang, b: &BillSummary) -> BillRow {
    let first = bills::parse_period(&b.period).unwrap_or_default();
    BillRow {
        period: b.period.clone(),
        label: month_label(lang, first),
        vt: kwh(lang, b.vt_kwh),
        nt: kwh(lang, b.nt_kwh),
        kwh: kwh(lang, b.total_kwh),
        total: rsd(lang, b.total),
        corrections: (!b.corrections.is_zero()).then(|| signed(lang, b.corrections, "RSD")),
        estimated: b.estimated,
        own: rsd(lang, b.own_total()),
        old: b.old_split_total.map(|x| rsd(lang, x)),
        diff: b.difference.map(|x| signed(lang, x, "RSD")),
        pct: b.difference_percent.map(|x| signed(lang, x, "%")),
        by: b.difference.map(|x| match b.difference_percent {
            Some(p) => format!("{} ({} %)", rsd(lang, x.abs()), number(lang, p.abs(), 2)),
            None => rsd(lang, x.abs()),
        }),
        cls: diff_class(b.difference),
        verdict: match b.difference {
            Some(d) if d < Decimal::ZERO => "portal.bills.verdict_less",
            Some(d) if d > Decimal::ZERO => "portal.bills.verdict_more",
            _ => "portal.bills.verdict_same",
        },
    }
}

/// The chart of the bills (oldest first): own bill and the old split, per month (JSON for `app.js`). Money
/// goes out as its decimal text, never through a float.
fn bills_chart(lang: Lang, list: &[BillSummary]) -> String {
    let mut x = Vec::new();
    let (mut own, mut old) = (Vec::new(), Vec::new());
    for b in list.iter().rev() {
        let Some(first) = bills::parse_period(&b.period) else { continue };
        let start = first.and_hms_opt(0, 0, 0).and_then(|t| t.and_local_timezone(Belgrade).earliest());
        let Some(start) = start else { continue };
        x.push(start.timestamp().to_string());
        own.push(b.own_total().to_string());
        old.push(b.old_split_total.map_or_else(|| "null".to_owned(), |v| v.to_string()));
    }
    let label = |key: &str| serde_json::to_string(lang.t(key)).unwrap_or_else(|_| "\"\"".into());
    format!(
        "{{\"x\":[{}],\"series\":[{{\"label\":{},\"values\":[{}],\"color\":\"#0b5cad\"}},\
         {{\"label\":{},\"values\":[{}],\"color\":\"#e07b00\"}}]}}",
        x.join(","),
        label("portal.bills.own"),
        own.join(","),
        label("portal.bills.old_split"),
        old.join(",")
    )
    .replace('<', "\\u003c")
}

#[derive(Template)]
#[template(path = "portal_bills.html")]
struct BillsPage {
    chrome: Chrome,
    tab: &'static str,
    hh: String,
    rows: Vec<BillRow>,
    chart: String,
}

async fn bills_page(
    State(s): State<AppState>,
    lang: Lang,
    who: Principal,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (client, id, hh) = match open(&s, &who, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match bills::list(&client, id).await {
        Ok(l) => l,
        Err(e) => return error_page(ApiError::unavailable(e)),
    };
    let page = BillsPage {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "portal.bills.title"),
        tab: "bills",
        rows: list.iter().map(|b| bill_row(lang, b)).collect(),
        chart: bills_chart(lang, &list),
        hh,
    };
    render(&page)
}

// ---------------------------------------------------------------------------------------------
// One bill

/// One printed line.
struct LineRow {
    no: i16,
    item: String,
    tariff: String,
    zone: String,
    tou: String,
    quantity: String,
    unit: String,
    price: String,
    amount: String,
    /// The rounding or correction line (shown apart).
    special: bool,
}

const ZONES: [&str; 3] = ["green", "blue", "red"];
const UNITS: [&str; 4] = ["kwh", "kw_month", "month", "rsd"];
const SPLIT_KEYS: [&str; 3] = ["equal", "area", "residents"];

/// The text of `portal.{area}.{name}` when `name` is one of `known`, else `name` itself (a value a newer
/// billing wrote that this version has no text for).
fn known_text(lang: Lang, area: &str, known: &[&str], name: &str) -> String {
    if known.contains(&name) {
        lang.t(&format!("portal.{area}.{name}")).to_owned()
    } else {
        name.to_owned()
    }
}

fn line_row(lang: Lang, l: &BillLine, several_tariffs: bool) -> LineRow {
    let special = matches!(l.kind.as_str(), "rounding" | "correction");
    LineRow {
        no: l.line_no,
        item: known_text(lang, "line", &LINE_KINDS, &l.kind),
        tariff: if several_tariffs { l.tariff_code.clone() } else { String::new() },
        zone: l.zone.as_deref().map(|z| known_text(lang, "zone", &ZONES, z)).unwrap_or_default(),
        tou: l.tou.as_deref().map(str::to_uppercase).unwrap_or_default(),
        // The rounding line is an amount only (its quantity is that amount, at unit price 1).
        quantity: match (l.kind.as_str(), l.unit.as_str()) {
            ("rounding", _) => String::new(),
            (_, "kwh") => number(lang, l.quantity, 3),
            _ => plain(lang, l.quantity),
        },
        unit: if l.kind == "rounding" { String::new() } else { known_text(lang, "unit", &UNITS, &l.unit) },
        price: if special { "—".to_owned() } else { plain(lang, l.unit_price) },
        amount: number(lang, l.amount, 2),
        special,
    }
}

#[derive(Template)]
#[template(path = "portal_bill.html")]
struct BillPageView {
    chrome: Chrome,
    tab: &'static str,
    hh: String,
    row: BillRow,
    days: String,
    version: i32,
    created: String,
    apartment: String,
    building: String,
    address: String,
    meters: String,
    lines: Vec<LineRow>,
    estimated_pct: String,
    common: Option<String>,
    tariff: String,
    split_key: String,
    csv_href: String,
}

fn bill_view(lang: Lang, who: &Principal, here: &str, hh: String, d: &BillDetail) -> BillPageView {
    let first_tariff = d.lines.first().map(|l| l.tariff_code.as_str());
    let several = d.lines.iter().any(|l| Some(l.tariff_code.as_str()) != first_tariff);
    let start = d.period_start.with_timezone(&Belgrade).date_naive();
    let end = d.period_end.with_timezone(&Belgrade).date_naive().pred_opt().unwrap_or(start).max(start);
    let mut chrome = Chrome::new(lang, Some(who), here, "portal.bill.title");
    chrome.title = format!("{} · {}", chrome.title, d.bill.period);
    BillPageView {
        chrome,
        tab: "bills",
        csv_href: format!("/portal/bills/{}.csv?household={}", d.bill.period, urlencode(&hh)),
        hh,
        row: bill_row(lang, &d.bill),
        days: format!("{} – {}", local_day(lang, start), local_day(lang, end)),
        version: d.bill.version,
        created: local_time(lang, d.created_at),
        apartment: d.apartment.clone(),
        building: d.building.clone(),
        address: d.address.clone(),
        meters: d.meters.join(", "),
        lines: d.lines.iter().map(|l| line_row(lang, l, several)).collect(),
        estimated_pct: format!("{} %", number(lang, d.bill.estimated_share * Decimal::ONE_HUNDRED, 2)),
        common: d.common_kwh.map(|c| kwh(lang, c)),
        tariff: d.tariff_code.clone(),
        split_key: known_text(lang, "split", &SPLIT_KEYS, &d.split_key),
    }
}

async fn bill_page(
    State(s): State<AppState>,
    lang: Lang,
    who: Principal,
    uri: Uri,
    Path(period): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (period, as_csv) = match period.strip_suffix(".csv") {
        Some(p) => (p.to_owned(), true),
        None => (period, false),
    };
    let Some(first) = bills::parse_period(&period) else { return not_found() };
    let (client, id, hh) = match open(&s, &who, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let detail = match bills::one(&client, id, first).await {
        Ok(Some(d)) => d,
        Ok(None) => return not_found(),
        Err(e) => return error_page(ApiError::unavailable(e)),
    };
    if as_csv {
        return match bills::to_csv(&detail) {
            Ok(text) => {
                let name = format!("attachment; filename=\"bill-{}-{}.csv\"", file_part(&hh), period);
                (
                    [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, name)],
                    text,
                )
                    .into_response()
            }
            Err(e) => error_page(ApiError::unavailable(e)),
        };
    }
    render(&bill_view(lang, &who, &here(&uri), hh, &detail))
}

// ---------------------------------------------------------------------------------------------
// Events

struct EventRow {
    when: String,
    until: String,
    meter: String,
    name: String,
    category: &'static str,
    cls: &'static str,
    detail: String,
}

/// The readable name of an event code (`event_<n>`: "Meter event n").
fn event_name(lang: Lang, code: &str) -> String {
    match code.strip_prefix("event_") {
        Some(n) => format!("{} {n}", lang.t("portal.events.other")),
        None => lang.t(&format!("portal.event.{code}")).to_owned(),
    }
}

fn event_row(lang: Lang, e: &HouseholdEvent) -> EventRow {
    let (category, cls) = match e.category {
        EventCategory::Outage => ("portal.events.cat.outage", "bad"),
        EventCategory::Alarm => ("portal.events.cat.alarm", "warn"),
        EventCategory::Info => ("portal.events.cat.info", ""),
    };
    let detail = match (e.until, e.outage_seconds) {
        (Some(until), _) => format!("{} ({} × 15 min)", duration(until - e.ts), e.intervals.unwrap_or_default()),
        (None, Some(s)) => format!("{} {}", lang.t("portal.events.after"), duration(Duration::seconds(s))),
        (None, None) => e.log_code.map(|c| format!("{} {c}", lang.t("portal.events.code"))).unwrap_or_default(),
    };
    EventRow {
        when: local_time(lang, e.ts),
        until: e.until.map(|u| local_time(lang, u)).unwrap_or_default(),
        meter: e.meter.clone(),
        name: event_name(lang, &e.code),
        category: lang.t(category),
        cls,
        detail,
    }
}

#[derive(Template)]
#[template(path = "portal_events.html")]
struct EventsPage {
    chrome: Chrome,
    tab: &'static str,
    hh: String,
    rows: Vec<EventRow>,
    page: i64,
    pages: i64,
    total: i64,
    newer: Option<String>,
    older: Option<String>,
    history_days: i64,
}

async fn events_page(
    State(s): State<AppState>,
    lang: Lang,
    who: Principal,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let page = match parse_page(q.get("page").map(String::as_str)) {
        Ok(p) => p,
        Err(e) => return error_page(e),
    };
    let (client, id, hh) = match open(&s, &who, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let found = match events::page(&client, id, &hh, page, Utc::now()).await {
        Ok(p) => p,
        Err(e) => return error_page(ApiError::unavailable(e)),
    };
    let href = |p: i64| format!("/portal/events?household={}&page={p}", urlencode(&hh));
    let view = EventsPage {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "portal.events.title"),
        tab: "events",
        rows: found.events.iter().map(|e| event_row(lang, e)).collect(),
        page: found.page,
        pages: found.pages,
        total: found.total,
        newer: (found.page > 1).then(|| href((found.page - 1).min(found.pages.max(1)))),
        older: (found.page < found.pages).then(|| href(found.page + 1)),
        history_days: events::FLAG_HISTORY_DAYS,
        hh,
    };
    render(&view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    #[test]
    fn money_is_formatted_per_language() {
        assert_eq!(rsd(Lang::Sr, d("4622.65")), "4.622,65 RSD");
        assert_eq!(rsd(Lang::En, d("4622.65")), "4,622.65 RSD");
        assert_eq!(rsd(Lang::Sr, d("-1234567.891")), "-1.234.567,89 RSD");
        assert_eq!(rsd(Lang::En, d("0.005")), "0.01 RSD");
        assert_eq!(rsd(Lang::En, d("-0.001")), "0.00 RSD");
        assert_eq!(number(Lang::Sr, d("999.9995"), 3), "1.000,000");
        assert_eq!(kwh(Lang::En, d("210")), "210.000 kWh");
        assert_eq!(signed(Lang::Sr, d("12.3"), "%"), "+12,30 %");
        assert_eq!(signed(Lang::En, d("-477.35"), "RSD"), "-477.35 RSD");
        assert_eq!(plain(Lang::Sr, d("9.61360")), "9,6136");
        assert_eq!(plain(Lang::En, d("1")), "1.00");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::seconds(45)), "45 s");
        assert_eq!(duration(Duration::minutes(22)), "22 min");
        assert_eq!(duration(Duration::minutes(125)), "2 h 05 min");
    }

    #[test]
    fn every_name_has_a_text_in_both_languages() {
        let mut keys: Vec<String> = events::known_codes().map(|c| format!("portal.event.{c}")).collect();
        keys.extend((1..=12).map(|m| format!("portal.month.{m}")));
        keys.extend(LINE_KINDS.iter().map(|k| format!("portal.line.{k}")));
        keys.extend(ZONES.iter().map(|k| format!("portal.zone.{k}")));
        keys.extend(UNITS.iter().map(|k| format!("portal.unit.{k}")));
        keys.extend(SPLIT_KEYS.iter().map(|k| format!("portal.split.{k}")));
        for lang in [Lang::Sr, Lang::En] {
            for k in &keys {
                assert_ne!(lang.t(k), k.as_str(), "{k} has no {} text", lang.code());
            }
        }
        assert_eq!(event_name(Lang::En, "event_250"), format!("{} 250", Lang::En.t("portal.events.other")));
    }

    #[test]
    fn the_chart_carries_decimal_text() {
        let b = BillSummary {
            period: "2026-10".into(),
            version: 1,
            vt_kwh: d("1"),
            nt_kwh: d("1"),
            total_kwh: d("2"),
            total: d("4622.65"),
            estimated: false,
            estimated_share: Decimal::ZERO,
            corrections: d("-10.00"),
            old_split_total: None,
            difference: None,
            difference_percent: None,
        };
        let json: serde_json::Value = serde_json::from_str(&bills_chart(Lang::En, &[b])).expect("json");
        assert_eq!(json["x"][0], 1_790_805_600i64, "local midnight of 1 October 2026");
        assert_eq!(json["series"][0]["values"][0].to_string(), "4632.65");
        assert!(json["series"][1]["values"][0].is_null());
    }
}
