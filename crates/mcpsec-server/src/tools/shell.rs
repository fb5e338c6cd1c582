//! The hardened program runner behind `execute_command`.
//!
//! [`Shell`] runs one program from the `[shell] allow` list per call, with
//! an argument vector and no shell, and returns what it printed and how it
//! ended ([`ExecOutput`]). It blocks: run it on the blocking pool.
//!
//! # What is enforced, and how
//!
//! - **Allowlist.** Only a program named in `[shell] allow` runs, by name.
//!   Names are resolved once, at start-up ([`Shell::new`]), by searching the
//!   `PATH` of the mcpsec process (absolute entries only); a name that is
//!   not found, or contains `/`, is a start-up error naming it. The program
//!   is executed by its *canonical* path (symlinks resolved at start-up),
//!   with `argv[0]` the path it was found at (so multi-call binaries such
//!   as busybox still see their name). mcpsec itself can never be allowed:
//!   the name `mcpsec`, anything whose canonical path or `(device, inode)`
//!   is the running executable's, and anything whose canonical name is
//!   `mcpsec` is refused at start-up.
//! - **No shell.** [`std::process::Command`] with an argument vector: no
//!   interpolation, globbing, `~` expansion or redirection happens.
//! - **Environment.** Cleared, then only `[shell] env` (default
//!   `PATH=/usr/local/bin:/usr/bin:/bin`, `LANG=C.UTF-8`), then `HOME` set
//!   to the working directory. stdin is `/dev/null`.
//! - **Working directory inside a root, without a race.** `cwd` (default:
//!   the first root) is opened as a directory handle through the path guard
//!   ([`Sandbox::open_dir_handle`], which applies the deny rules and a
//!   token's scope). The child enters *that handle*: its working directory
//!   is set to `/proc/self/fd/N`, which the child resolves after the fork
//!   and before `exec` (the descriptor is inherited; `O_CLOEXEC` closes it
//!   only at `exec`, after the `chdir`). A directory swapped for a symlink
//!   to outside after the check cannot redirect it. This needs `/proc`;
//!   [`Shell::new`] refuses to start without it (there is no fallback to a
//!   path, which could be raced).
//! - **Arguments that name paths.** Every argument, the value after its
//!   first `=` (`--file=/etc/passwd`, `if=/dev/sda`), and the value glued to
//!   a one-letter option (`-I/usr/include`, `-o../x`) is examined:
//!   - one that *looks like a path* (starts with `/` or `~`, or has a `..`
//!     component) must resolve inside a root through the path guard
//!     ([`Sandbox::check_path`], relative to the working directory; `~` and
//!     `~/…` are taken as `HOME`, the working directory, `~user` is refused),
//!     else the call is refused, whatever the error. So `rm -rf /` is
//!     refused even if `rm` is allowed;
//!   - any other part is checked the same way, but only a refusal counts
//!     (it leads outside through a symlink, or to a denied path, or out of
//!     a token's scope): `cat link/passwd` with `link -> /etc` is refused,
//!     while `-m "any message"` passes;
//!   - NUL bytes are refused.
//! - **Timeout.** `timeout_s` (default `[shell] timeout`, capped at
//!   `max_timeout`; not positive or not a number is invalid). The program
//!   runs in a new process group (`process_group(0)`); when the time is up
//!   the whole group gets SIGTERM, then SIGKILL one second later. Whenever
//!   the program ends (on time or not) whatever is left of its group is
//!   killed with SIGKILL *before* the program is reaped (so its pid, the
//!   group id, cannot have been reused): background processes do not
//!   outlive the call.
//! - **Output.** stdout and stderr are read concurrently, each kept up to
//!   `max_output` bytes; past the cap reading continues and the rest is
//!   discarded (so the program never blocks on a full pipe and is not
//!   killed early; the timeout bounds it), and the stream is reported
//!   truncated. Output is decoded as lossy UTF-8.
//!
//! # What is not caught
//!
//! The argument check is a guardrail against the obvious escapes (a model
//! asked to `rm -rf /`), not a sandbox. The sandbox is the kernel's: the
//! program is started confined ([`crate::confine`], `[confine]`), which
//! holds whatever it does with its arguments (it reads the system paths and
//! the roots, writes the roots and its `TMPDIR`, without the protected
//! paths, has no network). With `[confine] mode = "off"` it runs with the
//! full authority of the mcpsec user. Not caught by the argument check:
//!
//! - paths the program finds by itself: in its configuration, in files of
//!   the working directory (a Makefile, `.git/config`, `build.rs`), in
//!   environment variables it derives, or computed at run time;
//! - paths in forms the check does not parse: glued after several short
//!   flags (`-xf/etc/x`), in comma lists (`-Wl,-rpath,/x`), `host:path`,
//!   URLs (`file:///etc/passwd`), or inside a script passed as an argument;
//! - races: an argument is checked, then the program resolves it again, so
//!   a symlink swapped in between is followed (the working directory is
//!   not affected, see above);
//! - processes that leave the process group (`setsid`, daemons) are not
//!   killed; if one keeps stdout or stderr open, reading stops one second
//!   after the program ended ([`ExecOutput::streams_left_open`]).
//!
//! Allowing a program that runs other programs (`sh`, `bash`, `env`,
//! `xargs`, `find`, `make`, `git` through aliases and hooks, `cargo`
//! through build scripts, interpreters) allows running anything.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mcpsec_pathguard::{GuardError, Sandbox};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};

