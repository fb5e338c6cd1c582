//! The attack corpus: every escape technique we know, against every
//! operation, through one `check` helper. Each case runs on a fresh
//! fixture; after it, the outside tree must be byte-for-byte unchanged and
//! a refusal must not reveal anything about what lies outside.

use std::panic::{AssertUnwindSafe, catch_unwind};

use mcpsec_pathguard::{GuardError, Sandbox};

use crate::support::{Fx, INSIDE, SENTINEL};

/// The operation an attack targets.
#[derive(Debug, Clone, Copy)]
enum Act {
    Read,
    Head,
    Tail,
    Write,
    Mkdir,
    List,
    Walk,
    Info,
    /// Move the path to `moved`.
    MoveFrom,
    /// Move `victim.txt` to the path.
    MoveTo,
    Remove,
    RemoveAll,
}

/// What must happen.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// `GuardError::Outside`.
    Outside,
    /// `GuardError::Invalid`.
    Invalid,
    /// `GuardError::RootItself`.
    RootItself,
    /// Some error that is not a security refusal (loop, missing, …).
    Fails,
    /// Succeeds.
    Works,
    /// Succeeds with this outcome (file content for reads and writes).
    Gives(&'static str),
}

use Act::*;
use Expect::*;

/// What writes put into files.
const PAYLOAD: &str = "PAYLOAD";

/// Replaces `{root}`, `{out}`, `{base}` and `{long}` in a case's path.
fn expand(template: &str, fx: &Fx) -> String {
    template
        .replace("{root}", fx.root.to_str().unwrap())
        .replace("{out}", fx.outside.to_str().unwrap())
        .replace("{base}", fx.base.to_str().unwrap())
        .replace("{long}", &"a/".repeat(2500))
}

/// Runs one operation; `Ok` carries a text describing the outcome.
fn run(sb: &Sandbox, act: Act, path: &str) -> Result<String, GuardError> {
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    match act {
        Read => sb.read(path).map(text),
        Head => sb.read_head(path, 1).map(text),
        Tail => sb.read_tail(path, 1).map(text),
        Write => {
            sb.write(path, PAYLOAD.as_bytes())?;
            // What was written can be read back through the same path.
            sb.read(path).map(text)
        }
        Mkdir => {
            sb.create_dir_all(path)?;
            assert!(sb.info(path)?.is_dir, "create_dir_all({path:?}) made no directory");
            Ok(String::new())
        }
        List => sb.list(path).map(|es| {
            let mut names: Vec<String> = es.into_iter().map(|e| e.name).collect();
            names.sort();
            names.join("\n")
        }),
        Walk => {
            let mut seen = Vec::new();
            sb.walk(path, |e| {
                seen.push(e.rel.to_owned());
                true
            })?;
            Ok(seen.join("\n"))
        }
        Info => sb.info(path).map(|i| format!("{} bytes", i.size)),
        MoveFrom => sb.rename(path, "moved").map(|()| String::new()),
        MoveTo => sb.rename("victim.txt", path).map(|()| String::new()),
        Remove => sb.remove(path, false).map(|()| String::new()),
        RemoveAll => sb.remove(path, true).map(|()| String::new()),
    }
}

/// Runs one attack on a fresh fixture and checks everything.
fn check(label: &str, act: Act, template: &str, expect: Expect) {
    let fx = Fx::attack();
    let sb = fx.sandbox();
    let path = expand(template, &fx);
    let before = fx.outside_snapshot();
    let result = run(&sb, act, &path);
    assert_eq!(before, fx.outside_snapshot(), "[{label}] the outside tree changed");
    assert!(fx.root.is_dir(), "[{label}] the root is gone");
    match result {
        Ok(outcome) => {
            assert!(
                matches!(expect, Works | Gives(_)),
                "[{label}] {act:?} {path:?}: expected {expect:?}, but it worked: {outcome:?}"
            );
            assert!(!outcome.contains(SENTINEL), "[{label}] returned outside content");
            assert!(!outcome.contains("nested.txt"), "[{label}] listed an outside entry: {outcome}");
            if let Gives(want) = expect {
                assert_eq!(outcome, want, "[{label}] {act:?} {path:?}");
            }
        }
        Err(err) => {
            let msg = err.to_string();
            let ok = match expect {
                Outside => matches!(err, GuardError::Outside { .. }),
                Invalid => matches!(err, GuardError::Invalid { .. }),
                RootItself => matches!(err, GuardError::RootItself { .. }),
                Fails => !err.is_refusal(),
                Works | Gives(_) => false,
            };
            assert!(ok, "[{label}] {act:?} {path:?}: expected {expect:?}, got {err:?} ({msg})");
            if matches!(expect, Outside | Invalid | RootItself) {
                assert!(err.is_refusal(), "[{label}] {err:?} is not reported as a refusal");
            }
            let mut given = vec![path.as_str()];
            match act {
                MoveTo => given.push("victim.txt"),
                MoveFrom => given.push("moved"),
                _ => {}
            }
            fx.assert_no_leak(&msg, &given);
        }
    }
}

