//! The writer: group commit on a dedicated thread, an advisory lock shared
//! by every process that appends, rotation, torn-tail recovery.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use mcpsec_core::time::rfc3339_micros;
use rustix::fs::{FlockOperation, flock};
use serde_json::Value;

use crate::record::{self, EventKind, GENESIS, Meta, Outcome, Record, TornBytes, VERSION, Wire, hex};
use crate::redact;

/// When a record is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every record is `fdatasync`ed before the call it records is
    /// answered (concurrent records share one `fdatasync`: group commit).
    Always,
    /// Records of anything that changes something — a mutating call's
    /// intent (before the change) and result, grants, revocations,
    /// confirmations, server start and stop — are `fdatasync`ed before the
    /// caller goes on. Records of read-only calls are written before their
    /// answer (a killed process loses none) and `fdatasync`ed at most
    /// `interval` later: a machine crash can lose that much of them.
    Changes {
        /// The longest a read-only call's record waits for `fdatasync`.
        interval: Duration,
    },
    /// Written (`write(2)`, so it survives the process being killed) before
    /// callers are answered; `fdatasync` at most every `interval`. A machine
    /// crash can lose up to `interval` of records.
    Batch {
        /// The longest a written record waits for `fdatasync`.
        interval: Duration,
    },
}

impl SyncMode {
    /// Whether the caller of `append(record)` waits for `fdatasync`.
    fn waits_for(self, record: &Record) -> bool {
        match self {
            SyncMode::Always => true,
            SyncMode::Changes { .. } => {
                record.event != EventKind::ToolCall
                    || record.outcome == Some(Outcome::Pending)
                    || record.intent.is_some()
            }
            SyncMode::Batch { .. } => false,
        }
    }

    /// The longest a record nobody waits for stays unsynced.
    fn interval(self) -> Duration {
        match self {
            SyncMode::Always => Duration::ZERO,
            SyncMode::Changes { interval } | SyncMode::Batch { interval } => interval,
        }
    }
}

/// How a log is written.
#[derive(Debug, Clone)]
pub struct Options {
    /// Durability. `Always` by default here, the strictest; `mcpsec`
    /// itself uses `Changes` unless `[audit] sync` says otherwise.
    pub sync: SyncMode,
    /// Rotate the file once it grows past this many bytes.
    pub rotate_bytes: u64,
    /// Refuse appends once the log (all files) would exceed this many bytes
    /// (`None`: no limit). Calls are then refused: fail closed.
    pub max_bytes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options { sync: SyncMode::Always, rotate_bytes: 256 << 20, max_bytes: None }
    }
}

/// Why the log could not be written or read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// An I/O failure, with what was being done.
    #[error("audit log {path}: {op}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What was attempted.
        op: &'static str,
        /// The OS error.
        message: String,
    },
    /// The last complete record is not valid, so the chain cannot continue.
    #[error(
        "audit log {path}: the last record (line {line}) is damaged, so the chain cannot continue; \
         run `mcpsec audit verify` to see what is wrong. Nothing was written"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// The damaged line.
        line: u64,
    },
    /// The configured size limit is reached.
    #[error("audit log {path} is full ({limit} bytes, [audit] max_size); archive it to continue")]
    Full {
        /// The file.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// The log ends in bytes no crash of a writer could have left (a
    /// complete record that does not chain, or something no writer writes):
    /// they were added by something else, so the chain cannot continue.
    #[error(
        "audit log {path}: line {line} has no newline, and is not what a crash during a write leaves (a complete \
         record that does not chain to the one before, or bytes mcpsec never writes): something else added it. \
         Nothing was written; run `mcpsec audit verify`, keep the file as evidence, and start a new log"
    )]
    NotTorn {
        /// The file.
        path: String,
        /// The line.
        line: u64,
    },
    /// The writer thread is gone.
    #[error("the audit writer has stopped")]
    Stopped,
}

fn io_err(path: &Path, op: &'static str, e: std::io::Error) -> AuditError {
    AuditError::Io { path: path.display().to_string(), op, message: e.to_string() }
}

