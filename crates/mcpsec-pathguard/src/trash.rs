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

/// The manifest format's version (1 was the layout with a directory an
/// entry, `<seq>/data` and `<seq>/manifest.json`; such entries list as
/// incomplete).
pub const MANIFEST_VERSION: u32 = 2;

/// The index of manifests, in the trash directory.
const INDEX: &str = "index.db";
/// The index's schema version (`PRAGMA user_version`).
const INDEX_VERSION: i64 = 1;

/// The trash directory, opened once; its index is opened on first use (a
/// server that never keeps anything never opens it).
#[derive(Debug)]
pub struct Trash {
    dir: Dir,
    host: PathBuf,
    index: std::sync::Mutex<Option<rusqlite::Connection>>,
}

/// One entry of the trash, by seq: the kept object `<seq>` and its
/// manifest's row in the index (see [`Trash::slot`]).
#[derive(Debug)]
pub struct Slot<'t> {
    trash: &'t Trash,
    seq: u64,
    name: String,
}

/// What one entry kept, as recorded in its manifest and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Every entry of the kept object, itself first (path `""`), then a
    /// tree's contents depth-first in name order.
    pub entries: Vec<KeptEntry>,
    /// Bytes of file content kept.
    pub size: u64,
    /// Bytes it takes on disk (allocated blocks of every entry): what the
    /// trash is charged, so that a sparse file counts for what it holds.
    /// Absent in manifests of an older mcpsec (then `size` is charged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// SHA-256 of a file's content; for a tree or a symlink, of
    /// [`Kept::entries`] in a canonical form.
    pub sha256: String,
}

impl Kept {
    /// Whether `other` has the same entries with the same content (kinds,
    /// sizes, hashes, link targets), whatever their modes: kept objects are
    /// sealed (0600/0700) while in the trash.
    pub fn same_content(&self, other: &Kept) -> bool {
        let key = |e: &KeptEntry| (e.path.clone(), e.kind.clone(), e.size, e.sha256.clone(), e.target.clone());
        self.size == other.size
            && self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| key(a) == key(b))
    }

    /// What the entry is charged against `[undo] max_size`: its blocks on
    /// disk (its content size for an entry that does not record them).
    pub fn charge(&self) -> u64 {
        self.disk.unwrap_or(self.size)
    }

    /// Whether [`Kept::sha256`] is the digest of [`Kept::entries`] (and the
    /// size their sum): a manifest edited in one place but not the other
    /// fails this.
    pub fn is_consistent(&self) -> bool {
        let size: u64 = self.entries.iter().map(|e| e.size).sum();
        size == self.size && digest(&self.entries) == self.sha256
    }
}

/// A file's own content hash; for anything else, SHA-256 of the entries'
/// JSON (paths, kinds, modes, sizes, hashes, targets: unambiguous whatever
/// the names hold).
fn digest(entries: &[KeptEntry]) -> String {
    if let [e] = entries
        && e.kind == "file"
    {
        return e.sha256.clone().unwrap_or_default();
    }
    let mut h = Sha256::new();
    for e in entries {
        h.update(serde_json::to_vec(e).unwrap_or_default());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

/// One file, directory or symlink of a kept object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptEntry {
    /// Path below the kept object, `/`-separated; `""` for the object itself.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Permission bits it had.
    pub mode: u32,
    /// Size in bytes (files).
    #[serde(default)]
    pub size: u64,
    /// SHA-256 of the content (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where it pointed (symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What a call did to the path its entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Deleted it (a file, symlink or tree): it is in `data`.
    Delete,
    /// Replaced a file's content: the old file is in `data`, and
    /// [`Manifest::left_sha256`] is what the call left in its place.
    Overwrite,
    /// Moved it to [`Manifest::moved_to`]; nothing was removed, `data` is
    /// absent.
    Move,
}

/// An entry's manifest: everything `mcpsec undo` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`MANIFEST_VERSION`]).
    pub v: u32,
    /// The seq of the call's intent record (the entry's name).
    pub seq: u64,
    /// When it was kept, in seconds since the Unix epoch.
    pub time: u64,
    /// The tool (or `undo`).
    pub tool: String,
    /// Who made the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// What the call did.
    pub action: Action,
    /// The root the path lies in (canonical, absolute).
    pub root: PathBuf,
    /// The resolved path below the root, `/`-separated.
    pub path: String,
    /// What was kept (absent for a move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<Kept>,
    /// SHA-256 of the file the call left at `path` (overwrite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_sha256: Option<String>,
    /// Where a move put it, below the same root (move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
    /// What a move put there: [`Kept::sha256`] of the object at `moved_to`
    /// right after the move (a file's content hash, a tree's digest), so
    /// that undo moves back only that object. Absent in entries of an older
    /// mcpsec, and when the object could not be described.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_sha256: Option<String>,
}

