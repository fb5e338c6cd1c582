//! Resolve: the tool a call names, built in or offered by the upstream.

use std::sync::Arc;

use mcpsec_audit::Outcome;
use mcpsec_core::Capability;
use rmcp::ErrorData;

use super::Arrived;
use super::ending::Early;
use crate::gateway::Lookup;
use crate::server::McpsecServer;
use crate::tools::{Ctx, ToolSpec};

/// A built-in tool's name (always a `&'static str`: `builtin` names them
/// with literals).
pub(crate) fn static_name(spec: &ToolSpec) -> &'static str {
    match &spec.tool.name {
        std::borrow::Cow::Borrowed(n) => n,
        std::borrow::Cow::Owned(_) => "?",
    }
}

/// A tool found for a call: built in, or offered by the upstream.
pub(crate) enum Found<'a> {
    Builtin(&'a ToolSpec, &'a Arc<Ctx>),
    Upstream(&'a Arc<crate::gateway::Upstream>, crate::gateway::UpstreamTool),
}

/// The tool a call names, with the capability it needs.
pub(crate) struct Resolved<'a> {
    pub(crate) found: Found<'a>,
    pub(crate) capability: Capability,
}

impl Resolved<'_> {
    /// The tool's name in records and messages (an upstream's qualified).
    pub(crate) fn name(&self) -> &str {
        match &self.found {
            Found::Builtin(spec, _) => static_name(spec),
            Found::Upstream(_, t) => &t.qualified,
        }
    }
}

impl McpsecServer {
    /// Finds the tool a call names: a built-in one, else one the upstream
    /// offers. An unknown tool is a JSON-RPC error; one the upstream
    /// withholds (unpinned, changed) or could not be asked for is refused.
    pub(crate) async fn resolve(&self, call: &Arrived) -> Result<Resolved<'_>, Early> {
        let inner = &self.inner;
        let found = match (inner.tools.get(call.name()), &inner.ctx) {
            (Some(spec), Some(ctx)) => Found::Builtin(spec, ctx),
            _ => match &inner.upstream {
                Some(up) => match up.lookup(call.name(), &inner.authorizer).await {
                    Lookup::Offered(t) => Found::Upstream(up, t),
                    Lookup::Unknown => return Err(self.unknown_tool(call)),
                    Lookup::Withheld { qualified, message } => {
                        let r = self.early_record(&qualified, &call.args, Outcome::Denied, call.started);
                        return Err(Early::refused(r, message));
                    }
                    Lookup::Failed { qualified, message } => {
                        let r = self.early_record(&qualified, &call.args, Outcome::Error, call.started);
                        return Err(Early::refused(r, message));
                    }
                },
                None => return Err(self.unknown_tool(call)),
            },
        };
        let capability = match &found {
            Found::Builtin(spec, _) => spec.capability,
            Found::Upstream(_, t) => t.capability,
        };
        Ok(Resolved { found, capability })
    }

    /// The refusal of a call of a tool that does not exist: recorded, and
    /// answered with a JSON-RPC error.
    fn unknown_tool(&self, call: &Arrived) -> Early {
        // The name is the client's: it may hold a secret (or be huge),
        // and it goes into the log's `tool` field, the error and rmcp's
        // warning about the error, none of which the writer redacts.
        let shown = mcpsec_audit::redact::redact_and_truncate(call.name(), 100);
        let reason = format!("unknown tool `{shown}`");
        let mut r = self.early_record(&shown, &call.args, Outcome::Invalid, call.started);
        r.reason = Some(reason.clone());
        Early { record: Some(r), answer: Err(ErrorData::invalid_params(reason, None)) }
    }
}
