//! Aligned tables for human output: columns padded to their widest cell,
//! the last column wrapped to the terminal's width, the header in bold on a
//! colour terminal unless `NO_COLOR` is set (no-color.org).
//!
//! Every cell is shown through [`mcpsec_core::display::escape`], line by
//! line: a line break in a cell starts a new line of the table (as in the
//! findings of `mcpsec doctor`, "…\nfix: …"), and nothing else in a cell can
//! act on the terminal. A cell quoting untrusted text must escape it itself,
//! line breaks included, so that it cannot forge a row.

use std::io::{IsTerminal, Write};

/// The width to wrap to: `COLUMNS`, else the terminal's, else none (a pipe
/// or a file gets whole lines).
fn width() -> Option<usize> {
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse::<usize>().ok()).filter(|c| *c > 0) {
        return Some(c);
    }
    let out = std::io::stdout();
    if !out.is_terminal() {
        return None;
    }
    rustix::termios::tcgetwinsize(&out).ok().map(|w| usize::from(w.ws_col)).filter(|c| *c > 0)
}

/// Whether to use colour: stdout is a terminal and `NO_COLOR` is unset or empty.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Splits `text` into lines of at most `max` characters, at spaces where it can.
fn wrap(text: &str, max: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split(' ') {
            let fits = line.chars().count() + 1 + word.chars().count() <= max;
            if !line.is_empty() && !fits {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

/// Prints `rows` under `header`, two spaces between columns.
pub fn print(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    print_with(out, header, rows, width(), colour())
}

fn print_with(
    out: &mut impl Write,
    header: &[&str],
    rows: &[Vec<String>],
    width: Option<usize>,
    bold: bool,
) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| cell.split('\n').map(mcpsec_core::display::escape).collect::<Vec<_>>().join("\n"))
                .collect()
        })
        .collect();
    let rows = &rows;
    let n = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(n.saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let indent: usize = widths.iter().take(n.saturating_sub(1)).map(|w| w + 2).sum();
    // The last column gets what is left, but never less than 20 columns.
    let last = width.map(|w| w.saturating_sub(indent).max(20)).unwrap_or(usize::MAX);
    let line = |cells: &[String]| -> Vec<String> {
        let mut prefix = String::new();
        for (i, cell) in cells.iter().enumerate().take(n.saturating_sub(1)) {
            prefix.push_str(&format!("{cell:<w$}  ", w = widths[i]));
        }
        let tail = cells.get(n.saturating_sub(1)).map(String::as_str).unwrap_or("");
        wrap(tail, last)
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let p = if i == 0 { prefix.clone() } else { " ".repeat(indent) };
                format!("{p}{l}").trim_end().to_owned()
            })
            .collect()
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for l in line(&head) {
        if bold { writeln!(out, "\x1b[1m{l}\x1b[0m")? } else { writeln!(out, "{l}")? }
    }
    for row in rows {
        for l in line(row) {
            writeln!(out, "{l}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces_and_keeps_newlines() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("one\ntwo", 80), vec!["one", "two"]);
        assert_eq!(wrap("averyveryverylongword x", 5), vec!["averyveryverylongword", "x"]);
    }

    #[test]
    fn cells_cannot_act_on_the_terminal() {
        let mut out = Vec::new();
        let rows = vec![vec!["a\u{1b}]52;c;eA==\u{7}".to_string(), "line one\nfix: \u{202E}gnp.exe".into()]];
        print_with(&mut out, &["A", "B"], &rows, None, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let cell = "a\\u{001B}]52;c;eA==\\u{0007}";
        let pad = " ".repeat(cell.len() + 2);
        assert_eq!(
            text,
            format!("A{}B\n{cell}  line one\n{pad}fix: \\u{{202E}}gnp.exe\n", &pad[1..]),
            "the first cell is {} characters wide once escaped",
            cell.len()
        );
    }

    #[test]
    fn columns_align() {
        let mut out = Vec::new();
        let rows =
            vec![vec!["a".to_string(), "long cell".into(), "x".into()], vec!["bbb".into(), "c".into(), "".into()]];
        print_with(&mut out, &["H1", "H2", "NOTE"], &rows, None, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "H1   H2         NOTE\na    long cell  x\nbbb  c\n");
        let mut out = Vec::new();
        print_with(&mut out, &["A", "B"], &[vec!["x".into(), "one two three four five six".into()]], Some(20), false)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().all(|l| l.chars().count() <= 23), "{text}");
        assert!(text.contains("\n   "), "continuation lines are indented: {text}");
    }
}
