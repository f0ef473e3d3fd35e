//! Import of GPT-2's `encoder.json` + `vocab.bpe`.
//!
//! Both files write token bytes through GPT-2's byte-to-unicode map: the printable bytes
//! `!..=~`, `¡..=¬` and `®..=ÿ` stand for themselves, the other 68 bytes (controls, space,
//! DEL, NBSP, soft hyphen) for U+0100, U+0101, ... in byte order. `encoder.json` maps each
//! token's mapped text to its id; `vocab.bpe` lists the merges in rank order after a
//! `#version` line. GPT-2's ids are exactly our layout: the 256 byte tokens are ids 0..256,
//! merge `i` (line `i + 2` of vocab.bpe) makes id `256 + i`, and `<|endoftext|>` is 50256.

use std::path::Path;

use rustc_hash::FxHashMap;
use serde_json::Value;

use super::{Origin, Tokenizer, TokenizerError, ENDOFTEXT};

const FIX: &str =
    "use GPT-2's original encoder.json and vocab.bpe (copies ship in engine/assets/gpt2)";

static ENCODER_JSON: &[u8] = include_bytes!("../../assets/gpt2/encoder.json");
static VOCAB_BPE: &[u8] = include_bytes!("../../assets/gpt2/vocab.bpe");

/// GPT-2's byte-to-unicode map: the character that stands for each byte.
fn byte_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).expect("a Latin-1 code point")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("U+0100..U+0143")
        };
    }
    map
}

fn invalid(path: &Path, field: String, problem: String) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.to_path_buf(),
        field,
        problem,
        fix: FIX,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|source| TokenizerError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

impl Tokenizer {
    /// GPT-2's tokenizer from its `encoder.json` and `vocab.bpe`; encodes to exactly the ids
    /// tiktoken's r50k_base gives.
    pub fn gpt2(encoder_json: &Path, vocab_bpe: &Path) -> Result<Tokenizer, TokenizerError> {
        Self::gpt2_from_bytes(
            &read(encoder_json)?,
            encoder_json,
            &read(vocab_bpe)?,
            vocab_bpe,
        )
    }

    /// GPT-2's tokenizer from the copies of `encoder.json` and `vocab.bpe` built into cllm
    /// (engine/assets/gpt2, MIT license): works offline.
    pub fn gpt2_builtin() -> Tokenizer {
        Self::gpt2_from_bytes(
            ENCODER_JSON,
            Path::new("engine/assets/gpt2/encoder.json"),
            VOCAB_BPE,
            Path::new("engine/assets/gpt2/vocab.bpe"),
        )
        .expect("the built-in GPT-2 files are valid")
    }

    fn gpt2_from_bytes(
        encoder: &[u8],
        encoder_path: &Path,
        vocab: &[u8],
        vocab_path: &Path,
    ) -> Result<Tokenizer, TokenizerError> {
        let json: Value =
            serde_json::from_slice(encoder).map_err(|source| TokenizerError::Json {
                path: encoder_path.to_path_buf(),
                source,
            })?;
        let Value::Object(map) = json else {
            return Err(invalid(
                encoder_path,
                "(top level)".into(),
                "is not an object".into(),
            ));
        };
        let mut unicode_to_byte: FxHashMap<char, u8> = FxHashMap::default();
        for (b, c) in byte_to_unicode().into_iter().enumerate() {
            unicode_to_byte.insert(c, b as u8);
        }
        // Mapped token text -> id, checking the text maps back to bytes.
        let mut ids: FxHashMap<&str, u32> = FxHashMap::default();
        let mut eot = None;
        for (text, id) in &map {
            let id = id
                .as_u64()
                .filter(|&v| v < map.len() as u64)
                .ok_or_else(|| {
                    invalid(
                        encoder_path,
                        text.clone(),
                        format!("has id {id}, not one of 0..{}", map.len()),
                    )
                })? as u32;
            if text == ENDOFTEXT {
                eot = Some(id);
                continue;
            }
            if let Some(c) = text.chars().find(|c| !unicode_to_byte.contains_key(c)) {
                return Err(invalid(
                    encoder_path,
                    text.clone(),
                    format!("contains {c:?}, which is not in GPT-2's byte-to-unicode map"),
                ));
            }
            ids.insert(text.as_str(), id);
        }
        let mut byte_ids = [0u32; 256];
        for (b, c) in byte_to_unicode().into_iter().enumerate() {
            let mut buf = [0u8; 4];
            byte_ids[b] = *ids.get(&*c.encode_utf8(&mut buf)).ok_or_else(|| {
                invalid(
                    encoder_path,
                    c.to_string(),
                    format!("(byte {b}) is missing"),
                )
            })?;
        }
        let vocab_text = std::str::from_utf8(vocab)
            .map_err(|e| invalid(vocab_path, "(file)".into(), format!("is not UTF-8: {e}")))?;
        let mut merges = Vec::new();
        let mut joined = String::new();
        for (n, line) in vocab_text.lines().enumerate() {
            if (n == 0 && line.starts_with("#version")) || line.is_empty() {
                continue;
            }
            let field = || format!("line {}", n + 1);
            let (a, b) = line.split_once(' ').ok_or_else(|| {
                invalid(
                    vocab_path,
                    field(),
                    format!("is {line:?}, not two tokens and a space"),
                )
            })?;
            let id_of = |t: &str| {
                ids.get(t).copied().ok_or_else(|| {
                    invalid(
                        vocab_path,
                        field(),
                        format!("names {t:?}, which encoder.json lacks"),
                    )
                })
            };
            let (ia, ib) = (id_of(a)?, id_of(b)?);
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let want = 256 + merges.len() as u32;
            let got = id_of(&joined)?;
            if got != want {
                return Err(invalid(
                    vocab_path,
                    field(),
                    format!("makes {joined:?}, whose id in encoder.json is {got}, not {want}"),
                ));
            }
            merges.push((ia, ib));
        }
        let eot =
            eot.ok_or_else(|| invalid(encoder_path, ENDOFTEXT.into(), "is missing".into()))?;
        let want_eot = 256 + merges.len() as u32;
        if eot != want_eot || map.len() != 257 + merges.len() {
            return Err(invalid(
                encoder_path,
                ENDOFTEXT.into(),
                format!(
                    "has id {eot} among {} entries; with the {} merges of {} it must be {want_eot} \
                     among {}",
                    map.len(),
                    merges.len(),
                    vocab_path.display(),
                    want_eot + 1
                ),
            ));
        }
        Tokenizer::from_parts(
            byte_ids,
            merges,
            vec![ENDOFTEXT.to_string()],
            &Origin {
                path: encoder_path,
                fix: FIX,
            },
        )
    }
}
