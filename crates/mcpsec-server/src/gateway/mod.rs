//! The gateway: another MCP server's tools, through the same guard pipeline.
//!
//! `Upstream` runs the upstream server as a child process and talks to it
//! as an MCP client over its stdin/stdout. For the pipeline, an upstream
//! tool is a description (sanitised, with the capability the config or its
//! annotations give it) plus an execute step that forwards the call; the
//! pipeline does not otherwise care where a tool comes from.
//!
//! The upstream is untrusted:
//! - its tool definitions are pinned ([`mcpsec_caps::pins`]): a tool whose
//!   definition changed since a human approved it (or, with
//!   `hold_new_tools`, a tool that appeared after the first run) is
//!   withheld from `tools/list` and refused on call until `mcpsec pins
//!   approve`; the store is re-checked whenever its data version moves, so
//!   an approval takes effect without a restart;
//! - its annotations never make a tool read-only unless it says so, and the
//!   config always wins ([`mcpsec_core::proxy`]);
//! - a call is forwarded only if its arguments match the input schema the
//!   tool declared, as pinned (`ArgumentCheck`); a schema is never allowed to
//!   make mcpsec read a file or fetch a URL;
//! - what it says (descriptions, titles, schemas, results) is sanitised of
//!   terminal escapes and invisible Unicode ([`mcpsec_core::scan::sanitize`]);
//!   results are marked untrusted and scanned by the pipeline;
//! - a crash is a tool error and the next call restarts it (with backoff); a
//!   call it does not answer in `call_timeout` is a tool error.

mod check;
mod line_io;
mod pins;
mod sanitize;

pub(crate) use check::ArgumentCheck;
use pins::{canonical, definition, sorted};
pub(crate) use sanitize::scan_and_sanitize_result;
use sanitize::{sanitize_value, sanitized, valid_tool_name};

use line_io::upstream_text;

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mcpsec_caps::Authorizer;
use mcpsec_caps::pins::{PinStatus, Pins};
use mcpsec_core::Capability;
use mcpsec_core::proxy::{ProxySettings, Unmapped, capability_from_hints};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, JsonObject, Tool,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{Peer, RoleClient, RoleServer, ServiceError, ServiceExt};
use sha2::{Digest, Sha256};

use crate::error::ToolError;
use mcpsec_core::units::hex;

/// The first restart waits this long; each further one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The most tools one listing of the upstream may hold (all pages): beyond,
/// none is offered (fail closed; a partial listing would be arbitrary).
pub const MAX_TOOLS: usize = 1000;
/// The most pages one listing may take.
const MAX_PAGES: usize = 100;
/// The largest definition of one tool (canonical JSON: name, description,
/// schemas, annotations, `_meta`): a larger one is withheld and not pinned.
pub const MAX_DEFINITION: usize = 64 * 1024;

/// How to reach one upstream server.
#[derive(Debug)]
pub struct UpstreamOptions {
    /// Its name (`--name`): in audit records (`NAME/TOOL`), pins and commands.
    pub name: String,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// `[proxy.NAME]`.
    pub settings: ProxySettings,
    /// Where its tool definitions are pinned.
    pub pins: Pins,
    /// How its process is confined.
    pub confine: crate::confine::Confinement,
}

/// Everything a gateway needs, built by the caller (the CLI): what
/// [`ServerOptions`](crate::ServerOptions) holds, but for the built-in
/// tools' sandbox and shell, plus the upstream.
#[derive(Debug)]
pub struct GatewayOptions {
    /// The policy.
    pub authorizer: Authorizer,
    /// On whose behalf every call is made.
    pub principal: mcpsec_core::Principal,
    /// Where every call is recorded.
    pub audit: Arc<mcpsec_audit::AuditLog>,
    /// This server's session id (in every audit record).
    pub session: String,
    /// Per-principal rate limits.
    pub limits: crate::pipeline::ratelimit::Limits,
    /// What to do with instruction-like content in results.
    pub injection: mcpsec_core::InjectionMode,
    /// The upstream server.
    pub upstream: UpstreamOptions,
}

