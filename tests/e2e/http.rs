//! The streamable HTTP transport: authentication on every request, the
//! user as the principal, DNS-rebinding and size defences, shutdown.

use mcpsec_e2e::{BOTH, Env, POLL_LIMIT, Protocol, initialize_body, poll_async, raw_post, text};
use serde_json::{Value, json};

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn every_request_needs_the_key_of_a_known_user() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http(&[]).await;
    let wrong = format!("mcpsu_{}", "A".repeat(43));
    let no_key: &[(&str, &str)] = &[];
    for (headers, why) in [
        (no_key, "no Authorization header"),
        (&[("authorization", "Bearer ")][..], "an empty key"),
        (&[("authorization", format!("Bearer {wrong}").as_str())][..], "a wrong key"),
        (&[("authorization", format!("Basic {alice}").as_str())][..], "the right key under another scheme"),
    ] {
        let (status, h, body) = raw_post(&server.url, headers, initialize_body()).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(header(&h, "www-authenticate"), Some("Bearer realm=\"mcpsec\""), "{why}");
        assert!(body.contains("mcpsec users add"), "the refusal says what to do: {body}");
        assert!(!body.contains("alice"), "nothing about which users exist: {body}");
    }
    // Every method, not only POST.
    let http = reqwest::Client::new();
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = http.request(method.clone(), &server.url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{method}");
    }
    // An MCP client with a wrong key cannot even connect.
    assert!(server.connect(&wrong, Protocol::Legacy).await.is_err());
    let records = env.audit_records();
    let failures: Vec<_> = records.iter().filter(|r| r["event"] == "auth_failure").collect();
    assert!(failures.len() >= 7, "every failure is audited: {failures:?}");
    let log = std::fs::read_to_string(env.audit_log()).unwrap();
    assert!(!log.contains(&alice[6..]) && !log.contains(&wrong[6..]), "no key in the audit log");
    assert!(!server.stderr.lock().unwrap().contains(&alice[6..]), "no key in the server's log");
}

#[tokio::test]
async fn an_authenticated_client_works_over_both_protocol_generations_as_its_user() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http(&[]).await;
    for protocol in BOTH {
        let c = server.connect(&alice, protocol).await.unwrap();
        assert!(c.tools().await.iter().any(|t| t.name == "read_text_file"), "{protocol:?}");
        assert_eq!(c.ok("read_text_file", json!({"path": "hello.txt"})).await.trim(), "hello world");
        c.close().await;
    }
    let calls: Vec<_> = env.audit_records().into_iter().filter(|r| r["event"] == "tool_call").collect();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|r| r["user"] == "alice"), "the user is the principal: {calls:?}");
    assert_eq!(server.stop().await, 0);
}

