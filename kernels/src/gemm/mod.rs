//! Single-precision GEMM: `C (+)= op(A) · op(B)` on row-major matrices, single-threaded.
//!
//! The BLIS scheme (as in matrixmultiply's `gemm.rs`): five loops around a register-tiled
//! microkernel, with the operands packed into the order the microkernel reads them.
//!
//! ```text
//! loop 5 (jc): each NC-column block of B and C
//!   loop 4 (pc): each KC-deep slice of K:      pack B[pc, jc] into NR-column panels (L3)
//!     loop 3 (ic): each MC-row block of A, C:  pack A[ic, pc] into MR-row panels    (L2)
//!       loop 2 (jr): each NR-column panel of the packed B                          (L1)
//!         loop 1 (ir): each MR-row panel of the packed A
//!           microkernel: C[MR × NR] (+)= Apanel[MR × KC] · Bpanel[KC × NR]
//! ```
//!
//! On AVX-512 a row-major A (NN, NT) is not packed at all but read where it lies
//! (`reads_a_in_place`), with the same tiles and the same result.
//!
//! Each pass of loop 1 reads its B panel from L3 on its first tile unless it was fetched
//! before: the full tiles of a pass each pull a share of the next panel into L2 as they run
//! (`gemm_packed`, `GemmKernel::kernel`).
//!
//! When all M rows fit one MC block (a prefill of a few hundred tokens against a weight matrix),
//! each packed B panel would serve a single pass of loop 1, so the B block is not packed up
//! front: each NR panel is packed just before its tiles, from lines prefetched during the
//! previous panel's tiles (`few_rows`), with the same tiles and the same result.
//!
//! The three layouts differ only in how A and B are read while packing (`pack.rs`), and in
//! which can read A in place, so one microkernel per ISA (`kernel.rs`) serves them all. Block
//! sizes come from the detected cache sizes ([`blocking`]); the packing buffers live in a
//! caller-owned [`GemmScratch`] allocated once, so [`sgemm`] never allocates.
//!
//! Shapes: A is M × K, B is K × N, C is M × N; `lda`, `ldb`, `ldc` are the row strides of the
//! matrices *as stored* (so a sub-matrix of a larger row-major buffer is passed as its first
//! element and the buffer's row stride).

pub mod blocking;
mod kernel;
mod pack;

pub use pack::a_panel_stride;

use crate::dispatch::dispatch;
use crate::error::ShapeError;
use crate::isa::{self, Isa};
use crate::simd::LINE_FLOATS;
use blocking::{Blocking, CacheSizes, PanelCache};
pub(crate) use kernel::GemmKernel;
use kernel::{AWalk, Ahead, MAX_TILE};
use std::fmt;

/// How A and B are stored. Every matrix is row-major; `T` means the operand is stored transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `C = A · B`: A stored M × K, B stored K × N (forward pass).
    NN,
    /// `C = A · Bᵀ`: A stored M × K, B stored N × K (gradient of the input).
    NT,
    /// `C = Aᵀ · B`: A stored K × M, B stored K × N (gradient of the weight).
    TN,
}

impl Layout {
    /// Every layout.
    pub const ALL: [Layout; 3] = [Layout::NN, Layout::NT, Layout::TN];

    /// Rows × columns of A as stored.
    pub fn a_dims(self, m: usize, k: usize) -> (usize, usize) {
        match self {
            Layout::NN | Layout::NT => (m, k),
            Layout::TN => (k, m),
        }
    }

    /// Rows × columns of B as stored.
    pub fn b_dims(self, k: usize, n: usize) -> (usize, usize) {
        match self {
            Layout::NN | Layout::TN => (k, n),
            Layout::NT => (n, k),
        }
    }

