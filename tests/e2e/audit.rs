//! The audit log end to end: what a session records, redaction, the
//! `mcpsec audit` commands, crashes, failing closed, concurrent writers.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpsec_e2e::{ALLOW_ALL, BOTH, Client, Env, POLL_LIMIT, Protocol, path, poll_async, text};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

/// Starts a server allowing every capability, with `extra` arguments.
async fn allow_all(env: &Env, extra: &[&str]) -> Client {
    let cfg = env.config(ALLOW_ALL);
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.start(Protocol::Legacy, &args).await
}

/// The `tool_call` records of a log.
fn tool_calls(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["event"] == "tool_call").collect()
}

/// Asserts that `audit verify` passes and that it counted `records`.
fn assert_verifies(env: &Env, records: usize) {
    let (code, out, err) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "verify failed: {out}{err}");
    let head = env.audit_records().last().map(|r| r["hash"].as_str().unwrap().to_owned()).unwrap();
    assert!(out.starts_with(&format!("ok: {records} records, head {head}")), "{out}");
}

/// Asserts that the records' seqs are 1, 2, 3, … in file order.
fn assert_gap_free(records: &[Value]) {
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected);
}

#[tokio::test]
async fn every_call_is_recorded_with_intents_before_changes() {
    for protocol in BOTH {
        every_call_is_recorded(protocol).await;
    }
}

async fn every_call_is_recorded(protocol: Protocol) {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    let c = env.start(protocol, &["--config", cfg.to_str().unwrap(), "--user", "alice"]).await;
    assert_eq!(c.ok("read_text_file", path("hello.txt")).await, "hello world\n");
    c.ok("list_directory", path(".")).await;
    c.err("read_text_file", path("../outside/secret.txt")).await;
    c.err("read_text_file", json!({"path": "hello.txt", "head": 1, "tail": 1})).await;
    assert!(c.try_call("no_such_tool", json!({"path": "x"})).await.is_err());
    c.ok("write_file", json!({"path": "new.txt", "content": "fresh"})).await;
    c.ok("delete_file", path("hello.txt")).await;
    c.close().await;
    assert_eq!(env.read("ws/new.txt"), "fresh");
    assert!(!env.exists("ws/hello.txt"));

    let records = env.audit_records();
    assert_gap_free(&records);
    assert_eq!(records.first().unwrap()["event"], "server_start");
    assert_eq!(records.last().unwrap()["event"], "server_stop", "server_stop must be last");
    let session = records[0]["session"].as_str().unwrap();
    assert_eq!(session.len(), 16, "{session}");
    for r in &records {
        assert_eq!(r["user"], "alice", "{r}");
        assert_eq!(r["session"], session, "{r}");
        assert_eq!(r["v"], 1, "{r}");
    }
    let calls = tool_calls(&records);
    let summary: Vec<(&str, &str)> =
        calls.iter().map(|r| (r["tool"].as_str().unwrap(), r["outcome"].as_str().unwrap())).collect();
    assert_eq!(
        summary,
        [
            ("read_text_file", "ok"),
            ("list_directory", "ok"),
            ("read_text_file", "denied"),
            ("read_text_file", "invalid"),
            ("no_such_tool", "invalid"),
            ("write_file", "pending"),
            ("write_file", "ok"),
            ("delete_file", "pending"),
            ("delete_file", "ok"),
        ]
    );
    assert_eq!(calls[0]["args"], json!({"path": "hello.txt"}));
    assert_eq!(calls[0]["capability"], "read_files");
    assert!(calls[0]["result"].as_str().unwrap().contains("hello world"), "{}", calls[0]);
    assert!(calls[2]["reason"].as_str().unwrap().contains("outside"), "{}", calls[2]);
    assert!(calls[4]["reason"].as_str().unwrap().contains("unknown tool"), "{}", calls[4]);
    // Each mutating call: an intent before it, its result pointing at it.
    for (intent, result) in [(calls[5], calls[6]), (calls[7], calls[8])] {
        assert!(intent.get("intent").is_none(), "{intent}");
        assert!(intent.get("duration_us").is_none(), "{intent}");
        assert_eq!(result["intent"], intent["seq"], "{result}");
        assert_eq!(result["args"], intent["args"]);
        assert!(result["duration_us"].is_u64(), "{result}");
    }
    for r in [calls[0], calls[1], calls[2], calls[3], calls[4]] {
        assert!(r.get("intent").is_none(), "only mutating calls have intents: {r}");
    }
    assert_verifies(&env, records.len());
    // 1 start + 9 call records + 1 stop.
    assert_eq!(records.len(), 11);
}