/// Runs every case, then reports all that failed at once.
fn check_all(cases: &[(&str, Act, &str, Expect)]) {
    let mut failed = Vec::new();
    for &(label, act, path, expect) in cases {
        if catch_unwind(AssertUnwindSafe(|| check(label, act, path, expect))).is_err() {
            failed.push(label);
        }
    }
    assert!(failed.is_empty(), "{} of {} cases failed: {failed:?}", failed.len(), cases.len());
}

#[test]
fn read_attacks() {
    check_all(&[
        ("dotdot", Read, "../ws-evil/secret", Outside),
        ("long dotdot chain", Read, "../../../../../../../../../../etc/passwd", Outside),
        ("a/../../x", Read, "a/../../ws-evil/secret", Outside),
        ("deep dotdot", Read, "a/b/../../../ws-evil/secret", Outside),
        ("absolute outside every root", Read, "/etc/passwd", Outside),
        ("absolute sibling sharing the root's prefix", Read, "{root}-evil/secret", Outside),
        ("absolute root then dotdot", Read, "{root}/../ws-evil/secret", Outside),
        ("absolute root, a/../..", Read, "{root}/a/../../ws-evil/secret", Outside),
        ("absolute parent of the root", Read, "{base}/beside.txt", Outside),
        ("relative file symlink out", Read, "out_link", Outside),
        ("absolute file symlink out", Read, "abs_out_link", Outside),
        ("relative dir symlink out", Read, "out_dir_link/secret", Outside),
        ("absolute dir symlink out", Read, "abs_out_dir_link/secret", Outside),
        ("chained symlinks out", Read, "chain1", Outside),
        ("symlink in the middle", Read, "a/up_link/secret", Outside),
        ("symlink target with a/../..", Read, "mixed/secret", Outside),
        ("symlink to the root's parent", Read, "parent_link/ws-evil/secret", Outside),
        ("symlink to /proc/self/root", Read, "proc_link/etc/passwd", Outside),
        ("absolute symlink root/..", Read, "sneaky_abs/secret", Outside),
        ("absolute symlink to the prefix sibling", Read, "prefix_abs", Outside),
        ("inside dir symlink then dotdot", Read, "in_dir_link/../../ws-evil/secret", Outside),
        ("dangling symlink out", Read, "dangling_out", Outside),
        ("symlink out inside a dir", Read, "dir_with_out/escape/secret", Outside),
        ("head through symlink out", Head, "out_link", Outside),
        ("tail through symlink out", Tail, "abs_out_link", Outside),
        ("symlink loop", Read, "loop", Fails),
        ("symlink loop pair", Read, "loop_b", Fails),
        ("symlink loop in the middle", Read, "loop/x", Fails),
        ("file used as a directory", Read, "f.txt/../../ws-evil/secret", Fails),
        ("backslashes are not separators", Read, "..\\ws-evil\\secret", Fails),
        ("url-encoded separators", Read, "..%2fws-evil%2fsecret", Fails),
        ("tilde is not home", Read, "~/.ssh/config", Fails),
        ("NUL byte", Read, "f.txt\0/../../ws-evil/secret", Invalid),
        ("empty path", Read, "", Invalid),
        ("5000-byte path", Read, "{long}", Invalid),
        // What must keep working.
        ("doubled separators", Read, "a//b///deep.txt", Gives("deep")),
        ("doubled leading slash", Read, "/{root}//f.txt", Gives(INSIDE)),
        ("dot components", Read, "./a/./b/./deep.txt", Gives("deep")),
        ("dotdot staying inside", Read, "a/b/../../f.txt", Gives(INSIDE)),
        // A path ending in `/` names a directory: not a directory (issue 26, point 13).
        ("trailing slash on a file", Read, "a/b/deep.txt/", Fails),
        ("trailing slash and dot on a file", Read, "a/b/deep.txt/.", Fails),
        ("trailing slash on a link to a file", Read, "in_link/", Fails),
        ("trailing slash on a dir link inside", List, "in_dir_link/", Gives("b\nchain3\nup_link")),
        ("unicode names", Read, "ünïcødé/名前.txt", Gives("unicode")),
        ("dots inside a name", Read, "foo..bar.txt", Gives("dots in the middle")),
        ("name starting with two dots", Read, "..hidden", Gives("starts with two dots")),
        ("absolute path inside", Read, "{root}/f.txt", Gives(INSIDE)),
        ("relative symlink inside", Read, "in_link", Gives(INSIDE)),
        ("absolute symlink inside", Read, "abs_in_link", Gives(INSIDE)),
        ("relative dir symlink inside", Read, "in_dir_link/b/deep.txt", Gives("deep")),
        ("absolute dir symlink inside", Read, "abs_in_dir_link/b/deep.txt", Gives("deep")),
        ("symlink with dotdot staying inside", Read, "a/b/up_in", Gives(INSIDE)),
        ("head inside", Head, "in_link", Gives(INSIDE)),
    ]);
}

