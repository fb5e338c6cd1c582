//! The name of a uid in the password database file, `/etc/passwd`: the
//! principal of a process run without `USER` (a container, a service).
//!
//! The file is parsed (passwd(5): `name:password:uid:gid:gecos:home:shell`)
//! rather than asked of the C library's `getpwuid_r`, which would need
//! `unsafe` or a dependency for one lookup. So users known only to other
//! NSS sources (LDAP, sssd) are not found here: the caller falls back to
//! `uid-N`, and such a user can set `USER` or pass `--user`.

use std::path::Path;

/// The system's password database file.
const PASSWD: &str = "/etc/passwd";

/// The name of `uid`'s entry in `/etc/passwd`; `None` when there is none
/// (or the file cannot be read, which is logged).
pub(crate) fn name_of(uid: u32) -> Option<String> {
    name_in_file(Path::new(PASSWD), uid)
}

fn name_in_file(path: &Path, uid: u32) -> Option<String> {
    // The system's account list, not a tool call's target.
    #[allow(clippy::disallowed_methods)]
    match std::fs::read(path) {
        Ok(text) => name_in(&text, uid).map(str::to_owned),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!("cannot read {} for the name of uid {uid}: {e}", path.display());
            None
        }
    }
}

/// The name of the first entry for `uid` in passwd(5) text. Lines that are
/// not entries (comments, NIS `+`/`-` lines, too few fields, a uid that is
/// not a number, a name that is empty or not UTF-8) are skipped.
fn name_in(text: &[u8], uid: u32) -> Option<&str> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let mut fields = line.split(|&b| b == b':');
        let (name, _password, id) = (fields.next()?, fields.next()?, fields.next()?);
        let name = std::str::from_utf8(name).ok()?;
        let id: u32 = std::str::from_utf8(id).ok()?.parse().ok()?;
        let entry = !name.is_empty() && !name.starts_with(['#', '+', '-']);
        (entry && id == uid).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # a comment:x:1000:\n\
        +nis:x:1000:1000::/:\n\
        :x:1000:1000::/:\n\
        short:1000\n\
        weird:x:1o00:1000::/:\n\
        ada:x:1000:1000:Ada,,,:/home/ada:/bin/zsh\n\
        ada2:x:1000:1000::/home/ada2:/bin/sh\n\
        bad\xff:x:1001:1001::/:\n\
        nonl:x:4294967294:1::/:";

    #[test]
    fn a_uid_is_named_by_its_first_entry() {
        assert_eq!(name_in(PASSWD, 0), Some("root"));
        assert_eq!(name_in(PASSWD, 1), Some("daemon"));
        // Comments, NIS lines, empty names, short lines and bad uids are skipped.
        assert_eq!(name_in(PASSWD, 1000), Some("ada"));
        assert_eq!(name_in(PASSWD, 4294967294), Some("nonl"), "the last line needs no newline");
    }

    #[test]
    fn a_uid_without_a_usable_entry_has_no_name() {
        assert_eq!(name_in(PASSWD, 1001), None, "a name that is not UTF-8");
        assert_eq!(name_in(PASSWD, 4242), None);
        assert_eq!(name_in(b"", 0), None);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test's own temporary file
    fn a_missing_file_has_no_names() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(name_in_file(&dir.path().join("passwd"), 0), None);
        std::fs::write(dir.path().join("passwd"), PASSWD).unwrap();
        assert_eq!(name_in_file(&dir.path().join("passwd"), 0).as_deref(), Some("root"));
    }
}
