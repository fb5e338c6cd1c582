//! The file operations themselves: the read cap, head and tail, atomic
//! writes, moves and deletes that refuse to clobber, several roots.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::Duration;

use mcpsec_pathguard::{EntryKind, GuardError, MAX_DEPTH, Rules};

use crate::support::{Fx, default_rules, refused, sandbox};

fn capped(fx: &Fx, max_read: u64) -> mcpsec_pathguard::Sandbox {
    sandbox(std::slice::from_ref(&fx.root), Rules::none(), max_read)
}

#[test]
fn read_cap_refuses_larger_files_with_a_clear_message() {
    let fx = Fx::bare();
    fx.file("exact", &"x".repeat(16));
    fx.file("over", &"x".repeat(17));
    let sb = capped(&fx, 16);
    assert_eq!(sb.max_read(), 16);
    assert_eq!(sb.read("exact").unwrap().len(), 16);
    let err = refused(sb.read("over"), "over the cap");
    assert!(matches!(err, GuardError::TooLarge { size: 17, limit: 16, .. }), "{err:?}");
    let msg = err.to_string();
    for part in ["`over`", "17 bytes", "16 bytes", "head or tail", "max_read"] {
        assert!(msg.contains(part), "message lacks {part:?}: {msg}");
    }
    assert!(!err.is_refusal(), "too large is a failure, not a security refusal");
}

#[test]
fn head_and_tail_count_lines() {
    let fx = Fx::bare();
    fx.file("lines", "l1\nl2\nl3\n");
    fx.file("no_newline", "l1\nl2\nl3");
    fx.file("empty", "");
    let sb = fx.sandbox();
    for f in ["lines", "no_newline"] {
        assert_eq!(sb.read_head(f, 0).unwrap(), b"", "{f}");
        assert_eq!(sb.read_head(f, 1).unwrap(), b"l1", "{f}");
        assert_eq!(sb.read_head(f, 2).unwrap(), b"l1\nl2", "{f}");
        assert_eq!(sb.read_head(f, 3).unwrap(), b"l1\nl2\nl3", "{f}");
        assert_eq!(sb.read_head(f, 99).unwrap(), b"l1\nl2\nl3", "{f}");
        assert_eq!(sb.read_tail(f, 0).unwrap(), b"", "{f}");
        assert_eq!(sb.read_tail(f, 1).unwrap(), b"l3", "{f}");
        assert_eq!(sb.read_tail(f, 2).unwrap(), b"l2\nl3", "{f}");
        assert_eq!(sb.read_tail(f, 3).unwrap(), b"l1\nl2\nl3", "{f}");
        assert_eq!(sb.read_tail(f, 99).unwrap(), b"l1\nl2\nl3", "{f}");
    }
    assert_eq!(sb.read_head("empty", 5).unwrap(), b"");
    assert_eq!(sb.read_tail("empty", 5).unwrap(), b"");
    assert!(matches!(sb.read_head("a_dir_that_is_missing", 1), Err(GuardError::NotFound { .. })));
    fx.dir("d");
    assert!(matches!(sb.read_tail("d", 1), Err(GuardError::IsADirectory { .. })));
}

/// Regression: the TooLarge message tells the caller to use head or tail,
/// but head and tail refused every file over the cap as well.
#[test]
fn head_and_tail_work_on_files_larger_than_the_cap() {
    let fx = Fx::bare();
    let body: String = (1..=100).map(|i| format!("line {i}\n")).collect();
    fx.file("big.log", &body);
    let sb = capped(&fx, 64);
    assert!(matches!(sb.read("big.log"), Err(GuardError::TooLarge { .. })));
    assert_eq!(sb.read_head("big.log", 2).unwrap(), b"line 1\nline 2");
    assert_eq!(sb.read_tail("big.log", 2).unwrap(), b"line 99\nline 100");
    // Neither ever returns more than the cap.
    assert!(sb.read_head("big.log", 1000).unwrap().len() <= 64);
    assert!(sb.read_tail("big.log", 1000).unwrap().len() <= 64);
}

fn leftovers(fx: &Fx, dir: &str) -> Vec<String> {
    fs::read_dir(fx.root.join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("mcpsec") || n.ends_with(".tmp"))
        .collect()
}

