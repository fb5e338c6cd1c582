//! Every tool, through the real server: the happy path and its refusals.

use mcpsec_e2e::{ALLOW_ALL, BOTH, Env, Protocol, path, text};
use serde_json::{Value, json};

async fn allow_all(env: &Env, protocol: Protocol) -> mcpsec_e2e::Client {
    let cfg = env.config(ALLOW_ALL);
    env.start(protocol, &["--config", cfg.to_str().unwrap()]).await
}

#[tokio::test]
async fn tools_carry_the_reference_annotations() {
    let env = Env::new();
    let client = allow_all(&env, Protocol::Legacy).await;
    let tools = client.tools().await;
    let hints = |name: &str| {
        let t = tools.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name} missing"));
        let a = t.annotations.clone().unwrap();
        (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint)
    };
    for ro in [
        "read_text_file",
        "read_file",
        "read_media_file",
        "read_multiple_files",
        "list_directory",
        "list_directory_with_sizes",
        "directory_tree",
        "search_files",
        "get_file_info",
        "list_allowed_directories",
    ] {
        assert_eq!(hints(ro).0, Some(true), "{ro}");
        assert_eq!(hints(ro).3, Some(false), "{ro}");
    }
    assert_eq!(hints("write_file"), (Some(false), Some(true), Some(true), Some(false)));
    assert_eq!(hints("edit_file"), (Some(false), Some(true), Some(false), Some(false)));
    assert_eq!(hints("create_directory"), (Some(false), Some(false), Some(true), Some(false)));
    assert_eq!(hints("move_file"), (Some(false), Some(true), Some(false), Some(false)));
    assert_eq!(hints("delete_file"), (Some(false), Some(true), Some(false), Some(false)));
    // Same argument shapes as the reference server.
    let props = |name: &str| -> Vec<String> {
        let t = tools.iter().find(|t| t.name == name).unwrap();
        let mut keys: Vec<String> = t.input_schema["properties"].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(props("read_text_file"), ["head", "path", "tail"]);
    assert_eq!(props("edit_file"), ["dryRun", "edits", "path"]);
    assert_eq!(props("move_file"), ["destination", "source"]);
    assert_eq!(props("search_files"), ["excludePatterns", "path", "pattern"]);
    assert_eq!(props("list_directory_with_sizes"), ["path", "sortBy"]);
    client.close().await;
}

#[tokio::test]
async fn read_tools() {
    let env = Env::new();
    env.write("ws/lines.txt", "one\ntwo\nthree\nfour\n");
    env.write("ws/sub/deep/x.rs", "fn main() {}\n");
    std::fs::write(env.root().join("pic.png"), [0x89, b'P', b'N', b'G']).unwrap();
    for protocol in BOTH {
        let c = env.start(protocol, &[]).await;
        // read_text_file and its alias, head/tail, structured content.
        let r = c.call("read_text_file", path("lines.txt")).await;
        assert_eq!(r.structured_content, Some(json!({"content": "one\ntwo\nthree\nfour\n"})));
        assert_eq!(c.ok("read_file", path("lines.txt")).await, "one\ntwo\nthree\nfour\n");
        assert_eq!(c.ok("read_text_file", json!({"path": "lines.txt", "head": 2})).await, "one\ntwo");
        assert_eq!(c.ok("read_text_file", json!({"path": "lines.txt", "tail": 2})).await, "three\nfour");
        let both = c.err("read_text_file", json!({"path": "lines.txt", "head": 1, "tail": 1})).await;
        assert!(both.contains("both head and tail"), "{both}");
        let abs = env.root().join("lines.txt");
        assert_eq!(c.ok("read_text_file", path(abs.to_str().unwrap())).await, "one\ntwo\nthree\nfour\n");
        assert!(c.err("read_text_file", path("missing.txt")).await.contains("does not exist"));
        assert!(c.err("read_text_file", path("sub")).await.contains("is a directory"));
        // read_media_file.
        let r = c.call("read_media_file", path("pic.png")).await;
        let img = r.content[0].as_image().expect("image content");
        assert_eq!(img.mime_type, "image/png");
        assert_eq!(img.data, "iVBORw==");
        // read_multiple_files: one failure does not stop the others.
        let args = json!({"paths": ["hello.txt", "missing.txt", "../outside/secret.txt"]});
        let t = c.ok("read_multiple_files", args.clone()).await;
        assert!(t.starts_with("hello.txt:\nhello world\n\n\n---\nmissing.txt: Error - "), "{t}");
        assert!(t.contains("../outside/secret.txt: Error - refused"), "{t}");
        mcpsec_e2e::assert_no_leak(&env, &args, &t);
        // Listings.
        let l = c.ok("list_directory", path(".")).await;
        assert_eq!(l, "[FILE] hello.txt\n[FILE] lines.txt\n[FILE] pic.png\n[DIR] sub");
        let s = c.ok("list_directory_with_sizes", json!({"path": ".", "sortBy": "size"})).await;
        let files: Vec<&str> = s.lines().filter(|l| l.starts_with("[FILE]")).collect();
        assert!(files[0].starts_with("[FILE] lines.txt") && files[2].starts_with("[FILE] pic.png"), "{s}");
        assert!(s.ends_with("Total: 3 files, 1 directories\nCombined size: 35 B"), "{s}");
        let tree: Value = serde_json::from_str(&c.ok("directory_tree", path("sub")).await).unwrap();
        assert_eq!(
            tree,
            json!([{"name": "deep", "type": "directory", "children": [{"name": "x.rs", "type": "file"}]}])
        );
        let tree = c.ok("directory_tree", json!({"path": ".", "excludePatterns": ["sub", "*.png"]})).await;
        assert!(!tree.contains("deep") && !tree.contains("pic.png") && tree.contains("hello.txt"), "{tree}");
        // search_files: globs relative to the path, full paths back.
        let hits = c.ok("search_files", json!({"path": ".", "pattern": "**/*.rs"})).await;
        assert_eq!(hits, env.root().join("sub/deep/x.rs").display().to_string());
        assert_eq!(c.ok("search_files", json!({"path": ".", "pattern": "*.rs"})).await, "No matches found");
        let hits =
            c.ok("search_files", json!({"path": ".", "pattern": "**/*.txt", "excludePatterns": ["lines*"]})).await;
        assert_eq!(hits, env.root().join("hello.txt").display().to_string());
        // get_file_info.
        let info = c.ok("get_file_info", path("lines.txt")).await;
        assert!(info.starts_with("size: 19\ncreated: "), "{info}");
        assert!(info.contains("isDirectory: false\nisFile: true\npermissions: 6"), "{info}");
        // list_allowed_directories.
        let dirs = c.ok("list_allowed_directories", json!({})).await;
        assert_eq!(dirs, format!("Allowed directories:\n{}", env.root().canonicalize().unwrap().display()));
        c.close().await;
    }
}

