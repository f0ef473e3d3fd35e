//! The GPT-2 hyperparameters, named as Hugging Face's `config.json` names them.

/// A GPT-2 shape. `vocab_size` is the real vocabulary V; the embedding table is padded to
/// [`GptConfig::padded_vocab`] rows (Vp) so the LM-head GEMM runs on aligned tiles; the pad rows are
/// zero, get no gradient, and are never saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptConfig {
    /// V: the number of token ids.
    pub vocab_size: usize,
    /// maxT: the longest sequence (learned positions).
    pub n_positions: usize,
    /// C: the model width.
    pub n_embd: usize,
    /// L: the number of transformer blocks.
    pub n_layer: usize,
    /// NH: attention heads; C must divide by it.
    pub n_head: usize,
}

/// The multiple Vp is rounded up to.
pub const VOCAB_PAD: usize = 128;

impl GptConfig {
    /// Vp: V rounded up to a multiple of [`VOCAB_PAD`].
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.div_ceil(VOCAB_PAD) * VOCAB_PAD
    }

    /// HS: the width of one head.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Why this shape cannot be built, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        let GptConfig {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
        } = *self;
        if vocab_size == 0 || n_positions == 0 || n_embd == 0 || n_layer == 0 || n_head == 0 {
            return Err(format!("every size must be positive: {self:?}"));
        }
        if n_embd % n_head != 0 {
            return Err(format!(
                "n_embd {n_embd} does not divide by n_head {n_head}"
            ));
        }
        Ok(())
    }

    /// The number of trainable parameters (V, not Vp: what Hugging Face reports).
    pub fn num_parameters(&self) -> usize {
        let (v, p, c, l) = (self.vocab_size, self.n_positions, self.n_embd, self.n_layer);
        let per_layer = 2 * c
            + (c * 3 * c + 3 * c)
            + (c * c + c)
            + 2 * c
            + (c * 4 * c + 4 * c)
            + (4 * c * c + c);
        v * c + p * c + l * per_layer + 2 * c
    }
}
