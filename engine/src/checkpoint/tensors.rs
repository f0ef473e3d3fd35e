//! safetensors files of named f32 tensors: reading with validation against an expected table,
//! straight into the caller's memory, and writing from borrowed slices.
//!
//! Reading streams each tensor from the file into the destination the caller's [`TensorSink`]
//! hands out (for an F32 file on a little-endian machine, `read` lands in that slice directly:
//! no intermediate buffer). The header is parsed and every name, dtype and shape checked before
//! any data is read, so a refused file never touches the destination; an I/O error during the
//! data phase leaves the destinations partly filled.
//!
//! Names: GPT-2 names without the `transformer.` prefix (`h.0.attn.c_attn.weight`) are what the
//! caller sees; the file may carry them with or without the prefix. Writing uses the names the
//! caller gives: cllm gives them without the prefix, like the `openai-community/gpt2` checkpoint
//! and the names DESIGN.md lists; `transformers` loads both forms into `GPT2LMHeadModel`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use safetensors::tensor::Metadata;
use safetensors::Dtype;
use serde_json::{json, Map, Value};

use super::atomic::FileSource;
use super::CheckpointError;
use crate::model::GptConfig;

/// The prefix `save_pretrained` puts before the GPT-2 body's tensors.
pub const HF_PREFIX: &str = "transformer.";

/// The largest header the reader accepts (the safetensors crate's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// Bytes converted per chunk when the file's dtype is not F32.
const CHUNK_BYTES: usize = 1 << 16;

/// A tensor the caller expects: its GPT-2 name without prefix, and its shape.
pub type Expected = (String, Vec<usize>);

/// The tensors of `GPT2LMHeadModel` for `cfg`, in the order of its `named_parameters()`: names
/// without the `transformer.` prefix, 2-D weights in Conv1D layout (in, out), `wte` with V rows
/// (not the padded Vp), no `lm_head.weight` (tied to `wte`).
pub fn gpt2_tensor_table(cfg: &GptConfig) -> Vec<Expected> {
    crate::model::ParamLayout::new(*cfg).expected_tensors()
}

/// Where loaded tensors go. [`read_tensors_into`] calls [`TensorSink::dst`] once per expected
/// tensor, in the order of the expected table, after the whole file has been validated.
pub trait TensorSink {
    /// The destination of tensor `index` of the expected table (`name` without prefix, `shape` as
    /// expected). Its length must be the product of `shape`.
    fn dst(&mut self, index: usize, name: &str, shape: &[usize]) -> &mut [f32];
}

/// One loaded tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// GPT-2 name without prefix.
    pub name: String,
    /// Shape as stored (Conv1D layout for 2-D GPT-2 weights).
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Every expected tensor of a file, owned, with the file's string metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedTensors {
    /// In the order of the expected table.
    pub tensors: Vec<Tensor>,
    /// The file's `__metadata__` (safetensors files written by torch say `format: pt`).
    pub metadata: BTreeMap<String, String>,
}

