//! Tool pins: what each upstream tool looked like when a human last trusted it.
//!
//! `mcpsec proxy --name NAME` hashes every upstream tool's definition (name,
//! description, schemas, annotations, and `_meta` when it holds anything;
//! the hash is the caller's, this module only compares) and asks [`Pins::check`] whether it may be offered:
//!
//! - the first time an upstream is seen, every tool it offers is pinned as
//!   it is (trust on first use);
//! - later, a tool whose definition hashes differently is withheld, and so
//!   is a new tool when the upstream holds new tools (`hold_new_tools`),
//!   until a human runs `mcpsec pins approve NAME TOOL` (after `mcpsec pins
//!   diff NAME TOOL`: the approved and the pending definitions are both kept).
//!   [`Pins::approve`] takes the hash of the definition the human reviewed
//!   and approves only that one, so an upstream that changes its tool again
//!   between the review and the approval gains nothing.
//!
//! The pins live in `mcpsec.db` (table `pins`, migration 2), so an approval
//! in a terminal reaches a running proxy at once (it re-checks on every
//! change of the store's data version).

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use crate::store::{SqliteStore, StoreError};

/// One pinned tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The upstream's name (`--name`).
    pub upstream: String,
    /// The tool's name.
    pub tool: String,
    /// The approved definition's hash (hex), `None` for a new tool never approved.
    pub hash: Option<String>,
    /// The approved definition (JSON).
    pub definition: Option<String>,
    /// A different definition seen since, waiting for approval: its hash.
    pub pending_hash: Option<String>,
    /// The pending definition (JSON).
    pub pending_definition: Option<String>,
    /// Unix milliseconds of the approval (or of the first pin).
    pub approved_ms: Option<i64>,
    /// Unix milliseconds when the pending definition was first seen.
    pub pending_since_ms: Option<i64>,
}

impl Pin {
    /// Whether the tool waits for a human's approval.
    pub fn is_held(&self) -> bool {
        self.pending_hash.is_some() || self.hash.is_none()
    }
}

/// What [`Pins::check`] found for one tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinStatus {
    /// The definition is the approved one: offer the tool.
    Approved,
    /// Pinned just now (first run, or new tools are not held).
    PinnedNow,
    /// The definition differs from the approved one: withhold it.
    Changed,
    /// A tool not seen before, held for approval: withhold it.
    New,
    /// A changed or new tool that would wait for approval, but the upstream
    /// has [`MAX_PENDING`] waiting already (or [`MAX_PINS`] pins): not
    /// recorded, withheld.
    Overflow,
}

/// The most tools of one upstream waiting for approval at once: an
/// upstream that invents tools (or rewrites them) cannot grow the store
/// without bound.
pub const MAX_PENDING: u32 = 100;

/// The most pins one upstream may have (approved or waiting).
pub const MAX_PINS: u32 = 5000;

impl PinStatus {
    /// Whether the tool may be offered and called.
    pub fn is_offered(self) -> bool {
        matches!(self, PinStatus::Approved | PinStatus::PinnedNow)
    }
}

/// The tool pins in a store.
#[derive(Debug, Clone)]
pub struct Pins {
    store: Arc<SqliteStore>,
}

impl Pins {
    /// The pins kept in `store`.
    pub fn new(store: Arc<SqliteStore>) -> Pins {
        Pins { store }
    }

    /// A number that changes whenever anything in the store is committed
    /// (an approval from the CLI included).
    pub fn data_version(&self) -> Result<i64, StoreError> {
        crate::store::TokenStore::data_version(&*self.store)
    }

