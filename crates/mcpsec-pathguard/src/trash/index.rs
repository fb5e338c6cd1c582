//! The trash's index: one SQLite row a complete entry, its manifest.

use super::*;

/// The index of manifests, in the trash directory.
pub(super) const INDEX: &str = "index.db";

/// The index's schema version (`PRAGMA user_version`).
pub(super) const INDEX_VERSION: i64 = 1;

/// Opens the index at `path`: WAL, rows written before a call is answered
/// and synced at checkpoints, the schema created on first use. An index of
/// an unknown (newer) version is refused.
pub(super) fn open_index(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        // Not through a symlink: the caller's check that it is a regular
        // file and this open must name the same file.
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        0 => conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS manifests (
                 seq INTEGER PRIMARY KEY,
                 time INTEGER NOT NULL,
                 manifest TEXT NOT NULL
             ) STRICT;
             PRAGMA user_version = {INDEX_VERSION};
             COMMIT;"
        ))?,
        INDEX_VERSION => {}
        v => {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
                Some(format!("its version is {v}, this mcpsec knows version {INDEX_VERSION}")),
            ));
        }
    }
    Ok(conn)
}
