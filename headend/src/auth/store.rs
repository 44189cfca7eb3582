//! Accounts, sessions, API tokens and activation codes in PostgreSQL (migration 0007).
//!
//! Everything here is what the CLI (`headend account …`) and the HTTP layer share. Secrets leave
//! this module only once, as return values to be shown to their owner; they are never logged.

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;

use super::secret::{self, SecretError};
use super::{Principal, Role, Via};

/// An account operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The request is wrong in a way its author can fix; the message says how.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// Why a login was refused. Both are shown to the person as the same message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// Unknown user, wrong password, disabled or not yet activated.
    Invalid,
    /// Too many failures in a row; locked until the lock-out ends.
    Locked,
}

/// Login throttling settings (from `AuthConfig`).
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    pub max_failed: u32,
    pub lockout: Duration,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Usernames: lowercase letters, digits and `. _ @ -`, 3 to 64 characters (the table's CHECK).
pub fn check_username(u: &str) -> Result<(), AuthError> {
    let ok = (3..=64).contains(&u.len())
        && u.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && u.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(
            "username: 3 to 64 lowercase letters, digits or . _ @ -, starting with a letter or digit".into(),
        ))
    }
}

/// Passwords: at least `min` characters, at most 256, not the username.
pub fn check_password(username: &str, password: &str, min: usize) -> Result<(), AuthError> {
    let n = password.chars().count();
    if n < min || n > 256 {
        return Err(AuthError::Invalid(format!("password: {min} to 256 characters")));
    }
    if password.eq_ignore_ascii_case(username) {
        return Err(AuthError::Invalid("password: must not be the username".into()));
    }
    Ok(())
}

/// Password hashes computed at once: each argon2id run takes 19 MiB and a core for tens of
/// milliseconds, so a burst of logins queues here instead of taking the machine's memory.
fn hashing() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
    })
}

async fn hash(password: String) -> Result<String, AuthError> {
    let _permit = hashing().acquire().await.map_err(|e| AuthError::Secret(SecretError::Hash(e.to_string())))?;
    tokio::task::spawn_blocking(move || secret::hash_password(&password))
        .await
        .map_err(|e| AuthError::Secret(SecretError::Hash(e.to_string())))?
        .map_err(AuthError::from)
}

async fn verify(password: String, phc: Option<String>) -> bool {
    let Ok(_permit) = hashing().acquire().await else { return false };
    tokio::task::spawn_blocking(move || {
        let ok = secret::verify_password(&password, phc.as_deref().unwrap_or_else(|| secret::dummy_hash()));
        ok && phc.is_some()
    })
    .await
    .unwrap_or(false)
}

/// Records an authentication event (`auth_events`). Never given a secret.
pub async fn audit(
    c: &Client,
    account_id: Option<i32>,
    username: Option<&str>,
    event: &str,
    client: Option<&str>,
    detail: Option<&str>,
) -> Result<(), AuthError> {
    c.execute(
        "INSERT INTO auth_events (account_id, username, event, client, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&account_id, &username, &event, &client, &detail],
    )
    .await?;
    Ok(())
}

/// Creates an account; with a password it is active at once, without one it waits for an
/// activation code ([`create_invite`]). Returns its id.
pub async fn create_account(
    c: &Client,
    username: &str,
    role: Role,
    password: Option<&str>,
    min_password_len: usize,
) -> Result<i32, AuthError> {
    check_username(username)?;
    let phc = match password {
        Some(p) => {
            check_password(username, p, min_password_len)?;
            Some(hash(p.to_owned()).await?)
        }
        None => None,
    };
    let row = c
        .query_opt(
            "INSERT INTO accounts (username, role, password_hash, activated_at)
             VALUES ($1, $2, $3, CASE WHEN $3::text IS NULL THEN NULL ELSE now() END)
             ON CONFLICT (username) DO NOTHING RETURNING id",
            &[&username, &role.as_str(), &phc],
        )
        .await?
        .ok_or_else(|| AuthError::Conflict(format!("account {username} exists already")))?;
    let id: i32 = row.get(0);
    audit(c, Some(id), Some(username), "account_created", None, Some(role.as_str())).await?;
    Ok(id)
}

