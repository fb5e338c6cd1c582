//! The token store's tests: SQLite, the lazy store, migrations.
#[test]
fn integrity_check_reports_a_sound_and_a_damaged_database() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mcpsec.db");
    drop(SqliteStore::open(&p).unwrap());
    assert_eq!(SqliteStore::integrity_check(&p).unwrap(), Vec::<String>::new());
    std::fs::write(&p, b"this is not a database, it is a text file that is long enough to have a header").unwrap();
    assert!(SqliteStore::integrity_check(&p).is_err());
    assert!(SqliteStore::integrity_check(&dir.path().join("missing.db")).is_err());
}

use super::*;

fn record(id: &str, cap: Capability, uses: Option<i64>) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        mac: vec![1, 2, 3],
        capability: cap,
        created_ms: 1000,
        expires_ms: 10_000,
        paths: vec!["notes/**".into()],
        uses_left: uses,
        user: None,
        note: Some("test".into()),
        revoked_ms: None,
    }
}

#[test]
fn insert_get_list_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("mcpsec.db")).unwrap();
    s.insert(&record("a", Capability::DeleteFiles, None)).unwrap();
    s.insert(&record("b", Capability::WriteFiles, Some(1))).unwrap();
    assert!(s.insert(&record("a", Capability::DeleteFiles, None)).is_err());
    assert_eq!(s.get("a").unwrap().unwrap().paths, vec!["notes/**"]);
    assert_eq!(s.list(false, 5000).unwrap().len(), 2);
    assert_eq!(s.list(false, 20_000).unwrap().len(), 0, "expired tokens are not active");
    assert!(s.consume_use("b", 5000).unwrap());
    assert!(!s.consume_use("b", 5000).unwrap(), "the last use is spent once");
    assert!(!s.consume_use("a", 5000).unwrap(), "unlimited tokens have no uses to spend");
    assert_eq!(s.list(false, 5000).unwrap().len(), 1);
    // A returned use can be spent again, once; an unlimited token stays unlimited.
    s.return_use("b").unwrap();
    assert_eq!(s.get("b").unwrap().unwrap().uses_left, Some(1));
    assert!(s.consume_use("b", 5000).unwrap());
    assert!(!s.consume_use("b", 5000).unwrap());
    s.return_use("a").unwrap();
    assert_eq!(s.get("a").unwrap().unwrap().uses_left, None);
    assert_eq!(s.revoke(&["a".into(), "zzz".into()], 6000).unwrap(), vec!["a"]);
    assert!(s.revoke(&["a".into()], 7000).unwrap().is_empty());
    assert_eq!(s.list(true, 5000).unwrap().len(), 2);
    s.insert(&record("c", Capability::DeleteFiles, None)).unwrap();
    s.insert(&record("d", Capability::WriteFiles, None)).unwrap();
    assert_eq!(s.revoke_all(Some(Capability::WriteFiles), 8000).unwrap(), vec!["d"]);
    assert_eq!(s.revoke_all(None, 8000).unwrap(), vec!["c"]);
}

#[test]
fn nonces_are_single_use_and_settings_persist() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mcpsec.db");
    let s = SqliteStore::open(&p).unwrap();
    assert!(s.use_nonce("n1", 100, 0).unwrap());
    assert!(!s.use_nonce("n1", 100, 0).unwrap());
    s.set_setting("k", "v").unwrap();
    drop(s);
    let s = SqliteStore::open(&p).unwrap();
    assert_eq!(s.setting("k").unwrap().as_deref(), Some("v"));
    assert!(!s.use_nonce("n1", 100, 50).unwrap());
}

#[test]
fn users_are_added_once_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("mcpsec.db")).unwrap();
    let u = |name: &str, mac: u8| UserRecord { name: name.into(), mac: vec![mac; 32], created_ms: 5 };
    assert!(s.add_user(&u("bob", 1)).unwrap());
    assert!(s.add_user(&u("alice", 2)).unwrap());
    assert!(!s.add_user(&u("alice", 3)).unwrap(), "a taken name is refused");
    let names: Vec<_> = s.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(s.remove_user("alice").unwrap());
    assert!(!s.remove_user("alice").unwrap());
    assert_eq!(s.users().unwrap().len(), 1);
    assert!(!format!("{:?}", u("x", 9)).contains('9'), "Debug shows no MAC");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mcpsec.db");
    drop(SqliteStore::open(&p).unwrap());
    Connection::open(&p).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let e = SqliteStore::open(&p).unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");
}

#[test]
fn a_commit_elsewhere_changes_the_data_version() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mcpsec.db");
    let a = SqliteStore::open(&p).unwrap();
    let b = SqliteStore::open(&p).unwrap();
    let v = a.data_version().unwrap();
    assert_eq!(a.data_version().unwrap(), v);
    b.insert(&record("x", Capability::ReadFiles, None)).unwrap();
    assert_ne!(a.data_version().unwrap(), v);
}

#[test]
fn a_lazy_store_opens_at_its_first_use_and_behaves_as_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mcpsec.db");
    let lazy = LazyStore::new(&p).unwrap();
    assert!(!p.exists(), "nothing is created before the first use");
    assert!(format!("{lazy:?}").contains("opened: false"));
    lazy.insert(&record("a", Capability::DeleteFiles, None)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "created 0600");
    // The same database as the eager store sees, both ways.
    let eager = SqliteStore::open(&p).unwrap();
    assert_eq!(eager.get("a").unwrap().unwrap().capability, Capability::DeleteFiles);
    eager.insert(&record("b", Capability::WriteFiles, Some(1))).unwrap();
    assert!(lazy.consume_use("b", 5000).unwrap());
    assert!(!lazy.consume_use("b", 5000).unwrap());
    assert_eq!(lazy.list(true, 5000).unwrap().len(), 2);
    // An existing database is opened later just the same.
    let again = LazyStore::new(&p).unwrap();
    assert_eq!(again.get("a").unwrap().unwrap().id, "a");
}

#[test]
fn a_lazy_store_refuses_a_foreign_file_at_once_and_a_damaged_database_at_every_use() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mcpsec.db");
    std::fs::write(&p, b"not a database, only text that pretends to be one").unwrap();
    let e = LazyStore::new(&p).unwrap_err().to_string();
    assert!(e.contains("mcpsec.db") && e.contains("SQLite's header"), "{e}");
    // SQLite's header but damaged pages: found at the first use, and at
    // the next one again; the file is never changed.
    std::fs::remove_file(&p).unwrap();
    drop(SqliteStore::open(&p).unwrap());
    let mut bytes = std::fs::read(&p).unwrap();
    for b in bytes.iter_mut().skip(100) {
        *b = 0xA5;
    }
    std::fs::write(&p, &bytes).unwrap();
    let lazy = LazyStore::new(&p).unwrap();
    for _ in 0..2 {
        let e = lazy.get("a").unwrap_err().to_string();
        assert!(e.contains("mcpsec.db") && e.contains("malformed"), "{e}");
    }
    assert_eq!(std::fs::read(&p).unwrap(), bytes, "a damaged database is never repaired");
    // Once a human has put a sound database back, the next use opens it.
    std::fs::remove_file(&p).unwrap();
    SqliteStore::open(&p).unwrap().insert(&record("a", Capability::ReadFiles, None)).unwrap();
    assert_eq!(lazy.get("a").unwrap().unwrap().id, "a");
    // An empty file is what SQLite makes of a new database: accepted.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    LazyStore::new(&empty).unwrap().insert(&record("c", Capability::ReadFiles, None)).unwrap();
}
