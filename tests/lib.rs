//! The end-to-end harness: spawns the real `mcpsec` binary and talks to it
//! through rmcp's MCP client, over both protocol generations.
//!
//! Every test gets its own [`Env`]: a temporary directory holding the root
//! `ws/` the server may use, and a sibling `outside/` with sentinel files
//! that no call may ever read, change or reveal.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmcp::model::{CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ProtocolVersion, Tool};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

/// A rate limit no test reaches (the default, 100 calls a minute, is far
/// below what the tests do in a few seconds).
pub const HIGH_LIMIT: &str = "[rate_limit]\ncalls = 1000000\n";

/// The content of every sentinel file outside the root.
pub const SECRET: &str = "TOP-SECRET-OUTSIDE-CONTENT";

/// Which protocol generation the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The `initialize` handshake, protocol 2025-11-25.
    Legacy,
    /// `server/discover` and per-request metadata, protocol 2026-07-28.
    Modern,
}

/// Both generations, for tests that must hold on each.
pub const BOTH: [Protocol; 2] = [Protocol::Legacy, Protocol::Modern];

/// The path of the `mcpsec` binary. `cargo test` does not build another
/// package's binary: when it is missing, or older than a source file of the
/// product crates, the first call runs `cargo build -p mcpsec-cli` into the
/// same target directory, so a plain `cargo test` works on a fresh clone and
/// never tests stale code. (Not on every run: `cargo build -p mcpsec-cli`
/// and `cargo test --workspace` unify features differently, and each would
/// rebuild what the other built.)
pub fn mcpsec_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // <target>/<profile>/deps/e2e-HASH
            let profile_dir = exe.parent().and_then(Path::parent).unwrap();
            let bin = profile_dir.join("mcpsec");
            let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
            let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
            let stale = built.is_none_or(|b| newest_source(&crates).is_some_and(|(t, _)| t > b));
            if stale {
                build_mcpsec(profile_dir);
            }
            assert!(bin.is_file(), "{} is missing after `cargo build -p mcpsec-cli`", bin.display());
            bin
        })
        .clone()
}

/// `cargo build -p mcpsec-cli` into the target directory `profile_dir` is in.
fn build_mcpsec(profile_dir: &Path) {
    let target = profile_dir.parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let _ = writeln!(std::io::stderr(), "building mcpsec for the end-to-end tests (cargo build -p mcpsec-cli) …");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "mcpsec-cli", "--target-dir"]).arg(target);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("running cargo to build mcpsec for the end-to-end tests");
    assert!(
        out.status.success(),
        "`cargo build -p mcpsec-cli` failed, so the end-to-end tests have no binary:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command line for the built `mcpsec` without the caller's
/// `MCPSEC_CONFIG`: a config file set in the environment that runs the
/// tests must not change what they test. Every command the tests build
/// for `mcpsec` starts here (or at [`Env::command`] and [`Env::cli`],
/// which do the same), and sets what it needs on top.
pub fn mcpsec_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(mcpsec_bin());
    cmd.env_remove("MCPSEC_CONFIG");
    cmd
}

/// The newest `.rs` or `.toml` file below `dir` that goes into the binary.
fn newest_source(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        // A crate's own tests, benches and examples are not inputs of the binary.
        let not_input = path.file_name().is_some_and(|n| n == "tests" || n == "benches" || n == "examples");
        let candidate = if path.is_dir() && not_input {
            None
        } else if path.is_dir() {
            newest_source(&path)
        } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
            entry.metadata().and_then(|m| m.modified()).ok().map(|t| (t, path))
        } else {
            None
        };
        if let Some(c) = candidate
            && newest.as_ref().is_none_or(|n| c.0 > n.0)
        {
            newest = Some(c);
        }
    }
    newest
}

/// Whether the tests run in CI (`CI` set, and not empty, `0` or `false`).
/// There, nothing may be skipped for want of a tool that `.ci/run`
/// installs, and snapshots may not be rewritten.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Skips part of a test because a tool is missing: says so on stderr
/// ("SKIPPED: WHAT because WHY", shown even for a passing test), or, in
/// CI (where `.ci/run` installs the tool), fails the test.
pub fn skip(what: &str, why: &str) {
    assert!(!in_ci(), "{what} cannot be skipped in CI ({why}): .ci/run installs it, so this CI machine is broken");
    // Straight to stderr, past the test harness's capture: shown even
    // when the test passes.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what} because {why}");
}