#[tokio::test]
async fn a_removed_user_is_refused_at_once() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http(&[]).await;
    let c = server.connect(&alice, Protocol::Legacy).await.unwrap();
    c.ok("read_text_file", json!({"path": "hello.txt"})).await;
    let (code, _, err) = env.cli(&["users", "remove", "alice"]);
    assert_eq!(code, 0, "{err}");
    // The open session does not outlive the key: the next request is refused.
    let refused = c.try_call("read_text_file", json!({"path": "hello.txt"})).await;
    assert!(refused.is_err(), "a removed user's session still works: {refused:?}");
    let (status, _, _) =
        raw_post(&server.url, &[("authorization", &format!("Bearer {alice}"))], initialize_body()).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_token_granted_to_alice_is_refused_for_bob() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let bob = env.add_user("bob");
    env.write("ws/a.txt", "a");
    let token = env.grant(&["delete_files", "--user", "alice"]);
    let server = env.serve_http_with("[policy]\ndelete_files = \"token\"\n").await;
    let as_bob = server.connect(&bob, Protocol::Legacy).await.unwrap();
    let refused = as_bob.err("delete_file", json!({"path": "a.txt", "capability_token": token})).await;
    assert!(refused.contains("mcpsec grant delete_files"), "{refused}");
    assert!(env.exists("ws/a.txt"));
    let as_alice = server.connect(&alice, Protocol::Modern).await.unwrap();
    as_alice.ok("delete_file", json!({"path": "a.txt", "capability_token": token})).await;
    assert!(!env.exists("ws/a.txt"));
    let deletes: Vec<_> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["tool"] == "delete_file" && r["outcome"] != "pending")
        .map(|r| (r["user"].as_str().unwrap().to_owned(), r["outcome"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(deletes, [("bob".into(), "denied".into()), ("alice".into(), "ok".into())]);
}

#[tokio::test]
async fn a_session_belongs_to_the_user_who_opened_it() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let bob = env.add_user("bob");
    let server = env.serve_http(&[]).await;
    let (status, h, _) =
        raw_post(&server.url, &[("authorization", &format!("Bearer {alice}"))], initialize_body()).await;
    assert_eq!(status, 200);
    let session = header(&h, "mcp-session-id").expect("a session id").to_owned();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let auth = format!("Bearer {bob}");
    let headers = [("authorization", auth.as_str()), ("mcp-session-id", session.as_str())];
    let (status, _, body) = raw_post(&server.url, &headers, list).await;
    assert_eq!(status, 404, "bob may not use alice's session: {body}");
    assert!(!body.contains("alice"), "{body}");
    // Audited, as bob, without the session id.
    let refused = refused_sessions(&env);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!((refused[0]["user"].as_str(), refused[0]["outcome"].as_str()), (Some("bob"), Some("denied")));
    assert!(!refused[0].to_string().contains(&session), "{}", refused[0]);
}

/// The `session_refused` records of the audit log.
fn refused_sessions(env: &Env) -> Vec<Value> {
    env.audit_records().into_iter().filter(|r| r["event"] == "session_refused").collect()
}

#[tokio::test]
async fn dns_rebinding_and_cross_origin_requests_are_refused() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http(&[]).await;
    let auth = format!("Bearer {alice}");
    for (name, value) in [("host", "evil.example"), ("origin", "http://evil.example"), ("origin", "null")] {
        let (status, _, body) =
            raw_post(&server.url, &[("authorization", &auth), (name, value)], initialize_body()).await;
        assert_eq!(status, 403, "{name}: {value}: {body}");
        // What was refused, why, and what the operator can change.
        let setting = if name == "host" { "[http] allowed_hosts" } else { "[http] allowed_origins" };
        assert!(body.contains(value) && body.contains(setting), "{name}: {body}");
    }
    let refused: Vec<Value> = env.audit_records().into_iter().filter(|r| r["event"] == "request_refused").collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert_eq!((refused[0]["user"].as_str(), refused[0]["outcome"].as_str()), (Some("alice"), Some("denied")));
    assert_eq!(refused[0]["details"]["host"], "evil.example");
    assert_eq!(
        (&refused[0]["details"]["client"], &refused[0]["details"]["transport"]),
        (&json!("127.0.0.1"), &json!("http"))
    );
    assert_eq!(refused[1]["details"]["origin"], "http://evil.example");
    // The server's own loopback origin is same-origin and passes (the
    // conformance suite's dns-rebinding-protection scenario sends it); the
    // same port under another name, or another port, does not.
    let own = server.url.trim_end_matches("/mcp").to_owned();
    let port = own.rsplit(':').next().unwrap();
    let (status, _, body) =
        raw_post(&server.url, &[("authorization", &auth), ("origin", &own)], initialize_body()).await;
    assert_eq!(status, 200, "{own}: {body}");
    let other_port = format!("http://127.0.0.1:{}", port.parse::<u16>().unwrap().wrapping_add(1));
    for origin in [format!("http://evil.example:{port}"), format!("http://localhost:{port}"), other_port] {
        let (status, _, body) =
            raw_post(&server.url, &[("authorization", &auth), ("origin", &origin)], initialize_body()).await;
        assert_eq!(status, 403, "{origin}: {body}");
    }
    // An allowed origin passes.
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http_with("[http]\nallowed_origins = [\"http://app.example:*\"]\n").await;
    let auth = format!("Bearer {alice}");
    let (status, _, body) =
        raw_post(&server.url, &[("authorization", &auth), ("origin", "http://app.example:3000")], initialize_body())
            .await;
    assert_eq!(status, 200, "{body}");
}

