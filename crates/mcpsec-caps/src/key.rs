//! `secret.key`: the server-side key for token MACs and sealed request
//! state. Kept in its own file (0600), never in the database.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretBox};

/// The key's length in bytes.
pub const KEY_LEN: usize = 32;

/// The server key. Its `Debug` shows nothing of it.
pub struct ServerKey(SecretBox<[u8; KEY_LEN]>);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey([redacted])")
    }
}

/// Why the key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// An I/O failure.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a key.
    #[error("{}: not a {KEY_LEN}-byte key ({len} bytes); it was damaged or replaced", path.display())]
    Length {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Others can read it.
    #[error("{}: mode {mode:03o} lets others read the key; run `chmod 600 {}`", path.display(), path.display())]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

impl ServerKey {
    /// Loads `path`, creating it (0600, random) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<ServerKey, KeyError> {
        let err = |op, source| KeyError::Io { path: path.to_owned(), op, source };
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(mut f) => {
                let mut key = [0u8; KEY_LEN];
                crate::token::random_bytes(&mut key).map_err(|e| err("generating", e))?;
                f.write_all(&key).map_err(|e| err("writing", e))?;
                f.sync_all().map_err(|e| err("writing", e))?;
                return Ok(ServerKey(SecretBox::new(Box::new(key))));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err("creating", e)),
        }
        let mut f = OpenOptions::new().read(true).open(path).map_err(|e| err("opening", e))?;
        let mode = f.metadata().map_err(|e| err("reading", e))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: path.to_owned(), mode });
        }
        let mut buf = Vec::with_capacity(KEY_LEN);
        f.read_to_end(&mut buf).map_err(|e| err("reading", e))?;
        let key: [u8; KEY_LEN] =
            buf.as_slice().try_into().map_err(|_| KeyError::Length { path: path.to_owned(), len: buf.len() })?;
        buf.fill(0);
        Ok(ServerKey(SecretBox::new(Box::new(key))))
    }

    /// The key bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// A key for another purpose, derived as HMAC-SHA-256(key, `label`), so
    /// that token MACs and sealed request state never share a key.
    pub fn derive(&self, label: &str) -> SecretBox<[u8; KEY_LEN]> {
        use hmac::{Hmac, KeyInit, Mac};
        let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(self.bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(label.as_bytes());
        SecretBox::new(Box::new(m.finalize().into_bytes().into()))
    }

    /// A server key for another purpose, derived as [`ServerKey::derive`] does.
    pub(crate) fn derived_key(&self, label: &str) -> ServerKey {
        ServerKey(self.derive(label))
    }

    /// A key for tests.
    #[doc(hidden)]
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> ServerKey {
        ServerKey(SecretBox::new(Box::new(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.key");
        let a = ServerKey::load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = ServerKey::load_or_create(&p).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        assert_eq!(format!("{a:?}"), "ServerKey([redacted])");
    }

    #[test]
    fn damaged_or_exposed_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.key");
        std::fs::write(&p, b"short").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(ServerKey::load_or_create(&p), Err(KeyError::Length { len: 5, .. })));
        std::fs::write(&p, [7u8; KEY_LEN]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(ServerKey::load_or_create(&p), Err(KeyError::Permissions { mode: 0o644, .. })));
    }
}
