//! `mcpsec doctor`: checks an installation and says how to fix what is wrong.
//!
//! Each check yields one [`Finding`]: `ok`, `info` (worth knowing, not
//! wrong), or `fail` (with the fix). Any `fail` makes the exit code 1.

#![allow(clippy::print_stdout)]
// Inspecting mcpsec's own config, roots and state: not tool calls.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use mcpsec_core::Config;
use serde::Serialize;

use crate::{Failed, Global};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also check this root (as `serve --root` would get it; repeatable)
    #[arg(long = "root", value_name = "DIR")]
    roots: Vec<PathBuf>,
    /// Print the findings as JSON (schema in docs/json.md)
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Info,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    /// A stable name: config, root, state_dir, key_file, db_file, database,
    /// audit_log, audit_chain, audit_sync, openat2, confine, trash, trash_index.
    check: &'static str,
    status: Status,
    message: String,
    /// What to do about it (fail, and some info findings).
    fix: Option<String>,
}

fn ok(check: &'static str, message: impl Into<String>) -> Finding {
    Finding { check, status: Status::Ok, message: message.into(), fix: None }
}

fn info(check: &'static str, message: impl Into<String>, fix: Option<String>) -> Finding {
    Finding { check, status: Status::Info, message: message.into(), fix }
}

fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { check, status: Status::Fail, message: message.into(), fix: Some(fix.into()) }
}

pub fn run(global: &Global, args: DoctorArgs) -> Result<()> {
    let mut findings = Vec::new();
    let config = check_config(global, &args, &mut findings);
    if let Some(config) = &config {
        findings.push(check_sync(config));
    }
    match crate::state_dir(global) {
        Ok(dir) => check_state(&dir, config.as_ref(), &mut findings),
        Err(e) => findings.push(fail("state_dir", format!("{e:#}"), "pass --state-dir DIR or set MCPSEC_STATE_DIR")),
    }
    findings.push(check_openat2());
    findings.push(check_confine(config.as_ref()));
    let failed = findings.iter().any(|f| f.status == Status::Fail);
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({ "ok": !failed, "findings": findings });
        writeln!(out, "{v}")?;
    } else {
        let rows: Vec<Vec<String>> = findings
            .iter()
            .map(|f| {
                let status = match f.status {
                    Status::Ok => "ok",
                    Status::Info => "info",
                    Status::Fail => "FAIL",
                };
                let mut text = f.message.clone();
                if let Some(fix) = &f.fix {
                    text.push_str(&format!("\nfix: {fix}"));
                }
                vec![status.to_owned(), f.check.to_owned(), text]
            })
            .collect();
        crate::table::print(&mut out, &["STATUS", "CHECK", "FINDING"], &rows)?;
        let fails = findings.iter().filter(|f| f.status == Status::Fail).count();
        writeln!(
            out,
            "{}",
            if fails == 0 { "no problems found".to_owned() } else { format!("{fails} problem(s) found") }
        )?;
    }
    if failed { Err(Failed.into()) } else { Ok(()) }
}

/// The config file and the roots it (and `--root`) names.
fn check_config(global: &Global, args: &DoctorArgs, findings: &mut Vec<Finding>) -> Option<Config> {
    let (config, file) = match crate::load_config(global) {
        Ok(c) => c,
        Err(e) => {
            findings.push(fail(
                "config",
                format!("{e:#}"),
                "correct the key it names (docs/configuration.md lists every key), \
                 or `mcpsec init --force` to start again from the commented defaults",
            ));
            return None;
        }
    };
    findings.push(match &file {
        // The policy lives here: a file others can change is a policy others can change.
        Some(p) => match std::fs::metadata(p).map(|m| mode_of(&m)) {
            Ok(mode) if mode & 0o022 != 0 => fail(
                "config",
                format!("{} is valid, but has mode {mode:04o}: other users can change the policy", p.display()),
                format!("chmod go-w {}", p.display()),
            ),
            _ => ok("config", format!("{} is valid", p.display())),
        },
        None => info("config", "no config file: the built-in defaults apply", Some("`mcpsec init` writes one".into())),
    });
    let base = file.as_deref().and_then(Path::parent).unwrap_or(Path::new("."));
    let roots: Vec<PathBuf> = config.roots.iter().map(|r| base.join(r)).chain(args.roots.iter().cloned()).collect();
    if roots.is_empty() {
        findings.push(info(
            "root",
            "no roots in the config: `serve` needs `--root DIR`",
            Some("add `roots = [\"/path/to/workspace\"]` to the config, or pass --root".into()),
        ));
    }
    for root in roots {
        findings.push(match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => ok("root", format!("{} is a directory", root.display())),
            Ok(_) => fail(
                "root",
                format!("{} is not a directory", root.display()),
                "point the root at a directory (roots in the config, or --root)",
            ),
            Err(e) => fail(
                "root",
                format!("{}: {e}", root.display()),
                format!("create it (`mkdir -p {}`) or remove it from the roots", root.display()),
            ),
        });
    }
    Some(config)
}

fn mode_of(meta: &std::fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o777
}

