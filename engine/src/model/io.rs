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
    /// cllm checkpoint).
    pub fn from_hf_dir(dir: &Path) -> Result<(Gpt, HfConfig), CheckpointError> {
        let hf = HfConfig::read(&dir.join(checkpoint::CONFIG_FILE))?;
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
