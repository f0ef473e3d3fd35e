//! Hugging Face GPT-2 `config.json`: read into [`GptConfig`] (refusing what cllm cannot run) and
//! written so that `transformers` loads it as-is.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::CheckpointError;
use crate::model::GptConfig;

/// The activation names whose function is GELU in its tanh form, the only one cllm computes.
const TANH_GELU: [&str; 2] = ["gelu_new", "gelu_pytorch_tanh"];

/// A GPT-2 `config.json` as cllm understands it.
///
/// The sizes become a [`GptConfig`]; keys cllm reads but does not need to act on are kept in
/// `extra` and written back unchanged, so a config read from a Hugging Face directory and written
/// again keeps its dropouts, summary settings, `task_specific_params` and the like.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    /// The model shape (`vocab_size`, `n_positions`, `n_embd`, `n_layer`, `n_head`).
    pub gpt: GptConfig,
    /// `layer_norm_epsilon`: GPT-2's 1e-5, the only value accepted (the LayerNorms use it).
    pub layer_norm_epsilon: f64,
    /// `bos_token_id`, `null` when `None`.
    pub bos_token_id: Option<u64>,
    /// `eos_token_id`, `null` when `None`.
    pub eos_token_id: Option<u64>,
    /// Every other key of the file read, except the ones cllm rewrites (`model_type`,
    /// `architectures`, `n_ctx`, `dtype`, `torch_dtype`, `transformers_version`). Keys it refuses
    /// to run with are only kept when their value is the one it runs with.
    pub extra: Map<String, Value>,
}

/// What `transformers`' `GPT2Config` writes for the keys cllm does not set itself, except the
/// dropouts: cllm trains without dropout, so a config it writes says 0.0 (transformers' default is
/// 0.1), which is also what the golden reference uses.
fn defaults() -> BTreeMap<&'static str, Value> {
    BTreeMap::from([
        ("activation_function", json!("gelu_new")),
        ("add_cross_attention", json!(false)),
        ("attn_pdrop", json!(0.0)),
        ("embd_pdrop", json!(0.0)),
        ("initializer_range", json!(0.02)),
        ("n_inner", Value::Null),
        ("pad_token_id", Value::Null),
        ("reorder_and_upcast_attn", json!(false)),
        ("resid_pdrop", json!(0.0)),
        ("scale_attn_by_inverse_layer_idx", json!(false)),
        ("scale_attn_weights", json!(true)),
        ("summary_activation", Value::Null),
        ("summary_first_dropout", json!(0.1)),
        ("summary_proj_to_labels", json!(true)),
        ("summary_type", json!("cls_index")),
        ("summary_use_proj", json!(true)),
        ("use_cache", json!(true)),
    ])
}

/// Keys that are never carried through `extra`: cllm writes its own value for them.
const REWRITTEN: [&str; 6] = [
    "model_type",
    "architectures",
    "n_ctx",
    "dtype",
    "torch_dtype",
    "transformers_version",
];

impl HfConfig {
    /// A config for a model cllm creates: GPT-2's layer-norm epsilon, no BOS/EOS ids.
    pub fn new(gpt: GptConfig) -> Self {
        HfConfig {
            gpt,
            layer_norm_epsilon: 1e-5,
            bos_token_id: None,
            eos_token_id: None,
            extra: Map::new(),
        }
    }

