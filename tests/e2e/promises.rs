//! Promises SECURITY.md makes that no other test checked: each test names
//! the promise it holds the binary to.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mcpsec_e2e::{ALLOW_ALL, Env, Protocol, fixture_upstream, initialize_body, path, raw_post, text};
use serde_json::{Value, json};

/// `mcpsec ARGS` with this env's state, `stdin` written to it: (exit code, stdout, stderr).
fn run_with_stdin(env: &Env, args: &[&str], stdin: &str) -> (i32, String, String) {
    env.cli_with_stdin(args, Some(stdin))
}

/// SECURITY.md: "`grant` and `revoke --all` ask for an argon2id-checked
/// passphrase", and so does `pins approve`.
#[test]
fn revoke_all_and_pin_approval_ask_for_the_passphrase() {
    let env = Env::new();
    assert_eq!(run_with_stdin(&env, &["init", "--passphrase-stdin"], "correct horse battery\n").0, 0);
    let (code, token, err) =
        run_with_stdin(&env, &["grant", "delete_files", "--passphrase-stdin"], "correct horse battery\n");
    assert_eq!(code, 0, "{err}");
    let id = &token.trim()[5..13];

    let (code, _, err) = run_with_stdin(&env, &["revoke", "--all", "--passphrase-stdin"], "wrong guess\n");
    assert_eq!(code, 1, "{err}");
    assert_eq!(env.cli(&["tokens", "--json"]).1.matches(id).count(), 1, "the token is still active");
    let (code, out, err) = run_with_stdin(&env, &["revoke", "--all", "--passphrase-stdin"], "correct horse battery\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(id), "{out}");

    // A pending pin, as a changed upstream tool leaves it.
    let db = rusqlite::Connection::open(env.state().join("mcpsec.db")).unwrap();
    let pending = "a".repeat(64);
    db.execute(
        "INSERT INTO pins (upstream, tool, hash, definition, approved_ms, pending_hash, pending_definition, \
         pending_since_ms) VALUES ('fx', 'echo', ?1, '{}', 1, ?2, '{\"name\":\"echo\"}', 2)",
        [&"b".repeat(64), &pending],
    )
    .unwrap();
    let approve = ["pins", "approve", "fx", "echo", "--hash", &pending, "--passphrase-stdin"];
    let (code, _, err) = run_with_stdin(&env, &approve, "wrong guess\n");
    assert_eq!(code, 1, "{err}");
    let still: Option<String> = db.query_row("SELECT pending_hash FROM pins", [], |r| r.get(0)).unwrap();
    assert_eq!(still.as_deref(), Some(pending.as_str()), "a wrong passphrase approves nothing");
    let (code, _, err) = run_with_stdin(&env, &approve, "correct horse battery\n");
    assert_eq!(code, 0, "{err}");
    let approved: (String, Option<String>) =
        db.query_row("SELECT hash, pending_hash FROM pins", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(approved, (pending, None));
}

/// SECURITY.md: "The state directory is created 0700 (a directory others
/// can write to is refused)".
#[tokio::test]
async fn serve_refuses_a_state_directory_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let c = env.start(Protocol::Legacy, &[]).await;
    c.close().await;
    assert_eq!(std::fs::metadata(env.state()).unwrap().permissions().mode() & 0o777, 0o700);
    std::fs::set_permissions(env.state(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.command(&[]).stdin(std::process::Stdio::null()).output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served with a world-writable state directory: {err}");
    assert!(err.contains(&env.state().display().to_string()) && err.contains("chmod"), "{err}");
}

/// SECURITY.md: "A symlink that leaves the root and comes back
/// (`../ws/file` from inside `ws`) is refused".
#[tokio::test]
async fn a_symlink_that_leaves_the_root_and_comes_back_is_refused() {
    let env = Env::new();
    env.write("ws/file.txt", "inside");
    env.symlink("../ws/file.txt", "ws/back");
    env.symlink("../ws", "ws/backdir");
    let c = env.start(Protocol::Legacy, &[]).await;
    for p in ["back", "backdir/file.txt"] {
        let e = c.err("read_text_file", path(p)).await;
        assert!(e.contains("outside the allowed directories"), "{p}: {e}");
        assert!(!e.contains("inside"), "{p}: {e}");
    }
    c.close().await;
}

/// SECURITY.md: "reads capped (`limits.max_read` …, also enforced while
/// reading a growing file)". Whatever the moment the file grows, no answer
/// carries more than the cap.
#[tokio::test]
async fn max_read_holds_on_a_file_that_grows_while_it_is_read() {
    const CAP: usize = 64 << 10;
    let env = Env::new();
    env.write("ws/grows.txt", &"a".repeat(CAP - 1));
    let cfg = env.config(&format!("[limits]\nmax_read = \"{CAP}\"\n"));
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, file) = (stop.clone(), env.root().join("grows.txt"));
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
            let mut appended = 0usize;
            // Bounded: at most 64 MiB, and only while the reads go on.
            while !stop.load(Ordering::Relaxed) && appended < 64 << 20 {
                f.write_all(&[b'b'; 512]).unwrap();
                appended += 512;
            }
        })
    };
    let mut outcomes = (0, 0);
    for _ in 0..50 {
        match c.try_call("read_text_file", path("grows.txt")).await {
            Ok(r) if r.is_error == Some(false) => {
                assert!(text(&r).len() <= CAP, "an answer of {} bytes past the {CAP}-byte cap", text(&r).len());
                outcomes.0 += 1;
            }
            Ok(r) => {
                assert!(text(&r).contains("read limit"), "{}", text(&r));
                outcomes.1 += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    c.close().await;
    assert_eq!(outcomes.0 + outcomes.1, 50);
}

/// SECURITY.md: "a token used beyond its `--path` scope, including through a
/// symlink swapped after the check": a link flipped between a target inside
/// the token's paths and one outside, while scoped writes go through it.
#[tokio::test]
async fn a_path_scope_holds_against_a_symlink_swapped_during_the_calls() {
    let env = Env::new();
    env.write("ws/notes/inside.txt", "inside");
    env.write("ws/private/target.txt", "untouched");
    env.symlink("inside.txt", "ws/notes/link");
    let cfg = env.config("[policy]\nwrite_files = \"token\"\n");
    let token = env.grant(&["write_files", "--path", "notes/**"]);
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, dir) = (stop.clone(), env.root().join("notes"));
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) && flips < 2_000_000 {
                let target = if flips.is_multiple_of(2) { "../private/target.txt" } else { "inside.txt" };
                let tmp = dir.join("link.tmp");
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(target, &tmp).unwrap();
                std::fs::rename(&tmp, dir.join("link")).unwrap();
                flips += 1;
            }
            flips
        })
    };
    let mut outcomes = (0, 0);
    for i in 0..200 {
        let r = c
            .call("write_file", json!({"path": "notes/link", "content": format!("w{i}"), "capability_token": token}))
            .await;
        if r.is_error == Some(false) {
            outcomes.0 += 1;
        } else {
            let t = text(&r);
            assert!(t.contains("outside the paths the capability token covers") || t.contains("changed"), "{t}");
            outcomes.1 += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(flipper.join().unwrap() > 0);
    c.close().await;
    assert_eq!(env.read("ws/private/target.txt"), "untouched", "a scoped write landed outside its paths");
    assert_eq!(outcomes.0 + outcomes.1, 200);
}

/// SECURITY.md / docs/audit-format.md: a gateway's start record names the
/// upstream program "(the command's file name, never its arguments, which
/// may hold secrets)".
#[tokio::test]
async fn an_upstreams_command_line_arguments_never_reach_the_log() {
    let env = Env::new();
    let mut upstream = fixture_upstream();
    upstream.push("--api-key=TOP-SECRET-UPSTREAM-ARG".into());
    let upstream: Vec<&str> = upstream.iter().map(String::as_str).collect();
    let c = env.start_proxy(Protocol::Legacy, "fx", &[], &upstream).await;
    c.ok("echo", json!({"text": "hi"})).await;
    c.close().await;
    let log = std::fs::read_to_string(env.audit_log()).unwrap();
    assert!(!log.contains("TOP-SECRET-UPSTREAM-ARG"), "{log}");
    let start = env.audit_records().into_iter().find(|r| r["event"] == "server_start").unwrap();
    assert_eq!(start["details"]["program"], "node", "{start}");
}

/// SECURITY.md: "an entry no record vouches for needs `--danger-unverified`".
#[tokio::test]
async fn an_undo_no_record_vouches_for_needs_danger_unverified() {
    let env = Env::new();
    env.write("ws/a.txt", "precious\n");
    let cfg = env.config(ALLOW_ALL);
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("delete_file", path("a.txt")).await;
    c.close().await;
    let seq = env
        .audit_records()
        .iter()
        .find(|r| r["tool"] == "delete_file" && r["outcome"] == "ok")
        .and_then(|r| r["details"]["undo"]["trash"].as_u64())
        .unwrap();
    // The log that vouched for it is gone (archived elsewhere, say).
    std::fs::rename(env.audit_log(), env.path().join("archived.log")).unwrap();
    let (code, _, err) = env.cli(&["undo", &seq.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--danger-unverified"), "{err}");
    assert!(!env.exists("ws/a.txt"));
    let (code, _, err) = env.cli(&["undo", "--danger-unverified", &seq.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/a.txt"), "precious\n");
}

/// A raw TCP connection to `server` that has sent a POST head with Alice's
/// `key`, the framing header `framing` (`Content-Length: N`, `Transfer-Encoding:
/// chunked`) and the first bytes of a body, `start`.
async fn raw_post_started(
    server: &mcpsec_e2e::HttpServer,
    key: &str,
    framing: &str,
    start: &str,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = server.url.trim_start_matches("http://").trim_end_matches("/mcp").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{framing}\r\n\r\n{start}"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// SECURITY.md: the body limit holds "whatever `Content-Length` says": a
/// chunked body has none.
#[tokio::test]
async fn the_body_limit_holds_for_a_chunked_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http_with("[http]\nmax_body = \"4KiB\"\n").await;
    let mut s = raw_post_started(&server, &alice, "Transfer-Encoding: chunked", "").await;
    let chunk = "x".repeat(2048);
    // Up to 64 KiB, in chunks; the server may answer (and close) early.
    for _ in 0..32 {
        if s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    server.stop().await;
}

/// A session over raw HTTP (protocol 2025-11-25): its id.
async fn raw_session(url: &str, auth: &str) -> String {
    let (status, headers, body) = raw_post(url, &[("authorization", auth)], initialize_body()).await;
    assert_eq!(status, 200, "{body}");
    let id = headers.iter().find(|(k, _)| k == "mcp-session-id").map(|(_, v)| v.clone()).expect("a session id");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let (status, _, _) = raw_post(url, &[("authorization", auth), ("mcp-session-id", &id)], note).await;
    assert_eq!(status, 202);
    id
}

fn call_body(id: u64, tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}).to_string()
}

/// SECURITY.md (the HTTP gate): a client that does not finish sending its
/// request within `request_timeout` gets 408, and holds nothing after.
#[tokio::test]
async fn a_request_not_sent_within_request_timeout_gets_408() {
    use tokio::io::AsyncReadExt;
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http_with("[http]\nrequest_timeout = \"2s\"\n").await;
    let mut s = raw_post_started(&server, &alice, "Content-Length: 1000", "{\"jsonrpc\"").await;
    // The rest of the body never comes: the server answers by itself.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(60), s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer to a request that never finished");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (status, _, _) =
        raw_post(&server.url, &[("authorization", &format!("Bearer {alice}"))], initialize_body()).await;
    assert_eq!(status, 200, "the server still serves");
    server.stop().await;
}

/// SECURITY.md: rate limits are per principal; over HTTP the principal is
/// the user the request authenticated as.
#[tokio::test]
async fn rate_limits_over_http_are_per_user() {
    let env = Env::new();
    let (alice, bob) = (env.add_user("alice"), env.add_user("bob"));
    env.write("ws/a.txt", "a");
    let server = env.serve_http_with("[rate_limit]\ncalls = 3\nwindow = \"1h\"\n").await;
    let a = server.connect(&alice, Protocol::Legacy).await.unwrap();
    let b = server.connect(&bob, Protocol::Legacy).await.unwrap();
    for _ in 0..3 {
        a.ok("read_text_file", path("a.txt")).await;
    }
    let e = a.err("read_text_file", path("a.txt")).await;
    assert!(e.contains("rate limit") && e.contains("`alice`"), "{e}");
    // Bob's budget is his own.
    for _ in 0..3 {
        b.ok("read_text_file", path("a.txt")).await;
    }
    assert!(b.err("read_text_file", path("a.txt")).await.contains("`bob`"));
    a.close().await;
    b.close().await;
    server.stop().await;
    let limited: Vec<Value> = env.audit_records().into_iter().filter(|r| r["outcome"] == "rate_limited").collect();
    assert!(limited.iter().any(|r| r["user"] == "alice") && limited.iter().any(|r| r["user"] == "bob"));
}

/// SECURITY.md (shutdown): "SIGTERM/SIGINT stop new requests (503), let
/// calls under way finish … (30 s at most; a call cut short is flagged in
/// the stop record's `details.unfinished_calls`), then write `server_stop`
/// last". A call that never ends holds the server in that window.
#[tokio::test]
async fn a_stopping_server_refuses_new_requests_and_flags_a_call_it_cut_short() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let auth = format!("Bearer {alice}");
    let upstream = fixture_upstream();
    let upstream: Vec<&str> = upstream.iter().map(String::as_str).collect();
    // The upstream is confined: it may write its marker only where granted.
    let marks = env.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let marker = marks.join("hung");
    std::fs::write(env.fixture_state(), json!({"hang_marker": marker}).to_string()).unwrap();
    let cfg = env.config(&format!(
        "[confine]\nread = [{:?}]\n[proxy.fx]\nwrite = [{:?}]\n",
        env.fixture_state().display().to_string(),
        marks.display().to_string()
    ));
    let mut cmd = env.proxy_http_command("fx", &["--config", cfg.to_str().unwrap()], &upstream);
    cmd.env("FIXTURE_STATE", env.fixture_state());
    let server = mcpsec_e2e::HttpServer::spawn(cmd).await;
    let session = raw_session(&server.url, &auth).await;
    let held = {
        let (url, auth, session) = (server.url.clone(), auth.clone(), session.clone());
        tokio::spawn(async move {
            raw_post(&url, &[("authorization", &auth), ("mcp-session-id", &session)], call_body(9, "hang")).await
        })
    };
    // The call is under way once the upstream has it (bounded wait).
    for _ in 0..500 {
        if marker.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(marker.exists(), "the call never reached the upstream");
    let status = std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    // A new request is not taken: answered 503, or its connection closed
    // unanswered; never served. (Asked until the signal is seen, bounded.)
    let answer = mcpsec_e2e::poll_async(
        || mcpsec_e2e::try_initialize(&server.url, &alice),
        |a| {
            assert!(matches!(a, Ok(200 | 503) | Err(_)), "neither served nor refused: {a:?}");
            *a != Ok(200)
        },
    )
    .await;
    assert_ne!(answer, Ok(200), "a stopping server still took a new request");
    let code = server.wait().await;
    assert_eq!(code, 0);
    held.abort();
    let records = env.audit_records();
    let stop = records.last().unwrap();
    assert_eq!(stop["event"], "server_stop", "{stop}");
    assert_eq!(stop["details"]["unfinished_calls"], true, "{stop}");
}