/// A test's private directory tree.
#[derive(Debug)]
pub struct Env {
    tmp: tempfile::TempDir,
    /// Where the fixture upstream's state file lives: outside `tmp`, which
    /// holds the config file, whose directory a confined upstream may never
    /// read.
    fixture: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// `ws/` with a few files, `outside/` with sentinels, a state dir.
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let env = Env { tmp, fixture: tempfile::tempdir().unwrap() };
        for d in ["ws", "outside", "outside/dir", "state", "ws-evil"] {
            std::fs::create_dir_all(env.path().join(d)).unwrap();
        }
        env.write("outside/secret.txt", SECRET);
        env.write("outside/dir/secret.txt", SECRET);
        env.write("ws-evil/secret.txt", SECRET);
        env.write("ws/hello.txt", "hello world\n");
        // As the server would create it (it warns about anything looser).
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
        std::fs::set_permissions(env.path().join("state"), private).unwrap();
        env
    }

    /// The temporary directory.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The fixture upstream's state file (`FIXTURE_STATE`, see
    /// `tests/fixtures/upstream.mjs`).
    pub fn fixture_state(&self) -> PathBuf {
        self.fixture.path().join("fixture.json")
    }

    /// The root the server is given.
    pub fn root(&self) -> PathBuf {
        self.path().join("ws")
    }

    /// The sentinel directory outside the root.
    pub fn outside(&self) -> PathBuf {
        self.path().join("outside")
    }

    /// Writes a file (creating parents) relative to the temp dir.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Reads a file relative to the temp dir.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    /// Whether a path relative to the temp dir exists (not following a final symlink).
    pub fn exists(&self, rel: &str) -> bool {
        self.path().join(rel).symlink_metadata().is_ok()
    }

    /// Creates a symlink at `link` (relative to the temp dir) pointing at `target` (verbatim).
    pub fn symlink(&self, target: impl AsRef<Path>, link: &str) {
        std::os::unix::fs::symlink(target, self.path().join(link)).unwrap();
    }

    /// A listing of everything under `outside/` with contents, to prove it unchanged.
    pub fn outside_snapshot(&self) -> Vec<(String, String)> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
            entries.sort();
            for p in entries {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                let meta = p.symlink_metadata().unwrap();
                if meta.is_dir() {
                    out.push((rel, "<dir>".into()));
                    walk(&p, base, out);
                } else if meta.file_type().is_symlink() {
                    out.push((rel, format!("-> {}", std::fs::read_link(&p).unwrap().display())));
                } else {
                    out.push((rel, std::fs::read_to_string(&p).unwrap_or_else(|_| "<binary>".into())));
                }
            }
        }
        let mut out = Vec::new();
        for d in ["outside", "ws-evil"] {
            walk(&self.path().join(d), self.path(), &mut out);
        }
        out
    }

    /// Writes a config file and returns its path.
    ///
    /// Tests make far more calls than the default rate limit (100 a
    /// minute) allows: unless `toml` says something about `[rate_limit]`,
    /// a limit no test reaches is added.
    ///
    /// Confined upstreams may read nothing of the test's directory: unless
    /// `toml` says something about `[confine]`, the fixture's state file
    /// (`fixture.json`, see `tests/fixtures/upstream.mjs`) is granted.
    pub fn config(&self, toml: &str) -> PathBuf {
        let p = self.path().join("mcpsec.toml");
        let mut text = if toml.contains("[rate_limit") { toml.to_owned() } else { format!("{toml}\n{HIGH_LIMIT}") };
        if !toml.contains("[confine]") {
            text.push_str(&self.fixture_grant());
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `[confine] read` granting the fixture's state file.
    fn fixture_grant(&self) -> String {
        format!("\n[confine]\nread = [{:?}]\n", self.fixture_state().display().to_string())
    }

    /// A command line for `mcpsec serve` on this env's root with `extra` arguments.
    pub fn command(&self, extra: &[&str]) -> tokio::process::Command {
        let mut args: Vec<std::ffi::OsString> = vec!["serve".into(), "--root".into(), self.root().into()];
        args.extend(extra.iter().map(Into::into));
        self.mcpsec_command(&args, extra.contains(&"--config"))
    }

    /// A command line for `mcpsec proxy --name NAME EXTRA… -- UPSTREAM…`
    /// (without `--name` if `name` is empty).
    pub fn proxy_command(&self, name: &str, extra: &[&str], upstream: &[&str]) -> tokio::process::Command {
        let mut args: Vec<std::ffi::OsString> = vec!["proxy".into()];
        if !name.is_empty() {
            args.extend(["--name".into(), name.into()]);
        }
        args.extend(extra.iter().map(Into::into));
        args.push("--".into());
        args.extend(upstream.iter().map(Into::into));
        self.mcpsec_command(&args, extra.contains(&"--config"))
    }

    /// Starts `mcpsec proxy` and connects a client.
    pub async fn start_proxy(&self, protocol: Protocol, name: &str, extra: &[&str], upstream: &[&str]) -> Client {
        Client::connect(self.proxy_command(name, extra, upstream), protocol).await
    }

    /// `mcpsec ARGS…` with this env's state directory, the test defaults
    /// for config unless `has_config`.
    fn mcpsec_command(&self, args: &[std::ffi::OsString], has_config: bool) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(mcpsec_bin());
        cmd.args(args)
            .current_dir(self.path())
            .env("MCPSEC_STATE_DIR", self.path().join("state"))
            .env_remove("MCPSEC_CONFIG")
            .env("XDG_CONFIG_HOME", self.path().join("no-config"))
            .env("RUST_LOG", "warn");
        if !has_config {
            // The defaults, but for a rate limit no test reaches.
            let p = self.path().join("defaults-for-tests.toml");
            std::fs::write(&p, format!("{HIGH_LIMIT}{}", self.fixture_grant())).unwrap();
            cmd.env("MCPSEC_CONFIG", p);
        }
        cmd
    }

    /// Starts a server with `extra` arguments and connects a client.
    pub async fn start(&self, protocol: Protocol, extra: &[&str]) -> Client {
        Client::connect(self.command(extra), protocol).await
    }

    /// Starts a server and connects a client whose human answers
    /// confirmations as `human` says.
    pub async fn start_with(&self, protocol: Protocol, extra: &[&str], human: Human) -> Client {
        Client::connect_full(self.command(extra), protocol, Stdio::inherit(), human).await
    }

    /// `mcpsec grant ARGS…` with this env's state: the token.
    pub fn grant(&self, args: &[&str]) -> String {
        let mut all = vec!["grant"];
        all.extend_from_slice(args);
        let (code, out, err) = self.cli(&all);
        assert_eq!(code, 0, "grant {args:?} failed: {err}");
        let token = out.trim().to_owned();
        assert!(token.starts_with("mcps_") && !token.contains('\n'), "{out:?}");
        token
    }

    /// The state directory the servers and the CLI of this env use.
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// The audit log (`state/audit.log`).
    pub fn audit_log(&self) -> PathBuf {
        self.state().join("audit.log")
    }

    /// Every line of the audit log that parses as JSON, in order.
    pub fn audit_records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.audit_log()).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Runs `mcpsec ARGS` on a pseudo-terminal (util-linux `script`), typing
    /// `input`; None when `script` is not installed (after [`skip`]ping
    /// `what`, which fails the test in CI).
    pub fn on_a_terminal(&self, what: &str, args: &str, input: &str) -> Option<(i32, String)> {
        use std::io::Write;
        let cmd = format!("{} {args}", mcpsec_bin().display());
        let spawned = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .current_dir(self.path())
            .env_remove("MCPSEC_CONFIG")
            .env("MCPSEC_STATE_DIR", self.state())
            .env("XDG_CONFIG_HOME", self.path().join("cfg"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                skip(what, "util-linux `script` is not installed (Debian: bsdutils)");
                return None;
            }
            Err(e) => panic!("running `script`: {e}"),
        };
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        Some((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).replace('\r', "")))
    }

    /// Runs `mcpsec ARGS` (e.g. `audit verify`) with this env's state
    /// directory and no config; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_with_stdin(args, None)
    }

    /// [`Env::cli`] with `stdin` written to the command's standard input
    /// (`None`: none at all), as a passphrase is given with `--passphrase-stdin`.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut child = mcpsec_command()
            .args(args)
            .current_dir(self.path())
            .env("MCPSEC_STATE_DIR", self.state())
            .env("XDG_CONFIG_HOME", self.path().join("no-config"))
            .env("RUST_LOG", "warn")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The human behind a client: whether the client can ask one to confirm a
