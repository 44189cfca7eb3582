//! The operator dashboard's data as JSON (the twins of the `/ops` pages): read rate by day, the
//! fleet's headline numbers, meters not reporting, load per transformer / feeder, voltage outside
//! 230 V ± 10 %, events, building reconciliation. Operators and admins only.
//!
//! The query-string parsers here are also the pages' ([`crate::web::ops`]), so a page and its twin
//! accept exactly the same parameters.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use chrono::{Duration, NaiveDate, Utc};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::meters::{only, parse_day};
use super::{ApiError, ErrorBody};
use crate::auth::Operator;
use crate::collect::ledger::{self, ReadRate};
use crate::http::AppState;
use crate::ops::{self, buildings, events, fleet, load, meters, voltage, OpsError};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read_rate))
        .routes(routes!(summary))
        .routes(routes!(meter_list))
        .routes(routes!(load_report))
        .routes(routes!(voltage_page))
        .routes(routes!(event_page))
        .routes(routes!(building_page))
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        ApiError::unavailable(e)
    }
}

/// The longest span of the read-rate trend (days).
pub const MAX_RATE_DAYS: i64 = 93;

/// An integer parameter within `range` (`default` when absent).
pub fn int_param(
    q: &HashMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
    default: i64,
) -> Result<i64, ApiError> {
    match q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse::<i64>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
            ApiError::bad(format!("{name}: expected a number from {} to {}", range.start(), range.end()))
        }),
    }
}

/// A text parameter: trimmed, empty = absent, at most 64 characters.
pub fn text_param(q: &HashMap<String, String>, name: &str) -> Result<Option<String>, ApiError> {
    match q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if v.chars().count() > 64 => Err(ApiError::bad(format!("{name}: at most 64 characters"))),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// A local day parameter (`YYYY-MM-DD`), `default` when absent.
pub fn day_param(q: &HashMap<String, String>, name: &str, default: NaiveDate) -> Result<NaiveDate, ApiError> {
    match q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => parse_day(name, v),
    }
}

/// The read-rate span: `from..=to` (default the 14 days up to today), at most [`MAX_RATE_DAYS`].
pub fn rate_span(q: &HashMap<String, String>) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let to = day_param(q, "to", ops::today())?;
    let from = day_param(q, "from", to - Duration::days(13))?;
    if from > to || (to - from).num_days() >= MAX_RATE_DAYS {
        return Err(ApiError::bad(format!("from must not be after to, and the span is at most {MAX_RATE_DAYS} days")));
    }
    Ok((from, to))
}

/// The meter list's parameters: its filters and page.
pub const METER_PARAMS: &[&str] =
    &["status", "hours", "transformer", "feeder", "municipality", "protocol", "serial", "reason", "page"];

/// The meter list's filters and page number.
pub fn meter_filter(q: &HashMap<String, String>) -> Result<(meters::Filter, i64), ApiError> {
    only(q, METER_PARAMS)?;
    let status = match q.get("status").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => meters::Status::NotReporting,
        Some(s) => {
            meters::Status::parse(s).ok_or_else(|| ApiError::bad("status: expected not_reporting, failing or all"))?
        }
    };
    let filter = meters::Filter {
        status,
        hours: int_param(q, "hours", 1..=meters::MAX_HOURS, 24)?,
        transformer: text_param(q, "transformer")?,
        feeder: text_param(q, "feeder")?,
        municipality: text_param(q, "municipality")?,
        protocol: text_param(q, "protocol")?,
        serial: text_param(q, "serial")?,
        reason: text_param(q, "reason")?,
    };
    Ok((filter, int_param(q, "page", 1..=ops::MAX_PAGE, 1)?))
}

/// The load report's parameters: grouping, day (default today), top N (default 10).
pub fn load_params(q: &HashMap<String, String>) -> Result<(load::GroupBy, NaiveDate, i64), ApiError> {
    only(q, &["by", "day", "top"])?;
    let by = match q.get("by").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => load::GroupBy::Transformer,
        Some(b) => load::GroupBy::parse(b).ok_or_else(|| ApiError::bad("by: expected transformer or feeder"))?,
    };
    Ok((by, day_param(q, "day", ops::today())?, int_param(q, "top", 1..=load::MAX_TOP, 10)?))
}

/// The voltage list's parameters: day (default today), transformer, page.
pub fn voltage_params(q: &HashMap<String, String>) -> Result<(NaiveDate, Option<String>, i64), ApiError> {
    only(q, &["day", "transformer", "page"])?;
    Ok((day_param(q, "day", ops::today())?, text_param(q, "transformer")?, int_param(q, "page", 1..=ops::MAX_PAGE, 1)?))
}

