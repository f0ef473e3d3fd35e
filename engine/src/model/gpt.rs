//! GPT-2 forward and backward on one (B, T) micro-batch, llm.c style: every buffer in an arena,
//! every layer a call to a kernel with explicit outputs.
//!
//! Shape legend: B batch, T sequence length, C width, NH heads, V vocabulary, Vp padded vocabulary,
//! L blocks. Backward accumulates into the gradient arena (call [`Workspace::zero_grad`] between
//! optimizer steps), so gradient accumulation over micro-batches is just several backward calls.

use super::acts::ActLayout;
use super::params::ParamLayout;
use super::GptConfig;
use cllm_kernels::gemm::{self, GemmScratch, Layout};
use cllm_kernels::{attention, embedding, gelu, layernorm, loss, residual, ShapeError};
use std::ops::Range;

/// LayerNorm epsilon of GPT-2.
pub const LN_EPS: f32 = 1e-5;

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
    /// Gradients of the activations before the logits, at the same offsets as `acts`.
    pub dacts: Vec<f32>,
    /// Parameter gradients at the offsets of the [`ParamLayout`].
    pub grads: Vec<f32>,
    /// Attention's packed Kᵀ/Vᵀ scratch.
    att_scratch: Vec<f32>,
    /// (B, T) the gradient of the mean loss with respect to each position's loss: 1 / (B*T).
    dlosses: Vec<f32>,
    /// (B, T) inputs of the last forward.
    tokens: Vec<u32>,
    /// (B, T) targets of the last forward, when it had them.
    targets: Vec<u32>,
    has_targets: bool,
    gemm: GemmScratch,
}

impl Gpt {
    /// A model with every parameter zero (load or initialise them next).
    pub fn zeros(config: GptConfig) -> Gpt {
        let layout = ParamLayout::new(config);
        let params = vec![0.0; layout.total];
        Gpt { layout, params }
    }

    pub fn config(&self) -> &GptConfig {
        &self.layout.config
    }