    /// Reads `path` (a `config.json` file).
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let text = std::fs::read_to_string(path).map_err(CheckpointError::io("read", path))?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `config.json`; `path` only names the file in errors.
    ///
    /// Missing keys take `transformers`' `GPT2Config` defaults, as `from_pretrained` does. Refused,
    /// each with an error naming the file, the key and the fix: a `model_type` other than `gpt2`;
    /// an `activation_function` other than `gelu_new` / `gelu_pytorch_tanh`; `n_inner` other than
    /// null or 4·n_embd; `tie_word_embeddings`, `scale_attn_weights` false;
    /// `scale_attn_by_inverse_layer_idx`, `reorder_and_upcast_attn`, `add_cross_attention` true;
    /// sizes that are not positive integers, above 2^31, with n_embd not divisible by n_head, or
    /// with more parameters than memory can address ([`GptConfig::validate`]).
    pub fn parse(text: &str, path: &Path) -> Result<Self, CheckpointError> {
        let root: Value = serde_json::from_str(text).map_err(|source| CheckpointError::Json {
            path: path.to_owned(),
            source,
        })?;
        let Value::Object(map) = root else {
            return Err(CheckpointError::ConfigInvalid {
                path: path.to_owned(),
                problem: "the file is not a JSON object".into(),
            });
        };
        let keys = Keys { path, map: &map };

        if let Some(v) = map.get("model_type") {
            if v.as_str() != Some("gpt2") {
                return Err(keys.refuse(
                    "model_type",
                    format!("is {v}, not \"gpt2\""),
                    "cllm runs GPT-2 models only; convert the weights to GPT-2's architecture",
                ));
            }
        }
        let gpt = GptConfig {
            vocab_size: keys.size("vocab_size", 50257)?,
            n_positions: keys.size("n_positions", 1024)?,
            n_embd: keys.size("n_embd", 768)?,
            n_layer: keys.size("n_layer", 12)?,
            n_head: keys.size("n_head", 12)?,
        };
        gpt.validate()
            .map_err(|problem| CheckpointError::ConfigInvalid {
                path: path.to_owned(),
                problem,
            })?;

        // cllm's LayerNorms use GPT-2's epsilon (`model::LN_EPS`); another one would be
        // ignored, and the outputs would differ from what transformers computes.
        let layer_norm_epsilon = match map.get("layer_norm_epsilon") {
            None => 1e-5,
            Some(v) => match v.as_f64() {
                Some(eps) if (eps - 1e-5).abs() <= 1e-11 => eps,
                _ => {
                    return Err(keys.refuse(
                        "layer_norm_epsilon",
                        format!("is {v}, but cllm's LayerNorm uses GPT-2's 1e-05"),
                        "set it to 1e-05, or use a model trained with it",
                    ))
                }
            },
        };

        let activation = keys.string("activation_function", "gelu_new")?;
        if !TANH_GELU.contains(&activation.as_str()) {
            return Err(keys.refuse(
                "activation_function",
                format!("is {activation:?}, but cllm computes GELU only in its tanh form"),
                "use weights trained with \"gelu_new\" or \"gelu_pytorch_tanh\" (the two names cllm accepts)",
            ));
        }
        // `validate` bounds n_embd by 2^31, so 4 * n_embd cannot overflow (in u64 or usize).
        match map.get("n_inner") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64() == Some(4 * gpt.n_embd as u64) => {}
            Some(v) => {
                return Err(keys.refuse(
                    "n_inner",
                    format!(
                        "is {v}, but cllm's MLP is 4 * n_embd = {} wide",
                        4 * gpt.n_embd
                    ),
                    "use a model with n_inner null (or 4 * n_embd)",
                ))
            }
        }
        keys.flag(
            "tie_word_embeddings",
            true,
            "cllm ties the LM head to the token embedding",
        )?;
        keys.flag(
            "scale_attn_weights",
            true,
            "cllm always scales attention by 1/sqrt(head_size)",
        )?;
        keys.flag(
            "scale_attn_by_inverse_layer_idx",
            false,
            "cllm does not scale attention by the layer index",
        )?;
        keys.flag(
            "reorder_and_upcast_attn",
            false,
            "cllm does not implement the reordered, upcast attention",
        )?;
        keys.flag(
            "add_cross_attention",
            false,
            "cllm has no cross-attention (decoder-only GPT-2)",
        )?;

        let bos_token_id = keys.token_id("bos_token_id", 50256)?;
        let eos_token_id = keys.token_id("eos_token_id", 50256)?;

