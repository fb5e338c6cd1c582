//! One entry of the trash, named by its call's intent seq: taking what a
//! call removes into it, and committing its manifest.

use super::*;

/// One entry of the trash, by seq: the kept object `<seq>` and its
/// manifest's row in the index (see [`Trash::slot`]).
#[derive(Debug)]
pub struct Slot<'t> {
    pub(super) trash: &'t Trash,
    pub(super) seq: u64,
    pub(super) name: String,
}

impl Slot<'_> {
    /// The entry's seq.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether anything of the entry is there (kept object or manifest).
    pub(super) fn exists(&self) -> io::Result<bool> {
        for name in [self.name.as_str(), self.legacy_name().as_str()] {
            match self.trash.dir.symlink_metadata(name) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.row()?.is_some())
    }

    /// The entry's row in the index: when it was kept, and its manifest.
    pub(super) fn row(&self) -> io::Result<Option<(u64, String)>> {
        let Ok(key) = i64::try_from(self.seq) else { return Ok(None) };
        let row = self.trash.with_index(false, |c| {
            use rusqlite::OptionalExtension;
            c.query_row("SELECT time, manifest FROM manifests WHERE seq = ?1", [key], |r| {
                Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get::<_, String>(1)?))
            })
            .optional()
        })?;
        Ok(row.flatten())
    }

    /// The name of the manifest file an earlier mcpsec wrote.
    pub(super) fn legacy_name(&self) -> String {
        format!("{}.json", self.name)
    }

    /// The manifest file an earlier mcpsec wrote beside the kept object.
    pub(super) fn legacy_manifest(&self) -> io::Result<Manifest> {
        let name = self.legacy_name();
        let mut f =
            self.trash.dir.open_with(&name, OpenOptions::new().read(true).follow(FollowSymlinks::No)).map_err(|e| {
                match e.kind() {
                    io::ErrorKind::NotFound => other(format!("its manifest (its row in {INDEX}) is missing")),
                    _ => other(format!("{name}: {e}")),
                }
            })?;
        let mut text = Vec::new();
        Read::by_ref(&mut f).take(64 << 20).read_to_end(&mut text)?;
        parse_manifest(&text, &name)
    }

    /// Refuses when anything of the entry is there: a seq is never reused
    /// (unless the audit log was reset).
    pub fn ensure_free(&self) -> io::Result<()> {
        if self.exists()? {
            return Err(other(format!("trash entry {} exists already (was the audit log reset?)", self.seq)));
        }
        Ok(())
    }

    /// Moves the object `name` of `from` into this (free) entry, renamed or
    /// copied across filesystems, and seals it. On an error it is still at
    /// `name`.
    pub(super) fn take(&self, from: &Dir, name: &OsStr) -> io::Result<()> {
        self.ensure_free()?;
        move_object(from, name, &self.trash.dir, self.data())?;
        seal(&self.trash.dir, self.data(), 0);
        Ok(())
    }

    /// When the kept object (else a manifest file) last changed, for an
    /// incomplete entry's age.
    pub(super) fn changed(&self) -> u64 {
        use cap_std::fs::MetadataExt;
        let dir = &self.trash.dir;
        let meta = dir.symlink_metadata(&self.name).or_else(|_| dir.symlink_metadata(self.legacy_name()));
        meta.map_or(0, |m| u64::try_from(m.ctime()).unwrap_or(0))
    }

    /// Writes the manifest (a new row of the index): the entry is
    /// complete. An entry is committed once; a row there already is refused.
    pub fn commit(&self, manifest: &Manifest) -> io::Result<()> {
        let text = serde_json::to_string(manifest).map_err(io::Error::other)?;
        let key = i64::try_from(self.seq).map_err(|_| other(format!("trash entry {}: seq out of range", self.seq)))?;
        let time = i64::try_from(manifest.time).unwrap_or(i64::MAX);
        let inserted = self.trash.with_index(true, |c| {
            match c.execute(
                "INSERT INTO manifests (seq, time, manifest) VALUES (?1, ?2, ?3)",
                rusqlite::params![key, time, text],
            ) {
                Ok(_) => Ok(true),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })?;
        if inserted != Some(true) {
            return Err(other(format!("trash entry {} has a manifest in {INDEX} already", self.seq)));
        }
        Ok(())
    }

    /// Reads the manifest: its row, else a manifest file an earlier mcpsec
    /// wrote.
    pub fn manifest(&self) -> io::Result<Manifest> {
        match self.row()? {
            Some((_, text)) => parse_manifest(text.as_bytes(), INDEX),
            None => self.legacy_manifest(),
        }
    }

    /// The manifest of a complete entry: one that names this entry and,
    /// unless it is a move's, has its kept object beside it.
    pub(super) fn complete(&self) -> io::Result<Manifest> {
        self.check(self.manifest()?, self.has_data())
    }

    /// Whether manifest `m`, found for this entry, describes a complete one.
    pub(super) fn check(&self, m: Manifest, has_data: bool) -> io::Result<Manifest> {
        if m.seq != self.seq {
            return Err(other(format!("its manifest names seq {}", m.seq)));
        }
        if m.action != Action::Move && !has_data {
            return Err(other("its manifest is there but what it kept is missing"));
        }
        Ok(m)
    }

    /// Whether the entry holds kept data.
    pub fn has_data(&self) -> bool {
        self.trash.dir.symlink_metadata(&self.name).is_ok()
    }

    /// Describes the kept object as it is now (for checking it against its
    /// manifest before a restore).
    pub fn describe(&self) -> io::Result<Kept> {
        describe(&self.trash.dir, self.data())
    }

    /// The kept object's name in the trash directory.
    pub(super) fn data(&self) -> &OsStr {
        OsStr::new(&self.name)
    }
}
