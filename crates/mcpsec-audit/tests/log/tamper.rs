//! The tamper matrix: every single-record edit, deletion, insertion, swap
//! of neighbours, truncation and whole rewrite of a generated log is
//! detected and located (kind, line and seq).

use mcpsec_audit::{Options, ProblemKind};

use crate::common::*;

const N: usize = 40;

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    lines: Vec<Vec<u8>>,
    cp: mcpsec_audit::Checkpoint,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, N, Options::default());
    let lines = lines(&path);
    assert_eq!(lines.len(), N);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(seq_of(l), i as u64 + 1);
    }
    let cp = checkpoint(&path);
    Fixture { _dir: dir, path, lines, cp }
}

/// Writes the tampered lines and expects `kind` at `line` with `seq`, with
/// and without the checkpoint.
#[track_caller]
fn expect(f: &Fixture, tampered: &[Vec<u8>], kind: ProblemKind, line: u64, seq: Option<u64>, case: &str) {
    write_lines(&f.path, tampered);
    for cp in [None, Some(&f.cp)] {
        let p = verify_problem(&f.path, cp);
        assert_eq!((p.kind, p.line, p.seq), (kind, line, seq), "{case} (checkpoint: {}): got {p}", cp.is_some());
        assert_eq!(p.file, f.path, "{case}");
    }
}

#[test]
fn untouched_log_verifies_with_its_head() {
    let f = fixture();
    let r = verify_ok(&f.path, None);
    assert_eq!(r.records, N as u64);
    assert_eq!(r.head, Some((N as u64, stated_hash(&f.lines[N - 1]))));
    assert_eq!(r.files, vec![f.path.clone()]);
    assert!(r.notes.is_empty());
    let r = verify_ok(&f.path, Some(&f.cp));
    assert_eq!(r.records, N as u64);
    // The genesis link and the chain as written.
    assert!(find(&f.lines[0], format!("\"prev\":\"{}\"", "0".repeat(64)).as_bytes()).is_some());
    for i in 1..N {
        let prev = format!("\"prev\":\"{}\"", stated_hash(&f.lines[i - 1]));
        assert!(find(&f.lines[i], prev.as_bytes()).is_some());
    }
    // Every line is the JSON a grep/jq user expects.
    for l in &f.lines {
        let v: serde_json::Value = serde_json::from_slice(l).unwrap();
        assert_eq!(v["v"], 1);
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }
}

#[test]
fn an_edit_without_rehash_is_located() {
    let f = fixture();
    for i in 0..N {
        let line = i as u64 + 1;
        let mut t = f.lines.clone();
        t[i] = edit_ts(&t[i]);
        expect(&f, &t, ProblemKind::Edited, line, Some(line), &format!("ts edit at line {line}"));

        let mut t = f.lines.clone();
        let at = find(&t[i], b"\"user\":\"").unwrap() + 8;
        t[i][at] = b'X';
        expect(&f, &t, ProblemKind::Edited, line, Some(line), &format!("user edit at line {line}"));

        // The stated hash itself (still hex).
        let mut t = f.lines.clone();
        let at = t[i].len() - 3;
        t[i][at] = if t[i][at] == b'0' { b'1' } else { b'0' };
        expect(&f, &t, ProblemKind::Edited, line, Some(line), &format!("hash edit at line {line}"));

        // The prev link (without rehash).
        let mut t = f.lines.clone();
        t[i] = set_prev(&t[i], &"a".repeat(64));
        expect(&f, &t, ProblemKind::Edited, line, Some(line), &format!("prev edit at line {line}"));
    }
}

#[test]
fn an_edit_with_its_own_hash_recomputed_is_located() {
    let f = fixture();
    for i in 0..N {
        let line = i as u64 + 1;
        let mut t = f.lines.clone();
        t[i] = rehash(&edit_ts(&t[i]));
        assert_ne!(t[i], f.lines[i]);
        if i + 1 < N {
            expect(&f, &t, ProblemKind::Edited, line, Some(line), &format!("rehashed edit at line {line}"));
        } else {
            // The last record: nothing chains to it, only the checkpoint
            // tells.
            write_lines(&f.path, &t);
            assert_eq!(verify_ok(&f.path, None).records, N as u64);
            let p = verify_problem(&f.path, Some(&f.cp));
            assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Rewritten, line, Some(line)), "{p}");
        }
    }
}

#[test]
fn a_deletion_is_located() {
    let f = fixture();
    for i in 0..N {
        let line = i as u64 + 1;
        let mut t = f.lines.clone();
        t.remove(i);
        if i + 1 < N {
            // The record after the gap is at the deleted line.
            expect(&f, &t, ProblemKind::Deleted, line, Some(line + 1), &format!("deletion of line {line}"));
        } else {
            write_lines(&f.path, &t);
            let r = verify_ok(&f.path, None);
            assert_eq!(r.head.unwrap().0, N as u64 - 1);
            let p = verify_problem(&f.path, Some(&f.cp));
            assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Truncated, line - 1, Some(line - 1)), "{p}");
        }
    }
    // Two records at once.
    let mut t = f.lines.clone();
    t.drain(10..12);
    expect(&f, &t, ProblemKind::Deleted, 11, Some(13), "deletion of lines 11-12");
}

