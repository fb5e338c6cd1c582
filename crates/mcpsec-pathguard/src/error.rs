use std::io;

/// Which protected-path rule refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `paths.deny`: neither readable nor writable.
    Deny,
    /// `paths.readonly`: readable, never changed.
    ReadOnly,
}

/// Everything the path guard can refuse or fail with.
///
/// Every message names the path **as the caller gave it** and never anything
/// learned by resolving it: no symlink target, no host path outside a root,
/// not even whether something exists outside the roots.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The path, or a symlink on the way, leads outside every root.
    #[error(
        "refused: `{path}` leads outside the allowed directories. \
         To allow it, the operator can add the directory with `--root` (call list_allowed_directories to see them)"
    )]
    Outside {
        /// The path as given.
        path: String,
    },
    /// A protected-path rule matched the resolved path.
    #[error("refused: `{path}` is protected by the `{}` rule `{glob}` ({}). \
             To allow it, the operator can change [paths] in the config file",
            rule_key(*rule), rule_meaning(*rule))]
    Protected {
        /// The path as given (or the entry inside it that is protected).
        path: String,
        /// The rule.
        rule: Rule,
        /// The glob that matched.
        glob: String,
    },
    /// The resolved path is outside the capability token's `--path` globs.
    #[error(
        "refused: `{path}` is outside the paths the capability token covers. \
         To allow it, a human can grant a token whose --path covers it"
    )]
    OutOfScope {
        /// The path as given.
        path: String,
    },
    /// The path itself is not acceptable (empty, NUL byte, too long, …).
    #[error("refused: invalid path `{path}`: {reason}")]
    Invalid {
        /// The path as given (truncated when absurdly long).
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// The operation would change a root directory itself.
    #[error("refused: `{path}` is an allowed root directory itself, which tools may not {op}")]
    RootItself {
        /// The path as given.
        path: String,
        /// What was attempted.
        op: &'static str,
    },
    /// Nothing at that path.
    #[error("`{path}` does not exist")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// A directory on the way does not exist.
    #[error("the parent directory of `{path}` does not exist (create it with create_directory first)")]
    ParentNotFound {
        /// The path as given.
        path: String,
    },
    /// Something on the way is not a directory.
    #[error("`{path}`: a component of the path is not a directory")]
    NotADirectory {
        /// The path as given.
        path: String,
    },
    /// A file was expected.
    #[error("`{path}` is a directory, not a file")]
    IsADirectory {
        /// The path as given.
        path: String,
    },
    /// A directory was expected.
    #[error("`{path}` is not a directory")]
    NotDirectory {
        /// The path as given.
        path: String,
    },
    /// The destination exists.
    #[error("`{path}` already exists")]
    AlreadyExists {
        /// The path as given.
        path: String,
    },
    /// `delete_file` on a non-empty directory without `recursive`.
    #[error("`{path}` is a directory that is not empty; pass `recursive: true` to delete it with its contents")]
    DirectoryNotEmpty {
        /// The path as given.
        path: String,
    },
    /// The file is larger than the read cap.
    #[error(
        "`{path}` is {size} bytes, more than the read limit of {limit} bytes (use head or tail, or ask the operator to raise [limits] max_read)"
    )]
    TooLarge {
        /// The path as given.
        path: String,
        /// The file's size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// More entries than a listing, tree or search returns.
    #[error("`{path}` holds more than {limit} entries; narrow the path or add excludePatterns")]
    TooManyEntries {
        /// The path as given.
        path: String,
        /// The cap.
        limit: usize,
    },
    /// Directories nested deeper than a tree walk, search or recursive
    /// check descends.
    #[error(
        "`{path}` holds directories nested more than {limit} levels deep, deeper than mcpsec descends; \
         use a path further down the tree"
    )]
    TooDeep {
        /// The path as given.
        path: String,
        /// The deepest level descended.
        limit: usize,
    },
    /// Too many symlinks, or a cycle.
    #[error("`{path}`: too many levels of symbolic links")]
    SymlinkLoop {
        /// The path as given.
        path: String,
    },
    /// The filesystem changed under the operation (e.g. a directory was
    /// replaced by a symlink); nothing was done past that point.
    #[error("`{path}` changed while it was being accessed; nothing was done, try again")]
    Changed {
        /// The path as given.
        path: String,
    },
    /// What a destructive operation would remove could not be kept for
    /// undo; nothing was changed.
    #[error(
        "refused: `{path}` was left unchanged because what the call would remove could not be kept for undo \
         ({reason}). The operator can free room in the trash (`mcpsec trash purge`), raise [undo] max_size, \
         or turn undo off for this capability ([undo] disabled_for)"
    )]
    NotKept {
        /// The path as given.
        path: String,
        /// Why.
        reason: String,
    },
    /// What a destructive operation would remove is larger than the room
    /// the trash has for it; nothing was changed.
    #[error("refused: `{path}` was left unchanged: it is {size} bytes and the trash has room for {room}")]
    TooBigToKeep {
        /// The path as given.
        path: String,
        /// What would have to be kept.
        size: u64,
        /// The room there was.
        room: u64,
    },
    /// A restore would land somewhere other than where the object was kept
    /// from (a symlink planted on the way since).
    #[error("refused: `{path}` now leads elsewhere (a symlink on the way was planted since); nothing was restored")]
    Redirected {
        /// The path as given.
        path: String,
    },
    /// The operation failed after its first change: part of it was done
    /// (a recursive delete or `mkdir -p` that stopped midway, an old file
    /// that could not be put back). `what` says what is where now.
    #[error("`{path}`: {what}")]
    PartlyDone {
        /// The path as given.
        path: String,
        /// What was done, what failed, and where things are.
        what: String,
    },
    /// Any other I/O failure (the OS message is kept out on purpose).
    #[error("{op} `{path}` failed: {kind}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path as given.
        path: String,
        /// The kind of failure.
        kind: io::ErrorKind,
    },
}

