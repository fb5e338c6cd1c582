//! The floor of the HTTP load run (`cargo xtask bench --only http`): what
//! this machine, its loopback TCP and the bench's client manage with no MCP
//! and no security layer at all.
//!
//! `http_floor FILE` serves `POST /mcp` on a free loopback port with the
//! same stack as `mcpsec serve --http` (axum on hyper, tokio's multi-thread
//! runtime, `TCP_NODELAY`, mimalloc): it parses each request as JSON and answers
//! with a JSON-RPC result shaped like `read_text_file`'s (the text of
//! `FILE`, read once at start, as content and as structured content). No
//! authentication, no session, no audit, no file access per call.
//!
//! It prints `listening on http://ADDR/mcp` to stderr, as mcpsec does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

/// The allocator of `mcpsec` (its default feature `mimalloc`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = std::env::args_os().nth(1).ok_or("usage: http_floor FILE")?;
    #[allow(clippy::disallowed_methods)] // the bench's fixture, read once: not a tool call
    let text = std::fs::read_to_string(&file)?;
    let answer: Arc<str> = Arc::from(
        serde_json::json!({
            "content": [{ "type": "text", "text": text }],
            "structuredContent": { "content": text },
        })
        .to_string(),
    );
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        eprintln!("listening on http://{}/mcp", listener.local_addr()?);
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |body: Bytes| {
                let answer = answer.clone();
                async move {
                    let id = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("id").cloned())
                        .unwrap_or(serde_json::Value::Null);
                    let reply = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{answer}}}"#);
                    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], reply).into_response()
                }
            }),
        );
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}