/// The state directory, its files' modes, the database and the audit log.
fn check_state(dir: &Path, config: Option<&Config>, findings: &mut Vec<Finding>) {
    let shown = dir.display();
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(_) => {
            findings.push(info(
                "state_dir",
                format!("{shown} does not exist yet"),
                Some("`mcpsec init` (or the first `serve` or `grant`) creates it, mode 0700".into()),
            ));
            return;
        }
    };
    let uid = rustix::process::getuid().as_raw();
    if !meta.is_dir() {
        findings.push(fail(
            "state_dir",
            format!("{shown} is not a directory"),
            "move it away, or pass --state-dir DIR",
        ));
        return;
    }
    let mode = mode_of(&meta);
    findings.push(if meta.uid() != uid {
        fail(
            "state_dir",
            format!("{shown} belongs to uid {}, not to you (uid {uid})", meta.uid()),
            "use a state directory of your own (--state-dir)",
        )
    } else if mode & 0o077 != 0 {
        fail(
            "state_dir",
            format!("{shown} has mode {mode:04o}: other users can look into it"),
            format!("chmod 700 {shown}"),
        )
    } else {
        ok("state_dir", format!("{shown} (mode {mode:04o})"))
    });

    let key = dir.join("secret.key");
    findings.push(private_file("key_file", &key, "the token MAC key", true));
    let db = dir.join("mcpsec.db");
    findings.push(private_file("db_file", &db, "the token database", false));
    if db.exists() {
        findings.push(match mcpsec_caps::store::SqliteStore::integrity_check(&db) {
            Ok(problems) if problems.is_empty() => ok("database", "integrity_check: ok"),
            Ok(problems) => fail("database", format!("integrity_check: {}", problems.join("; ")), database_fix(&db)),
            Err(e) => fail("database", e.to_string(), database_fix(&db)),
        });
    }

    let log = crate::audit_path(dir, config.cloned().as_ref().unwrap_or(&Config::default()));
    if log.exists() {
        findings.push(private_file("audit_log", &log, "the audit log", false));
    }
    findings.push(check_chain(&log));
    findings.push(check_trash(&dir.join("trash")));
    // The trash's index of manifests, read-only: a damaged one refuses
    // every call that would keep something, so say so before a call does.
    let index = dir.join("trash").join("index.db");
    if index.exists() {
        findings.push(match mcpsec_caps::store::SqliteStore::integrity_check(&index) {
            Ok(problems) if problems.is_empty() => ok("trash_index", "integrity_check: ok"),
            Ok(problems) => {
                fail("trash_index", format!("integrity_check: {}", problems.join("; ")), trash_index_fix(&index))
            }
            Err(e) => fail("trash_index", e.to_string(), trash_index_fix(&index)),
        });
    }
}

fn trash_index_fix(index: &Path) -> String {
    format!(
        "stop mcpsec and keep the damaged index for investigation (`mv {0} {0}.damaged`, and its -wal and -shm files \
         beside it); the next call that keeps something creates an empty one. Until then, deleting or overwriting is \
         refused while undo is on. The kept objects stay in the trash, listed as incomplete; their audit records \
         (`details.undo`) say what each one held",
        index.display()
    )
}

fn database_fix(db: &Path) -> String {
    format!(
        "stop mcpsec, keep the damaged file for investigation (`mv {0} {0}.damaged`); the next start creates an \
         empty database: tokens must be granted again and the grant passphrase set again (`mcpsec init --passphrase`)",
        db.display()
    )
}

/// A file that must be 0600 (and, for the key, exist only as a regular file).
fn private_file(check: &'static str, path: &Path, what: &str, must_exist: bool) -> Finding {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Err(_) if must_exist => info(
            check,
            format!("{shown} ({what}) does not exist yet"),
            Some("it is created (0600) by the first `mcpsec grant` or `serve`".into()),
        ),
        Err(_) => info(check, format!("{shown} ({what}) does not exist yet"), None),
        Ok(m) if !m.is_file() => {
            fail(check, format!("{shown} ({what}) is not a regular file"), format!("remove {shown}"))
        }
        Ok(m) if mode_of(&m) & 0o077 != 0 => fail(
            check,
            format!("{shown} ({what}) has mode {:04o}: other users can read it", mode_of(&m)),
            if check == "key_file" {
                format!(
                    "chmod 600 {shown}; then, as anyone could have copied the key, revoke every token \
                     (`mcpsec revoke --all`) and replace the key (stop mcpsec, remove {shown}, grant again)"
                )
            } else {
                format!("chmod 600 {shown}")
            },
        ),
        Ok(m) => ok(check, format!("{shown} (mode {:04o})", mode_of(&m))),
    }
}

/// `audit verify` without a checkpoint.
fn check_chain(log: &Path) -> Finding {
    let mut progress = |_: u64, _: u64| {};
    match mcpsec_audit::verify(log, None, &mut progress) {
        Ok(r) if r.files.is_empty() => info("audit_chain", format!("no audit log at {} yet", log.display()), None),
        Ok(r) => ok("audit_chain", format!("{} records, hash chain intact", r.records)),
        Err(mcpsec_audit::VerifyError::Problem(p)) => fail(
            "audit_chain",
            format!("the hash chain is broken: {p}"),
            "treat it as an incident: keep a copy of the log, find out who changed it (docs/incident-response.md); \
             `mcpsec audit verify` names the first bad record",
        ),
        Err(e) => fail("audit_chain", e.to_string(), "make the audit log readable by this user"),
    }
}

