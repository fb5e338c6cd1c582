//! Authorization: may this principal exercise this capability now?
//!
//! This crate provides [`Authorizer`], the step of the guard pipeline that
//! turns the operator's [`Policy`] and a presented capability token into a
//! [`Decision`] for one call, and [`Tokens`], which grants and checks
//! capability tokens kept in a [`TokenStore`](store::TokenStore) (SQLite,
//! `mcpsec.db`, opened at once or at its first use by
//! [`LazyStore`](store::LazyStore)), keyed by `secret.key` ([`key::ServerKey`]). [`pins`] keeps
//! the approved definitions of upstream tools for `mcpsec proxy` (approved only
//! by hash, waiting ones bounded per upstream).
//!
//! # Guarantee
//!
//! Fail closed: only `allow`, or `token` with a token that passes every
//! check (MAC compared in constant time, not revoked, not expired, the
//! right capability, the right user, a use left — reserved atomically, and
//! given back with [`Tokens::return_use`] by a caller whose call then acted
//! on nothing) lets a call through. Every refusal of a token is the same generic message,
//! with the exact `mcpsec grant …` command to run; the precise reason goes
//! to the audit log. Failed checks are limited per principal, so tokens
//! cannot be guessed online. A store that cannot be read refuses every
//! token, says so and names `mcpsec doctor`, and is not counted as a
//! failed check. Tokens exist in memory only as
//! [`SecretString`]s; the store keeps their HMAC.
//!
//! # Non-goals
//!
//! Path scope is not checked here: the token's globs are returned in
//! [`Accepted::paths`] and enforced by the path guard on the resolved path
//! during the operation, so no symlink swap can slip between check and use.
//! Asking the human (`confirm` mode) is the server's job: this crate only
//! says [`Decision::Confirm`].
//!
//! **Architecture invariant:** the only crate that knows SQLite.
//!
//! ```
//! use std::time::SystemTime;
//! use mcpsec_caps::{Authorizer, Call, Decision};
//! use mcpsec_core::{Capability, Policy};
//!
//! let auth = Authorizer::new(Policy::default(), None);
//! let call = |capability| Call { capability, tool: "t", user: "alice", token: None, path_hint: None, now: SystemTime::now() };
//! assert!(matches!(auth.decide(&call(Capability::ReadFiles)), Decision::Allow(None)));
//! assert!(matches!(auth.decide(&call(Capability::WriteFiles)), Decision::Confirm));
//! assert!(matches!(auth.decide(&call(Capability::DeleteFiles)), Decision::Deny { .. }));
//! ```

pub mod key;
pub mod pins;
pub mod store;
pub mod token;
mod tokens;
pub mod users;

pub use tokens::{Accepted, GrantError, GrantRequest, Rejected, Tokens, unix_ms};
pub use users::{NewUserKey, UserError, Users};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mcpsec_core::{Capability, Mode, Policy, Refusal};
use secrecy::SecretString;

/// One call to authorize.
#[derive(Debug)]
pub struct Call<'a> {
    /// The capability the tool needs.
    pub capability: Capability,
    /// The tool, for messages.
    pub tool: &'a str,
    /// The principal.
    pub user: &'a str,
    /// The `capability_token` argument, if the call carried one.
    pub token: Option<&'a SecretString>,
    /// The path the call names, for the `--path` hint in the refusal.
    pub path_hint: Option<&'a str>,
    /// Now (injectable for tests).
    pub now: SystemTime,
}

/// The decision for one call.
#[derive(Debug)]
pub enum Decision {
    /// Go ahead; with the token that allowed it, if one did.
    Allow(Option<Accepted>),
    /// `confirm` mode without a token: a human must confirm this exact call
    /// (the server asks through MCP elicitation; without it, it refuses with
    /// [`Decision::Deny`]-like token instructions from [`Authorizer::needs_token`]).
    Confirm,
    /// Refused.
    Deny {
        /// What the caller is told.
        refusal: Refusal,
        /// What the audit log records (more precise, e.g. "the token expired").
        reason: String,
        /// The presented token's id and fingerprint, when well-formed.
        token: Option<(Option<String>, Option<String>)>,
        /// Refused by the failed-token-check limit.
        rate_limited: bool,
    },
}

/// How many failed token checks a principal may make per window before
/// further checks are refused outright (so tokens cannot be guessed online).
pub const FAILED_CHECKS_PER_WINDOW: u32 = 10;
/// The window of [`FAILED_CHECKS_PER_WINDOW`].
pub const FAILED_CHECKS_WINDOW: Duration = Duration::from_secs(60);

/// What the human can do when the token database cannot be read.
pub const STORE_REMEDY: &str = "a human runs `mcpsec doctor`, which checks the token database and says how to fix it";

