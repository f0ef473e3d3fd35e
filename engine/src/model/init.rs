//! Random initialisation as Hugging Face's `GPT2PreTrainedModel._init_weights` does it.

use super::{Gpt, GptConfig};
use crate::rng::Rng;

/// `initializer_range` of GPT-2's config: the standard deviation of weights and embeddings.
pub const INIT_STD: f64 = 0.02;

impl Gpt {
    /// A freshly initialised model, deterministic in `seed`:
    /// - `wte`, `wpe` and every Conv1D weight ~ N(0, 0.02²), drawn in checkpoint tensor order;
    /// - the residual projections `attn.c_proj.weight` and `mlp.c_proj.weight` ~
    ///   N(0, (0.02 / √(2·n_layer))²): GPT-2's scaling of the layers that add into the residual
    ///   stream (HF applies it as a smaller standard deviation, as here);
    /// - biases 0, LayerNorm weights 1 and biases 0; the vocabulary pad rows of `wte` stay 0.
    pub fn init_random(config: GptConfig, seed: u64) -> Gpt {
        let mut gpt = Gpt::zeros(config);
        let mut rng = Rng::new(seed);
        let resid_std = INIT_STD / (2.0 * config.n_layer as f64).sqrt();
        let Gpt { layout, params } = &mut gpt;
        for t in &layout.tensors {
            let dst = &mut params[t.range.clone()];
            let is_ln = t.name.contains(".ln_") || t.name.starts_with("ln_f.");
            if t.name.ends_with(".bias") {
                dst.fill(0.0);
            } else if is_ln {
                dst.fill(1.0);
            } else {
                let std = if t.name.ends_with("c_proj.weight") {
                    resid_std
                } else {
                    INIT_STD
                };
                for x in dst {
                    *x = (rng.normal() * std) as f32;
                }
            }
        }
        gpt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped_like_gpt2() {
        let cfg = GptConfig {
            vocab_size: 100,
            n_positions: 16,
            n_embd: 32,
            n_layer: 2,
            n_head: 2,
        };
        let a = Gpt::init_random(cfg, 3);
        let b = Gpt::init_random(cfg, 3);
        let c = Gpt::init_random(cfg, 4);
        assert_eq!(a.params, b.params);
        assert_ne!(a.params, c.params);
        let get = |name: &str| &a.params[a.layout.tensor(name).unwrap().range.clone()];
        assert!(get("h.1.ln_2.weight").iter().all(|&x| x == 1.0));
        assert!(get("ln_f.bias").iter().all(|&x| x == 0.0));
        assert!(get("h.0.attn.c_attn.bias").iter().all(|&x| x == 0.0));
        let std = |xs: &[f32]| {
            (xs.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
        };
        let s = std(get("h.0.mlp.c_fc.weight"));
        assert!((s - 0.02).abs() < 0.002, "{s}");
        let s = std(get("h.0.mlp.c_proj.weight"));
        assert!((s - 0.01).abs() < 0.001, "{s}");
        let pad = &a.params[a.layout.wte.start + 100 * 32..a.layout.wte.end];
        assert!(pad.iter().all(|&x| x == 0.0));
    }
}