/// call (MCP elicitation), and what they answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Human {
    /// The client declares no elicitation capability.
    Absent,
    /// Accepts every confirmation.
    Accepts,
    /// Declines every confirmation.
    Declines,
    /// Cancels every confirmation.
    Cancels,
}

/// The client's side of the session: its capabilities and its human.
#[derive(Debug, Clone)]
pub struct ClientSide {
    info: ClientConfig,
    human: Human,
    asked: Arc<AtomicUsize>,
    /// `notifications/tools/list_changed` received.
    changed: Arc<AtomicUsize>,
}

impl rmcp::ClientHandler for ClientSide {
    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }

    async fn on_tool_list_changed(&self, _context: rmcp::service::NotificationContext<RoleClient>) {
        self.changed.fetch_add(1, Ordering::SeqCst);
    }

    async fn create_elicitation(
        &self,
        _request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        use rmcp::model::{ElicitResult, ElicitationAction};
        self.asked.fetch_add(1, Ordering::SeqCst);
        match self.human {
            Human::Accepts => Ok(ElicitResult::new(ElicitationAction::Accept).with_content(serde_json::json!({}))),
            Human::Declines => Ok(ElicitResult::new(ElicitationAction::Decline)),
            Human::Cancels => Ok(ElicitResult::new(ElicitationAction::Cancel)),
            Human::Absent => Err(rmcp::ErrorData::internal_error("no human here", None)),
        }
    }
}

