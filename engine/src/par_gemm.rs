//! Parallel sgemm on the sphere workers: `C (+)= op(A) · op(B)` split over a pool's workers.
//!
//! [`par_sgemm`] takes the arguments of [`cllm_kernels::gemm::sgemm`] plus a [`Spheres`] pool
//! and a [`ParGemmScratch`] (each worker's packing buffers, made once on that worker so their
//! pages are first touched there). One call is one pool job and allocates nothing.
//!
//! # Split
//!
//! C is cut into a `rows × cols` grid of tiles, one per worker ([`Grid::choose`]). Tile edges
//! fall on multiples of the microkernel tile (MR rows, NR columns), and the pieces differ by at
//! most one MR panel (one NR panel), so the work is balanced to within one panel. Each worker
//! runs the single-threaded blocked sgemm's loops on its tile, reading the rows of A and the
//! columns of B it needs and packing them into its own buffers (tall row splits share their
//! packed B instead; see below); every element of C is computed by exactly one worker.
//!
//! The grid minimises a per-worker cost, summed per unit of K, for the largest tile
//! `tm × tn`: the multiply-adds `tm · tn / 16` (a packed float costs about as much as 16 FMA
//! lanes here) plus the floats packed — A once per NC-column block (`tm · ⌈tn / NC⌉`), B once
//! per row chunk (`tn`) — plus, for column-split grids, one copy of the tile (see below).
//! Packing is the only work a split duplicates: a row split makes every worker pack all of B, a
//! column split makes every worker pack all of A, so the grid follows the aspect ratio of C:
//! 4096×768 on 2 workers splits M (2×1), 4096×3072 on 16 workers is a 4×4 grid.
//!
//! # Work stealing
//!
//! Each tile is cut across its rows into pieces ([`Grid::piece`]); unless the workers share B
//! (below, with stealing of its own), the job is one [`Spheres::par_for_with`] over the pieces
//! with [`Schedule::Stealing`], where worker `w`'s own share is exactly its tile. On an idle
//! machine each worker computes its own tile; on a shared one a worker that finishes early takes
//! the pieces a slow or descheduled sibling has not started.
//!
//! When a tile's B, all of K packed slice after slice, fits a worker's B buffer (KC × NC floats:
//! 7.9 MiB on the AVX-512 machines here, so K × N up to about 2 M per tile), the tile is cut into
//! as many pieces as it has MC blocks of rows ([`Grid::reuse_b`]): the worker packs the tile's B
//! once, keeps it from one piece to the next, and packs again only for a stolen piece of another
//! column of tiles (or in the next call). Cutting finely then costs nothing on an idle machine, and
//! the stealing can even out cores that run at different speeds. That is what the lent 16-core host
//! needed: its cores, each running a one-thread GEMM at once, ran at 66 to 143 GFLOP/s, and a 4×4
//! grid of whole tiles ran at the slowest one's pace. Alternating with the previous build there,
//! `cllm-bench gemm --threads 16`, 4096×768×3072 rose from a median of 1253 to 1790 GFLOP/s and
//! 4096×768×768 from 1188 to 1535 (18 runs each); on a later, noisier loan 4096×3072×768, whose K
//! is three slices, rose from 1182 to 1412, and 4096×768×3072 from 1206 to 1554 (6 each;
//! `docs/PERFORMANCE.md`).
//!
//! Otherwise each piece packs its columns of B again, so tiles are cut into at most four pieces
//! of at least four MC blocks: for K = N = 768 a repack is 0.6 M floats (~0.1 ms) against
//! ~13 ms of multiply-adds for a piece of 1008 rows on an idle core, under 1 % by that count.
//!
//! Row-split grids (`cols == 1`) write C in place: each piece's rows are a contiguous span of
//! C that no other piece's span overlaps. In a column-split grid a piece's rows interleave
//! with its neighbours' in memory, and a `&mut [f32]` covering it would overlap theirs, so the
//! worker computes into a private buffer ([`TILE_FLOATS`], row chunks of it when the tile
//! is larger) and copies each finished row piece to C (copying C in first when accumulating).
//!
//! # Determinism
//!
//! Piece edges on MR/NR multiples mean a worker runs exactly the microkernel calls the
//! single-threaded sgemm runs for its elements (same panels, same zero padding at C's edges),
//! and its K slices are the same (they depend only on K and KC). So the result is bit-identical
//! to [`cllm_kernels::gemm::sgemm`] for any worker count, grid and stealing outcome (tests check
//! it bit for bit).
//!
//! # Shared packed B blocks
//!
//! A row split duplicates the packing of B: each worker packs every B block for its own rows (and,
//! where a tile's B does not fit its buffer, each of its pieces packs them again). When every
//! worker has more than one MC block of rows and the product has at most [`SHARED_B_MAX_BLOCKS`] B
//! blocks (NC-column blocks × K slices), the workers share instead, as BLIS does: for each B block,
//! each packs a contiguous run of its NR panels into one shared buffer, they meet at a barrier,
//! each runs loops 3 to 1 ([`gemm::gemm_block`]) on blocks of rows against the shared block, and
//! they meet again before the buffer is repacked. Worker `w` owns the rows of a row split's tile
//! `w` (the shares differ by at most one MR panel), cut into blocks of at most MC rows; it claims
//! its own blocks first, then any that another worker has not claimed yet. On an idle machine each
//! runs exactly its own; on a busy one the others take a descheduled worker's unclaimed blocks,
//! though they still wait for it to pack its panels and to reach each barrier (twice per B block).
//! Blocks of rows start on MR panels and B panels on NR panels, so the tiles and the result are
//! those of `sgemm`, bit for bit.
//!
//! Measured on 2 workers (a scratch harness calling `par_sgemm` both ways in one process,
//! alternating call by call, 9–25 calls each, the median of the per-pair ratios): sharing took
//! 4096×768×2304 and 4096×768×3072 5–12 % faster (the three layouts), 4096×768×768 and
//! 4096×3072×768 2–7 %, 1024³ 0.5–9 %, and left 2048-row products with K ≤ 1536 level (−3 to
//! +3 % across repeats); over the 50 K slices of the LM head's input gradient (2048×50257×768) it was 3–8 %
//! slower, the workers meeting a hundred times, hence the limit on blocks. The grid's cost model
//! still counts a row split's B packing as unshared, which only leans it towards the 2-D grids
//! measured on wide machines.
//!
//! # Measured
//!
//! Two-thread scaling (1.84–2.01× one thread on 2 cores) and the ratio to OpenBLAS at 2 threads
//! are in `docs/PERFORMANCE.md`, with their commands (`cllm-bench gemm --threads 1|2`,
//! `python3 scripts/peers/gemm_vs_numpy.py --threads 2`), as are the figures from the lent
//! 16-core host (`scripts/device_check.sh`).

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use cllm_kernels::gemm::blocking::Blocking;
use cllm_kernels::gemm::{self, AlignedBuf, GemmScratch, Layout};
use cllm_kernels::ShapeError;

