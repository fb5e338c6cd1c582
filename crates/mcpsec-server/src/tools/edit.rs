//! `edit_file`: apply text replacements and describe them as a unified diff.

use serde::Deserialize;

/// One replacement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Edit {
    /// Text to find.
    pub old_text: String,
    /// Text to put in its place.
    pub new_text: String,
}

fn normalize(s: &str) -> String {
    s.replace("\r\n", "\n")
}

/// Applies `edits` in order to `original` the way the reference server
/// does: an exact match first, else a match of whole lines ignoring leading
/// and trailing whitespace (re-indenting the replacement). Returns the new
/// text and the diff, fenced for Markdown. An edit that matches nothing is
/// an error and nothing is changed.
pub fn apply(original: &str, edits: &[Edit], path: &str) -> Result<(String, String), String> {
    let content = normalize(original);
    let mut modified = content.clone();
    for edit in edits {
        let old = normalize(&edit.old_text);
        let new = normalize(&edit.new_text);
        if old.is_empty() {
            return Err("an edit's oldText is empty; give the exact text to replace".into());
        }
        if let Some(pos) = modified.find(&old) {
            modified.replace_range(pos..pos + old.len(), &new);
            continue;
        }
        let old_lines: Vec<&str> = old.split('\n').collect();
        let lines: Vec<&str> = modified.split('\n').collect();
        let found = (0..=lines.len().saturating_sub(old_lines.len())).find(|&i| {
            lines.len() >= old_lines.len() && old_lines.iter().enumerate().all(|(j, o)| o.trim() == lines[i + j].trim())
        });
        let Some(i) = found else {
            return Err(format!("Could not find exact match for edit:\n{}", edit.old_text));
        };
        let indent = leading_ws(lines[i]);
        let replacement: Vec<String> = new
            .split('\n')
            .enumerate()
            .map(|(j, line)| {
                if j == 0 {
                    return format!("{indent}{}", line.trim_start());
                }
                let old_indent = old_lines.get(j).map(|l| leading_ws(l)).unwrap_or("");
                let new_indent = leading_ws(line);
                if !old_indent.is_empty() && !new_indent.is_empty() {
                    let extra = new_indent.len().saturating_sub(old_indent.len());
                    format!("{indent}{}{}", " ".repeat(extra), line.trim_start())
                } else {
                    line.to_owned()
                }
            })
            .collect();
        let mut out: Vec<String> = lines[..i].iter().map(|s| s.to_string()).collect();
        out.extend(replacement);
        out.extend(lines[i + old_lines.len()..].iter().map(|s| s.to_string()));
        modified = out.join("\n");
    }
    let diff = similar::TextDiff::from_lines(&content, &modified)
        .unified_diff()
        .context_radius(3)
        .header(path, path)
        .to_string();
    let mut fence = 3;
    while diff.contains(&"`".repeat(fence)) {
        fence += 1;
    }
    let ticks = "`".repeat(fence);
    Ok((modified, format!("{ticks}diff\n{diff}{ticks}\n\n")))
}

fn leading_ws(s: &str) -> &str {
    &s[..s.len() - s.trim_start().len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(old: &str, new: &str) -> Edit {
        Edit { old_text: old.into(), new_text: new.into() }
    }

    #[test]
    fn exact_replacement_with_diff() {
        let (out, diff) = apply("a\nb\nc\n", &[edit("b", "B")], "f.txt").unwrap();
        assert_eq!(out, "a\nB\nc\n");
        assert!(diff.starts_with("```diff\n--- f.txt\n+++ f.txt\n"), "{diff}");
        assert!(diff.contains("-b\n+B\n"), "{diff}");
    }

    #[test]
    fn whitespace_insensitive_line_match_keeps_indent() {
        let (out, _) = apply("fn x() {\n    let a = 1;\n}\n", &[edit("let a = 1;", "let a = 2;")], "f").unwrap();
        assert_eq!(out, "fn x() {\n    let a = 2;\n}\n");
        let (out, _) = apply("  one\n  two\n", &[edit("one\ntwo", "uno\ndos")], "f").unwrap();
        assert_eq!(out, "  uno\ndos\n");
    }

    #[test]
    fn no_match_is_an_error_and_changes_nothing() {
        let e = apply("a\n", &[edit("zzz", "y")], "f").unwrap_err();
        assert!(e.contains("Could not find exact match"));
        assert!(apply("a\n", &[edit("", "y")], "f").is_err());
    }

    #[test]
    fn fence_grows_past_backticks_in_content() {
        let (_, diff) = apply("```\n", &[edit("```", "````")], "f").unwrap();
        assert!(diff.starts_with("`````diff"), "{diff}");
    }
}
