//! Confinement of the processes mcpsec starts.
//!
//! It provides [`apply`]: given a [`Policy`] (what may be read, what may be
//! written, which TCP ports may be reached, resource limits), it confines
//! the **current process** with `no_new_privs`, a Landlock ruleset, a
//! seccomp filter and resource limits, and returns a [`Report`] of what
//! holds. mcpsec re-executes itself (`mcpsec __confine-exec`), calls
//! [`apply`], then executes the program: the rules are inherited by every
//! process the program starts, and cannot be lifted by it.
//!
//! # Guarantee
//!
//! In [`Mode::Required`], [`apply`] returns `Ok` only when every rule is
//! enforced by the kernel (Landlock's status is *fully enforced*, the
//! seccomp filter is installed, `no_new_privs` and the limits are set);
//! otherwise the caller must not execute the program. In
//! [`Mode::BestEffort`] it applies what the kernel supports and
//! [`Report::missing`] says what does not hold.
//!
//! # What is granted
//!
//! Landlock only *grants*: everything not granted is refused. The grants
//! are built by [`Grants`] in the parent: [`default_read`] (the system's
//! program and library paths, `/etc` entry by entry without its secrets,
//! `/proc`, a few devices), plus what the caller adds, with every
//! [`Never`] path carved out (a grant that contains a never-path is
//! replaced by its children, recursively, down to the never-path, which is
//! left out). A configured entry that overlaps a never-path is an error
//! ([`check_overlap`]) naming both.
//!
//! ```
//! use mcpsec_confine::{Never, check_overlap};
//! let never = Never::new(vec![("the state directory".into(), "/home/u/.local/state/mcpsec".into())]);
//! let err = check_overlap("[confine] read", &["/home/u/.local".into()], &never).unwrap_err();
//! assert!(err.to_string().contains("the state directory"));
//! ```
//!
//! # Non-goals
//!
//! - UDP and other socket families are not ruled by Landlock before ABI 10;
//!   with `network = "none"` the seccomp filter refuses creating IPv4 and
//!   IPv6 sockets instead.
//! - `RLIMIT_NPROC` does not bind a process running as root.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod apply;
mod grants;
mod seccomp;

pub use apply::{Facts, apply, decide, probe};
pub use grants::{Grants, Never, check_overlap, credential_stores, default_read, system_secrets};

/// How strictly the rules are applied (`[confine] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every rule holds, or the program does not run (the default).
    #[default]
    Required,
    /// What the kernel supports holds; the rest is reported.
    BestEffort,
    /// No confinement (as before this crate existed).
    Off,
}

impl Mode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Required => "required",
            Mode::BestEffort => "best_effort",
            Mode::Off => "off",
        }
    }
}

/// Which TCP connections are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// None (the default): no TCP connect or bind, no IPv4/IPv6 socket.
    #[default]
    None,
    /// Any (no network rule).
    All,
    /// TCP connect to these ports only.
    Ports(Vec<u16>),
}

/// Resource limits (soft and hard), besides `RLIMIT_CORE`, which is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `RLIMIT_NOFILE`: open files.
    pub open_files: u64,
    /// `RLIMIT_NPROC`: processes (and threads) of the user.
    pub processes: u64,
    /// `RLIMIT_FSIZE`: the largest file written, in bytes.
    pub file_size: u64,
    /// `RLIMIT_AS`: address space, in bytes.
    pub address_space: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { open_files: 4096, processes: 4096, file_size: 1 << 30, address_space: 16 << 30 }
    }
}

/// Everything the confined process may do. Built by mcpsec, passed to its
/// re-executed self, applied by [`apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Required or best effort (`Off` never reaches [`apply`]).
    pub mode: Mode,
    /// Files and trees that may be read and executed.
    pub read: Vec<PathBuf>,
    /// Files and trees that may be read, executed and written.
    pub write: Vec<PathBuf>,
    /// TCP.
    pub network: Network,
    /// Resource limits.
    pub limits: Limits,
    /// Tests only (honoured in debug builds only): behave as if the kernel
    /// had no Landlock.
    #[serde(default)]
    pub test_only_pretend_no_landlock: bool,
}

/// How much of one kind of rule the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforced {
    /// Fully.
    Full,
    /// In part.
    Partial,
    /// Not at all.
    No,
}

/// What [`apply`] put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The Landlock ABI in effect (0: none).
    pub landlock_abi: u32,
    /// The Landlock ruleset as a whole.
    pub landlock: Enforced,
    /// `no_new_privs`.
    pub no_new_privs: bool,
    /// The seccomp filter.
    pub seccomp: bool,
    /// The resource limits.
    pub limits: bool,
    /// What was asked and does not hold, in words (empty when all holds).
    pub missing: Vec<String>,
}

/// Why confinement cannot be applied (or, in required mode, fully).
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// Required mode, and something does not hold on this kernel.
    #[error(
        "confinement is required ([confine] mode = \"required\") but does not fully hold on this kernel: {}; \
         run `mcpsec doctor` to see what this kernel supports, or set [confine] mode = \"best_effort\"",
        .missing.join("; ")
    )]
    NotEnforced {
        /// What does not hold.
        missing: Vec<String>,
    },
    /// A configured path overlaps one that is never granted.
    #[error(
        "{key}: `{entry}` overlaps {what} (`{never}`), which a confined program may never reach; remove the entry or narrow it"
    )]
    Overlap {
        /// The config key.
        key: String,
        /// The entry.
        entry: String,
        /// What the never-path is.
        what: String,
        /// The never-path.
        never: String,
    },
    /// Building or installing a rule failed.
    #[error("confinement failed: {0}")]
    Failed(String),
}

/// The hidden subcommand mcpsec re-executes itself with.
pub const SUBCOMMAND: &str = "__confine-exec";

/// What every confined process shares: mcpsec's own executable (which
/// applies the rules, then executes the program), the mode, the limits,
/// the never-paths and the grants from the configuration.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The mcpsec executable.
    pub exe: PathBuf,
    /// Required or best effort.
    pub mode: Mode,
    /// Never granted.
    pub never: Never,
    /// The defaults and `[confine] read`/`write`, carved.
    pub base: Grants,
    /// Resource limits.
    pub limits: Limits,
    /// Tests only (debug builds): behave as if there were no Landlock.
    pub test_only_pretend_no_landlock: bool,
}

impl Launcher {
    /// The command that runs `program` (with `argv[0]` = `arg0`) confined
    /// by the base grants plus `extra`, and `network`. The caller adds the
    /// environment, working directory and stdio as for the program itself:
    /// they pass through.
    pub fn command(
        &self,
        program: &std::path::Path,
        arg0: &std::ffi::OsStr,
        extra: &Grants,
        network: Network,
    ) -> Result<std::process::Command, ConfineError> {
        let policy = Policy {
            mode: self.mode,
            read: self.base.read.iter().chain(&extra.read).cloned().collect(),
            write: self.base.write.iter().chain(&extra.write).cloned().collect(),
            network,
            limits: self.limits,
            test_only_pretend_no_landlock: self.test_only_pretend_no_landlock,
        };
        let json = serde_json::to_string(&policy).map_err(|e| ConfineError::Failed(e.to_string()))?;
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg(SUBCOMMAND).arg("--policy").arg(json).arg("--arg0").arg(arg0).arg("--").arg(program);
        Ok(cmd)
    }
}
