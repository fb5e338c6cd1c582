//! Execute: the built-in tool's execute step, or the upstream's call, and
//! what its result is: data marked untrusted, scanned for instructions.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};

use super::authorize::Authorized;
use super::crash::crashed;
use super::ending::{Ending, Facts};
use super::intent::Intent;
use super::resolve::{Found, Resolved, static_name};
use crate::error::ToolError;
use crate::server::McpsecServer;
use crate::tools::Call;

/// The `_meta` key that marks a result as untrusted data.
pub(crate) const UNTRUSTED_META: &str = "dev.mcpsec/untrusted";

/// How a tool's results are treated as untrusted data.
struct Untrusted {
    /// The `source` of the `_meta` marking (`filesystem`, `process`, `upstream:NAME`).
    source: std::borrow::Cow<'static, str>,
    /// Whether the text is sanitised too (an upstream's results).
    sanitize: bool,
}

impl McpsecServer {
    /// Runs the call: the built-in tool's execute step — confined to the
    /// token's paths, checked by the path guard on the resolved paths
    /// during the operation — or the upstream's tool. It needs the call
    /// authorized and its intent recorded. A result that acted on nothing
    /// gives a reserved token use back.
    pub(crate) async fn execute(
        &self,
        tool: &Resolved<'_>,
        args: JsonObject,
        authorized: Authorized,
        intent: Intent,
        facts: &mut Facts,
    ) -> Ending {
        let name = tool.name();
        let seq = intent.seq();
        let (result, untrusted, kept) = match &tool.found {
            Found::Builtin(spec, ctx) => {
                let tool = static_name(spec);
                // The call's own context: the sandbox confined to the
                // token's paths, the intent undo keys what it keeps by, and
                // a place for what it kept.
                let call = Call::new((*ctx).clone(), self.principal().clone(), tool, authorized.scope().cloned(), seq);
                let exec = spec.exec;
                let run = move || {
                    mcpsec_core::failpoint::panic_if_armed("panic-in-tool", tool);
                    let result = exec(&call, args);
                    (result, call.into_kept())
                };
                // A panic on the blocking pool ends here; one on the runtime
                // thread is caught by `call_tool`. Either way: this call
                // fails, the server goes on.
                let (result, kept) = if spec.blocking {
                    tokio::task::spawn_blocking(run)
                        .await
                        .unwrap_or_else(|_| (Err(ToolError::Failed(crashed(tool))), None))
                } else {
                    run()
                };
                let source = if tool == "execute_command" { "process" } else { "filesystem" };
                (result, spec.untrusted.then_some(Untrusted { source: source.into(), sanitize: false }), kept)
            }
            Found::Upstream(up, t) => {
                let source = format!("upstream:{}", up.name()).into();
                (up.call(t, args).await, Some(Untrusted { source, sanitize: true }), None)
            }
        };
        if let Some(kept) = kept {
            facts.details = Some(serde_json::json!({ "undo": kept }));
        }
        if matches!(&result, Err(e) if e.changed_nothing()) {
            self.return_use(authorized.accepted(), facts);
        }
        match result {
            Ok(r) => match untrusted {
                Some(u) => self.mark_untrusted(name, &u, r, facts),
                None => Ending::Ok(r),
            },
            Err(ToolError::Guard(e)) if e.is_refusal() => Ending::Denied(e.to_string()),
            Err(ToolError::Refused(m)) => Ending::Denied(m),
            Err(e @ (ToolError::Invalid { .. } | ToolError::Mismatch { .. })) => Ending::Invalid(e.to_string()),
            Err(e) => Ending::Error(e.to_string()),
        }
    }

    /// Marks a result as untrusted data (`_meta`), and scans its text for
    /// instructions aimed at the model: `warn` puts a warning block first,
    /// `block` refuses the call; either way the findings go to the audit log.
    ///
    /// Content from an upstream server is also sanitised (terminal escapes,
    /// invisible Unicode) once scanned, so the findings still name them.
    fn mark_untrusted(&self, tool: &str, how: &Untrusted, mut result: CallToolResult, facts: &mut Facts) -> Ending {
        use mcpsec_core::scan;
        let mut findings = Vec::new();
        let scanning = self.inner.injection != mcpsec_core::InjectionMode::Off;
        if how.sanitize {
            // From an upstream: every string of the result, not only text
            // blocks (embedded resources, links, structuredContent, its
            // `_meta`), is scanned and then sanitised; only the binary
            // payloads of image, audio and blob blocks are left alone.
            let checked = crate::gateway::scan_and_sanitize_result(result, &mut |s| {
                if scanning {
                    findings.extend(scan::scan(s));
                }
            });
            let Some(checked) = checked else {
                return Ending::Error("the upstream's result could not be checked; it was not passed on".into());
            };
            result = checked;
        } else if scanning {
            for block in &result.content {
                if let Some(t) = block.as_text() {
                    findings.extend(scan::scan(&t.text));
                }
            }
        }
        let flags = scan::flags(&findings);
        let mut marking = serde_json::json!({ "source": how.source.as_ref(), "tool": tool });
        if !flags.is_empty() {
            marking["flags"] = serde_json::json!(flags);
            let details = facts.details.get_or_insert_with(|| serde_json::json!({}));
            details["injection"] = serde_json::json!(flags);
        }
        let mut meta = result.meta.take().unwrap_or_default();
        meta.insert(UNTRUSTED_META.to_owned(), marking);
        result.meta = Some(meta);
        if findings.is_empty() {
            return Ending::Ok(result);
        }
        let target = facts
            .args
            .as_ref()
            .and_then(|a| a.get("path").and_then(|p| p.as_str()).map(str::to_owned))
            .unwrap_or_else(|| tool.to_owned());
        match self.inner.injection {
            mcpsec_core::InjectionMode::Block => Ending::Denied(format!(
                "refused: `{target}` holds text that looks like instructions to a model ({}); [injection] mode is \
                 `block`. The operator can review the file, or set mode = \"warn\"",
                flags.join(", ")
            )),
            _ => {
                result.content.insert(0, ContentBlock::text(scan::warning(&target, &findings)));
                Ending::Ok(result)
            }
        }
    }
}