/// The events list's parameters: event code, transformer, meter serial, keyset cursor.
pub type EventParams = (Option<i32>, Option<String>, Option<String>, Option<events::Cursor>);

pub fn event_params(q: &HashMap<String, String>) -> Result<EventParams, ApiError> {
    only(q, &["kind", "transformer", "serial", "before"])?;
    let kind = match q.get("kind").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => None,
        Some(k) => Some(
            events::kinds()
                .find(|(_, n)| *n == k)
                .map(|(c, _)| c)
                .or_else(|| k.strip_prefix("event_").or_else(|| k.strip_prefix("code_")).unwrap_or(k).parse().ok())
                .ok_or_else(|| ApiError::bad("kind: an event name (power_down, power_up, …) or code"))?,
        ),
    };
    let before = match q.get("before").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => None,
        Some(b) => Some(events::Cursor::parse(b).ok_or_else(|| ApiError::bad("before: not a page cursor"))?),
    };
    Ok((kind, text_param(q, "transformer")?, text_param(q, "serial")?, before))
}

/// A billed month `YYYY-MM` (its first day); absent or empty = `None`.
pub fn month_param(v: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(p) => NaiveDate::parse_from_str(&format!("{p}-01"), "%Y-%m-%d")
            .map(Some)
            .map_err(|_| ApiError::bad("period: expected a month such as 2026-10")),
    }
}

/// The building list's parameters: month (`YYYY-MM`, default the newest billed), which buildings, page.
pub fn building_params(q: &HashMap<String, String>) -> Result<(Option<NaiveDate>, buildings::Show, i64), ApiError> {
    only(q, &["period", "show", "page"])?;
    let period = month_param(q.get("period").map(String::as_str))?;
    let show = match q.get("show").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => buildings::Show::All,
        Some(s) => {
            buildings::Show::parse(s).ok_or_else(|| ApiError::bad("show: expected all, negative or problems"))?
        }
    };
    Ok((period, show, int_param(q, "page", 1..=ops::MAX_PAGE, 1)?))
}

