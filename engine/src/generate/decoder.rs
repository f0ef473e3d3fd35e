//! The KV-cache decoder: prefill a (B, T) block of prompt tokens, then decode one token per row,
//! each step attending to the cached keys and values of the earlier positions.
//!
//! Rows are left-padded: row b's first `pad[b]` cache slots hold padding that no real position
//! attends to, and the token in slot s has position `s - pad[b]`, so each row computes exactly
//! what it would compute alone.
//!
//! One step is one job on the sphere workers. With at most [`GEMV_MAX_ROWS`] token rows (decode)
//! every matrix is split by output columns, so each worker streams its own part of every weight
//! once per step, and the layer runs between barriers; with more rows (prefill) each worker runs
//! the GEMMs of its own rows and the workers meet only around attention.

use super::GenerateError;
use crate::model::{Gpt, LN_EPS};
use crate::spheres::Spheres;
use cllm_kernels::gemm::{self, GemmScratch, Layout};
use cllm_kernels::gemv::{self, GEMV_MAX_ROWS};
use cllm_kernels::{bias, gelu, layernorm};
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

/// Prompt tokens per row run in one prefill pass (longer prompts run in several).
pub const PREFILL_CHUNK: usize = 256;

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
    /// (L, B, ctx, C) keys and values of every cached position.
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
    /// (B, ctx, C) one layer's cache, for reordering beams.
    reorder_tmp: Vec<f32>,
    /// (B) source rows of a reorder.
    reorder_src: Vec<usize>,
    workers: Vec<Mutex<WorkerScratch>>,
}

/// One worker's private buffers.
struct WorkerScratch {
    /// (B*chunk, C) a LayerNorm output.
    ln: Vec<f32>,
    /// (B*chunk) LayerNorm statistics (unused beyond the call).
    mean: Vec<f32>,
    rstd: Vec<f32>,
    /// (B*chunk, 4C) the MLP's hidden layer before GELU.
    h: Vec<f32>,
    /// (ctx) attention scores.
    scores: Vec<f32>,
    gemm: GemmScratch,
}

/// A mutable buffer shared by the workers of one job, each writing only ranges no other worker
/// touches between two barriers.
#[derive(Clone, Copy)]
struct Shared {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: `Shared` is only a pointer; the disjointness rule of its accessors makes the accesses
// from different threads race-free.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn new(buf: &mut [f32]) -> Shared {
        Shared {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// # Safety
    /// No other live reference may cover `r` while the result lives (the workers write disjoint
    /// ranges between barriers), and the buffer must outlive it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn mut_at(&self, r: Range<usize>) -> &mut [f32] {
        assert!(r.start <= r.end && r.end <= self.len);
        // SAFETY: in bounds (asserted); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.len()) }
    }

