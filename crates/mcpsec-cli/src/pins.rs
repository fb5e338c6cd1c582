//! `mcpsec pins`: the human's side of tool pinning (see `mcpsec proxy`).

#![allow(clippy::print_stdout)]

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Subcommand};
use mcpsec_audit::{EventKind, Outcome};
use mcpsec_caps::pins::{Approval, Pin, Pins};
use mcpsec_caps::unix_ms;
use mcpsec_core::display::escape;
use mcpsec_core::time::rfc3339;

use crate::{Failed, Global, usage};

#[derive(Debug, Subcommand)]
pub enum PinsCommand {
    /// List the pinned tools of upstream servers, and those withheld.
    List(ListArgs),
    /// Show how a withheld tool differs from the approved definition.
    Diff(ToolArgs),
    /// Approve a withheld tool's definition, the one reviewed (a running proxy offers it at once).
    Approve(ApproveArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this upstream
    upstream: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ToolArgs {
    /// The upstream's name (`mcpsec proxy --name NAME`)
    upstream: String,
    /// The tool
    tool: String,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    which: ToolArgs,
    /// Approve only the definition with this hash, as `mcpsec pins diff` prints it (needed when stdin
    /// is not a terminal; on a terminal the pending definition is shown and confirmed instead)
    #[arg(long, value_name = "HASH")]
    hash: Option<String>,
    /// Read the grant passphrase from standard input (for scripts)
    #[arg(long)]
    passphrase_stdin: bool,
}

pub fn run(global: &Global, command: PinsCommand) -> Result<()> {
    let state = crate::state_dir(global)?;
    crate::ensure_state_dir(&state)?;
    let pins = Pins::new(Arc::new(mcpsec_caps::store::SqliteStore::open(&state.join("mcpsec.db"))?));
    match command {
        PinsCommand::List(args) => list(&pins, &args),
        PinsCommand::Diff(args) => diff(&pins, &args),
        PinsCommand::Approve(args) => approve(global, &pins, &args),
    }
}

fn status(p: &Pin) -> &'static str {
    match (&p.hash, &p.pending_hash) {
        (None, _) => "new (held)",
        (Some(_), Some(_)) => "changed (held)",
        (Some(_), None) => "approved",
    }
}

fn ts(ms: Option<i64>) -> Option<String> {
    ms.map(|ms| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)))
}