/// A connected MCP client.
#[derive(Debug)]
pub struct Client {
    service: RunningService<RoleClient, ClientSide>,
    asked: Arc<AtomicUsize>,
    changed: Arc<AtomicUsize>,
    /// The protocol generation in use.
    pub protocol: Protocol,
    pid: Option<u32>,
}

impl Client {
    /// Spawns `cmd` and connects over the given protocol generation.
    pub async fn connect(cmd: tokio::process::Command, protocol: Protocol) -> Client {
        Client::connect_with_stderr(cmd, protocol, Stdio::inherit()).await
    }

    /// Like [`Client::connect`], with the server's stderr going to `stderr`
    /// (e.g. a file, to check what the server logs).
    pub async fn connect_with_stderr(cmd: tokio::process::Command, protocol: Protocol, stderr: Stdio) -> Client {
        Client::connect_full(cmd, protocol, stderr, Human::Absent).await
    }

    /// Spawns `cmd` and connects with a client whose human answers
    /// confirmations as `human` says.
    pub async fn connect_full(cmd: tokio::process::Command, protocol: Protocol, stderr: Stdio, human: Human) -> Client {
        let (transport, _) = TokioChildProcess::builder(cmd).stderr(stderr).spawn().unwrap();
        let pid = transport.id();
        let mut config = ClientConfig::default();
        config.capabilities = match human {
            Human::Absent => ClientCapabilities::default(),
            _ => serde_json::from_value(json!({ "elicitation": { "form": {} } })).unwrap(),
        };
        let asked = Arc::new(AtomicUsize::new(0));
        let changed = Arc::new(AtomicUsize::new(0));
        let mut info = ClientSide { info: config, human, asked: asked.clone(), changed: changed.clone() };
        let service = match protocol {
            Protocol::Legacy => {
                info.info.protocol_version = ProtocolVersion::V_2025_11_25;
                info.serve(transport).await.unwrap()
            }
            Protocol::Modern => {
                info.info.protocol_version = ProtocolVersion::V_2026_07_28;
                info.serve_with_lifecycle(
                    transport,
                    ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] },
                )
                .await
                .unwrap()
            }
        };
        Client { service, asked, changed, protocol, pid }
    }

    /// How many `notifications/tools/list_changed` this client has received.
    pub fn list_changes(&self) -> usize {
        self.changed.load(Ordering::SeqCst)
    }

    /// How many times the server asked this client's human to confirm.
    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.pid.unwrap()
    }

    /// The protocol version the session negotiated.
    pub fn negotiated(&self) -> Option<ProtocolVersion> {
        self.service.peer_info().map(|i| i.protocol_version.clone())
    }

    /// A handle for issuing calls concurrently.
    pub fn peer(&self) -> rmcp::Peer<RoleClient> {
        self.service.peer().clone()
    }

    /// `tools/list`.
    pub async fn tools(&self) -> Vec<Tool> {
        self.service.list_all_tools().await.unwrap()
    }

    /// One `tools/call` round without driving input-required rounds (to
    /// inspect, replay or tamper with request state).
    pub async fn call_once(
        &self,
        tool: &str,
        args: Value,
        request_state: Option<String>,
        input_responses: Option<rmcp::model::InputResponses>,
    ) -> Result<rmcp::model::CallToolResponse, String> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = args.as_object().cloned();
        params.request_state = request_state;
        params.input_responses = input_responses;
        self.service.call_tool_once(params).await.map_err(|e| e.to_string())
    }

    /// `tools/call`; a JSON-RPC error is returned as `Err(message)`.
    pub async fn try_call(&self, tool: &str, args: Value) -> Result<CallToolResult, String> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = match args {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => panic!("arguments must be an object, not {other}"),
        };
        self.service.call_tool(params).await.map_err(|e| e.to_string())
    }

    /// `tools/call` that must reach the tool (no JSON-RPC error).
    pub async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        self.try_call(tool, args.clone()).await.unwrap_or_else(|e| panic!("{tool} {args}: JSON-RPC error {e}"))
    }

    /// A call that must succeed; returns its text.
    pub async fn ok(&self, tool: &str, args: Value) -> String {
        let r = self.call(tool, args.clone()).await;
        let t = text(&r);
        assert_eq!(r.is_error, Some(false), "{tool} {args} failed: {t}");
        t
    }

    /// A call that must fail with a tool error; returns its text.
    pub async fn err(&self, tool: &str, args: Value) -> String {
        let r = self.call(tool, args.clone()).await;
        let t = text(&r);
        assert_eq!(r.is_error, Some(true), "{tool} {args} should have failed, got: {t}");
        t
    }

    /// Closes the session and waits for the server to exit.
    pub async fn close(self) {
        self.service.cancel().await.unwrap();
    }
}

