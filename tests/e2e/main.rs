//! End-to-end tests: the real `mcpsec` binary, a real MCP client.

#![allow(clippy::unwrap_used)]

mod attacks;
mod audit;
mod cli_surface;
mod confine;
mod crashes;
mod doctor;
mod http;
mod json;
mod limits;
mod promises;
mod protocol;
mod proxy;
mod shell_and_content;
mod startup;
mod tokens;
mod tools;
mod undo;
