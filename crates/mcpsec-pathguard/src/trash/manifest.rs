//! What an entry records: its manifest (where it came from, what was
//! kept, with modes and hashes), and how the trash lists entries.

use super::*;

/// The manifest format's version (1 was the layout with a directory an
/// entry, `<seq>/data` and `<seq>/manifest.json`; such entries list as
/// incomplete).
pub const MANIFEST_VERSION: u32 = 2;

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
pub(super) fn digest(entries: &[KeptEntry]) -> String {
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

/// Parses a manifest read from `source` (the index or a manifest file).
pub(super) fn parse_manifest(text: &[u8], source: &str) -> io::Result<Manifest> {
    let m: Manifest = serde_json::from_slice(text).map_err(|e| other(format!("{source}: {e}")))?;
    if m.v != MANIFEST_VERSION {
        return Err(other(format!("{source}: version {} is not {MANIFEST_VERSION}", m.v)));
    }
    Ok(m)
}

/// SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}
