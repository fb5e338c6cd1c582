//! The resolver: walks a path one component at a time through directory
//! handles, never letting the kernel follow a symlink it has not inspected.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::ops::Deref;
use std::path::{Component, Path, PathBuf};

use cap_fs_ext::DirExt;
use cap_std::fs::Dir;

use crate::error::{GuardError, io_error};
use crate::sandbox::Sandbox;

/// The most symlinks one resolution follows (as Linux' `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;
/// The longest path accepted from a caller, in bytes (Linux' `PATH_MAX`).
pub(crate) const MAX_PATH_LEN: usize = 4096;

/// A directory handle: a root's (borrowed) or one opened on the way.
#[derive(Debug)]
pub(crate) enum DirRef<'s> {
    Root(&'s Dir),
    Owned(Dir),
}

impl Deref for DirRef<'_> {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        match self {
            DirRef::Root(d) => d,
            DirRef::Owned(d) => d,
        }
    }
}

/// What the resolver found at the last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Other,
    Missing,
}

impl Kind {
    pub(crate) fn of(ft: cap_std::fs::FileType) -> Kind {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

/// How to treat the last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Last {
    /// Follow a symlink (staying inside the roots); it must exist.
    Follow,
    /// Follow a symlink; it may be missing (something will be created).
    FollowMaybeMissing,
    /// Do not follow a symlink: the operation acts on the link itself.
    NoFollow,
    /// Follow symlinks; the last component and any directories before it
    /// may be missing (they are returned in [`Resolved::tail`]).
    CreateDirs,
}

/// A path resolved beneath a root.
#[derive(Debug)]
pub(crate) struct Resolved<'s> {
    /// Index of the root it lies in.
    pub root: usize,
    /// Handle of the directory that holds `name` (or is the target, if
    /// `name` is `None`).
    pub dir: DirRef<'s>,
    /// Path of `dir` relative to the root.
    pub dir_rel: PathBuf,
    /// The last component, `None` when the target is a root itself.
    pub name: Option<OsString>,
    /// What is at `name` (never `Symlink` unless resolved with `NoFollow`).
    pub kind: Kind,
    /// With [`Last::CreateDirs`]: the missing components after `name`.
    pub tail: Vec<OsString>,
}

impl Resolved<'_> {
    /// The resolved path relative to its root.
    pub(crate) fn rel(&self) -> PathBuf {
        match &self.name {
            Some(n) => self.dir_rel.join(n),
            None => self.dir_rel.clone(),
        }
    }
}

pub(crate) enum Step {
    Parent,
    Name(OsString),
}

impl Sandbox {
    /// Maps a caller's path to a root and the components below it, without
    /// touching the filesystem.
    pub(crate) fn locate(&self, input: &str) -> Result<(usize, VecDeque<Step>), GuardError> {
        let invalid = |reason| GuardError::Invalid { path: truncate(input), reason };
        if input.is_empty() {
            return Err(invalid("the path is empty (use `.` for the first root)"));
        }
        if input.len() > MAX_PATH_LEN {
            return Err(invalid("the path is longer than 4096 bytes"));
        }
        if input.contains('\0') {
            return Err(invalid("the path contains a NUL byte"));
        }
        let path = Path::new(input);
        let (root, below) = if path.is_absolute() {
            self.root_of_absolute(path).ok_or_else(|| GuardError::Outside { path: input.to_owned() })?
        } else {
            (0, path)
        };
        Ok((root, steps(below)))
    }

