//! Serbian (Latin) and English: every text of the pages is a key in `locales/<area>.sr.toml` and
//! `locales/<area>.en.toml` (flat `key = "text"`; areas: common, portal, ops). A test keeps the
//! two languages' keys equal and checks that every key the templates and handlers use exists.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum_extra::extract::cookie::CookieJar;

/// The language cookie set by `/lang/{code}`.
pub const LANG_COOKIE: &str = "hes_lang";

const SR: &[&str] = &[
    include_str!("../../locales/common.sr.toml"),
    include_str!("../../locales/portal.sr.toml"),
    include_str!("../../locales/ops.sr.toml"),
];
const EN: &[&str] = &[
    include_str!("../../locales/common.en.toml"),
    include_str!("../../locales/portal.en.toml"),
    include_str!("../../locales/ops.en.toml"),
];

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Serbian, Latin script (the default).
    Sr,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "sr" | "sr-Latn" => Some(Lang::Sr),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub const fn code(self) -> &'static str {
        match self {
            Lang::Sr => "sr",
            Lang::En => "en",
        }
    }

    /// The `lang` attribute of the page.
    pub const fn html(self) -> &'static str {
        match self {
            Lang::Sr => "sr-Latn",
            Lang::En => "en",
        }
    }

    fn table(self) -> &'static HashMap<String, String> {
        static TABLES: OnceLock<[HashMap<String, String>; 2]> = OnceLock::new();
        let t = TABLES.get_or_init(|| [parse(SR), parse(EN)]);
        match self {
            Lang::Sr => &t[0],
            Lang::En => &t[1],
        }
    }

    /// The text of `key`; a missing key shows itself (and fails the locale test).
    pub fn t(self, key: &str) -> &'static str {
        match self.table().get(key) {
            Some(v) => v.as_str(),
            None => {
                tracing::warn!(key, lang = self.code(), "missing translation");
                // Leaked once per missing key: a bug the tests catch, bounded by the source's keys.
                Box::leak(key.to_owned().into_boxed_str())
            }
        }
    }
}

fn parse(files: &[&str]) -> HashMap<String, String> {
    let mut all = HashMap::new();
    for text in files {
        match toml::from_str::<HashMap<String, String>>(text) {
            Ok(t) => all.extend(t),
            Err(e) => tracing::error!(error = %e, "a locale file does not parse"),
        }
    }
    all
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    /// The cookie's language, else the browser's first preference we speak, else Serbian.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        if let Some(l) = jar.get(LANG_COOKIE).and_then(|c| Lang::parse(c.value())) {
            return Ok(l);
        }
        let accept = parts.headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        for tag in accept.split(',') {
            let tag = tag.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if tag.starts_with("sr") || tag.starts_with("hr") || tag.starts_with("bs") {
                return Ok(Lang::Sr);
            }
            if tag.starts_with("en") {
                return Ok(Lang::En);
            }
        }
        Ok(Lang::Sr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_have_the_same_keys() {
        let (sr, en) = (parse(SR), parse(EN));
        for f in SR.iter().chain(EN) {
            toml::from_str::<HashMap<String, String>>(f).expect("every locale file parses");
        }
        assert!(!sr.is_empty() && !en.is_empty(), "locale files parse");
        let missing_en: Vec<_> = sr.keys().filter(|k| !en.contains_key(*k)).collect();
        let missing_sr: Vec<_> = en.keys().filter(|k| !sr.contains_key(*k)).collect();
        assert!(missing_en.is_empty() && missing_sr.is_empty(), "only sr: {missing_en:?}; only en: {missing_sr:?}");
    }

    /// Every `.t(` call with a literal key in the templates and the page code names a key of the
    /// locale files.
    #[test]
    fn every_key_used_exists() {
        let en = parse(EN);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["templates", "src/web"] {
            for e in std::fs::read_dir(root.join(dir)).expect("dir").flatten() {
                files.push(e.path());
            }
        }
        let mut unknown = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            for part in text.split(".t(\"").skip(1) {
                let key = part.split('"').next().unwrap_or("");
                if !key.is_empty() && !key.contains(' ') && !en.contains_key(key) {
                    unknown.push(format!("{}: {key}", f.display()));
                }
            }
        }
        assert!(unknown.is_empty(), "keys missing from locales/*.en.toml and *.sr.toml: {unknown:#?}");
    }
}