fn rule_key(rule: Rule) -> &'static str {
    match rule {
        Rule::Deny => "paths.deny",
        Rule::ReadOnly => "paths.readonly",
    }
}

fn rule_meaning(rule: Rule) -> &'static str {
    match rule {
        Rule::Deny => "neither readable nor writable by any tool",
        Rule::ReadOnly => "readable, but never written, moved or deleted",
    }
}

impl GuardError {
    /// Whether this is a security refusal (as opposed to an ordinary failure
    /// such as a missing file). Refusals are audited as `denied`.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            GuardError::Outside { .. }
                | GuardError::Protected { .. }
                | GuardError::OutOfScope { .. }
                | GuardError::Invalid { .. }
                | GuardError::RootItself { .. }
                | GuardError::NotKept { .. }
                | GuardError::TooBigToKeep { .. }
                | GuardError::Redirected { .. }
        )
    }
}

impl GuardError {
    /// Whether the operation certainly changed nothing. Every error but
    /// these two is raised before the operation's first change, or by a
    /// single atomic step the kernel refused as a whole (checks, resolution,
    /// a keep refused and undone): an operation that fails after a change
    /// says [`GuardError::PartlyDone`]. An unclassified I/O failure
    /// ([`GuardError::Io`]) counts as a change: fail closed.
    pub fn changed_nothing(&self) -> bool {
        !matches!(self, GuardError::Io { .. } | GuardError::PartlyDone { .. })
    }

    /// The same error naming `shown` instead of the path it was raised for
    /// (when the guard resolved a path built from the caller's input).
    pub(crate) fn shown_as(self, shown: &str) -> GuardError {
        let path = crate::resolve::truncate(shown);
        match self {
            GuardError::Outside { .. } => GuardError::Outside { path },
            GuardError::Protected { rule, glob, .. } => GuardError::Protected { path, rule, glob },
            GuardError::OutOfScope { .. } => GuardError::OutOfScope { path },
            GuardError::Invalid { reason, .. } => GuardError::Invalid { path, reason },
            GuardError::RootItself { op, .. } => GuardError::RootItself { path, op },
            GuardError::NotFound { .. } => GuardError::NotFound { path },
            GuardError::ParentNotFound { .. } => GuardError::ParentNotFound { path },
            GuardError::NotADirectory { .. } => GuardError::NotADirectory { path },
            GuardError::IsADirectory { .. } => GuardError::IsADirectory { path },
            GuardError::NotDirectory { .. } => GuardError::NotDirectory { path },
            GuardError::AlreadyExists { .. } => GuardError::AlreadyExists { path },
            GuardError::DirectoryNotEmpty { .. } => GuardError::DirectoryNotEmpty { path },
            GuardError::TooLarge { size, limit, .. } => GuardError::TooLarge { path, size, limit },
            GuardError::TooManyEntries { limit, .. } => GuardError::TooManyEntries { path, limit },
            GuardError::TooDeep { limit, .. } => GuardError::TooDeep { path, limit },
            GuardError::SymlinkLoop { .. } => GuardError::SymlinkLoop { path },
            GuardError::Changed { .. } => GuardError::Changed { path },
            GuardError::PartlyDone { what, .. } => GuardError::PartlyDone { path, what },
            GuardError::NotKept { reason, .. } => GuardError::NotKept { path, reason },
            GuardError::TooBigToKeep { size, room, .. } => GuardError::TooBigToKeep { path, size, room },
            GuardError::Redirected { .. } => GuardError::Redirected { path },
            GuardError::Io { op, kind, .. } => GuardError::Io { op, path, kind },
        }
    }
}

/// The one place that turns an `io::Error` from a handle operation into a
/// [`GuardError`]. cap-std reports every attempted escape as
/// `PermissionDenied` ("a path led outside of the filesystem"); our own
/// resolver never hands it a path that could escape, so such an error means
/// the tree changed under us and is reported as [`GuardError::Changed`].
#[cold]
pub(crate) fn io_error(op: &'static str, path: &str, err: io::Error) -> GuardError {
    let path = path.to_owned();
    match err.kind() {
        io::ErrorKind::NotFound => GuardError::NotFound { path },
        io::ErrorKind::AlreadyExists => GuardError::AlreadyExists { path },
        io::ErrorKind::IsADirectory => GuardError::IsADirectory { path },
        io::ErrorKind::NotADirectory => GuardError::NotADirectory { path },
        io::ErrorKind::DirectoryNotEmpty => GuardError::DirectoryNotEmpty { path },
        _ if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => GuardError::Changed { path },
        io::ErrorKind::PermissionDenied if err.raw_os_error().is_none() => GuardError::Changed { path },
        kind => GuardError::Io { op, path, kind },
    }
}
