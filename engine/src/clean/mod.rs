//! Cleaning text before tokenization: inputs read as documents (`input`), each normalised
//! ([`normalize`]), boilerplate lines shared by many documents removed, short or low-quality
//! documents dropped, exact duplicates dropped, and a [`CleanReport`] of all of it.
//!
//! Reading ([`read_documents`]) skips binary files: text never holds a NUL byte, so a file with
//! one is not read as text but dropped and named in the report.
//!
//! The pipeline ([`clean_documents`]) runs in this order, each step on the previous one's output:
//! 1. normalise every document ([`normalize::normalize`]);
//! 2. boilerplate: a non-blank line occurring in more than `boilerplate_docs` documents is
//!    removed from all of them (then the document is normalised again, to re-close its gaps);
//! 3. filters, first failing reason wins: empty, shorter than `min_chars` characters, letter
//!    ratio below `min_letter_ratio`, repeated-line ratio above `max_repeated_line_ratio`;
//! 4. exact duplicates of an earlier kept document are dropped.
//!
//! Raw mode ([`CleanOptions::raw`]) skips all of it: each document is kept as read.
//! All documents are held in memory (step 2 needs every document before it can remove a line).

mod input;
mod normalize;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::PathBuf;

pub use input::{decode, expand_inputs, is_binary, read_documents, Document, InputFormat};
pub use normalize::{normalize, MAX_BLANK_LINES};

/// Why inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    /// Reading or listing failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// An input names nothing readable.
    #[error("input {input:?}: {problem}")]
    NoInput {
        /// The input as given.
        input: String,
        /// What is wrong.
        problem: String,
    },
    /// Invalid UTF-8 under `strict`.
    #[error(
        "{source_name}: invalid UTF-8 at byte {offset}; convert the file to UTF-8, or drop \
         --strict to replace invalid bytes with U+FFFD"
    )]
    NotUtf8 {
        /// The file.
        source_name: String,
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// A JSONL line that is not an object with the text field.
    #[error("{at}: {problem}")]
    Jsonl {
        /// `FILE:LINE`.
        at: String,
        /// What is wrong.
        problem: String,
    },
    /// Nothing is left to tokenize.
    #[error("no text left: {report}; give more input or loosen the filters")]
    NothingLeft {
        /// What was read and dropped (boxed: it is far larger than the other variants).
        report: Box<CleanReport>,
    },
}

impl CleanError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| CleanError::Io { op, path, source }
    }
}

/// What cleaning does.
#[derive(Clone, Debug, PartialEq)]
pub struct CleanOptions {
    /// No cleaning at all: each document as read (each text file is exactly one document).
    pub raw: bool,
    /// NFKC instead of NFC.
    pub nfkc: bool,
    /// Lowercase everything.
    pub lowercase: bool,
    /// Invalid UTF-8 is an error instead of U+FFFD.
    pub strict: bool,
    /// Drop exact duplicate documents.
    pub dedup_documents: bool,
    /// Remove lines occurring in more than this many documents (`None`: keep them).
    pub boilerplate_docs: Option<usize>,
    /// Drop documents with fewer characters than this (after cleaning).
    pub min_chars: usize,
    /// Drop documents whose alphabetic characters are less than this fraction of their
    /// non-whitespace characters.
    pub min_letter_ratio: f64,
    /// Drop documents where more than this fraction of non-blank lines repeat an earlier line of
    /// the same document.
    pub max_repeated_line_ratio: f64,
}

impl Default for CleanOptions {
    /// NFC, dedup on, boilerplate lines in more than 100 documents removed, documents under 16
    /// characters, under 50% letters or over 50% repeated lines dropped.
    fn default() -> Self {
        CleanOptions {
            raw: false,
            nfkc: false,
            lowercase: false,
            strict: false,
            dedup_documents: true,
            boilerplate_docs: Some(100),
            min_chars: 16,
            min_letter_ratio: 0.5,
            max_repeated_line_ratio: 0.5,
        }
    }
}

impl CleanOptions {
    /// Raw mode: every document kept exactly as read.
    pub fn raw() -> Self {
        CleanOptions {
            raw: true,
            dedup_documents: false,
            boilerplate_docs: None,
            min_chars: 0,
            min_letter_ratio: 0.0,
            max_repeated_line_ratio: 1.0,
            ..CleanOptions::default()
        }
    }
}

