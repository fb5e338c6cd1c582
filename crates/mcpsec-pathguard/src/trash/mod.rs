//! The trash: what destructive calls remove or overwrite, kept for
//! `mcpsec undo`.
//!
//! Layout, inside the 0700 state directory:
//!
//! ```text
//! trash/            0700
//!   .lock           flock: undo and purge of an entry exclude each other
//!   <seq>           what one call removed, named by its intent record's seq:
//!                   a file (0600), a symlink, or a whole tree (0700); absent
//!                   for a move, which removes nothing
//!   index.db        0600, SQLite: one row a complete entry, its manifest
//!                   (where it came from, modes, hashes), written last.
//!                   Without its row an entry is incomplete
//!   <seq>.json      an entry's manifest as an earlier mcpsec wrote it, read
//!                   when the index has no row for the entry
//! ```
//!
//! An entry is one name in one directory and one row, not a directory or a
//! manifest file of its own: on the hot path (an overwrite) keeping then
//! costs a rename and an insert, and no new inode beyond the new content's.
//! New inodes are what the filesystem charges for (on ext4 without a
//! journal, each creation scans past every inode freed in the last
//! minutes: a manifest file per entry measured 2 ms a call on this VM).
//!
//! The index is written in WAL mode with `synchronous = NORMAL`: a row is
//! written before the call is answered (a killed mcpsec loses none) and
//! reaches the disk at the next checkpoint. What a call kept is also in its
//! audit record (`details.undo`), which is `fdatasync`ed.
//!
//! Keeping does not copy when a rename will do: a deleted file or tree is
//! *renamed* into its entry, and an overwritten file is swapped out with
//! `renameat2(RENAME_EXCHANGE)` for the new content, so exactly what was
//! displaced is kept, atomically. Only across filesystems (`EXDEV`) is
//! anything copied. Kept files are made 0600 and directories 0700 (their
//! original modes are in the manifest and come back on restore), except a
//! file with other hard links, whose mode is shared with them and is left
//! alone.

mod describe;
mod index;
mod keep;
mod manifest;
mod restore;
mod slot;

use describe::*;
use index::*;
pub use keep::*;
pub use manifest::*;
pub use slot::*;

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt, SystemTimeSpec};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{GuardError, io_error};
use crate::resolve::{Kind, Last, lossy};
use crate::sandbox::{MAX_ENTRIES, Sandbox, temp_name};
use mcpsec_core::units::hex;

/// The trash directory, opened once; its index is opened on first use (a
/// server that never keeps anything never opens it).
#[derive(Debug)]
pub struct Trash {
    dir: Dir,
    host: PathBuf,
    index: std::sync::Mutex<Option<rusqlite::Connection>>,
}

/// Holds the trash lock; dropping it releases it.
#[derive(Debug)]
pub struct TrashLock {
    _file: cap_std::fs::File,
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn under(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() { root.to_path_buf() } else { root.join(rel) }
}

fn other(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

impl Trash {
    /// Opens `<state_dir>/trash`, creating it with mode 0700. The state
    /// directory must exist. Opening it is a use of ambient authority, like
    /// opening the roots.
    pub fn open(state_dir: &Path) -> io::Result<Trash> {
        let state = Dir::open_ambient_dir(state_dir, ambient_authority())?;
        match state.symlink_metadata("trash") {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(other(format!("{} is not a directory", state_dir.join("trash").display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut b = DirBuilder::new();
                b.mode(0o700);
                match state.create_dir_with("trash", &b) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        let dir = state.open_dir_nofollow("trash")?;
        let mode = dir.dir_metadata()?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            dir.set_permissions(".", Permissions::from_mode(0o700))?;
        }
        Ok(Trash { dir, host: state_dir.join("trash"), index: std::sync::Mutex::new(None) })
    }

    /// Runs `f` on the index, opening it; `None` when there is no index and
    /// `create` is false (reading and removing never create it: a server
    /// that keeps nothing, or `doctor`, leaves no index behind). A damaged
    /// index is reported, never repaired or replaced.
    fn with_index<T>(
        &self,
        create: bool,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> io::Result<Option<T>> {
        // Errors name the index below the state directory, not its
        // absolute path: a refused call shows them to the model.
        let fail = |e: rusqlite::Error| {
            other(format!(
                "the trash index (trash/{INDEX} in the state directory) cannot be used: {e}. It is not repaired: \
                 move it away to start a new one (the entries it describes then list as incomplete)"
            ))
        };
        let mut guard = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            if !create {
                match self.dir.symlink_metadata(INDEX) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    _ => {}
                }
            }
            // Created 0600 through the directory handle (SQLite gives its
            // WAL and shared-memory files the database's mode).
            match self.dir.open_with(
                INDEX,
                OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).follow(FollowSymlinks::No),
            ) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(other(format!("creating the trash index (trash/{INDEX}): {e}"))),
            }
            if !self.dir.symlink_metadata(INDEX)?.is_file() {
                return Err(other(format!("the trash index (trash/{INDEX}) is not a regular file")));
            }
            *guard = Some(open_index(&self.host.join(INDEX)).map_err(fail)?);
        }
        let conn = guard.as_ref().ok_or_else(|| other("the trash index is not open"))?;
        f(conn).map(Some).map_err(fail)
    }

    /// Every row of the index: seq, when it was kept, manifest text.
    fn rows(&self) -> io::Result<std::collections::BTreeMap<u64, (u64, String)>> {
        let rows = self.with_index(false, |c| {
            let mut stmt = c.prepare("SELECT seq, time, manifest FROM manifests")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))?;
            let mut out = std::collections::BTreeMap::new();
            for row in rows {
                let (seq, time, text) = row?;
                out.insert(u64::try_from(seq).unwrap_or(0), (u64::try_from(time).unwrap_or(0), text));
            }
            Ok(out)
        })?;
        Ok(rows.unwrap_or_default())
    }

