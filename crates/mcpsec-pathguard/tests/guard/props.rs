//! Property tests: paths built at random from the components that make
//! trouble (`..`, `.`, empty, overlong, symlinks out, in, absolute, loops),
//! against every mutating operation and read. Whatever happens, the tree
//! outside the root is unchanged and a read returns an inside file.

use std::fs;
use std::os::unix::fs::symlink;

use mcpsec_pathguard::{Rules, Sandbox};
use proptest::prelude::*;
use tempfile::TempDir;

use crate::support::{Snapshot, sandbox, snapshot};

/// Files created on both sides, holding `INSIDE:<rel>` / `OUTSIDE:<rel>`.
const FILES: &[&str] = &["f.txt", "a/f.txt", "a/b/f.txt", "b/f.txt"];

struct World {
    _tmp: TempDir,
    base: std::path::PathBuf,
    root: std::path::PathBuf,
    sandbox: Sandbox,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("ws");
        let outside = base.join("outside");
        for (dir, tag) in [(&root, "INSIDE"), (&outside, "OUTSIDE")] {
            fs::create_dir_all(dir.join("a/b")).unwrap();
            fs::create_dir_all(dir.join("b")).unwrap();
            for f in FILES {
                fs::write(dir.join(f), format!("{tag}:{f}")).unwrap();
            }
        }
        let r = root.display().to_string();
        let o = outside.display().to_string();
        let links: &[(&str, String)] = &[
            ("out_link", "../outside".to_owned()),
            ("a/out_link", "../../outside/a".to_owned()),
            ("a/b/out_link", format!("{o}/f.txt")),
            ("b/out_link", format!("{o}/b")),
            ("in_link", "a".to_owned()),
            ("a/in_link", "f.txt".to_owned()),
            ("a/b/in_link", "../..".to_owned()),
            ("abs_in_link", format!("{r}/a/b")),
            ("a/abs_in_link", format!("{r}/f.txt")),
            ("b/abs_in_link", r.clone()),
            ("loop", "loop".to_owned()),
            ("a/loop", "../loop".to_owned()),
        ];
        for (at, target) in links {
            symlink(target, root.join(at)).unwrap();
        }
        let sandbox = sandbox(std::slice::from_ref(&root), Rules::none(), 1 << 20);
        World { _tmp: tmp, base, root, sandbox }
    }

    fn outside(&self) -> Snapshot {
        snapshot(&self.base, Some(&self.root))
    }

    fn path(&self, (prefix, parts): &(u8, Vec<String>)) -> String {
        let joined = parts.join("/");
        match prefix {
            0 => joined,
            1 => format!("{}/{joined}", self.root.display()),
            _ => format!("/{joined}"),
        }
    }
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("f.txt".to_owned()),
        Just("out_link".to_owned()),
        Just("in_link".to_owned()),
        Just("abs_in_link".to_owned()),
        Just("loop".to_owned()),
        Just(String::new()),
        Just("x".repeat(300)),
    ]
}

/// A prefix (0: none, 1: the root's absolute path, 2: `/`) and components.
fn path() -> impl Strategy<Value = (u8, Vec<String>)> {
    (0u8..3, prop::collection::vec(component(), 1..7))
}

#[derive(Debug, Clone)]
enum Op {
    Read,
    Write,
    Mkdir,
    RemoveAll,
    Rename((u8, Vec<String>)),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Read), Just(Op::Write), Just(Op::Mkdir), Just(Op::RemoveAll), path().prop_map(Op::Rename),]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_operation_stays_inside_the_root(p in path(), op in op()) {
        let w = World::new();
        let input = w.path(&p);
        let before = w.outside();
        match &op {
            Op::Read => {
                if let Ok(data) = w.sandbox.read(&input) {
                    let text = String::from_utf8(data).unwrap();
                    let inside: Vec<String> = FILES.iter().map(|f| format!("INSIDE:{f}")).collect();
                    prop_assert!(inside.contains(&text), "read {input:?} returned {text:?}");
                }
            }
            Op::Write => {
                if w.sandbox.write(&input, b"WRITTEN").is_ok() {
                    prop_assert_eq!(w.sandbox.read(&input).unwrap(), b"WRITTEN");
                }
            }
            Op::Mkdir => {
                if w.sandbox.create_dir_all(&input).is_ok() {
                    prop_assert!(w.sandbox.info(&input).unwrap().is_dir);
                }
            }
            Op::RemoveAll => {
                let _ = w.sandbox.remove(&input, true);
            }
            Op::Rename(to) => {
                let to = w.path(to);
                let _ = w.sandbox.rename(&input, &to);
            }
        }
        prop_assert_eq!(before, w.outside(), "{:?} {:?} changed the outside tree", op, input);
        prop_assert!(w.root.is_dir(), "the root is gone");
    }
}
