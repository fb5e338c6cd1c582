//! A gateway's resources and prompts: read-only, through a short pipeline
//! of their own (rate limit, policy, audit).

use std::time::Instant;

use mcpsec_audit::{Outcome, Record};
use rmcp::ErrorData;

use super::ending::audit_refusal;
use crate::server::McpsecServer;

impl McpsecServer {
    /// A gateway's read-only pass-through of the upstream's resources and
    /// prompts: rate-limited and audited like a call (`NAME/resources/read`,
    /// …), allowed only while `read_files` is `allow` (a request other than
    /// `tools/call` cannot carry a token or be confirmed), the answer
    /// sanitised. Refusals and failures are JSON-RPC errors.
    pub(crate) async fn passthrough<T, F, Fut>(
        &self,
        method: &str,
        args: rmcp::model::JsonObject,
        send: F,
    ) -> Result<T, ErrorData>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce(rmcp::Peer<rmcp::RoleClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, rmcp::ServiceError>>,
    {
        let inner = &self.inner;
        let Some(up) = &inner.upstream else {
            return Err(ErrorData::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                format!("{method} is not offered"),
                None,
            ));
        };
        let started = Instant::now();
        let name = format!("{}/{method}", up.name());
        let capability = mcpsec_core::Capability::ReadFiles;
        let record = |outcome: Outcome, reason: Option<String>| {
            let mut r = self.early_record(&name, &args, outcome, started);
            r.capability = Some(capability.as_str().to_owned());
            r.reason = reason;
            r
        };
        let refuse = |r: Record, message: String| async move {
            match inner.audit.append(r).await {
                Ok(_) => Err(ErrorData::invalid_request(message, None)),
                Err(e) => Err(ErrorData::internal_error(audit_refusal(&e), None)),
            }
        };
        if let Err(refused) = inner.limiter.check(self.principal().name(), &name) {
            let message = format!(
                "refused: rate limit for user `{}`; retry in {:.1}s",
                self.principal().name(),
                refused.retry_after.as_secs_f64().max(0.001)
            );
            return refuse(record(Outcome::RateLimited, Some(message.clone())), message).await;
        }
        if inner.authorizer.policy().mode(capability) != mcpsec_core::Mode::Allow {
            let message = format!(
                "refused: {method} of the upstream `{}` needs `read_files = \"allow\"` under [policy]: it cannot carry \
                 a capability token or be confirmed. The operator can change the policy and restart the gateway",
                up.name()
            );
            return refuse(record(Outcome::Denied, Some(message.clone())), message).await;
        }
        match up.forward(method, send).await {
            Ok(answer) => {
                let r = record(Outcome::Ok, None);
                inner.audit.append(r).await.map_err(|e| ErrorData::internal_error(audit_refusal(&e), None))?;
                Ok(answer)
            }
            Err(message) => {
                let r = record(Outcome::Error, Some(message.clone()));
                inner.audit.append(r).await.map_err(|e| ErrorData::internal_error(audit_refusal(&e), None))?;
                Err(ErrorData::internal_error(message, None))
            }
        }
    }
}
