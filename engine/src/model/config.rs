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

/// The largest value [`GptConfig::validate`] accepts for any size: 2^31, far above every real
/// GPT-2 (gpt2-xl: V 50257, maxT 1024, C 1600, L 48, NH 25), and small enough that token ids fit
/// in a u32 and sizes derived from C (3C, 4C) cannot overflow.
const MAX_SIZE: usize = 1 << 31;

impl GptConfig {
    /// Vp: V rounded up to a multiple of [`VOCAB_PAD`].
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.div_ceil(VOCAB_PAD) * VOCAB_PAD
    }

    /// HS: the width of one head.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Why this shape cannot be built, if it cannot: a size that is zero or above 2^31,
    /// n_embd not divisible by n_head, or more parameters than an f32 arena can hold. The sizes
    /// computed from a shape ([`GptConfig::padded_vocab`], [`GptConfig::num_parameters`], the
    /// parameter layout) do not overflow once it passes.
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
        for (key, size) in [
            ("vocab_size", vocab_size),
            ("n_positions", n_positions),
            ("n_embd", n_embd),
            ("n_layer", n_layer),
            ("n_head", n_head),
        ] {
            if size > MAX_SIZE {
                return Err(format!(
                    "{key} {size} exceeds {MAX_SIZE}, the largest size cllm builds"
                ));
            }
        }
        if n_embd % n_head != 0 {
            return Err(format!(
                "n_embd {n_embd} does not divide by n_head {n_head}"
            ));
        }
        if self.arena_len().is_none() {
            return Err(format!(
                "vocab_size {vocab_size}, n_positions {n_positions}, n_embd {n_embd} and n_layer \
                 {n_layer} make more parameters than memory can address"
            ));
        }
        Ok(())
    }

    /// The floats of the parameter arena (Vp rows of the token embedding), or `None` when they
    /// overflow or their bytes exceed `isize::MAX` (the most one allocation can hold).
    fn arena_len(&self) -> Option<usize> {
        let (p, c, l) = (self.n_positions, self.n_embd, self.n_layer);
        let vp = self.vocab_size.checked_next_multiple_of(VOCAB_PAD)?;
        let per_layer = c
            .checked_mul(c)?
            .checked_mul(12)?
            .checked_add(c.checked_mul(13)?)?;
        let total = vp
            .checked_mul(c)?
            .checked_add(p.checked_mul(c)?)?
            .checked_add(l.checked_mul(per_layer)?)?
            .checked_add(c.checked_mul(2)?)?;
        let bytes = total.checked_mul(std::mem::size_of::<f32>())?;
        (bytes <= isize::MAX as usize).then_some(total)
    }

    /// The number of trainable parameters (V, not Vp: what Hugging Face reports). Plain
    /// arithmetic: call it on a shape that passed [`GptConfig::validate`].
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