/// Why a document was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// A binary file (it holds a NUL byte), skipped when read.
    Binary,
    /// Nothing left after normalisation and boilerplate removal.
    Empty,
    /// Fewer than `min_chars` characters.
    TooShort,
    /// Too few letters.
    LowLetterRatio,
    /// Too many repeated lines.
    RepeatedLines,
    /// Same text as an earlier document.
    Duplicate,
}

impl DropReason {
    /// All reasons, in report order.
    pub const ALL: [DropReason; 6] = [
        DropReason::Binary,
        DropReason::Empty,
        DropReason::TooShort,
        DropReason::LowLetterRatio,
        DropReason::RepeatedLines,
        DropReason::Duplicate,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Binary => "binary",
            DropReason::Empty => "empty",
            DropReason::TooShort => "too short",
            DropReason::LowLetterRatio => "low letter ratio",
            DropReason::RepeatedLines => "repeated lines",
            DropReason::Duplicate => "duplicate",
        }
    }
}

/// What cleaning read, changed and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Bytes read from input files.
    pub bytes_in: u64,
    /// UTF-8 bytes of the documents kept.
    pub bytes_out: u64,
    /// Documents read.
    pub docs_in: usize,
    /// Documents kept.
    pub docs_out: usize,
    /// Invalid UTF-8 sequences replaced with U+FFFD.
    pub invalid_utf8: usize,
    /// Control characters removed.
    pub control_chars: usize,
    /// Distinct boilerplate lines found (lines in more than `boilerplate_docs` documents).
    pub boilerplate_lines: usize,
    /// Line occurrences removed as boilerplate.
    pub boilerplate_removed: usize,
    /// Documents dropped, per reason (indexed like [`DropReason::ALL`]).
    pub dropped: [usize; 6],
    /// The binary files skipped ([`DropReason::Binary`]), in reading order.
    pub binary_files: Vec<String>,
}

impl CleanReport {
    /// Documents dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> usize {
        self.dropped[reason as usize]
    }
}

impl fmt::Display for CleanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} documents kept, {} → {} bytes",
            self.docs_out, self.docs_in, self.bytes_in, self.bytes_out
        )?;
        for r in DropReason::ALL {
            if self.dropped(r) == 0 {
                continue;
            }
            write!(f, ", {} dropped ({}", self.dropped(r), r.name())?;
            if r == DropReason::Binary {
                // The first few names: enough to find the stray files without flooding the line.
                let shown = &self.binary_files[..self.binary_files.len().min(3)];
                write!(f, ", holding NUL bytes: {}", shown.join(", "))?;
                if self.binary_files.len() > shown.len() {
                    write!(f, " and {} more", self.binary_files.len() - shown.len())?;
                }
            }
            write!(f, ")")?;
        }
        if self.invalid_utf8 > 0 {
            write!(
                f,
                ", {} invalid UTF-8 sequences replaced",
                self.invalid_utf8
            )?;
        }
        if self.control_chars > 0 {
            write!(f, ", {} control characters removed", self.control_chars)?;
        }
        if self.boilerplate_removed > 0 {
            write!(
                f,
                ", {} boilerplate lines removed ({} distinct)",
                self.boilerplate_removed, self.boilerplate_lines
            )?;
        }
        Ok(())
    }
}