use crate::shared_slice::SharedSlice;
use crate::spheres::{PerWorker, Schedule, Spheres, SpheresError};

/// Floats in each worker's private C buffer for column-split grids (4 MiB) by default: a
/// 1024 × 1024 tile, or row chunks of a larger one. Allocated once per worker; its pages are
/// touched only by that worker.
pub const TILE_FLOATS: usize = 1 << 20;

/// The most B blocks (NC-column blocks × K slices) a product may have for its row split to
/// share them: each block is a meeting of all workers, and over dozens of them (the LM head's
/// K = 50,257) waiting on the slowest outweighed the packing saved (see the module docs).
pub const SHARED_B_MAX_BLOCKS: usize = 8;

/// How many multiply-adds cost as much as packing one float, for [`Grid::choose`]. An AVX2 core
/// here issues 2 × 8 FMA lanes per cycle and packs a few floats per cycle at best.
const MACS_PER_PACKED_FLOAT: f64 = 16.0;

/// What [`par_sgemm`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ParGemmError {
    /// The slices or strides do not fit the shapes (the same checks and messages as `sgemm`).
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The pool refused or lost the job (a worker panicked, or the scratch is for another pool).
    #[error(transparent)]
    Spheres(#[from] SpheresError),
}

/// One worker's buffers.
struct WorkerScratch {
    gemm: GemmScratch,
    /// Private C tile for column-split grids: `tile_floats` floats, `[rows][cols]` of a chunk.
    tile: Vec<f32>,
    /// The tile columns whose B `gemm` holds packed when a grid's pieces share it
    /// ([`Grid::reuse_b`]).
    b_holds: Option<BBlock>,
}

/// A tile's packed B, every K slice of it, in one job: (the job's number, its first column,
/// its width).
type BBlock = (u64, usize, usize);

/// Every worker's packing buffers and private C tile, each made on its own worker, and the B
/// block the workers of a row split share.
pub struct ParGemmScratch {
    workers: PerWorker<WorkerScratch>,
    blocking: Blocking,
    tile_floats: usize,
    /// The shared packed B block: `[NC / NR][KC][NR]` (see `SharedJob::run`).
    shared_b: AlignedBuf,
    /// Per worker, the next of its blocks of rows to claim in the current B block of a shared-B
    /// job.
    claims: Box<[Claims]>,
    /// Jobs run so far: a job's number tells its packed B blocks from an earlier job's.
    jobs: u64,
}

/// A counter on a cache line of its own: one worker's claims do not slow another's.
#[repr(align(64))]
struct Claims(AtomicUsize);

impl ParGemmScratch {
    /// Buffers for every worker of `spheres`, with block sizes from this CPU's caches
    /// ([`GemmScratch::new`]).
    pub fn new(spheres: &Spheres) -> Result<ParGemmScratch, SpheresError> {
        ParGemmScratch::build(spheres, GemmScratch::new, TILE_FLOATS)
    }

    /// Buffers with explicit block sizes ([`GemmScratch::with_blocks`]) and private C buffers
    /// of `tile_floats` floats (at least MR × NR), for tests that must run every blocking and
    /// chunking loop more than once on small matrices, and for tuning.
    pub fn with_blocks(
        spheres: &Spheres,
        (mc, kc, nc): (usize, usize, usize),
        tile_floats: usize,
    ) -> Result<ParGemmScratch, SpheresError> {
        ParGemmScratch::build(
            spheres,
            || GemmScratch::with_blocks(mc, kc, nc),
            tile_floats,
        )
    }

    fn build(
        spheres: &Spheres,
        make: impl Fn() -> GemmScratch + Sync,
        tile_floats: usize,
    ) -> Result<ParGemmScratch, SpheresError> {
        // Made and zeroed on each worker; only that worker ever writes them, so their pages are
        // first touched on its CPU.
        let workers = spheres.per_worker(|_| {
            let gemm = make();
            let Blocking { mr, nr, .. } = gemm.blocking();
            WorkerScratch {
                gemm,
                tile: vec![0.0; tile_floats.max(mr * nr)],
                b_holds: None,
            }
        })?;
        let blocking = workers.get(0).gemm.blocking();
        let tile_floats = workers.get(0).tile.len();
        // Zeroed by the allocator, so its pages are first touched by the workers that pack
        // into them.
        let shared_b = AlignedBuf::new(blocking.kc * blocking.nc);
        Ok(ParGemmScratch {
            workers,
            blocking,
            tile_floats,
            shared_b,
            claims: (0..spheres.count())
                .map(|_| Claims(AtomicUsize::new(0)))
                .collect(),
            jobs: 0,
        })
    }

    /// The block sizes every worker's buffers were sized for.
    pub fn blocking(&self) -> Blocking {
        self.blocking
    }

    /// How many workers the buffers are for.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }
}

/// A split of C into `rows × cols` tiles; worker `w` starts on tile (`w / cols`, `w % cols`),
/// so neighbouring workers in tree order share rows of A. Each tile is cut into `pieces` row
/// pieces that idle workers may steal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    /// Tiles down M.
    pub rows: usize,
    /// Tiles across N.
    pub cols: usize,
    /// Row pieces per tile: the units of work stealing (see [`Grid::piece`]).
    pub pieces: usize,
    /// Whether the workers pack each B block together and share it instead (see the module
    /// docs): a row split of several workers, each with more than one MC block of rows, over at
    /// most [`SHARED_B_MAX_BLOCKS`] B blocks.
    pub share_b: bool,
    /// Whether a worker keeps a tile's packed B from one piece to the next (see the module
    /// docs): the tile's B, all of K slice after slice, fits its B buffer (KC × NC floats; the
    /// tile's columns at most NC and one chunk of the private buffer), the workers do not share
    /// B, and the tile is cut into several pieces, as many as it has MC blocks of rows.
    pub reuse_b: bool,
    m: usize,
    n: usize,
    mr: usize,
    nr: usize,
}

