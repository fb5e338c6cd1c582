//! Both protocol generations, and malformed JSON-RPC on the wire.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use mcpsec_e2e::{BOTH, Env, Protocol, path};
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};

#[tokio::test]
async fn both_generations_list_and_call() {
    let env = Env::new();
    for protocol in BOTH {
        let client = env.start(protocol, &[]).await;
        let expected = match protocol {
            Protocol::Legacy => ProtocolVersion::V_2025_11_25,
            Protocol::Modern => ProtocolVersion::V_2026_07_28,
        };
        assert_eq!(client.negotiated(), Some(expected), "{protocol:?}");
        let names: Vec<String> = client.tools().await.iter().map(|t| t.name.to_string()).collect();
        assert!(names.contains(&"read_text_file".to_string()), "{protocol:?}: {names:?}");
        assert_eq!(client.ok("read_text_file", path("hello.txt")).await, "hello world\n");
        let refused = client.err("read_text_file", path("../outside/secret.txt")).await;
        assert!(refused.starts_with("refused:"), "{refused}");
        client.close().await;
    }
}

#[tokio::test]
async fn unknown_tool_is_a_protocol_error() {
    let env = Env::new();
    for protocol in BOTH {
        let client = env.start(protocol, &[]).await;
        let e = client.try_call("format_disk", json!({})).await.unwrap_err();
        assert!(e.contains("unknown tool"), "{e}");
        // The session survives it.
        client.ok("read_text_file", path("hello.txt")).await;
        client.close().await;
    }
}

/// `mcpsec serve` on `env`'s root with `extra` arguments, its stdin and
/// stdout piped for raw JSON-RPC lines.
fn raw_server(env: &Env, extra: &[&std::ffi::OsStr]) -> std::process::Child {
    mcpsec_e2e::mcpsec_command()
        .arg("serve")
        .args(extra)
        .arg("--root")
        .arg(env.root())
        .env("MCPSEC_STATE_DIR", env.path().join("state"))
        .env("XDG_CONFIG_HOME", env.path().join("no-config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Drives the binary with raw lines: every reply must be JSON-RPC, and the
/// server must keep serving after each malformed line.
#[test]
fn malformed_lines_get_errors_and_the_server_keeps_serving() {
    let env = Env::new();
    let mut child = raw_server(&env, &[]);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut send = |line: &str| {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    };
    let mut recv = || -> Value {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout carried a non-JSON line {line:?}: {e}"))
    };
    send(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#,
    );
    assert_eq!(recv()["id"], 1);
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    let call = |id: u64| {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"read_text_file","arguments":{"path":"hello.txt"}}}).to_string()
    };
    let malformed: [(&str, i64, Value); 7] = [
        ("this is not json", -32700, Value::Null),
        ("{\"jsonrpc\":\"2.0\",\"id\":5,", -32700, Value::Null),
        ("[1,2,3", -32700, Value::Null),
        ("\u{0}\u{1}\u{2}", -32700, Value::Null),
        (r#"{"jsonrpc":"2.0","id":6}"#, -32600, json!(6)),
        (r#"{"id":"x","method":42}"#, -32600, json!("x")),
        (r#"{"jsonrpc":"2.0","id":{"nested":true},"method":"tools/list"}"#, -32600, Value::Null),
    ];
    for (i, (line, code, id)) in malformed.iter().enumerate() {
        send(line);
        let reply = recv();
        assert_eq!(reply["jsonrpc"], "2.0", "{line}: {reply}");
        assert_eq!(reply["error"]["code"], *code, "{line}: {reply}");
        assert_eq!(reply["id"], *id, "{line}: {reply}");
        // Still serving.
        let id = 100 + i as u64;
        send(&call(id));
        let ok = recv();
        assert_eq!(ok["id"], id, "{ok}");
        assert_eq!(ok["result"]["content"][0]["text"], "hello world\n", "{ok}");
    }
    // A tools/call with arguments of the wrong shape is a tool error, not a crash.
    send(&json!({"jsonrpc":"2.0","id":200,"method":"tools/call","params":{"name":"read_text_file","arguments":{"path":42}}}).to_string());
    let r = recv();
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(r["result"]["content"][0]["text"].as_str().unwrap().contains("invalid arguments"), "{r}");

    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "server exited with {status}");
}

/// Regression: rmcp cancels the transport's `receive` while it selects, and
/// a request line longer than the read buffer once lost its start when a
/// cancellation fell between two reads ("Parse error at line 1 column 1"
/// under 16 pipelined 4 KiB writes). Many large pipelined requests must all
/// come back as results.
#[test]
fn large_pipelined_requests_are_never_torn() {
    let env = Env::new();
    let cfg = env.config("[policy]\nwrite_files = \"allow\"\n[undo]\nenabled = false\n");
    let mut child = raw_server(&env, &["--config".as_ref(), cfg.as_os_str()]);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    writeln!(stdin, "{init}\n{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}}").unwrap();
    const N: u64 = 400;
    let writer = std::thread::spawn(move || {
        for id in 1..=N {
            // 5–40 KiB each, so that lines straddle every buffer boundary.
            let content = "x".repeat(5_000 + (id as usize * 7_919) % 35_000);
            let req = json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
                "params":{"name":"write_file","arguments":{"path":format!("f{}.txt", id % 8),"content":content}}});
            writeln!(stdin, "{req}").unwrap();
        }
        stdin
    });
    let mut seen = 0;
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["id"] == 0 {
            continue;
        }
        assert!(v.get("error").is_none(), "{v}");
        assert_eq!(v["result"]["isError"], false, "{v}");
        seen += 1;
        if seen == N {
            break;
        }
    }
    drop(writer.join().unwrap());
    assert!(child.wait().unwrap().success());
}
