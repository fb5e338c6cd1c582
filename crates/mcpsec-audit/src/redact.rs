//! Redaction: the rules that keep secrets out of the audit log.
//!
//! Two layers, both applied before anything is written:
//!
//! - [`redact_value`] walks a JSON value (tool arguments, a result). The
//!   whole value under a key name that names a secret (`password`,
//!   `db_pass`, `X-Api-Key`, `capability_token`, …) becomes `"[REDACTED]"`,
//!   whatever its type, and so does a random-looking string under one that
//!   may hold a secret (`encryption_key`); every other string, keys
//!   included, goes through [`redact_text`]. The key names cover gitleaks'
//!   `generic-api-key` keywords at least.
//! - [`redact_text`] finds credential formats inside free text (a curated
//!   rule set in the spirit of gitleaks, listed in [`RULES`]) and replaces
//!   each secret with `[REDACTED:<rule>]`. Where the context matters (a key
//!   name, `Authorization: Bearer`, `user:` in a URL) the context is kept
//!   and only the secret goes.
//!
//! Design: every rule is compiled once, and once more joined into one
//! alternation whose literal prefixes (`ghp_`, `AKIA`, `password`, …) drive
//! a SIMD prefilter, so clean text — nearly all text — costs a single fast
//! scan and no allocation (1–3 µs for 4 KiB of prose, code or JSON; text
//! dense with `key`, `token`, `session` and URLs takes a few times longer). Only
//! when that alternation matches do the rules run, each in turn. To keep
//! the prefilter effective, the text rules spell out case variants
//! (`password`, `Password`, `PASSWORD`) instead of matching case-blind;
//! [`redact_value`] compares key names case-blind.
//!
//! Redaction errs towards hiding: a false positive costs a little context in
//! the log, a false negative leaks a credential into a file kept for years.
//! It still leaves ordinary prose and source code alone: a value in a
//! `key = value` assignment must look random (letters and digits, or high
//! Shannon entropy), and a bare value that looks like code (an identifier, a
//! path `a::b`, a call) is not taken for a secret.
//!
//! ```
//! use mcpsec_audit::redact::{redact_text, redact_value};
//!
//! let url = "postgres://app:hunter2@db.internal/app";
//! assert_eq!(redact_text(url), "postgres://app:[REDACTED:url-credentials]@db.internal/app");
//!
//! let mut args = serde_json::json!({"path": "notes.txt", "db_password": 42});
//! redact_value(&mut args);
//! assert_eq!(args, serde_json::json!({"path": "notes.txt", "db_password": "[REDACTED]"}));
//! ```

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde_json::Value;

/// What the whole value under a sensitive key becomes.
const REDACTED: &str = "[REDACTED]";
/// How every replacement made by [`redact_text`] begins; text that already
/// starts so is never redacted again.
const MARKER: &str = "[REDACTED";

/// The rule names, for docs, in the order they are applied.
pub const RULES: &[&str] = &RULE_NAMES;

