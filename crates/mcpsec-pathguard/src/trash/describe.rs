//! Describing what is kept (kinds, sizes, modes, hashes), bounded in
//! entries, depth and size.

use super::*;

/// Describes the object `name` in `dir`: modes, sizes, hashes. Refuses
/// sockets, FIFOs, devices and names that are not UTF-8 (undo could not
/// restore them faithfully).
pub(super) fn describe(dir: &Dir, name: &OsStr) -> io::Result<Kept> {
    describe_within(dir, name, u64::MAX).map_err(|e| match e {
        Described::Io(e) => e,
        Described::Over { .. } => other("it is larger than can be described"),
    })
}

/// Why [`describe_within`] stopped.
pub(super) enum Described {
    Io(io::Error),
    /// Its content passed the bound: at least this many bytes.
    Over {
        at_least: u64,
    },
}

impl From<io::Error> for Described {
    fn from(e: io::Error) -> Self {
        Described::Io(e)
    }
}

/// [`describe`], stopping as soon as the content read passes `cap` bytes, so
/// that no more than that is ever hashed (a tree, or a file that grows while
/// it is read).
pub(super) fn describe_within(dir: &Dir, name: &OsStr, cap: u64) -> Result<Kept, Described> {
    let mut entries = Vec::new();
    let mut tally = Tally { cap, size: 0, disk: 0 };
    describe_into(dir, name, String::new(), &mut entries, &mut tally, 0)?;
    let sha256 = digest(&entries);
    Ok(Kept { entries, size: tally.size, disk: Some(tally.disk), sha256 })
}

/// What [`describe_into`] has counted so far, and its bound.
pub(super) struct Tally {
    pub(super) cap: u64,
    /// Bytes of content.
    pub(super) size: u64,
    /// Bytes allocated on disk.
    pub(super) disk: u64,
}

pub(super) fn describe_into(
    dir: &Dir,
    name: &OsStr,
    path: String,
    out: &mut Vec<KeptEntry>,
    tally: &mut Tally,
    depth: usize,
) -> Result<(), Described> {
    if out.len() > MAX_ENTRIES || depth > 256 {
        return Err(other(format!("it holds more than {MAX_ENTRIES} entries or is deeper than 256")).into());
    }
    use cap_std::fs::MetadataExt;
    let meta = dir.symlink_metadata(name)?;
    tally.disk = tally.disk.saturating_add(meta.blocks().saturating_mul(512));
    let mode = meta.permissions().mode() & 0o7777;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = dir.read_link_contents(name)?;
        let target = target.to_str().ok_or_else(|| other("a symlink's target is not UTF-8"))?.to_owned();
        out.push(KeptEntry { path, kind: "symlink".into(), mode, size: 0, sha256: None, target: Some(target) });
    } else if ft.is_dir() {
        out.push(KeptEntry { path: path.clone(), kind: "dir".into(), mode, size: 0, sha256: None, target: None });
        let sub = dir.open_dir_nofollow(name)?;
        let mut names: Vec<String> = Vec::new();
        for entry in sub.entries()? {
            let n = entry?.file_name();
            names.push(n.into_string().map_err(|_| other("it holds a name that is not UTF-8"))?);
        }
        names.sort();
        for n in names {
            let p = if path.is_empty() { n.clone() } else { format!("{path}/{n}") };
            describe_into(&sub, OsStr::new(&n), p, out, tally, depth + 1)?;
        }
    } else if ft.is_file() {
        // Refused before it is read when its size alone passes the bound.
        if tally.size.saturating_add(meta.len()) > tally.cap {
            return Err(Described::Over { at_least: tally.size.saturating_add(meta.len()) });
        }
        let mut f = open_regular(dir, name)?;
        let mut h = Sha256::new();
        // A stack buffer: no allocation per kept file.
        let mut buf = [0u8; 16 << 10];
        let mut n_total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            n_total += n as u64;
            // A file that grows while it is read stops at the bound too.
            if tally.size.saturating_add(n_total) > tally.cap {
                return Err(Described::Over { at_least: tally.size.saturating_add(n_total) });
            }
        }
        tally.size += n_total;
        out.push(KeptEntry {
            path,
            kind: "file".into(),
            mode,
            size: n_total,
            sha256: Some(hex(&h.finalize())),
            target: None,
        });
    } else {
        return Err(other("it is or holds a socket, FIFO or device, which undo cannot keep").into());
    }
    Ok(())
}

/// The blocks on disk of `name` in `dir` and everything below it, in bytes.
pub(super) fn disk_usage(dir: &Dir, name: &OsStr, depth: usize) -> io::Result<u64> {
    use cap_std::fs::MetadataExt;
    let meta = dir.symlink_metadata(name)?;
    let mut total = meta.blocks().saturating_mul(512);
    if meta.is_dir() && depth <= 256 {
        let sub = dir.open_dir_nofollow(name)?;
        for entry in sub.entries()? {
            total = total.saturating_add(disk_usage(&sub, &entry?.file_name(), depth + 1)?);
        }
    }
    Ok(total)
}

/// Opens a regular file for reading without following a symlink and
/// without blocking on a FIFO swapped in since it was looked at.
pub(super) fn open_regular(dir: &Dir, name: &OsStr) -> io::Result<cap_std::fs::File> {
    let f = dir.open_with(
        name,
        OpenOptions::new()
            .read(true)
            .follow(FollowSymlinks::No)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32),
    )?;
    if !f.metadata()?.is_file() {
        return Err(other("it changed while it was being kept"));
    }
    Ok(f)
}

/// Makes a kept object private: files 0600, directories 0700 (its real
/// modes are in the manifest). Best effort: the trash directory is 0700
/// anyway, and a file owned by someone else cannot be changed. A file with
/// other hard links is left alone (its mode is theirs too).
pub(super) fn seal(dir: &Dir, name: &OsStr, depth: usize) {
    use cap_std::fs::MetadataExt;
    let Ok(meta) = dir.symlink_metadata(name) else { return };
    if meta.is_dir() {
        let _ = dir.set_permissions(name, Permissions::from_mode(0o700));
        if depth > 256 {
            return;
        }
        let Ok(sub) = dir.open_dir_nofollow(name) else { return };
        let Ok(entries) = sub.entries() else { return };
        for entry in entries.flatten() {
            seal(&sub, &entry.file_name(), depth + 1);
        }
    } else if meta.is_file() && meta.nlink() == 1 {
        let _ = dir.set_permissions(name, Permissions::from_mode(0o600));
    }
}
