//! The record format (version 1): one JSON object per line.
//!
//! A line is the record's fields in a fixed order, then `prev` (the previous
//! record's hash) and `hash`, the SHA-256 of the line's own bytes *without*
//! the `hash` member, i.e. of `{"v":1,…,"prev":"…"}`:
//!
//! ```text
//! {"v":1,"seq":7,"ts":"2026-11-24T14:37:48.123456Z","event":"tool_call","tool":"read_text_file",
//!  "args":{"path":"notes.txt"},"capability":"read_files","user":"alice","session":"3f…",
//!  "outcome":"ok","result":"hello","duration_us":42,"prev":"9c…","hash":"e1…"}
//! ```
//!
//! Because the hash is over the bytes as written, verification needs no
//! canonical re-encoding: it hashes `line[..len - 75] + "}"`. The first
//! record of a log (genesis) has `prev` = 64 zeros; the first record of a
//! rotated-in file continues the chain of the file before it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The record format version written by this crate.
pub const VERSION: u32 = 1;
/// `prev` of the very first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A tool call (allowed, denied, failed, rate limited, invalid, or the
    /// intent written before a mutating call takes effect).
    ToolCall,
    /// A capability token was minted.
    Grant,
    /// A capability token was revoked.
    Revoke,
    /// A human confirmed or declined a call.
    Confirm,
    /// A server started.
    ServerStart,
    /// A server stopped.
    ServerStop,
    /// A request failed authentication.
    AuthFailure,
    /// A human approved a changed or new tool of an upstream server
    /// (`mcpsec pins approve`).
    PinApprove,
    /// A writer found an incomplete last line (a crash mid-write) and
    /// continued the chain from the last complete record.
    Recovered,
    /// A human restored what a destructive call removed (`mcpsec undo`).
    Undo,
    /// A human purged entries from the trash (`mcpsec trash purge`).
    TrashPurge,
    /// A user of the HTTP transport was added (`mcpsec users add`).
    UserAdd,
    /// A user of the HTTP transport was removed (`mcpsec users remove`).
    UserRemove,
    /// The gateway withheld what an upstream server offered because it
    /// exceeded a bound (too many tools, a definition too large, too many
    /// tools waiting for approval).
    UpstreamWithheld,
    /// An authenticated HTTP request was refused over a session: another
    /// user's session (404), or one session more than `[http] max_sessions`
    /// (429).
    SessionRefused,
    /// An authenticated HTTP request was refused by the transport's checks:
    /// a `Host` or `Origin` not allowed (403), or a body over
    /// `[http] max_body` (413).
    RequestRefused,
}

impl EventKind {
    /// The name used in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ToolCall => "tool_call",
            EventKind::Grant => "grant",
            EventKind::Revoke => "revoke",
            EventKind::Confirm => "confirm",
            EventKind::ServerStart => "server_start",
            EventKind::ServerStop => "server_stop",
            EventKind::AuthFailure => "auth_failure",
            EventKind::Recovered => "recovered",
            EventKind::Undo => "undo",
            EventKind::TrashPurge => "trash_purge",
            EventKind::PinApprove => "pin_approve",
            EventKind::UserAdd => "user_add",
            EventKind::UserRemove => "user_remove",
            EventKind::UpstreamWithheld => "upstream_withheld",
            EventKind::SessionRefused => "session_refused",
            EventKind::RequestRefused => "request_refused",
        }
    }
}

/// How an event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It ran and succeeded.
    Ok,
    /// The guard pipeline refused it.
    Denied,
    /// It ran and failed.
    Error,
    /// A rate limit refused it.
    RateLimited,
    /// Its arguments did not fit the tool's schema.
    Invalid,
    /// The intent of a mutating call, written before it takes effect.
    Pending,
}

impl Outcome {
    /// The name used in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
            Outcome::RateLimited => "rate_limited",
            Outcome::Invalid => "invalid",
            Outcome::Pending => "pending",
        }
    }
}

