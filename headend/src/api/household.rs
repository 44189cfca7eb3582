//! A household's consumption: `/api/v1/households/{code}/consumption` (a day by 15 minutes, a month by days,
//! a year by months) and `/api/v1/households/{code}/summary` (today and yesterday, the month so far with its
//! EPS zones, bill to date and projection, comparisons with last year and the building's median flat).
//!
//! Households: their own household(s) only; operators and admins: any. A household that is not the
//! caller's answers exactly like one that does not exist (404). Computation in [`crate::household`].

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::meters::{only, parse_day};
use super::{visible_household, ApiError, ErrorBody};
use crate::auth::Principal;
use crate::household::calendar::{midnight, View, ViewKind};
use crate::household::{self, db, ConsumptionReport, Household, HouseholdError, Summary};
use crate::http::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(consumption)).routes(routes!(summary))
}

impl From<HouseholdError> for ApiError {
    fn from(e: HouseholdError) -> Self {
        ApiError::unavailable(e)
    }
}

/// The household a request is about, with its meters: `code` when the caller may see it, else (no code)
/// the caller's first household; anything else is the same 404 as a missing household.
pub async fn household_of(
    c: &tokio_postgres::Client,
    who: &Principal,
    code: Option<&str>,
) -> Result<Household, ApiError> {
    let id = match code {
        Some(code) => visible_household(c, who, code).await?,
        None => *who.households.first().ok_or_else(|| ApiError::not_found("no household chosen"))?,
    };
    db::household(c, id).await?.ok_or_else(|| ApiError::not_found("no such household"))
}

/// The instant a summary is for: the end of local day `date` (`YYYY-MM-DD`), or now; never after now.
pub fn as_of(date: Option<&String>, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    match date {
        None => Ok(now),
        Some(d) => {
            let day = parse_day("date", d)?;
            Ok(midnight(day.succ_opt().unwrap_or(day)).min(now))
        }
    }
}

/// A household's consumption in one view, from its own meters' registers: `resolution=15min` gives the
/// local day `date` (YYYY-MM-DD, default today) by 15 minutes (92/96/100 intervals on DST days),
/// `resolution=day` the days of month `date` (YYYY-MM, default this month), `resolution=month` the months of
/// year `date` (YYYY, default this year). Each point has the kWh of 1.0.1.8.0 and the VT/NT kWh of
/// 1.0.1.8.1/1.0.1.8.2; a point without a value is a gap (missing readings; nothing is estimated); the slot
/// holding the present is `running`, counted up to `until`. Times are UTC, labels Europe/Belgrade.
///
/// Households: their own household only (any other code answers 404). Operators and admins: any household.
#[utoipa::path(
    get,
    path = "/api/v1/households/{code}/consumption",
    tag = "households",
    params(
        ("code" = String, Path, description = "Household code"),
        ("resolution" = Option<String>, Query, description = "`15min` (a day), `day` (a month; default), `month` (a year)"),
        ("date" = Option<String>, Query, description = "YYYY-MM-DD, YYYY-MM or YYYY by resolution; default the current one"),
    ),
    responses(
        (status = 200, body = ConsumptionReport),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn consumption(
    State(s): State<AppState>,
    who: Principal,
    Path(code): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ConsumptionReport>, ApiError> {
    only(&q, &["resolution", "date"])?;
    let kind = match q.get("resolution") {
        None => ViewKind::Month,
        Some(r) => ViewKind::from_resolution(r)
            .ok_or_else(|| ApiError::bad(format!("resolution {r:?}: expected 15min, day or month")))?,
    };
    let now = Utc::now();
    let view = View::parse(kind, q.get("date").map(String::as_str), household::calendar::local_day(now))
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let h = household_of(&client, &who, Some(&code)).await?;
    Ok(Json(household::consumption(&**client, &h, view, now).await?))
}

/// A household's overview: today and yesterday, this billing month so far (VT/NT), where it stands in the
/// EPS zones of the dated tariff file (limits scaled to the month's days) and what the next kWh costs, the
/// bill to date and the projected month (billing-core, RSD), and comparisons with the same span last year
/// and with the building's median flat. With `date`, as of the end of that local day.
///
/// Households: their own household only (any other code answers 404). Operators and admins: any household.
#[utoipa::path(
    get,
    path = "/api/v1/households/{code}/summary",
    tag = "households",
    params(
        ("code" = String, Path, description = "Household code"),
        ("date" = Option<String>, Query, description = "YYYY-MM-DD: the summary as of the end of that local day; default now"),
    ),
    responses(
        (status = 200, body = Summary),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn summary(
    State(s): State<AppState>,
    who: Principal,
    Path(code): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Summary>, ApiError> {
    only(&q, &["date"])?;
    let at = as_of(q.get("date"), Utc::now())?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let h = household_of(&client, &who, Some(&code)).await?;
    Ok(Json(household::summary(&**client, &h, at).await?))
}