use crate::error::ToolError;

/// The tool's name, for messages.
const TOOL: &str = "execute_command";
/// The `PATH` searched at start-up when mcpsec's own environment has none,
/// and the default `PATH` passed to programs.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long a process group has between SIGTERM and SIGKILL, and how long
/// the output is waited for after the program ended.
const GRACE: Duration = Duration::from_secs(1);
/// How much is read from a pipe at once.
const CHUNK: usize = 16 * 1024;

/// `[shell]` settings, already validated.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// Program names that may run (`["git", "ls", "cargo"]`).
    pub allow: Vec<String>,
    /// The timeout when a call gives none (default 30 s).
    pub timeout: Duration,
    /// The longest timeout a call may ask for (default 300 s).
    pub max_timeout: Duration,
    /// Bytes kept of stdout, and of stderr (default 64 KiB each).
    pub max_output: usize,
    /// The environment passed to programs (besides `HOME`, which is the
    /// working directory).
    pub env: Vec<(String, String)>,
    /// How programs are confined (the CLI sets it from `[confine]`; the
    /// default is none).
    pub confine: crate::confine::Confinement,
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            allow: Vec::new(),
            timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
            max_output: 64 * 1024,
            env: vec![("PATH".into(), DEFAULT_PATH.into()), ("LANG".into(), "C.UTF-8".into())],
            confine: crate::confine::Confinement::off(),
        }
    }
}

/// An allowed program, resolved at start-up.
#[derive(Debug)]
struct Program {
    /// The name in `[shell] allow`.
    name: String,
    /// Where it was found in `PATH` (passed as `argv[0]`).
    found: PathBuf,
    /// Its canonical path (what is executed).
    exe: PathBuf,
}

/// The allowlist resolved to absolute paths at start-up, and the limits.
#[derive(Debug)]
pub struct Shell {
    programs: Vec<Program>,
    config: ShellConfig,
}

/// Why the `[shell]` settings cannot be used (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// A name in `[shell] allow` that may never be allowed.
    #[error("[shell] allow: `{name}` cannot be allowed: {reason}")]
    Refused {
        /// The name as configured.
        name: String,
        /// Why.
        reason: String,
    },
    /// A name in `[shell] allow` that is not in `PATH`.
    #[error("[shell] allow: program `{name}` was not found in PATH ({path}); install it, or remove it from the list")]
    NotFound {
        /// The name as configured.
        name: String,
        /// The `PATH` searched.
        path: String,
    },
    /// Another unusable setting.
    #[error("[shell]: {0}")]
    Config(String),
}

/// The arguments of `execute_command`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    /// A program name from `[shell] allow`.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// The working directory (inside a root; default: the first root).
    pub cwd: Option<String>,
    /// Seconds before the program is killed (default and cap in `[shell]`).
    pub timeout_s: Option<f64>,
}

/// What ran and how it ended.
#[derive(Debug, Serialize)]
pub struct ExecOutput {
    /// The absolute path of the program that ran.
    pub program: String,
    /// Its working directory (host path, at the time of the call).
    pub cwd: String,
    /// The exit code; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// stdout, lossy UTF-8, at most `max_output` bytes of it.
    pub stdout: String,
    /// stderr, lossy UTF-8, at most `max_output` bytes of it.
    pub stderr: String,
    /// Whether stdout was longer than `max_output` (the rest was discarded).
    pub stdout_truncated: bool,
    /// Whether stderr was longer than `max_output` (the rest was discarded).
    pub stderr_truncated: bool,
    /// Whether the timeout expired (the process group was killed).
    pub timed_out: bool,
    /// The timeout that applied, in seconds.
    pub timeout_s: f64,
    /// Wall-clock time from start to end, in milliseconds.
    pub duration_ms: u64,
    /// Whether a process that left the group still held stdout or stderr
    /// open after the program ended (reading was abandoned).
    pub streams_left_open: bool,
}