/// What a durable append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The record's sequence number.
    pub seq: u64,
}

/// The log's shared state: the writer (behind a mutex: appends are written
/// by the caller's thread, no hand-off) and the durability bookkeeping.
struct Shared {
    writer: Mutex<Writer>,
    /// Number of batches written so far.
    written: AtomicU64,
    durable: Mutex<Durable>,
    /// Wakes the syncer.
    work: Condvar,
    /// Wakes blocking waiters after a sync.
    synced: Condvar,
    closed: AtomicBool,
    sync: SyncMode,
    path: PathBuf,
}

struct Durable {
    /// Batches synced.
    synced: u64,
    /// The file to `fdatasync` (a handle of its own; replaced on rotation).
    file: Arc<File>,
    /// Set once an `fdatasync` failed: nothing written since can be trusted
    /// to be on disk, so every later append fails (fail closed).
    failed: Option<AuditError>,
    /// Tasks waiting for a batch to be synced.
    waiters: Vec<(u64, std::task::Waker)>,
    /// Someone (blocking or async) waits for a sync: do it now.
    urgent: bool,
    stopped: bool,
    /// `fdatasync`s run (the group-commit tests count them).
    syncs: u64,
}

/// An open audit log. A record is written by the thread that appends it
/// (one `write(2)` under the cross-process lock); a sync thread runs the
/// `fdatasync`s, one for every record written meanwhile (group commit).
/// Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.shared.path).field("sync", &self.shared.sync).finish()
    }
}

/// An append in progress: written already; await it (or [`Pending::wait`])
/// until it is durable per the sync mode.
#[derive(Debug)]
#[must_use = "a record is durable only once its Pending resolves"]
pub struct Pending {
    state: PendingState,
}

#[derive(Debug)]
enum PendingState {
    Done(Option<Result<Receipt, AuditError>>),
    /// Written as batch `batch`; waits for an `fdatasync` covering it.
    Sync {
        log: AuditLog,
        batch: u64,
        receipt: Receipt,
        /// Whether the first poll yielded (see the `Future` impl).
        yielded: bool,
    },
}