    /// The lowercase name (`nn`, `nt`, `tn`).
    pub fn name(self) -> &'static str {
        match self {
            Layout::NN => "nn",
            Layout::NT => "nt",
            Layout::TN => "tn",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A zeroed `Vec<f32>` view starting on a 64-byte boundary (one cache line, one zmm load): the
/// packing buffers, and other buffers the microkernel reads (the parallel GEMM's shared B
/// block, `cllm-bench peak`'s panels).
pub struct AlignedBuf {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    const ALIGN_FLOATS: usize = 64 / 4;

    /// `len` zeros from a 64-byte boundary. Large buffers come from the allocator's zeroed pages,
    /// so each page is first touched by whoever writes it first.
    pub fn new(len: usize) -> AlignedBuf {
        let buf = vec![0.0f32; len + Self::ALIGN_FLOATS];
        let start = buf.as_ptr().align_offset(64);
        assert!(
            start < Self::ALIGN_FLOATS,
            "f32 buffer cannot be 64-byte aligned"
        );
        AlignedBuf { buf, start, len }
    }

    /// The `len` aligned floats.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// The packing buffers of one GEMM caller (one per worker thread), sized once for the active
/// kernel path's block sizes.
pub struct GemmScratch {
    blocking: Blocking,
    /// Packed A block: [MC / MR] panels of [KC][MR], `pack::a_panel_stride` apart.
    a: AlignedBuf,
    /// Packed B block: [NC / NR][KC][NR]; or, filled by [`pack_b_block`], any blocks of panels
    /// at the caller's offsets within its KC × NC floats.
    b: AlignedBuf,
}

impl GemmScratch {
    /// Buffers for the active path ([`isa::active`]) with block sizes from this CPU's caches.
    pub fn new() -> GemmScratch {
        GemmScratch::with_blocking(active_blocking())
    }

    /// The bytes [`GemmScratch::new`] allocates, without allocating them (for callers that check
    /// a plan against the machine's memory first).
    pub fn new_bytes() -> usize {
        let Blocking { mr, mc, kc, nc, .. } = active_blocking();
        (a_block_len(mc, kc, mr) + kc * nc + 2 * AlignedBuf::ALIGN_FLOATS) * size_of::<f32>()
    }

    /// Buffers with explicit block sizes (rounded to the active path's tile; see
    /// [`Blocking::custom`]). For tests that must run every blocking loop more than once on small
    /// matrices, and for tuning.
    pub fn with_blocks(mc: usize, kc: usize, nc: usize) -> GemmScratch {
        let (mr, nr, _) = tile(isa::active());
        GemmScratch::with_blocking(Blocking::custom(mr, nr, mc, kc, nc))
    }

    fn with_blocking(blocking: Blocking) -> GemmScratch {
        let Blocking { mr, mc, kc, nc, .. } = blocking;
        GemmScratch {
            blocking,
            a: AlignedBuf::new(a_block_len(mc, kc, mr)),
            b: AlignedBuf::new(kc * nc),
        }
    }

    /// The block sizes these buffers were sized for.
    pub fn blocking(&self) -> Blocking {
        self.blocking
    }
}

impl Default for GemmScratch {
    fn default() -> Self {
        GemmScratch::new()
    }
}

/// The block sizes of [`GemmScratch::new`]: the active path's tile, blocked for this CPU's caches.
pub fn active_blocking() -> Blocking {
    let (mr, nr, panel) = tile(isa::active());
    Blocking::for_caches(mr, nr, panel, CacheSizes::detect())
}

/// The microkernel tile (MR, NR) of a path and the cache its B micro-panel is sized for.
fn tile(isa: Isa) -> (usize, usize, PanelCache) {
    use crate::simd::{Portable, Scalar};
    fn of<S: GemmKernel>() -> (usize, usize, PanelCache) {
        (S::MR, S::NR, S::B_PANEL)
    }
    match isa {
        Isa::Scalar => of::<Scalar>(),
        Isa::Portable => of::<Portable>(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => of::<crate::simd::Avx2>(),
        #[cfg(feature = "emulate-avx512")]
        Isa::Avx512 if !crate::isa::avx512_native() => of::<crate::simd::Emulated512>(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => of::<crate::simd::Avx512>(),
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512 => unreachable!("x86 paths are never supported here"),
    }
}

/// `C = op(A) · op(B)` (or `C += ...` when `accumulate`) for row-major matrices with row strides
/// `lda`, `ldb`, `ldc` as stored; see [`Layout`] for what A and B hold.
///
/// Fails, naming the kernel `sgemm` and the shapes, when a stride is below its row width or a
/// slice is too short for its rows. `k = 0` with `accumulate = false` zeroes C.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    ws: &mut GemmScratch,
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<(), ShapeError> {
    check_shapes(
        layout,
        m,
        k,
        n,
        (a.len(), lda),
        (b.len(), ldb),
        (c.len(), ldc),
    )?;
    sgemm_dispatch(ws, layout, m, k, n, a, lda, b, ldb, c, ldc, accumulate);
    Ok(())
}

/// [`sgemm`] on contiguous matrices: every row stride is its row width (`lda`, `ldb` from
/// [`Layout::a_dims`] and [`Layout::b_dims`], `ldc = n`).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_contiguous(
    ws: &mut GemmScratch,
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) -> Result<(), ShapeError> {
    let lda = layout.a_dims(m, k).1;
    let ldb = layout.b_dims(k, n).1;
    sgemm(ws, layout, m, k, n, a, lda, b, ldb, c, n, accumulate)
}

/// [`sgemm`] for the hot path: no `Result` and no error message. The shapes are still checked
/// (a handful of comparisons), and a mismatch panics.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn sgemm_unchecked(
    ws: &mut GemmScratch,
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    assert!(
        shapes_fit(
            layout,
            m,
            k,
            n,
            (a.len(), lda),
            (b.len(), ldb),
            (c.len(), ldc)
        ),
        "sgemm: slices or strides do not fit the shapes; use `sgemm` for the details"
    );
    sgemm_dispatch(ws, layout, m, k, n, a, lda, b, ldb, c, ldc, accumulate);
}

/// Elements a `rows × cols` row-major matrix with row stride `ld` spans, or `None` on overflow.
fn span(rows: usize, cols: usize, ld: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        Some(0)
    } else {
        (rows - 1).checked_mul(ld)?.checked_add(cols)
    }
}

/// Whether the `rows × cols` block at row `r0`, column `c0` of a row-major matrix stored in
/// `len` floats with row stride `ld` lies inside it, each row within the stride. Checked: a
/// wrapped sum or product fits nothing.
fn block_fits(
    (r0, rows): (usize, usize),
    (c0, cols): (usize, usize),
    (len, ld): (usize, usize),
) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let (Some(r_end), Some(c_end)) = (r0.checked_add(rows), c0.checked_add(cols)) else {
        return false;
    };
    c_end <= ld && span(r_end, c_end, ld).is_some_and(|need| len >= need)
}

/// Floats in the panels of `width` positions, `t` wide, `kc` deep (the last panel padded), or
/// `None` on overflow.
fn panels_len(width: usize, kc: usize, t: usize) -> Option<usize> {
    width.div_ceil(t).checked_mul(kc)?.checked_mul(t)
}

/// Floats that hold a packed A block of `rows` rows, at most `kc` deep, whatever its depth: a
/// panel and a line per MR rows, as [`pack::a_panel_stride`] of any depth up to `kc` is at most
/// that (a shallower slice may gain the line a deeper one does not). `None` on overflow.
fn a_panels_len(rows: usize, kc: usize, mr: usize) -> Option<usize> {
    let panel = kc.checked_mul(mr)?.checked_add(LINE_FLOATS)?;
    rows.div_ceil(mr).checked_mul(panel)
}

/// The A packing buffer's floats for blocks of `mc` rows, `kc` deep.
fn a_block_len(mc: usize, kc: usize, mr: usize) -> usize {
    a_panels_len(mc, kc, mr).expect("the block sizes come from the caches and fit in memory")
}

/// The three operands as (name, stored rows, stored cols, (len, ld)).
type Operand = (&'static str, usize, usize, (usize, usize));

fn operands(
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    a: (usize, usize),
    b: (usize, usize),
    c: (usize, usize),
) -> [Operand; 3] {
    let (ar, ac) = layout.a_dims(m, k);
    let (br, bc) = layout.b_dims(k, n);
    [("a", ar, ac, a), ("b", br, bc, b), ("c", m, n, c)]
}

fn shapes_fit(
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    a: (usize, usize),
    b: (usize, usize),
    c: (usize, usize),
) -> bool {
    operands(layout, m, k, n, a, b, c)
        .iter()
        .all(|&(_, rows, cols, (len, ld))| {
            ld >= cols && span(rows, cols, ld).is_some_and(|need| len >= need)
        })
}

/// The checks [`sgemm`] makes: every operand's stride covers its row width and its slice holds
/// `(rows-1)·ld + cols` elements. Each pair is (slice length, row stride). Allocates only to report
/// a failure, so callers that split one GEMM into many (the parallel GEMM) can check once.
pub fn check_shapes(
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    a: (usize, usize),
    b: (usize, usize),
    c: (usize, usize),
) -> Result<(), ShapeError> {
    for (name, rows, cols, (len, ld)) in operands(layout, m, k, n, a, b, c) {
        // Only a failing check formats anything: the checked entry point must not allocate.
        let fail = |detail: String| ShapeError {
            kernel: "sgemm",
            detail: format!(
                "layout {layout}, M×K×N = {m}×{k}×{n}, `{name}` stored {rows}×{cols}: {detail}"
            ),
        };
        if ld < cols {
            return Err(fail(format!(
                "ld{name} = {ld} is below its row width {cols}"
            )));
        }
        match span(rows, cols, ld) {
            None => return Err(fail(format!("ld{name} = {ld} overflows the address range"))),
            Some(need) if len < need => {
                return Err(fail(format!(
                    "`{name}` has {len} elements but (rows-1)·ld{name} + cols = {need} are needed"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

dispatch! {
    /// The blocked GEMM on the active path; the shapes have been checked.
    #[allow(clippy::too_many_arguments)]
    fn sgemm_dispatch(
        ws: &mut GemmScratch,
        layout: Layout,
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) = sgemm_generic;
}

dispatch! {
    /// The microkernel alone: the ceiling the blocking loops can reach on this core. Runs
    /// `rounds` sweeps of loop 1, each one full tile `C += A panel · B panel` for every MR-row
    /// panel of `a` against the one `kc`-deep B panel `b`, as the blocked GEMM runs them but
    /// with the panels packed once and C a single tile that stays in L1 (the full tiles' kernel,
    /// `kernel`, its prefetches aimed at the B panel itself). Returns the FLOPs
    /// done (saturating). For `cllm-bench peak`, which times it with panels sized for L1 and as
    /// [`active_blocking`] sizes them.
    ///
    /// a (panels, stride) holding a (kc, MR) panel at the start of each
    /// [`a_panel_stride`]`(kc, MR)` floats, as the GEMM's packing buffer lays them out;
    /// b (kc, NR), c (MR, NR), for the active path's MR × NR.
    pub fn microkernel_sweeps(a: &[f32], b: &[f32], c: &mut [f32], kc: usize, rounds: usize) -> u64
        = microkernel_sweeps_generic;
}

#[inline(always)]
fn microkernel_sweeps_generic<S: GemmKernel>(
    s: S,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    kc: usize,
    rounds: usize,
) -> u64 {
    let (mr, nr) = (S::MR, S::NR);
    // The panels' sizes as checked products: a wrapped kc · MR could pass for a small panel.
    let stride = pack::a_panel_stride_checked(kc, mr);
    let Some(stride) = stride.filter(|&stride| {
        kc > 0
            && a.len().is_multiple_of(stride)
            && kc.checked_mul(nr) == Some(b.len())
            && c.len() == mr * nr
    }) else {
        panic!(
            "microkernel_sweeps: a ({} floats) must be whole panels of kc × MR = {kc} × {mr}, \
             {} floats apart (a_panel_stride), b ({}) kc × NR = {kc} × {nr} and c ({}) MR × NR",
            a.len(),
            stride.map_or("(overflowing)".to_string(), |s| s.to_string()),
            b.len(),
            c.len()
        );
    };
    let panels = a.len() / stride;
    for _ in 0..rounds {
        for p in 0..panels {
            // The kernel the GEMM's full tiles with packed A run, prefetches included, aimed
            // at this B panel and this C tile (and the rows past it, up to MR - 1 of them:
            // prefetches never fault), lines already in the cache, so only their issue is
            // timed.
            // SAFETY: panel p is a[p·stride..][..kc·MR] (stride ≥ kc·MR), `b` holds kc·NR
            // floats and `c` MR rows of NR with ldc = NR (all checked above); `ahead` is only
            // prefetched.
            unsafe {
                s.kernel(
                    kc,
                    a.as_ptr().add(p * stride),
                    AWalk::packed(mr),
                    b.as_ptr(),
                    c.as_mut_ptr(),
                    nr,
                    true,
                    Ahead {
                        b: Some(b.as_ptr()),
                        c: c.as_ptr(),
                    },
                )
            };
        }
    }
    [mr, nr, kc, panels, rounds]
        .iter()
        .fold(2u64, |f, &x| f.saturating_mul(x as u64))
}

/// The five blocking loops. The caller has checked the shapes (`shapes_fit`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sgemm_generic<S: GemmKernel>(
    s: S,
    ws: &mut GemmScratch,
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    // One instantiation of the loops per walk of A, so that each microkernel knows its strides.
    let (dims, a, b, c) = ((m, k, n), (a, lda), (b, ldb), (c, ldc));
    if reads_a_in_place::<S>(layout) {
        sgemm_loops::<S, true>(s, ws, layout, dims, a, b, c, accumulate)
    } else {
        sgemm_loops::<S, false>(s, ws, layout, dims, a, b, c, accumulate)
    }
}

/// [`sgemm_generic`] with A read in place (`IN_PLACE`, see [`reads_a_in_place`]) or packed.
/// The caller has checked the shapes (`shapes_fit`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sgemm_loops<S: GemmKernel, const IN_PLACE: bool>(
    s: S,
    ws: &mut GemmScratch,
    layout: Layout,
    (m, k, n): (usize, usize, usize),
    (a, lda): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
) {
    let Blocking { mr, nr, mc, kc, .. } = ws.blocking;
    assert!(
        (mr, nr) == (S::MR, S::NR),
        "GemmScratch was sized for a {mr}×{nr} tile but the active path uses {}×{}",
        S::MR,
        S::NR
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..][..n].fill(0.0);
            }
        }
        return;
    }
    let kc = k_slice(k, kc);
    let apack = ws.a.as_mut_slice();
    let bpack = ws.b.as_mut_slice();
    if m <= mc {
        few_rows::<S, IN_PLACE>(
            s,
            layout,
            (m, k, n),
            kc,
            (a, lda),
            (b, ldb),
            (c, ldc),
            accumulate,
            apack,
            bpack,
        );
        return;
    }
    let (mc, nc) = (ws.blocking.mc_for(m), ws.blocking.nc_for(n));
    // Loop 5 (jc): NC-column blocks of B and C, balanced (`Blocking::nc_for`).
    for jc in (0..n).step_by(nc) {
        let ncb = nc.min(n - jc);
        // Loop 4 (pc): KC-deep slices of K; the packed B block stays in L3 for all of loop 3.
        for pc in (0..k).step_by(kc) {
            let kcb = kc.min(k - pc);
            pack::pack_b(s, layout, b, ldb, (pc, kcb), (jc, ncb), bpack);
            // The first K slice honours the caller's `accumulate`; later ones add to it.
            let acc = accumulate || pc > 0;
            // Loop 3 (ic): MC-row blocks of A and C, balanced (`Blocking::mc_for`); the packed A
            // block stays in L2 for loops 2–1.
            for ic in (0..m).step_by(mc) {
                let mcb = mc.min(m - ic);
                let panels =
                    a_panels::<S, IN_PLACE>(s, layout, (a, lda), (ic, mcb), (pc, kcb), apack);
                let block = &mut c[ic * ldc + jc..];
                gemm_packed(s, (mcb, kcb, ncb), panels, bpack, block, ldc, acc);
            }
        }
    }
}

/// The depth of the K slices the blocking loops cut a product of depth `k` into: equal slices no
/// deeper than `kc`, so no slice is a sliver (the last may be shallower by the division's rest).
pub fn k_slice(k: usize, kc: usize) -> usize {
    k.div_ceil(k.div_ceil(kc.max(1)).max(1))
}

// The blocked loops in parts, for callers that run loop 3 on several threads (`cllm-engine`'s
// `par_gemm`): against one packed B block they share, the workers pack the block's panels
// between them with `pack_b_panels`, then each runs `gemm_block` on blocks of rows; or each
// keeps a tile's B in its own scratch (`pack_b_block`) for several blocks of rows
// (`PackedB::Own`). With blocks of rows starting at multiples of MR, B panels at multiples
// of NR from the block's first column, and K slices of `k_slice`, every tile is the one `sgemm`
// runs, so the result is the same bit for bit.

dispatch! {
    /// Packs `B[p0 .. p0 + kcb, j0 .. j0 + ncols]` of op(B) into NR-column panels at the start
    /// of `dst`, `[ceil(ncols / NR)][kcb][NR]` with the last panel zero-padded: a B block of the
    /// blocking loops, or a run of its panels when `j0` is a panel's first column. `b` is stored
    /// as [`Layout::b_dims`] says, with row stride `ldb`. Panics when the block is not inside
    /// `b` (its rows within the stride) or `dst` is too short.
    pub fn pack_b_panels(
        layout: Layout,
        b: &[f32],
        ldb: usize,
        depth: (usize, usize),
        cols: (usize, usize),
        dst: &mut [f32],
    ) = pack_b_panels_generic;
}

#[inline(always)]
fn pack_b_panels_generic<S: GemmKernel>(
    s: S,
    layout: Layout,
    b: &[f32],
    ldb: usize,
    depth: (usize, usize),
    cols: (usize, usize),
    dst: &mut [f32],
) {
    let (rows_b, cols_b) = match layout {
        Layout::NN | Layout::TN => (depth, cols),
        Layout::NT => (cols, depth),
    };
    assert!(
        block_fits(rows_b, cols_b, (b.len(), ldb))
            && panels_len(cols.1, depth.1, S::NR).is_some_and(|need| dst.len() >= need),
        "pack_b_panels: the {layout} block of depths {depth:?} × columns {cols:?} is not inside b \
         ({} floats, ldb {ldb}) or does not fit dst ({} floats)",
        b.len(),
        dst.len()
    );
    pack::pack_b(s, layout, b, ldb, depth, cols, dst);
}

/// Where [`gemm_block`] finds its packed B block.
#[derive(Clone, Copy, Debug)]
pub enum PackedB<'a> {
    /// Panels the caller packed with [`pack_b_panels`], e.g. into a block that several threads
    /// share.
    Given(&'a [f32]),
    /// The scratch's own B buffer from this float on, as [`pack_b_block`] packed it (what the
    /// buffer holds there is the caller's to know: floats never packed read as zeros or as an
    /// earlier product's panels).
    Own(usize),
}

dispatch! {
    /// Loops 3 to 1 for one block of rows: packs `A[i0 .. i0 + mcb, p0 .. p0 + kcb]` of op(A)
    /// into `ws` (or, for a row-major A on AVX-512, reads it in place) and writes its product
    /// with the packed B block `b` (`ncb` columns, packed with the same `kcb`) into `c`, or adds
    /// it when `accumulate`. `c` starts at the block's first element and has row stride `ldc`
    /// (at least `ncb`). `mcb` is at most the scratch's MC, `kcb` at most its KC and more than
    /// 0. Panics when a block is not inside its slice or a stride is below its row width.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_block(
        ws: &mut GemmScratch,
        layout: Layout,
        a: &[f32],
        lda: usize,
        rows: (usize, usize),
        depth: (usize, usize),
        b: PackedB<'_>,
        ncb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) = gemm_block_generic;
}

dispatch! {
    /// [`pack_b_panels`] into `ws`'s own B buffer (KC × NC floats), from float `at` on, for a
    /// caller that then runs [`gemm_block`] on several blocks of rows against it
    /// ([`PackedB::Own`]): the parallel GEMM's worker, whose consecutive pieces of one tile share
    /// its packed B (each K slice of it at its own offset). Panics as `pack_b_panels` does when
    /// the block does not fit the buffer's floats from `at` on.
    pub fn pack_b_block(
        ws: &mut GemmScratch,
        layout: Layout,
        b: &[f32],
        ldb: usize,
        depth: (usize, usize),
        cols: (usize, usize),
        at: usize,
    ) = pack_b_block_generic;
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_b_block_generic<S: GemmKernel>(
    s: S,
    ws: &mut GemmScratch,
    layout: Layout,
    b: &[f32],
    ldb: usize,
    depth: (usize, usize),
    cols: (usize, usize),
    at: usize,
) {
    let dst = ws.b.as_mut_slice();
    let dst = dst.get_mut(at..).unwrap_or_default();
    pack_b_panels_generic(s, layout, b, ldb, depth, cols, dst);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemm_block_generic<S: GemmKernel>(
    s: S,
    ws: &mut GemmScratch,
    layout: Layout,
    a: &[f32],
    lda: usize,
    (i0, mcb): (usize, usize),
    (p0, kcb): (usize, usize),
    b: PackedB<'_>,
    ncb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let GemmScratch {
        blocking,
        a: apack,
        b: own,
    } = ws;
    let apack = apack.as_mut_slice();
    let bpack: &[f32] = match b {
        PackedB::Given(panels) => panels,
        PackedB::Own(at) => own.as_mut_slice().get(at..).unwrap_or_default(),
    };
    let Blocking { mr, nr, mc, kc, .. } = *blocking;
    assert!(
        (mr, nr) == (S::MR, S::NR) && mcb <= mc && 0 < kcb && kcb <= kc,
        "gemm_block: {mcb} rows × {kcb} deep on scratch for {mc} × {kc} with a {mr}×{nr} tile \
         (the active path's is {}×{})",
        S::MR,
        S::NR
    );
    let (rows_a, cols_a) = match layout {
        Layout::NN | Layout::NT => ((i0, mcb), (p0, kcb)),
        Layout::TN => ((p0, kcb), (i0, mcb)),
    };
    assert!(
        block_fits(rows_a, cols_a, (a.len(), lda))
            && panels_len(ncb, kcb, nr).is_some_and(|need| bpack.len() >= need)
            && block_fits((0, mcb), (0, ncb), (c.len(), ldc)),
        "gemm_block: the {layout} block of rows {:?} × depths {:?} is not inside a ({} floats, \
         lda {lda}), or {ncb} packed columns do not fit bpack ({} floats), or {mcb} × {ncb} do \
         not fit c ({} floats, ldc {ldc})",
        (i0, mcb),
        (p0, kcb),
        a.len(),
        bpack.len(),
        c.len()
    );
    if mcb == 0 || ncb == 0 {
        return;
    }
    let (rows, depths) = ((i0, mcb), (p0, kcb));
    // One instantiation per walk of A, as in `sgemm_generic`.
    if reads_a_in_place::<S>(layout) {
        let panels = a_panels::<S, true>(s, layout, (a, lda), rows, depths, apack);
        gemm_packed(s, (mcb, kcb, ncb), panels, bpack, c, ldc, accumulate);
    } else {
        let panels = a_panels::<S, false>(s, layout, (a, lda), rows, depths, apack);
        gemm_packed(s, (mcb, kcb, ncb), panels, bpack, c, ldc, accumulate);
    }
}

/// The blocking loops when all M rows fit one packed A block (`m <= MC`), as in a prefill of a
/// few hundred tokens against a weight matrix. Each packed B panel then serves only the one pass
/// of loop 1 that follows, so packing a whole KC × NC block up front buys no reuse, and it stalls:
/// the block streams from memory while nothing is computed (measured at 128 × 768 × 2304 on an
/// AVX2 core: 8.6 % of the time in the packing copy). Here each NR-column panel is packed just
/// before its tiles, from lines prefetched during the previous panel's tiles, so the copy reads
/// from cache and the reads from memory overlap the multiply-adds. The tiles and their order of
/// operations are those of the general loops, so the result is the same, bit for bit.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn few_rows<S: GemmKernel, const IN_PLACE: bool>(
    s: S,
    layout: Layout,
    (m, k, n): (usize, usize, usize),
    kc: usize,
    (a, lda): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
    apack: &mut [f32],
    bpack: &mut [f32],
) {
    let (mr, nr) = (S::MR, S::NR);
    let tiles = m.div_ceil(mr);
    assert!(c.len() >= (m - 1) * ldc + n);
    // Every slice's panels fit the bound for the deepest (kcb <= kc).
    assert!(
        a_panels_len(m, kc, mr).is_some_and(|need| apack.len() >= need) && bpack.len() >= kc * nr
    );
    let cp = c.as_mut_ptr();
    for pc in (0..k).step_by(kc) {
        let kcb = kc.min(k - pc);
        let panels = a_panels::<S, IN_PLACE>(s, layout, (a, lda), (0, m), (pc, kcb), apack);
        assert!(panels.cover(m, kcb, mr));
        let acc = accumulate || pc > 0;
        // A panel's source is prefetched in steps, a share of them before each tile of the panel
        // before it.
        let steps = pack::b_panel_steps(layout, kcb, nr);
        let share = steps.div_ceil(tiles);
        for jr in (0..n).step_by(nr) {
            let nrb = nr.min(n - jr);
            let panel = &mut bpack[..kcb * nr];
            pack::pack_b(s, layout, b, ldb, (pc, kcb), (jr, nrb), panel);
            let next = jr + nr;
            for (ip, ir) in (0..m).step_by(mr).enumerate() {
                if next < n {
                    let part = (ip * share).min(steps)..((ip + 1) * share).min(steps);
                    pack::prefetch_b_panel(
                        layout,
                        b,
                        ldb,
                        (pc, kcb),
                        (next, nr.min(n - next)),
                        part,
                    );
                }
                let mrb = mr.min(m - ir);
                let ap = panels.a[ip * panels.stride..].as_ptr();
                // SAFETY: tile rows ir..ir+mrb <= m and columns jr..jr+nrb <= n lie inside `c`
                // (asserted above); the tile reads rows < mrb of A panel ip to depth kcb, inside
                // `panels.a` (asserted above), and `panel` holds kcb·NR floats.
                unsafe {
                    let ct = cp.add(ir * ldc + jr);
                    let a_tile = (ap, panels.walk);
                    let ahead = Ahead {
                        b: None,
                        c: next_c_tile(cp, ldc, (ip, m / mr), (jr, n), (mr, nr)),
                    };
                    run_tile(
                        s,
                        kcb,
                        a_tile,
                        (panel.as_ptr(), ahead),
                        (ct, ldc),
                        (mrb, nrb),
                        acc,
                    );
                }
            }
        }
    }
}

/// Whether the blocking loops read A where it lies instead of packing it: where A is row-major
/// (NN, NT) a tile's rows are `lda` apart and its depths adjacent, which the microkernel walks as
/// it walks a packed panel ([`AWalk`]), and the transposing pack is saved. Only AVX-512 does
/// (`GemmKernel::A_IN_PLACE`), at every width: its in-place tile has its k loop in assembly, and
/// GEMMs from 32 to 4096 rows and 768 to 50304 columns ran 0–4 % faster than with A packed. On
/// AVX2, whose K slices are L1-sized, some shapes ran 8 % slower (`docs/GEMM.md`).
fn reads_a_in_place<S: GemmKernel>(layout: Layout) -> bool {
    // A constant false makes this false at compile time: a path that always packs has its
    // in-place loops optimised out.
    S::A_IN_PLACE && matches!(layout, Layout::NN | Layout::NT)
}

/// The A operand of the block of rows `i0 .. i0+mcb`, depths `p0 .. p0+kcb`, for
/// [`gemm_packed`]: read in place (`IN_PLACE`, where [`reads_a_in_place`]) or packed into
/// `apack`.
#[inline(always)]
fn a_panels<'a, S: GemmKernel, const IN_PLACE: bool>(
    s: S,
    layout: Layout,
    (a, lda): (&'a [f32], usize),
    (i0, mcb): (usize, usize),
    (p0, kcb): (usize, usize),
    apack: &'a mut [f32],
) -> APanels<'a> {
    if IN_PLACE {
        debug_assert!(matches!(layout, Layout::NN | Layout::NT));
        APanels {
            a: &a[i0 * lda + p0..],
            // Saturating: a single panel (the only one whose stride could overflow) never uses it.
            stride: S::MR.saturating_mul(lda),
            walk: AWalk::rows(lda),
        }
    } else {
        pack::pack_a(s, layout, a, lda, (i0, mcb), (p0, kcb), apack);
        APanels::packed(apack, kcb, S::MR)
    }
}

/// The A operand of a block of tiles: the panel of rows `ip·MR ..` starts at `a[ip · stride]`
/// and is walked by `walk`; packed (`pack::pack_a`, `walk` = [`AWalk::packed`]) or read in
/// place from a row-major A (`stride` = MR · lda, `walk` = [`AWalk::rows`]).
#[derive(Clone, Copy)]
struct APanels<'a> {
    a: &'a [f32],
    stride: usize,
    walk: AWalk,
}

impl<'a> APanels<'a> {
    /// Panels packed by `pack::pack_a` with depth `kcb`.
    fn packed(apack: &'a [f32], kcb: usize, mr: usize) -> APanels<'a> {
        let stride = pack::a_panel_stride(kcb, mr);
        let walk = AWalk::packed(mr);
        APanels {
            a: apack,
            stride,
            walk,
        }
    }

    /// Whether the tiles of rows `0..rows`, depths `0..kcb` (both more than 0) stay inside `a`:
    /// the last float read, `ip·stride + r·rs + (kcb-1)·cs` for the last panel `ip` and its last
    /// row `r` (the tiles read only their own rows; a packed panel's rows past the block are
    /// padding), lies inside, and the walk's end, `ip·stride + kcb·cs`, at most one past it.
    fn cover(&self, rows: usize, kcb: usize, mr: usize) -> bool {
        if rows == 0 || kcb == 0 {
            return false;
        }
        let start = ((rows - 1) / mr).checked_mul(self.stride);
        let row = ((rows - 1) % mr).checked_mul(self.walk.rs);
        let last = start
            .zip(row)
            .zip((kcb - 1).checked_mul(self.walk.cs))
            .and_then(|((p, r), d)| p.checked_add(r)?.checked_add(d));
        let end = start
            .zip(kcb.checked_mul(self.walk.cs))
            .and_then(|(p, d)| p.checked_add(d));
        last.is_some_and(|last| last < self.a.len()) && end.is_some_and(|end| end <= self.a.len())
    }
}

/// `C[0..mcb, 0..ncb] (+)= A · Bpacked`: the two inner loops over microkernel tiles, `a` packed
/// or read where it lies (its walk, [`AWalk`]).
///
/// `c` starts at the block's first element and spans `(mcb-1)·ldc + ncb` floats.
#[inline(always)]
fn gemm_packed<S: GemmKernel>(
    s: S,
    (mcb, kcb, ncb): (usize, usize, usize),
    a: APanels, // [ceil(mcb/MR)] panels, a.stride apart: packed [kcb][MR], or rows lda apart
    bpack: &[f32], // [ceil(ncb/NR)][kcb][NR]
    c: &mut [f32], // [mcb][ldc]
    ldc: usize,
    accumulate: bool,
) {
    let (mr, nr) = (S::MR, S::NR);
    // Checked: these guard the raw tile pointers below.
    assert!(
        a.cover(mcb, kcb, mr) && panels_len(ncb, kcb, nr).is_some_and(|need| bpack.len() >= need)
    );
    assert!(span(mcb, ncb, ldc).is_some_and(|need| c.len() >= need));
    let c = c.as_mut_ptr();
    // The packed B block lives in L3, so the first tile of each pass of loop 1 would wait on
    // its B panel (rdtsc around each tile, 4096×768×3072 on one thread: 36 K cycles against
    // 10–12 K for the others). So each full tile prefetches a share of the next panel into L2
    // (`kernel`; the first tile then takes 15–18 K): `steps` lines, one every four steps of k,
    // from the start of the tile's share on (`ahead_share`). The shares of a pass's tiles cover
    // the panel when there are at least lines / steps of them, rounded up (12 on the AVX-512
    // tile at depths that are multiples of 4; the GPT shapes' blocks of rows have 14–23). After
    // the block's last panel comes its first, which the next block of rows starts on when there
    // is one (a last panel cut short runs `kernel_cols` or `edge_tile` and prefetches nothing of
    // the next panel). A tile's share issued all at once before its k loop was 2–3 % slower
    // than none, probably because the burst holds the line fill buffers the k loop's own misses
    // need; `docs/GEMM.md` has the variants tried.
    let (panels, lines, steps) = (ncb.div_ceil(nr), kcb * nr / LINE_FLOATS, kcb / 4);
    let full_tiles = (mcb / mr).max(1);
    // Loop 2 (jr): NR-column panels of packed B; each stays in L1 (or L2, see PanelCache) for all
    // of loop 1.
    for (jp, jr) in (0..ncb).step_by(nr).enumerate() {
        let nrb = nr.min(ncb - jr);
        let bp = bpack[jp * kcb * nr..].as_ptr();
        // The next panel, [kcb][NR].
        let next = bpack[((jp + 1) % panels) * kcb * nr..].as_ptr();
        // Loop 1 (ir): MR-row panels of A, streamed from L2.
        for (ip, ir) in (0..mcb).step_by(mr).enumerate() {
            let mrb = mr.min(mcb - ir);
            let ap = a.a[ip * a.stride..].as_ptr();
            let share = ahead_share(ip, full_tiles, lines, steps);
            let ahead = Ahead {
                b: Some(next.wrapping_add(share * LINE_FLOATS)),
                c: next_c_tile(c, ldc, (ip, mcb / mr), (jr, ncb), (mr, nr)),
            };
            // SAFETY: tile rows ir..ir+mrb <= mcb and columns jr..jr+nrb <= ncb lie inside
            // `c`'s span (asserted above); the tile reads rows < mrb of its A panel to depth kcb,
            // inside `a` (asserted above), and the packed B panel holds kcb·NR floats.
            unsafe {
                let ct = c.add(ir * ldc + jr);
                run_tile(
                    s,
                    kcb,
                    (ap, a.walk),
                    (bp, ahead),
                    (ct, ldc),
                    (mrb, nrb),
                    accumulate,
                );
            }
        }
    }
}

/// The first line of the next B panel (`lines` lines) that tile `tile` of a pass of `tiles` full
/// tiles prefetches, `steps` lines in all (`gemm_packed`): its share's start, at most
/// `lines - steps` so that no tile prefetches past the panel's end. From `lines.div_ceil(steps)`
/// tiles on (steps > 0), the tiles' lines cover the panel. Needs `steps <= lines`, which holds
/// on every path: NR is at least 4, and a panel `kcb` deep has `kcb · NR / 16` lines against
/// `kcb / 4` steps.
fn ahead_share(tile: usize, tiles: usize, lines: usize, steps: usize) -> usize {
    debug_assert!(
        steps <= lines,
        "ahead_share: {steps} steps over {lines} lines"
    );
    (tile * lines / tiles).min(lines - steps)
}

/// The C tile written after tile `ip` of a pass by the next tile with all MR rows ([`Ahead::c`]),
/// for a block of C at `c` (rows `ldc` apart, `ncb` columns) with `full` such tiles down each
/// pass: the next row panel's in the pass over columns `jr..`, after the pass's last one the
/// first of the pass over the next panel (which may be cut by the block's last columns), and
/// after the block's last the tile itself (in the cache).
fn next_c_tile(
    c: *mut f32,
    ldc: usize,
    (ip, full): (usize, usize),
    (jr, ncb): (usize, usize),
    (mr, nr): (usize, usize),
) -> *const f32 {
    let (row, col) = if ip + 1 < full {
        ((ip + 1) * mr, jr)
    } else if jr + nr < ncb {
        (0, jr + nr)
    } else {
        (ip * mr, jr)
    };
    c.wrapping_add(row * ldc + col).cast_const()
}

/// One `mrb × nrb` tile of C from an A panel and a B panel: the microkernel when the tile is
/// full (prefetching what `ahead` names, see [`GemmKernel::kernel`]), the
/// kernel for its rows when only the block's last rows cut it, the kernel for its
/// columns when only the last columns do and leave whole vectors, [`edge_tile`] otherwise.
///
/// # Safety
/// As [`GemmKernel::kernel`], except that A (walked by `aw`) need only be valid for rows
/// `r < mrb`, and `c` for rows `r < mrb`, columns `< nrb`.
#[inline(always)]
unsafe fn run_tile<S: GemmKernel>(
    s: S,
    kcb: usize,
    (ap, aw): (*const f32, AWalk),
    (bp, ahead): (*const f32, Ahead),
    (c, ldc): (*mut f32, usize),
    (mrb, nrb): (usize, usize),
    accumulate: bool,
) {
    // SAFETY: forwarded caller contract; each branch writes only the tile's rows and columns.
    unsafe {
        if nrb < S::NR {
            if mrb == S::MR && nrb % S::LANES == 0 {
                s.kernel_cols(nrb / S::LANES, kcb, ap, aw, bp, c, ldc, accumulate);
            } else {
                edge_tile(s, kcb, (ap, aw), bp, (c, ldc), (mrb, nrb), accumulate);
            }
        } else if mrb < S::MR {
            s.kernel_rows(mrb, kcb, ap, aw, bp, c, ldc, accumulate);
        } else {
            s.kernel(kcb, ap, aw, bp, c, ldc, accumulate, ahead);
        }
    }
}

/// A tile cut by the block's last columns (`nrb < NR`): the microkernel for the tile's `mrb`
/// rows writes them whole on the stack, and only their first `nrb` columns are written (or added)
/// to C.
///
/// # Safety
/// As [`GemmKernel::kernel`], except that A (walked by `aw`) need only be valid for rows
/// `r < mrb`, and `c` for rows `r < mrb`, columns `< nrb`.
#[inline(always)]
unsafe fn edge_tile<S: GemmKernel>(
    s: S,
    kcb: usize,
    (ap, aw): (*const f32, AWalk),
    bp: *const f32,
    (c, ldc): (*mut f32, usize),
    (mrb, nrb): (usize, usize),
    accumulate: bool,
) {
    #[repr(align(64))]
    struct Tile([f32; MAX_TILE]);
    let mut tile = Tile([0.0; MAX_TILE]); // [MR][NR]
    debug_assert!(S::MR * S::NR <= MAX_TILE);
    let t = tile.0.as_mut_ptr();
    // SAFETY: the tile holds MR rows of NR floats (MR·NR <= MAX_TILE); A's rows r < mrb and
    // the B panel are valid (the caller's contract), and only those rows of A are read.
    unsafe {
        if mrb < S::MR {
            s.kernel_rows(mrb, kcb, ap, aw, bp, t, S::NR, false);
        } else {
            // Its C prefetch aimed at the stack tile itself (rows `NR` apart, the stride the
            // kernel writes it with), in L1: nothing of the real C's next tile.
            let ahead = Ahead {
                b: None,
                c: t.cast_const(),
            };
            s.kernel(kcb, ap, aw, bp, t, S::NR, false, ahead);
        }
    }
    for r in 0..mrb {
        let src = &tile.0[r * S::NR..][..nrb];
        // SAFETY: the caller guarantees row r < mrb of C has nrb valid floats.
        let dst = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), nrb) };
        if accumulate {
            dst.iter_mut().zip(src).for_each(|(d, &t)| *d += t);
        } else {
            dst.copy_from_slice(src);
        }
    }
}

