//! Undo: destructive calls keep what they remove in the trash, keyed by
//! the seq of their intent record, and retention keeps the trash bounded.
//!
//! The keeping itself is the path guard's ([`Sandbox::remove_keeping`](mcpsec_pathguard::Sandbox::remove_keeping),
//! [`Sandbox::write_keeping`](mcpsec_pathguard::Sandbox::write_keeping)); this module decides *whether* to keep
//! (`[undo]`), how much room there is, writes the entry's manifest, tells
//! the pipeline what to record, and runs retention on a thread of its own
//! so that no call ever waits for a purge.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpsec_core::{Capability, OnFull, UndoConfig};
use mcpsec_pathguard::trash::{Action, KeptAt, Listed, MANIFEST_VERSION, Manifest, now_secs, sha256_hex};
use mcpsec_pathguard::{GuardError, Room, Slot, Trash};
use serde_json::{Value, json};

use crate::error::ToolError;
use crate::tools::Call;

/// How often retention runs when nothing wakes it.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The server's undo: the trash, the `[undo]` settings, and the purger.
#[derive(Debug)]
pub struct Undo {
    trash: Arc<Trash>,
    config: UndoConfig,
    user: String,
    /// What the trash holds, in bytes, as last counted plus what this server
    /// kept since (others, e.g. `mcpsec undo`, may change it meanwhile).
    size: Arc<AtomicU64>,
    wake: Mutex<mpsc::Sender<()>>,
}

impl Undo {
    /// Opens `<state_dir>/trash` and starts retention (a first pass right
    /// away, in the background).
    /// Automatic purges are recorded in `audit` (event `trash_purge`).
    pub fn open(
        state_dir: &Path,
        config: UndoConfig,
        user: &str,
        audit: Option<Arc<mcpsec_audit::AuditLog>>,
    ) -> std::io::Result<Undo> {
        let trash = Arc::new(Trash::open(state_dir)?);
        let size = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let purger =
            Purger { trash: trash.clone(), config: config.clone(), size: size.clone(), audit, user: user.to_owned() };
        std::thread::Builder::new().name("mcpsec-trash".into()).spawn(move || purger.run(&rx))?;
        Ok(Undo { trash, config, user: user.to_owned(), size, wake: Mutex::new(tx) })
    }

    /// The trash.
    pub fn trash(&self) -> &Trash {
        &self.trash
    }

    /// Whether calls needing `capability` keep what they remove.
    pub fn keeps(&self, capability: Capability) -> bool {
        self.config.keeps(capability)
    }

    /// The room a new entry has. In `purge_oldest` mode, what entries
    /// younger than `[undo] min_keep` take is not room (no purge removes
    /// them); in `refuse` mode, nothing kept is.
    fn room(&self, fresh: bool) -> Room {
        let max = self.config.max_size;
        let taken = match self.config.on_full {
            OnFull::PurgeOldest => self.young(),
            OnFull::Refuse if fresh => self.recount(),
            OnFull::Refuse => self.size.load(Ordering::Relaxed),
        };
        Room { disk: max.saturating_sub(taken), content: max }
    }

    /// What the entries younger than `[undo] min_keep` take on disk. A
    /// trash that cannot be listed counts none here: keeping then fails on
    /// the index itself, with its own reason, and no purge can run either.
    fn young(&self) -> u64 {
        let now = now_secs();
        let min_keep = self.config.min_keep.as_secs();
        self.trash.list().map_or(0, |l| {
            l.iter()
                .filter(|e| now.saturating_sub(e.time()) < min_keep)
                .map(|e| if let Listed::Entry(m) = e { m.size() } else { 0 })
                .sum()
        })
    }

    /// Runs a keeping operation with the room there is; in `refuse` mode,
    /// a refusal for lack of room is retried once with a fresh count (a
    /// human may have purged the trash meanwhile). Says why in `[undo]`
    /// terms when it does not fit.
    fn with_room<T>(&self, path: &str, op: impl Fn(Room) -> Result<T, GuardError>) -> Result<T, ToolError> {
        let mut result = op(self.room(false));
        if self.config.on_full == OnFull::Refuse && matches!(result, Err(GuardError::TooBigToKeep { .. })) {
            result = op(self.room(true));
        }
        result.map_err(|e| match e {
            GuardError::TooBigToKeep { size, room, .. } => {
                let max = self.config.max_size;
                let reason = if size > max {
                    format!(
                        "it holds at least {size} bytes, more than the whole trash may hold ([undo] max_size = {max})"
                    )
                } else if self.config.on_full == OnFull::PurgeOldest {
                    format!(
                        "the trash has room for {room} more bytes beside the entries younger than [undo] min_keep \
                         ({:?}), which no purge removes, and this needs {size}: refused so that the undo history \
                         of recent calls is not pushed out ([undo] max_size = {max})",
                        self.config.min_keep
                    )
                } else {
                    format!(
                        "the trash is full: it has room for {room} more bytes and this needs {size} ([undo] max_size \
                         = {max}, on_full = \"refuse\")"
                    )
                };
                ToolError::Guard(GuardError::NotKept { path: path.to_owned(), reason })
            }
            other => other.into(),
        })
    }

