//! Keeping: a destructive operation that moves (or, across filesystems,
//! copies) what it removes into an entry, in the same step as the change.

use super::*;

pub(super) fn is_exdev(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error())
}

/// Copies the object `name` of `from` to `to_name` in `to` (which must not
/// exist), recursively, without following symlinks, with the same modes
/// (each file and directory is created private and given its mode once its
/// content is in) and the same access and modification times (best effort).
/// On failure, removes what it created.
pub(super) fn copy_tree(from: &Dir, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
    let copied = copy_into(from, name, to, to_name, 0);
    if let Err(e) = &copied
        && e.kind() != io::ErrorKind::AlreadyExists
    {
        let _ = remove_object(to, to_name);
    }
    copied
}

pub(super) fn copy_into(from: &Dir, name: &OsStr, to: &Dir, to_name: &OsStr, depth: usize) -> io::Result<()> {
    if depth > 256 {
        return Err(other("too deep to copy"));
    }
    let meta = from.symlink_metadata(name)?;
    copy_object(from, name, &meta, to, to_name, depth)?;
    // Times last: filling a directory changes its modification time. A
    // filesystem that cannot keep them loses nothing of the content.
    let spec = |t: io::Result<cap_std::time::SystemTime>| t.ok().map(SystemTimeSpec::Absolute);
    let _ = to.set_symlink_times(to_name, spec(meta.accessed()), spec(meta.modified()));
    Ok(())
}

pub(super) fn copy_object(
    from: &Dir,
    name: &OsStr,
    meta: &cap_std::fs::Metadata,
    to: &Dir,
    to_name: &OsStr,
    depth: usize,
) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = from.read_link_contents(name)?;
        to.symlink_contents(target, to_name)
    } else if ft.is_dir() {
        let mut b = DirBuilder::new();
        b.mode(0o700);
        to.create_dir_with(to_name, &b)?;
        let src = from.open_dir_nofollow(name)?;
        let dst = to.open_dir_nofollow(to_name)?;
        for entry in src.entries()? {
            let n = entry?.file_name();
            copy_into(&src, &n, &dst, &n, depth + 1)?;
        }
        dst.set_permissions(".", meta.permissions())
    } else if ft.is_file() {
        let mut src = open_regular(from, name)?;
        let mut dst = to.open_with(
            to_name,
            OpenOptions::new().write(true).create_new(true).mode(0o600).follow(FollowSymlinks::No),
        )?;
        io::copy(&mut src, &mut dst)?;
        dst.set_permissions(meta.permissions())?;
        dst.sync_data()
    } else {
        Err(other("a socket, FIFO or device cannot be kept"))
    }
}

/// Removes a file, symlink or whole tree (making its directories writable
/// first).
pub(super) fn remove_object(dir: &Dir, name: &OsStr) -> io::Result<()> {
    if dir.symlink_metadata(name)?.is_dir() {
        let _ = make_removable(dir, name);
        dir.remove_dir_all(name)
    } else {
        dir.remove_file_or_symlink(name)
    }
}

