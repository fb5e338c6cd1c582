//! What a crash does: a panicking call ends as an `error` record and the
//! server goes on serving (stdio and HTTP); a panic inside the audit writer
//! stops the process before anything acts. The debug binary is made to
//! panic at named points (`MCPSEC_FAILPOINTS`, mcpsec_core::failpoint).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use mcpsec_e2e::{ALLOW_ALL, BOTH, Client, Env, path};
use serde_json::json;

/// Both kinds of built-in tool: one run on the blocking pool
/// (`read_text_file`'s sibling `read_multiple_files`) and one on the
/// runtime thread (`list_allowed_directories`).
const PANICKING: &str = "panic-in-tool:read_multiple_files,panic-in-tool:list_allowed_directories";

/// The error answer of a call that panics. Without the catch the answer
/// never comes: a generous bound turns that hang into a failure.
async fn crash_answer(c: &Client, tool: &str, args: serde_json::Value) -> String {
    let bound = std::time::Duration::from_secs(60);
    tokio::time::timeout(bound, c.err(tool, args)).await.expect("no answer: the panic took the request down with it")
}

#[tokio::test]
async fn a_panicking_call_fails_alone_and_the_server_goes_on() {
    let env = Env::new();
    env.write("ws/a.txt", "a");
    for protocol in BOTH {
        let mut cmd = env.command(&[]);
        cmd.env("MCPSEC_FAILPOINTS", PANICKING);
        let c = Client::connect_with_stderr(cmd, protocol, Stdio::null()).await;
        let e = crash_answer(&c, "read_multiple_files", json!({"paths": ["a.txt"]})).await;
        assert!(e.contains("internal error") && e.contains("goes on serving"), "{protocol:?}: {e}");
        let e = crash_answer(&c, "list_allowed_directories", json!({})).await;
        assert!(e.contains("internal error"), "{protocol:?}: {e}");
        assert_eq!(c.ok("read_text_file", path("a.txt")).await, "a", "{protocol:?}: the server still serves");
        c.close().await;
    }
    let crashes: Vec<_> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["outcome"] == "error" && r["reason"].as_str().is_some_and(|s| s.contains("internal error")))
        .map(|r| r["tool"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(crashes, ["read_multiple_files", "list_allowed_directories"].repeat(2));
    let (code, _, err) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn a_panicking_call_over_http_ends_no_other_users_session() {
    let env = Env::new();
    env.write("ws/a.txt", "a");
    let (alice, bob) = (env.add_user("alice"), env.add_user("bob"));
    let mut cmd = env.command(&["--http", "127.0.0.1:0"]);
    cmd.env("MCPSEC_FAILPOINTS", PANICKING);
    let server = mcpsec_e2e::HttpServer::spawn(cmd).await;
    for protocol in BOTH {
        let a = server.connect(&alice, protocol).await.unwrap();
        let b = server.connect(&bob, protocol).await.unwrap();
        let e = crash_answer(&a, "list_allowed_directories", json!({})).await;
        assert!(e.contains("internal error"), "{e}");
        let e = crash_answer(&a, "read_multiple_files", json!({"paths": ["a.txt"]})).await;
        assert!(e.contains("internal error"), "{e}");
        assert_eq!(b.ok("read_text_file", path("a.txt")).await, "a");
        assert_eq!(a.ok("read_text_file", path("a.txt")).await, "a");
        a.close().await;
        b.close().await;
    }
    assert_eq!(server.stop().await, 0);
}

#[test]
fn a_panic_in_the_audit_writer_stops_the_server_before_the_call_acts() {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    // The start record is written; the first tool call's record panics.
    let mut child = mcpsec_e2e::mcpsec_command()
        .args(["serve", "--root"])
        .arg(env.root())
        .arg("--config")
        .arg(&cfg)
        .env("MCPSEC_STATE_DIR", env.state())
        .env("XDG_CONFIG_HOME", env.path().join("no-config"))
        .env("MCPSEC_FAILPOINTS", "panic-in-audit-append:tool_call")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let messages = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "write_file", "arguments": {"path": "new.txt", "content": "x"}}}),
    ];
    for m in &messages {
        writeln!(stdin, "{m}").unwrap();
    }
    // The server ends by itself (stdin stays open): every line it wrote is
    // read until it closes stdout.
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    drop(stdin);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.signal(), Some(6), "the server must abort: {status:?}, stderr: {stderr}");
    assert!(stderr.contains("the audit log writer panicked"), "{stderr}");
    assert_eq!(lines.len(), 1, "only the handshake was answered: {lines:?}");
    assert!(!env.exists("ws/new.txt"), "the call acted after the audit writer failed");
}
