//! Who am I, and account management (admins): accounts, activation codes, API tokens.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::meters::only;
use super::{ApiError, ErrorBody};
use crate::auth::store::{self, InviteFor};
use crate::auth::{Admin, Principal, Role};
use crate::http::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(disable_account))
        .routes(routes!(create_invite))
        .routes(routes!(create_token))
}

/// The calling account.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub username: String,
    pub role: Role,
    /// Household codes the account may see (households only).
    pub households: Vec<String>,
}

/// The calling account: name, role and the households it may see.
///
/// Any logged-in account.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "accounts",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)),
    security(("api_token" = []), ("session" = []))
)]
async fn me(State(s): State<AppState>, who: Principal) -> Result<Json<Me>, ApiError> {
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let rows = client
        .query("SELECT code FROM households WHERE id = ANY($1) ORDER BY code", &[&who.households])
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(Me { username: who.username, role: who.role, households: rows.iter().map(|r| r.get(0)).collect() }))
}

/// Accounts by username, 100 a page (`page` from 1).
///
/// Admins only.
#[utoipa::path(
    get,
    path = "/api/v1/accounts",
    tag = "accounts",
    params(("page" = Option<u32>, Query, description = "Page number from 1")),
    responses(
        (status = 200, body = Vec<store::AccountInfo>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn list_accounts(
    State(s): State<AppState>,
    _admin: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<store::AccountInfo>>, ApiError> {
    only(&q, &["page"])?;
    let page: i64 = match q.get("page") {
        Some(p) => p
            .parse()
            .ok()
            .filter(|&p: &i64| (1..=1_000_000).contains(&p))
            .ok_or_else(|| ApiError::bad("page: 1 or more"))?,
        None => 1,
    };
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    Ok(Json(store::list(&client, 100, (page - 1) * 100).await?))
}

/// A new account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub username: String,
    pub role: Role,
    /// Household codes a household account may see.
    #[serde(default)]
    pub households: Vec<String>,
}

/// Activation code for a new or existing account: shown once.
#[derive(Serialize, ToSchema)]
pub struct Activation {
    pub username: Option<String>,
    pub household: Option<String>,
    /// Give this to the person; it works once, until `expires_in_days`.
    pub activation_code: String,
    pub expires_in_days: u64,
}

/// Creates an account without a password and returns its one-time activation code (the person
/// sets the password at `/activate`).
///
/// Admins only.
#[utoipa::path(
    post,
    path = "/api/v1/accounts",
    tag = "accounts",
    request_body = NewAccount,
    responses(
        (status = 201, body = Activation),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn create_account(
    State(s): State<AppState>,
    admin: Admin,
    Json(req): Json<NewAccount>,
) -> Result<Response, ApiError> {
    let who = admin.0;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let (min, valid) = (s.auth_cfg.min_password_len, s.auth_cfg.invite_valid);
    let code =
        store::create_pending(&client, &req.username, req.role, &req.households, &who.username, min, valid).await?;
    let body = Activation {
        username: Some(req.username),
        household: None,
        activation_code: code,
        expires_in_days: s.auth_cfg.invite_valid.as_secs() / 86_400,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Disables an account: its sessions end and its tokens stop working at once.
///
/// Admins only.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{username}/disable",
    tag = "accounts",
    params(("username" = String, Path, description = "Account name")),
    responses(
        (status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn disable_account(
    State(s): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let who = admin.0;
    if username == who.username {
        return Err(ApiError::conflict("an admin cannot disable their own account"));
    }
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    store::disable(&client, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A household activation code (invitation): the household chooses its username and password at
/// `/activate`. Printable on the invoice.
///
/// Admins only.
#[utoipa::path(
    post,
    path = "/api/v1/households/{code}/invites",
    tag = "accounts",
    params(("code" = String, Path, description = "Household code (inventory)")),
    responses(
        (status = 201, body = Activation),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn create_invite(
    State(s): State<AppState>,
    admin: Admin,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let who = admin.0;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let activation =
        store::create_invite(&client, &InviteFor::Household(code.clone()), &who.username, s.auth_cfg.invite_valid)
            .await?;
    let body = Activation {
        username: None,
        household: Some(code),
        activation_code: activation,
        expires_in_days: s.auth_cfg.invite_valid.as_secs() / 86_400,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A new API token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Unique per account: what the token is for (`billing-export`, `grafana`).
    pub name: String,
    /// Days until it expires; absent: never.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// The token, shown once.
#[derive(Serialize, ToSchema)]
pub struct NewTokenResponse {
    pub username: String,
    pub name: String,
    pub token: String,
}

/// Creates an API token for an account (machines: billing exports, dashboards). The token is in
/// the response only; the head-end keeps its SHA-256 digest.
///
/// Admins only.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{username}/tokens",
    tag = "accounts",
    params(("username" = String, Path, description = "Account name")),
    request_body = NewToken,
    responses(
        (status = 201, body = NewTokenResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn create_token(
    State(s): State<AppState>,
    _admin: Admin,
    Path(username): Path<String>,
    Json(req): Json<NewToken>,
) -> Result<Response, ApiError> {
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let expires = req.expires_in_days.map(|d| std::time::Duration::from_secs(u64::from(d) * 86_400));
    let token = store::create_token(&client, &username, &req.name, expires).await?;
    Ok((StatusCode::CREATED, Json(NewTokenResponse { username, name: req.name, token })).into_response())
}