/// Replaces secrets inside a JSON value, in place.
///
/// The whole value under a key that names a secret becomes the string
/// `"[REDACTED]"`, whatever its type. A key names a secret when, lowercased
/// and with separators removed, it contains one of `password`, `passwd`,
/// `pwd`, `secret`, `token`, `apikey`, `accesskey`, `privatekey`,
/// `authorization`, `auth`, `cookie`, `session`, `credential`, `creds`,
/// `passphrase` or `bearer`, or when one of its words (split at
/// separators, case changes and digits: `db_pass`, `userPw`) is `pass` or
/// `pw` (not `bypass` or `upward`) — unless that occurrence is part of a
/// known harmless word (`author`, `authenticated`, `max_tokens`,
/// `tokenizer`, `token_id`, …).
///
/// A key that only *may* hold a secret, containing `key`, `api` or `access`
/// (gitleaks' generic keywords: `encryption_key`, `sshkey`, `api`), has its
/// value redacted when it is a string that looks random, as in text; not
/// `primary_key`, `keyboard`, `api_version` or `accessor`.
///
/// Every other string, object keys included, goes through [`redact_text`].
/// Nested objects and arrays are walked without recursion, so depth is no
/// concern.
pub fn redact_value(value: &mut Value) {
    let mut stack: Vec<&mut Value> = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) => {
                if let Cow::Owned(redacted) = redact_text(s) {
                    *s = redacted;
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => {
                redact_keys(map);
                for (key, value) in map.iter_mut() {
                    let redact = match key_sensitivity(key) {
                        Sensitivity::Secret => true,
                        Sensitivity::Maybe => value.as_str().is_some_and(|s| looks_random(s, Quoting::Quoted)),
                        Sensitivity::None => false,
                    };
                    if redact {
                        *value = Value::String(REDACTED.to_owned());
                    } else {
                        stack.push(value);
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// Returns the text with secrets replaced by `[REDACTED:<rule>]`.
///
/// `Cow::Borrowed` when nothing was redacted: clean text costs one scan by
/// the combined rules and allocates nothing.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let compiled = &*COMPILED;
    if !compiled.any.is_match(text) {
        return Cow::Borrowed(text);
    }
    let mut current = Cow::Borrowed(text);
    for (i, def) in DEFS.iter().enumerate() {
        if let Some(next) = apply(def, compiled.rule(i), &current) {
            current = Cow::Owned(next);
        }
    }
    current
}

/// Redacts `text` and cuts the result to `max_chars` characters (on a char
/// boundary), appending `…` when anything was cut.
///
/// Redaction runs over a window larger than `max_chars`, extended to the
/// next whitespace, so a secret straddling the cut is still recognised
/// whole (a truncated PEM block is redacted to the end of the window).
pub fn redact_and_truncate(text: &str, max_chars: usize) -> String {
    /// Characters redacted beyond the cut.
    const MARGIN_CHARS: usize = 256;
    /// How far the window may grow to reach whitespace; no credential is
    /// this long except a PEM block, which is redacted even when truncated.
    const MAX_EXTENSION_BYTES: usize = 16 * 1024;

    let mut end = byte_offset(text, max_chars.saturating_add(MARGIN_CHARS));
    if end < text.len() {
        let rest = &text[end..];
        let limit = floor_char_boundary(rest, MAX_EXTENSION_BYTES);
        end += rest[..limit].find(char::is_whitespace).unwrap_or(limit);
    }
    let redacted = redact_text(&text[..end]);
    let cut = byte_offset(&redacted, max_chars);
    let mut out = String::with_capacity(cut + '…'.len_utf8());
    out.push_str(&redacted[..cut]);
    if end < text.len() || cut < redacted.len() {
        out.push('…');
    }
    out
}

/// What a key name says about the value under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sensitivity {
    /// Nothing: the value is treated as text.
    None,
    /// It may hold a secret (`key`, `api`, `access`): a value that looks
    /// random is one.
    Maybe,
    /// It names a secret: the value is one, whatever it looks like.
    Secret,
}

/// Whether a key in `key = value` text names a secret or may hold one
/// (the value must look random either way).
fn is_sensitive_key(key: &str) -> bool {
    key_sensitivity(key) != Sensitivity::None
}

/// What a JSON key (or a key in `key = value` text) says about its value.
fn key_sensitivity(key: &str) -> Sensitivity {
    let norm: Vec<u8> = key.bytes().filter(u8::is_ascii_alphanumeric).map(|b| b.to_ascii_lowercase()).collect();
    if contains_word(&norm, SECRET_KEY_WORDS) || key_words(key).any(|w| SECRET_KEY_SEGMENTS.contains(&w.as_str())) {
        Sensitivity::Secret
    } else if contains_word(&norm, MAYBE_SECRET_KEY_WORDS) {
        Sensitivity::Maybe
    } else {
        Sensitivity::None
    }
}

/// Whether one of `words` occurs in the normalised key `norm` other than
/// inside one of [`HARMLESS_KEY_WORDS`].
fn contains_word(norm: &[u8], words: &[&str]) -> bool {
    words.iter().any(|word| {
        let word = word.as_bytes();
        (0..norm.len().saturating_sub(word.len() - 1))
            .filter(|&at| norm[at..].starts_with(word))
            .any(|at| !HARMLESS_KEY_WORDS.iter().any(|harmless| covers(norm, harmless.as_bytes(), at, word.len())))
    })
}

/// The words of a key, lowercased: split at every character that is not an
/// ASCII letter or digit, between a lowercase letter or a digit and an
/// uppercase one (`userPw`), before the last capital of a run followed by
/// a lowercase letter (`APIPass`), and between letters and digits (`pw2`).
fn key_words(key: &str) -> impl Iterator<Item = String> + '_ {
    let bytes = key.as_bytes();
    let mut words = Vec::new();
    let mut word = String::new();
    for (i, &b) in bytes.iter().enumerate() {
        if !b.is_ascii_alphanumeric() {
            words.push(std::mem::take(&mut word));
            continue;
        }
        let prev = i.checked_sub(1).map(|p| bytes[p]).filter(u8::is_ascii_alphanumeric);
        let next = bytes.get(i + 1).copied();
        let boundary = prev.is_some_and(|p| {
            (b.is_ascii_uppercase() && (p.is_ascii_lowercase() || p.is_ascii_digit()))
                || (b.is_ascii_uppercase() && p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()))
                || (b.is_ascii_digit() != p.is_ascii_digit())
        });
        if boundary {
            words.push(std::mem::take(&mut word));
        }
        word.push(char::from(b.to_ascii_lowercase()));
    }
    words.push(word);
    words.into_iter().filter(|w| !w.is_empty())
}

/// Key fragments, lowercased and without separators, that make a key name a
/// secret wherever they occur in it. With [`MAYBE_SECRET_KEY_WORDS`] they
/// cover gitleaks' `generic-api-key` keywords (`access`, `api`, `auth`,
/// `credential`, `creds`, `key`, `passwd`, `password`, `secret`, `token`).
const SECRET_KEY_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "auth",
    "cookie",
    "session",
    "credential",
    "creds",
    "passphrase",
    "bearer",
];

/// Words of a key ([`key_words`]) that make it name a secret: too short to
/// count inside other words (`bypass`, `compass`, `upward`).
const SECRET_KEY_SEGMENTS: &[&str] = &["pass", "pw"];

/// Key fragments that make a key *maybe* hold a secret: its value is
/// redacted when it looks random.
const MAYBE_SECRET_KEY_WORDS: &[&str] = &["key", "api", "access"];

/// Harmless words that contain a sensitive fragment: an occurrence inside
/// one of these does not count (`author`, `max_tokens`, `token_id`).
const HARMLESS_KEY_WORDS: &[&str] = &[
    "author",
    "authent",
    "tokeniz",
    "maxtoken",
    "mintoken",
    "numtoken",
    "inputtoken",
    "outputtoken",
    "totaltoken",
    "prompttoken",
    "completiontoken",
    "cachedtoken",
    "reasoningtoken",
    "tokencount",
    "tokenlimit",
    "tokenusage",
    "tokensused",
    "tokenid",
    "tokenfp",
    "tokenfingerprint",
    "tokentype",
    // `key`, `api` and `access` in words and names that hold no secret
    // (after gitleaks' allowlist for its generic rule).
    "primarykey",
    "foreignkey",
    "publickey",
    "pubkey",
    "bucketkey",
    "hotkey",
    "idxkey",
    "naturalkey",
    "schemakey",
    "sequencekey",
    "sortkey",
    "issuerkeyhash",
    "keyalias",
    "keyboard",
    "keycode",
    "keyframe",
    "keyid",
    "keylength",
    "keyname",
    "keypair",
    "keypress",
    "keyring",
    "keysize",
    "keystore",
    "keytab",
    "keyfile",
    "keyword",
    "keyup",
    "keydown",
    "keying",
    "monkey",
    "donkey",
    "turkey",
    "apiid",
    "apiname",
    "apiversion",
    "apiurl",
    "apiuri",
    "apiendpoint",
    "rapid",
    "capital",
    "accessor",
    "accessib",
    "accessid",
    "randomaccess",
];