/// Sets a new password (an admin's reset) and ends the account's sessions.
pub async fn set_password(c: &Client, username: &str, password: &str, min: usize) -> Result<(), AuthError> {
    check_password(username, password, min)?;
    let phc = hash(password.to_owned()).await?;
    let row = c
        .query_opt(
            "UPDATE accounts SET password_hash = $2, activated_at = COALESCE(activated_at, now()),
                    failed_logins = 0, locked_until = NULL
             WHERE username = $1 RETURNING id",
            &[&username, &phc],
        )
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("no account {username}")))?;
    let id: i32 = row.get(0);
    c.execute("DELETE FROM web_sessions WHERE account_id = $1", &[&id]).await?;
    audit(c, Some(id), Some(username), "password_set", None, None).await
}

/// Fails unless every household code is in the inventory. Called before an account is made, so that
/// a typo does not leave a half-made account that the corrected request then collides with (409).
pub async fn check_households(c: &Client, codes: &[String]) -> Result<(), AuthError> {
    let known: Vec<String> = c
        .query("SELECT code FROM households WHERE code = ANY($1)", &[&codes])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    match codes.iter().find(|h| !known.contains(h)) {
        Some(missing) => Err(AuthError::NotFound(format!("no household {missing} in the inventory"))),
        None => Ok(()),
    }
}

/// An account made by an admin (API, ops page or CLI), waiting for its person to set a password
/// with the returned one-time activation code. The rules are checked before anything is written:
/// households only for household accounts (and at least one), at most 100, each in the inventory.
pub async fn create_pending(
    c: &Client,
    username: &str,
    role: Role,
    households: &[String],
    created_by: &str,
    min_password_len: usize,
    valid: Duration,
) -> Result<String, AuthError> {
    if role != Role::Household && !households.is_empty() {
        return Err(AuthError::Invalid("households: only for household accounts".into()));
    }
    if role == Role::Household && households.is_empty() {
        return Err(AuthError::Invalid("households: a household account needs at least one household code".into()));
    }
    if households.len() > 100 {
        return Err(AuthError::Invalid("households: at most 100".into()));
    }
    check_households(c, households).await?;
    create_account(c, username, role, None, min_password_len).await?;
    let rest = async {
        for h in households {
            link_household(c, username, h).await?;
        }
        create_invite(c, &InviteFor::Account(username.to_owned()), created_by, valid).await
    };
    match rest.await {
        Ok(code) => Ok(code),
        Err(e) => {
            // Undo the account just made (never activated, so nothing else refers to it), so the
            // corrected request does not collide with a half-made one.
            let _ = c.execute("DELETE FROM accounts WHERE username = $1 AND password_hash IS NULL", &[&username]).await;
            Err(e)
        }
    }
}

/// Gives a household account access to a household (by its inventory code).
pub async fn link_household(c: &Client, username: &str, household: &str) -> Result<(), AuthError> {
    let n = c
        .execute(
            "INSERT INTO account_households (account_id, household_id)
             SELECT a.id, h.id FROM accounts a, households h
             WHERE a.username = $1 AND a.role = 'household' AND h.code = $2
             ON CONFLICT DO NOTHING",
            &[&username, &household],
        )
        .await?;
    if n == 0 {
        let known = c
            .query_opt(
                "SELECT 1 FROM accounts a, households h WHERE a.username = $1 AND a.role = 'household' AND h.code = $2",
                &[&username, &household],
            )
            .await?;
        if known.is_none() {
            return Err(AuthError::NotFound(format!("no household account {username} or no household {household}")));
        }
    }
    Ok(())
}

/// Whom an activation code is for.
#[derive(Debug, Clone)]
pub enum InviteFor {
    /// A new household account for this household (inventory code); the person chooses a username.
    Household(String),
    /// An existing, not yet activated account (made by `headend account create`).
    Account(String),
}

