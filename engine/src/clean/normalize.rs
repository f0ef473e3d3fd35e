//! Text normalisation of one document.

use unicode_normalization::{is_nfc_quick, is_nfkc_quick, IsNormalized, UnicodeNormalization};

use super::{CleanOptions, CleanReport};

/// At most this many blank lines in a row survive; longer runs are cut to it.
pub const MAX_BLANK_LINES: usize = 2;

/// Normalises one document, in this order:
/// 1. a leading byte-order mark is dropped; CRLF and lone CR become LF;
/// 2. Unicode NFC (NFKC when `opts.nfkc`);
/// 3. control characters (general category Cc) other than `\n` and `\t` are removed (counted in
///    `report.control_chars`);
/// 4. lowercase when `opts.lowercase`;
/// 5. per line: runs of two or more spaces/tabs become one space, trailing spaces and tabs are
///    stripped; runs of more than [`MAX_BLANK_LINES`] blank lines are cut to that many; blank
///    lines at the start and end are removed.
pub fn normalize(text: &str, opts: &CleanOptions, report: &mut CleanReport) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text.to_string()
    };
    // The quick checks answer "yes" for most text (all of ASCII) without building a copy.
    let composed: String = if opts.nfkc {
        match is_nfkc_quick(text.chars()) {
            IsNormalized::Yes => text,
            _ => text.nfkc().collect(),
        }
    } else {
        match is_nfc_quick(text.chars()) {
            IsNormalized::Yes => text,
            _ => text.nfc().collect(),
        }
    };
    let mut kept = String::with_capacity(composed.len());
    for c in composed.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            report.control_chars += 1;
        } else {
            kept.push(c);
        }
    }
    let kept = if opts.lowercase {
        kept.to_lowercase()
    } else {
        kept
    };
    let mut out = String::with_capacity(kept.len());
    let mut blank_run = 0usize;
    let mut started = false;
    let mut line_buf = String::new();
    for line in kept.split('\n') {
        collapse_spaces(line, &mut line_buf);
        if line_buf.is_empty() {
            blank_run += 1;
            continue;
        }
        if started {
            out.push('\n');
            for _ in 0..blank_run.min(MAX_BLANK_LINES) {
                out.push('\n');
            }
        }
        out.push_str(&line_buf);
        started = true;
        blank_run = 0;
    }
    out
}

/// `line` with runs of 2+ spaces/tabs collapsed to one space and trailing spaces/tabs removed,
/// into `out` (cleared first). A lone tab stays a tab.
fn collapse_spaces(line: &str, out: &mut String) {
    out.clear();
    let mut run = 0usize;
    let mut last = ' ';
    for c in line.chars() {
        if c == ' ' || c == '\t' {
            run += 1;
            last = c;
            continue;
        }
        match run {
            0 => {}
            1 => out.push(last),
            _ => out.push(' '),
        }
        run = 0;
        out.push(c);
    }
}
