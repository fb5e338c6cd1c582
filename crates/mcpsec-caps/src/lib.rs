//! Authorization: may this principal exercise this capability now?
//!
//! This crate provides [`Authorizer`], the step of the guard pipeline that
//! turns the operator's [`Policy`] into a decision for one call.
//!
//! Today it knows the two modes that need no state, `allow` and `deny`
//! (configuration refuses the others at start-up). Capability tokens, their
//! SQLite store and human confirmation land here next: that is why the
//! decision already goes through this crate rather than being read straight
//! off the policy by the server.
//!
//! # Guarantee
//!
//! [`Authorizer::authorize`] fails closed: anything other than an explicit
//! `allow` is a [`Refusal`] that names the capability, the mode and the
//! config key that would change it.
//!
//! # Non-goals
//!
//! **Architecture invariant:** no I/O of its own yet; when the token store
//! arrives, this is the only crate that knows SQLite.
//!
//! ```
//! use mcpsec_caps::Authorizer;
//! use mcpsec_core::{Capability, Policy};
//!
//! let auth = Authorizer::new(Policy::default());
//! assert!(auth.authorize(Capability::ReadFiles, "read `a.txt`").is_ok());
//! let refusal = auth.authorize(Capability::DeleteFiles, "delete `a.txt`").unwrap_err();
//! assert!(refusal.to_string().contains("delete_files"));
//! ```

use mcpsec_core::{Capability, Mode, Policy, Refusal};

/// Decides whether a capability may be exercised.
#[derive(Debug, Clone)]
pub struct Authorizer {
    policy: Policy,
}

impl Authorizer {
    /// An authorizer for `policy`.
    pub fn new(policy: Policy) -> Self {
        Authorizer { policy }
    }

    /// The policy it enforces.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether tools of `capability` are offered at all (`deny` hides them).
    pub fn is_offered(&self, capability: Capability) -> bool {
        self.policy.mode(capability) != Mode::Deny
    }

    /// Authorizes one use of `capability`; `what` describes the call for the
    /// refusal message (e.g. "delete `notes/old.txt`").
    pub fn authorize(&self, capability: Capability, what: &str) -> Result<(), Refusal> {
        match self.policy.mode(capability) {
            Mode::Allow => Ok(()),
            mode => Err(Refusal::new(
                what,
                format!("the capability `{capability}` is in mode `{mode}` in this server's policy"),
            )
            .with_remedy(format!(
                "set `{capability} = \"allow\"` under [policy] in the config file and restart the server"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_passes() {
        let mut policy = Policy::default();
        policy.set(Capability::WriteFiles, Mode::Allow);
        let auth = Authorizer::new(policy);
        assert!(auth.authorize(Capability::WriteFiles, "w").is_ok());
        for c in [Capability::DeleteFiles, Capability::ExecuteShell] {
            let r = auth.authorize(c, "x").unwrap_err();
            assert!(r.to_string().contains(c.as_str()));
            assert!(r.remedy.is_some());
            assert!(!auth.is_offered(c));
        }
    }
}
