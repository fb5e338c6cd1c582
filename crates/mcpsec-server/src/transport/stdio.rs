//! Serving on stdin/stdout: the start and stop records around the
//! session, and the signals that stop it in order.

use rmcp::ServiceExt;

use crate::error::ServeError;
use crate::server::McpsecServer;

/// Records the start, serves the server `make` builds on stdin/stdout until
/// the client leaves or a signal arrives, records the stop.
pub(crate) async fn run<F, Fut>(
    audit: &std::sync::Arc<mcpsec_audit::AuditLog>,
    user: &str,
    session: &str,
    details: serde_json::Value,
    make: F,
) -> Result<(), ServeError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<McpsecServer, ServeError>>,
{
    // Installed first: from here on a signal stops the server in order
    // (its stop recorded) instead of killing it on the spot.
    let mut signalled = std::pin::pin!(stop_signal());
    let (start, mut stop) = super::lifecycle::records(user, session, details);
    // The start record is written and made durable (per the sync mode) on
    // a thread of its own, while the handshake is answered: nothing needs
    // to be durable for it. The transport hands the server no other request
    // until the record is durable, and refuses them all if it cannot be
    // written (fail closed).
    let (gate, recorded) = super::StartGate::new();
    let writer = audit.clone();
    std::thread::Builder::new()
        .name("mcpsec-start".into())
        .spawn(move || {
            let written = writer.append(start).wait();
            recorded.open(written.map(|_| ()).map_err(|e| e.to_string()));
        })
        .map_err(|e| ServeError(format!("cannot record the server start: no thread to write it: {e}")))?;
    let mut started = gate.clone();
    let server = match make().await {
        Ok(server) => server,
        Err(e) => {
            // The stop record follows the start record, whatever became of it.
            let _ = started.wait().await;
            super::lifecycle::record_failed_start(audit, stop, &e.to_string()).await;
            return Err(e);
        }
    };
    let flusher = server.clone();
    let (stdin, stdout) = rmcp::transport::io::stdio_pipes();
    let transport = super::LineTransport::new(stdin, stdout).with_start_gate(gate);
    let mut signal = None;
    let served = async {
        let running = tokio::select! {
            r = server.serve(transport) => r.map_err(|e| ServeError(e.to_string()))?,
            name = &mut signalled => {
                signal = Some(name);
                return Ok(());
            }
        };
        let cancel = running.cancellation_token();
        let waiting = std::pin::pin!(running.waiting());
        let mut waiting = waiting;
        let quit = tokio::select! {
            r = &mut waiting => r,
            name = &mut signalled => {
                signal = Some(name);
                cancel.cancel();
                waiting.await
            }
        };
        quit.map(|_| ()).map_err(|e| ServeError(e.to_string()))
    }
    .await;
    if let Some(name) = signal {
        tracing::info!("stopping on {name}");
        stop.reason = Some(format!("stopped by {name}"));
    }
    // Nothing is recorded before the start record (a client may leave
    // before it is written); if it could not be written, say so.
    let start_recorded = started.wait().await.map_err(|e| ServeError(format!("cannot record the server start: {e}")));
    let stopped = super::lifecycle::record_stop(audit, &flusher, stop).await;
    start_recorded.and(served).and(stopped)
}

/// Resolves with the name of the first SIGTERM, SIGINT or SIGHUP received
/// after the call (the handlers are installed when it is called); never,
/// if none could be installed.
pub(crate) fn stop_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut streams: Vec<(&'static str, tokio::signal::unix::Signal)> =
        [("SIGTERM", SignalKind::terminate()), ("SIGINT", SignalKind::interrupt()), ("SIGHUP", SignalKind::hangup())]
            .into_iter()
            .filter_map(|(name, kind)| signal(kind).ok().map(|s| (name, s)))
            .collect();
    std::future::poll_fn(move |cx| {
        for (name, stream) in &mut streams {
            if stream.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*name);
            }
        }
        std::task::Poll::Pending
    })
}
