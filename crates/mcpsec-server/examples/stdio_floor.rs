//! The floor of the stdio rows of `cargo xtask bench`: what this machine,
//! the bench's client and mcpsec's stdio stack manage with no security
//! layer at all, and, with `--layers`, that floor with mcpsec's own layers
//! added back one at a time, so that the bench can say what each one costs
//! a call.
//!
//! `stdio_floor [--layers LIST] ROOT` serves `read_text_file` over stdio
//! with the same stack as `mcpsec serve`: rmcp's server over mcpsec's
//! line transport (`mcpsec_server::transport::LineTransport` on rmcp's
//! `stdio_pipes`), tokio's current-thread runtime, mimalloc. The tool reads
//! the file named by `path` with `std::fs::read` and answers with the same
//! shape as mcpsec (the text as content and as structured content): no
//! path guard, no policy, no rate limit, no audit, no scanner, no marking.
//!
//! `--layers` (comma-separated; applied in the pipeline's order whatever the
//! order given) adds, each through the same library call as the pipeline:
//!
//! - `rate-limit`: `ratelimit::Limiter::check`, with the bench's limit
//!   (10⁹ calls a minute, never reached);
//! - `authorize`: `mcpsec_caps::Authorizer::decide` under the default
//!   policy (`read_files = "allow"`);
//! - `guard`: the built-in `read_text_file` itself (argument parsing and
//!   the path guard's `Sandbox::read`, under the default protected paths)
//!   instead of `std::fs::read`;
//! - `scan`: `mcpsec_core::scan::scan` of the text;
//! - `marking`: the untrusted-data `_meta` marking;
//! - `audit`: the call's record (arguments summarised, result summary) by
//!   `AuditLog::append` into `$MCPSEC_STATE_DIR/audit.log`, awaited, with
//!   `[audit] sync = "changes"` (`--sync always` for the other).
//!
//! What it leaves out even with every layer on (what `mcpsec` adds beyond
//! it): the pipeline's bookkeeping (the call's facts, the record's fields
//! gathered as it goes, the in-flight count, the scope of a token), the
//! tool table, and the start and stop records. The bench prints that rest
//! as `mcpsec` minus the top rung.
//!
//! A bench fixture, not a product feature: it is an example, never built
//! into `mcpsec`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mcpsec_audit::{AuditLog, EventKind, Outcome, Record};
use mcpsec_core::{Capability, Config};
use mcpsec_server::tools::{Call, Ctx, ToolSpec, builtin};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

/// The allocator of `mcpsec` (its default feature `mimalloc`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The one tool served.
const TOOL: &str = "read_text_file";

/// The `_meta` key of the untrusted-data marking (`pipeline::execute::UNTRUSTED_META`).
const UNTRUSTED_META: &str = "dev.mcpsec/untrusted";

const USAGE: &str =
    "usage: stdio_floor [--layers rate-limit,authorize,guard,scan,marking,audit] [--sync changes|always] ROOT";

/// The layers, in the pipeline's order.
const LAYERS: [&str; 6] = ["rate-limit", "authorize", "guard", "scan", "marking", "audit"];

