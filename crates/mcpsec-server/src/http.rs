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
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mcpsec_audit::{AuditLog, EventKind, Outcome, Record};
use mcpsec_caps::Users;
use mcpsec_core::{HttpConfig, Principal};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use secrecy::SecretString;

use crate::handler::Authenticated;
use crate::{McpsecServer, ServeError, ServerOptions};

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
    let mut signalled = std::pin::pin!(crate::stop_signal());
    let listener = tokio::net::TcpListener::bind(http.addr)
        .await
        .map_err(|e| ServeError(format!("cannot listen on {}: {e}", http.addr)))?;
    let local = listener.local_addr().map_err(|e| ServeError(format!("cannot listen on {}: {e}", http.addr)))?;
    let acceptor = http.tls.as_ref().map(crate::tls::acceptor).transpose().map_err(ServeError)?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let audit = server.audit().clone();
    let session = server.session().to_owned();
    let lifecycle = |event| {
        let mut r = Record::new(event);
        r.user = Some(server.own_principal().name().to_owned());
        r.session = Some(session.clone());
        let mut d = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "transport": "http",
            "address": local.to_string(),
            "tls": acceptor.is_some(),
        });
        if let (Some(d), serde_json::Value::Object(extra)) = (d.as_object_mut(), &details) {
            d.extend(extra.clone());
        }
        r.details = Some(d);
        r
    };
    let start = lifecycle(EventKind::ServerStart);
    let mut stop = lifecycle(EventKind::ServerStop);
    audit.append(start).await.map_err(|e| ServeError(format!("cannot record the server start: {e}")))?;
    let upstream = server.upstream().cloned();
    if let Some(up) = &upstream
        && let Err(e) = up.connect(server.authorizer()).await
    {
        stop.reason = Some(format!("failed to start: {e}"));
        let _ = audit.append(stop).await;
        audit.close();
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
                    tracing::debug!("cannot set TCP_NODELAY: {e}");
                }
            });
            tokio::spawn(serve_connections(listener, app, limits, stop_rx))
        }
        Some(acceptor) => {
            let tls = crate::tls::TlsListener::new(listener, acceptor, http.config.request_timeout)
                .map_err(|e| ServeError(format!("cannot listen on {}: {e}", http.addr)))?;
            tokio::spawn(serve_connections(tls, app, limits, stop_rx))
        }
    };
    tracing::info!("listening on {scheme}://{local}{MCP_PATH}");
    let failed = tokio::select! {
        name = &mut signalled => {
            tracing::info!("stopping on {name}");
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
        tracing::warn!("calls still under way after {:?}; stopping anyway", http.shutdown_grace);
        stop.details.get_or_insert_with(|| serde_json::json!({}))["unfinished_calls"] = true.into();
    }
    cancel.cancel();
    if let Some(up) = &upstream {
        up.stop().await;
    }
    if failed.is_none() && tokio::time::timeout(Duration::from_secs(5), &mut serving).await.is_err() {
        serving.abort();
    }
    server.flush_rate_limit_records().await;
    if let Some(e) = &failed {
        stop.reason = Some(e.to_string());
    }
    let stopped = audit.append(stop).await.map_err(|e| ServeError(format!("cannot record the server stop: {e}")));
    audit.close();
    match failed {
        Some(e) => Err(e),
        None => stopped.map(|_| ()),
    }
}

/// What bounds the connections themselves (as opposed to requests).
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    max_connections: usize,
    /// Of them, from one client address.
    per_address: usize,
    header_timeout: Duration,
}

