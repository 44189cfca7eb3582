//! The pages: server-rendered HTML (askama templates in `headend/templates/`), Serbian (Latin) and
//! English ([`i18n`]), the numbers readable without JavaScript; charts drawn by the vendored uPlot
//! from JSON embedded in the page (`assets/`, no CDN). Who may open what is decided by the same
//! extractors as the API ([`crate::auth`]).
//!
//! | module | pages |
//! |---|---|
//! | [`login`] | `/` (to the right home), `/login`, `/logout`, `/activate`, `/lang/{code}` |

pub mod assets;
pub mod format;
pub mod i18n;
pub mod login;
pub mod ops;
pub mod portal;
pub mod portal_bills;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Router;

pub use i18n::Lang;

use crate::auth::{Principal, Role};
use crate::http::AppState;

/// Every page route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(login::routes())
        .merge(assets::routes())
        .merge(ops::routes())
        .merge(portal_bills::routes())
        .merge(portal::routes())
}

/// One entry of the navigation bar.
#[derive(Debug, Clone)]
pub struct NavItem {
    pub href: &'static str,
    /// Locale key of the label.
    pub label: &'static str,
    pub current: bool,
}

/// What the layout needs on every page: language, who is logged in, the CSRF token for forms,
/// the navigation.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub lang: Lang,
    pub title: String,
    pub user: Option<String>,
    pub role: Option<Role>,
    pub csrf: String,
    /// This page's path and query, for the language switch to come back to.
    pub here: String,
    pub nav: Vec<NavItem>,
}

impl Chrome {
    /// The chrome of a page for `who` (or nobody), at `here`, titled by locale key `title`.
    pub fn new(lang: Lang, who: Option<&Principal>, here: &str, title: &str) -> Chrome {
        let role = who.map(|p| p.role);
        let mut nav = Vec::new();
        if role == Some(Role::Household) {
            nav.push(NavItem { href: "/portal", label: "nav.portal", current: false });
        }
        if role.is_some_and(|r| r >= Role::Operator) {
            nav.push(NavItem { href: "/ops", label: "nav.ops", current: false });
        }
        for n in &mut nav {
            n.current = here == n.href
                || here.starts_with(&format!("{}/", n.href))
                || here.starts_with(&format!("{}?", n.href));
        }
        Chrome {
            lang,
            title: lang.t(title).to_owned(),
            user: who.map(|p| p.username.clone()),
            role,
            csrf: who.map(|p| p.csrf().to_owned()).unwrap_or_default(),
            here: here.to_owned(),
            nav,
        }
    }

    /// Text of a locale key in this page's language.
    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }

    /// `/lang/{code}?next=<here>`: the link that switches to `code` and comes back.
    pub fn lang_href(&self, code: &str) -> String {
        format!("/lang/{code}?next={}", crate::auth::urlencode(&self.here))
    }
}

/// Renders a template into a response (a template error is a 500 with a short page, logged).
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Html("<!doctype html><title>500</title><p>Internal error.</p>"))
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
}

/// A short standalone page (errors, refusals): no session needed, both languages in `message`.
pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    let mut r = render(&MessagePage { title, message });
    *r.status_mut() = status;
    r
}
