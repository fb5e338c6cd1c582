//! Protected paths with the product's default rules: `paths.deny` is
//! unreadable, unwritable and hidden; `.git/**` is readable but never
//! changed.

use mcpsec_pathguard::{GuardError, Rule, Rules};

use crate::support::{Fx, refused, sandbox};

const SECRET: &str = "API_KEY=hunter2-do-not-leak";

/// Denied files, relative to the root.
const DENIED: &[&str] = &[
    ".env",
    "sub/.env.local",
    "certs/server.pem",
    "k.key",
    ".ssh/id_rsa",
    ".ssh/id_rsa.pub",
    ".ssh/id_ed25519",
    "proj/.env",
];

fn fixture() -> Fx {
    let fx = Fx::bare();
    for d in DENIED {
        fx.file(d, SECRET);
    }
    fx.file("notes.txt", "notes");
    fx.file("sub/ok.txt", "ok");
    fx.file("certs/README", "certificates live here");
    fx.file("proj/src/main.rs", "fn main() {}");
    fx.file(".git/config", "[core]");
    fx.file(".git/objects/ab/cdef", "blob");
    fx.file(".git/hooks/pre-commit.sample", "#!/bin/sh");
    fx.file("conf/.env/value", SECRET);
    let root = fx.root.display().to_string();
    fx.link("innocent.txt", ".env");
    fx.link("README-link", "certs/server.pem");
    fx.link("abs_innocent", &format!("{root}/.ssh/id_rsa"));
    fx.link("notes_dir", "certs");
    fx.link("abs_ssh_dir", &format!("{root}/.ssh"));
    fx.link("git_link", ".git");
    fx
}

fn assert_protected(err: &GuardError, rule: Rule, what: &str) {
    match err {
        GuardError::Protected { rule: r, .. } if *r == rule => {}
        other => panic!("{what}: expected a {rule:?} refusal, got {other:?}"),
    }
    assert!(err.is_refusal());
    let msg = err.to_string();
    let key = if rule == Rule::Deny { "paths.deny" } else { "paths.readonly" };
    assert!(msg.contains(key), "{what}: message does not name the rule: {msg}");
    assert!(!msg.contains(SECRET), "{what}: message leaks the secret: {msg}");
}

#[test]
fn denied_files_are_unreadable() {
    let fx = fixture();
    let sb = fx.sandbox();
    for d in DENIED {
        let abs = fx.abs(d);
        for path in [*d, abs.as_str()] {
            assert_protected(&refused(sb.read(path), path), Rule::Deny, path);
            assert_protected(&refused(sb.read_head(path, 1), path), Rule::Deny, path);
            assert_protected(&refused(sb.read_tail(path, 1), path), Rule::Deny, path);
            assert_protected(&refused(sb.info(path), path), Rule::Deny, path);
        }
    }
    // Spelled differently, it is still the same file.
    for path in ["./.env", "sub/../.env", "sub//.env.local", "certs/./server.pem"] {
        assert_protected(&refused(sb.read(path), path), Rule::Deny, path);
    }
}

#[test]
fn denied_names_cannot_be_probed_for_existence() {
    let fx = fixture();
    let sb = fx.sandbox();
    // The same refusal, word for word, whether the denied name exists or not,
    // and for anything inside a denied directory (through a symlink too).
    fx.link("envdir", "conf/.env");
    let pairs = [
        ("k.key", "nothere.key"),
        ("proj/.env", "proj/nothere/.env"),
        ("conf/.env/value", "conf/.env/nothere"),
        ("envdir/value", "envdir/nothere"),
        (".ssh/id_rsa", ".ssh/id_rsa_nothere"),
    ];
    for (there, not_there) in pairs {
        let a = refused(sb.read(there), there);
        let b = refused(sb.read(not_there), not_there);
        assert_protected(&a, Rule::Deny, there);
        assert_protected(&b, Rule::Deny, not_there);
        assert_eq!(a.to_string().replace(there, "P"), b.to_string().replace(not_there, "P"), "{there} / {not_there}");
        for op in [sb.info(not_there).map(drop), sb.write(not_there, b"x").map(drop), sb.remove(not_there, false)] {
            assert_protected(&refused(op, not_there), Rule::Deny, not_there);
        }
    }
    assert!(!fx.root.join("nothere.key").exists(), "nothing was created");
}

