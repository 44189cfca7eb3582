//! Secrets kept out of logs and output.

/// `scheme://user:password@host/…?password=…` (or libpq's `key=value` form) with the passwords
/// replaced by `********`. Anything that cannot be parsed is masked whole rather than leaked.
pub fn redact_url(url: &str) -> String {
    const MASK: &str = "********";
    let mask_params = |s: &str, sep: char| -> String {
        s.split(sep)
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.trim().eq_ignore_ascii_case("password") => format!("{k}={MASK}"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(&sep.to_string())
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        // libpq keyword/value form: host=… password=…
        return if url.contains('=') { mask_params(url, ' ') } else { url.to_owned() };
    };
    let (authority, tail) = rest.find(['/', '?']).map_or((rest, ""), |i| rest.split_at(i));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => format!("{path}?{}", mask_params(query, '&')),
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}
