//! The KV-cache decoder: prefill a (B, T) block of prompt tokens, then decode one token per row,
//! each step attending to the cached keys and values of the earlier positions.
//!
//! Rows are left-padded: row b's first `pad[b]` cache slots hold padding that no real position
//! attends to, and the token in slot s has position `s - pad[b]`, so each row computes exactly
//! what it would compute alone.
//!
//! One pass is one job on the sphere workers.
//!
//! A decode step (one new token per row) takes the narrow path and is memory-bound: every weight
//! is split by its rows (the K dimension), so each worker streams one contiguous block of every
//! matrix and writes a partial product into its own slot of a partial-sum buffer. One GEMV call
//! takes at most [`GEMV_MAX_ROWS`] rows, so a larger batch runs the block under each group of
//! rows in turn, the groups after the first reading it from the caches. After a barrier, whoever
//! needs a sum adds the slots in worker order (bias first), so the result depends only on the
//! worker count, never on timing. Each worker keeps its own copy of the residual stream (a row
//! per batch row), updated identically by every worker, so a layer needs four barriers:
//!
//! ```text
//! LN1 (own copy) → qkv rows K_w           → barrier → q, k, v of own heads = Σ slots; attention
//!   → proj rows of own heads' columns     → barrier → resid += Σ slots; LN2
//!   → fc rows K_w                         → barrier → GELU(Σ slots) of own fc columns F_w
//!   → fcproj rows F_w                     → barrier → resid += Σ slots
//! ```
//!
//! Then every worker runs the final LayerNorm and its share of the vocabulary (the LM head's
//! rows, contiguous too). A prefill pass, however few its rows, takes the wide path: each worker
//! runs its share of every GEMM's output columns over all rows (its own columns of each weight
//! matrix, packed once) and the LayerNorms of its own rows, with a barrier wherever the next step
//! reads what all wrote.
//!
//! The two paths add the same products in different orders, so they differ in the last bits.
//! Which one runs depends on the kind of pass only, never on how many rows it has, and each
//! path computes every row on its own (a GEMM's row does not depend on the other rows; the
//! narrow path's partial sums are per row): so a row of a batch, left-padded or not, gets the
//! bits it gets alone, whatever the batch's size and its other prompts' lengths. (Choosing by
//! the pass's row count instead, a prompt of a few tokens took the narrow path alone and the
//! wide one in a batch with a longer prompt, and every step of a batch of nine or more rows the
//! wide one.)
//!
//! A session of two or more rows also keeps each worker's rows of the four layer
//! matrices in the panel form of [`gemv::pack_nn_panels`], packed by that worker (so its pages are
//! local), and the narrow path reads those instead of the model's matrices: the same products bit
//! for bit, from one sequential stream instead of sixteen-row sweeps whose lines alias in L1. That
//! costs a copy of the layers' matrices (85 M floats for GPT-2 124M) and pays only with several
//! rows (with one, the sweeps stream at the memory's speed already; see `kernels/src/gemv.rs`)
//! and over enough steps: the copy is made at the session's first step, and only when the cache
//! has room for at least [`PANEL_MIN_STEPS`] more.
//!
//! The cache keeps each head's keys (and values) contiguous, (L, B, NH, ctx, HS), so attention
//! streams them.

use super::GenerateError;
use crate::huge_pages;
use crate::model::{Gpt, GptConfig, LayerRanges, LN_EPS};
use crate::shared_slice::SharedSlice;
use crate::spheres::Spheres;
use cllm_kernels::gemm::{self, GemmScratch, Layout};
use cllm_kernels::gemv::{self, GEMV_MAX_ROWS};
use cllm_kernels::kv_attention;
use cllm_kernels::{bias, gelu, layernorm};
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

/// The message of the kernels' shape checks, which cannot fail on the decoder's own buffers.
const EXPECT: &str = "the decoder's buffers are sized for its model";

/// Prompt tokens per row run in one prefill pass (longer prompts run in several).
pub const PREFILL_CHUNK: usize = 256;

/// Decode steps a session of several rows must have room for, at its first step, to pack the
/// panel form: packing GPT-2 124M's layer matrices on two workers takes 70–100 ms (290 ms the
/// first time in a process, its pages fresh), and each step of 2 to 8 rows then saves 7–9 ms.
pub const PANEL_MIN_STEPS: usize = 32;

/// Column splits are multiples of this many floats (a cache line, and whole vectors).
const COL_ALIGN: usize = 16;

/// A decoding session over `batch` rows of up to `ctx` tokens each.
pub struct Decoder<'m> {
    model: &'m Gpt,
    pool: Option<&'m Spheres>,
    batch: usize,
    ctx: usize,
    /// Most new tokens per row in one pass.
    chunk: usize,
    /// (L, B, NH, ctx, HS) keys and values of every cached position.
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
    /// (B) left padding of each row.
    pad: Vec<usize>,
    /// Cache slots filled (the same for every row).
    len: usize,
    /// (B*chunk, C) the residual stream.
    resid: Vec<f32>,
    /// (B*chunk, 3C)
    qkv: Vec<f32>,
    /// (B*chunk, C) attention output.
    atty: Vec<f32>,
    /// (B*chunk, 4C) GELU of the MLP's hidden layer.
    fch: Vec<f32>,
    /// (B, Vp) logits of each row's last position.
    logits: Vec<f32>,
    /// (B, NH, ctx, HS) one layer's cache, for reordering beams.
    reorder_tmp: Vec<f32>,
    /// (B) source rows of a reorder.
    reorder_src: Vec<usize>,
    /// (NW, B, 3C), (NW, B, C), (NW, B, 4C): each worker's partial products in the narrow
    /// path (a decode step's B rows).
    part_qkv: Vec<f32>,
    part_c: Vec<f32>,
    part_fc: Vec<f32>,
    /// Each worker's rows of the layer matrices in panel form (sessions of two or more rows).
    panels: Option<Panels>,
    workers: Vec<Mutex<WorkerScratch>>,
}