#[test]
fn denied_files_are_not_reachable_through_innocent_symlinks() {
    let fx = fixture();
    let sb = fx.sandbox();
    for path in ["innocent.txt", "README-link", "abs_innocent", "notes_dir/server.pem", "abs_ssh_dir/id_ed25519"] {
        assert_protected(&refused(sb.read(path), path), Rule::Deny, path);
        assert_protected(&refused(sb.info(path), path), Rule::Deny, path);
        assert_protected(&refused(sb.write(path, b"overwritten"), path), Rule::Deny, path);
    }
    for d in DENIED {
        assert_eq!(fx.read(d), SECRET, "{d} changed");
    }
    // The innocent-looking directory link is listable, without the secret.
    let names: Vec<String> = sb.list("notes_dir").unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["README"]);
}

#[test]
fn denied_files_are_unwritable_and_cannot_be_created() {
    let fx = fixture();
    let sb = fx.sandbox();
    let before = fx.inside_snapshot();
    for d in DENIED {
        assert_protected(&refused(sb.write(d, b"overwritten"), d), Rule::Deny, d);
        assert_protected(&refused(sb.remove(d, false), d), Rule::Deny, d);
        assert_protected(&refused(sb.rename(d, "stolen.txt"), d), Rule::Deny, d);
    }
    for new in ["new/.env", ".env.production", "sub/new.pem", "x.key", ".ssh/id_rsa2"] {
        let err = sb.write(new, b"x").unwrap_err();
        assert!(matches!(err, GuardError::Protected { .. } | GuardError::ParentNotFound { .. }), "{new}: {err:?}");
        let err = sb.create_dir_all(new).unwrap_err();
        assert_protected(&err, Rule::Deny, new);
    }
    assert_eq!(before, fx.inside_snapshot(), "a refused call changed the root");
}

#[test]
fn denied_files_are_not_listed_or_walked() {
    let fx = fixture();
    let sb = fx.sandbox();
    let names = |p: &str| -> Vec<String> {
        let mut v: Vec<String> = sb.list(p).unwrap().into_iter().map(|e| e.name).collect();
        v.sort();
        v
    };
    assert!(!names(".").iter().any(|n| n == ".env" || n == "k.key"), "{:?}", names("."));
    assert!(names(".").iter().any(|n| n == "notes.txt"));
    assert_eq!(names("sub"), ["ok.txt"]);
    assert_eq!(names("certs"), ["README"]);
    assert_eq!(names(".ssh"), Vec::<String>::new());
    assert_eq!(names("conf"), Vec::<String>::new());

    let mut walked = Vec::new();
    sb.walk(".", |e| {
        walked.push(e.rel.to_owned());
        true
    })
    .unwrap();
    for d in DENIED {
        assert!(!walked.iter().any(|w| w == d), "walk yielded {d}");
    }
    assert!(!walked.iter().any(|w| w.starts_with("conf/.env")), "walk entered conf/.env");
    for visible in ["notes.txt", "sub/ok.txt", "certs/README", ".git/config", "proj/src/main.rs"] {
        assert!(walked.iter().any(|w| w == visible), "walk missed {visible}: {walked:?}");
    }
    // Listing or walking a denied directory itself is refused.
    assert_protected(&refused(sb.list("conf/.env"), "list"), Rule::Deny, "list conf/.env");
    assert_protected(&refused(sb.walk("conf/.env", |_| true), "walk"), Rule::Deny, "walk conf/.env");
}

/// Regression: a deny glob that matches a *directory* (a virtualenv named
/// `.env`, a `keys.pem/` folder) hid it from listings, yet its contents
/// were readable and writable by naming them.
#[test]
fn the_contents_of_a_denied_directory_are_denied_too() {
    let fx = fixture();
    let sb = fx.sandbox();
    for path in ["conf/.env/value", "conf/./.env/value"] {
        assert_protected(&refused(sb.read(path), path), Rule::Deny, path);
        assert_protected(&refused(sb.info(path), path), Rule::Deny, path);
        assert_protected(&refused(sb.write(path, b"x"), path), Rule::Deny, path);
        assert_protected(&refused(sb.remove(path, false), path), Rule::Deny, path);
    }
    assert_protected(&refused(sb.write("conf/.env/new", b"x"), "new"), Rule::Deny, "new");
    assert_protected(&refused(sb.create_dir_all("conf/.env/a/b"), "mkdir"), Rule::Deny, "mkdir");
    assert_protected(&refused(sb.rename("notes.txt", "conf/.env/notes.txt"), "mv"), Rule::Deny, "mv");
    assert_eq!(fx.read("conf/.env/value"), SECRET);
    assert!(!fx.exists("conf/.env/new"));
}

