//! The server's error types: why a tool's execute step did not succeed
//! ([`ToolError`], turned into the call's ending by the pipeline), and why
//! serving did not start or stopped ([`ServeError`]).

use mcpsec_pathguard::GuardError;

/// Why a tool's execute step did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the tool's schema.
    #[error("invalid arguments for `{tool}`: {message}")]
    Invalid {
        /// The tool.
        tool: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The arguments of an upstream's tool do not match the input schema it
    /// declared (and a human pinned).
    #[error("invalid arguments for `{tool}`: {message}")]
    Mismatch {
        /// The tool (`NAME/TOOL`).
        tool: String,
        /// What is wrong, and where.
        message: String,
    },
    /// The path guard refused or failed.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// Refused by a rule other than the path guard's (e.g. a program not on
    /// the allowlist); the message says what, why and what to do.
    #[error("{0}")]
    Refused(String),
    /// Anything else that went wrong while executing.
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    /// Whether the call certainly acted on nothing: refused or failed
    /// before its first change (a capability token's reserved use is then
    /// given back). [`ToolError::Failed`] may come after a change (a
    /// program that ran, an upstream that was called): it counts as one.
    pub(crate) fn changed_nothing(&self) -> bool {
        match self {
            ToolError::Invalid { .. } | ToolError::Mismatch { .. } | ToolError::Refused(_) => true,
            ToolError::Guard(e) => e.changed_nothing(),
            ToolError::Failed(_) => false,
        }
    }
}

/// The server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[error("MCP service failed: {0}")]
pub struct ServeError(pub(crate) String);