#[test]
fn write_attacks() {
    check_all(&[
        ("dotdot", Write, "../ws-evil/pwned", Outside),
        ("a/../../x", Write, "a/../../ws-evil/pwned", Outside),
        ("absolute existing outside file", Write, "{out}/secret", Outside),
        ("absolute new outside file", Write, "{out}/pwned", Outside),
        ("absolute parent of the root", Write, "{base}/pwned", Outside),
        ("absolute root then dotdot", Write, "{root}/../ws-evil/secret", Outside),
        ("relative file symlink out", Write, "out_link", Outside),
        ("absolute file symlink out", Write, "abs_out_link", Outside),
        ("chained symlinks out", Write, "chain1", Outside),
        ("relative dir symlink out", Write, "out_dir_link/pwned", Outside),
        ("absolute dir symlink out", Write, "abs_out_dir_link/dir/nested.txt", Outside),
        ("symlink in the middle", Write, "a/up_link/pwned", Outside),
        ("dangling relative symlink out", Write, "dangling_out", Outside),
        ("dangling absolute symlink out", Write, "abs_dangling_out", Outside),
        ("symlink out inside a dir", Write, "dir_with_out/escape/pwned", Outside),
        ("symlink to the root's parent", Write, "parent_link/pwned", Outside),
        ("symlink loop", Write, "loop", Fails),
        ("symlink loop in the middle", Write, "loop_a/x", Fails),
        ("a directory", Write, "a", Fails),
        ("the root, as .", Write, ".", RootItself),
        ("the root, absolute", Write, "{root}", RootItself),
        ("the root, as a/..", Write, "a/..", RootItself),
        ("NUL byte", Write, "new\0.txt", Invalid),
        ("empty path", Write, "", Invalid),
        ("5000-byte path", Write, "{long}", Invalid),
        // What must keep working.
        ("new file", Write, "new.txt", Gives(PAYLOAD)),
        ("doubled separators", Write, "a//b//new.txt", Gives(PAYLOAD)),
        ("dot components", Write, "./a/./new.txt", Gives(PAYLOAD)),
        ("dots inside a name", Write, "foo..bar.txt", Gives(PAYLOAD)),
        ("name starting with two dots", Write, "..hidden", Gives(PAYLOAD)),
        ("unicode names", Write, "ünïcødé/新しい.txt", Gives(PAYLOAD)),
        ("relative symlink inside", Write, "in_link", Gives(PAYLOAD)),
        ("absolute symlink inside", Write, "abs_in_link", Gives(PAYLOAD)),
        ("dangling symlink inside", Write, "dangling_in", Gives(PAYLOAD)),
        ("absolute dir symlink inside", Write, "abs_in_dir_link/new.txt", Gives(PAYLOAD)),
    ]);
}