/// Connections open per client address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerAddress`], given back when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A slot for one more connection from `ip`, unless it holds `limit`.
    fn take(table: &Arc<PerAddress>, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        let mut open = table.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot { table: table.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections and serves HTTP/1.1 on each until `stop` fires; then
/// asks every connection to close once its request under way is answered,
/// and returns when all have closed.
///
/// Instead of `axum::serve`, for bounds it does not have: at most
/// `max_connections` open at once, and at most `per_address` of them from
/// one client address (a connection over either cap is closed as soon as it
/// is accepted), and hyper's header read timeout, which closes a
/// connection that does not send a complete request head within
/// `header_timeout` of being opened or of its last answer (a slowloris
/// client, or one that holds an idle connection). HTTP/1.1 serves one
/// request at a time per connection, so a connection never holds more than
/// one of the global `max_concurrent` permits.
async fn serve_connections<L>(
    mut listener: L,
    app: axum::Router,
    limits: ConnectionLimits,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            _ = &mut stop => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!("{} connections open; closing the one from {peer}", limits.max_connections);
            continue;
        };
        let Some(slot) = PerAddress::take(&per_address, peer.ip(), limits.per_address) else {
            tracing::debug!("{} connections open from {}; closing one more", limits.per_address, peer.ip());
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            tower_service::Service::call(&mut app.clone(), request)
        });
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _permit = (permit, slot);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                r = connection.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("connection from {peer} ended: {e}");
                    }
                    return;
                }
                _ = closing.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = closing_tx.send(());
    // Every connection holds a permit until it has closed.
    let _ = open.acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX)).await;
}

/// Everything the gate in front of `/mcp` needs.
#[derive(Clone)]
struct Gate {
    users: Arc<Users>,
    audit: Arc<AuditLog>,
    session: String,
    permits: Arc<tokio::sync::Semaphore>,
    failures: Arc<FailedAuth>,
    timeout: Duration,
    stopping: Arc<AtomicBool>,
    /// POST answers still being sent.
    answering: Arc<Answering>,
    /// Which user opened each MCP session.
    owners: Arc<Mutex<HashMap<String, String>>>,
    /// Sessions one user may hold open (`[http] max_sessions`).
    max_sessions: usize,
    /// `[http] max_body`, for the message refusing a larger body.
    max_body: u64,
    sessions: Arc<LocalSessionManager>,
}

const SESSION_HEADER: &str = "mcp-session-id";

async fn guard(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    if gate.stopping.load(Ordering::SeqCst) {
        return retry_later(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping; try again when it is back", 5);
    }
    let Ok(_permit) = gate.permits.clone().try_acquire_owned() else {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests at once; retry shortly (the operator can raise [http] max_concurrent)",
            1,
        );
    };
    let ip = peer.ip();
    if let Some(wait) = gate.failures.blocked(ip) {
        return retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentications from this address; wait before retrying",
            wait.as_secs().max(1),
        );
    }
    let user = match bearer(request.headers()) {
        None => None,
        Some(key) => {
            // On the worker thread: the users are cached in memory, and the
            // one SQLite step, `PRAGMA data_version` (has a `users remove`
            // changed them?), reads the WAL index without waiting for a
            // writer. Handing it to the blocking pool cost more than the
            // check: 8 to 40 % of the calls/s at 64 clients (BENCHMARKS.md).
            match gate.users.authenticate(&key) {
                Ok(user) => user,
                Err(e) => {
                    tracing::error!("cannot check a bearer key: {e}");
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the server cannot check keys right now (its database failed); the operator can run \
                         `mcpsec doctor`",
                    );
                }
            }
        }
    };
    let Some(user) = user else {
        let had_key = request.headers().contains_key(header::AUTHORIZATION);
        let target = format!("{} {}", request.method(), request.uri().path());
        return unauthorized(&gate, ip, had_key, &target).await;
    };
    let session_id = request.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let foreign = session_id.as_ref().is_some_and(|id| {
        let owners = gate.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.get(id).is_some_and(|owner| owner != &user)
    });
    if foreign {
        refused_session(&gate, &user, ip, Outcome::Denied, "another user's session").await;
        // As for a session that does not exist: its owner is not revealed.
        return plain(StatusCode::NOT_FOUND, "session not found; start a new one");
    }
    if let Err((message, reason)) = one_host(&mut request) {
        let details = serde_json::json!({ "status": 400 });
        gate.record(EventKind::RequestRefused, Some(&user), Outcome::Denied, reason, ip, details).await;
        return plain(StatusCode::BAD_REQUEST, &message);
    }
    let closing = request.method() == axum::http::Method::DELETE;
    let posted = request.method() == axum::http::Method::POST;
    let (host, origin) = (request.headers().get(header::HOST).cloned(), request.headers().get(header::ORIGIN).cloned());
    request.extensions_mut().insert(Authenticated(Principal::new(user.clone())));
    let response = match tokio::time::timeout(gate.timeout, next.run(request)).await {
        Ok(r) => r,
        Err(_) => {
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                "the request took too long to arrive or to be answered ([http] request_timeout)",
            );
        }
    };
    if matches!(response.status(), StatusCode::FORBIDDEN | StatusCode::PAYLOAD_TOO_LARGE) {
        return explain_refusal(&gate, &user, ip, host, origin, response).await;
    }
    if session_id.is_none()
        && let Some(id) = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok())
        && !gate.open_session(id, &user).await
    {
        // Over the user's cap: the session rmcp just opened is closed again.
        let id: rmcp::transport::common::server_side_http::SessionId = id.into();
        if let Err(e) = gate.sessions.close_session(&id).await {
            tracing::warn!("cannot close a session over the cap: {e}");
        }
        refused_session(&gate, &user, ip, Outcome::RateLimited, "more open sessions than [http] max_sessions").await;
        return retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            "too many open sessions for this user: close one (DELETE /mcp with its Mcp-Session-Id) or let one \
             expire (the operator can raise [http] max_sessions)",
            5,
        );
    }
    if closing
        && response.status().is_success()
        && let Some(id) = session_id
    {
        gate.owners.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
    if posted {
        return answer(&gate.answering, response).await;
    }
    response
}

