//! Who is asking: accounts with roles, browser sessions, API tokens, CSRF and login throttling.
//!
//! Every request passes [`authenticate`] (a middleware): an `Authorization: Bearer` token or the
//! session cookie is resolved to a [`Principal`] (a bad token is refused at once; a bad cookie is
//! ignored and the request is anonymous). A state-changing request that is not token-authenticated
//! must also prove it comes from our own page: its origin must be this site and it must carry the
//! CSRF token — the session's (logged in) or the pre-login cookie's (login and activation forms) —
//! as the `csrf` form field or the `X-CSRF-Token` header (an anonymous API request is not checked:
//! it carries no credential to abuse, and every API route refuses it with 401; a public API route
//! that changes state would need its own check). Handlers then ask for what they need with
//! the extractors [`Principal`] (anyone logged in), [`Operator`] or [`Admin`]; what a household may
//! see is decided by [`Principal::households`] in the queries themselves, and anything outside it
//! answers 404 exactly like something that does not exist.

pub mod limit;
pub mod secret;
pub mod store;

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::{Deserialize, Serialize};

use crate::api::ApiError;
use crate::http::AppState;

/// The session cookie (HttpOnly, SameSite=Lax, Secure with `auth.secure_cookies`).
pub const SESSION_COOKIE: &str = "hes_session";
/// The pre-login CSRF cookie of the login and activation forms (SameSite=Strict).
pub const PRE_COOKIE: &str = "hes_pre";
/// The CSRF header for scripts; forms use the field `csrf`.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The shortest pre-login cookie accepted (ours are 43 characters: 32 random bytes in base64).
pub const PRE_MIN_LEN: usize = 32;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees the meters, readings and bills of its own household(s) only.
    Household,
    /// Reads everything and issues meter commands.
    Operator,
    /// Everything an operator does, and manages accounts.
    Admin,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Household => "household",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "household" => Some(Role::Household),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// How the request authenticated.
#[derive(Debug, Clone)]
pub enum Via {
    /// A browser session; forms must carry this CSRF token.
    Session { csrf: String },
    /// An API token (`Authorization: Bearer hes_…`): no cookie, so no CSRF.
    Token,
}

/// The authenticated account behind a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: i32,
    pub username: String,
    pub role: Role,
    /// Household ids (inventory) this account may see; empty for operators and admins, who see all.
    pub households: Vec<i32>,
    pub via: Via,
}

impl Principal {
    /// Operators and admins see every meter and household.
    pub fn sees_all(&self) -> bool {
        self.role >= Role::Operator
    }

    /// Whether this account may see the household with inventory id `id`.
    pub fn may_see_household(&self, id: i32) -> bool {
        self.sees_all() || self.households.contains(&id)
    }

    /// The CSRF token forms of this session carry (empty for token clients).
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf } => csrf,
            Via::Token => "",
        }
    }
}

/// The result of [`authenticate`], in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct Auth(pub Option<Principal>);

/// Where a request comes from: the TCP peer, or the configured proxy header's last entry.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// Why a request is turned away, shaped for whoever sent it: JSON for the API, a redirect to the
/// login page (or a short page) for a browser.
#[derive(Debug)]
pub enum Refusal {
    NotLoggedIn { api: bool, next: String },
    Forbidden { api: bool },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NotLoggedIn { api: true, .. } => {
                ApiError::unauthorized("log in or present an API token (Authorization: Bearer hes_…)").into_response()
            }
            Refusal::NotLoggedIn { api: false, next } => {
                let next = if next.starts_with('/') && !next.starts_with("//") { next } else { "/".into() };
                Redirect::to(&format!("/login?next={}", urlencode(&next))).into_response()
            }
            Refusal::Forbidden { api: true } => {
                ApiError::forbidden("your account's role may not do this").into_response()
            }
            Refusal::Forbidden { api: false } => crate::web::message_page(
                StatusCode::FORBIDDEN,
                "403",
                "Your account may not open this page. / Vaš nalog ne može da otvori ovu stranicu.",
            ),
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Auth>() {
            Some(Auth(Some(p))) => Ok(p.clone()),
            _ => Err(Refusal::NotLoggedIn {
                api: is_api(parts.uri.path()),
                next: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            }),
        }
    }
}