/// What the pipeline needs to run one upstream tool.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTool {
    /// The tool's name upstream.
    pub tool: String,
    /// `NAME/TOOL`, as audit records and messages name it.
    pub qualified: String,
    /// The capability it is mapped to.
    pub capability: Capability,
    /// How its arguments are checked before they are forwarded.
    pub arguments: Arc<ArgumentCheck>,
}

/// The answer to [`Upstream::lookup`].
pub(crate) enum Lookup {
    /// Offered: run it through the pipeline.
    Offered(UpstreamTool),
    /// Known, but withheld until a human approves it; the refusal.
    Withheld { qualified: String, message: String },
    /// The upstream could not be asked; the message says why.
    Failed { qualified: String, message: String },
    /// No such tool.
    Unknown,
}

/// One upstream tool as last evaluated: offered, or why not.
enum Entry {
    Offered(Box<Offered>),
    Held(Held),
}

/// A tool the gateway offers (subject to the policy's modes).
struct Offered {
    /// The capability it is mapped to.
    capability: Capability,
    /// What `tools/list` shows (sanitised, with the token argument if gated).
    listed: Tool,
    /// How its arguments are checked.
    arguments: Arc<ArgumentCheck>,
    /// The SHA-256 of its definition, as pinned.
    hash: String,
}

/// Why a tool is withheld.
#[derive(Clone, Copy)]
enum Held {
    /// Its pin: changed, new, or no room to wait for approval.
    Pin(PinStatus),
    /// No glob maps it and `unmapped = "deny"`.
    Unmapped,
    /// Its definition is larger than [`MAX_DEFINITION`].
    TooLarge,
}

#[derive(Default)]
struct Catalog {
    /// The definitions as the upstream gave them, in its order.
    raw: Option<Vec<Tool>>,
    /// The store's data version when `entries` were computed.
    version: Option<i64>,
    entries: HashMap<String, Entry>,
}

/// A running session with the upstream: rmcp's client, and the line to the
/// child it runs on (see `upstream_io`), which ends when a write fails or
/// the upstream stops reading, possibly before rmcp notices.
struct Session {
    service: RunningService<RoleClient, UpstreamClient>,
    line: Arc<crate::gateway::line_io::Direct>,
    /// Whether `tools/call` takes the direct path on `line`: the upstream
    /// negotiated a protocol with a handshake (a newer one gets every call
    /// through rmcp). Fixed for the session, so read once.
    direct_calls: bool,
}

impl Session {
    fn is_over(&self) -> bool {
        self.service.is_closed() || self.service.peer().is_transport_closed() || self.line.ended()
    }

    /// The peer, and the direct `tools/call` path if the session has one.
    fn paths(&self) -> (Peer<RoleClient>, Option<Arc<crate::gateway::line_io::Direct>>) {
        (self.service.peer().clone(), self.direct_calls.then(|| self.line.clone()))
    }
}

struct Conn {
    running: Option<Session>,
    /// Consecutive failures (crashes, failed starts) since the last success.
    failures: u32,
    /// No start before this instant (backoff).
    not_before: Option<Instant>,
}

/// A running upstream server (started on first use, restarted after a crash).
pub(crate) struct Upstream {
    name: String,
    command: Vec<OsString>,
    settings: ProxySettings,
    pins: Pins,
    confine: crate::confine::Confinement,
    conn: tokio::sync::Mutex<Conn>,
    catalog: Mutex<Catalog>,
    client: UpstreamClient,
    /// Whether the upstream offers resources and prompts (from its first
    /// handshake; they are passed through read-only).
    offers: OnceLock<Offers>,
    /// Where what was withheld for exceeding a bound is recorded, and the
    /// gateway's session.
    audit: Option<(Arc<mcpsec_audit::AuditLog>, String)>,
    /// What was recorded so already (once per run).
    reported: Mutex<std::collections::HashSet<String>>,
}

/// What besides tools the upstream said it offers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Offers {
    pub resources: bool,
    pub prompts: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Our client side of the upstream session: forwards list-changed