/// An event to record. `args`, `reason` and `result` are redacted (and
/// `result` cut to 200 characters) by the log before anything is written.
#[derive(Debug, Clone)]
pub struct Record {
    /// What happened.
    pub event: EventKind,
    /// The tool, for tool calls.
    pub tool: Option<String>,
    /// The arguments (redacted before writing).
    pub args: Option<Value>,
    /// The capability the call needed.
    pub capability: Option<String>,
    /// The capability token's id.
    pub token_id: Option<String>,
    /// A short fingerprint of the token (never the token).
    pub token_fp: Option<String>,
    /// The principal.
    pub user: Option<String>,
    /// The session (a server process or HTTP session).
    pub session: Option<String>,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// Why it was refused or failed (redacted before writing).
    pub reason: Option<String>,
    /// A summary of the result (redacted, cut to 200 characters).
    pub result: Option<String>,
    /// Time spent.
    pub duration_us: Option<u64>,
    /// For a result record: the `seq` of the intent record it completes.
    pub intent: Option<u64>,
    /// Anything else worth keeping (redacted before writing).
    pub details: Option<Value>,
}

impl Record {
    /// A record of `event` with no other field set.
    pub fn new(event: EventKind) -> Record {
        Record {
            event,
            tool: None,
            args: None,
            capability: None,
            token_id: None,
            token_fp: None,
            user: None,
            session: None,
            outcome: None,
            reason: None,
            result: None,
            duration_us: None,
            intent: None,
            details: None,
        }
    }
}

/// The fields in the order they are written.
#[derive(Serialize)]
pub(crate) struct Wire<'a> {
    pub v: u32,
    pub seq: u64,
    pub ts: &'a str,
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_fp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<&'a Value>,
    pub prev: &'a str,
}

/// A record read back from the log (for grep and tail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Format version.
    pub v: u32,
    /// Sequence number, from 1, gap-free across rotated files.
    pub seq: u64,
    /// RFC 3339 UTC time with microseconds.
    pub ts: String,
    /// What happened.
    pub event: String,
    /// The tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The redacted arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// The capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// The token's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The token's fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_fp: Option<String>,
    /// The principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Result summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Time spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// The intent record this one completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<u64>,
    /// Other details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// The previous record's hash.
    pub prev: String,
    /// This record's hash.
    pub hash: String,
}

/// `,"hash":"` + 64 hex digits + `"}`.
pub(crate) const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;
/// `,"prev":"` + 64 hex digits + `"`.
pub(crate) const PREV_LEN: usize = 9 + 64 + 1;

/// The chain-relevant facts of one line, read without a JSON parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub seq: u64,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
    /// Whether the stated hash is the hash of the line's body.
    pub hash_ok: bool,
    pub recovered: bool,
}

/// Extracts seq, prev and hash from a line (without its newline) and checks
/// the line's own hash. `None` when the line is not shaped like a record.
/// How every record line starts.
pub(crate) const HEAD: &[u8] = b"{\"v\":1,\"seq\":";

/// A record line's links, read without hashing: its seq and the hex of its
/// `prev` and `hash` fields as written.
pub(crate) struct Links<'a> {
    pub seq: u64,
    pub prev_hex: &'a [u8],
    pub hash_hex: &'a [u8],
}

/// The links of a line shaped like a record (`None` for anything else).
pub(crate) fn parse_links(line: &[u8]) -> Option<Links<'_>> {
    let rest = line.strip_prefix(HEAD)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 || rest.get(digits) != Some(&b',') {
        return None;
    }
    let seq: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let n = line.len();
    if n < HEAD.len() + HASH_SUFFIX_LEN + PREV_LEN {
        return None;
    }
    let suffix = &line[n - HASH_SUFFIX_LEN..];
    let prev_part = &line[n - HASH_SUFFIX_LEN - PREV_LEN..n - HASH_SUFFIX_LEN];
    if !suffix.starts_with(b",\"hash\":\"")
        || !suffix.ends_with(b"\"}")
        || !prev_part.starts_with(b",\"prev\":\"")
        || !prev_part.ends_with(b"\"")
    {
        return None;
    }
    Some(Links { seq, prev_hex: &prev_part[9..9 + 64], hash_hex: &suffix[9..9 + 64] })
}

