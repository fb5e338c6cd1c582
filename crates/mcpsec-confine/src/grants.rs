//! Which paths are granted, and which never are.

use std::path::{Path, PathBuf};

use crate::ConfineError;

/// The system's program and library trees granted for reading.
const SYSTEM_TREES: &[&str] = &["/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/opt"];
/// Devices granted for reading.
const DEVICES_READ: &[&str] = &["/dev/urandom", "/dev/random"];
/// Devices granted for writing (and reading): sinks and sources of nothing.
pub(crate) const DEVICES_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];

/// Paths a confined process may never reach, each with what it is (for
/// messages). Grants that contain one are split around it.
#[derive(Debug, Clone, Default)]
pub struct Never {
    paths: Vec<(String, PathBuf)>,
}

impl Never {
    /// From `(what, path)` pairs.
    pub fn new(paths: Vec<(String, PathBuf)>) -> Never {
        Never { paths }
    }

    /// Adds one.
    pub fn push(&mut self, what: impl Into<String>, path: impl Into<PathBuf>) {
        self.paths.push((what.into(), path.into()));
    }

    /// The never-path `p` is at or beneath, if any.
    fn covering(&self, p: &Path) -> Option<&(String, PathBuf)> {
        self.paths.iter().find(|(_, n)| p.starts_with(n))
    }

    /// Whether a never-path lies strictly beneath `p`.
    fn beneath(&self, p: &Path) -> bool {
        self.paths.iter().any(|(_, n)| n.starts_with(p) && n != p)
    }

    /// The pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.paths.iter().map(|(w, p)| (w.as_str(), p.as_path()))
    }
}

/// The home directory's credential stores under `home`.
pub fn credential_stores(home: &Path) -> Vec<(String, PathBuf)> {
    [
        ".ssh",
        ".gnupg",
        ".aws",
        ".azure",
        ".config/gcloud",
        ".kube",
        ".docker",
        ".netrc",
        ".git-credentials",
        ".npmrc",
        ".pypirc",
        ".config/gh",
    ]
    .iter()
    .map(|s| (format!("the credential store ~/{s}"), home.join(s)))
    .collect()
}

/// The system's secrets: fixed paths, and the `/etc/sudoers*` and
/// `/etc/ssh/*_key` found now.
pub fn system_secrets() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> =
        ["/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssl/private"]
            .iter()
            .map(|p| ("a system secret".to_owned(), PathBuf::from(p)))
            .collect();
    for (dir, keep) in [
        ("/etc", (|n: &str| n.starts_with("sudoers")) as fn(&str) -> bool),
        ("/etc/ssh", |n: &str| n.ends_with("_key")),
    ] {
        for name in list(Path::new(dir)) {
            if name.to_str().is_some_and(keep) {
                out.push(("a system secret".to_owned(), Path::new(dir).join(name)));
            }
        }
    }
    // Always named, existing or not, so a configured entry is checked.
    out.push(("a system secret".to_owned(), "/etc/sudoers".into()));
    out.push(("a system secret".to_owned(), "/etc/sudoers.d".into()));
    out
}

/// The default read grants: the system trees, `/etc` (split around its
/// secrets by [`Grants`]), `/proc`, and a few devices.
pub fn default_read() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = SYSTEM_TREES.iter().map(PathBuf::from).collect();
    v.push("/etc".into());
    v.push("/proc".into());
    v.extend(DEVICES_READ.iter().map(PathBuf::from));
    v
}

/// Read and write grants with the never-paths carved out.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Read (and execute).
    pub read: Vec<PathBuf>,
    /// Read, execute and write.
    pub write: Vec<PathBuf>,
}

impl Grants {
    /// Adds `path` for reading, split around the never-paths.
    pub fn read(&mut self, path: &Path, never: &Never) {
        carve(path, never, &mut self.read);
    }