/// How long [`poll`] and [`poll_async`] wait at most. Generous: it is only
/// reached when the awaited event never comes, and then the test fails on
/// the caller's assertion (a loaded machine must not fail a test that
/// would pass).
pub const POLL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Calls `probe` until `done` holds for what it returns, every 50 ms for
/// [`POLL_LIMIT`] at most, and returns the last answer (for what a server
/// does in the background; the caller asserts on it). Blocks the thread:
/// in an async test use [`poll_async`].
pub fn poll<T>(mut probe: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = std::time::Instant::now() + POLL_LIMIT;
    let mut answer = probe();
    while !done(&answer) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        answer = probe();
    }
    answer
}

/// [`poll`] for async tests and probes: awaits `probe` until `done` holds
/// for its answer, every 20 ms for [`POLL_LIMIT`] at most, without blocking
/// the runtime; returns the last answer.
pub async fn poll_async<T, F: std::future::Future<Output = T>>(
    mut probe: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + POLL_LIMIT;
    let mut answer = probe().await;
    while !done(&answer) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        answer = probe().await;
    }
    answer
}

/// All text content of a result, joined.
pub fn text(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

/// Shorthand for `{"path": p}`.
pub fn path(p: &str) -> Value {
    json!({ "path": p })
}

/// Asserts that `message`, the answer to a call with arguments `input`,
/// reveals nothing about what lies outside the root: no sentinel content,
/// no path outside the root that the caller did not name itself (such as a
/// symlink's target), no line of `/etc/passwd`.
pub fn assert_no_leak(env: &Env, input: &serde_json::Value, message: &str) {
    assert!(!message.contains(SECRET), "leaked content: {message}");
    let given = input.to_string();
    for dir in [env.outside(), env.path().join("ws-evil"), PathBuf::from("/etc")] {
        let dir = dir.display().to_string();
        if !given.contains(&dir) {
            assert!(!message.contains(&dir), "leaked the path {dir}: {message}");
        }
    }
    assert!(!message.contains("root:x:0:0"), "leaked /etc/passwd: {message}");
}

/// A config that allows every filesystem capability.
pub const ALLOW_ALL: &str = "[policy]\nwrite_files = \"allow\"\ndelete_files = \"allow\"\n";

/// The test fixture MCP server (`tests/fixtures/upstream.mjs`, Node, no
/// dependencies): the command line that runs it.
pub fn fixture_upstream() -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("upstream.mjs");
    vec!["node".into(), script.display().to_string()]
}

