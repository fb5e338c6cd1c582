//! The protected paths that exist in the roots now, for the kernel rules of
//! a confined program (which cannot ask the path guard each time it opens
//! a file).

use std::path::{Path, PathBuf};

use crate::Sandbox;

/// The protected paths found in the roots ([`Sandbox::protected_paths`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectedPaths {
    /// Matched by `[paths] deny`: neither readable nor writable (host paths).
    pub deny: Vec<PathBuf>,
    /// Matched by `[paths] readonly`: readable, not writable (host paths).
    pub readonly: Vec<PathBuf>,
}

/// More entries in the roots than a scan for protected paths may visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the roots hold more than {0} entries, too many to scan for protected paths before every call")]
pub struct TooManyEntries(pub usize);

impl Sandbox {
    /// Every path in the roots that a deny or readonly rule protects, as it
    /// stands now (symlinks are not followed; a protected directory is not
    /// entered). At most `max_entries` entries are visited.
    pub fn protected_paths(&self, max_entries: usize) -> Result<ProtectedPaths, TooManyEntries> {
        let mut found = ProtectedPaths::default();
        let mut seen = 0usize;
        for (i, root) in self.roots().enumerate() {
            let rules = self.rules_in(i);
            let mut stack = vec![PathBuf::new()];
            while let Some(rel) = stack.pop() {
                for (name, is_dir) in entries(&root.join(&rel)) {
                    seen += 1;
                    if seen > max_entries {
                        return Err(TooManyEntries(max_entries));
                    }
                    let child = rel.join(&name);
                    if rules.check_read(&child, "").is_err() {
                        found.deny.push(root.join(&child));
                    } else if rules.check_write(&child, "").is_err() {
                        found.readonly.push(root.join(&child));
                    } else if is_dir {
                        stack.push(child);
                    }
                }
            }
        }
        Ok(found)
    }
}

/// The names in `dir`, each with whether it is a directory (not a symlink).
fn entries(dir: &Path) -> Vec<(std::ffi::OsString, bool)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.filter_map(Result::ok).map(|e| (e.file_name(), e.file_type().is_ok_and(|t| t.is_dir()))).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::{Rules, SandboxOptions};

    use super::*;

    #[test]
    fn protected_paths_are_found_and_not_entered() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        for d in ["src", ".git/objects", "deep/er"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [".env", "src/main.rs", "deep/er/server.key", ".git/config"] {
            std::fs::write(root.join(f), "").unwrap();
        }
        let rules = Rules::new(&["**/.git/**".into()], &["**/.env".into(), "**/*.key".into()]).unwrap();
        let sandbox = Sandbox::open(std::slice::from_ref(&root), SandboxOptions { rules, max_read: 1 << 20 }).unwrap();
        let mut p = sandbox.protected_paths(1000).unwrap();
        p.deny.sort();
        assert_eq!(p.deny, vec![root.join(".env"), root.join("deep/er/server.key")]);
        assert_eq!(p.readonly, vec![root.join(".git")]);
        assert_eq!(sandbox.protected_paths(3), Err(TooManyEntries(3)));
    }
}