impl Shell {
    /// Resolves the allowlist in the `PATH` of the mcpsec process (or
    /// [`DEFAULT_PATH`] if it has none).
    pub fn new(config: ShellConfig) -> Result<Shell, ShellError> {
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        Shell::with_search_path(config, &path)
    }

    /// Like [`Shell::new`], searching `search_path` (a `PATH`-style list;
    /// relative entries are skipped) instead of the process' `PATH`.
    pub fn with_search_path(config: ShellConfig, search_path: &OsStr) -> Result<Shell, ShellError> {
        validate(&config)?;
        let mut programs: Vec<Program> = Vec::new();
        if !config.allow.is_empty() {
            proc_available()?;
            let me = Identity::current_exe()?;
            for name in &config.allow {
                if programs.iter().any(|p| &p.name == name) {
                    continue;
                }
                programs.push(resolve_program(name, search_path, &me)?);
            }
        }
        Ok(Shell { programs, config })
    }

    /// How programs are confined.
    pub fn confinement(&self) -> &crate::confine::Confinement {
        &self.config.confine
    }

    /// The allowed program names, as configured.
    pub fn allowed(&self) -> impl Iterator<Item = &str> {
        self.programs.iter().map(|p| p.name.as_str())
    }

    /// Runs a program (blocking) and reports how it ended. A non-zero exit
    /// is a successful run; refusals and failures to start are errors.
    pub fn run(&self, sandbox: &Sandbox, args: &ExecArgs) -> Result<ExecOutput, ToolError> {
        let prepared = self.prepare(sandbox, args)?;
        self.execute(prepared)
    }

