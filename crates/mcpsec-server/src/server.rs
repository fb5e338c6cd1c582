//! The MCP server's state: its options, its tools, on whose behalf a call
//! is made. The rmcp handler over it is in `handler.rs`, the pipeline
//! behind `tools/call` in `pipeline/`.

use std::collections::HashMap;
use std::sync::Arc;

use mcpsec_audit::AuditLog;
use mcpsec_caps::Authorizer;
use mcpsec_core::Principal;
use mcpsec_pathguard::Sandbox;
use rmcp::model::Tool;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

use crate::pipeline::confirm::Confirmer;
use crate::tools::{Ctx, ToolSpec, add_token_argument, builtin};

/// Everything a server needs, built by the caller (the CLI).
#[derive(Debug)]
pub struct ServerOptions {
    /// The roots and the protected-path rules.
    pub sandbox: Sandbox,
    /// The program runner for `execute_command` (`None`: no program allowed).
    pub shell: Option<crate::tools::shell::Shell>,
    /// The policy.
    pub authorizer: Authorizer,
    /// On whose behalf every call of this server is made.
    pub principal: Principal,
    /// Where every call is recorded.
    pub audit: Arc<AuditLog>,
    /// This server's session id (in every audit record).
    pub session: String,
    /// Per-principal rate limits.
    pub limits: crate::pipeline::ratelimit::Limits,
    /// What to do with instruction-like content in results.
    pub injection: mcpsec_core::InjectionMode,
    /// The trash, when undo is on.
    pub undo: Option<crate::tools::undo::Undo>,
}

pub(crate) struct Inner {
    /// What the built-in tools work with (`None` in a gateway: no built-in tools).
    pub(crate) ctx: Option<Arc<Ctx>>,
    /// The upstream server whose tools a gateway offers.
    pub(crate) upstream: Option<Arc<crate::gateway::Upstream>>,
    pub(crate) authorizer: Authorizer,
    pub(crate) principal: Principal,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) session: String,
    pub(crate) tools: HashMap<&'static str, ToolSpec>,
    /// Asks humans to confirm calls (`confirm` mode); needs the token store.
    pub(crate) confirmer: Option<Confirmer>,
    pub(crate) limiter: crate::pipeline::ratelimit::Limiter,
    pub(crate) limits: crate::pipeline::ratelimit::Limits,
    pub(crate) injection: mcpsec_core::InjectionMode,
    /// What `tools/list` returns: the tools whose capability is not denied.
    pub(crate) listed: Vec<Tool>,
    pub(crate) inflight: InFlight,
}

/// The mcpsec MCP server. Cheap to clone.
#[derive(Clone)]
pub struct McpsecServer {
    pub(crate) inner: Arc<Inner>,
    /// The principal of the call being handled, when it is not the
    /// server's own: the user an HTTP request authenticated as.
    acting: Option<Principal>,
    /// Every call must carry an authenticated user (HTTP): one without is
    /// refused rather than made as the server's principal.
    per_request: bool,
}

/// The user an HTTP request authenticated as, put into the request's
/// extensions by the transport (and only by it) for the pipeline to act as.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub(crate) Principal);

/// Counts the calls under way, so that a shutdown can let them finish.
#[derive(Default)]
pub(crate) struct InFlight {
    pub(crate) count: std::sync::atomic::AtomicUsize,
    pub(crate) idle: tokio::sync::Notify,
}

impl std::fmt::Debug for McpsecServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpsecServer")
            .field("principal", self.principal())
            .field("tools", &self.inner.listed.len())
            .finish_non_exhaustive()
    }
}