/// Creates a one-time activation code, valid for `valid`. Returns the code (shown once).
pub async fn create_invite(
    c: &Client,
    whom: &InviteFor,
    created_by: &str,
    valid: Duration,
) -> Result<String, AuthError> {
    let code = secret::new_activation_code()?;
    let h = secret::digest(&secret::normalise_code(&code));
    let n = match whom {
        InviteFor::Household(hh) => {
            c.execute(
                "INSERT INTO account_invites (code_hash, household_id, created_by, expires_at)
                 SELECT $1, id, $3, now() + make_interval(secs => $4) FROM households WHERE code = $2",
                &[&h, hh, &created_by, &secs(valid)],
            )
            .await?
        }
        InviteFor::Account(u) => {
            c.execute(
                "INSERT INTO account_invites (code_hash, account_id, created_by, expires_at)
                 SELECT $1, id, $3, now() + make_interval(secs => $4) FROM accounts
                 WHERE username = $2 AND disabled_at IS NULL",
                &[&h, u, &created_by, &secs(valid)],
            )
            .await?
        }
    };
    if n == 0 {
        return Err(AuthError::NotFound(match whom {
            InviteFor::Household(hh) => format!("no household {hh} in the inventory"),
            InviteFor::Account(u) => format!("no active account {u}"),
        }));
    }
    let (what, who) = match whom {
        InviteFor::Household(hh) => ("invite_created", hh.as_str()),
        InviteFor::Account(u) => ("invite_created", u.as_str()),
    };
    audit(c, None, Some(who), what, None, Some(created_by)).await?;
    Ok(code)
}