impl Manifest {
    /// The absolute path the entry names.
    pub fn host_path(&self) -> PathBuf {
        under(&self.root, &self.path)
    }

    /// Bytes the entry takes in the trash: allocated blocks ([`Kept::charge`]).
    pub fn size(&self) -> u64 {
        self.kept.as_ref().map_or(0, Kept::charge)
    }
}

/// One entry as found by [`Trash::list`].
// Listings are short-lived and most entries are complete: boxing the
// manifest would cost an allocation per entry to save little.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Listed {
    /// A complete entry.
    Entry(Manifest),
    /// An entry without a readable manifest: a crash while it was being
    /// filled, or damage. Never purged automatically before its age says so.
    Incomplete {
        /// Its name (the seq).
        seq: u64,
        /// Why it is incomplete.
        problem: String,
        /// When its kept object (else its manifest) last changed: its
        /// ctime, which moving it into the trash set (seconds since the epoch).
        time: u64,
    },
}

impl Listed {
    /// The entry's seq.
    pub fn seq(&self) -> u64 {
        match self {
            Listed::Entry(m) => m.seq,
            Listed::Incomplete { seq, .. } => *seq,
        }
    }

    /// When it was made.
    pub fn time(&self) -> u64 {
        match self {
            Listed::Entry(m) => m.time,
            Listed::Incomplete { time, .. } => *time,
        }
    }
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

/// Opens the index at `path`: WAL, rows written before a call is answered
/// and synced at checkpoints, the schema created on first use. An index of
/// an unknown (newer) version is refused.
fn open_index(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        // Not through a symlink: the caller's check that it is a regular
        // file and this open must name the same file.
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        0 => conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS manifests (
                 seq INTEGER PRIMARY KEY,
                 time INTEGER NOT NULL,
                 manifest TEXT NOT NULL
             ) STRICT;
             PRAGMA user_version = {INDEX_VERSION};
             COMMIT;"
        ))?,
        INDEX_VERSION => {}
        v => {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
                Some(format!("its version is {v}, this mcpsec knows version {INDEX_VERSION}")),
            ));
        }
    }
    Ok(conn)
}

