//! Reading the log back: `audit grep` and `audit tail`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use regex::bytes::Regex;

use crate::log::rotated_files;
use crate::record::{Entry, HASH_SUFFIX_LEN};

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

/// Calls `each` with every record (raw line and parsed entry) that the
/// filter keeps, oldest first; returns how many. Lines that are not
/// records (a torn write) are skipped. With only a pattern and no
/// structured filter, lines are matched on the raw bytes and parsed only
/// when `each` needs them (see [`count`] for the fastest path).
pub fn scan(path: &Path, filter: &Filter, mut each: impl FnMut(&str, &Entry)) -> std::io::Result<u64> {
    let mut n = 0;
    let mut buf = Vec::new();
    for file in files(path) {
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&file)?);
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            if filter.pattern.as_ref().is_some_and(|re| !re.is_match(line)) {
                continue;
            }
            let Ok(text) = std::str::from_utf8(line) else { continue };
            let Ok(entry) = serde_json::from_str::<Entry>(text) else { continue };
            if filter.keeps(&entry) {
                n += 1;
                each(text, &entry);
            }
        }
    }
    Ok(n)
}

/// Counts the records the filter keeps. Without structured filters this
/// never parses JSON: it searches whole buffers for the pattern and counts
/// the lines that hold a match, like `grep -c`.
pub fn count(path: &Path, filter: &Filter) -> std::io::Result<u64> {
    if filter.structured() {
        return scan(path, filter, |_, _| {});
    }
    // `^` and `$` must match at every line, as they do when `scan` matches
    // one line at a time: search the buffers in multi-line mode. `\A` and
    // `\z` (whole-input anchors) cannot be searched that way.
    let pattern = match &filter.pattern {
        None => None,
        Some(re) if re.as_str().contains("\\A") || re.as_str().contains("\\z") => {
            return scan(path, filter, |_, _| {});
        }
        Some(re) => match Regex::new(&format!("(?m:{})", re.as_str())) {
            Ok(multi) => Some((multi, re)),
            Err(_) => return scan(path, filter, |_, _| {}),
        },
    };
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
            n += count_lines(&buf[..end], pattern.as_ref().map(|(m, re)| (m, *re)));
            buf.copy_within(end..len, 0);
            carry = len - end;
            if read == 0 {
                break;
            }
        }
    }
    Ok(n)
}

fn count_lines(chunk: &[u8], pattern: Option<(&Regex, &Regex)>) -> u64 {
    let Some((multi, re)) = pattern else {
        return chunk.split(|&b| b == b'\n').filter(|line| is_record(line)).count() as u64;
    };
    let mut n = 0;
    let mut at = 0;
    while at < chunk.len()
        && let Some(m) = multi.find_at(chunk, at)
    {
        let line_start = chunk[..m.start()].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line_end = chunk[m.start()..].iter().position(|&b| b == b'\n').map_or(chunk.len(), |i| m.start() + i);
        // A match that runs into the next line (`\s` matches a newline) is
        // not a match of this line: check the line on its own, as `scan` does.
        if is_record(&chunk[line_start..line_end]) && (m.end() <= line_end || re.is_match(&chunk[line_start..line_end]))
        {
            n += 1;
        }
        // Skip to the next line: one count per line, like grep -c.
        at = line_end + 1;
    }
    n
}

/// Whether a line is a whole record, told without a JSON parser: a torn
/// write, or the empty line a recovering writer left, is not one. Keeps
/// [`count`] equal to the number of records [`scan`] hands out.
fn is_record(line: &[u8]) -> bool {
    let n = line.len();
    line.starts_with(b"{\"v\":")
        && n >= HASH_SUFFIX_LEN
        && line[n - HASH_SUFFIX_LEN..].starts_with(b",\"hash\":\"")
        && line.ends_with(b"\"}")
}

/// The last `n` records' raw lines, oldest first.
pub fn tail(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let mut last = std::collections::VecDeque::with_capacity(n + 1);
    scan(path, &Filter::default(), |line, _| {
        last.push_back(line.to_owned());
        if last.len() > n {
            last.pop_front();
        }
    })?;
    Ok(last.into())
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