/// A POST's answer: counted for shutdown until its body is sent, its event
/// stream (if it is one) held until its first message.
async fn answer(answering: &Arc<Answering>, response: Response) -> Response {
    let event_stream =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // Counted from here, before the hold: a shutdown must wait for an
    // answer that is still being held.
    let counted = Answering::begin(answering);
    let (parts, mut body) = response.into_parts();
    let mut held = Held::default();
    if event_stream {
        held.until_first_message(&mut body).await;
    }
    Response::from_parts(parts, axum::body::Body::new(TrackedBody { inner: body, held, _guard: counted }))
}

/// How long a POST's event stream may wait for its first message before its
/// headers go out alone.
const FIRST_MESSAGE_WAIT: Duration = Duration::from_millis(20);

/// The start of a POST's event stream, held back until its first message.
/// rmcp answers a 2025-11-25 POST with an event stream that opens with a
/// priming event (an id to resume from), ready at once; hyper would send the
/// headers and that event in one write and the answer in a second, a second
/// wakeup of the client on every call. Held, the headers, the priming event
/// and the answer go out together. A call that takes longer than
/// [`FIRST_MESSAGE_WAIT`] gets its headers and priming event then, as before.
#[derive(Default)]
struct Held {
    frames: std::collections::VecDeque<hyper::body::Frame<axum::body::Bytes>>,
    /// What ended the stream while it was held: its end (`None`) or an error.
    end: Option<Option<axum::Error>>,
}

impl Held {
    async fn until_first_message(&mut self, body: &mut axum::body::Body) {
        use hyper::body::Body as _;
        use std::task::Poll;
        // The timer only once the stream has to be waited for: a stream whose
        // message is ready at once (every 2026-07-28 answer) costs none.
        let mut wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        std::future::poll_fn(|cx| {
            loop {
                match std::pin::Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let message = frame.data_ref().is_some_and(|d| carries_message(d));
                        self.frames.push_back(frame);
                        if message {
                            return Poll::Ready(());
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        self.end = Some(Some(e));
                        return Poll::Ready(());
                    }
                    Poll::Ready(None) => {
                        self.end = Some(None);
                        return Poll::Ready(());
                    }
                    // Ready once the wait is over: the headers go without the message.
                    Poll::Pending => {
                        return wait
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(FIRST_MESSAGE_WAIT)))
                            .as_mut()
                            .poll(cx);
                    }
                }
            }
        })
        .await;
    }
}