/// Whether a record line's content matches its `hash` field.
pub(crate) fn hash_matches(line: &[u8]) -> bool {
    parse_links(line).and_then(|l| unhex(l.hash_hex)).is_some_and(|want| want == content_hash(line))
}

/// Whether `bytes`, found after a log's last newline, can be what a crash
/// left of a write: only a strict prefix of a record line can be. mcpsec
/// writes whole lines that start with [`HEAD`], so a torn write starts as
/// one does and is not a complete JSON value (a complete record without its
/// newline is told apart by its chain, not here). Anything else was put
/// there by something other than a writer of this log.
pub(crate) fn is_torn_write(bytes: &[u8]) -> bool {
    let starts_right = if bytes.len() < HEAD.len() { HEAD.starts_with(bytes) } else { bytes.starts_with(HEAD) };
    starts_right && !bytes.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err()
}

/// What a `recovered` record commits to: the torn bytes it closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TornBytes {
    /// Their length.
    pub len: u64,
    /// Their SHA-256.
    pub sha256: [u8; 32],
}

impl TornBytes {
    pub(crate) fn of(bytes: &[u8]) -> TornBytes {
        TornBytes { len: bytes.len() as u64, sha256: Sha256::digest(bytes).into() }
    }

    /// The `details.torn` of a `recovered` record.
    pub(crate) fn to_json(self, line: u64) -> Value {
        serde_json::json!({ "line": line, "bytes": self.len, "sha256": hex(&self.sha256) })
    }

    /// What the `recovered` record `line` commits to: `Some(None)` for one
    /// written by an mcpsec that did not commit (no `details.torn`), `None`
    /// when the line is not such a record.
    pub(crate) fn committed_by(line: &[u8]) -> Option<Option<TornBytes>> {
        let v: Value = serde_json::from_slice(line).ok()?;
        let torn = v.get("details").and_then(|d| d.get("torn"));
        let Some(torn) = torn else { return Some(None) };
        let len = torn.get("bytes").and_then(Value::as_u64)?;
        let sha256 = unhex(torn.get("sha256").and_then(Value::as_str)?.as_bytes())?;
        Some(Some(TornBytes { len, sha256 }))
    }
}

pub(crate) fn parse_meta(line: &[u8]) -> Option<Meta> {
    let links = parse_links(line)?;
    let (seq, prev, hash) = (links.seq, unhex(links.prev_hex)?, unhex(links.hash_hex)?);
    let recovered = memmem(line, b"\"event\":\"recovered\"");
    Some(Meta { seq, prev, hash, hash_ok: content_hash(line) == hash, recovered })
}

/// SHA-256 of a record line without its `hash` field: the line minus its
/// trailing `,"hash":"…"}`, closed with `}` again. The caller has checked
/// the line's shape ([`parse_links`]).
fn content_hash(line: &[u8]) -> [u8; 32] {
    let body = &line[..line.len().saturating_sub(HASH_SUFFIX_LEN)];
    let mut h = Sha256::new();
    h.update(body);
    h.update(b"}");
    h.finalize().into()
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub use mcpsec_core::units::hex;

/// Parses 64 lower-case hex digits.
pub fn unhex(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[i] = nib(pair[0])? << 4 | nib(pair[1])?;
    }
    Some(out)
}

/// Serializes `wire` and appends the line (with `hash` and a newline) to
/// `out`; returns the record's hash.
pub(crate) fn encode(wire: &Wire<'_>, out: &mut Vec<u8>) -> Result<[u8; 32], serde_json::Error> {
    let start = out.len();
    serde_json::to_writer(&mut *out, wire)?;
    let hash: [u8; 32] = Sha256::digest(&out[start..]).into();
    out.pop(); // the closing brace
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hex(&hash).as_bytes());
    out.extend_from_slice(b"\"}\n");
    Ok(hash)
}

