//! MCP streamable HTTP at `/mcp`, behind bearer-key authentication.
//!
//! rmcp's streamable HTTP service (both protocol generations, sessions for
//! the legacy one) sits behind one gate that every request passes, in this
//! order:
//!
//! 1. refuse new work while the server stops (503);
//! 2. a global limit of requests handled at once (503 with `Retry-After`);
//! 3. a limit of failed authentications per client address (429);
//! 4. authentication: `Authorization: Bearer mcpsu_…` of a known user, or
//!    401 with `WWW-Authenticate: Bearer` and an `auth_failure` audit
//!    record; the answer is the same for a missing, malformed, unknown or
//!    removed key, so it tells nothing about which users exist;
//! 5. a session belongs to the user who opened it: another user presenting
//!    its id gets 404, as for a session that does not exist (sessions never
//!    stand in for authentication: every request is authenticated);
//! 6. a time limit for receiving the request and starting the answer (408);
//! 7. a user may hold at most `[http] max_sessions` sessions: one more is
//!    closed as soon as rmcp opens it, and the client gets 429.
//!
//! Below the gate, the accept loop bounds the connections themselves: at
//! most `[http] max_connections` open, at most `max_connections_per_address`
//! of them from one client address, and one that does not send a request
//! head within `[http] header_timeout` (slowloris, or idle between
//! requests) is closed.
//!
//! A request with two `Host` or two `Origin` headers is refused (400), and
//! the authority of an absolute-form target (`POST http://host/mcp`) takes
//! the place of `Host` (RFC 9112), so that the values checked below are the
//! only ones. rmcp then checks `Host` and `Origin` against the allowlists (403: DNS
//! rebinding and cross-origin browser requests; the server's own loopback
//! origin, `http://127.0.0.1:PORT` as bound, is same-origin and passes) and the body size (413);
//! the gate answers those refusals with what was refused, why and what the
//! operator can change, and records them (`request_refused`),
//! and the pipeline acts as the authenticated user (put into the request's
//! extensions by the gate, read back by `call_tool`).
//!
//! On the way out, a POST's event stream is held until its first message (at
//! most 20 ms): rmcp opens a 2025-11-25 answer with a priming event, and
//! without the hold the headers and that event cost a write and a wakeup of
//! the client of their own on every call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use mcpsec_caps::Users;
use mcpsec_core::HttpConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

mod accept;
mod answer;
mod gate;

use accept::{ConnectionLimits, serve_connections};
use answer::Answering;
use gate::{FailedAuth, Gate, guard, plain};

use crate::error::ServeError;
use crate::server::{McpsecServer, ServerOptions};

/// The target of this module's log lines: its path before it moved under
/// `transport/`, which operators (and the tests) filter on
/// (`RUST_LOG=mcpsec_server::http=info`).
const LOG_TARGET: &str = "mcpsec_server::http";

/// What the HTTP transport needs besides the server's options.
#[derive(Debug)]
pub struct HttpOptions {
    /// The address to listen on (port 0: any free port).
    pub addr: SocketAddr,
    /// Who may call, by bearer key.
    pub users: Arc<Users>,
    /// `[http]`.
    pub config: HttpConfig,
    /// The window of the failed-authentication limit (`rate_limit.window`).
    pub auth_window: Duration,
    /// How long calls under way may take to finish once a stop is asked for.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this certificate and key (`None`: plain HTTP).
    pub tls: Option<crate::TlsFiles>,
}

/// The path MCP is served at.
pub const MCP_PATH: &str = "/mcp";

/// Serves MCP streamable HTTP until SIGTERM, SIGINT or SIGHUP. Then it stops
/// taking requests, lets the calls under way finish (for at most
/// [`HttpOptions::shutdown_grace`]), closes the sessions and writes the
/// server-stop record last. The start and stop are audit records; if the
/// start cannot be recorded the server does not start. The address served
/// is logged at `info` ("listening on http://ADDR/mcp").
pub async fn serve_http(options: ServerOptions, http: HttpOptions) -> Result<(), ServeError> {
    let roots: Vec<String> = options.sandbox.roots().map(|p| p.display().to_string()).collect();
    let confine = options.shell.as_ref().map(|s| s.confinement().details());
    serve(McpsecServer::new(options), serde_json::json!({ "roots": roots, "confine": confine }), http).await
}

