//! `/` (each role's home), `/login`, `/logout`, `/activate` (one-time code → password), `/lang/{code}`.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar};
use serde::Deserialize;

use super::i18n::LANG_COOKIE;
use super::{render, Chrome, Lang};
use crate::auth::store::{self, LoginRefused, Throttle};
use crate::auth::{self, secret, Auth, ClientAddr, Principal, Role};
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login_submit))
        .route("/logout", post(logout))
        .route("/activate", get(activate_form).post(activate_submit))
        .route("/lang/{code}", get(set_lang))
}

/// Where an account lands after login.
fn home_of(p: &Principal) -> &'static str {
    match p.role {
        Role::Household => "/portal",
        Role::Operator | Role::Admin => "/ops",
    }
}

async fn home(Extension(Auth(who)): Extension<Auth>) -> Redirect {
    match who {
        Some(p) => Redirect::to(home_of(&p)),
        None => Redirect::to("/login"),
    }
}

/// Only a local path may be a redirect target (no open redirect to another site). Printable ASCII
/// only: browsers drop tabs and newlines from a `Location` (`/\t/evil.example` is `//evil.example`
/// to them) and read a backslash as a slash.
fn safe_next(next: Option<&str>) -> Option<String> {
    next.filter(|n| {
        n.starts_with('/')
            && !n.starts_with("//")
            && !n.contains('\\')
            && !n.contains("://")
            && n.bytes().all(|b| b.is_ascii_graphic())
    })
    .map(str::to_owned)
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    pre: String,
    next: String,
    username: String,
    error: Option<&'static str>,
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// The pre-login CSRF value: the cookie's if it has one, else a new one (set on the response).
fn pre_token(jar: CookieJar, secure: bool) -> (CookieJar, String) {
    if let Some(c) = jar.get(auth::PRE_COOKIE).filter(|c| c.value().len() >= 32) {
        let v = c.value().to_owned();
        return (jar, v);
    }
    let v = secret::new_token().unwrap_or_default();
    (jar.add(auth::pre_cookie(v.clone(), secure)), v)
}

async fn login_form(
    State(s): State<AppState>,
    lang: Lang,
    jar: CookieJar,
    Extension(Auth(who)): Extension<Auth>,
    Query(q): Query<NextQuery>,
) -> Response {
    if let Some(p) = who {
        return Redirect::to(home_of(&p)).into_response();
    }
    let (jar, pre) = pre_token(jar, s.auth_cfg.secure_cookies);
    let page = LoginPage {
        chrome: Chrome::new(lang, None, "/login", "login.title"),
        pre,
        next: safe_next(q.next.as_deref()).unwrap_or_default(),
        username: String::new(),
        error: None,
    };
    (jar, render(&page)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login_submit(
    State(s): State<AppState>,
    lang: Lang,
    jar: CookieJar,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    let client = addr.map(|a| a.to_string());
    let (jar, pre) = pre_token(jar, s.auth_cfg.secure_cookies);
    let again = |status: StatusCode, error: &'static str, jar: CookieJar| {
        let page = LoginPage {
            chrome: Chrome::new(lang, None, "/login", "login.title"),
            pre: pre.clone(),
            next: safe_next(f.next.as_deref()).unwrap_or_default(),
            username: f.username.chars().take(64).collect(),
            error: Some(error),
        };
        let mut r = (jar, render(&page)).into_response();
        *r.status_mut() = status;
        r
    };
    if addr.is_some_and(|a| !s.attempts.allow(a)) {
        s.metrics.auth_failures.with_label_values(&["login_locked"]).inc();
        return again(StatusCode::TOO_MANY_REQUESTS, "login.too_many", jar);
    }
    let c = match s.pool.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "login: database unavailable");
            return again(StatusCode::SERVICE_UNAVAILABLE, "error.unavailable", jar);
        }
    };
    let throttle = Throttle { max_failed: s.auth_cfg.max_failed_logins, lockout: s.auth_cfg.lockout };
    let result = store::login(&c, &f.username, &f.password, throttle, client.as_deref()).await;
    let id = match result {
        Ok(Ok(id)) => id,
        Ok(Err(refused)) => {
            let reason = if refused == LoginRefused::Locked { "login_locked" } else { "login_invalid" };
            s.metrics.auth_failures.with_label_values(&[reason]).inc();
            return again(StatusCode::UNAUTHORIZED, "login.failed", jar);
        }
        Err(e) => {
            tracing::warn!(error = %e, "login failed on the database");
            return again(StatusCode::SERVICE_UNAVAILABLE, "error.unavailable", jar);
        }
    };
    start_session(&s, &c, jar, id, safe_next(f.next.as_deref())).await
}