/// Decides whether a capability may be exercised.
#[derive(Debug)]
pub struct Authorizer {
    policy: Policy,
    tokens: Option<Arc<Tokens>>,
    /// Failed token checks per user in the current window.
    failures: Mutex<HashMap<String, (SystemTime, u32)>>,
    max_failures: u32,
    failure_window: Duration,
}

impl Authorizer {
    /// An authorizer for `policy`; `tokens` is needed for the `token` mode
    /// (without it, `token` mode refuses everything: fail closed).
    pub fn new(policy: Policy, tokens: Option<Arc<Tokens>>) -> Self {
        Authorizer {
            policy,
            tokens,
            failures: Mutex::new(HashMap::new()),
            max_failures: FAILED_CHECKS_PER_WINDOW,
            failure_window: FAILED_CHECKS_WINDOW,
        }
    }

    /// Sets how many failed token checks a principal may make per window
    /// (`[rate_limit] failed_token_checks` and `window`).
    pub fn with_failed_check_limit(mut self, max: u32, window: Duration) -> Self {
        self.max_failures = max.max(1);
        self.failure_window = window;
        self
    }

    /// The policy it enforces.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether tools of `capability` are offered at all (`deny` hides them).
    pub fn is_offered(&self, capability: Capability) -> bool {
        self.policy.mode(capability) != Mode::Deny
    }

    /// Whether calls of `capability` take a `capability_token`.
    pub fn takes_token(&self, capability: Capability) -> bool {
        matches!(self.policy.mode(capability), Mode::Token | Mode::Confirm)
    }

    /// Decides one call.
    pub fn decide(&self, call: &Call<'_>) -> Decision {
        let what = match call.path_hint {
            Some(p) => format!("calling `{}` on `{p}`", call.tool),
            None => format!("calling `{}`", call.tool),
        };
        let capability = call.capability;
        let deny = |refusal: Refusal, reason: String, token, rate_limited| Decision::Deny {
            refusal,
            reason,
            token,
            rate_limited,
        };
        match self.policy.mode(capability) {
            Mode::Allow => Decision::Allow(None),
            Mode::Deny => {
                let r = Refusal::new(&what, format!("the capability `{capability}` is in mode `deny` in this server's policy"))
                    .with_remedy(format!(
                        "set `{capability} = \"token\"` (or \"allow\") under [policy] in the config file and restart the server"
                    ));
                let reason = r.why.clone();
                deny(r, reason, None, false)
            }
            Mode::Token | Mode::Confirm => {
                let grant = grant_command(capability, call.path_hint);
                let needs = |why: &str| {
                    Refusal::new(&what, format!("the capability `{capability}` needs a capability token, and {why}"))
                        .with_remedy(format!(
                            "a human runs `{grant}` in a terminal and passes the printed token as `capability_token`"
                        ))
                };
                let Some(token) = call.token else {
                    if self.policy.mode(capability) == Mode::Confirm {
                        return Decision::Confirm;
                    }
                    let r = needs("the call carried none");
                    return deny(r, "no capability token".into(), None, false);
                };
                if let Some(retry) = self.locked_out(call.user, call.now) {
                    let r = Refusal::new(
                        &what,
                        format!(
                            "too many failed capability token checks; token checks resume in {}s",
                            retry.as_secs().max(1)
                        ),
                    )
                    .with_remedy("wait, then present a valid token from `mcpsec grant`");
                    return deny(r, "failed token check limit reached".into(), None, true);
                }
                let Some(tokens) = &self.tokens else {
                    let r = needs("this server has no token store");
                    return deny(r, "no token store".into(), None, false);
                };
                match tokens.check(token, capability, call.user, call.now) {
                    Ok(accepted) => Decision::Allow(Some(accepted)),
                    Err(rejected) if rejected.store_failed => {
                        // Not the caller's failure, and nothing learned about
                        // the token: not counted, and said as it is.
                        let r = Refusal::new(
                            &what,
                            format!(
                                "the capability `{capability}` needs a capability token, and the token database \
                                 could not be read, so no token can be checked"
                            ),
                        )
                        .with_remedy(STORE_REMEDY);
                        deny(r, rejected.reason, Some((rejected.id, rejected.fingerprint)), false)
                    }
                    Err(rejected) => {
                        self.count_failure(call.user, call.now);
                        // One generic refusal whatever the reason: unknown,
                        // expired, revoked, used up, wrong capability, wrong user.
                        let r = needs("the token given is not valid for it");
                        deny(r, rejected.reason, Some((rejected.id, rejected.fingerprint)), false)
                    }
                }
            }
        }
    }

