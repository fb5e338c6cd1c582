//! Durability modes and the size limit (fail closed, nothing partial).

use std::time::Duration;

use mcpsec_audit::{AuditError, AuditLog, Options, SyncMode};

use crate::common::*;

#[test]
fn batch_mode_writes_before_answering() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    // An interval far longer than the test: the receipts cannot wait for it.
    let sync = SyncMode::Batch { interval: Duration::from_secs(3600) };
    let log = AuditLog::open(&path, Options { sync, ..Options::default() }).unwrap();
    assert_eq!(log.sync(), sync);
    assert_eq!(log.path(), path);
    let started = std::time::Instant::now();
    for i in 0..20 {
        let seq = log.append(sample(i)).wait().unwrap().seq;
        assert_eq!(seq, i as u64 + 1);
        // Already in the file (written, if not yet fdatasync'ed).
        let lines = lines(&path);
        assert_eq!(lines.len(), i + 1);
        assert_eq!(seq_of(&lines[i]), seq);
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    log.close();
    assert_eq!(verify_ok(&path, None).records, 20);
    assert!(matches!(log.append(sample(0)).wait(), Err(AuditError::Stopped)));
}

#[test]
fn batch_mode_with_a_short_interval_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let sync = SyncMode::Batch { interval: Duration::from_millis(2) };
    let log = AuditLog::open(&path, Options { sync, ..Options::default() }).unwrap();
    let pending: Vec<_> = (0..500).map(|i| log.append(sample(i))).collect();
    let seqs: Vec<u64> = pending.into_iter().map(|p| p.wait().unwrap().seq).collect();
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
    // Not synchronisation: an append after a few idle intervals (whether
    // the syncer ran meanwhile or not, the answer is the same).
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(log.append(sample(0)).wait().unwrap().seq, 501);
    drop(log);
    // Dropping the log stops the writer once the queue is written (the
    // bound only ends a hang; the assertion below says what was missing).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lines(&path).len() < 501 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(verify_ok(&path, None).records, 501);
}

#[tokio::test]
async fn appends_can_be_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let log = AuditLog::open(&path, Options::default()).unwrap();
    let a = log.append(sample(1));
    let b = log.append(sample(2));
    assert_eq!(a.await.unwrap().seq, 1);
    assert_eq!(b.await.unwrap().seq, 2);
    log.close();
    assert!(matches!(log.append(sample(3)).await, Err(AuditError::Stopped)));
}

#[test]
fn a_full_log_refuses_appends_and_leaves_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let limit = 4000;
    for sync in [
        SyncMode::Always,
        SyncMode::Changes { interval: Duration::from_millis(5) },
        SyncMode::Batch { interval: Duration::from_millis(5) },
    ] {
        let _ = std::fs::remove_file(&path);
        let log = AuditLog::open(&path, Options { sync, max_bytes: Some(limit), ..Options::default() }).unwrap();
        let mut ok = 0u64;
        let mut refused = 0;
        for i in 0..40 {
            match log.append(sample(i)).wait() {
                Ok(r) => {
                    assert_eq!(refused, 0, "nothing is written once the log is full");
                    ok += 1;
                    assert_eq!(r.seq, ok);
                }
                Err(AuditError::Full { limit: l, path: p }) => {
                    assert_eq!(l, limit);
                    assert!(p.ends_with("audit.log"));
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(ok >= 5 && refused > 0, "ok {ok}, refused {refused}");
        // A batch of several records is refused whole.
        let batch: Vec<_> = (0..8).map(|i| log.append(sample(i))).collect();
        for p in batch {
            assert!(matches!(p.wait(), Err(AuditError::Full { .. })));
        }
        log.close();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() as u64 <= limit);
        assert!(bytes.ends_with(b"\n"));
        let r = verify_ok(&path, None);
        assert_eq!(r.records, ok);
        // A new writer is refused too, and still writes nothing.
        let log = AuditLog::open(&path, Options { sync, max_bytes: Some(limit), ..Options::default() }).unwrap();
        assert!(matches!(log.append(sample(0)).wait(), Err(AuditError::Full { .. })));
        log.close();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}

#[test]
fn the_size_limit_counts_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let options = Options { rotate_bytes: 1000, max_bytes: Some(5000), ..Options::default() };
    let log = AuditLog::open(&path, options).unwrap();
    let mut ok = 0;
    while log.append(sample(ok)).wait().is_ok() {
        ok += 1;
        assert!(ok < 100, "the limit was never reached");
    }
    log.close();
    let files = mcpsec_audit::query::files(&path);
    assert!(files.len() >= 3);
    let total: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(total <= 5000, "{total}");
    assert_eq!(verify_ok(&path, None).records, ok as u64);
}