/// Opens a session for account `id` (a new id: an earlier cookie is never reused) and sends the
/// browser on to `next` or the account's home.
async fn start_session(
    s: &AppState,
    c: &tokio_postgres::Client,
    jar: CookieJar,
    id: i32,
    next: Option<String>,
) -> Response {
    if let Some(old) = jar.get(auth::SESSION_COOKIE) {
        let _ = store::end_session(c, old.value()).await;
    }
    let (sid, _) = match store::create_session(c, id, s.auth_cfg.session_max).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "could not open a session");
            return super::message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "503",
                "Database unavailable. / Baza nije dostupna.",
            );
        }
    };
    let role = c
        .query_opt("SELECT role FROM accounts WHERE id = $1", &[&id])
        .await
        .ok()
        .flatten()
        .and_then(|r| Role::parse(r.get(0)));
    if let Some(role) = role {
        s.metrics.logins.with_label_values(&[role.as_str()]).inc();
    }
    let home = match role {
        Some(Role::Household) => "/portal",
        _ => "/ops",
    };
    let jar = jar.remove(Cookie::from(auth::PRE_COOKIE)).add(auth::session_cookie(sid, s.auth_cfg.secure_cookies));
    (jar, Redirect::to(&next.unwrap_or_else(|| home.to_owned()))).into_response()
}

async fn logout(State(s): State<AppState>, jar: CookieJar) -> Response {
    if let Some(c) = jar.get(auth::SESSION_COOKIE) {
        if let Ok(client) = s.pool.get().await {
            let _ = store::end_session(&client, c.value()).await;
        }
    }
    let jar = jar.add(auth::expired_session_cookie(s.auth_cfg.secure_cookies));
    (jar, Redirect::to("/login")).into_response()
}

#[derive(Template)]
#[template(path = "activate.html")]
struct ActivatePage {
    chrome: Chrome,
    pre: String,
    code: String,
    username: String,
    min_len: usize,
    error: Option<String>,
}

/// The form starts empty: an activation code is never taken from the URL (URLs end up in browser
/// history and proxy logs).
async fn activate_form(State(s): State<AppState>, lang: Lang, jar: CookieJar) -> Response {
    let (jar, pre) = pre_token(jar, s.auth_cfg.secure_cookies);
    let page = ActivatePage {
        chrome: Chrome::new(lang, None, "/activate", "activate.title"),
        pre,
        code: String::new(),
        username: String::new(),
        min_len: s.auth_cfg.min_password_len,
        error: None,
    };
    (jar, render(&page)).into_response()
}

#[derive(Deserialize)]
struct ActivateForm {
    code: String,
    #[serde(default)]
    username: Option<String>,
    password: String,
    password2: String,
}

async fn activate_submit(
    State(s): State<AppState>,
    lang: Lang,
    jar: CookieJar,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    Form(f): Form<ActivateForm>,
) -> Response {
    let (jar, pre) = pre_token(jar, s.auth_cfg.secure_cookies);
    let again = |status: StatusCode, error: String, jar: CookieJar| {
        let page = ActivatePage {
            chrome: Chrome::new(lang, None, "/activate", "activate.title"),
            pre: pre.clone(),
            code: f.code.chars().take(40).collect(),
            username: f.username.clone().unwrap_or_default().chars().take(64).collect(),
            min_len: s.auth_cfg.min_password_len,
            error: Some(error),
        };
        let mut r = (jar, render(&page)).into_response();
        *r.status_mut() = status;
        r
    };
    if addr.is_some_and(|a| !s.attempts.allow(a)) {
        return again(StatusCode::TOO_MANY_REQUESTS, lang.t("login.too_many").into(), jar);
    }
    if f.password != f.password2 {
        return again(StatusCode::BAD_REQUEST, lang.t("activate.mismatch").into(), jar);
    }
    let mut c = match s.pool.get().await {
        Ok(c) => c,
        Err(_) => return again(StatusCode::SERVICE_UNAVAILABLE, lang.t("error.unavailable").into(), jar),
    };
    let redeemed =
        store::redeem_invite(&mut c, &f.code, f.username.as_deref(), &f.password, s.auth_cfg.min_password_len).await;
    match redeemed {
        Ok((id, _)) => start_session(&s, &c, jar, id, None).await,
        Err(store::AuthError::Invalid(m) | store::AuthError::Conflict(m)) => {
            s.metrics.auth_failures.with_label_values(&["login_invalid"]).inc();
            again(StatusCode::BAD_REQUEST, m, jar)
        }
        Err(e) => {
            tracing::warn!(error = %e, "activation failed on the database");
            again(StatusCode::SERVICE_UNAVAILABLE, lang.t("error.unavailable").into(), jar)
        }
    }
}

async fn set_lang(
    State(s): State<AppState>,
    axum::extract::Path(code): axum::extract::Path<String>,
    jar: CookieJar,
    Query(q): Query<NextQuery>,
) -> Response {
    let Some(lang) = Lang::parse(&code) else {
        return (StatusCode::NOT_FOUND, "no such language").into_response();
    };
    let cookie = Cookie::build((LANG_COOKIE, lang.code()))
        .path("/")
        .same_site(axum_extra::extract::cookie::SameSite::Lax)
        .secure(s.auth_cfg.secure_cookies)
        .permanent()
        .build();
    (jar.add(cookie), Redirect::to(&safe_next(q.next.as_deref()).unwrap_or_else(|| "/".into()))).into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/portal/month?m=2026-11")).as_deref(), Some("/portal/month?m=2026-11"));
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "portal",
            "/x?u=http://e",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/\r\nSet-Cookie: x=1",
            "/x\\/evil.example",
            "/caf\u{e9}",
        ] {
            assert_eq!(safe_next(Some(bad)), None, "{bad}");
        }
    }
}
