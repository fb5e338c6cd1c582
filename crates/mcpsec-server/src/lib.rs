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
mod error;
pub mod gateway;
mod handler;
mod pipeline;
mod server;
pub mod tools;
pub mod transport;

pub use error::ServeError;
/// The gateway under its former name.
#[doc(hidden)]
pub use gateway as proxy;
pub use pipeline::ratelimit;
pub use server::{McpsecServer, ServerOptions};
pub use tools::{shell, undo};
pub use transport::http::{self, HttpOptions, serve_http};
pub use transport::tls::TlsFiles;

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
    transport::stdio::run(&audit, &user, &session, details, || async { Ok(McpsecServer::new(options)) }).await
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
    let served = transport::stdio::run(&audit, &user, &session, details, || async move {
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
