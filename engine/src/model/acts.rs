//! Where every activation of one (B, T) micro-batch lives in the activation arena. The gradient
//! arena of the activations uses the same map.

use super::GptConfig;
use std::ops::Range;

/// One block's activations.
#[derive(Debug, Clone)]
pub struct LayerActs {
    pub ln1: Range<usize>,       // (B, T, C)
    pub ln1_mean: Range<usize>,  // (B, T)
    pub ln1_rstd: Range<usize>,  // (B, T)
    pub qkv: Range<usize>,       // (B, T, 3C)
    pub atty: Range<usize>,      // (B, T, C)   attention output before the projection
    pub att_lse: Range<usize>,   // (B, NH, T)  softmax log-sum-exp per query, for backward
    pub attproj: Range<usize>,   // (B, T, C)
    pub residual2: Range<usize>, // (B, T, C)
    pub ln2: Range<usize>,       // (B, T, C)
    pub ln2_mean: Range<usize>,  // (B, T)
    pub ln2_rstd: Range<usize>,  // (B, T)
    pub fch: Range<usize>,       // (B, T, 4C)
    pub fch_gelu: Range<usize>,  // (B, T, 4C)
    pub fcproj: Range<usize>,    // (B, T, C)
    pub residual3: Range<usize>, // (B, T, C)   the block's output
}

/// The activation arena's map for batch B and sequence length T.
#[derive(Debug, Clone)]
pub struct ActLayout {
    pub b: usize,
    pub t: usize,
    pub encoded: Range<usize>, // (B, T, C)
    pub layers: Vec<LayerActs>,
    pub lnf: Range<usize>,      // (B, T, C)
    pub lnf_mean: Range<usize>, // (B, T)
    pub lnf_rstd: Range<usize>, // (B, T)
    /// (R, Vp) with R = `logit_rows`: all B*T rows for a full workspace (overwritten in place by
    /// dlogits in backward), or one chunk of rows for a training workspace.
    pub logits: Range<usize>,
    /// R: the rows the logits buffer holds.
    pub logit_rows: usize,
    pub losses: Range<usize>, // (B, T)
    pub total: usize,
}

impl ActLayout {
    /// The map with logits for every (B, T) position.
    pub fn new(config: &GptConfig, b: usize, t: usize) -> ActLayout {
        ActLayout::with_logit_rows(config, b, t, b * t)
    }

    /// The map with a logits buffer for chunks of at most `logit_rows` rows: the B*T rows cut
    /// into as few chunks as that allows, of equal size but the last (640 rows at most 512 give
    /// 2 × 320, not 512 + 128, whose GEMMs would run the short chunk slowly).
    pub fn with_logit_rows(config: &GptConfig, b: usize, t: usize, logit_rows: usize) -> ActLayout {
        let bt = b * t;
        let chunks = bt.div_ceil(logit_rows.max(1));
        let logit_rows = if chunks == 0 { 0 } else { bt.div_ceil(chunks) };
        let (c, nh, vp) = (config.n_embd, config.n_head, config.padded_vocab());
        let mut at = 0usize;
        let mut take = |len: usize| {
            let r = at..at + len;
            at += len;
            r
        };
        let encoded = take(bt * c);
        let layers = (0..config.n_layer)
            .map(|_| LayerActs {
                ln1: take(bt * c),
                ln1_mean: take(bt),
                ln1_rstd: take(bt),
                qkv: take(bt * 3 * c),
                atty: take(bt * c),
                att_lse: take(b * nh * t),
                attproj: take(bt * c),
                residual2: take(bt * c),
                ln2: take(bt * c),
                ln2_mean: take(bt),
                ln2_rstd: take(bt),
                fch: take(bt * 4 * c),
                fch_gelu: take(bt * 4 * c),
                fcproj: take(bt * c),
                residual3: take(bt * c),
            })
            .collect();
        let lnf = take(bt * c);
        let lnf_mean = take(bt);
        let lnf_rstd = take(bt);
        let logits = take(logit_rows * vp);
        let losses = take(bt);
        ActLayout {
            b,
            t,
            encoded,
            layers,
            lnf,
            lnf_mean,
            lnf_rstd,
            logits,
            logit_rows,
            losses,
            total: at,
        }
    }

    /// The block output that feeds block `l` (the embeddings for block 0).
    pub fn block_input(&self, l: usize) -> Range<usize> {
        if l == 0 {
            self.encoded.clone()
        } else {
            self.layers[l - 1].residual3.clone()
        }
    }

    /// The last block's output (the input of the final LayerNorm).
    pub fn final_residual(&self) -> Range<usize> {
        self.block_input(self.layers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_chunks_are_equal_and_no_larger_than_asked() {
        let cfg = GptConfig {
            vocab_size: 389,
            n_positions: 64,
            n_embd: 96,
            n_layer: 2,
            n_head: 4,
        };
        let rows = |b, t, most| ActLayout::with_logit_rows(&cfg, b, t, most).logit_rows;
        assert_eq!(rows(2, 320, 512), 320, "640 rows: 2 × 320, not 512 + 128");
        assert_eq!(rows(4, 256, 512), 512);
        assert_eq!(rows(1, 1001, 512), 501);
        assert_eq!(rows(2, 50, 512), 100, "fewer rows than a chunk: one chunk");
        assert_eq!(rows(3, 7, 1), 1);
        assert_eq!(rows(0, 7, 512), 0);
        let layout = ActLayout::with_logit_rows(&cfg, 1, 1001, 512);
        assert_eq!(layout.logits.len(), 501 * cfg.padded_vocab());
    }
}
