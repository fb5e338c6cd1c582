//! The TOML configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::capability::{Capability, Mode, Policy};
use crate::units;

/// The default `paths.readonly` globs.
/// `**/.git/**` rather than the contract's `.git/**`: a root that holds several
/// repositories keeps every `.git` read-only, not only the top one.
pub const DEFAULT_READONLY: &[&str] = &["**/.git/**"];
/// The default `paths.deny` globs.
pub const DEFAULT_DENY: &[&str] = &["**/.env", "**/.env.*", "**/*.pem", "**/*.key", "**/id_rsa*", "**/id_ed25519*"];
/// The default read cap.
pub const DEFAULT_MAX_READ: u64 = 10 << 20;

/// A validated configuration. Every key is optional; [`Config::default`] is
/// the zero-configuration behaviour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Root directories from the file (relative ones are relative to the
    /// config file's directory, resolved by the caller). `--root` adds to them.
    pub roots: Vec<PathBuf>,
    /// Mode per capability.
    pub policy: Policy,
    /// Protected paths inside the roots.
    pub paths: PathRules,
    /// Resource limits.
    pub limits: Limits,
    /// The audit log.
    pub audit: AuditConfig,
    /// Capability token lifetimes.
    pub tokens: TokenConfig,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
    /// What to do with instruction-like content in what tools return.
    pub injection: InjectionMode,
    /// `execute_command`.
    pub shell: ShellSettings,
    /// `[confine]`: what the processes mcpsec starts may touch.
    pub confine: crate::confine::ConfineSettings,
    /// `[proxy.NAME]`: upstream servers behind `mcpsec proxy --name NAME`.
    pub proxy: std::collections::BTreeMap<String, crate::proxy::ProxySettings>,
    /// What destructive calls keep for `mcpsec undo`.
    pub undo: UndoConfig,
    /// The HTTP transport (`mcpsec serve --http`).
    pub http: HttpConfig,
}

/// `[http]`: the streamable HTTP transport's defences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `Host` values accepted (host or host:port); anything else is refused
    /// (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted (`scheme://host:port`, `:*` for any port);
    /// a request carrying any other `Origin` is refused. Requests without
    /// one (non-browser clients) pass.
    pub allowed_origins: Vec<String>,
    /// The largest request body accepted, in bytes.
    pub max_body: u64,
    /// Requests handled at once; more get 503.
    pub max_concurrent: u32,
    /// How long a client may take to send a request (and the server to start answering).
    pub request_timeout: Duration,
    /// Failed authentications allowed per client address per `rate_limit.window`.
    pub failed_auth: u32,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: u32,
    /// Connections one client address may hold open at once (within
    /// `max_connections`); more from it are closed as soon as they are
    /// accepted.
    pub max_connections_per_address: u32,
    /// How long a connection may take to send a request's headers, and stay
    /// idle between requests; then it is closed (slow clients, slowloris).
    pub header_timeout: Duration,
    /// MCP sessions (2025-11-25 and earlier) one user may hold open at once.
    pub max_sessions: u32,
}

/// The default `http.allowed_hosts`: the loopback names.
pub const DEFAULT_ALLOWED_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allowed_hosts: DEFAULT_ALLOWED_HOSTS.iter().map(|h| (*h).to_owned()).collect(),
            allowed_origins: Vec::new(),
            max_body: 16 << 20,
            max_concurrent: 64,
            request_timeout: Duration::from_secs(30),
            failed_auth: 10,
            max_connections: 512,
            max_connections_per_address: 128,
            header_timeout: Duration::from_secs(10),
            max_sessions: 32,
        }
    }
}