impl Grid {
    /// The cheapest `rows × cols = workers` grid for an M×K×N product with these block sizes
    /// and private C buffers of `tile_floats` floats (the cost model is in the module docs).
    /// Ties go to fewer column tiles.
    pub fn choose(
        (m, k, n): (usize, usize, usize),
        workers: usize,
        blocking: Blocking,
        tile_floats: usize,
    ) -> Grid {
        let workers = workers.max(1);
        let grid = |rows, cols| Grid {
            rows,
            cols,
            pieces: 1,
            share_b: false,
            reuse_b: false,
            m,
            n,
            mr: blocking.mr,
            nr: blocking.nr,
        };
        let mut best = grid(workers, 1);
        let mut best_cost = best.cost(k, blocking, tile_floats);
        for cols in 2..=workers {
            if workers.is_multiple_of(cols) {
                let candidate = grid(workers / cols, cols);
                let cost = candidate.cost(k, blocking, tile_floats);
                if cost < best_cost {
                    best = candidate;
                    best_cost = cost;
                }
            }
        }
        let b_blocks = n.div_ceil(blocking.nc) * k.div_ceil(gemm::k_slice(k, blocking.kc).max(1));
        best.share_b = best.cols == 1
            && workers > 1
            && m > workers * blocking.mc
            && (1..=SHARED_B_MAX_BLOCKS).contains(&b_blocks);
        let (tm, tn) = best.largest();
        let b_fits = k > 0
            && tn <= blocking.nc
            && k * tn.div_ceil(blocking.nr) * blocking.nr <= blocking.kc * blocking.nc
            && (best.cols == 1 || chunk(tm, tn, blocking, tile_floats).1 == tn);
        if b_fits && !best.share_b {
            // Pieces of one MC block: a worker packs its tile's B once for all of them.
            best.pieces = tm.div_ceil(blocking.mc).max(1);
            best.reuse_b = best.pieces > 1;
        } else {
            // Pieces of at least four MC blocks, at most four per tile: each piece packs its B
            // columns again, under 1 % of a piece of four MC blocks of rows.
            best.pieces = (tm / (4 * blocking.mc)).clamp(1, 4);
        }
        best
    }

    /// How many pieces of work there are: `rows · cols · pieces`.
    pub fn tasks(&self) -> usize {
        self.rows * self.cols * self.pieces
    }

    /// Piece `task` of the grid: tile `task / pieces` cut across its rows into `pieces` runs of
    /// whole MR panels. Worker `w`'s static share of `0..tasks()` is exactly its tile.
    pub fn piece(&self, task: usize) -> (Range<usize>, Range<usize>) {
        let (rows, cols) = self.tile(task / self.pieces);
        let part = split(rows.len(), self.mr, self.pieces, task % self.pieces);
        (rows.start + part.start..rows.start + part.end, cols)
    }

    /// Worker `worker`'s tile: its rows and columns of C (empty ranges when the matrix has
    /// fewer panels than the grid has tiles in that direction).
    pub fn tile(&self, worker: usize) -> (Range<usize>, Range<usize>) {
        (
            split(self.m, self.mr, self.rows, worker / self.cols),
            split(self.n, self.nr, self.cols, worker % self.cols),
        )
    }

    /// The largest tile's rows and columns.
    fn largest(&self) -> (usize, usize) {
        (
            split(self.m, self.mr, self.rows, 0).len(),
            split(self.n, self.nr, self.cols, 0).len(),
        )
    }

    /// The cost of the largest tile, per unit of K, in packed-float equivalents.
    fn cost(&self, k: usize, blocking: Blocking, tile_floats: usize) -> f64 {
        let (tm, tn) = self.largest();
        if tm == 0 || tn == 0 {
            return 0.0;
        }
        let (rc, cc) = if self.cols == 1 {
            (tm, tn)
        } else {
            chunk(tm, tn, blocking, tile_floats)
        };
        let macs = (tm * tn) as f64 / MACS_PER_PACKED_FLOAT;
        let pack_a = (tm * tn.div_ceil(cc) * cc.div_ceil(blocking.nc)) as f64;
        let pack_b = (tn * tm.div_ceil(rc)) as f64;
        let copy = if self.cols == 1 {
            0.0
        } else {
            (tm * tn) as f64 / k.max(1) as f64
        };
        macs + pack_a + pack_b + copy
    }
}

/// Part `part` of `0..len` cut into `parts` runs of whole `unit`-sized panels (the last panel
/// may be short), the runs' panel counts differing by at most one.
fn split(len: usize, unit: usize, parts: usize, part: usize) -> Range<usize> {
    let panels = len.div_ceil(unit);
    let (per, extra) = (panels / parts, panels % parts);
    let start = part * per + part.min(extra);
    let count = per + usize::from(part < extra);
    (start * unit).min(len)..((start + count) * unit).min(len)
}

/// Rows and columns of one private-buffer chunk of a `tm × tn` tile: at most NC columns, and
/// as many rows as fit in `tile_floats` (whole MC blocks when at least one fits, else whole
/// MR panels; `tile_floats >= MR · NR` and NC is a multiple of NR, so one panel always fits).
fn chunk(tm: usize, tn: usize, b: Blocking, tile_floats: usize) -> (usize, usize) {
    let cols = tn.min(b.nc).min(tile_floats / b.mr / b.nr * b.nr).max(1);
    let fit = tile_floats / cols;
    let rows = if fit >= b.mc {
        fit / b.mc * b.mc
    } else {
        (fit / b.mr * b.mr).max(b.mr)
    };
    (rows.min(tm), cols)
}

/// C's base pointer, shared with the workers of one job.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);

// SAFETY: the workers write through it only to the elements of the pieces they claimed, which
// are disjoint (see `par_sgemm`), while the caller's `&mut [f32]` is held for the whole job.
unsafe impl Sync for CPtr {}