    /// Run the model on `tokens` (B, T); with `targets` (B, T) also the per-position losses,
    /// returning their mean. Logits (B, T, Vp) are left in the workspace.
    pub fn forward(
        &self,
        ws: &mut Workspace,
        tokens: &[u32],
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>, ModelError> {
        let cfg = self.layout.config;
        let al = &ws.acts_layout;
        let (b, t, c, nh, v, vp) = (
            al.b,
            al.t,
            cfg.n_embd,
            cfg.n_head,
            cfg.vocab_size,
            cfg.padded_vocab(),
        );
        let bt = b * t;
        if t > cfg.n_positions {
            return Err(ModelError::SequenceTooLong {
                t,
                max: cfg.n_positions,
            });
        }
        check_tokens("inputs", tokens, bt, v)?;
        ws.tokens.copy_from_slice(tokens);
        ws.has_targets = false;
        if let Some(targets) = targets {
            check_tokens("targets", targets, bt, v)?;
            ws.targets.copy_from_slice(targets);
        }
        let p = &self.params;
        let pl = &self.layout;
        let acts = &mut ws.acts;
        let gemm = &mut ws.gemm;
        ws.dlosses.fill(1.0 / bt as f32);

        embedding::encoder_fwd(
            &mut acts[al.encoded.clone()],
            tokens,
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
        let [resid, lnf, lnf_mean, lnf_rstd, logits, losses] = parts(
            acts,
            [
                al.final_residual(),
                al.lnf.clone(),
                al.lnf_mean.clone(),
                al.lnf_rstd.clone(),
                al.logits.clone(),
                al.losses.clone(),
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
        // logits (BT, Vp) = lnf (BT, C) · wteᵀ, wte stored (Vp, C).
        gemm::sgemm(
            gemm,
            Layout::NT,
            bt,
            c,
            vp,
            lnf,
            c,
            &p[pl.wte.clone()],
            c,
            logits,
            vp,
            false,
        )?;
        match targets {
            None => Ok(None),
            Some(targets) => {
                loss::softmax_xent_fwd(losses, logits, targets, bt, v, vp)?;
                ws.has_targets = true;
                Ok(Some(
                    (losses.iter().map(|&x| x as f64).sum::<f64>() / bt as f64) as f32,
                ))
            }
        }
    }

    /// Backpropagate the mean loss of the last forward into `ws.grads` (accumulating).
    pub fn backward(&self, ws: &mut Workspace) -> Result<(), ModelError> {
        if !ws.has_targets {
            return Err(ModelError::NoLoss);
        }
        let cfg = self.layout.config;
        let al = &ws.acts_layout;
        let (b, t, c, nh, v, vp) = (
            al.b,
            al.t,
            cfg.n_embd,
            cfg.n_head,
            cfg.vocab_size,
            cfg.padded_vocab(),
        );
        let bt = b * t;
        let p = &self.params;
        let pl = &self.layout;
        let (acts, dacts, grads, gemm, att_scratch) = (
            &mut ws.acts,
            &mut ws.dacts,
            &mut ws.grads,
            &mut ws.gemm,
            &mut ws.att_scratch,
        );
        dacts.fill(0.0);

        // dlogits = (softmax - onehot) · dlosses, written over the logits; from here on the
        // activations are only read.
        loss::softmax_xent_bwd_inplace(
            &mut acts[al.logits.clone()],
            &ws.targets,
            &ws.dlosses,
            bt,
            v,
            vp,
        )?;
        let acts: &[f32] = acts;
        let a = |r: &Range<usize>| &acts[r.clone()];
        let dlogits = a(&al.logits);
        let [dresid, dlnf] = parts(dacts, [al.final_residual(), al.lnf.clone()]);
        // dlnf (BT, C) = dlogits (BT, Vp) · wte (Vp, C).
        gemm::sgemm(
            gemm,
            Layout::NN,
            bt,
            vp,
            c,
            dlogits,
            vp,
            &p[pl.wte.clone()],
            c,
            dlnf,
            c,
            false,
        )?;
        // dwte (Vp, C) += dlogitsᵀ · lnf: dlogits stored (BT, Vp) is Aᵀ.
        gemm::sgemm(
            gemm,
            Layout::TN,
            vp,
            bt,
            c,
            dlogits,
            vp,
            a(&al.lnf),
            c,
            &mut grads[pl.wte.clone()],
            c,
            true,
        )?;
        let [dlnf_w, dlnf_b] = parts(grads, [pl.lnf_w.clone(), pl.lnf_b.clone()]);
        let (resid, lnf_w, lnf_mean, lnf_rstd) = (
            a(&al.final_residual()),
            &p[pl.lnf_w.clone()],
            a(&al.lnf_mean),
            a(&al.lnf_rstd),
        );
        layernorm::layernorm_bwd(
            dresid, dlnf_w, dlnf_b, dlnf, resid, lnf_w, lnf_mean, lnf_rstd, bt, c,
        )?;

        for (l, (lp, la)) in pl.layers.iter().zip(&al.layers).enumerate().rev() {
            let (inp, ln1, ln1_mean, ln1_rstd, qkv, atty, att_lse) = (
                a(&al.block_input(l)),
                a(&la.ln1),
                a(&la.ln1_mean),
                a(&la.ln1_rstd),
                a(&la.qkv),
                a(&la.atty),
                a(&la.att_lse),
            );
            let (residual2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu) = (
                a(&la.residual2),
                a(&la.ln2),
                a(&la.ln2_mean),
                a(&la.ln2_rstd),
                a(&la.fch),
                a(&la.fch_gelu),
            );
            let [dinp, dln1, dqkv, datty, dresidual2, dln2, dfch, dfch_gelu, dresidual3] = parts(
                dacts,
                [
                    al.block_input(l),
                    la.ln1.clone(),
                    la.qkv.clone(),
                    la.atty.clone(),
                    la.residual2.clone(),
                    la.ln2.clone(),
                    la.fch.clone(),
                    la.fch_gelu.clone(),
                    la.residual3.clone(),
                ],
            );
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
            // residual3 = residual2 + fcproj: both receive dresidual3 (fcproj's gradient is read
            // straight from dresidual3).
            dresidual2.copy_from_slice(dresidual3);
            matmul_bwd(
                gemm,
                dfch_gelu,
                dfcproj_w,
                dfcproj_b,
                dresidual3,
                fch_gelu,
                &p[lp.fcproj_w.clone()],
                bt,
                4 * c,
                c,
            )?;
            gelu::gelu_bwd(dfch, fch, dfch_gelu, bt * 4 * c)?;
            matmul_bwd(
                gemm,
                dln2,
                dfc_w,
                dfc_b,
                dfch,
                ln2,
                &p[lp.fc_w.clone()],
                bt,
                c,
                4 * c,
            )?;
            layernorm::layernorm_bwd(
                dresidual2,
                dln2_w,
                dln2_b,
                dln2,
                residual2,
                &p[lp.ln2_w.clone()],
                ln2_mean,
                ln2_rstd,
                bt,
                c,
            )?;
            // residual2 = inp + attproj: likewise.
            dinp.copy_from_slice(dresidual2);
            matmul_bwd(
                gemm,
                datty,
                dproj_w,
                dproj_b,
                dresidual2,
                atty,
                &p[lp.proj_w.clone()],
                bt,
                c,
                c,
            )?;
            attention::attention_bwd(dqkv, datty, qkv, atty, att_lse, att_scratch, b, t, c, nh)?;
            matmul_bwd(
                gemm,
                dln1,
                dqkv_w,
                dqkv_b,
                dqkv,
                ln1,
                &p[lp.qkv_w.clone()],
                bt,
                c,
                3 * c,
            )?;
            layernorm::layernorm_bwd(
                dinp,
                dln1_w,
                dln1_b,
                dln1,
                inp,
                &p[lp.ln1_w.clone()],
                ln1_mean,
                ln1_rstd,
                bt,
                c,
            )?;
        }
        let [dwte, dwpe] = parts(grads, [pl.wte.clone(), pl.wpe.clone()]);
        embedding::encoder_bwd(
            dwte,
            dwpe,
            &dacts[al.encoded.clone()],
            &ws.tokens,
            b,
            t,
            c,
            v,
        )?;
        Ok(())
    }
}

impl Workspace {
    /// Allocate every buffer for micro-batches of (B, T) once.
    pub fn new(model: &Gpt, b: usize, t: usize) -> Workspace {
        let cfg = model.config();
        let acts_layout = ActLayout::new(cfg, b, t);
        Workspace {
            acts: vec![0.0; acts_layout.total],
            dacts: vec![0.0; acts_layout.logits.start],
            grads: vec![0.0; model.layout.total],
            att_scratch: vec![0.0; attention::attention_scratch_len(t, cfg.head_size())],
            dlosses: vec![0.0; b * t],
            tokens: vec![0; b * t],
            targets: vec![0; b * t],
            has_targets: false,
            gemm: GemmScratch::new(),
            acts_layout,
        }
    }

    /// Zero the parameter gradients (before accumulating a new step).
    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    /// The logits (B, T, Vp) of the last forward (dlogits after a backward).
    pub fn logits(&self) -> &[f32] {
        &self.acts[self.acts_layout.logits.clone()]
    }
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
    gemm::sgemm(gemm, Layout::NN, n, ic, oc, inp, ic, w, oc, out, oc, false)?;
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
    gemm::sgemm(
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
    )?;
    gemm::sgemm(gemm, Layout::TN, ic, n, oc, inp, ic, dout, oc, dw, oc, true)?;
    cllm_kernels::bias::bias_bwd(dbias, dout, n, oc)
}
