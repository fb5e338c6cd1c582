//! The users of the HTTP transport and their bearer keys.
//!
//! A key is the prefix `mcpsu_` and 43 base62 characters (256 bits of
//! randomness), printed once by `mcpsec users add` and stored only as its
//! HMAC-SHA-256 under `secret.key`, like a capability token. A presented key
//! is MACed and compared in constant time with every user's MAC; the list is
//! cached while the store's data version is unchanged, so `mcpsec users
//! remove` takes effect on the very next request of a running server.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use crate::key::ServerKey;
use crate::store::{StoreError, TokenStore, UserRecord};
use crate::token;

/// The prefix of every user key.
pub const KEY_PREFIX: &str = "mcpsu_";
const SECRET_LEN: usize = 43;
/// The length of a user key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + SECRET_LEN;

/// Why a user could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The name is not acceptable.
    #[error(
        "invalid user name `{0}`: use 1 to 64 letters, digits, `.`, `_`, `-` or `@`, starting with a letter or digit"
    )]
    BadName(String),
    /// The name is taken.
    #[error("a user named `{0}` exists already; remove it first with `mcpsec users remove {0}` to issue a new key")]
    Exists(String),
    /// No such user.
    #[error("there is no user named `{0}` (see `mcpsec users list`)")]
    Unknown(String),
    /// No randomness for the key.
    #[error("cannot generate a key: {0}")]
    Random(std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A newly issued key: shown to the human once, never stored.
pub struct NewUserKey {
    /// The user.
    pub name: String,
    /// The bearer key.
    pub key: SecretString,
    /// Unix milliseconds.
    pub created_ms: i64,
}

impl std::fmt::Debug for NewUserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUserKey").field("name", &self.name).field("key", &"[redacted]").finish()
    }
}

/// The user authority: adds, removes and authenticates users.
#[derive(Debug)]
pub struct Users {
    store: Arc<dyn TokenStore>,
    key: ServerKey,
    /// Users seen, valid while the store's data version is unchanged.
    cache: Mutex<(i64, Arc<Vec<UserRecord>>)>,
}

/// Whether `name` is an acceptable user name (it appears in audit records,
/// listings and `--user` bindings, so it is kept plain).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

impl Users {
    /// A user authority over `store` with `key`.
    pub fn new(store: Arc<dyn TokenStore>, key: ServerKey) -> Users {
        Users { store, key, cache: Mutex::new((i64::MIN, Arc::new(Vec::new()))) }
    }

    /// Adds a user and returns its key, which is not kept anywhere.
    pub fn add(&self, name: &str, now: SystemTime) -> Result<NewUserKey, UserError> {
        if !valid_name(name) {
            return Err(UserError::BadName(name.to_owned()));
        }
        let key = generate().map_err(UserError::Random)?;
        let created_ms = crate::unix_ms(now);
        let record = UserRecord { name: name.to_owned(), mac: token::mac(&self.key, &key).to_vec(), created_ms };
        if !self.store.add_user(&record)? {
            return Err(UserError::Exists(name.to_owned()));
        }
        Ok(NewUserKey { name: name.to_owned(), key, created_ms })
    }

    /// Removes a user: its key stops working at once, also on a running server.
    pub fn remove(&self, name: &str) -> Result<(), UserError> {
        if self.store.remove_user(name)? { Ok(()) } else { Err(UserError::Unknown(name.to_owned())) }
    }

    /// Every user, by name.
    pub fn list(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.store.users()
    }

    /// The user whose key this is, or `None` for anything else (malformed,
    /// unknown, removed: the caller cannot tell them apart). The presented
    /// key's MAC is compared in constant time with every user's.
    pub fn authenticate(&self, presented: &SecretString) -> Result<Option<String>, StoreError> {
        let users = self.current()?;
        let k = presented.expose_secret();
        let well_formed = k.len() == KEY_LEN
            && k.starts_with(KEY_PREFIX)
            && k[KEY_PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric());
        if !well_formed {
            return Ok(None);
        }
        let mac = token::mac(&self.key, presented);
        let mut found = None;
        // No early exit: the time taken does not depend on which user matched.
        for u in users.iter() {
            if token::mac_eq(&u.mac, &mac) {
                found = Some(u.name.clone());
            }
        }
        Ok(found)
    }

