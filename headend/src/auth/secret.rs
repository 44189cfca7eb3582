//! Secrets: random values, their digests, passwords (argon2id) and the printable activation code.
//!
//! Session ids, API tokens and activation codes are 128–256 bits from the operating system's
//! generator and are stored only as SHA-256 digests: they are high-entropy, so a fast digest is
//! enough (a slow password hash is for what people choose). Passwords are argon2id PHC strings with
//! the crate's default cost (19 MiB, 2 passes), verified on a blocking thread.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// What can go wrong making a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(b)
}

/// A new random value, URL-safe base64 of 32 bytes (session ids, CSRF tokens).
pub fn new_token() -> Result<String, SecretError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// The prefix that marks an API token, so that one pasted in the wrong place is recognisable
/// (and secret scanners can find it).
pub const API_TOKEN_PREFIX: &str = "hes_";

/// A new API token: `hes_` + 32 random bytes.
pub fn new_api_token() -> Result<String, SecretError> {
    Ok(format!("{API_TOKEN_PREFIX}{}", new_token()?))
}

/// The stored form of a session id, token or normalised activation code.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Letters and digits that cannot be mistaken for each other on paper (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// A new activation code, three groups of five (31^15 ≈ 2^74), printable on an invoice:
/// `K7M2Q-XW9RT-H3PZA`.
pub fn new_activation_code() -> Result<String, SecretError> {
    let bytes = random_bytes::<30>()?;
    let mut out = String::with_capacity(17);
    // Two bytes per character, reduced modulo 31: the bias (65536 mod 31 = 2) is negligible.
    for (i, pair) in bytes.chunks(2).enumerate() {
        if i > 0 && i % 5 == 0 {
            out.push('-');
        }
        let v = usize::from(u16::from_be_bytes([pair[0], pair[1]]));
        out.push(char::from(CODE_ALPHABET[v % CODE_ALPHABET.len()]));
    }
    Ok(out)
}

/// An activation code as typed by a person: case, spaces and dashes do not matter.
pub fn normalise_code(typed: &str) -> String {
    typed.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

/// An argon2id hash of `password` in PHC form.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|e| SecretError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`. A malformed stored hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash verified when the username does not exist, so that a missing account takes as long to
/// refuse as a wrong password (no user enumeration by timing).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

/// Constant-time equality of two strings (CSRF tokens).
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("correct horse battery", "not a phc string"));
        assert_ne!(h, hash_password("correct horse battery").expect("hash"), "salted");
    }

    #[test]
    fn activation_codes_are_printable_and_normalise() {
        let c = new_activation_code().expect("code");
        assert_eq!(c.len(), 17, "{c}");
        assert_eq!(c.matches('-').count(), 2);
        assert!(normalise_code(&c).bytes().all(|b| CODE_ALPHABET.contains(&b)));
        assert_eq!(normalise_code(&c.to_lowercase().replace('-', " ")), normalise_code(&c));
        assert_ne!(c, new_activation_code().expect("code"));
    }

    #[test]
    fn tokens_are_long_random_and_marked() {
        let t = new_api_token().expect("token");
        assert!(t.starts_with(API_TOKEN_PREFIX) && t.len() == 4 + 43, "{t}");
        assert_ne!(digest(&t), digest(&new_api_token().expect("token")));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