/// Parses a manifest read from `source` (the index or a manifest file).
fn parse_manifest(text: &[u8], source: &str) -> io::Result<Manifest> {
    let m: Manifest = serde_json::from_slice(text).map_err(|e| other(format!("{source}: {e}")))?;
    if m.v != MANIFEST_VERSION {
        return Err(other(format!("{source}: version {} is not {MANIFEST_VERSION}", m.v)));
    }
    Ok(m)
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

impl Slot<'_> {
    /// The entry's seq.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether anything of the entry is there (kept object or manifest).
    fn exists(&self) -> io::Result<bool> {
        for name in [self.name.as_str(), self.legacy_name().as_str()] {
            match self.trash.dir.symlink_metadata(name) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.row()?.is_some())
    }

    /// The entry's row in the index: when it was kept, and its manifest.
    fn row(&self) -> io::Result<Option<(u64, String)>> {
        let Ok(key) = i64::try_from(self.seq) else { return Ok(None) };
        let row = self.trash.with_index(false, |c| {
            use rusqlite::OptionalExtension;
            c.query_row("SELECT time, manifest FROM manifests WHERE seq = ?1", [key], |r| {
                Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get::<_, String>(1)?))
            })
            .optional()
        })?;
        Ok(row.flatten())
    }

    /// The name of the manifest file an earlier mcpsec wrote.
    fn legacy_name(&self) -> String {
        format!("{}.json", self.name)
    }

    /// The manifest file an earlier mcpsec wrote beside the kept object.
    fn legacy_manifest(&self) -> io::Result<Manifest> {
        let name = self.legacy_name();
        let mut f =
            self.trash.dir.open_with(&name, OpenOptions::new().read(true).follow(FollowSymlinks::No)).map_err(|e| {
                match e.kind() {
                    io::ErrorKind::NotFound => other(format!("its manifest (its row in {INDEX}) is missing")),
                    _ => other(format!("{name}: {e}")),
                }
            })?;
        let mut text = Vec::new();
        Read::by_ref(&mut f).take(64 << 20).read_to_end(&mut text)?;
        parse_manifest(&text, &name)
    }

    /// Refuses when anything of the entry is there: a seq is never reused
    /// (unless the audit log was reset).
    pub fn ensure_free(&self) -> io::Result<()> {
        if self.exists()? {
            return Err(other(format!("trash entry {} exists already (was the audit log reset?)", self.seq)));
        }
        Ok(())
    }

    /// Moves the object `name` of `from` into this (free) entry, renamed or
    /// copied across filesystems, and seals it. On an error it is still at
    /// `name`.
    fn take(&self, from: &Dir, name: &OsStr) -> io::Result<()> {
        self.ensure_free()?;
        move_object(from, name, &self.trash.dir, self.data())?;
        seal(&self.trash.dir, self.data(), 0);
        Ok(())
    }

    /// When the kept object (else a manifest file) last changed, for an
    /// incomplete entry's age.
    fn changed(&self) -> u64 {
        use cap_std::fs::MetadataExt;
        let dir = &self.trash.dir;
        let meta = dir.symlink_metadata(&self.name).or_else(|_| dir.symlink_metadata(self.legacy_name()));
        meta.map_or(0, |m| u64::try_from(m.ctime()).unwrap_or(0))
    }

    /// Writes the manifest (a new row of the index): the entry is
    /// complete. An entry is committed once; a row there already is refused.
    pub fn commit(&self, manifest: &Manifest) -> io::Result<()> {
        let text = serde_json::to_string(manifest).map_err(io::Error::other)?;
        let key = i64::try_from(self.seq).map_err(|_| other(format!("trash entry {}: seq out of range", self.seq)))?;
        let time = i64::try_from(manifest.time).unwrap_or(i64::MAX);
        let inserted = self.trash.with_index(true, |c| {
            match c.execute(
                "INSERT INTO manifests (seq, time, manifest) VALUES (?1, ?2, ?3)",
                rusqlite::params![key, time, text],
            ) {
                Ok(_) => Ok(true),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })?;
        if inserted != Some(true) {
            return Err(other(format!("trash entry {} has a manifest in {INDEX} already", self.seq)));
        }
        Ok(())
    }

    /// Reads the manifest: its row, else a manifest file an earlier mcpsec
    /// wrote.
    pub fn manifest(&self) -> io::Result<Manifest> {
        match self.row()? {
            Some((_, text)) => parse_manifest(text.as_bytes(), INDEX),
            None => self.legacy_manifest(),
        }
    }

    /// The manifest of a complete entry: one that names this entry and,
    /// unless it is a move's, has its kept object beside it.
    fn complete(&self) -> io::Result<Manifest> {
        self.check(self.manifest()?, self.has_data())
    }

    /// Whether manifest `m`, found for this entry, describes a complete one.
    fn check(&self, m: Manifest, has_data: bool) -> io::Result<Manifest> {
        if m.seq != self.seq {
            return Err(other(format!("its manifest names seq {}", m.seq)));
        }
        if m.action != Action::Move && !has_data {
            return Err(other("its manifest is there but what it kept is missing"));
        }
        Ok(m)
    }

    /// Whether the entry holds kept data.
    pub fn has_data(&self) -> bool {
        self.trash.dir.symlink_metadata(&self.name).is_ok()
    }

    /// Describes the kept object as it is now (for checking it against its
    /// manifest before a restore).
    pub fn describe(&self) -> io::Result<Kept> {
        describe(&self.trash.dir, self.data())
    }

    /// The kept object's name in the trash directory.
    fn data(&self) -> &OsStr {
        OsStr::new(&self.name)
    }
}

