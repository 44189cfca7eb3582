//! The JSON API under `/api/v1`, documented by one OpenAPI document (`/api/openapi.json`).
//!
//! Every route is registered through [`utoipa_axum::routes!`], so the router and the document
//! come from the same handlers; a test fails when a route is missing from the document or a
//! schema reference does not resolve. Every route requires a session or an API token, and says
//! which role it needs in its description; errors are one JSON shape, [`ErrorBody`].

pub mod accounts;
pub mod bills;
mod error;
pub mod fleet;
pub mod household;
pub mod meters;
pub mod ops;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ErrorBody, ErrorDetail};

use crate::auth::Principal;
use crate::http::AppState;

/// The document's fixed parts; paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Smart-meter head-end API",
        description = "Readings, read completeness, meter commands, households' consumption and bills, accounts. \
            Authenticate with an API token (`Authorization: Bearer hes_…`, from `headend account token`) or a \
            browser session (cookie `hes_session`; state-changing requests then need the `X-CSRF-Token` header). \
            A household account sees only its own household's meters and bills: anything else answers 404.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(ErrorBody, ErrorDetail))
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("hes_…").build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::auth::SESSION_COOKIE))),
        );
    }
}

/// Every API route with its documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(meters::routes())
        .merge(fleet::routes())
        .merge(accounts::routes())
        .merge(ops::routes())
        .merge(bills::routes())
        .merge(household::routes())
}

/// The inventory id of meter `serial` if `who` may see it; otherwise — and when it does not exist —
/// the same 404, so that a household learns nothing about other households' meters.
pub async fn visible_meter(c: &tokio_postgres::Client, who: &Principal, serial: &str) -> Result<i32, ApiError> {
    c.query_opt(
        "SELECT id FROM meters WHERE serial = $1 AND ($2 OR household_id = ANY($3))",
        &[&serial, &who.sees_all(), &who.households],
    )
    .await
    .map_err(ApiError::unavailable)?
    .map(|r| r.get(0))
    .ok_or_else(|| ApiError::not_found("no such meter"))
}

/// The inventory id of household `code` if `who` may see it, else 404 (as for a missing one).
pub async fn visible_household(c: &tokio_postgres::Client, who: &Principal, code: &str) -> Result<i32, ApiError> {
    c.query_opt(
        "SELECT id FROM households WHERE code = $1 AND ($2 OR id = ANY($3))",
        &[&code, &who.sees_all(), &who.households],
    )
    .await
    .map_err(ApiError::unavailable)?
    .map(|r| r.get(0))
    .ok_or_else(|| ApiError::not_found("no such household"))
}