    /// # Safety
    /// No live mutable reference may cover `r` while the result lives.
    unsafe fn at(&self, r: Range<usize>) -> &[f32] {
        assert!(r.start <= r.end && r.end <= self.len);
        // SAFETY: in bounds (asserted); no writer is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr.add(r.start), r.len()) }
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
        let workers = (0..nw)
            .map(|_| {
                Mutex::new(WorkerScratch {
                    ln: vec![0.0; m * c],
                    mean: vec![0.0; m],
                    rstd: vec![0.0; m],
                    h: vec![0.0; m * 4 * c],
                    scores: vec![0.0; ctx],
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
            k_cache: vec![0.0; l * batch * ctx * c],
            v_cache: vec![0.0; l * batch * ctx * c],
            pad: vec![0; batch],
            len: 0,
            resid: vec![0.0; m * c],
            qkv: vec![0.0; m * 3 * c],
            atty: vec![0.0; m * c],
            fch: vec![0.0; m * 4 * c],
            logits: vec![0.0; batch * vp],
            reorder_tmp: Vec::new(),
            reorder_src: vec![0; batch],
            workers,
        })
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
            self.pass(tokens, t, start..start + n)?;
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
        self.pass(tokens, 1, 0..1)
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
        let used = self.len * c;
        for cache in [&mut self.k_cache, &mut self.v_cache] {
            for layer in cache.chunks_exact_mut(b * ctx * c) {
                for (i, &s) in src.iter().enumerate() {
                    self.reorder_tmp[i * ctx * c..i * ctx * c + used]
                        .copy_from_slice(&layer[s * ctx * c..s * ctx * c + used]);
                }
                for i in 0..b {
                    layer[i * ctx * c..i * ctx * c + used]
                        .copy_from_slice(&self.reorder_tmp[i * ctx * c..i * ctx * c + used]);
                }
            }
        }
        for (i, &s) in src.iter().enumerate() {
            self.reorder_src[i] = self.pad[s];
        }
        self.pad.copy_from_slice(&self.reorder_src);
    }

    /// Run columns `cols` of `tokens` (B, t) through the model at cache slots `len..`.
    fn pass(&mut self, tokens: &[u32], t: usize, cols: Range<usize>) -> Result<(), GenerateError> {
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
        let m = bsz * tn;
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
        let job = Job {
            model,
            bsz,
            tn,
            m,
            len: self.len,
            ctx: self.ctx,
            pad: &self.pad,
            resid: Shared::new(&mut self.resid[..m * c]),
            qkv: Shared::new(&mut self.qkv[..m * 3 * c]),
            atty: Shared::new(&mut self.atty[..m * c]),
            fch: Shared::new(&mut self.fch[..m * 4 * c]),
            logits: Shared::new(&mut self.logits),
            k_cache: Shared::new(&mut self.k_cache),
            v_cache: Shared::new(&mut self.v_cache),
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
    bsz: usize,
    /// New tokens per row.
    tn: usize,
    /// Token rows: bsz * tn.
    m: usize,
    /// Cache slots filled before this pass.
    len: usize,
    ctx: usize,
    pad: &'a [usize],
    resid: Shared,
    qkv: Shared,
    atty: Shared,
    fch: Shared,
    logits: Shared,
    k_cache: Shared,
    v_cache: Shared,
    workers: &'a [Mutex<WorkerScratch>],
    nh: usize,
    vp: usize,
}

/// Up to [`GEMV_MAX_ROWS`] row slices of a (rows, ld) shared buffer, columns `cols`, rows `rows`.
///
/// # Safety
/// As [`Shared::mut_at`], for every row's range.
#[allow(clippy::mut_from_ref)]
unsafe fn rows_mut<'b>(
    buf: &'b Shared,
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

fn rows_of(buf: &[f32], ld: usize, rows: Range<usize>) -> [&[f32]; GEMV_MAX_ROWS] {
    let mut out: [&[f32]; GEMV_MAX_ROWS] = Default::default();
    for (o, r) in out.iter_mut().zip(rows) {
        *o = &buf[r * ld..r * ld + ld];
    }
    out
}

impl Job<'_> {
    fn run(&self, w: usize, nw: usize, barrier: &dyn Fn()) {
        let mut guard = self.workers[w]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let scr = &mut *guard;
        let cfg = *self.model.config();
        let (c, m) = (cfg.n_embd, self.m);
        let p = &self.model.params;
        let pl = &self.model.layout;
        let narrow = m <= GEMV_MAX_ROWS;
        let my_rows = split(0..m, nw, w);
        const EXPECT: &str = "the decoder's buffers are sized for its model";
        for (l, lp) in pl.layers.iter().enumerate() {
            if narrow {
                // SAFETY: resid is only read here; the last writes were before a barrier.
                let resid = unsafe { self.resid.at(0..m * c) };
                layernorm::layernorm_fwd(
                    &mut scr.ln[..m * c],
                    &mut scr.mean[..m],
                    &mut scr.rstd[..m],
                    resid,
                    &p[lp.ln1_w.clone()],
                    &p[lp.ln1_b.clone()],
                    m,
                    c,
                    LN_EPS,
                )
                .expect(EXPECT);
                let cols = split_cols(3 * c, nw, w);
                // SAFETY: each worker writes its own columns of qkv.
                let mut y = unsafe { rows_mut(&self.qkv, 3 * c, 0..m, &cols) };
                let x = rows_of(&scr.ln, c, 0..m);
                gemv::gemv_nn(
                    &mut y[..m],
                    &x[..m],
                    &p[lp.qkv_w.start + cols.start..lp.qkv_w.end],
                    3 * c,
                    &p[lp.qkv_b.start + cols.start..lp.qkv_b.start + cols.end],
                    false,
                )
                .expect(EXPECT);
            } else {
                let r = my_rows.clone();
                // SAFETY: each worker reads its own rows of resid, which only it writes.
                let resid = unsafe { self.resid.at(r.start * c..r.end * c) };
                layernorm::layernorm_fwd(
                    &mut scr.ln[..r.len() * c],
                    &mut scr.mean[..r.len()],
                    &mut scr.rstd[..r.len()],
                    resid,
                    &p[lp.ln1_w.clone()],
                    &p[lp.ln1_b.clone()],
                    r.len(),
                    c,
                    LN_EPS,
                )
                .expect(EXPECT);
                // SAFETY: each worker writes its own rows of qkv.
                let qkv = unsafe { self.qkv.mut_at(r.start * 3 * c..r.end * 3 * c) };
                gemm::sgemm(
                    &mut scr.gemm,
                    Layout::NN,
                    r.len(),
                    c,
                    3 * c,
                    &scr.ln[..r.len() * c],
                    c,
                    &p[lp.qkv_w.clone()],
                    3 * c,
                    qkv,
                    3 * c,
                    false,
                )
                .expect(EXPECT);
                bias::bias_fwd(qkv, &p[lp.qkv_b.clone()], r.len(), 3 * c).expect(EXPECT);
            }
            barrier();
            self.attention(l, w, nw, &mut scr.scores);
            barrier();
            if narrow {
                let cols = split_cols(c, nw, w);
                // SAFETY: atty is only read after the barrier; each worker writes its own
                // columns of resid.
                let atty = unsafe { self.atty.at(0..m * c) };
                // SAFETY: as above (disjoint ranges between barriers).
                let mut y = unsafe { rows_mut(&self.resid, c, 0..m, &cols) };
                gemv::gemv_nn(
                    &mut y[..m],
                    &rows_of(atty, c, 0..m)[..m],
                    &p[lp.proj_w.start + cols.start..lp.proj_w.end],
                    c,
                    &p[lp.proj_b.start + cols.start..lp.proj_b.start + cols.end],
                    true,
                )
                .expect(EXPECT);
                barrier();
                // SAFETY: resid is only read until the next barrier.
                let resid = unsafe { self.resid.at(0..m * c) };
                layernorm::layernorm_fwd(
                    &mut scr.ln[..m * c],
                    &mut scr.mean[..m],
                    &mut scr.rstd[..m],
                    resid,
                    &p[lp.ln2_w.clone()],
                    &p[lp.ln2_b.clone()],
                    m,
                    c,
                    LN_EPS,
                )
                .expect(EXPECT);
                let cols = split_cols(4 * c, nw, w);
                let nc = cols.len();
                {
                    let mut h: [&mut [f32]; GEMV_MAX_ROWS] = Default::default();
                    for (i, chunk) in scr.h[..m * nc]
                        .chunks_exact_mut(nc.max(1))
                        .enumerate()
                        .take(m)
                    {
                        h[i] = chunk;
                    }
                    let x = rows_of(&scr.ln, c, 0..m);
                    gemv::gemv_nn(
                        &mut h[..m],
                        &x[..m],
                        &p[lp.fc_w.start + cols.start..lp.fc_w.end],
                        4 * c,
                        &p[lp.fc_b.start + cols.start..lp.fc_b.start + cols.end],
                        false,
                    )
                    .expect(EXPECT);
                }
                for i in 0..m {
                    // SAFETY: each worker writes its own columns of fch.
                    let out = unsafe {
                        self.fch
                            .mut_at(i * 4 * c + cols.start..i * 4 * c + cols.end)
                    };
                    gelu::gelu_fwd(out, &scr.h[i * nc..i * nc + nc], nc).expect(EXPECT);
                }
                barrier();
                let cols = split_cols(c, nw, w);
                // SAFETY: fch is only read after the barrier; each worker writes its own
                // columns of resid.
                let fch = unsafe { self.fch.at(0..m * 4 * c) };
                // SAFETY: as above (disjoint ranges between barriers).
                let mut y = unsafe { rows_mut(&self.resid, c, 0..m, &cols) };
                gemv::gemv_nn(
                    &mut y[..m],
                    &rows_of(fch, 4 * c, 0..m)[..m],
                    &p[lp.fcproj_w.start + cols.start..lp.fcproj_w.end],
                    c,
                    &p[lp.fcproj_b.start + cols.start..lp.fcproj_b.start + cols.end],
                    true,
                )
                .expect(EXPECT);
                barrier();
            } else {
                let r = my_rows.clone();
                let n = r.len();
                // SAFETY: atty is only read after the barrier; each worker writes its own rows of
                // resid and fch.
                let atty = unsafe { self.atty.at(r.start * c..r.end * c) };
                // SAFETY: as above (disjoint ranges between barriers).
                let resid = unsafe { self.resid.mut_at(r.start * c..r.end * c) };
                gemm::sgemm(
                    &mut scr.gemm,
                    Layout::NN,
                    n,
                    c,
                    c,
                    atty,
                    c,
                    &p[lp.proj_w.clone()],
                    c,
                    resid,
                    c,
                    true,
                )
                .expect(EXPECT);
                bias::bias_fwd(resid, &p[lp.proj_b.clone()], n, c).expect(EXPECT);
                layernorm::layernorm_fwd(
                    &mut scr.ln[..n * c],
                    &mut scr.mean[..n],
                    &mut scr.rstd[..n],
                    resid,
                    &p[lp.ln2_w.clone()],
                    &p[lp.ln2_b.clone()],
                    n,
                    c,
                    LN_EPS,
                )
                .expect(EXPECT);
                gemm::sgemm(
                    &mut scr.gemm,
                    Layout::NN,
                    n,
                    c,
                    4 * c,
                    &scr.ln[..n * c],
                    c,
                    &p[lp.fc_w.clone()],
                    4 * c,
                    &mut scr.h[..n * 4 * c],
                    4 * c,
                    false,
                )
                .expect(EXPECT);
                bias::bias_fwd(&mut scr.h[..n * 4 * c], &p[lp.fc_b.clone()], n, 4 * c)
                    .expect(EXPECT);
                // SAFETY: as above (disjoint ranges between barriers).
                let fch = unsafe { self.fch.mut_at(r.start * 4 * c..r.end * 4 * c) };
                gelu::gelu_fwd(fch, &scr.h[..n * 4 * c], n * 4 * c).expect(EXPECT);
                gemm::sgemm(
                    &mut scr.gemm,
                    Layout::NN,
                    n,
                    4 * c,
                    c,
                    fch,
                    4 * c,
                    &p[lp.fcproj_w.clone()],
                    c,
                    resid,
                    c,
                    true,
                )
                .expect(EXPECT);
                bias::bias_fwd(resid, &p[lp.fcproj_b.clone()], n, c).expect(EXPECT);
            }
        }
        if !narrow {
            barrier();
        }
        // Final LayerNorm of each row's last position (every worker, into its own buffer), then
        // this worker's share of the vocabulary.
        let (bsz, tn) = (self.bsz, self.tn);
        // SAFETY: resid is complete (barrier above) and only read from here on.
        let resid = unsafe { self.resid.at(0..m * c) };
        for b in 0..bsz {
            let row = (b * tn + tn - 1) * c;
            layernorm::layernorm_fwd(
                &mut scr.ln[b * c..b * c + c],
                &mut scr.mean[b..b + 1],
                &mut scr.rstd[b..b + 1],
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
            let x = rows_of(&scr.ln, c, b0..b1);
            gemv::gemv_nt(&mut y[..b1 - b0], &x[..b1 - b0], wte, c).expect(EXPECT);
            b0 = b1;
        }
    }

    /// Causal attention of the new positions over the cache, for this worker's (row, head)
    /// pairs; writes the new keys and values into the cache first.
    fn attention(&self, l: usize, w: usize, nw: usize, scores: &mut [f32]) {
        let cfg = *self.model.config();
        let (c, nh, tn) = (cfg.n_embd, self.nh, self.tn);
        let hs = c / nh;
        let scale = 1.0 / (hs as f32).sqrt();
        for task in split(0..self.bsz * nh, nw, w) {
            let (b, h) = (task / nh, task % nh);
            let base = (l * self.bsz + b) * self.ctx * c + h * hs;
            let at = |slot: usize| base + slot * c..base + slot * c + hs;
            for i in 0..tn {
                let row = (b * tn + i) * 3 * c + h * hs;
                let slot = self.len + i;
                // SAFETY: qkv is only read between these barriers; this task alone touches head
                // h of row b in the caches and the attention output.
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
                // SAFETY: as above.
                let (q, out) = unsafe {
                    (
                        self.qkv.at(row * 3 * c + h * hs..row * 3 * c + h * hs + hs),
                        self.atty.mut_at(row * c + h * hs..row * c + h * hs + hs),
                    )
                };
                out.fill(0.0);
                let lo = self.pad[b];
                if slot < lo {
                    continue;
                }
                let s = &mut scores[..slot + 1 - lo];
                let mut max = f32::NEG_INFINITY;
                for (j, sj) in (lo..=slot).zip(s.iter_mut()) {
                    // SAFETY: as above.
                    *sj = dot(q, unsafe { self.k_cache.at(at(j)) }) * scale;
                    max = max.max(*sj);
                }
                let mut sum = 0.0f32;
                for sj in s.iter_mut() {
                    *sj = (*sj - max).exp();
                    sum += *sj;
                }
                let inv = 1.0 / sum;
                for (j, &sj) in (lo..=slot).zip(s.iter()) {
                    // SAFETY: as above.
                    let vj = unsafe { self.v_cache.at(at(j)) };
                    let wgt = sj * inv;
                    for (o, &x) in out.iter_mut().zip(vj) {
                        *o += wgt * x;
                    }
                }
            }
        }
    }
}

/// Σ a[i]·b[i] with eight partial sums (vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}