/// notifications to the downstream clients and marks the tools for a re-pin.
#[derive(Clone)]
struct UpstreamClient {
    stale: Arc<AtomicBool>,
    downstream: Arc<Downstream>,
}

/// The most downstream sessions told about list changes at once; beyond,
/// the oldest is forgotten (it still sees the change on its next listing).
const MAX_DOWNSTREAM: usize = 1024;

/// The downstream clients' sessions (one on stdio, one per MCP session over
/// HTTP, all sharing the one upstream), for the notifications the upstream
/// sends.
#[derive(Default)]
struct Downstream(Mutex<Vec<Peer<RoleServer>>>);

impl Downstream {
    fn add(&self, peer: Peer<RoleServer>) {
        let mut peers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|p| !p.is_transport_closed());
        if peers.len() >= MAX_DOWNSTREAM {
            peers.remove(0);
        }
        peers.push(peer);
    }

    /// The sessions still open.
    fn live(&self) -> Vec<Peer<RoleServer>> {
        let mut peers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|p| !p.is_transport_closed());
        peers.clone()
    }
}

impl rmcp::ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("mcpsec-proxy", env!("CARGO_PKG_VERSION")))
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        // Forwarded once per change seen: a flood of notifications from the
        // upstream is not amplified into re-listings.
        if self.stale.swap(true, Ordering::SeqCst) {
            return;
        }
        for peer in self.downstream.live() {
            let _ = peer.notify_tool_list_changed().await;
        }
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        for peer in self.downstream.live() {
            let _ = peer.notify_resource_list_changed().await;
        }
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        for peer in self.downstream.live() {
            let _ = peer.notify_prompt_list_changed().await;
        }
    }
}

