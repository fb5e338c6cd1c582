//! Reading the log back: `audit grep` and `audit tail`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use regex::bytes::Regex;

use crate::log::rotated_files;
use crate::record::{Entry, GENESIS, hash_matches, hex, parse_links};

/// Follows the hash chain line by line, as a reader goes through the log
/// from its first file, so that readers show only records that are part of
/// it: a line is a member when its `seq` is the next one, its `prev` is the
/// hash of the last member, and its content matches its `hash`. Anything
/// else — a line inserted, a record edited in place, garbage, a torn write
/// a writer recovered — is not, and is counted in [`Chain::left_out`].
///
/// The links are checked on every line (no hashing); the hash only on the
/// lines a reader is about to show ([`Chain::admit`]), so a selective grep
/// stays about as fast as `grep`. An edited record keeps its place in the
/// links (the records after it still chain) but is never shown as a member.
#[derive(Debug, Clone)]
pub struct Chain {
    next_seq: u64,
    last_hash_hex: String,
    left_out: u64,
}

/// What a line is to the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A record of the chain.
    Member,
    /// Anything else (never shown unless asked, and then marked).
    NotInChain,
    /// An empty line (a recovering writer's, or none at all).
    Empty,
}

impl Default for Chain {
    fn default() -> Self {
        Chain::new()
    }
}

impl Chain {
    /// A chain before its first record.
    pub fn new() -> Chain {
        Chain { next_seq: 1, last_hash_hex: hex(&GENESIS), left_out: 0 }
    }

    /// Checks `line`'s links and moves on when they hold. `None` for an
    /// empty line; `Some(false)` for a line not linked into the chain.
    fn link(&mut self, line: &[u8]) -> Option<bool> {
        if line.is_empty() {
            return None;
        }
        let linked = match parse_links(line) {
            Some(l) if l.seq == self.next_seq && l.prev_hex == self.last_hash_hex.as_bytes() => {
                self.next_seq += 1;
                self.last_hash_hex = String::from_utf8_lossy(l.hash_hex).into_owned();
                true
            }
            _ => false,
        };
        if !linked {
            self.left_out += 1;
        }
        Some(linked)
    }

    /// Where `line`, the next line of the log, stands (links and hash).
    pub fn admit(&mut self, line: &[u8]) -> Place {
        match self.link(line) {
            None => Place::Empty,
            Some(true) => self.hash_checked(line),
            Some(false) => Place::NotInChain,
        }
    }

    /// For a linked line about to be shown: a member only if its content
    /// matches its hash.
    fn hash_checked(&mut self, line: &[u8]) -> Place {
        if hash_matches(line) {
            Place::Member
        } else {
            self.left_out += 1;
            Place::NotInChain
        }
    }

    /// Whether `line` is a record line numbered before the chain's next
    /// record: one a reader following the log has already been past.
    pub fn is_behind(&self, line: &[u8]) -> bool {
        parse_links(line).is_some_and(|l| l.seq < self.next_seq)
    }

    /// How many non-empty lines seen so far were not members (only lines
    /// that were hash-checked count for an edited record).
    pub fn left_out(&self) -> u64 {
        self.left_out
    }
}

/// What a reader saw besides the records it handed out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Records handed out.
    pub records: u64,
    /// Non-empty lines that are not part of the chain (see [`Chain`]).
    pub left_out: u64,
}

/// Which records `grep` keeps. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A regular expression matched against the raw JSON line.
    pub pattern: Option<Regex>,
    /// Exact tool name.
    pub tool: Option<String>,
    /// Exact user.
    pub user: Option<String>,
    /// Exact session.
    pub session: Option<String>,
    /// Exact outcome (`ok`, `denied`, …).
    pub outcome: Option<String>,
    /// Exact event (`tool_call`, `grant`, …).
    pub event: Option<String>,
    /// Records at or after this RFC 3339 UTC time (`…Z`, as the log writes).
    pub since: Option<String>,
    /// Records before this RFC 3339 UTC time.
    pub until: Option<String>,
}

impl Filter {
    fn structured(&self) -> bool {
        self.tool.is_some()
            || self.user.is_some()
            || self.session.is_some()
            || self.outcome.is_some()
            || self.event.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }

    fn keeps(&self, e: &Entry) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        eq(&self.tool, e.tool.as_deref())
            && eq(&self.user, e.user.as_deref())
            && eq(&self.session, e.session.as_deref())
            && eq(&self.outcome, e.outcome.as_deref())
            && eq(&self.event, Some(&e.event))
            && self.since.as_deref().is_none_or(|s| e.ts.as_str() >= s)
            && self.until.as_deref().is_none_or(|u| e.ts.as_str() < u)
    }
}

/// The log's files, oldest first: rotated ones, then the current one.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut files = rotated_files(path);
    if path.exists() {
        files.push(path.to_owned());
    }
    files
}

/// Calls `each` with every record of the chain (raw line and parsed
/// entry) that the filter keeps, oldest first. Lines that are not part of
/// the chain (see [`Chain`]) are skipped and counted, or, with `unchained`,
/// handed to it as well with `None` for the entry when the filter's pattern
/// matches them (they are not records of the log: never parse them as one).
pub fn scan(
    path: &Path,
    filter: &Filter,
    unchained: bool,
    mut each: impl FnMut(&str, Option<&Entry>),
) -> std::io::Result<Seen> {
    let mut chain = Chain::new();
    let mut n = 0;
    each_line(path, |line| {
        let Some(linked) = chain.link(line) else { return };
        let matches = filter.pattern.as_ref().is_none_or(|re| re.is_match(line));
        if linked && matches && chain.hash_checked(line) == Place::Member {
            let Ok(text) = std::str::from_utf8(line) else { return };
            let Ok(entry) = serde_json::from_str::<Entry>(text) else { return };
            if filter.keeps(&entry) {
                n += 1;
                each(text, Some(&entry));
            }
        } else if unchained && matches && !linked {
            each(&String::from_utf8_lossy(line), None);
        }
    })?;
    Ok(Seen { records: n, left_out: chain.left_out() })
}

/// Calls `f` with every line of the log's files, oldest first, without its
/// newline.
fn each_line(path: &Path, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for file in files(path) {
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&file)?);
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            f(buf.strip_suffix(b"\n").unwrap_or(&buf));
        }
    }
    Ok(())
}

/// Counts the records of the chain the filter keeps. Without structured
/// filters this never parses JSON: it follows the chain's links line by
/// line, searches whole buffers for the pattern, and hash-checks only the
/// lines that hold a match, like `grep -c` on the chain.
pub fn count(path: &Path, filter: &Filter) -> std::io::Result<Seen> {
    if filter.structured() {
        return scan(path, filter, false, |_, _| {});
    }
    // `^` and `$` must match at every line, as they do when `scan` matches
    // one line at a time: search the buffers in multi-line mode. `\A` and
    // `\z` (whole-input anchors) cannot be searched that way.
    let pattern = match &filter.pattern {
        None => None,
        Some(re) if re.as_str().contains("\\A") || re.as_str().contains("\\z") => {
            return scan(path, filter, false, |_, _| {});
        }
        Some(re) => match Regex::new(&format!("(?m:{})", re.as_str())) {
            Ok(multi) => Some((multi, re)),
            Err(_) => return scan(path, filter, false, |_, _| {}),
        },
    };
    let mut chain = Chain::new();
    let mut linked = Vec::new();
    let mut n = 0u64;
    for file in files(path) {
        let mut f = File::open(&file)?;
        let mut buf = vec![0u8; 4 << 20];
        let mut carry = 0usize;
        loop {
            let read = f.read(&mut buf[carry..])?;
            let len = carry + read;
            if len == 0 {
                break;
            }
            // Only complete lines are searched; the rest is carried over.
            let end = if read == 0 { len } else { buf[..len].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
            if end == 0 && read != 0 {
                if len == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                }
                carry = len;
                continue;
            }
            n += count_lines(&buf[..end], pattern.as_ref().map(|(m, re)| (m, *re)), &mut chain, &mut linked);
            buf.copy_within(end..len, 0);
            carry = len - end;
            if read == 0 {
                break;
            }
        }
    }
    Ok(Seen { records: n, left_out: chain.left_out() })
}