impl LoadedTensors {
    /// The tensor called `name` (without prefix).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Reads every tensor of `expected` from the safetensors file at `path` into owned vectors.
/// See [`read_tensors_into`] for what is accepted and refused.
pub fn load_tensors(path: &Path, expected: &[Expected]) -> Result<LoadedTensors, CheckpointError> {
    struct Owned(Vec<Tensor>);
    impl TensorSink for Owned {
        fn dst(&mut self, index: usize, _name: &str, _shape: &[usize]) -> &mut [f32] {
            &mut self.0[index].data
        }
    }
    let mut sink = Owned(
        expected
            .iter()
            .map(|(name, shape)| Tensor {
                name: name.clone(),
                shape: shape.clone(),
                data: vec![0.0; shape.iter().product()],
            })
            .collect(),
    );
    let metadata = read_tensors_into(path, expected, &mut sink)?;
    Ok(LoadedTensors {
        tensors: sink.0,
        metadata,
    })
}

/// Calls `f(name, shape, data)` for every tensor of `expected`, in table order, with its values
/// in a scratch buffer reused from tensor to tensor (one copy more than [`read_tensors_into`]).
pub fn for_each_tensor(
    path: &Path,
    expected: &[Expected],
    mut f: impl FnMut(&str, &[usize], &[f32]),
) -> Result<BTreeMap<String, String>, CheckpointError> {
    let largest = expected
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .max()
        .unwrap_or(0);
    let mut scratch = vec![0.0f32; largest];
    let file = open_validated(path, expected)?;
    for (i, (name, shape)) in expected.iter().enumerate() {
        let dst = &mut scratch[..shape.iter().product::<usize>()];
        file.read_tensor(i, dst)?;
        f(name, shape, dst);
    }
    Ok(file.metadata)
}

/// Reads the tensors of `expected` from the safetensors file at `path` into the slices `sink`
/// hands out, and returns the file's string metadata.
///
/// Accepted: names with or without the `transformer.` prefix; dtypes F32 (copied as is), F64
/// (rounded to nearest f32), F16 and BF16 (exact); an `lm_head.weight` equal to `wte.weight` after
/// conversion (a tied head saved twice); the causal-mask buffers `h.N.attn.bias` and
/// `h.N.attn.masked_bias` that older transformers versions saved (ignored).
///
/// Refused, each naming the file and the tensor: a header or size that does not match the file
/// (truncation), a missing, unexpected, duplicated or mis-shaped tensor, another dtype, an
/// `lm_head.weight` that differs from `wte.weight`, and a value that is NaN or infinite after
/// conversion.
pub fn read_tensors_into(
    path: &Path,
    expected: &[Expected],
    sink: &mut dyn TensorSink,
) -> Result<BTreeMap<String, String>, CheckpointError> {
    let file = open_validated(path, expected)?;
    for (i, (name, shape)) in expected.iter().enumerate() {
        let numel: usize = shape.iter().product();
        let dst = sink.dst(i, name, shape);
        if dst.len() != numel {
            return Err(CheckpointError::InvalidTensor {
                tensor: name.clone(),
                problem: format!(
                    "the destination holds {} values, the shape {shape:?} needs {numel}",
                    dst.len()
                ),
            });
        }
        file.read_tensor(i, dst)?;
    }
    Ok(file.metadata)
}

/// Where one stored tensor lives in the file.
#[derive(Debug, Clone)]
struct Stored {
    /// The name as stored (with the prefix if the file has it), for error messages.
    name: String,
    dtype: Dtype,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

/// A safetensors file whose header has been checked against an expected table.
struct Validated<'a> {
    path: &'a Path,
    file: File,
    expected: &'a [Expected],
    /// Parallel to `expected`.
    stored: Vec<Stored>,
    metadata: BTreeMap<String, String>,
}

/// Opens the safetensors file at `path` and checks its header: the length, the JSON, the offsets,
/// and that the file's size is what the header describes. Returns the file, where the data
/// starts, and the parsed header.
fn open_header(path: &Path) -> Result<(File, u64, Metadata), CheckpointError> {
    let mut file = File::open(path).map_err(CheckpointError::io("open", path))?;
    let size = file
        .metadata()
        .map_err(CheckpointError::io("stat", path))?
        .len();
    let bad = |problem: String| CheckpointError::SafetensorsHeader {
        path: path.to_owned(),
        problem,
    };

    let mut len8 = [0u8; 8];
    if size < 8 {
        return Err(bad(format!(
            "{size} bytes, shorter than the 8-byte header length"
        )));
    }
    file.read_exact(&mut len8)
        .map_err(CheckpointError::io("read", path))?;
    let n = u64::from_le_bytes(len8);
    if n > MAX_HEADER {
        return Err(bad(format!("header length {n} exceeds {MAX_HEADER} bytes")));
    }
    if 8 + n > size {
        return Err(bad(format!(
            "the header is {n} bytes but the file has only {} after the length (truncated)",
            size - 8
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(CheckpointError::io("read", path))?;
    let header =
        std::str::from_utf8(&header).map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
    let meta: Metadata =
        serde_json::from_str(header).map_err(|e| bad(format!("header does not parse: {e}")))?;
    let data_start = 8 + n;
    // The header's offsets may end anywhere up to usize::MAX, past any file. Every tensor ends
    // at or before data_len, so once this sum fits, `data_start + offset` does too.
    let Some(wanted) = data_start.checked_add(meta.data_len() as u64) else {
        return Err(bad(format!(
            "its data offsets end at byte {} after the header, past any possible file size",
            meta.data_len()
        )));
    };
    if wanted != size {
        return Err(CheckpointError::SafetensorsSize {
            path: path.to_owned(),
            size,
            expected: wanted,
        });
    }
    Ok((file, data_start, meta))
}

/// Checks that `path` is a whole, readable safetensors file whose tensors all have a dtype cllm
/// reads, without an expected table, and returns each tensor's shape by name (without the
/// `transformer.` prefix). For telling a damaged weights file apart from one that belongs to
/// another config.
pub(crate) fn stored_shapes(path: &Path) -> Result<BTreeMap<String, Vec<usize>>, CheckpointError> {
    let (_, data_start, meta) = open_header(path)?;
    let mut shapes = BTreeMap::new();
    let sorted: BTreeMap<String, _> = meta.tensors().into_iter().collect();
    for (stored_name, info) in sorted {
        let name = stored_name.strip_prefix(HF_PREFIX).unwrap_or(&stored_name);
        if is_mask_buffer(name) {
            continue;
        }
        check_dtype(
            path,
            &Stored {
                name: stored_name.clone(),
                dtype: info.dtype,
                start: data_start + info.data_offsets.0 as u64,
                end: data_start + info.data_offsets.1 as u64,
            },
        )?;
        shapes.insert(name.to_owned(), info.shape.clone());
    }
    Ok(shapes)
}

fn open_validated<'a>(
    path: &'a Path,
    expected: &'a [Expected],
) -> Result<Validated<'a>, CheckpointError> {
    let (file, data_start, meta) = open_header(path)?;
    // Map stored names to prefix-free names.
    let index: HashMap<&str, usize> = expected
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    let mut stored: Vec<Option<Stored>> = vec![None; expected.len()];
    let mut lm_head: Option<(Stored, Vec<usize>)> = None;
    let mut unexpected = Vec::new();
    let mut names: Vec<String> = meta.offset_keys();
    names.sort();
    for stored_name in names {
        let info = meta
            .info(&stored_name)
            .expect("offset_keys lists the header's own names");
        let name = stored_name.strip_prefix(HF_PREFIX).unwrap_or(&stored_name);
        let entry = Stored {
            name: stored_name.clone(),
            dtype: info.dtype,
            start: data_start + info.data_offsets.0 as u64,
            end: data_start + info.data_offsets.1 as u64,
        };
        match index.get(name) {
            Some(&i) => {
                if stored[i].is_some() {
                    return Err(CheckpointError::DuplicateTensor {
                        path: path.to_owned(),
                        tensor: name.to_owned(),
                    });
                }
                check_dtype(path, &entry)?;
                if info.shape != expected[i].1 {
                    return Err(CheckpointError::Shape {
                        path: path.to_owned(),
                        tensor: stored_name.clone(),
                        expected: expected[i].1.clone(),
                        found: info.shape.clone(),
                    });
                }
                stored[i] = Some(entry);
            }
            None if stored_name == "lm_head.weight" && index.contains_key("wte.weight") => {
                lm_head = Some((entry, info.shape.clone()));
            }
            None if is_mask_buffer(name) => {}
            None => unexpected.push(stored_name.clone()),
        }
    }
    if !unexpected.is_empty() {
        return Err(CheckpointError::UnexpectedTensors {
            path: path.to_owned(),
            tensors: unexpected,
        });
    }
    let missing: Vec<String> = expected
        .iter()
        .zip(&stored)
        .filter(|(_, s)| s.is_none())
        .map(|((n, _), _)| n.clone())
        .collect();
    if !missing.is_empty() {
        return Err(CheckpointError::MissingTensors {
            path: path.to_owned(),
            tensors: missing,
        });
    }
    let stored: Vec<Stored> = stored
        .into_iter()
        .map(|s| s.expect("none missing"))
        .collect();
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let validated = Validated {
        path,
        file,
        expected,
        stored,
        metadata,
    };

    if let Some((head, shape)) = lm_head {
        let wte = index["wte.weight"];
        check_dtype(path, &head)?;
        if shape != expected[wte].1 {
            return Err(CheckpointError::Shape {
                path: path.to_owned(),
                tensor: head.name,
                expected: expected[wte].1.clone(),
                found: shape,
            });
        }
        if !validated.same_values(&head, &validated.stored[wte])? {
            return Err(CheckpointError::UntiedHead {
                path: path.to_owned(),
            });
        }
    }
    Ok(validated)
}

/// `h.<n>.attn.bias` / `h.<n>.attn.masked_bias`: constant causal-mask buffers, not parameters.
fn is_mask_buffer(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("h.") else {
        return false;
    };
    let Some((layer, tail)) = rest.split_once('.') else {
        return false;
    };
    !layer.is_empty()
        && layer.bytes().all(|b| b.is_ascii_digit())
        && (tail == "attn.bias" || tail == "attn.masked_bias")
}

fn check_dtype(path: &Path, s: &Stored) -> Result<(), CheckpointError> {
    match s.dtype {
        Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16 => Ok(()),
        other => Err(CheckpointError::Dtype {
            path: path.to_owned(),
            tensor: s.name.clone(),
            dtype: format!("{other:?}"),
        }),
    }
}

impl Validated<'_> {
    /// Reads stored tensor `i` of the expected table into `dst` (already of the right length).
    fn read_tensor(&self, i: usize, dst: &mut [f32]) -> Result<(), CheckpointError> {
        let s = &self.stored[i];
        self.read_f32(s, dst)?;
        if let Some(index) = dst.iter().position(|x| !x.is_finite()) {
            return Err(CheckpointError::NonFinite {
                path: self.path.to_owned(),
                tensor: self.expected[i].0.clone(),
                index,
                value: dst[index],
            });
        }
        Ok(())
    }

    /// Reads `s` converted to f32 into `dst` (`dst.len()` = its element count).
    fn read_f32(&self, s: &Stored, dst: &mut [f32]) -> Result<(), CheckpointError> {
        let io_err = CheckpointError::io("read", self.path);
        let mut f = &self.file;
        f.seek(SeekFrom::Start(s.start))
            .map_err(CheckpointError::io("seek", self.path))?;
        if s.dtype == Dtype::F32 {
            f.read_exact(bytemuck::cast_slice_mut(dst))
                .map_err(io_err)?;
            if cfg!(target_endian = "big") {
                for x in dst.iter_mut() {
                    *x = f32::from_bits(u32::from_le(x.to_bits()));
                }
            }
            return Ok(());
        }
        let width = s.dtype.bitsize() / 8;
        let mut buf = vec![0u8; CHUNK_BYTES];
        for chunk in dst.chunks_mut(CHUNK_BYTES / width) {
            let bytes = &mut buf[..chunk.len() * width];
            f.read_exact(bytes)
                .map_err(CheckpointError::io("read", self.path))?;
            convert(s.dtype, bytes, chunk);
        }
        Ok(())
    }

    /// Whether two stored tensors of equal element count hold the same f32 values (bitwise).
    fn same_values(&self, a: &Stored, b: &Stored) -> Result<bool, CheckpointError> {
        let count = |s: &Stored| (s.end - s.start) as usize / (s.dtype.bitsize() / 8);
        let n = count(a);
        if n != count(b) {
            return Ok(false);
        }
        let step = CHUNK_BYTES / 4;
        let (mut xa, mut xb) = (vec![0.0f32; step.min(n)], vec![0.0f32; step.min(n)]);
        let mut done = 0;
        while done < n {
            let m = step.min(n - done);
            let part = |s: &Stored, off: usize| Stored {
                name: s.name.clone(),
                dtype: s.dtype,
                start: s.start + (off * (s.dtype.bitsize() / 8)) as u64,
                end: s.start + ((off + m) * (s.dtype.bitsize() / 8)) as u64,
            };
            self.read_f32(&part(a, done), &mut xa[..m])?;
            self.read_f32(&part(b, done), &mut xb[..m])?;
            if xa[..m]
                .iter()
                .zip(&xb[..m])
                .any(|(p, q)| p.to_bits() != q.to_bits())
            {
                return Ok(false);
            }
            done += m;
        }
        Ok(true)
    }
}

/// Converts little-endian `bytes` of `dtype` (F64, F16 or BF16) into `out`.
fn convert(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F64 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32;
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        other => unreachable!("check_dtype admits no {other:?}"),
    }
}

/// IEEE 754 binary16 to binary32, exact (every half value is a float value).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: man · 2^-24, exactly representable as a normal f32.
        (0, _) => {
            let v = man as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// A tensor to write: name, shape and its values borrowed from the caller (an arena slice).
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// The stored name.
    pub name: &'a str,
    /// The shape; its product must be `data.len()`.
    pub shape: &'a [usize],
    /// Row-major values.
    pub data: &'a [f32],
}

/// A validated safetensors file ready to be written: the header is built up front and the tensor
/// data is streamed from the borrowed slices when written (no copy on little-endian machines).
/// It is a [`FileSource`], so it goes straight into [`super::write_checkpoint_dir`].
#[derive(Debug, Clone)]
pub struct SafetensorsWriter<'a> {
    /// The 8-byte length, then the JSON header padded with spaces to a multiple of 8.
    head: Vec<u8>,
    tensors: Vec<&'a [f32]>,
}