/// Whether `word` occurs in `hay` at a position that covers
/// `hay[at..at + len]`.
fn covers(hay: &[u8], word: &[u8], at: usize, len: usize) -> bool {
    if word.len() < len {
        return false;
    }
    let first = (at + len).saturating_sub(word.len());
    (first..=at).any(|start| hay[start..].starts_with(word))
}

/// Replaces object keys that contain a secret (rare: a map keyed by token).
fn redact_keys(map: &mut serde_json::Map<String, Value>) {
    let renamed: Vec<(String, String)> = map
        .keys()
        .filter_map(|key| match redact_text(key) {
            Cow::Owned(new) => Some((key.clone(), new)),
            Cow::Borrowed(_) => None,
        })
        .collect();
    for (old, new) in renamed {
        if let Some(value) = map.remove(&old) {
            // Two secrets may redact to the same key: keep both values.
            let mut key = new.clone();
            let mut n = 2;
            while map.contains_key(&key) {
                key = format!("{new}#{n}");
                n += 1;
            }
            map.insert(key, value);
        }
    }
}

/// One redaction rule.
struct RuleDef {
    /// The name in `[REDACTED:<name>]`.
    name: &'static str,
    /// The pattern; its `secret` group (or, without one, the whole match)
    /// is what [`RuleDef::select`] usually returns.
    pattern: &'static str,
    /// Given the text and a match, the byte range to replace, or `None` to
    /// leave this match alone.
    select: fn(&str, &Captures<'_>) -> Option<Range<usize>>,
}

/// Sensitive key fragments, as a regex for `key = value` text, in lower,
/// Capitalised and UPPER case (see the module docs for why not `(?i)`).
/// Keep in step with [`SECRET_KEY_WORDS`], [`SECRET_KEY_SEGMENTS`] and
/// [`MAYBE_SECRET_KEY_WORDS`]: each must start with one of these, and the
/// whole key found around a fragment is checked against them.
macro_rules! key_words {
    () => {
        concat!(
            // `pass` and `pw` start `password`, `passwd`, `passphrase`, `pwd`;
            // `key`, `api`, `access` and `cred` the rest of the compound names.
            r"(?:[Pp]ass|PASS|[Pp]w|PW|[Ss]ecret|SECRET|[Tt]oken|TOKEN|[Kk]ey|KEY|[Aa]pi|API|[Aa]ccess|ACCESS",
            r"|[Aa]uth|AUTH|[Cc]ookie|COOKIE|[Ss]ession|SESSION|[Cc]red|CRED|[Bb]earer|BEARER)"
        )
    };
}

/// Between a key and its value: optional closing quote (maybe escaped), `=`,
/// `:` or `:=`, optional opening quote comes with the value.
macro_rules! assign {
    () => {
        r#"\\?["']?[ \t]*(?::=|[:=])[ \t]*"#
    };
}

/// The rules, in the order they are applied: whole formats first, then the
/// rules that depend on context, the generic assignment last.
const DEFS: [RuleDef; 15] = [
    RuleDef {
        name: "pem-private-key",
        pattern: r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\z)",
        select: whole,
    },
    RuleDef { name: "jwt", pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", select: whole },
    RuleDef { name: "mcpsec-token", pattern: r"(?-u:\b)mcps_(?P<body>[A-Za-z0-9_-]{20,})", select: random_body },
    RuleDef { name: "mcpsec-user-key", pattern: r"(?-u:\b)mcpsu_(?P<body>[A-Za-z0-9_-]{20,})", select: random_body },
    RuleDef {
        name: "github-token",
        pattern: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{82,})",
        select: whole,
    },
    RuleDef { name: "gitlab-token", pattern: r"(?-u:\b)glpat-[A-Za-z0-9_-]{20,}", select: whole },
    RuleDef { name: "slack-token", pattern: r"(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}", select: whole },
    RuleDef { name: "stripe-key", pattern: r"(?-u:\b)(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}", select: whole },
    RuleDef { name: "google-api-key", pattern: r"(?-u:\b)AIza[A-Za-z0-9_-]{35}", select: whole },
    RuleDef { name: "aws-access-key", pattern: r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)", select: whole },
    RuleDef {
        name: "aws-secret-key",
        pattern: concat!(
            r"(?-u:\b)(?:aws|AWS|Aws)[_-]?(?:[Ss]ecret|SECRET)[_-]?(?:(?:[Aa]ccess|ACCESS)[_-]?)?(?:[Kk]ey|KEY)",
            assign!(),
            r#"\\?["']?(?P<secret>[A-Za-z0-9/+=]{30,})"#
        ),
        select: secret,
    },
    RuleDef { name: "url-credentials", pattern: r#"://[^\s:/?#@"'<>]+:(?P<secret>[^\s/?#@"'<>]+)@"#, select: secret },
    RuleDef {
        name: "auth-header",
        pattern: concat!(
            r"(?-u:\b)(?:[Pp]roxy-|PROXY-)?(?:[Aa]uthorization|AUTHORIZATION)",
            assign!(),
            r#"\\?["']?(?:(?P<scheme>(?i:bearer|basic|token))[ \t]+)?(?P<secret>[A-Za-z0-9._~+/-]+=*)"#
        ),
        select: auth_header,
    },
    RuleDef {
        name: "bearer-token",
        pattern: r"(?-u:\b)(?:[Bb]earer|BEARER)[ \t]+(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)",
        select: bearer_token,
    },
    RuleDef {
        name: "secret-assignment",
        pattern: concat!(
            // The key's start is found by `secret_assignment`: a leading
            // `[A-Za-z0-9_.-]*` here would defeat the literal prefilter.
            r"(?P<key>",
            key_words!(),
            r"[A-Za-z0-9_.-]*)",
            assign!(),
            r#"(?:\\?"(?P<dq>[^"\r\n]{8,}?)(?:\\?"|\z)"#,
            r#"|\\?'(?P<sq>[^'\r\n]{8,}?)(?:\\?'|\z)"#,
            r#"|(?P<bare>[^\s"'`,;&|<>(){}\[\]\\:=][^\s"'`,;&|<>(){}\[\]\\]{7,}))"#
        ),
        select: secret_assignment,
    },
];

/// [`RULES`], derived from [`DEFS`] so the two cannot drift apart.
const RULE_NAMES: [&str; DEFS.len()] = {
    let mut names = [""; DEFS.len()];
    let mut i = 0;
    while i < DEFS.len() {
        names[i] = DEFS[i].name;
        i += 1;
    }
    names
};

/// The compiled rules: all of them as one alternation for the pre-check,
/// and one regex per rule.
/// The per-rule regexes are compiled on first need (most text never needs
/// them: the pre-check says it is clean), which keeps a process's first
/// record — a server's start — cheap.
struct Compiled {
    any: Regex,
    regexes: Vec<std::sync::OnceLock<Regex>>,
}

impl Compiled {
    fn rule(&self, i: usize) -> &Regex {
        // The patterns are constants covered by the tests below: failing to
        // compile one is a programming error caught by any test run.
        self.regexes[i].get_or_init(|| Regex::new(DEFS[i].pattern).expect("redaction pattern compiles"))
    }
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    let regexes = DEFS.iter().map(|_| std::sync::OnceLock::new()).collect();
    let any: Vec<String> = DEFS.iter().map(|def| format!("(?:{})", without_group_names(def.pattern))).collect();
    let any = Regex::new(&any.join("|")).expect("the alternation of the redaction patterns compiles");
    Compiled { any, regexes }
});