/// `target/test-deps/node_modules`: the reference MCP servers from npm
/// (`tests/fixtures/npm`, pinned by its lock file). `cargo xtask ci`
/// installs them first; if they are missing, the first test that needs them
/// installs them with `npm ci` (into a private directory, then renamed into
/// place, so concurrent test processes cannot see a half-installed tree),
/// for at most [`NPM_CI_LIMIT`]. An error says why that failed (no npm,
/// no registry): the caller skips, saying so ([`skip`]; a failure under CI).
pub fn node_modules() -> Result<PathBuf, String> {
    static INSTALLED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(install_node_modules).clone()
}

/// How long an `npm ci` of the test dependencies may take.
pub const NPM_CI_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

fn install_node_modules() -> Result<PathBuf, String> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let deps = target.join("test-deps");
    let modules = deps.join("node_modules");
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/npm/package-lock.json");
    let fresh = |p: &Path| {
        let stamp = std::fs::read(p.join("package-lock.json")).ok();
        stamp.is_some() && stamp == std::fs::read(&lock).ok()
    };
    if fresh(&deps) && modules.is_dir() {
        return Ok(modules);
    }
    let tmp = target.join(format!("test-deps.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    for f in ["package.json", "package-lock.json"] {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/npm").join(f);
        std::fs::copy(&from, tmp.join(f)).map_err(|e| format!("copying {}: {e}", from.display()))?;
    }
    let _ = writeln!(std::io::stderr(), "installing the reference MCP servers into {} (npm ci) …", deps.display());
    let mut child = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("npm (Node.js 20 or later) could not be run: {e}"))?;
    let status = poll_child(&mut child, NPM_CI_LIMIT);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!("`npm ci` took longer than {NPM_CI_LIMIT:?} (no registry?)"));
    };
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!("`npm ci` failed ({status}): offline, or the registry refused"));
    }
    if !fresh(&deps) {
        let _ = std::fs::remove_dir_all(&deps);
    }
    // Another process may have won the race: its tree is as good.
    if std::fs::rename(&tmp, &deps).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if fresh(&deps) && modules.is_dir() {
        Ok(modules)
    } else {
        Err(format!("{} is missing after npm ci", modules.display()))
    }
}

/// Waits for `child` to exit, at most `limit`; `None` if it is still running.
fn poll_child(child: &mut std::process::Child, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            _ => return None,
        }
    }
}

/// The command line of a reference MCP server installed by [`node_modules`]
/// (`server-filesystem`, `server-everything`), before its own arguments;
/// `None` (and the skip said, [`skip`]) when they could not be installed.
pub fn reference_server(test: &str, package: &str) -> Option<Vec<String>> {
    let modules = match node_modules() {
        Ok(m) => m,
        Err(why) => {
            skip(test, &format!("it runs the reference server {package} from npm, and {why}"));
            return None;
        }
    };
    let index = modules.join("@modelcontextprotocol").join(package).join("dist").join("index.js");
    Some(vec!["node".into(), index.display().to_string()])
}

/// A `mcpsec serve --http 127.0.0.1:0` process (killed when dropped).
#[derive(Debug)]
pub struct HttpServer {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    /// The server's stderr so far (it is read in the background).
    pub stderr: Arc<std::sync::Mutex<String>>,
}