#[test]
fn write_is_atomic_and_leaves_no_temporary_file() {
    let fx = Fx::bare();
    fx.dir("d");
    let sb = fx.sandbox();
    assert!(sb.write("d/new.txt", b"one").unwrap(), "a new file is reported as created");
    assert!(!sb.write("d/new.txt", b"two").unwrap(), "an overwrite is not a creation");
    assert_eq!(fx.read("d/new.txt"), "two");
    assert!(leftovers(&fx, "d").is_empty(), "{:?}", leftovers(&fx, "d"));
    // A failed write leaves nothing behind either.
    fx.dir("d/sub");
    assert!(matches!(sb.write("d/sub", b"x"), Err(GuardError::IsADirectory { .. })));
    assert!(matches!(sb.write("d/missing/x", b"x"), Err(GuardError::ParentNotFound { .. })));
    assert!(sb.write(&format!("d/{}", "n".repeat(300)), b"x").is_err());
    assert!(leftovers(&fx, "d").is_empty(), "{:?}", leftovers(&fx, "d"));
    // An empty file is a file.
    sb.write("d/empty", b"").unwrap();
    assert_eq!(fx.read("d/empty"), "");
}

#[test]
fn write_replaces_the_file_rather_than_writing_into_it() {
    // Atomic means a new inode renamed into place: a reader holding the
    // old file keeps seeing the old content, never a torn mix.
    let fx = Fx::bare();
    fx.file("f", "old content");
    let sb = fx.sandbox();
    let held = fs::File::open(fx.root.join("f")).unwrap();
    sb.write("f", b"new").unwrap();
    let mut old = String::new();
    std::io::Read::read_to_string(&mut &held, &mut old).unwrap();
    assert_eq!(old, "old content");
    assert_eq!(fx.read("f"), "new");
}

