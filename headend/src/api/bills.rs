//! A household's bills and events: `/api/v1/households/{code}/bills[/{period}]`, `/…/events`.
//!
//! Households: their own household(s) only; operators and admins: any. A household that is not the
//! caller's answers exactly like one that does not exist, and a bill of another household exactly like
//! a missing period (the same 404 body).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::meters::only;
use super::{visible_household, ApiError, ErrorBody};
use crate::auth::Principal;
use crate::household::bills::{self, BillDetail, BillSummary, BillsError};
use crate::household::events::{self, HouseholdEvents};
use crate::http::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_bills)).routes(routes!(one_bill)).routes(routes!(list_events))
}

impl From<BillsError> for ApiError {
    fn from(e: BillsError) -> Self {
        ApiError::unavailable(e)
    }
}

/// The one answer for a bill the caller may not see or that does not exist.
pub fn no_bill() -> ApiError {
    ApiError::not_found("no such household or bill")
}

/// The household's past bills.
#[derive(Serialize, ToSchema)]
pub struct BillList {
    /// Household code.
    pub household: String,
    /// Newest period first (at most 120); each the latest run version of its period.
    pub bills: Vec<BillSummary>,
}

/// A household's bills, newest period first, each with the old 1/N split next to it.
///
/// Households: their own household only (any other code answers 404). Operators and admins: any household.
#[utoipa::path(
    get,
    path = "/api/v1/households/{code}/bills",
    tag = "households",
    params(("code" = String, Path, description = "Household code")),
    responses(
        (status = 200, body = BillList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn list_bills(
    State(s): State<AppState>,
    who: Principal,
    Path(code): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<BillList>, ApiError> {
    only(&q, &[])?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let id = visible_household(&client, &who, &code).await?;
    Ok(Json(BillList { household: code, bills: bills::list(&client, id).await? }))
}

/// One bill (the latest run version of the month) with every line; the lines add up to `total`.
///
/// Households: their own household only. Operators and admins: any household. Another household's bill
/// answers exactly like a period without a bill (404).
#[utoipa::path(
    get,
    path = "/api/v1/households/{code}/bills/{period}",
    tag = "households",
    params(
        ("code" = String, Path, description = "Household code"),
        ("period" = String, Path, description = "Billed month, YYYY-MM"),
    ),
    responses(
        (status = 200, body = BillDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn one_bill(
    State(s): State<AppState>,
    who: Principal,
    Path((code, period)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<BillDetail>, ApiError> {
    only(&q, &[])?;
    let first =
        bills::parse_period(&period).ok_or_else(|| ApiError::bad("period: expected a month such as 2026-10"))?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let id = visible_household(&client, &who, &code).await.map_err(|e| hide(e, no_bill))?;
    bills::one(&client, id, first).await?.map(Json).ok_or_else(no_bill)
}

/// A 404 replaced by `same()` (so that "not yours" and "not there" read alike); other errors as they are.
pub fn hide(e: ApiError, same: fn() -> ApiError) -> ApiError {
    if e.status == StatusCode::NOT_FOUND {
        same()
    } else {
        e
    }
}

/// Power outages and alarms of the household's meters (their event logs and the quality flags of their
/// readings), newest first, 50 a page.
///
/// Households: their own household only. Operators and admins: any household.
#[utoipa::path(
    get,
    path = "/api/v1/households/{code}/events",
    tag = "households",
    params(
        ("code" = String, Path, description = "Household code"),
        ("page" = Option<i64>, Query, description = "1-based page (at most 10000); default 1. A page past the last is empty."),
    ),
    responses(
        (status = 200, body = HouseholdEvents),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn list_events(
    State(s): State<AppState>,
    who: Principal,
    Path(code): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<HouseholdEvents>, ApiError> {
    only(&q, &["page"])?;
    let page = parse_page(q.get("page").map(String::as_str))?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let id = visible_household(&client, &who, &code).await?;
    Ok(Json(events::page(&client, id, &code, page, Utc::now()).await.map_err(ApiError::unavailable)?))
}

/// `page`: absent → 1; otherwise an integer 1..=[`events::MAX_PAGE`].
pub fn parse_page(v: Option<&str>) -> Result<i64, ApiError> {
    match v {
        None => Ok(1),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|p| (1..=events::MAX_PAGE).contains(p))
            .ok_or_else(|| ApiError::bad(format!("page: expected a number from 1 to {}", events::MAX_PAGE))),
    }
}