/// The rows of each layer matrix one worker streams in the narrow path.
struct WorkerRows {
    /// Rows of qkv_w and fc_w: columns of the LayerNorm output.
    k: Range<usize>,
    /// The worker's attention heads.
    heads: Range<usize>,
    /// Rows of proj_w: the columns of the attention output of its heads.
    hcols: Range<usize>,
    /// Rows of fcproj_w: the columns of the MLP's hidden layer it finishes.
    f: Range<usize>,
}

impl WorkerRows {
    fn new(cfg: &GptConfig, nw: usize, w: usize) -> WorkerRows {
        let (c, nh) = (cfg.n_embd, cfg.n_head);
        let heads = split(0..nh, nw, w);
        let hs = c / nh;
        WorkerRows {
            k: split_cols(c, nw, w),
            hcols: heads.start * hs..heads.end * hs,
            heads,
            f: split_cols(4 * c, nw, w),
        }
    }

    /// The worker's block of each of layer `lp`'s matrices (qkv, proj, fc, fcproj): its range
    /// of the parameters and the matrix's row length.
    fn blocks(&self, lp: &LayerRanges, c: usize) -> [(Range<usize>, usize); 4] {
        let block = |start: usize, rows: &Range<usize>, n: usize| {
            (start + rows.start * n..start + rows.end * n, n)
        };
        [
            block(lp.qkv_w.start, &self.k, 3 * c),
            block(lp.proj_w.start, &self.hcols, c),
            block(lp.fc_w.start, &self.k, 4 * c),
            block(lp.fcproj_w.start, &self.f, c),
        ]
    }
}

/// Each worker's rows of every layer's qkv_w, proj_w, fc_w and fcproj_w, in the panel form of
/// [`gemv::pack_nn_panels`].
struct Panels {
    /// Layer after layer, worker after worker within a layer.
    buf: Vec<f32>,
    /// (L, NW) the ranges of `buf` holding worker w's blocks of layer l: qkv, proj, fc, fcproj.
    at: Vec<[Range<usize>; 4]>,
    /// Whether `buf` holds them yet ([`Panels::pack`]).
    packed: bool,
}

impl Panels {
    /// The buffer and its ranges for `nw` workers, not yet packed: its pages stay untouched
    /// until then.
    fn new(cfg: &GptConfig, nw: usize) -> Panels {
        let (at, end) = Panels::layout(cfg, nw);
        Panels {
            buf: huge_pages::zeroed(end),
            at,
            packed: false,
        }
    }

    /// The ranges of [`Panels::at`] for `nw` workers, and the floats of the buffer they span.
    fn layout(cfg: &GptConfig, nw: usize) -> (Vec<[Range<usize>; 4]>, usize) {
        let c = cfg.n_embd;
        let mut at = Vec::with_capacity(cfg.n_layer * nw);
        let mut end = 0;
        for _ in 0..cfg.n_layer {
            for w in 0..nw {
                let r = WorkerRows::new(cfg, nw, w);
                let lens = [
                    gemv::nn_panels_len(r.k.len(), 3 * c),
                    gemv::nn_panels_len(r.hcols.len(), c),
                    gemv::nn_panels_len(r.k.len(), 4 * c),
                    gemv::nn_panels_len(r.f.len(), c),
                ];
                at.push(lens.map(|n| {
                    end += n;
                    end - n..end
                }));
            }
        }
        (at, end)
    }

    /// Packs `model`'s matrices on `pool`'s workers, each its own blocks, so each block's pages
    /// are first touched by the worker that reads them (or on the calling thread with `None`).
    fn pack(&mut self, model: &Gpt, pool: Option<&Spheres>) -> Result<(), GenerateError> {
        let cfg = *model.config();
        let c = cfg.n_embd;
        let nw = pool.map_or(1, Spheres::count);
        assert_eq!(
            self.at.len(),
            cfg.n_layer * nw,
            "panels sized for another pool"
        );
        let shared = SharedSlice::new(&mut self.buf);
        let (p, pl, at) = (&model.params, &model.layout, &self.at);
        let pack = |w: usize| {
            let r = WorkerRows::new(&cfg, nw, w);
            for (l, lp) in pl.layers.iter().enumerate() {
                for (dst, (src, n)) in at[l * nw + w].iter().zip(r.blocks(lp, c)) {
                    // SAFETY: the blocks of different workers are disjoint ranges of buf, and
                    // each worker writes only its own.
                    let out = unsafe { shared.mut_at(dst.clone()) };
                    let k = src.len() / n;
                    gemv::pack_nn_panels(out, &p[src], n, k, n).expect(EXPECT);
                }
            }
        };
        match pool {
            Some(pool) => pool.run(|ctx| pack(ctx.index()))?,
            None => pack(0),
        }
        self.packed = true;
        Ok(())
    }
}

/// One worker's private buffers.
struct WorkerScratch {
    /// (B, C) a LayerNorm output: the narrow path's rows, the LM head's.
    ln: Vec<f32>,
    /// LayerNorm statistics (unused beyond the call), [`ScratchRows::stats`] floats.
    mean: Vec<f32>,
    rstd: Vec<f32>,
    /// (B*chunk, this worker's share of 4C) a wide GEMM's product before its epilogue; in the
    /// narrow path, one row of summed partial products at a time ([`ScratchRows::h`] floats).
    h: Vec<f32>,
    /// (ctx) attention scores.
    scores: Vec<f32>,
    /// (B, C) this worker's copy of the residual stream in the narrow path.
    resid: Vec<f32>,
    gemm: GemmScratch,
}

/// The sizes of a worker's [`WorkerScratch`] buffers that follow the pass's rows and the worker
/// count (`ln` and `resid` are B rows, `scores` ctx floats).
struct ScratchRows {
    /// Floats of `mean` and `rstd`: the narrow path's and the LM head's rows (one per batch
    /// row, as `ln` has), or the wide path's LayerNorm rows of one worker (its share of M;
    /// their output goes to the shared `atty`).
    stats: usize,
    /// Floats of `h`: the wide path's product of M rows and the largest worker's share of 4C
    /// columns, or the narrow path's one row of C.
    h: usize,
}

