//! Reading documents: inputs named as files, directories or globs; text files (one document per
//! file) or JSONL (one document per line, from a string field); bytes decoded as UTF-8 with
//! invalid sequences replaced by U+FFFD (counted) or refused under `strict`.
//!
//! Text never contains a NUL byte: a file holding one anywhere (an executable, an archive, an
//! image, UTF-16 text) is binary and is skipped whole, in every mode and format, before it is
//! decoded; it counts as one document dropped as [`DropReason::Binary`], named in the report.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{CleanError, CleanReport, DropReason};

/// How input files hold documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// Each file is one document.
    Text,
    /// Each non-blank line is a JSON object whose string field `field` is one document.
    Jsonl {
        /// The field holding the text (`--jsonl-field text`).
        field: String,
    },
}

/// One document and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The file, with `:LINE` for a JSONL document.
    pub source: String,
    /// The text.
    pub text: String,
}

/// Expands inputs into files, in a deterministic order: a file stands for itself; a directory for
/// every regular file under it (recursively, hidden entries skipped, sorted by path); anything
/// containing `*`, `?` or `[` is a glob pattern (matches sorted, directories expanded). An input
/// that names nothing, or a pattern matching nothing, is an error naming it.
///
/// Paths in `skip` (files or directories, e.g. the files a run will write) are left out wherever
/// they turn up, under any spelling (they are compared canonicalized); one that does not exist is
/// ignored. An input holding nothing but skipped paths is an error that says so.
pub fn expand_inputs(inputs: &[String], skip: &[PathBuf]) -> Result<Vec<PathBuf>, CleanError> {
    if inputs.is_empty() {
        return Err(CleanError::NoInput {
            input: String::new(),
            problem: "no inputs given".into(),
        });
    }
    let mut walk = Walk {
        skip: skip
            .iter()
            .filter_map(|p| fs::canonicalize(p).ok())
            .collect(),
        skipped: 0,
        out: Vec::new(),
    };
    for input in inputs {
        let (before, skipped_before) = (walk.out.len(), walk.skipped);
        if input.contains(['*', '?', '[']) {
            let paths = glob::glob(input).map_err(|e| CleanError::NoInput {
                input: input.clone(),
                problem: format!("bad glob pattern: {e}"),
            })?;
            let mut matched = Vec::new();
            for entry in paths {
                matched.push(entry.map_err(|e| CleanError::Io {
                    op: "list",
                    path: e.path().to_path_buf(),
                    source: e.into(),
                })?);
            }
            matched.sort();
            for p in matched {
                walk.push(&p)?;
            }
        } else {
            let p = Path::new(input);
            if !p.exists() {
                return Err(CleanError::NoInput {
                    input: input.clone(),
                    problem: "no such file or directory".into(),
                });
            }
            walk.push(p)?;
        }
        if walk.out.len() == before {
            let problem = if walk.skipped > skipped_before {
                "holds only files this run writes (its own output), which are never read \
                 as input"
            } else {
                "matches no file"
            };
            return Err(CleanError::NoInput {
                input: input.clone(),
                problem: problem.into(),
            });
        }
    }
    Ok(walk.out)
}

/// The files found so far, and the canonical paths to leave out.
struct Walk {
    skip: Vec<PathBuf>,
    skipped: usize,
    out: Vec<PathBuf>,
}

impl Walk {
    /// Whether `p` is one of the paths to leave out (canonicalized only when its name matches).
    fn skips(&self, p: &Path) -> bool {
        let Some(name) = p.file_name() else {
            return false;
        };
        self.skip.iter().any(|s| s.file_name() == Some(name))
            && fs::canonicalize(p).is_ok_and(|c| self.skip.contains(&c))
    }

    /// Pushes `p` if it is a file, or every file under it if it is a directory.
    fn push(&mut self, p: &Path) -> Result<(), CleanError> {
        if self.skips(p) {
            self.skipped += 1;
        } else if p.is_dir() {
            let mut entries = Vec::new();
            for e in fs::read_dir(p).map_err(CleanError::io("list", p))? {
                let e = e.map_err(CleanError::io("list", p))?;
                if !e.file_name().to_string_lossy().starts_with('.') {
                    entries.push(e.path());
                }
            }
            entries.sort();
            for e in entries {
                self.push(&e)?;
            }
        } else if p.is_file() {
            self.out.push(p.to_path_buf());
        }
        Ok(())
    }
}

/// Decodes `bytes` as UTF-8. Each maximal invalid sequence becomes one U+FFFD (as
/// `String::from_utf8_lossy` does) and is counted in `report.invalid_utf8`; under `strict` the
/// first one is an error naming `source` and its byte offset.
pub fn decode(
    bytes: Vec<u8>,
    source: &str,
    strict: bool,
    report: &mut CleanReport,
) -> Result<String, CleanError> {
    let bytes = match String::from_utf8(bytes) {
        Ok(s) => return Ok(s),
        Err(e) => {
            if strict {
                return Err(CleanError::NotUtf8 {
                    source_name: source.to_string(),
                    offset: e.utf8_error().valid_up_to(),
                });
            }
            e.into_bytes()
        }
    };
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
            report.invalid_utf8 += 1;
        }
    }
    Ok(out)
}

/// Whether `bytes` are a binary file's rather than text's: they hold a NUL byte.
pub fn is_binary(bytes: &[u8]) -> bool {
    bytes.contains(&0)
}

/// Reads every document from `paths` in order, counting bytes read in `report.bytes_in`. A binary
/// file ([`is_binary`]) is skipped: one document in `report.docs_in`, dropped as
/// [`DropReason::Binary`], its name in `report.binary_files`.
pub fn read_documents(
    paths: &[PathBuf],
    format: &InputFormat,
    strict: bool,
    report: &mut CleanReport,
) -> Result<Vec<Document>, CleanError> {
    let mut docs = Vec::new();
    for path in paths {
        let bytes = fs::read(path).map_err(CleanError::io("read", path))?;
        report.bytes_in += bytes.len() as u64;
        let name = path.display().to_string();
        if is_binary(&bytes) {
            report.docs_in += 1;
            report.dropped[DropReason::Binary as usize] += 1;
            report.binary_files.push(name);
            continue;
        }
        let text = decode(bytes, &name, strict, report)?;
        match format {
            InputFormat::Text => docs.push(Document { source: name, text }),
            InputFormat::Jsonl { field } => {
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let at = format!("{name}:{}", i + 1);
                    let bad = |problem: String| CleanError::Jsonl {
                        at: at.clone(),
                        problem,
                    };
                    let v: Value =
                        serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
                    let text = match v.get(field.as_str()) {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => {
                            return Err(bad(format!(
                                "field {field:?} is not a string but {}",
                                json_kind(other)
                            )))
                        }
                        None => {
                            return Err(bad(format!("no field {field:?}; pass --jsonl-field NAME")))
                        }
                    };
                    docs.push(Document { source: at, text });
                }
            }
        }
    }
    Ok(docs)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
