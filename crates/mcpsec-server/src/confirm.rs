//! `confirm` mode: a human confirms this exact call through MCP elicitation.
//!
//! - Protocol 2025-11-25 and earlier: an `elicitation/create` request to the
//!   client while the call waits.
//! - Protocol 2026-07-28 (no server-to-client requests): the call returns an
//!   input-required result holding a form elicitation and request state
//!   sealed with a key derived from `secret.key` (HMAC-SHA-256). The state is
//!   bound to the principal, the tool and a digest of the arguments, expires
//!   after five minutes, and carries a nonce that is spent in the token
//!   database on first use: a replayed, altered or transplanted state is
//!   refused.
//! - A client that supports neither gets the capability-token instructions.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcpsec_caps::{Tokens, unix_ms};
use mcpsec_core::units::hex;
use rmcp::RoleServer;
use rmcp::model::{
    ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction, InputRequest, InputRequests,
    InputRequiredResult, InputResponses, JsonObject, ProtocolVersion, RequestStateCodec, SealOptions,
};
use rmcp::service::RequestContext;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a sealed confirmation request stays valid.
pub const CONFIRM_TTL: Duration = Duration::from_secs(300);
/// How long a 2025-11-25 client has to answer.
const LEGACY_TIMEOUT: Duration = Duration::from_secs(300);
/// The key of our request in the input-request map.
const KEY: &str = "mcpsec_confirm";

/// The call to confirm.
pub(crate) struct Pending<'a> {
    pub tool: &'a str,
    pub capability: mcpsec_core::Capability,
    pub user: &'a str,
    /// The arguments, without the capability token.
    pub args: &'a JsonObject,
    pub path_hint: Option<&'a str>,
}

/// What happened.
pub(crate) enum Confirmation {
    /// A human confirmed this call.
    Granted,
    /// Ask the client (protocol 2026-07-28).
    Ask(InputRequiredResult),
    /// Refused: `message` for the caller, `reason` for the audit log.
    Refused { message: String, reason: String, declined: bool },
    /// The client cannot ask a human: fall back to the token instructions.
    Unsupported,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    nonce: String,
    tool: String,
}

/// Seals and opens confirmation state; spends nonces.
pub(crate) struct Confirmer {
    codec: RequestStateCodec,
    tokens: Arc<Tokens>,
}

impl std::fmt::Debug for Confirmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Confirmer([key redacted])")
    }
}

impl Confirmer {
    pub(crate) fn new(tokens: Arc<Tokens>) -> Confirmer {
        let key = tokens.key().derive("mcpsec request-state v1");
        let codec = RequestStateCodec::new_unchecked(key.expose_secret().as_slice());
        Confirmer { codec, tokens }
    }

    /// What the state is bound to: the principal, the tool and the
    /// arguments (a digest of their canonical JSON).
    fn binding(call: &Pending<'_>) -> Vec<u8> {
        let args = serde_json::to_vec(call.args).unwrap_or_default();
        let digest = Sha256::digest(&args);
        format!("mcpsec-confirm-v1\0{}\0{}\0{}", call.user, call.tool, hex(&digest)).into_bytes()
    }

