//! Turning the command of an `execute_command` program or of an upstream
//! server into the confined one: mcpsec re-executed as
//! `mcpsec __confine-exec`, which applies the rules ([`mcpsec_confine`])
//! and then executes the program.
//!
//! [`Confinement`] is built by the caller (the CLI), which knows the
//! environment: the mcpsec executable, the never-paths, the grants from the
//! configuration. Here the per-call grants are added: for a program, the
//! roots split around the protected paths that exist in them now and a
//! private `TMPDIR`; for an upstream, what the CLI resolved for it.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mcpsec_confine::{Grants, Launcher, Mode, Network};
use mcpsec_pathguard::Sandbox;

use crate::tools::ToolError;

/// The most entries the roots may hold for the protected-path scan that
/// precedes every confined call.
const MAX_SCAN: usize = 200_000;

/// How the processes of one kind (programs, or one upstream) are started.
#[derive(Debug, Clone)]
pub struct Confinement {
    mode: Mode,
    /// `None` when the mode is off.
    launcher: Option<Arc<Launcher>>,
    network: Network,
    /// Grants of this kind of process besides the launcher's base.
    extra: Grants,
    /// What the kernel will not enforce (best effort).
    missing: Vec<String>,
    /// Required, and the kernel cannot enforce every rule: why.
    refusal: Option<String>,
    /// `TMPDIR` of an upstream (a private directory under the state dir).
    tmpdir: Option<PathBuf>,
}

impl Confinement {
    /// No confinement (`[confine] mode = "off"`).
    pub fn off() -> Confinement {
        Confinement {
            mode: Mode::Off,
            launcher: None,
            network: Network::All,
            extra: Grants::default(),
            missing: Vec::new(),
            refusal: None,
            tmpdir: None,
        }
    }

    /// Confinement through `launcher`, with `extra` grants and `network`;
    /// asks the kernel now what it will enforce.
    pub fn new(launcher: Arc<Launcher>, extra: Grants, network: Network, tmpdir: Option<PathBuf>) -> Confinement {
        let (missing, refusal) =
            match mcpsec_confine::probe(launcher.mode, &network, launcher.test_only_pretend_no_landlock) {
                Ok(report) => (report.missing, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
        Confinement { mode: launcher.mode, launcher: Some(launcher), network, extra, missing, refusal, tmpdir }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Required, and the kernel cannot enforce every rule: why.
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// What will not hold (best effort; empty otherwise).
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// For the `server_start` record.
    pub fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode.as_str(),
            "missing": self.missing,
            "refusal": self.refusal,
        })
    }

    /// The command that starts an upstream (`command`: program and
    /// arguments), confined unless the mode is off.
    pub(crate) fn upstream_command(&self, command: &[OsString]) -> Result<tokio::process::Command, String> {
        let Some((program, args)) = command.split_first() else { return Err("no command".into()) };
        let Some(launcher) = &self.launcher else {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args);
            return Ok(cmd);
        };
        if let Some(why) = &self.refusal {
            return Err(why.clone());
        }
        // As spawning it directly would say, rather than the launcher later.
        if !findable(Path::new(program)) {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound).to_string());
        }
        let mut cmd = launcher
            .command(Path::new(program), program, &self.extra, self.network.clone())
            .map_err(|e| e.to_string())?;
        cmd.args(args);
        if let Some(tmp) = &self.tmpdir {
            cmd.env("TMPDIR", tmp);
        }
        Ok(cmd.into())
    }

    /// What one `execute_command` call is granted: the roots (split around
    /// the protected paths they hold now) and a private `TMPDIR`.
    pub(crate) fn for_call(&self, sandbox: &Sandbox) -> Result<Option<ForCall>, ToolError> {
        let Some(launcher) = &self.launcher else { return Ok(None) };
        if let Some(why) = &self.refusal {
            return Err(ToolError::Refused(format!("refused: execute_command runs programs confined, and {why}")));
        }
        let protected = match sandbox.protected_paths(MAX_SCAN) {
            Ok(p) => p,
            Err(e) if self.mode == Mode::Required => {
                return Err(ToolError::Refused(format!(
                    "refused: {e}, so [paths] deny and readonly cannot be enforced on the program; \
                     narrow the roots, or set [confine] mode = \"best_effort\" (programs may then read \
                     protected paths in the roots)"
                )));
            }
            Err(e) => {
                tracing::warn!(
                    "[confine] mode = \"best_effort\": {e}; this program may read [paths] deny and write \
                     [paths] readonly paths in the roots"
                );
                Default::default()
            }
        };
        let mut no_read = launcher.never.clone();
        for p in &protected.deny {
            no_read.push("a [paths] deny path", p);
        }
        let mut no_write = no_read.clone();
        for p in &protected.readonly {
            no_write.push("a [paths] readonly path", p);
        }
        let mut grants = self.extra.clone();
        for root in sandbox.roots() {
            grants.read(root, &no_read);
            grants.write(root, &no_write);
        }
        let tmp = tempfile::Builder::new()
            .prefix("mcpsec-exec-")
            .tempdir()
            .map_err(|e| ToolError::Failed(format!("could not create the program's TMPDIR: {}", e.kind())))?;
        grants.write_private(tmp.path());
        Ok(Some(ForCall { launcher: launcher.clone(), network: self.network.clone(), grants, tmp }))
    }
}

/// Whether `program` names a file, or is found in `PATH`.
// mcpsec's own start of an upstream, not a tool call.
#[allow(clippy::disallowed_methods)]
fn findable(program: &Path) -> bool {
    let is_file = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file());
    if program.components().count() > 1 {
        return is_file(program);
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.is_absolute() && is_file(&d.join(program))))
}

/// What one confined `execute_command` call is granted; its `TMPDIR` is
/// removed when it is dropped (after the call).
#[derive(Debug)]
pub(crate) struct ForCall {
    launcher: Arc<Launcher>,
    network: Network,
    grants: Grants,
    tmp: tempfile::TempDir,
}

/// The command for program `exe` (`argv[0]` = `arg0`): confined through
/// `call`, or the program itself when there is no confinement. The caller
/// adds the arguments, the environment (then [`tmpdir`]) and stdio.
pub(crate) fn program_command(
    exe: &Path,
    arg0: &Path,
    call: Option<&ForCall>,
) -> Result<std::process::Command, ToolError> {
    let Some(call) = call else {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg0(arg0);
        return Ok(cmd);
    };
    call.launcher
        .command(exe, arg0.as_os_str(), &call.grants, call.network.clone())
        .map_err(|e| ToolError::Failed(format!("could not confine the program: {e}")))
}

/// The private `TMPDIR` of a confined call.
pub(crate) fn tmpdir(call: Option<&ForCall>) -> Option<&Path> {
    call.map(|c| c.tmp.path())
}
