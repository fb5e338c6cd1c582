//! Undo, end to end: destructive calls through the real server keep what
//! they remove; `mcpsec undo`, `mcpsec trash list / purge` in a "terminal".

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mcpsec_e2e::{ALLOW_ALL, Env, Protocol, path, poll};
use serde_json::{Value, json};
use sha2::Digest;

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The `undo` details of the last ok result record of `tool`.
fn last_undo(env: &Env, tool: &str) -> (u64, Value) {
    let r = env
        .audit_records()
        .into_iter()
        .rev()
        .find(|r| r["tool"] == tool && r["outcome"] == "ok" && r["event"] == "tool_call")
        .expect("an ok record");
    (r["seq"].as_u64().unwrap(), r["details"]["undo"].clone())
}

/// The kept object of the trash entry that a result record's `undo`
/// details name.
fn kept_path(trash: &Path, details: &Value) -> PathBuf {
    trash.join(details["trash"].as_u64().expect("a trash entry").to_string())
}

/// The trash index, for tampering with an entry's manifest (its row) as
/// someone with the state directory's permissions could.
fn index(trash: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(trash.join("index.db")).unwrap()
}

fn read_manifest(trash: &Path, details: &Value) -> String {
    let seq = details["trash"].as_i64().expect("a trash entry");
    index(trash).query_row("SELECT manifest FROM manifests WHERE seq = ?1", [seq], |r| r.get(0)).unwrap()
}

/// Makes every complete entry of the trash `secs` older: its time in the
/// index and in its manifest.
fn age_entries(trash: &Path, secs: i64) {
    let n = index(trash)
        .execute(
            "UPDATE manifests SET time = time - ?1, manifest = json_set(manifest, '$.time', json_extract(manifest, '$.time') - ?1)",
            [secs],
        )
        .unwrap();
    assert!(n > 0, "no entry in the trash to age");
}

fn write_manifest(trash: &Path, details: &Value, text: &str) {
    let seq = details["trash"].as_i64().expect("a trash entry");
    let n = index(trash).execute("UPDATE manifests SET manifest = ?2 WHERE seq = ?1", rusqlite::params![seq, text]);
    assert_eq!(n.unwrap(), 1);
}