    /// Counts what the trash holds now.
    fn recount(&self) -> u64 {
        let total = self
            .trash
            .list()
            .map(|l| l.iter().map(|e| if let Listed::Entry(m) = e { m.size() } else { 0 }).sum())
            .unwrap_or(u64::MAX);
        self.size.store(total, Ordering::Relaxed);
        total
    }

    /// The seq of the intent record of `call`, which keys its entry.
    fn intent(call: &Call) -> Result<u64, ToolError> {
        call.intent().ok_or_else(|| ToolError::Failed("internal error: no intent record for undo".into()))
    }

    /// `delete_file`, keeping what it deletes.
    pub(crate) fn delete(&self, call: &Call, path: &str, recursive: bool) -> Result<(), ToolError> {
        let sb = &call.sandbox;
        let seq = Self::intent(call)?;
        let slot = self.trash.slot(seq);
        let at = self.with_room(path, |room| sb.remove_keeping(path, recursive, &slot, room))?;
        self.finish(call, &slot, seq, Action::Delete, at, None)
    }

    /// `write_file` / `edit_file`, keeping the file it replaces. Returns
    /// whether the file was created.
    pub(crate) fn write(&self, call: &Call, path: &str, contents: &[u8]) -> Result<bool, ToolError> {
        let sb = &call.sandbox;
        let seq = Self::intent(call)?;
        let slot = self.trash.slot(seq);
        let written = self.with_room(path, |room| sb.write_keeping(path, contents, &slot, room))?;
        match written.kept {
            Some(at) => {
                let left = sha256_hex(contents);
                self.finish(call, &slot, seq, Action::Overwrite, at, Some(left)).map(|()| false)
            }
            None => Ok(written.created),
        }
    }

    /// `move_file`: nothing is removed (the destination must not exist), but
    /// the entry lets `mcpsec undo` move it back.
    pub(crate) fn moved(&self, call: &Call, from: &str, to: &str) -> Result<(), ToolError> {
        let sb = &call.sandbox;
        let (root, rel) = sb.locate_resolved(from)?;
        let seq = Self::intent(call)?;
        let slot = self.trash.slot(seq);
        // A move keeps nothing but its manifest: refused up front if the
        // entry is taken, so that it can always be moved back.
        slot.ensure_free()
            .map_err(|e| ToolError::Guard(GuardError::NotKept { path: from.to_owned(), reason: e.to_string() }))?;
        sb.rename(from, to)?;
        let mut manifest = self.manifest(seq, call.tool(), Action::Move, root, rel);
        manifest.moved_to = sb.locate_resolved(to).map(|(r, p)| r.join(p).display().to_string()).ok();
        // What now sits at the destination: undo moves back only that.
        manifest.moved_sha256 = sb.describe_current(to).ok().flatten().map(|k| k.sha256);
        let committed = slot.commit(&manifest);
        call.keep(details(&manifest, committed.err()));
        Ok(())
    }

    /// An entry's manifest, without what was kept.
    fn manifest(&self, seq: u64, tool: &str, action: Action, root: std::path::PathBuf, path: String) -> Manifest {
        Manifest {
            v: MANIFEST_VERSION,
            seq,
            time: now_secs(),
            tool: tool.to_owned(),
            user: Some(self.user.clone()),
            action,
            root,
            path,
            kept: None,
            left_sha256: None,
            moved_to: None,
            moved_sha256: None,
        }
    }

    fn finish(
        &self,
        call: &Call,
        slot: &Slot,
        seq: u64,
        action: Action,
        at: KeptAt,
        left_sha256: Option<String>,
    ) -> Result<(), ToolError> {
        let mut manifest = self.manifest(seq, call.tool(), action, at.root, at.path);
        manifest.kept = Some(at.kept);
        manifest.left_sha256 = left_sha256;
        // The change is made and what it removed is in the trash; a
        // manifest that cannot be written leaves an incomplete entry, which
        // the result record and `mcpsec trash list` report.
        let committed = slot.commit(&manifest);
        let used = self.size.fetch_add(manifest.size(), Ordering::Relaxed).saturating_add(manifest.size());
        if used > self.config.max_size
            && let Ok(tx) = self.wake.lock()
        {
            let _ = tx.send(());
        }
        call.keep(details(&manifest, committed.err()));
        Ok(())
    }
}