    /// Adds `path` for writing, split around the never-paths.
    pub fn write(&mut self, path: &Path, never: &Never) {
        carve(path, never, &mut self.write);
    }

    /// Adds `path` for writing as it is: for a private directory mcpsec
    /// made for this process (under the state directory, say).
    pub fn write_private(&mut self, path: &Path) {
        self.write.push(path.to_path_buf());
    }
}

/// `path`, or its children when a never-path lies beneath it (recursively),
/// or nothing when it lies within a never-path. Paths that do not exist are
/// left out (they grant nothing).
fn carve(path: &Path, never: &Never, out: &mut Vec<PathBuf>) {
    if never.covering(path).is_some() {
        return;
    }
    if !never.beneath(path) {
        if exists(path) {
            out.push(path.to_path_buf());
        }
        return;
    }
    for name in list(path) {
        carve(&path.join(name), never, out);
    }
}

/// A configured entry that is, contains or lies within a never-path is an
/// error naming both.
pub fn check_overlap(key: &str, entries: &[PathBuf], never: &Never) -> Result<(), ConfineError> {
    for entry in entries {
        if let Some((what, n)) = never.paths.iter().find(|(_, n)| entry.starts_with(n) || n.starts_with(entry)) {
            return Err(ConfineError::Overlap {
                key: key.to_owned(),
                entry: entry.display().to_string(),
                what: what.clone(),
                never: n.display().to_string(),
            });
        }
    }
    Ok(())
}

// mcpsec's own set-up of a child's rules, not a tool call.
#[allow(clippy::disallowed_methods)]
fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// The names in `dir` (none when it cannot be listed).
#[allow(clippy::disallowed_methods)]
fn list(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_holding_a_never_path_is_split_around_it() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        for d in [".ssh", ".config/gh", ".config/app", "project", ".local/state/mcpsec"] {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        std::fs::write(home.join("notes.txt"), "").unwrap();
        let mut never = Never::new(credential_stores(home));
        never.push("the state directory", home.join(".local/state/mcpsec"));
        let mut g = Grants::default();
        g.read(home, &never);
        let mut got: Vec<_> = g.read.iter().map(|p| p.strip_prefix(home).unwrap().to_owned()).collect();
        got.sort();
        let want: Vec<PathBuf> = [".config/app", "notes.txt", "project"].iter().map(PathBuf::from).collect();
        assert_eq!(got, want);
        // Within a never-path: nothing.
        let mut g = Grants::default();
        g.write(&home.join(".ssh"), &never);
        assert!(g.write.is_empty());
    }

    #[test]
    fn etc_is_granted_without_its_secrets() {
        let never = Never::new(system_secrets());
        let mut g = Grants::default();
        for p in default_read() {
            g.read(&p, &never);
        }
        assert!(!g.read.iter().any(|p| p == Path::new("/etc")));
        assert!(g.read.iter().any(|p| p == Path::new("/etc/passwd")));
        for secret in ["/etc/shadow", "/etc/gshadow", "/etc/ssl/private"] {
            assert!(!g.read.iter().any(|p| p.starts_with(secret) || Path::new(secret).starts_with(p)), "{secret}");
        }
        assert!(!g.read.iter().any(|p| p.to_string_lossy().starts_with("/etc/sudoers")));
        assert!(!g.read.iter().any(|p| p.starts_with("/dev/tty")));
    }

    #[test]
    fn an_entry_overlapping_a_never_path_names_both() {
        let never = Never::new(credential_stores(Path::new("/home/u")));
        for entry in ["/home/u", "/home/u/.ssh", "/home/u/.ssh/id_ed25519", "/"] {
            let e = check_overlap("[confine] read", &[entry.into()], &never).unwrap_err().to_string();
            assert!(e.contains(entry) && e.contains("/home/u/.ssh"), "{e}");
        }
        check_overlap("[confine] read", &["/home/u/project".into(), "/srv".into()], &never).unwrap();
    }
}
