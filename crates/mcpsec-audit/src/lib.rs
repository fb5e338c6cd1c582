//! The audit trail: one record for every call, allowed or refused.
//!
//! This crate provides [`Event`] (what happened), [`Outcome`] and the
//! [`AuditSink`] trait through which the guard pipeline reports every ending
//! of every call.
//!
//! Today the only sink is [`TracingSink`], which writes each event as a
//! structured `tracing` line on stderr. It is **not** tamper-evident and not
//! durable; the hash-chained, fsync'd JSON Lines log described in PRODUCT.md
//! replaces it. Keeping the trait from the start means the server already
//! reports every ending through one place.
//!
//! # Guarantee
//!
//! Every event the pipeline reports reaches the sink; the server never
//! formats audit output itself.
//!
//! # Non-goals
//!
//! **Architecture invariant:** only this crate knows the audit format.
//! Redaction of secrets arrives with the durable log; until then no event
//! carries tool arguments, only the tool name, outcome and reason.
//!
//! ```
//! use mcpsec_audit::{AuditSink, Event, Outcome, TracingSink};
//! TracingSink.record(&Event {
//!     tool: "read_text_file",
//!     user: "alice",
//!     outcome: Outcome::Ok,
//!     reason: None,
//!     duration_us: 42,
//! });
//! ```

use std::fmt;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and succeeded.
    Ok,
    /// The guard pipeline refused it.
    Denied,
    /// It ran and failed.
    Error,
    /// Its arguments did not fit the tool's schema.
    Invalid,
}

impl Outcome {
    /// The name used in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
            Outcome::Invalid => "invalid",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ended tool call.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The tool's name.
    pub tool: &'a str,
    /// The principal's name.
    pub user: &'a str,
    /// How it ended.
    pub outcome: Outcome,
    /// For anything but `ok`: the message the caller got.
    pub reason: Option<&'a str>,
    /// Time spent in the pipeline.
    pub duration_us: u64,
}

/// Where events go.
pub trait AuditSink: Send + Sync + fmt::Debug {
    /// Records one event.
    fn record(&self, event: &Event<'_>);
}

/// Writes events as `tracing` records at target `mcpsec::audit` (stderr).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl AuditSink for TracingSink {
    fn record(&self, e: &Event<'_>) {
        match e.outcome {
            Outcome::Ok => tracing::debug!(
                target: "mcpsec::audit",
                tool = e.tool, user = e.user, outcome = %e.outcome, duration_us = e.duration_us,
                "tool_call"
            ),
            _ => tracing::info!(
                target: "mcpsec::audit",
                tool = e.tool, user = e.user, outcome = %e.outcome,
                reason = e.reason.unwrap_or(""), duration_us = e.duration_us,
                "tool_call"
            ),
        }
    }
}