    /// The refusal for a call that needs a token (or a confirmation the
    /// client cannot give): says what to run.
    pub fn needs_token(&self, call: &Call<'_>, why: &str) -> Refusal {
        let what = match call.path_hint {
            Some(p) => format!("calling `{}` on `{p}`", call.tool),
            None => format!("calling `{}`", call.tool),
        };
        let grant = grant_command(call.capability, call.path_hint);
        Refusal::new(
            what,
            format!("the capability `{}` needs a capability token or a human confirmation, and {why}", call.capability),
        )
        .with_remedy(format!("a human runs `{grant}` in a terminal and passes the printed token as `capability_token`"))
    }

    /// The token authority, when there is one.
    pub fn tokens(&self) -> Option<&Arc<Tokens>> {
        self.tokens.as_ref()
    }

    fn locked_out(&self, user: &str, now: SystemTime) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (start, n) = failures.get(user)?;
        let elapsed = now.duration_since(*start).unwrap_or_default();
        (elapsed < self.failure_window && *n >= self.max_failures).then(|| self.failure_window - elapsed)
    }

    fn count_failure(&self, user: &str, now: SystemTime) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures.entry(user.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0).unwrap_or_default() >= self.failure_window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// The exact command a human runs to allow a call.
pub fn grant_command(capability: Capability, path: Option<&str>) -> String {
    let ttl = 60;
    match path {
        Some(p) => format!("mcpsec grant {capability} --ttl {ttl} --path '{}'", p.replace('\'', "'\\''")),
        None => format!("mcpsec grant {capability} --ttl {ttl}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(capability: Capability, token: Option<&'a SecretString>, now: SystemTime) -> Call<'a> {
        Call { capability, tool: "delete_file", user: "alice", token, path_hint: Some("notes/old.txt"), now }
    }

    #[test]
    fn allow_and_deny_modes() {
        let mut policy = Policy::default();
        policy.set(Capability::WriteFiles, Mode::Allow);
        policy.set(Capability::DeleteFiles, Mode::Deny);
        let auth = Authorizer::new(policy, None);
        let now = SystemTime::now();
        assert!(matches!(auth.decide(&call(Capability::WriteFiles, None, now)), Decision::Allow(None)));
        match auth.decide(&call(Capability::DeleteFiles, None, now)) {
            Decision::Deny { refusal, .. } => {
                let m = refusal.to_string();
                assert!(m.contains("delete_files") && m.contains("[policy]"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!auth.is_offered(Capability::ExecuteShell));
        // Confirm mode without a token asks for a confirmation.
        let auth = Authorizer::new(Policy::default(), None);
        assert!(matches!(auth.decide(&call(Capability::WriteFiles, None, now)), Decision::Confirm));
    }

    #[test]
    fn token_mode_refusals_say_what_to_run_and_failures_are_limited() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::SqliteStore::open(&dir.path().join("db")).unwrap();
        let tokens = Arc::new(Tokens::new(Arc::new(store), key::ServerKey::from_bytes([1; 32])));
        let mut policy = Policy::default();
        policy.set(Capability::DeleteFiles, Mode::Token);
        let auth = Authorizer::new(policy, Some(tokens.clone()));
        let now = SystemTime::now();
        let Decision::Deny { refusal, .. } = auth.decide(&call(Capability::DeleteFiles, None, now)) else { panic!() };
        let m = refusal.to_string();
        assert!(m.contains("mcpsec grant delete_files --ttl 60 --path 'notes/old.txt'"), "{m}");
        let req = GrantRequest {
            capability: Capability::DeleteFiles,
            ttl: Duration::from_secs(600),
            paths: vec![],
            uses: None,
            user: None,
            note: None,
        };
        let (good, _) = tokens.grant(&req, Duration::from_secs(3600), now).unwrap();
        assert!(matches!(
            auth.decide(&call(Capability::DeleteFiles, Some(&good.token), now)),
            Decision::Allow(Some(_))
        ));
        let bad = token::generate().unwrap().token;
        for _ in 0..FAILED_CHECKS_PER_WINDOW {
            let Decision::Deny { rate_limited, .. } = auth.decide(&call(Capability::DeleteFiles, Some(&bad), now))
            else {
                panic!()
            };
            assert!(!rate_limited);
        }
        // Now even the good token is not checked until the window passes.
        let Decision::Deny { rate_limited, .. } = auth.decide(&call(Capability::DeleteFiles, Some(&good.token), now))
        else {
            panic!()
        };
        assert!(rate_limited);
        let later = now + FAILED_CHECKS_WINDOW;
        assert!(matches!(
            auth.decide(&call(Capability::DeleteFiles, Some(&good.token), later)),
            Decision::Allow(Some(_))
        ));
    }
}