/// Compiles the pre-check now (on a thread of the caller's choosing), so
/// that the first record does not pay for it.
pub fn warm_up() {
    LazyLock::force(&COMPILED);
}

/// `pattern` with each named group `(?P<name>…)` made non-capturing, so
/// that patterns sharing group names can be joined into one alternation.
fn without_group_names(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(at) = rest.find("(?P<") {
        out.push_str(&rest[..at]);
        out.push_str("(?:");
        rest = &rest[at + "(?P<".len()..];
        rest = rest.find('>').map_or("", |end| &rest[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// Runs one rule over `text`; `None` when it replaced nothing.
fn apply(def: &RuleDef, regex: &Regex, text: &str) -> Option<String> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    for caps in regex.captures_iter(text) {
        let Some(span) = (def.select)(text, &caps) else { continue };
        if span.start < copied || text[span.clone()].starts_with(MARKER) {
            continue;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..span.start]);
        out.push_str(MARKER);
        out.push(':');
        out.push_str(def.name);
        out.push(']');
        copied = span.end;
    }
    let mut out = out?;
    out.push_str(&text[copied..]);
    Some(out)
}

/// The whole match.
fn whole(_: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    caps.get(0).map(|m| m.range())
}

/// The `secret` group.
fn secret(_: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    caps.name("secret").map(|m| m.range())
}

/// The whole match, if its `body` looks random rather than like an
/// identifier (`mcps_token_prefix_length`): a random body of 20 base62
/// characters lacks both digits and capitals with odds of about 1 in 10^7.
fn random_body(_: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let body = caps.name("body")?.as_str();
    if body.bytes().any(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) {
        caps.get(0).map(|m| m.range())
    } else {
        None
    }
}

/// `Authorization: <scheme> <credentials>`: with a scheme, any credentials
/// of four characters or more; without one, only what looks random.
fn auth_header(_: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let secret = caps.name("secret")?;
    let keep = if caps.name("scheme").is_some() {
        secret.as_str().len() >= 4
    } else {
        looks_random(secret.as_str(), Quoting::Bare)
    };
    keep.then(|| secret.range())
}

/// `Bearer <token>` without a header name.
fn bearer_token(_: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let secret = caps.name("secret")?;
    looks_random(secret.as_str(), Quoting::Quoted).then(|| secret.range())
}

/// `key = value`, `key: value`, `"key": "value"` with a sensitive key and a
/// value that looks random; the key stays, the value goes.
fn secret_assignment(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let key = caps.name("key")?;
    let is_key_byte = |b: u8| b.is_ascii_alphanumeric() || b"_.-".contains(&b);
    let start = text[..key.start()].bytes().rposition(|b| !is_key_byte(b)).map_or(0, |at| at + 1);
    if !is_sensitive_key(&text[start..key.end()]) {
        return None;
    }
    if let Some(value) = caps.name("dq").or_else(|| caps.name("sq")) {
        return looks_random(value.as_str(), Quoting::Quoted).then(|| value.range());
    }
    let value = caps.name("bare")?;
    // Source code, not a secret: `token = make_token(…)`, `x: Vec<…>`,
    // `auth = Auth::new`, `session = self.sessions[…]`.
    let next = text[value.end()..].chars().next();
    if matches!(next, Some('(' | '<' | '[' | '{')) || value.as_str().contains("::") {
        return None;
    }
    looks_random(value.as_str(), Quoting::Bare).then(|| value.range())
}

/// How a candidate secret was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// Inside quotes: only the value's own shape counts.
    Quoted,
    /// Unquoted: letters-only values (identifiers, words, paths) are
    /// taken for code or prose, not for secrets.
    Bare,
}

/// Whether a value looks like a secret: at least 8 characters, not a
/// placeholder (`${VAR}`, `$VAR`, `{{var}}`, `<var>`), and either letters
/// and digits together or a Shannon entropy of at least 3 bits a character.
fn looks_random(value: &str, quoting: Quoting) -> bool {
    if value.chars().count() < 8 || value.starts_with(MARKER) || is_placeholder(value) {
        return false;
    }
    let letters = value.bytes().any(|b| b.is_ascii_alphabetic());
    let digits = value.bytes().any(|b| b.is_ascii_digit());
    if letters && digits {
        return true;
    }
    if quoting == Quoting::Bare && value.bytes().all(|b| b.is_ascii_alphabetic() || b"_-./:".contains(&b)) {
        return false;
    }
    shannon_entropy(value) >= 3.0
}

/// `${VAR}`, `$VAR`, `$(cmd)`, `{{var}}`, `<var>`, `%(var)s`: a reference
/// to a secret, not the secret.
fn is_placeholder(value: &str) -> bool {
    if let Some(rest) = value.strip_prefix('$') {
        return rest.starts_with(['{', '(']) || rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    }
    value.starts_with("{{") || value.starts_with("%(") || (value.starts_with('<') && value.ends_with('>'))
}

/// Shannon entropy of the bytes of `s`, in bits per byte.
fn shannon_entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let len = s.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = f64::from(count) / len;
            -p * p.log2()
        })
        .sum()
}