/// `[undo]`: what destructive calls keep under `<state-dir>/trash/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoConfig {
    /// Whether anything is kept at all (default true).
    pub enabled: bool,
    /// Capabilities whose calls keep nothing (default none): their calls
    /// proceed without undo instead of being refused when keeping fails.
    pub disabled_for: Vec<Capability>,
    /// How long entries are kept (default 7 days).
    pub retention: Duration,
    /// No automatic purge removes an entry younger than this (default 10
    /// minutes): a call that would need it is refused, so a model cannot
    /// push the undo history of its own recent calls out of the trash.
    pub min_keep: Duration,
    /// The most the trash holds, in bytes (default 1 GiB).
    pub max_size: u64,
    /// What happens when an entry would take the trash past `max_size`.
    pub on_full: OnFull,
}

impl Default for UndoConfig {
    fn default() -> Self {
        UndoConfig {
            enabled: true,
            disabled_for: Vec::new(),
            retention: Duration::from_secs(7 * 86_400),
            min_keep: Duration::from_secs(600),
            max_size: 1 << 30,
            on_full: OnFull::PurgeOldest,
        }
    }
}

impl UndoConfig {
    /// Whether calls needing `capability` keep what they remove.
    pub fn keeps(&self, capability: Capability) -> bool {
        self.enabled && !self.disabled_for.contains(&capability)
    }
}

/// `[undo] on_full`: what a call does when what it would keep takes the
/// trash past `max_size`. Either way, something larger than `max_size` on
/// its own is refused (fail closed): undo cannot keep it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Keep it, and purge the oldest entries (in the background) until the
    /// trash fits again.
    #[default]
    PurgeOldest,
    /// Refuse the call until a human purges the trash: nothing kept is ever
    /// discarded for lack of room.
    Refuse,
}

/// `[shell]`: which programs `execute_command` may run, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellSettings {
    /// Program names (resolved on PATH at start-up); empty by default.
    pub allow: Vec<String>,
    /// Default timeout (30 s).
    pub timeout: Duration,
    /// The longest timeout a call may ask for (300 s).
    pub max_timeout: Duration,
    /// Bytes kept of stdout and of stderr (64 KiB).
    pub max_output: u64,
}

impl Default for ShellSettings {
    fn default() -> Self {
        ShellSettings {
            allow: Vec::new(),
            timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
            max_output: 64 << 10,
        }
    }
}

/// `[injection] mode`: what to do when content returned to the model looks
/// like instructions to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectionMode {
    /// Return it unchanged, preceded by a block that names what was found
    /// and where, and says to treat it as data.
    #[default]
    Warn,
    /// Refuse the call, saying why.
    Block,
    /// Do not scan.
    Off,
}

/// `[rate_limit]`: per principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Calls per window (default 100).
    pub calls: u32,
    /// The window (default 60 s).
    pub window: Duration,
    /// Failed capability token checks per window (default 10).
    pub failed_token_checks: u32,
    /// Per-tool calls per window (`[rate_limit.tools] delete_file = 10`).
    pub tools: Vec<(String, u32)>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { calls: 100, window: Duration::from_secs(60), failed_token_checks: 10, tools: Vec::new() }
    }
}

/// `[tokens]`: how long capability tokens live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// TTL when `grant` is given none (execute_shell: 60 s unless set).
    pub default_ttl: Option<Duration>,
    /// The longest TTL per capability.
    pub max_ttl: [Duration; 4],
}

impl Default for TokenConfig {
    fn default() -> Self {
        let hour = Duration::from_secs(3600);
        TokenConfig { default_ttl: None, max_ttl: [hour, hour, hour, Duration::from_secs(300)] }
    }
}

impl TokenConfig {
    /// The TTL of a grant that names none.
    pub fn default_ttl(&self, capability: Capability) -> Duration {
        match (self.default_ttl, capability) {
            (Some(t), _) => t.min(self.max_ttl(capability)),
            (None, Capability::ExecuteShell) => Duration::from_secs(60),
            (None, _) => Duration::from_secs(300),
        }
    }

    /// The longest TTL a grant of `capability` may ask for.
    pub fn max_ttl(&self, capability: Capability) -> Duration {
        self.max_ttl[capability as usize]
    }
}

