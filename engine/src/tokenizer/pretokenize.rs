//! GPT-2's pre-tokenization, as a hand-written scanner.
//!
//! GPT-2 (and tiktoken's r50k_base) split text with the pattern
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! matched leftmost-first, one match after the other. [`next_piece`] gives the same pieces as
//! that pattern without a regex engine. At a position holding character `c`:
//!
//! 1. `'` followed by `s t m d` (lowercase only) ends after 2 characters, by `re ve ll` after 3;
//! 2. a space (U+0020 only) followed by a letter, a digit or an "other" character (neither
//!    whitespace, letter nor number) takes the space and the run of that class after it;
//! 3. a letter, a number or an other character takes the run of its class (an unmatched `'` is
//!    an other character: `'x` gives `'` then `x`, `?'s` gives `?'` then `s`);
//! 4. whitespace takes the maximal whitespace run, but when that run is followed by a
//!    non-whitespace character and is at least 2 characters long, it gives back its last
//!    character (`\s+(?!\S)` backtracks by one so that the next match can be ` word`); a
//!    single whitespace character before a non-whitespace one is a piece by itself (`\s+`).
//!
//! The classes `\p{L}`, `\p{N}` and `\s` are read from `regex-syntax`, the tables the regex
//! crates (and so tiktoken) use, into one table of 64 Ki entries for the Basic Multilingual
//! Plane and sorted ranges for the planes above it.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// A character's class for the pattern above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CharClass {
    /// `\p{L}`.
    Letter = 0,
    /// `\p{N}`.
    Number = 1,
    /// `\s` (Unicode White_Space).
    Space = 2,
    /// Everything else: `[^\s\p{L}\p{N}]`.
    Other = 3,
}

impl CharClass {
    fn from_u8(v: u8) -> CharClass {
        match v {
            0 => CharClass::Letter,
            1 => CharClass::Number,
            2 => CharClass::Space,
            _ => CharClass::Other,
        }
    }
}

/// Class tables: one byte per BMP code point, sorted disjoint ranges above it.
struct Classes {
    /// (0x10000) class of every code point below U+10000.
    bmp: Box<[u8]>,
    /// Sorted, disjoint (first, last, class) ranges of code points at or above U+10000 that are
    /// not [`CharClass::Other`].
    astral: Vec<(u32, u32, u8)>,
}

fn unicode_ranges(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .expect("a fixed, valid Unicode class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => unreachable!("{pattern} parsed to {other:?}"),
    }
}

fn classes() -> &'static Classes {
    static CLASSES: OnceLock<Classes> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let mut bmp = vec![CharClass::Other as u8; 0x10000].into_boxed_slice();
        let mut astral = Vec::new();
        // \p{L}, \p{N} and \s are disjoint, so the order of filling does not matter.
        for (pattern, class) in [
            (r"\p{L}", CharClass::Letter),
            (r"\p{N}", CharClass::Number),
            (r"\s", CharClass::Space),
        ] {
            for (first, last) in unicode_ranges(pattern) {
                for cp in first..=last.min(0xFFFF) {
                    bmp[cp as usize] = class as u8;
                }
                if last >= 0x10000 {
                    astral.push((first.max(0x10000), last, class as u8));
                }
            }
        }
        astral.sort_unstable();
        Classes { bmp, astral }
    })
}

/// The pre-tokenizer: holds the class tables. Cheap to copy.
#[derive(Clone, Copy)]
pub(crate) struct PreTokenizer {
    classes: &'static Classes,
}

impl std::fmt::Debug for PreTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreTokenizer(gpt2)")
    }
}

impl PreTokenizer {
    pub(crate) fn new() -> PreTokenizer {
        PreTokenizer { classes: classes() }
    }

    /// The class of the character starting at byte `pos` of `s` and its length in bytes.
    /// `pos` must be a character boundary before `s.len()`.
    #[inline(always)]
    fn class_at(&self, s: &[u8], pos: usize) -> (CharClass, usize) {
        let b0 = s[pos];
        if b0 < 0x80 {
            return (CharClass::from_u8(self.classes.bmp[b0 as usize]), 1);
        }
        // `s` is valid UTF-8 (it came from a &str) and `pos` is a character boundary.
        let (cp, len) = if b0 < 0xE0 {
            (((b0 as u32 & 0x1F) << 6) | (s[pos + 1] as u32 & 0x3F), 2)
        } else if b0 < 0xF0 {
            (
                ((b0 as u32 & 0x0F) << 12)
                    | ((s[pos + 1] as u32 & 0x3F) << 6)
                    | (s[pos + 2] as u32 & 0x3F),
                3,
            )
        } else {
            (
                ((b0 as u32 & 0x07) << 18)
                    | ((s[pos + 1] as u32 & 0x3F) << 12)
                    | ((s[pos + 2] as u32 & 0x3F) << 6)
                    | (s[pos + 3] as u32 & 0x3F),
                4,
            )
        };
        let class = if cp < 0x10000 {
            self.classes.bmp[cp as usize]
        } else {
            let ranges = &self.classes.astral;
            let i = ranges.partition_point(|r| r.1 < cp);
            match ranges.get(i) {
                Some(&(first, _, class)) if first <= cp => class,
                _ => CharClass::Other as u8,
            }
        };
        (CharClass::from_u8(class), len)
    }

    /// The end of the run of `class` characters starting at `pos`.
    #[inline(always)]
    fn run_end(&self, s: &[u8], mut pos: usize, class: CharClass) -> usize {
        while pos < s.len() {
            let (c, len) = self.class_at(s, pos);
            if c != class {
                break;
            }
            pos += len;
        }
        pos
    }

    /// The end (exclusive, in bytes) of the piece that starts at `pos` (< `s.len()`, a
    /// character boundary of the UTF-8 text `s`).
    #[inline]
    pub(crate) fn next_piece(&self, s: &[u8], pos: usize) -> usize {
        let b0 = s[pos];
        if b0 == b'\'' {
            if let Some(&b1) = s.get(pos + 1) {
                match b1 {
                    b's' | b't' | b'm' | b'd' => return pos + 2,
                    b'r' | b'v' | b'l' => {
                        let want = match b1 {
                            b'r' | b'v' => b'e',
                            _ => b'l',
                        };
                        if s.get(pos + 2) == Some(&want) {
                            return pos + 3;
                        }
                    }
                    _ => {}
                }
            }
        }
        let (c0, l0) = self.class_at(s, pos);
        match c0 {
            CharClass::Space => {
                if b0 == b' ' && pos + 1 < s.len() {
                    let (c1, l1) = self.class_at(s, pos + 1);
                    if c1 != CharClass::Space {
                        return self.run_end(s, pos + 1 + l1, c1);
                    }
                }
                // The whitespace run, remembering where its last character starts.
                let mut last = pos;
                let mut end = pos + l0;
                while end < s.len() {
                    let (c, len) = self.class_at(s, end);
                    if c != CharClass::Space {
                        break;
                    }
                    last = end;
                    end += len;
                }
                if end == s.len() || last == pos {
                    end
                } else {
                    last
                }
            }
            class => self.run_end(s, pos + l0, class),
        }
    }

    /// Calls `f` with every piece of `text`, in order.
    #[inline]
    pub(crate) fn for_each_piece<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        let s = text.as_bytes();
        let mut pos = 0;
        while pos < s.len() {
            let end = self.next_piece(s, pos);
            // Pieces end at character boundaries: every step above moves by whole characters.
            f(&text[pos..end]);
            pos = end;
        }
    }
}
