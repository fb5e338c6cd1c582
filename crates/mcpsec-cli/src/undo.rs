//! `mcpsec undo SEQ` and `mcpsec trash list / purge`.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use mcpsec_audit::{AuditLog, EventKind, Outcome, Record};
use mcpsec_core::Config;
use mcpsec_core::display::escape;
use mcpsec_pathguard::trash::{Action, Kept, Listed, MANIFEST_VERSION, Manifest, Trash, now_secs};
use mcpsec_pathguard::{Rules, Sandbox, SandboxOptions};
use serde_json::json;

use crate::{Failed, usage};

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The `seq` of either audit record of the call (its intent or its result)
    seq: u64,
    /// Show what would change, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Restore even over something changed since the call (what is there now is kept in the trash)
    #[arg(long)]
    force: bool,
    /// Restore an entry that no audit record vouches for (the call's result record is missing)
    #[arg(long)]
    danger_unverified: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// List what the trash keeps, oldest first.
    List {
        /// Print JSON (one array of entries)
        #[arg(long)]
        json: bool,
    },
    /// Remove entries for good.
    Purge {
        /// Only entries older than this (e.g. `7d`, `12h`) [default: every entry]
        #[arg(long, value_name = "DUR")]
        older_than: Option<String>,
    },
}

/// What the commands work on.
pub struct Ctx<'a> {
    pub state: &'a Path,
    pub audit_path: &'a Path,
    pub config: &'a Config,
}

fn open_trash(state: &Path) -> Result<Trash> {
    if !state.join("trash").is_dir() {
        return Err(anyhow!("there is no trash in {} yet: no destructive call has kept anything", state.display()));
    }
    Trash::open(state).with_context(|| format!("opening the trash in {}", state.display()))
}

fn time_text(secs: u64) -> String {
    mcpsec_core::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// `mcpsec trash …`.
pub fn trash(ctx: &Ctx<'_>, command: TrashCommand) -> Result<()> {
    match command {
        TrashCommand::List { json } => {
            let entries = if ctx.state.join("trash").is_dir() { open_trash(ctx.state)?.list()? } else { Vec::new() };
            let mut out = std::io::stdout().lock();
            use std::io::Write as _;
            if json {
                let list: Vec<_> = entries.iter().map(listed_json).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
                return Ok(());
            }
            if entries.is_empty() {
                writeln!(out, "the trash is empty")?;
                return Ok(());
            }
            writeln!(out, "{:>8}  {:<20}  {:<10}  {:<9}  {:>9}  PATH", "SEQ", "TIME", "TOOL", "ACTION", "SIZE")?;
            let mut total = 0;
            for e in &entries {
                match e {
                    Listed::Entry(m) => {
                        total += m.size();
                        let mut path = m.host_path().display().to_string();
                        if let Some(to) = &m.moved_to {
                            path = format!("{path} -> {to}");
                        }
                        let row = format!(
                            "{:>8}  {:<20}  {:<10}  {:<9}  {:>9}  {path}",
                            m.seq,
                            &time_text(m.time)[..19],
                            m.tool,
                            action_text(m.action),
                            mcpsec_core::units::format_size(m.size()),
                        );
                        writeln!(out, "{}", escape(&row))?;
                    }
                    Listed::Incomplete { seq, problem, time } => {
                        let row = format!(
                            "{seq:>8}  {:<20}  {:<10}  {:<9}  {:>9}  (incomplete: {problem}; kept as {})",
                            &time_text(*time)[..19],
                            "?",
                            "?",
                            "?",
                            ctx.state.join("trash").join(seq.to_string()).display()
                        );
                        writeln!(out, "{}", escape(&row))?;
                    }
                }
            }
            writeln!(
                out,
                "{} entries, {} (max_size {})",
                entries.len(),
                mcpsec_core::units::format_size(total),
                mcpsec_core::units::format_size(ctx.config.undo.max_size)
            )?;
            Ok(())
        }
        TrashCommand::Purge { older_than } => {
            let age = match older_than {
                Some(t) => mcpsec_core::units::parse_duration(&t).map_err(|m| usage(format!("--older-than: {m}")))?,
                None => std::time::Duration::ZERO,
            };
            if !ctx.state.join("trash").is_dir() {
                eprintln!("the trash is empty");
                return Ok(());
            }
            let trash = open_trash(ctx.state)?;
            let purged = mcpsec_server::undo::purge(&trash, &ctx.config.undo, Some(age), &AtomicU64::new(0))?;
            let mut r = record(EventKind::TrashPurge, None);
            r.outcome = Some(Outcome::Ok);
            r.details = Some(json!({
                "older_than_s": age.as_secs(), "entries": purged.entries, "bytes": purged.bytes, "left_bytes": purged.left
            }));
            crate::tokens::append_record(ctx.audit_path, ctx.config, r)?;
            eprintln!(
                "purged {} entries ({}); {} left",
                purged.entries,
                mcpsec_core::units::format_size(purged.bytes),
                mcpsec_core::units::format_size(purged.left)
            );
            Ok(())
        }
    }
}

fn action_text(a: Action) -> &'static str {
    match a {
        Action::Delete => "delete",
        Action::Overwrite => "overwrite",
        Action::Move => "move",
    }
}

