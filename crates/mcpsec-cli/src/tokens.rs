//! `mcpsec grant`, `mcpsec tokens`, `mcpsec revoke`, `mcpsec init`: the
//! human's side of capability tokens.

#![allow(clippy::print_stdout)]
// It opens /dev/tty to ask for the passphrase: not a tool call.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use clap::Args;
use mcpsec_audit::{AuditLog, EventKind, Outcome, Record};
use mcpsec_caps::key::ServerKey;
use mcpsec_caps::store::{SqliteStore, TokenRecord, TokenStore};
use mcpsec_caps::{GrantRequest, Tokens, unix_ms};
use mcpsec_core::display::escape;
use mcpsec_core::time::rfc3339;
use mcpsec_core::{Capability, Config, units};
use secrecy::{ExposeSecret, SecretString};

use crate::{Failed, usage};

/// The settings key of the grant passphrase's argon2id hash.
const PASSPHRASE_KEY: &str = "grant_passphrase";

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// read_files, write_files, delete_files or execute_shell
    capability: String,
    /// How long the token lives (`60`, `5m`, `1h`) [default: 300s, execute_shell 60s]
    #[arg(long, value_name = "DUR")]
    ttl: Option<String>,
    /// Only paths matching this glob (relative to a root); repeatable
    #[arg(long = "path", value_name = "GLOB")]
    paths: Vec<String>,
    /// How many calls it may authorize
    #[arg(long, value_name = "N")]
    uses: Option<u32>,
    /// Only this user may present it
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// A note shown in `mcpsec tokens`
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
    /// Print {id, token, capability, expires_at, …} as JSON
    #[arg(long)]
    json: bool,
    /// Read the grant passphrase from standard input (for scripts)
    #[arg(long)]
    passphrase_stdin: bool,
}

#[derive(Debug, Args)]
pub struct TokensArgs {
    /// Include expired, used-up and revoked tokens
    #[arg(long)]
    all: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Token ids (from `mcpsec tokens`)
    ids: Vec<String>,
    /// Revoke every active token
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// With --all: only tokens of this capability
    #[arg(long, requires = "all", value_name = "CAP")]
    capability: Option<String>,
    /// Read the grant passphrase from standard input (for scripts)
    #[arg(long)]
    passphrase_stdin: bool,
    /// Print the ids revoked and those not found as JSON
    #[arg(long)]
    json: bool,
}

/// The state a token command works on.
pub struct State {
    pub tokens: Tokens,
    pub audit_path: std::path::PathBuf,
    pub config: Config,
}

/// Opens `mcpsec.db` and `secret.key` in the state directory.
pub fn open_tokens(state: &Path) -> Result<Tokens> {
    with_key(state, SqliteStore::open(&state.join("mcpsec.db"))?)
}

/// As [`open_tokens`], for `serve`: `mcpsec.db` is opened (and checked) at
/// its first use, so a session that never needs it never loads SQLite.
pub fn open_tokens_lazily(state: &Path) -> Result<Tokens> {
    with_key(state, mcpsec_caps::store::LazyStore::new(&state.join("mcpsec.db"))?)
}

/// `store` with `secret.key` from the state directory.
fn with_key(state: &Path, store: impl TokenStore + 'static) -> Result<Tokens> {
    let key = ServerKey::load_or_create(&state.join("secret.key"))?;
    Ok(Tokens::new(Arc::new(store), key))
}

fn parse_capability(text: &str) -> Result<Capability> {
    text.parse::<Capability>().map_err(|e| usage(e.to_string()))
}

/// A record of this CLI run (the OS user; the session names the process).
pub(crate) fn record(event: EventKind) -> Record {
    let mut r = Record::new(event);
    r.user = Some(crate::os_user());
    r.session = Some(format!("cli-{}", std::process::id()));
    r
}

pub(crate) fn audit(state: &State, r: Record) -> Result<()> {
    append_record(&state.audit_path, &state.config, r).map(|_| ())
}

/// Appends one record of this CLI run to the log (synced as the config
/// says); its seq.
pub(crate) fn append_record(audit_path: &Path, config: &Config, r: Record) -> Result<u64> {
    let log = AuditLog::open(audit_path, crate::audit_options(config))?;
    let result = log.append(r).wait();
    log.close();
    Ok(result.context("recording in the audit log")?.seq)
}

/// Reads a passphrase: from stdin with `--passphrase-stdin`, else from the
/// terminal without echo.
fn read_passphrase(prompt: &str, from_stdin: bool) -> Result<SecretString> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the passphrase from stdin")?;
        let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
        line.clear();
        return Ok(SecretString::from(trimmed));
    }
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").map_err(|_| {
        usage("a grant passphrase is set and there is no terminal to ask it on; use --passphrase-stdin")
    })?;
    let mut term = rustix::termios::tcgetattr(&tty).context("reading the terminal mode")?;
    let saved = term.clone();
    term.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &term).context("hiding input")?;
    let mut out = &tty;
    let _ = write!(out, "{prompt}");
    let _ = out.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &saved);
    let _ = writeln!(out);
    read.context("reading the passphrase")?;
    let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
    line.clear();
    Ok(SecretString::from(trimmed))
}

