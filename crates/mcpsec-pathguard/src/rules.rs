use std::path::{Path, PathBuf};

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

    /// [`Compiled::first_match`] of `rel` in its root and in every root that
    /// contains that root (`outer`: the root's path in each of them).
    fn first_match_in(&self, rel: &Path, outer: &[PathBuf]) -> Option<&str> {
        self.first_match(rel).or_else(|| outer.iter().find_map(|p| self.first_match(&p.join(rel))))
    }

    /// [`Compiled::first_match_within`], likewise in every containing root.
    fn first_match_within_in(&self, rel: &Path, outer: &[PathBuf]) -> Option<&str> {
        self.first_match_within(rel).or_else(|| outer.iter().find_map(|p| self.first_match_within(&p.join(rel))))
    }
}

/// The rules as they apply below one root: its own paths, and the same
/// paths seen from every root that contains it, so that a root nested in
/// another (`--root W --root W/x/.git`) never lifts a protection of the
/// outer one. A token's scope is checked once, relative to the root the
/// path resolved under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InRoot<'a> {
    pub(crate) rules: &'a Rules,
    /// The root's path relative to each root that contains it.
    pub(crate) outer: &'a [PathBuf],
    /// The paths a capability token confines the call to (`None`: no
    /// confinement beyond the rules).
    pub(crate) scope: Option<&'a Scope>,
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

    /// These rules as they apply below a root nested in others (`outer`:
    /// its path in each of them; empty for a root inside no other).
    pub(crate) fn in_root<'a>(&'a self, outer: &'a [PathBuf]) -> InRoot<'a> {
        InRoot { rules: self, outer, scope: None }
    }
}

impl<'a> InRoot<'a> {
    /// These rules, confined to `scope` as well.
    pub(crate) fn scoped(self, scope: Option<&'a Scope>) -> InRoot<'a> {
        InRoot { scope, ..self }
    }

    /// Whether the entry `rel` is hidden and unreadable. Only `rel` itself
    /// is matched: callers (listings, walks) have already checked the
    /// directory it lies in.
    pub(crate) fn is_denied(&self, rel: &Path) -> bool {
        self.rules.deny.set.is_match(rel) || self.outer.iter().any(|p| self.rules.deny.set.is_match(p.join(rel)))
    }

    /// Refuses `rel` when a deny rule matches it or a directory above it,
    /// whether or not it exists: the resolver asks this of the path as
    /// requested and of every directory it enters, so that a denied name
    /// (`nothere.key`) or what lies in a denied directory (`.env/x`) gets
    /// the same answer as an existing one, and cannot be probed.
    pub(crate) fn check_denied(&self, rel: &Path, shown: &str) -> Result<(), GuardError> {
        match self.rules.deny.first_match_within_in(rel, self.outer) {
            Some(glob) => Err(protected(shown, Rule::Deny, glob)),
            None => Ok(()),
        }
    }

    /// Like [`InRoot::check_denied`] for a directory the resolver enters
    /// below one that passed: only `rel` itself is matched (its parents were).
    pub(crate) fn check_denied_entry(&self, rel: &Path, shown: &str) -> Result<(), GuardError> {
        match self.rules.deny.first_match_in(rel, self.outer) {
            Some(glob) => Err(protected(shown, Rule::Deny, glob)),
            None => Ok(()),
        }
    }

    /// Refuses reading `rel` (shown to the caller as `shown`): a deny rule
    /// matching it, or any directory above it, refuses.
    pub(crate) fn check_read(&self, rel: &Path, shown: &str) -> Result<(), GuardError> {
        match self.rules.deny.first_match_within_in(rel, self.outer) {
            Some(glob) => Err(protected(shown, Rule::Deny, glob)),
            None => match self.scope {
                Some(scope) if !scope.covers(rel) => Err(GuardError::OutOfScope { path: shown.to_owned() }),
                _ => Ok(()),
            },
        }
    }

    /// Refuses changing `rel`: deny and readonly rules both apply, to `rel`
    /// and every directory above it, and readonly also to a directory whose
    /// contents it covers.
    pub(crate) fn check_write(&self, rel: &Path, shown: &str) -> Result<(), GuardError> {
        self.check_read(rel, shown)?;
        if let Some(glob) = self.rules.readonly.first_match_within_in(rel, self.outer) {
            return Err(protected(shown, Rule::ReadOnly, glob));
        }
        self.check_write_contents(rel, shown)
    }

    /// Like [`InRoot::check_write`] for an entry met while scanning a
    /// directory that passed `check_write` already, top-down: the
    /// directories above `rel` were checked, so only `rel` itself is.
    pub(crate) fn check_write_entry(&self, rel: &Path, shown: &str) -> Result<(), GuardError> {
        if let Some(glob) = self.rules.deny.first_match_in(rel, self.outer) {
            return Err(protected(shown, Rule::Deny, glob));
        }
        if let Some(glob) = self.rules.readonly.first_match_in(rel, self.outer) {
            return Err(protected(shown, Rule::ReadOnly, glob));
        }
        self.check_write_contents(rel, shown)
    }

    /// Refuses changing a directory whose contents a readonly rule covers
    /// (in this root, or seen from a root that contains it: the nested
    /// root itself may be such a directory).
    fn check_write_contents(&self, rel: &Path, shown: &str) -> Result<(), GuardError> {
        let probe = |rel: &Path| self.rules.readonly.first_match(&rel.join(PROBE));
        let found = if rel.as_os_str().is_empty() { None } else { probe(rel) };
        match found.or_else(|| self.outer.iter().find_map(|p| probe(&p.join(rel)))) {
            Some(glob) => Err(protected(shown, Rule::ReadOnly, glob)),
            None => Ok(()),
        }
    }
}

/// Path globs that a capability token confines one call to. A call is
/// confined by working through a scoped view of the sandbox
/// ([`Sandbox::scoped`](crate::Sandbox::scoped)), whichever thread does
/// the work; every operation checks its
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
    fn scope_confines_reads_and_writes() {
        let r = Rules::none();
        let scope = Scope::new(&["notes/**".to_string(), "todo.txt".to_string()]).unwrap();
        let scoped = r.in_root(&[]).scoped(Some(&scope));
        assert!(scoped.check_write(Path::new("notes/a/b.txt"), "x").is_ok());
        assert!(scoped.check_read(Path::new("todo.txt"), "x").is_ok());
        let e = scoped.check_write(Path::new("src/main.rs"), "src/main.rs").unwrap_err();
        assert!(matches!(e, GuardError::OutOfScope { .. }) && e.is_refusal(), "{e}");
        assert!(r.in_root(&[]).check_write(Path::new("src/main.rs"), "x").is_ok(), "unscoped rules do not confine");
    }

