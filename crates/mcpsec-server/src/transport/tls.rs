//! TLS for the HTTP transport (rustls, with *ring*): a listener whose
//! connections are TLS streams.
//!
//! Handshakes run in tasks of their own, each bounded by a timeout and
//! their number by a semaphore, so a client that opens a connection and
//! never finishes its handshake holds up nobody else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// A certificate chain and its private key, PEM-encoded, as read from
/// `--tls-cert` and `--tls-key`.
pub struct TlsFiles {
    /// The certificate chain (leaf first).
    pub cert_pem: Vec<u8>,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: SecretSlice<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles").field("cert_pem", &self.cert_pem.len()).field("key_pem", &"[redacted]").finish()
    }
}

/// The TLS configuration for `files` (TLS 1.2 and 1.3, HTTP/1.1), or what is wrong with them.
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&files.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate file (--tls-cert) is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file (--tls-cert) holds no CERTIFICATE".into());
    }
    // The key's parse error never quotes the key.
    let key = PrivateKeyDer::from_pem_slice(files.key_pem.expose_secret())
        .map_err(|_| "the key file (--tls-key) holds no PEM private key".to_owned())?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Handshakes under way at most; further connections are closed at once.
const MAX_HANDSHAKES: usize = 256;

/// Accepts TCP connections and hands on those that complete a TLS handshake
/// within `timeout`.
pub(crate) struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, acceptor: TlsAcceptor, timeout: Duration) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, retry.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                // As for plain HTTP: no Nagle delay on small writes.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY: {e}");
                }
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    tracing::debug!("too many TLS handshakes under way; closing the connection from {peer}");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task never ends while this listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(cert: &str, key: &str) -> TlsFiles {
        TlsFiles { cert_pem: cert.as_bytes().to_vec(), key_pem: key.as_bytes().to_vec().into() }
    }

    #[test]
    fn unusable_files_are_named_and_the_key_is_never_quoted() {
        let Err(e) = acceptor(&files("", "")) else { panic!("an empty certificate was accepted") };
        assert!(e.contains("--tls-cert") && e.contains("no CERTIFICATE"), "{e}");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIBszCC\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN NOT A KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END NOT A KEY-----\n";
        let Err(e) = acceptor(&files(cert, key)) else { panic!("a missing key was accepted") };
        assert!(e.contains("--tls-key") && !e.contains("c2VjcmV0"), "{e}");
        assert!(!format!("{:?}", files(cert, key)).contains("c2VjcmV0"), "Debug shows no key");
    }
}