/// When a passphrase is set, asks for it and refuses on a mismatch
/// (audited as an `auth_failure`).
pub(crate) fn require_passphrase(state: &State, from_stdin: bool, action: &str) -> Result<()> {
    let Some(hash) = state.tokens.store().setting(PASSPHRASE_KEY)? else { return Ok(()) };
    // Wrong passphrases have their own limit: after MAX_WRONG within
    // WRONG_WINDOW, no passphrase is even checked until the oldest ages out.
    const MAX_WRONG: usize = 5;
    const WRONG_WINDOW: i64 = 10 * 60 * 1000;
    let now = unix_ms(SystemTime::now());
    let mut recent: Vec<i64> = state
        .tokens
        .store()
        .setting("passphrase_wrong_recent")?
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default();
    recent.retain(|t| now - t < WRONG_WINDOW);
    if recent.len() >= MAX_WRONG {
        let wait_s = (recent.iter().min().copied().unwrap_or(now) + WRONG_WINDOW - now) / 1000 + 1;
        let mut r = record(EventKind::AuthFailure);
        r.outcome = Some(Outcome::RateLimited);
        r.reason = Some(format!("{action}: {MAX_WRONG} wrong grant passphrases in 10 minutes; not checked"));
        audit(state, r)?;
        eprintln!("mcpsec: {MAX_WRONG} wrong passphrases in the last 10 minutes; {action} refused, retry in {wait_s}s");
        return Err(Failed.into());
    }
    let given = read_passphrase("mcpsec grant passphrase: ", from_stdin)?;
    let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("the stored passphrase hash is damaged: {e}"))?;
    if argon2::Argon2::default().verify_password(given.expose_secret().as_bytes(), &parsed).is_ok() {
        if !recent.is_empty() {
            state.tokens.store().set_setting("passphrase_wrong_recent", "[]")?;
        }
        return Ok(());
    }
    recent.push(now);
    state.tokens.store().set_setting("passphrase_wrong_recent", &serde_json::to_string(&recent)?)?;
    let failures: u64 =
        state.tokens.store().setting("passphrase_failures")?.and_then(|v| v.parse().ok()).unwrap_or(0) + 1;
    state.tokens.store().set_setting("passphrase_failures", &failures.to_string())?;
    let mut r = record(EventKind::AuthFailure);
    r.outcome = Some(Outcome::Denied);
    r.reason = Some(format!("wrong grant passphrase for {action} ({failures} failures so far)"));
    audit(state, r)?;
    // Slow down guessing beyond argon2's own cost.
    std::thread::sleep(Duration::from_secs(1));
    eprintln!("mcpsec: wrong passphrase; {action} refused");
    Err(Failed.into())
}

pub fn grant(state: &State, args: GrantArgs) -> Result<()> {
    let capability = parse_capability(&args.capability)?;
    let ttl = match &args.ttl {
        Some(t) => units::parse_duration(t).map_err(|e| usage(format!("--ttl: {e}")))?,
        None => state.config.tokens.default_ttl(capability),
    };
    let max = state.config.tokens.max_ttl(capability);
    if ttl > max {
        return Err(usage(format!(
            "--ttl {}: a {capability} token may live at most {}s ([tokens] max_ttl in the config)",
            args.ttl.as_deref().unwrap_or(""),
            max.as_secs()
        )));
    }
    require_passphrase(state, args.passphrase_stdin, "grant")?;
    let req = GrantRequest {
        capability,
        ttl,
        paths: args.paths.clone(),
        uses: args.uses,
        user: args.user.clone(),
        note: args.note.clone(),
    };
    let now = SystemTime::now();
    let (new, rec) = state.tokens.grant(&req, max, now).map_err(|e| match e {
        mcpsec_caps::GrantError::Invalid(m) => usage(m),
        other => other.into(),
    })?;
    let mut r = record(EventKind::Grant);
    r.capability = Some(capability.as_str().to_owned());
    r.token_id = Some(new.id.clone());
    r.token_fp = Some(mcpsec_caps::token::fingerprint(&new.token));
    r.outcome = Some(Outcome::Ok);
    r.details = Some(details(&rec));
    if let Err(e) = audit(state, r) {
        // A grant that is not on record must not be usable.
        let _ = state.tokens.store().revoke(std::slice::from_ref(&new.id), unix_ms(SystemTime::now()));
        return Err(e.context("the grant could not be recorded, so the token was revoked"));
    }
    let expires = rfc3339(now + ttl);
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = details(&rec);
        v["token"] = serde_json::Value::String(new.token.expose_secret().to_owned());
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{}", new.token.expose_secret())?;
        let granted = format!(
            "granted {capability} token {} until {expires} ({}s){}{}{}",
            new.id,
            ttl.as_secs(),
            if args.paths.is_empty() { String::new() } else { format!(", paths {}", args.paths.join(" ")) },
            args.uses.map(|u| format!(", {u} use(s)")).unwrap_or_default(),
            args.user.as_deref().map(|u| format!(", for user {u}")).unwrap_or_default(),
        );
        eprintln!("{}", escape(&granted));
    }
    Ok(())
}