/// Read completeness per local day from `from` to `to` (default: the 14 days up to today; at most 93):
/// meters in service, meters complete, intervals received within 1 h / 24 h / 72 h. The same figures
/// as `/api/v1/read-rate` for each day, in one request.
///
/// Operators and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/ops/read-rate",
    tag = "ops",
    params(
        ("from" = Option<String>, Query, description = "First local day (YYYY-MM-DD); default `to` minus 13 days"),
        ("to" = Option<String>, Query, description = "Last local day (YYYY-MM-DD); default today"),
    ),
    responses(
        (status = 200, body = Vec<ReadRate>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn read_rate(
    State(s): State<AppState>,
    _operator: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<ReadRate>>, ApiError> {
    only(&q, &["from", "to"])?;
    let (from, to) = rate_span(&q)?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    Ok(Json(ledger::read_rates(&**client, from, to).await.map_err(ApiError::unavailable)?))
}

/// The fleet at a glance: meters in service, reporting today, not reporting for 24 h, dead letters
/// since local midnight and failing polled meters by reason.
///
/// Operators and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/ops/summary",
    tag = "ops",
    responses(
        (status = 200, body = fleet::Headline),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn summary(State(s): State<AppState>, _operator: Operator) -> Result<Json<fleet::Headline>, ApiError> {
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    Ok(Json(fleet::headline(&**client, Utc::now()).await?))
}

/// Meters not reporting (no load-profile reading for more than `hours`, default 24), failing (the last
/// poll failed) or all meters in service, filtered, 50 a page with the total: each with its last
/// reading, last successful poll and the failure's reason.
///
/// Operators and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/ops/meters",
    tag = "ops",
    params(
        ("status" = Option<String>, Query, description = "`not_reporting` (default), `failing` or `all`"),
        ("hours" = Option<i64>, Query, description = "Silent for more than this many hours (1–2160; default 24)"),
        ("transformer" = Option<String>, Query, description = "Only this transformer"),
        ("feeder" = Option<String>, Query, description = "Only this feeder"),
        ("municipality" = Option<String>, Query, description = "Only buildings in this municipality"),
        ("protocol" = Option<String>, Query, description = "`mqtt`, `dlms` or `modbus`"),
        ("serial" = Option<String>, Query, description = "Serial prefix (case-insensitive)"),
        ("reason" = Option<String>, Query, description = "Only meters whose current poll failures have this reason, e.g. `authentication_rejected` (meters cooling down after a refused login), `timeout`"),
        ("page" = Option<i64>, Query, description = "Page number from 1 (50 meters a page)"),
    ),
    responses(
        (status = 200, body = meters::MeterPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn meter_list(
    State(s): State<AppState>,
    _operator: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<meters::MeterPage>, ApiError> {
    let (filter, page) = meter_filter(&q)?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    Ok(Json(meters::list(&**client, &filter, page, Utc::now()).await?))
}

/// Energy per hour of a local day for the `top` transformers or feeders (default 10, at most 50) by
/// the day's energy, from the hourly rollup of the master meters (plus the flats of buildings without
/// one).
///
/// Operators and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/ops/load",
    tag = "ops",
    params(
        ("by" = Option<String>, Query, description = "`transformer` (default) or `feeder`"),
        ("day" = Option<String>, Query, description = "Local day (YYYY-MM-DD); default today"),
        ("top" = Option<i64>, Query, description = "How many groups (1–50; default 10)"),
    ),
    responses(
        (status = 200, body = load::LoadReport),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn load_report(
    State(s): State<AppState>,
    _operator: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<load::LoadReport>, ApiError> {
    let (by, day, top) = load_params(&q)?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    Ok(Json(load::report(&**client, by, day, top).await?))
}

/// Meters whose L1 voltage (1.0.32.7.0) left 230 V ± 10 % (EN 50160: 207–253 V) in a local day, most
/// values outside first, 50 a page: values outside (below / above), the day's minimum and maximum.
///
/// Operators and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/ops/voltage",
    tag = "ops",
    params(
        ("day" = Option<String>, Query, description = "Local day (YYYY-MM-DD); default today"),
        ("transformer" = Option<String>, Query, description = "Only this transformer"),
        ("page" = Option<i64>, Query, description = "Page number from 1"),
    ),
    responses(
        (status = 200, body = voltage::VoltagePage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn voltage_page(
    State(s): State<AppState>,
    _operator: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<voltage::VoltagePage>, ApiError> {
    let (day, transformer, page) = voltage_params(&q)?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    Ok(Json(voltage::page(&**client, day, transformer.as_deref(), page).await?))
}

/// Meter events fleet-wide, newest first, 50 a page: `next` is the `before` of the next (older) page.
///
/// Operators and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/ops/events",
    tag = "ops",
    params(
        ("kind" = Option<String>, Query, description = "`power_down`, `power_up`, `dst_changed`, `clock_adjusted_old`, `clock_adjusted_new` or a numeric code"),
        ("transformer" = Option<String>, Query, description = "Only meters of this transformer"),
        ("serial" = Option<String>, Query, description = "Only this meter"),
        ("before" = Option<String>, Query, description = "Page cursor: `next` of the previous page"),
    ),
    responses(
        (status = 200, body = events::EventPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn event_page(
    State(s): State<AppState>,
    _operator: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<events::EventPage>, ApiError> {
    let (kind, transformer, serial, before) = event_params(&q)?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    Ok(Json(events::page(&**client, kind, transformer.as_deref(), serial.as_deref(), before).await?))
}

/// Building reconciliation of a billed month (default the newest; none before the first billing
/// run): master − Σ flats = common areas + losses, from the run that counts for each building;
/// flagged (negative common consumption) first.
///
/// Operators and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/ops/buildings",
    tag = "ops",
    params(
        ("period" = Option<String>, Query, description = "Billed month YYYY-MM; default the newest with a run"),
        ("show" = Option<String>, Query, description = "`all` (default), `negative` or `problems`"),
        ("page" = Option<i64>, Query, description = "Page number from 1"),
    ),
    responses(
        (status = 200, body = buildings::BuildingPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn building_page(
    State(s): State<AppState>,
    _operator: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<buildings::BuildingPage>, ApiError> {
    let (period, show, page) = building_params(&q)?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let period = match period {
        Some(p) => Some(p),
        None => buildings::periods(&**client, 1).await?.into_iter().next(),
    };
    match period {
        Some(p) => Ok(Json(buildings::page(&**client, p, show, page).await?)),
        None => Ok(Json(buildings::BuildingPage {
            period: None,
            show,
            total: 0,
            page,
            per_page: ops::PER_PAGE,
            buildings: Vec::new(),
        })),
    }
}
