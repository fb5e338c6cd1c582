use std::fmt;

/// A refused call: what was refused, why, and what the human can do.
///
/// Its `Display` is the message shown to the model and the operator. It is
/// built only from values that are safe to show: the path as the caller gave
/// it, names of rules, limits. Never from anything that lies outside the
/// sandbox (not even a symlink's target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused, e.g. "reading `notes/../../etc/passwd`".
    pub what: String,
    /// Why, e.g. "the path leads outside the allowed roots".
    pub why: String,
    /// What the human can do, e.g. "add the directory with `--root`".
    pub remedy: Option<String>,
}

impl Refusal {
    /// A refusal without a remedy.
    pub fn new(what: impl Into<String>, why: impl Into<String>) -> Self {
        Refusal { what: what.into(), why: why.into(), remedy: None }
    }

    /// Adds what the human can do about it.
    pub fn with_remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = Some(remedy.into());
        self
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused: {}: {}", self.what, self.why)?;
        if let Some(remedy) = &self.remedy {
            write!(f, ". To allow it: {remedy}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refusal {}
