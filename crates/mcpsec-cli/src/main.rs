//! `mcpsec`: the command line.
//!
//! **Architecture invariant:** this is the only crate that knows clap,
//! terminals, the environment and exit codes (0 success, 1 the operation
//! failed, 2 usage or configuration error). It turns flags, environment and
//! the config file into options for the library crates and runs them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use mcpsec_core::{Config, Principal};

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
    /// Run the MCP server on stdio.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// A directory the tools may use (repeatable; adds to `roots` in the config).
    #[arg(long = "root", value_name = "DIR")]
    roots: Vec<PathBuf>,
    /// The principal every call is made for [default: the OS user].
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Serve streamable HTTP on ADDR instead of stdio (not available in this version).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcpsec: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,mcpsec=info"));
    // stdout is reserved for JSON-RPC: every log line goes to stderr.
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&cli.global, args),
    }
}

/// The config file to read: the one named, else the default when it exists.
fn config_path(global: &Global) -> Option<PathBuf> {
    if let Some(p) = &global.config {
        return Some(p.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = base.join("mcpsec").join("mcpsec.toml");
    p.is_file().then_some(p)
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

/// The state directory (not created until something needs it).
fn state_dir(global: &Global) -> Option<PathBuf> {
    global.state_dir.clone().or_else(|| {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .map(|p| p.join("mcpsec"))
    })
}

fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid-{}", rustix::process::getuid().as_raw()))
}

fn serve(global: &Global, args: ServeArgs) -> Result<()> {
    if args.http.is_some() {
        return Err(usage("--http is not available in this version of mcpsec; run it on stdio"));
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
    let principal = Principal::new(args.user.unwrap_or_else(os_user));
    tracing::info!(
        user = principal.name(),
        roots = ?sandbox.roots().collect::<Vec<_>>(),
        config = ?config_file,
        state_dir = ?state_dir(global),
        "mcpsec serving on stdio"
    );
    let options = mcpsec_server::ServerOptions {
        sandbox,
        authorizer: mcpsec_caps::Authorizer::new(config.policy.clone()),
        principal,
        audit: Arc::new(mcpsec_audit::TracingSink),
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(mcpsec_server::serve_stdio(options))?;
    Ok(())
}
