//! Token shards in llm.c's format, written atomically and read in place through mmap.
//!
//! A shard is a 1,024-byte header of 256 little-endian `i32`, then the tokens:
//!
//! | header field | u16 shards (vocab ≤ 65,536) | u32 shards (larger vocabularies) |
//! |--------------|-----------------------------|----------------------------------|
//! | 0: magic     | 20240520                    | 20240801                         |
//! | 1: version   | 1                           | 7                                |
//! | 2: tokens    | N (0 < N < 2^31)            | N (0 < N < 2^31)                 |
//! | 3..256       | 0                           | 0                                |
//!
//! followed by exactly N little-endian tokens of 2 or 4 bytes (as llm.c's
//! `dev/data/data_common.py::write_datafile` writes them and `llmc/dataloader.h` reads them).
//!
//! [`ShardWriter`] streams tokens into an [`AtomicFile`] and patches the token count into the
//! header before committing it: a crash or an error never leaves a half-written shard under the
//! final name. [`Shard::open`] maps a file, checks magic, version and size, and serves
//! [`Tokens`], a view into the mapping without a copy.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::DataError;
use crate::atomic_file::AtomicFile;

// The token view reinterprets the mapped little-endian bytes as native integers.
#[cfg(target_endian = "big")]
compile_error!(
    "token shards are little-endian and read in place; big-endian hosts are not supported"
);

/// Header size in bytes: 256 × i32.
pub const HEADER_BYTES: usize = 256 * 4;
/// Magic number of shards with u16 tokens.
pub const MAGIC_U16: i32 = 20240520;
/// Version that goes with [`MAGIC_U16`].
pub const VERSION_U16: i32 = 1;
/// Magic number of shards with u32 tokens.
pub const MAGIC_U32: i32 = 20240801;
/// Version that goes with [`MAGIC_U32`].
pub const VERSION_U32: i32 = 7;
/// Largest vocabulary whose tokens fit in u16 shards.
pub const MAX_U16_VOCAB: usize = 1 << 16;
/// The header's token count is an i32: at most this many tokens per shard.
pub const MAX_SHARD_TOKENS: usize = i32::MAX as usize;

const FIX_REPREPARE: &str = "re-run cllm-prepare to write the shard again";

/// How tokens are stored in a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenWidth {
    /// 2 bytes per token, magic 20240520, version 1.
    U16,
    /// 4 bytes per token, magic 20240801, version 7.
    U32,
}

impl TokenWidth {
    /// The narrowest width for a vocabulary of `vocab_size` tokens (ids `0..vocab_size`).
    pub fn for_vocab(vocab_size: usize) -> TokenWidth {
        if vocab_size <= MAX_U16_VOCAB {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }

    /// Bytes per token.
    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }

    /// Header magic.
    pub fn magic(self) -> i32 {
        match self {
            TokenWidth::U16 => MAGIC_U16,
            TokenWidth::U32 => MAGIC_U32,
        }
    }

    /// Header version.
    pub fn version(self) -> i32 {
        match self {
            TokenWidth::U16 => VERSION_U16,
            TokenWidth::U32 => VERSION_U32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TokenWidth::U16 => "u16",
            TokenWidth::U32 => "u32",
        }
    }
}

/// The 1,024-byte header for `count` tokens of `width`.
fn header_bytes(width: TokenWidth, count: usize) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..4].copy_from_slice(&width.magic().to_le_bytes());
    h[4..8].copy_from_slice(&width.version().to_le_bytes());
    // count ≤ MAX_SHARD_TOKENS = i32::MAX, checked by the writer.
    h[8..12].copy_from_slice(&(count as i32).to_le_bytes());
    h
}

/// Writes one shard atomically: tokens are streamed into an [`AtomicFile`] beside the
/// destination; [`ShardWriter::finish`] writes the header and commits it (fsync, rename, fsync of
/// the directory). Dropping an unfinished writer removes the temporary file.
pub struct ShardWriter {
    path: PathBuf,
    out: AtomicFile,
    width: TokenWidth,
    vocab_size: usize,
    count: usize,
}

impl ShardWriter {
    /// Starts a shard at `path` for a vocabulary of `vocab_size` tokens; u16 tokens when
    /// `vocab_size ≤ 65,536`, u32 otherwise.
    pub fn create(path: impl AsRef<Path>, vocab_size: usize) -> Result<ShardWriter, DataError> {
        let path = path.as_ref().to_path_buf();
        if vocab_size == 0 || vocab_size > u32::MAX as usize + 1 {
            return Err(DataError::Invalid(format!(
                "{}: vocabulary size {vocab_size} cannot be stored (1 ..= 2^32)",
                path.display()
            )));
        }
        let mut out =
            AtomicFile::with_capacity(1 << 20, &path).map_err(DataError::io("create", &path))?;
        let width = TokenWidth::for_vocab(vocab_size);
        // Placeholder header; the count is patched in by `finish`.
        out.write_all(&header_bytes(width, 0))
            .map_err(DataError::io("write", &path))?;
        Ok(ShardWriter {
            path,
            out,
            width,
            vocab_size,
            count: 0,
        })
    }