#[test]
fn create_dir_all_attacks() {
    check_all(&[
        ("dotdot", Mkdir, "../ws-evil/newdir", Outside),
        ("a/../../x", Mkdir, "a/../../ws-evil/newdir", Outside),
        ("absolute outside", Mkdir, "{out}/newdir", Outside),
        ("absolute parent of the root", Mkdir, "{base}/newdir", Outside),
        ("relative dir symlink out", Mkdir, "out_dir_link/newdir", Outside),
        ("absolute dir symlink out", Mkdir, "abs_out_dir_link/newdir/deeper", Outside),
        ("dangling dir symlink out", Mkdir, "dangling_out_dir", Outside),
        ("dangling dir symlink out, deeper", Mkdir, "dangling_out_dir/sub/deeper", Outside),
        ("symlink in the middle", Mkdir, "a/up_link/x/y", Outside),
        ("dotdot after a missing dir", Mkdir, "new/../../ws-evil/x", Invalid),
        ("symlink loop in the middle", Mkdir, "loop/x", Fails),
        ("an existing file", Mkdir, "f.txt", Fails),
        ("NUL byte", Mkdir, "x\0y", Invalid),
        ("empty path", Mkdir, "", Invalid),
        ("5000-byte path", Mkdir, "{long}", Invalid),
        // What must keep working.
        ("nested new dirs", Mkdir, "x/y/z", Works),
        ("existing dir", Mkdir, "a/b", Works),
        ("the root", Mkdir, ".", Works),
        ("doubled separators and trailing slash", Mkdir, "a//b//c/", Works),
        ("absolute inside", Mkdir, "{root}/abs/new", Works),
        ("through a dir symlink inside", Mkdir, "in_dir_link/new", Works),
        ("through an absolute dir symlink inside", Mkdir, "abs_in_dir_link/n1/n2", Works),
        ("unicode and dots", Mkdir, "ünï/..dots../ñ", Works),
    ]);
}

#[test]
fn list_walk_info_attacks() {
    check_all(&[
        ("list dotdot", List, "..", Outside),
        ("list sibling", List, "../ws-evil", Outside),
        ("list absolute outside", List, "{out}", Outside),
        ("list parent of the root", List, "{base}", Outside),
        ("list dir symlink out", List, "out_dir_link", Outside),
        ("list absolute dir symlink out", List, "abs_out_dir_link", Outside),
        ("list symlink in the middle", List, "a/up_link", Outside),
        ("list symlink to parent", List, "parent_link", Outside),
        ("list symlink with dotdot target", List, "mixed", Outside),
        ("list /proc/self/root", List, "proc_link", Outside),
        ("list symlink loop", List, "loop", Fails),
        ("walk dotdot", Walk, "..", Outside),
        ("walk a/b/../../..", Walk, "a/b/../../..", Outside),
        ("walk absolute outside", Walk, "{out}", Outside),
        ("walk dir symlink out", Walk, "out_dir_link", Outside),
        ("walk absolute dir symlink out", Walk, "abs_out_dir_link", Outside),
        ("walk symlink in the middle", Walk, "a/up_link/dir", Outside),
        ("info file symlink out", Info, "out_link", Outside),
        ("info absolute file symlink out", Info, "abs_out_link", Outside),
        ("info dangling symlink out", Info, "dangling_out", Outside),
        ("info chained symlinks out", Info, "chain1", Outside),
        ("info sibling", Info, "../ws-evil", Outside),
        ("info absolute outside", Info, "{out}/secret", Outside),
        ("info through dir symlink out", Info, "out_dir_link/secret", Outside),
        ("info symlink loop", Info, "loop_a", Fails),
        // What must keep working, without ever following a link out.
        ("list the root", List, ".", Works),
        ("list the root, absolute", List, "{root}", Works),
        ("list a dir holding a link out", List, "dir_with_out", Gives("escape\nescape_file\nfile.txt")),
        ("list through a dir symlink inside", List, "in_dir_link", Works),
        ("list through an absolute dir symlink inside", List, "abs_in_dir_link/b/", Works),
        ("walk the root", Walk, ".", Works),
        ("walk a dir holding a link out", Walk, "dir_with_out", Gives("escape\nescape_file\nfile.txt")),
        ("info relative symlink inside", Info, "in_link", Gives("12 bytes")),
        ("info absolute symlink inside", Info, "abs_in_link", Gives("12 bytes")),
    ]);
}

