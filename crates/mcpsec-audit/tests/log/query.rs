//! `audit grep` and `audit tail`: structured filters, patterns, counting
//! like `grep -c`, the last records.

use mcpsec_audit::query::{self, Filter};
use mcpsec_audit::{Entry, Options};
use regex::bytes::Regex;

use crate::common::*;

const N: usize = 60;

fn fixture() -> (tempfile::TempDir, std::path::PathBuf, Vec<Entry>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    generate(&path, N, Options::default());
    let raw: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(str::to_owned).collect();
    let entries = raw.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    (dir, path, entries, raw)
}

fn seqs(path: &std::path::Path, filter: &Filter) -> Vec<u64> {
    let mut v = Vec::new();
    let seen = query::scan(path, filter, false, |line, e| {
        let e = e.expect("only records of the chain");
        assert!(line.contains(&format!("\"seq\":{},", e.seq)));
        v.push(e.seq);
    })
    .unwrap();
    assert_eq!(seen.records, v.len() as u64);
    assert_eq!(seen.left_out, 0);
    assert_eq!(query::count(path, filter).unwrap(), seen, "count agrees with scan");
    v
}

fn expected(entries: &[Entry], keep: impl Fn(&Entry) -> bool) -> Vec<u64> {
    let v: Vec<u64> = entries.iter().filter(|e| keep(e)).map(|e| e.seq).collect();
    assert!(!v.is_empty() && v.len() < entries.len(), "a filter that selects some");
    v
}

#[test]
fn structured_filters() {
    let (_dir, path, entries, _) = fixture();
    assert_eq!(seqs(&path, &Filter::default()), (1..=N as u64).collect::<Vec<_>>());
    let f = Filter { tool: Some("write_file".into()), ..Filter::default() };
    assert_eq!(seqs(&path, &f), expected(&entries, |e| e.tool.as_deref() == Some("write_file")));
    let f = Filter { user: Some("bob".into()), ..Filter::default() };
    assert_eq!(seqs(&path, &f), expected(&entries, |e| e.user.as_deref() == Some("bob")));
    let f = Filter { session: Some("s1".into()), ..Filter::default() };
    assert_eq!(seqs(&path, &f), expected(&entries, |e| e.session.as_deref() == Some("s1")));
    let f = Filter { outcome: Some("denied".into()), ..Filter::default() };
    assert_eq!(seqs(&path, &f), expected(&entries, |e| e.outcome.as_deref() == Some("denied")));
    let f = Filter { event: Some("grant".into()), ..Filter::default() };
    assert_eq!(seqs(&path, &f), expected(&entries, |e| e.event == "grant"));
    // Combined: every set field must match.
    let f = Filter { user: Some("alice".into()), event: Some("tool_call".into()), ..Filter::default() };
    assert_eq!(seqs(&path, &f), expected(&entries, |e| e.user.as_deref() == Some("alice") && e.event == "tool_call"));
    let f = Filter { tool: Some("no_such_tool".into()), ..Filter::default() };
    assert!(seqs(&path, &f).is_empty());
}

#[test]
fn time_filters() {
    let (_dir, path, entries, _) = fixture();
    let since = entries[9].ts.clone();
    let until = entries[29].ts.clone();
    let f = Filter { since: Some(since.clone()), ..Filter::default() };
    assert_eq!(seqs(&path, &f), entries.iter().filter(|e| e.ts >= since).map(|e| e.seq).collect::<Vec<_>>());
    assert!(seqs(&path, &f).contains(&10));
    let f = Filter { until: Some(until.clone()), ..Filter::default() };
    let got = seqs(&path, &f);
    assert_eq!(got, entries.iter().filter(|e| e.ts < until).map(|e| e.seq).collect::<Vec<_>>());
    assert!(!got.contains(&30) && got.contains(&1));
    let f = Filter { since: Some(since.clone()), until: Some(until.clone()), ..Filter::default() };
    let got = seqs(&path, &f);
    assert_eq!(got, entries.iter().filter(|e| e.ts >= since && e.ts < until).map(|e| e.seq).collect::<Vec<_>>());
    let f = Filter { since: Some("2999-01-01T00:00:00.000000Z".into()), ..Filter::default() };
    assert!(seqs(&path, &f).is_empty());
}

#[test]
fn patterns_count_like_grep() {
    let (_dir, path, entries, raw) = fixture();
    let lines_matching = |re: &Regex| raw.iter().filter(|l| re.is_match(l.as_bytes())).count() as u64;
    for pattern in [
        "read_text_file",
        r#""user":"(alice|carol)""#,
        r#"^\{"v":1,"seq":1\d?,"#,
        r#""hash":"[0-9a-f]{64}"\}$"#,
        r"(?i)SERVER_START",
        r#""session":"s0"\s*,"#,
        "no-such-text",
    ] {
        let re = Regex::new(pattern).unwrap();
        let f = Filter { pattern: Some(re.clone()), ..Filter::default() };
        let got = seqs(&path, &f);
        assert_eq!(got.len() as u64, lines_matching(&re), "{pattern}");
        // With a structured filter too (the parsing path).
        let f = Filter { pattern: Some(re.clone()), user: Some("alice".into()), ..Filter::default() };
        let with_user = seqs(&path, &f);
        let want: Vec<u64> = entries
            .iter()
            .zip(&raw)
            .filter(|(e, l)| re.is_match(l.as_bytes()) && e.user.as_deref() == Some("alice"))
            .map(|(e, _)| e.seq)
            .collect();
        assert_eq!(with_user, want, "{pattern}");
    }
    // `grep -c` of a literal agrees, when grep is installed.
    if let Ok(out) = std::process::Command::new("grep").args(["-c", "-F", "write_file"]).arg(&path).output() {
        let grep: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let f = Filter { pattern: Some(Regex::new("write_file").unwrap()), ..Filter::default() };
        assert_eq!(query::count(&path, &f).unwrap().records, grep);
        assert!(grep > 0);
    }
}

#[test]
fn tail_returns_the_last_records_oldest_first() {
    let (_dir, path, _, raw) = fixture();
    let tail = |n| query::tail(&path, n, false).unwrap().lines.into_iter().map(|(l, _)| l).collect::<Vec<_>>();
    assert_eq!(tail(5), raw[N - 5..].to_vec());
    assert_eq!(tail(1), raw[N - 1..].to_vec());
    assert!(tail(0).is_empty());
    assert_eq!(tail(N + 10), raw);
    let e: Entry = serde_json::from_str(&raw[N - 1]).unwrap();
    let human = e.human();
    assert!(human.contains(&format!(" {} ", e.seq)) && human.starts_with(&e.ts[..19]), "{human}");
}

#[test]
fn an_empty_or_missing_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    assert!(query::files(&path).is_empty());
    assert_eq!(query::count(&path, &Filter::default()).unwrap().records, 0);
    assert!(query::tail(&path, 3, false).unwrap().lines.is_empty());
    let r = verify_ok(&path, None);
    assert_eq!((r.records, r.head), (0, None));
}