/// Sends `head` (the request line and headers, without the blank line) and
/// an `initialize` body over a connection of its own, byte for byte as
/// given; returns the status and what came back within a few seconds.
async fn raw_request(addr: &str, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = initialize_body();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{head}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    // An event stream may stay open: what came within the time is enough.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), stream.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no answer: {text:?}"));
    (status, text)
}

#[tokio::test]
async fn a_second_host_or_origin_and_an_absolute_target_cannot_pass_the_host_check() {
    // Issue 26, point 12: rmcp checked the first `Host` and `Origin` only,
    // and `Host` rather than an absolute-form target's authority.
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http(&[]).await;
    let addr = host_port(&server.url);
    let own = format!("http://{addr}");
    let auth = format!("Authorization: Bearer {alice}");
    let ok = format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\n{auth}");
    assert_eq!(raw_request(&addr, &ok).await.0, 200, "the well-formed request passes");
    for (head, what) in [
        (format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\n{auth}"), "Host"),
        (format!("POST /mcp HTTP/1.1\r\nHost: evil.example\r\nHost: {addr}\r\n{auth}"), "Host"),
        (
            format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\nOrigin: {own}\r\nOrigin: http://evil.example"),
            "Origin",
        ),
    ] {
        let (status, answer) = raw_request(&addr, &head).await;
        assert_eq!(status, 400, "{head}: {answer}");
        assert!(answer.contains(&format!("more than one `{what}` header")), "{answer}");
    }
    // An absolute-form target: its authority is checked as the Host.
    let evil = format!("POST http://evil.example/mcp HTTP/1.1\r\nHost: {addr}\r\n{auth}");
    let (status, answer) = raw_request(&addr, &evil).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("Host `evil.example`") && answer.contains("[http] allowed_hosts"), "{answer}");
    let own_target = format!("POST {own}/mcp HTTP/1.1\r\nHost: {addr}\r\n{auth}");
    assert_eq!(raw_request(&addr, &own_target).await.0, 200, "an absolute target naming this server passes");
    let userinfo = format!("POST http://{addr}@evil.example/mcp HTTP/1.1\r\nHost: {addr}\r\n{auth}");
    let (status, answer) = raw_request(&addr, &userinfo).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("user information"), "{answer}");
    // Every refusal of alice's is on record.
    let refused: Vec<Value> = env.audit_records().into_iter().filter(|r| r["event"] == "request_refused").collect();
    let statuses: Vec<_> = refused.iter().map(|r| r["details"]["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [400, 400, 400, 403, 400], "{refused:?}");
    assert_eq!(refused[0]["reason"], "more than one Host header");
    assert_eq!(refused[2]["reason"], "more than one Origin header");
    assert_eq!(refused[3]["details"]["host"], "evil.example");
    assert!(refused.iter().all(|r| r["user"] == "alice"), "{refused:?}");
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http_with("[http]\nmax_body = \"4KiB\"\n").await;
    let auth = format!("Bearer {alice}");
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(8192)}}).to_string();
    let (status, _, body) = raw_post(&server.url, &[("authorization", &auth)], big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("4096 bytes") && body.contains("[http] max_body"), "{body}");
    let refused: Vec<Value> = env.audit_records().into_iter().filter(|r| r["event"] == "request_refused").collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["details"]["status"], 413);
    // The server is still up.
    let (status, _, _) = raw_post(&server.url, &[("authorization", &auth)], initialize_body()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn guessing_keys_is_cut_short_per_client_address() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http_with("[http]\nfailed_auth = 3\n").await;
    for _ in 0..3 {
        let (status, _, _) = raw_post(&server.url, &[("authorization", "Bearer mcpsu_guess")], initialize_body()).await;
        assert_eq!(status, 401);
    }
    let (status, h, _) = raw_post(&server.url, &[("authorization", "Bearer mcpsu_guess")], initialize_body()).await;
    assert_eq!(status, 429);
    assert!(header(&h, "retry-after").is_some());
    // Even the right key waits: the address is blocked, not the key.
    let (status, _, _) =
        raw_post(&server.url, &[("authorization", &format!("Bearer {alice}"))], initialize_body()).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn sigterm_lets_the_call_finish_and_records_the_stop_last() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http_with(mcpsec_e2e::ALLOW_ALL).await;
    let c = server.connect(&alice, Protocol::Legacy).await.unwrap();
    let r = c.call("write_file", json!({"path": "w.txt", "content": "kept"})).await;
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(server.stop().await, 0);
    let records = env.audit_records();
    let last = records.last().unwrap();
    assert_eq!(last["event"], "server_stop", "{last}");
    assert_eq!(last["reason"], "stopped by SIGTERM");
    assert_eq!(last["details"]["transport"], "http");
    let (code, _, err) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/w.txt"), "kept");
}

