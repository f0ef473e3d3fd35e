//! GPT-2 forward and backward on one (B, T) micro-batch, llm.c style: every buffer in an arena,
//! every layer a call to a kernel with explicit outputs.
//!
//! Shape legend: B batch, T sequence length, C width, NH heads, V vocabulary, Vp padded vocabulary,
//! L blocks, R rows of logits held at once. Backward accumulates into a gradient arena (call
//! [`Workspace::zero_grad`] between optimizer steps), so gradient accumulation over micro-batches
//! is just several backward calls.
//!
//! Two ways to train:
//! - [`Gpt::forward`] then [`Gpt::backward`] on a [`Workspace::new`] workspace, which keeps the
//!   logits of every position (B·T·Vp floats) and its own gradient arena;
//! - [`Gpt::forward_backward`] on a [`Workspace::for_training`] workspace, which runs the LM head
//!   in equal chunks of at most [`LOGIT_CHUNK`] rows (logits, fused softmax + cross-entropy
//!   forward and backward, dlnf and dwte per chunk), so only (R, Vp) logits ever exist, and
//!   accumulates into a gradient arena the caller owns (a sphere worker's reduction buffer).
//!
//! The backward keeps one running residual gradient (B, T, C) through all blocks: LayerNorm's
//! backward accumulates into it, and each block's branch gradients reuse the same few scratch
//! buffers, so the activation-gradient arena is 6·B·T·C floats whatever L is.
//!
//! GEMMs go through `sgemm_unchecked`: the shapes come from the layouts (a mismatch is a bug and
//! panics), and the checked `sgemm` builds its error context on every call, which would allocate
//! in the training step.

use super::acts::ActLayout;
use super::params::ParamLayout;
use super::GptConfig;
use crate::huge_pages;
use cllm_kernels::gemm::{self, GemmScratch, Layout};
use cllm_kernels::{attention, embedding, gelu, layernorm, loss, residual, ShapeError};
use std::ops::Range;

/// LayerNorm epsilon of GPT-2.
pub const LN_EPS: f32 = 1e-5;

/// R: the most rows of logits a training workspace holds at once (the B·T rows are cut into
/// equal chunks of at most this many). The chunk is the M of the head's forward and input-gradient
/// GEMMs and the K of its weight gradient, which also re-reads and re-writes all of dwte (Vp, C)
/// once per chunk: at V = 50257 (C = 384, 1024 rows per worker, two threads) chunks of 128 rows
/// trained 6 % slower than chunks of 384 to 1024, which were level; at V = 65 128 and 512 were
/// level. 512 rows of GPT-2's 50,304 padded logits are 103 MB.
pub const LOGIT_CHUNK: usize = 512;

/// Why a forward or backward pass refused its input.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{what} has {got} tokens but the workspace was built for B*T = {want}")]
    TokenCount {
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("{what}: token {token} at position {pos} is outside the vocabulary (V = {vocab})")]
    TokenOutOfRange {
        what: &'static str,
        token: u32,
        pos: usize,
        vocab: usize,
    },
    #[error("sequence length {t} exceeds n_positions {max}")]
    SequenceTooLong { t: usize, max: usize },
    #[error("backward needs a forward pass with targets first")]
    NoLoss,
    #[error("backward needs the logits of every position, but this workspace keeps {rows} of {bt} rows (use Gpt::forward_backward)")]
    LogitsNotKept { rows: usize, bt: usize },
    #[error("the gradient arena has {got} floats but the model has {want}")]
    GradLength { got: usize, want: usize },
    #[error(transparent)]
    Kernel(#[from] ShapeError),
}

/// A GPT-2 model: its shape and its parameters, in one arena.
pub struct Gpt {
    pub layout: ParamLayout,
    /// Every parameter, at the offsets of `layout` (the vocabulary pad rows of wte are zero).
    pub params: Vec<f32>,
}