    #[test]
    fn default_deny_rules() {
        let r = rules();
        for denied in [".env", "a/b/.env", ".env.local", "x/server.pem", "k.key", "home/.ssh/id_rsa.pub", "id_ed25519"]
        {
            assert!(r.in_root(&[]).check_read(Path::new(denied), denied).is_err(), "{denied}");
        }
        for fine in ["env", "a/.envrc", "notes.txt", "keys/readme", "src/key.rs", ".git/config"] {
            assert!(r.in_root(&[]).check_read(Path::new(fine), fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn readonly_covers_the_directory_and_its_contents() {
        let r = rules();
        for ro in [".git", ".git/config", ".git/hooks/pre-commit"] {
            let e = r.in_root(&[]).check_write(Path::new(ro), ro).unwrap_err();
            assert!(e.to_string().contains("paths.readonly"), "{e}");
        }
        for fine in ["src/.git.txt", "git/x", "a/.gitignore"] {
            assert!(r.in_root(&[]).check_write(Path::new(fine), fine).is_ok(), "{fine}");
        }
        // The root itself is not covered by `.git/**`.
        assert!(r.in_root(&[]).check_write(Path::new(""), ".").is_ok());
    }

    #[test]
    fn a_rule_matching_a_directory_covers_its_contents() {
        let r = rules();
        for inside in [".env/bin/activate", "a/keys.pem/cert", "home/id_rsa.d/x"] {
            assert!(r.in_root(&[]).check_read(Path::new(inside), inside).is_err(), "{inside}");
            assert!(r.in_root(&[]).check_write(Path::new(inside), inside).is_err(), "{inside}");
        }
        // The entry check looks at the entry alone (its parents were checked).
        assert!(r.in_root(&[]).check_write_entry(Path::new(".env/bin"), "x").is_ok());
        assert!(r.in_root(&[]).check_write_entry(Path::new("a/.env"), "x").is_err());
        assert!(r.in_root(&[]).check_write_entry(Path::new(".git"), "x").is_err());
    }

    #[test]
    fn a_nested_root_keeps_the_protections_of_the_roots_around_it() {
        // The defaults of the config: every repository's `.git`, and `.env` anywhere.
        let r = Rules::new(&["**/.git/**".to_string()], &["**/.env".to_string()]).unwrap();
        // A root at `x/.git` inside another: `config` there is `x/.git/config`.
        let outer = [PathBuf::from("x/.git")];
        let inner = r.in_root(&outer);
        for path in ["config", "hooks/pre-commit", "new-file"] {
            let e = inner.check_write(Path::new(path), path).unwrap_err();
            assert!(e.to_string().contains("paths.readonly"), "{path}: {e}");
            assert!(inner.check_write_entry(Path::new(path), path).is_err(), "{path}");
        }
        assert!(inner.check_read(Path::new("config"), "config").is_ok(), "readonly still reads");
        // Seen from the outer root, the nested root's own anchored rules
        // still apply inside it, and the outer's deny rules too.
        let a = [PathBuf::from("a")];
        assert!(r.in_root(&a).is_denied(Path::new(".env")));
        let anchored = Rules::new(&[], &["secrets/**".to_string()]).unwrap();
        let secrets = [PathBuf::from("secrets")];
        let nested = anchored.in_root(&secrets);
        assert!(nested.check_read(Path::new("token.txt"), "token.txt").is_err());
        assert!(nested.is_denied(Path::new("token.txt")));
        assert!(anchored.in_root(&[]).check_read(Path::new("token.txt"), "token.txt").is_ok());
    }
}