fn hash_of<T: Hash + ?Sized>(x: &T) -> u64 {
    // DefaultHasher::new() has fixed keys: the same text hashes the same in every run.
    let mut h = DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// Runs the pipeline of the module documentation on `docs`; `report` gains the counts (its
/// `bytes_in`, `invalid_utf8` and binary files come from reading). Kept documents keep their order.
pub fn clean_documents(
    docs: Vec<Document>,
    opts: &CleanOptions,
    report: &mut CleanReport,
) -> Vec<Document> {
    report.docs_in += docs.len();
    if opts.raw {
        report.docs_out += docs.len();
        report.bytes_out += docs.iter().map(|d| d.text.len() as u64).sum::<u64>();
        return docs;
    }
    let mut docs: Vec<Document> = docs
        .into_iter()
        .map(|d| Document {
            text: normalize(&d.text, opts, report),
            source: d.source,
        })
        .collect();

    if let Some(limit) = opts.boilerplate_docs {
        remove_boilerplate(&mut docs, limit, opts, report);
    }

    let mut seen: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut kept: Vec<Document> = Vec::with_capacity(docs.len());
    for d in docs {
        let reason = quality_problem(&d.text, opts).or_else(|| {
            if !opts.dedup_documents {
                return None;
            }
            let same = seen.entry(hash_of(d.text.as_str())).or_default();
            if same.iter().any(|&i| kept[i].text == d.text) {
                Some(DropReason::Duplicate)
            } else {
                same.push(kept.len());
                None
            }
        });
        match reason {
            Some(r) => report.dropped[r as usize] += 1,
            None => {
                report.bytes_out += d.text.len() as u64;
                report.docs_out += 1;
                kept.push(d);
            }
        }
    }
    kept
}

/// Removes every non-blank line that occurs in more than `limit` documents.
fn remove_boilerplate(
    docs: &mut [Document],
    limit: usize,
    opts: &CleanOptions,
    report: &mut CleanReport,
) {
    let mut doc_count: HashMap<u64, usize> = HashMap::new();
    let mut in_doc: HashSet<u64> = HashSet::new();
    for d in docs.iter() {
        in_doc.clear();
        for line in d.text.lines().filter(|l| !l.trim().is_empty()) {
            let h = hash_of(line);
            if in_doc.insert(h) {
                *doc_count.entry(h).or_default() += 1;
            }
        }
    }
    let boiler: HashSet<u64> = doc_count
        .into_iter()
        .filter(|&(_, n)| n > limit)
        .map(|(h, _)| h)
        .collect();
    if boiler.is_empty() {
        return;
    }
    report.boilerplate_lines += boiler.len();
    for d in docs.iter_mut() {
        let mut removed = 0usize;
        let text: Vec<&str> = d
            .text
            .lines()
            .filter(|l| {
                let drop = boiler.contains(&hash_of(*l));
                removed += drop as usize;
                !drop
            })
            .collect();
        if removed > 0 {
            report.boilerplate_removed += removed;
            // Re-normalise to close the gaps left behind; nothing else changes a second time.
            let joined = text.join("\n");
            d.text = normalize(&joined, opts, &mut CleanReport::default());
        }
    }
}

/// The first filter `text` fails, if any.
fn quality_problem(text: &str, opts: &CleanOptions) -> Option<DropReason> {
    if text.is_empty() {
        return Some(DropReason::Empty);
    }
    if text.chars().count() < opts.min_chars {
        return Some(DropReason::TooShort);
    }
    let (mut letters, mut visible) = (0usize, 0usize);
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        visible += 1;
        letters += c.is_alphabetic() as usize;
    }
    if visible == 0 || (letters as f64) < opts.min_letter_ratio * visible as f64 {
        return Some(DropReason::LowLetterRatio);
    }
    let mut seen = HashSet::new();
    let (mut lines, mut repeats) = (0usize, 0usize);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        lines += 1;
        repeats += !seen.insert(line) as usize;
    }
    if repeats as f64 > opts.max_repeated_line_ratio * lines as f64 {
        return Some(DropReason::RepeatedLines);
    }
    None
}

/// Reads `inputs` (files, directories, globs; see [`expand_inputs`], which leaves out the paths in
/// `skip`) in `format` and cleans them with `opts`. An error when nothing is left.
pub fn clean_inputs(
    inputs: &[String],
    skip: &[PathBuf],
    format: &InputFormat,
    opts: &CleanOptions,
) -> Result<(Vec<Document>, CleanReport), CleanError> {
    let paths = expand_inputs(inputs, skip)?;
    let mut report = CleanReport::default();
    let docs = read_documents(&paths, format, opts.strict, &mut report)?;
    let docs = clean_documents(docs, opts, &mut report);
    if docs.iter().all(|d| d.text.is_empty()) {
        return Err(CleanError::NothingLeft {
            report: Box::new(report),
        });
    }
    Ok((docs, report))
}