impl ScratchRows {
    /// For `nw` workers, `batch` rows and M = `m` token rows a pass at most (saturating:
    /// [`Decoder::memory_bytes`] sizes absurd sessions too, to refuse them).
    fn new(cfg: &GptConfig, nw: usize, batch: usize, m: usize) -> ScratchRows {
        let c = cfg.n_embd;
        // Part 0 of a split is the largest.
        let share = split_cols(4 * c, nw, 0).len();
        ScratchRows {
            stats: batch.max(m.div_ceil(nw)),
            h: m.saturating_mul(share).max(c),
        }
    }
}

/// Part `i` of `parts` of `range` (contiguous, sizes differ by at most one).
fn split(range: Range<usize>, parts: usize, i: usize) -> Range<usize> {
    let (q, r) = (range.len() / parts, range.len() % parts);
    let start = range.start + i * q + i.min(r);
    start..start + q + usize::from(i < r)
}

/// Part `i` of `parts` of the columns `0..n`, cut at multiples of [`COL_ALIGN`].
fn split_cols(n: usize, parts: usize, i: usize) -> Range<usize> {
    let u = split(0..n.div_ceil(COL_ALIGN), parts, i);
    (u.start * COL_ALIGN).min(n)..(u.end * COL_ALIGN).min(n)
}

/// What [`Job::gemm_cols`] does with its product (bias added).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Epilogue {
    /// dst = product.
    Store,
    /// dst += product (the residual stream).
    Add,
    /// dst = GELU(product).
    Gelu,
}