#[tokio::test]
async fn no_secret_reaches_the_log_or_the_server_logs() {
    let env = Env::new();
    let aws = "AKIAQ3EGUBZ7XJ4LWP2N";
    let mcps = "mcps_Xk3p9QzL7vB2nR8tW4yH6jF1cD5s";
    let github = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5";
    let gitlab = "glpat-Zq8Rt2Yw6Ux4Vs1Nm9Lk";
    let password = "hunter2-Corr3ct-H0rse";
    let stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    // Known by its key name only (issue 26, point 11).
    let pass = "Tr0ub4dor3Batt3ryStapl3";
    assert_eq!(github.len(), 4 + 36);
    let secrets = [aws, mcps, github, gitlab, password, stripe, pass];

    let cfg = env.config(ALLOW_ALL);
    let mut cmd = env.command(&["--config", cfg.to_str().unwrap(), "--user", "alice"]);
    // The most talkative level the product offers, to catch any log line.
    cmd.env("RUST_LOG", "debug");
    let stderr_path = env.path().join("server.stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let c = Client::connect_with_stderr(cmd, Protocol::Legacy, Stdio::from(stderr)).await;

    // A key in a file's content (short, and long enough to be cut).
    c.ok("write_file", json!({"path": "keys.env", "content": format!("AWS_ACCESS_KEY_ID={aws}\n")})).await;
    let long = format!("{}{aws} {github}\n{}", "x".repeat(250), "y".repeat(400));
    c.ok("write_file", json!({"path": "long.txt", "content": long})).await;
    // Secrets in extra arguments and under sensitive names.
    c.call("read_text_file", json!({"path": "hello.txt", "auth": mcps})).await;
    c.call("read_text_file", json!({"path": "hello.txt", "password": password})).await;
    c.call("list_directory", json!({"path": ".", "note": format!("use {github} please")})).await;
    c.call("write_file", json!({"path": "x.txt", "content": "x", "options": {"db_password": password}})).await;
    c.call("read_text_file", json!({"path": "hello.txt", "pass": pass, "options": {"smtp_pw": pass}})).await;
    c.ok("write_file", json!({"path": "smtp.conf", "content": format!("user=alice\nsmtp_pass={pass}\npw: {pass}\n")}))
        .await;
    c.ok("read_text_file", path("smtp.conf")).await;
    // A file name holding a token: in args and in the result text.
    c.ok("write_file", json!({"path": format!("{gitlab}.txt"), "content": "x"})).await;
    c.call("read_text_file", path(&format!("{gitlab}.txt"))).await;
    // Read back: the result summary holds the file's content.
    c.ok("read_text_file", path("keys.env")).await;
    c.ok("write_file", json!({"path": "stripe.txt", "content": format!("stripe_key: {stripe}")})).await;
    c.ok("read_text_file", path("stripe.txt")).await;
    // An edit whose failure message may echo the text searched for.
    c.call("edit_file", json!({"path": "keys.env", "edits": [{"oldText": format!("missing {mcps}"), "newText": "z"}]}))
        .await;
    c.ok("edit_file", json!({"path": "keys.env", "edits": [{"oldText": format!("AWS_ACCESS_KEY_ID={aws}"), "newText": format!("KEY={github}")}]}))
        .await;
    // A token as the name of a tool that does not exist.
    assert!(c.try_call(mcps, json!({"path": "hello.txt"})).await.is_err());
    c.close().await;

    let log = std::fs::read_to_string(env.audit_log()).unwrap();
    assert!(log.contains("[REDACTED"), "{log}");
    assert!(log.contains("keys.env"), "the log keeps what is not secret: {log}");
    let mut leaks = Vec::new();
    // The trash keeps overwritten files verbatim (the user's data, as on
    // disk, for undo); everything else the state holds is checked.
    let trash = env.state().join("trash");
    // A kept object is `trash/<seq>` (or below it, for a tree); manifests
    // (rows of `trash/index.db`) are checked.
    let kept_data = |p: &Path| {
        p.strip_prefix(&trash).ok().and_then(|rel| rel.components().next()).is_some_and(|first| {
            first.as_os_str().to_str().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    for entry in walk(&env.state()).into_iter().filter(|p| !kept_data(p)).chain([stderr_path]) {
        let bytes = std::fs::read(&entry).unwrap();
        let content = String::from_utf8_lossy(&bytes);
        for secret in secrets {
            if let Some(line) = content.lines().find(|l| l.contains(secret)) {
                leaks.push(format!("{} holds {secret}: {line}", entry.display()));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    assert_verifies(&env, env.audit_records().len());
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[tokio::test]
async fn audit_grep_tail_path_checkpoint_and_tampering() {
    let env = Env::new();
    let c = allow_all(&env, &["--user", "alice"]).await;
    c.ok("read_text_file", path("hello.txt")).await;
    c.err("read_text_file", path("../outside/secret.txt")).await;
    c.ok("write_file", json!({"path": "a.txt", "content": "a"})).await;
    c.close().await;
    let c = allow_all(&env, &["--user", "bob"]).await;
    c.ok("list_directory", path(".")).await;
    c.close().await;
    let records = env.audit_records();
    assert_eq!(records.len(), 5 + 1 + 3);
    let bob_session = records.iter().find(|r| r["user"] == "bob").unwrap()["session"].as_str().unwrap().to_owned();

    // --tool with --json: JSON Lines of exactly the matching records.
    let (code, out, _) = env.cli(&["audit", "grep", "--tool", "write_file", "--json"]);
    assert_eq!(code, 0);
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().all(|r| r["tool"] == "write_file"));
    assert_eq!((lines[0]["outcome"].as_str(), lines[1]["outcome"].as_str()), (Some("pending"), Some("ok")));
    // --outcome denied, human-readable.
    let (code, out, _) = env.cli(&["audit", "grep", "--outcome", "denied"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("alice") && out.contains("read_text_file") && out.contains("denied"), "{out}");
    assert!(out.contains("../outside/secret.txt"), "the key argument is shown: {out}");
    // --user, --session, --event, --count.
    let count = |args: &[&str]| -> (i32, String) {
        let mut all = vec!["audit", "grep", "--count"];
        all.extend_from_slice(args);
        let (code, out, err) = env.cli(&all);
        assert!(err.is_empty(), "{err}");
        (code, out.trim().to_owned())
    };
    assert_eq!(count(&["--user", "bob"]), (0, "3".into()));
    assert_eq!(count(&["--user", "alice"]), (0, "6".into()));
    assert_eq!(count(&["--session", &bob_session]), (0, "3".into()));
    assert_eq!(count(&["--event", "server_start"]), (0, "2".into()));
    assert_eq!(count(&["--user", "alice", "--tool", "read_text_file"]), (0, "2".into()));
    assert_eq!(count(&[r#""path":"hello\.txt""#]), (0, "1".into()));
    assert_eq!(count(&[]), (0, "9".into()));
    // Time filters: everything is from the last hour, nothing before it.
    assert_eq!(count(&["--since", "1h"]), (0, "9".into()));
    assert_eq!(count(&["--since", "2000-01-01T00:00:00Z"]), (0, "9".into()));
    let (code, out, _) = env.cli(&["audit", "grep", "--until", "2000-01-01T00:00:00Z"]);
    assert_eq!((code, out.as_str()), (1, ""), "nothing matches: exit 1 like grep");
    let (code, out, _) = env.cli(&["audit", "grep", "--until", "1h"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(count(&["--user", "nobody"]), (1, "0".into()));
    let (code, _, err) = env.cli(&["audit", "grep", "--since", "yesterday-ish"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--since"), "{err}");
    let (code, _, err) = env.cli(&["audit", "grep", "("]);
    assert_eq!(code, 2, "{err}");

    // tail.
    let (code, out, _) = env.cli(&["audit", "tail", "-n", "2", "--json"]);
    assert_eq!(code, 0);
    let tail: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(tail, records[records.len() - 2..].to_vec());
    let (code, out, _) = env.cli(&["audit", "tail", "-n", "2"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().last().unwrap().contains("server_stop"), "{out}");

    // path: the absolute path alone on stdout (`tail -f "$(mcpsec audit
    // path)"`), the sync mode and what a crash can lose on stderr.
    let (code, out, err) = env.cli(&["audit", "path"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{}\n", env.audit_log().display()), "stdout is the path and nothing else");
    assert!(Path::new(out.trim_end()).is_absolute(), "{out}");
    assert!(err.starts_with("sync: changes ") && err.contains("10ms") && err.contains("never a change"), "{err}");
    let batch = env.path().join("batch.toml");
    std::fs::write(&batch, "[audit]\nsync = \"batch\"\nsync_interval = \"250ms\"\n").unwrap();
    let (code, out, err) = env.cli(&["--config", batch.to_str().unwrap(), "audit", "path"]);
    assert_eq!(code, 0);
    assert_eq!(out, format!("{}\n", env.audit_log().display()));
    assert!(err.starts_with("sync: batch ") && err.contains("250ms"), "{err}");
    // A relative --state-dir is made absolute.
    let (code, out, _) = env.cli(&["--state-dir", "state", "audit", "path"]);
    assert_eq!(code, 0);
    assert_eq!(out, format!("{}\n", env.audit_log().display()));

    // checkpoint, more calls, verify against it.
    let cp = env.path().join("cp.json");
    let (code, _, err) = env.cli(&["audit", "checkpoint", "--out", cp.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let cp_json: Value = serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
    assert_eq!(cp_json["seq"], 9);
    assert_eq!(cp_json["hash"], records[8]["hash"]);
    let c = allow_all(&env, &["--user", "alice"]).await;
    c.ok("read_text_file", path("a.txt")).await;
    c.close().await;
    let (code, out, err) = env.cli(&["audit", "verify", "--checkpoint", cp.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: 12 records, head "), "{out}");
    // Cutting the records after the checkpoint's is not detectable; cutting
    // into them is.
    let (code, _, _) = env.cli(&["audit", "checkpoint", "--out", cp.to_str().unwrap()]);
    assert_eq!(code, 0);
    let full = std::fs::read_to_string(env.audit_log()).unwrap();
    let lines: Vec<&str> = full.lines().collect();
    std::fs::write(env.audit_log(), lines[..lines.len() - 2].iter().map(|l| format!("{l}\n")).collect::<String>())
        .unwrap();
    let (code, out, _) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "without a checkpoint a cut tail looks whole: {out}");
    let (code, out, _) = env.cli(&["audit", "verify", "--checkpoint", cp.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("truncated") && out.contains("seq 10") && out.contains("seq 12"), "{out}");
    let (code, out, _) = env.cli(&["audit", "verify", "--checkpoint", cp.to_str().unwrap(), "--json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["ok"].as_bool(), v["problem"].as_str()), (Some(false), Some("truncated")), "{v}");

    // An edit in the middle is named with its line.
    std::fs::write(env.audit_log(), &full).unwrap();
    assert_verifies(&env, 12);
    let edited = full.replacen("\"path\":\"hello.txt\"", "\"path\":\"other.txt\"", 1);
    assert_ne!(edited, full);
    let line = full.lines().position(|l| l.contains("\"path\":\"hello.txt\"")).unwrap() + 1;
    std::fs::write(env.audit_log(), &edited).unwrap();
    let (code, out, _) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("audit.log:{line}: edited (seq {line})")), "{out}");
    let (code, out, _) = env.cli(&["audit", "verify", "--json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["problem"].as_str(), v["line"].as_u64()), (Some("edited"), Some(line as u64)), "{v}");
    // A checkpoint is refused for a log that does not verify.
    let (code, out, _) = env.cli(&["audit", "checkpoint"]);
    assert_eq!(code, 1, "{out}");
    // A deleted log (or a wrong state dir) is not an empty chain.
    std::fs::remove_file(env.audit_log()).unwrap();
    let (code, out, _) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no audit log at") && out.contains("deleted"), "{out}");
    let (code, out, _) = env.cli(&["audit", "verify", "--checkpoint", cp.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("truncated"), "{out}");
}

/// Asserts that `out` holds no character that acts on a terminal or hides
/// (line ends aside), and shows the model's escapes as `\u{XXXX}`.
#[track_caller]
fn assert_escaped(what: &str, out: &str) {
    let raw = out.chars().find(|&c| {
        c != '\n'
            && (c.is_control()
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
    });
    assert_eq!(raw, None, "{what}: a raw {raw:?} reaches the terminal: {out:?}");
    assert!(out.contains("\\u{001B}"), "{what}: ESC is shown escaped: {out:?}");
}

#[tokio::test]
async fn the_models_terminal_escapes_never_reach_the_investigators_terminal() {
    // Issue 26, point 2: erase the line, cursor up, an OSC 52 clipboard
    // write, a right-to-left override and a line break that would forge a
    // line of its own, in a path, a tool name and a token's note.
    let hostile = "x\u{1b}[2K\r\u{1b}[1A\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{202E}hs.txt\nforged line";
    let env = Env::new();
    let c = allow_all(&env, &["--user", "alice"]).await;
    c.ok("write_file", json!({"path": hostile, "content": "one"})).await;
    c.ok("write_file", json!({"path": hostile, "content": "two"})).await;
    assert!(c.try_call("evil\u{1b}]0;owned\u{7}\u{200B}", json!({"path": hostile})).await.is_err());
    c.close().await;
    let writes = env.audit_records().iter().filter(|r| r["tool"] == "write_file").count();

    let (code, out, err) = env.cli(&["audit", "grep", "--tool", "write_file"]);
    assert_eq!(code, 0, "{err}");
    assert_escaped("audit grep", &out);
    assert_eq!(out.lines().count(), writes, "one line a record, none forged: {out}");
    let (code, out, err) = env.cli(&["audit", "grep", "owned"]);
    assert_eq!(code, 0, "{err}");
    assert_escaped("audit grep, a tool name", &out);
    let (code, out, err) = env.cli(&["audit", "tail", "-n", "20"]);
    assert_eq!(code, 0, "{err}");
    assert_escaped("audit tail", &out);
    // --json stays JSON, the text exactly as recorded.
    let (_, out, _) = env.cli(&["audit", "grep", "--tool", "write_file", "--json"]);
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["args"]["path"], hostile);

    let (code, out, err) = env.cli(&["trash", "list"]);
    assert_eq!(code, 0, "{err}");
    assert_escaped("trash list", &out);
    let seq =
        env.audit_records().iter().find(|r| r["tool"] == "write_file" && r["outcome"] == "pending").unwrap()["seq"]
            .as_u64()
            .unwrap();
    let seq = (seq + 2).to_string();
    let (code, out, err) = env.cli(&["undo", &seq, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_escaped("undo --dry-run", &out);
    assert!(out.lines().next().unwrap().ends_with("\\u{000A}forged line"), "the path on one line: {out}");
    // An error quoting a record: the unknown tool's.
    let unknown =
        env.audit_records().iter().find(|r| r["tool"].as_str().is_some_and(|t| t.starts_with("evil"))).unwrap()["seq"]
            .as_u64()
            .unwrap();
    let (code, _, err) = env.cli(&["undo", &unknown.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert_escaped("undo's refusal", &err);

    env.grant(&["read_files", "--note", hostile]);
    let (code, out, err) = env.cli(&["tokens"]);
    assert_eq!(code, 0, "{err}");
    assert_escaped("tokens", &out);
    assert_eq!(out.lines().count(), 2, "a header and one row: {out}");

    let odd = env.path().join("root\u{1b}]0;t\u{7}");
    std::fs::create_dir(&odd).unwrap();
    let (_, out, _) = env.cli(&["doctor", "--root", odd.to_str().unwrap()]);
    assert_escaped("doctor", &out);
    // A usage error quoting the argument.
    let (code, _, err) = env.cli(&["undo", "1\u{202E}\u{1b}[2K"]);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains('\u{202E}') && !err.contains('\u{1b}') && err.contains("\\u{202E}"), "{err:?}");
}

/// Issues `write_file` calls on 16 concurrent workers until the server
/// dies; returns the paths whose writes were acknowledged.
async fn write_until_killed(client: &Client, round: usize) -> Vec<String> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 0..16 {
        let peer = client.peer();
        let acked = acked.clone();
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let p = format!("crash-{round}-{w}-{i}.txt");
                let mut params = CallToolRequestParams::new("write_file");
                params.arguments =
                    json!({"path": p, "content": format!("round {round} worker {w} call {i}\n")}).as_object().cloned();
                match peer.call_tool(params).await {
                    Ok(r) if r.is_error == Some(false) => acked.lock().unwrap().push(p),
                    Ok(r) => panic!("write_file {p} failed: {}", text(&r)),
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once a round-dependent number of writes were acknowledged.
    let target = 20 + 17 * round;
    let acked_now = || {
        let n = acked.lock().unwrap().len();
        async move { n }
    };
    let n = poll_async(acked_now, |n| *n >= target).await;
    assert!(n >= target, "only {n} of {target} writes were acknowledged in {POLL_LIMIT:?}");
    let status = std::process::Command::new("kill").args(["-9", &client.pid().to_string()]).status().unwrap();
    assert!(status.success());
    for w in workers {
        tokio::time::timeout(POLL_LIMIT, w).await.expect("a call hangs after the kill").unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

/// Regression: without `USER` (a container, a service) the principal was
/// `uid-N` even for a uid with a name, `uid-0` for root.
#[tokio::test]
async fn without_user_the_principal_is_the_name_of_the_uid_in_the_password_database() {
    let env = Env::new();
    let id = |flag| {
        let out = std::process::Command::new("id").arg(flag).output().unwrap();
        out.status.success().then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
    };
    // A uid without an entry is named `uid-N`.
    let name = id("-un").unwrap_or_else(|| format!("uid-{}", id("-u").unwrap()));
    let mut cmd = env.command(&[]);
    cmd.env_remove("USER").env_remove("LOGNAME");
    let c = Client::connect(cmd, Protocol::Legacy).await;
    c.ok("read_text_file", path("hello.txt")).await;
    c.close().await;
    // And the CLI's own records (a grant).
    let out = mcpsec_e2e::mcpsec_command()
        .args(["grant", "read_files"])
        .current_dir(env.path())
        .env("MCPSEC_STATE_DIR", env.state())
        .env("XDG_CONFIG_HOME", env.path().join("no-config"))
        .env_remove("USER")
        .env_remove("LOGNAME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = env.audit_records();
    let events: Vec<&str> = records.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["server_start", "tool_call", "server_stop", "grant"]);
    for r in &records {
        assert_eq!(r["user"], name.as_str(), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_server_is_killed() {
    let env = Env::new();
    let mut all_acked = Vec::new();
    for round in 0..3 {
        // The last round with `sync = "batch"`: a killed process (unlike a
        // machine crash) loses nothing acknowledged in that mode either.
        let client = if round == 2 {
            let cfg = env.config(&format!("{ALLOW_ALL}[audit]\nsync = \"batch\"\nsync_interval = \"50ms\"\n"));
            env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await
        } else {
            allow_all(&env, &[]).await
        };
        let acked = write_until_killed(&client, round).await;
        drop(client);
        let (code, out, err) = env.cli(&["audit", "verify"]);
        assert!(code == 0 || (code == 1 && out.contains("torn")), "after kill {round}: {out}{err}");
        let records = env.audit_records();
        let ok: HashSet<&str> = tool_calls(&records)
            .into_iter()
            .filter(|r| r["tool"] == "write_file" && r["outcome"] == "ok")
            .map(|r| r["args"]["path"].as_str().unwrap())
            .collect();
        for p in &acked {
            assert!(ok.contains(p.as_str()), "round {round}: acknowledged write of {p} is not in the log");
            assert!(env.exists(&format!("ws/{p}")), "{p}");
        }
        // Every ok result completes an intent written before it.
        let pending: HashSet<u64> = tool_calls(&records)
            .into_iter()
            .filter(|r| r["outcome"] == "pending")
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        for r in tool_calls(&records).into_iter().filter(|r| r["outcome"] == "ok") {
            let intent = r["intent"].as_u64().unwrap();
            assert!(pending.contains(&intent) && intent < r["seq"].as_u64().unwrap(), "{r}");
        }
        all_acked.extend(acked);
    }
    // A server started after the last kill recovers any torn tail.
    let client = allow_all(&env, &[]).await;
    client.ok("read_text_file", path("hello.txt")).await;
    client.close().await;
    let (code, out, err) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(all_acked.len() >= 20 + 37 + 54, "{}", all_acked.len());
    let starts = env.audit_records().iter().filter(|r| r["event"] == "server_start").count();
    assert_eq!(starts, 4);
}

#[tokio::test]
async fn a_torn_tail_is_reported_recovered_and_skipped_by_readers() {
    let env = Env::new();
    let c = env.start(Protocol::Legacy, &[]).await;
    c.ok("read_text_file", path("hello.txt")).await;
    c.close().await;
    // A crash in the middle of writing a record: half a line, no newline.
    let full = std::fs::read_to_string(env.audit_log()).unwrap();
    let last = full.lines().last().unwrap();
    let torn = format!("{full}{}", &last[..last.len() / 2]);
    std::fs::write(env.audit_log(), &torn).unwrap();
    let (code, out, _) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("audit.log:4: torn"), "{out}");
    let consistent = |records: usize| {
        let (code, out, _) = env.cli(&["audit", "grep"]);
        assert_eq!((code, out.lines().count()), (0, records), "{out}");
        let (_, out, _) = env.cli(&["audit", "grep", "--count"]);
        assert_eq!(out.trim(), records.to_string(), "grep --count counts the records grep shows");
        let (_, out, _) = env.cli(&["audit", "grep", "--count", "seq"]);
        assert_eq!(out.trim(), records.to_string(), "grep --count PATTERN counts the records grep shows");
        let (_, out, _) = env.cli(&["audit", "tail", "-n", "1", "--json"]);
        assert!(serde_json::from_str::<Value>(out.trim()).is_ok(), "tail shows a whole record: {out}");
    };
    consistent(3);
    // The next server closes the torn line, says so, and continues the chain.
    let c = env.start(Protocol::Legacy, &[]).await;
    c.ok("read_text_file", path("hello.txt")).await;
    c.close().await;
    let (code, out, err) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: 7 records"), "{out}");
    assert!(err.contains("audit.log:4") && err.contains("incomplete"), "{err}");
    let records = env.audit_records();
    let recovered = records.iter().find(|r| r["event"] == "recovered").unwrap();
    assert_eq!(recovered["seq"], 4, "{recovered}");
    assert!(recovered["reason"].as_str().unwrap().contains("line 4"), "{recovered}");
    consistent(7);
    assert!(std::fs::read_to_string(env.audit_log()).unwrap().starts_with(&torn), "nothing was deleted");
}

/// The start record is written while the handshake is answered, and no
/// request but the handshake's reaches the server before it is durable: a
/// start that cannot be recorded (here, a full log) refuses every request
/// with the reason, and nothing acts.
#[tokio::test]
async fn a_start_that_cannot_be_recorded_refuses_every_call_with_the_reason() {
    let env = Env::new();
    let cfg = env.config(&format!("{ALLOW_ALL}[audit]\nmax_size = \"100\"\n"));
    for protocol in BOTH {
        let c = env.start(protocol, &["--config", cfg.to_str().unwrap()]).await;
        let refused = |e: &str| {
            e.contains("refused: the server's start could not be recorded")
                && e.contains("full")
                && e.contains("max_size")
        };
        let e = c.try_call("write_file", json!({"path": "new.txt", "content": "x"})).await.unwrap_err();
        assert!(refused(&e), "{e}");
        let e = c.try_call("delete_file", path("hello.txt")).await.unwrap_err();
        assert!(refused(&e), "{e}");
        let e = c.try_call("read_text_file", path("hello.txt")).await.unwrap_err();
        assert!(refused(&e) && !e.contains("hello world"), "{e}");
        c.close().await;
        assert!(!env.exists("ws/new.txt"), "a refused write changed the disk");
        assert_eq!(env.read("ws/hello.txt"), "hello world\n");
    }
    assert_eq!(std::fs::read(env.audit_log()).unwrap_or_default(), b"", "nothing was recorded");
}

#[tokio::test]
async fn calls_are_refused_when_the_log_is_full() {
    let env = Env::new();
    // Learn the size of a server_start record, then allow exactly one more.
    let c = env.start(Protocol::Legacy, &[]).await;
    c.close().await;
    let log = std::fs::read_to_string(env.audit_log()).unwrap();
    let start_len = log.lines().next().unwrap().len() + 1;
    let max = log.len() + start_len + 40;
    let cfg = env.config(&format!("{ALLOW_ALL}[audit]\nmax_size = \"{max}\"\n"));
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    // The start is recorded while the handshake is answered; every request
    // after it waits until it is.
    c.tools().await;
    let before = std::fs::read(env.audit_log()).unwrap();
    assert_eq!(before.len(), log.len() + start_len, "the second start is recorded");

    let refused = |t: &str| t.contains("refused") && t.contains("audit log") && t.contains("full");
    let t = c.err("write_file", json!({"path": "new.txt", "content": "x"})).await;
    assert!(refused(&t), "{t}");
    assert!(!env.exists("ws/new.txt"), "a refused write changed the disk");
    let t = c.err("delete_file", path("hello.txt")).await;
    assert!(refused(&t), "{t}");
    assert_eq!(env.read("ws/hello.txt"), "hello world\n");
    let t = c.err("create_directory", path("d")).await;
    assert!(refused(&t), "{t}");
    assert!(!env.exists("ws/d"));
    let t = c.err("move_file", json!({"source": "hello.txt", "destination": "moved.txt"})).await;
    assert!(refused(&t), "{t}");
    assert!(env.exists("ws/hello.txt") && !env.exists("ws/moved.txt"));
    let t = c.err("read_text_file", path("hello.txt")).await;
    assert!(refused(&t), "{t}");
    assert!(!t.contains("hello world"), "a read that cannot be recorded returns nothing: {t}");
    c.close().await;
    assert_eq!(std::fs::read(env.audit_log()).unwrap(), before, "nothing partial was written");
    assert_verifies(&env, 3);
}

#[tokio::test]
async fn calls_are_refused_when_the_log_cannot_be_written() {
    let env = Env::new();
    let c = allow_all(&env, &[]).await;
    c.ok("read_text_file", path("hello.txt")).await;
    // Root ignores file modes: put a directory where the log was.
    std::fs::rename(env.audit_log(), env.state().join("audit.saved")).unwrap();
    std::fs::create_dir(env.audit_log()).unwrap();
    let t = c.err("write_file", json!({"path": "new.txt", "content": "x"})).await;
    assert!(t.contains("refused") && t.contains("audit log"), "{t}");
    assert!(!env.exists("ws/new.txt"), "a refused write changed the disk");
    let t = c.err("delete_file", path("hello.txt")).await;
    assert!(t.contains("audit log"), "{t}");
    assert!(env.exists("ws/hello.txt"));
    let t = c.err("read_text_file", path("hello.txt")).await;
    assert!(t.contains("refused") && t.contains("audit log"), "{t}");
    assert!(!t.contains("hello world"), "{t}");
    c.close().await;
    assert!(env.read("state/audit.saved").lines().count() == 2, "nothing more went to the old file");

    // A server whose log cannot be opened does not start.
    let cfg = env.config(ALLOW_ALL);
    let out = env
        .command(&["--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("audit log"), "{err}");
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_log() {
    let env = Env::new();
    let a = allow_all(&env, &["--user", "alice"]).await;
    let b = allow_all(&env, &["--user", "bob"]).await;
    let work = |c: &Client, who: &'static str| {
        let peer = c.peer();
        async move {
            let mut tasks = Vec::new();
            for i in 0..25 {
                let peer = peer.clone();
                tasks.push(tokio::spawn(async move {
                    let mut params =
                        CallToolRequestParams::new(if i % 5 == 0 { "write_file" } else { "read_text_file" });
                    let args = if i % 5 == 0 {
                        json!({"path": format!("{who}-{i}.txt"), "content": who})
                    } else {
                        json!({"path": "hello.txt"})
                    };
                    params.arguments = args.as_object().cloned();
                    let r = peer.call_tool(params).await.unwrap();
                    assert_eq!(r.is_error, Some(false), "{}", text(&r));
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    tokio::join!(work(&a, "alice"), work(&b, "bob"));
    a.close().await;
    b.close().await;

    let records = env.audit_records();
    assert_gap_free(&records);
    // Per server: start, stop, 25 calls, 5 of them with an intent.
    assert_eq!(records.len(), 2 * (2 + 25 + 5));
    let sessions: HashSet<&str> = records.iter().map(|r| r["session"].as_str().unwrap()).collect();
    assert_eq!(sessions.len(), 2);
    for user in ["alice", "bob"] {
        let mine: Vec<&Value> = records.iter().filter(|r| r["user"] == user).collect();
        assert_eq!(mine.len(), 32, "{user}");
        assert_eq!(mine.first().unwrap()["event"], "server_start");
        assert_eq!(mine.last().unwrap()["event"], "server_stop");
    }
    assert_verifies(&env, records.len());
}

#[tokio::test]
async fn a_server_stopped_by_a_signal_records_its_stop() {
    let env = Env::new();
    for signal in ["TERM", "INT"] {
        let c = allow_all(&env, &[]).await;
        c.ok("write_file", json!({"path": "s.txt", "content": signal})).await;
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &c.pid().to_string()]).status();
        assert!(status.unwrap().success());
        let last = poll_async(
            || async { env.audit_records().pop() },
            |r| r.as_ref().is_some_and(|r| r["event"] == "server_stop"),
        )
        .await;
        let stop = last.unwrap();
        assert_eq!(stop["event"], "server_stop", "no server_stop after SIG{signal}: {stop}");
        assert_eq!(stop["reason"], format!("stopped by SIG{signal}"), "{stop}");
        drop(c);
    }
    assert_verifies(&env, 2 * 4);
}

#[tokio::test]
async fn the_chain_continues_across_rotated_files_and_tail_follows_it() {
    let env = Env::new();
    // Follow the (empty) log from the start, in the background.
    std::fs::write(env.audit_log(), "").unwrap();
    let mut follow = mcpsec_e2e::mcpsec_command()
        .args(["audit", "tail", "-n", "0", "-f", "--json"])
        .env("MCPSEC_STATE_DIR", env.state())
        .env("XDG_CONFIG_HOME", env.path().join("no-config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // What it prints, record by record.
    let (tx, followed) = std::sync::mpsc::channel::<Value>();
    {
        let stdout = follow.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let r: Value = serde_json::from_str(&line.unwrap()).unwrap();
                if tx.send(r).is_err() {
                    break;
                }
            }
        });
    }
    // It follows once it prints a sentinel record (a user added) written
    // after it started: one written before it had opened the log is not
    // shown (`-n 0`), so another is written until one is.
    let mut sentinels = 0;
    let first = loop {
        sentinels += 1;
        assert!(sentinels <= 60, "audit tail -f printed none of {} sentinel records", sentinels - 1);
        let (code, _, err) = env.cli(&["users", "add", &format!("sentinel-{sentinels}")]);
        assert_eq!(code, 0, "{err}");
        if let Ok(r) = followed.recv_timeout(Duration::from_millis(500)) {
            break r;
        }
    };
    assert_eq!(first["event"], "user_add", "{first}");
    let first_seen = first["seq"].as_u64().unwrap();
    let cfg = env.config(&format!("{ALLOW_ALL}[audit]\nrotate_size = \"4KiB\"\n"));
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    for i in 0..12 {
        c.ok("write_file", json!({"path": format!("r{i}.txt"), "content": "z".repeat(200)})).await;
        c.ok("read_text_file", path(&format!("r{i}.txt"))).await;
    }
    c.close().await;
    let records = sentinels + 2 + 12 * 3;
    let rotated: Vec<_> = std::fs::read_dir(env.state())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit.log.0"))
        .collect();
    assert!(rotated.len() >= 2, "expected rotations: {rotated:?}");
    let (code, out, err) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("ok: {records} records")), "{out}");
    let (_, out, _) = env.cli(&["audit", "grep", "--count"]);
    assert_eq!(out.trim(), records.to_string());
    let (_, out, _) = env.cli(&["audit", "grep", "--count", "--tool", "write_file", "--outcome", "ok"]);
    assert_eq!(out.trim(), "12");
    let (_, out, _) = env.cli(&["audit", "tail", "-n", "3", "--json"]);
    let seqs: Vec<u64> =
        out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [records as u64 - 2, records as u64 - 1, records as u64]);
    // tail -f saw every record once, in order, across the rotations, from
    // the first sentinel it printed to the server's stop.
    let mut seen = vec![first_seen];
    while seen.len() as u64 <= records as u64 - first_seen {
        match followed.recv_timeout(POLL_LIMIT) {
            Ok(r) => seen.push(r["seq"].as_u64().unwrap()),
            Err(e) => panic!("tail -f stopped following ({e}) after {seen:?}"),
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(seen, (first_seen..=records as u64).collect::<Vec<_>>());
    // Deleting a rotated file is caught.
    let mut names: Vec<_> = rotated.iter().map(|e| e.path()).collect();
    names.sort();
    std::fs::remove_file(&names[1]).unwrap();
    let (code, out, _) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("deleted"), "{out}");
}

/// The review's forgery: a complete, well-formed record line, backdated and
/// claiming seq 1, appended without a newline; then a writer comes along.
#[tokio::test]
async fn a_forged_record_appended_without_a_newline_is_refused_and_never_shown() {
    let env = Env::new();
    let c = env.start(Protocol::Legacy, &[]).await;
    c.ok("list_allowed_directories", json!({})).await;
    c.close().await;
    let cp = env.path().join("checkpoint.json");
    let (code, _, err) = env.cli(&["audit", "checkpoint", "--out", cp.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let zeros = "0".repeat(64);
    let body = format!(
        r#"{{"v":1,"seq":1,"ts":"2020-01-01T00:00:00.000000Z","event":"grant","user":"alice","capability":"delete_files","details":{{"note":"FORGED"}},"prev":"{zeros}""#
    );
    let hash = {
        use sha2::Digest;
        sha2::Sha256::digest(format!("{body}}}").as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let forged = format!(r#"{body},"hash":"{hash}"}}"#);
    let mut log = std::fs::OpenOptions::new().append(true).open(env.audit_log()).unwrap();
    std::io::Write::write_all(&mut log, forged.as_bytes()).unwrap();
    let before = std::fs::read(env.audit_log()).unwrap();
    // A writer refuses to go on, and launders nothing.
    let (code, _, err) = env.cli(&["users", "add", "dave"]);
    assert_ne!(code, 0);
    assert!(err.contains("something else added it"), "{err}");
    assert_eq!(std::fs::read(env.audit_log()).unwrap(), before);
    // verify fails, checkpoint or not.
    let (code, out, _) = env.cli(&["audit", "verify", "--checkpoint", cp.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    // grep and tail never show it as a record; they say that a line was left out.
    let (code, out, err) = env.cli(&["audit", "grep", "--event", "grant"]);
    assert_eq!(code, 1, "nothing matched: {out}");
    assert!(!out.contains("alice"), "{out}");
    assert!(err.contains("not part of its hash chain"), "{err}");
    let (_, out, _) = env.cli(&["audit", "tail", "--json", "-n", "50"]);
    assert!(!out.contains("FORGED"), "{out}");
    let (_, out, _) = env.cli(&["audit", "grep", "--count", "FORGED"]);
    assert_eq!(out.trim(), "0");
    // Asked for, it is shown marked as not part of the log.
    let (_, out, _) = env.cli(&["audit", "grep", "--unchained", "FORGED"]);
    assert!(out.starts_with("[NOT PART OF THE LOG'S CHAIN]"), "{out}");
    let (_, out, _) = env.cli(&["audit", "tail", "--unchained", "--json", "-n", "2"]);
    assert!(out.lines().any(|l| l.contains("\"not_in_chain\":true") && l.contains("FORGED")), "{out}");
}