impl McpsecServer {
    /// A server with the built-in filesystem tools.
    pub fn new(options: ServerOptions) -> Self {
        let mut tools = HashMap::new();
        let mut listed = Vec::new();
        for mut spec in builtin() {
            if options.authorizer.takes_token(spec.capability) {
                add_token_argument(&mut spec.tool);
            }
            if options.authorizer.is_offered(spec.capability) {
                listed.push(spec.tool.clone());
            }
            let name: &'static str = match &spec.tool.name {
                std::borrow::Cow::Borrowed(n) => n,
                std::borrow::Cow::Owned(_) => continue,
            };
            tools.insert(name, spec);
        }
        let confirmer = options.authorizer.tokens().cloned().map(Confirmer::new);
        let limits = options.limits.by_canonical_name(crate::tools::canonical);
        McpsecServer {
            inner: Arc::new(Inner {
                ctx: Some(Arc::new(Ctx { sandbox: options.sandbox, shell: options.shell, undo: options.undo })),
                upstream: None,
                authorizer: options.authorizer,
                principal: options.principal,
                audit: options.audit,
                session: options.session,
                confirmer,
                limiter: crate::pipeline::ratelimit::Limiter::new(&limits),
                limits,
                injection: options.injection,
                tools,
                listed,
                inflight: InFlight::default(),
            }),
            acting: None,
            per_request: false,
        }
    }

    /// This server for HTTP: every call acts as the user its request
    /// authenticated as, and a call without one is refused.
    pub(crate) fn per_request_principals(mut self) -> Self {
        self.per_request = true;
        self
    }

    /// On whose behalf the current call is made.
    pub(crate) fn principal(&self) -> &Principal {
        self.acting.as_ref().unwrap_or(&self.inner.principal)
    }

    /// The server's own principal (the user in its start and stop records).
    pub(crate) fn own_principal(&self) -> &Principal {
        &self.inner.principal
    }

    /// Where every call is recorded.
    pub(crate) fn audit(&self) -> &Arc<AuditLog> {
        &self.inner.audit
    }

    /// This server's session id.
    pub(crate) fn session(&self) -> &str {
        &self.inner.session
    }

    /// This server acting for the request in `context`: as the user an HTTP
    /// request authenticated as, else (stdio) as the server's principal. A
    /// request without a user on a server that needs one (HTTP) is refused.
    pub(crate) fn acting_for(&self, context: &RequestContext<RoleServer>) -> Result<McpsecServer, ErrorData> {
        let user = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Authenticated>())
            .map(|a| a.0.clone());
        match (user, self.per_request) {
            (Some(user), _) => Ok(McpsecServer { acting: Some(user), ..self.clone() }),
            (None, false) => Ok(self.clone()),
            // The transport authenticates every request before it gets
            // here; a request without a user is a bug, and is not served.
            (None, true) => Err(ErrorData::internal_error("refused: the request carries no authenticated user", None)),
        }
    }

    /// Resolves once no call is under way (at once if none is).
    pub async fn idle(&self) {
        let inflight = &self.inner.inflight;
        loop {
            let notified = inflight.idle.notified();
            if inflight.count.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A gateway: no built-in tool, the tools of `upstream` through the
    /// same pipeline.
    pub(crate) fn gateway(options: crate::gateway::GatewayOptions) -> Self {
        let audit = Some((options.audit.clone(), options.session.clone()));
        let upstream = Arc::new(crate::gateway::Upstream::new(options.upstream, audit));
        let confirmer = options.authorizer.tokens().cloned().map(Confirmer::new);
        McpsecServer {
            inner: Arc::new(Inner {
                ctx: None,
                upstream: Some(upstream),
                authorizer: options.authorizer,
                principal: options.principal,
                audit: options.audit,
                session: options.session,
                confirmer,
                limiter: crate::pipeline::ratelimit::Limiter::new(&options.limits),
                limits: options.limits,
                injection: options.injection,
                tools: HashMap::new(),
                listed: Vec::new(),
                inflight: InFlight::default(),
            }),
            acting: None,
            per_request: false,
        }
    }

    /// The upstream of a gateway.
    pub(crate) fn upstream(&self) -> Option<&Arc<crate::gateway::Upstream>> {
        self.inner.upstream.as_ref()
    }

    /// The authorizer (the gateway evaluates upstream tools with it).
    pub(crate) fn authorizer(&self) -> &Authorizer {
        &self.inner.authorizer
    }

    /// The built-in tools `tools/list` shows.
    pub fn listed_tools(&self) -> &[Tool] {
        &self.inner.listed
    }
}