impl<'m> Decoder<'m> {
    /// A session of `batch` rows of up to `ctx` tokens (prompt and generated), run on `pool`'s
    /// workers (or on the calling thread with `None`). Allocates everything it will use.
    pub fn new(
        model: &'m Gpt,
        pool: Option<&'m Spheres>,
        batch: usize,
        ctx: usize,
    ) -> Result<Decoder<'m>, GenerateError> {
        let cfg = *model.config();
        if batch == 0 {
            return Err(GenerateError::Config(
                "the batch must have at least one row".into(),
            ));
        }
        if ctx == 0 || ctx > cfg.n_positions {
            return Err(GenerateError::Config(format!(
                "the context must be 1..={} (n_positions), got {ctx}",
                cfg.n_positions
            )));
        }
        let (c, l, vp) = (cfg.n_embd, cfg.n_layer, cfg.padded_vocab());
        let chunk = ctx.min(PREFILL_CHUNK);
        let m = batch * chunk;
        let nw = pool.map_or(1, Spheres::count);
        // Decode steps of two or more rows read the panels.
        let panels = (batch >= 2).then(|| Panels::new(&cfg, nw));
        let ScratchRows { stats, h } = ScratchRows::new(&cfg, nw, batch, m);
        let workers = (0..nw)
            .map(|_| {
                Mutex::new(WorkerScratch {
                    ln: vec![0.0; batch * c],
                    mean: vec![0.0; stats],
                    rstd: vec![0.0; stats],
                    h: vec![0.0; h],
                    scores: vec![0.0; ctx],
                    resid: vec![0.0; batch * c],
                    gemm: GemmScratch::new(),
                })
            })
            .collect();
        Ok(Decoder {
            model,
            pool,
            batch,
            ctx,
            chunk,
            k_cache: huge_pages::zeroed(l * batch * ctx * c),
            v_cache: huge_pages::zeroed(l * batch * ctx * c),
            pad: vec![0; batch],
            len: 0,
            resid: vec![0.0; m * c],
            qkv: vec![0.0; m * 3 * c],
            atty: vec![0.0; m * c],
            fch: vec![0.0; m * 4 * c],
            logits: vec![0.0; batch * vp],
            reorder_tmp: Vec::new(),
            reorder_src: vec![0; batch],
            part_qkv: vec![0.0; nw * batch * 3 * c],
            part_c: vec![0.0; nw * batch * c],
            part_fc: vec![0.0; nw * batch * 4 * c],
            panels,
            workers,
        })
    }

    /// The bytes [`Decoder::new`] allocates for a session of `batch` rows of up to `ctx` tokens
    /// on `workers` workers (the model's weights not included: it borrows them); `None` when that
    /// is more than a `u64` holds. A caller checks it against the machine's memory before asking
    /// for a session too large to allocate. Kept in step with [`Decoder::new`] by a test that counts
    /// what it allocates (`engine/tests/generate_alloc.rs`).
    pub fn memory_bytes(cfg: &GptConfig, workers: usize, batch: usize, ctx: usize) -> Option<u64> {
        // In f64, which cannot overflow: an estimate of sizes that may be absurd.
        let f = |x: usize| x as f64;
        let (c, l, vp) = (f(cfg.n_embd), f(cfg.n_layer), f(cfg.padded_vocab()));
        let (b, t, nw) = (f(batch), f(ctx), f(workers.max(1)));
        let m = batch.saturating_mul(ctx.min(PREFILL_CHUNK));
        let rows = ScratchRows::new(cfg, workers.max(1), batch, m);
        let m = f(m);
        let panels = if batch >= 2 {
            f(Panels::layout(cfg, workers.max(1)).1)
        } else {
            0.0
        };
        // Per worker: ln, mean, rstd, h, scores, resid, and its GEMM packing buffers.
        let worker =
            b * c + 2.0 * f(rows.stats) + f(rows.h) + t + b * c + f(GemmScratch::new_bytes()) / 4.0;
        // k and v caches; resid, qkv, atty, fch; logits; the partial products; panels.
        let floats = 2.0 * l * b * t * c
            + m * (c + 3.0 * c + c + 4.0 * c)
            + b * vp
            + nw * b * (3.0 * c + c + 4.0 * c)
            + nw * worker
            + panels;
        // pad and reorder_src: one usize per row each.
        let bytes = floats * 4.0 + b * 2.0 * f(size_of::<usize>());
        (bytes < u64::MAX as f64).then_some(bytes as u64)
    }

    /// B: the rows of this session.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The most tokens a row can hold.
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Cache slots filled so far (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been run since the last prefill reset.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The model this session runs.
    pub fn model(&self) -> &'m Gpt {
        self.model
    }

    /// Row b's logits (V) after the last pass.
    pub fn logits(&self, b: usize) -> &[f32] {
        let cfg = self.model.config();
        let vp = cfg.padded_vocab();
        &self.logits[b * vp..b * vp + cfg.vocab_size]
    }

    /// Start over with `tokens` (B, T): row b's first `pads[b]` tokens are padding. Leaves every
    /// row's next-token logits in [`Decoder::logits`].
    pub fn prefill(&mut self, tokens: &[u32], pads: &[usize]) -> Result<(), GenerateError> {
        let b = self.batch;
        if pads.len() != b || !tokens.len().is_multiple_of(b) || tokens.is_empty() {
            return Err(GenerateError::Config(format!(
                "prefill takes B = {b} rows of equal length and B pads; got {} tokens and {} pads",
                tokens.len(),
                pads.len()
            )));
        }
        let t = tokens.len() / b;
        if let Some(&p) = pads.iter().find(|&&p| p >= t) {
            return Err(GenerateError::Config(format!(
                "a row of {t} tokens cannot have {p} pads: every prompt needs a token"
            )));
        }
        self.pad.copy_from_slice(pads);
        self.len = 0;
        let mut start = 0;
        while start < t {
            let n = (t - start).min(self.chunk);
            self.pass(tokens, t, start..start + n, false)?;
            start += n;
        }
        Ok(())
    }

    /// Append one token per row (B) and compute the next logits.
    pub fn step(&mut self, tokens: &[u32]) -> Result<(), GenerateError> {
        if tokens.len() != self.batch {
            return Err(GenerateError::Config(format!(
                "a step takes one token per row (B = {}), got {}",
                self.batch,
                tokens.len()
            )));
        }
        if self.len == 0 {
            return Err(GenerateError::Config("step before prefill".into()));
        }
        if let Some(panels) = &mut self.panels {
            if !panels.packed && self.ctx - self.len >= PANEL_MIN_STEPS {
                panels.pack(self.model, self.pool)?;
            }
        }
        self.pass(tokens, 1, 0..1, true)
    }

    /// Make row b a copy of row `src[b]` (cache and padding), for beam search.
    pub fn reorder(&mut self, src: &[usize]) {
        let cfg = *self.model.config();
        let (b, ctx, c) = (self.batch, self.ctx, cfg.n_embd);
        assert!(src.len() == b && src.iter().all(|&s| s < b));
        if src.iter().enumerate().all(|(i, &s)| i == s) {
            return;
        }
        if self.reorder_tmp.is_empty() {
            self.reorder_tmp = vec![0.0; b * ctx * c];
        }
        // Each row's block is (NH, ctx, HS); its heads hold `len` slots each.
        let (nh, used) = (cfg.n_head, self.len * (c / cfg.n_head));
        let head = ctx * (c / cfg.n_head);
        for cache in [&mut self.k_cache, &mut self.v_cache] {
            for layer in cache.chunks_exact_mut(b * ctx * c) {
                for (i, &s) in src.iter().enumerate() {
                    for h in 0..nh {
                        let (to, from) = (i * ctx * c + h * head, s * ctx * c + h * head);
                        self.reorder_tmp[to..to + used].copy_from_slice(&layer[from..from + used]);
                    }
                }
                for i in 0..b {
                    for h in 0..nh {
                        let at = i * ctx * c + h * head;
                        layer[at..at + used].copy_from_slice(&self.reorder_tmp[at..at + used]);
                    }
                }
            }
        }
        for (i, &s) in src.iter().enumerate() {
            self.reorder_src[i] = self.pad[s];
        }
        self.pad.copy_from_slice(&self.reorder_src);
    }

    /// Run columns `cols` of `tokens` (B, t) through the model at cache slots `len..`: a decode
    /// step (`narrow`, one column) on the narrow path, a prefill chunk on the wide path (see
    /// the module docs).
    fn pass(
        &mut self,
        tokens: &[u32],
        t: usize,
        cols: Range<usize>,
        narrow: bool,
    ) -> Result<(), GenerateError> {
        let model = self.model;
        let cfg = *model.config();
        let (bsz, c, nh, v, vp) = (
            self.batch,
            cfg.n_embd,
            cfg.n_head,
            cfg.vocab_size,
            cfg.padded_vocab(),
        );
        let tn = cols.len();
        debug_assert!(
            !narrow || tn == 1,
            "the narrow path takes one token per row"
        );
        if self.len + tn > self.ctx {
            return Err(GenerateError::TooLong {
                len: self.len + tn,
                ctx: self.ctx,
            });
        }
        let p = &model.params;
        let pl = &model.layout;
        // Embedding: resid[b*tn + i] = wte[token] + wpe[position].
        for b in 0..bsz {
            for (i, col) in cols.clone().enumerate() {
                let tok = tokens[b * t + col];
                if tok as usize >= v {
                    return Err(GenerateError::TokenOutOfRange {
                        token: tok,
                        pos: col,
                        vocab: v,
                    });
                }
                let pos = (self.len + i).saturating_sub(self.pad[b]);
                let e = &p[pl.wte.start + tok as usize * c..][..c];
                let q = &p[pl.wpe.start + pos * c..][..c];
                let out = &mut self.resid[(b * tn + i) * c..][..c];
                for ((o, &x), &y) in out.iter_mut().zip(e).zip(q) {
                    *o = x + y;
                }
            }
        }
        let m = bsz * tn;
        let job = Job {
            model,
            narrow,
            bsz,
            tn,
            m,
            len: self.len,
            ctx: self.ctx,
            pad: &self.pad,
            resid: SharedSlice::new(&mut self.resid[..m * c]),
            qkv: SharedSlice::new(&mut self.qkv[..m * 3 * c]),
            atty: SharedSlice::new(&mut self.atty[..m * c]),
            fch: SharedSlice::new(&mut self.fch[..m * 4 * c]),
            logits: SharedSlice::new(&mut self.logits),
            k_cache: SharedSlice::new(&mut self.k_cache),
            v_cache: SharedSlice::new(&mut self.v_cache),
            part_qkv: SharedSlice::new(&mut self.part_qkv),
            part_c: SharedSlice::new(&mut self.part_c),
            part_fc: SharedSlice::new(&mut self.part_fc),
            panels: self.panels.as_ref().filter(|p| p.packed),
            workers: &self.workers,
            nh,
            vp,
        };
        match self.pool {
            Some(pool) => pool.run(|ctx| job.run(ctx.index(), ctx.count(), &|| ctx.barrier()))?,
            None => job.run(0, 1, &|| {}),
        }
        self.len += tn;
        Ok(())
    }
}

