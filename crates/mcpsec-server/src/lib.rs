//! The mcpsec MCP server.
//!
//! This crate provides [`McpsecServer`], an rmcp [`ServerHandler`](rmcp::ServerHandler)
//! that offers the built-in filesystem tools ([`tools`]) through one guard
//! pipeline, and [`serve_stdio`], which runs it over stdin/stdout with a
//! transport that answers malformed lines instead of dropping them, and
//! [`serve_http`], which serves it as MCP streamable HTTP behind bearer-key
//! authentication ([`http`]). [`serve_proxy_stdio`] and
//! [`serve_proxy_http`] run it as a gateway instead: the tools of another MCP
//! server ([`proxy`]), pinned, mapped to capabilities and sanitised, through
//! the same pipeline, behind the same transports.
//!
//! # Guarantee
//!
//! Every `tools/call` goes through the same pipeline: look up the tool,
//! authorize its capability ([`mcpsec_caps`]), parse the arguments, execute
//! through the path guard ([`mcpsec_pathguard`]) or forward to the upstream,
//! report the ending to the audit sink ([`mcpsec_audit`]); a destructive
//! built-in call first keeps what it removes for `mcpsec undo` ([`undo`]).
//! A refusal or failure is a tool result with
//! `isError: true` whose text says what was refused, why and what the human
//! can do; a request for a tool that does not exist is a JSON-RPC error.
//! Tools whose capability is in mode `deny` are not listed.
//!
//! # Non-goals
//!
//! **Architecture invariant:** this is the only crate that knows MCP and
//! JSON-RPC. It never touches the filesystem itself (only through
//! [`Sandbox`](mcpsec_pathguard::Sandbox)), never parses command lines and
//! never decides exit codes.

pub mod confine;
mod confirm;
mod edit;
mod handler;
pub mod http;
pub mod proxy;
pub mod ratelimit;
pub mod shell;
mod tls;
pub mod tools;
pub mod transport;
pub mod undo;
mod upstream_io;

pub use handler::{McpsecServer, ServerOptions};
pub use http::{HttpOptions, serve_http};
pub use tls::TlsFiles;

use rmcp::ServiceExt;

/// Serves MCP on stdin/stdout until the client closes stdin, or until a
/// SIGTERM, SIGINT or SIGHUP (calls under way are finished and recorded).
/// The server's start and stop are audit records. The start is recorded
/// while the handshake is answered: no request but the handshake's reaches
/// the server before the start record is durable, and if it cannot be
/// written every request is refused with the reason (and serving ends in
/// an error).
pub async fn serve_stdio(options: ServerOptions) -> Result<(), ServeError> {
    let details = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "transport": "stdio",
        "roots": options.sandbox.roots().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "confine": options.shell.as_ref().map(|s| s.confinement().details()),
    });
    let audit = options.audit.clone();
    let (user, session) = (options.principal.name().to_owned(), options.session.clone());
    run_stdio(&audit, &user, &session, details, || async { Ok(McpsecServer::new(options)) }).await
}

/// Serves MCP on stdin/stdout as a gateway in front of an upstream MCP
/// server (started as a child process, stopped with the gateway): the
/// upstream's tools through the same pipeline as the built-in ones. Like
/// [`serve_stdio`], with the upstream's name and program (never its
/// arguments, which may hold secrets) in the start and stop records. If the
/// upstream cannot be started and asked for its tools, the gateway does not
/// start.
pub async fn serve_proxy_stdio(options: proxy::GatewayOptions) -> Result<(), ServeError> {
    let audit = options.audit.clone();
    let (user, session) = (options.principal.name().to_owned(), options.session.clone());
    let server = McpsecServer::gateway(options);
    let Some(upstream) = server.upstream().cloned() else {
        return Err(ServeError("a gateway without an upstream".into()));
    };
    let details = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "transport": "stdio",
        "upstream": upstream.name(),
        "program": upstream.program(),
        "confine": upstream.confinement().details(),
    });
    let up = upstream.clone();
    let served = run_stdio(&audit, &user, &session, details, || async move {
        up.connect(server.authorizer()).await.map_err(ServeError)?;
        Ok(server)
    })
    .await;
    upstream.stop().await;
    served
}

/// Serves a gateway (as [`serve_proxy_stdio`]) over MCP streamable HTTP,
/// behind the same front end as [`serve_http`]: users and their keys, TLS,
/// the `[http]` limits, graceful shutdown. One upstream server is shared by
/// every HTTP session (its tool pins, its restarts, its list-changed
/// notifications, which every open session is told about); each call acts as
/// the user its request authenticated as.
pub async fn serve_proxy_http(options: proxy::GatewayOptions, http: HttpOptions) -> Result<(), ServeError> {
    let server = McpsecServer::gateway(options);
    let Some(upstream) = server.upstream() else {
        return Err(ServeError("a gateway without an upstream".into()));
    };
    let details = serde_json::json!({
        "upstream": upstream.name(),
        "program": upstream.program(),
        "confine": upstream.confinement().details(),
    });
    http::serve(server, details, http).await
}

/// Records the start, serves the server `make` builds on stdin/stdout until
/// the client leaves or a signal arrives, records the stop.
async fn run_stdio<F, Fut>(
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
    let lifecycle = |event| {
        let mut r = mcpsec_audit::Record::new(event);
        r.user = Some(user.to_owned());
        r.session = Some(session.to_owned());
        r.details = Some(details.clone());
        r
    };
    let start = lifecycle(mcpsec_audit::EventKind::ServerStart);
    let mut stop = lifecycle(mcpsec_audit::EventKind::ServerStop);
    // The start record is written and made durable (per the sync mode) on
    // a thread of its own, while the handshake is answered: nothing needs
    // to be durable for it. The transport hands the server no other request
    // until the record is durable, and refuses them all if it cannot be
    // written (fail closed).
    let (gate, recorded) = transport::StartGate::new();
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
            stop.reason = Some(format!("failed to start: {e}"));
            let _ = audit.append(stop).await;
            audit.close();
            return Err(e);
        }
    };
    let flusher = server.clone();
    let (stdin, stdout) = rmcp::transport::io::stdio_pipes();
    let transport = transport::LineTransport::new(stdin, stdout).with_start_gate(gate);
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
    flusher.flush_rate_limit_records().await;
    let stopped = audit.append(stop).await.map_err(|e| ServeError(format!("cannot record the server stop: {e}")));
    audit.close();
    start_recorded.and(served).and(stopped.map(|_| ()))
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

/// The server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[error("MCP service failed: {0}")]
pub struct ServeError(String);
