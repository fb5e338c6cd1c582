//! Keeping for undo: what is kept, what is refused, and that a refusal
//! changes nothing.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use mcpsec_pathguard::{GuardError, Room, Rules, Trash};

/// Room for anything.
const ANY: Room = Room { disk: u64::MAX, content: u64::MAX };

use crate::support::{Fx, SENTINEL, default_rules, sandbox};

fn trash(fx: &Fx) -> Trash {
    let state = fx.base.join("state");
    fs::create_dir_all(&state).unwrap();
    Trash::open(&state).unwrap()
}

/// A root holding `files` (each holding its own name), a sandbox over it
/// with no rules, its trash, and the trash directory's path.
fn with_files(files: &[&str]) -> (Fx, mcpsec_pathguard::Sandbox, Trash, std::path::PathBuf) {
    let fx = Fx::bare();
    for n in files {
        fs::write(fx.root.join(n), n).unwrap();
    }
    let sb = sandbox(std::slice::from_ref(&fx.root), Rules::none(), 1 << 20);
    let t = trash(&fx);
    let dir = fx.base.join("state/trash");
    (fx, sb, t, dir)
}

#[test]
fn a_file_with_other_hard_links_keeps_their_mode() {
    let fx = Fx::bare();
    fs::write(fx.root.join("f"), "old").unwrap();
    fs::set_permissions(fx.root.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::hard_link(fx.root.join("f"), fx.root.join("g")).unwrap();
    let sb = sandbox(std::slice::from_ref(&fx.root), Rules::none(), 1 << 20);
    let t = trash(&fx);
    let w = sb.write_keeping("f", b"new", &t.slot(1), ANY).unwrap();
    assert_eq!(w.kept.unwrap().kept.entries[0].mode, 0o644);
    assert_eq!(fs::read_to_string(fx.root.join("f")).unwrap(), "new");
    // `g` still names the old file, and its mode was not sealed to 0600.
    assert_eq!(fs::read_to_string(fx.root.join("g")).unwrap(), "old");
    assert_eq!(fs::metadata(fx.root.join("g")).unwrap().mode() & 0o777, 0o644);
}

#[test]
fn what_cannot_be_kept_is_not_removed() {
    let fx = Fx::bare();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fx.root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    fs::create_dir_all(fx.root.join("full/inner")).unwrap();
    let sb = sandbox(std::slice::from_ref(&fx.root), default_rules(), 1 << 20);
    let t = trash(&fx);
    let slot = t.slot(2);
    let e = sb.remove_keeping("fifo", false, &slot, ANY).unwrap_err();
    assert!(matches!(e, GuardError::NotKept { .. }), "{e}");
    assert!(e.to_string().contains("left unchanged"), "{e}");
    let e = sb.remove_keeping("full", false, &slot, ANY).unwrap_err();
    assert!(matches!(e, GuardError::DirectoryNotEmpty { .. }), "{e}");
    assert!(fx.root.join("fifo").exists() && fx.root.join("full/inner").is_dir());
    assert!(!slot.has_data());
    assert!(t.list().unwrap().is_empty());
}

#[test]
fn keeping_obeys_the_guard_and_never_leaves_the_root() {
    let fx = Fx::bare();
    symlink(fx.outside.join("secret"), fx.root.join("out")).unwrap();
    fs::create_dir_all(fx.root.join(".git")).unwrap();
    fs::write(fx.root.join(".git/HEAD"), "ref").unwrap();
    let sb = sandbox(std::slice::from_ref(&fx.root), default_rules(), 1 << 20);
    let t = trash(&fx);
    let slot = t.slot(3);
    for (path, refused) in [("../ws-evil/secret", true), (".git/HEAD", true), ("out/x", true)] {
        let e = sb.write_keeping(path, b"x", &t.slot(30), ANY).unwrap_err();
        assert_eq!(e.is_refusal(), refused, "{path}: {e}");
        assert!(!e.to_string().contains(SENTINEL));
        let e = sb.remove_keeping(path, true, &slot, ANY).unwrap_err();
        assert!(e.is_refusal() || matches!(e, GuardError::NotFound { .. }), "{path}: {e}");
    }
    // Deleting the symlink keeps the link itself, not its target.
    let kept = sb.remove_keeping("out", false, &slot, ANY).unwrap();
    assert_eq!(kept.kept.entries[0].kind, "symlink");
    assert_eq!(fs::read_to_string(fx.outside.join("secret")).unwrap(), SENTINEL);
    assert_eq!(fs::read_to_string(fx.root.join(".git/HEAD")).unwrap(), "ref");
}

#[test]
fn an_entry_is_never_reused() {
    let fx = Fx::bare();
    fs::write(fx.root.join("a"), "a").unwrap();
    fs::write(fx.root.join("b"), "b").unwrap();
    let sb = sandbox(std::slice::from_ref(&fx.root), Rules::none(), 1 << 20);
    let t = trash(&fx);
    // Kept data alone (no manifest yet) holds the name...
    sb.remove_keeping("a", false, &t.slot(7), ANY).unwrap();
    assert!(t.slot(7).ensure_free().unwrap_err().to_string().contains("exists already"));
    let e = sb.write_keeping("b", b"new", &t.slot(7), ANY).unwrap_err();
    assert!(e.to_string().contains("exists already"), "{e}");
    assert_eq!(fs::read_to_string(fx.root.join("b")).unwrap(), "b", "a refused keep changes nothing");
    // ...and so does a manifest alone (a move's entry).
    fs::write(fx.base.join("state/trash/8.json"), "{}").unwrap();
    assert!(t.slot(8).ensure_free().unwrap_err().to_string().contains("exists already"));
    let e = sb.remove_keeping("b", false, &t.slot(8), ANY).unwrap_err();
    assert!(e.to_string().contains("exists already"), "{e}");
    assert_eq!(fs::read_to_string(fx.root.join("b")).unwrap(), "b", "a refused keep changes nothing");
    let names: Vec<_> = fs::read_dir(&fx.root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no temporary or staged name is left: {names:?}");
    assert_eq!(fs::metadata(fx.base.join("state/trash")).unwrap().mode() & 0o777, 0o700);
}

/// A crash between keeping an object and writing its manifest, a manifest
/// cut short, damage, or an entry of the earlier layout: each is listed as
/// incomplete (never as an entry that could be restored), with its age.
#[test]
fn entries_without_a_sound_manifest_are_listed_as_incomplete() {
    use mcpsec_pathguard::trash::Listed;
    let (_fx, sb, t, dir) = with_files(&["a", "b", "c"]);
    // 1: kept, no manifest (a crash mid-keep).
    sb.remove_keeping("a", false, &t.slot(1), ANY).unwrap();
    // 2: a manifest cut short.
    let kept = sb.remove_keeping("b", false, &t.slot(2), ANY).unwrap();
    fs::write(dir.join("2.json"), "{\"v\":2,\"seq\":2,\"ti").unwrap();
    // 3: a complete manifest whose kept object is gone.
    let slot = t.slot(3);
    let at = sb.remove_keeping("c", false, &slot, ANY).unwrap();
    slot.commit(&manifest(3, &at)).unwrap();
    fs::remove_file(dir.join("3")).unwrap();
    // 4: the earlier layout, a directory an entry.
    fs::create_dir_all(dir.join("4")).unwrap();
    fs::write(dir.join("4/manifest.json"), "{\"v\":1}").unwrap();
    // Names that are not entries are ignored.
    fs::write(dir.join("007"), "x").unwrap();
    fs::write(dir.join("notes.json"), "x").unwrap();
    let listed = t.list().unwrap();
    let seqs: Vec<u64> = listed.iter().map(Listed::seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    for l in &listed {
        let Listed::Incomplete { problem, time, .. } = l else { panic!("listed as complete: {l:?}") };
        assert!(*time > 0, "{l:?}");
        assert!(!problem.is_empty());
        assert!(t.manifest(l.seq()).is_err(), "entry {} must not be restorable", l.seq());
    }
    assert!(t.manifest(9).unwrap().is_none());
    // Removing an incomplete entry removes every part of it.
    for seq in 1..=4 {
        assert!(t.remove(seq).unwrap(), "{seq}");
    }
    assert!(t.list().unwrap().is_empty());
    assert!(!t.remove(1).unwrap());
    drop(kept);
}

/// Manifests live in the trash's index, one row an entry: a row makes an
/// entry complete, holds its seq, is written once; a damaged row lists as
/// incomplete; a damaged index is reported and left as it is.
#[test]
fn manifests_are_rows_of_the_index() {
    use mcpsec_pathguard::trash::Listed;
    let (fx, sb, t, dir) = with_files(&["a", "b", "c"]);
    // Reading and removing never create the index (a server that keeps
    // nothing leaves none behind)...
    assert!(t.list().unwrap().is_empty());
    assert!(t.manifest(5).unwrap().is_none());
    assert!(!t.remove(5).unwrap());
    assert!(!dir.join("index.db").exists());
    // ...the first kept entry does.
    let slot = t.slot(5);
    let at = sb.remove_keeping("a", false, &slot, ANY).unwrap();
    slot.commit(&manifest(5, &at)).unwrap();
    assert_eq!(t.manifest(5).unwrap().unwrap().path, "a");
    assert_eq!(fs::metadata(dir.join("index.db")).unwrap().mode() & 0o777, 0o600);
    // No manifest file: one new inode an entry, the kept object's.
    assert!(!dir.join("5.json").exists());
    // Written once.
    let e = slot.commit(&manifest(5, &at)).unwrap_err();
    assert!(e.to_string().contains("has a manifest in index.db already"), "{e}");
    // A row alone (a move keeps nothing) holds the seq.
    let moved = t.slot(6);
    let mut m = manifest(6, &at);
    m.action = mcpsec_pathguard::trash::Action::Move;
    m.kept = None;
    m.moved_to = Some("elsewhere".into());
    moved.commit(&m).unwrap();
    assert!(moved.ensure_free().unwrap_err().to_string().contains("exists already"));
    assert!(matches!(&t.list().unwrap()[1], Listed::Entry(m) if m.seq == 6));
    // Rows damaged behind mcpsec's back: cut short, or naming another seq.
    let kept = sb.remove_keeping("b", false, &t.slot(7), ANY).unwrap();
    t.slot(7).commit(&manifest(7, &kept)).unwrap();
    let kept = sb.remove_keeping("c", false, &t.slot(8), ANY).unwrap();
    t.slot(8).commit(&manifest(8, &kept)).unwrap();
    let db = rusqlite::Connection::open(dir.join("index.db")).unwrap();
    db.execute("UPDATE manifests SET manifest = substr(manifest, 1, 20) WHERE seq = 7", []).unwrap();
    db.execute("UPDATE manifests SET manifest = replace(manifest, '\"seq\":8', '\"seq\":5') WHERE seq = 8", [])
        .unwrap();
    drop(db);
    let listed = t.list().unwrap();
    assert_eq!(listed.iter().map(Listed::seq).collect::<Vec<_>>(), [5, 6, 7, 8]);
    for l in &listed[2..] {
        let Listed::Incomplete { problem, time, .. } = l else { panic!("listed as complete: {l:?}") };
        assert!(*time > 0, "{l:?}");
        assert!(problem.contains("index.db") || problem.contains("names seq 5"), "{problem}");
        assert!(t.manifest(l.seq()).is_err());
    }
    // Removing an entry removes its row.
    assert!(t.remove(6).unwrap());
    assert!(t.slot(6).ensure_free().is_ok());
    drop(t);

    // A damaged index: every use says which file and why; nothing is
    // repaired, replaced or lost.
    let garbage = b"not a database, and never one".repeat(200);
    for name in ["index.db-wal", "index.db-shm"] {
        let _ = fs::remove_file(dir.join(name));
    }
    fs::write(dir.join("index.db"), &garbage).unwrap();
    let t = trash(&fx);
    let e = t.list().unwrap_err().to_string();
    assert!(e.contains("trash/index.db") && e.contains("not repaired"), "{e}");
    assert!(!e.contains(&fx.base.display().to_string()), "no absolute path: {e}");
    let e = t.slot(9).commit(&manifest(9, &at)).unwrap_err().to_string();
    assert!(e.contains("index.db"), "{e}");
    assert_eq!(fs::read(dir.join("index.db")).unwrap(), garbage);
    assert!(dir.join("5").exists(), "kept objects stay");
}

/// An index planted as a symlink (to a database elsewhere, or to a file
/// the user cares about) is never opened or written through.
#[test]
fn a_symlinked_index_is_refused_and_its_target_left_alone() {
    let (fx, sb, t, dir) = with_files(&["a"]);
    fs::write(fx.outside.join("victim"), SENTINEL).unwrap();
    symlink(fx.outside.join("victim"), dir.join("index.db")).unwrap();
    let e = t.list().unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let slot = t.slot(1);
    let e = sb.remove_keeping("a", false, &slot, ANY).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert!(!e.to_string().contains(SENTINEL) && !e.to_string().contains("victim"), "{e}");
    assert!(fx.root.join("a").exists(), "a refused keep changes nothing");
    assert_eq!(fs::read_to_string(fx.outside.join("victim")).unwrap(), SENTINEL);
    assert!(!fx.outside.join("victim-wal").exists() && !fx.outside.join("victim-shm").exists());
}

fn manifest(seq: u64, at: &mcpsec_pathguard::trash::KeptAt) -> mcpsec_pathguard::trash::Manifest {
    use mcpsec_pathguard::trash::{Action, MANIFEST_VERSION, Manifest, now_secs};
    Manifest {
        v: MANIFEST_VERSION,
        seq,
        time: now_secs(),
        tool: "delete_file".into(),
        user: None,
        action: Action::Delete,
        root: at.root.clone(),
        path: at.path.clone(),
        kept: Some(at.kept.clone()),
        left_sha256: None,
        moved_to: None,
        moved_sha256: None,
    }
}

fn modes(dir: &std::path::Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for e in walkdir(dir) {
        out.push((e.display().to_string(), fs::symlink_metadata(&e).unwrap().mode() & 0o7777));
    }
    out.sort();
    out
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Review finding: a refused keep must not leave the tree with sealed
/// (0600/0700) modes, nor moved, nor half-copied.
#[test]
fn a_tree_that_cannot_be_kept_is_left_exactly_as_it_was() {
    let fx = Fx::bare();
    fs::create_dir_all(fx.root.join("tree/bin")).unwrap();
    fs::write(fx.root.join("tree/bin/run.sh"), "#!/bin/sh").unwrap();
    fs::set_permissions(fx.root.join("tree/bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(fx.root.join("tree/bin"), fs::Permissions::from_mode(0o755)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fx.root.join("tree/zz.sock"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let before = modes(&fx.root.join("tree"));
    let sb = sandbox(std::slice::from_ref(&fx.root), Rules::none(), 1 << 20);
    let t = trash(&fx);
    let slot = t.slot(4);
    let e = sb.remove_keeping("tree", true, &slot, ANY).unwrap_err();
    assert!(matches!(e, GuardError::NotKept { .. }), "{e}");
    assert_eq!(modes(&fx.root.join("tree")), before);
    assert!(!slot.has_data());
    // Too large for the room: refused before anything moves, whatever the
    // spelling (a trailing slash once made the put-back fail; now `big/`
    // names a directory, and a file is not one).
    fs::write(fx.root.join("big"), vec![b'x'; 5000]).unwrap();
    let e = sb.remove_keeping("big/", false, &slot, Room { disk: 4096, content: 4096 }).unwrap_err();
    assert!(matches!(e, GuardError::NotDirectory { .. }), "{e}");
    let e = sb.write_keeping("big/", b"new", &t.slot(40), Room { disk: 4096, content: 4096 }).unwrap_err();
    assert!(matches!(e, GuardError::NotDirectory { .. }), "{e}");
    for path in ["big", "./big"] {
        let e = sb.remove_keeping(path, false, &slot, Room { disk: 4096, content: 4096 }).unwrap_err();
        assert!(matches!(e, GuardError::TooBigToKeep { size: 5000, room: 4096, .. }), "{path}: {e}");
        assert_eq!(fs::read(fx.root.join("big")).unwrap().len(), 5000);
        let e = sb.write_keeping(path, b"new", &t.slot(40), Room { disk: 4096, content: 4096 }).unwrap_err();
        assert!(matches!(e, GuardError::TooBigToKeep { .. }), "{path}: {e}");
        assert_eq!(fs::read(fx.root.join("big")).unwrap().len(), 5000);
    }
    let names: Vec<_> = fs::read_dir(&fx.root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temporary or staged name is left: {names:?}");
}

/// Review finding: a restore follows no symlink planted since the object
/// was kept, even one that stays inside the root.
#[test]
fn a_restore_is_not_redirected_by_a_symlink_planted_since() {
    let fx = Fx::bare();
    fs::create_dir_all(fx.root.join("a")).unwrap();
    fs::create_dir_all(fx.root.join("hooks")).unwrap();
    fs::write(fx.root.join("a/pre-commit"), "payload").unwrap();
    let sb = sandbox(std::slice::from_ref(&fx.root), Rules::none(), 1 << 20);
    let t = trash(&fx);
    let slot = t.slot(5);
    let kept = sb.remove_keeping("a/pre-commit", false, &slot, ANY).unwrap();
    fs::remove_dir(fx.root.join("a")).unwrap();
    symlink("hooks", fx.root.join("a")).unwrap();
    let abs = fx.root.join("a/pre-commit");
    let e = sb.restore(abs.to_str().unwrap(), "a/pre-commit", &slot, &kept.kept, None).unwrap_err();
    assert!(matches!(e, GuardError::Redirected { .. }), "{e}");
    assert!(!fx.root.join("hooks/pre-commit").exists());
    assert!(slot.has_data(), "the entry still holds it");
}

/// A write that creates a file makes no trash entry, and a refused one
/// leaves none behind.
#[test]
fn only_a_write_that_replaces_something_makes_an_entry() {
    let fx = Fx::bare();
    let sb = sandbox(std::slice::from_ref(&fx.root), Rules::none(), 1 << 20);
    let t = trash(&fx);
    let w = sb.write_keeping("new.txt", b"fresh", &t.slot(1), ANY).unwrap();
    assert!(w.created && w.kept.is_none());
    assert!(t.list().unwrap().is_empty(), "no entry for a create");
    fs::write(fx.root.join("big"), vec![b'x'; 100]).unwrap();
    let e = sb.write_keeping("big", b"small", &t.slot(2), Room { disk: 10, content: 10 }).unwrap_err();
    assert!(matches!(e, GuardError::TooBigToKeep { .. }), "{e}");
    assert!(t.list().unwrap().is_empty(), "no entry for a refusal");
    let w = sb.write_keeping("new.txt", b"second", &t.slot(3), ANY).unwrap();
    assert_eq!(w.kept.unwrap().kept.size, 5);
    assert!(t.slot(3).has_data());
}

/// Review finding: a sparse file was charged its apparent size and emptied
/// the trash. It is charged its blocks on disk.
#[test]
fn a_sparse_file_is_charged_what_it_takes_on_disk() {
    let fx = Fx::bare();
    let f = fs::File::create(fx.root.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, &[1u8; 4096], 1 << 20).unwrap();
    drop(f);
    let on_disk = fs::metadata(fx.root.join("sparse")).unwrap().blocks() * 512;
    assert!(on_disk < 1 << 20, "the filesystem keeps it sparse ({on_disk} bytes)");
    let sb = sandbox(std::slice::from_ref(&fx.root), Rules::none(), 1 << 20);
    let t = trash(&fx);
    let room = Room { disk: 1 << 20, content: 128 << 20 };
    let kept = sb.remove_keeping("sparse", false, &t.slot(1), room).unwrap().kept;
    assert_eq!(kept.size, 64 << 20);
    assert_eq!(kept.charge(), on_disk);
    assert!(t.slot(1).has_data());
}

/// Keeping reads and hashes at most `Room::content` bytes: a tree whose
/// files add up to more is refused part-way, and nothing moves.
#[test]
fn keeping_hashes_no_more_than_the_content_bound() {
    let fx = Fx::bare();
    fs::create_dir_all(fx.root.join("tree")).unwrap();
    for n in ["a", "b", "c"] {
        fs::write(fx.root.join("tree").join(n), vec![b'x'; 3000]).unwrap();
    }
    let sb = sandbox(std::slice::from_ref(&fx.root), Rules::none(), 1 << 20);
    let t = trash(&fx);
    let e = sb.remove_keeping("tree", true, &t.slot(1), Room { disk: u64::MAX, content: 5000 }).unwrap_err();
    match e {
        GuardError::TooBigToKeep { size, room: 5000, .. } => assert!((5001..=9000).contains(&size), "{size}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read_dir(fx.root.join("tree")).unwrap().count(), 3, "nothing moved");
}
