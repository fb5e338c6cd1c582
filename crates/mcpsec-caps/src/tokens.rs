//! Granting and checking capability tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcpsec_core::Capability;
use secrecy::SecretString;

use crate::key::ServerKey;
use crate::store::{StoreError, TokenRecord, TokenStore};
use crate::token::{self, NewToken};

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What a human asks `mcpsec grant` for.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// The capability.
    pub capability: Capability,
    /// How long the token lives.
    pub ttl: Duration,
    /// Path globs (relative to a root) the resolved paths must match.
    pub paths: Vec<String>,
    /// How many calls it may authorize.
    pub uses: Option<u32>,
    /// The only user who may present it.
    pub user: Option<String>,
    /// A note for the listing.
    pub note: Option<String>,
}

/// Why a grant was refused.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The TTL is over the configured maximum.
    #[error("a {capability} token may live at most {max:?} ([tokens] max_ttl); {asked:?} was asked")]
    TtlTooLong {
        /// The capability.
        capability: Capability,
        /// The maximum.
        max: Duration,
        /// What was asked.
        asked: Duration,
    },
    /// A zero TTL or zero uses.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness.
    #[error("reading randomness: {0}")]
    Random(std::io::Error),
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its id.
    pub id: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// The path globs the call is confined to (empty: any path). The path
    /// guard enforces them on the resolved paths, during the operation.
    pub paths: Vec<String>,
    /// A use of a limited token was reserved for this call. The caller gives
    /// it back with [`Tokens::return_use`] when the call ends having acted on
    /// nothing (refused after authorization); otherwise it stays spent.
    pub reserved_use: bool,
}

/// A token that did not pass. The caller shows the model one generic
/// refusal whatever the reason; the reason goes to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejected {
    /// Why, for the operator (the audit log).
    pub reason: String,
    /// The token's id, when it named one.
    pub id: Option<String>,
    /// Its fingerprint, when it was well-formed.
    pub fingerprint: Option<String>,
    /// The token store failed (could not be opened or read): nothing is
    /// known about the token, so this is not the caller's failure.
    pub store_failed: bool,
}

/// The token authority: grants, checks, revokes. Shared by the server and
/// the CLI.
#[derive(Debug)]
pub struct Tokens {
    store: Arc<dyn TokenStore>,
    key: ServerKey,
    /// Records seen, valid while the store's data version is unchanged.
    cache: Mutex<(i64, HashMap<String, TokenRecord>)>,
}