impl Upstream {
    pub(crate) fn new(options: UpstreamOptions, audit: Option<(Arc<mcpsec_audit::AuditLog>, String)>) -> Upstream {
        Upstream {
            name: options.name,
            command: options.command,
            settings: options.settings,
            pins: options.pins,
            confine: options.confine,
            conn: tokio::sync::Mutex::new(Conn { running: None, failures: 0, not_before: None }),
            catalog: Mutex::new(Catalog::default()),
            client: UpstreamClient { stale: Arc::new(AtomicBool::new(true)), downstream: Arc::default() },
            offers: OnceLock::new(),
            audit,
            reported: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// How the upstream's process is confined.
    pub(crate) fn confinement(&self) -> &crate::confine::Confinement {
        &self.confine
    }

    /// The upstream's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The program's file name (for logs and the audit log; its arguments
    /// may hold secrets and are left out).
    pub(crate) fn program(&self) -> String {
        self.command
            .first()
            .map(|p| std::path::Path::new(p).file_name().unwrap_or(p.as_os_str()).to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Adds a downstream session that list-changed notifications are
    /// forwarded to (every session sharing this upstream is told).
    pub(crate) fn add_downstream(&self, peer: Peer<RoleServer>) {
        self.client.downstream.add(peer);
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        // A panic while holding the lock leaves the catalog usable.
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session with the upstream, starting it (after the backoff, if it
    /// failed before) when there is none or the last one ended.
    async fn peer(&self) -> Result<Peer<RoleClient>, String> {
        self.session().await.map(|(peer, _)| peer)
    }

    /// [`Upstream::peer`], with the session's direct `tools/call` path.
    async fn session(&self) -> Result<(Peer<RoleClient>, Option<Arc<crate::gateway::line_io::Direct>>), String> {
        let mut conn = self.conn.lock().await;
        if let Some(running) = &conn.running {
            if !running.is_over() {
                return Ok(running.paths());
            }
            conn.running = None;
            self.failed(&mut conn);
            tracing::warn!(upstream = %self.name, "the upstream server stopped; restarting it");
        }
        if let Some(at) = conn.not_before {
            tokio::time::sleep_until(at.into()).await;
        }
        match self.start().await {
            Ok(running) => {
                let paths = running.paths();
                conn.running = Some(running);
                conn.not_before = None;
                // Its tools may differ from the last run's.
                self.client.stale.store(true, Ordering::SeqCst);
                Ok(paths)
            }
            Err(e) => {
                self.failed(&mut conn);
                Err(e)
            }
        }
    }

    fn failed(&self, conn: &mut Conn) {
        conn.failures = conn.failures.saturating_add(1);
        let delay = FIRST_BACKOFF.saturating_mul(1 << conn.failures.min(8).saturating_sub(1)).min(MAX_BACKOFF);
        conn.not_before = Some(Instant::now() + delay);
    }

    async fn start(&self) -> Result<Session, String> {
        let cmd = self
            .confine
            .upstream_command(&self.command)
            .map_err(|e| format!("could not start the upstream `{}` (`{}`): {e}", self.name, self.program()))?;
        let (transport, line) = crate::gateway::line_io::UpstreamTransport::spawn(cmd)
            .map_err(|e| format!("could not start the upstream `{}` (`{}`): {e}", self.name, self.program()))?;
        match tokio::time::timeout(self.settings.call_timeout, self.client.clone().serve(transport)).await {
            Ok(Ok(service)) => {
                let info = service.peer().peer_info();
                let direct_calls = info.as_ref().is_some_and(|i| i.protocol_version.has_initialize());
                if let Some(info) = info {
                    let _ = self.offers.set(Offers {
                        resources: info.capabilities.resources.is_some(),
                        prompts: info.capabilities.prompts.is_some(),
                    });
                }
                Ok(Session { service, line, direct_calls })
            }
            Ok(Err(e)) => Err(format!(
                "the upstream `{}` (`{}`) failed to initialize: {}",
                self.name,
                self.program(),
                upstream_text(&e.to_string())
            )),
            Err(_) => Err(format!(
                "the upstream `{}` (`{}`) did not initialize within {:?} ([proxy.{}] call_timeout)",
                self.name,
                self.program(),
                self.settings.call_timeout,
                self.name
            )),
        }
    }

    /// Starts the upstream and pins its tools (at start-up, so that a
    /// command that cannot run is reported before serving).
    pub(crate) async fn connect(&self, authorizer: &Authorizer) -> Result<(), String> {
        self.fetch(authorizer).await
    }

    /// Asks the upstream for its tools and evaluates them.
    async fn fetch(&self, authorizer: &Authorizer) -> Result<(), String> {
        let peer = self.peer().await?;
        self.client.stale.store(false, Ordering::SeqCst);
        let tools = match tokio::time::timeout(self.settings.call_timeout, list_bounded(&peer)).await {
            Ok(Ok(tools)) => tools,
            Ok(Err(Listing::Failed(e))) => {
                self.client.stale.store(true, Ordering::SeqCst);
                return Err(format!(
                    "the upstream `{}` failed to list its tools: {}",
                    self.name,
                    upstream_text(&e.to_string())
                ));
            }
            Ok(Err(Listing::TooLong)) => {
                // Fail closed: nothing is offered until it lists fewer.
                self.client.stale.store(true, Ordering::SeqCst);
                let mut catalog = self.catalog();
                (catalog.raw, catalog.version) = (None, None);
                catalog.entries.clear();
                drop(catalog);
                let message = format!(
                    "the upstream `{}` lists more than {MAX_TOOLS} tools (or {MAX_PAGES} pages); mcpsec offers none \
                     of them",
                    self.name
                );
                self.report(None, message.clone());
                return Err(message);
            }
            Err(_) => {
                self.client.stale.store(true, Ordering::SeqCst);
                return Err(format!(
                    "the upstream `{}` did not list its tools within {:?} ([proxy.{}] call_timeout)",
                    self.name, self.settings.call_timeout, self.name
                ));
            }
        };
        let mut catalog = self.catalog();
        catalog.raw = Some(tools);
        self.evaluate(&mut catalog, authorizer)
    }

    /// Pins (or checks) every tool of the last listing against the store
    /// and works out what is offered. Fails closed: if the store fails,
    /// nothing is offered.
    fn evaluate(&self, catalog: &mut Catalog, authorizer: &Authorizer) -> Result<(), String> {
        // The argument checks compiled last time, by definition hash: an
        // unchanged tool keeps its own rather than compiling it again.
        let compiled: HashMap<String, Arc<ArgumentCheck>> = std::mem::take(&mut catalog.entries)
            .into_values()
            .filter_map(|e| match e {
                Entry::Offered(o) => Some((o.hash, o.arguments)),
                Entry::Held(_) => None,
            })
            .collect();
        catalog.version = None;
        let store_failed = |e: mcpsec_caps::store::StoreError| {
            format!("the tool pins of the upstream `{}` could not be checked ({e}); no tool is offered", self.name)
        };
        let Some(raw) = &catalog.raw else { return Ok(()) };
        let first_run = !self.pins.has_any(&self.name).map_err(store_failed)?;
        let now_ms = mcpsec_caps::unix_ms(std::time::SystemTime::now());
        let mut entries = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut duplicated = std::collections::HashSet::new();
        for tool in raw {
            if !seen.insert(tool.name.as_ref()) {
                duplicated.insert(tool.name.as_ref());
            }
        }
        for tool in raw {
            // A name is shown to the model, printed on the operator's
            // terminal and put in suggested commands: only the characters
            // MCP recommends, and only once per listing. Anything else is
            // neither pinned nor offered.
            if !valid_tool_name(&tool.name) || duplicated.contains(tool.name.as_ref()) {
                tracing::warn!(
                    upstream = %self.name,
                    tool = %tool.name.escape_default().to_string().chars().take(200).collect::<String>(),
                    "withheld: a tool name must be 1-128 of [A-Za-z0-9_.-] and unique in the listing"
                );
                continue;
            }
            let Some(capability) = self.capability(tool) else {
                // Not pinned either: it is never offered while unmapped.
                entries.insert(tool.name.to_string(), Entry::Held(Held::Unmapped));
                continue;
            };
            let definition = definition(tool);
            let canonical = canonical(&definition);
            if canonical.len() > MAX_DEFINITION {
                let size = canonical.len();
                self.report(
                    Some(&tool.name),
                    format!("withheld: its definition is {size} bytes, more than the {MAX_DEFINITION} mcpsec accepts"),
                );
                entries.insert(tool.name.to_string(), Entry::Held(Held::TooLarge));
                continue;
            }
            let hash = hex(&Sha256::digest(canonical.as_bytes()));
            let pretty = serde_json::to_string_pretty(&sorted(&definition)).unwrap_or_default();
            let status = self
                .pins
                .check(&self.name, &tool.name, &hash, &pretty, self.settings.hold_new_tools, first_run, now_ms)
                .map_err(store_failed)?;
            if status == PinStatus::PinnedNow {
                tracing::info!(upstream = %self.name, tool = %tool.name, "pinned the tool's definition");
            } else if status == PinStatus::Overflow {
                self.report(Some(&tool.name), format!("withheld: {}", self.withheld_reason(status)));
            } else if !status.is_offered() {
                tracing::warn!(upstream = %self.name, tool = %tool.name, "withheld: {}", self.withheld_reason(status));
            }
            if !status.is_offered() {
                entries.insert(tool.name.to_string(), Entry::Held(Held::Pin(status)));
                continue;
            }
            let mut listed = sanitized(tool);
            if authorizer.takes_token(capability) {
                crate::tools::add_token_argument(&mut listed);
            }
            let arguments = match compiled.get(&hash) {
                Some(check) => check.clone(),
                None => Arc::new(ArgumentCheck::new(&tool.input_schema)),
            };
            entries.insert(
                tool.name.to_string(),
                Entry::Offered(Box::new(Offered { capability, listed, arguments, hash })),
            );
        }
        catalog.entries = entries;
        catalog.version = Some(self.pins.data_version().map_err(store_failed)?);
        Ok(())
    }

    /// The capability of an upstream tool: the config's mapping, else its
    /// (untrusted) annotations, or none with `unmapped = "deny"`.
    fn capability(&self, tool: &Tool) -> Option<Capability> {
        self.settings.capability_for(&tool.name).or_else(|| match self.settings.unmapped {
            Unmapped::Deny => None,
            Unmapped::Annotations => {
                let hints = tool.annotations.as_ref();
                Some(capability_from_hints(
                    hints.and_then(|a| a.read_only_hint),
                    hints.and_then(|a| a.destructive_hint),
                ))
            }
        })
    }

    /// Brings the catalog up to date: a fresh listing if the upstream said
    /// its tools changed (or was restarted), else a re-check of the pins if
    /// the store changed (a `pins approve` in a terminal).
    async fn refresh(&self, authorizer: &Authorizer, force: bool) -> Result<(), String> {
        if force || self.client.stale.load(Ordering::SeqCst) || self.catalog().raw.is_none() {
            return self.fetch(authorizer).await;
        }
        let version = self.pins.data_version().map_err(|e| format!("the tool pins could not be read: {e}"))?;
        let mut catalog = self.catalog();
        if catalog.version != Some(version) {
            self.evaluate(&mut catalog, authorizer)?;
        }
        Ok(())
    }

    /// The tools offered now, for `tools/list` (asks the upstream afresh).
    pub(crate) async fn list(&self, authorizer: &Authorizer) -> Result<Vec<Tool>, String> {
        self.refresh(authorizer, true).await?;
        let catalog = self.catalog();
        let order = catalog.raw.iter().flatten();
        Ok(order
            .filter_map(|t| catalog.entries.get(t.name.as_ref())?.offered(authorizer))
            .map(|o| o.listed.clone())
            .collect())
    }

    /// An offered tool by name, from the last listing (for `get_tool`).
    pub(crate) fn listed(&self, name: &str, authorizer: &Authorizer) -> Option<Tool> {
        let catalog = self.catalog();
        catalog.entries.get(name)?.offered(authorizer).map(|o| o.listed.clone())
    }

    /// Finds a tool for a call, with its pin re-checked.
    pub(crate) async fn lookup(&self, name: &str, authorizer: &Authorizer) -> Lookup {
        let qualified = format!("{}/{}", self.name, name);
        if let Err(message) = self.refresh(authorizer, false).await {
            return Lookup::Failed { qualified, message: format!("refused: {message}") };
        }
        let catalog = self.catalog();
        let Some(entry) = catalog.entries.get(name) else { return Lookup::Unknown };
        let up = &self.name;
        let held = match entry {
            Entry::Offered(o) => {
                let (capability, arguments) = (o.capability, o.arguments.clone());
                return Lookup::Offered(UpstreamTool { tool: name.to_owned(), qualified, capability, arguments });
            }
            Entry::Held(held) => *held,
        };
        let message = match held {
            Held::Unmapped => format!(
                "refused: the tool `{name}` of the upstream `{up}` is not offered: no pattern under [proxy.{up}.tools] \
                 maps it to a capability, and [proxy.{up}] unmapped = \"deny\". The operator can map it (e.g. \
                 `\"{name}\" = \"read_files\"` under [proxy.{up}.tools]) and restart the gateway"
            ),
            Held::TooLarge => format!(
                "refused: the tool `{name}` of the upstream `{up}` is withheld: its definition is larger than the \
                 {MAX_DEFINITION} bytes mcpsec accepts (a description that long is more likely to carry instructions \
                 than to describe a tool)"
            ),
            Held::Pin(PinStatus::Overflow) => format!(
                "refused: the tool `{name}` of the upstream `{up}` is withheld: {}",
                self.withheld_reason(PinStatus::Overflow)
            ),
            Held::Pin(status) => format!(
                "refused: the tool `{name}` of the upstream `{up}` is withheld: {}. A changed description or schema \
                 can carry instructions for the model, so mcpsec offers it only once a human has looked. Run \
                 `mcpsec pins diff {up} {name}` to see it, then the `mcpsec pins approve {up} {name} --hash …` \
                 it prints to allow exactly that definition",
                self.withheld_reason(status)
            ),
        };
        Lookup::Withheld { qualified, message }
    }

    /// Forwards one call (the capability token already removed) if its
    /// arguments match the tool's pinned input schema: on the direct path
    /// when the session has one, else through rmcp; both end the same way.
    pub(crate) async fn call(&self, t: &UpstreamTool, args: JsonObject) -> Result<CallToolResult, ToolError> {
        use crate::gateway::line_io::{Answer, NoAnswer};
        let args = t.arguments.check(&t.qualified, args)?;
        let tool = t.tool.as_str();
        let (peer, direct) =
            self.session().await.map_err(|m| ToolError::Failed(format!("{m}; the call was not forwarded")))?;
        let timeout = self.settings.call_timeout;
        let answer = match direct {
            Some(direct) => direct.call(tool, args, timeout).await,
            None => {
                let mut params = CallToolRequestParams::new(tool.to_owned());
                params.arguments = Some(args);
                match tokio::time::timeout(timeout, peer.call_tool(params)).await {
                    Ok(Ok(result)) => Ok(Answer::Result(result)),
                    Ok(Err(ServiceError::McpError(e))) => Ok(Answer::Error(e)),
                    Ok(Err(e)) => Err(NoAnswer::Closed(e.to_string())),
                    Err(_) => Err(NoAnswer::TimedOut),
                }
            }
        };
        match answer {
            Ok(Answer::Result(mut result)) => {
                self.conn.lock().await.failures = 0;
                // Stated explicitly, as for the built-in tools.
                result.is_error.get_or_insert(false);
                Ok(result)
            }
            Ok(Answer::Error(e)) => Err(ToolError::Failed(format!(
                "the upstream `{}` answered `{tool}` with an error: {}",
                self.name,
                upstream_text(&e.message)
            ))),
            Ok(Answer::Malformed(why)) => Err(ToolError::Failed(format!(
                "the upstream `{}` answered `{tool}` with something that is not a tool result ({}); it was not \
                 passed on",
                self.name,
                upstream_text(&why)
            ))),
            Err(NoAnswer::Closed(why)) => Err(ToolError::Failed(format!(
                "the upstream `{}` stopped answering during `{tool}` ({why}); whether the call took effect is \
                 unknown. mcpsec restarts the upstream for the next call",
                self.name
            ))),
            Err(NoAnswer::Backlog) => Err(ToolError::Failed(format!(
                "the upstream `{}` stopped reading its input (too many requests sent to it wait unread); `{tool}` \
                 was not forwarded, and the calls waiting on it were ended. mcpsec restarts the upstream for the \
                 next call",
                self.name
            ))),
            Err(NoAnswer::TimedOut) => Err(ToolError::Failed(format!(
                "the upstream `{}` did not answer `{tool}` within {timeout:?}; whether the call took effect is \
                 unknown. The operator can raise [proxy.{}] call_timeout",
                self.name, self.name
            ))),
        }
    }

    /// What besides tools the upstream offers.
    pub(crate) fn offers(&self) -> Offers {
        self.offers.get().copied().unwrap_or_default()
    }

    /// Forwards a read-only request (resources, prompts) with the call
    /// timeout; the answer comes back with every string sanitised.
    pub(crate) async fn forward<T, F, Fut>(&self, what: &str, send: F) -> Result<T, String>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce(Peer<RoleClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ServiceError>>,
    {
        let peer = self.peer().await?;
        let timeout = self.settings.call_timeout;
        let answer = match tokio::time::timeout(timeout, send(peer)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(ServiceError::McpError(e))) => {
                return Err(format!(
                    "the upstream `{}` answered {what} with an error: {}",
                    self.name,
                    upstream_text(&e.message)
                ));
            }
            Ok(Err(e)) => return Err(format!("the upstream `{}` stopped answering during {what} ({e})", self.name)),
            Err(_) => {
                return Err(format!(
                    "the upstream `{}` did not answer {what} within {timeout:?} ([proxy.{}] call_timeout)",
                    self.name, self.name
                ));
            }
        };
        let mut v = serde_json::to_value(&answer).map_err(|e| format!("the upstream's answer to {what}: {e}"))?;
        sanitize_value(&mut v);
        serde_json::from_value(v).map_err(|e| format!("the upstream's answer to {what}: {e}"))
    }

    fn withheld_reason(&self, status: PinStatus) -> String {
        match status {
            PinStatus::Changed => "its definition changed since a human approved it".into(),
            PinStatus::New => {
                "it is new since the first run and no human has approved it ([proxy] hold_new_tools)".into()
            }
            PinStatus::Overflow => format!(
                "{} tools of the upstream wait for approval already, the most mcpsec keeps (or it has {} pins); \
                 review them with `mcpsec pins list {}` and approve what you trust",
                mcpsec_caps::pins::MAX_PENDING,
                mcpsec_caps::pins::MAX_PINS,
                self.name
            ),
            PinStatus::Approved | PinStatus::PinnedNow => "it is approved".into(),
        }
    }

    /// Records (once per gateway run and message) that something the
    /// upstream offered was withheld for exceeding a bound: an
    /// `upstream_withheld` audit record and a warning.
    fn report(&self, tool: Option<&str>, message: String) {
        let key = format!("{}\u{0}{message}", tool.unwrap_or_default());
        {
            let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded too: a listing has at most MAX_TOOLS tools.
            if reported.len() > 4 * MAX_TOOLS {
                reported.clear();
            }
            if !reported.insert(key) {
                return;
            }
        }
        let qualified = match tool {
            Some(t) => format!("{}/{t}", self.name),
            None => self.name.clone(),
        };
        tracing::warn!(upstream = %self.name, tool = %qualified, "{message}");
        let Some((audit, session)) = &self.audit else { return };
        let mut r = mcpsec_audit::Record::new(mcpsec_audit::EventKind::UpstreamWithheld);
        r.session = Some(session.clone());
        r.tool = Some(qualified);
        r.outcome = Some(mcpsec_audit::Outcome::Denied);
        r.reason = Some(message);
        if let Err(e) = audit.append_nowait(r) {
            tracing::error!("cannot record what the upstream `{}` was refused: {e}", self.name);
        }
    }

    /// Stops the upstream (at shutdown).
    pub(crate) async fn stop(&self) {
        let running = self.conn.lock().await.running.take();
        if let Some(running) = running {
            let _ = running.service.cancel().await;
        }
    }
}

impl Entry {
    /// The tool as `tools/list` shows it, unless it is withheld (not
    /// pinned, not mapped) or its capability is in mode `deny`.
    fn offered(&self, authorizer: &Authorizer) -> Option<&Offered> {
        match self {
            Entry::Offered(o) if authorizer.is_offered(o.capability) => Some(o),
            _ => None,
        }
    }
}

/// Why a listing was not taken.
enum Listing {
    /// The upstream failed to answer.
    Failed(ServiceError),
    /// More than [`MAX_TOOLS`] tools, or [`MAX_PAGES`] pages.
    TooLong,
}

/// Every page of the upstream's tools, at most [`MAX_TOOLS`] tools in at
/// most [`MAX_PAGES`] pages (each page is one message, which the upstream's
/// transport caps at 16 MiB: `upstream_io::MAX_UPSTREAM_LINE`).
async fn list_bounded(peer: &Peer<RoleClient>) -> Result<Vec<Tool>, Listing> {
    let mut tools = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let params = rmcp::model::PaginatedRequestParams::default().with_cursor(cursor);
        let page = peer.list_tools(Some(params)).await.map_err(Listing::Failed)?;
        if tools.len() + page.tools.len() > MAX_TOOLS {
            return Err(Listing::TooLong);
        }
        tools.extend(page.tools);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(tools),
        }
    }
    Err(Listing::TooLong)
}

#[cfg(test)]
mod tests;
