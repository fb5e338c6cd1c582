//! A crash mid-write leaves an incomplete last line: verify reports it as
//! torn, the next writer closes it, records that it did, and continues the
//! chain; the torn bytes are never deleted. A damaged last record stops
//! writers instead.

use std::io::Write;

use mcpsec_audit::{AuditError, AuditLog, EventKind, Options, ProblemKind, Record};

use crate::common::*;

const PARTIAL: &[u8] = b"{\"v\":1,\"seq\":11,\"ts\":\"2026-11-24T14:37:48.1234";

fn append_raw(path: &std::path::Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_torn_tail_is_reported_then_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, 10, Options::default());
    append_raw(&path, PARTIAL);

    let p = verify_problem(&path, None);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Torn, 11, None), "{p}");

    let log = AuditLog::open(&path, Options::default()).unwrap();
    // seq 11 is the `recovered` record, chained to seq 10.
    assert_eq!(log.append(sample(3)).wait().unwrap().seq, 12);
    assert_eq!(log.append(sample(4)).wait().unwrap().seq, 13);
    log.close();

    let r = verify_ok(&path, None);
    assert_eq!(r.records, 13);
    assert_eq!(r.head.as_ref().unwrap().0, 13);
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(r.notes[0].contains(":11:"), "{:?}", r.notes);

    let bytes = std::fs::read(&path).unwrap();
    let mut closed = PARTIAL.to_vec();
    closed.push(b'\n');
    assert!(find(&bytes, &closed).is_some(), "the torn bytes are kept, on their own line");
    let lines = lines(&path);
    assert_eq!(lines.len(), 14);
    assert_eq!(lines[10], PARTIAL);
    let recovered: serde_json::Value = serde_json::from_slice(&lines[11]).unwrap();
    assert_eq!(recovered["event"], "recovered");
    assert_eq!(recovered["seq"], 11);
    assert_eq!(recovered["prev"].as_str().unwrap(), stated_hash(&lines[9]));
    assert!(recovered["reason"].as_str().unwrap().contains("line 11"), "{recovered}");
    assert_eq!(seq_of(&lines[13]), 13);

    // Queries skip the torn line.
    let seqs: Vec<u64> = {
        let mut v = Vec::new();
        mcpsec_audit::query::scan(&path, &Default::default(), |_, e| v.push(e.seq)).unwrap();
        v
    };
    assert_eq!(seqs, (1..=13).collect::<Vec<_>>());
}

#[test]
fn a_writer_that_opens_and_closes_leaves_a_log_others_can_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, 5, Options::default());
    append_raw(&path, b"{\"v\":1,\"seq\":6,");
    // Two writers find the torn line (as a server and a CLI grant might).
    let a = AuditLog::open(&path, Options::default()).unwrap();
    let b = AuditLog::open(&path, Options::default()).unwrap();
    a.close();
    // A log that was only recovered verifies.
    let r = verify_ok(&path, None);
    assert_eq!((r.records, r.notes.len()), (6, 1));
    assert_eq!(b.append(sample(1)).wait().unwrap().seq, 7);
    b.close();
    let c = AuditLog::open(&path, Options::default()).unwrap();
    assert_eq!(c.append(sample(2)).wait().unwrap().seq, 8);
    c.close();
    let r = verify_ok(&path, None);
    assert_eq!((r.records, r.notes.len()), (8, 1));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("\"event\":\"recovered\"").count(), 1);
}

#[test]
fn a_whole_record_without_its_newline_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, 6, Options::default());
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.pop(), Some(b'\n'));
    std::fs::write(&path, &bytes).unwrap();

    let p = verify_problem(&path, None);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Torn, 6, Some(6)), "{p}");

    let log = AuditLog::open(&path, Options::default()).unwrap();
    // The chain continues from seq 6, then the `recovered` record (7).
    assert_eq!(log.append(sample(0)).wait().unwrap().seq, 8);
    log.close();
    let r = verify_ok(&path, None);
    assert_eq!(r.records, 8);
    let lines = lines(&path);
    assert_eq!(lines.len(), 8);
    assert!(find(&lines[6], b"\"event\":\"recovered\"").is_some());
}

#[test]
fn a_damaged_last_record_stops_writers() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, 8, Options::default());
    let mut t = lines(&path);
    t[7] = edit_ts(&t[7]);
    write_lines(&path, &t);
    let before = std::fs::read(&path).unwrap();

    match AuditLog::open(&path, Options::default()) {
        Err(AuditError::Corrupt { line, path: p }) => {
            assert_eq!(line, 8);
            assert!(p.ends_with("audit.log"), "{p}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing is repaired");

    // Also when the damage shows up while a writer is already open (each
    // batch re-reads the tail under the lock when the file changed size).
    write_lines(&path, &lines(&path)[..7]);
    let log = AuditLog::open(&path, Options::default()).unwrap();
    assert_eq!(log.append(Record::new(EventKind::ServerStart)).wait().unwrap().seq, 8);
    let mut t = lines(&path);
    let at = find(&t[7], b"\"event\":\"").unwrap() + 9;
    t[7].splice(at..at, b"x".iter().copied());
    write_lines(&path, &t);
    let damaged = std::fs::read(&path).unwrap();
    match log.append(Record::new(EventKind::ServerStop)).wait() {
        Err(AuditError::Corrupt { line: 8, .. }) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
    log.close();
    assert_eq!(std::fs::read(&path).unwrap(), damaged);
}
