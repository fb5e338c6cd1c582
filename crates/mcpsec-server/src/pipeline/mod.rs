//! The guard pipeline behind `tools/call`.

pub(crate) mod confirm;
pub mod ratelimit;