/// An operator or admin.
#[derive(Debug, Clone)]
pub struct Operator(pub Principal);

/// An admin.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

async fn with_role<S: Send + Sync>(parts: &mut Parts, s: &S, min: Role) -> Result<Principal, Refusal> {
    let p = Principal::from_request_parts(parts, s).await?;
    if p.role >= min {
        Ok(p)
    } else {
        Err(Refusal::Forbidden { api: is_api(parts.uri.path()) })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Self::Rejection> {
        with_role(parts, s, Role::Operator).await.map(Operator)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Self::Rejection> {
        with_role(parts, s, Role::Admin).await.map(Admin)
    }
}

/// The session cookie for a new session.
pub fn session_cookie(id: String, secure: bool) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, id)).path("/").http_only(true).same_site(SameSite::Lax).secure(secure).build()
}

/// The cookie that removes the session cookie.
pub fn expired_session_cookie(secure: bool) -> Cookie<'static> {
    let mut c = session_cookie(String::new(), secure);
    c.make_removal();
    c
}

/// The pre-login CSRF cookie.
pub fn pre_cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((PRE_COOKIE, value)).path("/").http_only(true).same_site(SameSite::Strict).secure(secure).build()
}

/// The client's address. Behind a proxy (`auth.client_ip_header`), the header's *last* entry: a
/// proxy appends the address it saw to whatever the client sent, so the first entries are the
/// client's to choose (taking the first let anyone pick a fresh address per login attempt and
/// never meet the per-address limit).
fn client_addr(s: &AppState, req: &Request) -> Option<IpAddr> {
    if let Some(h) = &s.auth_cfg.client_ip_header {
        if let Some(ip) = req
            .headers()
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
        {
            return Some(ip);
        }
    }
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned())
}

/// Whether an unsafe request's `Origin` (or, without it, `Sec-Fetch-Site`) says it comes from
/// another site: an origin is ours when its host is the request's `Host` or it is one of
/// `auth.public_origins`. Requests without either header (curl, old browsers) pass this check and
/// still need the CSRF token.
fn cross_site(req: &Request, public_origins: &[String]) -> bool {
    let h = req.headers();
    if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        if public_origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
            return false;
        }
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        return origin == "null" || !origin_host.eq_ignore_ascii_case(host);
    }
    h.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "cross-site")
}