/// The byte offset of char number `n` in `s` (`s.len()` if it has fewer).
fn byte_offset(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(at, _)| at)
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Redacting `input` gives `expect`.
    #[track_caller]
    fn check(input: &str, expect: &str) {
        assert_eq!(redact_text(input), expect, "input: {input}");
    }

    /// Nothing in `input` is redacted, and no allocation is made.
    #[track_caller]
    fn clean(input: &str) {
        let out = redact_text(input);
        assert!(matches!(out, Cow::Borrowed(_)), "redacted: {input}\n     into: {out}");
    }

    /// A fake credential body: `n` characters, letters and digits mixed.
    /// Built at run time so this file holds no string a secret scanner
    /// would flag.
    fn fake(n: usize) -> String {
        "aB3dE5gH7jK9mN1pQ2sT4vW6yZ8".chars().cycle().take(n).collect()
    }

    #[test]
    fn rule_names_are_unique_and_patterns_compile() {
        let mut names = RULES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
        assert_eq!(COMPILED.regexes.len(), RULES.len());
        assert_eq!(without_group_names("a(?P<x>b)(?P<yz>c)d"), "a(?:b)(?:c)d");
        assert!(COMPILED.any.captures_len() == 1, "the pre-check captures nothing");
    }

    #[test]
    fn pem_private_key() {
        let block = ["-----BEGIN RSA PRIVATE KEY-----", &fake(64), &fake(64), "-----END RSA PRIVATE KEY-----"];
        check(&format!("key:\n{}\nrest", block.join("\n")), "key:\n[REDACTED:pem-private-key]\nrest");
        let openssh = format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----", fake(70));
        check(&openssh, "[REDACTED:pem-private-key]");
        let pkcs8 = format!("a -----BEGIN PRIVATE KEY-----{}-----END PRIVATE KEY----- b", fake(40));
        check(&pkcs8, "a [REDACTED:pem-private-key] b");
        // Truncated: no END line, redacted to the end of the text.
        check(
            &format!("x\n-----BEGIN EC PRIVATE KEY-----\n{}\n{}", fake(64), fake(20)),
            "x\n[REDACTED:pem-private-key]",
        );
        // Near misses: public material, and prose about keys.
        clean(&format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----", fake(64)));
        clean(&format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----", fake(64)));
        clean("keep the private key out of the repository");
    }

    #[test]
    fn jwt() {
        let jwt = format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}", fake(30), fake(43));
        check(&format!("token {jwt} sent"), "token [REDACTED:jwt] sent");
        check("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjMifQ.", "[REDACTED:jwt]");
        // Near misses: one segment, short segments, not starting eyJ.
        clean("eyJhbGciOiJIUzI1NiJ9");
        clean("eyJa.b.c");
        clean(&format!("abJhbGciOiJIUzI1NiJ9.{}.{}", fake(30), fake(43)));
    }

    #[test]
    fn mcpsec_token() {
        check(&format!("grant mcps_{} now", fake(32)), "grant [REDACTED:mcpsec-token] now");
        check(&format!("\"mcps_{}_{}\"", fake(8), fake(24)), "\"[REDACTED:mcpsec-token]\"");
        // Near misses: too short, an identifier, a prefix glued to a word.
        clean(&format!("mcps_{}", fake(19)));
        clean("let mcps_token_prefix_length_in_bytes = 5;");
        clean(&format!("xmcps_{}", fake(32)));
    }

    #[test]
    fn mcpsec_user_key() {
        check(&format!("key=mcpsu_{}", fake(40)), "key=[REDACTED:mcpsec-user-key]");
        clean(&format!("mcpsu_{}", fake(10)));
        clean("mcpsu_user_key_format_description");
    }

    #[test]
    fn github_token() {
        for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
            check(&format!("GH={prefix}{}", fake(36)), "GH=[REDACTED:github-token]");
        }
        check(&format!("github_pat_{} x", fake(82)), "[REDACTED:github-token] x");
        // Near misses: one character short, unknown prefix letter.
        clean(&format!("ghp_{}", fake(35)));
        clean(&format!("ghx_{}", fake(36)));
        clean(&format!("github_pat_{}", fake(81)));
    }

    #[test]
    fn gitlab_token() {
        check(&format!("glpat-{}", fake(20)), "[REDACTED:gitlab-token]");
        clean(&format!("glpat-{}", fake(19)));
        clean("glpat- is the prefix of a GitLab personal access token");
    }

    #[test]
    fn slack_token() {
        check(&format!("xoxb-1234567890-{}", fake(24)), "[REDACTED:slack-token]");
        check(&format!("(xoxp-{})", fake(30)), "([REDACTED:slack-token])");
        clean(&format!("xoxz-1234567890-{}", fake(24)));
        clean("xoxb-12345");
    }

    #[test]
    fn stripe_key() {
        check(&format!("sk_live_{}", fake(24)), "[REDACTED:stripe-key]");
        check(&format!("rk_live_{}", fake(24)), "[REDACTED:stripe-key]");
        check(&format!("sk_test_{}", fake(16)), "[REDACTED:stripe-key]");
        // Near misses: publishable keys are public; too short.
        clean(&format!("pk_live_{}", fake(24)));
        clean(&format!("sk_live_{}", fake(15)));
    }

    #[test]
    fn google_api_key() {
        check(&format!("key=AIza{} end", fake(35)), "key=[REDACTED:google-api-key] end");
        clean(&format!("AIza{} end", fake(34)));
    }

    #[test]
    fn aws_access_key() {
        check("id AKIAIOSFODNN7EXAMPLE ok", "id [REDACTED:aws-access-key] ok");
        check("ASIAY34FZKBOKMUTVV7A", "[REDACTED:aws-access-key]");
        // Near misses: 15 characters, lowercase, glued into a longer word.
        clean("AKIAIOSFODNN7EXAMPL");
        clean("akiaiosfodnn7example");
        clean("AKIAIOSFODNN7EXAMPLEX");
    }

    #[test]
    fn aws_secret_key() {
        let secret = format!("wJalrXUtnFEMI/K7MDENG/{}", fake(18));
        check(&format!("aws_secret_access_key = {secret}"), "aws_secret_access_key = [REDACTED:aws-secret-key]");
        check(&format!("AWS_SECRET_ACCESS_KEY=\"{secret}\""), "AWS_SECRET_ACCESS_KEY=\"[REDACTED:aws-secret-key]\"");
        // Near misses: a placeholder, a word.
        clean("aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}");
        clean("aws_secret_access_key = changeme");
    }

    #[test]
    fn url_credentials() {
        check("postgres://app:hunter2@db:5432/app", "postgres://app:[REDACTED:url-credentials]@db:5432/app");
        check(
            "clone https://x:p%40ss@example.com/r.git",
            "clone https://x:[REDACTED:url-credentials]@example.com/r.git",
        );
        // Near misses: a user without a password, a port, an email address.
        clean("ssh://git@github.com/org/repo.git");
        clean("http://localhost:8080/path?q=a@b");
        clean("mailto:someone@example.com");
    }

    #[test]
    fn auth_header() {
        let token = fake(40);
        check(&format!("Authorization: Bearer {token}"), "Authorization: Bearer [REDACTED:auth-header]");
        check("authorization: Basic dXNlcjpwYXNzd29yZA==", "authorization: Basic [REDACTED:auth-header]");
        check(&format!("\"Authorization\": \"{token}\""), "\"Authorization\": \"[REDACTED:auth-header]\"");
        check(&format!("Proxy-Authorization: token {token}"), "Proxy-Authorization: token [REDACTED:auth-header]");
        // A JWT keeps the more specific name.
        let jwt = format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}", fake(30), fake(43));
        check(&format!("Authorization: Bearer {jwt}"), "Authorization: Bearer [REDACTED:jwt]");
        // Near misses: a placeholder, prose.
        clean("Authorization: Bearer <token>");
        clean("Authorization: required for every write tool");
    }

    #[test]
    fn bearer_token() {
        check(&format!("curl -H 'X: Bearer {}'", fake(32)), "curl -H 'X: Bearer [REDACTED:bearer-token]'");
        clean("the bearer of this letter is welcome");
        clean("Bearer authentication");
    }

    #[test]
    fn secret_assignment() {
        check("DB_PASSWORD=s3cr3tPassw0rd", "DB_PASSWORD=[REDACTED:secret-assignment]");
        check("password: 'correct horse battery staple'", "password: '[REDACTED:secret-assignment]'");
        check("{\"api_key\": \"Zx9fQ2mL7vP4\"}", "{\"api_key\": \"[REDACTED:secret-assignment]\"}");
        check("X-Api-Key: 8f14e45fceea167a", "X-Api-Key: [REDACTED:secret-assignment]");
        check("capability_token = \"q!w@e#r$t%y^\"", "capability_token = \"[REDACTED:secret-assignment]\"");
        check("?session=ab12cd34ef56&x=1", "?session=[REDACTED:secret-assignment]&x=1");
        check("{\\\"passwd\\\": \\\"pa55word99\\\"}", "{\\\"passwd\\\": \\\"[REDACTED:secret-assignment]\\\"}");
        check("client_secret := \"abcdef123456\"", "client_secret := \"[REDACTED:secret-assignment]\"");
        // Spellings: the text rules list lower, Capitalised and UPPER case.
        check("export API_KEY=AbCdEf123456", "export API_KEY=[REDACTED:secret-assignment]");
        check("apiKey: 'Zx9fQ2mL7vP4'", "apiKey: '[REDACTED:secret-assignment]'");
        check("X-API-Key: 8f14e45fceea167a", "X-API-Key: [REDACTED:secret-assignment]");
        check("Password = Xy7#kq9!Lm", "Password = [REDACTED:secret-assignment]");
        check("SessionCookie=0a1b2c3d4e5f", "SessionCookie=[REDACTED:secret-assignment]");
        // Near misses: short or low-entropy values, placeholders, code,
        // harmless key names.
        clean("password=hunter2");
        clean("password: ********");
        clean("password = ${DB_PASSWORD}");
        clean("export TOKEN=$GITHUB_TOKEN");
        clean("let token = make_token(&request);");
        clean("token: Option<SecretString>,");
        clean("let auth = Authorization::bearer(&token)?;");
        clean("session: SessionHandle,");
        clean("author = \"Jane Q. Public 2024\"");
        clean("max_tokens=1024 temperature=0.2");
        clean("if token == expected_token_value {");
    }

    #[test]
    fn redact_value_hides_sensitive_keys_whatever_the_type() {
        let mut value = json!({
            "path": "/srv/notes.txt",
            "password": "hunter2",
            "db_password": 12345,
            "X-Api-Key": {"nested": true},
            "capability_token": ["a", "b"],
            "Set-Cookie": null,
            "headers": [{"Authorization": "Bearer x"}, {"accept": "text/plain"}],
            "deep": {"deeper": {"clientSecret": "s", "keep": 1}},
        });
        redact_value(&mut value);
        let expect = json!({
            "path": "/srv/notes.txt",
            "password": "[REDACTED]",
            "db_password": "[REDACTED]",
            "X-Api-Key": "[REDACTED]",
            "capability_token": "[REDACTED]",
            "Set-Cookie": "[REDACTED]",
            "headers": [{"Authorization": "[REDACTED]"}, {"accept": "text/plain"}],
            "deep": {"deeper": {"clientSecret": "[REDACTED]", "keep": 1}},
        });
        assert_eq!(value, expect);
    }

    #[test]
    fn redact_value_runs_text_rules_on_every_string() {
        let token = format!("ghp_{}", fake(36));
        let mut value = json!({
            "content": format!("GITHUB_TOKEN={token}\n"),
            "list": [format!("mcps_{}", fake(30)), 7, "plain"],
            token.clone(): "keyed by a secret",
        });
        redact_value(&mut value);
        let expect = json!({
            "content": "GITHUB_TOKEN=[REDACTED:github-token]\n",
            "list": ["[REDACTED:mcpsec-token]", 7, "plain"],
            "[REDACTED:github-token]": "[REDACTED]",
        });
        assert_eq!(value, expect);
    }

    #[test]
    fn redact_value_handles_deep_nesting() {
        let mut value = json!("AKIAIOSFODNN7EXAMPLE");
        for _ in 0..10_000 {
            value = Value::Array(vec![value]);
        }
        redact_value(&mut value);
        let mut inner = &value;
        while let Value::Array(items) = inner {
            inner = &items[0];
        }
        assert_eq!(inner, "[REDACTED:aws-access-key]");
        // Dropping 10 000 levels recurses in serde_json's Drop: flatten first.
        let mut stack = vec![value];
        while let Some(Value::Array(items)) = stack.pop() {
            stack.extend(items);
        }
    }

    /// Key names and what they say, in JSON arguments and in `key=value`
    /// text. gitleaks' `generic-api-key` keywords are the floor (`access`,
    /// `api`, `auth`, `credential`, `creds`, `key`, `passwd`, `password`,
    /// `secret`, `token`, as it finds them inside longer names); then the
    /// names gitleaks leaves to other rules and `pass`/`pw` (issue 26,
    /// point 11).
    const KEY_NAMES: &[(&str, Sensitivity)] = &[
        // gitleaks' keywords, alone and in the names its own tests use.
        ("access", Sensitivity::Maybe),
        ("access_token", Sensitivity::Secret),
        ("api", Sensitivity::Maybe),
        ("some_api_token_123", Sensitivity::Secret),
        ("auth", Sensitivity::Secret),
        ("user_auth", Sensitivity::Secret),
        ("credential", Sensitivity::Secret),
        ("credentials", Sensitivity::Secret),
        ("creds", Sensitivity::Secret),
        ("db_creds", Sensitivity::Secret),
        ("key", Sensitivity::Maybe),
        ("private-key", Sensitivity::Secret),
        ("encryption_key", Sensitivity::Maybe),
        ("signingKey", Sensitivity::Maybe),
        ("sshkey", Sensitivity::Maybe),
        ("keys", Sensitivity::Maybe),
        ("passwd", Sensitivity::Secret),
        ("password", Sensitivity::Secret),
        ("db_password", Sensitivity::Secret),
        ("secret", Sensitivity::Secret),
        ("client_secret", Sensitivity::Secret),
        ("mySecretString", Sensitivity::Secret),
        ("token", Sensitivity::Secret),
        ("api_token", Sensitivity::Secret),
        // `pass` and `pw` as words of a name.
        ("pass", Sensitivity::Secret),
        ("db_pass", Sensitivity::Secret),
        ("userPass", Sensitivity::Secret),
        ("PASS", Sensitivity::Secret),
        ("SMTP_PASS", Sensitivity::Secret),
        ("pw", Sensitivity::Secret),
        ("user_pw", Sensitivity::Secret),
        ("adminPw", Sensitivity::Secret),
        ("PW", Sensitivity::Secret),
        ("pw2", Sensitivity::Secret),
        ("pwd", Sensitivity::Secret),
        ("APIPass", Sensitivity::Secret),
        // mcpsec's own.
        ("PASSWD", Sensitivity::Secret),
        ("X-Api-Key", Sensitivity::Secret),
        ("apikey", Sensitivity::Secret),
        ("api-key", Sensitivity::Secret),
        ("access_key", Sensitivity::Secret),
        ("secret_key", Sensitivity::Secret),
        ("private_key", Sensitivity::Secret),
        ("Authorization", Sensitivity::Secret),
        ("basic_auth", Sensitivity::Secret),
        ("cookie", Sensitivity::Secret),
        ("Set-Cookie", Sensitivity::Secret),
        ("session", Sensitivity::Secret),
        ("passphrase", Sensitivity::Secret),
        ("bearer", Sensitivity::Secret),
        ("capability_token", Sensitivity::Secret),
        ("accessToken", Sensitivity::Secret),
        ("refresh_token", Sensitivity::Secret),
        ("oauth_token", Sensitivity::Secret),
        ("authorization_token_id", Sensitivity::Secret),
        // Harmless names.
        ("path", Sensitivity::None),
        ("content", Sensitivity::None),
        ("author", Sensitivity::None),
        ("authors", Sensitivity::None),
        ("authority", Sensitivity::None),
        ("authenticated", Sensitivity::None),
        ("max_tokens", Sensitivity::None),
        ("completion_tokens", Sensitivity::None),
        ("tokenizer", Sensitivity::None),
        ("token_id", Sensitivity::None),
        ("token_fp", Sensitivity::None),
        ("token_type", Sensitivity::None),
        ("bypass", Sensitivity::None),
        ("compass", Sensitivity::None),
        ("passenger", Sensitivity::None),
        ("passive", Sensitivity::None),
        ("upward", Sensitivity::None),
        ("stepwise", Sensitivity::None),
        ("primary_key", Sensitivity::None),
        ("publicKey", Sensitivity::None),
        ("key_id", Sensitivity::None),
        ("keyboard", Sensitivity::None),
        ("monkey", Sensitivity::None),
        ("rapid", Sensitivity::None),
        ("capital", Sensitivity::None),
        ("api_version", Sensitivity::None),
        ("accessor", Sensitivity::None),
        ("accessibility", Sensitivity::None),
        ("", Sensitivity::None),
    ];

    #[test]
    fn every_key_name_in_json_arguments() {
        for &(key, expect) in KEY_NAMES {
            assert_eq!(key_sensitivity(key), expect, "{key}");
            let redacted = |value: Value| {
                let mut args = json!({ key: value });
                redact_value(&mut args);
                args[key] == REDACTED
            };
            // A random-looking value goes under every name that names or may
            // hold a secret; any value, of any type, under one that names one.
            assert_eq!(redacted(json!(fake(24))), expect != Sensitivity::None, "{key}: a random value");
            let any = expect == Sensitivity::Secret;
            assert_eq!(redacted(json!("hunter2")), any, "{key}: a short word");
            assert_eq!(redacted(json!(12345)), any, "{key}: a number");
            assert_eq!(redacted(json!({"nested": true})), any, "{key}: an object");
        }
    }

    #[test]
    fn every_key_name_in_key_value_text() {
        // An upstream's output, a file written, a command line.
        let secret = fake(24);
        for &(key, expect) in KEY_NAMES {
            if key.is_empty() {
                continue;
            }
            for text in [
                format!("{key}={secret}"),
                format!("{key}: {secret}"),
                format!("export {key}=\"{secret}\""),
                format!("{{\"{key}\": \"{secret}\"}}"),
                format!("x {key} := '{secret}' y"),
            ] {
                let out = redact_text(&text);
                assert_eq!(!out.contains(&secret), expect != Sensitivity::None, "{key}: {text} -> {out}");
                if expect != Sensitivity::None {
                    assert!(out.contains(key) && out.contains("[REDACTED:"), "{text} -> {out}");
                }
            }
            // Words and short values are not secrets in text, whatever the key.
            clean(&format!("{key}=hunter2"));
        }
    }

    #[test]
    fn clean_text_is_borrowed() {
        clean("");
        clean("Read /srv/notes.txt: 4 KiB, 120 lines. The token budget is 4096; session ended.");
        clean(&"The quick brown fox jumps over the lazy dog. 0123456789\n".repeat(80));
        // The pre-check matches, but the value is not secret: still borrowed.
        clean("password=changeme");
    }

    #[test]
    fn no_false_positives_on_this_repository() {
        for (name, text) in [
            ("sandbox.rs", include_str!("../../mcpsec-pathguard/src/sandbox.rs")),
            ("README.md", include_str!("../../../README.md")),
        ] {
            if let Cow::Owned(out) = redact_text(text) {
                let first = text.lines().zip(out.lines()).find(|(a, b)| a != b);
                panic!("{name} was redacted: {first:?}");
            }
        }
    }

    #[test]
    fn truncate_cuts_on_char_boundary_and_marks_the_cut() {
        assert_eq!(redact_and_truncate("short", 10), "short");
        assert_eq!(redact_and_truncate("exactly10!", 10), "exactly10!");
        assert_eq!(redact_and_truncate("héllo wörld", 4), "héll…");
        assert_eq!(redact_and_truncate("", 0), "");
        assert_eq!(redact_and_truncate("abc", 0), "…");
    }

    #[test]
    fn truncate_catches_a_secret_straddling_the_cut() {
        let text = format!("{}ghp_{} and more", "x ".repeat(95), fake(36));
        let out = redact_and_truncate(&text, 200);
        assert!(!out.contains("ghp_"), "{out}");
        assert!(out.ends_with('…'));
        assert_eq!(out.chars().count(), 201);
        // A token longer than the margin, straddling it.
        let text = format!("{}mcps_{} tail", "y ".repeat(100), fake(600));
        let out = redact_and_truncate(&text, 210);
        assert!(!out.contains("mcps_"), "{out}");
        // A PEM block cut anywhere.
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----", fake(64).repeat(20));
        let out = redact_and_truncate(&format!("key: {pem}"), 100);
        assert_eq!(out, "key: [REDACTED:pem-private-key]…");
    }
}