/// Everything one worker needs to run forward and backward on a (B, T) micro-batch.
pub struct Workspace {
    pub acts_layout: ActLayout,
    /// Activations (see [`ActLayout`]); `logits` holds dlogits after backward.
    pub acts: Vec<f32>,
    /// The activation gradients, [`DActs`]'s map.
    dacts: Vec<f32>,
    dacts_layout: DActs,
    /// Parameter gradients at the offsets of the [`crate::model::ParamLayout`] (empty in a
    /// training workspace, whose caller owns the gradient arena).
    pub grads: Vec<f32>,
    /// Attention's packed Kᵀ/Vᵀ scratch.
    att_scratch: Vec<f32>,
    /// (B, T) the gradient of the loss with respect to each position's loss.
    dlosses: Vec<f32>,
    /// (B, T) inputs of the last forward.
    tokens: Vec<u32>,
    /// (B, T) targets of the last forward, when it had them.
    targets: Vec<u32>,
    has_targets: bool,
    gemm: GemmScratch,
}

/// The activation-gradient arena: one running residual gradient and branch scratch reused by
/// every block.
#[derive(Debug, Clone)]
struct DActs {
    /// (B, T, C) d(residual stream) at the current depth; d(encoded) at the end.
    dres: Range<usize>,
    /// (B, T, C) dlnf, then per block dln2 / datty / dln1 (never two at once).
    dsmall: Range<usize>,
    /// (B, T, 4C) in the MLP d(fch_gelu), turned into d(fch) in place; its first B·T·3C
    /// floats are dqkv in attention.
    dwide: Range<usize>,
    total: usize,
}

impl DActs {
    fn new(bt: usize, c: usize) -> DActs {
        DActs {
            dres: 0..bt * c,
            dsmall: bt * c..2 * bt * c,
            dwide: 2 * bt * c..6 * bt * c,
            total: 6 * bt * c,
        }
    }
}

impl Gpt {
    /// A model with every parameter zero (load or initialise them next).
    pub fn zeros(config: GptConfig) -> Gpt {
        let layout = ParamLayout::new(config);
        let params = huge_pages::zeroed(layout.total);
        Gpt { layout, params }
    }

    pub fn config(&self) -> &GptConfig {
        &self.layout.config
    }

