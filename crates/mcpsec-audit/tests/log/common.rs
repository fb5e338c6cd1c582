//! Helpers: generating logs through `AuditLog`, and editing them the way an
//! attacker who knows the format would.

use std::path::{Path, PathBuf};

use mcpsec_audit::record::hex;
use mcpsec_audit::{AuditLog, Checkpoint, EventKind, Options, Outcome, Problem, Record, Report, VerifyError, verify};
use serde_json::json;
use sha2::{Digest, Sha256};

/// `,"hash":"` + 64 hex digits + `"}`.
pub const HASH_SUFFIX: usize = 75;

pub const USERS: [&str; 3] = ["alice", "bob", "carol"];
pub const TOOLS: [&str; 4] = ["read_text_file", "write_file", "list_directory", "move_file"];
pub const OUTCOMES: [Outcome; 6] =
    [Outcome::Ok, Outcome::Denied, Outcome::Error, Outcome::RateLimited, Outcome::Invalid, Outcome::Pending];

/// The `i`th record of a generated log: varied events, tools, users,
/// outcomes and arguments.
pub fn sample(i: usize) -> Record {
    let event = match i % 10 {
        0 => EventKind::ServerStart,
        7 => EventKind::Grant,
        8 => EventKind::Confirm,
        9 => EventKind::Revoke,
        _ => EventKind::ToolCall,
    };
    let mut r = Record::new(event);
    r.user = Some(USERS[i % USERS.len()].into());
    r.session = Some(format!("s{}", i % 2));
    if event == EventKind::ToolCall {
        r.tool = Some(TOOLS[i % TOOLS.len()].into());
        r.args = Some(json!({"path": format!("dir/file-{i}.txt"), "n": i, "nested": {"list": [i, "x"]}}));
        r.outcome = Some(OUTCOMES[i % OUTCOMES.len()]);
        r.capability = Some("read_files".into());
        r.duration_us = Some(i as u64 * 7);
        if i.is_multiple_of(3) {
            r.result = Some(format!("result of call {i} with some text"));
        }
        if r.outcome == Some(Outcome::Denied) {
            r.reason = Some(format!("path outside the root (call {i})"));
        }
    } else {
        r.token_id = Some(format!("tok{i}"));
        r.token_fp = Some(format!("fp{i:04x}"));
        r.details = Some(json!({"i": i}));
    }
    r
}

/// Writes `n` sample records to `path` through `AuditLog`.
pub fn generate(path: &Path, n: usize, options: Options) {
    let log = AuditLog::open(path, options).unwrap();
    for i in 0..n {
        let receipt = log.append(sample(i)).wait().unwrap();
        assert!(receipt.seq >= 1);
    }
    log.close();
}

/// The file's lines, without their newlines (a last line without one is
/// returned as is).
pub fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut out: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if bytes.ends_with(b"\n") {
        out.pop();
    }
    out
}

/// Writes `lines`, each with a newline.
pub fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    std::fs::write(path, bytes).unwrap();
}

/// The hash a line states.
pub fn stated_hash(line: &[u8]) -> String {
    String::from_utf8(line[line.len() - 66..line.len() - 2].to_vec()).unwrap()
}

/// Recomputes a line's own hash: sha256(line[..len-75] + "}").
pub fn rehash(line: &[u8]) -> Vec<u8> {
    let body = &line[..line.len() - HASH_SUFFIX];
    let mut h = Sha256::new();
    h.update(body);
    h.update(b"}");
    let hash: [u8; 32] = h.finalize().into();
    let mut out = body.to_vec();
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hex(&hash).as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// Sets a line's `prev` (without rehashing).
pub fn set_prev(line: &[u8], prev: &str) -> Vec<u8> {
    let end = line.len() - HASH_SUFFIX - 1;
    let start = end - 64;
    assert_eq!(&line[start - 9..start], b",\"prev\":\"");
    let mut out = line.to_vec();
    out[start..end].copy_from_slice(prev.as_bytes());
    out
}

/// Re-links and rehashes every line from `from` (0-based) on, so the chain
/// is consistent again: the whole-log rewrite an attacker can do.
pub fn rechain(lines: &mut [Vec<u8>], from: usize) {
    for i in from..lines.len() {
        let prev = if i == 0 { "0".repeat(64) } else { stated_hash(&lines[i - 1]) };
        lines[i] = rehash(&set_prev(&lines[i], &prev));
    }
}

/// Changes one digit of the record's timestamp (keeps the line well formed).
pub fn edit_ts(line: &[u8]) -> Vec<u8> {
    let at = find(line, b"\"ts\":\"").unwrap() + 6 + 15; // a minute digit
    let mut out = line.to_vec();
    out[at] = if out[at] == b'1' { b'2' } else { b'1' };
    out
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A record's seq, parsed from its line.
pub fn seq_of(line: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(line).unwrap();
    v["seq"].as_u64().unwrap()
}

pub fn verify_ok(path: &Path, cp: Option<&Checkpoint>) -> Report {
    match verify(path, cp, &mut |_, _| {}) {
        Ok(r) => r,
        Err(e) => panic!("verify {}: {e}", path.display()),
    }
}

pub fn verify_problem(path: &Path, cp: Option<&Checkpoint>) -> Problem {
    match verify(path, cp, &mut |_, _| {}) {
        Ok(r) => panic!("verify {} passed ({} records), a problem was expected", path.display(), r.records),
        Err(VerifyError::Problem(p)) => p,
        Err(e) => panic!("verify {}: {e}", path.display()),
    }
}

/// A checkpoint of the log's current head.
pub fn checkpoint(path: &Path) -> Checkpoint {
    let (seq, hash) = verify_ok(path, None).head.unwrap();
    Checkpoint { seq, hash, ts: "2026-01-01T00:00:00Z".into() }
}

pub fn log_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("audit.log")
}
