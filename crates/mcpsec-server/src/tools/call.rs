//! What a built-in tool's execute step works with: the server's tools
//! ([`Ctx`]), and one call's own context ([`Call`]), passed to it as a
//! value rather than kept in a thread-local, so that work moved to another
//! thread keeps the call's scope and intent.

use std::sync::{Arc, OnceLock};

use mcpsec_core::{Capability, Principal};
use mcpsec_pathguard::{Sandbox, Scope};
use serde_json::Value;

use crate::error::ToolError;
use crate::tools::shell::Shell;
use crate::tools::undo::Undo;

/// What the built-in tools share: the sandbox, the program runner, the
/// trash.
#[derive(Debug)]
pub struct Ctx {
    /// The roots and the protected-path rules.
    pub sandbox: Sandbox,
    /// The program runner, when `[shell] allow` names programs.
    pub shell: Option<Shell>,
    /// The trash, when undo is on.
    pub undo: Option<Undo>,
}

/// One authorized call of a built-in tool, as its execute step sees it:
/// the sandbox confined to the token's paths, on whose behalf, which tool,
/// the seq of its intent record, and a place for what undo kept. The
/// pipeline makes one per call, after authorization and the intent record.
#[derive(Debug)]
pub struct Call {
    ctx: Arc<Ctx>,
    /// The sandbox as this call may use it: confined to its token's paths,
    /// whichever thread does the work.
    pub sandbox: Sandbox,
    principal: Principal,
    tool: &'static str,
    intent: Option<u64>,
    kept: OnceLock<Value>,
}

impl Call {
    /// The call of `tool` on behalf of `principal`, confined to `scope`
    /// (`None`: the roots), whose intent record is `intent` (`None`: a
    /// read, which has none). The pipeline makes one per call once it is
    /// authorized and its intent recorded; anything else that makes one
    /// (a benchmark floor) runs a tool outside the pipeline.
    pub fn new(
        ctx: Arc<Ctx>,
        principal: Principal,
        tool: &'static str,
        scope: Option<Arc<Scope>>,
        intent: Option<u64>,
    ) -> Call {
        Call { sandbox: ctx.sandbox.scoped(scope), ctx, principal, tool, intent, kept: OnceLock::new() }
    }

    /// The tool called.
    pub fn tool(&self) -> &'static str {
        self.tool
    }

    /// On whose behalf.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The seq of the call's intent record (`None` for a read).
    pub fn intent(&self) -> Option<u64> {
        self.intent
    }

    /// The program runner, when `[shell] allow` names programs.
    pub(crate) fn shell(&self) -> Option<&Shell> {
        self.ctx.shell.as_ref()
    }

    /// The undo of calls needing `capability`, unless it is off for them.
    pub(crate) fn undo_for(&self, capability: Capability) -> Option<&Undo> {
        self.ctx.undo.as_ref().filter(|u| u.keeps(capability))
    }

    /// Writes a file, keeping the one it replaces when undo is on.
    pub(crate) fn write(&self, path: &str, contents: &[u8]) -> Result<bool, ToolError> {
        match self.undo_for(Capability::WriteFiles) {
            Some(undo) => undo.write(self, path, contents),
            None => Ok(self.sandbox.write(path, contents)?),
        }
    }

    /// Notes what undo kept for this call (the `undo` details of its
    /// result record). A call keeps at most once; a second note is ignored.
    pub(crate) fn keep(&self, details: Value) {
        let _ = self.kept.set(details);
    }

    /// What undo kept for this call, if anything.
    pub(crate) fn into_kept(self) -> Option<Value> {
        self.kept.into_inner()
    }
}