impl CPtr {
    /// # Safety
    /// `offset + len` must lie inside the C slice this was made from, and no other live
    /// reference may overlap `offset .. offset + len` while the result lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice<'a>(&self, offset: usize, len: usize) -> &'a mut [f32] {
        // SAFETY: in bounds and exclusive, as the caller promises.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}

/// `C = op(A) · op(B)` (or `C += ...` when `accumulate`) on every worker of `spheres`, with the
/// arguments and meaning of [`cllm_kernels::gemm::sgemm`] (row-major, strides as stored).
///
/// The result is bit-identical to `sgemm`'s. One pool job per call (a stealing
/// [`Spheres::par_for_with`] over the grid's pieces, or one [`Spheres::run_with`] when the
/// workers share the packed B blocks); nothing is allocated. Fails with `sgemm`'s [`ShapeError`] before any work starts, or with a
/// [`SpheresError`] (e.g. `ws` was made for a pool of another size).
#[allow(clippy::too_many_arguments)]
pub fn par_sgemm(
    spheres: &Spheres,
    ws: &mut ParGemmScratch,
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
) -> Result<(), ParGemmError> {
    gemm::check_shapes(
        layout,
        m,
        k,
        n,
        (a.len(), lda),
        (b.len(), ldb),
        (c.len(), ldc),
    )?;
    if ws.workers() != spheres.count() {
        return Err(SpheresError::WrongWorkerCount {
            expected: spheres.count(),
            got: ws.workers(),
        }
        .into());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let blocking = ws.blocking;
    let grid = Grid::choose((m, k, n), spheres.count(), blocking, ws.tile_floats);
    ws.jobs = ws.jobs.wrapping_add(1);
    let cp = CPtr(c.as_mut_ptr());
    if grid.share_b {
        let job = SharedJob {
            layout,
            shape: (m, k, n),
            a: (a, lda),
            b: (b, ldb),
            ldc,
            accumulate,
            blocking,
        };
        let ParGemmScratch {
            workers,
            shared_b,
            claims,
            ..
        } = ws;
        // The workers write disjoint runs of panels or only read between two barriers (see
        // `SharedJob::run`), while the `&mut` borrow of the buffer is held for the whole job.
        let panels = SharedSlice::new(shared_b.as_mut_slice());
        spheres.run_with(workers, |ctx, w| {
            job.run(
                ctx.index(),
                ctx.count(),
                &|| ctx.barrier(),
                w,
                panels,
                claims,
                cp,
            )
        })?;
        return Ok(());
    }
    let job = Job {
        layout,
        k,
        a: (a, lda),
        b: (b, ldb),
        ldc,
        accumulate,
        blocking,
        tile_floats: ws.tile_floats,
        reuse_b: grid.reuse_b.then_some(ws.jobs),
    };
    // Each worker starts on its own tile's pieces and, when done, takes pieces still waiting
    // in other workers' tiles (siblings first): on a busy machine no worker waits for a slow
    // one. Who computes a piece never changes its bits.
    spheres.par_for_with(
        &mut ws.workers,
        0..grid.tasks(),
        Schedule::Stealing { chunk: 1 },
        |w, tasks| {
            for task in tasks {
                let (rows, cols) = grid.piece(task);
                if rows.is_empty() || cols.is_empty() {
                    continue;
                }
                if grid.cols == 1 {
                    // SAFETY: with one column of tiles each piece is whole rows `rows` of C,
                    // and pieces are disjoint row ranges handed out once each, so the span
                    // `rows.start·ldc .. (rows.end-1)·ldc + n` overlaps no other piece's; it
                    // lies inside C's checked span because rows.end <= m; `c` is borrowed
                    // mutably for the whole job.
                    let cw = unsafe { cp.slice(rows.start * ldc, (rows.len() - 1) * ldc + n) };
                    job.product((&mut w.gemm, &mut w.b_holds), rows, 0..n, cw, ldc);
                } else {
                    job.piece_chunked(w, rows, cols, cp);
                }
            }
        },
    )?;
    Ok(())
}

/// A row-split product with one packed B block for all workers (see the module docs).
struct SharedJob<'a> {
    layout: Layout,
    shape: (usize, usize, usize),
    a: (&'a [f32], usize),
    b: (&'a [f32], usize),
    ldc: usize,
    accumulate: bool,
    blocking: Blocking,
}

impl SharedJob<'_> {
    /// Worker `w`'s part: for each B block, pack its share of the panels, meet, claim blocks of
    /// rows until none is left, meet. Every worker runs the same loops, so all call `barrier`
    /// equally often.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        w: usize,
        nw: usize,
        barrier: &dyn Fn(),
        ws: &mut WorkerScratch,
        panels: SharedSlice,
        claims: &[Claims],
        c: CPtr,
    ) {
        let (m, k, n) = self.shape;
        let Blocking { mr, nr, mc, kc, .. } = self.blocking;
        let (layout, (a, lda), (b, ldb), ldc) = (self.layout, self.a, self.b, self.ldc);
        // The K slices and balanced NC blocks of `sgemm`.
        let (kc, nc) = (gemm::k_slice(k, kc), self.blocking.nc_for(n));
        // Worker v's rows are `split(m, mr, nw, v)`, as in a row split's grid (the shares
        // differ by at most one MR panel), cut into `per` blocks of whole panels, each at most
        // MC rows: `per` MC blocks hold the largest share.
        let per = m.div_ceil(mr).div_ceil(nw).div_ceil(mc / mr);
        for jc in (0..n).step_by(nc) {
            let ncb = nc.min(n - jc);
            let col_panels = ncb.div_ceil(nr);
            for pc in (0..k).step_by(kc) {
                let kcb = kc.min(k - pc);
                // Relaxed: every worker passed the barrier that ended the last block's claims,
                // and none claims before the barrier below, which orders this.
                claims[w].0.store(0, Ordering::Relaxed);
                let mine = split(col_panels, 1, nw, w);
                if !mine.is_empty() {
                    let first = mine.start * nr;
                    let cols = (jc + first, (mine.end * nr).min(ncb) - first);
                    // SAFETY: the workers' panel runs are disjoint and inside the KC × NC
                    // buffer (kcb <= KC, panels <= NC / NR); nobody reads the block until the
                    // barrier below, and the last block's readers passed the one after it.
                    let dst = unsafe { panels.mut_at(mine.start * kcb * nr..mine.end * kcb * nr) };
                    gemm::pack_b_panels(layout, b, ldb, (pc, kcb), cols, dst);
                }
                barrier();
                // SAFETY: the block is complete (barrier above) and nobody writes it until
                // every worker has passed the barrier below.
                let bpack = unsafe { panels.at(0..col_panels * kcb * nr) };
                // Worker v claims its own blocks in order; one that runs out of its own takes
                // those another has not claimed yet (on an idle machine none are left, and
                // each worker runs exactly its own).
                for v in (w..nw).chain(0..w) {
                    let share = split(m, mr, nw, v);
                    loop {
                        // Relaxed: the counter only hands out indices, each once (its RMWs are
                        // totally ordered); the data a block reads was published by the barrier.
                        let i = claims[v].0.fetch_add(1, Ordering::Relaxed);
                        if i >= per {
                            break;
                        }
                        let part = split(share.len(), mr, per, i);
                        let rows = share.start + part.start..share.start + part.end;
                        if rows.is_empty() {
                            continue;
                        }
                        // SAFETY: blocks of rows are claimed once each and disjoint, so the
                        // span from row rows.start, column jc, to row rows.end - 1, column
                        // jc + ncb (ncb <= n <= ldc) overlaps no other claim's; it lies inside
                        // C's checked span because rows.end <= m; `c` is borrowed mutably for
                        // the whole job.
                        let cw =
                            unsafe { c.slice(rows.start * ldc + jc, (rows.len() - 1) * ldc + ncb) };
                        gemm::gemm_block(
                            &mut ws.gemm,
                            layout,
                            a,
                            lda,
                            (rows.start, rows.len()),
                            (pc, kcb),
                            gemm::PackedB::Given(bpack),
                            ncb,
                            cw,
                            ldc,
                            self.accumulate || pc > 0,
                        );
                    }
                }
                barrier();
            }
        }
    }
}

/// What every worker of one [`par_sgemm`] call needs besides its tile.
struct Job<'a> {
    layout: Layout,
    k: usize,
    a: (&'a [f32], usize),
    b: (&'a [f32], usize),
    ldc: usize,
    accumulate: bool,
    blocking: Blocking,
    tile_floats: usize,
    /// This job's number when the workers keep their tiles' packed B ([`Grid::reuse_b`]).
    reuse_b: Option<u64>,
}

impl Job<'_> {
    /// A's rows `i0..` (columns for TN) as a sub-slice, with A's own stride.
    fn a_from(&self, i0: usize) -> &[f32] {
        let (a, lda) = self.a;
        let offset = match self.layout {
            Layout::NN | Layout::NT => i0 * lda,
            Layout::TN => i0,
        };
        // With k = 0 the stored A may be empty; sgemm then reads nothing.
        a.get(offset..).unwrap_or(&[])
    }

    /// B's columns `j0..` (rows for NT) as a sub-slice, with B's own stride.
    fn b_from(&self, j0: usize) -> &[f32] {
        let (b, ldb) = self.b;
        let offset = match self.layout {
            Layout::NN | Layout::TN => j0,
            Layout::NT => j0 * ldb,
        };
        b.get(offset..).unwrap_or(&[])
    }

    /// `C[rows, cols] (+)= op(A)[rows, ..] · op(B)[.., cols]` into `c`, which starts at that
    /// block's first element and has row stride `ldc`: the one-thread sgemm, or, when the grid
    /// reuses B ([`Grid::reuse_b`]), `sgemm`'s loops 3 to 1 for each K slice against the B the
    /// worker packed for the last piece it ran, if that piece had the same columns in this job
    /// (else it packs them first). Each block of rows takes every K slice of `sgemm`'s, in
    /// order, before the next block (`sgemm` runs slices outside blocks); every tile of C still
    /// takes the same slices in the same order, so the bits are the same.
    fn product(
        &self,
        (gemm, b_holds): (&mut GemmScratch, &mut Option<BBlock>),
        rows: Range<usize>,
        cols: Range<usize>,
        c: &mut [f32],
        ldc: usize,
    ) {
        let Some(job) = self.reuse_b else {
            gemm::sgemm_unchecked(
                gemm,
                self.layout,
                rows.len(),
                self.k,
                cols.len(),
                self.a_from(rows.start),
                self.a.1,
                self.b_from(cols.start),
                self.b.1,
                c,
                ldc,
                self.accumulate,
            );
            return;
        };
        let ((a, lda), (b, ldb), k) = (self.a, self.b, self.k);
        let Blocking { mc, kc, nr, .. } = self.blocking;
        let kc = gemm::k_slice(k, kc);
        // Floats per unit of depth: slice `pc..` starts at `pc · width`.
        let width = cols.len().div_ceil(nr) * nr;
        let block = (job, cols.start, cols.len());
        if *b_holds != Some(block) {
            // gemm's B buffer: [K slices][width / NR][kcb][NR], slice pc.. at pc · width. Not
            // this block's until every slice is in.
            *b_holds = None;
            let tile_cols = (cols.start, cols.len());
            for pc in (0..k).step_by(kc) {
                let depth = (pc, kc.min(k - pc));
                gemm::pack_b_block(gemm, self.layout, b, ldb, depth, tile_cols, pc * width);
            }
            *b_holds = Some(block);
        }
        for i0 in rows.clone().step_by(mc) {
            let mcb = mc.min(rows.end - i0);
            for pc in (0..k).step_by(kc) {
                gemm::gemm_block(
                    gemm,
                    self.layout,
                    a,
                    lda,
                    (i0, mcb),
                    (pc, kc.min(k - pc)),
                    gemm::PackedB::Own(pc * width),
                    cols.len(),
                    &mut c[(i0 - rows.start) * ldc..],
                    ldc,
                    self.accumulate || pc > 0,
                );
            }
        }
    }

    /// The piece `rows × cols`, computed chunk by chunk in the worker's private buffer and
    /// copied to C row by row.
    fn piece_chunked(
        &self,
        w: &mut WorkerScratch,
        rows: Range<usize>,
        cols: Range<usize>,
        c: CPtr,
    ) {
        let (rc, cc) = chunk(rows.len(), cols.len(), self.blocking, self.tile_floats);
        let ldc = self.ldc;
        let WorkerScratch {
            gemm,
            tile,
            b_holds,
        } = w;
        for j0 in cols.clone().step_by(cc) {
            let nb = cc.min(cols.end - j0);
            for i0 in rows.clone().step_by(rc) {
                let mb = rc.min(rows.end - i0);
                // Row i of this tile, columns j0..j0+nb, belongs to this worker alone (tiles
                // are disjoint) and lies inside C's checked span (i < m, j0 + nb <= n).
                let buf = &mut tile[..mb * nb]; // [mb][nb]
                if self.accumulate {
                    for (r, line) in buf.chunks_exact_mut(nb).enumerate() {
                        // SAFETY: a row of this worker's piece (above); lives for one copy.
                        let src = unsafe { c.slice((i0 + r) * ldc + j0, nb) };
                        line.copy_from_slice(src);
                    }
                }
                self.product((gemm, b_holds), i0..i0 + mb, j0..j0 + nb, buf, nb);
                for (r, line) in buf.chunks_exact(nb).enumerate() {
                    // SAFETY: a row of this worker's piece (above); lives for one copy.
                    let dst = unsafe { c.slice((i0 + r) * ldc + j0, nb) };
                    dst.copy_from_slice(line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cllm_kernels::gemm::blocking::{CacheSizes, PanelCache};

    /// The AVX2 path's blocks on this machine's caches (32 KiB L1d, 512 KiB L2, 8 MiB L3).
    fn avx2_blocks() -> Blocking {
        Blocking::for_caches(6, 16, PanelCache::L1, CacheSizes::FALLBACK)
    }

    /// `par_sgemm` on `spheres` with `ws` gives the bits of `sgemm` with the same `blocks`, on
    /// fixed operands and a C with padded rows, written or accumulated into.
    fn assert_matches_sgemm(
        spheres: &Spheres,
        ws: &mut ParGemmScratch,
        blocks: (usize, usize, usize),
        layout: Layout,
        (m, k, n): (usize, usize, usize),
        accumulate: bool,
        what: &str,
    ) {
        let (ar, ac) = layout.a_dims(m, k);
        let (br, bc) = layout.b_dims(k, n);
        let a: Vec<f32> = (0..ar * ac).map(|i| (i % 7) as f32 * 0.3 - 1.0).collect();
        let b: Vec<f32> = (0..br * bc).map(|i| (i % 5) as f32 * 0.7 - 1.3).collect();
        let ldc = n + 3;
        let c0: Vec<f32> = (0..m * ldc).map(|i| (i % 3) as f32).collect();
        let (mut got, mut want) = (c0.clone(), c0);
        par_sgemm(
            spheres, ws, layout, m, k, n, &a, ac, &b, bc, &mut got, ldc, accumulate,
        )
        .unwrap();
        let mut one = GemmScratch::with_blocks(blocks.0, blocks.1, blocks.2);
        gemm::sgemm(
            &mut one, layout, m, k, n, &a, ac, &b, bc, &mut want, ldc, accumulate,
        )
        .unwrap();
        assert_eq!(got, want, "{what}");
    }

    /// Both kinds of piece (whole rows of C written in place; tiles computed in chunks and
    /// copied row by row), accumulating into a C with padded rows, equal the one-thread GEMM with
    /// the same blocks bit for bit. Sized for Miri (`scripts/ub_check.sh`), which checks that the
    /// workers' writes through `CPtr` are in bounds and race-free.
    #[test]
    fn small_grids_of_both_piece_kinds_match_sgemm() {
        use crate::sphere_tree::SphereTree;
        let blocks = (4, 2, 8);
        // In the active path's tiles (6 × 16 on AVX2, 9 × 48 on AVX-512, ...): a C of fewer
        // rows than one panel and 9.4 panels of columns is split by columns, in chunks of two
        // microtiles.
        let Blocking { mr, nr, .. } =
            GemmScratch::with_blocks(blocks.0, blocks.1, blocks.2).blocking();
        for (workers, (m, k, n), tile, split_n) in [
            (2, (9, 3, 5), 1 << 20, false),
            (4, (3, 40, 9 * nr + 6), 2 * mr * nr, true),
        ] {
            let spheres = Spheres::new(&SphereTree::flat(&vec![0; workers])).unwrap();
            let mut ws = ParGemmScratch::with_blocks(&spheres, blocks, tile).unwrap();
            let grid = Grid::choose((m, k, n), workers, ws.blocking, tile);
            assert_eq!(grid.cols > 1, split_n, "{grid:?}");
            for layout in Layout::ALL {
                let what = format!("{workers} workers, {layout:?}");
                assert_matches_sgemm(&spheres, &mut ws, blocks, layout, (m, k, n), true, &what);
            }
        }
    }

    /// Row splits of more rows than one MC block per worker share one packed B block: over
    /// several NC blocks of two panels (so the third worker's run of panels is empty and the
    /// second's starts past the first panel) and two K slices, with a last partial panel each
    /// way and more blocks of rows than workers, writing and accumulating, the result equals
    /// the one-thread GEMM with the same blocks bit for bit. The workers share one CPU, so they
    /// steal each other's blocks. Sized for Miri, which checks the workers' packing into and
    /// reading from the shared block, and their writes to C, for races.
    #[test]
    fn row_splits_sharing_packed_b_match_sgemm() {
        use crate::sphere_tree::SphereTree;
        let nr = GemmScratch::with_blocks(1, 1, 1).blocking().nr;
        // MC rounds up to one panel (MR rows), NC is two panels; K slices of 3 and 2.
        let blocks = (1, 3, 2 * nr);
        let Blocking { mr, mc, .. } =
            GemmScratch::with_blocks(blocks.0, blocks.1, blocks.2).blocking();
        let workers = 3;
        let (m, k, n) = (26 * mr + 5, 5, 4 * nr + 5);
        let spheres = Spheres::new(&SphereTree::flat(&vec![0; workers])).unwrap();
        let mut ws = ParGemmScratch::with_blocks(&spheres, blocks, TILE_FLOATS).unwrap();
        let grid = Grid::choose((m, k, n), workers, ws.blocking, ws.tile_floats);
        assert!(
            grid.share_b && m > workers * mc,
            "{grid:?}: not the shared path"
        );
        for layout in Layout::ALL {
            for accumulate in [false, true] {
                let what = format!("{layout:?}, accumulate {accumulate}");
                assert_matches_sgemm(
                    &spheres,
                    &mut ws,
                    blocks,
                    layout,
                    (m, k, n),
                    accumulate,
                    &what,
                );
            }
        }
    }

    /// Grids whose tiles' packed B fits a worker's buffer, cut into pieces of one MC block: a
    /// worker packs a tile's B once and keeps it for the tile's next piece, and packs afresh for
    /// another tile's piece (the workers share one CPU, so they may steal) or in another call,
    /// also when B was changed in place between the calls. Row split (one worker); 2-D grids
    /// with K in two unequal slices, one with pieces that span two chunks of the private
    /// buffer. Writing and accumulating, the result equals the one-thread GEMM's bit for bit.
    #[test]
    fn tiles_keeping_their_b_match_sgemm_across_calls() {
        use crate::sphere_tree::SphereTree;
        let Blocking { mr, nr, .. } = GemmScratch::with_blocks(1, 1, 1).blocking();
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7 + seed * 3) % 11) as f32 * 0.25 - 1.0)
                .collect()
        };
        // KC 64 and NC of eight panels: a tile's B of K = 101 (slices of 51 and 50) and up to
        // five panels fits. In the last case, pieces of MC = 2 MR rows in chunks of one MR
        // panel (MR × NC floats).
        for (workers, blocks, tile_floats, (m, k, n)) in [
            (
                1,
                (mr, 64, 8 * nr),
                TILE_FLOATS,
                (7 * mr + 3, 13, 3 * nr + 5),
            ),
            (
                4,
                (mr, 64, 8 * nr),
                TILE_FLOATS,
                (4 * mr - 2, 101, 12 * nr + 5),
            ),
            (
                4,
                (2 * mr, 64, 8 * nr),
                8 * mr * nr,
                (3 * mr, 101, 16 * nr + 5),
            ),
        ] {
            let spheres = Spheres::new(&SphereTree::flat(&vec![0; workers])).unwrap();
            let mut ws = ParGemmScratch::with_blocks(&spheres, blocks, tile_floats).unwrap();
            let b = ws.blocking;
            let grid = Grid::choose((m, k, n), workers, b, ws.tile_floats);
            assert!(grid.reuse_b && grid.pieces > 1, "{grid:?}");
            assert_eq!(grid.cols > 1, workers > 1, "{grid:?}");
            if grid.cols > 1 {
                let (tm, tn) = grid.largest();
                let rows = chunk(tm, tn, b, ws.tile_floats).0;
                assert!(
                    tile_floats == TILE_FLOATS || rows < b.mc,
                    "{grid:?}: chunks {rows}"
                );
            }
            for layout in Layout::ALL {
                let (ar, ac) = layout.a_dims(m, k);
                let (br, bc) = layout.b_dims(k, n);
                let (a, mut b) = (values(ar * ac, 1), values(br * bc, 2));
                let ldc = n + 3;
                let c0 = values(m * ldc, 3);
                for accumulate in [false, true] {
                    for call in 0..2 {
                        b.iter_mut().for_each(|x| *x = *x * -0.5 + 0.25);
                        let (mut got, mut want) = (c0.clone(), c0.clone());
                        par_sgemm(
                            &spheres, &mut ws, layout, m, k, n, &a, ac, &b, bc, &mut got, ldc,
                            accumulate,
                        )
                        .unwrap();
                        let mut one = GemmScratch::with_blocks(blocks.0, blocks.1, blocks.2);
                        gemm::sgemm(
                            &mut one, layout, m, k, n, &a, ac, &b, bc, &mut want, ldc, accumulate,
                        )
                        .unwrap();
                        let what = format!("{workers} workers, {layout:?}, {accumulate}, {call}");
                        assert_eq!(got, want, "{what}");
                    }
                }
            }
        }
    }

    /// One worker's pieces in the orders stealing can give them: columns X, then Y, then X
    /// again (X's B packed afresh, not Y's kept), then X's columns in a later job whose B and K
    /// differ. Each piece equals the one-thread GEMM's columns bit for bit, in every layout.
    #[test]
    fn a_kept_b_follows_its_columns_and_its_job() {
        let Blocking { mr, nr, .. } = GemmScratch::with_blocks(1, 1, 1).blocking();
        let blocks = (mr, 64, 8 * nr);
        // X and Y as wide: only their first columns tell them apart.
        let (m, n) = (3 * mr + 1, 4 * nr + 3);
        let (x, y) = (0..2 * nr, 2 * nr..4 * nr);
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 5 + seed * 7) % 13) as f32 * 0.2 - 1.1)
                .collect()
        };
        for layout in Layout::ALL {
            let mut gemm = GemmScratch::with_blocks(blocks.0, blocks.1, blocks.2);
            let blocking = gemm.blocking();
            let mut b_holds = None;
            for (job, k) in [(1, 101), (2, 40)] {
                let (ar, ac) = layout.a_dims(m, k);
                let (br, bc) = layout.b_dims(k, n);
                let (a, b) = (values(ar * ac, job), values(br * bc, job + 2));
                let mut want = vec![0.0; m * n]; // [m][n]
                let mut one = GemmScratch::with_blocks(blocks.0, blocks.1, blocks.2);
                gemm::sgemm(
                    &mut one, layout, m, k, n, &a, ac, &b, bc, &mut want, n, false,
                )
                .unwrap();
                let run = Job {
                    layout,
                    k,
                    a: (&a, ac),
                    b: (&b, bc),
                    ldc: n,
                    accumulate: false,
                    blocking,
                    tile_floats: TILE_FLOATS,
                    reuse_b: Some(job as u64),
                };
                for cols in [x.clone(), y.clone(), x.clone()] {
                    let width = cols.len();
                    let mut got = vec![0.0; m * width]; // [m][width]
                    run.product(
                        (&mut gemm, &mut b_holds),
                        0..m,
                        cols.clone(),
                        &mut got,
                        width,
                    );
                    for (i, row) in got.chunks_exact(width).enumerate() {
                        let what = format!("{layout:?}, job {job}, columns {cols:?}, row {i}");
                        assert_eq!(row, &want[i * n + cols.start..][..width], "{what}");
                    }
                }
            }
        }
    }

    /// K slices of 512 pad the packed A panels (`gemm::a_panel_stride`), and with KC = 513
    /// the buffers are sized for a depth that is not padded: the shared-B path, whose workers
    /// pack A blocks through `gemm_block` (in TN; the AVX-512 path reads a row-major A in
    /// place), still equals the one-thread GEMM.
    #[test]
    #[cfg_attr(miri, ignore = "K slices of 512 are too deep to interpret")]
    fn row_splits_with_padded_a_panels_match_sgemm() {
        use crate::sphere_tree::SphereTree;
        let Blocking { mr, nr, .. } = GemmScratch::with_blocks(1, 1, 1).blocking();
        let blocks = (2 * mr, 513, 2 * nr);
        let workers = 2;
        let (m, k, n) = (workers * 12 * mr + 3, 1024, 2 * nr + 1);
        let spheres = Spheres::new(&SphereTree::flat(&vec![0; workers])).unwrap();
        let mut ws = ParGemmScratch::with_blocks(&spheres, blocks, TILE_FLOATS).unwrap();
        let grid = Grid::choose((m, k, n), workers, ws.blocking, ws.tile_floats);
        assert!(grid.share_b, "{grid:?}: not the shared path");
        for layout in Layout::ALL {
            let what = format!("{layout:?}");
            assert_matches_sgemm(&spheres, &mut ws, blocks, layout, (m, k, n), false, &what);
        }
    }

    #[test]
    fn splits_cover_the_range_in_whole_panels() {
        for (len, unit, parts) in [(0, 6, 3), (7, 6, 5), (4096, 6, 2), (100, 16, 7), (5, 4, 1)] {
            let mut next = 0;
            for part in 0..parts {
                let r = split(len, unit, parts, part);
                assert_eq!(r.start, next, "len {len} unit {unit} parts {parts}");
                assert!(r.start.is_multiple_of(unit) || r.start == len);
                assert!(r.end.is_multiple_of(unit) || r.end == len);
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }

    #[test]
    fn grid_follows_the_shape_of_c() {
        let b = avx2_blocks();
        let g = Grid::choose((4096, 768, 768), 2, b, TILE_FLOATS);
        assert_eq!((g.rows, g.cols), (2, 1), "a tall C splits M");
        let g = Grid::choose((4096, 768, 3072), 16, b, TILE_FLOATS);
        assert!(
            g.rows > 1 && g.cols > 1,
            "16 workers: a 2-D grid, got {g:?}"
        );
        let g = Grid::choose((64, 768, 8192), 2, b, TILE_FLOATS);
        assert_eq!((g.rows, g.cols), (1, 2), "a wide C splits N");
        let g = Grid::choose((7, 3, 5), 5, b, TILE_FLOATS);
        assert_eq!(g.rows * g.cols, 5);
    }

    #[test]
    fn row_splits_share_b_over_few_blocks() {
        let b = avx2_blocks(); // KC 256, NC 4096: 4096×768×3072 is three B blocks
        assert!(Grid::choose((4096, 768, 3072), 2, b, TILE_FLOATS).share_b);
        assert!(Grid::choose((1024, 1024, 1024), 2, b, TILE_FLOATS).share_b);
        assert!(
            !Grid::choose((2048, 50257, 768), 2, b, TILE_FLOATS).share_b,
            "197 K slices: too many meetings"
        );
        assert!(
            !Grid::choose((4096, 768, 3072), 1, b, TILE_FLOATS).share_b,
            "one worker"
        );
        assert!(
            !Grid::choose((400, 768, 768), 2, b, TILE_FLOATS).share_b,
            "one MC block per worker"
        );
        assert!(
            !Grid::choose((4096, 0, 768), 2, b, TILE_FLOATS).share_b,
            "k = 0"
        );
        assert!(
            !Grid::choose((64, 768, 8192), 2, b, TILE_FLOATS).share_b,
            "a column split"
        );
    }

    /// With the AVX-512 blocks of a 2 MiB-L2 core beside a large L3 (the lent 16-core host's),
    /// the GPT shapes' 16-worker grids keep each tile's B and cut tiles into MC blocks; row
    /// splits that share B, tiles wider than NC and K too deep for the buffer do not.
    #[test]
    fn tiles_keep_their_b_where_it_fits() {
        let b = Blocking::custom(9, 48, 252, 1024, 2016);
        let g = Grid::choose((4096, 768, 3072), 16, b, TILE_FLOATS);
        assert_eq!(
            (g.rows, g.cols, g.pieces, g.reuse_b),
            (4, 4, 5, true),
            "{g:?}"
        );
        let g = Grid::choose((4096, 3072, 768), 16, b, TILE_FLOATS);
        assert!(
            g.reuse_b && g.pieces > 1,
            "three K slices of each tile: {g:?}"
        );
        let g = Grid::choose((4096, 768, 3072), 2, b, TILE_FLOATS);
        assert!(g.share_b && !g.reuse_b, "{g:?}");
        let g = Grid::choose((512, 768, 50304), 16, b, TILE_FLOATS);
        assert!(!g.reuse_b && g.pieces <= 4, "tiles wider than NC: {g:?}");
        let g = Grid::choose((4096, 50257, 768), 16, b, TILE_FLOATS);
        assert!(!g.reuse_b && g.pieces <= 4, "K too deep: {g:?}");
    }

    #[test]
    fn pieces_cover_each_tile_and_shares_are_tiles() {
        let b = Blocking::custom(6, 16, 6, 8, 32);
        for ((m, n), workers) in [
            ((4096, 768), 2),
            ((100, 50), 3),
            ((7, 300), 4),
            ((61, 61), 6),
        ] {
            let g = Grid::choose((m, 64, n), workers, b, 600);
            assert_eq!(g.tasks() % workers, 0);
            for w in 0..workers {
                let (rows, cols) = g.tile(w);
                let mut next = rows.start;
                for task in w * g.pieces..(w + 1) * g.pieces {
                    let (r, c) = g.piece(task);
                    assert_eq!((r.start, &c), (next, &cols), "{g:?} task {task}");
                    assert!(r.start.is_multiple_of(6) || r.is_empty());
                    next = r.end;
                }
                assert_eq!(next, rows.end);
            }
        }
        let g = Grid::choose((4096, 768, 768), 2, avx2_blocks(), TILE_FLOATS);
        assert_eq!(g.pieces, 2, "2052-row tiles: two pieces of 1026 rows");
    }

    #[test]
    fn chunks_fit_the_private_buffer() {
        let b = avx2_blocks();
        for ((tm, tn), floats) in [
            ((1024, 768), TILE_FLOATS),
            ((4096, 25152), TILE_FLOATS),
            ((5, 3), TILE_FLOATS),
            ((2048, 4096), TILE_FLOATS),
            ((100, 100), 96),
            ((100, 100), 500),
        ] {
            let (rc, cc) = chunk(tm, tn, b, floats);
            assert!(
                rc * cc <= floats && rc >= 1 && cc >= 1,
                "{tm}x{tn} in {floats}"
            );
            assert!(rc == tm || rc % b.mr == 0);
            assert!(cc == tn || cc % b.nr == 0);
        }
    }
}
