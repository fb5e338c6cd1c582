//! Several writers on one log — separate opens in one process (separate
//! lock descriptions), and separate processes — keep one gap-free chain.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use mcpsec_audit::{AuditLog, Options, Receipt};

use crate::common::*;

const CHILD_LOG: &str = "MCPSEC_AUDIT_TEST_CHILD_LOG";
const CHILD_OUT: &str = "MCPSEC_AUDIT_TEST_CHILD_OUT";
const CHILD_RECORDS: usize = 300;

/// Appends `n` records from `threads` threads; receipts are awaited in
/// groups, so batches mix records of several threads.
fn hammer(log: &AuditLog, threads: usize, n: usize, tag: &str) -> Vec<u64> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut seqs = Vec::with_capacity(n);
                    let mut pending = Vec::new();
                    for i in 0..n {
                        let mut r = sample(i);
                        r.session = Some(format!("{tag}-{t}"));
                        pending.push(log.append(r));
                        if pending.len() == 1 + i % 16 || i + 1 == n {
                            for p in pending.drain(..) {
                                let Receipt { seq } = p.wait().unwrap();
                                seqs.push(seq);
                            }
                        }
                    }
                    seqs
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn check_log(path: &Path, total: u64, receipts: &[u64]) {
    let r = verify_ok(path, None);
    assert_eq!(r.records, total);
    assert_eq!(r.head.as_ref().unwrap().0, total);
    let seqs: Vec<u64> = lines(path).iter().map(|l| seq_of(l)).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "seqs are gap-free and in file order");
    let unique: BTreeSet<u64> = receipts.iter().copied().collect();
    assert_eq!(unique.len(), receipts.len(), "every receipt seq is unique");
    assert_eq!(receipts.len() as u64, total);
    assert_eq!(unique.iter().next_back(), Some(&total));
}

#[test]
fn two_opens_in_one_process_share_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let a = AuditLog::open(&path, Options::default()).unwrap();
    let b = AuditLog::open(&path, Options::default()).unwrap();
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| hammer(&a, 4, 500, "a"));
        let hb = s.spawn(|| hammer(&b, 4, 500, "b"));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    a.close();
    b.close();
    let receipts: Vec<u64> = ra.into_iter().chain(rb).collect();
    check_log(&path, 4000, &receipts);
    // Each record is where its receipt says it is.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("\"session\":\"a-").count(), 2000);
    assert_eq!(text.matches("\"session\":\"b-").count(), 2000);
}

/// Several processes append to one log: this one and two children.
///
/// A child is this same test binary running this same test with
/// `CHILD_LOG` and `CHILD_OUT` set: it appends its records, writes their
/// seqs to `CHILD_OUT` and returns. The parent checks what each child wrote
/// (a child that did not run the writer leaves no seqs, and fails it).
#[test]
fn processes_share_the_chain() {
    if let (Some(log), Some(out)) = (std::env::var_os(CHILD_LOG), std::env::var_os(CHILD_OUT)) {
        child_writer(Path::new(&log), Path::new(&out));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|i| {
            let out = dir.path().join(format!("child-{i}.seqs"));
            let child = Command::new(&exe)
                .args(["--exact", "concurrency::processes_share_the_chain", "--test-threads=1", "--quiet"])
                .env(CHILD_LOG, &path)
                .env(CHILD_OUT, &out)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    let log = AuditLog::open(&path, Options::default()).unwrap();
    let mut receipts = hammer(&log, 2, 150, "parent");
    log.close();
    for (mut child, out) in children {
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(&out)
            .unwrap_or_else(|e| panic!("the child wrote no {} ({e}): did it run the writer?", out.display()));
        let seqs: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(seqs.len(), CHILD_RECORDS);
        receipts.extend(seqs);
    }
    check_log(&path, 300 + 2 * CHILD_RECORDS as u64, &receipts);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("\"session\":\"child-").count(), 2 * CHILD_RECORDS, "every child record is in the log");
}

/// A child's part of [`processes_share_the_chain`].
fn child_writer(log: &Path, out: &Path) {
    let log = AuditLog::open(log, Options::default()).unwrap();
    let seqs = hammer(&log, 2, CHILD_RECORDS / 2, "child");
    log.close();
    let text: Vec<String> = seqs.iter().map(u64::to_string).collect();
    std::fs::write(out, text.join("\n")).unwrap();
}