fn details(t: &TokenRecord) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "capability": t.capability.as_str(),
        "created_at": rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(t.created_ms.max(0) as u64)),
        "expires_at": rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(t.expires_ms.max(0) as u64)),
        "paths": t.paths,
        "uses_left": t.uses_left,
        "user": t.user,
        "note": t.note,
        "revoked": t.revoked_ms.is_some(),
    })
}

fn status(t: &TokenRecord, now_ms: i64) -> &'static str {
    if t.revoked_ms.is_some() {
        "revoked"
    } else if t.expires_ms <= now_ms {
        "expired"
    } else if t.uses_left == Some(0) {
        "used up"
    } else {
        "active"
    }
}

pub fn list(state: &State, args: TokensArgs) -> Result<()> {
    let now_ms = unix_ms(SystemTime::now());
    let tokens = state.tokens.store().list(args.all, now_ms)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let items: Vec<_> = tokens
            .iter()
            .map(|t| {
                let mut v = details(t);
                v["status"] = status(t, now_ms).into();
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(items))?;
        return Ok(());
    }
    if tokens.is_empty() {
        eprintln!("no {}tokens", if args.all { "" } else { "active " });
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let left = (t.expires_ms - now_ms).max(0) / 1000;
            let expires = if left >= 3600 {
                format!("{}h{}m", left / 3600, left % 3600 / 60)
            } else {
                format!("{}m{}s", left / 60, left % 60)
            };
            vec![
                t.id.clone(),
                t.capability.as_str().to_owned(),
                status(t, now_ms).to_owned(),
                expires,
                t.uses_left.map_or("-".to_string(), |u| u.to_string()),
                escape(t.user.as_deref().unwrap_or("any")).into_owned(),
                if t.paths.is_empty() { "any".to_string() } else { escape(&t.paths.join(" ")).into_owned() },
                escape(t.note.as_deref().unwrap_or_default()).into_owned(),
            ]
        })
        .collect();
    crate::table::print(
        &mut out,
        &["ID", "CAPABILITY", "STATUS", "EXPIRES IN", "USES", "USER", "PATHS", "NOTE"],
        &rows,
    )?;
    Ok(())
}

pub fn revoke(state: &State, args: RevokeArgs) -> Result<()> {
    let now_ms = unix_ms(SystemTime::now());
    let revoked = if args.all {
        let capability = args.capability.as_deref().map(parse_capability).transpose()?;
        require_passphrase(state, args.passphrase_stdin, "revoke --all")?;
        state.tokens.store().revoke_all(capability, now_ms)?
    } else {
        if args.ids.is_empty() {
            return Err(usage("name the token ids to revoke (see `mcpsec tokens`), or pass --all"));
        }
        state.tokens.store().revoke(&args.ids, now_ms)?
    };
    for id in &revoked {
        let mut r = record(EventKind::Revoke);
        r.token_id = Some(id.clone());
        r.outcome = Some(Outcome::Ok);
        audit(state, r)?;
    }
    let missing: Vec<&String> = args.ids.iter().filter(|i| !revoked.contains(i)).collect();
    if args.json {
        println!("{}", serde_json::json!({ "revoked": revoked, "not_found": missing }));
    } else {
        eprintln!("revoked {} token(s){}", revoked.len(), if revoked.is_empty() { "" } else { ":" });
        for id in &revoked {
            println!("{id}");
        }
    }
    if !missing.is_empty() {
        let missing = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
        eprintln!("not found or already revoked: {}", escape(&missing));
        return Err(Failed.into());
    }
    Ok(())
}

/// Whether a grant passphrase is set.
pub fn passphrase_is_set(state: &State) -> Result<bool> {
    Ok(state.tokens.store().setting(PASSPHRASE_KEY)?.is_some())
}

/// Sets (or, after asking for the current one, replaces) the grant
/// passphrase: from stdin with `from_stdin`, else asked twice on the terminal.
pub fn set_passphrase(state: &State, from_stdin: bool) -> Result<()> {
    if state.tokens.store().setting(PASSPHRASE_KEY)?.is_some() {
        require_passphrase(state, from_stdin, "changing the passphrase")?;
    }
    let first = read_passphrase("new grant passphrase: ", from_stdin)?;
    if !from_stdin && std::io::stdin().is_terminal() {
        let again = read_passphrase("again: ", false)?;
        if again.expose_secret() != first.expose_secret() {
            return Err(usage("the passphrases differ; nothing was changed"));
        }
    }
    if first.expose_secret().chars().count() < 8 {
        return Err(usage("the passphrase must be at least 8 characters"));
    }
    let mut salt_bytes = [0u8; 16];
    rustix::rand::getrandom(&mut salt_bytes, rustix::rand::GetRandomFlags::empty()).context("reading randomness")?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(first.expose_secret().as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the passphrase: {e}"))?
        .to_string();
    state.tokens.store().set_setting(PASSPHRASE_KEY, &hash)?;
    state.tokens.store().set_setting("passphrase_failures", "0")?;
    eprintln!("grant passphrase set: `mcpsec grant` and `mcpsec revoke --all` now ask for it");
    Ok(())
}
