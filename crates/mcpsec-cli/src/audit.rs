//! `mcpsec audit …`: verify, grep, tail, checkpoint, path.
//!
//! These commands report on stdout (they never run inside `serve`), and
//! read mcpsec's own log files, not a tool's targets.

#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use mcpsec_audit::query::{self, Filter};
use mcpsec_audit::{Checkpoint, Entry, VerifyError};
use mcpsec_core::display::escape;
use mcpsec_core::time::{parse_rfc3339, rfc3339, rfc3339_micros};
use mcpsec_core::{AuditSync, Config, units};

use crate::{Failed, usage};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; name the first bad record and what is wrong.
    Verify {
        /// A checkpoint written by `audit checkpoint`: also detects truncation.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search the log: a regex over each record plus structured filters.
    Grep(GrepArgs),
    /// Print the last records; with -f, follow new ones.
    Tail {
        /// How many records.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        /// Keep printing records as they are written.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Print raw JSON Lines.
        #[arg(long)]
        json: bool,
        /// Also print, marked, lines of the file that are not part of the
        /// log's hash chain (inserted, edited, torn). Off: they are left out.
        #[arg(long)]
        unchained: bool,
    },
    /// Write the chain's head (seq, hash, time) for safekeeping elsewhere.
    Checkpoint {
        /// Write to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the log's path, alone on stdout; how durable it is on stderr.
    Path {
        /// Print {path, sync, sync_interval_ms} as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct GrepArgs {
    /// A regular expression matched against each record's JSON line.
    pattern: Option<String>,
    #[arg(long)]
    tool: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    session: Option<String>,
    /// ok, denied, error, rate_limited, invalid, pending
    #[arg(long)]
    outcome: Option<String>,
    /// tool_call, grant, revoke, confirm, server_start, server_stop, …
    #[arg(long)]
    event: Option<String>,
    /// A duration ago (`1h`, `30m`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// A duration ago or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// Print raw JSON Lines.
    #[arg(long)]
    json: bool,
    /// Print only how many records match.
    #[arg(long)]
    count: bool,
    /// Also print, marked, lines of the file that are not part of the log's
    /// hash chain (inserted, edited, torn). Off: they are left out.
    #[arg(long, conflicts_with = "count")]
    unchained: bool,
}

/// `--since 1h` or `--since 2026-11-24T14:00:00Z`, as the log's time format.
fn when(text: &str, flag: &str) -> Result<String> {
    let t = match units::parse_duration(text) {
        Ok(ago) => SystemTime::now().checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH),
        Err(_) => parse_rfc3339(text)
            .map_err(|_| usage(format!("{flag} `{text}`: give a duration ago (`1h`) or an RFC 3339 time")))?,
    };
    Ok(rfc3339_micros(t))
}

pub fn run(command: AuditCommand, log: &Path, config: &Config) -> Result<()> {
    match command {
        AuditCommand::Verify { checkpoint, json } => verify(log, checkpoint.as_deref(), json),
        AuditCommand::Grep(args) => grep(log, args),
        AuditCommand::Tail { n, follow, json, unchained } => tail(log, n, follow, json, unchained),
        AuditCommand::Checkpoint { out } => checkpoint(log, out.as_deref()),
        AuditCommand::Path { json: true } => {
            let (sync, interval) = match config.audit.sync {
                AuditSync::Always => ("always", None),
                AuditSync::Changes(i) => ("changes", Some(i.as_millis())),
                AuditSync::Batch(i) => ("batch", Some(i.as_millis())),
            };
            let v = serde_json::json!({ "path": log, "sync": sync, "sync_interval_ms": interval });
            writeln!(std::io::stdout().lock(), "{v}")?;
            Ok(())
        }
        AuditCommand::Path { json: false } => {
            // The path alone on stdout (its bytes as they are), so that
            // `tail -f "$(mcpsec audit path)"` works; the rest on stderr.
            let mut out = std::io::stdout().lock();
            out.write_all(log.as_os_str().as_bytes())?;
            out.write_all(b"\n")?;
            out.flush()?;
            writeln!(std::io::stderr().lock(), "sync: {}", durability(config.audit.sync))?;
            Ok(())
        }
    }
}

/// What `[audit] sync` means: who waits for `fdatasync`, and what a crash
/// of mcpsec or of the machine can lose (`audit path`, `doctor`).
pub(crate) fn durability(sync: AuditSync) -> String {
    match sync {
        AuditSync::Always => "always (every record is fdatasync'ed before the call it records is answered: \
                              a crash of mcpsec or of the machine loses no answered call's record)"
            .to_owned(),
        AuditSync::Changes(i) => format!(
            "changes (a change's records are fdatasync'ed before it acts and before its answer, and so are grants, \
             revocations and confirmations; the records of calls that changed nothing, reads and refusals, are \
             written before their answer and fdatasync'ed at most {i:?} later: a crash of mcpsec loses nothing \
             answered, a crash of the machine can lose the last {i:?} of those records and never a change's)"
        ),
        AuditSync::Batch(i) => format!(
            "batch (records are written before their answer and fdatasync'ed at most {i:?} later: a crash of \
             mcpsec loses nothing answered, a crash of the machine can lose the last {i:?} of records, a change's \
             too)"
        ),
    }
}

fn verify(log: &Path, checkpoint: Option<&Path>, json: bool) -> Result<()> {
    let cp = match checkpoint {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                serde_json::from_str::<Checkpoint>(&text)
                    .map_err(|e| usage(format!("{} is not a checkpoint: {e}", p.display())))?,
            )
        }
        None => None,
    };
    // A progress bar on a terminal, for logs big enough to take a while.
    let tty = std::io::stderr().is_terminal() && !json;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut progress = |done: u64, total: u64| {
        if !tty || total <= 64 << 20 {
            return;
        }
        let bar = bar.get_or_insert_with(|| {
            let style =
                indicatif::ProgressStyle::with_template("verifying {msg} {wide_bar} {bytes}/{total_bytes} {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
            bar.set_style(style);
            bar.set_message(log.display().to_string());
            bar
        });
        bar.set_position(done);
    };
    let result = mcpsec_audit::verify(log, cp.as_ref(), &mut progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    match result {
        // No file at all is not an empty chain: it is what deleting the
        // whole log (or a wrong --state-dir) looks like.
        Ok(report) if report.files.is_empty() => {
            let detail =
                format!("no audit log at {}: nothing was ever recorded there, or the log was deleted", log.display());
            if json {
                let v = serde_json::json!({
                    "ok": false, "file": log, "line": null, "seq": null, "problem": "missing", "detail": detail,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "FAILED: {}", escape(&detail))?;
            }
            Err(Failed.into())
        }
        Ok(report) => {
            for note in &report.notes {
                eprintln!("note: {}", escape(note));
            }
            let head =
                report.head.as_ref().map_or("none (empty log)".to_string(), |(seq, h)| format!("{h} (seq {seq})"));
            if json {
                let v = serde_json::json!({
                    "ok": true, "records": report.records,
                    "head": report.head.as_ref().map(|(seq, h)| serde_json::json!({"seq": seq, "hash": h})),
                    "notes": report.notes,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "ok: {} records, head {head}", report.records)?;
            }
            Ok(())
        }
        Err(VerifyError::Problem(p)) => {
            if json {
                let v = serde_json::json!({
                    "ok": false, "file": p.file, "line": p.line, "seq": p.seq, "problem": p.kind, "detail": p.detail,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "FAILED: {}", escape(&p.to_string()))?;
            }
            Err(Failed.into())
        }
        Err(e @ VerifyError::Io { .. }) => Err(e.into()),
    }
}

fn filter(args: &GrepArgs) -> Result<Filter> {
    let pattern = match &args.pattern {
        Some(p) => Some(
            regex::bytes::Regex::new(p).map_err(|e| usage(format!("`{p}` is not a valid regular expression: {e}")))?,
        ),
        None => None,
    };
    Ok(Filter {
        pattern,
        tool: args.tool.clone(),
        user: args.user.clone(),
        session: args.session.clone(),
        outcome: args.outcome.clone(),
        event: args.event.clone(),
        since: args.since.as_deref().map(|w| when(w, "--since")).transpose()?,
        until: args.until.as_deref().map(|w| when(w, "--until")).transpose()?,
    })
}

fn grep(log: &Path, args: GrepArgs) -> Result<()> {
    let filter = filter(&args)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let seen = if args.count {
        let seen = query::count(log, &filter)?;
        writeln!(out, "{}", seen.records)?;
        seen
    } else {
        let mut err = None;
        let seen = query::scan(log, &filter, args.unchained, |line, entry| {
            if let Err(e) = print_record(&mut out, line, entry, args.json) {
                err.get_or_insert(e);
            }
        })?;
        if let Some(e) = err {
            return Err(e.into());
        }
        seen
    };
    out.flush()?;
    warn_left_out(seen.left_out, args.unchained);
    // Like grep: exit 1 when nothing matched.
    if seen.records == 0 { Err(Failed.into()) } else { Ok(()) }
}

/// What a line that is not part of the chain is marked with.
const NOT_IN_CHAIN: &str = "[NOT PART OF THE LOG'S CHAIN]";

/// Prints a record of the chain, or (`entry` is `None`) a line that is not
/// part of it, marked as such: never as a record.
fn print_record(out: &mut impl Write, line: &str, entry: Option<&Entry>, json: bool) -> std::io::Result<()> {
    match (entry, json) {
        (Some(_), true) => writeln!(out, "{line}"),
        (Some(e), false) => writeln!(out, "{}", e.human()),
        (None, true) => writeln!(out, "{}", serde_json::json!({ "not_in_chain": true, "line": line })),
        (None, false) => writeln!(out, "{NOT_IN_CHAIN} {}", escape(line)),
    }
}

/// Says on stderr that lines were left out, and how to see why.
fn warn_left_out(left_out: u64, shown: bool) {
    if left_out > 0 {
        let what = if shown { "shown marked" } else { "left out; `--unchained` shows them, marked" };
        eprintln!(
            "mcpsec: {left_out} line(s) of the log are not part of its hash chain ({what}); \
             `mcpsec audit verify` says what is wrong"
        );
    }
}

/// Prints a line the log gained while followed: a record of the chain, or
/// with `unchained` a line that is not part of it, marked. Lines numbered
/// before the chain's head were read already, and are skipped.
fn print_line(out: &mut impl Write, line: &str, json: bool, chain: &mut query::Chain, unchained: bool) -> Result<()> {
    if chain.is_behind(line.as_bytes()) {
        return Ok(());
    }
    match chain.admit(line.as_bytes()) {
        query::Place::Member => match serde_json::from_str::<Entry>(line) {
            Ok(entry) => print_record(out, line, Some(&entry), json)?,
            Err(_) => print_record(out, line, None, json)?,
        },
        query::Place::NotInChain => {
            if unchained {
                print_record(out, line, None, json)?;
            } else {
                warn_left_out(1, false);
            }
        }
        query::Place::Empty => {}
    }
    Ok(())
}

/// Prints the complete records of `file` from `offset` on (carrying an
/// incomplete last line in `pending`); returns the new offset.
fn print_from(
    file: &mut std::fs::File,
    offset: u64,
    pending: &mut Vec<u8>,
    out: &mut impl Write,
    json: bool,
    chain: &mut query::Chain,
    unchained: bool,
) -> Result<u64> {
    let size = file.metadata()?.len();
    if size <= offset {
        return Ok(offset);
    }
    file.seek(SeekFrom::Start(offset))?;
    (&mut *file).take(size - offset).read_to_end(pending)?;
    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=i).collect();
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        print_line(out, &String::from_utf8_lossy(line), json, chain, unchained)?;
    }
    Ok(size)
}

fn tail(log: &Path, n: usize, follow: bool, json: bool, unchained: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let open = || -> Result<(std::fs::File, u64)> {
        let f = std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
        let ino = f.metadata()?.ino();
        Ok((f, ino))
    };
    // Opened before the last records are read: what is appended meanwhile
    // is read again below, and skipped by its seq.
    let opened = if follow { Some(open()?) } else { None };
    let query::Tail { lines: last, mut chain, seen } = query::tail(log, n, unchained)?;
    for (line, member) in &last {
        match serde_json::from_str::<Entry>(line) {
            Ok(entry) if *member => print_record(&mut out, line, Some(&entry), json)?,
            _ => print_record(&mut out, line, None, json)?,
        }
    }
    out.flush()?;
    warn_left_out(seen.left_out, unchained);
    let Some((mut file, mut ino)) = opened else { return Ok(()) };
    // Follow: poll the file; after a rotation, finish the old file, print
    // any file rotated after it, then continue with the new one. Records
    // are printed once each, in seq order.
    let mut offset = file.metadata()?.len();
    let mut pending = Vec::new();
    loop {
        let rotated = std::fs::metadata(log).map(|m| m.ino() != ino).unwrap_or(false);
        offset = print_from(&mut file, offset, &mut pending, &mut out, json, &mut chain, unchained)?;
        if rotated {
            let (new_file, new_ino) = open()?;
            let files = query::files(log);
            let inode = |f: &Path| std::fs::metadata(f).map(|m| m.ino()).ok();
            let after = files.iter().position(|f| inode(f) == Some(ino)).map_or(0, |i| i + 1);
            for f in &files[after.min(files.len())..] {
                if f.as_path() == log || inode(f) == Some(new_ino) {
                    continue;
                }
                pending.clear();
                let mut h = std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
                print_from(&mut h, 0, &mut pending, &mut out, json, &mut chain, unchained)?;
            }
            pending.clear();
            (file, ino, offset) = (new_file, new_ino, 0);
            continue;
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn checkpoint(log: &Path, out_file: Option<&Path>) -> Result<()> {
    let report = match mcpsec_audit::verify(log, None, &mut |_, _| {}) {
        Ok(r) => r,
        Err(VerifyError::Problem(p)) => {
            println!("FAILED: {}", escape(&p.to_string()));
            eprintln!("mcpsec: refusing to checkpoint a log that does not verify");
            return Err(Failed.into());
        }
        Err(e) => return Err(e.into()),
    };
    let Some((seq, hash)) = report.head else {
        return Err(usage("the audit log is empty: nothing to checkpoint"));
    };
    let cp = Checkpoint { seq, hash, ts: rfc3339(SystemTime::now()) };
    let text = serde_json::to_string_pretty(&cp)? + "\n";
    match out_file {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "checkpoint of seq {seq} written to {}; keep it where the log's writers cannot reach",
                p.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