    /// Run the model on `tokens` (B, T); with `targets` (B, T) also the per-position losses,
    /// returning their mean. A full workspace keeps the logits (B, T, Vp) (and [`Gpt::backward`]
    /// may follow); a training workspace computes the losses chunk by chunk and keeps only the
    /// last chunk's logits.
    pub fn forward(
        &self,
        ws: &mut Workspace,
        tokens: &[u32],
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>, ModelError> {
        let bt = self.prepare(ws, tokens, targets)?;
        self.trunk_fwd(ws)?;
        let cfg = self.layout.config;
        let (c, v, vp) = (cfg.n_embd, cfg.vocab_size, cfg.padded_vocab());
        let al = &ws.acts_layout;
        let rows = al.logit_rows;
        let [lnf, logits, losses] = parts(
            &mut ws.acts,
            [al.lnf.clone(), al.logits.clone(), al.losses.clone()],
        );
        let wte = &self.params[self.layout.wte.clone()];
        let mut r0 = 0;
        while r0 < bt {
            let n = rows.min(bt - r0);
            // logits (n, Vp) = lnf rows (n, C) · wteᵀ, wte stored (Vp, C).
            gemm::sgemm_unchecked(
                &mut ws.gemm,
                Layout::NT,
                n,
                c,
                vp,
                &lnf[r0 * c..],
                c,
                wte,
                c,
                logits,
                vp,
                false,
            );
            if targets.is_some() {
                loss::softmax_xent_fwd(
                    &mut losses[r0..r0 + n],
                    logits,
                    &ws.targets[r0..r0 + n],
                    n,
                    v,
                    vp,
                )?;
            }
            r0 += n;
        }
        match targets {
            None => Ok(None),
            Some(_) => {
                ws.has_targets = true;
                Ok(Some((sum_f64(losses) / bt as f64) as f32))
            }
        }
    }

    /// Backpropagate the mean loss of the last forward into `ws.grads` (accumulating). Needs a
    /// full workspace ([`Workspace::new`]).
    pub fn backward(&self, ws: &mut Workspace) -> Result<(), ModelError> {
        let mut grads = std::mem::take(&mut ws.grads);
        let result = self.backward_into(ws, &mut grads);
        ws.grads = grads;
        result
    }

    /// [`Gpt::backward`] into a gradient arena the caller owns (`layout.total` floats).
    pub fn backward_into(&self, ws: &mut Workspace, grads: &mut [f32]) -> Result<(), ModelError> {
        if !ws.has_targets {
            return Err(ModelError::NoLoss);
        }
        self.check_grads(grads)?;
        let cfg = self.layout.config;
        let al = &ws.acts_layout;
        let (bt, v, vp) = (al.b * al.t, cfg.vocab_size, cfg.padded_vocab());
        if al.logit_rows < bt {
            return Err(ModelError::LogitsNotKept {
                rows: al.logit_rows,
                bt,
            });
        }
        // dlogits = (softmax - onehot) · dlosses, written over the logits.
        loss::softmax_xent_bwd_inplace(
            &mut ws.acts[al.logits.clone()],
            &ws.targets,
            &ws.dlosses,
            bt,
            v,
            vp,
        )?;
        self.head_bwd_rows(ws, grads, 0, bt)?;
        self.trunk_bwd(ws, grads)
    }

    /// One training micro-step on a workspace from [`Workspace::for_training`]: forward, the LM
    /// head and its gradient chunk by chunk, then backward, accumulating into `grads`
    /// (`layout.total` floats). Each position's loss enters the gradient with weight `dloss`
    /// (1 / (B·T) for the mean over this micro-batch; 1 / (all positions of the step) when
    /// micro-batches are summed). Returns the sum of the B·T losses.
    pub fn forward_backward(
        &self,
        ws: &mut Workspace,
        grads: &mut [f32],
        tokens: &[u32],
        targets: &[u32],
        dloss: f32,
    ) -> Result<f64, ModelError> {
        self.check_grads(grads)?;
        let bt = self.prepare(ws, tokens, Some(targets))?;
        ws.dlosses.fill(dloss);
        self.trunk_fwd(ws)?;
        let cfg = self.layout.config;
        let (c, v, vp) = (cfg.n_embd, cfg.vocab_size, cfg.padded_vocab());
        let rows = ws.acts_layout.logit_rows;
        let mut r0 = 0;
        while r0 < bt {
            let n = rows.min(bt - r0);
            let al = &ws.acts_layout;
            let [lnf, logits, losses] = parts(
                &mut ws.acts,
                [al.lnf.clone(), al.logits.clone(), al.losses.clone()],
            );
            gemm::sgemm_unchecked(
                &mut ws.gemm,
                Layout::NT,
                n,
                c,
                vp,
                &lnf[r0 * c..],
                c,
                &self.params[self.layout.wte.clone()],
                c,
                logits,
                vp,
                false,
            );
            loss::softmax_xent_fwd_bwd_inplace(
                logits,
                &mut losses[r0..r0 + n],
                &ws.targets[r0..r0 + n],
                &ws.dlosses[r0..r0 + n],
                n,
                v,
                vp,
            )?;
            self.head_bwd_rows(ws, grads, r0, n)?;
            r0 += n;
        }
        // Nothing may read these losses as a pending backward: the head's gradient is done.
        ws.has_targets = false;
        let loss_sum = sum_f64(&ws.acts[ws.acts_layout.losses.clone()]);
        self.trunk_bwd(ws, grads)?;
        Ok(loss_sum)
    }

    fn check_grads(&self, grads: &[f32]) -> Result<(), ModelError> {
        if grads.len() != self.layout.total {
            return Err(ModelError::GradLength {
                got: grads.len(),
                want: self.layout.total,
            });
        }
        Ok(())
    }

    /// Check the batch and copy it into the workspace; returns B·T.
    fn prepare(
        &self,
        ws: &mut Workspace,
        tokens: &[u32],
        targets: Option<&[u32]>,
    ) -> Result<usize, ModelError> {
        let cfg = self.layout.config;
        let al = &ws.acts_layout;
        let bt = al.b * al.t;
        if al.t > cfg.n_positions {
            return Err(ModelError::SequenceTooLong {
                t: al.t,
                max: cfg.n_positions,
            });
        }
        check_tokens("inputs", tokens, bt, cfg.vocab_size)?;
        ws.has_targets = false;
        if let Some(targets) = targets {
            check_tokens("targets", targets, bt, cfg.vocab_size)?;
            ws.targets.copy_from_slice(targets);
            ws.dlosses.fill(1.0 / bt as f32);
        }
        ws.tokens.copy_from_slice(tokens);
        Ok(bt)
    }

    /// Embeddings, the blocks and the final LayerNorm: everything before the LM head.
    fn trunk_fwd(&self, ws: &mut Workspace) -> Result<(), ModelError> {
        let cfg = self.layout.config;
        let al = &ws.acts_layout;
        let (b, t, c, nh, v) = (al.b, al.t, cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let bt = b * t;
        let p = &self.params;
        let pl = &self.layout;
        let acts = &mut ws.acts;
        let gemm = &mut ws.gemm;

        embedding::encoder_fwd(
            &mut acts[al.encoded.clone()],
            &ws.tokens,
            &p[pl.wte.clone()],
            &p[pl.wpe.clone()],
            b,
            t,
            c,
            v,
        )?;
        for (l, (lp, la)) in pl.layers.iter().zip(&al.layers).enumerate() {
            let [inp, ln1, ln1_mean, ln1_rstd, qkv, atty, att_lse, attproj, residual2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu, fcproj, residual3] =
                parts(
                    acts,
                    [
                        al.block_input(l),
                        la.ln1.clone(),
                        la.ln1_mean.clone(),
                        la.ln1_rstd.clone(),
                        la.qkv.clone(),
                        la.atty.clone(),
                        la.att_lse.clone(),
                        la.attproj.clone(),
                        la.residual2.clone(),
                        la.ln2.clone(),
                        la.ln2_mean.clone(),
                        la.ln2_rstd.clone(),
                        la.fch.clone(),
                        la.fch_gelu.clone(),
                        la.fcproj.clone(),
                        la.residual3.clone(),
                    ],
                );
            layernorm::layernorm_fwd(
                ln1,
                ln1_mean,
                ln1_rstd,
                inp,
                &p[lp.ln1_w.clone()],
                &p[lp.ln1_b.clone()],
                bt,
                c,
                LN_EPS,
            )?;
            matmul_fwd(
                gemm,
                qkv,
                ln1,
                &p[lp.qkv_w.clone()],
                &p[lp.qkv_b.clone()],
                bt,
                c,
                3 * c,
            )?;
            attention::attention_fwd(atty, att_lse, qkv, &mut ws.att_scratch, b, t, c, nh)?;
            matmul_fwd(
                gemm,
                attproj,
                atty,
                &p[lp.proj_w.clone()],
                &p[lp.proj_b.clone()],
                bt,
                c,
                c,
            )?;
            residual::residual_fwd(residual2, inp, attproj, bt * c)?;
            layernorm::layernorm_fwd(
                ln2,
                ln2_mean,
                ln2_rstd,
                residual2,
                &p[lp.ln2_w.clone()],
                &p[lp.ln2_b.clone()],
                bt,
                c,
                LN_EPS,
            )?;
            matmul_fwd(
                gemm,
                fch,
                ln2,
                &p[lp.fc_w.clone()],
                &p[lp.fc_b.clone()],
                bt,
                c,
                4 * c,
            )?;
            gelu::gelu_fwd(fch_gelu, fch, bt * 4 * c)?;
            matmul_fwd(
                gemm,
                fcproj,
                fch_gelu,
                &p[lp.fcproj_w.clone()],
                &p[lp.fcproj_b.clone()],
                bt,
                4 * c,
                c,
            )?;
            residual::residual_fwd(residual3, residual2, fcproj, bt * c)?;
        }
        let [resid, lnf, lnf_mean, lnf_rstd] = parts(
            acts,
            [
                al.final_residual(),
                al.lnf.clone(),
                al.lnf_mean.clone(),
                al.lnf_rstd.clone(),
            ],
        );
        layernorm::layernorm_fwd(
            lnf,
            lnf_mean,
            lnf_rstd,
            resid,
            &p[pl.lnf_w.clone()],
            &p[pl.lnf_b.clone()],
            bt,
            c,
            LN_EPS,
        )?;
        Ok(())
    }

    /// The LM head's backward for rows `r0 .. r0 + n`, whose dlogits (n, Vp) are at the start of
    /// the logits buffer: dlnf rows (written) and dwte (accumulated).
    fn head_bwd_rows(
        &self,
        ws: &mut Workspace,
        grads: &mut [f32],
        r0: usize,
        n: usize,
    ) -> Result<(), ModelError> {
        let c = self.layout.config.n_embd;
        let vp = self.layout.config.padded_vocab();
        let al = &ws.acts_layout;
        let dlogits = &ws.acts[al.logits.clone()];
        let lnf = &ws.acts[al.lnf.clone()];
        let dlnf = &mut ws.dacts[ws.dacts_layout.dsmall.clone()];
        let wte = &self.params[self.layout.wte.clone()];
        // dlnf rows (n, C) = dlogits (n, Vp) · wte (Vp, C).
        gemm::sgemm_unchecked(
            &mut ws.gemm,
            Layout::NN,
            n,
            vp,
            c,
            dlogits,
            vp,
            wte,
            c,
            &mut dlnf[r0 * c..],
            c,
            false,
        );
        // dwte (Vp, C) += dlogitsᵀ · lnf rows: dlogits stored (n, Vp) is Aᵀ.
        gemm::sgemm_unchecked(
            &mut ws.gemm,
            Layout::TN,
            vp,
            n,
            c,
            dlogits,
            vp,
            &lnf[r0 * c..],
            c,
            &mut grads[self.layout.wte.clone()],
            c,
            true,
        );
        Ok(())
    }

    /// Everything below the LM head, from dlnf (the `dsmall` buffer) down to the embeddings.
    fn trunk_bwd(&self, ws: &mut Workspace, grads: &mut [f32]) -> Result<(), ModelError> {
        let cfg = self.layout.config;
        let al = &ws.acts_layout;
        let dl = &ws.dacts_layout;
        let (b, t, c, nh, v) = (al.b, al.t, cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let bt = b * t;
        let p = &self.params;
        let pl = &self.layout;
        let (gemm, att_scratch) = (&mut ws.gemm, &mut ws.att_scratch);
        let acts: &[f32] = &ws.acts;
        let a = |r: &Range<usize>| &acts[r.clone()];
        let [dres, dsmall, dwide] = parts(
            &mut ws.dacts,
            [dl.dres.clone(), dl.dsmall.clone(), dl.dwide.clone()],
        );

        // The residual stream's gradient starts at the final LayerNorm (which accumulates).
        dres.fill(0.0);
        let [dlnf_w, dlnf_b] = parts(grads, [pl.lnf_w.clone(), pl.lnf_b.clone()]);
        layernorm::layernorm_bwd(
            dres,
            dlnf_w,
            dlnf_b,
            dsmall,
            a(&al.final_residual()),
            &p[pl.lnf_w.clone()],
            a(&al.lnf_mean),
            a(&al.lnf_rstd),
            bt,
            c,
        )?;

        for (l, (lp, la)) in pl.layers.iter().zip(&al.layers).enumerate().rev() {
            let [dln1_w, dln1_b, dqkv_w, dqkv_b, dproj_w, dproj_b, dln2_w, dln2_b, dfc_w, dfc_b, dfcproj_w, dfcproj_b] =
                parts(
                    grads,
                    [
                        lp.ln1_w.clone(),
                        lp.ln1_b.clone(),
                        lp.qkv_w.clone(),
                        lp.qkv_b.clone(),
                        lp.proj_w.clone(),
                        lp.proj_b.clone(),
                        lp.ln2_w.clone(),
                        lp.ln2_b.clone(),
                        lp.fc_w.clone(),
                        lp.fc_b.clone(),
                        lp.fcproj_w.clone(),
                        lp.fcproj_b.clone(),
                    ],
                );
            // dres holds d(residual3). residual3 = residual2 + fcproj, so fcproj's gradient is
            // dres itself, and residual2's is dres plus what LayerNorm 2 adds into it.
            let dfch_gelu = &mut dwide[..bt * 4 * c];
            matmul_bwd(
                gemm,
                dfch_gelu,
                dfcproj_w,
                dfcproj_b,
                dres,
                a(&la.fch_gelu),
                &p[lp.fcproj_w.clone()],
                bt,
                4 * c,
                c,
            )?;
            // In place: dfch_gelu becomes d(fch).
            gelu::gelu_bwd_inplace(dfch_gelu, a(&la.fch), bt * 4 * c)?;
            let dfch = &*dfch_gelu;
            let dln2 = &mut *dsmall;
            matmul_bwd(
                gemm,
                dln2,
                dfc_w,
                dfc_b,
                dfch,
                a(&la.ln2),
                &p[lp.fc_w.clone()],
                bt,
                c,
                4 * c,
            )?;
            layernorm::layernorm_bwd(
                dres,
                dln2_w,
                dln2_b,
                dln2,
                a(&la.residual2),
                &p[lp.ln2_w.clone()],
                a(&la.ln2_mean),
                a(&la.ln2_rstd),
                bt,
                c,
            )?;
            // dres holds d(residual2); residual2 = inp + attproj, likewise.
            let datty = &mut *dsmall;
            matmul_bwd(
                gemm,
                datty,
                dproj_w,
                dproj_b,
                dres,
                a(&la.atty),
                &p[lp.proj_w.clone()],
                bt,
                c,
                c,
            )?;
            let dqkv = &mut dwide[..bt * 3 * c];
            attention::attention_bwd(
                dqkv,
                datty,
                a(&la.qkv),
                a(&la.atty),
                a(&la.att_lse),
                att_scratch,
                b,
                t,
                c,
                nh,
                false,
            )?;
            let dln1 = &mut *dsmall;
            matmul_bwd(
                gemm,
                dln1,
                dqkv_w,
                dqkv_b,
                dqkv,
                a(&la.ln1),
                &p[lp.qkv_w.clone()],
                bt,
                c,
                3 * c,
            )?;
            layernorm::layernorm_bwd(
                dres,
                dln1_w,
                dln1_b,
                dln1,
                a(&al.block_input(l)),
                &p[lp.ln1_w.clone()],
                a(&la.ln1_mean),
                a(&la.ln1_rstd),
                bt,
                c,
            )?;
        }
        let [dwte, dwpe] = parts(grads, [pl.wte.clone(), pl.wpe.clone()]);
        embedding::encoder_bwd(dwte, dwpe, dres, &ws.tokens, b, t, c, v)?;
        Ok(())
    }
}

impl Workspace {
    /// Allocate every buffer for micro-batches of (B, T) once: logits for every position and a
    /// gradient arena of its own ([`Gpt::forward`] then [`Gpt::backward`]).
    pub fn new(model: &Gpt, b: usize, t: usize) -> Workspace {
        Workspace::build(model, b, t, b * t, true)
    }

    /// A training workspace for [`Gpt::forward_backward`]: logits for equal chunks of at most
    /// [`LOGIT_CHUNK`] rows and no gradient arena (the caller passes one).
    pub fn for_training(model: &Gpt, b: usize, t: usize) -> Workspace {
        Workspace::build(model, b, t, LOGIT_CHUNK, false)
    }

    /// [`Workspace::for_training`] with chunks of at most `logit_rows` rows (for tuning and
    /// tests; at least 1).
    pub fn for_training_with_chunk(
        model: &Gpt,
        b: usize,
        t: usize,
        logit_rows: usize,
    ) -> Workspace {
        Workspace::build(model, b, t, logit_rows.max(1), false)
    }

    fn build(model: &Gpt, b: usize, t: usize, logit_rows: usize, own_grads: bool) -> Workspace {
        let cfg = model.config();
        let acts_layout = ActLayout::with_logit_rows(cfg, b, t, logit_rows);
        let dacts_layout = DActs::new(b * t, cfg.n_embd);
        Workspace {
            acts: huge_pages::zeroed(acts_layout.total),
            dacts: huge_pages::zeroed(dacts_layout.total),
            dacts_layout,
            grads: if own_grads {
                huge_pages::zeroed(model.layout.total)
            } else {
                Vec::new()
            },
            att_scratch: vec![0.0; attention::attention_scratch_len(t, cfg.head_size())],
            dlosses: vec![0.0; b * t],
            tokens: vec![0; b * t],
            targets: vec![0; b * t],
            has_targets: false,
            gemm: GemmScratch::new(),
            acts_layout,
        }
    }

    /// The bytes this workspace holds (activations, their gradients, its own parameter
    /// gradients, scratch), not counting the GEMM packing buffers.
    pub fn bytes(&self) -> usize {
        4 * (self.acts.len()
            + self.dacts.len()
            + self.grads.len()
            + self.att_scratch.len()
            + self.dlosses.len()
            + self.tokens.len()
            + self.targets.len())
    }

    /// Zero the parameter gradients (before accumulating a new step).
    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    /// The logits of the last forward, (R, Vp): every position's for a full workspace (dlogits
    /// after a backward), the last chunk's for a training workspace.
    pub fn logits(&self) -> &[f32] {
        &self.acts[self.acts_layout.logits.clone()]
    }

    /// The per-position losses (B, T) of the last forward with targets.
    pub fn losses(&self) -> &[f32] {
        &self.acts[self.acts_layout.losses.clone()]
    }
}

fn sum_f64(xs: &[f32]) -> f64 {
    xs.iter().map(|&x| x as f64).sum()
}

fn check_tokens(
    what: &'static str,
    tokens: &[u32],
    want: usize,
    vocab: usize,
) -> Result<(), ModelError> {
    if tokens.len() != want {
        return Err(ModelError::TokenCount {
            what,
            got: tokens.len(),
            want,
        });
    }
    match tokens.iter().position(|&tok| tok as usize >= vocab) {
        Some(pos) => Err(ModelError::TokenOutOfRange {
            what,
            token: tokens[pos],
            pos,
            vocab,
        }),
        None => Ok(()),
    }
}

/// Several disjoint mutable views of one arena. The layouts hand out non-overlapping ranges by
/// construction, so an overlap here is a bug in a layout, not bad input.
fn parts<const N: usize>(arena: &mut [f32], ranges: [Range<usize>; N]) -> [&mut [f32]; N] {
    arena
        .get_disjoint_mut(ranges)
        .expect("arena layout ranges are disjoint and in bounds")
}

/// out (N, OC) = inp (N, IC) · w (IC, OC) + bias (OC).
#[allow(clippy::too_many_arguments)]
fn matmul_fwd(
    gemm: &mut GemmScratch,
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    bias: &[f32],
    n: usize,
    ic: usize,
    oc: usize,
) -> Result<(), ShapeError> {
    gemm::sgemm_unchecked(gemm, Layout::NN, n, ic, oc, inp, ic, w, oc, out, oc, false);
    cllm_kernels::bias::bias_fwd(out, bias, n, oc)
}

/// dinp (N, IC) = dout · wᵀ (overwritten); dw (IC, OC) += inpᵀ · dout; dbias (OC) += Σ rows of dout.
#[allow(clippy::too_many_arguments)]
fn matmul_bwd(
    gemm: &mut GemmScratch,
    dinp: &mut [f32],
    dw: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    ic: usize,
    oc: usize,
) -> Result<(), ShapeError> {
    gemm::sgemm_unchecked(
        gemm,
        Layout::NT,
        n,
        oc,
        ic,
        dout,
        oc,
        w,
        oc,
        dinp,
        ic,
        false,
    );
    gemm::sgemm_unchecked(gemm, Layout::TN, ic, n, oc, inp, ic, dout, oc, dw, oc, true);
    cllm_kernels::bias::bias_bwd(dbias, dout, n, oc)
}
