//! The token store: a small trait, and SQLite behind it.
//!
//! `mcpsec.db` in the state directory, WAL mode with a busy timeout, so a
//! grant made in the terminal is seen by a running server at once and
//! concurrent writers wait instead of failing. Migrations are numbered and
//! run on open (`PRAGMA user_version`); a database from a newer mcpsec is
//! refused.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use mcpsec_core::Capability;
use rusqlite::{Connection, OptionalExtension, params};

/// One token as stored (never the token itself, only its MAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Short id, shown in listings and the audit log.
    pub id: String,
    /// HMAC-SHA-256 of the token under `secret.key`.
    pub mac: Vec<u8>,
    /// The one capability it grants.
    pub capability: Capability,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Unix milliseconds.
    pub expires_ms: i64,
    /// Globs the resolved paths must match (relative to their root); empty: any path.
    pub paths: Vec<String>,
    /// Uses left; `None`: unlimited.
    pub uses_left: Option<i64>,
    /// The only user allowed to present it.
    pub user: Option<String>,
    /// The granting human's note.
    pub note: Option<String>,
    /// Unix milliseconds of revocation.
    pub revoked_ms: Option<i64>,
}

/// One user of the HTTP transport as stored (never the key, only its MAC).
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user name: the principal of every call made with the key.
    pub name: String,
    /// HMAC-SHA-256 of the key under `secret.key`.
    pub mac: Vec<u8>,
    /// Unix milliseconds.
    pub created_ms: i64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord").field("name", &self.name).field("created_ms", &self.created_ms).finish()
    }
}

/// A store failure. The message names the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("token database {path}: {message}")]
    Db {
        /// The database file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The database was written by a newer mcpsec.
    #[error(
        "token database {path} has schema version {found}, newer than this mcpsec understands ({known}); \
         upgrade mcpsec rather than risk damaging it"
    )]
    TooNew {
        /// The database file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
}

/// What the server and the CLI need from a token store. SQLite is the one
/// implementation; another backend implements this and nothing else changes.
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// Adds a token. Fails if the id exists.
    fn insert(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// The token with this id.
    fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Tokens, newest first; `all` includes expired, used-up and revoked ones.
    fn list(&self, all: bool, now_ms: i64) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes these ids; returns the ones that existed and were not yet revoked.
    fn revoke(&self, ids: &[String], now_ms: i64) -> Result<Vec<String>, StoreError>;
    /// Revokes every active token (of one capability); returns their ids.
    fn revoke_all(&self, capability: Option<Capability>, now_ms: i64) -> Result<Vec<String>, StoreError>;
    /// Spends one use of a limited token, atomically: `false` when none is
    /// left (or it is revoked or expired), so two concurrent calls can never
    /// both spend the last one.
    fn consume_use(&self, id: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Gives back one use spent by [`TokenStore::consume_use`] for a call
    /// that then acted on nothing (it was refused after authorization). A
    /// revoked or expired token stays unusable; an unlimited one is unchanged.
    fn return_use(&self, id: &str) -> Result<(), StoreError>;
    /// A number that changes whenever anything is committed, by this or
    /// another connection (for caches).
    fn data_version(&self) -> Result<i64, StoreError>;
    /// A stored setting (e.g. the grant passphrase hash).
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Stores a setting.
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Records a single-use nonce; `false` if it was used before.
    fn use_nonce(&self, nonce: &str, expires_ms: i64, now_ms: i64) -> Result<bool, StoreError>;
    /// Adds a user; `false` (and nothing changed) if the name is taken.
    fn add_user(&self, user: &UserRecord) -> Result<bool, StoreError>;
    /// Removes a user; `false` if there was none of that name.
    fn remove_user(&self, name: &str) -> Result<bool, StoreError>;
    /// Every user, by name.
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
}

/// How long [`SqliteStore::open`] retries a database that is locked.
pub const OPEN_RETRY: Duration = Duration::from_secs(10);

/// Whether SQLite said the database is locked (busy), a passing state.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// The SQLite store.
pub struct SqliteStore {
    path: String,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The migrations, in order; `user_version` is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: tokens, settings, nonces.
    "CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        mac BLOB NOT NULL,
        capability TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        paths TEXT NOT NULL DEFAULT '[]',
        uses_left INTEGER,
        user TEXT,
        note TEXT,
        revoked_ms INTEGER
     ) STRICT;
     CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
     CREATE TABLE nonces (nonce TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL) STRICT;",
    // 2: tool pins of upstream servers (`mcpsec proxy`; see `pins`).
    "CREATE TABLE pins (
        upstream TEXT NOT NULL,
        tool TEXT NOT NULL,
        hash TEXT,
        definition TEXT,
        approved_ms INTEGER,
        pending_hash TEXT,
        pending_definition TEXT,
        pending_since_ms INTEGER,
        PRIMARY KEY (upstream, tool)
     ) STRICT;",
    // 3: the users of the HTTP transport (their keys only as a MAC).
    "CREATE TABLE users (
        name TEXT PRIMARY KEY,
        mac BLOB NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL
     ) STRICT;",
];