    fn current(&self) -> Result<Arc<Vec<UserRecord>>, StoreError> {
        let version = self.store.data_version()?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != version {
            *cache = (version, Arc::new(self.store.users()?));
        }
        Ok(cache.1.clone())
    }
}

fn generate() -> std::io::Result<SecretString> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(KEY_LEN);
    out.push_str(KEY_PREFIX);
    let mut buf = [0u8; 64];
    while out.len() < KEY_LEN {
        token::random_bytes(&mut buf)?;
        for &b in &buf {
            // Rejection sampling: 248 = 4 × 62, so every character is equally likely.
            if b < 248 && out.len() < KEY_LEN {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    Ok(SecretString::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn users(dir: &std::path::Path) -> Users {
        let store: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(&dir.join("mcpsec.db")).unwrap());
        Users::new(store, ServerKey::from_bytes([7; 32]))
    }

    #[test]
    fn a_key_authenticates_its_user_until_removed_even_through_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let server = users(dir.path());
        let cli = users(dir.path());
        let alice = cli.add("alice", SystemTime::now()).unwrap();
        let bob = cli.add("bob", SystemTime::now()).unwrap();
        assert!(alice.key.expose_secret().starts_with("mcpsu_"));
        assert_eq!(alice.key.expose_secret().len(), KEY_LEN);
        assert_eq!(server.authenticate(&alice.key).unwrap().as_deref(), Some("alice"));
        assert_eq!(server.authenticate(&bob.key).unwrap().as_deref(), Some("bob"));
        cli.remove("alice").unwrap();
        assert_eq!(server.authenticate(&alice.key).unwrap(), None, "removal takes effect at once");
        assert_eq!(server.authenticate(&bob.key).unwrap().as_deref(), Some("bob"));
        assert!(matches!(cli.remove("alice"), Err(UserError::Unknown(_))));
    }

    #[test]
    fn wrong_malformed_and_foreign_keys_are_refused_alike() {
        let dir = tempfile::tempdir().unwrap();
        let u = users(dir.path());
        let alice = u.add("alice", SystemTime::now()).unwrap();
        let mut wrong = alice.key.expose_secret().to_owned();
        wrong.replace_range(10..11, if &wrong[10..11] == "a" { "b" } else { "a" });
        for k in [wrong.as_str(), "", "mcpsu_", "Bearer x", &alice.key.expose_secret()[..KEY_LEN - 1]] {
            assert_eq!(u.authenticate(&SecretString::from(k.to_owned())).unwrap(), None, "{k}");
        }
        // The same key under another server key is not a key here.
        let other = Users::new(
            Arc::new(SqliteStore::open(&dir.path().join("mcpsec.db")).unwrap()),
            ServerKey::from_bytes([8; 32]),
        );
        assert_eq!(other.authenticate(&alice.key).unwrap(), None);
    }

    #[test]
    fn names_are_checked_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let u = users(dir.path());
        for bad in ["", "-x", "a b", "a/b", "ä", &"x".repeat(65)] {
            assert!(matches!(u.add(bad, SystemTime::now()), Err(UserError::BadName(_))), "{bad}");
        }
        u.add("ci-bot@host.1", SystemTime::now()).unwrap();
        assert!(matches!(u.add("ci-bot@host.1", SystemTime::now()), Err(UserError::Exists(_))));
        let k = u.add("carol", SystemTime::now()).unwrap();
        assert!(!format!("{k:?}").contains(k.key.expose_secret()));
    }
}
