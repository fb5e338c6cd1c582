//! The transports a server is reached over: newline-delimited JSON-RPC on
//! stdin/stdout ([`LineTransport`]) and streamable HTTP ([`http`], with
//! [`tls`](crate::TlsFiles)).

pub mod http;
mod lifecycle;
mod line;
pub(crate) mod stdio;
pub(crate) mod tls;

pub use line::*;
