//! `mcpsec`: the command line.
//!
//! **Architecture invariant:** this is the only crate that knows clap,
//! terminals, the environment and exit codes (0 success, 1 the operation
//! failed, 2 usage or configuration error). It turns flags, environment and
//! the config file into options for the library crates and runs them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use mcpsec_core::{Config, Principal};

/// The default feature `mimalloc`: faster under HTTP load (see Cargo.toml).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audit;
mod client_config;
mod completions;
mod confine;
mod confine_exec;
mod doctor;
mod init;
mod passwd;
mod pins;
mod proxy;
mod table;
mod tokens;
mod undo;
mod users;

/// A secure-by-default MCP server for filesystem tools.
#[derive(Debug, Parser)]
#[command(name = "mcpsec", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// The state directory [default: $XDG_STATE_HOME/mcpsec]
    #[arg(long, env = "MCPSEC_STATE_DIR", global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The config file [default: $XDG_CONFIG_HOME/mcpsec/mcpsec.toml when it exists]
    #[arg(long, env = "MCPSEC_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the MCP server (stdio, or streamable HTTP with --http).
    Serve(ServeArgs),
    /// Run a gateway in front of another stdio MCP server: `mcpsec proxy --name NAME -- CMD [ARGS...]`.
    Proxy(proxy::ProxyArgs),
    /// Review and approve the tool definitions of upstream servers.
    #[command(subcommand)]
    Pins(pins::PinsCommand),
    /// Mint a capability token (printed once, alone on stdout).
    Grant(tokens::GrantArgs),
    /// List capability tokens (never their secrets).
    Tokens(tokens::TokensArgs),
    /// Revoke capability tokens.
    Revoke(tokens::RevokeArgs),
    /// Manage the users of the HTTP transport and their keys.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Write the commented default config, create the state directory, offer a grant passphrase.
    Init(init::InitArgs),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Restore what a destructive call removed or overwrote.
    Undo(undo::UndoArgs),
    /// Inspect or empty the trash that undo restores from.
    #[command(subcommand)]
    Trash(undo::TrashCommand),
    /// Print the snippet that adds mcpsec to an MCP client (absolute paths).
    ClientConfig(client_config::ClientConfigArgs),
    /// Check the config, roots, state directory, database and audit log; say how to fix what is wrong.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
    /// Write the man pages, one per subcommand.
    Man(completions::ManArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// A directory the tools may use (repeatable; adds to `roots` in the config).
    #[arg(long = "root", value_name = "DIR")]
    roots: Vec<PathBuf>,
    /// The principal every call is made for [default: the OS user] (stdio only).
    #[arg(long, value_name = "NAME", conflicts_with = "http")]
    user: Option<String>,
    #[command(flatten)]
    http: HttpArgs,
}

/// `--http` and its TLS options, the same for `serve` and `proxy`.
#[derive(Debug, Args)]
pub(crate) struct HttpArgs {
    /// Serve MCP streamable HTTP at http://ADDR/mcp instead of stdio (e.g. 127.0.0.1:8787);
    /// every request needs the key of a user (`mcpsec users add`).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires_all = ["http", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["http", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Allow --http on a non-loopback address without TLS: keys and data cross the network in clear.
    #[arg(long, requires = "http", conflicts_with = "tls_cert")]
    danger_plaintext: bool,
}

/// An error that is the caller's to fix (exit code 2).
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// A check that found a problem and already said so (exit code 1, no
/// further message).
#[derive(Debug)]
struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Failed {}

/// `text` for the terminal, line by line through
/// [`mcpsec_core::display::escape`]: a multi-line message (a TOML parse
/// error) keeps its lines, and nothing else in it acts on the terminal.
/// Messages that quote what a model chose escape it themselves, line breaks
/// included.
fn shown(text: &str) -> String {
    text.split('\n').map(mcpsec_core::display::escape).collect::<Vec<_>>().join("\n")
}

