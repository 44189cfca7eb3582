//! The household portal's consumption pages: `/portal` (overview: today against yesterday, the month so
//! far with its EPS zones, bill to date and projection, comparisons with last year and the building's
//! median flat), `/portal/usage?view=day|month|year&date=…` (bars and a table, previous/next), and
//! `/portal/downloads` with the month's 15-minute intervals as CSV (`/portal/downloads/intervals.csv`) and
//! Green Button XML (`/portal/downloads/green-button.xml`), `?month=YYYY-MM`.
//!
//! `?household=CODE` picks one of the account's households (default: its first); operators and admins open
//! any household's pages with it (support desk) and get a form to type the code without it. A household that
//! is not the account's answers the same 404 page as one that does not exist. The numbers are in tables, so
//! the pages work without JavaScript; `app.js` draws the charts from the JSON beside them. The computation
//! is [`crate::household`]; the pages only format it (Serbian `1.234,567`, English `1,234.567`).

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use chrono_tz::Europe::Belgrade;
use deadpool_postgres::Client;
use rust_decimal::Decimal;

use super::format::{
    file_part, here, local_day as date, local_time as date_time, month_label as month_name, number, rsd,
};
use super::{message_page, render, Chrome, Lang};
use crate::api::household::{as_of, household_of};
use crate::api::ApiError;
use crate::auth::{urlencode, Principal};
use crate::household::calendar::{local_day, View, ViewKind};
use crate::household::cost::ZoneProgress;
use crate::household::{
    self, export, ConsumptionReport, Household, HouseholdError, PeriodUse, State as SlotState, Summary,
};
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal", get(overview))
        .route("/portal/usage", get(usage))
        .route("/portal/downloads", get(downloads))
        .route("/portal/downloads/intervals.csv", get(download_csv))
        .route("/portal/downloads/green-button.xml", get(download_espi))
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// Energy to the Wh (`1.234,567`), `–` for a gap.
fn kwh(lang: Lang, x: Option<Decimal>) -> String {
    x.map_or_else(|| "–".to_owned(), |x| number(lang, x, 3))
}

/// A change in percent with its sign: `+12,5 %`.
fn percent(lang: Lang, x: Option<Decimal>) -> String {
    match x {
        Some(x) => format!("{}{} %", if x > Decimal::ZERO { "+" } else { "" }, number(lang, x, 1)),
        None => "–".to_owned(),
    }
}

/// A share of a whole in percent (`62,5 %`).
fn share(lang: Lang, part: Option<Decimal>, whole: Option<Decimal>) -> String {
    match (part, whole) {
        (Some(p), Some(w)) if !w.is_zero() => format!("{} %", number(lang, p * Decimal::ONE_HUNDRED / w, 1)),
        _ => "–".to_owned(),
    }
}

/// Chart data for `app.js`: x values and named series (kWh as decimal text, `null` for a gap).
fn chart_json(lang: Lang, x: &[String], series: &[(&str, &str, Vec<Option<Decimal>>)], time: bool) -> String {
    let parts: Vec<String> = series
        .iter()
        .map(|(key, color, values)| {
            let v: Vec<String> =
                values.iter().map(|v| v.map_or_else(|| "null".to_owned(), |d| d.to_string())).collect();
            let label = serde_json::to_string(lang.t(key)).unwrap_or_else(|_| "\"\"".into());
            format!("{{\"label\":{label},\"values\":[{}],\"color\":\"{color}\"}}", v.join(","))
        })
        .collect();
    format!("{{\"x\":[{}],\"time\":{time},\"series\":[{}]}}", x.join(","), parts.join(",")).replace('<', "\\u003c")
}

// ---------------------------------------------------------------------------------------------
// Which household

/// An API error as a page: the same 404 for "not yours" and "not there".
fn error_page(e: ApiError) -> Response {
    match e.status {
        StatusCode::NOT_FOUND => {
            message_page(StatusCode::NOT_FOUND, "404", "No such household. / Ne postoji takvo domaćinstvo.")
        }
        StatusCode::BAD_REQUEST => message_page(StatusCode::BAD_REQUEST, "400", &e.message),
        s => message_page(s, s.as_str(), "The service is temporarily unavailable. / Usluga trenutno nije dostupna."),
    }
}

