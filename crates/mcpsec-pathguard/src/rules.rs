use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{GuardError, Rule};

/// The protected-path rules, compiled. Globs are matched against the
/// resolved path relative to its root, `/`-separated; `*` does not cross a
/// `/`, `**` does, and dot files are matched like any other name. A rule
/// that matches a directory covers everything inside it (a virtualenv
/// named `.env` is as denied as a file named `.env`).
#[derive(Debug, Clone)]
pub struct Rules {
    deny: Compiled,
    readonly: Compiled,
}

#[derive(Debug, Clone)]
struct Compiled {
    set: GlobSet,
    globs: Vec<String>,
}

/// A child name used to ask "does a rule cover what lies *inside* this
/// directory?" (`.git/**` covers the directory `.git` itself for
/// mutations: deleting or moving it would change what the rule protects).
const PROBE: &str = "mcpsec-probe";

/// Compiles a glob the way the rules and the search tools use it.
pub fn compile_glob(glob: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(glob).literal_separator(true).backslash_escape(true).build()
}

impl Compiled {
    fn new(globs: &[String]) -> Result<Compiled, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        for g in globs {
            builder.add(compile_glob(g)?);
        }
        Ok(Compiled { set: builder.build()?, globs: globs.to_vec() })
    }

    fn first_match(&self, rel: &Path) -> Option<&str> {
        if !self.set.is_match(rel) {
            return None;
        }
        self.set.matches(rel).first().map(|&i| self.globs[i].as_str())
    }

    /// The first glob matching `rel` or any directory above it: a rule
    /// that matches a directory covers everything inside it.
    fn first_match_within(&self, rel: &Path) -> Option<&str> {
        rel.ancestors().filter(|a| !a.as_os_str().is_empty()).find_map(|a| self.first_match(a))
    }
}

impl Rules {
    /// Compiles the rules. An invalid glob is an error naming it.
    pub fn new(readonly: &[String], deny: &[String]) -> Result<Rules, globset::Error> {
        Ok(Rules { deny: Compiled::new(deny)?, readonly: Compiled::new(readonly)? })
    }

    /// No protected paths at all.
    pub fn none() -> Rules {
        Rules {
            deny: Compiled { set: GlobSet::empty(), globs: Vec::new() },
            readonly: Compiled { set: GlobSet::empty(), globs: Vec::new() },
        }
    }

    /// Whether the entry `rel` is hidden and unreadable. Only `rel` itself
    /// is matched: callers (listings, walks) have already checked the
    /// directory it lies in.
    pub(crate) fn is_denied(&self, rel: &Path) -> bool {
        self.deny.set.is_match(rel)
    }

    /// Refuses reading `rel` (shown to the caller as `shown`): a deny rule
    /// matching it, or any directory above it, refuses.
    pub(crate) fn check_read(&self, rel: &Path, shown: &str) -> Result<(), GuardError> {
        match self.deny.first_match_within(rel) {
            Some(glob) => Err(protected(shown, Rule::Deny, glob)),
            None => check_scope(rel, shown),
        }
    }

    /// Refuses changing `rel`: deny and readonly rules both apply, to `rel`
    /// and every directory above it, and readonly also to a directory whose
    /// contents it covers.
    pub(crate) fn check_write(&self, rel: &Path, shown: &str) -> Result<(), GuardError> {
        self.check_read(rel, shown)?;
        if let Some(glob) = self.readonly.first_match_within(rel) {
            return Err(protected(shown, Rule::ReadOnly, glob));
        }
        self.check_write_contents(rel, shown)
    }

    /// Like [`Rules::check_write`] for an entry met while scanning a
    /// directory that passed `check_write` already, top-down: the
    /// directories above `rel` were checked, so only `rel` itself is.
    pub(crate) fn check_write_entry(&self, rel: &Path, shown: &str) -> Result<(), GuardError> {
        if let Some(glob) = self.deny.first_match(rel) {
            return Err(protected(shown, Rule::Deny, glob));
        }
        if let Some(glob) = self.readonly.first_match(rel) {
            return Err(protected(shown, Rule::ReadOnly, glob));
        }
        self.check_write_contents(rel, shown)
    }

    /// Refuses changing a directory whose contents a readonly rule covers.
    fn check_write_contents(&self, rel: &Path, shown: &str) -> Result<(), GuardError> {
        if !rel.as_os_str().is_empty()
            && let Some(glob) = self.readonly.first_match(&rel.join(PROBE))
        {
            return Err(protected(shown, Rule::ReadOnly, glob));
        }
        Ok(())
    }
}

