//! The attack corpus: escape techniques against every tool, through the
//! real server. Each must end in a tool error that reveals nothing about
//! what lies outside, with the outside tree unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mcpsec_e2e::{ALLOW_ALL, BOTH, Env, SECRET, assert_no_leak, path, text};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

/// Builds the symlink zoo the corpus uses.
fn arm(env: &Env) {
    let outside = env.outside();
    std::fs::create_dir_all(env.root().join("sub")).unwrap();
    env.symlink("../outside", "ws/link_out");
    env.symlink(&outside, "ws/link_abs_out");
    env.symlink("../outside/secret.txt", "ws/file_link");
    env.symlink("chain2", "ws/chain1");
    env.symlink("chain3", "ws/chain2");
    env.symlink("../outside/secret.txt", "ws/chain3");
    env.symlink("loop_b", "ws/loop_a");
    env.symlink("loop_a", "ws/loop_b");
    env.symlink("../outside/created-through-link.txt", "ws/dangling_out");
    env.symlink("../../outside", "ws/sub/up");
    env.symlink("/etc", "ws/etc_link");
    env.symlink(env.path().join("ws-evil"), "ws/evil_link");
    env.symlink("sub/../../outside/secret.txt", "ws/dotdot_link");
    env.write("ws/sub/victim.txt", "victim");
}

/// (technique, tool, arguments): every one must be refused or fail.
fn corpus(env: &Env) -> Vec<(&'static str, &'static str, Value)> {
    let abs = |rel: &str| env.path().join(rel).display().to_string();
    let long = "a/".repeat(2500);
    vec![
        ("dot-dot", "read_text_file", path("../outside/secret.txt")),
        ("deep dot-dot to /etc/passwd", "read_text_file", path("../../../../../../../../etc/passwd")),
        ("dot-dot after a real directory", "read_text_file", path("sub/../../outside/secret.txt")),
        ("leading ./ then dot-dot", "read_text_file", path("./../outside/secret.txt")),
        ("absolute path outside every root", "read_text_file", path("/etc/passwd")),
        ("absolute path to the sentinel", "read_text_file", path(&abs("outside/secret.txt"))),
        ("sibling sharing the root's name prefix", "read_text_file", path(&abs("ws-evil/secret.txt"))),
        ("absolute root path then dot-dot", "read_text_file", path(&format!("{}/../outside/secret.txt", abs("ws")))),
        ("doubled separators", "read_text_file", path("..//outside//secret.txt")),
        ("relative directory symlink", "read_text_file", path("link_out/secret.txt")),
        ("absolute directory symlink", "read_text_file", path("link_abs_out/secret.txt")),
        ("file symlink", "read_text_file", path("file_link")),
        ("chained symlinks", "read_text_file", path("chain1")),
        ("symlink loop", "read_text_file", path("loop_a")),
        ("symlink nested in a subdirectory", "read_text_file", path("sub/up/secret.txt")),
        ("symlink to /etc", "read_text_file", path("etc_link/passwd")),
        ("symlink to the prefix sibling", "read_text_file", path("evil_link/secret.txt")),
        ("symlink whose target climbs out", "read_text_file", path("dotdot_link")),
        ("NUL byte truncation", "read_text_file", path("hello.txt\u{0}/../../outside/secret.txt")),
        ("empty path", "read_text_file", path("")),
        ("absurdly long path", "read_text_file", path(&long)),
        ("URL-encoded dot-dot", "read_text_file", path("%2e%2e/outside/secret.txt")),
        ("file URL", "read_text_file", path("file:///etc/passwd")),
        ("backslash separators", "read_text_file", path("..\\outside\\secret.txt")),
        ("unicode one-dot leaders", "read_text_file", path("\u{2024}\u{2024}/outside/secret.txt")),
        ("trailing slash on an outside dir", "list_directory", path("../outside/")),
        ("media read through a symlink", "read_media_file", path("file_link")),
        ("multi-read escape", "read_text_file", path("link_out/dir/secret.txt")),
        ("listing through a symlink", "list_directory", path("link_out")),
        ("listing with sizes of the parent", "list_directory_with_sizes", path("..")),
        ("tree of the parent", "directory_tree", path("..")),
        ("search through an absolute symlink", "search_files", json!({"path": "link_abs_out", "pattern": "**/*"})),
        ("metadata through a symlink", "get_file_info", path("file_link")),
        ("write with dot-dot", "write_file", json!({"path": "../outside/pwned.txt", "content": "pwned"})),
        ("write through a dangling symlink", "write_file", json!({"path": "dangling_out", "content": "pwned"})),
        ("overwrite through a file symlink", "write_file", json!({"path": "file_link", "content": "pwned"})),
        ("write through a directory symlink", "write_file", json!({"path": "link_out/secret.txt", "content": "pwned"})),
        (
            "edit through a symlink",
            "edit_file",
            json!({"path": "chain1", "edits": [{"oldText": "TOP", "newText": "X"}]}),
        ),
        ("mkdir through a symlink", "create_directory", path("link_out/newdir")),
        ("mkdir with dot-dot", "create_directory", path("sub/../../outside/newdir")),
        (
            "move into the outside",
            "move_file",
            json!({"source": "sub/victim.txt", "destination": "../outside/moved.txt"}),
        ),
        (
            "move into a symlinked dir",
            "move_file",
            json!({"source": "sub/victim.txt", "destination": "link_out/moved.txt"}),
        ),
        ("move out of the outside", "move_file", json!({"source": "link_out/secret.txt", "destination": "stolen.txt"})),
        ("delete through a symlinked dir", "delete_file", path("link_out/secret.txt")),
        ("recursive delete through a symlink", "delete_file", json!({"path": "link_abs_out/dir", "recursive": true})),
        ("delete with dot-dot", "delete_file", path("../outside/secret.txt")),
        ("delete a root itself", "delete_file", json!({"path": abs("ws"), "recursive": true})),
    ]
}