fn list(pins: &Pins, args: &ListArgs) -> Result<()> {
    let all = pins.list(args.upstream.as_deref())?;
    if args.json {
        let items: Vec<serde_json::Value> = all
            .iter()
            .map(|p| {
                serde_json::json!({
                    "upstream": p.upstream,
                    "tool": p.tool,
                    "status": status(p).split(' ').next().unwrap_or_default(),
                    "held": p.is_held(),
                    "hash": p.hash,
                    "pending_hash": p.pending_hash,
                    "approved_at": ts(p.approved_ms),
                    "pending_since": ts(p.pending_since_ms),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if all.is_empty() {
        eprintln!("no tool pins yet: `mcpsec proxy --name NAME -- CMD…` pins an upstream's tools on its first run");
        return Ok(());
    }
    println!("{:<16} {:<32} {:<15} HASH", "UPSTREAM", "TOOL", "STATUS");
    for p in &all {
        let hash = p.pending_hash.as_ref().or(p.hash.as_ref()).map(|h| &h[..h.len().min(12)]).unwrap_or("");
        println!("{:<16} {:<32} {:<15} {hash}", escape(&p.upstream), escape(&p.tool), status(p));
    }
    let held = all.iter().filter(|p| p.is_held()).count();
    if held > 0 {
        eprintln!(
            "{held} tool(s) withheld: review with `mcpsec pins diff UPSTREAM TOOL`, allow with `mcpsec pins approve UPSTREAM TOOL`"
        );
    }
    Ok(())
}

fn find(pins: &Pins, args: &ToolArgs) -> Result<Pin> {
    pins.get(&args.upstream, &args.tool)?.ok_or_else(|| {
        usage(format!(
            "no pin for the tool `{}` of the upstream `{}`; `mcpsec pins list` shows what there is",
            args.tool, args.upstream
        ))
    })
}

fn diff(pins: &Pins, args: &ToolArgs) -> Result<()> {
    let pin = find(pins, args)?;
    let (Some(_), Some(hash)) = (&pin.pending_definition, &pin.pending_hash) else {
        let old = pin.definition.as_deref().unwrap_or_default();
        println!(
            "{}/{}: approved; nothing is pending. The approved definition:",
            escape(&pin.upstream),
            escape(&pin.tool)
        );
        for line in old.lines() {
            println!("{}", escape(line));
        }
        return Ok(());
    };
    show(&pin);
    println!(
        "\napprove exactly this definition with `mcpsec pins approve {} {} --hash {hash}`",
        pin.upstream, pin.tool
    );
    Ok(())
}

/// Prints how the pending definition differs from the approved one, with
/// the pending one's hash (the one `approve --hash` takes).
fn show(pin: &Pin) {
    let old = pin.definition.clone().unwrap_or_default();
    let new = pin.pending_definition.clone().unwrap_or_default();
    let old_label = match ts(pin.approved_ms) {
        Some(t) => format!("approved ({t})"),
        None => "approved (none: a new tool)".to_owned(),
    };
    let (upstream, tool) = (escape(&pin.upstream), escape(&pin.tool));
    println!("--- {upstream}/{tool} {old_label}");
    println!("+++ {upstream}/{tool} pending (seen {})", ts(pin.pending_since_ms).unwrap_or_default());
    let text_diff = similar::TextDiff::from_lines(&old, &new);
    for change in text_diff.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => ' ',
        };
        // Shown escaped: the definition comes from the upstream and may carry
        // terminal escapes or invisible characters meant to hide in this very view.
        println!("{sign}{}", escape(change.value().trim_end_matches('\n')));
    }
    println!("pending sha256:{}", pin.pending_hash.as_deref().unwrap_or_default());
}

/// Approves the definition a human reviewed, never another: the one named
/// by `--hash`, or (on a terminal, without it) the one shown and confirmed
/// here. Without a terminal and without `--hash`, nothing was reviewed, and
/// nothing is approved.
fn approve(global: &Global, pins: &Pins, args: &ApproveArgs) -> Result<()> {
    let pin = find(pins, &args.which)?;
    let Some(pending) = pin.pending_hash.clone() else {
        eprintln!("mcpsec: {}/{} is approved already; nothing is pending", pin.upstream, pin.tool);
        return Err(Failed.into());
    };
    let (name, tool) = (&pin.upstream, &pin.tool);
    let state = crate::token_state(global)?;
    let reviewed = match &args.hash {
        // As `pins diff` prints it, with or without its `sha256:` label.
        Some(h) => {
            let h = h.trim().to_ascii_lowercase();
            h.strip_prefix("sha256:").map_or(h.clone(), str::to_owned)
        }
        None if std::io::stdin().is_terminal() && !args.passphrase_stdin => {
            show(&pin);
            eprint!("approve exactly this definition of {name}/{tool}? [y/N] ");
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                eprintln!("mcpsec: not approved");
                return Err(Failed.into());
            }
            pending.clone()
        }
        None => {
            return Err(usage(format!(
                "which definition? Without a terminal to show it on, mcpsec approves only the definition named by \
                 its hash: review it with `mcpsec pins diff {name} {tool}`, then run the `mcpsec pins approve {name} \
                 {tool} --hash HASH` it prints"
            )));
        }
    };
    if reviewed != pending {
        return refuse_changed(&state, &pin, &reviewed, &pending);
    }
    // Approving a tool lets a model use it: the same human check as a grant.
    crate::tokens::require_passphrase(&state, args.passphrase_stdin, "pins approve")?;
    let approved = match pins.approve(name, tool, &reviewed, unix_ms(std::time::SystemTime::now()))? {
        Approval::Approved(pin) => pin,
        Approval::Differs { pending } => return refuse_changed(&state, &pin, &reviewed, &pending),
        Approval::NothingPending => {
            eprintln!("mcpsec: {name}/{tool} is approved already; nothing is pending");
            return Err(Failed.into());
        }
    };
    let mut r = crate::tokens::record(EventKind::PinApprove);
    r.tool = Some(format!("{name}/{tool}"));
    r.outcome = Some(Outcome::Ok);
    r.details = Some(serde_json::json!({
        "upstream": name,
        "tool": tool,
        "previous_hash": pin.hash,
        "approved_hash": approved.hash,
    }));
    crate::tokens::audit(&state, r)?;
    eprintln!("approved {name}/{tool}: a running `mcpsec proxy --name {name}` offers it from its next call");
    Ok(())
}

/// The pending definition is not the one reviewed: refused, audited.
fn refuse_changed(state: &crate::tokens::State, pin: &Pin, reviewed: &str, pending: &str) -> Result<()> {
    let (name, tool) = (&pin.upstream, &pin.tool);
    let mut r = crate::tokens::record(EventKind::PinApprove);
    r.tool = Some(format!("{name}/{tool}"));
    r.outcome = Some(Outcome::Denied);
    r.reason = Some("the pending definition is not the one reviewed".into());
    r.details = Some(serde_json::json!({
        "upstream": name,
        "tool": tool,
        "reviewed_hash": mcpsec_audit::redact::redact_and_truncate(reviewed, 80),
        "pending_hash": pending,
    }));
    crate::tokens::audit(state, r)?;
    eprintln!(
        "mcpsec: not approved: the pending definition of {name}/{tool} (sha256:{pending}) is not the one reviewed \
         (sha256:{reviewed}); the upstream may have changed it since. Review it again with `mcpsec pins diff {name} \
         {tool}`"
    );
    Err(Failed.into())
}