impl SqliteStore {
    /// Opens (creating, 0600) the database and runs pending migrations.
    ///
    /// Opening a WAL database can find it locked for a moment whatever the
    /// busy timeout (another process recovering or checkpointing the WAL as
    /// it opens or closes, the journal mode being set): that is retried for
    /// up to [`OPEN_RETRY`], so many CLI processes and a server can open it
    /// at once. Any other error, or a lock that lasts, is the caller's.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match Self::open_once(path) {
                Err((_, true)) if started.elapsed() < OPEN_RETRY => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err((e, _)) => return Err(e),
                Ok(store) => return Ok(store),
            }
        }
    }

    /// One attempt of [`SqliteStore::open`]; an error says whether it was
    /// the database being locked.
    fn open_once(path: &Path) -> Result<SqliteStore, (StoreError, bool)> {
        let shown = path.display().to_string();
        let db = |e: rusqlite::Error| (StoreError::Db { path: shown.clone(), message: e.to_string() }, is_busy(&e));
        let existed = path.exists();
        let conn = Connection::open(path).map_err(db)?;
        if !existed {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(db)?;
        if check != "ok" {
            return Err((StoreError::Db { path: shown, message: format!("the database is damaged: {check}") }, false));
        }
        let store = SqliteStore { path: shown.clone(), conn: Mutex::new(conn) };
        store.migrate()?;
        Ok(store)
    }

    /// `PRAGMA integrity_check` on the database at `path`, opened read-only
    /// (nothing is created, migrated or repaired): an empty list when it is
    /// sound, else SQLite's findings (at most 10).
    pub fn integrity_check(path: &Path) -> Result<Vec<String>, StoreError> {
        let shown = path.display().to_string();
        let db = |e: rusqlite::Error| StoreError::Db { path: shown.clone(), message: e.to_string() };
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        let mut stmt = conn.prepare("PRAGMA integrity_check(10)").map_err(db)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
        let findings: Vec<String> = rows.collect::<Result<_, _>>().map_err(db)?;
        Ok(findings.into_iter().filter(|f| f != "ok").collect())
    }

    pub(crate) fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Db { path: self.path.clone(), message: e.to_string() }
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<(), (StoreError, bool)> {
        let err = |e: rusqlite::Error| {
            let busy = is_busy(&e);
            (self.err(e), busy)
        };
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err((StoreError::TooNew { path: self.path.clone(), found: version, known }, false));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", i as i64 + 1).map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let cap: String = r.get("capability")?;
    let paths: String = r.get("paths")?;
    Ok(TokenRecord {
        id: r.get("id")?,
        mac: r.get("mac")?,
        capability: cap.parse().map_err(|e: mcpsec_core::UnknownCapability| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_ms: r.get("created_ms")?,
        expires_ms: r.get("expires_ms")?,
        paths: serde_json::from_str(&paths)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?,
        uses_left: r.get("uses_left")?,
        user: r.get("user")?,
        note: r.get("note")?,
        revoked_ms: r.get("revoked_ms")?,
    })
}

impl TokenStore for SqliteStore {
    fn insert(&self, t: &TokenRecord) -> Result<(), StoreError> {
        let paths = serde_json::to_string(&t.paths).unwrap_or_else(|_| "[]".into());
        self.conn()
            .execute(
                "INSERT INTO tokens (id, mac, capability, created_ms, expires_ms, paths, uses_left, user, note, revoked_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    t.id,
                    t.mac,
                    t.capability.as_str(),
                    t.created_ms,
                    t.expires_ms,
                    paths,
                    t.uses_left,
                    t.user,
                    t.note,
                    t.revoked_ms
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT * FROM tokens WHERE id = ?1").map_err(|e| self.err(e))?;
        stmt.query_row([id], row_to_record).optional().map_err(|e| self.err(e))
    }

    fn list(&self, all: bool, now_ms: i64) -> Result<Vec<TokenRecord>, StoreError> {
        let conn = self.conn();
        let sql = if all {
            "SELECT * FROM tokens WHERE ?1 = ?1 ORDER BY created_ms DESC, id"
        } else {
            "SELECT * FROM tokens WHERE revoked_ms IS NULL AND expires_ms > ?1
             AND (uses_left IS NULL OR uses_left > 0) ORDER BY created_ms DESC, id"
        };
        let mut stmt = conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map([now_ms], row_to_record).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn revoke(&self, ids: &[String], now_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut done = Vec::new();
        for id in ids {
            let n = tx
                .execute("UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL", params![id, now_ms])
                .map_err(|e| self.err(e))?;
            if n > 0 {
                done.push(id.clone());
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(done)
    }

    fn revoke_all(&self, capability: Option<Capability>, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        let cap = capability.map(|c| c.as_str());
        let ids: Vec<String> = {
            let mut stmt = tx
                .prepare(
                    "SELECT id FROM tokens WHERE revoked_ms IS NULL AND expires_ms > ?1
                     AND (uses_left IS NULL OR uses_left > 0) AND (?2 IS NULL OR capability = ?2) ORDER BY id",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt.query_map(params![now_ms, cap], |r| r.get(0)).map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?
        };
        tx.execute(
            "UPDATE tokens SET revoked_ms = ?1 WHERE revoked_ms IS NULL AND expires_ms > ?1
             AND (uses_left IS NULL OR uses_left > 0) AND (?2 IS NULL OR capability = ?2)",
            params![now_ms, cap],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(ids)
    }

    fn consume_use(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "UPDATE tokens SET uses_left = uses_left - 1
                 WHERE id = ?1 AND uses_left > 0 AND revoked_ms IS NULL AND expires_ms > ?2",
            )
            .map_err(|e| self.err(e))?;
        stmt.execute(params![id, now_ms]).map(|n| n == 1).map_err(|e| self.err(e))
    }

    fn return_use(&self, id: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("UPDATE tokens SET uses_left = uses_left + 1 WHERE id = ?1 AND uses_left IS NOT NULL")
            .map_err(|e| self.err(e))?;
        stmt.execute(params![id]).map(drop).map_err(|e| self.err(e))
    }

    fn data_version(&self) -> Result<i64, StoreError> {
        let conn = self.conn();
        // `data_version` moves on other connections' commits; our own
        // changes are counted by `total_changes`.
        let mut stmt = conn.prepare_cached("PRAGMA data_version").map_err(|e| self.err(e))?;
        let other: i64 = stmt.query_row([], |r| r.get(0)).map_err(|e| self.err(e))?;
        Ok(other.wrapping_shl(32).wrapping_add(conn.total_changes() as i64))
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn use_nonce(&self, nonce: &str, expires_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM nonces WHERE expires_ms < ?1", [now_ms]).map_err(|e| self.err(e))?;
        conn.execute("INSERT OR IGNORE INTO nonces (nonce, expires_ms) VALUES (?1, ?2)", params![nonce, expires_ms])
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    fn add_user(&self, u: &UserRecord) -> Result<bool, StoreError> {
        let conn = self.conn();
        match conn.execute(
            "INSERT INTO users (name, mac, created_ms) VALUES (?1, ?2, ?3)",
            params![u.name, u.mac, u.created_ms],
        ) {
            Ok(_) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                // The name is taken (a MAC collision of two random keys
                // cannot happen in practice; it would be refused the same way).
                Ok(false)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        self.conn().execute("DELETE FROM users WHERE name = ?1", [name]).map(|n| n == 1).map_err(|e| self.err(e))
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT name, mac, created_ms FROM users ORDER BY name").map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok(UserRecord { name: r.get(0)?, mac: r.get(1)?, created_ms: r.get(2)? }))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

/// A [`SqliteStore`] opened at its first use instead of at once: a server
/// whose session never checks a token, a confirmation or a user (a
/// read-only stdio session) never runs SQLite's code: 1.2–1.5 MiB less peak
/// RSS for the stdio server (BENCHMARKS.md). Opening checks and fails exactly as
/// [`SqliteStore::open`] does (`quick_check`, migrations, a newer schema),
/// at that first use; a failed open is tried again at the next use, and
/// nothing is ever repaired. [`LazyStore::new`] refuses at once a file that
/// is not an SQLite database at all.
pub struct LazyStore {
    path: std::path::PathBuf,
    opened: std::sync::OnceLock<SqliteStore>,
}

impl std::fmt::Debug for LazyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyStore").field("path", &self.path).field("opened", &self.opened.get().is_some()).finish()
    }
}

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

impl LazyStore {
    /// The store at `path`, not opened yet. An existing, non-empty file
    /// must start with SQLite's header (16 bytes read, no SQLite code run).
    pub fn new(path: &Path) -> Result<LazyStore, StoreError> {
        use std::io::Read;
        let shown = || path.display().to_string();
        match std::fs::File::open(path) {
            Ok(mut f) => {
                let mut head = Vec::with_capacity(16);
                f.by_ref()
                    .take(16)
                    .read_to_end(&mut head)
                    .map_err(|e| StoreError::Db { path: shown(), message: format!("cannot read it: {e}") })?;
                if !head.is_empty() && head.as_slice() != SQLITE_HEADER {
                    return Err(StoreError::Db {
                        path: shown(),
                        message: "the database is damaged: it does not start with SQLite's header".into(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Db { path: shown(), message: format!("cannot open it: {e}") }),
        }
        Ok(LazyStore { path: path.to_owned(), opened: std::sync::OnceLock::new() })
    }

    /// The opened store (opening it now if this is its first use).
    fn store(&self) -> Result<&SqliteStore, StoreError> {
        if let Some(s) = self.opened.get() {
            return Ok(s);
        }
        let opened = SqliteStore::open(&self.path)?;
        // Two first uses at once: one connection is kept, the other closed.
        Ok(self.opened.get_or_init(|| opened))
    }
}

impl TokenStore for LazyStore {
    fn insert(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.store()?.insert(token)
    }
    fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.store()?.get(id)
    }
    fn list(&self, all: bool, now_ms: i64) -> Result<Vec<TokenRecord>, StoreError> {
        self.store()?.list(all, now_ms)
    }
    fn revoke(&self, ids: &[String], now_ms: i64) -> Result<Vec<String>, StoreError> {
        self.store()?.revoke(ids, now_ms)
    }
    fn revoke_all(&self, capability: Option<Capability>, now_ms: i64) -> Result<Vec<String>, StoreError> {
        self.store()?.revoke_all(capability, now_ms)
    }
    fn consume_use(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.store()?.consume_use(id, now_ms)
    }
    fn return_use(&self, id: &str) -> Result<(), StoreError> {
        self.store()?.return_use(id)
    }
    fn data_version(&self) -> Result<i64, StoreError> {
        self.store()?.data_version()
    }
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.store()?.setting(key)
    }
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.store()?.set_setting(key, value)
    }
    fn use_nonce(&self, nonce: &str, expires_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.store()?.use_nonce(nonce, expires_ms, now_ms)
    }
    fn add_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        self.store()?.add_user(user)
    }
    fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        self.store()?.remove_user(name)
    }
    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.store()?.users()
    }
}

#[cfg(test)]
mod tests;