    /// The token width this shard uses.
    pub fn width(&self) -> TokenWidth {
        self.width
    }

    /// Tokens written so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no token has been written yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends `tokens`. Every token must be below the vocabulary size, and a shard holds at most
    /// 2^31 − 1 tokens; on error nothing of `tokens` is written.
    pub fn push(&mut self, tokens: &[u32]) -> Result<(), DataError> {
        if let Some(i) = tokens.iter().position(|&t| t as usize >= self.vocab_size) {
            return Err(DataError::TokenOutOfRange {
                source_name: self.path.clone(),
                position: self.count + i,
                token: tokens[i],
                vocab_size: self.vocab_size,
            });
        }
        if self.count + tokens.len() > MAX_SHARD_TOKENS {
            return Err(DataError::Invalid(format!(
                "{}: {} tokens do not fit one shard (at most {MAX_SHARD_TOKENS}); \
                 use a smaller --shard-tokens",
                self.path.display(),
                self.count + tokens.len()
            )));
        }
        let mut buf = [0u8; 4096];
        let per = self.width.bytes();
        for chunk in tokens.chunks(buf.len() / per) {
            let n = chunk.len() * per;
            match self.width {
                TokenWidth::U16 => {
                    for (b, &t) in buf.chunks_exact_mut(2).zip(chunk) {
                        b.copy_from_slice(&(t as u16).to_le_bytes());
                    }
                }
                TokenWidth::U32 => {
                    for (b, &t) in buf.chunks_exact_mut(4).zip(chunk) {
                        b.copy_from_slice(&t.to_le_bytes());
                    }
                }
            }
            self.out
                .write_all(&buf[..n])
                .map_err(DataError::io("write", &self.path))?;
        }
        self.count += tokens.len();
        Ok(())
    }

    /// Writes the header and commits the shard into place. An empty shard is refused (llm.c's
    /// reader rejects it too) and leaves nothing behind. Returns the token count.
    pub fn finish(self) -> Result<usize, DataError> {
        if self.count == 0 {
            return Err(DataError::Empty {
                what: self.path.display().to_string(),
                problem: "no tokens to write".into(),
                fix: "give cllm-prepare some non-empty input",
            });
        }
        let ShardWriter {
            path,
            mut out,
            width,
            count,
            ..
        } = self;
        out.seek(SeekFrom::Start(0))
            .and_then(|_| out.write_all(&header_bytes(width, count)))
            .and_then(|_| out.commit())
            .map_err(DataError::io("write", &path))?;
        Ok(count)
    }
}

/// Writes `tokens` as one shard at `path` (atomically; see [`ShardWriter`]). Returns the width
/// chosen for `vocab_size`.
pub fn write_shard(
    path: impl AsRef<Path>,
    tokens: &[u32],
    vocab_size: usize,
) -> Result<TokenWidth, DataError> {
    let mut w = ShardWriter::create(path, vocab_size)?;
    w.push(tokens)?;
    let width = w.width();
    w.finish()?;
    Ok(width)
}

/// A view of a shard's tokens, borrowed from the mapping (or from memory) without a copy.
#[derive(Clone, Copy, Debug)]
pub enum Tokens<'a> {
    /// u16 tokens.
    U16(&'a [u16]),
    /// u32 tokens.
    U32(&'a [u32]),
}

impl<'a> Tokens<'a> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        match self {
            Tokens::U16(s) => s.len(),
            Tokens::U32(s) => s.len(),
        }
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token `i` widened to u32. Panics when `i` is out of bounds.
    pub fn get(&self, i: usize) -> u32 {
        match self {
            Tokens::U16(s) => s[i] as u32,
            Tokens::U32(s) => s[i],
        }
    }

    /// Copies `dst.len()` tokens starting at `start` into `dst`, widened to u32. Panics when the
    /// range is out of bounds.
    #[inline]
    pub fn copy_to(&self, start: usize, dst: &mut [u32]) {
        match self {
            Tokens::U16(s) => {
                let n = dst.len();
                for (d, &t) in dst.iter_mut().zip(&s[start..start + n]) {
                    *d = t as u32;
                }
            }
            Tokens::U32(s) => dst.copy_from_slice(&s[start..start + dst.len()]),
        }
    }

    /// The first token at or above `vocab_size`, as (position, token).
    pub fn first_out_of_range(&self, vocab_size: usize) -> Option<(usize, u32)> {
        match self {
            Tokens::U16(s) => s
                .iter()
                .position(|&t| t as usize >= vocab_size)
                .map(|i| (i, s[i] as u32)),
            Tokens::U32(s) => s
                .iter()
                .position(|&t| t as usize >= vocab_size)
                .map(|i| (i, s[i])),
        }
    }
}

