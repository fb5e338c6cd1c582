//! Authorize: the policy, then a capability token or a human's
//! confirmation, then the token's path scope.

use std::sync::Arc;
use std::time::SystemTime;

use mcpsec_audit::{EventKind, Outcome};
use mcpsec_caps::{Accepted, Decision};
use mcpsec_core::Capability;
use mcpsec_pathguard::Scope;
use rmcp::model::CallToolResponse;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

use super::Arrived;
use super::confirm::{self, Confirmation};
use super::ending::{Ending, Facts, Stop, audit_refusal};
use super::resolve::{Found, Resolved};
use crate::server::McpsecServer;

/// A call the policy allows: its capability, the token that allowed it
/// (if one did; a limited token's use is then reserved for this call), and
/// the paths that token confines it to. Only
/// [`authorize`](McpsecServer::authorize) makes one, and
/// [`execute`](McpsecServer::execute) needs one.
pub(crate) struct Authorized {
    capability: Capability,
    accepted: Option<Accepted>,
    scope: Option<Arc<Scope>>,
}

impl Authorized {
    /// The capability allowed.
    pub(crate) fn capability(&self) -> Capability {
        self.capability
    }

    /// The token that allowed the call, if one did.
    pub(crate) fn accepted(&self) -> Option<&Accepted> {
        self.accepted.as_ref()
    }

    /// The paths the call is confined to (`None`: the roots).
    pub(crate) fn scope(&self) -> Option<&Arc<Scope>> {
        self.scope.as_ref()
    }
}

impl McpsecServer {
    /// Decides whether the call may go ahead: the policy's mode for the
    /// tool's capability, then a capability token (`token`) or a human's
    /// confirmation (`confirm`), then the token's paths. Refused: a
    /// `denied` (or `rate_limited`, for a token's own limit) ending.
    pub(crate) async fn authorize(
        &self,
        call: &Arrived,
        tool: &Resolved<'_>,
        facts: &mut Facts,
        context: &RequestContext<RoleServer>,
    ) -> Result<Authorized, Stop> {
        let inner = &self.inner;
        let (name, capability, args) = (tool.name(), tool.capability, &call.args);
        // A proxied tool's arguments are the upstream's business: none is a
        // path mcpsec resolved, so none goes into a `--path` hint.
        let path_hint = match tool.found {
            Found::Builtin(..) => ["path", "source"].iter().find_map(|k| args.get(*k).and_then(|v| v.as_str())),
            Found::Upstream(..) => None,
        };
        let request = mcpsec_caps::Call {
            capability,
            tool: name,
            user: self.principal().name(),
            token: call.token.as_ref(),
            path_hint,
            now: SystemTime::now(),
        };
        let accepted = match inner.authorizer.decide(&request) {
            Decision::Allow(accepted) => accepted,
            Decision::Confirm => {
                let pending =
                    confirm::Pending { tool: name, capability, user: self.principal().name(), args, path_hint };
                let outcome = match &inner.confirmer {
                    Some(c) => {
                        let r = &call.request;
                        c.confirm(&pending, context, r.request_state.as_deref(), r.input_responses.as_ref()).await
                    }
                    None => Confirmation::Unsupported,
                };
                match outcome {
                    Confirmation::Granted => {
                        self.record_confirmation(name, facts, Outcome::Ok, "confirmed by the human")
                            .await
                            .map_err(|e| Stop::Answer(Err(e)))?;
                        None
                    }
                    Confirmation::Ask(ask) => return Err(Stop::Answer(Ok(CallToolResponse::InputRequired(ask)))),
                    Confirmation::Refused { message, reason, declined } => {
                        if declined {
                            self.record_confirmation(name, facts, Outcome::Denied, &reason)
                                .await
                                .map_err(|e| Stop::Answer(Err(e)))?;
                        }
                        facts.audit_reason = Some(reason);
                        return Err(Stop::End(Ending::Denied(message)));
                    }
                    Confirmation::Unsupported => {
                        let refusal =
                            inner.authorizer.needs_token(&request, "this client cannot ask a human to confirm");
                        facts.audit_reason = Some("confirmation unsupported by the client; no token".into());
                        return Err(Stop::End(Ending::Denied(refusal.to_string())));
                    }
                }
            }
            Decision::Deny { refusal, reason, token, rate_limited } => {
                if let Some((id, fp)) = token {
                    facts.token_id = id;
                    facts.token_fp = fp;
                }
                facts.audit_reason = Some(reason);
                let message = refusal.to_string();
                return Err(Stop::End(if rate_limited {
                    Ending::RateLimited(message)
                } else {
                    Ending::Denied(message)
                }));
            }
        };
        // From here on a limited token's use is reserved for this call: every
        // ending that acted on nothing gives it back (`return_use`), so a
        // refused call never spends one; any other ending keeps it spent.
        if let Some(a) = &accepted {
            facts.token_id = Some(a.id.clone());
            facts.token_fp = Some(a.fingerprint.clone());
        }
        let scope = match &accepted {
            Some(a) if !a.paths.is_empty() && matches!(tool.found, Found::Upstream(..)) => {
                // mcpsec resolves no path of a proxied tool, so a path scope
                // cannot be checked: refused rather than ignored.
                self.return_use(accepted.as_ref(), facts);
                let grant = mcpsec_caps::grant_command(capability, None);
                return Err(Stop::End(Ending::Denied(format!(
                    "refused: calling `{name}`: the capability token is limited to paths (`--path`), and mcpsec \
                     cannot check the paths of a tool of an upstream server. A human can grant a token without \
                     `--path` for it: `{grant}`"
                ))));
            }
            Some(a) if !a.paths.is_empty() => match Scope::new(&a.paths) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    self.return_use(accepted.as_ref(), facts);
                    let message = format!("refused: the capability token's paths are invalid: {e}");
                    return Err(Stop::End(Ending::Denied(message)));
                }
            },
            _ => None,
        };
        Ok(Authorized { capability, accepted, scope })
    }

    /// Gives back the use of a limited token that `accepted` reserved, for
    /// a call that ended having acted on nothing; the record says so. If
    /// the store fails the use stays spent (fail closed), and the record
    /// says that.
    pub(crate) fn return_use(&self, accepted: Option<&Accepted>, facts: &mut Facts) {
        let (Some(a), Some(tokens)) = (accepted, self.inner.authorizer.tokens()) else { return };
        if !a.reserved_use {
            return;
        }
        let said = match tokens.return_use(a) {
            Ok(()) => "returned: the call acted on nothing".to_owned(),
            Err(e) => {
                tracing::error!("giving back a capability token's use: {e}");
                format!("spent: the call acted on nothing, but the token store failed: {e}")
            }
        };
        let details = facts.details.get_or_insert_with(|| serde_json::json!({}));
        details["capability_use"] = serde_json::json!(said);
    }

    /// Records a human's answer to a confirmation (a `confirm` event).
    pub(crate) async fn record_confirmation(
        &self,
        tool: &str,
        facts: &Facts,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), ErrorData> {
        let mut r = self.base(EventKind::Confirm, Some(tool), outcome);
        r.args.clone_from(&facts.args);
        r.capability = facts.capability.map(|c| c.as_str().to_owned());
        r.reason = Some(reason.to_owned());
        self.inner.audit.append(r).await.map(|_| ()).map_err(|e| ErrorData::internal_error(audit_refusal(&e), None))
    }
}