fn main() -> ExitCode {
    // The re-executed self that confines a program, before anything else
    // (no logging, no config, no threads: the rules apply to this thread).
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == mcpsec_confine::SUBCOMMAND) {
        return confine_exec::run(args);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap quotes the arguments it refuses, raw on a terminal: with
            // an argument holding a hidden character, its error is shown
            // escaped (its plain text, without colour). Help, version and
            // other errors are printed by clap.
            let hidden = std::env::args_os().any(|a| a.to_string_lossy().chars().any(mcpsec_core::display::is_hidden));
            if e.use_stderr() && hidden {
                eprint!("{}", shown(&e.render().to_string()));
                return ExitCode::from(2);
            }
            e.exit()
        }
    };
    init_logging();
    // Tests make a debug build crash at named points; a release build has none.
    #[cfg(debug_assertions)]
    if let Ok(points) = std::env::var("MCPSEC_FAILPOINTS") {
        mcpsec_core::failpoint::arm(&points);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Failed>().is_some() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mcpsec: {}", shown(&format!("{e:#}")));
            if e.downcast_ref::<UsageError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,mcpsec=info"));
    // rmcp logs every request whole at debug level, a tool's arguments
    // (file contents, secrets) included: a blanket `RUST_LOG=debug` must not
    // put them on stderr. Naming rmcp in RUST_LOG still turns it on.
    let names_rmcp = std::env::var("RUST_LOG").is_ok_and(|s| s.contains("rmcp"));
    if !names_rmcp
        && filter.max_level_hint().is_none_or(|l| l > tracing_subscriber::filter::LevelFilter::INFO)
        && let Ok(cap) = "rmcp=info".parse()
    {
        filter = filter.add_directive(cap);
    }
    // stdout is reserved for JSON-RPC: every log line goes to stderr.
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&cli.global, args),
        Command::Proxy(args) => proxy::run(&cli.global, args),
        Command::Pins(command) => pins::run(&cli.global, command),
        Command::Grant(args) => tokens::grant(&token_state(&cli.global)?, args),
        Command::Tokens(args) => tokens::list(&token_state(&cli.global)?, args),
        Command::Revoke(args) => tokens::revoke(&token_state(&cli.global)?, args),
        Command::Users(command) => users::run(&token_state(&cli.global)?, command),
        Command::Init(args) => init::run(&cli.global, args),
        Command::Audit(command) => {
            let (config, _) = load_config(&cli.global)?;
            let log = audit_path(&state_dir(&cli.global)?, &config);
            audit::run(command, &log, &config)
        }
        Command::Undo(args) => {
            let (config, _) = load_config(&cli.global)?;
            let state = state_dir(&cli.global)?;
            let log = audit_path(&state, &config);
            undo::undo(&undo::Ctx { state: &state, audit_path: &log, config: &config }, args)
        }
        Command::Trash(command) => {
            let (config, _) = load_config(&cli.global)?;
            let state = state_dir(&cli.global)?;
            let log = audit_path(&state, &config);
            undo::trash(&undo::Ctx { state: &state, audit_path: &log, config: &config }, command)
        }
        Command::ClientConfig(args) => client_config::run(&cli.global, args),
        Command::Doctor(args) => doctor::run(&cli.global, args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    }
}

/// Config, state directory, token store and audit path for a token command.
fn token_state(global: &Global) -> Result<tokens::State> {
    let (config, _) = load_config(global)?;
    let state = state_dir(global)?;
    ensure_state_dir(&state)?;
    Ok(tokens::State { tokens: tokens::open_tokens(&state)?, audit_path: audit_path(&state, &config), config })
}

/// The config file to read: the one named, else the default when it exists.
fn config_path(global: &Global) -> Option<PathBuf> {
    if let Some(p) = &global.config {
        return Some(p.clone());
    }
    default_config_path().filter(|p| p.is_file())
}

/// `$XDG_CONFIG_HOME/mcpsec/mcpsec.toml` (`~/.config/mcpsec/mcpsec.toml`),
/// whether it exists or not.
fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("mcpsec").join("mcpsec.toml"))
}

fn load_config(global: &Global) -> Result<(Config, Option<PathBuf>)> {
    let Some(path) = config_path(global) else {
        return Ok((Config::default(), None));
    };
    // The CLI reads its own configuration; this is not a tool call.
    #[allow(clippy::disallowed_methods)]
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading config file {}", path.display()))?;
    let config = Config::from_toml_str(&text).map_err(|e| usage(format!("config file {}: {e}", path.display())))?;
    Ok((config, Some(path)))
}

