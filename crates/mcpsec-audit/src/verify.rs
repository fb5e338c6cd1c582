//! `audit verify`: walks the chain across rotated files and names the first
//! bad record and what is wrong with it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::log::rotated_files;
use crate::record::{GENESIS, Meta, TornBytes, hex, is_torn_write, parse_meta};

/// What `audit checkpoint` writes: the head of the chain, to keep
/// elsewhere; with it, `verify` also detects a truncated or rewritten log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last record's sequence number.
    pub seq: u64,
    /// The last record's hash.
    pub hash: String,
    /// When the checkpoint was taken (RFC 3339).
    pub ts: String,
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records checked.
    pub records: u64,
    /// The last record's seq and hash (none for an empty log).
    pub head: Option<(u64, String)>,
    /// The files read, oldest first.
    pub files: Vec<PathBuf>,
    /// Things worth knowing that are not tampering (recovered torn lines).
    pub notes: Vec<String>,
}

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Its content does not match its hash, or it was replaced by a record
    /// with a recomputed hash that the next record does not chain to.
    Edited,
    /// Records are missing before it.
    Deleted,
    /// It does not belong to the chain.
    Inserted,
    /// It comes before a record it should follow.
    Reordered,
    /// The last line is incomplete (a crash during a write).
    Torn,
    /// The log ends before the checkpoint's head.
    Truncated,
    /// The checkpoint's record differs: the log was rewritten.
    Rewritten,
    /// Not a record at all.
    Malformed,
}

impl ProblemKind {
    /// The word used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Edited => "edited",
            ProblemKind::Deleted => "deleted",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Torn => "torn",
            ProblemKind::Truncated => "truncated",
            ProblemKind::Rewritten => "rewritten",
            ProblemKind::Malformed => "malformed",
        }
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {} (seq {}): {detail}", file.display(), kind.as_str(), seq.map_or("?".into(), |s| s.to_string()))]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number in that file.
    pub line: u64,
    /// The record's seq, when it has one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: ProblemKind,
    /// In words.
    pub detail: String,
}

/// Why verification could not finish or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    /// The chain is broken.
    #[error(transparent)]
    Problem(#[from] Problem),
    /// A file could not be read.
    #[error("reading {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
}

/// One line as the verifier sees it.
#[derive(Debug, Clone)]
struct Item {
    file: usize,
    line: u64,
    meta: Option<Meta>,
    /// The line had no newline (only possible for the very last line).
    unterminated: bool,
    empty: bool,
    /// For a line that is not a record: whether it can be a torn write, and
    /// its length and digest (what a `recovered` record commits to).
    torn: Option<(bool, TornBytes)>,
    /// For a `recovered` record: the torn bytes it commits to (`None` inside
    /// for one written before recovered records committed to them).
    commits: Option<Option<TornBytes>>,
}

/// Reads every line of every file, in order, handing out [`Item`]s.
struct Lines {
    files: Vec<PathBuf>,
    current: usize,
    reader: Option<BufReader<File>>,
    line: u64,
    buf: Vec<u8>,
    bytes: u64,
}

impl Lines {
    fn next(&mut self) -> Result<Option<Item>, VerifyError> {
        loop {
            if self.reader.is_none() {
                let Some(path) = self.files.get(self.current) else { return Ok(None) };
                let f = File::open(path)
                    .map_err(|e| VerifyError::Io { path: path.display().to_string(), message: e.to_string() })?;
                self.reader = Some(BufReader::with_capacity(1 << 20, f));
                self.line = 0;
            }
            let Some(reader) = self.reader.as_mut() else { return Ok(None) };
            self.buf.clear();
            let n = reader.read_until(b'\n', &mut self.buf).map_err(|e| VerifyError::Io {
                path: self.files[self.current].display().to_string(),
                message: e.to_string(),
            })?;
            if n == 0 {
                self.reader = None;
                self.current += 1;
                continue;
            }
            self.bytes += n as u64;
            self.line += 1;
            let unterminated = self.buf.last() != Some(&b'\n');
            let body = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            let meta = parse_meta(body);
            let torn = (meta.is_none() && !body.is_empty()).then(|| (is_torn_write(body), TornBytes::of(body)));
            let commits = meta.filter(|m| m.recovered).and_then(|_| TornBytes::committed_by(body));
            return Ok(Some(Item {
                file: self.current,
                line: self.line,
                meta,
                unterminated,
                empty: body.is_empty(),
                torn,
                commits,
            }));
        }
    }
}