#[test]
fn git_is_readable_but_never_changed() {
    let fx = fixture();
    let sb = fx.sandbox();
    assert_eq!(sb.read(".git/config").unwrap(), b"[core]");
    assert_eq!(sb.read("git_link/config").unwrap(), b"[core]");
    assert!(sb.info(".git").unwrap().is_dir);
    assert!(sb.list(".git").unwrap().iter().any(|e| e.name == "objects"));
    let before = fx.inside_snapshot();
    let ro = |r: Result<(), GuardError>, what: &str| assert_protected(&refused(r, what), Rule::ReadOnly, what);
    ro(sb.write(".git/config", b"evil").map(|_| ()), "write config");
    ro(sb.write(".git/hooks/post-checkout", b"#!/bin/sh\nrm -rf ~").map(|_| ()), "write hook");
    ro(sb.write("git_link/config", b"evil").map(|_| ()), "write through link");
    ro(sb.create_dir_all(".git/newdir/sub"), "mkdir");
    ro(sb.rename(".git/config", "config"), "move out of .git");
    ro(sb.rename("notes.txt", ".git/hooks/pre-push"), "move into .git");
    ro(sb.rename(".git", "git-backup"), "move .git");
    ro(sb.rename(".git/objects", "objects"), "move a dir in .git");
    ro(sb.remove(".git/config", false), "delete config");
    ro(sb.remove(".git/objects", true), "delete objects");
    ro(sb.remove(".git", true), "delete .git");
    ro(sb.remove("git_link/objects", true), "delete through link");
    ro(sb.remove(&fx.abs(".git"), true), "delete .git absolute");
    assert_eq!(before, fx.inside_snapshot(), "a refused call changed the root");
    // The link itself is not .git: deleting it leaves .git alone.
    sb.remove("git_link", true).unwrap();
    assert_eq!(fx.read(".git/config"), "[core]");
}

#[test]
fn a_directory_holding_a_protected_entry_is_neither_deleted_nor_moved() {
    let fx = fixture();
    let sb = fx.sandbox();
    let before = fx.inside_snapshot();
    for (dir, rule) in [("proj", Rule::Deny), ("sub", Rule::Deny), (".ssh", Rule::Deny), ("conf", Rule::Deny)] {
        assert_protected(&refused(sb.remove(dir, true), dir), rule, dir);
        assert_protected(&refused(sb.rename(dir, "elsewhere"), dir), rule, dir);
    }
    assert_eq!(before, fx.inside_snapshot(), "a refused call changed the root");
    // The message names the protected entry, so the human knows why.
    let msg = sb.remove("proj", true).unwrap_err().to_string();
    assert!(msg.contains("proj/.env"), "{msg}");
}

#[test]
fn a_nested_git_directory_is_protected_by_a_recursive_glob() {
    // `.git/**` is relative to the root; a root holding several
    // repositories protects them with `**/.git/**`.
    let fx = fixture();
    fx.file("vendored/lib/.git/HEAD", "ref: refs/heads/main");
    fx.file("vendored/lib/src.rs", "");
    let rules = Rules::new(&["**/.git/**".to_owned()], &[]).unwrap();
    let sb = sandbox(std::slice::from_ref(&fx.root), rules, 1 << 20);
    let before = fx.inside_snapshot();
    for dir in ["vendored", "vendored/lib", "vendored/lib/.git"] {
        assert_protected(&refused(sb.remove(dir, true), dir), Rule::ReadOnly, dir);
        assert_protected(&refused(sb.rename(dir, "moved"), dir), Rule::ReadOnly, dir);
    }
    assert_eq!(before, fx.inside_snapshot());
    assert_eq!(sb.read("vendored/lib/.git/HEAD").unwrap(), b"ref: refs/heads/main");
    sb.remove("vendored/lib/src.rs", false).unwrap();
}

#[test]
fn moving_a_file_onto_a_denied_name_is_refused() {
    let fx = fixture();
    let sb = fx.sandbox();
    for dst in [".env.backup", "sub/leak.pem", "new.key", "id_ed25519_copy", "certs/.env"] {
        assert_protected(&refused(sb.rename("notes.txt", dst), dst), Rule::Deny, dst);
        assert!(!fx.exists(dst), "{dst} was created");
    }
    assert_eq!(fx.read("notes.txt"), "notes");
    // And a directory is not moved to where its contents would be denied.
    fx.file("plain/server", "x");
    assert!(sb.rename("plain", "keys.pem").is_err());
    assert!(fx.exists("plain/server"));
}

#[test]
fn default_rules_leave_look_alikes_alone() {
    let fx = fixture();
    for f in ["env", ".envrc", "src/key.rs", "keys/readme", ".gitignore", "pem.txt", "a.keyboard"] {
        fx.file(f, "fine");
    }
    let sb = fx.sandbox();
    for f in ["env", ".envrc", "src/key.rs", "keys/readme", ".gitignore", "pem.txt", "a.keyboard"] {
        assert_eq!(sb.read(f).unwrap(), b"fine", "{f}");
        sb.write(f, b"changed").unwrap();
        sb.remove(f, false).unwrap();
    }
}
