//! Loading a model from, and saving it to, a Hugging Face GPT-2 directory.

use super::{Gpt, ParamLayout};
use crate::checkpoint::{self, CheckpointError, HfConfig, TensorRef, TensorSink};
use std::path::Path;

/// Routes each loaded tensor straight into its range of the parameter arena.
struct ArenaSink<'a> {
    layout: &'a ParamLayout,
    params: &'a mut [f32],
}

impl TensorSink for ArenaSink<'_> {
    fn dst(&mut self, _index: usize, name: &str, _shape: &[usize]) -> &mut [f32] {
        let spec = self
            .layout
            .tensor(name)
            .expect("the expected table is the layout's own");
        &mut self.params[spec.range.clone()]
    }
}

impl Gpt {
    /// Load `config.json` and `model.safetensors` from `dir` (a Hugging Face GPT-2 directory or a
    /// cllm checkpoint, whose manifest both files are checked against first, with the
    /// checkpoint's `tokenizer.json` when the manifest lists one: callers load it next).
    pub fn from_hf_dir(dir: &Path) -> Result<(Gpt, HfConfig), CheckpointError> {
        if dir.join(checkpoint::MANIFEST_FILE).is_file() {
            checkpoint::verify_checkpoint_files(
                dir,
                &[
                    checkpoint::CONFIG_FILE,
                    checkpoint::MODEL_FILE,
                    checkpoint::TOKENIZER_FILE,
                ],
            )?;
        }
        Gpt::from_verified_dir(dir)
    }

    /// [`Gpt::from_hf_dir`] for a directory whose files the caller has already checked against
    /// its manifest (resuming verifies the whole checkpoint first; hashing the weights again
    /// would cost seconds on a large model).
    pub(crate) fn from_verified_dir(dir: &Path) -> Result<(Gpt, HfConfig), CheckpointError> {
        let config = dir.join(checkpoint::CONFIG_FILE);
        let weights = dir.join(checkpoint::MODEL_FILE);
        let hf = HfConfig::read(&config)?;
        if !weights.exists() {
            let form = if dir.join("model.safetensors.index.json").is_file() {
                Some("its weights are sharded (model.safetensors.index.json), and cllm reads one file: save them unsharded (transformers: `model.save_pretrained(dir, max_shard_size=\"100GB\")`)")
            } else if dir.join("pytorch_model.bin").is_file() {
                Some("its weights are a PyTorch pickle (pytorch_model.bin), which cllm does not read: save them as safetensors (transformers: `model.save_pretrained(dir, safe_serialization=True)`)")
            } else {
                None
            };
            if let Some(problem) = form {
                return Err(CheckpointError::WeightsForm {
                    dir: dir.to_path_buf(),
                    problem: problem.to_string(),
                });
            }
        }
        // Before allocating the parameters: a file too small for them even at two bytes each
        // (f16) is damaged, or does not belong to this config (a mistyped size would otherwise
        // abort the process on an impossible allocation, or lay out billions of tensors).
        let size = std::fs::metadata(&weights)
            .map_err(CheckpointError::io("open", &weights))?
            .len();
        // `HfConfig::read` validated the sizes, so the count does not overflow.
        let params = hf.gpt.num_parameters() as u64;
        if params.saturating_mul(2) > size {
            // A truncated or damaged weights file is the file's fault, not the config's.
            let stored = checkpoint::stored_shapes(&weights)?;
            let g = &hf.gpt;
            let shape = |name: &str| match stored.get(name) {
                Some(s) => format!("{s:?}"),
                None => "absent".to_string(),
            };
            return Err(CheckpointError::ConfigInvalid {
                path: config,
                problem: format!(
                    "describes a model of {params} parameters (vocab_size {}, n_positions {}, \
                     n_embd {}, n_layer {}), but {} holds only {size} bytes (its wte.weight is \
                     {}, its wpe.weight {}): the config and the weights do not belong together; \
                     use the config.json saved with these weights (a key missing from it takes \
                     GPT-2's default)",
                    g.vocab_size,
                    g.n_positions,
                    g.n_embd,
                    g.n_layer,
                    weights.display(),
                    shape("wte.weight"),
                    shape("wpe.weight"),
                ),
            });
        }
        let mut model = Gpt::zeros(hf.gpt);
        let expected = model.layout.expected_tensors();
        let Gpt { layout, params } = &mut model;
        checkpoint::read_tensors_into(
            &dir.join(checkpoint::MODEL_FILE),
            &expected,
            &mut ArenaSink { layout, params },
        )?;
        Ok((model, hf))
    }

    /// Every named parameter as a borrowed tensor, for [`checkpoint::SafetensorsWriter`].
    pub fn tensor_refs(&self) -> Vec<TensorRef<'_>> {
        self.layout
            .tensors
            .iter()
            .map(|t| TensorRef {
                name: &t.name,
                shape: &t.shape,
                data: &self.params[t.range.clone()],
            })
            .collect()
    }
}