/// Whether an event-stream chunk carries a JSON-RPC message (a `data:` line
/// with something on it), as opposed to a priming event or a comment. Every
/// POST's answer passes here: a message's `data:` line is recognised by its
/// first bytes, without scanning the (possibly large) payload for its end.
fn carries_message(chunk: &[u8]) -> bool {
    let mut rest = chunk;
    loop {
        if let Some(data) = rest.strip_prefix(b"data:") {
            match data.iter().find(|&&b| b != b' ' && b != b'\t') {
                Some(b'\n' | b'\r') | None => {}
                Some(_) => return true,
            }
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => rest = &rest[end + 1..],
            None => return false,
        }
    }
}

/// How many POST answers are still being sent: a shutdown waits for them
/// before it closes the sessions, or a call that finished just before
/// could lose its answer.
#[derive(Default)]
struct Answering {
    count: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

impl Answering {
    /// One more answer being sent, until the guard is dropped (with the
    /// [`TrackedBody`] that carries it).
    fn begin(this: &Arc<Answering>) -> AnswerGuard {
        this.count.fetch_add(1, Ordering::SeqCst);
        AnswerGuard(this.clone())
    }

    /// Returns once no answer is being sent.
    async fn none(&self) {
        loop {
            let notified = self.done.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct AnswerGuard(Arc<Answering>);

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

/// A response body that holds an [`AnswerGuard`] until it is dropped, and
/// sends its [`Held`] start first.
struct TrackedBody {
    inner: axum::body::Body,
    held: Held,
    _guard: AnswerGuard,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Some(frame) = self.held.frames.pop_front() {
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        match self.held.end.take() {
            // Ended while held: not polled again.
            Some(end) => {
                self.held.end = Some(None);
                std::task::Poll::Ready(end.map(Err))
            }
            None => std::pin::Pin::new(&mut self.inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        if !self.held.frames.is_empty() {
            return false;
        }
        match &self.held.end {
            Some(None) => true,
            Some(Some(_)) => false,
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.held.frames.is_empty() && self.held.end.is_none() {
            self.inner.size_hint()
        } else {
            hyper::body::SizeHint::default()
        }
    }
}

impl Gate {
    /// Records something the gate refused, in this server's session;
    /// `details` get the transport and the client's address. A record that
    /// cannot be written is logged (the refusal stands either way).
    async fn record(
        &self,
        event: EventKind,
        user: Option<&str>,
        outcome: Outcome,
        reason: &str,
        client: IpAddr,
        mut details: serde_json::Value,
    ) {
        details["transport"] = "http".into();
        details["client"] = client.to_string().into();
        let mut r = Record::new(event);
        r.user = user.map(str::to_owned);
        r.session = Some(self.session.clone());
        r.outcome = Some(outcome);
        r.reason = Some(reason.to_owned());
        r.details = Some(details);
        if let Err(e) = self.audit.append(r).await {
            tracing::error!("cannot record a refusal ({}): {e}", event.as_str());
        }
    }

    /// Notes that `user` owns the new session `id`, unless that would give
    /// them more than `max_sessions` open sessions (`false`). Sessions that
    /// rmcp has closed (or expired) are forgotten first.
    async fn open_session(&self, id: &str, user: &str) -> bool {
        let live: std::collections::HashSet<String> =
            self.sessions.sessions.read().await.keys().map(|k| k.to_string()).collect();
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.retain(|id, _| live.contains(id));
        if owners.values().filter(|owner| *owner == user).count() >= self.max_sessions {
            return false;
        }
        owners.insert(id.to_owned(), user.to_owned());
        true
    }
}

/// The bearer key of a request, if it has an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<SecretString> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| SecretString::from(key.trim().to_owned()))
}

/// Makes the request name one host and one origin, the ones rmcp checks:
/// a request with two `Host` or two `Origin` headers is refused (rmcp checks
/// the first; whatever reads another would act on a value never checked),
/// and the authority of an absolute-form target (`POST http://host/mcp`),
/// which HTTP says wins over `Host` (RFC 9112, 3.2.2), becomes the `Host`
/// that is checked (one with user information in it is refused). Returns
/// the message and the audit reason of a refusal.
fn one_host(request: &mut Request) -> Result<(), (String, &'static str)> {
    for (name, shown, reason) in
        [(header::HOST, "Host", "more than one Host header"), (header::ORIGIN, "Origin", "more than one Origin header")]
    {
        if request.headers().get_all(&name).iter().nth(1).is_some() {
            return Err((
                format!(
                    "bad request: more than one `{shown}` header; a request names one, and this server checks it \
                     (against DNS rebinding and cross-site requests). Send it once"
                ),
                reason,
            ));
        }
    }
    let Some(authority) = request.uri().authority().cloned() else { return Ok(()) };
    let host = HeaderValue::from_str(authority.as_str()).ok().filter(|_| !authority.as_str().contains('@'));
    let Some(host) = host else {
        return Err((
            "bad request: the request target names its host with user information (`user@host`); send the path \
             alone (`POST /mcp`) and the host in a `Host` header"
                .to_owned(),
            "user information in the request target",
        ));
    };
    request.headers_mut().insert(header::HOST, host);
    Ok(())
}

/// rmcp's own refusals (a `Host` or `Origin` not allowed, a body too large)
/// say what was refused but not why or what to do: they are answered with
/// the same status and a message that does, and recorded
/// (`request_refused`). Any other answer with those statuses passes as is.
async fn explain_refusal(
    gate: &Gate,
    user: &str,
    ip: IpAddr,
    host: Option<HeaderValue>,
    origin: Option<HeaderValue>,
    response: Response,
) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(text) = axum::body::to_bytes(body, 4096).await else {
        return plain(parts.status, "the request was refused");
    };
    let shown = |v: Option<HeaderValue>| -> String {
        let v = v.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
        v.chars().take(200).flat_map(char::escape_default).collect()
    };
    let said = String::from_utf8_lossy(&text);
    let (message, reason, details) = if parts.status == StatusCode::PAYLOAD_TOO_LARGE {
        (
            format!(
                "request too large: its body is over [http] max_body ({} bytes); send a smaller request, or the \
                 operator can raise [http] max_body",
                gate.max_body
            ),
            "the body is over [http] max_body",
            serde_json::json!({ "status": 413 }),
        )
    } else if said.contains("Host") {
        let host = shown(host);
        (
            format!(
                "forbidden: this server does not answer to the Host `{host}` (a check against DNS rebinding: a web \
                 page must not reach a local server under a name of its own). If it is a name this server is meant \
                 to be reached by, the operator can add it to [http] allowed_hosts"
            ),
            "the Host is not in [http] allowed_hosts",
            serde_json::json!({ "status": 403, "host": host }),
        )
    } else if said.contains("Origin") {
        let origin = shown(origin);
        (
            format!(
                "forbidden: requests from the web origin `{origin}` are refused (a check against cross-site requests \
                 from a browser). If it is a trusted web client, the operator can add it to [http] allowed_origins"
            ),
            "the Origin is not in [http] allowed_origins",
            serde_json::json!({ "status": 403, "origin": origin }),
        )
    } else {
        return Response::from_parts(parts, axum::body::Body::from(text));
    };
    gate.record(EventKind::RequestRefused, Some(user), Outcome::Denied, reason, ip, details).await;
    plain(parts.status, &message)
}

/// Records a refused request of an authenticated user over a session
/// (never the session id: it is another user's, or was closed at once).
async fn refused_session(gate: &Gate, user: &str, ip: IpAddr, outcome: Outcome, reason: &str) {
    gate.record(EventKind::SessionRefused, Some(user), outcome, reason, ip, serde_json::json!({})).await;
}

/// 401, after recording the failure (without the key) and counting it
/// against the client's address.
async fn unauthorized(gate: &Gate, ip: IpAddr, had_key: bool, target: &str) -> Response {
    gate.failures.failed(ip);
    let reason = if had_key { "invalid bearer key" } else { "no bearer key" };
    let details = serde_json::json!({ "request": mcpsec_audit::redact::redact_and_truncate(target, 100) });
    gate.record(EventKind::AuthFailure, None, Outcome::Denied, reason, ip, details).await;
    let mut response = plain(
        StatusCode::UNAUTHORIZED,
        "unauthorized: this server needs `Authorization: Bearer <key>` with the key of a user; \
         an operator can create one with `mcpsec users add NAME`",
    );
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"mcpsec\""));
    response
}

fn plain(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

fn retry_later(status: StatusCode, message: &'static str, secs: u64) -> Response {
    let mut r = plain(status, message);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// Failed authentications per client address in fixed windows. The table
/// is bounded: when it is full of live entries, a new address is refused
/// (fail closed) until a window ends.
struct FailedAuth {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The most addresses tracked at once.
const MAX_TRACKED: usize = 100_000;

impl FailedAuth {
    fn new(limit: u32, window: Duration) -> FailedAuth {
        FailedAuth { limit, window, seen: Mutex::new(HashMap::new()) }
    }

    /// How long `ip` must wait, if it has used up its failures.
    fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&ip) {
            Some((start, n)) if *n >= self.limit && now.duration_since(*start) < self.window => {
                Some(self.window.saturating_sub(now.duration_since(*start)))
            }
            None if seen.len() >= MAX_TRACKED => Some(self.window),
            _ => None,
        }
    }

    fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_TRACKED {
            let window = self.window;
            seen.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&ip) {
            return;
        }
        let entry = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_priming_event_or_a_comment_is_not_a_message() {
        assert!(!carries_message(b"data: \nid: 0/257\nretry: 3000\n\n"), "rmcp's priming event");
        assert!(!carries_message(b"data:\n\n"));
        assert!(!carries_message(b": keep-alive\n\n"));
        assert!(carries_message(b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\nid: 0/258\n\n"));
        assert!(carries_message(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n"));
        assert!(carries_message(b"id: 0/2\r\ndata:[{}]"), "no space, no line end");
        assert!(!carries_message(b"data: \r\n\r\n"));
        assert!(!carries_message(b""));
    }

    /// A body of `chunks`, each ready `gap` after the one before, then an
    /// error once if `fails`.
    struct Slow {
        chunks: &'static [&'static str],
        next: usize,
        gap: Duration,
        sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        fails: bool,
    }

    impl hyper::body::Body for Slow {
        type Data = axum::body::Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            let this = &mut *self;
            let Some(chunk) = this.chunks.get(this.next) else {
                let error = std::mem::take(&mut this.fails).then(|| Err(std::io::Error::other("the stream broke")));
                return std::task::Poll::Ready(error);
            };
            let gap = this.gap;
            let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
            std::task::ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
            this.next += 1;
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(axum::body::Bytes::from_static(chunk.as_bytes())))))
        }
    }

    fn slow_body(chunks: &'static [&'static str], gap: Duration) -> axum::body::Body {
        axum::body::Body::new(Slow { chunks, next: 0, gap, sleep: None, fails: false })
    }

    /// The tracked body's next frame.
    async fn poll_frame(
        tracked: &mut TrackedBody,
    ) -> Option<Result<hyper::body::Frame<axum::body::Bytes>, axum::Error>> {
        use hyper::body::Body as _;
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *tracked).poll_frame(cx)).await
    }

