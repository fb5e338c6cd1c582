//! Rate limits through the real server: refused before any work, with when
//! to retry, and counted exactly in the audit log without flooding it.
//! (Recovery over time is tested with a fake clock in mcpsec-server's
//! `ratelimit` unit tests; nothing here sleeps.)

use mcpsec_e2e::{Env, Protocol, path};
use serde_json::{Value, json};

fn rate_limited(env: &Env) -> Vec<Value> {
    env.audit_records().into_iter().filter(|r| r["outcome"] == "rate_limited").collect()
}

#[tokio::test]
async fn a_principal_over_its_limit_is_refused_and_counted_exactly() {
    let env = Env::new();
    let cfg = env.config("[rate_limit]\ncalls = 3\nwindow = \"60s\"\n");
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap(), "--user", "alice"]).await;
    for _ in 0..3 {
        c.ok("read_text_file", path("hello.txt")).await;
    }
    for _ in 0..5 {
        let e = c.err("read_text_file", path("hello.txt")).await;
        assert!(e.contains("rate limit") && e.contains("retry in") && e.contains("[rate_limit]"), "{e}");
    }
    // Only the first refusal of the run is a record of its own so far.
    let records = rate_limited(&env);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["user"], "alice");
    assert_eq!(records[0]["tool"], "read_text_file");
    c.close().await;
    // At shutdown the other four are recorded, as one record with the exact count.
    let records = rate_limited(&env);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1]["details"]["suppressed"], 4);
    let last = env.audit_records().last().cloned().unwrap();
    assert_eq!(last["event"], "server_stop");
    let (code, out, _) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

/// The rate limit runs before the tool is looked up, so its first refusal
/// records whatever name the client sent: a secret in it must not reach the
/// log (regression: it was written verbatim).
#[tokio::test]
async fn a_rate_limited_unknown_tool_name_is_redacted_in_the_log() {
    let env = Env::new();
    let cfg = env.config("[rate_limit]\ncalls = 1\n");
    let secret = format!("mcps_{}", "Zq7".repeat(19));
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("read_text_file", path("hello.txt")).await;
    for _ in 0..2 {
        let r = c.try_call(&secret, json!({})).await;
        let shown = match r {
            Ok(r) => mcpsec_e2e::text(&r),
            Err(e) => e,
        };
        assert!(!shown.contains(&secret[5..]), "{shown}");
    }
    c.close().await;
    assert_eq!(rate_limited(&env).len(), 2, "one record, then one count");
    let log = std::fs::read_to_string(env.audit_log()).unwrap();
    assert!(!log.contains(&secret[5..]), "the secret reached the log");
}

#[tokio::test]
async fn per_tool_limits_leave_other_tools_alone() {
    let env = Env::new();
    let cfg = env.config("[rate_limit.tools]\nlist_directory = 1\n");
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("list_directory", path(".")).await;
    let e = c.err("list_directory", path(".")).await;
    assert!(e.contains("list_directory allows 1 calls"), "{e}");
    c.ok("read_text_file", path("hello.txt")).await;
    c.close().await;
}

/// Issue 26, point 9: with `read_text_file = 2`, `read_file` (its alias)
/// was never limited. A limit holds for the tool under either name.
#[tokio::test]
async fn a_per_tool_limit_holds_through_the_tools_alias() {
    let env = Env::new();
    for (limited, other) in [("read_text_file", "read_file"), ("read_file", "read_text_file")] {
        let cfg = env.config(&format!("[rate_limit.tools]\n{limited} = 2\n"));
        let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
        c.ok(limited, path("hello.txt")).await;
        c.ok(other, path("hello.txt")).await;
        for name in [other, limited] {
            let e = c.err(name, path("hello.txt")).await;
            assert!(e.contains("read_text_file allows 2 calls"), "{limited} = 2, then {name}: {e}");
        }
        c.ok("list_directory", path(".")).await;
        c.close().await;
    }
}

#[tokio::test]
async fn failed_token_checks_have_their_own_stricter_limit() {
    let env = Env::new();
    env.write("ws/a.txt", "a");
    let cfg = env.config("[rate_limit]\nfailed_token_checks = 2\n");
    let good = env.grant(&["delete_files"]);
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    for guess in ["mcps_guess1", "mcps_guess2"] {
        let e = c.err("delete_file", json!({"path": "a.txt", "capability_token": guess})).await;
        assert!(e.contains("not valid"), "{e}");
    }
    // Now even a good token is not checked until the window passes.
    let e = c.err("delete_file", json!({"path": "a.txt", "capability_token": good})).await;
    assert!(e.contains("too many failed capability token checks"), "{e}");
    assert!(env.exists("ws/a.txt"));
    // Reads are not affected.
    c.ok("read_text_file", path("a.txt")).await;
    c.close().await;
    assert!(rate_limited(&env).iter().any(|r| r["tool"] == "delete_file"));
}