/// Path globs that a capability token confines one call to. Set for the
/// duration of a call with [`with_scope`]; every operation checks its
/// resolved target against it at the same point it checks the protected
/// paths, so a symlink swapped after authorization cannot move the call
/// out of the token's scope.
#[derive(Debug, Clone)]
pub struct Scope {
    set: GlobSet,
}

impl Scope {
    /// Compiles the globs (relative to a root). A path is in scope when a
    /// glob matches it or a directory above it.
    pub fn new(globs: &[String]) -> Result<Scope, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        for g in globs {
            builder.add(compile_glob(g)?);
        }
        Ok(Scope { set: builder.build()? })
    }

    fn covers(&self, rel: &Path) -> bool {
        rel.ancestors().filter(|a| !a.as_os_str().is_empty()).any(|a| self.set.is_match(a))
    }
}

thread_local! {
    static SCOPE: std::cell::RefCell<Option<std::sync::Arc<Scope>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with every sandbox operation on this thread confined to
/// `scope` (no confinement for `None`), restoring the previous scope after.
pub fn with_scope<R>(scope: Option<std::sync::Arc<Scope>>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<std::sync::Arc<Scope>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            SCOPE.with(|s| *s.borrow_mut() = prev);
        }
    }
    let prev = SCOPE.with(|s| s.replace(scope));
    let _restore = Restore(prev);
    f()
}

fn check_scope(rel: &Path, shown: &str) -> Result<(), GuardError> {
    SCOPE.with(|s| match s.borrow().as_ref() {
        Some(scope) if !scope.covers(rel) => Err(GuardError::OutOfScope { path: shown.to_owned() }),
        _ => Ok(()),
    })
}

fn protected(shown: &str, rule: Rule, glob: &str) -> GuardError {
    GuardError::Protected { path: shown.to_owned(), rule, glob: glob.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Rules::new(
            &s(&[".git/**"]),
            &s(&["**/.env", "**/.env.*", "**/*.pem", "**/*.key", "**/id_rsa*", "**/id_ed25519*"]),
        )
        .unwrap()
    }

    #[test]
    fn scope_confines_reads_and_writes_on_this_thread_only() {
        let r = Rules::none();
        let scope = std::sync::Arc::new(Scope::new(&["notes/**".to_string(), "todo.txt".to_string()]).unwrap());
        with_scope(Some(scope), || {
            assert!(r.check_write(Path::new("notes/a/b.txt"), "x").is_ok());
            assert!(r.check_read(Path::new("todo.txt"), "x").is_ok());
            let e = r.check_write(Path::new("src/main.rs"), "src/main.rs").unwrap_err();
            assert!(matches!(e, GuardError::OutOfScope { .. }) && e.is_refusal(), "{e}");
            // Another thread is not confined.
            std::thread::spawn(|| assert!(Rules::none().check_write(Path::new("src/main.rs"), "x").is_ok()))
                .join()
                .unwrap();
        });
        assert!(r.check_write(Path::new("src/main.rs"), "x").is_ok(), "the scope ends with the call");
    }

    #[test]
    fn default_deny_rules() {
        let r = rules();
        for denied in [".env", "a/b/.env", ".env.local", "x/server.pem", "k.key", "home/.ssh/id_rsa.pub", "id_ed25519"]
        {
            assert!(r.check_read(Path::new(denied), denied).is_err(), "{denied}");
        }
        for fine in ["env", "a/.envrc", "notes.txt", "keys/readme", "src/key.rs", ".git/config"] {
            assert!(r.check_read(Path::new(fine), fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn readonly_covers_the_directory_and_its_contents() {
        let r = rules();
        for ro in [".git", ".git/config", ".git/hooks/pre-commit"] {
            let e = r.check_write(Path::new(ro), ro).unwrap_err();
            assert!(e.to_string().contains("paths.readonly"), "{e}");
        }
        for fine in ["src/.git.txt", "git/x", "a/.gitignore"] {
            assert!(r.check_write(Path::new(fine), fine).is_ok(), "{fine}");
        }
        // The root itself is not covered by `.git/**`.
        assert!(r.check_write(Path::new(""), ".").is_ok());
    }

    #[test]
    fn a_rule_matching_a_directory_covers_its_contents() {
        let r = rules();
        for inside in [".env/bin/activate", "a/keys.pem/cert", "home/id_rsa.d/x"] {
            assert!(r.check_read(Path::new(inside), inside).is_err(), "{inside}");
            assert!(r.check_write(Path::new(inside), inside).is_err(), "{inside}");
        }
        // The entry check looks at the entry alone (its parents were checked).
        assert!(r.check_write_entry(Path::new(".env/bin"), "x").is_ok());
        assert!(r.check_write_entry(Path::new("a/.env"), "x").is_err());
        assert!(r.check_write_entry(Path::new(".git"), "x").is_err());
    }
}