impl Pending {
    /// Blocks until the record is written and durable per the sync mode.
    pub fn wait(self) -> Result<Receipt, AuditError> {
        match self.state {
            PendingState::Done(r) => r.unwrap_or(Err(AuditError::Stopped)),
            PendingState::Sync { log, batch, receipt, .. } => {
                let mut d = log.lock_durable();
                loop {
                    if let Some(e) = &d.failed {
                        return Err(e.clone());
                    }
                    if d.synced >= batch {
                        return Ok(receipt);
                    }
                    if d.stopped {
                        return Err(AuditError::Stopped);
                    }
                    d.urgent = true;
                    log.shared.work.notify_one();
                    d = log.shared.synced.wait(d).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

impl std::future::Future for Pending {
    type Output = Result<Receipt, AuditError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match &mut self.state {
            PendingState::Done(r) => std::task::Poll::Ready(r.take().unwrap_or(Err(AuditError::Stopped))),
            PendingState::Sync { log, batch, receipt, yielded } => {
                let mut d = log.lock_durable();
                if let Some(e) = &d.failed {
                    return std::task::Poll::Ready(Err(e.clone()));
                }
                if d.synced >= *batch {
                    return std::task::Poll::Ready(Ok(*receipt));
                }
                if d.stopped {
                    return std::task::Poll::Ready(Err(AuditError::Stopped));
                }
                if !*yielded {
                    // Group commit within one turn of the runtime: a task
                    // that wakes itself goes to the back of tokio's run
                    // queue, so the tasks already runnable (the other
                    // answers of the same read, say) append their records
                    // before this one asks for the `fdatasync`, and one sync
                    // covers them all instead of the first one alone.
                    *yielded = true;
                    cx.waker().wake_by_ref();
                    return std::task::Poll::Pending;
                }
                d.waiters.push((*batch, cx.waker().clone()));
                d.urgent = true;
                log.shared.work.notify_one();
                std::task::Poll::Pending
            }
        }
    }
}

impl AuditLog {
    /// Opens (creating it 0600) the log at `path` and starts its sync
    /// thread. An incomplete last line left by a crash is closed and
    /// followed by a `recovered` record; a damaged last record is an error
    /// (never repaired).
    pub fn open(path: &Path, options: Options) -> Result<AuditLog, AuditError> {
        let writer = Writer::open(path, options.clone())?;
        let file = Arc::new(writer.file.try_clone().map_err(|e| io_err(path, "opening", e))?);
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            written: AtomicU64::new(0),
            durable: Mutex::new(Durable {
                synced: 0,
                file,
                failed: None,
                waiters: Vec::new(),
                urgent: false,
                syncs: 0,
                stopped: false,
            }),
            work: Condvar::new(),
            synced: Condvar::new(),
            closed: AtomicBool::new(false),
            sync: options.sync,
            path: path.to_owned(),
        });
        let log = AuditLog { shared: shared.clone() };
        std::thread::Builder::new()
            .name("mcpsec-audit-sync".into())
            .spawn(move || log.syncer())
            .map_err(|e| io_err(path, "starting the sync thread", e))?;
        Ok(AuditLog { shared })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The sync mode.
    pub fn sync(&self) -> SyncMode {
        self.shared.sync
    }

    /// Writes `record` now (redacted, chained, under the cross-process
    /// lock); the returned [`Pending`] resolves once it is durable per the
    /// sync mode, with its sequence number.
    pub fn append(&self, record: Record) -> Pending {
        let done = |r| Pending { state: PendingState::Done(Some(r)) };
        if self.shared.closed.load(Ordering::Acquire) {
            return done(Err(AuditError::Stopped));
        }
        if let Some(e) = self.lock_durable().failed.clone() {
            return done(Err(e));
        }
        let waits = self.shared.sync.waits_for(&record);
        let (seq, batch) = {
            let _abort = AbortOnPanic;
            let mut w = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
            let gen_before = w.file_gen;
            match w.write_batch(vec![(Box::new(record), SystemTime::now())]) {
                Ok(seq) => {
                    if w.file_gen != gen_before {
                        // Later syncs go to the new file (rotate synced the old one).
                        if let Ok(f) = w.file.try_clone() {
                            self.lock_durable().file = Arc::new(f);
                        }
                    }
                    (seq, self.shared.written.fetch_add(1, Ordering::AcqRel) + 1)
                }
                Err(e) => return done(Err(e)),
            }
        };
        let receipt = Receipt { seq };
        if waits {
            Pending { state: PendingState::Sync { log: self.clone(), batch, receipt, yielded: false } }
        } else {
            self.shared.work.notify_one();
            done(Ok(receipt))
        }
    }

    /// Writes `record` now and has it synced in the background, without
    /// waiting: for records that precede anything they could be lost
    /// without (a server's start: the first call's sync covers it).
    pub fn append_nowait(&self, record: Record) -> Result<Receipt, AuditError> {
        match self.append(record).state {
            PendingState::Done(r) => r.unwrap_or(Err(AuditError::Stopped)),
            PendingState::Sync { receipt, .. } => {
                self.lock_durable().urgent = true;
                self.shared.work.notify_one();
                Ok(receipt)
            }
        }
    }

    fn lock_durable(&self) -> std::sync::MutexGuard<'_, Durable> {
        self.shared.durable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sync thread: `fdatasync`s at once when someone waits, else at
    /// most the sync mode's interval after a write; wakes the waiters.
    fn syncer(self) {
        let _abort = AbortOnPanic;
        let interval = self.shared.sync.interval();
        let mut d = self.lock_durable();
        loop {
            let pending = |d: &Durable| d.synced < self.shared.written.load(Ordering::Acquire);
            while !d.stopped && !pending(&d) {
                d = self.shared.work.wait(d).unwrap_or_else(|p| p.into_inner());
            }
            if d.stopped && !pending(&d) {
                break;
            }
            if !d.urgent && !d.stopped && !interval.is_zero() {
                // Nobody waits: let more records gather, up to the interval.
                let (guard, _) = self
                    .shared
                    .work
                    .wait_timeout_while(d, interval, |d| !d.urgent && !d.stopped)
                    .unwrap_or_else(|p| p.into_inner());
                d = guard;
            }
            d.urgent = false;
            let target = self.shared.written.load(Ordering::Acquire);
            let file = d.file.clone();
            drop(d);
            let result = file.sync_data();
            d = self.lock_durable();
            d.syncs += 1;
            match result {
                Ok(()) => d.synced = d.synced.max(target),
                Err(e) => {
                    let err = io_err(&self.shared.path, "syncing", e);
                    tracing::error!("{err}; refusing further appends");
                    d.failed = Some(err);
                }
            }
            let synced = d.synced;
            let failed = d.failed.is_some();
            let (ready, waiting): (Vec<_>, Vec<_>) =
                d.waiters.drain(..).partition(|(batch, _)| failed || *batch <= synced);
            d.waiters = waiting;
            for (_, waker) in ready {
                waker.wake();
            }
            self.shared.synced.notify_all();
            if failed {
                break;
            }
        }
        d.stopped = true;
        for (_, waker) in d.waiters.drain(..) {
            waker.wake();
        }
        self.shared.synced.notify_all();
    }

    /// Syncs what was written and stops the sync thread: appends after
    /// this fail with [`AuditError::Stopped`].
    pub fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // No append is in progress once we hold the writer.
        let _writer = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut d = self.lock_durable();
        d.stopped = true;
        self.shared.work.notify_all();
        let target = self.shared.written.load(Ordering::Acquire);
        while d.synced < target && d.failed.is_none() && !d.waiters.is_empty() {
            d = self.shared.synced.wait(d).unwrap_or_else(|p| p.into_inner());
        }
        drop(d);
        // The syncer syncs what is left before it stops; make sure of it.
        let d = self.lock_durable();
        if d.synced < target && d.failed.is_none() {
            let _ = d.file.sync_data();
        }
    }
}

/// Ends the process when dropped during a panic: a panic inside the audit
/// writer or its sync thread leaves the chain, the file or the durability
/// bookkeeping in an unknown state, and a log that cannot be trusted must
/// not keep accepting calls. (A panicking tool call, by contrast, is caught
/// by the server and ends as an `error` record.)
struct AbortOnPanic;

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("mcpsec: the audit log writer panicked; stopping, since the log can no longer be trusted");
            std::process::abort();
        }
    }
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    lock: File,
    file: File,
    ino: u64,
    /// Size of `file` when we last held the lock.
    size: u64,
    last_seq: u64,
    last_hash: [u8; 32],
    options: Options,
    buf: Vec<u8>,
    /// Bumped whenever `file` is replaced (rotation, or reopening after
    /// another process rotated), so the syncer follows it.
    file_gen: u64,
}

