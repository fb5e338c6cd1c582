//! A panic in a call ends that call, recorded, not the server.

use mcpsec_audit::{EventKind, Outcome};
use rmcp::ErrorData;
use rmcp::model::CallToolResponse;

use super::ending::{audit_refusal, error_result};
use crate::server::McpsecServer;

impl McpsecServer {
    /// Records a call whose pipeline panicked (an `error` record; what it
    /// did before is in the records it wrote, such as its intent) and
    /// answers it with an error. A use of a token it reserved stays spent.
    pub(crate) async fn record_crash(&self, name: &str) -> Result<CallToolResponse, ErrorData> {
        let shown = mcpsec_audit::redact::redact_and_truncate(name, 100);
        let message = crashed(&shown);
        let mut r = self.base(EventKind::ToolCall, Some(&shown), Outcome::Error);
        r.reason = Some(message.clone());
        match self.inner.audit.append(r).await {
            Ok(_) => Ok(error_result(message).into()),
            Err(e) => Ok(error_result(audit_refusal(&e)).into()),
        }
    }
}

/// What a call that panicked is told (and its record says).
pub(crate) fn crashed(tool: &str) -> String {
    format!(
        "`{tool}` failed: mcpsec hit an internal error (a bug) while handling this call, and stopped it; it may have \
         acted in part. The server goes on serving. The operator can find the details in the server's log"
    )
}

/// A future that turns a panic while polling it into `Err(())`, so that a
/// bug in one call ends that call rather than the task or the server. (A
/// panic inside the audit writer still ends the process: see mcpsec-audit.)
pub(crate) struct CatchUnwind<F>(pub(crate) std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}
