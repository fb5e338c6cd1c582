use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A kind of power a tool needs. Every tool, built in or proxied, declares
/// exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Read file contents and metadata, list directories.
    ReadFiles,
    /// Create or change files and directories.
    WriteFiles,
    /// Remove files and directories.
    DeleteFiles,
    /// Run a program.
    ExecuteShell,
}

impl Capability {
    /// Every capability, in a stable order.
    pub const ALL: [Capability; 4] =
        [Capability::ReadFiles, Capability::WriteFiles, Capability::DeleteFiles, Capability::ExecuteShell];

    /// The name used in the config, the CLI and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::ReadFiles => "read_files",
            Capability::WriteFiles => "write_files",
            Capability::DeleteFiles => "delete_files",
            Capability::ExecuteShell => "execute_shell",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a capability name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability `{0}`; valid capabilities: read_files, write_files, delete_files, execute_shell")]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| UnknownCapability(s.to_owned()))
    }
}

/// What the operator allows for one capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No token needed.
    Allow,
    /// A valid token, or a human confirmation of this exact call.
    Confirm,
    /// A valid capability token is required.
    Token,
    /// Always refused; the capability's tools are not even listed.
    Deny,
}

impl Mode {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Allow => "allow",
            Mode::Confirm => "confirm",
            Mode::Token => "token",
            Mode::Deny => "deny",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mode of every capability.
///
/// Defaults: `read_files = allow`, `write_files = confirm`,
/// `delete_files = token`, `execute_shell = deny`: nothing that changes the
/// filesystem runs without a human's say-so for that call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    modes: [Mode; 4],
}

impl Default for Policy {
    fn default() -> Self {
        Policy { modes: [Mode::Allow, Mode::Confirm, Mode::Token, Mode::Deny] }
    }
}

impl Policy {
    /// The mode configured for `capability`.
    pub fn mode(&self, capability: Capability) -> Mode {
        self.modes[capability as usize]
    }

    /// Sets the mode of `capability`.
    pub fn set(&mut self, capability: Capability, mode: Mode) {
        self.modes[capability as usize] = mode;
    }
}

/// On whose behalf a call is made: the `--user` of a stdio server, or the
/// authenticated user of an HTTP request. Keys rate limits and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    name: String,
}

impl Principal {
    /// A principal with the given user name.
    pub fn new(name: impl Into<String>) -> Self {
        Principal { name: name.into() }
    }

    /// The user name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_round_trip() {
        for c in Capability::ALL {
            assert_eq!(c.as_str().parse::<Capability>(), Ok(c));
        }
        let err = "format_disk".parse::<Capability>().unwrap_err();
        assert!(err.to_string().contains("valid capabilities: read_files"));
    }

    #[test]
    fn default_policy_allows_only_reads_without_a_human() {
        let p = Policy::default();
        assert_eq!(p.mode(Capability::ReadFiles), Mode::Allow);
        assert_eq!(p.mode(Capability::WriteFiles), Mode::Confirm);
        assert_eq!(p.mode(Capability::DeleteFiles), Mode::Token);
        assert_eq!(p.mode(Capability::ExecuteShell), Mode::Deny);
    }
}
