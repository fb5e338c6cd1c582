//! Size-based rotation: the chain continues across files, verify follows
//! it, queries read every file in order, and tampering is located in the
//! file where it is.

use mcpsec_audit::query::{self, Filter};
use mcpsec_audit::{AuditLog, Options, ProblemKind};

use crate::common::*;

const N: u64 = 120;

fn rotating() -> Options {
    Options { rotate_bytes: 4096, ..Options::default() }
}

fn all_seqs(path: &std::path::Path) -> Vec<u64> {
    let mut v = Vec::new();
    query::scan(path, &Filter::default(), false, |_, e| v.push(e.unwrap().seq)).unwrap();
    v
}

#[test]
fn the_chain_continues_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, N as usize, rotating());
    let files = query::files(&path);
    assert!(files.len() >= 4, "{files:?}");
    for (i, f) in files[..files.len() - 1].iter().enumerate() {
        assert_eq!(f.file_name().unwrap().to_str().unwrap(), format!("audit.log.{:06}", i + 1));
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size > 4096 && size < 4096 + 1024, "{} is {size} bytes", f.display());
    }
    assert_eq!(files.last().unwrap(), &path);

    let r = verify_ok(&path, None);
    assert_eq!(r.records, N);
    assert_eq!(r.files, files);
    assert_eq!(r.head.as_ref().unwrap().0, N);
    verify_ok(&path, Some(&checkpoint(&path)));

    // The first record of each file links to the last of the one before.
    for pair in files.windows(2) {
        let before = lines(&pair[0]);
        let after = lines(&pair[1]);
        if let (Some(last), Some(first)) = (before.last(), after.first()) {
            assert_eq!(seq_of(first), seq_of(last) + 1);
            let link = format!("\"prev\":\"{}\"", stated_hash(last));
            assert!(find(first, link.as_bytes()).is_some());
        }
    }

    // Queries cover every file, oldest first.
    assert_eq!(all_seqs(&path), (1..=N).collect::<Vec<_>>());
    assert_eq!(query::count(&path, &Filter::default()).unwrap().records, N);
    let tool = Filter { tool: Some("write_file".into()), ..Filter::default() };
    let mut expected = 0;
    for f in &files {
        expected += lines(f).iter().filter(|l| find(l, b"\"tool\":\"write_file\"").is_some()).count() as u64;
    }
    assert_eq!(query::count(&path, &tool).unwrap().records, expected);
    // A tail longer than the current file reaches into the rotated ones.
    let current = lines(&path).len();
    let n = current + 5;
    let tail = query::tail(&path, n, false).unwrap().lines;
    let tail_seqs: Vec<u64> = tail.iter().map(|(l, _)| seq_of(l.as_bytes())).collect();
    assert_eq!(tail_seqs, ((N - n as u64 + 1)..=N).collect::<Vec<_>>());

    // A new writer continues the chain where it is.
    let log = AuditLog::open(&path, rotating()).unwrap();
    assert_eq!(log.append(sample(1)).wait().unwrap().seq, N + 1);
    log.close();
    assert_eq!(verify_ok(&path, None).records, N + 1);
}

#[test]
fn a_writer_continues_after_the_current_file_was_just_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    // Rotate after every record: the current file is always empty.
    let tiny = Options { rotate_bytes: 1, ..Options::default() };
    generate(&path, 5, tiny.clone());
    assert_eq!(query::files(&path).len(), 6);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    let log = AuditLog::open(&path, tiny).unwrap();
    assert_eq!(log.append(sample(0)).wait().unwrap().seq, 6);
    log.close();
    let r = verify_ok(&path, None);
    assert_eq!((r.records, r.files.len()), (6, 7));
}

#[test]
fn tampering_in_a_rotated_file_is_located_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, N as usize, rotating());
    let files = query::files(&path);
    let target = files[1].clone();
    let original = lines(&target);
    let line3 = seq_of(&original[2]);

    let mut t = original.clone();
    t[2] = edit_ts(&t[2]);
    write_lines(&target, &t);
    let p = verify_problem(&path, None);
    assert_eq!((p.file.clone(), p.kind, p.line, p.seq), (target.clone(), ProblemKind::Edited, 3, Some(line3)), "{p}");

    let mut t = original.clone();
    t.remove(2);
    write_lines(&target, &t);
    let p = verify_problem(&path, None);
    assert_eq!((p.file.clone(), p.kind, p.line, p.seq), (target.clone(), ProblemKind::Deleted, 3, Some(line3 + 1)));

    let mut t = original.clone();
    t.swap(2, 3);
    write_lines(&target, &t);
    let p = verify_problem(&path, None);
    assert_eq!((p.file.clone(), p.kind, p.line, p.seq), (target.clone(), ProblemKind::Reordered, 3, Some(line3 + 1)));

    // The last record of a rotated file, edited and rehashed: the first
    // record of the next file does not chain to it.
    let mut t = original.clone();
    let last = t.len() - 1;
    t[last] = rehash(&edit_ts(&t[last]));
    write_lines(&target, &t);
    let p = verify_problem(&path, None);
    let seq = seq_of(&original[last]);
    assert_eq!(
        (p.file.clone(), p.kind, p.line, p.seq),
        (target.clone(), ProblemKind::Edited, last as u64 + 1, Some(seq))
    );
    write_lines(&target, &original);
    verify_ok(&path, None);

    // A whole rotated file removed: the gap shows at the next file's start.
    std::fs::remove_file(&files[0]).unwrap();
    let first_of_second = seq_of(&original[0]);
    let p = verify_problem(&path, None);
    assert_eq!((p.file.clone(), p.kind, p.line, p.seq), (target, ProblemKind::Deleted, 1, Some(first_of_second)));
}