/// Describes the object `name` in `dir`: modes, sizes, hashes. Refuses
/// sockets, FIFOs, devices and names that are not UTF-8 (undo could not
/// restore them faithfully).
fn describe(dir: &Dir, name: &OsStr) -> io::Result<Kept> {
    describe_within(dir, name, u64::MAX).map_err(|e| match e {
        Described::Io(e) => e,
        Described::Over { .. } => other("it is larger than can be described"),
    })
}

/// Why [`describe_within`] stopped.
enum Described {
    Io(io::Error),
    /// Its content passed the bound: at least this many bytes.
    Over {
        at_least: u64,
    },
}

impl From<io::Error> for Described {
    fn from(e: io::Error) -> Self {
        Described::Io(e)
    }
}

/// [`describe`], stopping as soon as the content read passes `cap` bytes, so
/// that no more than that is ever hashed (a tree, or a file that grows while
/// it is read).
fn describe_within(dir: &Dir, name: &OsStr, cap: u64) -> Result<Kept, Described> {
    let mut entries = Vec::new();
    let mut tally = Tally { cap, size: 0, disk: 0 };
    describe_into(dir, name, String::new(), &mut entries, &mut tally, 0)?;
    let sha256 = digest(&entries);
    Ok(Kept { entries, size: tally.size, disk: Some(tally.disk), sha256 })
}

/// What [`describe_into`] has counted so far, and its bound.
struct Tally {
    cap: u64,
    /// Bytes of content.
    size: u64,
    /// Bytes allocated on disk.
    disk: u64,
}

fn describe_into(
    dir: &Dir,
    name: &OsStr,
    path: String,
    out: &mut Vec<KeptEntry>,
    tally: &mut Tally,
    depth: usize,
) -> Result<(), Described> {
    if out.len() > MAX_ENTRIES || depth > 256 {
        return Err(other(format!("it holds more than {MAX_ENTRIES} entries or is deeper than 256")).into());
    }
    use cap_std::fs::MetadataExt;
    let meta = dir.symlink_metadata(name)?;
    tally.disk = tally.disk.saturating_add(meta.blocks().saturating_mul(512));
    let mode = meta.permissions().mode() & 0o7777;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = dir.read_link_contents(name)?;
        let target = target.to_str().ok_or_else(|| other("a symlink's target is not UTF-8"))?.to_owned();
        out.push(KeptEntry { path, kind: "symlink".into(), mode, size: 0, sha256: None, target: Some(target) });
    } else if ft.is_dir() {
        out.push(KeptEntry { path: path.clone(), kind: "dir".into(), mode, size: 0, sha256: None, target: None });
        let sub = dir.open_dir_nofollow(name)?;
        let mut names: Vec<String> = Vec::new();
        for entry in sub.entries()? {
            let n = entry?.file_name();
            names.push(n.into_string().map_err(|_| other("it holds a name that is not UTF-8"))?);
        }
        names.sort();
        for n in names {
            let p = if path.is_empty() { n.clone() } else { format!("{path}/{n}") };
            describe_into(&sub, OsStr::new(&n), p, out, tally, depth + 1)?;
        }
    } else if ft.is_file() {
        // Refused before it is read when its size alone passes the bound.
        if tally.size.saturating_add(meta.len()) > tally.cap {
            return Err(Described::Over { at_least: tally.size.saturating_add(meta.len()) });
        }
        let mut f = open_regular(dir, name)?;
        let mut h = Sha256::new();
        // A stack buffer: no allocation per kept file.
        let mut buf = [0u8; 16 << 10];
        let mut n_total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            n_total += n as u64;
            // A file that grows while it is read stops at the bound too.
            if tally.size.saturating_add(n_total) > tally.cap {
                return Err(Described::Over { at_least: tally.size.saturating_add(n_total) });
            }
        }
        tally.size += n_total;
        out.push(KeptEntry {
            path,
            kind: "file".into(),
            mode,
            size: n_total,
            sha256: Some(hex(&h.finalize())),
            target: None,
        });
    } else {
        return Err(other("it is or holds a socket, FIFO or device, which undo cannot keep").into());
    }
    Ok(())
}