    fn form(call: &Pending<'_>) -> ElicitRequestParams {
        let target = call.path_hint.map(|p| format!(" on `{p}`")).unwrap_or_default();
        let args = serde_json::to_string(&mcpsec_audit::summarize_args(call.args)).unwrap_or_default();
        ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: format!(
                "mcpsec: allow `{}`{target}? It needs the capability {}. Arguments: {args}. \
                 Accept to allow this one call; decline to refuse it.",
                call.tool, call.capability
            ),
            requested_schema: serde_json::from_value(serde_json::json!({ "type": "object", "properties": {} }))
                .unwrap_or_else(|_| unreachable!("a constant, valid schema")),
        }
    }

    /// Confirms `call`, asking the human the way the client's protocol allows.
    pub(crate) async fn confirm(
        &self,
        call: &Pending<'_>,
        context: &RequestContext<RoleServer>,
        request_state: Option<&str>,
        responses: Option<&InputResponses>,
    ) -> Confirmation {
        let modern = context.protocol_version().is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        let can_elicit = context.client_capabilities().is_some_and(|c| c.elicitation.is_some());
        if modern {
            return match request_state {
                None if can_elicit => self.ask(call),
                None => Confirmation::Unsupported,
                Some(state) => self.answer(call, state, responses),
            };
        }
        if !can_elicit {
            return Confirmation::Unsupported;
        }
        let request = Self::form(call);
        match context.peer.create_elicitation_with_timeout(request, Some(LEGACY_TIMEOUT)).await {
            Ok(result) => decide(result),
            Err(e) => Confirmation::Refused {
                message: "refused: the confirmation could not be obtained from the client".into(),
                reason: format!("elicitation failed: {e}"),
                declined: false,
            },
        }
    }

    /// The refusal when the store that keeps confirmations' nonces cannot
    /// be read: asking the human would only lead to a refused answer.
    fn store_failed(call: &Pending<'_>, e: &dyn std::fmt::Display) -> Confirmation {
        tracing::error!("confirming a call: {e}");
        Confirmation::Refused {
            message: format!(
                "refused: calling `{}` needs a human confirmation, and the token database that records \
                 confirmations could not be read; {}",
                call.tool,
                mcpsec_caps::STORE_REMEDY
            ),
            reason: format!("nonce store failed: {e}"),
            declined: false,
        }
    }

    fn ask(&self, call: &Pending<'_>) -> Confirmation {
        // The answer's nonce goes into the store: check it can be used
        // before a human is asked (it is opened at its first use).
        if let Err(e) = self.tokens.store().data_version() {
            return Self::store_failed(call, &e);
        }
        let mut nonce = [0u8; 16];
        if rustix::rand::getrandom(&mut nonce, rustix::rand::GetRandomFlags::empty()).map_or(true, |n| n < 16) {
            return Confirmation::Refused {
                message: "refused: no randomness for the confirmation".into(),
                reason: "getrandom failed".into(),
                declined: false,
            };
        }
        let payload = Sealed { nonce: hex(&nonce), tool: call.tool.to_owned() };
        let binding = Self::binding(call);
        let sealed =
            match self.codec.seal_json_with(&payload, &SealOptions::new().associated_data(&binding).ttl(CONFIRM_TTL)) {
                Ok(s) => s,
                Err(e) => {
                    return Confirmation::Refused {
                        message: "refused: the confirmation request could not be prepared".into(),
                        reason: format!("sealing request state: {e}"),
                        declined: false,
                    };
                }
            };
        let mut requests = InputRequests::new();
        requests.insert(KEY.to_owned(), InputRequest::Elicitation(ElicitRequest::new(Self::form(call))));
        Confirmation::Ask(InputRequiredResult::new(Some(requests), Some(sealed)))
    }

    fn answer(&self, call: &Pending<'_>, state: &str, responses: Option<&InputResponses>) -> Confirmation {
        let refused = |reason: &str| Confirmation::Refused {
            message: format!(
                "refused: calling `{}`: the confirmation does not match this call (altered, replayed or expired); \
                 call the tool again to be asked afresh",
                call.tool
            ),
            reason: reason.to_owned(),
            declined: false,
        };
        let binding = Self::binding(call);
        let payload: Sealed = match self.codec.open_json_with(state, &binding) {
            Ok(p) => p,
            Err(e) => return refused(&format!("request state rejected: {e}")),
        };
        if payload.tool != call.tool {
            return refused("request state names another tool");
        }
        let now = SystemTime::now();
        let expires = unix_ms(now + CONFIRM_TTL);
        match self.tokens.store().use_nonce(&payload.nonce, expires, unix_ms(now)) {
            Ok(true) => {}
            Ok(false) => return refused("request state replayed (its nonce was used before)"),
            Err(e) => return Self::store_failed(call, &e),
        }
        let Some(value) = responses.and_then(|r| r.get(KEY)) else {
            return refused("no answer to the confirmation in inputResponses");
        };
        match serde_json::from_value::<ElicitResult>(value.clone()) {
            Ok(result) => decide(result),
            Err(e) => refused(&format!("the confirmation answer is not an elicitation result: {e}")),
        }
    }
}

fn decide(result: ElicitResult) -> Confirmation {
    match result.action {
        ElicitationAction::Accept => Confirmation::Granted,
        action => Confirmation::Refused {
            message: "refused: the human did not confirm the call".into(),
            reason: format!(
                "confirmation {}",
                if action == ElicitationAction::Decline { "declined" } else { "cancelled" }
            ),
            declined: true,
        },
    }
}