    /// Everything the tracked body sends, and whether it then says it ended.
    async fn all_of(body: axum::body::Body, held: Held) -> (String, bool) {
        use hyper::body::Body as _;
        let answering = Arc::new(Answering::default());
        let mut tracked = TrackedBody { inner: body, held, _guard: Answering::begin(&answering) };
        let mut out = Vec::new();
        while let Some(frame) = poll_frame(&mut tracked).await {
            out.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        (String::from_utf8(out).unwrap(), tracked.is_end_stream())
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_stream_is_held_until_its_first_message_and_loses_nothing() {
        const CHUNKS: &[&str] = &["data: \nid: 0/1\n\n", "data: {\"id\":1}\n\n", "data: {\"id\":2}\n\n"];
        let mut body = slow_body(CHUNKS, Duration::from_millis(1));
        let mut held = Held::default();
        held.until_first_message(&mut body).await;
        assert_eq!(held.frames.len(), 2, "the priming event and the first message");
        assert!(held.end.is_none());
        assert_eq!(all_of(body, held).await.0, CHUNKS.concat());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_message_lets_the_headers_go_after_the_wait() {
        const CHUNKS: &[&str] = &["data: {\"id\":1}\n\n"];
        let mut body = slow_body(CHUNKS, FIRST_MESSAGE_WAIT * 5);
        let mut held = Held::default();
        held.until_first_message(&mut body).await;
        assert!(held.frames.is_empty() && held.end.is_none(), "the headers went without waiting for the message");
        assert_eq!(all_of(body, held).await.0, CHUNKS.concat());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_being_held_already_counts_for_shutdown() {
        const CHUNKS: &[&str] = &["data: \nid: 0/1\n\n", "data: {\"id\":1}\n\n"];
        let answering = Arc::new(Answering::default());
        let response = Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(slow_body(CHUNKS, Duration::from_millis(5)))
            .unwrap();
        let held = tokio::spawn({
            let answering = answering.clone();
            async move { answer(&answering, response).await }
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(!held.is_finished(), "still waiting for the message");
        let stopping = tokio::time::timeout(Duration::from_millis(20), answering.none()).await;
        assert!(stopping.is_err(), "a shutdown must not go ahead while an answer is held");
        let response = held.await.unwrap();
        assert_eq!(answering.count.load(Ordering::SeqCst), 1, "counted until the body is sent");
        drop(response);
        answering.none().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_fails_while_held_passes_the_error_on_once() {
        use hyper::body::Body as _;
        const CHUNKS: &[&str] = &["data: \nid: 0/1\n\n"];
        let mut body =
            axum::body::Body::new(Slow { chunks: CHUNKS, next: 0, gap: Duration::ZERO, sleep: None, fails: true });
        let mut held = Held::default();
        held.until_first_message(&mut body).await;
        assert!(matches!(held.end, Some(Some(_))), "the error ended the hold");
        let answering = Arc::new(Answering::default());
        let mut tracked = TrackedBody { inner: body, held, _guard: Answering::begin(&answering) };
        let first = poll_frame(&mut tracked).await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap().as_ref(), CHUNKS[0].as_bytes(), "the held event first");
        assert!(poll_frame(&mut tracked).await.unwrap().is_err(), "then the error, so hyper aborts the response");
        assert!(poll_frame(&mut tracked).await.is_none(), "and nothing after it");
        assert!(tracked.is_end_stream());
        drop(tracked);
        answering.none().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_while_held_ends_once() {
        const CHUNKS: &[&str] = &["data: \nid: 0/1\n\n"];
        let mut body = slow_body(CHUNKS, Duration::ZERO);
        let mut held = Held::default();
        held.until_first_message(&mut body).await;
        assert!(matches!(held.end, Some(None)));
        assert_eq!(all_of(body, held).await, (CHUNKS.concat(), true), "sent once, then ended");
    }

    #[test]
    fn an_address_gets_its_slots_back_when_its_connections_close() {
        let table = Arc::new(PerAddress::default());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = PerAddress::take(&table, a, 2).unwrap();
        let second = PerAddress::take(&table, a, 2).unwrap();
        assert!(PerAddress::take(&table, a, 2).is_none(), "a third from one address");
        let other = PerAddress::take(&table, b, 2).unwrap();
        drop(first);
        let again = PerAddress::take(&table, a, 2).unwrap();
        drop((second, again, other));
        // Nothing is left behind for addresses with no connection.
        assert!(table.0.lock().unwrap().is_empty());
    }

    #[test]
    fn failed_authentications_are_limited_per_address_and_forgotten_after_the_window() {
        let f = FailedAuth::new(2, Duration::from_millis(200));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(f.blocked(a).is_none());
        f.failed(a);
        assert!(f.blocked(a).is_none());
        f.failed(a);
        assert!(f.blocked(a).is_some());
        assert!(f.blocked(b).is_none(), "another address is not affected");
        std::thread::sleep(Duration::from_millis(250));
        assert!(f.blocked(a).is_none());
    }

    #[test]
    fn only_a_bearer_authorization_yields_a_key() {
        use secrecy::ExposeSecret;
        let mut h = HeaderMap::new();
        assert!(bearer(&h).is_none());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YWxhZGRpbjpvcGVuc2VzYW1l"));
        assert!(bearer(&h).is_none());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer mcpsu_abc"));
        assert_eq!(bearer(&h).unwrap().expose_secret(), "mcpsu_abc");
    }
}