#[test]
fn write_keeps_the_mode_of_an_existing_file() {
    let fx = Fx::bare();
    for (name, mode) in [("private", 0o600), ("script.sh", 0o755), ("odd", 0o640)] {
        fx.file(name, "before");
        fs::set_permissions(fx.root.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    let sb = fx.sandbox();
    for (name, mode) in [("private", 0o600), ("script.sh", 0o755), ("odd", 0o640)] {
        sb.write(name, b"after").unwrap();
        let got = fs::metadata(fx.root.join(name)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode, "{name}: mode {got:o}, want {mode:o}");
        assert_eq!(fx.read(name), "after");
        assert_eq!(sb.info(name).unwrap().mode, mode);
    }
    // A new file is not executable, nor writable by others.
    sb.write("fresh", b"x").unwrap();
    let mode = fs::metadata(fx.root.join("fresh")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode & 0o133, 0, "new file mode {mode:o}");
}

#[test]
fn rename_refuses_an_existing_destination() {
    let fx = Fx::bare();
    fx.file("a.txt", "a");
    fx.file("b.txt", "b");
    fx.dir("d/inner");
    fx.link("link", "nowhere");
    let sb = fx.sandbox();
    for dst in ["b.txt", "d", "link", "./b.txt"] {
        let err = refused(sb.rename("a.txt", dst), dst);
        assert!(matches!(err, GuardError::AlreadyExists { .. }), "{dst}: {err:?}");
    }
    let err = refused(sb.rename("d", "b.txt"), "dir onto file");
    assert!(matches!(err, GuardError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(fx.read("a.txt"), "a");
    assert_eq!(fx.read("b.txt"), "b");
    assert!(matches!(sb.rename("missing", "c.txt"), Err(GuardError::NotFound { .. })));
    assert!(matches!(sb.rename("a.txt", "nodir/c.txt"), Err(GuardError::ParentNotFound { .. })));
    // A plain move works, for files and directories, and keeps contents.
    sb.rename("a.txt", "d/inner/a.txt").unwrap();
    sb.rename("d", "e").unwrap();
    assert_eq!(fx.read("e/inner/a.txt"), "a");
    assert!(!fx.exists("a.txt") && !fx.exists("d"));
}

#[test]
fn remove_refuses_a_non_empty_directory_unless_recursive() {
    let fx = Fx::bare();
    fx.file("full/sub/f", "x");
    fx.dir("empty");
    fx.file("file", "x");
    let sb = fx.sandbox();
    let err = refused(sb.remove("full", false), "non-empty");
    assert!(matches!(err, GuardError::DirectoryNotEmpty { .. }), "{err:?}");
    assert!(err.to_string().contains("recursive: true"), "{err}");
    assert_eq!(fx.read("full/sub/f"), "x");
    sb.remove("empty", false).unwrap();
    sb.remove("file", false).unwrap();
    sb.remove("full", true).unwrap();
    assert!(!fx.exists("full") && !fx.exists("empty") && !fx.exists("file"));
    assert!(matches!(sb.remove("file", false), Err(GuardError::NotFound { .. })));
}

#[test]
fn create_dir_all_makes_parents_and_tolerates_existing_dirs() {
    let fx = Fx::bare();
    fx.file("file", "x");
    let sb = fx.sandbox();
    sb.create_dir_all("x/y/z").unwrap();
    sb.create_dir_all("x/y/z").unwrap();
    assert!(fx.root.join("x/y/z").is_dir());
    assert!(matches!(sb.create_dir_all("file"), Err(GuardError::AlreadyExists { .. })));
    assert!(matches!(sb.create_dir_all("file/sub"), Err(GuardError::NotADirectory { .. })));
}

#[test]
fn list_and_info_describe_entries() {
    let fx = Fx::bare();
    fx.file("f.txt", "12345");
    fx.dir("d");
    fx.link("l", "f.txt");
    let sb = fx.sandbox();
    let mut entries = sb.list(".").unwrap();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let kinds: Vec<(&str, EntryKind)> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(kinds, [("d", EntryKind::Dir), ("f.txt", EntryKind::File), ("l", EntryKind::Symlink)]);
    assert_eq!(entries[1].size, Some(5));
    let info = sb.info("f.txt").unwrap();
    assert!(info.is_file && !info.is_dir && info.size == 5 && info.modified.is_some());
    assert!(sb.info("d").unwrap().is_dir);
    assert!(sb.info(".").unwrap().is_dir);
    assert!(matches!(sb.list("f.txt"), Err(GuardError::NotDirectory { .. })));
    assert!(matches!(sb.info("nothing"), Err(GuardError::NotFound { .. })));
}

#[test]
fn walk_respects_the_visitor_and_reports_depth() {
    let fx = Fx::bare();
    fx.file("a/b/c.txt", "");
    fx.file("a/skip/hidden.txt", "");
    fx.file("top.txt", "");
    let sb = fx.sandbox();
    let mut seen = Vec::new();
    sb.walk(".", |e| {
        seen.push((e.rel.to_owned(), e.depth));
        e.name != "skip"
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            ("a".to_owned(), 1),
            ("a/b".to_owned(), 2),
            ("a/b/c.txt".to_owned(), 3),
            ("a/skip".to_owned(), 2),
            ("top.txt".to_owned(), 1)
        ]
    );
}

/// Issue 26, point 13: a tree deeper than 256 levels was refused as holding
/// "more than 100000 entries".
#[test]
fn a_tree_too_deep_is_refused_as_too_deep() {
    let fx = Fx::bare();
    fx.dir(&["d"; MAX_DEPTH + 2].join("/"));
    let sb = fx.sandbox();
    let errors =
        [sb.walk("d", |_| true).unwrap_err(), sb.remove("d", true).unwrap_err(), sb.rename("d", "moved").unwrap_err()];
    for e in errors {
        let msg = e.to_string();
        assert!(matches!(e, GuardError::TooDeep { limit: MAX_DEPTH, .. }), "{e:?}");
        assert!(msg.starts_with("`d` holds directories nested more than 256 levels deep"), "{msg}");
        assert!(!msg.contains("entries") && msg.contains("further down"), "{msg}");
        assert!(!e.is_refusal() && e.changed_nothing(), "{e:?}");
    }
    assert!(fx.root.join("d").is_dir(), "nothing was deleted or moved");
    // The walk of a shallower part works.
    let below = ["d"; 10].join("/");
    sb.walk(&below, |_| true).unwrap();
}

/// SECURITY.md: listings, trees, searches and the checks of a recursive
/// delete or move stop at 100,000 entries, and the refusal says so (not
/// "too deep"); nothing is deleted or moved.
#[test]
fn more_than_100000_entries_are_refused_as_too_many() {
    let fx = Fx::bare();
    let big = fx.root.join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..=mcpsec_pathguard::MAX_ENTRIES {
        std::fs::File::create(big.join(format!("f{i}"))).unwrap();
    }
    let sb = fx.sandbox();
    let errors = [
        sb.list("big").map(drop).unwrap_err(),
        sb.walk("big", |_| true).unwrap_err(),
        sb.remove("big", true).unwrap_err(),
        sb.rename("big", "moved").unwrap_err(),
    ];
    for e in errors {
        assert!(matches!(e, GuardError::TooManyEntries { limit: mcpsec_pathguard::MAX_ENTRIES, .. }), "{e:?}");
        assert!(e.to_string().contains("more than 100000 entries"), "{e}");
        assert!(e.changed_nothing(), "{e:?}");
    }
    assert_eq!(std::fs::read_dir(&big).unwrap().count(), mcpsec_pathguard::MAX_ENTRIES + 1, "nothing was deleted");
    assert!(!fx.root.join("moved").exists());
}

/// Issue 26, point 13: `a.txt/` and `a.txt/.` read the file `a.txt`. A path
/// ending in `/` or `/.` names a directory, as for the kernel.
#[test]
fn a_trailing_slash_or_dot_names_a_directory() {
    let fx = Fx::bare();
    fx.file("a.txt", "file");
    fx.dir("d");
    fx.link("file_link", "a.txt");
    fx.link("slash_link", "a.txt/");
    fx.link("dir_link", "d");
    let sb = fx.sandbox();
    type Op = fn(&mcpsec_pathguard::Sandbox, &str) -> Result<(), GuardError>;
    let following: [(&str, Op); 6] = [
        ("read", |sb, p| sb.read(p).map(drop)),
        ("head", |sb, p| sb.read_head(p, 1).map(drop)),
        ("tail", |sb, p| sb.read_tail(p, 1).map(drop)),
        ("info", |sb, p| sb.info(p).map(drop)),
        ("write", |sb, p| sb.write(p, b"x").map(drop)),
        ("mkdir", |sb, p| sb.create_dir_all(p)),
    ];
    let on_the_entry: [(&str, Op); 3] = [
        ("remove", |sb, p| sb.remove(p, true)),
        ("move from", |sb, p| sb.rename(p, "moved")),
        ("move to", |sb, p| sb.rename("d", p)),
    ];
    let mut cases: Vec<(&str, &str, Op)> = Vec::new();
    for path in ["a.txt/", "a.txt/.", "a.txt/./", "a.txt//"] {
        cases.extend(following.iter().chain(&on_the_entry).map(|(op, run)| (*op, path, *run)));
    }
    // A symlink is followed by what reads or writes through it (a delete or
    // a move acts on the link itself, however it is spelt).
    cases.extend(following.iter().map(|(op, run)| (*op, "file_link/", *run)));
    // A symlink whose target ends in `/`, wherever it is followed.
    cases.extend(following.iter().map(|(op, run)| (*op, "slash_link", *run)));
    // Nothing there: no file goes where a directory is named.
    cases.push(("write a new file", "new.txt/", |sb, p| sb.write(p, b"x").map(drop)));
    cases.push(("move a file", "new.txt/", |sb, p| sb.rename("a.txt", p)));
    for (op, path, run) in cases {
        match run(&sb, path) {
            Err(GuardError::NotDirectory { path: shown }) => assert_eq!(shown, path, "{op}"),
            other => panic!("{op} {path:?}: expected not a directory, got {other:?}"),
        }
    }
    assert_eq!(fx.read("a.txt"), "file", "nothing was written");
    assert!(fx.exists("file_link") && fx.exists("d"), "nothing was moved or deleted");
    sb.remove("file_link/", false).unwrap();
    assert!(!fx.exists("file_link") && fx.exists("a.txt"), "the link is deleted, not what it names");
    assert!(!fx.exists("moved") && !fx.exists("new.txt"), "nothing was created");
    let e = sb.read("a.txt/.").unwrap_err().to_string();
    assert_eq!(e, "`a.txt/.` is not a directory");
    // A directory is one, with or without the slash or dot.
    for path in ["d/", "d/.", "dir_link/", "dir_link/."] {
        assert!(sb.info(path).unwrap().is_dir, "{path}");
        sb.list(path).unwrap();
    }
    // Where nothing is, a directory may be made or moved to.
    sb.create_dir_all("new_dir/").unwrap();
    sb.rename("d", "e/").unwrap();
    assert!(fx.root.join("new_dir").is_dir() && fx.root.join("e").is_dir());
}

/// Regression: reading a FIFO inside a root blocked forever in `open`
/// (waiting for a writer), hanging the server.
#[test]
fn reading_a_fifo_fails_instead_of_hanging() {
    let fx = Fx::bare();
    let status = std::process::Command::new("mkfifo").arg(fx.root.join("pipe")).status().unwrap();
    assert!(status.success());
    let sb = fx.sandbox();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let results = [sb.read("pipe").is_err(), sb.read_head("pipe", 1).is_err(), sb.read_tail("pipe", 1).is_err()];
        let _ = tx.send(results);
    });
    let results = rx.recv_timeout(Duration::from_secs(10)).expect("reading a FIFO hung");
    assert_eq!(results, [true; 3]);
    // Listing and info still describe it.
    let sb = fx.sandbox();
    assert_eq!(sb.list(".").unwrap()[0].kind, EntryKind::Other);
    assert!(!sb.info("pipe").unwrap().is_file);
}

#[test]
fn several_roots_absolute_paths_pick_the_right_one() {
    let fx = Fx::bare();
    let second = fx.base.join("second");
    let nested = fx.root.join("nested-root");
    fs::create_dir_all(&second).unwrap();
    fs::create_dir_all(&nested).unwrap();
    fs::write(second.join("s.txt"), "second").unwrap();
    fs::write(nested.join("n.txt"), "nested").unwrap();
    fx.file("f.txt", "first");
    std::os::unix::fs::symlink(second.join("s.txt"), fx.root.join("to_second")).unwrap();
    let sb = sandbox(&[fx.root.clone(), second.clone(), nested.clone()], default_rules(), 1 << 20);
    assert_eq!(sb.roots().collect::<Vec<_>>(), [fx.root.as_path(), second.as_path(), nested.as_path()]);
    // Relative paths are relative to the first root.
    assert_eq!(sb.read("f.txt").unwrap(), b"first");
    assert!(matches!(sb.read("s.txt"), Err(GuardError::NotFound { .. })));
    assert_eq!(sb.read(&format!("{}/s.txt", second.display())).unwrap(), b"second");
    assert_eq!(sb.read(&format!("{}/n.txt", nested.display())).unwrap(), b"nested");
    // An absolute symlink into another root is inside a root.
    assert_eq!(sb.read("to_second").unwrap(), b"second");
    // `..` never climbs from one root into another.
    assert!(matches!(sb.read("../second/s.txt"), Err(GuardError::Outside { .. })));
    // Each root is a root: none can be deleted or moved.
    for r in [&fx.root, &second, &nested] {
        let p = r.display().to_string();
        assert!(matches!(sb.remove(&p, true), Err(GuardError::RootItself { .. })), "{p}");
        assert!(matches!(sb.rename(&p, "elsewhere"), Err(GuardError::RootItself { .. })), "{p}");
    }
}

#[test]
fn display_path_is_inside_a_root() {
    let fx = Fx::attack();
    let sb = fx.sandbox();
    assert_eq!(sb.display_path("in_link").unwrap(), fx.root.join("f.txt"));
    assert_eq!(sb.display_path("abs_in_dir_link/b").unwrap(), fx.root.join("a/b"));
    assert_eq!(sb.display_path("new.txt").unwrap(), fx.root.join("new.txt"));
    assert!(matches!(sb.display_path("out_link"), Err(GuardError::Outside { .. })));
}

#[test]
fn opening_the_sandbox_checks_the_roots() {
    let fx = Fx::bare();
    fx.file("file", "x");
    let open = |roots: &[std::path::PathBuf]| {
        mcpsec_pathguard::Sandbox::open(roots, mcpsec_pathguard::SandboxOptions { rules: Rules::none(), max_read: 1 })
    };
    let no_root = open(&[]).unwrap_err().to_string();
    assert!(no_root.contains("--root"), "{no_root}");
    let missing = open(&[fx.root.join("missing")]).unwrap_err().to_string();
    assert!(missing.contains("missing"), "{missing}");
    assert!(open(&[fx.root.join("file")]).is_err());
    // The same root twice is one root.
    assert_eq!(open(&[fx.root.clone(), fx.root.join(".")]).unwrap().roots().count(), 1);
}

#[test]
fn open_dir_handle_is_a_checked_directory_that_stays_put() {
    use std::os::fd::AsRawFd;
    let fx = Fx::attack();
    fx.file(".env/inner/x", "secret");
    let sb = sandbox(std::slice::from_ref(&fx.root), default_rules(), 1 << 20);
    let (dir, host) = sb.open_dir_handle("in_dir_link/b").unwrap();
    assert_eq!(host, fx.root.join("a/b"));
    assert!(dir.exists("deep.txt"));
    let (_, host) = sb.open_dir_handle(".").unwrap();
    assert_eq!(host, fx.root);
    for outside in ["out_dir_link", "..", "/", "abs_out_dir_link", "parent_link"] {
        assert!(matches!(sb.open_dir_handle(outside), Err(GuardError::Outside { .. })), "{outside}");
    }
    assert!(matches!(sb.open_dir_handle(".env/inner"), Err(GuardError::Protected { .. })));
    assert!(matches!(sb.open_dir_handle("f.txt"), Err(GuardError::NotDirectory { .. })));
    assert!(matches!(sb.open_dir_handle("missing"), Err(GuardError::NotFound { .. })));
    // Swapping the directory for a symlink to outside after the check does
    // not move the handle: `/proc/self/fd/N` still names the original.
    let (dir, _) = sb.open_dir_handle("a/b").unwrap();
    fs::rename(fx.root.join("a/b"), fx.root.join("a/moved")).unwrap();
    std::os::unix::fs::symlink(&fx.outside, fx.root.join("a/b")).unwrap();
    let through_proc = fs::canonicalize(format!("/proc/self/fd/{}", dir.as_raw_fd())).unwrap();
    assert_eq!(through_proc, fx.root.join("a/moved"));
}

#[test]
fn check_path_accepts_missing_paths_inside_and_refuses_the_rest() {
    let fx = Fx::attack();
    let sb = sandbox(std::slice::from_ref(&fx.root), default_rules(), 1 << 20);
    let root = fx.root.display().to_string();
    let check = |p: &str| sb.check_path(&fx.root, p);
    assert_eq!(check("f.txt").unwrap(), fx.root.join("f.txt"));
    assert_eq!(check(&format!("{root}/a/new/deeper/file")).unwrap(), fx.root.join("a/new/deeper/file"));
    assert_eq!(check(&format!("{root}/a/b/../b/deep.txt")).unwrap(), fx.root.join("a/b/deep.txt"));
    assert_eq!(check("in_dir_link/b").unwrap(), fx.root.join("a/b"));
    // Relative to the base, not to the first root.
    assert_eq!(sb.check_path(&fx.root.join("a/b"), "../x").unwrap(), fx.root.join("a/x"));
    assert!(matches!(sb.check_path(&fx.root.join("a/b"), "/"), Err(GuardError::Outside { .. })));
    for outside in ["/", "/etc/passwd", "../x", "a/../../x", "out_link", "chain1", "dangling_out", "out_dir_link/new"] {
        match check(outside) {
            Err(GuardError::Outside { path }) => assert_eq!(path, outside, "errors name the input as given"),
            other => panic!("{outside}: {other:?}"),
        }
    }
    for bad in ["missing/../../x", "nul\0byte", ""] {
        assert!(matches!(check(bad), Err(GuardError::Invalid { .. })), "{bad:?}");
    }
    assert!(matches!(check("sub/.env"), Err(GuardError::Protected { .. })));
    assert!(matches!(check(".env/new/file"), Err(GuardError::Protected { .. })));
    // A base outside the roots is outside.
    assert!(matches!(sb.check_path(&fx.outside, "x"), Err(GuardError::Outside { .. })));
}
