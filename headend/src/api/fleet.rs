//! Fleet-wide views and actions: read completeness, polling rounds on request.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::meters::{only, parse_day};
use super::{ApiError, ErrorBody};
use crate::auth::Operator;
use crate::collect::ledger;
use crate::http::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(read_rate)).routes(routes!(start_round))
}

/// Completeness of a local day over the fleet (default yesterday): meters complete, and intervals
/// received within 1 h / 24 h / 72 h.
///
/// Operators and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/read-rate",
    tag = "fleet",
    params(("day" = Option<String>, Query, description = "Local day YYYY-MM-DD; default yesterday")),
    responses(
        (status = 200, body = ledger::ReadRate),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn read_rate(
    State(s): State<AppState>,
    _operator: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ledger::ReadRate>, ApiError> {
    only(&q, &["day"])?;
    let day = q.get("day").map(|v| parse_day("day", v)).transpose()?.unwrap_or_else(|| ledger::yesterday(Utc::now()));
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    Ok(Json(ledger::read_rate(&**client, day).await.map_err(ApiError::unavailable)?))
}

#[derive(Serialize, ToSchema)]
pub struct RoundStarted {
    pub started: bool,
}

/// Every polling group starts a round now: meters whose last session failed, or whose slot has
/// come, are polled. 202 Accepted.
///
/// Operators and admins only.
#[utoipa::path(
    post,
    path = "/api/v1/collect/rounds",
    tag = "fleet",
    responses(
        (status = 202, body = RoundStarted),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn start_round(State(s): State<AppState>, operator: Operator) -> Result<Response, ApiError> {
    let who = operator.0;
    let Some(tx) = &s.poll_now else {
        return Err(ApiError::conflict("polling is off (collect.enabled = false)"));
    };
    tx.send_modify(|n| *n += 1);
    tracing::info!(account = %who.username, "polling round requested through the API");
    Ok((StatusCode::ACCEPTED, Json(RoundStarted { started: true })).into_response())
}