        let typed = [
            "vocab_size",
            "n_positions",
            "n_embd",
            "n_layer",
            "n_head",
            "layer_norm_epsilon",
            "bos_token_id",
            "eos_token_id",
        ];
        let extra = map
            .iter()
            .filter(|(k, _)| !typed.contains(&k.as_str()) && !REWRITTEN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(HfConfig {
            gpt,
            layer_norm_epsilon,
            bos_token_id,
            eos_token_id,
            extra,
        })
    }

    /// The `config.json` text: every GPT-2 key, sorted, indented by two spaces like
    /// `save_pretrained`, with `model_type` "gpt2", `architectures` ["GPT2LMHeadModel"],
    /// `n_ctx` = `n_positions`, `tie_word_embeddings` true and `dtype` "float32".
    pub fn to_json(&self) -> String {
        let g = &self.gpt;
        let mut out: BTreeMap<String, Value> = defaults()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        for (k, v) in &self.extra {
            out.insert(k.clone(), v.clone());
        }
        let id = |t: Option<u64>| t.map_or(Value::Null, Value::from);
        let own = [
            ("architectures", json!(["GPT2LMHeadModel"])),
            ("bos_token_id", id(self.bos_token_id)),
            ("dtype", json!("float32")),
            ("eos_token_id", id(self.eos_token_id)),
            ("layer_norm_epsilon", json!(self.layer_norm_epsilon)),
            ("model_type", json!("gpt2")),
            ("n_ctx", json!(g.n_positions)),
            ("n_embd", json!(g.n_embd)),
            ("n_head", json!(g.n_head)),
            ("n_layer", json!(g.n_layer)),
            ("n_positions", json!(g.n_positions)),
            ("tie_word_embeddings", json!(true)),
            ("vocab_size", json!(g.vocab_size)),
        ];
        for (k, v) in own {
            out.insert(k.to_owned(), v);
        }
        // Insert in sorted order so the text is the same whether or not serde_json keeps
        // insertion order (its `preserve_order` feature may be on elsewhere in a build).
        let map: Map<String, Value> = out.into_iter().collect();
        let mut text = serde_json::to_string_pretty(&Value::Object(map))
            .expect("a JSON value always serializes");
        text.push('\n');
        text
    }
}

/// Typed access to the keys of one config file, producing errors that name it.
struct Keys<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Keys<'_> {
    fn refuse(&self, key: &str, problem: String, fix: &str) -> CheckpointError {
        CheckpointError::ConfigKey {
            path: self.path.to_owned(),
            key: key.to_owned(),
            problem,
            fix: fix.to_owned(),
        }
    }

    fn size(&self, key: &str, default: usize) -> Result<usize, CheckpointError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n > 0 => Ok(n),
                _ => Err(self.refuse(
                    key,
                    format!("is {v}, not a positive integer"),
                    "give the model size as a positive integer",
                )),
            },
        }
    }

    fn string(&self, key: &str, default: &str) -> Result<String, CheckpointError> {
        match self.map.get(key) {
            None => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => {
                Err(self.refuse(key, format!("is {v}, not a string"), "write it as a string"))
            }
        }
    }

    /// A boolean key that cllm runs only with the value `needed`.
    fn flag(&self, key: &str, needed: bool, why: &str) -> Result<(), CheckpointError> {
        let value = match self.map.get(key) {
            None => return Ok(()),
            Some(v) => v.as_bool().ok_or_else(|| {
                self.refuse(
                    key,
                    format!("is {v}, not true or false"),
                    "write it as a JSON boolean",
                )
            })?,
        };
        if value == needed {
            Ok(())
        } else {
            Err(self.refuse(
                key,
                format!("is {value}, but {why}"),
                &format!("cllm runs only models with `{key}`: {needed}"),
            ))
        }
    }

    fn token_id(&self, key: &str, default: u64) -> Result<Option<u64>, CheckpointError> {
        match self.map.get(key) {
            None => Ok(Some(default)),
            Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                self.refuse(
                    key,
                    format!("is {v}, not a token id"),
                    "write a non-negative integer or null",
                )
            }),
        }
    }
}