    /// Checks one tool of `upstream` against its pin, pinning or recording
    /// it as pending as described in the module docs. `first_run`: the
    /// upstream has no pins yet (see [`Pins::has_any`]).
    #[allow(clippy::too_many_arguments)] // each is one column of the pin; a struct would only rename them
    pub fn check(
        &self,
        upstream: &str,
        tool: &str,
        hash: &str,
        definition: &str,
        hold_new: bool,
        first_run: bool,
        now_ms: i64,
    ) -> Result<PinStatus, StoreError> {
        let conn = self.store.conn();
        let err = |e| self.store.err(e);
        let row: Option<(Option<String>, Option<String>)> = conn
            .prepare_cached("SELECT hash, pending_hash FROM pins WHERE upstream = ?1 AND tool = ?2")
            .map_err(err)?
            .query_row(params![upstream, tool], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(err)?;
        // A new row, or a first pending definition, counts against the bounds.
        let adds_pending = match &row {
            Some((Some(approved), pending)) => approved != hash && pending.is_none(),
            Some((None, pending)) => pending.is_none(),
            None => !first_run && hold_new,
        };
        if row.is_none() || adds_pending {
            let (pins, pending): (u32, u32) = conn
                .prepare_cached("SELECT COUNT(*), COUNT(pending_hash) FROM pins WHERE upstream = ?1")
                .map_err(err)?
                .query_row(params![upstream], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(err)?;
            if (row.is_none() && pins >= MAX_PINS) || (adds_pending && pending >= MAX_PENDING) {
                return Ok(PinStatus::Overflow);
            }
        }
        match row {
            Some((Some(approved), _)) if approved == hash => {
                // Back to the approved definition: nothing is pending any more.
                conn.execute(
                    "UPDATE pins SET pending_hash = NULL, pending_definition = NULL, pending_since_ms = NULL
                     WHERE upstream = ?1 AND tool = ?2 AND pending_hash IS NOT NULL",
                    params![upstream, tool],
                )
                .map_err(err)?;
                Ok(PinStatus::Approved)
            }
            Some((approved, pending)) => {
                if pending.as_deref() != Some(hash) {
                    conn.execute(
                        "UPDATE pins SET pending_hash = ?3, pending_definition = ?4, pending_since_ms = ?5
                         WHERE upstream = ?1 AND tool = ?2",
                        params![upstream, tool, hash, definition, now_ms],
                    )
                    .map_err(err)?;
                }
                Ok(if approved.is_some() { PinStatus::Changed } else { PinStatus::New })
            }
            None if first_run || !hold_new => {
                conn.execute(
                    "INSERT INTO pins (upstream, tool, hash, definition, approved_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![upstream, tool, hash, definition, now_ms],
                )
                .map_err(err)?;
                Ok(PinStatus::PinnedNow)
            }
            None => {
                conn.execute(
                    "INSERT INTO pins (upstream, tool, pending_hash, pending_definition, pending_since_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![upstream, tool, hash, definition, now_ms],
                )
                .map_err(err)?;
                Ok(PinStatus::New)
            }
        }
    }

    /// Whether `upstream` has any pin (else its next run is its first).
    pub fn has_any(&self, upstream: &str) -> Result<bool, StoreError> {
        let conn = self.store.conn();
        conn.query_row("SELECT EXISTS (SELECT 1 FROM pins WHERE upstream = ?1)", [upstream], |r| r.get(0))
            .map_err(|e| self.store.err(e))
    }

    /// The pin of one tool.
    pub fn get(&self, upstream: &str, tool: &str) -> Result<Option<Pin>, StoreError> {
        let conn = self.store.conn();
        conn.query_row("SELECT * FROM pins WHERE upstream = ?1 AND tool = ?2", params![upstream, tool], row_to_pin)
            .optional()
            .map_err(|e| self.store.err(e))
    }

    /// Every pin (of one upstream), by upstream and tool.
    pub fn list(&self, upstream: Option<&str>) -> Result<Vec<Pin>, StoreError> {
        let conn = self.store.conn();
        let mut stmt = conn
            .prepare("SELECT * FROM pins WHERE ?1 IS NULL OR upstream = ?1 ORDER BY upstream, tool")
            .map_err(|e| self.store.err(e))?;
        let rows = stmt.query_map([upstream], row_to_pin).map_err(|e| self.store.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.store.err(e))
    }

    /// Approves the pending definition of a tool if it is the one whose
    /// hash is `hash` (the one a human reviewed), in one conditional update:
    /// a definition the upstream sent since is never approved unseen.
    pub fn approve(&self, upstream: &str, tool: &str, hash: &str, now_ms: i64) -> Result<Approval, StoreError> {
        let conn = self.store.conn();
        let n = conn
            .execute(
                "UPDATE pins SET hash = pending_hash, definition = pending_definition, approved_ms = ?4,
                 pending_hash = NULL, pending_definition = NULL, pending_since_ms = NULL
                 WHERE upstream = ?1 AND tool = ?2 AND pending_hash = ?3",
                params![upstream, tool, hash, now_ms],
            )
            .map_err(|e| self.store.err(e))?;
        drop(conn);
        let pin = self.get(upstream, tool)?;
        Ok(match pin {
            Some(pin) if n == 1 => Approval::Approved(pin),
            Some(Pin { pending_hash: Some(pending), .. }) => Approval::Differs { pending },
            _ => Approval::NothingPending,
        })
    }
}

/// What [`Pins::approve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// The reviewed definition is approved; the pin as it is now.
    Approved(Pin),
    /// Nothing was pending (no such pin, or approved already).
    NothingPending,
    /// The pending definition is not the one named (it changed since it was
    /// reviewed); nothing was approved. Its hash.
    Differs {
        /// The hash of what is pending now.
        pending: String,
    },
}

fn row_to_pin(r: &rusqlite::Row<'_>) -> rusqlite::Result<Pin> {
    Ok(Pin {
        upstream: r.get("upstream")?,
        tool: r.get("tool")?,
        hash: r.get("hash")?,
        definition: r.get("definition")?,
        pending_hash: r.get("pending_hash")?,
        pending_definition: r.get("pending_definition")?,
        approved_ms: r.get("approved_ms")?,
        pending_since_ms: r.get("pending_since_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins() -> (tempfile::TempDir, Pins) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("mcpsec.db")).unwrap();
        (dir, Pins::new(Arc::new(store)))
    }

    #[test]
    fn first_run_pins_then_changes_and_new_tools_are_held_until_approved() {
        let (_d, p) = pins();
        assert!(!p.has_any("fs").unwrap());
        assert_eq!(p.check("fs", "read", "h1", "{1}", true, true, 1).unwrap(), PinStatus::PinnedNow);
        assert!(p.has_any("fs").unwrap());
        assert_eq!(p.check("fs", "read", "h1", "{1}", true, false, 2).unwrap(), PinStatus::Approved);
        // Changed: held, the new definition kept for the diff.
        assert_eq!(p.check("fs", "read", "h2", "{2}", true, false, 3).unwrap(), PinStatus::Changed);
        let pin = p.get("fs", "read").unwrap().unwrap();
        assert!(pin.is_held());
        assert_eq!((pin.definition.as_deref(), pin.pending_definition.as_deref()), (Some("{1}"), Some("{2}")));
        let v = p.data_version().unwrap();
        assert_eq!(p.check("fs", "read", "h2", "{2}", true, false, 4).unwrap(), PinStatus::Changed);
        assert_eq!(p.data_version().unwrap(), v, "checking again writes nothing");
        // A new tool after the first run.
        assert_eq!(p.check("fs", "rm", "h9", "{9}", true, false, 5).unwrap(), PinStatus::New);
        assert_eq!(p.check("fs", "mk", "h8", "{8}", false, false, 5).unwrap(), PinStatus::PinnedNow);
        // Approval.
        assert_eq!(p.approve("fs", "nothing", "h1", 6).unwrap(), Approval::NothingPending);
        assert_eq!(p.approve("fs", "mk", "h8", 6).unwrap(), Approval::NothingPending, "nothing pending");
        // Only the definition reviewed: another hash approves nothing.
        assert_eq!(p.approve("fs", "read", "h1", 6).unwrap(), Approval::Differs { pending: "h2".into() });
        assert!(p.get("fs", "read").unwrap().unwrap().is_held());
        let Approval::Approved(pin) = p.approve("fs", "read", "h2", 6).unwrap() else { panic!("not approved") };
        assert_eq!((pin.hash.as_deref(), pin.pending_hash), (Some("h2"), None));
        assert_eq!(p.check("fs", "read", "h2", "{2}", true, false, 7).unwrap(), PinStatus::Approved);
        assert!(matches!(p.approve("fs", "rm", "h9", 8).unwrap(), Approval::Approved(_)));
        assert_eq!(p.check("fs", "rm", "h9", "{9}", true, false, 9).unwrap(), PinStatus::Approved);
        // Reverting to the approved definition clears what was pending.
        assert_eq!(p.check("fs", "read", "h3", "{3}", true, false, 10).unwrap(), PinStatus::Changed);
        assert_eq!(p.check("fs", "read", "h2", "{2}", true, false, 11).unwrap(), PinStatus::Approved);
        assert!(!p.get("fs", "read").unwrap().unwrap().is_held());
        let all = p.list(None).unwrap();
        assert_eq!(all.iter().map(|p| p.tool.as_str()).collect::<Vec<_>>(), ["mk", "read", "rm"]);
        assert!(p.list(Some("other")).unwrap().is_empty());
    }

    #[test]
    fn upstreams_are_pinned_apart() {
        let (_d, p) = pins();
        assert_eq!(p.check("a", "t", "h1", "{}", true, true, 1).unwrap(), PinStatus::PinnedNow);
        assert_eq!(p.check("b", "t", "h2", "{}", true, true, 1).unwrap(), PinStatus::PinnedNow);
        assert_eq!(p.check("a", "t", "h2", "{}", true, false, 1).unwrap(), PinStatus::Changed);
    }

    #[test]
    fn waiting_tools_are_bounded_per_upstream() {
        let (_d, p) = pins();
        assert_eq!(p.check("fs", "first", "h", "{}", true, true, 1).unwrap(), PinStatus::PinnedNow);
        for i in 0..MAX_PENDING {
            assert_eq!(p.check("fs", &format!("t{i}"), "h", "{}", true, false, 2).unwrap(), PinStatus::New);
        }
        let v = p.data_version().unwrap();
        assert_eq!(p.check("fs", "one-too-many", "h", "{}", true, false, 3).unwrap(), PinStatus::Overflow);
        assert_eq!(p.check("fs", "first", "h2", "{}", true, false, 3).unwrap(), PinStatus::Overflow, "a change too");
        assert!(p.get("fs", "one-too-many").unwrap().is_none(), "not recorded");
        assert_eq!(p.data_version().unwrap(), v);
        // What waits already is still checked, and changes in place.
        assert_eq!(p.check("fs", "t0", "h3", "{3}", true, false, 4).unwrap(), PinStatus::New);
        assert_eq!(p.check("fs", "first", "h", "{}", true, false, 4).unwrap(), PinStatus::Approved);
        // Another upstream has its own room.
        assert_eq!(p.check("other", "x", "h", "{}", true, false, 5).unwrap(), PinStatus::New);
        // Approving makes room.
        assert!(matches!(p.approve("fs", "t1", "h", 6).unwrap(), Approval::Approved(_)));
        assert_eq!(p.check("fs", "one-too-many", "h", "{}", true, false, 7).unwrap(), PinStatus::New);
    }
}