/// The household of a page, or the response to give instead: staff without `?household=` are sent to
/// the overview's form.
async fn chosen(s: &AppState, who: &Principal, q: &HashMap<String, String>) -> Result<(Client, Household), Response> {
    chosen_with(s, who, q, error_page).await
}

/// [`chosen`] with the page's own error page (the bill pages answer "no such household or bill" for
/// every 404, so that another household's bill and a missing one look the same).
pub(super) async fn chosen_with(
    s: &AppState,
    who: &Principal,
    q: &HashMap<String, String>,
    error_page: fn(ApiError) -> Response,
) -> Result<(Client, Household), Response> {
    let code = q.get("household").map(|c| c.trim()).filter(|c| !c.is_empty());
    if code.is_none() && who.sees_all() {
        return Err(Redirect::to("/portal").into_response());
    }
    let client = s.pool.get().await.map_err(|e| error_page(ApiError::unavailable(e)))?;
    let h = household_of(&client, who, code).await.map_err(error_page)?;
    Ok((client, h))
}

/// The page's answer: rendered, or the error page.
fn page_or_error<T: Template>(page: Result<T, HouseholdError>) -> Response {
    match page {
        Ok(p) => render(&p),
        Err(e) => error_page(e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Overview

struct ZoneRow {
    name: String,
    color: &'static str,
    limit: String,
    vt: String,
    nt: String,
    reached: bool,
}

/// A segment of the zone bar (SVG user units of a 1000-wide box).
struct Segment {
    x: u32,
    width: u32,
    color: &'static str,
}

struct ZoneView {
    month: String,
    days: i64,
    limit_days: u32,
    consumed: String,
    zone: String,
    rows: Vec<ZoneRow>,
    segments: Vec<Segment>,
    marker: u32,
    vt: String,
    nt: String,
    vt_gross: String,
    nt_gross: String,
}

fn zone_color(name: &str) -> &'static str {
    match name {
        "green" => "#2e9d4a",
        "blue" => "#1f6fd1",
        "red" => "#c62828",
        _ => "#5b6878",
    }
}

/// A zone's name in the page language (the tariff file's name when there is no text for it).
fn zone_name(lang: Lang, name: &str) -> String {
    if ["green", "blue", "red"].contains(&name) {
        lang.t(&format!("portal.zone.{name}")).to_owned()
    } else {
        name.to_owned()
    }
}

/// A zone limit with the decimals it has (`350`, `361,667`).
fn limit(lang: Lang, x: Decimal) -> String {
    number(lang, x, x.normalize().scale())
}

fn zone_view(lang: Lang, z: &ZoneProgress) -> ZoneView {
    // The bar shows every limited zone and a quarter beyond the last limit (or the consumption, if more).
    let last_limit = z.zones.iter().filter_map(|x| x.up_to_kwh).max().unwrap_or(Decimal::ONE);
    let scale = (last_limit * Decimal::new(125, 2)).max(z.consumed_kwh * Decimal::new(105, 2)).max(Decimal::ONE);
    let pos = |kwh: Decimal| -> u32 {
        let x = (kwh.min(scale) * Decimal::from(1000) / scale).round();
        u32::try_from(x.mantissa()).unwrap_or(0).min(1000)
    };
    let mut segments = Vec::new();
    let mut lo = Decimal::ZERO;
    for zone in &z.zones {
        let hi = zone.up_to_kwh.unwrap_or(scale);
        let (a, b) = (pos(lo), pos(hi));
        segments.push(Segment { x: a, width: b.saturating_sub(a), color: zone_color(&zone.zone) });
        lo = hi;
    }
    let mut lower = Decimal::ZERO;
    let rows = z
        .zones
        .iter()
        .enumerate()
        .map(|(i, zone)| {
            let limit = match zone.up_to_kwh {
                Some(l) => format!("{} – {} kWh", limit(lang, lower), limit(lang, l)),
                None => format!("> {} kWh", limit(lang, lower)),
            };
            lower = zone.up_to_kwh.unwrap_or(lower);
            ZoneRow {
                name: zone_name(lang, &zone.zone),
                color: zone_color(&zone.zone),
                limit,
                vt: number(lang, zone.vt_price, 4),
                nt: number(lang, zone.nt_price, 4),
                reached: i <= z.current,
            }
        })
        .collect();
    ZoneView {
        month: month_name(lang, z.month_first),
        days: z.month_days,
        limit_days: z.zone_limit_days,
        consumed: number(lang, z.consumed_kwh, 3),
        zone: zone_name(lang, &z.next_kwh.zone),
        rows,
        segments,
        marker: pos(z.consumed_kwh).min(994),
        vt: number(lang, z.next_kwh.vt_price, 4),
        nt: number(lang, z.next_kwh.nt_price, 4),
        vt_gross: number(lang, z.next_kwh.vt_gross, 4),
        nt_gross: number(lang, z.next_kwh.nt_gross, 4),
    }
}

struct CompareView {
    own: String,
    other: String,
    change: String,
    /// `ok` when using less, `warn` when more.
    class: &'static str,
    detail: String,
}

fn compare_class(change: Option<Decimal>) -> &'static str {
    match change {
        Some(c) if c < Decimal::ZERO => "ok",
        Some(c) if c > Decimal::ZERO => "warn",
        _ => "",
    }
}

struct HourRow {
    label: String,
    yesterday: String,
    today: String,
}

struct Overview {
    code: String,
    address: String,
    apartment: String,
    as_of: String,
    today: String,
    today_until: String,
    yesterday: String,
    yesterday_label: String,
    month: String,
    month_label: String,
    month_vt: String,
    month_nt: String,
    vt_share: String,
    nt_share: String,
    zones: Option<ZoneView>,
    to_date: Option<String>,
    to_date_period: String,
    projection: Option<String>,
    projection_kwh: String,
    last_year: Option<CompareView>,
    building: Option<CompareView>,
    hours: Vec<HourRow>,
    chart: String,
}

#[derive(Template)]
#[template(path = "portal.html")]
struct OverviewPage {
    chrome: Chrome,
    tab: &'static str,
    hh: String,
    /// Staff without a chosen household get a form.
    v: Option<Overview>,
}

/// Hourly sums of a day's intervals, keyed by the local start hour (`02:00`, and `02:00 +01` for the
/// repeated hour of the autumn DST day), so that two days line up by clock time.
fn hours_of(day: &ConsumptionReport) -> BTreeMap<String, Option<Decimal>> {
    let mut out: BTreeMap<String, Option<Decimal>> = BTreeMap::new();
    let mut last_hour: Option<(DateTime<Utc>, String)> = None;
    for p in day.points.iter().filter(|p| p.state != SlotState::Future) {
        let local = p.start.with_timezone(&Belgrade);
        let hour_start = p.start - chrono::Duration::minutes(i64::from(local.minute()));
        let key = match &last_hour {
            Some((h, k)) if *h == hour_start => k.clone(),
            _ => {
                let base = local.format("%H:00").to_string();
                let k = if out.contains_key(&base) { format!("{base} {}", local.format("%:::z")) } else { base };
                last_hour = Some((hour_start, k.clone()));
                k
            }
        };
        let e = out.entry(key).or_insert(Some(Decimal::ZERO));
        *e = e.zip(p.kwh).map(|(a, b)| a + b);
    }
    out
}

fn overview_of(lang: Lang, s: &Summary, today: &ConsumptionReport, yesterday: &ConsumptionReport) -> Overview {
    let (yh, th) = (hours_of(yesterday), hours_of(today));
    let mut labels: Vec<&String> = yh.keys().chain(th.keys()).collect();
    labels.sort();
    labels.dedup();
    let hours: Vec<HourRow> = labels
        .iter()
        .map(|l| HourRow {
            label: (*l).clone(),
            yesterday: yh.get(*l).map_or_else(String::new, |v| kwh(lang, *v)),
            today: th.get(*l).map_or_else(String::new, |v| kwh(lang, *v)),
        })
        .collect();
    // The chart: both days by 15 minutes on one axis of hours since midnight.
    let n = today.points.len().max(yesterday.points.len());
    let x: Vec<String> = (0..n).map(|i| Decimal::new(i as i64 * 25, 2).to_string()).collect();
    let values = |r: &ConsumptionReport| -> Vec<Option<Decimal>> {
        (0..n).map(|i| r.points.get(i).and_then(|p| p.kwh)).collect()
    };
    let chart = chart_json(
        lang,
        &x,
        &[
            ("portal.overview.yesterday", "#5b6878", values(yesterday)),
            ("portal.overview.today", "#0b5cad", values(today)),
        ],
        false,
    );
    let m: &PeriodUse = &s.month;
    let compare = |own: Decimal, other: Decimal, change: Option<Decimal>, detail: String| CompareView {
        own: kwh(lang, Some(own)),
        other: kwh(lang, Some(other)),
        change: percent(lang, change),
        class: compare_class(change),
        detail,
    };
    Overview {
        code: s.household.clone(),
        address: s.address.clone(),
        apartment: s.apartment.clone(),
        as_of: date_time(lang, s.as_of),
        today: kwh(lang, s.today.kwh),
        today_until: s
            .today
            .until
            .filter(|_| s.today.state == SlotState::Running)
            .map_or_else(String::new, |t| t.with_timezone(&Belgrade).format("%H:%M").to_string()),
        yesterday: kwh(lang, s.yesterday.kwh),
        yesterday_label: date(lang, s.yesterday.first_day),
        month: kwh(lang, m.kwh),
        month_label: month_name(lang, m.first_day.with_day(1).unwrap_or(m.first_day)),
        month_vt: kwh(lang, m.vt_kwh),
        month_nt: kwh(lang, m.nt_kwh),
        vt_share: share(lang, m.vt_kwh, m.vt_kwh.zip(m.nt_kwh).map(|(a, b)| a + b)),
        nt_share: share(lang, m.nt_kwh, m.vt_kwh.zip(m.nt_kwh).map(|(a, b)| a + b)),
        zones: s.zones.as_ref().map(|z| zone_view(lang, z)),
        to_date: s.bill_to_date.as_ref().map(|b| rsd(lang, b.total)),
        to_date_period: s
            .bill_to_date
            .as_ref()
            .map_or_else(String::new, |b| format!("{} – {}", date(lang, b.period_first), date(lang, b.period_last))),
        projection: s.projection.as_ref().map(|p| rsd(lang, p.total)),
        projection_kwh: s.projection.as_ref().map_or_else(String::new, |p| kwh(lang, Some(p.vt_kwh + p.nt_kwh))),
        last_year: s.last_year.as_ref().map(|l| {
            compare(
                l.own_kwh,
                l.kwh,
                l.change_percent,
                format!("{} – {}", date_time(lang, l.start), date_time(lang, l.end)),
            )
        }),
        building: s
            .building
            .as_ref()
            .map(|b| compare(b.own_kwh, b.median_kwh, b.change_percent, format!("{}", b.households))),
        hours,
        chart,
    }
}

async fn overview(
    State(s): State<AppState>,
    lang: Lang,
    who: Principal,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let chrome = Chrome::new(lang, Some(&who), &here(&uri), "portal.overview.title");
    if q.get("household").is_none_or(|c| c.trim().is_empty()) && who.sees_all() {
        return render(&OverviewPage { chrome, tab: "overview", hh: String::new(), v: None });
    }
    let at = match as_of(q.get("date"), Utc::now()) {
        Ok(t) => t,
        Err(e) => return error_page(e),
    };
    let (client, h) = match chosen(&s, &who, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let today = local_day(at - chrono::Duration::seconds(1));
    let yesterday = today.pred_opt().unwrap_or(today);
    let result = futures::try_join!(
        household::summary(&**client, &h, at),
        household::consumption(&**client, &h, View::Day(today), at),
        household::consumption(&**client, &h, View::Day(yesterday), at),
    );
    page_or_error(result.map(|(summary, t, y)| OverviewPage {
        chrome,
        tab: "overview",
        hh: h.code.clone(),
        v: Some(overview_of(lang, &summary, &t, &y)),
    }))
}

// ---------------------------------------------------------------------------------------------
// Consumption by day, month, year

struct UsageRow {
    label: String,
    /// A finer view of this row (a day of a month, a month of a year).
    href: Option<String>,
    kwh: String,
    vt: String,
    nt: String,
    /// `gap`, `running`, `future` or empty.
    status: &'static str,
}

struct UsageView {
    kind: &'static str,
    title: String,
    date: String,
    previous: String,
    next: String,
    day_href: String,
    month_href: String,
    year_href: String,
    column: &'static str,
    rows: Vec<UsageRow>,
    total: String,
    vt: String,
    nt: String,
    vt_share: String,
    nt_share: String,
    gaps: usize,
    running: Option<String>,
    chart: String,
}

#[derive(Template)]
#[template(path = "portal_usage.html")]
struct UsagePage {
    chrome: Chrome,
    tab: &'static str,
    hh: String,
    v: UsageView,
}

fn usage_href(hh: &str, kind: ViewKind, date: &str) -> String {
    format!("/portal/usage?household={}&view={}&date={}", urlencode(hh), kind.page(), urlencode(date))
}

fn usage_view(lang: Lang, hh: &str, view: View, r: &ConsumptionReport) -> UsageView {
    let (first, _) = view.days();
    let title = match view {
        View::Day(d) => date(lang, d),
        View::Month(d) => month_name(lang, d),
        View::Year(y) => y.to_string(),
    };
    let rows = r
        .points
        .iter()
        .map(|p| {
            let day = local_day(p.start);
            let (label, href) = match view {
                View::Day(_) => (p.label.clone(), None),
                View::Month(_) => (date(lang, day), Some(usage_href(hh, ViewKind::Day, &p.label))),
                View::Year(_) => (month_name(lang, day), Some(usage_href(hh, ViewKind::Month, &p.label))),
            };
            let status = match p.state {
                SlotState::Future => "future",
                SlotState::Running if p.kwh.is_some() => "running",
                _ if p.kwh.is_none() => "gap",
                _ => "",
            };
            UsageRow { label, href, kwh: kwh(lang, p.kwh), vt: kwh(lang, p.vt_kwh), nt: kwh(lang, p.nt_kwh), status }
        })
        .collect();
    let x: Vec<String> = r.points.iter().map(|p| p.start.timestamp().to_string()).collect();
    let chart =
        chart_json(lang, &x, &[("portal.usage.kwh", "#0b5cad", r.points.iter().map(|p| p.kwh).collect())], true);
    let t = &r.total;
    let both = t.vt_kwh.zip(t.nt_kwh).map(|(a, b)| a + b);
    UsageView {
        kind: view.kind().page(),
        title,
        date: view.param(),
        previous: usage_href(hh, view.kind(), &r.previous),
        next: usage_href(hh, view.kind(), &r.next),
        day_href: usage_href(hh, ViewKind::Day, &first.format("%Y-%m-%d").to_string()),
        month_href: usage_href(hh, ViewKind::Month, &first.format("%Y-%m").to_string()),
        year_href: usage_href(hh, ViewKind::Year, &first.format("%Y").to_string()),
        column: match view {
            View::Day(_) => "portal.usage.time",
            View::Month(_) => "portal.usage.day",
            View::Year(_) => "portal.usage.month",
        },
        rows,
        total: kwh(lang, t.kwh),
        vt: kwh(lang, t.vt_kwh),
        nt: kwh(lang, t.nt_kwh),
        vt_share: share(lang, t.vt_kwh, both),
        nt_share: share(lang, t.nt_kwh, both),
        gaps: r.gaps,
        running: t.until.filter(|_| t.state == SlotState::Running).map(|u| date_time(lang, u)),
        chart,
    }
}

async fn usage(
    State(s): State<AppState>,
    lang: Lang,
    who: Principal,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = Utc::now();
    let kind = match q.get("view").map(String::as_str) {
        None | Some("") => ViewKind::Month,
        Some(v) => match ViewKind::from_page(v) {
            Some(k) => k,
            None => return error_page(ApiError::bad("view: expected day, month or year")),
        },
    };
    let view = match View::parse(kind, q.get("date").map(String::as_str), local_day(now)) {
        Ok(v) => v,
        Err(e) => return error_page(ApiError::bad(e.to_string())),
    };
    let (client, h) = match chosen(&s, &who, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let report = household::consumption(&**client, &h, view, now).await;
    page_or_error(report.map(|r| UsagePage {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "portal.usage.title"),
        tab: "usage",
        v: usage_view(lang, &h.code, view, &r),
        hh: h.code.clone(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Downloads

struct MonthLink {
    label: String,
    csv: String,
    xml: String,
}

#[derive(Template)]
#[template(path = "portal_downloads.html")]
struct DownloadsPage {
    chrome: Chrome,
    tab: &'static str,
    hh: String,
    months: Vec<MonthLink>,
    this_month: String,
}

fn download_href(kind: &str, hh: &str, month: &str) -> String {
    format!("/portal/downloads/{kind}?household={}&month={}", urlencode(hh), urlencode(month))
}

async fn downloads(
    State(s): State<AppState>,
    lang: Lang,
    who: Principal,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (_, h) = match chosen(&s, &who, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let today = local_day(Utc::now());
    let mut month = today.with_day(1).unwrap_or(today);
    let mut months = Vec::new();
    for _ in 0..13 {
        let m = month.format("%Y-%m").to_string();
        months.push(MonthLink {
            label: month_name(lang, month),
            csv: download_href("intervals.csv", &h.code, &m),
            xml: download_href("green-button.xml", &h.code, &m),
        });
        month = household::calendar::previous_month(month);
    }
    render(&DownloadsPage {
        chrome: Chrome::new(lang, Some(&who), &here(&uri), "portal.downloads.title"),
        tab: "downloads",
        months,
        this_month: today.format("%Y-%m").to_string(),
        hh: h.code,
    })
}

/// The household and month of a download.
async fn download_month(
    s: &AppState,
    who: &Principal,
    q: &HashMap<String, String>,
) -> Result<(Household, NaiveDate, Vec<household::IntervalRow>), Response> {
    let today = local_day(Utc::now());
    let month = match View::parse(ViewKind::Month, q.get("month").map(String::as_str), today) {
        Ok(View::Month(m)) => m,
        _ => return Err(error_page(ApiError::bad("month: expected a month such as 2026-11"))),
    };
    let (client, h) = chosen(s, who, q).await?;
    let rows = household::month_intervals(&**client, &h, month, Utc::now()).await.map_err(|e| error_page(e.into()))?;
    Ok((h, month, rows))
}

/// A file to save: its type and `Content-Disposition: attachment`.
fn attachment(content_type: &'static str, filename: &str, body: Vec<u8>) -> Response {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type)), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response()
}

async fn download_csv(State(s): State<AppState>, who: Principal, Query(q): Query<HashMap<String, String>>) -> Response {
    let (h, month, rows) = match download_month(&s, &who, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match export::csv(&rows) {
        Ok(body) => attachment(
            export::CSV_TYPE,
            &format!("{}-{}-intervals.csv", file_part(&h.code), month.format("%Y-%m")),
            body,
        ),
        Err(e) => {
            tracing::error!(error = %e, "interval CSV failed");
            error_page(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "CSV failed"))
        }
    }
}

async fn download_espi(
    State(s): State<AppState>,
    who: Principal,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (h, month, rows) = match download_month(&s, &who, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let m = month.format("%Y-%m").to_string();
    let xml = export::espi(export::Feed { household: &h.code, month: &m, updated: Utc::now() }, &rows);
    attachment(export::ESPI_TYPE, &format!("{}-{m}-green-button.xml", file_part(&h.code)), xml.into_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_language() {
        let x: Decimal = "1234.5".parse().unwrap();
        assert_eq!(kwh(Lang::Sr, Some(x)), "1.234,500");
        assert_eq!(kwh(Lang::En, Some(x)), "1,234.500");
        assert_eq!(kwh(Lang::En, None), "–");
        assert_eq!(percent(Lang::Sr, Some("12.25".parse().unwrap())), "+12,3 %");
        assert_eq!(percent(Lang::En, Some("-3".parse().unwrap())), "-3.0 %");
        assert_eq!(share(Lang::En, Some(Decimal::ONE), Some(Decimal::from(4))), "25.0 %");
    }

    #[test]
    fn chart_json_is_data_only() {
        let j = chart_json(
            Lang::En,
            &["1".into(), "2".into()],
            &[("portal.usage.kwh", "#000", vec![Some(Decimal::ONE), None])],
            true,
        );
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["series"][0]["values"], serde_json::json!([1, null]));
        assert!(!j.contains('<'));
    }
}