#[tokio::test]
async fn write_tools() {
    let env = Env::new();
    for protocol in BOTH {
        let c = allow_all(&env, protocol).await;
        assert_eq!(
            c.ok("write_file", json!({"path": "new.txt", "content": "fresh\n"})).await,
            "Successfully wrote to new.txt"
        );
        assert_eq!(env.read("ws/new.txt"), "fresh\n");
        // Overwrite keeps the mode, leaves no temporary file.
        std::fs::set_permissions(env.root().join("new.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        c.ok("write_file", json!({"path": "new.txt", "content": "second\n"})).await;
        assert_eq!(env.read("ws/new.txt"), "second\n");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(env.root().join("new.txt")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(env.root()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().contains(".tmp")), "{names:?}");
        // Writing into a missing directory says so.
        let e = c.err("write_file", json!({"path": "no/dir/f.txt", "content": "x"})).await;
        assert!(e.contains("parent directory"), "{e}");
        // edit_file: dry run changes nothing, the real one does.
        let diff = c
            .ok(
                "edit_file",
                json!({"path": "new.txt", "edits": [{"oldText": "second", "newText": "third"}], "dryRun": true}),
            )
            .await;
        assert!(diff.contains("-second\n+third"), "{diff}");
        assert_eq!(env.read("ws/new.txt"), "second\n");
        c.ok("edit_file", json!({"path": "new.txt", "edits": [{"oldText": "second", "newText": "third"}]})).await;
        assert_eq!(env.read("ws/new.txt"), "third\n");
        let e = c.err("edit_file", json!({"path": "new.txt", "edits": [{"oldText": "nope", "newText": "x"}]})).await;
        assert!(e.contains("Could not find exact match"), "{e}");
        // create_directory: nested, idempotent.
        assert_eq!(c.ok("create_directory", path("a/b/c")).await, "Successfully created directory a/b/c");
        c.ok("create_directory", path("a/b/c")).await;
        assert!(env.root().join("a/b/c").is_dir());
        assert!(c.err("create_directory", path("new.txt")).await.contains("already exists"));
        // move_file: refuses an existing destination.
        c.ok("move_file", json!({"source": "new.txt", "destination": "a/moved.txt"})).await;
        assert!(!env.exists("ws/new.txt") && env.read("ws/a/moved.txt") == "third\n");
        env.write("ws/other.txt", "other");
        let e = c.err("move_file", json!({"source": "other.txt", "destination": "a/moved.txt"})).await;
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(env.read("ws/a/moved.txt"), "third\n");
        // delete_file: file, empty dir, non-empty dir only with recursive.
        c.ok("delete_file", path("other.txt")).await;
        assert!(!env.exists("ws/other.txt"));
        let e = c.err("delete_file", path("a")).await;
        assert!(e.contains("recursive"), "{e}");
        c.ok("delete_file", json!({"path": "a", "recursive": true})).await;
        assert!(!env.exists("ws/a"));
        let e = c.err("delete_file", path(".")).await;
        assert!(e.contains("root directory itself"), "{e}");
        c.close().await;
    }
}

#[tokio::test]
async fn invalid_arguments_are_tool_errors_that_name_the_problem() {
    let env = Env::new();
    let c = allow_all(&env, Protocol::Legacy).await;
    let cases = [
        ("read_text_file", json!({})),
        ("read_text_file", json!({"path": 7})),
        ("read_text_file", json!({"path": "hello.txt", "head": -1})),
        ("read_text_file", json!({"path": "hello.txt", "bogus": 1})),
        ("read_multiple_files", json!({"paths": []})),
        ("write_file", json!({"path": "x"})),
        ("list_directory_with_sizes", json!({"path": ".", "sortBy": "color"})),
        ("edit_file", json!({"path": "hello.txt", "edits": [{"old": "a"}]})),
        ("search_files", json!({"path": ".", "pattern": "a/[b"})),
        ("list_allowed_directories", json!({"extra": true})),
    ];
    for (tool, args) in cases {
        let r = c.call(tool, args.clone()).await;
        assert_eq!(r.is_error, Some(true), "{tool} {args}");
        let t = text(&r);
        assert!(t.contains("invalid arguments") || t.contains("not a valid glob"), "{tool} {args}: {t}");
    }
    assert!(!env.exists("ws/x"));
    c.close().await;
}

#[tokio::test]
async fn protected_paths_hold_even_when_everything_is_allowed() {
    let env = Env::new();
    env.write("ws/.env", "API_KEY=hunter2");
    env.write("ws/conf/.env.local", "TOKEN=x");
    env.write("ws/certs/server.pem", "-----BEGIN PRIVATE KEY-----");
    env.write("ws/.git/HEAD", "ref: refs/heads/main\n");
    env.write("ws/.git/config", "[core]\n");
    env.write("ws/vendor/lib/.git/HEAD", "nested\n");
    env.symlink(".env", "ws/innocent.txt");
    let c = allow_all(&env, Protocol::Legacy).await;
    for denied in [".env", "conf/.env.local", "certs/server.pem", "innocent.txt"] {
        let e = c.err("read_text_file", path(denied)).await;
        assert!(e.contains("paths.deny"), "{denied}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = c.err("write_file", json!({"path": denied, "content": "x"})).await;
        assert!(e.contains("paths.deny"), "{denied}: {e}");
    }
    assert_eq!(env.read("ws/.env"), "API_KEY=hunter2");
    // Left out of listings, trees and searches.
    let l = c.ok("list_directory", path(".")).await;
    assert!(!l.contains(".env") && l.contains(".git") && l.contains("innocent.txt"), "{l}");
    let t = c.ok("directory_tree", path(".")).await;
    assert!(!t.contains(".env") && !t.contains("server.pem"), "{t}");
    let s = c.ok("search_files", json!({"path": ".", "pattern": "**/*"})).await;
    assert!(!s.contains(".env") && !s.contains("server.pem"), "{s}");
    // .git is readable but never written, moved or deleted.
    assert_eq!(c.ok("read_text_file", path(".git/HEAD")).await, "ref: refs/heads/main\n");
    for (tool, args) in [
        ("write_file", json!({"path": ".git/HEAD", "content": "pwned"})),
        ("edit_file", json!({"path": ".git/config", "edits": [{"oldText": "core", "newText": "x"}]})),
        ("delete_file", json!({"path": ".git", "recursive": true})),
        ("delete_file", json!({"path": ".git/HEAD"})),
        ("move_file", json!({"source": ".git", "destination": "git-backup"})),
        ("move_file", json!({"source": "hello.txt", "destination": ".git/hooks-pre-commit"})),
        ("create_directory", json!({"path": ".git/hooks"})),
        ("delete_file", json!({"path": "vendor/lib/.git", "recursive": true})),
        ("delete_file", json!({"path": "vendor", "recursive": true})),
        ("write_file", json!({"path": "vendor/lib/.git/HEAD", "content": "pwned"})),
    ] {
        let e = c.err(tool, args.clone()).await;
        assert!(e.contains("paths.readonly") || e.contains("paths.deny"), "{tool} {args}: {e}");
    }
    assert_eq!(env.read("ws/.git/HEAD"), "ref: refs/heads/main\n");
    assert_eq!(env.read("ws/vendor/lib/.git/HEAD"), "nested\n");
    // A directory holding a protected file cannot be deleted or moved wholesale.
    let e = c.err("delete_file", json!({"path": "conf", "recursive": true})).await;
    assert!(e.contains("paths.deny"), "{e}");
    assert!(env.exists("ws/conf/.env.local"));
    c.close().await;
}