/// The state directory: `--state-dir`, `MCPSEC_STATE_DIR`, else
/// `$XDG_STATE_HOME/mcpsec` (`~/.local/state/mcpsec`).
fn state_dir(global: &Global) -> Result<PathBuf> {
    global
        .state_dir
        .clone()
        .or_else(|| {
            std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
                .map(|p| p.join("mcpsec"))
        })
        .ok_or_else(|| usage("no state directory: pass --state-dir DIR or set MCPSEC_STATE_DIR (HOME is not set)"))
        .and_then(|p| Ok(std::env::current_dir().context("reading the current directory")?.join(p)))
}

/// Creates the state directory with mode 0700 if it does not exist, and
/// refuses one that others can write to.
fn ensure_state_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    #[allow(clippy::disallowed_methods)] // mcpsec's own state, not a tool call
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(_) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating the state directory {}", dir.display()))?;
            return Ok(());
        }
    };
    if !meta.is_dir() {
        return Err(usage(format!("the state directory {} is not a directory", dir.display())));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(usage(format!(
            "the state directory {} is writable by others (mode {mode:03o}); run `chmod 700 {}`",
            dir.display(),
            dir.display()
        )));
    }
    if mode & 0o077 != 0 {
        tracing::warn!("the state directory {} is readable by others (mode {mode:03o}); chmod 700 it", dir.display());
    }
    Ok(())
}

/// Refuses a root that holds the state directory: the tools could then
/// read the key, rewrite the audit log or empty the trash.
#[allow(clippy::disallowed_methods)] // mcpsec's own state, not a tool call
fn refuse_state_inside_roots(state: &Path, log: &Path, sandbox: &mcpsec_pathguard::Sandbox) -> Result<()> {
    let state = std::fs::canonicalize(state).with_context(|| format!("reading {}", state.display()))?;
    if let Some(root) = sandbox.roots().find(|r| state.starts_with(r) || r.starts_with(&state)) {
        return Err(usage(format!(
            "the state directory {} and the root {} overlap: the tools could reach the audit log, the key and the \
             trash. Use a state directory outside every root, and no root inside it (--state-dir DIR or \
             MCPSEC_STATE_DIR)",
            state.display(),
            root.display()
        )));
    }
    // An absolute [audit] path may point anywhere: not into a root.
    if let Some(dir) = log.parent()
        && let Ok(dir) = std::fs::canonicalize(dir)
        && let Some(root) = sandbox.roots().find(|r| dir.starts_with(r))
    {
        return Err(usage(format!(
            "[audit] path {} is inside the root {}: the tools could rewrite the log. Put it outside every root",
            log.display(),
            root.display()
        )));
    }
    Ok(())
}

/// The audit log's path: `[audit] path`, relative to the state directory.
fn audit_path(state: &Path, config: &Config) -> PathBuf {
    state.join(&config.audit.path)
}

pub(crate) fn audit_options(config: &Config) -> mcpsec_audit::Options {
    mcpsec_audit::Options {
        sync: match config.audit.sync {
            mcpsec_core::AuditSync::Always => mcpsec_audit::SyncMode::Always,
            mcpsec_core::AuditSync::Changes(interval) => mcpsec_audit::SyncMode::Changes { interval },
            mcpsec_core::AuditSync::Batch(interval) => mcpsec_audit::SyncMode::Batch { interval },
        },
        rotate_bytes: config.audit.rotate_size,
        max_bytes: config.audit.max_size,
    }
}

/// 16 random hex digits naming this server's session in the audit log.
fn session_id() -> String {
    let mut bytes = [0u8; 8];
    let filled = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).unwrap_or(0);
    if filled < bytes.len() {
        // No randomness (should not happen on Linux): fall back to pid and time.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return format!("{:08x}{:08x}", std::process::id(), t.subsec_nanos());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OS user's name, the principal unless `--user` names one: `USER`
/// (or `LOGNAME`); without them, the real uid's entry in `/etc/passwd`
/// (`root` for uid 0); `uid-N` only when it has none. Not a credential:
/// whoever starts mcpsec may pass any `--user`.
pub(crate) fn os_user() -> String {
    let env = |key| std::env::var(key).ok().filter(|u: &String| !u.is_empty());
    let uid = rustix::process::getuid().as_raw();
    env("USER").or_else(|| env("LOGNAME")).or_else(|| passwd::name_of(uid)).unwrap_or_else(|| format!("uid-{uid}"))
}

/// What `--http` asks for, checked before anything is opened.
pub(crate) struct HttpFront {
    addr: std::net::SocketAddr,
    tls: Option<mcpsec_server::TlsFiles>,
}

impl HttpArgs {
    /// The address and TLS files, if `--http` was given: a non-loopback
    /// address needs TLS or `--danger-plaintext`.
    pub(crate) fn front(&self) -> Result<Option<HttpFront>> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(tls_files(cert, key)?),
            _ => None,
        };
        let Some(addr) =
            self.http.as_deref().map(|a| http_address(a, self.danger_plaintext || tls.is_some())).transpose()?
        else {
            return Ok(None);
        };
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!("--danger-plaintext: serving {addr} without TLS; bearer keys cross the network in clear");
        }
        Ok(Some(HttpFront { addr, tls }))
    }
}

