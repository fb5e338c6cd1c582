//! Restoring an entry to where it came from, and describing what is there
//! now.

use super::*;

impl Sandbox {
    /// Where `input` resolves to (not following a final symlink), as a root
    /// and a path below it, without checking rules (for records).
    pub fn locate_resolved(&self, input: &str) -> Result<(PathBuf, String), GuardError> {
        let r = self.resolve(input, Last::NoFollow)?;
        Ok((self.roots[r.root].host.clone(), rel_text(&r.rel(), input)?))
    }

    /// Puts entry `slot`'s kept object back at `rel` below the root it lies
    /// in (`input` is its absolute path). Refuses when the path now leads
    /// elsewhere (a symlink planted on the way since). Whatever is at the
    /// path now is first kept in `replace` (an entry of the undo's own),
    /// or, without one, must be absent. Restores the recorded modes. The
    /// caller has checked the entry and the current state. Returns what was
    /// kept in `replace`.
    pub fn restore(
        &self,
        input: &str,
        rel: &str,
        slot: &Slot,
        kept: &Kept,
        replace: Option<&Slot>,
    ) -> Result<Option<Kept>, GuardError> {
        let r = match self.resolve(input, Last::NoFollow) {
            Err(GuardError::ParentNotFound { .. }) => {
                if let Some((parent, _)) = input.rsplit_once('/') {
                    self.create_dir_all(parent)?;
                }
                self.resolve(input, Last::NoFollow)?
            }
            other => other?,
        };
        if r.rel().to_str() != Some(rel) {
            return Err(GuardError::Redirected { path: input.to_owned() });
        }
        let name = self.mutable_name(&r, input, "restore")?;
        let tmp = temp_name(name);
        // Bring the kept object next to its destination first.
        move_object(&slot.trash.dir, slot.data(), &r.dir, &tmp).map_err(|e| io_error("restoring", input, e))?;
        let placed = (|| {
            set_modes(&r.dir, &tmp, kept).map_err(|e| io_error("restoring", input, e))?;
            match (r.kind, replace) {
                (Kind::Missing, _) => {
                    rustix::fs::renameat_with(&*r.dir, &tmp, &*r.dir, name, rustix::fs::RenameFlags::NOREPLACE)
                        .map_err(|e| io_error("restoring", input, e.into()))
                        .map(|()| None)
                }
                (_, Some(replace)) => {
                    rustix::fs::renameat_with(&*r.dir, &tmp, &*r.dir, name, rustix::fs::RenameFlags::EXCHANGE)
                        .map_err(|e| io_error("restoring", input, e.into()))?;
                    // `tmp` now names what was there: keep it.
                    let kept_now = describe(&r.dir, &tmp).and_then(|k| replace.take(&r.dir, &tmp).map(|()| k));
                    match kept_now {
                        Ok(k) => Ok(Some(k)),
                        Err(e) => {
                            // Swap back, so that `tmp` is the kept object again.
                            let _ = rustix::fs::renameat_with(
                                &*r.dir,
                                &tmp,
                                &*r.dir,
                                name,
                                rustix::fs::RenameFlags::EXCHANGE,
                            );
                            Err(io_error("keeping what was at", input, e))
                        }
                    }
                }
                (_, None) => Err(GuardError::AlreadyExists { path: input.to_owned() }),
            }
        })();
        if placed.is_err() && r.dir.symlink_metadata(&tmp).is_ok() {
            // Leave the trash as it was.
            let _ =
                move_object(&r.dir, &tmp, &slot.trash.dir, slot.data()).map(|()| seal(&slot.trash.dir, slot.data(), 0));
        }
        placed
    }

    /// Describes what is at `input` now (not following a final symlink), or
    /// `None` when nothing is there.
    pub fn describe_current(&self, input: &str) -> Result<Option<Kept>, GuardError> {
        let r = self.resolve(input, Last::NoFollow)?;
        if r.kind == Kind::Missing {
            return Ok(None);
        }
        let name = self.mutable_name(&r, input, "inspect")?;
        describe(&r.dir, name).map(Some).map_err(|e| io_error("reading", input, e))
    }
}

/// Gives the restored object (named `name` in `dir`) the modes in `kept`.
pub(super) fn set_modes(dir: &Dir, name: &OsStr, kept: &Kept) -> io::Result<()> {
    // Deepest first, so that a directory losing its write bit comes last.
    for e in kept.entries.iter().rev() {
        if e.kind == "symlink" {
            continue;
        }
        let (parent, leaf): (Dir, OsString) = if e.path.is_empty() {
            (dir.try_clone()?, name.to_owned())
        } else {
            let mut d = dir.open_dir_nofollow(name)?;
            let mut parts: Vec<&str> = e.path.split('/').collect();
            let leaf = parts.pop().unwrap_or_default();
            for p in parts {
                d = d.open_dir_nofollow(p)?;
            }
            (d, OsString::from(leaf))
        };
        // Never through a symlink swapped in since.
        if parent.symlink_metadata(&leaf)?.file_type().is_symlink() {
            return Err(other("it changed while it was being restored"));
        }
        parent.set_permissions(&leaf, Permissions::from_mode(e.mode))?;
    }
    Ok(())
}