    /// Every check, before anything runs.
    fn prepare(&self, sandbox: &Sandbox, args: &ExecArgs) -> Result<Prepared<'_>, ToolError> {
        let program = self.program(&args.command)?;
        let timeout = self.timeout(args.timeout_s)?;
        let (dir, cwd) = sandbox.open_dir_handle(args.cwd.as_deref().unwrap_or("."))?;
        for arg in &args.args {
            check_arg(sandbox, &cwd, arg)?;
        }
        let confined = self.config.confine.for_call(sandbox)?;
        Ok(Prepared { program, args: args.args.clone(), dir: dir.into(), cwd, timeout, confined })
    }

    fn program(&self, command: &str) -> Result<&Program, ToolError> {
        if let Some(p) = self.programs.iter().find(|p| p.name == command) {
            return Ok(p);
        }
        let allowed = if self.programs.is_empty() {
            "no program is allowed".to_owned()
        } else {
            format!("the allowed programs are: {}", self.allowed().collect::<Vec<_>>().join(", "))
        };
        let shown = shorten(command);
        Err(ToolError::Refused(if command.contains('/') {
            format!(
                "refused: `{shown}` is a path; execute_command runs programs by name from [shell] allow ({allowed})"
            )
        } else {
            format!(
                "refused: `{shown}` is not in [shell] allow, so it may not run ({allowed}); \
                 the operator can add it to [shell] allow in the config file"
            )
        }))
    }

    fn timeout(&self, asked: Option<f64>) -> Result<Duration, ToolError> {
        let Some(t) = asked else { return Ok(self.config.timeout.min(self.config.max_timeout)) };
        if t.is_nan() || t <= 0.0 {
            return Err(ToolError::Invalid { tool: TOOL, message: format!("`timeout_s` must be positive, not {t}") });
        }
        let max = self.config.max_timeout;
        Ok(if t >= max.as_secs_f64() { max } else { Duration::from_secs_f64(t) })
    }

    fn execute(&self, p: Prepared<'_>) -> Result<ExecOutput, ToolError> {
        let name = &p.program.name;
        let mut cmd = crate::confine::program_command(&p.program.exe, &p.program.found, p.confined.as_ref())?;
        cmd.args(&p.args)
            .env_clear()
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .env("HOME", &p.cwd)
            .envs(crate::confine::tmpdir(p.confined.as_ref()).map(|t| ("TMPDIR", t)))
            // The child enters the directory we hold, not a path.
            .current_dir(format!("/proc/self/fd/{}", p.dir.as_raw_fd()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let started = Instant::now();
        let mut child =
            cmd.spawn().map_err(|e| ToolError::Failed(format!("could not start `{name}`: {}", e.kind())))?;
        drop(p.dir);
        let group = Group::of(&child);
        let max = self.config.max_output;
        let (done_tx, done_rx) = mpsc::channel();
        let captures: Vec<Arc<Mutex<Capture>>> = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .map(|stream| {
            let capture = Arc::new(Mutex::new(Capture::default()));
            match stream {
                Some(stream) => {
                    let (c, tx) = (capture.clone(), done_tx.clone());
                    std::thread::spawn(move || {
                        drain(stream, max, &c);
                        let _ = tx.send(());
                    });
                }
                None => {
                    let _ = done_tx.send(());
                }
            }
            capture
        })
        .collect();
        drop(done_tx);

        // Wait for the program to end, without reaping it.
        let (exit_tx, exit_rx) = mpsc::channel();
        let pid = group.pid;
        std::thread::spawn(move || {
            while let Err(rustix::io::Errno::INTR) =
                rustix::process::waitid(WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOWAIT)
            {}
            let _ = exit_tx.send(());
        });
        let mut timed_out = false;
        if let Err(mpsc::RecvTimeoutError::Timeout) = exit_rx.recv_timeout(p.timeout) {
            timed_out = true;
            group.signal(Signal::TERM);
            if let Err(mpsc::RecvTimeoutError::Timeout) = exit_rx.recv_timeout(GRACE) {
                group.signal(Signal::KILL);
                let _ = exit_rx.recv();
            }
        }
        // The program has ended but is not reaped, so its pid (the group's
        // id) cannot have been reused: kill what is left of the group.
        group.signal(Signal::KILL);
        let status = child.wait();
        group.disarm();
        let status = status.map_err(|e| ToolError::Failed(format!("waiting for `{name}` failed: {}", e.kind())))?;
        let duration = started.elapsed();

        // Every process of the group is gone, so the pipes are at their end
        // unless a process that left the group holds them.
        let deadline = Instant::now() + GRACE;
        let mut finished = 0;
        while finished < captures.len() {
            match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => finished += 1,
                Err(_) => break,
            }
        }
        let streams_left_open = finished < captures.len();
        let mut taken = captures.iter().map(|c| std::mem::take(&mut *c.lock().unwrap_or_else(|e| e.into_inner())));
        let out = taken.next().unwrap_or_default();
        let err = taken.next().unwrap_or_default();
        Ok(ExecOutput {
            program: p.program.exe.display().to_string(),
            cwd: p.cwd.display().to_string(),
            exit_code: status.code(),
            signal: status.signal(),
            stdout: String::from_utf8_lossy(&out.buf).into_owned(),
            stderr: String::from_utf8_lossy(&err.buf).into_owned(),
            stdout_truncated: out.truncated,
            stderr_truncated: err.truncated,
            timed_out,
            timeout_s: p.timeout.as_secs_f64(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            streams_left_open,
        })
    }
}

/// A call that passed every check.
#[derive(Debug)]
struct Prepared<'s> {
    program: &'s Program,
    args: Vec<String>,
    /// The working directory, held open until the child has entered it.
    dir: OwnedFd,
    /// Its host path (for `HOME` and relative arguments).
    cwd: PathBuf,
    timeout: Duration,
    /// What the confined program is granted; its `TMPDIR` lives as long.
    confined: Option<crate::confine::ForCall>,
}

/// The process group of a running program; killed if dropped armed (a
/// panic between spawning and reaping leaves nothing running).
#[derive(Debug)]
struct Group {
    pid: Pid,
    armed: bool,
}

impl Group {
    fn of(child: &Child) -> Group {
        Group { pid: Pid::from_child(child), armed: true }
    }

    /// Signals the whole group (it is gone: nothing to do).
    fn signal(&self, sig: Signal) {
        // `kill(-1)` would signal every process we may signal.
        if !self.pid.is_init() {
            let _ = rustix::process::kill_process_group(self.pid, sig);
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::KILL);
        }
    }
}

/// What was kept of one output stream.
#[derive(Debug, Default)]
struct Capture {
    buf: Vec<u8>,
    truncated: bool,
}