#[test]
fn rename_attacks() {
    check_all(&[
        ("from dotdot", MoveFrom, "../ws-evil/secret", Outside),
        ("from absolute outside", MoveFrom, "{out}/secret", Outside),
        ("from absolute sibling dir", MoveFrom, "{out}/dir", Outside),
        ("from through dir symlink out", MoveFrom, "out_dir_link/secret", Outside),
        ("from through absolute dir symlink out", MoveFrom, "abs_out_dir_link/dir", Outside),
        ("from symlink in the middle", MoveFrom, "a/up_link/secret", Outside),
        ("from the root", MoveFrom, ".", RootItself),
        ("from the root, absolute", MoveFrom, "{root}", RootItself),
        ("from the root, as a/..", MoveFrom, "a/..", RootItself),
        ("from symlink loop in the middle", MoveFrom, "loop/x", Fails),
        ("from empty", MoveFrom, "", Invalid),
        ("to dotdot", MoveTo, "../ws-evil/moved", Outside),
        ("to a/../../x", MoveTo, "a/../../ws-evil/moved", Outside),
        ("to absolute outside", MoveTo, "{out}/moved", Outside),
        ("to parent of the root", MoveTo, "{base}/moved", Outside),
        ("to through dir symlink out", MoveTo, "out_dir_link/moved", Outside),
        ("to through absolute dir symlink out", MoveTo, "abs_out_dir_link/moved", Outside),
        ("to symlink in the middle", MoveTo, "a/up_link/moved", Outside),
        ("to through a link out inside a dir", MoveTo, "dir_with_out/escape/moved", Outside),
        ("to onto a dangling link out", MoveTo, "dangling_out", Fails),
        ("to onto a file link out", MoveTo, "out_link", Fails),
        ("to the root", MoveTo, ".", RootItself),
        ("to NUL byte", MoveTo, "moved\0", Invalid),
        ("to 5000-byte path", MoveTo, "{long}", Invalid),
        // What must keep working.
        ("from a link out (moves the link)", MoveFrom, "out_link", Works),
        ("from a dir holding a link out", MoveFrom, "dir_with_out", Works),
        ("from dots inside a name", MoveFrom, "foo..bar.txt", Works),
        ("from unicode", MoveFrom, "ünïcødé", Works),
        ("to a new name", MoveTo, "moved.txt", Works),
        ("to a subdirectory", MoveTo, "a/b/moved.txt", Works),
        ("to through a dir symlink inside", MoveTo, "in_dir_link/moved.txt", Works),
        ("to through an absolute dir symlink inside", MoveTo, "abs_in_dir_link/moved.txt", Works),
        ("to a name starting with two dots", MoveTo, "..moved", Works),
    ]);
}

#[test]
fn remove_attacks() {
    check_all(&[
        ("dotdot", Remove, "../ws-evil/secret", Outside),
        ("absolute outside", Remove, "{out}/secret", Outside),
        ("absolute outside dir, recursive", RemoveAll, "{out}", Outside),
        ("through dir symlink out", Remove, "out_dir_link/secret", Outside),
        ("through absolute dir symlink out, recursive", RemoveAll, "abs_out_dir_link/dir", Outside),
        ("symlink in the middle", Remove, "a/up_link/secret", Outside),
        ("through a link out inside a dir", RemoveAll, "dir_with_out/escape/dir", Outside),
        ("through symlink to parent, recursive", RemoveAll, "parent_link/ws-evil", Outside),
        ("through symlink with dotdot target", RemoveAll, "mixed/dir", Outside),
        ("the root", RemoveAll, ".", RootItself),
        ("the root, absolute", RemoveAll, "{root}", RootItself),
        ("the root, as a/..", RemoveAll, "a/..", RootItself),
        ("the root, through a dir symlink and dotdot", RemoveAll, "in_dir_link/..", RootItself),
        ("symlink loop in the middle", Remove, "loop/x", Fails),
        ("empty path", RemoveAll, "", Invalid),
        // What must keep working: links are deleted, never what they name.
        ("a file link out", Remove, "out_link", Works),
        ("a dir link out, recursive", RemoveAll, "out_dir_link", Works),
        ("a dir link out with trailing slash, recursive", RemoveAll, "out_dir_link/", Works),
        ("an absolute dir link out, recursive", RemoveAll, "abs_out_dir_link", Works),
        ("a dir holding links out, recursive", RemoveAll, "dir_with_out", Works),
        ("a dangling link out", Remove, "dangling_out", Works),
        ("a symlink loop", Remove, "loop", Works),
        ("dots inside a name", Remove, "foo..bar.txt", Works),
    ]);
}

