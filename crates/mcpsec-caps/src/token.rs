//! Capability tokens: format, generation, MAC and fingerprint.
//!
//! A token is `mcps_` + an 8-character id + a 43-character secret + a
//! 6-character checksum, all base62 (62 characters in all). The secret
//! carries 256 bits of randomness; the id lets the store find the record
//! without searching by secret; the checksum tells a typo apart from a
//! wrong token before any lookup. Tokens live in [`SecretString`]s and are
//! never logged, displayed or stored: the store keeps
//! HMAC-SHA-256(`secret.key`, token).

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::key::ServerKey;

/// The prefix every token starts with (and that redactors look for).
pub const PREFIX: &str = "mcps_";
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 43;
const CHECK_LEN: usize = 6;
/// A token's length in characters.
pub const TOKEN_LEN: usize = PREFIX.len() + ID_LEN + SECRET_LEN + CHECK_LEN;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not shaped like a token at all.
    #[error("this is not an mcpsec capability token (they start with `mcps_` and are 62 characters long)")]
    NotAToken,
    /// Shaped like one, but the checksum does not match: a typo.
    #[error("the capability token is mistyped (its checksum does not match); copy it again from `mcpsec grant`")]
    Checksum,
}

/// Random bytes from the OS.
pub(crate) fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        filled += rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(())
}

/// `n` uniformly random base62 characters (rejection sampling).
fn random_base62(n: usize) -> std::io::Result<String> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        random_bytes(&mut buf)?;
        for &b in &buf {
            // 248 = 4 × 62: keep the distribution uniform.
            if b < 248 && out.len() < n {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    let mut out = String::with_capacity(CHECK_LEN);
    for _ in 0..CHECK_LEN {
        out.push(ALPHABET[(n % 62) as usize] as char);
        n /= 62;
    }
    out
}

/// A freshly minted token: its id and the secret string (shown once).
#[derive(Debug)]
pub struct NewToken {
    /// The id (safe to show and log).
    pub id: String,
    /// The whole token (secret).
    pub token: SecretString,
}

/// Mints a token with a random id.
pub fn generate() -> std::io::Result<NewToken> {
    let id = random_base62(ID_LEN)?;
    let secret = random_base62(SECRET_LEN)?;
    let body = format!("{PREFIX}{id}{secret}");
    let token = format!("{body}{}", checksum(&body));
    Ok(NewToken { id, token: SecretString::from(token) })
}

/// A well-formed token (valid checksum) naming `id` with a fresh random
/// secret: what a forger who knows a token's id can build.
#[cfg(test)]
pub(crate) fn with_id_and_fresh_secret(id: &str) -> std::io::Result<SecretString> {
    let body = format!("{PREFIX}{id}{}", random_base62(SECRET_LEN)?);
    Ok(SecretString::from(format!("{body}{}", checksum(&body))))
}

/// Checks a presented token's shape and checksum; returns its id.
pub fn parse(token: &SecretString) -> Result<&str, FormatError> {
    let t = token.expose_secret();
    if t.len() != TOKEN_LEN || !t.starts_with(PREFIX) || !t[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FormatError::NotAToken);
    }
    let (body, check) = t.split_at(TOKEN_LEN - CHECK_LEN);
    if checksum(body).as_bytes().ct_eq(check.as_bytes()).into() {
        Ok(&t[PREFIX.len()..PREFIX.len() + ID_LEN])
    } else {
        Err(FormatError::Checksum)
    }
}

/// HMAC-SHA-256 of the token under the server key: what the store keeps.
pub fn mac(key: &ServerKey, token: &SecretString) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(token.expose_secret().as_bytes());
    m.finalize().into_bytes().into()
}

/// Compares two MACs in constant time.
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A short fingerprint for logs: 12 hex digits of SHA-256(token). It
/// identifies a token without revealing it (256 bits of secret stay secret).
pub fn fingerprint(token: &SecretString) -> String {
    let d = Sha256::digest(token.expose_secret().as_bytes());
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_are_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.token.expose_secret().len(), TOKEN_LEN);
        assert!(a.token.expose_secret().starts_with("mcps_"));
        assert_eq!(parse(&a.token), Ok(a.id.as_str()));
        assert_ne!(a.token.expose_secret(), b.token.expose_secret());
        assert_ne!(fingerprint(&a.token), fingerprint(&b.token));
        assert_eq!(fingerprint(&a.token).len(), 12);
    }

    #[test]
    fn typos_are_told_apart_from_garbage() {
        let t = generate().unwrap();
        let s = t.token.expose_secret();
        let mut typo = s.to_string();
        let i = 20;
        let c = if &typo[i..=i] == "a" { "b" } else { "a" };
        typo.replace_range(i..=i, c);
        assert_eq!(parse(&SecretString::from(typo)), Err(FormatError::Checksum));
        for bad in ["", "mcps_", "hunter2", &s[..TOKEN_LEN - 1], &format!("{s}x"), &s.replace("mcps_", "mcpx_")] {
            assert_eq!(parse(&SecretString::from(bad.to_string())), Err(FormatError::NotAToken), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = generate().unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.token.expose_secret()[PREFIX.len() + ID_LEN..]), "{shown}");
    }
}
