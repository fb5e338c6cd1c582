//! The sandbox and the operations tools perform through it.

use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt};

use crate::error::{GuardError, io_error};
use crate::resolve::{Kind, Last, Resolved, lossy};
use crate::rules::InRoot;
use crate::rules::{Rules, Scope};

/// The most entries a listing, tree, search or recursive check visits.
pub const MAX_ENTRIES: usize = 100_000;
/// The deepest a tree walk, search or recursive check descends.
pub const MAX_DEPTH: usize = 256;

/// One allowed root directory, opened once.
#[derive(Debug)]
pub(crate) struct Root {
    /// Canonical absolute path (symlinks resolved at start-up).
    pub host: PathBuf,
    /// The path as configured, made absolute (may differ through symlinks).
    pub given: PathBuf,
    /// The handle every operation goes through.
    pub dir: Dir,
}

/// The roots, the protected-path rules and the read cap.
///
/// See the crate documentation for the guarantee it keeps.
///
/// A call confined to a capability token's paths works through a scoped
/// view, [`Sandbox::scoped`]: a sandbox like this one (the same roots,
/// opened once, and rules) whose every operation also checks its resolved
/// target against the scope. The scope is a value, not a setting of the
/// thread, so work moved to another thread stays confined.
#[derive(Debug)]
pub struct Sandbox {
    pub(crate) roots: Arc<[Root]>,
    pub(crate) rules: Arc<Rules>,
    /// For each root, its path relative to every other root that contains
    /// it: those roots' protected paths apply inside it too.
    outer: Arc<[Vec<PathBuf>]>,
    max_read: u64,
    /// The paths this view is confined to (`None`: the roots).
    scope: Option<Arc<Scope>>,
}

/// A directory entry, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's name.
    pub name: String,
    /// What it is (a symlink is reported as such, never followed).
    pub kind: EntryKind,
    /// Size in bytes; `None` for a symlink, whose own size is the length of
    /// its target's path, which says something about where it points
    /// (possibly outside the roots), and nothing about what is there.
    pub size: Option<u64>,
}

/// What a directory entry is, without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (socket, fifo, device).
    Other,
}

/// Metadata of a file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Size in bytes.
    pub size: u64,
    /// Creation time, where the filesystem records it.
    pub created: Option<SystemTime>,
    /// Last modification.
    pub modified: Option<SystemTime>,
    /// Last access.
    pub accessed: Option<SystemTime>,
    /// A directory?
    pub is_dir: bool,
    /// A regular file?
    pub is_file: bool,
    /// Permission bits (`0o644`).
    pub mode: u32,
}

/// One entry met by [`Sandbox::walk`].
#[derive(Debug)]
pub struct WalkEntry<'a> {
    /// Path relative to the walk's base, `/`-separated.
    pub rel: &'a str,
    /// Its name.
    pub name: &'a str,
    /// What it is.
    pub kind: EntryKind,
    /// Depth below the base (1 for the base's children).
    pub depth: usize,
}

/// Options of [`Sandbox::open`].
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Protected paths.
    pub rules: Rules,
    /// The read cap in bytes.
    pub max_read: u64,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How [`Sandbox::open_file`] treats a file larger than the read cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    /// Refuse it (a whole-file read).
    Refuse,
    /// Open it; the caller reads at most the cap (head, tail).
    Bounded,
}

impl Sandbox {
    /// Opens every root once. A root that does not exist or is not a
    /// directory is an error naming it.
    pub fn open(roots: &[PathBuf], options: SandboxOptions) -> Result<Sandbox, OpenError> {
        if roots.is_empty() {
            return Err(OpenError::NoRoot);
        }
        let cwd = std::env::current_dir().map_err(|e| OpenError::Root { path: PathBuf::from("."), source: e })?;
        let mut opened = Vec::with_capacity(roots.len());
        for given in roots {
            let given = cwd.join(given);
            // Opening the roots is the one place that uses ambient authority.
            let host = std::fs::canonicalize(&given).map_err(|e| OpenError::Root { path: given.clone(), source: e })?;
            let dir = Dir::open_ambient_dir(&host, ambient_authority())
                .map_err(|e| OpenError::Root { path: given.clone(), source: e })?;
            if !dir.dir_metadata().map_err(|e| OpenError::Root { path: given.clone(), source: e })?.is_dir() {
                return Err(OpenError::Root { path: given, source: io::Error::from(io::ErrorKind::NotADirectory) });
            }
            if opened.iter().any(|r: &Root| r.host == host) {
                continue;
            }
            opened.push(Root { host, given, dir });
        }
        let outer: Arc<[Vec<PathBuf>]> = opened
            .iter()
            .map(|inner| {
                let others = opened.iter().filter(|o| o.host != inner.host);
                others.filter_map(|o| inner.host.strip_prefix(&o.host).ok().map(Path::to_path_buf)).collect()
            })
            .collect();
        Ok(Sandbox {
            roots: opened.into(),
            rules: Arc::new(options.rules),
            outer,
            max_read: options.max_read,
            scope: None,
        })
    }