/// `[audit] sync`: when records reach the disk, and what a crash can lose.
fn check_sync(config: &Config) -> Finding {
    let message = format!("[audit] sync = {}", crate::audit::durability(config.audit.sync));
    match config.audit.sync {
        mcpsec_core::AuditSync::Always | mcpsec_core::AuditSync::Changes(_) => ok("audit_sync", message),
        // The records of changes wait for no sync: worth knowing.
        mcpsec_core::AuditSync::Batch(_) => info(
            "audit_sync",
            message,
            Some(
                "if a change's record must be on disk before it acts, set [audit] sync = \"changes\" (the default) \
                 or \"always\""
                    .into(),
            ),
        ),
    }
}

/// Whether the kernel offers `openat2(2)` (`RESOLVE_BENEATH`), the fast
/// path of the sandbox's resolution.
fn check_openat2() -> Finding {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    match rustix::fs::openat2(
        rustix::fs::CWD,
        ".",
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH,
    ) {
        Ok(_) => ok("openat2", "the kernel offers openat2 with RESOLVE_BENEATH"),
        Err(e) => info(
            "openat2",
            format!("openat2 is not available ({e}): cap-std resolves paths with its slower portable fallback"),
            Some("no action needed; the sandbox is as strict, only slower (Linux 5.6 or later has openat2)".into()),
        ),
    }
}

/// What this kernel enforces of the confinement of the processes mcpsec
/// starts: measured by starting one (`__confine-exec --report` applies the
/// rules to itself and says what holds).
fn check_confine(config: Option<&Config>) -> Finding {
    use mcpsec_core::confine::ConfineMode;
    let mode = config.map(|c| c.confine.mode).unwrap_or_default();
    let policy = mcpsec_confine::Policy {
        mode: mcpsec_confine::Mode::BestEffort,
        read: mcpsec_confine::default_read(),
        write: Vec::new(),
        network: mcpsec_confine::Network::None,
        limits: mcpsec_confine::Limits::default(),
        test_only_pretend_no_landlock: cfg!(debug_assertions)
            && std::env::var_os("MCPSEC_TEST_ONLY_PRETEND_NO_LANDLOCK").is_some_and(|v| v == "1"),
    };
    let report = std::env::current_exe().map_err(|e| e.to_string()).and_then(|exe| {
        let json = serde_json::to_string(&policy).map_err(|e| e.to_string())?;
        let out = std::process::Command::new(exe)
            .args([mcpsec_confine::SUBCOMMAND, "--policy", &json, "--report"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        serde_json::from_slice::<mcpsec_confine::Report>(&out.stdout)
            .map_err(|_| String::from_utf8_lossy(&out.stderr).trim().to_owned())
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            return fail("confine", format!("a confined process could not be started: {e}"), "report this as a bug");
        }
    };
    let mut holds = vec!["no_new_privs"];
    if report.landlock_abi >= 1 {
        holds.push("file rules");
    }
    if report.landlock_abi >= 4 {
        holds.push("TCP rules");
    }
    if report.landlock_abi >= 6 {
        holds.push("signal and abstract-socket scoping");
    }
    if report.seccomp {
        holds.push("the seccomp filter");
    }
    if report.limits {
        holds.push("resource limits");
    }
    let what = format!("Landlock ABI {}; what holds: {}", report.landlock_abi, holds.join(", "));
    if report.missing.is_empty() {
        return match mode {
            ConfineMode::Off => info(
                "confine",
                format!("{what}; but [confine] mode = \"off\": programs and upstreams run unconfined"),
                Some("set [confine] mode = \"required\" (the default)".into()),
            ),
            _ => ok("confine", format!("{what}: every rule of [confine] is enforced")),
        };
    }
    let missing = format!("{what}; not enforced: {}", report.missing.join("; "));
    match mode {
        ConfineMode::Required => fail(
            "confine",
            format!("{missing}: with [confine] mode = \"required\", execute_command refuses and gateways do not start"),
            "run on Linux 6.12 or later with Landlock enabled (lsm=landlock), or set [confine] mode = \"best_effort\"",
        ),
        _ => info("confine", missing, None),
    }
}

/// What `trash/` holds (what destructive calls removed, kept for undo).
fn check_trash(dir: &Path) -> Finding {
    fn walk(dir: &Path, total: &mut u64, files: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else { continue };
            if m.is_dir() {
                walk(&e.path(), total, files);
            } else {
                *total += m.len();
                *files += 1;
            }
        }
    }
    if !dir.is_dir() {
        return info("trash", format!("{} does not exist (nothing kept for undo)", dir.display()), None);
    }
    let (mut total, mut files) = (0, 0);
    walk(dir, &mut total, &mut files);
    info("trash", format!("{}: {files} file(s), {}", dir.display(), mcpsec_core::units::format_size(total)), None)
}