/// A household's activation code for the invoice run.
#[derive(Debug, Clone, Serialize)]
pub struct PrintedInvite {
    pub household: String,
    pub building: String,
    pub apartment: String,
    pub address: String,
    pub activation_code: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Activation codes for every household (of one building, or all) that has no account yet — for
/// printing on the invoices. A household's earlier unused codes stop working: only the code on its
/// latest invoice does. One transaction.
pub async fn invite_households(
    c: &mut Client,
    building: Option<&str>,
    created_by: &str,
    valid: Duration,
) -> Result<Vec<PrintedInvite>, AuthError> {
    let tx = c.transaction().await?;
    let rows = tx
        .query(
            "SELECT h.id, h.code, b.code, h.apartment, b.address FROM households h JOIN buildings b ON b.id = h.building_id
             WHERE ($1::text IS NULL OR b.code = $1)
               AND NOT EXISTS (SELECT 1 FROM account_households ah JOIN accounts a ON a.id = ah.account_id
                               WHERE ah.household_id = h.id AND a.disabled_at IS NULL)
             ORDER BY b.code, h.code",
            &[&building],
        )
        .await?;
    if rows.is_empty() && building.is_some() {
        let known = tx.query_opt("SELECT 1 FROM buildings WHERE code = $1", &[&building]).await?;
        if known.is_none() {
            return Err(AuthError::NotFound(format!("no building {} in the inventory", building.unwrap_or_default())));
        }
    }
    let expire = tx
        .prepare("UPDATE account_invites SET expires_at = now() WHERE household_id = $1 AND used_at IS NULL AND expires_at > now()")
        .await?;
    let insert = tx
        .prepare(
            "INSERT INTO account_invites (code_hash, household_id, created_by, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at",
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i32 = r.get(0);
        let code = secret::new_activation_code()?;
        tx.execute(&expire, &[&id]).await?;
        let expires_at = tx
            .query_one(&insert, &[&secret::digest(&secret::normalise_code(&code)), &id, &created_by, &secs(valid)])
            .await?
            .get(0);
        out.push(PrintedInvite {
            household: r.get(1),
            building: r.get(2),
            apartment: r.get(3),
            address: r.get(4),
            activation_code: code,
            expires_at,
        });
    }
    tx.execute(
        "INSERT INTO auth_events (username, event, detail) VALUES ($1, 'invites_printed', $2)",
        &[
            &created_by,
            &format!("{} households{}", out.len(), building.map(|b| format!(" of {b}")).unwrap_or_default()),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(out)
}

/// Redeems an activation code: a household code creates the account `username` (linked to its
/// household) with `password`; an account code sets that account's password. One use only.
/// Returns the activated account's id and username.
pub async fn redeem_invite(
    c: &mut Client,
    code: &str,
    username: Option<&str>,
    password: &str,
    min_password_len: usize,
) -> Result<(i32, String), AuthError> {
    let invalid = || AuthError::Invalid("this activation code is not valid (wrong, used or expired)".into());
    let h = secret::digest(&secret::normalise_code(code));
    let tx = c.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT household_id, account_id FROM account_invites
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now() FOR UPDATE",
            &[&h],
        )
        .await?
        .ok_or_else(invalid)?;
    let household: Option<i32> = row.get(0);
    let account: Option<i32> = row.get(1);
    let (id, name) = match (household, account) {
        (Some(hh), _) => {
            let u = username.map(str::trim).unwrap_or_default().to_ascii_lowercase();
            check_username(&u)?;
            check_password(&u, password, min_password_len)?;
            let phc = hash(password.to_owned()).await?;
            let id: i32 = tx
                .query_opt(
                    "INSERT INTO accounts (username, role, password_hash, activated_at)
                     VALUES ($1, 'household', $2, now()) ON CONFLICT (username) DO NOTHING RETURNING id",
                    &[&u, &phc],
                )
                .await?
                .ok_or_else(|| AuthError::Conflict(format!("the username {u} is taken; choose another")))?
                .get(0);
            tx.execute("INSERT INTO account_households (account_id, household_id) VALUES ($1, $2)", &[&id, &hh])
                .await?;
            (id, u)
        }
        (None, Some(acc)) => {
            let row = tx
                .query_one("SELECT username FROM accounts WHERE id = $1 AND disabled_at IS NULL", &[&acc])
                .await
                .map_err(|_| invalid())?;
            let u: String = row.get(0);
            check_password(&u, password, min_password_len)?;
            let phc = hash(password.to_owned()).await?;
            tx.execute(
                "UPDATE accounts SET password_hash = $2, activated_at = now(), failed_logins = 0, locked_until = NULL
                 WHERE id = $1",
                &[&acc, &phc],
            )
            .await?;
            (acc, u)
        }
        (None, None) => return Err(invalid()),
    };
    tx.execute("UPDATE account_invites SET used_at = now() WHERE code_hash = $1", &[&h]).await?;
    tx.execute("INSERT INTO auth_events (account_id, username, event) VALUES ($1, $2, 'activated')", &[&id, &name])
        .await?;
    tx.commit().await?;
    Ok((id, name))
}

/// Checks a username and password with throttling: after `max_failed` failures in a row the
/// account is locked for `lockout` (kept in the database, so every replica agrees).
///
/// Each attempt on an existing account is counted *before* its password is checked (and forgiven
/// when it is right), so concurrent guesses cannot all slip past the count while the first ones
/// are still being verified: at most `max_failed` passwords are ever checked between lock-outs.
/// Whatever the outcome — unknown user, wrong password, locked, disabled — one password
/// verification is paid, so the time taken tells nothing about the account.
pub async fn login(
    c: &Client,
    username: &str,
    password: &str,
    throttle: Throttle,
    client: Option<&str>,
) -> Result<Result<i32, LoginRefused>, AuthError> {
    let username = username.trim().to_ascii_lowercase();
    let row = c
        .query_opt("SELECT id, password_hash, disabled_at IS NOT NULL FROM accounts WHERE username = $1", &[&username])
        .await?;
    let Some(row) = row else {
        verify(password.to_owned(), None).await;
        // What was typed is not kept: it may be a password typed into the wrong field.
        audit(c, None, None, "login_failed", client, Some("unknown user")).await?;
        return Ok(Err(LoginRefused::Invalid));
    };
    let id: i32 = row.get(0);
    let phc: Option<String> = row.get(1);
    let disabled: bool = row.get(2);
    // Reserve this attempt: the one that reaches `max_failed` locks the account at once (and is
    // still checked: the right password on it opens the account again).
    let reserved = c
        .query_opt(
            "UPDATE accounts SET
                 failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END,
                 locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + make_interval(secs => $3)
                                     ELSE locked_until END
             WHERE id = $1 AND NOT COALESCE(locked_until > now(), false)
             RETURNING COALESCE(locked_until > now(), false)",
            &[&id, &i32::try_from(throttle.max_failed.max(1)).unwrap_or(i32::MAX), &secs(throttle.lockout)],
        )
        .await?;
    let Some(reserved) = reserved else {
        verify(password.to_owned(), None).await;
        audit(c, Some(id), Some(&username), "login_locked", client, None).await?;
        return Ok(Err(LoginRefused::Locked));
    };
    let last: bool = reserved.get(0);
    if verify(password.to_owned(), phc).await && !disabled {
        c.execute("UPDATE accounts SET failed_logins = 0, locked_until = NULL WHERE id = $1", &[&id]).await?;
        audit(c, Some(id), Some(&username), "login", client, None).await?;
        return Ok(Ok(id));
    }
    let event = if last { "locked_out" } else { "login_failed" };
    audit(c, Some(id), Some(&username), event, client, None).await?;
    Ok(Err(if last { LoginRefused::Locked } else { LoginRefused::Invalid }))
}

/// A new session for `account`: returns the session id (the cookie's value, shown once) and
/// its CSRF token.
pub async fn create_session(c: &Client, account: i32, max: Duration) -> Result<(String, String), AuthError> {
    let id = secret::new_token()?;
    let csrf = secret::new_token()?;
    c.execute(
        "INSERT INTO web_sessions (id_hash, account_id, csrf_token, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        &[&secret::digest(&id), &account, &csrf, &secs(max)],
    )
    .await?;
    // Expired sessions of anyone are removed now and then, here rather than in a timer.
    c.execute("DELETE FROM web_sessions WHERE expires_at < now() - interval '1 day'", &[]).await?;
    Ok((id, csrf))
}

const PRINCIPAL_COLUMNS: &str = "a.id, a.username, a.role,
    COALESCE((SELECT array_agg(household_id ORDER BY household_id) FROM account_households WHERE account_id = a.id), '{}')";

fn principal(row: &tokio_postgres::Row, via: Via) -> Option<Principal> {
    Some(Principal {
        account_id: row.get(0),
        username: row.get(1),
        role: Role::parse(row.get(2))?,
        households: row.get(3),
        via,
    })
}

/// The account behind a session cookie, if the session is valid: not expired, not idle longer
/// than `idle`, account not disabled. Refreshes the idle clock at most once a minute (or every
/// half `idle` when that is shorter, so that a session in use never goes idle).
pub async fn session(c: &Client, id: &str, idle: Duration) -> Result<Option<Principal>, AuthError> {
    let h = secret::digest(id);
    let row = c
        .query_opt(
            &format!(
                "SELECT {PRINCIPAL_COLUMNS}, s.csrf_token,
                        s.last_seen_at < now() - LEAST(interval '1 minute', make_interval(secs => $2::float8 / 2))
                 FROM web_sessions s JOIN accounts a ON a.id = s.account_id
                 WHERE s.id_hash = $1 AND s.expires_at > now() AND a.disabled_at IS NULL
                   AND s.last_seen_at > now() - make_interval(secs => $2)"
            ),
            &[&h, &secs(idle)],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    if row.get::<_, bool>(5) {
        c.execute("UPDATE web_sessions SET last_seen_at = now() WHERE id_hash = $1", &[&h]).await?;
    }
    Ok(principal(&row, Via::Session { csrf: row.get(4) }))
}

/// Ends a session (logout).
pub async fn end_session(c: &Client, id: &str) -> Result<(), AuthError> {
    c.execute("DELETE FROM web_sessions WHERE id_hash = $1", &[&secret::digest(id)]).await?;
    Ok(())
}

/// A new API token for `username` named `name` (unique per account), optionally expiring.
/// Returns the token (shown once).
pub async fn create_token(
    c: &Client,
    username: &str,
    name: &str,
    expires: Option<Duration>,
) -> Result<String, AuthError> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(AuthError::Invalid("token name: 1 to 100 characters".into()));
    }
    let token = secret::new_api_token()?;
    let row = c
        .query_opt(
            "INSERT INTO api_tokens (account_id, name, token_hash, expires_at)
             SELECT id, $2, $3, now() + make_interval(secs => $4) FROM accounts
             WHERE username = $1 AND disabled_at IS NULL
             ON CONFLICT (account_id, name) DO NOTHING RETURNING account_id",
            &[&username, &name, &secret::digest(&token), &expires.map(secs)],
        )
        .await?;
    let Some(row) = row else {
        let exists =
            c.query_opt("SELECT 1 FROM accounts WHERE username = $1 AND disabled_at IS NULL", &[&username]).await?;
        return Err(match exists {
            None => AuthError::NotFound(format!("no active account {username}")),
            Some(_) => AuthError::Conflict(format!("{username} has a token named {name:?} already; revoke it first")),
        });
    };
    audit(c, Some(row.get(0)), Some(username), "token_created", None, Some(name)).await?;
    Ok(token)
}

/// Revokes the token `name` of `username`.
pub async fn revoke_token(c: &Client, username: &str, name: &str) -> Result<(), AuthError> {
    let n = c
        .execute(
            "UPDATE api_tokens t SET revoked_at = now() FROM accounts a
             WHERE a.id = t.account_id AND a.username = $1 AND t.name = $2 AND t.revoked_at IS NULL",
            &[&username, &name],
        )
        .await?;
    if n == 0 {
        return Err(AuthError::NotFound(format!("{username} has no live token named {name:?}")));
    }
    audit(c, None, Some(username), "token_revoked", None, Some(name)).await
}

/// The account behind an API token, if it is live.
pub async fn token(c: &Client, token: &str) -> Result<Option<Principal>, AuthError> {
    if !token.starts_with(secret::API_TOKEN_PREFIX) {
        return Ok(None);
    }
    let h = secret::digest(token);
    let row = c
        .query_opt(
            &format!(
                "SELECT {PRINCIPAL_COLUMNS}, t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'
                 FROM api_tokens t JOIN accounts a ON a.id = t.account_id
                 WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
                   AND a.disabled_at IS NULL"
            ),
            &[&h],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    if row.get::<_, bool>(4) {
        c.execute("UPDATE api_tokens SET last_used_at = now() WHERE token_hash = $1", &[&h]).await?;
    }
    Ok(principal(&row, Via::Token))
}

/// Disables an account: its sessions end and its tokens stop working at once.
pub async fn disable(c: &Client, username: &str) -> Result<(), AuthError> {
    let row = c
        .query_opt(
            "UPDATE accounts SET disabled_at = now() WHERE username = $1 AND disabled_at IS NULL RETURNING id",
            &[&username],
        )
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("no active account {username}")))?;
    let id: i32 = row.get(0);
    c.execute("DELETE FROM web_sessions WHERE account_id = $1", &[&id]).await?;
    audit(c, Some(id), Some(username), "disabled", None, None).await
}

