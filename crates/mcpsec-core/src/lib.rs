//! The shared vocabulary of mcpsec.
//!
//! This crate provides the words every other crate speaks:
//!
//! - [`Capability`]: the four kinds of power a tool can need
//!   (`read_files`, `write_files`, `delete_files`, `execute_shell`);
//! - [`Mode`] and [`Policy`]: what the operator allows for each capability;
//! - [`Principal`]: on whose behalf a call is made;
//! - [`Refusal`]: a denial that says what was refused, why, and what the
//!   human can do about it;
//! - [`Config`]: the TOML configuration, parsed and validated ([`proxy`]: the
//!   `[proxy.NAME]` sections and how an upstream tool maps to a capability);
//! - [`reference`](mod@reference): every config key with its default and meaning, the one
//!   source of the commented default file and of `docs/configuration.md`;
//! - [`scan`]: flags text that looks like instructions to a model in untrusted content;
//! - [`display`]: shows untrusted text to a human with its control, bidirectional and
//!   invisible characters as `\u{XXXX}` (the CLI's output, a confirmation prompt);
//! - [`units`]: durations (`60s`, `5m`) and sizes (`10MiB`);
//! - [`time`]: RFC 3339 formatting and parsing;
//! - [`failpoint`]: named points a test arms to make the binary crash there.
//!
//! # Guarantee
//!
//! Parsing a configuration either yields a fully validated [`Config`] or an
//! error that names the offending key: an unknown key, a bad value or a
//! feature this build does not support stops start-up (fail closed).
//!
//! # Non-goals
//!
//! **Architecture invariant:** this crate does no I/O. It never opens a file,
//! reads the environment or talks to a terminal; callers hand it strings.
//!
//! ```
//! use mcpsec_core::{Capability, Config, Mode};
//!
//! let config = Config::from_toml_str("[policy]\nwrite_files = \"allow\"\n").unwrap();
//! assert_eq!(config.policy.mode(Capability::WriteFiles), Mode::Allow);
//! assert_eq!(config.policy.mode(Capability::DeleteFiles), Mode::Token);
//! ```

mod capability;
mod config;
pub mod confine;
pub mod display;
pub mod failpoint;
pub mod proxy;
pub mod reference;
mod refusal;
pub mod scan;
pub mod time;
pub mod units;

pub use capability::{Capability, Mode, Policy, Principal, UnknownCapability};
pub use config::{
    AuditConfig, AuditSync, Config, ConfigError, HttpConfig, InjectionMode, Limits, OnFull, PathRules, RateLimitConfig,
    ShellSettings, TokenConfig, UndoConfig, validate_glob,
};
pub use refusal::Refusal;
