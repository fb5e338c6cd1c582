//! Keeping for undo: what is kept, what is refused, and that a refusal
//! changes nothing.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use mcpsec_pathguard::{GuardError, Rules, Trash};

use crate::support::{Fx, SENTINEL, default_rules, sandbox};

fn trash(fx: &Fx) -> Trash {
    let state = fx.base.join("state");
    fs::create_dir_all(&state).unwrap();
    Trash::open(&state).unwrap()
}

#[test]
fn a_file_with_other_hard_links_keeps_their_mode() {
    let fx = Fx::bare();
    fs::write(fx.root.join("f"), "old").unwrap();
    fs::set_permissions(fx.root.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::hard_link(fx.root.join("f"), fx.root.join("g")).unwrap();
    let sb = sandbox(std::slice::from_ref(&fx.root), Rules::none(), 1 << 20);
    let t = trash(&fx);
    let slot = t.begin(1).unwrap();
    let w = sb.write_keeping("f", b"new", &slot).unwrap();
    assert_eq!(w.kept.unwrap().kept.entries[0].mode, 0o644);
    assert_eq!(fs::read_to_string(fx.root.join("f")).unwrap(), "new");
    // `g` still names the old file, and its mode was not sealed to 0600.
    assert_eq!(fs::read_to_string(fx.root.join("g")).unwrap(), "old");
    assert_eq!(fs::metadata(fx.root.join("g")).unwrap().mode() & 0o777, 0o644);
}

#[test]
fn what_cannot_be_kept_is_not_removed() {
    let fx = Fx::bare();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fx.root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    fs::create_dir_all(fx.root.join("full/inner")).unwrap();
    let sb = sandbox(std::slice::from_ref(&fx.root), default_rules(), 1 << 20);
    let t = trash(&fx);
    let slot = t.begin(2).unwrap();
    let e = sb.remove_keeping("fifo", false, &slot).unwrap_err();
    assert!(matches!(e, GuardError::NotKept { .. }), "{e}");
    assert!(e.to_string().contains("left unchanged"), "{e}");
    let e = sb.remove_keeping("full", false, &slot).unwrap_err();
    assert!(matches!(e, GuardError::DirectoryNotEmpty { .. }), "{e}");
    assert!(fx.root.join("fifo").exists() && fx.root.join("full/inner").is_dir());
    assert!(!slot.has_data());
    slot.abandon(&t);
    assert!(t.list().unwrap().is_empty());
}

#[test]
fn keeping_obeys_the_guard_and_never_leaves_the_root() {
    let fx = Fx::bare();
    symlink(fx.outside.join("secret"), fx.root.join("out")).unwrap();
    fs::create_dir_all(fx.root.join(".git")).unwrap();
    fs::write(fx.root.join(".git/HEAD"), "ref").unwrap();
    let sb = sandbox(std::slice::from_ref(&fx.root), default_rules(), 1 << 20);
    let t = trash(&fx);
    let slot = t.begin(3).unwrap();
    for (path, refused) in [("../ws-evil/secret", true), (".git/HEAD", true), ("out/x", true)] {
        let e = sb.write_keeping(path, b"x", &slot).unwrap_err();
        assert_eq!(e.is_refusal(), refused, "{path}: {e}");
        assert!(!e.to_string().contains(SENTINEL));
        let e = sb.remove_keeping(path, true, &slot).unwrap_err();
        assert!(e.is_refusal() || matches!(e, GuardError::NotFound { .. }), "{path}: {e}");
    }
    // Deleting the symlink keeps the link itself, not its target.
    let kept = sb.remove_keeping("out", false, &slot).unwrap();
    assert_eq!(kept.kept.entries[0].kind, "symlink");
    assert_eq!(fs::read_to_string(fx.outside.join("secret")).unwrap(), SENTINEL);
    assert_eq!(fs::read_to_string(fx.root.join(".git/HEAD")).unwrap(), "ref");
}

#[test]
fn an_entry_is_never_reused() {
    let fx = Fx::bare();
    let t = trash(&fx);
    let _slot = t.begin(7).unwrap();
    let e = t.begin(7).unwrap_err();
    assert!(e.to_string().contains("exists already"), "{e}");
    assert_eq!(fs::metadata(fx.base.join("state/trash")).unwrap().mode() & 0o777, 0o700);
}