/// One account as listed for admins (no secret, no hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountInfo {
    pub username: String,
    pub role: Role,
    /// Household codes the account may see.
    pub households: Vec<String>,
    pub active: bool,
    pub disabled: bool,
    pub locked: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Live API tokens (names only).
    pub tokens: Vec<String>,
}

/// Accounts, by username, a page at a time.
pub async fn list(c: &Client, limit: i64, offset: i64) -> Result<Vec<AccountInfo>, AuthError> {
    let rows = c
        .query(
            "SELECT a.username, a.role,
                    COALESCE((SELECT array_agg(h.code ORDER BY h.code) FROM account_households ah
                              JOIN households h ON h.id = ah.household_id WHERE ah.account_id = a.id), '{}'),
                    a.password_hash IS NOT NULL, a.disabled_at IS NOT NULL, COALESCE(a.locked_until > now(), false),
                    a.created_at,
                    COALESCE((SELECT array_agg(t.name ORDER BY t.name) FROM api_tokens t
                              WHERE t.account_id = a.id AND t.revoked_at IS NULL
                                AND (t.expires_at IS NULL OR t.expires_at > now())), '{}')
             FROM accounts a ORDER BY a.username LIMIT $1 OFFSET $2",
            &[&limit, &offset],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(AccountInfo {
                username: r.get(0),
                role: Role::parse(r.get(1))?,
                households: r.get(2),
                active: r.get(3),
                disabled: r.get(4),
                locked: r.get(5),
                created_at: r.get(6),
                tokens: r.get(7),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;

    async fn with_households(c: &Client) {
        c.batch_execute(
            "INSERT INTO buildings (code, address, municipality, region) VALUES
                 ('B1', 'Knez Mihailova 1, Beograd', 'Stari grad', 'belgrade'),
                 ('B2', 'Zmaj Jovina 2, Novi Sad', 'Novi Sad', 'novi_sad');
             INSERT INTO households (code, building_id, apartment, floor_area_m2, residents, approved_power_kw, tariff)
             SELECT 'H' || b.code || '-' || n, b.id, n::text, 50, 2, 6.9, 'eps-household-2025'
             FROM buildings b, generate_series(1, 3) n",
        )
        .await
        .expect("fixture");
    }

    /// Printed codes: one per household without an account; printing again replaces the earlier
    /// codes (only the newest works), and an activated household is not printed again.
    #[tokio::test]
    async fn invoice_codes_go_to_households_without_an_account_and_replace_earlier_ones() {
        let db = TestDb::new().await;
        let mut c = db.migrated().await;
        with_households(&c).await;
        let day = Duration::from_secs(86_400);
        let first = invite_households(&mut c, Some("B1"), "test", day).await.expect("first");
        assert_eq!(first.iter().map(|i| i.household.as_str()).collect::<Vec<_>>(), ["HB1-1", "HB1-2", "HB1-3"]);
        assert!(first.iter().all(|i| i.building == "B1" && i.address.starts_with("Knez")));
        let second = invite_households(&mut c, Some("B1"), "test", day).await.expect("second");
        assert_eq!(second.len(), 3);
        // The first print's code no longer works; the second's does, once.
        let stale = redeem_invite(&mut c, &first[0].activation_code, Some("ana"), "a long password", 10).await;
        assert!(matches!(stale, Err(AuthError::Invalid(_))), "{stale:?}");
        let (_, name) =
            redeem_invite(&mut c, &second[0].activation_code.to_lowercase(), Some("Ana"), "a long password", 10)
                .await
                .expect("the newest code activates");
        assert_eq!(name, "ana");
        let again = redeem_invite(&mut c, &second[0].activation_code, Some("bob"), "a long password", 10).await;
        assert!(matches!(again, Err(AuthError::Invalid(_))), "a code works once: {again:?}");
        let third = invite_households(&mut c, None, "test", day).await.expect("all buildings");
        assert_eq!(third.len(), 5, "HB1-1 has an account now; the other five households get codes");
        assert!(third.iter().all(|i| i.household != "HB1-1"));
        let unknown = invite_households(&mut c, Some("NOPE"), "test", day).await;
        assert!(matches!(unknown, Err(AuthError::NotFound(_))), "{unknown:?}");
    }

    /// An admin-made account with an unknown household leaves nothing behind; with a known one it
    /// waits for its code, which sets the password.
    #[tokio::test]
    async fn pending_accounts_are_all_or_nothing() {
        let db = TestDb::new().await;
        let mut c = db.migrated().await;
        with_households(&c).await;
        let day = Duration::from_secs(86_400);
        let bad = create_pending(&c, "mila", Role::Household, &["HB1-1".into(), "H-NONE".into()], "t", 10, day).await;
        assert!(matches!(bad, Err(AuthError::NotFound(_))), "{bad:?}");
        let n: i64 = c.query_one("SELECT count(*) FROM accounts", &[]).await.expect("count").get(0);
        assert_eq!(n, 0, "nothing half made");
        let staff = create_pending(&c, "mila", Role::Operator, &["HB1-1".into()], "t", 10, day).await;
        assert!(matches!(staff, Err(AuthError::Invalid(_))), "households are for household accounts");
        let code = create_pending(&c, "mila", Role::Household, &["HB1-1".into()], "t", 10, day).await.expect("made");
        let throttle = Throttle { max_failed: 3, lockout: Duration::from_secs(60) };
        let before = login(&c, "mila", "whatever password", throttle, None).await.expect("db");
        assert_eq!(before, Err(LoginRefused::Invalid), "not active before its code is used");
        let short = redeem_invite(&mut c, &code, None, "short", 10).await;
        assert!(matches!(short, Err(AuthError::Invalid(_))), "{short:?}");
        redeem_invite(&mut c, &code, None, "mila's long password", 10).await.expect("activated");
        let id = login(&c, "MILA", "mila's long password", throttle, None).await.expect("db").expect("logs in");
        let (sid, csrf) = create_session(&c, id, Duration::from_secs(3600)).await.expect("session");
        let p = session(&c, &sid, Duration::from_secs(600)).await.expect("db").expect("valid");
        assert_eq!((p.username.as_str(), p.role, p.csrf()), ("mila", Role::Household, csrf.as_str()));
        assert_eq!(p.households.len(), 1);
        disable(&c, "mila").await.expect("disable");
        assert!(
            session(&c, &sid, Duration::from_secs(600)).await.expect("db").is_none(),
            "a disabled account's session ends"
        );
    }
}