/// One pass, as every worker runs it.
struct Job<'a> {
    model: &'a Gpt,
    /// The narrow path (a decode step), else the wide one (prefill).
    narrow: bool,
    /// B: the session's rows (of the caches, `pad` and `logits` too).
    bsz: usize,
    /// New tokens per row.
    tn: usize,
    /// Token rows: bsz * tn.
    m: usize,
    /// Cache slots filled before this pass.
    len: usize,
    ctx: usize,
    pad: &'a [usize],
    resid: SharedSlice,
    qkv: SharedSlice,
    atty: SharedSlice,
    fch: SharedSlice,
    logits: SharedSlice,
    k_cache: SharedSlice,
    v_cache: SharedSlice,
    part_qkv: SharedSlice,
    part_c: SharedSlice,
    part_fc: SharedSlice,
    panels: Option<&'a Panels>,
    workers: &'a [Mutex<WorkerScratch>],
    nh: usize,
    vp: usize,
}

/// The rows `0..m` in groups of at most [`GEMV_MAX_ROWS`], the most one GEMV call takes: each
/// group after the first reads a worker's block of a matrix again, from the caches.
fn groups(m: usize) -> impl Iterator<Item = Range<usize>> {
    (0..m)
        .step_by(GEMV_MAX_ROWS)
        .map(move |g| g..(g + GEMV_MAX_ROWS).min(m))
}

/// Up to [`GEMV_MAX_ROWS`] row slices of a (rows, ld) shared buffer, columns `cols`, rows `rows`.
///
/// # Safety
/// As [`SharedSlice::mut_at`], for every row's range.
#[allow(clippy::mut_from_ref)]
unsafe fn rows_mut<'b>(
    buf: &'b SharedSlice,
    ld: usize,
    rows: Range<usize>,
    cols: &Range<usize>,
) -> [&'b mut [f32]; GEMV_MAX_ROWS] {
    let mut out: [&mut [f32]; GEMV_MAX_ROWS] = Default::default();
    for (o, r) in out.iter_mut().zip(rows) {
        // SAFETY: passed on to the caller.
        *o = unsafe { buf.mut_at(r * ld + cols.start..r * ld + cols.end) };
    }
    out
}

/// Up to [`GEMV_MAX_ROWS`] row slices of a (rows, ld) buffer, columns `cols`, rows `rows`.
fn rows_of<'b>(
    buf: &'b [f32],
    ld: usize,
    rows: Range<usize>,
    cols: &Range<usize>,
) -> [&'b [f32]; GEMV_MAX_ROWS] {
    let mut out: [&[f32]; GEMV_MAX_ROWS] = Default::default();
    for (o, r) in out.iter_mut().zip(rows) {
        *o = &buf[r * ld + cols.start..r * ld + cols.end];
    }
    out
}

/// As [`rows_of`], on a shared buffer.
///
/// # Safety
/// As [`SharedSlice::at`], for every row's range.
unsafe fn rows_at<'b>(
    buf: &'b SharedSlice,
    ld: usize,
    rows: Range<usize>,
    cols: &Range<usize>,
) -> [&'b [f32]; GEMV_MAX_ROWS] {
    let mut out: [&[f32]; GEMV_MAX_ROWS] = Default::default();
    for (o, r) in out.iter_mut().zip(rows) {
        // SAFETY: passed on to the caller.
        *o = unsafe { buf.at(r * ld + cols.start..r * ld + cols.end) };
    }
    out
}

/// `y = x · w` for a worker's rows `w` (stride `n`) of a layer matrix: from `panel`, the same rows
/// in panel form, when the session has one (the same bits either way).
fn gemv_rows(y: &mut [&mut [f32]], x: &[&[f32]], w: &[f32], n: usize, panel: Option<&[f32]>) {
    match panel {
        Some(panel) => gemv::gemv_nn_panels(y, x, panel, &[], false),
        None => gemv::gemv_nn(y, x, w, n, &[], false),
    }
    .expect(EXPECT);
}

/// `out[j] = bias[j] + Σ_v parts[v][row][cols.start + j]` over the `nw` slots of a partial-sum
/// buffer (slot v: `m` rows of `ld` floats, the pass's token rows), in slot order.
///
/// # Safety
/// No worker may be writing the slots' `cols` of `row` (they were written before a barrier).
#[allow(clippy::too_many_arguments)]
unsafe fn sum_parts(
    out: &mut [f32],
    bias: &[f32],
    parts: &SharedSlice,
    nw: usize,
    m: usize,
    ld: usize,
    row: usize,
    cols: &Range<usize>,
) {
    out.copy_from_slice(bias);
    for v in 0..nw {
        let at = (v * m + row) * ld;
        // SAFETY: the caller's promise.
        let part = unsafe { parts.at(at + cols.start..at + cols.end) };
        for (o, &x) in out.iter_mut().zip(part) {
            *o += x;
        }
    }
}