/// Every entry below `dir`: (path, kind, mode, content or link target).
fn snapshot(dir: &Path) -> Vec<(String, &'static str, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.push((rel, "link", 0, std::fs::read_link(&p).unwrap().display().to_string().into_bytes()));
            } else if meta.is_dir() {
                out.push((rel, "dir", mode(&p), Vec::new()));
                stack.push(p);
            } else {
                out.push((rel, "file", mode(&p), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn undo(env: &Env, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["undo"];
    all.extend_from_slice(args);
    env.cli(&all)
}

#[tokio::test]
async fn delete_overwrite_and_edit_are_undone_byte_identical_with_their_modes() {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    let cfg = cfg.to_str().unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    std::fs::write(env.root().join("blob.bin"), &binary).unwrap();
    std::fs::set_permissions(env.root().join("blob.bin"), PermissionsExt::from_mode(0o640)).unwrap();
    env.write("ws/notes.txt", "version 1\n");
    std::fs::set_permissions(env.root().join("notes.txt"), PermissionsExt::from_mode(0o600)).unwrap();
    env.write("ws/code.rs", "fn main() { old(); }\n");
    let c = env.start(Protocol::Modern, &["--config", cfg]).await;

    // Delete: the file moves to the trash (0600), the record names its hash.
    c.ok("delete_file", path("blob.bin")).await;
    assert!(!env.exists("ws/blob.bin"));
    let (del_seq, d) = last_undo(&env, "delete_file");
    assert_eq!((d["action"].as_str(), d["mode"].as_str()), (Some("delete"), Some("0640")), "{d}");
    assert_eq!(d["sha256"].as_str(), Some(sha256(&binary).as_str()));
    let data = kept_path(&env.state().join("trash"), &d);
    assert_eq!(mode(&data), 0o600);
    assert_eq!(mode(&env.state().join("trash/index.db")), 0o600);
    assert_eq!(mode(&env.state().join("trash")), 0o700);

    // Overwrite and edit.
    c.ok("write_file", json!({"path": "notes.txt", "content": "version 2\n"})).await;
    let (_, w) = last_undo(&env, "write_file");
    assert_eq!(w["left_sha256"].as_str(), Some(sha256(b"version 2\n").as_str()));
    c.ok("edit_file", json!({"path": "code.rs", "edits": [{"oldText": "old()", "newText": "new()"}]})).await;
    assert_eq!(env.read("ws/code.rs"), "fn main() { new(); }\n");
    let (edit_seq, _) = last_undo(&env, "edit_file");
    // A new file keeps nothing.
    c.ok("write_file", json!({"path": "fresh.txt", "content": "x"})).await;
    assert!(env.audit_records().last().unwrap()["details"]["undo"].is_null());

    // Undo by the result record's seq, or by the intent's (the entry's name).
    let (code, out, err) = undo(&env, &[&del_seq.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored the file"), "{out}");
    assert_eq!(std::fs::read(env.root().join("blob.bin")).unwrap(), binary);
    assert_eq!(mode(&env.root().join("blob.bin")), 0o640);
    let (code, _, err) = undo(&env, &[&w["trash"].to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/notes.txt"), "version 1\n");
    assert_eq!(mode(&env.root().join("notes.txt")), 0o600);
    let (code, out, err) = undo(&env, &[&edit_seq.to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/code.rs"), "fn main() { old(); }\n");
    // What the undo replaced is kept too: undoing the undo redoes the edit.
    let v: Value = serde_json::from_str(&out).unwrap();
    // The schema docs/json.md documents.
    let fields: std::collections::BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let documented = ["seq", "dry_run", "tool", "action", "path", "moved_to", "size", "replaces", "current_sha256"];
    let documented: std::collections::BTreeSet<&str> =
        documented.into_iter().chain(["forced", "record", "kept_as"]).collect();
    assert_eq!(fields, documented);
    let redo = v["kept_as"].as_u64().expect("the edited content was kept");
    let (code, _, err) = undo(&env, &[&redo.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/code.rs"), "fn main() { new(); }\n");

    // An entry is restored once; a call that kept nothing has nothing to undo.
    let (code, _, err) = undo(&env, &[&del_seq.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing to undo"), "{err}");
    c.close().await;
    let records = env.audit_records();
    assert_eq!(records.iter().filter(|r| r["event"] == "undo" && r["outcome"] == "ok").count(), 4);
    assert_eq!(env.cli(&["audit", "verify"]).0, 0);
}

#[tokio::test]
async fn a_deleted_tree_comes_back_whole_and_a_move_goes_back() {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    for (p, m) in [("ws/tree/a.txt", 0o644), ("ws/tree/sub/run.sh", 0o755), ("ws/tree/sub/deep/key", 0o600)] {
        env.write(p, p);
        std::fs::set_permissions(env.path().join(p), PermissionsExt::from_mode(m)).unwrap();
    }
    std::fs::create_dir(env.root().join("tree/empty")).unwrap();
    std::fs::set_permissions(env.root().join("tree/sub/deep"), PermissionsExt::from_mode(0o750)).unwrap();
    env.symlink("../a.txt", "ws/tree/sub/link");
    let before = snapshot(&env.root().join("tree"));
    std::fs::set_permissions(env.root().join("tree"), PermissionsExt::from_mode(0o751)).unwrap();
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("delete_file", json!({"path": "tree", "recursive": true})).await;
    assert!(!env.exists("ws/tree"));
    let (seq, d) = last_undo(&env, "delete_file");
    assert_eq!((d["kind"].as_str(), d["entries"].as_u64()), (Some("dir"), Some(8)), "{d}");
    c.ok("move_file", json!({"source": "hello.txt", "destination": "moved.txt"})).await;
    let (move_seq, _) = last_undo(&env, "move_file");

    let (code, out, err) = undo(&env, &["--dry-run", &seq.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would restore the directory (8 entries"), "{out}");
    assert!(!env.exists("ws/tree"), "a dry run changes nothing");
    let (code, _, err) = undo(&env, &[&seq.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(snapshot(&env.root().join("tree")), before);
    assert_eq!(mode(&env.root().join("tree")), 0o751);
    let (code, _, err) = undo(&env, &[&move_seq.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/hello.txt"), "hello world\n");
    assert!(!env.exists("ws/moved.txt"));
    c.close().await;
}

#[tokio::test]
async fn undo_refuses_to_overwrite_a_later_change_unless_forced() {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    env.write("ws/a.txt", "original\n");
    env.write("ws/b.txt", "deleted\n");
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("write_file", json!({"path": "a.txt", "content": "by the model\n"})).await;
    let (a_seq, _) = last_undo(&env, "write_file");
    c.ok("delete_file", path("b.txt")).await;
    let (b_seq, _) = last_undo(&env, "delete_file");
    c.close().await;
    // A human edits a.txt and creates a new b.txt afterwards.
    env.write("ws/a.txt", "the human's later edit\n");
    env.write("ws/b.txt", "new b\n");
    for seq in [a_seq, b_seq] {
        let (code, _, err) = undo(&env, &[&seq.to_string()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("refused") && err.contains("--force"), "{err}");
    }
    assert_eq!(env.read("ws/a.txt"), "the human's later edit\n");
    assert_eq!(env.read("ws/b.txt"), "new b\n");
    // Forced: restored, and the later change is kept in its turn.
    let (code, out, err) = undo(&env, &["--force", "--json", &a_seq.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/a.txt"), "original\n");
    let kept_as = serde_json::from_str::<Value>(&out).unwrap()["kept_as"].as_u64().unwrap();
    let (code, _, err) = undo(&env, &[&kept_as.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/a.txt"), "the human's later edit\n");
    let (code, _, err) = undo(&env, &["--force", &b_seq.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/b.txt"), "deleted\n");
    assert_eq!(env.cli(&["audit", "verify"]).0, 0);
}

/// The review's attack on the undo of a move: a→b, b→c, important→b, then
/// undo of the first move would move `important` to `a`.
#[tokio::test]
async fn undo_of_a_move_moves_back_only_what_the_move_put_there() {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    env.write("ws/a.txt", "a\n");
    env.write("ws/important.txt", "important\n");
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("move_file", json!({"source": "a.txt", "destination": "b.txt"})).await;
    let (first, d) = last_undo(&env, "move_file");
    assert_eq!(d["moved_sha256"].as_str(), Some(sha256(b"a\n").as_str()), "{d}");
    c.ok("move_file", json!({"source": "b.txt", "destination": "c.txt"})).await;
    c.ok("move_file", json!({"source": "important.txt", "destination": "b.txt"})).await;
    c.close().await;
    let (code, _, err) = undo(&env, &[&first.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("something other than what `move_file` moved there") && err.contains("--force"), "{err}");
    assert_eq!(env.read("ws/b.txt"), "important\n");
    assert!(!env.exists("ws/a.txt"));
    // The same object moved back by hand: undo goes ahead.
    std::fs::rename(env.root().join("b.txt"), env.root().join("important.txt")).unwrap();
    std::fs::rename(env.root().join("c.txt"), env.root().join("b.txt")).unwrap();
    let (code, _, err) = undo(&env, &[&first.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/a.txt"), "a\n");
    assert_eq!(env.read("ws/important.txt"), "important\n");
    assert_eq!(env.cli(&["audit", "verify"]).0, 0);
}

#[tokio::test]
async fn undo_of_a_move_whose_destination_changed_needs_force() {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    env.write("ws/a.txt", "a\n");
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("move_file", json!({"source": "a.txt", "destination": "b.txt"})).await;
    let (seq, _) = last_undo(&env, "move_file");
    c.close().await;
    env.write("ws/b.txt", "edited since\n");
    let (code, _, err) = undo(&env, &[&seq.to_string()]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = undo(&env, &["--force", &seq.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("ws/a.txt"), "edited since\n");
}

#[tokio::test]
async fn a_tampered_trash_entry_is_not_restored() {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    env.write("ws/a.txt", "precious\n");
    env.write("ws/b.txt", "also precious\n");
    env.write("ws/c.txt", "third\n");
    env.write("ws/d.txt", "fourth\n");
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    let mut kept = Vec::new();
    for f in ["a.txt", "b.txt", "c.txt", "d.txt"] {
        c.ok("delete_file", path(f)).await;
        kept.push(last_undo(&env, "delete_file").1);
    }
    let [a, b, c3, d] = <[Value; 4]>::try_from(kept).unwrap();
    c.close().await;
    let trash = env.state().join("trash");
    // Review finding: forge the data and the entry's own hash and size, but
    // not the entry-wide hash, which the audit record also holds.
    std::fs::write(kept_path(&trash, &c3), "evil\n").unwrap();
    let mut m: Value = serde_json::from_str(&read_manifest(&trash, &c3)).unwrap();
    m["kept"]["entries"][0]["sha256"] = json!(sha256(b"evil\n"));
    m["kept"]["entries"][0]["size"] = json!(5);
    m["kept"]["size"] = json!(5);
    write_manifest(&trash, &c3, &m.to_string());
    // Redirect an entry to another path.
    let manifest = read_manifest(&trash, &d);
    assert!(manifest.contains("\"d.txt\""), "{manifest}");
    write_manifest(&trash, &d, &manifest.replace("\"d.txt\"", "\"evil.txt\""));
    for d in [&c3, &d] {
        let (code, _, err) = undo(&env, &[&d["trash"].to_string()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("refused") && err.contains("altered"), "{err}");
    }
    assert!(!env.exists("ws/evil.txt") && !env.exists("ws/c.txt") && !env.exists("ws/d.txt"));
    // Content swapped in the trash.
    std::fs::write(kept_path(&trash, &a), "evil\n").unwrap();
    // Content and manifest forged together: the audit log still knows.
    std::fs::write(kept_path(&trash, &b), "evil\n").unwrap();
    let manifest = read_manifest(&trash, &b);
    let old = b["sha256"].as_str().unwrap();
    assert!(manifest.contains(old), "{manifest}");
    let forged = manifest.replace(old, &sha256(b"evil\n")).replace("\"size\":14", "\"size\":5");
    write_manifest(&trash, &b, &forged);
    for d in [a, b] {
        let (code, _, err) = undo(&env, &[&d["trash"].to_string()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("refused") && (err.contains("altered") || err.contains("changed since")), "{err}");
    }
    assert!(!env.exists("ws/a.txt") && !env.exists("ws/b.txt"));
}

#[tokio::test]
async fn retention_purges_the_oldest_first_and_a_full_trash_behaves_as_configured() {
    let env = Env::new();
    let four_k = "x".repeat(4096);
    for i in 0..4 {
        env.write(&format!("ws/f{i}.txt"), &four_k);
    }
    env.write("ws/big.txt", &"y".repeat(20_000));
    // purge_oldest: room for two 4 KiB entries (and no minimum age here:
    // see the next test for `min_keep`).
    let cfg = env.config(&format!("{ALLOW_ALL}[undo]\nmax_size = \"10KiB\"\nmin_keep = \"0s\"\n"));
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    let mut seqs = Vec::new();
    for i in 0..4 {
        c.ok("delete_file", path(&format!("f{i}.txt"))).await;
        seqs.push(last_undo(&env, "delete_file").1["trash"].as_u64().unwrap());
    }
    // Larger than the whole trash: refused, left in place, however it is
    // spelled (review finding: `big.txt/` once deleted it for good; now it
    // names a directory, which a file is not).
    for (spelled, why) in [("big.txt", "could not be kept for undo ("), ("big.txt/", "is not a directory")] {
        let e = c.err("delete_file", path(spelled)).await;
        assert!(e.contains(why) && (spelled.ends_with('/') || e.contains("max_size")), "{e}");
        assert_eq!(env.read("ws/big.txt").len(), 20_000);
    }
    // The purge runs in the background: wait for it (bounded).
    let listed = |env: &Env| -> Vec<u64> {
        let (code, out, err) = env.cli(&["trash", "list", "--json"]);
        assert_eq!(code, 0, "{err}");
        for e in serde_json::from_str::<Vec<Value>>(&out).unwrap() {
            let mut fields: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
            fields.sort_unstable();
            // docs/json.md
            assert_eq!(fields, ["action", "complete", "moved_to", "path", "seq", "size", "time", "tool", "user"]);
        }
        serde_json::from_str::<Vec<Value>>(&out).unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    };
    let left = poll(|| listed(&env), |l| l.len() <= 2);
    assert_eq!(left, seqs[2..].to_vec(), "the two oldest go first");
    c.close().await;

    // refuse: once full, destructive calls are refused until a human purges.
    let cfg = env.config(&format!("{ALLOW_ALL}[undo]\nmax_size = \"10KiB\"\non_full = \"refuse\"\n"));
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    env.write("ws/g.txt", &four_k);
    let e = c.err("delete_file", path("g.txt")).await;
    assert!(e.contains("room left") || e.contains("trash is full"), "{e}");
    assert!(env.exists("ws/g.txt"));
    let (code, _, err) = env.cli(&["trash", "purge"]);
    assert_eq!(code, 0, "{err}");
    assert!(listed(&env).is_empty());
    c.ok("delete_file", path("g.txt")).await;
    c.close().await;
    assert!(env.audit_records().iter().any(|r| r["event"] == "trash_purge"));

    // Age: entries older than the retention go when a server starts. The
    // entries are made an hour old in the index (no waiting for the clock).
    age_entries(&env.state().join("trash"), 3600);
    let cfg = env.config(&format!("{ALLOW_ALL}[undo]\nretention = \"1s\"\n"));
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    let left = poll(|| listed(&env), Vec::is_empty);
    assert!(left.is_empty(), "{left:?}");
    c.close().await;
}

/// Review finding: a 1 GiB sparse file (4 KiB on disk) was charged 1 GiB
/// and purged every older entry, a delete answered a second before too.
#[tokio::test]
async fn a_model_cannot_push_its_recent_undo_history_out_of_the_trash() {
    let env = Env::new();
    let dense = "d".repeat(400 << 10);
    for name in ["d0", "d1", "d2"] {
        env.write(&format!("ws/{name}"), &dense);
    }
    let f = std::fs::File::create(env.root().join("sparse")).unwrap();
    f.set_len(768 << 10).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"data", 1000).unwrap();
    drop(f);
    let cfg = env.config(&format!("{ALLOW_ALL}[undo]\nmax_size = \"1MiB\"\n"));
    let c = env.start(Protocol::Legacy, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("delete_file", path("d0")).await;
    c.ok("delete_file", path("sparse")).await;
    let (_, d) = last_undo(&env, "delete_file");
    assert_eq!(d["size"].as_u64(), Some(768 << 10), "{d}");
    assert!(d["disk"].as_u64().unwrap() <= 64 << 10, "charged its blocks: {d}");
    c.ok("delete_file", path("d1")).await;
    // A third 400 KiB entry would need a purge of entries younger than
    // [undo] min_keep (10 minutes): refused, and nothing is purged.
    let e = c.err("delete_file", path("d2")).await;
    assert!(e.contains("min_keep") && e.contains("could not be kept for undo"), "{e}");
    assert!(env.exists("ws/d2"));
    c.close().await;
    let (code, out, err) = env.cli(&["trash", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 3, "{out}");
    assert!(!env.audit_records().iter().any(|r| r["event"] == "trash_purge"));
}

#[tokio::test]
async fn undo_can_be_turned_off_per_capability() {
    let env = Env::new();
    env.write("ws/a.txt", "a");
    env.write("ws/b.txt", "b");
    let cfg = env.config(&format!("{ALLOW_ALL}[undo]\ndisabled_for = [\"delete_files\"]\n"));
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("delete_file", path("a.txt")).await;
    assert!(last_undo(&env, "delete_file").1.is_null());
    c.ok("write_file", json!({"path": "b.txt", "content": "B"})).await;
    assert!(last_undo(&env, "write_file").1.is_object());
    c.close().await;
}

/// A damaged trash index is bad input from disk: a call that would need it
/// is refused and changes nothing, the trash commands say what is wrong,
/// and nothing is repaired behind the operator's back.
#[tokio::test]
async fn a_damaged_trash_index_refuses_keeping_calls_and_is_never_repaired() {
    let env = Env::new();
    env.write("ws/a.txt", "precious\n");
    env.write("ws/b.txt", "also precious\n");
    let cfg = env.config(ALLOW_ALL);
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("write_file", json!({"path": "b.txt", "content": "changed\n"})).await;
    c.close().await;
    let trash_index = |env: &Env| {
        let (_, out, _) = env.cli(&["doctor", "--json"]);
        let findings: Value = serde_json::from_str(&out).unwrap();
        let found = findings["findings"].as_array().unwrap().iter().find(|f| f["check"] == "trash_index").cloned();
        found.unwrap_or_else(|| panic!("no trash_index finding: {out}"))
    };
    assert_eq!(trash_index(&env)["status"], "ok");
    let trash = env.state().join("trash");
    for name in ["index.db-wal", "index.db-shm"] {
        let _ = std::fs::remove_file(trash.join(name));
    }
    let garbage = "this is not an SQLite database\n".repeat(300);
    std::fs::write(trash.join("index.db"), &garbage).unwrap();

    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    for (tool, args) in
        [("write_file", json!({"path": "a.txt", "content": "overwritten\n"})), ("delete_file", path("a.txt"))]
    {
        let err = c.err(tool, args).await;
        assert!(err.contains("trash/index.db") && err.contains("not repaired"), "{tool}: {err}");
        assert!(!err.contains(&env.state().display().to_string()), "no state-dir path shown to the model: {err}");
    }
    c.ok("read_text_file", path("a.txt")).await;
    c.close().await;
    assert_eq!(env.read("ws/a.txt"), "precious\n");
    let (code, _, err) = env.cli(&["trash", "list"]);
    assert_ne!(code, 0);
    assert!(err.contains("trash/index.db") && err.contains("not a database"), "{err}");
    let (code, _, err) = env.cli(&["doctor"]);
    assert_eq!(code, 1, "{err}");
    let index = trash_index(&env);
    assert_eq!(index["status"], "fail", "{index}");
    assert!(index["fix"].as_str().is_some_and(|f| f.contains(".damaged")), "{index}");
    assert_eq!(std::fs::read_to_string(trash.join("index.db")).unwrap(), garbage);
}

#[tokio::test]
async fn undo_and_a_busy_server_run_side_by_side() {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    for i in 0..20 {
        env.write(&format!("ws/d{i}.txt"), &format!("file {i}\n"));
    }
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    let mut seqs = Vec::new();
    for i in 0..20 {
        c.ok("delete_file", path(&format!("d{i}.txt"))).await;
        seqs.push(last_undo(&env, "delete_file").0);
    }
    // While the server overwrites another file in a loop, humans undo every
    // deletion, two processes racing for each one.
    env.write("ws/busy.txt", "0");
    let writer = async {
        for i in 0..200 {
            c.ok("write_file", json!({"path": "busy.txt", "content": i.to_string()})).await;
        }
    };
    let undoers = tokio::task::spawn_blocking({
        let env_path = env.path().to_path_buf();
        let seqs = seqs.clone();
        move || {
            let mut wins = 0;
            for seq in seqs {
                let run = || {
                    mcpsec_e2e::mcpsec_command()
                        .args(["undo", &seq.to_string()])
                        .env("MCPSEC_STATE_DIR", env_path.join("state"))
                        .env("XDG_CONFIG_HOME", env_path.join("no-config"))
                        .output()
                        .unwrap()
                };
                let (a, b) = std::thread::scope(|s| {
                    let a = s.spawn(run);
                    let b = s.spawn(run);
                    (a.join().unwrap(), b.join().unwrap())
                });
                wins += usize::from(a.status.success()) + usize::from(b.status.success());
            }
            wins
        }
    });
    let (_, wins) = tokio::join!(writer, undoers);
    assert_eq!(wins.unwrap(), 20, "each deletion is restored exactly once");
    for i in 0..20 {
        assert_eq!(env.read(&format!("ws/d{i}.txt")), format!("file {i}\n"));
    }
    assert_eq!(env.read("ws/busy.txt"), "199");
    c.close().await;
    let (code, out, _) = env.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn a_root_holding_the_state_directory_is_refused() {
    let env = Env::new();
    // The state dir inside the root would put the trash, the key and the
    // log within reach of the tools.
    let mut cmd = mcpsec_e2e::mcpsec_command();
    let out = cmd
        .args(["serve", "--root"])
        .arg(env.path())
        .env("MCPSEC_STATE_DIR", env.state())
        .env("XDG_CONFIG_HOME", env.path().join("no-config"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("state directory") && err.contains("overlap"), "{err}");
    // Nor a root inside the state directory (the trash, the key).
    std::fs::create_dir_all(env.state().join("trash")).unwrap();
    let out = mcpsec_e2e::mcpsec_command()
        .args(["serve", "--root"])
        .arg(env.state().join("trash"))
        .env("MCPSEC_STATE_DIR", env.state())
        .env("XDG_CONFIG_HOME", env.path().join("no-config"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn across_filesystems_what_is_removed_is_copied_and_comes_back() {
    // The state directory on tmpfs, the root on disk: renames fail with
    // EXDEV, so keeping copies (and restoring copies back).
    let shm = Path::new("/dev/shm");
    let same_fs = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(a).unwrap().dev() == std::fs::metadata(b).unwrap().dev()
    };
    let env = Env::new();
    assert!(shm.is_dir() && !same_fs(shm, env.path()), "this test needs /dev/shm on a filesystem of its own");
    let state = tempfile::tempdir_in(shm).unwrap();
    std::fs::set_permissions(state.path(), PermissionsExt::from_mode(0o700)).unwrap();
    let cfg = env.config(ALLOW_ALL);
    env.write("ws/tree/a.txt", "a\n");
    env.write("ws/tree/sub/b.txt", "b\n");
    std::fs::set_permissions(env.root().join("tree/sub/b.txt"), PermissionsExt::from_mode(0o604)).unwrap();
    env.write("ws/over.txt", "before\n");
    // Times come back too (a copy would otherwise stamp them with now).
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let timed = ["tree/a.txt", "tree/sub/b.txt", "tree/sub", "over.txt"];
    for p in timed {
        std::fs::File::open(env.root().join(p)).unwrap().set_modified(old).unwrap();
    }
    let before = snapshot(&env.root().join("tree"));
    let mut cmd = env.command(&["--config", cfg.to_str().unwrap()]);
    cmd.env("MCPSEC_STATE_DIR", state.path());
    let c = mcpsec_e2e::Client::connect(cmd, Protocol::Modern).await;
    c.ok("delete_file", json!({"path": "tree", "recursive": true})).await;
    c.ok("write_file", json!({"path": "over.txt", "content": "after\n"})).await;
    c.close().await;
    let cli = |args: &[&str]| {
        let out = mcpsec_e2e::mcpsec_command()
            .args(args)
            .env("MCPSEC_STATE_DIR", state.path())
            .env("XDG_CONFIG_HOME", env.path().join("no-config"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (_, list, _) = cli(&["trash", "list", "--json"]);
    let entries: Vec<Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    for e in &entries {
        let (code, _, err) = cli(&["undo", &e["seq"].to_string()]);
        assert_eq!(code, Some(0), "{err}");
    }
    assert_eq!(snapshot(&env.root().join("tree")), before);
    assert_eq!(env.read("ws/over.txt"), "before\n");
    for p in timed {
        assert_eq!(std::fs::symlink_metadata(env.root().join(p)).unwrap().modified().unwrap(), old, "{p}");
    }
}

/// Concurrent writes that create the same new file: one creates it, the
/// others overwrite it and keep what they replace (none is refused).
#[tokio::test]
async fn concurrent_creates_of_one_file_all_succeed_and_keep_what_they_replace() {
    let env = Env::new();
    let cfg = env.config(ALLOW_ALL);
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    let peer = c.peer();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..16 {
        let peer = peer.clone();
        calls.spawn(async move {
            let args = json!({"path": "new.txt", "content": format!("writer {i}\n")});
            let params =
                rmcp::model::CallToolRequestParams::new("write_file").with_arguments(args.as_object().unwrap().clone());
            peer.call_tool(params).await.unwrap()
        });
    }
    while let Some(r) = calls.join_next().await {
        let r = r.unwrap();
        assert_ne!(r.is_error, Some(true), "{r:?}");
    }
    c.close().await;
    // Fifteen overwrites kept what they replaced.
    let kept = env.audit_records().iter().filter(|r| r["details"]["undo"]["action"] == "overwrite").count();
    assert_eq!(kept, 15);
}

/// A crash between keeping an object and writing its manifest leaves an
/// incomplete entry: it is listed as such, never restored, and a purge
/// keeps it through its grace minute (a server may still be filling it).
#[tokio::test]
async fn an_incomplete_entry_is_listed_never_restored_and_kept_through_its_grace() {
    let env = Env::new();
    env.write("ws/a.txt", "precious\n");
    let cfg = env.config(ALLOW_ALL);
    let c = env.start(Protocol::Modern, &["--config", cfg.to_str().unwrap()]).await;
    c.ok("delete_file", path("a.txt")).await;
    let (_, d) = last_undo(&env, "delete_file");
    c.close().await;
    let seq = d["trash"].as_u64().unwrap();
    let trash = env.state().join("trash");
    let data = kept_path(&trash, &d);
    // The crash: the object is in the trash, its manifest never written.
    let n = index(&trash).execute("DELETE FROM manifests WHERE seq = ?1", [d["trash"].as_i64().unwrap()]);
    assert_eq!(n.unwrap(), 1);

    let (code, out, err) = env.cli(&["trash", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!((listed[0]["seq"].as_u64(), listed[0]["complete"].as_bool()), (Some(seq), Some(false)), "{out}");
    assert!(listed[0]["problem"].as_str().is_some_and(|p| p.contains("index.db") && p.contains("missing")), "{out}");
    let (code, out, err) = env.cli(&["trash", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("incomplete") && out.contains(&data.display().to_string()), "{out}");

    for args in
        [vec![seq.to_string()], vec![seq.to_string(), "--force".into()], vec!["--dry-run".into(), seq.to_string()]]
    {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = undo(&env, &args);
        assert_ne!(code, 0, "{args:?}: {err}");
        assert!(err.contains(&format!("trash entry {seq} is incomplete")), "{args:?}: {err}");
    }
    assert!(!env.exists("ws/a.txt"));

    // Purging everything, or everything older than a second, keeps it.
    // A real second passes: an incomplete entry's age comes from its
    // ctime, which nothing can set back (its manifest is not in the index).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for args in [&["trash", "purge"][..], &["trash", "purge", "--older-than", "1s"]] {
        let (code, _, err) = env.cli(args);
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read_to_string(&data).unwrap(), "precious\n", "{args:?}");
    }
}
