//! Record the ending: how a call ended, recorded, then answered; and the
//! refusals of the stages before it.

use std::time::Instant;

use mcpsec_audit::{EventKind, Outcome, Record};
use rmcp::ErrorData;
use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock, JsonObject};

use crate::server::McpsecServer;
use mcpsec_core::Capability;

/// How one call ended, before it becomes a tool result and an audit event.
pub(crate) enum Ending {
    Ok(CallToolResult),
    Denied(String),
    RateLimited(String),
    Invalid(String),
    Error(String),
}

/// What the audit record of a call carries besides its ending.
#[derive(Default)]
pub(crate) struct Facts {
    pub(crate) capability: Option<mcpsec_core::Capability>,
    pub(crate) args: Option<serde_json::Value>,
    pub(crate) intent: Option<u64>,
    pub(crate) token_id: Option<String>,
    pub(crate) token_fp: Option<String>,
    /// A more precise reason than the caller is told (e.g. why a token was refused).
    pub(crate) audit_reason: Option<String>,
    /// Extra audit details (instruction-like content found in the result).
    pub(crate) details: Option<serde_json::Value>,
}

impl Facts {
    /// The facts of a call known once its tool is: the capability, and
    /// the arguments summarised once.
    pub(crate) fn of(capability: Capability, args: &JsonObject) -> Facts {
        Facts { capability: Some(capability), args: Some(mcpsec_audit::summarize_args(args)), ..Facts::default() }
    }
}

/// Why a call stopped before its tool was known (admit, resolve): the
/// record to write, if any, and the answer once it is written.
pub(crate) struct Early {
    pub(crate) record: Option<Record>,
    pub(crate) answer: Result<CallToolResponse, ErrorData>,
}

impl Early {
    /// A refusal recorded with its message as the reason.
    pub(crate) fn refused(mut record: Record, message: String) -> Early {
        record.reason = Some(message.clone());
        Early { record: Some(record), answer: Ok(error_result(message).into()) }
    }

    /// A JSON-RPC error, nothing (more) to record.
    pub(crate) fn answer(e: ErrorData) -> Early {
        Early { record: None, answer: Err(e) }
    }
}

/// Why a call stopped once its tool was known (authorize, record intent).
pub(crate) enum Stop {
    /// An ending, recorded with the call's facts and answered.
    End(Ending),
    /// An answer with no ending of its own to record: a question to the
    /// human (confirmation), or a record that could not be written.
    Answer(Result<CallToolResponse, ErrorData>),
}

impl McpsecServer {
    /// Records a call refused before its tool was known, then answers it
    /// (if the record cannot be written, the answer says so).
    pub(crate) async fn answer_early(&self, early: Early) -> Result<CallToolResponse, ErrorData> {
        if let Some(r) = early.record
            && let Err(e) = self.inner.audit.append(r).await
        {
            return Ok(error_result(audit_refusal(&e)).into());
        }
        early.answer
    }

    /// Records how a call ended and turns the ending into its tool result.
    pub(crate) async fn finish(
        &self,
        name: &str,
        facts: Facts,
        ending: Ending,
        started: Instant,
    ) -> Result<CallToolResult, ErrorData> {
        let (outcome, result) = match ending {
            // An upstream's own error result.
            Ending::Ok(r) if r.is_error == Some(true) => (Outcome::Error, r),
            Ending::Ok(r) => (Outcome::Ok, r),
            Ending::Denied(m) => (Outcome::Denied, error_result(m)),
            Ending::RateLimited(m) => (Outcome::RateLimited, error_result(m)),
            Ending::Invalid(m) => (Outcome::Invalid, error_result(m)),
            Ending::Error(m) => (Outcome::Error, error_result(m)),
        };
        let mut r = self.call_record(name, &facts, outcome);
        r.intent = facts.intent;
        r.details = facts.details;
        let first_text = result.content.first().and_then(|c| c.as_text()).map(|t| t.text.as_str());
        match outcome {
            Outcome::Ok => r.result = Some(first_text.map(|t| summary(t, 200)).unwrap_or_default()),
            _ => r.reason = facts.audit_reason.or_else(|| first_text.map(str::to_owned)),
        }
        r.duration_us = Some(started.elapsed().as_micros() as u64);
        match self.inner.audit.append(r).await {
            Ok(_) => Ok(result),
            Err(e) if facts.intent.is_some() && outcome == Outcome::Ok => Ok(error_result(format!(
                "{}; the change itself was made (its intent is audit record {})",
                audit_refusal(&e),
                facts.intent.unwrap_or_default()
            ))),
            Err(e) => Ok(error_result(audit_refusal(&e))),
        }
    }

    /// A record of this server's principal and session; every record the
    /// pipeline writes starts here.
    pub(crate) fn base(&self, event: EventKind, tool: Option<&str>, outcome: Outcome) -> Record {
        let mut r = Record::new(event);
        r.tool = tool.map(str::to_owned);
        r.user = Some(self.principal().name().to_owned());
        r.session = Some(self.inner.session.clone());
        r.outcome = Some(outcome);
        r
    }

    /// A tool-call record carrying the call's facts (arguments already
    /// summarised once, capability, token).
    pub(crate) fn call_record(&self, tool: &str, facts: &Facts, outcome: Outcome) -> Record {
        let mut r = self.base(EventKind::ToolCall, Some(tool), outcome);
        r.args.clone_from(&facts.args);
        r.capability = facts.capability.map(|c| c.as_str().to_owned());
        r.token_id.clone_from(&facts.token_id);
        r.token_fp.clone_from(&facts.token_fp);
        r
    }

    /// The record of a call that ended before its tool was known or run.
    pub(crate) fn early_record(
        &self,
        tool: &str,
        args: &rmcp::model::JsonObject,
        outcome: Outcome,
        started: Instant,
    ) -> Record {
        let mut r = self.base(EventKind::ToolCall, Some(tool), outcome);
        r.args = Some(mcpsec_audit::summarize_args(args));
        r.duration_us = Some(started.elapsed().as_micros() as u64);
        r
    }
}

/// The first `max` characters of `text`.
fn summary(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => text[..i].to_owned(),
        None => text.to_owned(),
    }
}

pub(crate) fn audit_refusal(e: &mcpsec_audit::AuditError) -> String {
    format!(
        "refused: the call could not be recorded in the audit log ({e}), and mcpsec does not act without a record. \
         The operator can check the disk and the log with `mcpsec audit verify`"
    )
}

pub(crate) fn error_result(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}