/// Reads the form field `csrf` of a URL-encoded body (forms are small: 64 KiB at most).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded(body).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Decodes `application/x-www-form-urlencoded`.
pub fn form_urlencoded(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b'%' => match b.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    Some(h) => {
                        let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                        out.push(hex(h[0]) << 4 | hex(h[1]));
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                },
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

const MAX_FORM: usize = 64 * 1024;

/// The forms that carry the pre-login CSRF token.
fn pre_login_form(path: &str) -> bool {
    matches!(path, "/login" | "/activate")
}

/// The middleware: resolves the principal, enforces CSRF on state-changing browser requests, and
/// records the client address. See the module documentation.
pub async fn authenticate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    // Public reads that never need the principal: no session look-up for each stylesheet, script
    // and probe (a browser sends the cookie with every one of them).
    let path = req.uri().path();
    if matches!(*req.method(), Method::GET | Method::HEAD)
        && (matches!(path, "/livez" | "/readyz" | "/metrics") || path.starts_with("/assets/"))
    {
        req.extensions_mut().insert(Auth(None));
        return next.run(req).await;
    }
    let api = is_api(req.uri().path());
    let addr = client_addr(&s, &req);
    req.extensions_mut().insert(ClientAddr(addr));
    let jar = CookieJar::from_headers(req.headers());
    let token = bearer(&req);
    let principal = match (&token, jar.get(SESSION_COOKIE)) {
        (Some(t), _) => {
            let found = match s.pool.get().await {
                Ok(c) => store::token(&c, t).await,
                Err(e) => return ApiError::unavailable(e).into_response(),
            };
            match found {
                Ok(Some(p)) => Some(p),
                Ok(None) => {
                    s.metrics.auth_failures.with_label_values(&["bad_token"]).inc();
                    return ApiError::unauthorized("the API token is not valid (unknown, revoked or expired)")
                        .into_response();
                }
                Err(e) => return ApiError::unavailable(e).into_response(),
            }
        }
        (None, Some(c)) => {
            let found = match s.pool.get().await {
                Ok(client) => store::session(&client, c.value(), s.auth_cfg.session_idle).await,
                Err(e) => return ApiError::unavailable(e).into_response(),
            };
            match found {
                Ok(p) => {
                    if p.is_none() {
                        s.metrics.auth_failures.with_label_values(&["bad_session"]).inc();
                    }
                    p
                }
                Err(e) => return ApiError::unavailable(e).into_response(),
            }
        }
        (None, None) => None,
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // An anonymous API request carries no credential a forged request could ride on, and every API
    // route needs one: it goes on to answer 401 (a CSRF refusal would tell a script the wrong thing).
    // Pages keep the check for anonymous requests: the login and activation forms need it.
    let anonymous_api = api && principal.is_none();
    if !safe && token.is_none() && !anonymous_api {
        let refuse = |why: &'static str| {
            s.metrics.auth_failures.with_label_values(&["csrf"]).inc();
            if api {
                ApiError::forbidden(why).with_code("csrf").into_response()
            } else {
                crate::web::message_page(StatusCode::FORBIDDEN, "403", why)
            }
        };
        if cross_site(&req, &s.auth_cfg.public_origins) {
            return refuse("cross-site request refused");
        }
        // Only a value this server could have made (43 characters); a short one set by someone
        // else is no proof.
        let pre = jar.get(PRE_COOKIE).map(|c| c.value().to_owned()).filter(|v| v.len() >= PRE_MIN_LEN);
        let expected = match &principal {
            // The login and activation forms carry the pre-login token even when a session
            // cookie came along (an old tab, or a session planted by someone else): logging in
            // then replaces that session instead of failing.
            Some(_) if pre_login_form(req.uri().path()) => pre,
            Some(p) => Some(p.csrf().to_owned()),
            None => pre,
        };
        let Some(expected) = expected.filter(|e| !e.is_empty()) else {
            return refuse("the form has expired: reload the page and try again");
        };
        let header_token = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let given = match header_token {
            Some(t) => Some(t),
            None => {
                let (parts, body) = req.into_parts();
                let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
                    Ok(b) => b,
                    Err(_) => return ApiError::bad("the request body is too large").into_response(),
                };
                let given = form_field(&bytes, "csrf");
                req = Request::from_parts(parts, Body::from(bytes));
                given
            }
        };
        if !given.is_some_and(|g| secret::same(&g, &expected)) {
            return refuse("the form has expired or was not sent from this site: reload the page and try again");
        }
    }
    req.extensions_mut().insert(Auth(principal));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let f = form_urlencoded(b"username=ana+b&password=a%26b%3D%25&csrf=x&bad=%zz&tail=%4");
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("username"), Some("ana b"));
        assert_eq!(get("password"), Some("a&b=%"));
        assert_eq!(get("csrf"), Some("x"));
        assert_eq!(get("bad"), Some("%zz"));
        assert_eq!(get("tail"), Some("%4"));
    }

    #[test]
    fn roles_order_and_scope() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Household);
        let p = Principal {
            account_id: 1,
            username: "ana".into(),
            role: Role::Household,
            households: vec![7],
            via: Via::Token,
        };
        assert!(p.may_see_household(7) && !p.may_see_household(8) && !p.sees_all());
        assert_eq!(urlencode("/portal?x=1&y=a b"), "/portal%3Fx%3D1%26y%3Da%20b");
    }
}