fn listed_json(e: &Listed) -> serde_json::Value {
    match e {
        Listed::Entry(m) => json!({
            "seq": m.seq,
            "time": time_text(m.time),
            "tool": m.tool,
            "user": m.user,
            "action": m.action,
            "path": m.host_path(),
            "size": m.size(),
            "moved_to": m.moved_to,
            "complete": true,
        }),
        Listed::Incomplete { seq, problem, time } => json!({
            "seq": seq, "time": time_text(*time), "complete": false, "problem": problem,
        }),
    }
}

/// A record of this CLI run for `tool`.
fn record(event: EventKind, tool: Option<&str>) -> Record {
    let mut r = crate::tokens::record(event);
    r.tool = tool.map(str::to_owned);
    r
}

/// The audit records of the call whose intent is `seq`: (intent, result).
fn call_records(audit_path: &Path, seq: u64) -> Result<(Option<mcpsec_audit::Entry>, Option<mcpsec_audit::Entry>)> {
    let filter = mcpsec_audit::query::Filter {
        pattern: Some(regex::bytes::Regex::new(&format!(r#""(seq|intent)":{seq}[,}}]"#))?),
        ..Default::default()
    };
    let (mut intent, mut result) = (None, None);
    if audit_path.exists() {
        // Only records of the chain: a line inserted into the log cannot
        // steer an undo.
        mcpsec_audit::query::scan(audit_path, &filter, false, |_, e| {
            let Some(e) = e else { return };
            if e.seq == seq {
                intent = Some(e.clone());
            } else if e.intent == Some(seq) {
                result = Some(e.clone());
            }
        })?;
    }
    Ok((intent, result))
}

/// The trash entry `seq` names: its own, or that of the call whose result
/// record is `seq`.
fn find_entry(ctx: &Ctx<'_>, trash: &Trash, seq: u64) -> Result<Manifest> {
    if let Some(m) = trash.manifest(seq).with_context(|| format!("reading trash entry {seq}"))? {
        return Ok(m);
    }
    let (record, _) = call_records(ctx.audit_path, seq)?;
    if let Some(intent) = record.as_ref().and_then(|r| r.intent)
        && let Some(m) = trash.manifest(intent).with_context(|| format!("reading trash entry {intent}"))?
    {
        return Ok(m);
    }
    let what = match &record {
        None => format!("audit record {seq} was not found"),
        Some(r) => escape(&format!(
            "audit record {seq} is a `{}` {}{}",
            r.event,
            r.tool.as_deref().map(|t| format!("of `{t}` ")).unwrap_or_default(),
            r.outcome.as_deref().map(|o| format!("({o})")).unwrap_or_default()
        ))
        .into_owned(),
    };
    Err(anyhow!(
        "nothing to undo for {seq}: {what}, and the trash holds no entry for it. Only delete_file, write_file over an \
         existing file, edit_file and move_file keep what they change, while undo is on; entries go after \
         [undo] retention ({}) or when restored. See `mcpsec trash list`",
        mcpsec_core::units::format_duration(ctx.config.undo.retention)
    ))
}

/// The plan of an undo, as shown by `--dry-run` and done otherwise.
struct Plan {
    manifest: Manifest,
    /// What is at the path now.
    current: Option<Kept>,
    /// Whether what is there now is replaced (and kept).
    replaces: bool,
    /// Warnings that `--force` overrode.
    forced: Vec<String>,
}

/// `mcpsec undo SEQ`.
pub fn undo(ctx: &Ctx<'_>, args: UndoArgs) -> Result<()> {
    let trash = open_trash(ctx.state)?;
    // Held throughout: a purge cannot take the entry away mid-restore, nor
    // a second undo restore it twice.
    let _lock = trash.lock().context("locking the trash")?;
    let manifest = find_entry(ctx, &trash, args.seq)?;
    let plan = plan(ctx, &trash, manifest, args.force, args.danger_unverified).map_err(escaped)?;
    let m = &plan.manifest;
    let target = m.host_path();
    let describe = |verb: &str| -> String {
        let what = m
            .kept
            .as_ref()
            .map(|k| match k.entries.first().map(|e| e.kind.as_str()) {
                Some("dir") => {
                    format!("the directory ({} entries, {})", k.entries.len(), mcpsec_core::units::format_size(k.size))
                }
                Some("symlink") => "the symlink".to_owned(),
                _ => format!("the file ({})", mcpsec_core::units::format_size(k.size)),
            })
            .unwrap_or_default();
        match m.action {
            Action::Delete => format!("{verb} {what} that `{}` deleted at {}", m.tool, target.display()),
            Action::Overwrite => format!("{verb} {what} that `{}` overwrote at {}", m.tool, target.display()),
            Action::Move => format!("{verb} {} back to {}", m.moved_to.as_deref().unwrap_or("?"), target.display()),
        }
    };
    if args.dry_run {
        let mut lines = vec![describe("would restore")];
        if plan.replaces {
            lines.push("what is there now would be kept in the trash (undo the undo to get it back)".into());
        }
        lines.extend(plan.forced.iter().map(|w| format!("--force overrides: {w}")));
        print_outcome(&args, &plan, None, None, &lines, true)?;
        return Ok(());
    }
    // Record the intent durably first, as the server does for a call.
    let log = AuditLog::open(ctx.audit_path, crate::audit_options(ctx.config))?;
    let mut intent = record(EventKind::Undo, Some(&m.tool));
    intent.outcome = Some(Outcome::Pending);
    intent.args = Some(json!({ "seq": m.seq, "path": target, "force": args.force }));
    let intent_seq = log.append(intent.clone()).wait().context("recording the undo in the audit log")?.seq;
    let done = restore(&trash, &plan, intent_seq);
    let mut result = intent;
    result.intent = Some(intent_seq);
    let outcome = match &done {
        Ok(kept_as) => {
            result.outcome = Some(Outcome::Ok);
            let mut d = json!({ "restored": m.seq, "forced": plan.forced });
            if let Some((k, sha256)) = kept_as {
                // What the undo replaced is itself undoable, checked like a call's.
                let left = m.kept.as_ref().map(|k| k.sha256.clone());
                d["undo"] = json!({
                    "trash": k, "action": "overwrite", "path": target, "sha256": sha256, "left_sha256": left
                });
            }
            result.details = Some(d);
            Ok(kept_as.as_ref().map(|(k, _)| *k))
        }
        Err(e) => {
            result.outcome = Some(Outcome::Error);
            result.reason = Some(format!("{e:#}"));
            Err(escaped(anyhow!("{e:#}")))
        }
    };
    let recorded = log.append(result).wait();
    log.close();
    let kept_as = outcome?;
    let result_seq = recorded.context("recording the undo's result in the audit log")?.seq;
    let mut lines = vec![describe("restored")];
    if let Some(k) = kept_as {
        lines.push(format!("what was there is kept as trash entry {k}: `mcpsec undo {k}` brings it back"));
    }
    lines.push(format!("audit records {intent_seq} and {result_seq}"));
    print_outcome(&args, &plan, Some(result_seq), kept_as, &lines, false)
}

/// An error that may quote the entry's paths, which a model chose: its
/// message escaped whole, line breaks included (the top-level printer keeps
/// them). One that was already reported (`Failed`) passes as it is.
fn escaped(e: anyhow::Error) -> anyhow::Error {
    if e.is::<Failed>() { e } else { anyhow!("{}", escape(&format!("{e:#}"))) }
}

fn print_outcome(
    args: &UndoArgs,
    plan: &Plan,
    record: Option<u64>,
    kept_as: Option<u64>,
    lines: &[String],
    dry_run: bool,
) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if args.json {
        let m = &plan.manifest;
        let v = json!({
            "seq": m.seq,
            "dry_run": dry_run,
            "tool": m.tool,
            "action": m.action,
            "path": m.host_path(),
            "moved_to": m.moved_to,
            "size": m.size(),
            "replaces": plan.replaces,
            "current_sha256": plan.current.as_ref().map(|c| &c.sha256),
            "forced": plan.forced,
            "record": record,
            "kept_as": kept_as,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        // Each line quotes paths a model chose: one line each, escaped.
        for l in lines {
            writeln!(out, "{}", escape(l))?;
        }
    }
    Ok(())
}

/// How a manifest differs from the `details.undo` of its call's result
/// record, if it does.
fn mismatch(recorded: &serde_json::Value, m: &Manifest) -> Option<String> {
    let text = |k: &str| recorded.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    if recorded.get("trash").and_then(|v| v.as_u64()) != Some(m.seq) {
        return Some("another entry".into());
    }
    if recorded.get("action") != Some(&json!(m.action)) {
        return Some("the action".into());
    }
    if text("path").as_deref() != Some(m.host_path().to_string_lossy().as_ref()) {
        return Some("the path".into());
    }
    if text("moved_to") != m.moved_to {
        return Some("the destination of the move".into());
    }
    if text("moved_sha256") != m.moved_sha256 {
        return Some("what the move put at its destination".into());
    }
    if text("left_sha256") != m.left_sha256 {
        return Some("what the call left".into());
    }
    if let Some(k) = &m.kept {
        if text("sha256").as_deref() != Some(k.sha256.as_str()) || !k.is_consistent() {
            return Some("the content hash".into());
        }
    } else if m.action != Action::Move {
        return Some("it keeps nothing".into());
    }
    None
}

/// A sandbox over the entry's root (and the root of a move's destination),
/// without protected-path rules: undo is a human's act, and restores only
/// where the entry says, but never through a symlink out of that root.
fn sandbox_for(m: &Manifest) -> Result<Sandbox> {
    let mut roots = vec![m.root.clone()];
    if let Some(to) = &m.moved_to
        && !Path::new(to).starts_with(&m.root)
        && let Some(parent) = Path::new(to).parent()
    {
        roots.push(parent.to_path_buf());
    }
    Sandbox::open(&roots, SandboxOptions { rules: Rules::none(), max_read: u64::MAX })
        .with_context(|| format!("opening {}", m.root.display()))
}

fn text(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", p.display()))
}

fn plan(ctx: &Ctx<'_>, trash: &Trash, manifest: Manifest, force: bool, unverified: bool) -> Result<Plan> {
    let seq = manifest.seq;
    let mut forced = Vec::new();
    let refuse = |problem: String, forced: &mut Vec<String>| -> Result<()> {
        if force {
            forced.push(problem);
            Ok(())
        } else {
            eprintln!("mcpsec: refused: {}", escape(&problem));
            Err(Failed.into())
        }
    };
    // The audit log is tamper-evident; the trash is only private. The entry
    // must be what the call's result record says it kept, where it says.
    let (_, result) = call_records(ctx.audit_path, seq)?;
    let recorded = result.as_ref().and_then(|r| r.details.as_ref()).and_then(|d| d.get("undo"));
    match recorded {
        None if unverified => forced.push(format!("no audit record vouches for trash entry {seq}")),
        None => {
            eprintln!(
                "mcpsec: refused: the audit log has no result record of call {seq} naming this trash entry (did the \
                 call finish? was the log rotated away?), so the entry cannot be checked against it. \
                 --danger-unverified restores it anyway"
            );
            return Err(Failed.into());
        }
        Some(r) => {
            if let Some(problem) = mismatch(r, &manifest) {
                eprintln!(
                    "mcpsec: refused: trash entry {seq} does not match what audit record {} says the call kept \
                     ({problem}): the entry was altered. Inspect {} by hand",
                    result.as_ref().map_or(0, |r| r.seq),
                    trash.host().join(seq.to_string()).display()
                );
                return Err(Failed.into());
            }
        }
    }
    let sandbox = sandbox_for(&manifest)?;
    let target = manifest.host_path();
    let target_text = text(&target)?;
    if manifest.action == Action::Move {
        let to = manifest.moved_to.as_deref().ok_or_else(|| anyhow!("trash entry {seq}: a move without moved_to"))?;
        let Some(there) = sandbox.describe_current(to)? else {
            eprintln!(
                "mcpsec: refused: {} no longer exists (moved or deleted since), so it cannot be moved back",
                escape(to)
            );
            return Err(Failed.into());
        };
        match &manifest.moved_sha256 {
            Some(moved) if *moved == there.sha256 => {}
            Some(_) => refuse(
                format!(
                    "{to} holds something other than what `{}` moved there (changed or replaced since); --force \
                     moves whatever is there now back to {}",
                    manifest.tool,
                    target.display()
                ),
                &mut forced,
            )?,
            None => refuse(
                format!(
                    "trash entry {seq} does not record what `{}` moved to {to} (written by an older mcpsec), so \
                     undo cannot tell it is still there; --force moves whatever is there now back",
                    manifest.tool
                ),
                &mut forced,
            )?,
        }
        if sandbox.describe_current(target_text)?.is_some() {
            eprintln!(
                "mcpsec: refused: {} exists again, and undo does not replace it on a move; move it aside first",
                escape(target_text)
            );
            return Err(Failed.into());
        }
        return Ok(Plan { manifest, current: None, replaces: false, forced });
    }
    let kept = manifest.kept.as_ref().ok_or_else(|| anyhow!("trash entry {seq} keeps nothing"))?;
    let slot = trash.slot(seq);
    let now = slot.describe().with_context(|| format!("reading trash entry {seq}"))?;
    if !now.same_content(kept) {
        eprintln!(
            "mcpsec: refused: trash entry {seq} changed since it was kept (its content no longer matches its \
             manifest). Inspect {} by hand",
            trash.host().join(seq.to_string()).display()
        );
        return Err(Failed.into());
    }
    let current = sandbox.describe_current(target_text)?;
    let replaces = current.is_some();
    match (&manifest.action, &current) {
        (_, None) => {}
        (Action::Overwrite, Some(c)) if Some(&c.sha256) == manifest.left_sha256.as_ref() => {}
        (Action::Overwrite, Some(_)) => refuse(
            format!(
                "{} changed since `{}` wrote it (its content is not what the call left); --force restores the \
                 old content anyway, keeping the current one in the trash",
                target.display(),
                manifest.tool
            ),
            &mut forced,
        )?,
        (_, Some(_)) => refuse(
            format!(
                "{} exists again since `{}` deleted it; --force replaces it, keeping what is there now in the trash",
                target.display(),
                manifest.tool
            ),
            &mut forced,
        )?,
    }
    Ok(Plan { manifest, current, replaces, forced })
}

/// Does the plan; returns the trash entry that keeps what was replaced,
/// with that entry's hash.
fn restore(trash: &Trash, plan: &Plan, intent_seq: u64) -> Result<Option<(u64, String)>> {
    let m = &plan.manifest;
    let sandbox = sandbox_for(m)?;
    let target = m.host_path();
    let target_text = text(&target)?;
    if m.action == Action::Move {
        let to = m.moved_to.as_deref().unwrap_or_default();
        sandbox.rename(to, target_text)?;
        trash.remove(m.seq)?;
        return Ok(None);
    }
    let kept = m.kept.as_ref().ok_or_else(|| anyhow!("trash entry {} keeps nothing", m.seq))?;
    let slot = trash.slot(m.seq);
    let replace = if plan.replaces { Some(trash.slot(intent_seq)) } else { None };
    let replaced = sandbox.restore(target_text, &m.path, &slot, kept, replace.as_ref())?;
    let mut kept_as = None;
    if let (Some(r), Some(replaced)) = (&replace, replaced) {
        kept_as = Some((r.seq(), replaced.sha256.clone()));
        r.commit(&Manifest {
            v: MANIFEST_VERSION,
            seq: intent_seq,
            time: now_secs(),
            tool: "undo".into(),
            user: Some(crate::os_user()),
            action: Action::Overwrite,
            root: m.root.clone(),
            path: m.path.clone(),
            kept: Some(replaced),
            left_sha256: Some(kept.sha256.clone()),
            moved_to: None,
            moved_sha256: None,
        })?;
    }
    trash.remove(m.seq)?;
    Ok(kept_as)
}