/// Reads `stream` to its end, keeping at most `max` bytes.
fn drain(mut stream: impl Read, max: usize, capture: &Mutex<Capture>) {
    let mut chunk = vec![0u8; CHUNK];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                let mut c = capture.lock().unwrap_or_else(|e| e.into_inner());
                let room = max.saturating_sub(c.buf.len());
                if n > room {
                    c.truncated = true;
                }
                c.buf.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Checks one argument (see the module documentation).
fn check_arg(sandbox: &Sandbox, cwd: &Path, arg: &str) -> Result<(), ToolError> {
    if arg.contains('\0') {
        return Err(GuardError::Invalid { path: shorten(arg), reason: "the argument contains a NUL byte" }.into());
    }
    for part in path_parts(arg) {
        if looks_like_path(part) {
            check_strict(sandbox, cwd, part)?;
        } else if !part.is_empty()
            && let Err(e) = sandbox.check_path(cwd, part)
            && matches!(e, GuardError::Outside { .. } | GuardError::Protected { .. } | GuardError::OutOfScope { .. })
        {
            return Err(e.into());
        }
    }
    Ok(())
}

/// A path-like part must resolve inside a root, whatever the error.
fn check_strict(sandbox: &Sandbox, cwd: &Path, part: &str) -> Result<(), ToolError> {
    if let Some(after) = part.strip_prefix('~') {
        // `HOME` is the working directory; `~user` is someone's home.
        let rest = match after.strip_prefix('/') {
            Some(rest) => rest,
            None if after.is_empty() => "",
            None => return Err(GuardError::Outside { path: shorten(part) }.into()),
        };
        let home = if rest.is_empty() { ".".to_owned() } else { rest.to_owned() };
        sandbox.check_path(cwd, &home).map_err(|e| rename(e, part))?;
    }
    // The literal meaning too (a program without `~` expansion).
    sandbox.check_path(cwd, part)?;
    Ok(())
}

fn rename(e: GuardError, shown: &str) -> GuardError {
    match e {
        GuardError::Outside { .. } => GuardError::Outside { path: shorten(shown) },
        other => other,
    }
}

/// The parts of an argument that may name a path: itself, the value after
/// its first `=`, and the value glued to a one-letter option (`-I/x`).
fn path_parts(arg: &str) -> Vec<&str> {
    let mut parts = vec![arg];
    if let Some((_, value)) = arg.split_once('=') {
        parts.push(value);
    }
    if arg.starts_with('-') && !arg.starts_with("--") && arg.len() > 2 && arg.is_char_boundary(2) {
        parts.push(&arg[2..]);
    }
    parts
}

/// Absolute, home-relative, or with a `..` component.
fn looks_like_path(s: &str) -> bool {
    s.starts_with('/') || s.starts_with('~') || s.split('/').any(|c| c == "..")
}

/// Text short enough to quote in a message.
fn shorten(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_owned();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn validate(c: &ShellConfig) -> Result<(), ShellError> {
    let bad = |m: String| Err(ShellError::Config(m));
    if c.timeout.is_zero() || c.max_timeout.is_zero() {
        return bad("timeouts must be positive".into());
    }
    if c.timeout > c.max_timeout {
        return bad(format!("timeout ({:?}) is longer than max_timeout ({:?})", c.timeout, c.max_timeout));
    }
    if c.max_output == 0 {
        return bad("max_output must be positive".into());
    }
    for (k, v) in &c.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return bad(format!("env: `{k}` is not a valid variable (no `=` or NUL in names, no NUL in values)"));
        }
    }
    Ok(())
}

/// The child enters its working directory through `/proc/self/fd`.
fn proc_available() -> Result<(), ShellError> {
    // mcpsec's own start-up check, not a tool call.
    #[allow(clippy::disallowed_methods)]
    let ok = std::fs::metadata("/proc/self/fd").is_ok_and(|m| m.is_dir());
    if ok {
        Ok(())
    } else {
        Err(ShellError::Config(
            "execute_command needs /proc (programs enter their working directory through /proc/self/fd); \
             mount /proc or leave [shell] allow empty"
                .into(),
        ))
    }
}

/// The running executable, to keep it off the allowlist.
#[derive(Debug)]
struct Identity {
    canonical: PathBuf,
    dev: u64,
    ino: u64,
}

impl Identity {
    // mcpsec's own start-up checks, not tool calls.
    #[allow(clippy::disallowed_methods)]
    fn current_exe() -> Result<Identity, ShellError> {
        let cant = |e: std::io::Error| {
            ShellError::Config(format!("cannot find the running mcpsec executable to keep it off the allowlist: {e}"))
        };
        let canonical = std::fs::canonicalize(std::env::current_exe().map_err(cant)?).map_err(cant)?;
        let meta = std::fs::metadata(&canonical).map_err(cant)?;
        Ok(Identity { canonical, dev: meta.dev(), ino: meta.ino() })
    }
}