impl HttpFront {
    /// The HTTP transport's options: the users, `[http]`, the failed-auth window.
    pub(crate) fn options(self, config: &Config, users: Arc<mcpsec_caps::Users>) -> Result<mcpsec_server::HttpOptions> {
        if users.list()?.is_empty() {
            tracing::warn!("no users yet: every request will be refused until one is added (`mcpsec users add NAME`)");
        }
        Ok(mcpsec_server::HttpOptions {
            addr: self.addr,
            users,
            config: config.http.clone(),
            auth_window: config.rate_limit.window,
            shutdown_grace: Duration::from_secs(30),
            tls: self.tls,
        })
    }
}

fn serve(global: &Global, args: ServeArgs) -> Result<()> {
    let http_front = args.http.front()?;
    // Over HTTP the start is recorded before the server listens: compile
    // the redaction rules while the state is being opened, rather than on
    // that record (a few ms). Over stdio the start record is written on a
    // thread of its own while the handshake is answered, and compiles them.
    if http_front.is_some() {
        std::thread::spawn(mcpsec_audit::redact::warm_up);
    }
    let (config, config_file) = load_config(global)?;
    let base = config_file.as_deref().and_then(Path::parent).unwrap_or(Path::new("."));
    let mut roots: Vec<PathBuf> = config.roots.iter().map(|r| base.join(r)).collect();
    roots.extend(args.roots);
    if roots.is_empty() {
        return Err(usage(
            "no root directory: pass one with `--root DIR` (e.g. `mcpsec serve --root ./workspace`) \
             or set `roots` in the config file; mcpsec never defaults to `/` or your home directory",
        ));
    }
    let rules = mcpsec_pathguard::Rules::new(&config.paths.readonly, &config.paths.deny)
        .map_err(|e| usage(format!("[paths]: {e}")))?;
    let sandbox = mcpsec_pathguard::Sandbox::open(
        &roots,
        mcpsec_pathguard::SandboxOptions { rules, max_read: config.limits.max_read },
    )?;
    for (inner, outer) in sandbox.nested_roots() {
        tracing::warn!(
            "the root {} lies inside the root {}: the protected paths of both apply inside it ([paths] rules are \
             matched from each root), so a nested root never lifts a protection",
            inner.display(),
            outer.display()
        );
    }
    let principal = Principal::new(args.user.unwrap_or_else(os_user));
    let state = state_dir(global)?;
    ensure_state_dir(&state)?;
    let log_path = audit_path(&state, &config);
    refuse_state_inside_roots(&state, &log_path, &sandbox)?;
    let audit = Arc::new(mcpsec_audit::AuditLog::open(&log_path, audit_options(&config))?);
    let session = session_id();
    tracing::info!(
        user = principal.name(),
        session = %session,
        roots = ?sandbox.roots().collect::<Vec<_>>(),
        config = ?config_file,
        audit = %log_path.display(),
        "mcpsec serving on {}",
        if http_front.is_some() { "HTTP" } else { "stdio" }
    );
    let undo = if config.undo.enabled {
        Some(
            mcpsec_server::undo::Undo::open(&state, config.undo.clone(), principal.name(), Some(audit.clone()))
                .with_context(|| format!("opening the trash in {}", state.display()))?,
        )
    } else {
        None
    };
    // Opened at its first use: a stdio session may never need it (reads under
    // `allow`), and not loading SQLite keeps the server's memory small
    // (BENCHMARKS.md). Over HTTP that use is at start: the user list, below.
    let tokens = tokens::open_tokens_lazily(&state)?;
    let users = Arc::new(tokens.users());
    let shell = if config.shell.allow.is_empty() {
        None
    } else {
        let defaults = mcpsec_server::shell::ShellConfig::default();
        let sources = confine::Sources {
            state: &state,
            audit_log: &log_path,
            config_file: config_file.as_deref(),
            roots: sandbox.roots().collect(),
        };
        let launcher = confine::launcher(&config, &sources)?;
        let shell = mcpsec_server::shell::Shell::new(mcpsec_server::shell::ShellConfig {
            allow: config.shell.allow.clone(),
            timeout: config.shell.timeout,
            max_timeout: config.shell.max_timeout,
            max_output: usize::try_from(config.shell.max_output).unwrap_or(usize::MAX),
            confine: confine::shell(launcher.as_ref(), &config),
            ..defaults
        })
        .map_err(|e| usage(format!("[shell]: {e}")))?;
        Some(shell)
    };
    let options = mcpsec_server::ServerOptions {
        sandbox,
        undo,
        authorizer: mcpsec_caps::Authorizer::new(config.policy.clone(), Some(Arc::new(tokens)))
            .with_failed_check_limit(config.rate_limit.failed_token_checks, config.rate_limit.window),
        injection: config.injection,
        shell,
        limits: mcpsec_server::ratelimit::Limits {
            calls: config.rate_limit.calls,
            window: config.rate_limit.window,
            tools: config.rate_limit.tools.clone(),
        },
        principal,
        audit,
        session,
    };
    let runtime = runtime(http_front.is_some())?;
    match http_front {
        None => runtime.block_on(mcpsec_server::serve_stdio(options))?,
        Some(front) => {
            let http = front.options(&config, users)?;
            runtime.block_on(mcpsec_server::serve_http(options, http))?;
        }
    }
    Ok(())
}