/// Writes a synthetic, valid log of `n` tool-call records to `out` (for the
/// `cargo xtask bench` verify and grep runs). Every 97th record is a refusal
/// of `delete_file`, the rest reads of varied paths.
#[doc(hidden)]
pub fn write_synthetic(out: &mut impl std::io::Write, n: u64) -> std::io::Result<[u8; 32]> {
    let mut prev = GENESIS;
    let mut buf = Vec::with_capacity(1 << 20);
    for seq in 1..=n {
        let denied = seq % 97 == 0;
        let path = format!("src/module{}/file{}.rs", seq % 113, seq % 7919);
        let args = serde_json::json!({ "path": path });
        let prev_hex = hex(&prev);
        let ts = format!(
            "2026-11-24T{:02}:{:02}:{:02}.{:06}Z",
            (seq / 3_600_000) % 24,
            (seq / 60_000) % 60,
            (seq / 1000) % 60,
            seq % 1_000_000
        );
        let wire = Wire {
            v: VERSION,
            seq,
            ts: &ts,
            event: "tool_call",
            tool: Some(if denied { "delete_file" } else { "read_text_file" }),
            args: Some(&args),
            capability: Some(if denied { "delete_files" } else { "read_files" }),
            token_id: None,
            token_fp: None,
            user: Some(if seq % 3 == 0 { "bob" } else { "alice" }),
            session: Some("3f9c0a5e1b7d2c44"),
            outcome: Some(if denied { "denied" } else { "ok" }),
            reason: denied
                .then_some("refused: calling `delete_file`: the capability `delete_files` needs a capability token"),
            result: (!denied).then_some("fn main() { println!(\"hello\"); }"),
            duration_us: Some(40 + seq % 60),
            intent: None,
            details: None,
            prev: &prev_hex,
        };
        prev = encode(&wire, &mut buf).map_err(std::io::Error::other)?;
        if buf.len() > (1 << 20) - 4096 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    Ok(prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, prev: &[u8; 32]) -> (Vec<u8>, [u8; 32]) {
        let prev_hex = hex(prev);
        let wire = Wire {
            v: VERSION,
            seq,
            ts: "2026-11-24T14:37:48.000000Z",
            event: "tool_call",
            tool: Some("read_text_file"),
            args: None,
            capability: None,
            token_id: None,
            token_fp: None,
            user: Some("alice"),
            session: None,
            outcome: Some("ok"),
            reason: None,
            result: None,
            duration_us: Some(5),
            intent: None,
            details: None,
            prev: &prev_hex,
        };
        let mut out = Vec::new();
        let h = encode(&wire, &mut out).unwrap();
        (out, h)
    }

    #[test]
    fn encode_then_parse() {
        let (l, h) = line(7, &GENESIS);
        assert!(l.ends_with(b"\"}\n"));
        let text = std::str::from_utf8(&l).unwrap();
        let entry: Entry = serde_json::from_str(text).unwrap();
        assert_eq!(entry.seq, 7);
        assert_eq!(entry.hash, hex(&h));
        let m = parse_meta(&l[..l.len() - 1]).unwrap();
        assert_eq!((m.seq, m.prev, m.hash, m.hash_ok, m.recovered), (7, GENESIS, h, true, false));
    }

    #[test]
    fn any_edit_breaks_the_hash() {
        let (l, _) = line(1, &GENESIS);
        let l = &l[..l.len() - 1];
        let text = String::from_utf8(l.to_vec()).unwrap().replace("alice", "mallory");
        let m = parse_meta(text.as_bytes()).unwrap();
        assert!(!m.hash_ok);
        assert!(parse_meta(b"{\"v\":1,\"seq\":1}").is_none());
        assert!(parse_meta(b"garbage").is_none());
    }

    #[test]
    fn hex_round_trip() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex(hex(&bytes).as_bytes()), Some(bytes));
        assert_eq!(unhex(b"zz"), None);
    }
}