impl Env {
    /// `mcpsec users add NAME`: the key.
    pub fn add_user(&self, name: &str) -> String {
        let (code, out, err) = self.cli(&["users", "add", name]);
        assert_eq!(code, 0, "users add {name} failed: {err}");
        let key = out.trim().to_owned();
        assert!(key.starts_with("mcpsu_") && !key.contains('\n'), "{out:?}");
        key
    }

    /// Starts `mcpsec serve --http 127.0.0.1:0` with `extra` arguments and
    /// waits until it listens.
    pub async fn serve_http(&self, extra: &[&str]) -> HttpServer {
        let mut args = vec!["--http", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        HttpServer::spawn(self.command(&args)).await
    }

    /// [`Env::serve_http`] with a config file holding `config`.
    pub async fn serve_http_with(&self, config: &str) -> HttpServer {
        let file = self.config(config);
        self.serve_http(&["--config", file.to_str().expect("a UTF-8 temporary path")]).await
    }

    /// Starts `mcpsec proxy --name NAME --http 127.0.0.1:0 EXTRA… -- UPSTREAM…`
    /// and waits until it listens.
    pub async fn proxy_http(&self, name: &str, extra: &[&str], upstream: &[&str]) -> HttpServer {
        HttpServer::spawn(self.proxy_http_command(name, extra, upstream)).await
    }

    /// The command line of [`Env::proxy_http`], to add to before spawning it
    /// with [`HttpServer::spawn`].
    pub fn proxy_http_command(&self, name: &str, extra: &[&str], upstream: &[&str]) -> tokio::process::Command {
        let mut args = vec!["--http", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        self.proxy_command(name, &args, upstream)
    }
}

impl HttpServer {
    /// Spawns `cmd` (an `mcpsec serve --http` or `proxy --http` command line)
    /// and waits until it listens.
    pub async fn spawn(mut cmd: tokio::process::Command) -> HttpServer {
        use tokio::io::AsyncBufReadExt;
        cmd.env("RUST_LOG", "warn,mcpsec_server::http=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let deadline = std::time::Duration::from_secs(20);
        let url = tokio::time::timeout(deadline, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                stderr.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(i) = line.find("listening on ") {
                    return line[i + "listening on ".len()..].trim().to_owned();
                }
            }
            panic!("the server exited before listening: {}", stderr.lock().unwrap());
        })
        .await
        .unwrap_or_else(|_| panic!("the server did not listen in time: {}", stderr.lock().unwrap()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        HttpServer { child, url, stderr }
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Connects an MCP client that authenticates with `key`.
    pub async fn connect(&self, key: &str, protocol: Protocol) -> Result<Client, String> {
        self.connect_with(key, protocol, Human::Absent).await
    }

    /// Connects an MCP client that authenticates with `key`, whose human
    /// answers confirmations as `human` says.
    pub async fn connect_with(&self, key: &str, protocol: Protocol, human: Human) -> Result<Client, String> {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.as_str()).auth_header(key);
        let transport = StreamableHttpClientTransport::from_config(config);
        let mut config = ClientConfig::default();
        config.capabilities = match human {
            Human::Absent => ClientCapabilities::default(),
            _ => serde_json::from_value(json!({ "elicitation": { "form": {} } })).unwrap(),
        };
        let asked = Arc::new(AtomicUsize::new(0));
        let changed = Arc::new(AtomicUsize::new(0));
        let mut info = ClientSide { info: config, human, asked: asked.clone(), changed: changed.clone() };
        let service = match protocol {
            Protocol::Legacy => {
                info.info.protocol_version = ProtocolVersion::V_2025_11_25;
                info.serve(transport).await.map_err(|e| e.to_string())?
            }
            Protocol::Modern => {
                info.info.protocol_version = ProtocolVersion::V_2026_07_28;
                info.serve_with_lifecycle(
                    transport,
                    ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] },
                )
                .await
                .map_err(|e| e.to_string())?
            }
        };
        Ok(Client { service, asked, changed, protocol, pid: None })
    }

    /// Sends SIGTERM and waits for the server to exit; its exit code.
    pub async fn stop(self) -> i32 {
        self.terminate();
        self.wait().await
    }

    /// Sends SIGTERM (see [`HttpServer::wait`]).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits (at most 60 s: a server that does not stop fails the test
    /// instead of hanging it) for the server to exit; its exit code.
    pub async fn wait(mut self) -> i32 {
        let exit = tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait()).await;
        let stderr = self.stderr.lock().unwrap().clone();
        exit.unwrap_or_else(|_| panic!("the server did not stop within 60 s: {stderr}")).unwrap().code().unwrap_or(-1)
    }
}