impl Tokens {
    /// A token authority over `store` with `key`.
    pub fn new(store: Arc<dyn TokenStore>, key: ServerKey) -> Tokens {
        Tokens { store, key, cache: Mutex::new((i64::MIN, HashMap::new())) }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// The server key.
    pub fn key(&self) -> &ServerKey {
        &self.key
    }

    /// The users of the HTTP transport, in the same store, their keys MACed
    /// under a key derived from the server key (never the token MAC key).
    pub fn users(&self) -> crate::Users {
        crate::Users::new(self.store.clone(), self.key.derived_key("mcpsec user keys"))
    }

    /// Mints and stores a token; the token is returned once and never kept.
    pub fn grant(
        &self,
        req: &GrantRequest,
        max_ttl: Duration,
        now: SystemTime,
    ) -> Result<(NewToken, TokenRecord), GrantError> {
        if req.ttl.is_zero() {
            return Err(GrantError::Invalid("--ttl must be longer than 0".into()));
        }
        if req.ttl > max_ttl {
            return Err(GrantError::TtlTooLong { capability: req.capability, max: max_ttl, asked: req.ttl });
        }
        if req.uses == Some(0) {
            return Err(GrantError::Invalid("--uses must be at least 1".into()));
        }
        for p in &req.paths {
            mcpsec_core::validate_glob(p).map_err(|e| GrantError::Invalid(format!("--path {e}")))?;
        }
        let now_ms = unix_ms(now);
        // Ids are random; retry on the rare collision.
        for _ in 0..8 {
            let new = token::generate().map_err(GrantError::Random)?;
            let record = TokenRecord {
                id: new.id.clone(),
                mac: token::mac(&self.key, &new.token).to_vec(),
                capability: req.capability,
                created_ms: now_ms,
                expires_ms: now_ms.saturating_add(req.ttl.as_millis() as i64),
                paths: req.paths.clone(),
                uses_left: req.uses.map(i64::from),
                user: req.user.clone(),
                note: req.note.clone(),
                revoked_ms: None,
            };
            match self.store.insert(&record) {
                Ok(()) => return Ok((new, record)),
                Err(_) if self.store.get(&record.id)?.is_some() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(GrantError::Invalid("could not find a free token id".into()))
    }

    fn record(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let version = self.store.data_version()?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != version {
            cache.1.clear();
            cache.0 = version;
        }
        if let Some(r) = cache.1.get(id) {
            return Ok(Some(r.clone()));
        }
        let r = self.store.get(id)?;
        if let Some(r) = &r {
            cache.1.insert(id.to_owned(), r.clone());
        }
        Ok(r)
    }

    /// Checks a presented token for one use of `capability` by `user`. A
    /// limited token's use is reserved here, atomically, so two calls can
    /// never both take the last one ([`Accepted::reserved_use`]). The
    /// token's path globs come back in [`Accepted::paths`] for the path
    /// guard to enforce.
    pub fn check(
        &self,
        presented: &SecretString,
        capability: Capability,
        user: &str,
        now: SystemTime,
    ) -> Result<Accepted, Rejected> {
        let reject = |reason: String, id: Option<&str>, fp: Option<&str>| Rejected {
            reason,
            id: id.map(str::to_owned),
            fingerprint: fp.map(str::to_owned),
            store_failed: false,
        };
        let store_failed = |e: StoreError, id: &str, fp: &str| {
            tracing::error!("checking a capability token: {e}");
            Rejected { store_failed: true, ..reject(format!("the token store failed: {e}"), Some(id), Some(fp)) }
        };
        let id = token::parse(presented).map_err(|e| reject(e.to_string(), None, None))?;
        let fp = token::fingerprint(presented);
        let record = match self.record(id) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(reject("unknown token".into(), Some(id), Some(&fp))),
            Err(e) => return Err(store_failed(e, id, &fp)),
        };
        let mac = token::mac(&self.key, presented);
        if !token::mac_eq(&mac, &record.mac) {
            return Err(reject("unknown token (its secret does not match)".into(), Some(id), Some(&fp)));
        }
        let now_ms = unix_ms(now);
        let fail = |why: String| Err(reject(why, Some(id), Some(&fp)));
        if record.revoked_ms.is_some() {
            return fail("the token was revoked".into());
        }
        if record.expires_ms <= now_ms {
            return fail("the token expired".into());
        }
        if record.capability != capability {
            return fail(format!("the token grants {}, not {capability}", record.capability));
        }
        if let Some(bound) = &record.user
            && bound != user
        {
            return fail(format!("the token is bound to user `{bound}`"));
        }
        if record.uses_left.is_some() {
            match self.store.consume_use(id, now_ms) {
                Ok(true) => {}
                Ok(false) => return fail("the token has no uses left".into()),
                Err(e) => return Err(store_failed(e, id, &fp)),
            }
        }
        Ok(Accepted {
            id: id.to_owned(),
            fingerprint: fp,
            paths: record.paths,
            reserved_use: record.uses_left.is_some(),
        })
    }

    /// Gives back the use [`Tokens::check`] reserved for a call that was then
    /// refused before it acted (out of the token's paths, a protected path,
    /// invalid arguments, an intent record that could not be written). Never
    /// call it for a call that may have changed anything: that would allow
    /// more effects than uses. A store that fails keeps the use spent
    /// (fail closed).
    pub fn return_use(&self, accepted: &Accepted) -> Result<(), StoreError> {
        if !accepted.reserved_use {
            return Ok(());
        }
        self.store.return_use(&accepted.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn tokens() -> (tempfile::TempDir, Tokens) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("mcpsec.db")).unwrap();
        (dir, Tokens::new(Arc::new(store), ServerKey::from_bytes([9; 32])))
    }

    fn req(cap: Capability) -> GrantRequest {
        GrantRequest {
            capability: cap,
            ttl: Duration::from_secs(60),
            paths: vec![],
            uses: None,
            user: None,
            note: None,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn grant_then_check() {
        let (_d, t) = tokens();
        let now = SystemTime::now();
        let (new, rec) = t.grant(&req(Capability::DeleteFiles), HOUR, now).unwrap();
        assert_eq!(rec.id, new.id);
        let ok = t.check(&new.token, Capability::DeleteFiles, "alice", now).unwrap();
        assert_eq!(ok.id, new.id);
        let e = t.check(&new.token, Capability::WriteFiles, "alice", now).unwrap_err();
        assert!(e.reason.contains("grants delete_files"), "{e}");
        let later = now + Duration::from_secs(61);
        assert!(t.check(&new.token, Capability::DeleteFiles, "alice", later).unwrap_err().reason.contains("expired"));
        t.store().revoke(std::slice::from_ref(&new.id), unix_ms(now)).unwrap();
        assert!(t.check(&new.token, Capability::DeleteFiles, "alice", now).unwrap_err().reason.contains("revoked"));
    }

    #[test]
    fn scope_user_and_uses() {
        let (_d, t) = tokens();
        let now = SystemTime::now();
        let mut r = req(Capability::WriteFiles);
        r.paths = vec!["notes/**".into()];
        r.user = Some("alice".into());
        r.uses = Some(1);
        let (new, _) = t.grant(&r, HOUR, now).unwrap();
        let e = t.check(&new.token, Capability::WriteFiles, "bob", now).unwrap_err();
        assert!(e.reason.contains("bound to user"), "{e}");
        let ok = t.check(&new.token, Capability::WriteFiles, "alice", now).unwrap();
        assert_eq!(ok.paths, vec!["notes/**"]);
        let e = t.check(&new.token, Capability::WriteFiles, "alice", now).unwrap_err();
        assert!(e.reason.contains("no uses left"), "{e}");
    }

    #[test]
    fn ttl_limits_and_forgeries() {
        let (_d, t) = tokens();
        let now = SystemTime::now();
        let mut r = req(Capability::ExecuteShell);
        r.ttl = Duration::from_secs(600);
        assert!(matches!(t.grant(&r, Duration::from_secs(300), now), Err(GrantError::TtlTooLong { .. })));
        let (new, _) = t.grant(&req(Capability::ReadFiles), HOUR, now).unwrap();
        assert!(t.check(&new.token, Capability::ReadFiles, "a", now).is_ok());
        // The same id with another secret (and a valid checksum) is refused.
        let forged = token::with_id_and_fresh_secret(&new.id).unwrap();
        assert_eq!(token::parse(&forged).unwrap(), new.id, "the forgery names the granted token's id");
        let e = t.check(&forged, Capability::ReadFiles, "a", now).unwrap_err();
        assert_eq!(e.reason, "unknown token (its secret does not match)");
        assert_eq!(e.id.as_deref(), Some(new.id.as_str()));
        // Garbage of the right length is refused before any lookup.
        let garbage = SecretString::from(format!("{}{}", "mcps_", "x".repeat(57)));
        assert!(t.check(&garbage, Capability::ReadFiles, "a", now).unwrap_err().id.is_none());
    }

    #[test]
    fn a_returned_use_can_be_spent_again_and_only_once() {
        let (_d, t) = tokens();
        let now = SystemTime::now();
        let mut r = req(Capability::DeleteFiles);
        r.uses = Some(1);
        let (new, _) = t.grant(&r, HOUR, now).unwrap();
        let first = t.check(&new.token, Capability::DeleteFiles, "alice", now).unwrap();
        assert!(first.reserved_use);
        // While reserved, the last use is not there for anyone else.
        let e = t.check(&new.token, Capability::DeleteFiles, "alice", now).unwrap_err();
        assert!(e.reason.contains("no uses left"), "{e}");
        t.return_use(&first).unwrap();
        let second = t.check(&new.token, Capability::DeleteFiles, "alice", now).unwrap();
        assert!(second.reserved_use);
        assert!(t.check(&new.token, Capability::DeleteFiles, "alice", now).is_err(), "spent for good");
        // An unlimited token reserves nothing, and giving back changes nothing.
        let (unlimited, _) = t.grant(&req(Capability::DeleteFiles), HOUR, now).unwrap();
        let a = t.check(&unlimited.token, Capability::DeleteFiles, "alice", now).unwrap();
        assert!(!a.reserved_use);
        t.return_use(&a).unwrap();
        assert_eq!(t.store().get(&unlimited.id).unwrap().unwrap().uses_left, None);
    }
}