impl Job<'_> {
    /// `resid[r] += bias + Σ_v part_c[v][r]` for every row r of a worker's residual copy
    /// (m, C), each sum made in `t` (C) in slot order.
    ///
    /// # Safety
    /// As [`sum_parts`]: no worker may be writing `part_c`'s first `m` rows of any slot.
    unsafe fn add_part_c(&self, resid: &mut [f32], t: &mut [f32], bias: &[f32], nw: usize) {
        let c = bias.len();
        for (r, row) in resid.chunks_exact_mut(c).enumerate() {
            // SAFETY: the caller's promise.
            unsafe { sum_parts(t, bias, &self.part_c, nw, self.m, c, r, &(0..c)) };
            for (o, &x) in row.iter_mut().zip(t.iter()) {
                *o += x;
            }
        }
    }

    fn run(&self, w: usize, nw: usize, barrier: &dyn Fn()) {
        let mut guard = self.workers[w]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let scr = &mut *guard;
        let narrow = self.narrow;
        if narrow {
            self.narrow(scr, w, nw, barrier);
        } else {
            self.wide(scr, w, nw, barrier);
            barrier();
        }
        self.lm_head(scr, w, nw, narrow);
    }

    /// The layers for a decode step's B token rows: every matrix split by its rows (see the
    /// module docs), GEMV calls on groups of at most [`GEMV_MAX_ROWS`] of them, each worker on
    /// its own copy of the residual stream.
    fn narrow(&self, scr: &mut WorkerScratch, w: usize, nw: usize, barrier: &dyn Fn()) {
        let cfg = *self.model.config();
        let (c, m) = (cfg.n_embd, self.m);
        let p = &self.model.params;
        let pl = &self.model.layout;
        let rows = WorkerRows::new(&cfg, nw, w);
        let (kc, heads, hcols, fcols) = (&rows.k, &rows.heads, &rows.hcols, &rows.f);
        let nf = fcols.len();
        let all = |n: usize| 0..n;
        let WorkerScratch {
            ln,
            mean,
            rstd,
            h,
            scores,
            resid,
            ..
        } = scr;
        let resid = &mut resid[..m * c];
        // SAFETY: the embedding was written before the job; no worker writes the shared
        // residual stream in the narrow path.
        resid.copy_from_slice(unsafe { self.resid.at(0..m * c) });
        // Rows `g` of this worker's slot of a partial-sum buffer (slots of m rows).
        let at = |g: &Range<usize>| w * m + g.start..w * m + g.end;
        for (l, lp) in pl.layers.iter().enumerate() {
            // `y = x · (this worker's block of matrix i)`, from the block in panel form when the
            // session has it.
            let blocks = rows.blocks(lp, c);
            let panels = self
                .panels
                .map(|pn| pn.at[l * nw + w].clone().map(|r| &pn.buf[r]));
            let gemv = |y: &mut [&mut [f32]], x: &[&[f32]], i: usize| {
                let (src, n) = &blocks[i];
                gemv_rows(y, x, &p[src.clone()], *n, panels.as_ref().map(|b| b[i]));
            };
            layernorm::layernorm_fwd(
                &mut ln[..m * c],
                &mut mean[..m],
                &mut rstd[..m],
                resid,
                &p[lp.ln1_w.clone()],
                &p[lp.ln1_b.clone()],
                m,
                c,
                LN_EPS,
            )
            .expect(EXPECT);
            for g in groups(m) {
                // SAFETY: slot w of each partial-sum buffer is written only by worker w, and
                // read by the others only after the next barrier and before the one after it.
                let mut y = unsafe { rows_mut(&self.part_qkv, 3 * c, at(&g), &all(3 * c)) };
                gemv(
                    &mut y[..g.len()],
                    &rows_of(ln, c, g.clone(), kc)[..g.len()],
                    0,
                );
            }
            barrier();
            for r in 0..m {
                for sec in 0..3 {
                    let cols = sec * c + hcols.start..sec * c + hcols.end;
                    // SAFETY: these columns of qkv belong to this worker's heads; the slots
                    // are complete (barrier above).
                    unsafe {
                        sum_parts(
                            self.qkv
                                .mut_at(r * 3 * c + cols.start..r * 3 * c + cols.end),
                            &p[lp.qkv_b.start + cols.start..lp.qkv_b.start + cols.end],
                            &self.part_qkv,
                            nw,
                            m,
                            3 * c,
                            r,
                            &cols,
                        )
                    };
                }
            }
            let bsz = self.bsz;
            self.attention(
                l,
                (0..bsz).flat_map(|b| heads.clone().map(move |h| (b, h))),
                scores,
            );
            for g in groups(m) {
                // SAFETY: as above; the attention output's columns of this worker's heads
                // were written by this worker alone.
                let (mut y, x) = unsafe {
                    (
                        rows_mut(&self.part_c, c, at(&g), &all(c)),
                        rows_at(&self.atty, c, g.clone(), hcols),
                    )
                };
                gemv(&mut y[..g.len()], &x[..g.len()], 1);
            }
            barrier();
            // SAFETY: the slots are complete (barrier above) and rewritten only after the next
            // barrier.
            unsafe { self.add_part_c(resid, &mut h[..c], &p[lp.proj_b.clone()], nw) };
            layernorm::layernorm_fwd(
                &mut ln[..m * c],
                &mut mean[..m],
                &mut rstd[..m],
                resid,
                &p[lp.ln2_w.clone()],
                &p[lp.ln2_b.clone()],
                m,
                c,
                LN_EPS,
            )
            .expect(EXPECT);
            for g in groups(m) {
                // SAFETY: as for qkv.
                let mut y = unsafe { rows_mut(&self.part_fc, 4 * c, at(&g), &all(4 * c)) };
                gemv(
                    &mut y[..g.len()],
                    &rows_of(ln, c, g.clone(), kc)[..g.len()],
                    2,
                );
            }
            barrier();
            for r in 0..m {
                let t = &mut h[..nf];
                // SAFETY: the slots are complete (barrier above); this worker alone writes
                // these columns of fch.
                unsafe {
                    sum_parts(
                        t,
                        &p[lp.fc_b.start + fcols.start..lp.fc_b.start + fcols.end],
                        &self.part_fc,
                        nw,
                        m,
                        4 * c,
                        r,
                        fcols,
                    );
                    let out = self
                        .fch
                        .mut_at(r * 4 * c + fcols.start..r * 4 * c + fcols.end);
                    gelu::gelu_fwd(out, t, nf).expect(EXPECT);
                }
            }
            for g in groups(m) {
                // SAFETY: slot w of part_c was last read by the others before the barrier
                // above; fch's columns `fcols` are this worker's.
                let (mut y, x) = unsafe {
                    (
                        rows_mut(&self.part_c, c, at(&g), &all(c)),
                        rows_at(&self.fch, 4 * c, g.clone(), fcols),
                    )
                };
                gemv(&mut y[..g.len()], &x[..g.len()], 3);
            }
            barrier();
            // SAFETY: as after proj.
            unsafe { self.add_part_c(resid, &mut h[..c], &p[lp.fcproj_b.clone()], nw) };
        }
    }

    /// The layers for more rows (prefill): each worker runs the LayerNorms of its own rows and,
    /// over every row, its share of each GEMM's output columns, so it packs only its columns of
    /// a weight matrix. The workers meet whenever the next step reads what all of them wrote.
    fn wide(&self, scr: &mut WorkerScratch, w: usize, nw: usize, barrier: &dyn Fn()) {
        let cfg = *self.model.config();
        let (c, m, nh) = (cfg.n_embd, self.m, self.nh);
        let p = &self.model.params;
        let pl = &self.model.layout;
        let r = split(0..m, nw, w);
        // LayerNorm of this worker's rows of resid into the same rows of atty, which is free
        // outside attention and the projection that reads it.
        let ln_rows = |scr: &mut WorkerScratch, wt: &[f32], bs: &[f32]| {
            let n = r.len();
            // SAFETY: between two barriers only this worker touches rows `r` of resid and atty.
            let (x, out) = unsafe {
                (
                    self.resid.at(r.start * c..r.end * c),
                    self.atty.mut_at(r.start * c..r.end * c),
                )
            };
            layernorm::layernorm_fwd(
                out,
                &mut scr.mean[..n],
                &mut scr.rstd[..n],
                x,
                wt,
                bs,
                n,
                c,
                LN_EPS,
            )
            .expect(EXPECT);
        };
        for (l, lp) in pl.layers.iter().enumerate() {
            ln_rows(scr, &p[lp.ln1_w.clone()], &p[lp.ln1_b.clone()]);
            barrier();
            // SAFETY: atty is complete (barrier before) and only read until the next barrier.
            let x = unsafe { self.atty.at(0..m * c) };
            self.gemm_cols(
                scr,
                (w, nw),
                x,
                c,
                &p[lp.qkv_w.clone()],
                &p[lp.qkv_b.clone()],
                self.qkv,
                Epilogue::Store,
            );
            barrier();
            self.attention(
                l,
                split(0..self.bsz * nh, nw, w).map(|t| (t / nh, t % nh)),
                &mut scr.scores,
            );
            barrier();
            // SAFETY: as above.
            let x = unsafe { self.atty.at(0..m * c) };
            self.gemm_cols(
                scr,
                (w, nw),
                x,
                c,
                &p[lp.proj_w.clone()],
                &p[lp.proj_b.clone()],
                self.resid,
                Epilogue::Add,
            );
            barrier();
            ln_rows(scr, &p[lp.ln2_w.clone()], &p[lp.ln2_b.clone()]);
            barrier();
            // SAFETY: as above.
            let x = unsafe { self.atty.at(0..m * c) };
            self.gemm_cols(
                scr,
                (w, nw),
                x,
                c,
                &p[lp.fc_w.clone()],
                &p[lp.fc_b.clone()],
                self.fch,
                Epilogue::Gelu,
            );
            barrier();
            // SAFETY: fch is complete (barrier before) and only read until the next barrier.
            let x = unsafe { self.fch.at(0..m * 4 * c) };
            self.gemm_cols(
                scr,
                (w, nw),
                x,
                4 * c,
                &p[lp.fcproj_w.clone()],
                &p[lp.fcproj_b.clone()],
                self.resid,
                Epilogue::Add,
            );
            barrier();
        }
    }

    /// This worker's share of the columns of `dst (m, N) ← epilogue(x (m, K) · wt (K, N) + bias)`,
    /// computed in its scratch (m, share) and then written to its columns of `dst`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_cols(
        &self,
        scr: &mut WorkerScratch,
        (w, nw): (usize, usize),
        x: &[f32],
        k: usize,
        wt: &[f32],
        bs: &[f32],
        dst: SharedSlice,
        epilogue: Epilogue,
    ) {
        let (m, n) = (self.m, bs.len());
        let cols = split_cols(n, nw, w);
        let nc = cols.len();
        if nc == 0 {
            return;
        }
        // (m, nc) this worker's columns.
        let h = &mut scr.h[..m * nc];
        let at = |i: usize| i * n + cols.start..i * n + cols.end;
        let accumulate = epilogue == Epilogue::Add;
        if accumulate {
            for (i, hr) in h.chunks_exact_mut(nc).enumerate() {
                // SAFETY: columns `cols` of dst are this worker's alone until the next barrier.
                hr.copy_from_slice(unsafe { dst.at(at(i)) });
            }
        }
        gemm::sgemm(
            &mut scr.gemm,
            Layout::NN,
            m,
            k,
            nc,
            x,
            k,
            &wt[cols.start..],
            n,
            h,
            nc,
            accumulate,
        )
        .expect(EXPECT);
        bias::bias_fwd(h, &bs[cols.clone()], m, nc).expect(EXPECT);
        for (i, hr) in h.chunks_exact(nc).enumerate() {
            // SAFETY: as above.
            let out = unsafe { dst.mut_at(at(i)) };
            match epilogue {
                Epilogue::Gelu => gelu::gelu_fwd(out, hr, nc).expect(EXPECT),
                Epilogue::Store | Epilogue::Add => out.copy_from_slice(hr),
            }
        }
    }

    /// Final LayerNorm of each row's last position (every worker, into its own buffer), then
    /// this worker's share of the vocabulary.
    fn lm_head(&self, scr: &mut WorkerScratch, w: usize, nw: usize, narrow: bool) {
        let cfg = *self.model.config();
        let (c, m, bsz, tn) = (cfg.n_embd, self.m, self.bsz, self.tn);
        let p = &self.model.params;
        let pl = &self.model.layout;
        let WorkerScratch {
            ln,
            mean,
            rstd,
            resid: own,
            ..
        } = scr;
        let resid: &[f32] = if narrow {
            &own[..m * c]
        } else {
            // SAFETY: resid is complete (barrier before) and only read from here on.
            unsafe { self.resid.at(0..m * c) }
        };
        for b in 0..bsz {
            let row = (b * tn + tn - 1) * c;
            layernorm::layernorm_fwd(
                &mut ln[b * c..b * c + c],
                &mut mean[b..b + 1],
                &mut rstd[b..b + 1],
                &resid[row..row + c],
                &p[pl.lnf_w.clone()],
                &p[pl.lnf_b.clone()],
                1,
                c,
                LN_EPS,
            )
            .expect(EXPECT);
        }
        let vocab = split_cols(cfg.vocab_size, nw, w);
        let wte = &p[pl.wte.start + vocab.start * c..pl.wte.end];
        let mut b0 = 0;
        while b0 < bsz {
            let b1 = (b0 + GEMV_MAX_ROWS).min(bsz);
            // SAFETY: each worker writes its own vocabulary columns of the logits.
            let mut y = unsafe { rows_mut(&self.logits, self.vp, b0..b1, &vocab) };
            let x = rows_of(ln, c, b0..b1, &(0..c));
            gemv::gemv_nt(&mut y[..b1 - b0], &x[..b1 - b0], wte, c).expect(EXPECT);
            b0 = b1;
        }
    }

    /// Causal attention of the new positions over the cache for the (row, head) pairs `tasks`;
    /// writes the new keys and values into the cache first. No other worker may have a task
    /// with the same pair.
    fn attention(&self, l: usize, tasks: impl Iterator<Item = (usize, usize)>, scores: &mut [f32]) {
        let cfg = *self.model.config();
        let (c, nh, tn) = (cfg.n_embd, self.nh, self.tn);
        let hs = c / nh;
        let scale = 1.0 / (hs as f32).sqrt();
        for (b, h) in tasks {
            // Head h of row b in layer l: ctx slots of HS floats.
            let base = ((l * self.bsz + b) * nh + h) * self.ctx * hs;
            let at = |slot: usize| base + slot * hs..base + slot * hs + hs;
            for i in 0..tn {
                let row = (b * tn + i) * 3 * c + h * hs;
                let slot = self.len + i;
                // SAFETY: qkv's columns of head h are complete and not written until the next
                // barrier; this task alone touches head h of row b in the caches.
                unsafe {
                    self.k_cache
                        .mut_at(at(slot))
                        .copy_from_slice(self.qkv.at(row + c..row + c + hs));
                    self.v_cache
                        .mut_at(at(slot))
                        .copy_from_slice(self.qkv.at(row + 2 * c..row + 2 * c + hs));
                }
            }
            for i in 0..tn {
                let slot = self.len + i;
                let row = b * tn + i;
                // SAFETY: as above; this task alone writes head h of row `row` of atty.
                let (q, out) = unsafe {
                    (
                        self.qkv.at(row * 3 * c + h * hs..row * 3 * c + h * hs + hs),
                        self.atty.mut_at(row * c + h * hs..row * c + h * hs + hs),
                    )
                };
                let lo = self.pad[b];
                if slot < lo {
                    out.fill(0.0);
                    continue;
                }
                // SAFETY: as above.
                let (keys, values) = unsafe {
                    let cached = base + lo * hs..base + (slot + 1) * hs;
                    (self.k_cache.at(cached.clone()), self.v_cache.at(cached))
                };
                kv_attention::attend_cached(
                    out,
                    q,
                    keys,
                    values,
                    scale,
                    &mut scores[..slot + 1 - lo],
                )
                .expect(EXPECT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sphere_tree::SphereTree;

    /// Two workers give the calling thread's logits on both paths (prefill wide, decode steps
    /// narrow, their weights packed into panels by the workers at the first step): two rows, and
    /// more than GEMV_MAX_ROWS (decode steps in two GEMV groups). Sized for Miri
    /// (`scripts/ub_check.sh`), which checks the workers' reads and writes through `SharedSlice`
    /// for bounds and data races.
    #[test]
    fn two_workers_give_the_calling_threads_logits_on_a_tiny_model() {
        let cfg = GptConfig {
            vocab_size: 11,
            n_positions: 40,
            n_embd: 8,
            n_layer: 1,
            n_head: 2,
        };
        let mut model = Gpt::zeros(cfg);
        for (i, p) in model.params.iter_mut().enumerate() {
            *p = ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.6;
        }
        let pool = Spheres::new(&SphereTree::flat(&[0, 0])).unwrap();
        let ctx = 3 + PANEL_MIN_STEPS;
        for batch in [2, GEMV_MAX_ROWS + 1] {
            let tokens: Vec<u32> = (0..batch * 3).map(|i| (i * 5 % 11) as u32).collect();
            let pads = vec![0; batch];
            let mut alone = Decoder::new(&model, None, batch, ctx).unwrap();
            let mut split = Decoder::new(&model, Some(&pool), batch, ctx).unwrap();
            alone.prefill(&tokens, &pads).unwrap();
            split.prefill(&tokens, &pads).unwrap();
            for step in 0..3 {
                if step > 0 {
                    let next: Vec<u32> = (0..batch).map(|b| (b + step) as u32 % 11).collect();
                    alone.step(&next).unwrap();
                    split.step(&next).unwrap();
                }
                for b in 0..batch {
                    for (x, y) in alone.logits(b).iter().zip(split.logits(b)) {
                        assert!((x - y).abs() < 1e-5, "batch {batch} step {step} row {b}");
                    }
                }
            }
        }
    }
}