/// Serves `server` (built-in tools, or a gateway's upstream) as
/// [`serve_http`] describes; `details` go into its start and stop records
/// besides the version, transport and address. A gateway's upstream is
/// started (and asked for its tools) after the start record and before the
/// first request; if it cannot be, the server does not start. It is stopped
/// once the calls under way have finished.
pub(crate) async fn serve(
    server: McpsecServer,
    details: serde_json::Value,
    http: HttpOptions,
) -> Result<(), ServeError> {
    let mut signalled = std::pin::pin!(super::stdio::stop_signal());
    let listener = tokio::net::TcpListener::bind(http.addr)
        .await
        .map_err(|e| ServeError(format!("cannot listen on {}: {e}", http.addr)))?;
    let local = listener.local_addr().map_err(|e| ServeError(format!("cannot listen on {}: {e}", http.addr)))?;
    let acceptor = http.tls.as_ref().map(crate::transport::tls::acceptor).transpose().map_err(ServeError)?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let audit = server.audit().clone();
    let session = server.session().to_owned();
    let mut d = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "transport": "http",
        "address": local.to_string(),
        "tls": acceptor.is_some(),
    });
    if let (Some(d), serde_json::Value::Object(extra)) = (d.as_object_mut(), &details) {
        d.extend(extra.clone());
    }
    let (start, mut stop) = super::lifecycle::records(server.own_principal().name(), &session, d);
    audit.append(start).await.map_err(|e| ServeError(format!("cannot record the server start: {e}")))?;
    let upstream = server.upstream().cloned();
    if let Some(up) = &upstream
        && let Err(e) = up.connect(server.authorizer()).await
    {
        super::lifecycle::record_failed_start(&audit, stop, &e).await;
        return Err(ServeError(e));
    }

    let server = server.per_request_principals();
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(http.config.allowed_hosts.clone())
        .with_max_request_body_bytes(usize::try_from(http.config.max_body).unwrap_or(usize::MAX));
    // Besides the configured origins, the server's own when it listens on a
    // loopback address: that origin is the literal address and port this
    // process holds, so no other program can serve a page from it (a DNS
    // rebinding page has its own name in its origin). An empty list refuses
    // every request that carries an Origin (rmcp's default would let any
    // through).
    let mut origins = http.config.allowed_origins.clone();
    if local.ip().is_loopback() {
        origins.push(format!("{scheme}://{local}"));
    }
    config = if origins.is_empty() { config.enforce_origin_validation() } else { config.with_allowed_origins(origins) };
    let cancel = config.cancellation_token.clone();
    let sessions = Arc::new(LocalSessionManager::default());
    let factory = server.clone();
    // Shared, not cloned per request: rmcp's `Service::call` clones the
    // service and its config (the host and origin lists), and axum clones
    // the route's service again, about 24 allocations a request.
    let service = Arc::new(StreamableHttpService::new(move || Ok(factory.clone()), sessions.clone(), config));
    let gate = Gate {
        users: http.users,
        audit: audit.clone(),
        session,
        permits: Arc::new(tokio::sync::Semaphore::new(http.config.max_concurrent as usize)),
        failures: Arc::new(FailedAuth::new(http.config.failed_auth, http.auth_window)),
        timeout: http.config.request_timeout,
        stopping: Arc::new(AtomicBool::new(false)),
        answering: Arc::new(Answering::default()),
        owners: Arc::new(Mutex::new(HashMap::new())),
        max_sessions: http.config.max_sessions as usize,
        max_body: http.config.max_body,
        sessions,
    };
    let stopping = gate.stopping.clone();
    let answering = gate.answering.clone();
    let app = axum::Router::new()
        .route(MCP_PATH, axum::routing::any(move |request: Request| async move { service.handle(request).await }))
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "not found: MCP is served at /mcp") })
        .layer(axum::middleware::from_fn_with_state(gate, guard));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = ConnectionLimits {
        max_connections: http.config.max_connections as usize,
        per_address: http.config.max_connections_per_address as usize,
        header_timeout: http.config.header_timeout,
    };
    let mut serving = match acceptor {
        None => {
            use axum::serve::ListenerExt;
            // An answer is written in several small pieces (headers, event-stream chunks): without
            // TCP_NODELAY, Nagle's algorithm and the client's delayed ACK add ~40 ms to each request.
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(target: LOG_TARGET, "cannot set TCP_NODELAY: {e}");
                }
            });
            tokio::spawn(serve_connections(listener, app, limits, stop_rx))
        }
        Some(acceptor) => {
            let tls = crate::transport::tls::TlsListener::new(listener, acceptor, http.config.request_timeout)
                .map_err(|e| ServeError(format!("cannot listen on {}: {e}", http.addr)))?;
            tokio::spawn(serve_connections(tls, app, limits, stop_rx))
        }
    };
    tracing::info!(target: LOG_TARGET, "listening on {scheme}://{local}{MCP_PATH}");
    let failed = tokio::select! {
        name = &mut signalled => {
            tracing::info!(target: LOG_TARGET, "stopping on {name}");
            stop.reason = Some(format!("stopped by {name}"));
            None
        }
        r = &mut serving => Some(match r {
            Ok(()) => ServeError("the HTTP server stopped unexpectedly".into()),
            Err(e) => ServeError(format!("the HTTP server crashed: {e}")),
        }),
    };
    // No new work; the calls under way finish (bounded) and are recorded.
    stopping.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(());
    // Then their answers reach the clients (a POST's event stream ends after
    // its answer) before the sessions, and their streams, are closed.
    let finished = async {
        server.idle().await;
        answering.none().await;
    };
    if tokio::time::timeout(http.shutdown_grace, finished).await.is_err() {
        tracing::warn!(target: LOG_TARGET, "calls still under way after {:?}; stopping anyway", http.shutdown_grace);
        stop.details.get_or_insert_with(|| serde_json::json!({}))["unfinished_calls"] = true.into();
    }
    cancel.cancel();
    if let Some(up) = &upstream {
        up.stop().await;
    }
    if failed.is_none() && tokio::time::timeout(Duration::from_secs(5), &mut serving).await.is_err() {
        serving.abort();
    }
    if let Some(e) = &failed {
        stop.reason = Some(e.to_string());
    }
    let stopped = super::lifecycle::record_stop(&audit, &server, stop).await;
    match failed {
        Some(e) => Err(e),
        None => stopped,
    }
}