/// The blocks on disk of `name` in `dir` and everything below it, in bytes.
fn disk_usage(dir: &Dir, name: &OsStr, depth: usize) -> io::Result<u64> {
    use cap_std::fs::MetadataExt;
    let meta = dir.symlink_metadata(name)?;
    let mut total = meta.blocks().saturating_mul(512);
    if meta.is_dir() && depth <= 256 {
        let sub = dir.open_dir_nofollow(name)?;
        for entry in sub.entries()? {
            total = total.saturating_add(disk_usage(&sub, &entry?.file_name(), depth + 1)?);
        }
    }
    Ok(total)
}

/// Opens a regular file for reading without following a symlink and
/// without blocking on a FIFO swapped in since it was looked at.
fn open_regular(dir: &Dir, name: &OsStr) -> io::Result<cap_std::fs::File> {
    let f = dir.open_with(
        name,
        OpenOptions::new()
            .read(true)
            .follow(FollowSymlinks::No)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32),
    )?;
    if !f.metadata()?.is_file() {
        return Err(other("it changed while it was being kept"));
    }
    Ok(f)
}

/// Makes a kept object private: files 0600, directories 0700 (its real
/// modes are in the manifest). Best effort: the trash directory is 0700
/// anyway, and a file owned by someone else cannot be changed. A file with
/// other hard links is left alone (its mode is theirs too).
fn seal(dir: &Dir, name: &OsStr, depth: usize) {
    use cap_std::fs::MetadataExt;
    let Ok(meta) = dir.symlink_metadata(name) else { return };
    if meta.is_dir() {
        let _ = dir.set_permissions(name, Permissions::from_mode(0o700));
        if depth > 256 {
            return;
        }
        let Ok(sub) = dir.open_dir_nofollow(name) else { return };
        let Ok(entries) = sub.entries() else { return };
        for entry in entries.flatten() {
            seal(&sub, &entry.file_name(), depth + 1);
        }
    } else if meta.is_file() && meta.nlink() == 1 {
        let _ = dir.set_permissions(name, Permissions::from_mode(0o600));
    }
}

/// SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn is_exdev(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error())
}

/// Copies the object `name` of `from` to `to_name` in `to` (which must not
/// exist), recursively, without following symlinks, with the same modes
/// (each file and directory is created private and given its mode once its
/// content is in) and the same access and modification times (best effort).
/// On failure, removes what it created.
fn copy_tree(from: &Dir, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
    let copied = copy_into(from, name, to, to_name, 0);
    if let Err(e) = &copied
        && e.kind() != io::ErrorKind::AlreadyExists
    {
        let _ = remove_object(to, to_name);
    }
    copied
}