impl<'a> SafetensorsWriter<'a> {
    /// Checks the tensors (non-empty unique names, shape product = data length) and the metadata,
    /// and builds the header. All tensors are stored as F32, in the order given. The metadata is
    /// written with `format: pt` added, which `transformers` requires to load a file; a
    /// different `format` value is refused.
    pub fn new(
        tensors: &[TensorRef<'a>],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, CheckpointError> {
        let mut header = Map::new();
        let mut meta: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        match metadata.get("format").map(String::as_str) {
            None | Some("pt") => {
                meta.insert("format".into(), json!("pt"));
            }
            Some(other) => {
                return Err(CheckpointError::InvalidMetadata {
                    key: "format".into(),
                    problem: format!("is {other:?}; transformers loads only \"pt\" files"),
                })
            }
        }
        header.insert("__metadata__".into(), Value::Object(meta));
        let mut offset = 0usize;
        for t in tensors {
            let bad = |problem: String| CheckpointError::InvalidTensor {
                tensor: t.name.to_owned(),
                problem,
            };
            if t.name.is_empty() || t.name == "__metadata__" {
                return Err(bad("the name is empty or reserved".into()));
            }
            let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if numel != Some(t.data.len()) {
                return Err(bad(format!(
                    "shape {:?} does not hold {} values",
                    t.shape,
                    t.data.len()
                )));
            }
            let end = offset + 4 * t.data.len();
            let info = json!({ "dtype": "F32", "shape": t.shape, "data_offsets": [offset, end] });
            if header.insert(t.name.to_owned(), info).is_some() {
                return Err(bad("the name is given twice".into()));
            }
            offset = end;
        }
        let mut json =
            serde_json::to_vec(&Value::Object(header)).expect("a JSON value always serializes");
        json.resize(json.len().next_multiple_of(8), b' ');
        let mut head = (json.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(&json);
        Ok(SafetensorsWriter {
            head,
            tensors: tensors.iter().map(|t| t.data).collect(),
        })
    }

    /// The size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.head.len() as u64 + self.tensors.iter().map(|t| 4 * t.len() as u64).sum::<u64>()
    }
}

impl FileSource for SafetensorsWriter<'_> {
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&self.head)?;
        for t in &self.tensors {
            if cfg!(target_endian = "little") {
                w.write_all(bytemuck::cast_slice(t))?;
            } else {
                for chunk in t.chunks(CHUNK_BYTES / 4) {
                    let le: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
                    w.write_all(&le)?;
                }
            }
        }
        Ok(())
    }
}
