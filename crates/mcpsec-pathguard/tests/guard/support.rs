//! Fixtures shared by every behaviour test: a temporary directory holding
//! the root `ws` and, beside it, the sibling `ws-evil` that shares the
//! root's name prefix and holds the sentinel files an attack must never
//! read, change or create.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use mcpsec_pathguard::{GuardError, Rules, Sandbox, SandboxOptions};
use tempfile::TempDir;

/// The content of the outside sentinel file; no error message may show it.
pub const SENTINEL: &str = "OUTSIDE-SENTINEL-7f3a9c";
/// What the inside file `f.txt` holds.
pub const INSIDE: &str = "inside f.txt";

/// The default `[paths]` rules of the product.
pub fn default_rules() -> Rules {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Rules::new(&s(&[".git/**"]), &s(&["**/.env", "**/.env.*", "**/*.pem", "**/*.key", "**/id_rsa*", "**/id_ed25519*"]))
        .unwrap()
}

/// Opens a sandbox on `roots` with the given rules and read cap.
pub fn sandbox(roots: &[PathBuf], rules: Rules, max_read: u64) -> Sandbox {
    Sandbox::open(roots, SandboxOptions { rules, max_read }).unwrap()
}

/// A temporary directory with a root and an outside sibling.
#[derive(Debug)]
pub struct Fx {
    /// Keeps the directory alive; everything lives below it.
    pub _tmp: TempDir,
    /// The parent of root and outside (canonical).
    pub base: PathBuf,
    /// The root (`base/ws`).
    pub root: PathBuf,
    /// The sibling sharing the root's name prefix (`base/ws-evil`).
    pub outside: PathBuf,
}

impl Fx {
    /// An empty root and an outside directory holding the sentinels.
    pub fn bare() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("ws");
        let outside = base.join("ws-evil");
        fs::create_dir(&root).unwrap();
        fs::create_dir_all(outside.join("dir/sub")).unwrap();
        fs::write(outside.join("secret"), SENTINEL).unwrap();
        fs::write(outside.join("dir/nested.txt"), SENTINEL).unwrap();
        fs::write(outside.join("dir/sub/deep.txt"), SENTINEL).unwrap();
        fs::write(outside.join(".env"), SENTINEL).unwrap();
        fs::write(base.join("beside.txt"), SENTINEL).unwrap();
        Fx { _tmp: tmp, base, root, outside }
    }

    /// The attack fixture: ordinary files, odd names, and symlinks of every
    /// kind, inside and out.
    pub fn attack() -> Fx {
        let fx = Fx::bare();
        let out = fx.outside.display().to_string();
        let root = fx.root.display().to_string();
        fx.file("f.txt", INSIDE);
        fx.file("a/b/deep.txt", "deep");
        fx.file("foo..bar.txt", "dots in the middle");
        fx.file("..hidden", "starts with two dots");
        fx.file("ünïcødé/名前.txt", "unicode");
        fx.file("dir_with_out/file.txt", "doomed");
        fx.file("victim.txt", "victim");
        fx.link("dir_with_out/escape", "../../ws-evil");
        fx.link("dir_with_out/escape_file", &format!("{out}/secret"));
        // Symlinks that stay inside.
        fx.link("in_link", "f.txt");
        fx.link("in_dir_link", "a");
        fx.link("abs_in_link", &format!("{root}/f.txt"));
        fx.link("abs_in_dir_link", &format!("{root}/a"));
        fx.link("a/b/up_in", "../../f.txt");
        // Symlinks that lead out.
        fx.link("out_link", "../ws-evil/secret");
        fx.link("out_dir_link", "../ws-evil");
        fx.link("abs_out_link", &format!("{out}/secret"));
        fx.link("abs_out_dir_link", &out);
        fx.link("chain1", "chain2");
        fx.link("chain2", "a/chain3");
        fx.link("a/chain3", "../out_link");
        fx.link("a/up_link", "../../ws-evil");
        fx.link("mixed", "a/../../ws-evil");
        fx.link("parent_link", "..");
        fx.link("proc_link", "/proc/self/root");
        fx.link("sneaky_abs", &format!("{root}/../ws-evil"));
        fx.link("prefix_abs", &format!("{root}-evil/secret"));
        // Loops and dangling links.
        fx.link("loop", "loop");
        fx.link("loop_a", "loop_b");
        fx.link("loop_b", "loop_a");
        fx.link("dangling_out", "../ws-evil/created_by_attack");
        fx.link("abs_dangling_out", &format!("{out}/created_by_attack"));
        fx.link("dangling_out_dir", "../ws-evil/newdir");
        fx.link("dangling_in", "a/not_yet.txt");
        fx
    }

    /// Creates a file (and its parents) below the root.
    pub fn file(&self, rel: &str, contents: &str) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }

    /// Creates a directory (and its parents) below the root.
    pub fn dir(&self, rel: &str) {
        fs::create_dir_all(self.root.join(rel)).unwrap();
    }

    /// Creates a symlink below the root.
    pub fn link(&self, rel: &str, target: &str) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    /// The absolute path of `rel` below the root, as text.
    pub fn abs(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    /// Reads a file below the root directly (not through the sandbox).
    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel)).unwrap()
    }

    /// Whether something (even a dangling link) is at `rel` below the root.
    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.root.join(rel)).is_ok()
    }

    /// A sandbox on this root with the default rules.
    pub fn sandbox(&self) -> Sandbox {
        sandbox(std::slice::from_ref(&self.root), default_rules(), 1 << 20)
    }

    /// Everything below `base` except the root: the outside world.
    pub fn outside_snapshot(&self) -> Snapshot {
        snapshot(&self.base, Some(&self.root))
    }

    /// Everything below the root.
    pub fn inside_snapshot(&self) -> Snapshot {
        snapshot(&self.root, None)
    }

    /// Panics if `msg` reveals anything about what lies outside the root:
    /// its paths, the sentinel's content, the symlink targets that lead
    /// there. `given` are the paths the caller passed, which a message may
    /// quote.
    pub fn assert_no_leak(&self, msg: &str, given: &[&str]) {
        let mut rest = msg.to_owned();
        for g in given {
            if !g.is_empty() {
                rest = rest.replace(g, "<given>");
            }
        }
        for secret in [
            SENTINEL,
            "ws-evil",
            "created_by_attack",
            "/proc/self",
            self.base.to_str().unwrap(),
            self.outside.to_str().unwrap(),
        ] {
            assert!(!rest.contains(secret), "message leaks `{secret}`: {msg}");
        }
    }
}

/// One node of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A file: content and permission bits.
    File(Vec<u8>, u32),
    /// A directory and its permission bits.
    Dir(u32),
    /// A symlink and its target.
    Link(PathBuf),
    /// Anything else.
    Other,
}

/// A tree, byte for byte: relative path to node.
pub type Snapshot = BTreeMap<PathBuf, Node>;

/// Records every node below `dir`, skipping the subtree `skip`.
pub fn snapshot(dir: &Path, skip: Option<&Path>) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if Some(path.as_path()) == skip {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Link(fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                stack.push(path.clone());
                Node::Dir(mode)
            } else if meta.is_file() {
                Node::File(fs::read(&path).unwrap(), mode)
            } else {
                Node::Other
            };
            out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), node);
        }
    }
    out
}

/// The error of `result`, or a panic naming what unexpectedly worked.
pub fn refused<T: std::fmt::Debug>(result: Result<T, GuardError>, what: &str) -> GuardError {
    match result {
        Ok(v) => panic!("{what}: expected a refusal, got Ok({v:?})"),
        Err(e) => e,
    }
}