/// `[audit]`: where and how the audit log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The log file, relative to the state directory unless absolute.
    pub path: PathBuf,
    /// When records reach the disk.
    pub sync: AuditSync,
    /// Rotate the file past this size.
    pub rotate_size: u64,
    /// Refuse calls once the log reaches this size (no limit by default).
    pub max_size: Option<u64>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: PathBuf::from("audit.log"),
            sync: AuditSync::Changes(CHANGES_INTERVAL),
            rotate_size: 256 << 20,
            max_size: None,
        }
    }
}

/// `sync_interval` unset, with `sync = "changes"` (the default): the most a
/// machine crash can lose of the records of calls that changed nothing.
const CHANGES_INTERVAL: Duration = Duration::from_millis(10);
/// `sync_interval` unset, with `sync = "batch"`.
const BATCH_INTERVAL: Duration = Duration::from_secs(1);

/// `[audit] sync`: when records reach the disk. Every mode writes a record
/// (`write(2)`) before the call it records is answered, so a killed mcpsec
/// loses nothing; they differ in what a machine crash can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditSync {
    /// `always`: every record is `fdatasync`ed before its call is answered.
    Always,
    /// `changes` (the default): a mutating call's intent (before it acts)
    /// and result, and every record that is not a tool call's (grants,
    /// revocations, confirmations, a server's stop, …), are
    /// `fdatasync`ed before the caller goes on. The records of calls that
    /// changed nothing (reads, refusals) are `fdatasync`ed at most `interval`
    /// (`sync_interval`, default 10ms) later: a machine crash can lose that
    /// much of them, and never a change's record.
    Changes(Duration),
    /// `batch`: every record is `fdatasync`ed at most `interval`
    /// (`sync_interval`, default 1s) after it was written.
    Batch(Duration),
}

/// Globs (relative to a root) that no token can override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRules {
    /// Readable, never written, moved or deleted.
    pub readonly: Vec<String>,
    /// Neither readable nor writable; left out of listings and searches.
    pub deny: Vec<String>,
}

impl Default for PathRules {
    fn default() -> Self {
        PathRules {
            readonly: DEFAULT_READONLY.iter().map(|s| s.to_string()).collect(),
            deny: DEFAULT_DENY.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest file a read returns, in bytes.
    pub max_read: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_read: DEFAULT_MAX_READ }
    }
}

/// A configuration that cannot be used. The message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, an unknown key or a value of the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// A key whose value is not acceptable.
    #[error("`{key}`: {message}")]
    Value {
        /// The dotted key, e.g. `limits.max_read`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// `n`, unless it is 0.
fn positive_count(key: &str, n: u32) -> Result<u32, ConfigError> {
    if n == 0 { Err(value_error(key, "must be at least 1")) } else { Ok(n) }
}

/// The duration `text` says, unless it is 0 or not a duration.
fn positive_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    match units::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(value_error(key, "must be longer than 0")),
        Ok(d) => Ok(d),
        Err(m) => Err(value_error(key, m)),
    }
}