    /// Which root an absolute path lies in (the longest match), and the
    /// rest of it. Component-wise, so `/ws-evil` is not inside `/ws`.
    pub(crate) fn root_of_absolute<'p>(&self, path: &'p Path) -> Option<(usize, &'p Path)> {
        let mut best: Option<(usize, &Path, usize)> = None;
        for (i, root) in self.roots.iter().enumerate() {
            for prefix in [&root.host, &root.given] {
                if let Ok(rest) = path.strip_prefix(prefix) {
                    let len = prefix.as_os_str().len();
                    if best.is_none_or(|(_, _, l)| len > l) {
                        best = Some((i, rest, len));
                    }
                }
            }
        }
        best.map(|(i, rest, _)| (i, rest))
    }

    /// Resolves `input` beneath a root, following symlinks itself: each
    /// component is looked up with `lstat` and opened with `O_NOFOLLOW`
    /// through the handle of the directory before it, so a symlink swapped
    /// in between is refused by the kernel instead of followed. `..` moves
    /// back to the handle we came from and can never rise above the root.
    /// A symlink's target is resolved the same way from where it stands
    /// (relative) or from the root it names (absolute, inside a root);
    /// anything else is [`GuardError::Outside`].
    pub(crate) fn resolve(&self, input: &str, last: Last) -> Result<Resolved<'_>, GuardError> {
        let (mut root, mut pending) = self.locate(input)?;
        // The path as requested, read lexically: a denied name is refused
        // before anything is looked up, so its existence cannot be probed.
        let mut requested = PathBuf::new();
        for step in &pending {
            match step {
                Step::Name(n) => requested.push(n),
                Step::Parent => {
                    requested.pop();
                }
            }
        }
        self.rules_in(root).check_denied(&requested, input)?;
        // `a.txt/` and `a.txt/.` name a directory, though their steps are
        // those of `a.txt`.
        let mut dir_only = names_a_directory(input.as_bytes());
        let mut stack: Vec<Dir> = Vec::new();
        let mut names: Vec<OsString> = Vec::new();
        let mut links = 0usize;

        while let Some(step) = pending.pop_front() {
            let name = match step {
                Step::Parent => {
                    if names.pop().is_none() {
                        return Err(GuardError::Outside { path: input.to_owned() });
                    }
                    stack.pop();
                    continue;
                }
                Step::Name(name) => name,
            };
            let is_last = pending.is_empty();
            let dir: &Dir = stack.last().unwrap_or(&self.roots[root].dir);
            let kind = match dir.symlink_metadata(&name) {
                Ok(meta) => Kind::of(meta.file_type()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kind::Missing,
                Err(e) => return Err(io_error("resolving", input, e)),
            };
            match kind {
                Kind::Symlink if !(is_last && last == Last::NoFollow) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(GuardError::SymlinkLoop { path: input.to_owned() });
                    }
                    let target = dir.read_link_contents(&name).map_err(|e| io_error("resolving", input, e))?;
                    if is_last {
                        dir_only |= names_a_directory(target.as_os_str().as_encoded_bytes());
                    }
                    let mut rest = if target.is_absolute() {
                        let (r, below) = self
                            .root_of_absolute(&target)
                            .ok_or_else(|| GuardError::Outside { path: input.to_owned() })?;
                        root = r;
                        stack.clear();
                        names.clear();
                        steps(below)
                    } else {
                        steps(&target)
                    };
                    rest.extend(pending.drain(..));
                    pending = rest;
                }
                Kind::Dir if !is_last => {
                    // Nothing inside a denied directory is looked at (a
                    // symlink may have led here under another name). The
                    // directories above were checked on the way down, so
                    // only this one is matched; the first one below a root
                    // with all above it (an outer root's paths included).
                    let here: PathBuf = names.iter().chain(std::iter::once(&name)).collect();
                    let rules = self.rules_in(root);
                    if names.is_empty() {
                        rules.check_denied(&here, input)
                    } else {
                        rules.check_denied_entry(&here, input)
                    }?;
                    let next = dir.open_dir_nofollow(&name).map_err(|e| io_error("resolving", input, e))?;
                    stack.push(next);
                    names.push(name);
                }
                Kind::Missing if !is_last && last == Last::CreateDirs => {
                    let mut tail = Vec::with_capacity(pending.len());
                    for step in pending.drain(..) {
                        match step {
                            Step::Name(n) => tail.push(n),
                            Step::Parent => {
                                return Err(GuardError::Invalid {
                                    path: truncate(input),
                                    reason: "`..` after a directory that does not exist",
                                });
                            }
                        }
                    }
                    let dir_rel: PathBuf = names.iter().collect();
                    let dir = match stack.pop() {
                        Some(d) => DirRef::Owned(d),
                        None => DirRef::Root(&self.roots[root].dir),
                    };
                    return Ok(Resolved { root, dir, dir_rel, name: Some(name), kind, tail });
                }
                Kind::Missing if !is_last => {
                    return Err(GuardError::ParentNotFound { path: input.to_owned() });
                }
                Kind::Missing if last == Last::Follow => {
                    return Err(GuardError::NotFound { path: input.to_owned() });
                }
                Kind::File | Kind::Other | Kind::Symlink if !is_last => {
                    return Err(GuardError::NotADirectory { path: input.to_owned() });
                }
                // Only a directory; or nothing, where one may be made (or
                // moved to: `Sandbox::rename` checks what is moved); or a
                // symlink not followed, which is what a delete or a move acts
                // on however it is spelt (never what it names).
                _ if dir_only
                    && kind != Kind::Dir
                    && !(kind == Kind::Missing && matches!(last, Last::CreateDirs | Last::NoFollow))
                    && !(kind == Kind::Symlink && last == Last::NoFollow) =>
                {
                    return Err(GuardError::NotDirectory { path: input.to_owned() });
                }
                _ => {
                    let dir_rel: PathBuf = names.iter().collect();
                    let dir = match stack.pop() {
                        Some(d) => DirRef::Owned(d),
                        None => DirRef::Root(&self.roots[root].dir),
                    };
                    return Ok(Resolved { root, dir, dir_rel, name: Some(name), kind, tail: Vec::new() });
                }
            }
        }
        // Every component was consumed by `..`, `.` or a directory: the
        // target is a directory we hold open. Hand it over as "the
        // directory itself" by moving one level up when we can.
        match stack.pop() {
            None => Ok(Resolved {
                root,
                dir: DirRef::Root(&self.roots[root].dir),
                dir_rel: PathBuf::new(),
                name: None,
                kind: Kind::Dir,
                tail: Vec::new(),
            }),
            Some(_) => {
                let name = names.pop().unwrap_or_default();
                let dir_rel: PathBuf = names.iter().collect();
                let dir = match stack.pop() {
                    Some(d) => DirRef::Owned(d),
                    None => DirRef::Root(&self.roots[root].dir),
                };
                Ok(Resolved { root, dir, dir_rel, name: Some(name), kind: Kind::Dir, tail: Vec::new() })
            }
        }
    }
}

/// Whether a path names a directory whatever its last name is: it ends in
/// `/` or `/.` (steps drop both, so `a.txt/` would otherwise be `a.txt`).
pub(crate) fn names_a_directory(path: &[u8]) -> bool {
    path.ends_with(b"/") || path.ends_with(b"/.")
}

/// Splits a path into steps; `.` and the root prefix vanish.
fn steps(path: &Path) -> VecDeque<Step> {
    path.components()
        .filter_map(|c| match c {
            Component::ParentDir => Some(Step::Parent),
            Component::Normal(n) => Some(Step::Name(n.to_owned())),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// A path short enough to quote in a message.
pub(crate) fn truncate(input: &str) -> String {
    if input.len() <= 200 {
        return input.to_owned();
    }
    let mut end = 200;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &input[..end])
}

/// `name` as text for messages and globs.
pub(crate) fn lossy(name: &OsStr) -> std::borrow::Cow<'_, str> {
    name.to_string_lossy()
}