/// Moves `name` of `from` to `to_name` in `to` (which must not exist): a
/// rename, or across filesystems a copy (then the original is removed,
/// best effort: the copy is complete by then).
pub(super) fn move_object(from: &Dir, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
    match rustix::fs::renameat_with(from, name, to, to_name, rustix::fs::RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if is_exdev(&e.into()) => {
            copy_tree(from, name, to, to_name)?;
            // The copy is complete: a leftover original (e.g. a read-only
            // directory inside it) is junk under a hidden name, not a loss.
            let _ = remove_object(from, name);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The last step of keeping: describes the object staged at `name` in
/// `dir` (hashes; at most `limit` bytes), moves it into `slot` and seals it.
/// On an error the object is still at `name`, for the caller to put back.
pub(super) fn keep(dir: &Dir, name: &OsStr, slot: &Slot<'_>, input: &str, room: Room) -> Result<Kept, GuardError> {
    let kept = describe_within(dir, name, room.content).map_err(|e| match e {
        Described::Io(e) => not_kept(input, &e.to_string()),
        Described::Over { at_least } => too_big(input, at_least, room.content),
    })?;
    if kept.charge() > room.disk {
        return Err(too_big(input, kept.charge(), room.disk));
    }
    slot.take(dir, name).map_err(|e| not_kept(input, &e.to_string()))?;
    // A copy across filesystems may take more blocks than the original:
    // charge what the trash holds.
    let mut kept = kept;
    if let Ok(there) = disk_usage(&slot.trash.dir, slot.data(), 0) {
        kept.disk = Some(there.max(kept.charge()));
    }
    Ok(kept)
}

/// How much a new entry may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Bytes on disk the trash has for it: what it is charged (its
    /// allocated blocks, so a sparse file counts for what it holds).
    pub disk: u64,
    /// The most content read and hashed to keep it (`[undo] max_size`):
    /// anything larger is refused before it is hashed, so keeping stays
    /// bounded whatever a file claims to hold.
    pub content: u64,
}

/// What [`Sandbox::write_keeping`] did.
#[derive(Debug)]
pub struct Written {
    /// Whether the file was created (nothing was kept then).
    pub created: bool,
    /// What was kept (the slot's manifest is the caller's to commit).
    pub kept: Option<KeptAt>,
}

/// Where a kept object came from, and what it was.
#[derive(Debug)]
pub struct KeptAt {
    /// The root (canonical).
    pub root: PathBuf,
    /// The resolved path below it.
    pub path: String,
    /// What was kept.
    pub kept: Kept,
}

pub(super) fn rel_text(rel: &Path, input: &str) -> Result<String, GuardError> {
    rel.to_str().map(str::to_owned).ok_or_else(|| not_kept(input, "its path is not UTF-8"))
}

pub(super) fn same_kind(dir: &Dir, name: &OsStr, kind: Kind) -> bool {
    dir.symlink_metadata(name).is_ok_and(|m| Kind::of(m.file_type()) == kind)
}

impl Sandbox {
    /// [`Sandbox::remove`], keeping what it removes in `slot`. If it cannot
    /// be kept — larger than `room`, a socket or FIFO inside, an I/O
    /// failure — nothing is removed.
    ///
    /// The object first leaves its path by a rename to a hidden name beside
    /// it (atomic, same directory), is checked again there (its kind, and
    /// for a tree the protected-path rules over what was actually moved),
    /// described (hashes), and only then moved into the trash (renamed, or
    /// copied across filesystems). Until that last step, every failure
    /// renames it back.
    pub fn remove_keeping(&self, input: &str, recursive: bool, slot: &Slot, room: Room) -> Result<KeptAt, GuardError> {
        let r = self.resolve(input, Last::NoFollow)?;
        let rel = r.rel();
        self.check_removal(&r, input, recursive)?;
        let name = self.mutable_name(&r, input, "delete")?;
        let rel_string = rel_text(&rel, input)?;
        if r.kind == Kind::Other {
            return Err(not_kept(input, "it is a socket, FIFO or device, which undo cannot keep"));
        }
        if r.kind == Kind::Dir && !recursive {
            let dir = r.dir.open_dir_nofollow(name).map_err(|e| io_error("deleting", input, e))?;
            if dir.entries().map_err(|e| io_error("deleting", input, e))?.next().is_some() {
                return Err(GuardError::DirectoryNotEmpty { path: input.to_owned() });
            }
        }
        if r.kind == Kind::File {
            let size = r.dir.symlink_metadata(name).map_err(|e| io_error("deleting", input, e))?.len();
            if size > room.content {
                return Err(too_big(input, size, room.content));
            }
        }
        let staged = temp_name(name);
        rustix::fs::renameat_with(&*r.dir, name, &*r.dir, &staged, rustix::fs::RenameFlags::NOREPLACE)
            .map_err(|e| io_error("deleting", input, e.into()))?;
        let unstage = |err: GuardError| -> GuardError {
            match rustix::fs::renameat_with(&*r.dir, &staged, &*r.dir, name, rustix::fs::RenameFlags::NOREPLACE) {
                Ok(()) => err,
                Err(_) => GuardError::PartlyDone {
                    path: input.to_owned(),
                    what: format!(
                        "it could not be kept for undo ({err}), and something new appeared at its path meanwhile, \
                         so it was left beside it as `{}`",
                        lossy(&staged)
                    ),
                },
            }
        };
        // What was moved must be what was checked.
        if !same_kind(&r.dir, &staged, r.kind) {
            return Err(unstage(GuardError::Changed { path: input.to_owned() }));
        }
        if r.kind == Kind::Dir {
            let checked = if recursive {
                self.check_tree(&r.dir, &staged, input, |sub| {
                    self.rules_in(r.root).check_write_entry(&rel.join(sub), &format!("{input}/{sub}"))
                })
            } else {
                match r.dir.open_dir_nofollow(&staged).map(|d| d.entries().map(|mut e| e.next().is_none())) {
                    Ok(Ok(true)) => Ok(()),
                    _ => Err(GuardError::DirectoryNotEmpty { path: input.to_owned() }),
                }
            };
            if let Err(e) = checked {
                return Err(unstage(e));
            }
        }
        let kept = keep(&r.dir, &staged, slot, input, room).map_err(unstage)?;
        Ok(KeptAt { root: self.roots[r.root].host.clone(), path: rel_string, kept })
    }

    /// [`Sandbox::write`], keeping the file it replaces in `slot`: the new
    /// content is written to a temporary file and swapped with the old one
    /// (`RENAME_EXCHANGE`), so the path never lacks a file and exactly what
    /// was displaced is kept; the old file is then described and moved into
    /// the trash. If it cannot be kept (larger than `room`, not a
    /// regular file, an I/O failure), it is swapped back: nothing changes.
    ///
    /// A write that creates a file keeps nothing and leaves `slot` alone.
    pub fn write_keeping(
        &self,
        input: &str,
        contents: &[u8],
        slot: &Slot<'_>,
        room: Room,
    ) -> Result<Written, GuardError> {
        // A file created by someone else between the look and the rename is
        // kept like any other: look again (a few times at most).
        for _ in 0..3 {
            if let Some(written) = self.write_keeping_once(input, contents, slot, room)? {
                return Ok(written);
            }
        }
        Err(GuardError::Changed { path: input.to_owned() })
    }

    /// One attempt; `None` when a file appeared at a missing path meanwhile.
    pub(super) fn write_keeping_once(
        &self,
        input: &str,
        contents: &[u8],
        slot: &Slot<'_>,
        room: Room,
    ) -> Result<Option<Written>, GuardError> {
        let r = self.resolve(input, Last::FollowMaybeMissing)?;
        self.rules_in(r.root).check_write(&r.rel(), input)?;
        let name = self.mutable_name(&r, input, "overwrite")?;
        match r.kind {
            Kind::Dir => return Err(GuardError::IsADirectory { path: input.to_owned() }),
            Kind::Missing => {
                // Nothing to keep; but never replace what appeared meanwhile.
                let tmp = self.write_temp(&r.dir, name, input, contents, None)?;
                let placed =
                    rustix::fs::renameat_with(&*r.dir, &tmp, &*r.dir, name, rustix::fs::RenameFlags::NOREPLACE);
                if placed.is_err() {
                    let _ = r.dir.remove_file(&tmp);
                }
                return match placed {
                    Ok(()) => Ok(Some(Written { created: true, kept: None })),
                    Err(rustix::io::Errno::EXIST) => Ok(None),
                    Err(e) => Err(io_error("writing", input, e.into())),
                };
            }
            Kind::File => {}
            _ => return Err(not_kept(input, "it is not a regular file")),
        }
        let rel_string = rel_text(&r.rel(), input)?;
        let meta = r.dir.symlink_metadata(name).map_err(|e| io_error("writing", input, e))?;
        if meta.len() > room.content {
            return Err(too_big(input, meta.len(), room.content));
        }
        let mode = meta.permissions().mode() & 0o7777;
        let tmp = self.write_temp(&r.dir, name, input, contents, Some(mode))?;
        let exchange = || rustix::fs::renameat_with(&*r.dir, &tmp, &*r.dir, name, rustix::fs::RenameFlags::EXCHANGE);
        if let Err(e) = exchange() {
            let _ = r.dir.remove_file(&tmp);
            return Err(if e == rustix::io::Errno::NOENT {
                GuardError::Changed { path: input.to_owned() }
            } else {
                not_kept(input, &format!("the filesystem cannot swap files atomically ({e})"))
            });
        }
        // `tmp` now names what was displaced.
        let swap_back = |err: GuardError| -> GuardError {
            match exchange() {
                Ok(()) => {
                    let _ = r.dir.remove_file(&tmp);
                    err
                }
                Err(_) => GuardError::PartlyDone {
                    path: input.to_owned(),
                    what: format!(
                        "the new content is in place, but the old file could not be kept for undo ({err}) nor \
                         swapped back, and is beside it as `{}`",
                        lossy(&tmp)
                    ),
                },
            }
        };
        if !same_kind(&r.dir, &tmp, Kind::File) {
            return Err(swap_back(GuardError::Changed { path: input.to_owned() }));
        }
        let kept = keep(&r.dir, &tmp, slot, input, room).map_err(swap_back)?;
        let at = KeptAt { root: self.roots[r.root].host.clone(), path: rel_string, kept };
        Ok(Some(Written { created: false, kept: Some(at) }))
    }
}

pub(super) fn too_big(input: &str, size: u64, room: u64) -> GuardError {
    GuardError::TooBigToKeep { path: input.to_owned(), size, room }
}

pub(super) fn not_kept(input: &str, reason: &str) -> GuardError {
    GuardError::NotKept { path: input.to_owned(), reason: reason.to_owned() }
}
