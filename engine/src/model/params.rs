//! Where every parameter lives in the one parameter arena (and, at the same offsets, in the
//! gradient and optimizer-moment arenas).
//!
//! Weights keep Hugging Face's Conv1D layout (in, out), so `y = x·W + b` is a plain A·B GEMM and a
//! checkpoint is a straight copy. The token embedding is padded from V to Vp rows; the pad rows are
//! zero, receive zero gradient, and belong to no named tensor.

use super::GptConfig;
use std::ops::Range;

/// One named parameter tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The GPT-2 name without the `transformer.` prefix, e.g. `h.0.attn.c_attn.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    /// Where it lives in the arena.
    pub range: Range<usize>,
    /// Whether AdamW's weight decay applies (tensors with two or more dimensions).
    pub decay: bool,
}

/// The per-layer tensors, as ranges into the arena.
#[derive(Debug, Clone)]
pub struct LayerRanges {
    pub ln1_w: Range<usize>,    // (C)
    pub ln1_b: Range<usize>,    // (C)
    pub qkv_w: Range<usize>,    // (C, 3C)
    pub qkv_b: Range<usize>,    // (3C)
    pub proj_w: Range<usize>,   // (C, C)
    pub proj_b: Range<usize>,   // (C)
    pub ln2_w: Range<usize>,    // (C)
    pub ln2_b: Range<usize>,    // (C)
    pub fc_w: Range<usize>,     // (C, 4C)
    pub fc_b: Range<usize>,     // (4C)
    pub fcproj_w: Range<usize>, // (4C, C)
    pub fcproj_b: Range<usize>, // (C)
}

/// The whole parameter arena's map.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    pub config: GptConfig,
    /// (Vp, C): rows V.. are padding.
    pub wte: Range<usize>,
    /// (maxT, C)
    pub wpe: Range<usize>,
    pub layers: Vec<LayerRanges>,
    /// (C)
    pub lnf_w: Range<usize>,
    /// (C)
    pub lnf_b: Range<usize>,
    /// Every named tensor in checkpoint order.
    pub tensors: Vec<TensorSpec>,
    /// Floats in the arena (including the vocabulary padding).
    pub total: usize,
}

impl ParamLayout {
    pub fn new(config: GptConfig) -> ParamLayout {
        let (vp, p, c) = (config.padded_vocab(), config.n_positions, config.n_embd);
        let mut tensors = Vec::new();
        let mut at = 0usize;
        let mut take = |name: String, shape: &[usize], arena_len: usize| {
            let range = at..at + arena_len;
            at += arena_len;
            let len: usize = shape.iter().product();
            tensors.push(TensorSpec {
                name,
                shape: shape.to_vec(),
                range: range.start..range.start + len,
                decay: shape.len() >= 2,
            });
            range
        };
        let wte = take("wte.weight".into(), &[config.vocab_size, c], vp * c);
        let wpe = take("wpe.weight".into(), &[p, c], p * c);
        let layers = (0..config.n_layer)
            .map(|l| {
                let mut t = |suffix: &str, shape: &[usize]| {
                    take(format!("h.{l}.{suffix}"), shape, shape.iter().product())
                };
                LayerRanges {
                    ln1_w: t("ln_1.weight", &[c]),
                    ln1_b: t("ln_1.bias", &[c]),
                    qkv_w: t("attn.c_attn.weight", &[c, 3 * c]),
                    qkv_b: t("attn.c_attn.bias", &[3 * c]),
                    proj_w: t("attn.c_proj.weight", &[c, c]),
                    proj_b: t("attn.c_proj.bias", &[c]),
                    ln2_w: t("ln_2.weight", &[c]),
                    ln2_b: t("ln_2.bias", &[c]),
                    fc_w: t("mlp.c_fc.weight", &[c, 4 * c]),
                    fc_b: t("mlp.c_fc.bias", &[4 * c]),
                    fcproj_w: t("mlp.c_proj.weight", &[4 * c, c]),
                    fcproj_b: t("mlp.c_proj.bias", &[c]),
                }
            })
            .collect();
        let lnf_w = take("ln_f.weight".into(), &[c], c);
        let lnf_b = take("ln_f.bias".into(), &[c], c);
        ParamLayout {
            config,
            wte,
            wpe,
            layers,
            lnf_w,
            lnf_b,
            tensors,
            total: at,
        }
    }

    /// The (name, shape) table a checkpoint must hold, in arena order.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    }

    /// The tensor called `name` (without the `transformer.` prefix).
    pub fn tensor(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_tensors_cover_the_parameter_count_and_do_not_overlap() {
        let cfg = GptConfig {
            vocab_size: 389,
            n_positions: 64,
            n_embd: 96,
            n_layer: 2,
            n_head: 4,
        };
        let layout = ParamLayout::new(cfg);
        let named: usize = layout.tensors.iter().map(|t| t.range.len()).sum();
        assert_eq!(named, cfg.num_parameters());
        assert_eq!(
            layout.total,
            cfg.num_parameters() + (cfg.padded_vocab() - 389) * 96
        );
        let mut ranges: Vec<_> = layout.tensors.iter().map(|t| t.range.clone()).collect();
        ranges.sort_by_key(|r| r.start);
        assert!(ranges.windows(2).all(|w| w[0].end <= w[1].start));
        assert_eq!(layout.tensors.len(), 2 + 12 * 2 + 2);
    }
}
