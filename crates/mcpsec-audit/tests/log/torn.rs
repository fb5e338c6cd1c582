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
        mcpsec_audit::query::scan(&path, &Default::default(), false, |_, e| v.push(e.unwrap().seq)).unwrap();
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

/// A backdated `grant` that claims seq 1: well-formed, its hash right, but
/// not chained to the log it is appended to.
fn forged_grant() -> Vec<u8> {
    let body = br#"{"v":1,"seq":1,"ts":"2020-01-01T00:00:00.000000Z","event":"grant","user":"alice","capability":"delete_files","prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
    rehash(body)
}

fn seqs_shown(path: &std::path::Path) -> (Vec<u64>, u64) {
    let mut v = Vec::new();
    let seen = mcpsec_audit::query::scan(path, &Default::default(), false, |_, e| v.push(e.unwrap().seq)).unwrap();
    (v, seen.left_out)
}

#[test]
fn a_complete_record_without_a_newline_that_does_not_chain_is_not_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, 5, Options::default());
    append_raw(&path, &forged_grant());
    let before = std::fs::read(&path).unwrap();
    // The writer does not take it for a crash's leftover: it refuses, and
    // writes nothing (no `recovered` record to launder it).
    match AuditLog::open(&path, Options::default()) {
        Err(e @ AuditError::NotTorn { line: 6, .. }) => assert!(e.to_string().contains("something else added it")),
        other => panic!("expected NotTorn, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Readers never show it as a record.
    assert_eq!(seqs_shown(&path), ((1..=5).collect(), 1));
    let mut marked = Vec::new();
    mcpsec_audit::query::scan(&path, &Default::default(), true, |line, e| {
        if e.is_none() {
            marked.push(line.to_owned());
        }
    })
    .unwrap();
    assert_eq!(marked.len(), 1);
    assert!(marked[0].contains("\"event\":\"grant\""));
    let tail = mcpsec_audit::query::tail(&path, 3, false).unwrap();
    assert_eq!(tail.lines.iter().map(|(l, _)| seq_of(l.as_bytes())).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(tail.seen.left_out, 1);
}

#[test]
fn a_forged_line_closed_by_a_forged_recovered_record_does_not_verify() {
    // What the writer used to do, or what a forger does by hand: close the
    // forged line and chain a `recovered` record after it.
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, 5, Options::default());
    let mut t = lines(&path);
    let recovered = format!(
        r#"{{"v":1,"seq":6,"ts":"2026-12-07T00:00:00.000000Z","event":"recovered","reason":"line 6 held an incomplete record","prev":"{}","hash":"{}"}}"#,
        stated_hash(&t[4]),
        "0".repeat(64)
    );
    t.push(forged_grant());
    t.push(rehash(recovered.as_bytes()));
    write_lines(&path, &t);
    let p = verify_problem(&path, None);
    assert_eq!((p.kind, p.line), (ProblemKind::Inserted, 6), "{p}");
    // Readers show seq 1..=6 (the recovered record is in the chain), never the forgery.
    assert_eq!(seqs_shown(&path), ((1..=6).collect(), 1));
}

#[test]
fn bytes_no_writer_writes_are_not_a_torn_write() {
    for junk in [&b"hello"[..], b"{\"v\":2,", b"\x1b]52;c;aGVsbG8=\x07", b"[1,2"] {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        generate(&path, 3, Options::default());
        append_raw(&path, junk);
        assert!(
            matches!(AuditLog::open(&path, Options::default()), Err(AuditError::NotTorn { line: 4, .. })),
            "{junk:?}"
        );
    }
}

#[test]
fn the_recovered_record_commits_to_the_torn_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, 4, Options::default());
    append_raw(&path, PARTIAL);
    let log = AuditLog::open(&path, Options::default()).unwrap();
    log.close();
    let mut t = lines(&path);
    let recovered: serde_json::Value = serde_json::from_slice(&t[5]).unwrap();
    let torn = &recovered["details"]["torn"];
    assert_eq!(torn["bytes"], PARTIAL.len());
    assert_eq!(torn["line"], 5);
    assert_eq!(torn["sha256"].as_str().unwrap().len(), 64);
    verify_ok(&path, None);
    // Changing the torn bytes afterwards, even to another torn-looking
    // prefix, is found.
    t[4] = b"{\"v\":1,\"seq\":5,\"ts\":\"2020-01-01".to_vec();
    write_lines(&path, &t);
    let p = verify_problem(&path, None);
    assert_eq!((p.kind, p.line), (ProblemKind::Edited, 5), "{p}");
}

#[test]
fn a_recovered_record_of_an_older_writer_still_verifies_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, 4, Options::default());
    append_raw(&path, PARTIAL);
    AuditLog::open(&path, Options::default()).unwrap().close();
    // Drop the commitment, as an mcpsec before it wrote the record, keeping
    // the log's field order (prev and hash last), then rehash.
    let mut t = lines(&path);
    let raw = String::from_utf8(t[5].clone()).unwrap();
    let (start, end) = (raw.find(",\"details\":").unwrap(), raw.find(",\"prev\":").unwrap());
    t[5] = rehash(format!("{}{}", &raw[..start], &raw[end..]).as_bytes());
    write_lines(&path, &t);
    let r = verify_ok(&path, None);
    assert!(r.notes.iter().any(|n| n.contains("older mcpsec")), "{:?}", r.notes);
}
