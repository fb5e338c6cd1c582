//! Showing untrusted text to a human: [`escape`].
//!
//! Text a model or an upstream chose (a path, a tool's arguments, a record
//! of the audit log, a tool definition) reaches a human in a terminal or in
//! a client's confirmation prompt. Printed raw, it can act on what the human
//! sees: ESC and C1 sequences erase lines, move the cursor or write the
//! clipboard (OSC 52); a line break forges a line of its own; a
//! bidirectional control makes text read backwards; a zero-width character
//! hides inside a word. Every human-readable output of mcpsec that quotes
//! such text passes it through [`escape`], the one function that decides
//! what is shown how.
//!
//! [`escape`] shows each such character as `\u{XXXX}` (its code point, at
//! least four uppercase hex digits), and leaves all other text as it is:
//!
//! - every control character: C0 (U+0000–U+001F, tab and line breaks
//!   included), DEL (U+007F) and C1 (U+0080–U+009F);
//! - the bidirectional controls U+061C, U+200E, U+200F, U+202A–U+202E,
//!   U+2066–U+2069;
//! - every default-ignorable code point (Unicode's `Default_Ignorable_Code_Point`:
//!   the zero-width characters U+200B–U+200D, U+2060–U+2064, U+FEFF, the
//!   soft hyphen, variation selectors, the tag characters U+E0000–U+E0FFF, the
//!   Hangul fillers, …), which render as nothing;
//! - the line and paragraph separators U+2028 and U+2029, and the
//!   interlinear annotation characters U+FFF9–U+FFFB.
//!
//! A backslash is left as it is: text that already reads `\u{001B}` is shown
//! as it reads, and nothing in it acts on the terminal.
//!
//! ```
//! use mcpsec_core::display::escape;
//!
//! assert_eq!(escape("notes.txt"), "notes.txt");
//! assert_eq!(escape("a\u{1b}]52;c;AAAA\u{7}b"), "a\\u{001B}]52;c;AAAA\\u{0007}b");
//! assert_eq!(escape("x\nmcpsec: ok"), "x\\u{000A}mcpsec: ok");
//! assert_eq!(escape("invoice\u{202E}fdp.exe"), "invoice\\u{202E}fdp.exe");
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every character that [`is_hidden`] names shown as `\u{XXXX}`.
///
/// `Cow::Borrowed` when there is none (the common case costs one pass and no
/// allocation). The result contains no control, bidirectional or invisible
/// character, so it is one line that reads as it displays; escaping it
/// again changes nothing.
pub fn escape(text: &str) -> Cow<'_, str> {
    let Some(first) = text.char_indices().find(|&(_, c)| is_hidden(c)).map(|(at, _)| at) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        if is_hidden(c) {
            let _ = write!(out, "\\u{{{:04X}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether [`escape`] shows `c` as `\u{XXXX}`: a control, bidirectional,
/// default-ignorable (invisible) or line-separating character.
pub fn is_hidden(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    matches!(
        u32::from(c),
        // C1 controls.
        0x80..=0x9F
        // Default_Ignorable_Code_Point (DerivedCoreProperties.txt), which
        // holds the bidirectional controls and the zero-width characters.
        | 0xAD
        | 0x34F
        | 0x61C
        | 0x115F..=0x1160
        | 0x17B4..=0x17B5
        | 0x180B..=0x180F
        | 0x200B..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x206F
        | 0x3164
        | 0xFE00..=0xFE0F
        | 0xFEFF
        | 0xFFA0
        | 0xFFF0..=0xFFF8
        | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF
        // Line and paragraph separators; interlinear annotations.
        | 0x2028..=0x2029
        | 0xFFF9..=0xFFFB
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expect: &str) {
        assert_eq!(escape(input), expect, "input: {input:?}");
        assert_eq!(escape(expect), expect, "escaping is idempotent");
    }

    #[test]
    fn plain_text_is_borrowed() {
        for text in ["", "notes/a.txt", "naïve café ☕ 日本語", "a\\u{001B}b", "emoji 👍🏽 and ‘quotes’ — dash"]
        {
            assert!(matches!(escape(text), Cow::Borrowed(_)), "{text:?}");
        }
    }

    #[test]
    fn terminal_escapes_and_controls() {
        // Erase the line, cursor up, an OSC 52 clipboard write, a title.
        check("\u{1b}[2K\r\u{1b}[1A", "\\u{001B}[2K\\u{000D}\\u{001B}[1A");
        check("x\u{1b}]52;c;ZWNobw==\u{7}y", "x\\u{001B}]52;c;ZWNobw==\\u{0007}y");
        check("tool\u{1b}]0;owned\u{1b}\\", "tool\\u{001B}]0;owned\\u{001B}\\");
        check("a\tb\nc\r\0\u{7f}", "a\\u{0009}b\\u{000A}c\\u{000D}\\u{0000}\\u{007F}");
        // C1: CSI, OSC, NEL.
        check("\u{9b}2J\u{9d}0;t\u{85}", "\\u{009B}2J\\u{009D}0;t\\u{0085}");
    }

    #[test]
    fn bidi_and_invisible_characters() {
        check("invoice\u{202E}fdp.exe", "invoice\\u{202E}fdp.exe");
        for c in ['\u{200E}', '\u{200F}', '\u{061C}', '\u{202A}', '\u{2066}', '\u{2069}'] {
            assert!(is_hidden(c), "{:04X}", u32::from(c));
        }
        check("pass\u{200B}word", "pass\\u{200B}word");
        check("\u{FEFF}bom", "\\u{FEFF}bom");
        check("a\u{2060}\u{2064}b\u{AD}c", "a\\u{2060}\\u{2064}b\\u{00AD}c");
        check("tag\u{E0041}\u{E007F}", "tag\\u{E0041}\\u{E007F}");
        check("vs\u{FE0F}\u{E0100}", "vs\\u{FE0F}\\u{E0100}");
        check("line\u{2028}para\u{2029}", "line\\u{2028}para\\u{2029}");
        check("\u{3164}\u{FFA0}\u{115F}", "\\u{3164}\\u{FFA0}\\u{115F}");
    }

    #[test]
    fn visible_text_around_is_kept() {
        check("é\u{1b}ü", "é\\u{001B}ü");
        // Printable neighbours of the hidden ranges stay.
        for c in [' ', '~', '\u{A0}', '\u{AE}', '\u{2010}', '\u{2027}', '\u{202F}', '\u{2070}', '\u{FE10}'] {
            assert!(!is_hidden(c), "{:04X}", u32::from(c));
        }
    }
}