/// The reference: a plain triple loop accumulating in f64.
pub mod oracle {
    use super::Layout;

    /// [`super::sgemm`]'s result computed in f64 and rounded once to f32. The shapes are the
    /// caller's to get right (indexing panics otherwise).
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        layout: Layout,
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        let a_at = |i: usize, p: usize| match layout {
            Layout::NN | Layout::NT => a[i * lda + p],
            Layout::TN => a[p * lda + i],
        };
        let b_at = |p: usize, j: usize| match layout {
            Layout::NN | Layout::TN => b[p * ldb + j],
            Layout::NT => b[j * ldb + p],
        };
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| a_at(i, p) as f64 * b_at(p, j) as f64).sum();
                let out = &mut c[i * ldc + j];
                *out = if accumulate {
                    (*out as f64 + dot) as f32
                } else {
                    dot as f32
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ahead_share, next_c_tile, reads_a_in_place, Layout, LINE_FLOATS};

    /// The next-panel prefetch of every tile width, at depths 1–300 and passes of 1–40 tiles:
    /// no tile's lines run past the panel, and from lines / steps tiles on (rounded up) they
    /// cover it.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "arithmetic only, and a million cases are too long to interpret"
    )]
    fn ahead_shares_stay_inside_the_panel_and_cover_it() {
        for nr in [4, 8, 16, 48] {
            for kcb in 1..=300 {
                let (lines, steps) = (kcb * nr / LINE_FLOATS, kcb / 4);
                for tiles in 1..=40 {
                    let mut covered = vec![false; lines];
                    for tile in 0..tiles {
                        let start = ahead_share(tile, tiles, lines, steps);
                        assert!(
                            start + steps <= lines,
                            "nr {nr}, kcb {kcb}, tile {tile}/{tiles}"
                        );
                        covered[start..start + steps].fill(true);
                    }
                    if steps > 0 && tiles >= lines.div_ceil(steps) {
                        assert!(
                            covered.iter().all(|&c| c),
                            "nr {nr}, kcb {kcb}, {tiles} tiles leave lines unfetched"
                        );
                    }
                }
            }
        }
    }

    /// Each full tile's `Ahead::c` is the C tile of the full tile that runs after it (passes
    /// over column panels, full row tiles down each), and the block's last names itself.
    #[test]
    fn next_c_tile_names_the_next_full_tile_in_loop_order() {
        let (mr, nr, ldc) = (9, 48, 1000);
        let c = std::ptr::null_mut::<f32>().wrapping_add(1 << 20);
        for (mcb, ncb) in [
            (9, 48),
            (27, 48),
            (31, 100),
            (252, 1536),
            (8, 96),
            (250, 49),
        ] {
            let full = mcb / mr;
            let order: Vec<(usize, usize)> = (0..ncb)
                .step_by(nr)
                .flat_map(|jr| (0..full).map(move |ip| (ip, jr)))
                .collect();
            for (t, &(ip, jr)) in order.iter().enumerate() {
                let (nip, njr) = order.get(t + 1).copied().unwrap_or((ip, jr));
                let want = c.wrapping_add(nip * mr * ldc + njr).cast_const();
                let got = next_c_tile(c, ldc, (ip, full), (jr, ncb), (mr, nr));
                assert_eq!(got, want, "block {mcb} × {ncb}, tile {ip} of pass {jr}");
            }
        }
    }

    /// Only AVX-512 reads A in place, and only a row-major one (NN, NT), at any width.
    #[test]
    fn a_is_read_in_place_only_for_row_major_a_on_avx512() {
        #[cfg(target_arch = "x86_64")]
        {
            use crate::simd::Avx512;
            assert!(reads_a_in_place::<Avx512>(Layout::NN));
            assert!(reads_a_in_place::<Avx512>(Layout::NT));
            assert!(!reads_a_in_place::<Avx512>(Layout::TN));
            assert!(!reads_a_in_place::<crate::simd::Avx2>(Layout::NN));
        }
        assert!(!reads_a_in_place::<crate::simd::Scalar>(Layout::NN));
        assert!(!reads_a_in_place::<crate::simd::Portable>(Layout::NN));
    }
}
