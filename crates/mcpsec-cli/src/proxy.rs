//! `mcpsec proxy`: the gateway in front of another stdio MCP server.

use std::ffi::OsString;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use mcpsec_core::Principal;

use crate::{Global, usage};

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The upstream's name: in audit records (NAME/TOOL), tool pins and
    /// `[proxy.NAME]` in the config [default: the package or script the
    /// command runs through npx, uvx, pipx, node, python or deno, else its file name]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The principal every call is made for [default: the OS user] (stdio only).
    #[arg(long, value_name = "NAME", conflicts_with = "http")]
    user: Option<String>,
    #[command(flatten)]
    http: crate::HttpArgs,
    /// The upstream MCP server's command line, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub fn run(global: &Global, args: ProxyArgs) -> Result<()> {
    std::thread::spawn(mcpsec_audit::redact::warm_up);
    let http_front = args.http.front()?;
    let (config, config_file) = crate::load_config(global)?;
    let name = args.name.unwrap_or_else(|| mcpsec_core::proxy::default_upstream_name(&args.command));
    mcpsec_core::proxy::validate_upstream_name(&name).map_err(|m| usage(format!("--name: {m}")))?;
    let settings = config.proxy.get(&name).cloned().unwrap_or_default();
    let principal = Principal::new(args.user.unwrap_or_else(crate::os_user));
    let state = crate::state_dir(global)?;
    crate::ensure_state_dir(&state)?;
    let log_path = crate::audit_path(&state, &config);
    let audit = mcpsec_audit::AuditLog::open(&log_path, crate::audit_options(&config))?;
    let session = crate::session_id();
    let sources = crate::confine::Sources {
        state: &state,
        audit_log: &log_path,
        config_file: config_file.as_deref(),
        roots: vec![],
    };
    let launcher = crate::confine::launcher(&config, &sources)?;
    let confine = crate::confine::upstream(launcher.as_ref(), &config, &name, &args.command, &state)?;
    let pins = mcpsec_caps::pins::Pins::new(Arc::new(mcpsec_caps::store::SqliteStore::open(&state.join("mcpsec.db"))?));
    tracing::info!(
        user = principal.name(),
        session = %session,
        upstream = %name,
        config = ?config_file,
        audit = %log_path.display(),
        "mcpsec gateway serving on {}",
        if http_front.is_some() { "HTTP" } else { "stdio" }
    );
    let tokens = crate::tokens::open_tokens(&state)?;
    let users = Arc::new(tokens.users());
    let options = mcpsec_server::proxy::GatewayOptions {
        authorizer: mcpsec_caps::Authorizer::new(config.policy.clone(), Some(Arc::new(tokens)))
            .with_failed_check_limit(config.rate_limit.failed_token_checks, config.rate_limit.window),
        injection: config.injection,
        limits: mcpsec_server::ratelimit::Limits {
            calls: config.rate_limit.calls,
            window: config.rate_limit.window,
            tools: config.rate_limit.tools.clone(),
        },
        principal,
        audit: Arc::new(audit),
        session,
        upstream: mcpsec_server::proxy::UpstreamOptions { name, command: args.command, settings, pins, confine },
    };
    let runtime = crate::runtime(http_front.is_some())?;
    match http_front {
        None => runtime.block_on(mcpsec_server::serve_proxy_stdio(options))?,
        Some(front) => {
            let http = front.options(&config, users)?;
            runtime.block_on(mcpsec_server::serve_proxy_http(options, http))?;
        }
    }
    Ok(())
}
