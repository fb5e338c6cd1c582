//! The start and stop records of a serving session, the same for every
//! transport: written once here, not once per transport.

use mcpsec_audit::{AuditLog, EventKind, Record};

use crate::error::ServeError;
use crate::server::McpsecServer;

/// The start and stop records of a session of `user`'s server `session`,
/// both carrying `details` (the version, the transport, its address…).
pub(crate) fn records(user: &str, session: &str, details: serde_json::Value) -> (Record, Record) {
    let record = |event| {
        let mut r = Record::new(event);
        r.user = Some(user.to_owned());
        r.session = Some(session.to_owned());
        r.details = Some(details.clone());
        r
    };
    (record(EventKind::ServerStart), record(EventKind::ServerStop))
}

/// Records that the server did not start (after its start record), and
/// closes the log.
pub(crate) async fn record_failed_start(audit: &AuditLog, mut stop: Record, why: &str) {
    stop.reason = Some(format!("failed to start: {why}"));
    let _ = audit.append(stop).await;
    audit.close();
}

/// Records the stop, after the rate-limit refusals still uncounted, and
/// closes the log.
pub(crate) async fn record_stop(audit: &AuditLog, server: &McpsecServer, stop: Record) -> Result<(), ServeError> {
    server.flush_rate_limit_records().await;
    let stopped = audit.append(stop).await.map_err(|e| ServeError(format!("cannot record the server stop: {e}")));
    audit.close();
    stopped.map(|_| ())
}
