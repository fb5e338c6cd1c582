//! The audit log: every event recorded, tamper-evidently, secrets redacted.
//!
//! This crate provides [`AuditLog`], the writer (a JSON Lines file, one
//! record a line, with a SHA-256 hash chain), [`verify`], which walks the
//! chain and names the first bad record and what is wrong with it, the
//! [`query`] functions behind `audit grep` and `audit tail`, and [`redact`],
//! the rules that keep secrets out of the log.
//!
//! The format (version 1) is documented in [`record`] and in
//! `docs/audit-format.md`.
//!
//! # Guarantee
//!
//! - A record handed to [`AuditLog::append`] is redacted, then written with
//!   the hash of the record before it; its receipt arrives only once it is
//!   written and, when the [`SyncMode`] has its caller wait (every record
//!   with `Always`, a change's with `Changes`), `fdatasync`ed. Concurrent
//!   appends share one `fdatasync` (group commit).
//! - Several processes append safely: each batch is written under an
//!   advisory lock (`audit.log.lock`) after re-reading the chain's head.
//! - An incomplete last line (a crash mid-write) is never deleted: the next
//!   writer closes it and records a `recovered` event; [`verify`] reports
//!   it. A damaged last record stops writers: nothing is silently repaired.
//!
//! # Non-goals
//!
//! The chain is unkeyed: someone who can rewrite the whole file can
//! recompute every hash. [`verify`] with a [`Checkpoint`] kept elsewhere
//! detects that, and truncation.
//!
//! **Architecture invariant:** only this crate knows the log format; the
//! CLI prints what it returns.
//!
//! ```
//! use mcpsec_audit::{AuditLog, EventKind, Options, Outcome, Record, verify};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("audit.log");
//! let log = AuditLog::open(&path, Options::default()).unwrap();
//! let mut r = Record::new(EventKind::ToolCall);
//! r.tool = Some("read_text_file".into());
//! r.args = Some(serde_json::json!({"path": "notes.txt", "api_key": "hunter2hunter2"}));
//! r.outcome = Some(Outcome::Ok);
//! assert_eq!(log.append(r).wait().unwrap().seq, 1);
//! log.close();
//! let report = verify(&path, None, &mut |_, _| {}).unwrap();
//! assert_eq!(report.records, 1);
//! assert!(!std::fs::read_to_string(&path).unwrap().contains("hunter2"));
//! ```

mod log;
pub mod query;
pub mod record;
pub mod redact;
mod verify;

pub use log::{AuditError, AuditLog, Options, Pending, Receipt, SyncMode, summarize_args};
pub use record::{Entry, EventKind, Outcome, Record};
pub use verify::{Checkpoint, Problem, ProblemKind, Report, VerifyError, verify};
