//! Behaviour tests of the audit log: the tamper matrix, crash recovery,
//! concurrent writers (threads and processes), rotation, durability modes,
//! queries and redaction, all through the public API.
#![allow(clippy::unwrap_used)]

mod common;
mod concurrency;
mod durability;
mod query;
mod redaction;
mod rotation;
mod tamper;
mod torn;