/// The `undo` details of a result record.
fn details(m: &Manifest, error: Option<std::io::Error>) -> Value {
    let mut d = json!({
        "trash": m.seq,
        "action": m.action,
        "path": m.host_path().display().to_string(),
    });
    if let Some(k) = &m.kept {
        let first = k.entries.first();
        d["kind"] = json!(first.map(|e| e.kind.as_str()));
        d["mode"] = json!(first.map(|e| format!("{:04o}", e.mode)));
        d["size"] = json!(k.size);
        d["disk"] = json!(k.charge());
        d["entries"] = json!(k.entries.len());
        d["sha256"] = json!(k.sha256);
    }
    if let Some(l) = &m.left_sha256 {
        d["left_sha256"] = json!(l);
    }
    if let Some(t) = &m.moved_to {
        d["moved_to"] = json!(t);
    }
    if let Some(h) = &m.moved_sha256 {
        d["moved_sha256"] = json!(h);
    }
    if let Some(e) = error {
        d["error"] = json!(format!("the entry's manifest could not be written: {e}"));
    }
    d
}

/// Retention: age, then size (oldest first).
struct Purger {
    trash: Arc<Trash>,
    config: UndoConfig,
    size: Arc<AtomicU64>,
    audit: Option<Arc<mcpsec_audit::AuditLog>>,
    user: String,
}

impl Purger {
    fn run(&self, wake: &mpsc::Receiver<()>) {
        loop {
            match purge(&self.trash, &self.config, None, &self.size) {
                Ok(p) if p.entries > 0 => self.record(&p),
                Ok(_) => {}
                Err(e) => tracing::warn!("trash retention failed: {e}"),
            }
            match wake.recv_timeout(PURGE_EVERY) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => while wake.try_recv().is_ok() {},
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

impl Purger {
    /// Records an automatic purge: undo history going away is an event.
    fn record(&self, p: &Purged) {
        let Some(audit) = &self.audit else { return };
        let mut r = mcpsec_audit::Record::new(mcpsec_audit::EventKind::TrashPurge);
        r.user = Some(self.user.clone());
        r.outcome = Some(mcpsec_audit::Outcome::Ok);
        r.reason = Some("retention ([undo] retention, max_size)".into());
        r.details = Some(json!({
            "entries": p.entries, "bytes": p.bytes, "left_bytes": p.left, "seqs": p.seqs,
        }));
        if let Err(e) = audit.append(r).wait() {
            tracing::warn!("recording a trash purge: {e}");
        }
    }
}

/// What a purge removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Purged {
    /// Entries removed.
    pub entries: u64,
    /// Bytes freed.
    pub bytes: u64,
    /// Bytes left.
    pub left: u64,
    /// The entries removed.
    pub seqs: Vec<u64>,
}

/// Removes entries older than `older_than` (default: the retention), then,
/// with `on_full = "purge_oldest"`, the oldest entries until the trash fits
/// `max_size` — never the newest one. Holds the trash lock (an `undo`
/// never sees an entry vanish under it). Incomplete entries (being filled,
/// or left by a crash) go by age only, and never before a minute.
pub fn purge(
    trash: &Trash,
    config: &UndoConfig,
    older_than: Option<Duration>,
    size: &AtomicU64,
) -> std::io::Result<Purged> {
    const GRACE: u64 = 60;
    let _lock = trash.lock()?;
    trash.clean_up()?;
    let entries = trash.list()?;
    let now = now_secs();
    let max_age = older_than.unwrap_or(config.retention).as_secs();
    let mut total: u64 = entries.iter().map(|e| if let Listed::Entry(m) = e { m.size() } else { 0 }).sum();
    let mut out = Purged::default();
    let mut kept = Vec::new();
    for e in entries {
        let age = now.saturating_sub(e.time());
        let old = match &e {
            Listed::Entry(_) => age >= max_age,
            Listed::Incomplete { .. } => age >= max_age.max(GRACE),
        };
        if old {
            let bytes = if let Listed::Entry(m) = &e { m.size() } else { 0 };
            if trash.remove(e.seq())? {
                out.entries += 1;
                out.bytes += bytes;
                out.seqs.push(e.seq());
            }
            total -= bytes;
        } else {
            kept.push(e);
        }
    }
    if config.on_full == OnFull::PurgeOldest && older_than.is_none() {
        let newest = kept.iter().map(Listed::seq).max();
        for e in kept {
            if total <= config.max_size {
                break;
            }
            // Never the newest, nor one younger than `min_keep`.
            if let Listed::Entry(m) = &e
                && Some(m.seq) != newest
                && now.saturating_sub(m.time) >= config.min_keep.as_secs()
            {
                if trash.remove(m.seq)? {
                    out.entries += 1;
                    out.bytes += m.size();
                    out.seqs.push(m.seq);
                }
                total -= m.size();
            }
        }
    }
    size.store(total, Ordering::Relaxed);
    out.left = total;
    Ok(out)
}
