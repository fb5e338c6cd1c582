//! Start-up: roots, configuration errors, policy, stdout discipline.

use mcpsec_e2e::{ALLOW_ALL, BOTH, Env, path, poll};
use serde_json::json;

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    mcpsec_e2e::mcpsec_command()
        .args(args)
        .current_dir(env.path())
        .env("MCPSEC_STATE_DIR", env.path().join("state"))
        .env("XDG_CONFIG_HOME", env.path().join("no-config"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn serve_without_a_root_is_a_usage_error_that_says_how() {
    let env = Env::new();
    let out = run(&env, &["serve"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--root DIR"), "{err}");
    assert!(out.stdout.is_empty(), "stdout must stay clean: {:?}", out.stdout);
}

#[test]
fn a_root_that_does_not_exist_is_refused() {
    let env = Env::new();
    let out = run(&env, &["serve", "--root", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/dir"));
}

#[test]
fn a_token_database_that_is_not_one_is_refused_at_start() {
    let env = Env::new();
    std::fs::create_dir_all(env.path().join("ws")).unwrap();
    std::fs::create_dir_all(env.path().join("state")).unwrap();
    std::fs::write(env.path().join("state/mcpsec.db"), "a text file where the token database should be").unwrap();
    let out = run(&env, &["serve", "--root", "ws"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mcpsec.db") && err.contains("SQLite's header"), "{err}");
    assert!(out.stdout.is_empty(), "stdout must stay clean: {:?}", out.stdout);
}

/// Over HTTP every request needs the token database, so `serve --http`
/// opens and checks it at start (stdio opens it at its first use): a
/// damaged one stops the server before it listens.
#[test]
fn serve_over_http_refuses_a_damaged_token_database_at_start() {
    let env = Env::new();
    env.grant(&["delete_files"]);
    let db = env.state().join("mcpsec.db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().skip(100) {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let _ = std::fs::remove_file(env.state().join("mcpsec.db-wal"));
    std::fs::create_dir_all(env.path().join("ws")).unwrap();
    let mut child = mcpsec_e2e::mcpsec_command()
        .args(["serve", "--root", "ws", "--http", "127.0.0.1:0"])
        .current_dir(env.path())
        .env("MCPSEC_STATE_DIR", env.state())
        .env("XDG_CONFIG_HOME", env.path().join("no-config"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It exits at once; were it serving, it would never exit.
    let Some(status) = poll(|| child.try_wait().unwrap(), Option::is_some) else {
        let _ = child.kill();
        panic!("serve --http started on a damaged token database");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("mcpsec.db"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "the database was changed");
}

#[test]
fn config_errors_name_the_key() {
    let env = Env::new();
    let cases = [
        ("[policy]\nread_filez = \"allow\"\n", "read_filez"),
        ("[limits]\nmax_read = \"lots\"\n", "limits.max_read"),
        ("[policy]\ndelete_files = \"sometimes\"\n", "sometimes"),
        ("[undo]\nretention = \"soon\"\n", "undo.retention"),
        ("roots = 3\n", "roots"),
    ];
    for (toml, key) in cases {
        let cfg = env.config(toml);
        let out = run(&env, &["serve", "--root", "ws", "--config", cfg.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(key), "{toml}: {err}");
    }
}

#[tokio::test]
async fn denied_capabilities_are_not_listed_and_refused_with_the_remedy() {
    let env = Env::new();
    let cfg = env.config("[policy]\nwrite_files = \"deny\"\ndelete_files = \"deny\"\n");
    for protocol in BOTH {
        let client = env.start(protocol, &["--config", cfg.to_str().unwrap()]).await;
        let names: Vec<String> = client.tools().await.iter().map(|t| t.name.to_string()).collect();
        for hidden in ["write_file", "edit_file", "create_directory", "move_file", "delete_file"] {
            assert!(!names.contains(&hidden.to_string()), "{hidden} listed: {names:?}");
        }
        assert_eq!(names.len(), 10, "{names:?}");
        let e = client.err("write_file", json!({"path": "x.txt", "content": "x"})).await;
        assert!(e.contains("write_files") && e.contains("deny") && e.contains("[policy]"), "{e}");
        let e = client.err("delete_file", path("hello.txt")).await;
        assert!(e.contains("delete_files"), "{e}");
        assert!(env.exists("ws/hello.txt"));
        assert!(!env.exists("ws/x.txt"));
        client.close().await;
    }
}

#[tokio::test]
async fn the_defaults_list_every_tool_and_gate_the_destructive_ones() {
    let env = Env::new();
    for protocol in BOTH {
        let client = env.start(protocol, &[]).await;
        let tools = client.tools().await;
        assert_eq!(tools.len(), 15);
        let takes_token = |name: &str| {
            let t = tools.iter().find(|t| t.name == name).unwrap();
            t.input_schema["properties"].get("capability_token").is_some()
        };
        assert!(takes_token("write_file") && takes_token("delete_file") && takes_token("move_file"));
        assert!(!takes_token("read_text_file"));
        // This client cannot confirm, so a write gets the token instructions.
        let e = client.err("write_file", json!({"path": "x.txt", "content": "x"})).await;
        assert!(e.contains("mcpsec grant write_files --ttl 60 --path 'x.txt'"), "{e}");
        let e = client.err("delete_file", path("hello.txt")).await;
        assert!(e.contains("mcpsec grant delete_files --ttl 60 --path 'hello.txt'"), "{e}");
        assert!(env.exists("ws/hello.txt") && !env.exists("ws/x.txt"));
        client.close().await;
    }
}

#[tokio::test]
async fn config_roots_and_policy_apply() {
    let env = Env::new();
    env.write("second/b.txt", "bee");
    let cfg = env.config(&format!("roots = [\"second\"]\n{ALLOW_ALL}"));
    let client = env.start(mcpsec_e2e::Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    assert_eq!(client.tools().await.len(), 15);
    let dirs = client.ok("list_allowed_directories", json!({})).await;
    assert!(dirs.contains("/second") && dirs.contains("/ws"), "{dirs}");
    let second = env.path().join("second/b.txt");
    assert_eq!(client.ok("read_text_file", path(second.to_str().unwrap())).await, "bee");
    client.close().await;
}