/// A raw HTTP request to an MCP endpoint, for what an MCP client would
/// never send.
/// An `initialize` POST with the bearer `key`: its status, or why no answer
/// came (the connection closed, refused…).
pub async fn try_initialize(url: &str, key: &str) -> Result<u16, String> {
    let r = reqwest::Client::new()
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(initialize_body())
        .send()
        .await;
    r.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

pub async fn raw_post(url: &str, headers: &[(&str, &str)], body: String) -> (u16, Vec<(String, String)>, String) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    // An event stream may stay open after its message: read until the body
    // ends or, on an event stream, until a message has come.
    let stream = headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"));
    let mut got = Vec::new();
    let read = tokio::time::timeout(POLL_LIMIT, async {
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => got.extend_from_slice(&chunk),
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
            if stream && has_event_message(&got) {
                return Ok(());
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    match read {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("reading the answer ({status}) failed: {e}; read so far: {text:?}"),
        Err(_) => panic!("the answer ({status}) neither ended nor brought a message in {POLL_LIMIT:?}: {text:?}"),
    }
    (status, headers, text)
}

/// Whether an event stream's text holds a complete event with a JSON
/// message (rmcp's priming event has an empty `data:`).
fn has_event_message(stream: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stream).replace("\r\n", "\n");
    let mut events: Vec<&str> = text.split("\n\n").collect();
    // What follows the last blank line is not a complete event yet.
    events.pop();
    events.iter().any(|e| e.lines().any(|l| l.strip_prefix("data:").is_some_and(|d| d.trim().starts_with(['{', '[']))))
}

/// A JSON-RPC `initialize` request body (protocol 2025-11-25).
pub fn initialize_body() -> String {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "raw", "version": "1" } }
    })
    .to_string()
}

/// A self-signed certificate for `localhost`, its files in an env (the key
/// 0600, as `--tls-key` requires), and a TLS client that trusts only it.
pub struct TestCert {
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
    /// Connects to `localhost` trusting this certificate alone.
    pub connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TestCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCert").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl Env {
    /// Generates a [`TestCert`] under `tls/` in this env.
    pub fn test_cert(&self) -> TestCert {
        use tokio_rustls::rustls;
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        self.write("tls/cert.pem", &generated.cert.pem());
        self.write("tls/key.pem", &generated.signing_key.serialize_pem());
        let key = self.path().join("tls/key.pem");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(generated.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestCert {
            cert: self.path().join("tls/cert.pem"),
            key,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }
}

impl TestCert {
    /// `--tls-cert CERT --tls-key KEY`.
    pub fn args(&self) -> [&str; 4] {
        ["--tls-cert", self.cert.to_str().unwrap(), "--tls-key", self.key.to_str().unwrap()]
    }

    /// One `POST /mcp` over TLS to `url`'s port (as `localhost`), with a
    /// bearer key if `auth` and `headers` besides (`Connection: close`):
    /// everything that came back until the server closed the connection.
    pub async fn post(&self, url: &str, auth: Option<&str>, headers: &[(&str, &str)], body: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port: u16 = url.rsplit(':').next().unwrap().trim_end_matches("/mcp").parse().unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = self.connector.connect(name, tcp).await.unwrap();
        let mut extra = auth.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        for (k, v) in headers {
            extra.push_str(&format!("{k}: {v}\r\n"));
        }
        let request = format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\n{extra}Content-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(POLL_LIMIT, async {
            let mut buf = [0u8; 4096];
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    // A close without TLS close_notify still ends the answer.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        let text = String::from_utf8_lossy(&out).into_owned();
        match read {
            Ok(Ok(())) => text,
            Ok(Err(e)) => panic!("reading the TLS answer failed: {e}; read so far: {text:?}"),
            Err(_) => panic!("the server kept the connection open for {POLL_LIMIT:?}: {text:?}"),
        }
    }
}