/// The async runtime of `serve` and `proxy`: one thread for stdio (one
/// client, one stream of messages), a worker per CPU for HTTP (many clients;
/// one thread held the HTTP load run to one core's worth of calls).
fn runtime(http: bool) -> Result<tokio::runtime::Runtime> {
    let mut builder =
        if http { tokio::runtime::Builder::new_multi_thread() } else { tokio::runtime::Builder::new_current_thread() };
    builder.enable_all().build().context("starting the async runtime")
}

/// Reads `--tls-cert` and `--tls-key` (the key into a secret buffer).
#[allow(clippy::disallowed_methods)] // the operator's own files, not a tool call
fn tls_files(cert: &Path, key: &Path) -> Result<mcpsec_server::TlsFiles> {
    use std::os::unix::fs::PermissionsExt;
    let cert_pem = std::fs::read(cert).with_context(|| format!("reading --tls-cert {}", cert.display()))?;
    let meta = std::fs::metadata(key).with_context(|| format!("reading --tls-key {}", key.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(usage(format!(
            "--tls-key {} is readable by every user; run `chmod 600 {}`",
            key.display(),
            key.display()
        )));
    }
    let key_pem = std::fs::read(key).with_context(|| format!("reading --tls-key {}", key.display()))?;
    Ok(mcpsec_server::TlsFiles { cert_pem, key_pem: key_pem.into() })
}

/// The address `--http` names. A non-loopback one is refused without TLS
/// unless `--danger-plaintext`: a bearer key sent in clear over a network
/// is a key given away.
fn http_address(text: &str, secure_or_danger: bool) -> Result<std::net::SocketAddr> {
    let addr: std::net::SocketAddr = match text.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}").parse(),
        None => text.parse(),
    }
    .map_err(|_| usage(format!("--http {text}: not an address; give IP:PORT, e.g. --http 127.0.0.1:8787")))?;
    if !addr.ip().is_loopback() && !secure_or_danger {
        return Err(usage(format!(
            "--http {addr}: refusing to serve a non-loopback address without TLS (keys and data would cross the \
             network in clear). Give --tls-cert FILE --tls-key FILE, or accept the risk with --danger-plaintext"
        )));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn without_a_config_the_audit_log_syncs_changes_and_reads_within_10ms() {
        let sync = audit_options(&Config::default()).sync;
        assert_eq!(sync, mcpsec_audit::SyncMode::Changes { interval: Duration::from_millis(10) });
        let always = Config::from_toml_str("[audit]\nsync = \"always\"\n").unwrap();
        assert_eq!(audit_options(&always).sync, mcpsec_audit::SyncMode::Always);
    }
}