struct Floor {
    /// The tool as `tools/list` shows it (the built-in one's definition).
    tool: Tool,
    user: String,
    limiter: Option<mcpsec_server::ratelimit::Limiter>,
    authorizer: Option<mcpsec_caps::Authorizer>,
    /// The built-in tool and what it runs with.
    guard: Option<(Arc<Ctx>, ToolSpec)>,
    scan: bool,
    marking: bool,
    audit: Option<Arc<AuditLog>>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut layers: Vec<String> = Vec::new();
    let mut sync = "changes".to_owned();
    let mut root = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--layers" => {
                let list = args.next().ok_or(USAGE)?;
                layers.extend(list.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
            }
            "--sync" => sync = args.next().ok_or(USAGE)?,
            _ if root.is_none() && !arg.starts_with('-') => root = Some(PathBuf::from(arg)),
            _ => return Err(USAGE.into()),
        }
    }
    let root = root.ok_or(USAGE)?;
    if let Some(unknown) = layers.iter().find(|l| !LAYERS.contains(&l.as_str())) {
        return Err(format!("unknown layer `{unknown}`; {USAGE}").into());
    }
    let on = |layer: &str| layers.iter().any(|l| l == layer);
    // The product's defaults, and its sync modes with their intervals.
    let config = Config::from_toml_str(&format!("[audit]\nsync = \"{sync}\"\n"))?;

    let mut tools = builtin();
    let at = tools.iter().position(|s| s.tool.name == TOOL).ok_or("no built-in read_text_file")?;
    let spec = tools.swap_remove(at);
    let guard = if on("guard") {
        let rules = mcpsec_pathguard::Rules::new(&config.paths.readonly, &config.paths.deny)?;
        let options = mcpsec_pathguard::SandboxOptions { rules, max_read: config.limits.max_read };
        let sandbox = mcpsec_pathguard::Sandbox::open(&[root], options)?;
        Some((Arc::new(Ctx { sandbox, shell: None, undo: None }), spec))
    } else {
        None
    };
    let audit = if on("audit") {
        let state = std::env::var_os("MCPSEC_STATE_DIR").ok_or("the audit layer needs MCPSEC_STATE_DIR")?;
        let sync = match config.audit.sync {
            mcpsec_core::AuditSync::Always => mcpsec_audit::SyncMode::Always,
            mcpsec_core::AuditSync::Changes(interval) => mcpsec_audit::SyncMode::Changes { interval },
            mcpsec_core::AuditSync::Batch(interval) => mcpsec_audit::SyncMode::Batch { interval },
        };
        let options = mcpsec_audit::Options { sync, ..mcpsec_audit::Options::default() };
        Some(Arc::new(AuditLog::open(&PathBuf::from(state).join("floor-audit.log"), options)?))
    } else {
        None
    };
    let floor = Floor {
        tool: builtin().into_iter().find(|s| s.tool.name == TOOL).map(|s| s.tool).ok_or("no read_text_file")?,
        user: std::env::var("USER").unwrap_or_else(|_| "bench".into()),
        limiter: on("rate-limit").then(|| {
            mcpsec_server::ratelimit::Limiter::new(&mcpsec_server::ratelimit::Limits {
                calls: 1_000_000_000,
                window: config.rate_limit.window,
                tools: Vec::new(),
            })
        }),
        authorizer: on("authorize").then(|| mcpsec_caps::Authorizer::new(config.policy.clone(), None)),
        guard,
        scan: on("scan"),
        marking: on("marking"),
        audit: audit.clone(),
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async move {
        let (stdin, stdout) = rmcp::transport::io::stdio_pipes();
        let transport = mcpsec_server::transport::LineTransport::new(stdin, stdout);
        floor.serve(transport).await?.waiting().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    if let Some(audit) = audit {
        audit.close();
    }
    Ok(())
}

impl Floor {
    async fn call(&self, request: CallToolRequestParams) -> Result<CallToolResult, ErrorData> {
        let started = Instant::now();
        let args = request.arguments.unwrap_or_default();
        if let Some(limiter) = &self.limiter
            && limiter.check(&self.user, &request.name).is_err()
        {
            return Ok(error("refused: rate limit"));
        }
        if request.name != TOOL {
            return Err(ErrorData::invalid_params(format!("unknown tool `{}`", request.name), None));
        }
        if let Some(authorizer) = &self.authorizer {
            let path_hint = args.get("path").and_then(|v| v.as_str());
            let call = mcpsec_caps::Call {
                capability: Capability::ReadFiles,
                tool: TOOL,
                user: &self.user,
                token: None,
                path_hint,
                now: SystemTime::now(),
            };
            if !matches!(authorizer.decide(&call), mcpsec_caps::Decision::Allow(_)) {
                return Ok(error("refused: policy"));
            }
        }
        let summary = self.audit.as_ref().map(|_| mcpsec_audit::summarize_args(&args));
        let mut result = match &self.guard {
            Some((ctx, spec)) => {
                // What the server's execute stage makes for each call.
                let call = Call::new(ctx.clone(), mcpsec_core::Principal::new(self.user.as_str()), TOOL, None, None);
                match (spec.exec)(&call, args) {
                    Ok(r) => r,
                    Err(e) => error(&e.to_string()),
                }
            }
            None => {
                let path = args.get("path").and_then(|v| v.as_str()).unwrap_or_default();
                #[allow(clippy::disallowed_methods)] // the floor: no guard, by design
                match std::fs::read(path) {
                    // As the built-in tool turns bytes into text: no copy when they are UTF-8.
                    Ok(bytes) => text_result(
                        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    ),
                    Err(e) => error(&e.to_string()),
                }
            }
        };
        if self.scan {
            let mut findings = Vec::new();
            for block in &result.content {
                if let Some(t) = block.as_text() {
                    findings.extend(mcpsec_core::scan::scan(&t.text));
                }
            }
            if !findings.is_empty() {
                result.content.insert(0, ContentBlock::text(mcpsec_core::scan::warning(TOOL, &findings)));
            }
        }
        if self.marking {
            let mut meta = result.meta.take().unwrap_or_default();
            meta.insert(UNTRUSTED_META.to_owned(), serde_json::json!({ "source": "filesystem", "tool": TOOL }));
            result.meta = Some(meta);
        }
        if let Some(audit) = &self.audit {
            let mut r = Record::new(EventKind::ToolCall);
            r.tool = Some(TOOL.to_owned());
            r.user = Some(self.user.clone());
            r.session = Some("floor".to_owned());
            r.outcome = Some(Outcome::Ok);
            r.args = summary;
            r.capability = Some(Capability::ReadFiles.as_str().to_owned());
            let first = result.content.first().and_then(|c| c.as_text()).map(|t| t.text.as_str()).unwrap_or_default();
            r.result = Some(first.chars().take(200).collect());
            r.duration_us = Some(started.elapsed().as_micros() as u64);
            if let Err(e) = audit.append(r).await {
                return Ok(error(&format!("refused: the call could not be recorded ({e})")));
            }
        }
        Ok(result)
    }
}

/// A successful result with the text as content and as structured
/// content, as mcpsec answers `read_text_file`.
fn text_result(text: String) -> CallToolResult {
    let mut result = CallToolResult::success(Vec::new());
    result.structured_content = Some(serde_json::json!({ "content": text }));
    result.content = vec![ContentBlock::text(text)];
    result
}

fn error(message: &str) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.to_owned())])
}

impl ServerHandler for Floor {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcpsec-stdio-floor", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![self.tool.clone()]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(request).await.map(Into::into)
    }
}