/// One shard file, mapped read-only and checked.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    width: TokenWidth,
    len: usize,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("path", &self.path)
            .field("width", &self.width)
            .field("len", &self.len)
            .finish()
    }
}

impl Shard {
    /// Maps `path` and checks its header (magic, version, token count) against the file size.
    /// Every error names the file, the field, what was found and the fix.
    pub fn open(path: impl AsRef<Path>) -> Result<Shard, DataError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(DataError::io("open", &path))?;
        let size = file
            .metadata()
            .map_err(DataError::io("read metadata of", &path))?
            .len();
        let bad = |problem: String, fix: &'static str| DataError::BadShard {
            path: path.clone(),
            problem,
            fix,
        };
        let too_short = |size: u64| {
            bad(
                format!(
                    "the file is {size} bytes, shorter than the {HEADER_BYTES}-byte header: \
                     it is truncated or not a token shard"
                ),
                FIX_REPREPARE,
            )
        };
        if size < HEADER_BYTES as u64 {
            return Err(too_short(size));
        }
        // SAFETY: the mapping is read-only and private to this process. Shards are written under
        // a temporary name and renamed into place, so no writer of ours ever modifies a file
        // after it can be opened here; another program truncating or rewriting the file while
        // it is mapped could change or revoke the pages (as with any mmap reader), which the
        // caller accepts by naming the file as training data.
        let map = unsafe { Mmap::map(&file) }.map_err(DataError::io("map", &path))?;
        // The checks below are against the mapping, which may be shorter than the size read
        // above if the file was cut short in between.
        let size = map.len() as u64;
        if size < HEADER_BYTES as u64 {
            return Err(too_short(size));
        }
        let field = |i: usize| i32::from_le_bytes(map[4 * i..4 * i + 4].try_into().unwrap());
        let (magic, version, count) = (field(0), field(1), field(2));
        let width = match magic {
            MAGIC_U16 => TokenWidth::U16,
            MAGIC_U32 => TokenWidth::U32,
            _ => {
                return Err(bad(
                    format!(
                        "header field 0 (magic) is {magic}, expected {MAGIC_U16} (u16 tokens) or \
                         {MAGIC_U32} (u32 tokens): not an llm.c token shard"
                    ),
                    "pass token shards written by cllm-prepare (or llm.c's data scripts)",
                ))
            }
        };
        if version != width.version() {
            return Err(bad(
                format!(
                    "header field 1 (version) is {version}, but magic {magic} ({} tokens) goes \
                     with version {}",
                    width.name(),
                    width.version()
                ),
                FIX_REPREPARE,
            ));
        }
        if count <= 0 {
            return Err(bad(
                format!("header field 2 (token count) is {count}: the shard holds no tokens"),
                "re-run cllm-prepare; it writes no empty shards",
            ));
        }
        let len = count as usize;
        let want = len as u64 * width.bytes() as u64;
        let have = size - HEADER_BYTES as u64;
        if have != want {
            let (problem, fix) = if have < want {
                ("the file is truncated", FIX_REPREPARE)
            } else {
                (
                    "the file has bytes after the last token (appended to, or a stale header)",
                    FIX_REPREPARE,
                )
            };
            return Err(bad(
                format!(
                    "header says {len} tokens ({want} bytes of {} tokens) but the file holds \
                     {have} bytes of tokens: {problem}",
                    width.name()
                ),
                fix,
            ));
        }
        Ok(Shard {
            path,
            map,
            width,
            len,
        })
    }

    /// The file this shard was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: [`Shard::open`] refuses empty shards.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The stored token width.
    pub fn width(&self) -> TokenWidth {
        self.width
    }

    /// The tokens, in place in the mapping.
    pub fn tokens(&self) -> Tokens<'_> {
        // The mapping starts on a page boundary and the header is 1,024 bytes, so the token bytes
        // start 1,024-byte aligned: aligned for u16 and u32. `open` checked that exactly
        // `len × width` bytes follow the header, so the casts cannot fail.
        let bytes = &self.map[HEADER_BYTES..];
        match self.width {
            TokenWidth::U16 => Tokens::U16(bytemuck::cast_slice(bytes)),
            TokenWidth::U32 => Tokens::U32(bytemuck::cast_slice(bytes)),
        }
    }

    /// Checks that every token is below `vocab_size`; the error reports the first one that is not
    /// (its position in this shard and its value).
    pub fn check_vocab(&self, vocab_size: usize) -> Result<(), DataError> {
        match self.tokens().first_out_of_range(vocab_size) {
            None => Ok(()),
            Some((position, token)) => Err(DataError::TokenOutOfRange {
                source_name: self.path.clone(),
                position,
                token,
                vocab_size,
            }),
        }
    }
}