#[test]
fn recursive_delete_of_a_dir_holding_a_link_out_deletes_only_the_link() {
    let fx = Fx::attack();
    let sb = fx.sandbox();
    let before = fx.outside_snapshot();
    sb.remove("dir_with_out", true).unwrap();
    assert!(!fx.exists("dir_with_out"));
    assert_eq!(before, fx.outside_snapshot());
    assert!(fx.outside.join("dir/sub/deep.txt").is_file());
}

#[test]
fn removing_a_dir_link_removes_the_link_not_the_target() {
    let fx = Fx::attack();
    let sb = fx.sandbox();
    sb.remove("in_dir_link", true).unwrap();
    assert!(!fx.exists("in_dir_link"));
    assert_eq!(fx.read("a/b/deep.txt"), "deep");
}

#[test]
fn a_moved_link_out_still_leads_nowhere() {
    let fx = Fx::attack();
    let sb = fx.sandbox();
    sb.rename("out_link", "moved_link").unwrap();
    let err = refused(sb.read("moved_link"));
    assert!(matches!(err, GuardError::Outside { .. }), "{err:?}");
}

#[test]
fn writing_through_an_inside_link_keeps_the_link() {
    let fx = Fx::attack();
    let sb = fx.sandbox();
    assert!(!sb.write("in_link", b"new").unwrap(), "the file existed");
    assert!(std::fs::symlink_metadata(fx.root.join("in_link")).unwrap().file_type().is_symlink());
    assert_eq!(fx.read("f.txt"), "new");
    // Through a dangling link inside, the target is created.
    assert!(sb.write("dangling_in", b"created").unwrap());
    assert_eq!(fx.read("a/not_yet.txt"), "created");
}

#[test]
fn listing_reports_links_without_following_them() {
    let fx = Fx::attack();
    let sb = fx.sandbox();
    let entries = sb.list(".").unwrap();
    let out = entries.iter().find(|e| e.name == "abs_out_link").unwrap();
    assert_eq!(out.kind, mcpsec_pathguard::EntryKind::Symlink);
    // No size: neither the sentinel's nor the link's own, which is the length
    // of its target's path (issue 26, point 13).
    assert_eq!(out.size, None);
    assert_eq!(entries.iter().find(|e| e.name == "in_link").unwrap().size, None);
    assert_eq!(entries.iter().find(|e| e.name == "f.txt").unwrap().size, Some(INSIDE.len() as u64));
    assert!(matches!(sb.info("abs_out_link"), Err(GuardError::Outside { .. })));
}

#[test]
fn an_absolute_path_through_the_configured_alias_of_a_root_works() {
    let fx = Fx::attack();
    let alias = fx.base.join("alias");
    std::os::unix::fs::symlink(&fx.root, &alias).unwrap();
    let sb = crate::support::sandbox(std::slice::from_ref(&alias), crate::support::default_rules(), 1 << 20);
    let via_alias = format!("{}/f.txt", alias.display());
    assert_eq!(sb.read(&via_alias).unwrap(), INSIDE.as_bytes());
    assert_eq!(sb.read(&fx.abs("f.txt")).unwrap(), INSIDE.as_bytes());
    let escape = format!("{}/../ws-evil/secret", alias.display());
    assert!(matches!(sb.read(&escape), Err(GuardError::Outside { .. })));
}

fn refused<T: std::fmt::Debug>(r: Result<T, GuardError>) -> GuardError {
    crate::support::refused(r, "attack")
}

#[test]
fn a_refusal_does_not_reveal_whether_something_exists_outside() {
    let fx = Fx::attack();
    let sb = fx.sandbox();
    let shape = |p: &str| {
        let err = sb.read(p).unwrap_err();
        fx.assert_no_leak(&err.to_string(), &[p]);
        err.to_string().replace(p, "<path>")
    };
    // Existing and missing targets outside get the very same answer.
    assert_eq!(shape("out_dir_link/secret"), shape("out_dir_link/no-such-file"));
    assert_eq!(shape("abs_out_dir_link/dir"), shape("abs_out_dir_link/no-such-dir/x"));
    assert_eq!(shape("../ws-evil/secret"), shape("../no-such-dir/secret"));
    assert_eq!(shape(&format!("{}/secret", fx.outside.display())), shape("/no/such/file"));
    assert_eq!(shape("out_link"), shape("dangling_out"));
}
