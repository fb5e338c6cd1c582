//! Record intent: a mutating call's intent is durable in the audit log
//! before it acts. Only an authorized call gets that far.

use mcpsec_audit::Outcome;
use mcpsec_core::Capability;

use super::authorize::Authorized;
use super::ending::{Facts, Stop, audit_refusal, error_result};
use super::resolve::Resolved;
use crate::server::McpsecServer;

/// Proof that a call may act as far as the audit log goes: the receipt of
/// its durable intent record (a mutating call), or none needed (a read).
/// Only [`record_intent`](McpsecServer::record_intent) makes one, after the
/// audit append; [`execute`](McpsecServer::execute) needs one.
pub(crate) struct Intent {
    seq: Option<u64>,
}

impl Intent {
    /// The seq of the intent record (`None`: a read, which needs none).
    /// Undo keys what a call keeps by it.
    pub(crate) fn seq(&self) -> Option<u64> {
        self.seq
    }
}

impl McpsecServer {
    /// Records the intent of a call that may change something (any
    /// capability but `read_files`), durably, before it acts. If it
    /// cannot be written the call is refused, unrecorded (fail closed).
    pub(crate) async fn record_intent(
        &self,
        tool: &Resolved<'_>,
        authorized: &Authorized,
        facts: &mut Facts,
    ) -> Result<Intent, Stop> {
        if authorized.capability() == Capability::ReadFiles {
            return Ok(Intent { seq: None });
        }
        match self.inner.audit.append(self.call_record(tool.name(), facts, Outcome::Pending)).await {
            Ok(receipt) => {
                facts.intent = Some(receipt.seq);
                Ok(Intent { seq: Some(receipt.seq) })
            }
            Err(e) => Err(Stop::Answer(Ok(error_result(audit_refusal(&e)).into()))),
        }
    }
}