fn parse_http(h: RawHttp) -> Result<HttpConfig, ConfigError> {
    let mut c = HttpConfig::default();
    if let Some(hosts) = h.allowed_hosts {
        if hosts.iter().any(|x| x.trim().is_empty() || x.contains('/')) {
            return Err(value_error("http.allowed_hosts", "entries are host names or host:port, e.g. \"localhost\""));
        }
        c.allowed_hosts = hosts;
    }
    if let Some(origins) = h.allowed_origins {
        if let Some(bad) =
            origins.iter().find(|o| *o != "null" && !o.starts_with("http://") && !o.starts_with("https://"))
        {
            return Err(value_error(
                "http.allowed_origins",
                format!("`{bad}` is not an origin: write scheme://host:port, e.g. \"https://app.example.com:443\""),
            ));
        }
        c.allowed_origins = origins;
    }
    if let Some(t) = h.max_body {
        c.max_body = units::parse_size(&t).map_err(|m| value_error("http.max_body", m))?;
        if c.max_body == 0 {
            return Err(value_error("http.max_body", "must be larger than 0"));
        }
    }
    if let Some(n) = h.max_concurrent {
        c.max_concurrent = positive_count("http.max_concurrent", n)?;
    }
    if let Some(t) = h.request_timeout {
        c.request_timeout = positive_duration("http.request_timeout", &t)?;
    }
    if let Some(n) = h.failed_auth {
        c.failed_auth = positive_count("http.failed_auth", n)?;
    }
    if let Some(n) = h.max_connections {
        c.max_connections = positive_count("http.max_connections", n)?;
    }
    if let Some(n) = h.max_connections_per_address {
        c.max_connections_per_address = positive_count("http.max_connections_per_address", n)?;
    }
    if let Some(t) = h.header_timeout {
        c.header_timeout = positive_duration("http.header_timeout", &t)?;
    }
    if let Some(n) = h.max_sessions {
        c.max_sessions = positive_count("http.max_sessions", n)?;
    }
    Ok(c)
}

pub(crate) fn value_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Value { key: key.to_owned(), message: message.into() }
}