/// Finds `name` in `search_path` and refuses what may never run.
// mcpsec's own start-up configuration, not a tool call.
#[allow(clippy::disallowed_methods)]
fn resolve_program(name: &str, search_path: &OsStr, me: &Identity) -> Result<Program, ShellError> {
    let refuse = |reason: &str| Err(ShellError::Refused { name: name.to_owned(), reason: reason.to_owned() });
    if name.is_empty() || name == "." || name == ".." || name.contains('\0') {
        return refuse("it is not a program name");
    }
    if name.contains('/') {
        return refuse("list program names, not paths (they are looked up in PATH at start-up)");
    }
    if name == "mcpsec" {
        return refuse("mcpsec itself may never be run by a tool");
    }
    for dir in std::env::split_paths(search_path).filter(|d| d.is_absolute()) {
        let found = dir.join(name);
        let Ok(meta) = std::fs::metadata(&found) else { continue };
        if !meta.is_file() || meta.mode() & 0o111 == 0 {
            continue;
        }
        let Ok(exe) = std::fs::canonicalize(&found) else { continue };
        if exe == me.canonical
            || (meta.dev(), meta.ino()) == (me.dev, me.ino)
            || exe.file_name() == Some("mcpsec".as_ref())
        {
            return refuse(&format!("`{}` is mcpsec itself, which may never be run by a tool", found.display()));
        }
        return Ok(Program { name: name.to_owned(), found, exe });
    }
    Err(ShellError::NotFound { name: name.to_owned(), path: search_path.to_string_lossy().into_owned() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;
    use mcpsec_pathguard::{Rules, SandboxOptions};

    #[test]
    fn shell_path_parts_and_path_likeness() {
        assert_eq!(path_parts("--file=/etc/passwd"), ["--file=/etc/passwd", "/etc/passwd"]);
        assert_eq!(path_parts("-I/usr/include"), ["-I/usr/include", "/usr/include"]);
        assert_eq!(path_parts("if=/dev/sda"), ["if=/dev/sda", "/dev/sda"]);
        assert_eq!(path_parts("plain"), ["plain"]);
        for p in ["/", "/etc", "~", "~/x", "~root", "..", "../x", "a/../b", "a/.."] {
            assert!(looks_like_path(p), "{p}");
        }
        for p in ["x", "a/b", "..x", "x..", "a/..b/c", "-rf", ""] {
            assert!(!looks_like_path(p), "{p}");
        }
    }

    /// The working directory is the directory checked, even when it is
    /// swapped for a symlink to outside between the check and the spawn.
    #[test]
    fn shell_cwd_swapped_after_the_check_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let (root, outside) = (base.join("ws"), base.join("outside"));
        std::fs::create_dir_all(root.join("work")).unwrap();
        std::fs::write(root.join("work/inside-marker"), "").unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("outside-marker"), "").unwrap();
        let sandbox =
            Sandbox::open(std::slice::from_ref(&root), SandboxOptions { rules: Rules::none(), max_read: 1 << 20 })
                .unwrap();
        let shell =
            Shell::new(ShellConfig { allow: vec!["ls".into(), "pwd".into()], ..ShellConfig::default() }).unwrap();
        for command in ["ls", "pwd"] {
            let args = ExecArgs {
                command: command.into(),
                args: if command == "pwd" { vec!["-P".into()] } else { vec![] },
                cwd: Some("work".into()),
                timeout_s: None,
            };
            let prepared = shell.prepare(&sandbox, &args).unwrap();
            // The swap, right after the check.
            std::fs::rename(root.join("work"), root.join("moved")).unwrap();
            std::os::unix::fs::symlink(&outside, root.join("work")).unwrap();
            let out = shell.execute(prepared).unwrap();
            assert_eq!(out.exit_code, Some(0), "{out:?}");
            if command == "ls" {
                assert_eq!(out.stdout.trim(), "inside-marker", "{out:?}");
            } else {
                assert_eq!(out.stdout.trim(), root.join("moved").display().to_string(), "{out:?}");
            }
            std::fs::remove_file(root.join("work")).unwrap();
            std::fs::rename(root.join("moved"), root.join("work")).unwrap();
        }
    }
}
