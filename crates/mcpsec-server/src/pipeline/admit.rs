//! Admit: the rate limits, before any other work.

use rmcp::ErrorData;

use super::Arrived;
use super::ending::{Early, audit_refusal, error_result};
use crate::server::McpsecServer;
use mcpsec_audit::{EventKind, Outcome, Record};

impl McpsecServer {
    /// Admits a call under the per-user rate limits, or refuses it. The
    /// first refusal of a rate-limited run is recorded; the next ones are
    /// counted, and recorded as one record when calls are admitted again.
    pub(crate) async fn admit(&self, call: &Arrived) -> Result<(), Early> {
        let inner = &self.inner;
        match inner.limiter.check(self.principal().name(), self.limited_as(call.name())) {
            Ok(0) => Ok(()),
            Ok(suppressed) => self.record_suppressed(suppressed).await.map_err(Early::answer),
            Err(refused) => {
                let secs = refused.retry_after.as_secs_f64().max(0.001);
                let message = format!(
                    "refused: rate limit: {} allows {} calls per {:?} for user `{}` ({}); retry in {secs:.1}s. \
                     The operator can raise [rate_limit] in the config file",
                    refused.limit,
                    self.limit_for(&refused.limit),
                    inner.limits.window,
                    self.principal().name(),
                    if refused.limit == "all tools" { "all tools together" } else { "this tool" },
                );
                let record = refused.record.then(|| {
                    let mut r = self.early_record(call.name(), &call.args, Outcome::RateLimited, call.started);
                    r.reason = Some(format!("{message} (further refusals in this run are counted in one record)"));
                    r
                });
                Err(Early { record, answer: Ok(error_result(message).into()) })
            }
        }
    }

    /// The name a call's per-tool rate limit is counted under: a built-in
    /// alias counts as its canonical tool; an upstream's names are its own.
    fn limited_as<'a>(&self, name: &'a str) -> &'a str {
        if self.inner.tools.contains_key(name) { crate::tools::canonical(name) } else { name }
    }

    fn limit_for(&self, limit: &str) -> u32 {
        let l = &self.inner.limits;
        l.tools.iter().find(|(t, _)| t == limit).map_or(l.calls, |(_, n)| *n)
    }

    /// Records, as one record with the exact count, the refusals of a
    /// rate-limited run that were not recorded one by one.
    pub(crate) async fn record_suppressed(&self, n: u64) -> Result<(), ErrorData> {
        self.inner
            .audit
            .append(self.suppressed_record(n))
            .await
            .map(|_| ())
            .map_err(|e| ErrorData::internal_error(audit_refusal(&e), None))
    }

    pub(crate) fn suppressed_record(&self, n: u64) -> Record {
        let mut r = self.base(EventKind::ToolCall, None, Outcome::RateLimited);
        r.reason =
            Some(format!("{n} further call(s) were refused by the rate limit since the last rate_limited record"));
        r.details = Some(serde_json::json!({ "suppressed": n }));
        r
    }

    /// Records the rate-limit refusals still uncounted (at shutdown).
    pub async fn flush_rate_limit_records(&self) {
        for (user, n) in self.inner.limiter.drain() {
            let mut r = self.suppressed_record(n);
            r.user = Some(user);
            let _ = self.inner.audit.append(r).await;
        }
    }
}