// The raw file as written. `deny_unknown_fields` everywhere: a typo must stop
// start-up, not silently fall back to a default.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    roots: Option<Vec<PathBuf>>,
    policy: Option<RawPolicy>,
    paths: Option<RawPaths>,
    limits: Option<RawLimits>,
    audit: Option<RawAudit>,
    tokens: Option<RawTokens>,
    rate_limit: Option<RawRateLimit>,
    injection: Option<RawInjection>,
    shell: Option<RawShell>,
    confine: Option<crate::confine::RawConfine>,
    proxy: Option<std::collections::BTreeMap<String, crate::proxy::RawProxy>>,
    undo: Option<RawUndo>,
    http: Option<RawHttp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    max_body: Option<String>,
    max_concurrent: Option<u32>,
    request_timeout: Option<String>,
    failed_auth: Option<u32>,
    max_connections: Option<u32>,
    max_connections_per_address: Option<u32>,
    header_timeout: Option<String>,
    max_sessions: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUndo {
    enabled: Option<bool>,
    disabled_for: Option<Vec<Capability>>,
    retention: Option<String>,
    min_keep: Option<String>,
    max_size: Option<String>,
    on_full: Option<OnFull>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    read_files: Option<Mode>,
    write_files: Option<Mode>,
    delete_files: Option<Mode>,
    execute_shell: Option<Mode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    readonly: Option<Vec<String>>,
    deny: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShell {
    allow: Option<Vec<String>>,
    timeout: Option<String>,
    max_timeout: Option<String>,
    max_output: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInjection {
    mode: Option<InjectionMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    calls: Option<u32>,
    window: Option<String>,
    failed_token_checks: Option<u32>,
    tools: Option<std::collections::BTreeMap<String, u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    default_ttl: Option<String>,
    max_ttl: Option<RawMaxTtl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaxTtl {
    read_files: Option<String>,
    write_files: Option<String>,
    delete_files: Option<String>,
    execute_shell: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<PathBuf>,
    sync: Option<String>,
    sync_interval: Option<String>,
    rotate_size: Option<String>,
    max_size: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_read: Option<String>,
}

impl Config {
    /// Parses and validates a configuration file's text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string().trim().to_owned()))?;
        let mut config = Config::default();
        let mut shell_mode_given = false;
        if let Some(roots) = raw.roots {
            config.roots = roots;
        }
        if let Some(p) = raw.policy {
            let given = [
                (Capability::ReadFiles, p.read_files),
                (Capability::WriteFiles, p.write_files),
                (Capability::DeleteFiles, p.delete_files),
                (Capability::ExecuteShell, p.execute_shell),
            ];
            for (capability, mode) in given {
                let Some(mode) = mode else { continue };
                config.policy.set(capability, mode);
                if capability == Capability::ExecuteShell {
                    shell_mode_given = true;
                }
            }
        }
        if let Some(paths) = raw.paths {
            if let Some(readonly) = paths.readonly {
                config.paths.readonly = readonly;
            }
            if let Some(deny) = paths.deny {
                config.paths.deny = deny;
            }
        }
        for (key, globs) in [("paths.readonly", &config.paths.readonly), ("paths.deny", &config.paths.deny)] {
            for glob in globs {
                validate_glob(glob).map_err(|m| value_error(key, m))?;
            }
        }
        if let Some(limits) = raw.limits
            && let Some(max_read) = limits.max_read
        {
            let bytes = units::parse_size(&max_read).map_err(|m| value_error("limits.max_read", m))?;
            if bytes == 0 {
                return Err(value_error("limits.max_read", "must be larger than 0"));
            }
            config.limits.max_read = bytes;
        }
        if let Some(t) = raw.tokens {
            if let Some(d) = t.default_ttl {
                config.tokens.default_ttl = Some(positive_duration("tokens.default_ttl", &d)?);
            }
            if let Some(m) = t.max_ttl {
                let given = [
                    (Capability::ReadFiles, m.read_files),
                    (Capability::WriteFiles, m.write_files),
                    (Capability::DeleteFiles, m.delete_files),
                    (Capability::ExecuteShell, m.execute_shell),
                ];
                for (capability, value) in given {
                    let Some(value) = value else { continue };
                    let key = format!("tokens.max_ttl.{capability}");
                    config.tokens.max_ttl[capability as usize] = positive_duration(&key, &value)?;
                }
            }
        }
        if let Some(sh) = raw.shell {
            if let Some(allow) = sh.allow {
                for name in &allow {
                    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                        return Err(value_error("shell.allow", format!("`{name}`: give program names, not paths")));
                    }
                }
                config.shell.allow = allow;
                // Naming programs enables execute_command; unless the policy
                // says otherwise, each call then needs a token (60 s by default).
                if !config.shell.allow.is_empty() && !shell_mode_given {
                    config.policy.set(Capability::ExecuteShell, Mode::Token);
                }
            }
            if let Some(t) = sh.timeout {
                config.shell.timeout = positive_duration("shell.timeout", &t)?;
            }
            if let Some(t) = sh.max_timeout {
                config.shell.max_timeout = positive_duration("shell.max_timeout", &t)?;
            }
            if config.shell.timeout > config.shell.max_timeout {
                return Err(value_error("shell.timeout", "is longer than shell.max_timeout"));
            }
            if let Some(t) = sh.max_output {
                config.shell.max_output = units::parse_size(&t).map_err(|m| value_error("shell.max_output", m))?;
                if config.shell.max_output == 0 {
                    return Err(value_error("shell.max_output", "must be larger than 0"));
                }
            }
        }
        if let Some(confine) = raw.confine {
            config.confine = crate::confine::parse(confine)?;
        }
        if let Some(proxy) = raw.proxy {
            config.proxy = crate::proxy::parse(proxy)?;
        }
        if let Some(mode) = raw.injection.and_then(|i| i.mode) {
            config.injection = mode;
        }
        if let Some(r) = raw.rate_limit {
            if let Some(n) = r.calls {
                config.rate_limit.calls = positive_count("rate_limit.calls", n)?;
            }
            if let Some(n) = r.failed_token_checks {
                config.rate_limit.failed_token_checks = positive_count("rate_limit.failed_token_checks", n)?;
            }
            if let Some(w) = r.window {
                config.rate_limit.window = positive_duration("rate_limit.window", &w)?;
            }
            for (tool, n) in r.tools.unwrap_or_default() {
                let n = positive_count(&format!("rate_limit.tools.{tool}"), n)?;
                config.rate_limit.tools.push((tool, n));
            }
        }
        if let Some(a) = raw.audit {
            if let Some(path) = a.path {
                if path.as_os_str().is_empty() {
                    return Err(value_error("audit.path", "must name a file"));
                }
                config.audit.path = path;
            }
            let interval = |default| match &a.sync_interval {
                Some(t) => positive_duration("audit.sync_interval", t),
                None => Ok(default),
            };
            config.audit.sync = match a.sync.as_deref() {
                Some("always") => {
                    if a.sync_interval.is_some() {
                        return Err(value_error(
                            "audit.sync_interval",
                            "does not apply with sync = \"always\" (every record is synced before its answer); \
                             remove it, or use sync = \"changes\" or \"batch\"",
                        ));
                    }
                    AuditSync::Always
                }
                // `changes` is the default, and `sync_interval` alone sets its interval.
                None | Some("changes") => AuditSync::Changes(interval(CHANGES_INTERVAL)?),
                Some("batch") => AuditSync::Batch(interval(BATCH_INTERVAL)?),
                Some(other) => {
                    return Err(value_error("audit.sync", format!("`{other}` is not `always`, `changes` or `batch`")));
                }
            };
            if let Some(t) = a.rotate_size {
                config.audit.rotate_size = units::parse_size(&t).map_err(|m| value_error("audit.rotate_size", m))?;
                if config.audit.rotate_size < 4096 {
                    return Err(value_error("audit.rotate_size", "must be at least 4KiB"));
                }
            }
            if let Some(t) = a.max_size {
                config.audit.max_size = Some(units::parse_size(&t).map_err(|m| value_error("audit.max_size", m))?);
            }
        }
        if let Some(h) = raw.http {
            config.http = parse_http(h)?;
        }
        if let Some(u) = raw.undo {
            if let Some(enabled) = u.enabled {
                config.undo.enabled = enabled;
            }
            if let Some(caps) = u.disabled_for {
                config.undo.disabled_for = caps;
            }
            if let Some(t) = u.retention {
                let d = units::parse_duration(&t).map_err(|m| value_error("undo.retention", m))?;
                if d.is_zero() {
                    return Err(value_error(
                        "undo.retention",
                        "must be longer than 0 (set enabled = false to keep nothing)",
                    ));
                }
                config.undo.retention = d;
            }
            let min_keep_given = u.min_keep.is_some();
            if let Some(t) = u.min_keep {
                config.undo.min_keep = units::parse_duration(&t).map_err(|m| value_error("undo.min_keep", m))?;
            }
            if !min_keep_given {
                // A retention shorter than the default minimum bounds it.
                config.undo.min_keep = config.undo.min_keep.min(config.undo.retention);
            } else if config.undo.min_keep > config.undo.retention {
                return Err(value_error(
                    "undo.min_keep",
                    format!(
                        "must not be longer than undo.retention ({:?}): entries are purged by age after the retention",
                        config.undo.retention
                    ),
                ));
            }
            if let Some(t) = u.max_size {
                config.undo.max_size = units::parse_size(&t).map_err(|m| value_error("undo.max_size", m))?;
                if config.undo.max_size == 0 {
                    return Err(value_error(
                        "undo.max_size",
                        "must be larger than 0 (set enabled = false to keep nothing)",
                    ));
                }
            }
            if let Some(on_full) = u.on_full {
                config.undo.on_full = on_full;
            }
        }
        Ok(config)
    }
}

/// Checks that `glob` is a valid pattern relative to a root (the form of
/// `[paths]` rules and of capability tokens' `--path` scopes).
pub fn validate_glob(glob: &str) -> Result<(), String> {
    if glob.starts_with('/') {
        return Err(format!("`{glob}`: globs are relative to a root; remove the leading `/`"));
    }
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map(|_| ())
        .map_err(|e| format!("`{glob}` is not a valid glob: {e}"))
}

#[cfg(test)]
mod tests;