    /// This sandbox confined to `scope` (`None`: not confined): the same
    /// roots and rules, and every operation also refuses a resolved target
    /// outside the scope ([`GuardError::OutOfScope`]). Cheap: nothing is
    /// opened or copied.
    pub fn scoped(&self, scope: Option<Arc<Scope>>) -> Sandbox {
        Sandbox {
            roots: self.roots.clone(),
            rules: self.rules.clone(),
            outer: self.outer.clone(),
            max_read: self.max_read,
            scope,
        }
    }

    /// The roots that lie inside another root, each with the root it lies
    /// in: every protection of the outer root applies inside the inner one
    /// (a nested root never lifts one), which the operator may not expect.
    pub fn nested_roots(&self) -> Vec<(&Path, &Path)> {
        let mut out = Vec::new();
        for (inner, outer) in self.roots.iter().zip(self.outer.iter()) {
            for prefix in outer {
                if let Some(o) = self.roots.iter().find(|o| o.host.join(prefix) == inner.host) {
                    out.push((inner.host.as_path(), o.host.as_path()));
                }
            }
        }
        out
    }

    /// The protected-path rules as they apply below root `root`.
    pub(crate) fn rules_in(&self, root: usize) -> InRoot<'_> {
        self.rules.in_root(&self.outer[root]).scoped(self.scope.as_deref())
    }

    /// The roots, as canonical absolute paths, the first one first.
    pub fn roots(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(|r| r.host.as_path())
    }

    /// The read cap in bytes.
    pub fn max_read(&self) -> u64 {
        self.max_read
    }

    /// The absolute host path of what `input` resolves to (for results that
    /// name files, e.g. search hits). It lies inside a root by construction.
    pub fn display_path(&self, input: &str) -> Result<PathBuf, GuardError> {
        let r = self.resolve(input, Last::FollowMaybeMissing)?;
        Ok(self.host_path(&r))
    }

    /// Opens the directory `input` resolves to as a handle, with its host
    /// path, for use as a child process's working directory: the deny rules
    /// (and a token's scope) apply as for a listing. The handle stays bound
    /// to that directory whatever is renamed or swapped afterwards, so a
    /// caller that makes a child enter *the handle* (e.g. through
    /// `/proc/self/fd/N`) cannot be redirected by a symlink swapped in after
    /// this check. The host path is only a name for it, valid at the time
    /// of the call.
    pub fn open_dir_handle(&self, input: &str) -> Result<(Dir, PathBuf), GuardError> {
        let (dir, rel, root) = self.open_dir_in_root(input, "opening")?;
        Ok((dir, under(&self.roots[root].host, &rel)))
    }

    /// Checks a path that something else (a program run by
    /// `execute_command`) will open: it must lead inside a root, through
    /// symlinks that stay inside the roots, and not to a denied path (nor
    /// outside a token's scope). It need not exist, nor its parents (but
    /// `..` after a missing directory is refused). A relative `input` is
    /// taken relative to `base` (an absolute path, normally a directory
    /// inside a root, e.g. the program's working directory); errors name
    /// `input` as given. Returns the host path it leads to.
    ///
    /// This is a check, not a use: whoever opens the path later resolves it
    /// again, so a symlink swapped in after the check is not caught.
    pub fn check_path(&self, base: &Path, input: &str) -> Result<PathBuf, GuardError> {
        let full;
        let path = if input.is_empty() || Path::new(input).is_absolute() {
            input
        } else {
            full = base.join(input);
            full.to_str().ok_or_else(|| GuardError::Invalid {
                path: crate::resolve::truncate(input),
                reason: "the base directory's path is not UTF-8",
            })?
        };
        let checked = (|| {
            let r = self.resolve(path, Last::CreateDirs)?;
            let mut rel = r.rel();
            rel.extend(&r.tail);
            self.rules_in(r.root).check_read(&rel, path)?;
            Ok(under(&self.roots[r.root].host, &rel))
        })();
        checked.map_err(|e: GuardError| if path == input { e } else { e.shown_as(input) })
    }

    fn host_path(&self, r: &Resolved<'_>) -> PathBuf {
        self.roots[r.root].host.join(r.rel())
    }

    /// Reads a whole file, up to the read cap.
    pub fn read(&self, input: &str) -> Result<Vec<u8>, GuardError> {
        let (mut file, size) = self.open_file(input, Cap::Refuse)?;
        let mut buf = Vec::with_capacity(size as usize);
        // The file may grow after the size check: never read past the cap.
        (&mut file).take(self.max_read + 1).read_to_end(&mut buf).map_err(|e| io_error("reading", input, e))?;
        if buf.len() as u64 > self.max_read {
            return Err(GuardError::TooLarge { path: input.to_owned(), size: buf.len() as u64, limit: self.max_read });
        }
        Ok(buf)
    }

    /// Reads the first `lines` lines (reading at most the read cap, so it
    /// works on files larger than the cap).
    pub fn read_head(&self, input: &str, lines: usize) -> Result<Vec<u8>, GuardError> {
        let (file, _) = self.open_file(input, Cap::Bounded)?;
        let mut out = Vec::new();
        let mut reader = io::BufReader::new(file.take(self.max_read));
        let mut seen = 0;
        while seen < lines {
            let n = io::BufRead::read_until(&mut reader, b'\n', &mut out).map_err(|e| io_error("reading", input, e))?;
            if n == 0 {
                break;
            }
            seen += 1;
        }
        if out.last() == Some(&b'\n') {
            out.pop();
        }
        Ok(out)
    }

    /// Reads the last `lines` lines (reading at most the read cap, so it
    /// works on files larger than the cap).
    pub fn read_tail(&self, input: &str, lines: usize) -> Result<Vec<u8>, GuardError> {
        let (mut file, size) = self.open_file(input, Cap::Bounded)?;
        let start = size.saturating_sub(self.max_read);
        file.seek(SeekFrom::Start(start)).map_err(|e| io_error("reading", input, e))?;
        let mut buf = Vec::new();
        file.take(self.max_read).read_to_end(&mut buf).map_err(|e| io_error("reading", input, e))?;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let mut cut = 0;
        let mut seen = 0;
        for (i, b) in body.iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == lines {
                    cut = i + 1;
                    break;
                }
            }
        }
        if lines == 0 {
            cut = body.len();
        }
        Ok(body[cut..].to_vec())
    }

    /// Opens a regular file for reading; returns it with its size, after
    /// refusing denied paths, anything but a regular file, and (with
    /// [`Cap::Refuse`]) files over the read cap.
    fn open_file(&self, input: &str, cap: Cap) -> Result<(cap_std::fs::File, u64), GuardError> {
        let not_a_file = || GuardError::Io { op: "reading", path: input.to_owned(), kind: io::ErrorKind::InvalidInput };
        let r = self.resolve(input, Last::Follow)?;
        self.rules_in(r.root).check_read(&r.rel(), input)?;
        let Some(name) = &r.name else {
            return Err(GuardError::IsADirectory { path: input.to_owned() });
        };
        match r.kind {
            Kind::Dir => return Err(GuardError::IsADirectory { path: input.to_owned() }),
            // A FIFO would block `open` until a writer comes; a device
            // could be anything. Neither is opened.
            Kind::Other => return Err(not_a_file()),
            _ => {}
        }
        // Non-blocking, in case a FIFO was swapped in since the lookup
        // (regular files ignore the flag).
        let file = r
            .dir
            .open_with(
                name,
                OpenOptions::new()
                    .read(true)
                    .follow(FollowSymlinks::No)
                    .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32),
            )
            .map_err(|e| io_error("opening", input, e))?;
        let meta = file.metadata().map_err(|e| io_error("reading", input, e))?;
        if meta.is_dir() {
            return Err(GuardError::IsADirectory { path: input.to_owned() });
        }
        if !meta.is_file() {
            return Err(not_a_file());
        }
        if cap == Cap::Refuse && meta.len() > self.max_read {
            return Err(GuardError::TooLarge { path: input.to_owned(), size: meta.len(), limit: self.max_read });
        }
        Ok((file, meta.len()))
    }

    /// Writes a file atomically: a temporary file in the same directory,
    /// flushed to disk, then renamed over the target. An existing file keeps
    /// its permission bits. Returns whether the file was created.
    pub fn write(&self, input: &str, contents: &[u8]) -> Result<bool, GuardError> {
        let r = self.resolve(input, Last::FollowMaybeMissing)?;
        self.rules_in(r.root).check_write(&r.rel(), input)?;
        self.write_resolved(&r, input, contents)
    }

    /// [`Sandbox::write`] on a resolved, checked path.
    pub(crate) fn write_resolved(&self, r: &Resolved<'_>, input: &str, contents: &[u8]) -> Result<bool, GuardError> {
        let name = self.mutable_name(r, input, "overwrite")?;
        let mode = match r.kind {
            Kind::Dir => return Err(GuardError::IsADirectory { path: input.to_owned() }),
            Kind::Missing => None,
            _ => Some(
                r.dir.symlink_metadata(name).map_err(|e| io_error("writing", input, e))?.permissions().mode() & 0o7777,
            ),
        };
        let tmp = self.write_temp(&r.dir, name, input, contents, mode)?;
        let result = r.dir.rename(&tmp, &r.dir, name).map_err(|e| io_error("writing", input, e));
        if result.is_err() {
            let _ = r.dir.remove_file(&tmp);
        }
        result.map(|()| r.kind == Kind::Missing)
    }

    /// Writes `contents` to a new temporary file next to `name` in `dir`,
    /// with `mode` (0644 when `None`), flushed to disk. Returns its name.
    pub(crate) fn write_temp(
        &self,
        dir: &Dir,
        name: &OsString,
        input: &str,
        contents: &[u8],
        mode: Option<u32>,
    ) -> Result<OsString, GuardError> {
        let tmp = temp_name(name);
        let result = (|| {
            let mut file = dir
                .open_with(
                    &tmp,
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .follow(FollowSymlinks::No)
                        .mode(mode.unwrap_or(0o644)),
                )
                .map_err(|e| io_error("writing", input, e))?;
            file.write_all(contents).map_err(|e| io_error("writing", input, e))?;
            if let Some(mode) = mode {
                file.set_permissions(Permissions::from_mode(mode)).map_err(|e| io_error("writing", input, e))?;
            }
            file.sync_data().map_err(|e| io_error("writing", input, e))
        })();
        match result {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = dir.remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Creates a directory and any missing parents (`mkdir -p`). Succeeds
    /// when it exists already. Every directory it would create is checked
    /// against the rules before the first one is made.
    pub fn create_dir_all(&self, input: &str) -> Result<(), GuardError> {
        let r = self.resolve(input, Last::CreateDirs)?;
        let mut rel = r.rel();
        match r.kind {
            Kind::Dir => return self.rules_in(r.root).check_read(&rel, input),
            Kind::Missing => {}
            _ => return Err(GuardError::AlreadyExists { path: input.to_owned() }),
        }
        let name = self.mutable_name(&r, input, "create")?;
        let rules = self.rules_in(r.root);
        rules.check_write(&rel, input)?;
        for n in &r.tail {
            rel.push(n);
            rules.check_write(&rel, input)?;
        }
        let create = |dir: &Dir, name: &OsString| -> Result<Dir, GuardError> {
            match dir.create_dir(name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("creating", input, e)),
            }
            dir.open_dir_nofollow(name).map_err(|e| io_error("creating", input, e))
        };
        let mut dir = create(&r.dir, name)?;
        for n in &r.tail {
            dir = create(&dir, n).map_err(|e| GuardError::PartlyDone {
                path: input.to_owned(),
                what: format!("creating it stopped at `{}` ({e}); the directories above were created", lossy(n)),
            })?;
        }
        Ok(())
    }

    /// Lists a directory; entries the deny rules match are left out.
    pub fn list(&self, input: &str) -> Result<Vec<Entry>, GuardError> {
        let (dir, rel, root) = self.open_dir_in_root(input, "listing")?;
        let rules = self.rules_in(root);
        let mut out = Vec::new();
        for entry in dir.entries().map_err(|e| io_error("listing", input, e))? {
            let entry = entry.map_err(|e| io_error("listing", input, e))?;
            let name = entry.file_name();
            if rules.is_denied(&rel.join(&name)) {
                continue;
            }
            if out.len() >= MAX_ENTRIES {
                return Err(GuardError::TooManyEntries { path: input.to_owned(), limit: MAX_ENTRIES });
            }
            let meta = entry.metadata().map_err(|e| io_error("listing", input, e))?;
            let kind = entry_kind(meta.file_type());
            let size = (kind != EntryKind::Symlink).then(|| meta.len());
            out.push(Entry { name: lossy(&name).into_owned(), kind, size });
        }
        Ok(out)
    }

    /// Walks the tree below a directory depth-first, without following
    /// symlinks. Entries the deny rules match are neither visited nor
    /// entered. `visit` returns whether to descend into a directory.
    pub fn walk(&self, input: &str, mut visit: impl FnMut(&WalkEntry<'_>) -> bool) -> Result<(), GuardError> {
        let (dir, rel, root) = self.open_dir_in_root(input, "listing")?;
        let mut count = 0usize;
        self.walk_dir(input, &dir, (self.rules_in(root), &rel), "", 1, &mut count, &mut visit)
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_dir(
        &self,
        input: &str,
        dir: &Dir,
        (rules, root_rel): (InRoot<'_>, &Path),
        prefix: &str,
        depth: usize,
        count: &mut usize,
        visit: &mut dyn FnMut(&WalkEntry<'_>) -> bool,
    ) -> Result<(), GuardError> {
        if depth > MAX_DEPTH {
            return Err(GuardError::TooDeep { path: input.to_owned(), limit: MAX_DEPTH });
        }
        let mut entries: Vec<(OsString, EntryKind)> = Vec::new();
        for entry in dir.entries().map_err(|e| io_error("listing", input, e))? {
            let entry = entry.map_err(|e| io_error("listing", input, e))?;
            let kind = entry_kind(entry.file_type().map_err(|e| io_error("listing", input, e))?);
            entries.push((entry.file_name(), kind));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in entries {
            let text = lossy(&name);
            let rel = if prefix.is_empty() { text.to_string() } else { format!("{prefix}/{text}") };
            if rules.is_denied(&root_rel.join(&rel)) {
                continue;
            }
            *count += 1;
            if *count > MAX_ENTRIES {
                return Err(GuardError::TooManyEntries { path: input.to_owned(), limit: MAX_ENTRIES });
            }
            let descend = visit(&WalkEntry { rel: &rel, name: &text, kind, depth });
            if descend && kind == EntryKind::Dir {
                match dir.open_dir_nofollow(&name) {
                    Ok(sub) => self.walk_dir(input, &sub, (rules, root_rel), &rel, depth + 1, count, visit)?,
                    // Vanished or replaced since it was listed: skip it.
                    Err(_) => continue,
                }
            }
        }
        Ok(())
    }

    /// Opens a directory for reading its entries: the handle, its path
    /// relative to its root, and the root's index.
    fn open_dir_in_root(&self, input: &str, op: &'static str) -> Result<(Dir, PathBuf, usize), GuardError> {
        let r = self.resolve(input, Last::Follow)?;
        let rel = r.rel();
        self.rules_in(r.root).check_read(&rel, input)?;
        if r.kind != Kind::Dir {
            return Err(GuardError::NotDirectory { path: input.to_owned() });
        }
        let dir = match &r.name {
            Some(n) => r.dir.open_dir_nofollow(n),
            None => r.dir.try_clone(),
        }
        .map_err(|e| io_error(op, input, e))?;
        Ok((dir, rel, r.root))
    }

    /// Metadata of a file or directory (symlinks inside the roots followed).
    pub fn info(&self, input: &str) -> Result<Info, GuardError> {
        let r = self.resolve(input, Last::Follow)?;
        self.rules_in(r.root).check_read(&r.rel(), input)?;
        let meta = match &r.name {
            Some(n) => r.dir.symlink_metadata(n),
            None => r.dir.dir_metadata(),
        }
        .map_err(|e| io_error("reading metadata of", input, e))?;
        // The resolver followed every symlink: one here was swapped in
        // since, and its size would be its target's path length.
        if meta.is_symlink() {
            return Err(GuardError::Changed { path: input.to_owned() });
        }
        Ok(Info {
            size: meta.len(),
            created: meta.created().ok().map(|t| t.into_std()),
            modified: meta.modified().ok().map(|t| t.into_std()),
            accessed: meta.accessed().ok().map(|t| t.into_std()),
            is_dir: meta.is_dir(),
            is_file: meta.is_file(),
            mode: meta.permissions().mode() & 0o7777,
        })
    }

    /// Moves a file or directory; refuses to replace an existing destination
    /// (atomically: `renameat2(RENAME_NOREPLACE)`). A symlink is moved
    /// itself, not its target.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), GuardError> {
        let src = self.resolve(from, Last::NoFollow)?;
        let src_name = self.mutable_name(&src, from, "move")?;
        if src.kind == Kind::Missing {
            return Err(GuardError::NotFound { path: from.to_owned() });
        }
        let dst = self.resolve(to, Last::NoFollow)?;
        let dst_name = self.mutable_name(&dst, to, "replace")?;
        if dst.kind != Kind::Missing {
            return Err(GuardError::AlreadyExists { path: to.to_owned() });
        }
        // `to` ending in `/` names a directory: only a directory goes there.
        if src.kind != Kind::Dir && crate::resolve::names_a_directory(to.as_bytes()) {
            return Err(GuardError::NotDirectory { path: to.to_owned() });
        }
        let (src_rel, dst_rel) = (src.rel(), dst.rel());
        let (src_rules, dst_rules) = (self.rules_in(src.root), self.rules_in(dst.root));
        src_rules.check_write(&src_rel, from)?;
        dst_rules.check_write(&dst_rel, to)?;
        if src.kind == Kind::Dir {
            self.check_subtree(&src, from, |rel| {
                src_rules.check_write_entry(&src_rel.join(rel), &format!("{from}/{rel}"))?;
                dst_rules.check_write_entry(&dst_rel.join(rel), &format!("{to}/{rel}"))
            })?;
        }
        rustix::fs::renameat_with(&*src.dir, src_name, &*dst.dir, dst_name, rustix::fs::RenameFlags::NOREPLACE)
            .map_err(|e| io_error("moving", from, e.into()))
    }

    /// Deletes a file, a symlink (not its target), or a directory (with its
    /// contents only when `recursive`). Refused when anything inside is
    /// protected.
    pub fn remove(&self, input: &str, recursive: bool) -> Result<(), GuardError> {
        let r = self.resolve(input, Last::NoFollow)?;
        self.check_removal(&r, input, recursive)?;
        let name = self.mutable_name(&r, input, "delete")?;
        match r.kind {
            // Entry by entry: a failure midway leaves part of it deleted.
            Kind::Dir if recursive => r.dir.remove_dir_all(name).map_err(|e| GuardError::PartlyDone {
                path: input.to_owned(),
                what: format!("deleting it stopped midway ({}); some of its contents may be gone", e.kind()),
            }),
            Kind::Dir => r.dir.remove_dir(name).map_err(|e| io_error("deleting", input, e)),
            _ => r.dir.remove_file_or_symlink(name).map_err(|e| io_error("deleting", input, e)),
        }
    }

    /// Checks that the resolved `r` exists and may be deleted: the rules
    /// allow it and, for a recursive delete, everything inside it.
    pub(crate) fn check_removal(&self, r: &Resolved<'_>, input: &str, recursive: bool) -> Result<(), GuardError> {
        self.mutable_name(r, input, "delete")?;
        let rel = r.rel();
        let rules = self.rules_in(r.root);
        rules.check_write(&rel, input)?;
        match r.kind {
            Kind::Missing => Err(GuardError::NotFound { path: input.to_owned() }),
            Kind::Dir if recursive => {
                self.check_subtree(r, input, |sub| rules.check_write_entry(&rel.join(sub), &format!("{input}/{sub}")))
            }
            _ => Ok(()),
        }
    }

    /// Runs `check` on every entry below a resolved directory, *including*
    /// entries the deny rules hide from listings.
    fn check_subtree(
        &self,
        r: &Resolved<'_>,
        input: &str,
        check: impl Fn(&str) -> Result<(), GuardError>,
    ) -> Result<(), GuardError> {
        let Some(name) = &r.name else {
            return Err(GuardError::RootItself { path: input.to_owned(), op: "change" });
        };
        self.check_tree(&r.dir, name, input, check)
    }

    /// Runs `check` on every entry below the directory `name` of `parent`.
    pub(crate) fn check_tree(
        &self,
        parent: &Dir,
        name: &std::ffi::OsStr,
        input: &str,
        check: impl Fn(&str) -> Result<(), GuardError>,
    ) -> Result<(), GuardError> {
        let dir = parent.open_dir_nofollow(name).map_err(|e| io_error("reading", input, e))?;
        let mut stack = vec![(dir, String::new(), 1usize)];
        let mut count = 0usize;
        while let Some((dir, prefix, depth)) = stack.pop() {
            for entry in dir.entries().map_err(|e| io_error("reading", input, e))? {
                let entry = entry.map_err(|e| io_error("reading", input, e))?;
                let name = entry.file_name();
                let text = lossy(&name);
                let rel = if prefix.is_empty() { text.to_string() } else { format!("{prefix}/{text}") };
                check(&rel)?;
                count += 1;
                if count > MAX_ENTRIES {
                    return Err(GuardError::TooManyEntries { path: input.to_owned(), limit: MAX_ENTRIES });
                }
                if depth > MAX_DEPTH {
                    return Err(GuardError::TooDeep { path: input.to_owned(), limit: MAX_DEPTH });
                }
                let is_dir = entry.file_type().map_err(|e| io_error("reading", input, e))?.is_dir();
                if is_dir {
                    let sub = dir.open_dir_nofollow(&name).map_err(|e| io_error("reading", input, e))?;
                    stack.push((sub, rel, depth + 1));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn mutable_name<'r>(
        &self,
        r: &'r Resolved<'_>,
        input: &str,
        op: &'static str,
    ) -> Result<&'r OsString, GuardError> {
        r.name.as_ref().ok_or_else(|| GuardError::RootItself { path: input.to_owned(), op })
    }
}

/// `host/rel`, without a trailing `/` when `rel` is empty.
fn under(host: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() { host.to_path_buf() } else { host.join(rel) }
}

pub(crate) fn temp_name(name: &OsString) -> OsString {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp = OsString::from(".");
    // Keep the name short enough for NAME_MAX even for long originals.
    let text = lossy(name);
    let short: String = text.chars().take(100).collect();
    tmp.push(short);
    tmp.push(format!(".mcpsec-{}-{n}.tmp", std::process::id()));
    tmp
}

fn entry_kind(ft: cap_std::fs::FileType) -> EntryKind {
    match Kind::of(ft) {
        Kind::Dir => EntryKind::Dir,
        Kind::File => EntryKind::File,
        Kind::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

/// Why the sandbox could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No root was given.
    #[error(
        "no root directory given; pass one with `--root DIR` (mcpsec never defaults to `/` or your home directory)"
    )]
    NoRoot,
    /// A root could not be opened.
    #[error("cannot use `{}` as a root: {source}", path.display())]
    Root {
        /// The root as given.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scoped_call_stays_scoped_when_its_work_runs_on_another_thread() {
        let dir = tempfile::tempdir().unwrap();
        let options = SandboxOptions { rules: Rules::none(), max_read: 1 << 20 };
        let sb = Sandbox::open(&[dir.path().to_path_buf()], options).unwrap();
        sb.create_dir_all("notes").unwrap();
        sb.write("notes/a.txt", b"a").unwrap();
        sb.write("secret.txt", b"s").unwrap();
        let scoped = sb.scoped(Some(Arc::new(Scope::new(&["notes/**".to_owned()]).unwrap())));
        std::thread::spawn(move || {
            assert_eq!(scoped.read("notes/a.txt").unwrap(), b"a");
            let e = scoped.read("secret.txt").unwrap_err();
            assert!(matches!(e, GuardError::OutOfScope { .. }), "{e}");
            let e = scoped.write("secret.txt", b"x").unwrap_err();
            assert!(matches!(e, GuardError::OutOfScope { .. }), "{e}");
            let e = scoped.remove("secret.txt", false).unwrap_err();
            assert!(matches!(e, GuardError::OutOfScope { .. }), "{e}");
        })
        .join()
        .unwrap();
        assert_eq!(sb.read("secret.txt").unwrap(), b"s", "the sandbox it was made from is not confined");
    }
}