    /// The trash directory's path.
    pub fn host(&self) -> &Path {
        &self.host
    }

    /// Takes the trash lock (blocking): `undo` and `purge` of entries hold
    /// it so that neither acts on an entry the other is taking away. Calls
    /// filling new entries never take it.
    pub fn lock(&self) -> io::Result<TrashLock> {
        let file = self.dir.open_with(
            ".lock",
            OpenOptions::new().read(true).write(true).create(true).mode(0o600).follow(FollowSymlinks::No),
        )?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(io::Error::from)?;
        Ok(TrashLock { _file: file })
    }

    /// The entry `seq` (which may or may not exist): naming it costs
    /// nothing. A keeping operation fills it with `Slot::take`, which
    /// never reuses an entry, and [`Slot::commit`] writes its manifest.
    pub fn slot(&self, seq: u64) -> Slot<'_> {
        Slot { trash: self, seq, name: seq.to_string() }
    }

    /// The manifest of entry `seq`, `None` when there is no such entry.
    pub fn manifest(&self, seq: u64) -> io::Result<Option<Manifest>> {
        let slot = self.slot(seq);
        if !slot.exists()? {
            return Ok(None);
        }
        slot.complete().map(Some).map_err(|e| other(format!("trash entry {seq} is incomplete: {e}")))
    }

    /// Every entry, oldest (lowest seq) first.
    pub fn list(&self) -> io::Result<Vec<Listed>> {
        let mut rows = self.rows()?;
        let mut data = std::collections::BTreeSet::new();
        let mut legacy = std::collections::BTreeSet::new();
        for entry in self.dir.entries()? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let (digits, set) = match name.strip_suffix(".json") {
                Some(d) => (d, &mut legacy),
                None => (name, &mut data),
            };
            if let Ok(seq) = digits.parse::<u64>()
                && digits == seq.to_string()
            {
                set.insert(seq);
            }
        }
        let seqs: std::collections::BTreeSet<u64> =
            rows.keys().chain(data.iter()).chain(legacy.iter()).copied().collect();
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let slot = self.slot(seq);
            let row = rows.remove(&seq);
            let time = row.as_ref().map(|(t, _)| *t);
            let found = match row {
                Some((_, text)) => parse_manifest(text.as_bytes(), INDEX),
                None => slot.legacy_manifest(),
            };
            let complete = found.and_then(|m| slot.check(m, data.contains(&seq)));
            out.push(match complete {
                Ok(m) => Listed::Entry(m),
                Err(e) => {
                    Listed::Incomplete { seq, problem: e.to_string(), time: time.unwrap_or_else(|| slot.changed()) }
                }
            });
        }
        Ok(out)
    }

    /// Removes entry `seq` with everything in it. Returns whether it existed.
    /// The manifest goes first, so that a crash mid-removal never leaves a
    /// half entry that looks restorable; the kept object is then renamed
    /// out of the way (`.gone-<seq>`) and removed.
    pub fn remove(&self, seq: u64) -> io::Result<bool> {
        let slot = self.slot(seq);
        let key = i64::try_from(seq).map_err(|_| other(format!("trash entry {seq}: seq out of range")))?;
        let deleted = self.with_index(false, |c| c.execute("DELETE FROM manifests WHERE seq = ?1", [key]))?;
        let mut existed = deleted.unwrap_or(0) > 0;
        match self.dir.remove_file(slot.legacy_name()) {
            Ok(()) => existed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let gone = format!(".gone-{seq}");
        match self.dir.rename(&slot.name, &self.dir, &gone) {
            Ok(()) => existed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(existed),
            Err(e) => return Err(e),
        }
        self.remove_gone(&gone)?;
        Ok(existed)
    }

    fn remove_gone(&self, name: &str) -> io::Result<()> {
        match remove_object(&self.dir, OsStr::new(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
    /// Finishes removals that a crash interrupted.
    pub fn clean_up(&self) -> io::Result<()> {
        for entry in self.dir.entries()? {
            let name = entry?.file_name();
            if let Some(n) = name.to_str().filter(|n| n.starts_with(".gone-")) {
                self.remove_gone(n)?;
            }
        }
        Ok(())
    }
}

/// Gives every directory of a tree mode 0700 so that it can be removed.
fn make_removable(parent: &Dir, name: &OsStr) -> io::Result<()> {
    let meta = parent.symlink_metadata(name)?;
    if !meta.is_dir() {
        return Ok(());
    }
    parent.set_permissions(name, Permissions::from_mode(0o700))?;
    let dir = parent.open_dir_nofollow(name)?;
    for entry in dir.entries()? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_removable(&dir, &entry.file_name())?;
        }
    }
    Ok(())
}