/// Counts the chain's records among the complete lines of `chunk` that hold
/// a match of the pattern (every record without one). `linked` is scratch
/// space: the start of each line linked into the chain.
fn count_lines(chunk: &[u8], pattern: Option<(&Regex, &Regex)>, chain: &mut Chain, linked: &mut Vec<usize>) -> u64 {
    linked.clear();
    let mut start = 0;
    for line in chunk.split(|&b| b == b'\n') {
        if chain.link(line) == Some(true) {
            linked.push(start);
        }
        start += line.len() + 1;
    }
    let line_at = |start: usize| {
        let end = chunk[start..].iter().position(|&b| b == b'\n').map_or(chunk.len(), |i| start + i);
        &chunk[start..end]
    };
    let Some((multi, re)) = pattern else {
        return linked.iter().filter(|&&s| chain.hash_checked(line_at(s)) == Place::Member).count() as u64;
    };
    let mut n = 0;
    let mut at = 0;
    while at < chunk.len()
        && let Some(m) = multi.find_at(chunk, at)
    {
        let line_start = chunk[..m.start()].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = line_at(line_start);
        let line_end = line_start + line.len();
        // A match that runs into the next line (`\s` matches a newline) is
        // not a match of this line: check the line on its own, as `scan` does.
        if linked.binary_search(&line_start).is_ok()
            && (m.end() <= line_end || re.is_match(line))
            && chain.hash_checked(line) == Place::Member
        {
            n += 1;
        }
        // Skip to the next line: one count per line, like grep -c.
        at = line_end + 1;
    }
    n
}

/// What [`tail`] found.
#[derive(Debug, Clone)]
pub struct Tail {
    /// The raw lines, oldest first, each with whether it is a record of the
    /// chain.
    pub lines: Vec<(String, bool)>,
    /// The chain as it stands after them, for a reader that follows the log on.
    pub chain: Chain,
    /// The records and the lines left out, over the whole log.
    pub seen: Seen,
}

/// The last `n` records of the chain. With `unchained`, the lines among
/// them that are not part of the chain come too.
pub fn tail(path: &Path, n: usize, unchained: bool) -> std::io::Result<Tail> {
    let mut last = std::collections::VecDeque::with_capacity(n + 1);
    let mut chain = Chain::new();
    let mut records = 0;
    each_line(path, |line| match chain.link(line) {
        Some(linked) if linked || unchained => {
            last.push_back((line.to_vec(), linked));
            if last.len() > n {
                last.pop_front();
            }
        }
        _ => {}
    })?;
    // Only the lines shown are hash-checked.
    let mut shown = Vec::with_capacity(last.len());
    for (line, linked) in last {
        let member = linked && chain.hash_checked(&line) == Place::Member;
        if member {
            records += 1;
        }
        if member || unchained {
            shown.push((String::from_utf8_lossy(&line).into_owned(), member));
        }
    }
    let seen = Seen { records, left_out: chain.left_out() };
    Ok(Tail { lines: shown, chain, seen })
}

impl Entry {
    /// One human-readable line: time, user, tool (or event), outcome, and
    /// the key argument. Every field is shown through
    /// [`mcpsec_core::display::escape`]: a record holds what a model chose,
    /// and its terminal escapes, line breaks or bidirectional controls must
    /// not act on the terminal of whoever reads the log.
    pub fn human(&self) -> String {
        let ts = self.ts.get(..19).map_or(self.ts.as_str(), |s| s);
        let what = self.tool.as_deref().unwrap_or(&self.event);
        let key = self
            .args
            .as_ref()
            .and_then(|a| ["path", "source", "command", "paths"].iter().find_map(|k| a.get(*k)))
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        let mut line = format!(
            "{ts}Z  {:>6}  {:<12} {:<24} {:<12} {key}",
            self.seq,
            self.user.as_deref().unwrap_or("-"),
            what,
            self.outcome.as_deref().unwrap_or("-")
        );
        if let Some(reason) = &self.reason {
            line.push_str("  — ");
            line.push_str(reason);
        }
        mcpsec_core::display::escape(line.trim_end()).into_owned()
    }
}