#[tokio::test]
async fn escape_corpus_is_refused_on_both_protocols() {
    let env = Env::new();
    arm(&env);
    let before = env.outside_snapshot();
    let cfg = env.config(ALLOW_ALL);
    let corpus = corpus(&env);
    assert!(corpus.len() >= 40, "{}", corpus.len());
    for protocol in BOTH {
        let c = env.start(protocol, &["--config", cfg.to_str().unwrap()]).await;
        for (technique, tool, args) in &corpus {
            let r = c.call(tool, args.clone()).await;
            let t = text(&r);
            assert_eq!(r.is_error, Some(true), "{protocol:?} {technique}: not refused: {t}");
            assert_no_leak(&env, args, &t);
            assert_eq!(env.outside_snapshot(), before, "{protocol:?} {technique}: the outside changed");
        }
        c.close().await;
    }
    assert_eq!(env.read("ws/sub/victim.txt"), "victim");
    assert!(!env.exists("outside/created-through-link.txt"));
}

#[tokio::test]
async fn things_that_look_odd_but_stay_inside_work() {
    let env = Env::new();
    arm(&env);
    env.write("ws/foo..bar.txt", "dots");
    env.write("ws/..hidden", "hidden");
    env.write("ws/sub/...", "three dots");
    env.write("ws/ünï cödé.txt", "unicode");
    env.symlink("hello.txt", "ws/in_rel");
    env.symlink(env.root().join("sub/victim.txt"), "ws/in_abs");
    env.symlink(env.root().join("sub"), "ws/in_abs_dir");
    let cfg = env.config(ALLOW_ALL);
    let c = env.start(mcpsec_e2e::Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    for (p, want) in [
        ("foo..bar.txt", "dots"),
        ("..hidden", "hidden"),
        ("sub/...", "three dots"),
        ("ünï cödé.txt", "unicode"),
        ("in_rel", "hello world\n"),
        ("in_abs", "victim"),
        ("in_abs_dir/victim.txt", "victim"),
        ("sub/../hello.txt", "hello world\n"),
        ("./sub/./victim.txt", "victim"),
        ("sub//victim.txt", "victim"),
    ] {
        assert_eq!(c.ok("read_text_file", path(p)).await, want, "{p}");
    }
    // Writing through an inside symlink changes the target and keeps the link.
    c.ok("write_file", json!({"path": "in_abs", "content": "changed"})).await;
    assert_eq!(env.read("ws/sub/victim.txt"), "changed");
    assert!(env.root().join("in_abs").symlink_metadata().unwrap().file_type().is_symlink());
    // Deleting a symlink removes the link, never its target.
    c.ok("delete_file", path("link_out")).await;
    assert!(!env.exists("ws/link_out"));
    assert_eq!(env.read("outside/secret.txt"), SECRET);
    c.close().await;
}

#[tokio::test]
async fn recursive_delete_of_a_tree_with_an_outside_link_deletes_only_the_link() {
    let env = Env::new();
    env.write("ws/tree/a.txt", "a");
    env.symlink(env.outside(), "ws/tree/out");
    let before = env.outside_snapshot();
    let cfg = env.config(ALLOW_ALL);
    let c = env.start(mcpsec_e2e::Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("delete_file", json!({"path": "tree", "recursive": true})).await;
    assert!(!env.exists("ws/tree"));
    assert_eq!(env.outside_snapshot(), before);
    c.close().await;
}

/// Issue 26, point 13: a symlink pointing outside was listed with its own
/// size, the length of its target's path.
#[tokio::test]
async fn a_symlink_is_listed_without_a_size() {
    let env = Env::new();
    let target = env.outside().join("a-long-name-that-tells-how-far-away-it-is/secret.txt");
    env.symlink(&target, "ws/out");
    env.symlink("hello.txt", "ws/in");
    let c = env.start(mcpsec_e2e::Protocol::Legacy, &[]).await;
    let listed = c.ok("list_directory_with_sizes", path(".")).await;
    for name in ["out", "in"] {
        let line = listed.lines().find(|l| l.split_whitespace().nth(1) == Some(name)).unwrap();
        assert_eq!(line.split_whitespace().count(), 2, "no size for the symlink `{name}`: {listed}");
    }
    // Only hello.txt's 12 bytes are counted.
    assert!(listed.ends_with("Combined size: 12 B"), "{listed}");
    let e = c.err("get_file_info", path("out")).await;
    assert!(e.contains("outside the allowed directories"), "{e}");
    c.close().await;
}

/// Issue 26, point 13: `hello.txt/` and `hello.txt/.` read the file.
#[tokio::test]
async fn a_path_ending_in_a_slash_names_a_directory() {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    let c = env.start(mcpsec_e2e::Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    for p in ["hello.txt/", "hello.txt/."] {
        for (tool, args) in [
            ("read_text_file", path(p)),
            ("get_file_info", path(p)),
            ("write_file", json!({ "path": p, "content": "x" })),
        ] {
            let e = c.err(tool, args).await;
            assert_eq!(e, format!("`{p}` is not a directory"), "{tool}");
        }
    }
    assert_eq!(env.read("ws/hello.txt"), "hello world\n");
    c.close().await;
}

/// A symlink flipped between an inside and an outside target while the
/// server reads it, thousands of times: never once does the outside
/// content come back. Both a final-component link and a directory link in
/// the middle of the path are flipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_swap_race_never_leaks() {
    let env = Env::new();
    env.write("ws/inside.txt", "inside");
    env.write("ws/realdir/secret.txt", "inside-dir");
    env.symlink("inside.txt", "ws/race");
    env.symlink("realdir", "ws/racedir");
    let c = env.start(mcpsec_e2e::Protocol::Legacy, &[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        let root = env.root();
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) && flips < 2_000_000 {
                let (file, dir) = if flips.is_multiple_of(2) {
                    ("../outside/secret.txt", "../outside/dir")
                } else {
                    ("inside.txt", "realdir")
                };
                for (target, name) in [(file, "race"), (dir, "racedir")] {
                    let tmp = root.join(format!("{name}.tmp"));
                    let _ = std::fs::remove_file(&tmp);
                    std::os::unix::fs::symlink(target, &tmp).unwrap();
                    std::fs::rename(&tmp, root.join(name)).unwrap();
                }
                flips += 1;
            }
            flips
        })
    };

    let peer = c.peer();
    let (mut inside, mut refused) = (0u32, 0u32);
    const ROUNDS: usize = 250;
    const IN_FLIGHT: usize = 16;
    for _ in 0..ROUNDS {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..IN_FLIGHT {
            let peer = peer.clone();
            let p = if i % 2 == 0 { "race" } else { "racedir/secret.txt" };
            calls.spawn(async move {
                let mut params = CallToolRequestParams::new("read_text_file");
                params.arguments = Some(path(p).as_object().unwrap().clone());
                peer.call_tool(params).await.unwrap()
            });
        }
        while let Some(r) = calls.join_next().await {
            let r = r.unwrap();
            let t = text(&r);
            assert!(!t.contains(SECRET), "the race leaked outside content: {t}");
            if r.is_error == Some(true) {
                refused += 1;
            } else {
                assert!(t == "inside" || t == "inside-dir", "{t}");
                inside += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    assert_eq!((inside + refused) as usize, ROUNDS * IN_FLIGHT);
    // Both outcomes happened, so the race was really exercised.
    assert!(inside > 0 && refused > 0, "inside {inside}, refused {refused}, flips {flips}");
    c.close().await;
}

/// A second root inside a `.git` must not make it writable: the protected
/// paths of every root that contains a path apply.
#[tokio::test]
async fn a_nested_root_never_lifts_a_protection() {
    let env = Env::new();
    env.write("ws/x/.git/config", "[core]\n");
    env.write("ws/x/.git/.env", "SECRET=1\n");
    let inner = env.root().join("x/.git");
    let log = env.path().join("serve.stderr");
    let cfg = env.config(ALLOW_ALL);
    let cmd = env.command(&["--root", inner.to_str().unwrap(), "--config", cfg.to_str().unwrap()]);
    let stderr = std::fs::File::create(&log).unwrap().into();
    let c = mcpsec_e2e::Client::connect_with_stderr(cmd, mcpsec_e2e::Protocol::Legacy, stderr).await;
    let config = inner.join("config");
    for target in [config.to_str().unwrap().to_owned(), "x/.git/config".to_owned()] {
        let e = c.err("write_file", json!({"path": target, "content": "[core]\nhooksPath = /tmp/evil\n"})).await;
        assert!(e.contains("protected") && e.contains("paths.readonly"), "{target}: {e}");
    }
    let e = c.err("create_directory", json!({"path": inner.join("hooks").to_str().unwrap()})).await;
    assert!(e.contains("protected"), "{e}");
    assert_eq!(env.read("ws/x/.git/config"), "[core]\n");
    // Denied names stay denied, and hidden, through the nested root too.
    let e = c.err("read_text_file", json!({"path": inner.join(".env").to_str().unwrap()})).await;
    assert!(e.contains("protected"), "{e}");
    let listing = c.ok("list_directory", json!({"path": inner.to_str().unwrap()})).await;
    assert!(listing.contains("config") && !listing.contains(".env"), "{listing}");
    c.close().await;
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("lies inside the root"), "a warning at start-up: {stderr}");
}
