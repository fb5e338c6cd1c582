//! What a human reads when asked to confirm a call: [`message`].
//!
//! A confirmation is worth what the human could see. Every value in it is
//! the model's (the arguments, their keys, the path), so each is shown
//! through [`escape`]: a line break cannot forge a line of the prompt, a
//! right-to-left override cannot reverse it, nothing invisible hides in it.
//! The prompt's own line breaks are the only ones in it.
//!
//! Every value is listed on a line of its own, under the path of keys that
//! leads to it (`edits[0].newText`):
//!
//! - a string of up to [`WHOLE`] characters is shown whole, in quotes;
//! - a longer one by its size, line count and SHA-256, then its first and
//!   its last [`EDGE`] characters, saying how many are not shown between
//!   them (a script appended to 5000 harmless characters is in the tail);
//! - a long one that looks binary (a NUL, or more than one character in
//!   eight control or invisible) by its size and SHA-256, saying that it is
//!   not shown;
//! - numbers, booleans and null as JSON.
//!
//! At most [`MAX_VALUES`] values are listed; the prompt says how many more
//! there are. Values are shown as the model wrote them, not redacted: a
//! redaction could hide what is written (`token=;curl…|sh` would read
//! `token=[REDACTED]`), and the client showing the prompt has the arguments
//! already.

use std::fmt::Write as _;

use mcpsec_core::display::{escape, is_hidden};
use mcpsec_core::units::hex;
use rmcp::model::JsonObject;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A string of at most this many characters is shown whole.
pub(crate) const WHOLE: usize = 300;
/// Of a longer string, this many characters of its start and of its end.
pub(crate) const EDGE: usize = 120;
/// At most this many values are listed.
pub(crate) const MAX_VALUES: usize = 32;
/// A key longer than this is cut in a value's label (its value is shown).
const MAX_KEY: usize = 64;
/// A value's label is cut to this many characters.
const MAX_LABEL: usize = 200;

/// The confirmation prompt for a call of `tool`, which needs `capability`,
/// with `args` (the capability token removed); `target` is the path it acts
/// on, if one is named.
pub(crate) fn message(
    tool: &str,
    capability: mcpsec_core::Capability,
    target: Option<&str>,
    args: &JsonObject,
) -> String {
    let on = match target {
        Some(t) if t.chars().count() <= WHOLE => format!(" on \"{}\"", escape(t)),
        Some(_) => " on a long path (below)".to_owned(),
        None => String::new(),
    };
    let mut out = format!("mcpsec: allow `{}`{on}? It needs the capability {capability}.\n", escape(tool));
    let mut values = Vec::new();
    for (key, value) in args {
        leaves(&label_key(key), value, &mut values);
    }
    if values.is_empty() {
        out.push_str("No arguments.\n");
    } else {
        out.push_str("Arguments, as written (hidden characters shown as \\u{XXXX}):\n");
    }
    for (label, value) in values.iter().take(MAX_VALUES) {
        let _ = writeln!(out, "- {label}: {}", describe(value));
    }
    if values.len() > MAX_VALUES {
        let all = serde_json::to_vec(args).unwrap_or_default();
        let _ = writeln!(
            out,
            "- and {} more values, not shown ({} values in {} bytes of arguments, sha256 {}): decline unless you \
             know what they are",
            values.len() - MAX_VALUES,
            values.len(),
            all.len(),
            hex(&Sha256::digest(&all))
        );
    }
    out.push_str("Accept to allow this one call; decline to refuse it.");
    out
}

/// Every value under `value` (itself, unless it is an array or an object
/// with members), labelled by the path of keys and indexes to it.
fn leaves<'a>(label: &str, value: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Array(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                leaves(&cut(format!("{label}[{i}]")), item, out);
            }
        }
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                leaves(&cut(format!("{label}.{}", label_key(key))), item, out);
            }
        }
        _ => out.push((label.to_owned(), value)),
    }
}

/// A key as a label shows it: escaped, cut to [`MAX_KEY`] characters.
fn label_key(key: &str) -> String {
    let shown = escape(key);
    match shown.char_indices().nth(MAX_KEY) {
        Some((at, _)) => format!("{}…", &shown[..at]),
        None => shown.into_owned(),
    }
}

/// A label cut to its last [`MAX_LABEL`] characters (deep nesting): the
/// keys nearest the value are kept.
fn cut(label: String) -> String {
    let n = label.chars().count();
    if n <= MAX_LABEL {
        return label;
    }
    let tail: String = label.chars().skip(n - (MAX_LABEL - 1)).collect();
    format!("…{tail}")
}

/// One value as the prompt shows it.
fn describe(value: &Value) -> String {
    let Value::String(s) = value else {
        // Numbers, booleans, null, `[]` and `{}`: JSON, nothing hidden.
        return value.to_string();
    };
    let chars = s.chars().count();
    if chars <= WHOLE {
        return format!("\"{}\"", escape(s));
    }
    let summary = format!("{} bytes, {} lines, sha256 {}", s.len(), s.lines().count(), hex(&Sha256::digest(s)));
    let hidden = s.chars().filter(|&c| is_hidden(c) && !matches!(c, '\n' | '\r' | '\t')).count();
    if s.contains('\0') || hidden * 8 > chars {
        return format!(
            "{summary}; binary ({hidden} of its {chars} characters are control or invisible characters): not shown"
        );
    }
    let head: String = s.chars().take(EDGE).collect();
    let tail: String = s.chars().skip(chars - EDGE).collect();
    format!(
        "{summary}; too long to show whole:\n    first {EDGE} characters: \"{}\"\n    last {EDGE} characters: \
         \"{}\"\n    ({} characters between them not shown)",
        escape(&head),
        escape(&tail),
        chars - 2 * EDGE
    )
}