#[tokio::test]
async fn serving_a_network_address_without_tls_needs_danger_plaintext() {
    let env = Env::new();
    let out = env.command(&["--http", "0.0.0.0:0"]).output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("without TLS") && err.contains("--danger-plaintext"), "{err}");
    let out = env.command(&["--http", "127.0.0.1:0", "--user", "x"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "--user means nothing over HTTP");
    let out = env.command(&["--http", "nowhere"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn users_are_added_listed_and_removed_without_showing_keys() {
    let env = Env::new();
    let (code, out, err) = env.cli(&["users", "add", "alice", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "alice");
    let key = v["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("mcpsu_") && v["created_at"].is_string(), "{v}");
    let (code, _, err) = env.cli(&["users", "add", "alice"]);
    assert_eq!(code, 2, "a taken name: {err}");
    assert!(err.contains("exists already"), "{err}");
    let (code, _, err) = env.cli(&["users", "add", "no/slash"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = env.cli(&["users", "list", "--json"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "alice");
    let (_, table, _) = env.cli(&["users", "list"]);
    assert!(table.contains("alice") && !table.contains(&key[6..]) && !out.contains(&key[6..]));
    let (code, _, err) = env.cli(&["users", "remove", "bob"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = env.cli(&["users", "remove", "alice"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<_> = env.audit_records().into_iter().map(|r| r["event"].as_str().unwrap().to_owned()).collect();
    assert_eq!(events, ["user_add", "user_remove"]);
    let log = std::fs::read_to_string(env.audit_log()).unwrap();
    assert!(!log.contains(&key[6..]));
}

#[tokio::test]
async fn a_call_under_way_at_sigterm_finishes_and_is_recorded_before_the_stop() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env
        .serve_http_with("[policy]\nexecute_shell = \"allow\"\n[shell]\nallow = [\"sh\"]\ntimeout = \"60s\"\n")
        .await;
    let c = server.connect(&alice, Protocol::Legacy).await.unwrap();
    let peer = c.peer();
    // The call says it has started (`started`), then waits for `go`.
    let script = ": > started; while [ ! -e go ]; do sleep 0.05; done; echo finished";
    let call = tokio::spawn(async move {
        let mut params = rmcp::model::CallToolRequestParams::new("execute_command");
        params.arguments = json!({"command": "sh", "args": ["-c", script]}).as_object().cloned();
        peer.call_tool(params).await
    });
    let started = poll_async(|| async { env.exists("ws/started") }, |s| *s).await;
    assert!(started, "the call never started");
    // SIGTERM while it runs; it is let go only once the server is stopping.
    server.terminate();
    let stopping = poll_async(|| async { server.stderr.lock().unwrap().contains("stopping on SIGTERM") }, |s| *s).await;
    assert!(stopping, "the server never said it was stopping: {}", server.stderr.lock().unwrap());
    assert!(!call.is_finished(), "the call ended before it was let go");
    env.write("ws/go", "");
    assert_eq!(server.wait().await, 0);
    let answer = tokio::time::timeout(POLL_LIMIT, call).await.expect("the call under way was never answered");
    let r = answer.unwrap().expect("the call under way is answered");
    assert!(text(&r).contains("finished"), "{}", text(&r));
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let records = env.audit_records();
    let events: Vec<_> = records.iter().map(|r| (r["event"].as_str().unwrap(), r["outcome"].as_str())).collect();
    let n = events.len();
    assert_eq!(events[n - 1].0, "server_stop", "{events:?}");
    assert_eq!(events[n - 2], ("tool_call", Some("ok")), "the call's result is recorded before the stop: {events:?}");
}

#[tokio::test]
async fn https_with_a_generated_certificate_authenticates_every_request() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let tls = env.test_cert();
    let server = env.serve_http(&tls.args()).await;
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    let answer = tls.post(&server.url, None, &[], &initialize_body()).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = tls.post(&server.url, Some(&alice), &[], &initialize_body()).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"mcpsec\""), "{answer}");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .post(server.url.replace("https://", "http://"))
        .header("authorization", format!("Bearer {alice}"))
        .body(initialize_body())
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered on the TLS port: {plain:?}");
    let records = env.audit_records();
    assert_eq!(records.iter().find(|r| r["event"] == "server_start").unwrap()["details"]["tls"], true);

    // A world-readable key is refused before anything is served.
    std::fs::set_permissions(&tls.key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend(tls.args());
    let out = env.command(&args).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Reads from `stream` until the server closes it (or resets it): whatever
/// it sent first. Bounded by `within`, so that a server that never closes
/// fails the test instead of hanging it.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open: {}", String::from_utf8_lossy(&got));
    String::from_utf8_lossy(&got).into_owned()
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches("/mcp").to_owned()
}

#[tokio::test]
async fn the_connection_cap_holds_against_a_flood_of_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::new();
    let alice = env.add_user("alice");
    // A header timeout far beyond the test: the held connections stay.
    let server = env.serve_http_with("[http]\nmax_connections = 2\nheader_timeout = \"600s\"\n").await;
    let addr = host_port(&server.url);
    // Two slowloris clients take every connection: one sends half a request
    // head and stops, the other sends nothing at all.
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {alice}\r\n").as_bytes())
        .await
        .unwrap();
    let _silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A third connection is over the cap: closed without an answer, whatever it sends.
    closed_unanswered(|| async { tokio::net::TcpStream::connect(&addr).await.unwrap() }).await;
    // The connections holding the cap were kept: the half request, completed, is served.
    let body = initialize_body();
    let rest = format!(
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    half.write_all(rest.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    half.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    assert!(!server.stderr.lock().unwrap().contains(&alice[6..]), "no key in the server's log");
    assert_eq!(server.stop().await, 0);
}

#[tokio::test]
async fn slow_clients_are_disconnected_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http_with("[http]\nmax_connections = 2\nheader_timeout = \"1s\"\n").await;
    let addr = host_port(&server.url);
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {alice}\r\n").as_bytes())
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Neither slow client holds its connection for ever (header_timeout).
    for (stream, what) in [(&mut half, "half a request head"), (&mut silent, "nothing")] {
        let answer = closed_by_server(stream, POLL_LIMIT).await;
        assert!(!answer.contains("HTTP/1.1 2"), "a client that sent {what} was served: {answer}");
    }
    // Their slots are free again: a real client is served (once the server
    // has let go of them, which it may do just after closing them).
    let status = poll_async(|| mcpsec_e2e::try_initialize(&server.url, &alice), |s| *s == Ok(200)).await;
    assert_eq!(status, Ok(200));
    assert!(!server.stderr.lock().unwrap().contains(&alice[6..]), "no key in the server's log");
    assert_eq!(server.stop().await, 0);
}

/// Opens connections with `connect` until one over a cap is closed without
/// an answer to its request; none is ever served. Retried, because the
/// connections holding the cap may not have been accepted yet when the
/// first try was.
async fn closed_unanswered<F, Fut>(connect: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = tokio::net::TcpStream>,
{
    use tokio::io::AsyncWriteExt;
    for _ in 0..10 {
        let mut s = connect().await;
        let _ = s.write_all(b"GET /mcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let answer = closed_by_server(&mut s, std::time::Duration::from_secs(30)).await;
        assert!(!answer.contains("HTTP/1.1 2"), "a connection over the cap was served: {answer}");
        if answer.is_empty() {
            return;
        }
    }
    panic!("no connection over the cap was closed unanswered");
}

#[tokio::test]
async fn one_client_address_cannot_take_every_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::new();
    let alice = env.add_user("alice");
    let server = env.serve_http_with("[http]\nmax_connections = 8\nmax_connections_per_address = 2\n").await;
    let addr: std::net::SocketAddr = host_port(&server.url).parse().unwrap();
    let from = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((ip, 0).into()).unwrap();
            socket.connect(addr).await.unwrap()
        }
    };
    // 127.0.0.1 holds its two connections, idle.
    let _held = (from("127.0.0.1").await, from("127.0.0.1").await);
    // A third from it is closed unanswered.
    closed_unanswered(|| from("127.0.0.1")).await;
    // Another address is served meanwhile: the cap is per address.
    let mut other = from("127.0.0.2").await;
    let body = initialize_body();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    other.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    other.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    assert_eq!(server.stop().await, 0);
}

#[tokio::test]
async fn a_user_holds_at_most_max_sessions_sessions() {
    let env = Env::new();
    let alice = env.add_user("alice");
    let bob = env.add_user("bob");
    let server = env.serve_http_with("[http]\nmax_sessions = 2\n").await;
    let (as_alice, as_bob) = (format!("Bearer {alice}"), format!("Bearer {bob}"));
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let (status, h, body) = raw_post(&server.url, &[("authorization", &as_alice)], initialize_body()).await;
        assert_eq!(status, 200, "{body}");
        sessions.push(header(&h, "mcp-session-id").expect("a session id").to_owned());
    }
    let (status, h, body) = raw_post(&server.url, &[("authorization", &as_alice)], initialize_body()).await;
    assert_eq!(status, 429, "a third session: {body}");
    assert!(header(&h, "mcp-session-id").is_none(), "no session id with the refusal: {h:?}");
    assert!(body.contains("max_sessions"), "the refusal says what to do: {body}");
    // The cap is per user: bob is not affected.
    let (status, _, body) = raw_post(&server.url, &[("authorization", &as_bob)], initialize_body()).await;
    assert_eq!(status, 200, "bob: {body}");
    // The stateless protocol generation opens no session and is not refused.
    let modern = server.connect(&alice, Protocol::Modern).await.expect("a 2026-07-28 client");
    assert_eq!(modern.ok("read_text_file", json!({"path": "hello.txt"})).await.trim(), "hello world");
    // Closing one lets alice open another.
    let r = reqwest::Client::new()
        .delete(&server.url)
        .header("authorization", &as_alice)
        .header("mcp-session-id", &sessions[0])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "DELETE: {}", r.status());
    let (status, _, body) = raw_post(&server.url, &[("authorization", &as_alice)], initialize_body()).await;
    assert_eq!(status, 200, "after closing one: {body}");
    // The refused session did not count: alice is at her cap again.
    let (status, _, _) = raw_post(&server.url, &[("authorization", &as_alice)], initialize_body()).await;
    assert_eq!(status, 429);
    // Each refusal is audited as alice's.
    let refused: Vec<(String, String)> = refused_sessions(&env)
        .iter()
        .map(|r| (r["user"].as_str().unwrap().to_owned(), r["outcome"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(refused, vec![("alice".to_owned(), "rate_limited".to_owned()); 2]);
}
