//! The guard pipeline behind `tools/call`, one stage per module:
//!
//! ```text
//! admit ──▶ resolve ──▶ authorize ──▶ record intent ──▶ execute ──▶ record the ending
//! (rate      (the tool:   (policy, token,  (a durable        (built-in    (audit, then
//!  limits)    built in or  confirmation,    audit record:     tool or      the answer)
//!             upstream)    path scope)      an `Intent`)      upstream)
//! ```
//!
//! Each stage returns what the next one needs, and the order that matters
//! for security is held by types: [`execute`](McpsecServer::execute) takes
//! an [`Authorized`](authorize::Authorized), which only [`authorize`](McpsecServer::authorize)
//! makes, and an [`Intent`](intent::Intent), which only
//! [`record_intent`](McpsecServer::record_intent) makes (after the audit
//! append of a mutating call's intent). Acting without authorization, or
//! before the intent is durable, does not compile.
//!
//! A stage that refuses returns why: an [`Early`](ending::Early) before the tool is known
//! (admit, resolve), a [`Stop`] after. [`McpsecServer::pipeline`] records
//! and answers each in one place. From authorization on, a limited token's
//! use is reserved: every ending that acted on nothing gives it back
//! ([`McpsecServer::return_use`]); any other keeps it spent.

mod admit;
mod authorize;
pub(crate) mod confirm;
mod crash;
mod ending;
mod execute;
mod intent;
mod passthrough;
pub mod ratelimit;
mod resolve;

use std::time::Instant;

use rmcp::model::{CallToolRequestParams, CallToolResponse, JsonObject};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use secrecy::SecretString;

use crate::server::McpsecServer;
use crate::tools::TOKEN_ARG;

pub(crate) use crash::CatchUnwind;
use ending::{Ending, Facts, Stop};
use resolve::Resolved;

/// A `tools/call` as it arrives: its arguments with the token taken out
/// (the token never reaches the tool, the audit log or a message), the
/// token, and when the call started.
pub(crate) struct Arrived {
    /// The request, its arguments taken out.
    request: CallToolRequestParams,
    args: JsonObject,
    token: Option<SecretString>,
    started: Instant,
}

impl Arrived {
    fn new(mut request: CallToolRequestParams) -> Arrived {
        let started = Instant::now();
        let mut args = request.arguments.take().unwrap_or_default();
        let token = match args.remove(TOKEN_ARG) {
            Some(serde_json::Value::String(t)) => Some(SecretString::from(t)),
            Some(_) => Some(SecretString::from(String::new())),
            None => None,
        };
        Arrived { request, args, token, started }
    }

    /// The tool's name, as the client gave it.
    fn name(&self) -> &str {
        &self.request.name
    }
}

impl McpsecServer {
    /// The guard pipeline for one call. Every ending is recorded; if a
    /// record cannot be written the call is refused (fail closed).
    pub(crate) async fn pipeline(
        &self,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = Arrived::new(request);
        let started = call.started;
        let tool = match self.admit(&call).await {
            Ok(()) => self.resolve(&call).await,
            Err(refused) => Err(refused),
        };
        let tool = match tool {
            Ok(tool) => tool,
            Err(early) => return self.answer_early(early).await,
        };
        let mut facts = Facts::of(tool.capability, &call.args);
        let ending = match self.guard(call, &tool, &mut facts, context).await {
            Ok(ending) | Err(Stop::End(ending)) => ending,
            Err(Stop::Answer(answer)) => return answer,
        };
        self.finish(tool.name(), facts, ending, started).await.map(Into::into)
    }

    /// The stages of a call whose tool is known: authorize, record the
    /// intent, execute. Their ending is recorded by the caller.
    async fn guard(
        &self,
        call: Arrived,
        tool: &Resolved<'_>,
        facts: &mut Facts,
        context: &RequestContext<RoleServer>,
    ) -> Result<Ending, Stop> {
        let authorized = self.authorize(&call, tool, facts, context).await?;
        let intent = match self.record_intent(tool, &authorized, facts).await {
            Ok(intent) => intent,
            Err(refused) => {
                self.return_use(authorized.accepted(), facts);
                return Err(refused);
            }
        };
        Ok(self.execute(tool, call.args, authorized, intent, facts).await)
    }
}
