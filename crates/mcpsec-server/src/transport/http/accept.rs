//! The accept loop: connections bounded in number, per client address
//! and in how long a request head may take.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;

use super::LOG_TARGET;

/// What bounds the connections themselves (as opposed to requests).
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnectionLimits {
    pub(super) max_connections: usize,
    /// Of them, from one client address.
    pub(super) per_address: usize,
    pub(super) header_timeout: Duration,
}

/// Connections open per client address.
#[derive(Default)]
pub(super) struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerAddress`], given back when dropped.
pub(super) struct AddressSlot {
    pub(super) table: Arc<PerAddress>,
    pub(super) ip: IpAddr,
}

impl PerAddress {
    /// A slot for one more connection from `ip`, unless it holds `limit`.
    pub(super) fn take(table: &Arc<PerAddress>, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        let mut open = table.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot { table: table.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections and serves HTTP/1.1 on each until `stop` fires; then
/// asks every connection to close once its request under way is answered,
/// and returns when all have closed.
///
/// Instead of `axum::serve`, for bounds it does not have: at most
/// `max_connections` open at once, and at most `per_address` of them from
/// one client address (a connection over either cap is closed as soon as it
/// is accepted), and hyper's header read timeout, which closes a
/// connection that does not send a complete request head within
/// `header_timeout` of being opened or of its last answer (a slowloris
/// client, or one that holds an idle connection). HTTP/1.1 serves one
/// request at a time per connection, so a connection never holds more than
/// one of the global `max_concurrent` permits.
pub(super) async fn serve_connections<L>(
    mut listener: L,
    app: axum::Router,
    limits: ConnectionLimits,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            _ = &mut stop => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(target: LOG_TARGET, "{} connections open; closing the one from {peer}", limits.max_connections);
            continue;
        };
        let Some(slot) = PerAddress::take(&per_address, peer.ip(), limits.per_address) else {
            tracing::debug!(target: LOG_TARGET, "{} connections open from {}; closing one more", limits.per_address, peer.ip());
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            tower_service::Service::call(&mut app.clone(), request)
        });
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _permit = (permit, slot);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                r = connection.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(target: LOG_TARGET, "connection from {peer} ended: {e}");
                    }
                    return;
                }
                _ = closing.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = closing_tx.send(());
    // Every connection holds a permit until it has closed.
    let _ = open.acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX)).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_address_gets_its_slots_back_when_its_connections_close() {
        let table = Arc::new(PerAddress::default());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = PerAddress::take(&table, a, 2).unwrap();
        let second = PerAddress::take(&table, a, 2).unwrap();
        assert!(PerAddress::take(&table, a, 2).is_none(), "a third from one address");
        let other = PerAddress::take(&table, b, 2).unwrap();
        drop(first);
        let again = PerAddress::take(&table, a, 2).unwrap();
        drop((second, again, other));
        // Nothing is left behind for addresses with no connection.
        assert!(table.0.lock().unwrap().is_empty());
    }
}