/// Verifies the log at `path` (with its rotated files). `progress` is
/// called now and then with (bytes read, total bytes).
pub fn verify(
    path: &Path,
    checkpoint: Option<&Checkpoint>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, VerifyError> {
    let mut files = rotated_files(path);
    if path.exists() {
        files.push(path.to_owned());
    }
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let mut lines = Lines { files: files.clone(), current: 0, reader: None, line: 0, buf: Vec::new(), bytes: 0 };
    let problem = |item: &Item, seq: Option<u64>, kind, detail: String| {
        VerifyError::Problem(Problem { file: files[item.file].clone(), line: item.line, seq, kind, detail })
    };

    let mut expected = 1u64;
    let mut prev_hash = GENESIS;
    // The record before the previous one, to tell an inserted record apart.
    let mut before_prev: Option<[u8; 32]> = None;
    let mut prev_item: Option<Item> = None;
    let mut records = 0u64;
    let mut notes = Vec::new();
    let mut cp_seen = false;
    let mut next = lines.next()?;
    while let Some(item) = next.take() {
        next = lines.next()?;
        if records.is_multiple_of(65_536) {
            progress(lines.bytes, total);
        }
        if item.unterminated {
            return Err(problem(
                &item,
                item.meta.map(|m| m.seq),
                ProblemKind::Torn,
                "the last line is incomplete (a crash during a write); the next writer continues the chain \
                 from the last complete record"
                    .into(),
            ));
        }
        let Some(meta) = item.meta else {
            if item.empty {
                continue;
            }
            // A torn line closed by a recovering writer is followed by its
            // `recovered` record, chained to the last good record, which
            // commits to its bytes. Only a strict prefix of a record line
            // can be a torn write: anything else was put there.
            let recovered = next.as_ref().filter(|n| n.meta.is_some_and(|m| m.recovered && m.prev == prev_hash));
            let Some(recovered) = recovered else {
                return Err(problem(&item, None, ProblemKind::Malformed, "not a record of this log".into()));
            };
            let Some((shape_ok, bytes)) = item.torn else { continue };
            if !shape_ok {
                return Err(problem(
                    &item,
                    None,
                    ProblemKind::Inserted,
                    "it is not what a crash during a write leaves (a complete object, or bytes no writer writes), \
                     yet a `recovered` record follows it: it was added to the log"
                        .into(),
                ));
            }
            let at = format!("{}:{}", files[item.file].display(), item.line);
            match recovered.commits {
                Some(Some(c)) if c == bytes => {
                    notes.push(format!("{at}: an incomplete line left by a crash, recovered by the next writer"));
                }
                Some(Some(_)) => {
                    return Err(problem(
                        &item,
                        None,
                        ProblemKind::Edited,
                        "its bytes differ from those the `recovered` record after it committed to".into(),
                    ));
                }
                _ => notes.push(format!(
                    "{at}: an incomplete line left by a crash, recovered by an older mcpsec (its `recovered` \
                     record does not commit to the bytes)"
                )),
            }
            continue;
        };
        if !meta.hash_ok {
            return Err(problem(
                &item,
                Some(meta.seq),
                ProblemKind::Edited,
                "its content does not match its hash".into(),
            ));
        }
        if meta.seq != expected || meta.prev != prev_hash {
            let next_meta = next.as_ref().and_then(|n| n.meta);
            let (kind, at, seq, detail) = if meta.seq == expected {
                // Same number, wrong link: the record before was replaced by
                // one with a recomputed hash, or this one was inserted.
                match (next_meta, &prev_item) {
                    (Some(n), _) if n.seq == expected && n.prev == prev_hash => {
                        (ProblemKind::Inserted, &item, meta.seq, "it is not part of the chain".to_string())
                    }
                    (_, Some(p)) => (
                        ProblemKind::Edited,
                        p,
                        expected - 1,
                        "it was rewritten: the next record does not chain to it".to_string(),
                    ),
                    (_, None) => (ProblemKind::Edited, &item, meta.seq, "it does not chain to genesis".into()),
                }
            } else if meta.seq < expected {
                if meta.seq + 1 == expected && meta.hash == prev_hash {
                    (ProblemKind::Inserted, &item, meta.seq, format!("it repeats seq {}", meta.seq))
                } else if before_prev.is_some_and(|b| meta.prev == b) {
                    // Two records claim the same place in the chain: the one
                    // the next record chains to is genuine, the other was
                    // inserted. With no next record it cannot be told; the
                    // later one is named (an append is the likelier forgery).
                    let p = prev_item.as_ref().unwrap_or(&item);
                    if next_meta.is_some_and(|n| n.prev == meta.hash) {
                        (ProblemKind::Inserted, p, expected - 1, "it is not part of the chain".to_string())
                    } else {
                        (
                            ProblemKind::Inserted,
                            &item,
                            meta.seq,
                            format!("it takes the place of seq {} in the chain", expected - 1),
                        )
                    }
                } else {
                    (ProblemKind::Inserted, &item, meta.seq, format!("seq {} was expected here", expected))
                }
            } else {
                match next_meta {
                    Some(n) if n.seq == expected && n.prev == prev_hash && meta.prev == n.hash => (
                        ProblemKind::Reordered,
                        &item,
                        meta.seq,
                        format!("it comes before seq {expected}, which it follows in the chain"),
                    ),
                    Some(n) if n.seq == expected && n.prev == prev_hash => {
                        (ProblemKind::Inserted, &item, meta.seq, "it is not part of the chain".to_string())
                    }
                    _ => (
                        ProblemKind::Deleted,
                        &item,
                        meta.seq,
                        if meta.seq == expected + 1 {
                            format!("seq {expected} is missing before it")
                        } else {
                            format!("seq {expected} to {} are missing before it", meta.seq - 1)
                        },
                    ),
                }
            };
            return Err(problem(at, Some(seq), kind, detail));
        }
        if let Some(cp) = checkpoint
            && cp.seq == meta.seq
        {
            if cp.hash != hex(&meta.hash) {
                // A forged copy of the checkpoint's record inserted before it.
                let genuine_next = next
                    .as_ref()
                    .and_then(|n| n.meta)
                    .is_some_and(|n| n.hash_ok && n.seq == meta.seq && n.prev == meta.prev && cp.hash == hex(&n.hash));
                if genuine_next {
                    return Err(problem(
                        &item,
                        Some(meta.seq),
                        ProblemKind::Inserted,
                        "it is not part of the chain (the next record is the checkpoint's)".into(),
                    ));
                }
                return Err(problem(
                    &item,
                    Some(meta.seq),
                    ProblemKind::Rewritten,
                    "this record differs from the checkpoint: the log was rewritten".into(),
                ));
            }
            cp_seen = true;
        }
        before_prev = Some(prev_hash);
        prev_hash = meta.hash;
        expected = meta.seq + 1;
        records += 1;
        prev_item = Some(item);
    }
    progress(lines.bytes, total);
    if let Some(cp) = checkpoint
        && !cp_seen
    {
        let (file, line) = match &prev_item {
            Some(p) => (files[p.file].clone(), p.line),
            None => (path.to_owned(), 0),
        };
        return Err(VerifyError::Problem(Problem {
            file,
            line,
            seq: (expected > 1).then(|| expected - 1),
            kind: ProblemKind::Truncated,
            detail: format!("the log ends at seq {} but the checkpoint names seq {}", expected - 1, cp.seq),
        }));
    }
    let head = (records > 0).then(|| (expected - 1, hex(&prev_hash)));
    Ok(Report { records, head, files, notes })
}