fn copy_into(from: &Dir, name: &OsStr, to: &Dir, to_name: &OsStr, depth: usize) -> io::Result<()> {
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

fn copy_object(
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
fn remove_object(dir: &Dir, name: &OsStr) -> io::Result<()> {
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
fn move_object(from: &Dir, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
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
fn keep(dir: &Dir, name: &OsStr, slot: &Slot<'_>, input: &str, room: Room) -> Result<Kept, GuardError> {
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

fn rel_text(rel: &Path, input: &str) -> Result<String, GuardError> {
    rel.to_str().map(str::to_owned).ok_or_else(|| not_kept(input, "its path is not UTF-8"))
}

fn same_kind(dir: &Dir, name: &OsStr, kind: Kind) -> bool {
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
    fn write_keeping_once(
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

    /// Where `input` resolves to (not following a final symlink), as a root
    /// and a path below it, without checking rules (for records).
    pub fn locate_resolved(&self, input: &str) -> Result<(PathBuf, String), GuardError> {
        let r = self.resolve(input, Last::NoFollow)?;
        Ok((self.roots[r.root].host.clone(), rel_text(&r.rel(), input)?))
    }

    /// Puts entry `slot`'s kept object back at `rel` below the root it lies
    /// in (`input` is its absolute path). Refuses when the path now leads
    /// elsewhere (a symlink planted on the way since). Whatever is at the
    /// path now is first kept in `replace` (an entry of the undo's own),
    /// or, without one, must be absent. Restores the recorded modes. The
    /// caller has checked the entry and the current state. Returns what was
    /// kept in `replace`.
    pub fn restore(
        &self,
        input: &str,
        rel: &str,
        slot: &Slot,
        kept: &Kept,
        replace: Option<&Slot>,
    ) -> Result<Option<Kept>, GuardError> {
        let r = match self.resolve(input, Last::NoFollow) {
            Err(GuardError::ParentNotFound { .. }) => {
                if let Some((parent, _)) = input.rsplit_once('/') {
                    self.create_dir_all(parent)?;
                }
                self.resolve(input, Last::NoFollow)?
            }
            other => other?,
        };
        if r.rel().to_str() != Some(rel) {
            return Err(GuardError::Redirected { path: input.to_owned() });
        }
        let name = self.mutable_name(&r, input, "restore")?;
        let tmp = temp_name(name);
        // Bring the kept object next to its destination first.
        move_object(&slot.trash.dir, slot.data(), &r.dir, &tmp).map_err(|e| io_error("restoring", input, e))?;
        let placed = (|| {
            set_modes(&r.dir, &tmp, kept).map_err(|e| io_error("restoring", input, e))?;
            match (r.kind, replace) {
                (Kind::Missing, _) => {
                    rustix::fs::renameat_with(&*r.dir, &tmp, &*r.dir, name, rustix::fs::RenameFlags::NOREPLACE)
                        .map_err(|e| io_error("restoring", input, e.into()))
                        .map(|()| None)
                }
                (_, Some(replace)) => {
                    rustix::fs::renameat_with(&*r.dir, &tmp, &*r.dir, name, rustix::fs::RenameFlags::EXCHANGE)
                        .map_err(|e| io_error("restoring", input, e.into()))?;
                    // `tmp` now names what was there: keep it.
                    let kept_now = describe(&r.dir, &tmp).and_then(|k| replace.take(&r.dir, &tmp).map(|()| k));
                    match kept_now {
                        Ok(k) => Ok(Some(k)),
                        Err(e) => {
                            // Swap back, so that `tmp` is the kept object again.
                            let _ = rustix::fs::renameat_with(
                                &*r.dir,
                                &tmp,
                                &*r.dir,
                                name,
                                rustix::fs::RenameFlags::EXCHANGE,
                            );
                            Err(io_error("keeping what was at", input, e))
                        }
                    }
                }
                (_, None) => Err(GuardError::AlreadyExists { path: input.to_owned() }),
            }
        })();
        if placed.is_err() && r.dir.symlink_metadata(&tmp).is_ok() {
            // Leave the trash as it was.
            let _ =
                move_object(&r.dir, &tmp, &slot.trash.dir, slot.data()).map(|()| seal(&slot.trash.dir, slot.data(), 0));
        }
        placed
    }

    /// Describes what is at `input` now (not following a final symlink), or
    /// `None` when nothing is there.
    pub fn describe_current(&self, input: &str) -> Result<Option<Kept>, GuardError> {
        let r = self.resolve(input, Last::NoFollow)?;
        if r.kind == Kind::Missing {
            return Ok(None);
        }
        let name = self.mutable_name(&r, input, "inspect")?;
        describe(&r.dir, name).map(Some).map_err(|e| io_error("reading", input, e))
    }
}

/// Gives the restored object (named `name` in `dir`) the modes in `kept`.
fn set_modes(dir: &Dir, name: &OsStr, kept: &Kept) -> io::Result<()> {
    // Deepest first, so that a directory losing its write bit comes last.
    for e in kept.entries.iter().rev() {
        if e.kind == "symlink" {
            continue;
        }
        let (parent, leaf): (Dir, OsString) = if e.path.is_empty() {
            (dir.try_clone()?, name.to_owned())
        } else {
            let mut d = dir.open_dir_nofollow(name)?;
            let mut parts: Vec<&str> = e.path.split('/').collect();
            let leaf = parts.pop().unwrap_or_default();
            for p in parts {
                d = d.open_dir_nofollow(p)?;
            }
            (d, OsString::from(leaf))
        };
        // Never through a symlink swapped in since.
        if parent.symlink_metadata(&leaf)?.file_type().is_symlink() {
            return Err(other("it changed while it was being restored"));
        }
        parent.set_permissions(&leaf, Permissions::from_mode(e.mode))?;
    }
    Ok(())
}

fn too_big(input: &str, size: u64, room: u64) -> GuardError {
    GuardError::TooBigToKeep { path: input.to_owned(), size, room }
}

fn not_kept(input: &str, reason: &str) -> GuardError {
    GuardError::NotKept { path: input.to_owned(), reason: reason.to_owned() }
}