fn open_log(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, "opening", e))
}

/// `audit.log` → `audit.log.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// The rotated files of `path`, oldest first (`audit.log.000001`, …).
pub(crate) fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Vec::new() };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let num = n.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((num, e.path()))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

/// The last complete record of a file, and whether an incomplete line
/// follows it.
struct Tail {
    last: Option<Meta>,
    /// Bytes after the last newline (a torn write), and the line number of
    /// the last complete line.
    torn: Option<(TornBytes, u64)>,
    /// Those bytes can be a torn write ([`record::is_torn_write`]).
    torn_shape_ok: bool,
    /// The torn bytes parsed as a record with a valid hash: a crash between
    /// a whole record and its newline, when it chains to the record before.
    torn_meta: Option<Meta>,
}

fn read_tail(file: &mut File, path: &Path) -> Result<Tail, AuditError> {
    let size = file.metadata().map_err(|e| io_err(path, "reading", e))?.len();
    if size == 0 {
        return Ok(Tail { last: None, torn: None, torn_shape_ok: true, torn_meta: None });
    }
    let line_no = |file: &mut File| -> u64 {
        // Only needed for messages: count the lines of the whole file.
        let _ = file.seek(SeekFrom::Start(0));
        let mut all = Vec::new();
        let _ = file.read_to_end(&mut all);
        all.iter().filter(|&&b| b == b'\n').count() as u64
    };
    let corrupt = |file: &mut File| AuditError::Corrupt { path: path.display().to_string(), line: line_no(file) };
    // Read backwards in growing chunks until the last non-empty complete
    // line is whole (empty lines are not records: verify skips them too).
    let mut chunk = size.min(64 << 10);
    let (buf, starts_at_file) = loop {
        file.seek(SeekFrom::Start(size - chunk)).map_err(|e| io_err(path, "reading", e))?;
        let mut buf = vec![0u8; chunk as usize];
        file.read_exact(&mut buf).map_err(|e| io_err(path, "reading", e))?;
        let starts_at_file = chunk == size;
        let end = buf.iter().rposition(|&b| b == b'\n');
        let whole = match end {
            None => starts_at_file,
            Some(i) => {
                let body = &buf[..i];
                let body_end = body.iter().rposition(|&b| b != b'\n');
                match body_end {
                    None => starts_at_file,
                    Some(j) => body[..j].contains(&b'\n') || starts_at_file,
                }
            }
        };
        if whole {
            break (buf, starts_at_file);
        }
        chunk = (chunk * 4).min(size);
    };
    let end = buf.iter().rposition(|&b| b == b'\n');
    let torn_bytes = &buf[end.map_or(0, |i| i + 1)..];
    let last = match end {
        None => None,
        Some(i) => match buf[..i].iter().rposition(|&b| b != b'\n') {
            // Only empty lines.
            None => None,
            Some(j) => {
                let start = match buf[..j].iter().rposition(|&b| b == b'\n') {
                    Some(k) => k + 1,
                    None if starts_at_file => 0,
                    None => return Err(corrupt(file)),
                };
                match record::parse_meta(&buf[start..=j]) {
                    Some(m) if m.hash_ok => Some(m),
                    _ => return Err(corrupt(file)),
                }
            }
        },
    };
    if torn_bytes.is_empty() {
        return Ok(Tail { last, torn: None, torn_shape_ok: true, torn_meta: None });
    }
    let torn_shape_ok = record::is_torn_write(torn_bytes);
    let torn_meta = record::parse_meta(torn_bytes).filter(|m| m.hash_ok);
    let torn = Some((TornBytes::of(torn_bytes), line_no(file)));
    Ok(Tail { last, torn, torn_shape_ok, torn_meta })
}