/// A copy of record `i` (0-based) with changed content and a recomputed
/// hash: same seq, same prev.
fn forged(f: &Fixture, i: usize) -> Vec<u8> {
    let at = find(&f.lines[i], b"\"user\":\"").unwrap() + 8;
    let mut l = f.lines[i].clone();
    l.splice(at..at, b"mallory-".iter().copied());
    rehash(&l)
}

#[test]
fn an_inserted_forgery_is_located() {
    let f = fixture();
    for i in 0..N {
        let seq = i as u64 + 1;
        // Before the genuine record (the forgery takes its line).
        let mut t = f.lines.clone();
        t.insert(i, forged(&f, i));
        if i + 1 < N {
            expect(&f, &t, ProblemKind::Inserted, seq, Some(seq), &format!("forgery before line {seq}"));
        } else {
            // Two versions of the last record and nothing after them: only
            // the checkpoint says which is genuine.
            write_lines(&f.path, &t);
            let p = verify_problem(&f.path, None);
            assert_eq!(p.kind, ProblemKind::Inserted, "{p}");
            assert!(p.line == seq || p.line == seq + 1, "{p}");
            let p = verify_problem(&f.path, Some(&f.cp));
            assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Inserted, seq, Some(seq)), "{p}");
        }

        // After the genuine record.
        let mut t = f.lines.clone();
        t.insert(i + 1, forged(&f, i));
        expect(&f, &t, ProblemKind::Inserted, seq + 1, Some(seq), &format!("forgery after line {seq}"));

        // A verbatim duplicate.
        let mut t = f.lines.clone();
        t.insert(i + 1, f.lines[i].clone());
        expect(&f, &t, ProblemKind::Inserted, seq + 1, Some(seq), &format!("duplicate of line {seq}"));
    }
    // A replay of an old record at the end.
    let mut t = f.lines.clone();
    t.push(f.lines[4].clone());
    expect(&f, &t, ProblemKind::Inserted, N as u64 + 1, Some(5), "replay of seq 5 at the end");
    // A line that is no record at all.
    let mut t = f.lines.clone();
    t.insert(7, b"{\"hello\":\"world\"}".to_vec());
    expect(&f, &t, ProblemKind::Malformed, 8, None, "garbage at line 8");
}

#[test]
fn a_swap_of_neighbours_is_located() {
    let f = fixture();
    for i in 0..N - 1 {
        let line = i as u64 + 1;
        let mut t = f.lines.clone();
        t.swap(i, i + 1);
        expect(&f, &t, ProblemKind::Reordered, line, Some(line + 1), &format!("swap of lines {line} and {}", line + 1));
    }
}

#[test]
fn truncation_is_detected_with_a_checkpoint() {
    let f = fixture();
    for k in 1..=N {
        let t = &f.lines[..N - k];
        write_lines(&f.path, t);
        let r = verify_ok(&f.path, None);
        assert_eq!(r.records, (N - k) as u64);
        let p = verify_problem(&f.path, Some(&f.cp));
        let last = (N - k) as u64;
        assert_eq!(p.kind, ProblemKind::Truncated, "k={k}: {p}");
        assert_eq!(p.line, last, "k={k}: {p}");
        assert_eq!(p.seq, (last > 0).then_some(last), "k={k}: {p}");
    }
    // A checkpoint older than the head is fine: the log grew since.
    write_lines(&f.path, &f.lines);
    let mut old = f.cp.clone();
    old.seq = 20;
    old.hash = stated_hash(&f.lines[19]);
    assert_eq!(verify_ok(&f.path, Some(&old)).records, N as u64);
}

#[test]
fn a_consistent_rewrite_is_detected_only_with_a_checkpoint() {
    let f = fixture();
    for i in 0..N {
        let mut t = f.lines.clone();
        t[i] = edit_ts(&t[i]);
        rechain(&mut t, i);
        write_lines(&f.path, &t);
        let r = verify_ok(&f.path, None);
        assert_eq!(r.records, N as u64);
        assert_ne!(r.head.unwrap().1, f.cp.hash);
        let p = verify_problem(&f.path, Some(&f.cp));
        assert_eq!(
            (p.kind, p.line, p.seq),
            (ProblemKind::Rewritten, N as u64, Some(N as u64)),
            "rewrite from {i}: {p}"
        );
    }
    // Rewriting without any edit reproduces the log byte for byte.
    let mut t = f.lines.clone();
    rechain(&mut t, 0);
    assert_eq!(t, f.lines);
}
