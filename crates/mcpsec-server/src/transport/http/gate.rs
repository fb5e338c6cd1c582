//! The gate every request to `/mcp` passes (see the module above for its
//! order): stopping, load, failed authentications, the bearer key, the
//! session's owner, the time limit, sessions per user; and the
//! explanation and record of every refusal.

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
use mcpsec_core::Principal;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use secrecy::SecretString;

use super::LOG_TARGET;
use super::answer::{Answering, answer};
use crate::server::Authenticated;

/// Everything the gate in front of `/mcp` needs.
#[derive(Clone)]
pub(super) struct Gate {
    pub(super) users: Arc<Users>,
    pub(super) audit: Arc<AuditLog>,
    pub(super) session: String,
    pub(super) permits: Arc<tokio::sync::Semaphore>,
    pub(super) failures: Arc<FailedAuth>,
    pub(super) timeout: Duration,
    pub(super) stopping: Arc<AtomicBool>,
    /// POST answers still being sent.
    pub(super) answering: Arc<Answering>,
    /// Which user opened each MCP session.
    pub(super) owners: Arc<Mutex<HashMap<String, String>>>,
    /// Sessions one user may hold open (`[http] max_sessions`).
    pub(super) max_sessions: usize,
    /// `[http] max_body`, for the message refusing a larger body.
    pub(super) max_body: u64,
    pub(super) sessions: Arc<LocalSessionManager>,
}

pub(super) const SESSION_HEADER: &str = "mcp-session-id";

pub(super) async fn guard(
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
    if let Some(wait) = gate.failures.blocked(ip, Instant::now()) {
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
                    tracing::error!(target: LOG_TARGET, "cannot check a bearer key: {e}");
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
            tracing::warn!(target: LOG_TARGET, "cannot close a session over the cap: {e}");
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

impl Gate {
    /// Records something the gate refused, in this server's session;
    /// `details` get the transport and the client's address. A record that
    /// cannot be written is logged (the refusal stands either way).
    pub(super) async fn record(
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
            tracing::error!(target: LOG_TARGET, "cannot record a refusal ({}): {e}", event.as_str());
        }
    }

    /// Notes that `user` owns the new session `id`, unless that would give
    /// them more than `max_sessions` open sessions (`false`). Sessions that
    /// rmcp has closed (or expired) are forgotten first.
    pub(super) async fn open_session(&self, id: &str, user: &str) -> bool {
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
pub(super) fn bearer(headers: &HeaderMap) -> Option<SecretString> {
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
pub(super) fn one_host(request: &mut Request) -> Result<(), (String, &'static str)> {
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
pub(super) async fn explain_refusal(
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
pub(super) async fn refused_session(gate: &Gate, user: &str, ip: IpAddr, outcome: Outcome, reason: &str) {
    gate.record(EventKind::SessionRefused, Some(user), outcome, reason, ip, serde_json::json!({})).await;
}

/// 401, after recording the failure (without the key) and counting it
/// against the client's address.
pub(super) async fn unauthorized(gate: &Gate, ip: IpAddr, had_key: bool, target: &str) -> Response {
    gate.failures.failed(ip, Instant::now());
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

pub(super) fn plain(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

pub(super) fn retry_later(status: StatusCode, message: &'static str, secs: u64) -> Response {
    let mut r = plain(status, message);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// Failed authentications per client address in fixed windows. The table
/// is bounded: when it is full of live entries, a new address is refused
/// (fail closed) until a window ends.
pub(super) struct FailedAuth {
    pub(super) limit: u32,
    pub(super) window: Duration,
    pub(super) seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The most addresses tracked at once.
pub(super) const MAX_TRACKED: usize = 100_000;

impl FailedAuth {
    pub(super) fn new(limit: u32, window: Duration) -> FailedAuth {
        FailedAuth { limit, window, seen: Mutex::new(HashMap::new()) }
    }

    /// How long `ip` must wait at `now`, if it has used up its failures.
    /// (The clock is the caller's, so that tests can move it.)
    pub(super) fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&ip) {
            // Full: forget the entries whose window is over first, or a table
            // filled once would refuse every new address for good.
            let window = self.window;
            seen.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        match seen.get(&ip) {
            Some((start, n)) if *n >= self.limit && now.duration_since(*start) < self.window => {
                Some(self.window.saturating_sub(now.duration_since(*start)))
            }
            None if seen.len() >= MAX_TRACKED => Some(self.window),
            _ => None,
        }
    }

    /// Counts a failure of `ip` at `now`.
    pub(super) fn failed(&self, ip: IpAddr, now: Instant) {
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
    fn failed_authentications_are_limited_per_address_and_forgotten_after_the_window() {
        let window = Duration::from_secs(60);
        let f = FailedAuth::new(2, window);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let start = Instant::now();
        let at = |d: Duration| start + d;
        assert!(f.blocked(a, at(Duration::ZERO)).is_none());
        f.failed(a, at(Duration::ZERO));
        assert!(f.blocked(a, at(Duration::ZERO)).is_none());
        f.failed(a, at(Duration::from_secs(1)));
        // Blocked for what is left of the window, counted from the first failure.
        assert_eq!(f.blocked(a, at(Duration::from_secs(1))), Some(Duration::from_secs(59)));
        assert!(f.blocked(b, at(Duration::from_secs(1))).is_none(), "another address is not affected");
        assert!(f.blocked(a, at(window - Duration::from_millis(1))).is_some(), "still within the window");
        assert!(f.blocked(a, at(window)).is_none(), "forgotten once the window has passed");
        // A failure after the window starts a new count.
        f.failed(a, at(window));
        assert!(f.blocked(a, at(window)).is_none());
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

    /// SECURITY.md: the failed-authentication table is bounded and, full of
    /// live entries, refuses a new address (fail closed) rather than forget
    /// one that is guessing.
    #[test]
    fn a_full_failed_auth_table_refuses_new_addresses() {
        use std::net::{IpAddr, Ipv6Addr};
        let window = Duration::from_secs(60);
        let t = FailedAuth::new(3, window);
        let now = Instant::now();
        let ip = |n: u128| IpAddr::V6(Ipv6Addr::from(n));
        for n in 0..MAX_TRACKED as u128 {
            t.failed(ip(n), now);
        }
        let newcomer = ip(u128::MAX);
        assert_eq!(t.blocked(newcomer, now), Some(window), "a new address is refused while the table is full");
        t.failed(newcomer, now);
        assert_eq!(t.seen.lock().unwrap().len(), MAX_TRACKED, "and not tracked");
        // A tracked address is judged by its own count.
        assert_eq!(t.blocked(ip(5), now), None);
        t.failed(ip(5), now);
        t.failed(ip(5), now);
        assert!(t.blocked(ip(5), now).is_some(), "three failures block it");
        // Once the window is over, the table makes room again.
        let later = now + window;
        assert_eq!(t.blocked(newcomer, later), None, "a table filled once does not refuse new addresses for good");
    }
}