impl Writer {
    fn open(path: &Path, options: Options) -> Result<Writer, AuditError> {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(lock_path(path))
            .map_err(|e| io_err(path, "opening the lock file", e))?;
        let file = open_log(path)?;
        let ino = file.metadata().map_err(|e| io_err(path, "reading", e))?.ino();
        let mut w = Writer {
            path: path.to_owned(),
            lock,
            file,
            ino,
            size: u64::MAX,
            last_seq: 0,
            last_hash: GENESIS,
            options,
            buf: Vec::with_capacity(64 << 10),
            file_gen: 0,
        };
        w.locked(|w| w.refresh())?;
        Ok(w)
    }

    /// Runs `f` holding the cross-process lock.
    fn locked<T>(&mut self, f: impl FnOnce(&mut Writer) -> Result<T, AuditError>) -> Result<T, AuditError> {
        flock(&self.lock, FlockOperation::LockExclusive).map_err(|e| io_err(&self.path, "locking", e.into()))?;
        let r = f(self);
        let _ = flock(&self.lock, FlockOperation::Unlock);
        r
    }

    /// Under the lock: catches up with what other processes appended or
    /// rotated since we last held it.
    fn refresh(&mut self) -> Result<(), AuditError> {
        let on_disk = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
        if on_disk != Some(self.ino) {
            self.file = open_log(&self.path)?;
            self.file_gen += 1;
            self.ino = self.file.metadata().map_err(|e| io_err(&self.path, "reading", e))?.ino();
            self.size = u64::MAX;
        }
        let size = self.file.metadata().map_err(|e| io_err(&self.path, "reading", e))?.len();
        if size == self.size {
            return Ok(());
        }
        let tail = read_tail(&mut self.file, &self.path)?;
        let (seq, hash) = match tail.last {
            Some(m) => (m.seq, m.hash),
            // An empty (or just rotated) file continues the newest rotated one.
            None => match rotated_files(&self.path).last() {
                Some(prev) => {
                    let mut f = File::open(prev).map_err(|e| io_err(prev, "opening", e))?;
                    read_tail(&mut f, prev)?.last.map_or((0, GENESIS), |m| (m.seq, m.hash))
                }
                None => (0, GENESIS),
            },
        };
        // A whole record that only lacks its newline, and chains: keep it.
        let torn_record = tail.torn_meta.filter(|m| m.seq == seq + 1 && m.prev == hash);
        let (seq, hash) = torn_record.map_or((seq, hash), |m| (m.seq, m.hash));
        self.last_seq = seq;
        self.last_hash = hash;
        self.size = size;
        if let Some((_, line)) = tail.torn
            && torn_record.is_none()
            && !tail.torn_shape_ok
        {
            return Err(AuditError::NotTorn { path: self.path.display().to_string(), line: line + 1 });
        }
        if let Some((torn_bytes, line)) = tail.torn {
            let bytes = torn_bytes.len;
            // Close the torn line so the next record starts on its own line,
            // and record that we did, in one write, under the lock: a log
            // never holds a closed torn line without its `recovered` record
            // (another writer would take that for a damaged record). The
            // torn bytes stay for verify to report. Nothing is deleted.
            let note = if torn_record.is_some() {
                format!(
                    "line {} held a whole record (seq {seq}) without its newline, left by a crash during \
                     a write; the chain continues from it",
                    line + 1
                )
            } else {
                format!(
                    "line {} held an incomplete record ({bytes} bytes, left by a crash during a write); \
                     the chain continues from seq {seq}",
                    line + 1
                )
            };
            let mut r = Record::new(EventKind::Recovered);
            r.reason = Some(note);
            // Commits to the bytes it closed: they cannot be changed afterwards.
            r.details = Some(serde_json::json!({ "torn": torn_bytes.to_json(line + 1) }));
            let (seq0, hash0) = (self.last_seq, self.last_hash);
            self.buf.clear();
            self.buf.push(b'\n');
            let written = self.encode_one(r, SystemTime::now()).and_then(|()| {
                self.file.write_all(&self.buf).map_err(|e| io_err(&self.path, "writing", e))?;
                self.file.sync_data().map_err(|e| io_err(&self.path, "syncing", e))
            });
            if let Err(e) = written {
                let _ = self.file.set_len(size);
                self.last_seq = seq0;
                self.last_hash = hash0;
                self.size = u64::MAX;
                return Err(e);
            }
            self.size += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes a batch under the lock; returns the first record's seq.
    fn write_batch(&mut self, records: Vec<(Box<Record>, SystemTime)>) -> Result<u64, AuditError> {
        let result = self.locked(|w| {
            w.refresh()?;
            let (seq0, hash0, size0) = (w.last_seq, w.last_hash, w.size);
            let written = w.encode_and_write(records);
            if written.is_err() {
                // Undo a partial write of our own so that no torn line is
                // left behind, and keep the chain where it was.
                let _ = w.file.set_len(size0);
                w.last_seq = seq0;
                w.last_hash = hash0;
                w.size = u64::MAX;
            }
            written
        });
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        result
    }

    fn encode_and_write(&mut self, records: Vec<(Box<Record>, SystemTime)>) -> Result<u64, AuditError> {
        self.buf.clear();
        let first = self.last_seq + 1;
        for (record, ts) in records {
            self.encode_one(*record, ts)?;
        }
        if let Some(limit) = self.options.max_bytes {
            let total: u64 = rotated_files(&self.path)
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum::<u64>()
                + self.size;
            if total + self.buf.len() as u64 > limit {
                return Err(AuditError::Full { path: self.path.display().to_string(), limit });
            }
        }
        self.file.write_all(&self.buf).map_err(|e| io_err(&self.path, "writing", e))?;
        self.size += self.buf.len() as u64;
        if self.size > self.options.rotate_bytes
            && let Err(e) = self.rotate()
        {
            // The batch is written (and synced): failing it now would make
            // the caller undo records that are in the log. The next batch
            // retries (and `refresh` reopens the file if it was moved).
            tracing::error!("{e}");
        }
        Ok(first)
    }

    fn encode_one(&mut self, mut r: Record, ts: SystemTime) -> Result<(), AuditError> {
        mcpsec_core::failpoint::panic_if_armed("panic-in-audit-append", r.event.as_str());
        if let Some(args) = r.args.as_mut() {
            summarize(args);
        }
        if let Some(d) = r.details.as_mut() {
            summarize(d);
        }
        // The tool name can be the client's (an unknown or rate-limited
        // call): it is redacted and bounded like any other free text.
        let tool = r.tool.as_deref().map(|t| match t.len() {
            0..=100 => redact::redact_text(t),
            _ => std::borrow::Cow::Owned(redact::redact_and_truncate(t, 100)),
        });
        let reason = r.reason.as_deref().map(|t| redact::redact_and_truncate(t, 2000));
        let result = r.result.as_deref().map(|t| redact::redact_and_truncate(t, 200));
        let ts = rfc3339_micros(ts);
        let prev = hex(&self.last_hash);
        let wire = Wire {
            v: VERSION,
            seq: self.last_seq + 1,
            ts: &ts,
            event: r.event.as_str(),
            tool: tool.as_deref(),
            args: r.args.as_ref(),
            capability: r.capability.as_deref(),
            token_id: r.token_id.as_deref(),
            token_fp: r.token_fp.as_deref(),
            user: r.user.as_deref(),
            session: r.session.as_deref(),
            outcome: r.outcome.map(|o| o.as_str()),
            reason: reason.as_deref(),
            result: result.as_deref(),
            duration_us: r.duration_us,
            intent: r.intent,
            details: r.details.as_ref(),
            prev: &prev,
        };
        let hash = record::encode(&wire, &mut self.buf)
            .map_err(|e| io_err(&self.path, "encoding", std::io::Error::other(e)))?;
        self.last_seq += 1;
        self.last_hash = hash;
        Ok(())
    }

    /// Moves the full file aside as `audit.log.NNNNNN` and starts a new one;
    /// the chain continues in it.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|e| io_err(&self.path, "syncing", e))?;
        self.file_gen += 1;
        let next = rotated_files(&self.path)
            .last()
            .and_then(|p| p.extension().and_then(|e| e.to_str()).and_then(|e| e.parse::<u64>().ok()))
            .unwrap_or(0)
            + 1;
        let mut target = self.path.as_os_str().to_owned();
        target.push(format!(".{next:06}"));
        std::fs::rename(&self.path, &target).map_err(|e| io_err(&self.path, "rotating", e))?;
        self.file = open_log(&self.path)?;
        self.ino = self.file.metadata().map_err(|e| io_err(&self.path, "reading", e))?.ino();
        self.size = 0;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Redacts a value for the log; a string longer than 1024 bytes (callers
/// should have passed [`summarize_args`] output) is cut as a safety net.
fn summarize(value: &mut Value) {
    cut_strings(value, 1024);
    redact::redact_value(value);
}

/// A copy of a tool's arguments fit for the log: strings longer than 256
/// bytes (a `write_file`'s content) are cut to their first 256 characters,
/// redacted over a wider window so that a secret straddling the cut is still
/// caught, and marked with their full size. Cheap for short arguments.
pub fn summarize_args(args: &serde_json::Map<String, Value>) -> Value {
    Value::Object(args.iter().map(|(k, v)| (k.clone(), bounded(v))).collect())
}

/// A copy of `v` whose long strings are cut without copying them whole.
fn bounded(v: &Value) -> Value {
    match v {
        Value::String(s) if s.len() > 256 => {
            Value::String(format!("{} ({} bytes)", redact::redact_and_truncate(s, 256), s.len()))
        }
        Value::Array(items) => Value::Array(items.iter().map(bounded).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), bounded(v))).collect()),
        other => other.clone(),
    }
}

fn cut_strings(value: &mut Value, max: usize) {
    match value {
        Value::String(s) if s.len() > max => {
            let total = s.len();
            *s = format!("{} ({total} bytes)", redact::redact_and_truncate(s, max));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| cut_strings(v, max)),
        Value::Object(map) => map.values_mut().for_each(|v| cut_strings(v, max)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(outcome: Outcome, intent: Option<u64>) -> Record {
        let mut r = Record::new(EventKind::ToolCall);
        r.tool = Some("t".into());
        r.outcome = Some(outcome);
        r.intent = intent;
        r
    }

    #[test]
    fn tool_names_are_redacted_and_bounded_like_other_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, Options::default()).unwrap();
        let secret = format!("mcps_{}", "Ab3".repeat(19));
        let mut r = call(Outcome::Invalid, None);
        r.tool = Some(secret.clone());
        log.append(r).wait().unwrap();
        let mut r = call(Outcome::Invalid, None);
        r.tool = Some("x".repeat(5000));
        log.append(r).wait().unwrap();
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret[5..]), "{text}");
        assert!(!text.contains(&"x".repeat(200)));
        assert_eq!(crate::verify(&path, None, &mut |_, _| {}).unwrap().records, 2);
    }

    #[tokio::test]
    async fn records_appended_in_one_turn_of_the_runtime_share_one_fdatasync() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.log"), Options::default()).unwrap();
        // A first record, waited for: the sync thread has then started and
        // gone back to waiting (it wakes its waiters holding the lock that
        // an append takes first), so it cannot sync a record of the burst
        // below on its own before the others are written.
        log.append(call(Outcome::Ok, None)).await.unwrap();
        let before = log.lock_durable().syncs;
        // Eight calls answered in the same turn (as the answers of one read
        // of the upstream's output are): each appends, then waits.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let log = log.clone();
                tokio::spawn(async move { log.append(call(Outcome::Ok, None)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(log.lock_durable().syncs - before, 1, "the first to wait asks for the sync after the others wrote");
        log.close();
    }

    #[test]
    fn which_records_wait_for_fdatasync() {
        let changes = SyncMode::Changes { interval: Duration::from_millis(10) };
        assert!(!changes.waits_for(&call(Outcome::Ok, None)), "a read's record does not wait");
        assert!(!changes.waits_for(&call(Outcome::Denied, None)), "a refusal changed nothing");
        assert!(changes.waits_for(&call(Outcome::Pending, None)), "an intent waits");
        assert!(changes.waits_for(&call(Outcome::Ok, Some(3))), "a change's result waits");
        assert!(changes.waits_for(&Record::new(EventKind::Grant)));
        assert!(changes.waits_for(&Record::new(EventKind::Confirm)));
        assert!(SyncMode::Always.waits_for(&call(Outcome::Ok, None)));
        assert!(!SyncMode::Batch { interval: Duration::from_secs(1) }.waits_for(&call(Outcome::Pending, None)));
    }

    #[test]
    fn changes_mode_answers_reads_at_once_and_syncs_them_soon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let opts = Options { sync: SyncMode::Changes { interval: Duration::from_millis(5) }, ..Options::default() };
        let log = AuditLog::open(&path, opts).unwrap();
        let read = log.append(call(Outcome::Ok, None));
        assert!(matches!(read.state, PendingState::Done(Some(Ok(_)))), "{read:?}");
        let intent = log.append(call(Outcome::Pending, None));
        assert!(matches!(intent.state, PendingState::Sync { .. }));
        assert_eq!(intent.wait().unwrap().seq, 2);
        // The syncer catches up with the read's record within the interval.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.lock_durable().synced < log.shared.written.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "the read's record was never synced");
            std::thread::sleep(Duration::from_millis(1));
        }
        log.close();
        assert!(matches!(log.append(call(Outcome::Ok, None)).wait(), Err(AuditError::Stopped)));
        assert_eq!(crate::verify(&path, None, &mut |_, _| {}).unwrap().records, 2);
    }
}
