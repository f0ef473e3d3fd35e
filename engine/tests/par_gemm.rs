//! The parallel sgemm against the single-threaded one: bit for bit, on odd shapes, strided
//! operands, every layout, with and without accumulate, on trees of 1, 2, 3 and 5 workers (more
//! workers than CPUs is fine for correctness), plus a counting-allocator check that a call
//! allocates nothing.
//!
//! The allocation count sees every thread of the process, so every test here holds `SERIAL`
//! while it runs: nothing else allocates while the count is on.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cllm_engine::par_gemm::{par_sgemm, Grid, ParGemmError, ParGemmScratch};
use cllm_engine::sphere_tree::{SphereNode, SphereTree};
use cllm_engine::spheres::Spheres;
use cllm_kernels::gemm::{self, GemmScratch, Layout};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The CPUs this process may run on (from /proc/self/status), so the pools pin to real ones.
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("0")
        .trim()
        .to_string();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// A flat tree of `n` leaves cycling over the allowed CPUs.
fn flat(n: usize) -> SphereTree {
    let allowed = allowed_cpus();
    let cpus: Vec<usize> = (0..n).map(|i| allowed[i % allowed.len()]).collect();
    SphereTree::flat(&cpus)
}

/// root ─ [g(0, 1), 2, g(3, 4)]: five workers at two depths.
fn nested5() -> SphereTree {
    let allowed = allowed_cpus();
    let leaf = |i: usize| SphereNode::Leaf {
        cpu: allowed[i % allowed.len()],
    };
    let group = |children| SphereNode::Group {
        label: "g".into(),
        children,
    };
    SphereTree {
        root: group(vec![
            group(vec![leaf(0), leaf(1)]),
            leaf(2),
            group(vec![leaf(3), leaf(4)]),
        ]),
    }
}

/// Deterministic values in [-1, 1) with few mantissa bits, different per `seed`.
fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) % 2048) as f32 / 1024.0 - 1.0
        })
        .collect()
}

/// One problem: shapes, layout, strides padded by `pad`, accumulate or not.
#[derive(Clone, Copy, Debug)]
struct Case {
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    pad: usize,
    accumulate: bool,
}

struct Operands {
    a: Vec<f32>,
    lda: usize,
    b: Vec<f32>,
    ldb: usize,
    c0: Vec<f32>,
    ldc: usize,
}

impl Case {
    fn operands(&self, seed: u64) -> Operands {
        let (ar, ac) = self.layout.a_dims(self.m, self.k);
        let (br, bc) = self.layout.b_dims(self.k, self.n);
        let (lda, ldb, ldc) = (ac + self.pad, bc + self.pad, self.n + self.pad);
        Operands {
            a: fill(ar * lda, seed),
            lda,
            b: fill(br * ldb, seed + 1),
            ldb,
            c0: fill(self.m * ldc, seed + 2),
            ldc,
        }
    }

    /// The single-threaded sgemm's result.
    fn reference(&self, ws: &mut GemmScratch, o: &Operands) -> Vec<f32> {
        let mut c = o.c0.clone();
        gemm::sgemm(
            ws,
            self.layout,
            self.m,
            self.k,
            self.n,
            &o.a,
            o.lda,
            &o.b,
            o.ldb,
            &mut c,
            o.ldc,
            self.accumulate,
        )
        .unwrap();
        c
    }

    fn parallel(&self, spheres: &Spheres, ws: &mut ParGemmScratch, o: &Operands) -> Vec<f32> {
        let mut c = o.c0.clone();
        par_sgemm(
            spheres,
            ws,
            self.layout,
            self.m,
            self.k,
            self.n,
            &o.a,
            o.lda,
            &o.b,
            o.ldb,
            &mut c,
            o.ldc,
            self.accumulate,
        )
        .unwrap();
        c
    }
}

/// Bit-for-bit equality, with the first differing element named (C's padding included: it
/// must be left as it was).
fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i}: {} vs single-threaded {}",
            got[i], want[i]
        );
    }
}

const SIZES: [usize; 6] = [1, 5, 7, 17, 33, 65];

/// Small block sizes so every blocking loop (and the column-split chunking) runs several times,
/// and tiles are cut into pieces that workers may steal (of one MC block where a tile's packed
/// B fits the B buffer, else of four MC blocks or more).
const SMALL_BLOCKS: (usize, usize, usize) = (6, 8, 32);

fn check_trees(trees: &[SphereTree], cases: &[Case], blocks: (usize, usize, usize), tile: usize) {
    let (mc, kc, nc) = blocks;
    let mut single = GemmScratch::with_blocks(mc, kc, nc);
    for tree in trees {
        let spheres = Spheres::new(tree).unwrap();
        let mut ws = ParGemmScratch::with_blocks(&spheres, blocks, tile).unwrap();
        for (seed, case) in cases.iter().enumerate() {
            let o = case.operands(seed as u64);
            let want = case.reference(&mut single, &o);
            let got = case.parallel(&spheres, &mut ws, &o);
            let grid = Grid::choose(
                (case.m, case.k, case.n),
                spheres.count(),
                ws.blocking(),
                tile,
            );
            assert_bits(
                &got,
                &want,
                &format!("{case:?} on {} workers, grid {grid:?}", spheres.count()),
            );
        }
    }
}

fn odd_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for layout in Layout::ALL {
        for (i, &m) in SIZES.iter().enumerate() {
            for (j, &n) in SIZES.iter().enumerate() {
                // A different K per (m, n), so every K appears with every layout.
                let k = [0, 1, 7, 9, 33, 65][(i + 2 * j) % SIZES.len()];
                cases.push(Case {
                    layout,
                    m,
                    k,
                    n,
                    pad: (i + j) % 3,
                    accumulate: (i + j) % 2 == 1,
                });
            }
        }
    }
    cases
}

#[test]
fn bit_identical_to_single_thread_on_odd_shapes() {
    let _serial = serial();
    let trees: Vec<SphereTree> = [1, 2, 3, 5].into_iter().map(flat).collect();
    check_trees(&trees, &odd_cases(), SMALL_BLOCKS, 1 << 20);
}

#[test]
fn bit_identical_on_2d_grids_and_chunked_tiles() {
    let _serial = serial();
    // Wide C with short K favours column splits; a private buffer of 96 and 600 floats forces
    // many row and column chunks per tile. Four and six workers give 2-D grids.
    let mut cases = Vec::new();
    for layout in Layout::ALL {
        for accumulate in [false, true] {
            for (m, k, n) in [
                (13, 70, 400),
                (40, 5, 301),
                (64, 2, 97),
                (70, 40, 70),
                (200, 9, 40),
            ] {
                cases.push(Case {
                    layout,
                    m,
                    k,
                    n,
                    pad: 3,
                    accumulate,
                });
            }
        }
    }
    for (tree, tile) in [
        (flat(2), 1 << 20),
        (flat(4), 96),
        (flat(6), 600),
        (nested5(), 600),
    ] {
        check_trees(&[tree], &cases, SMALL_BLOCKS, tile);
    }
    // Some of these really are 2-D and chunked (the grid choice is the code's, so check).
    let b = cllm_kernels::gemm::blocking::Blocking::custom(6, 16, 6, 8, 32);
    let g = Grid::choose((13, 70, 400), 4, b, 96);
    assert!(g.cols > 1, "expected a column split, got {g:?}");
    let g = Grid::choose((200, 9, 40), 2, b, 96);
    assert!(g.pieces > 1, "expected stealable pieces, got {g:?}");
}

#[test]
fn bit_identical_with_default_blocks() {
    let _serial = serial();
    // K deeper than the default KC (256 or less), so C is accumulated over two K slices; small
    // M and N keep it quick in debug builds.
    let cases: Vec<Case> = Layout::ALL
        .into_iter()
        .map(|layout| Case {
            layout,
            m: 40,
            k: 300,
            n: 37,
            pad: 1,
            accumulate: layout == Layout::NT,
        })
        .collect();
    let mut single = GemmScratch::new();
    for tree in [flat(2), flat(3)] {
        let spheres = Spheres::new(&tree).unwrap();
        let mut ws = ParGemmScratch::new(&spheres).unwrap();
        for (seed, case) in cases.iter().enumerate() {
            let o = case.operands(seed as u64 + 100);
            let want = case.reference(&mut single, &o);
            let got = case.parallel(&spheres, &mut ws, &o);
            assert_bits(&got, &want, &format!("{case:?}, default blocks"));
            // And against the f64 oracle, loosely: K = 300 products of values in [-1, 1) with
            // f32 accumulation stay well within 1e-3 absolute.
            let mut oracle = o.c0.clone();
            gemm::oracle::sgemm(
                case.layout,
                case.m,
                case.k,
                case.n,
                &o.a,
                o.lda,
                &o.b,
                o.ldb,
                &mut oracle,
                o.ldc,
                case.accumulate,
            );
            let worst = got
                .iter()
                .zip(&oracle)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-3, "{case:?}: off the oracle by {worst}");
        }
    }
}

#[test]
fn same_bits_run_to_run() {
    let _serial = serial();
    let spheres = Spheres::new(&flat(3)).unwrap();
    let mut ws = ParGemmScratch::with_blocks(&spheres, SMALL_BLOCKS, 200).unwrap();
    let case = Case {
        layout: Layout::NN,
        m: 50,
        k: 40,
        n: 90,
        pad: 0,
        accumulate: true,
    };
    let o = case.operands(7);
    let first = case.parallel(&spheres, &mut ws, &o);
    for _ in 0..5 {
        assert_bits(&case.parallel(&spheres, &mut ws, &o), &first, "repeat");
    }
}

#[test]
fn bad_shapes_are_refused_before_any_work() {
    let _serial = serial();
    let spheres = Spheres::new(&flat(2)).unwrap();
    let mut ws = ParGemmScratch::with_blocks(&spheres, SMALL_BLOCKS, 1000).unwrap();
    let (a, b) = (vec![1.0; 6], vec![1.0; 6]);
    let mut c = vec![7.0; 4];
    // 2×3 · 3×2 needs 4 floats of C with ldc = 2, but ldc = 1 is below the row width.
    let err = par_sgemm(
        &spheres,
        &mut ws,
        Layout::NN,
        2,
        3,
        2,
        &a,
        3,
        &b,
        2,
        &mut c,
        1,
        false,
    )
    .unwrap_err();
    assert!(matches!(err, ParGemmError::Shape(_)), "{err}");
    assert!(err.to_string().contains("ldc = 1"), "{err}");
    assert_eq!(c, vec![7.0; 4], "C untouched");
    // A short: 2×3 with lda 3 needs 6 floats.
    let err = par_sgemm(
        &spheres,
        &mut ws,
        Layout::NN,
        2,
        3,
        2,
        &a[..5],
        3,
        &b,
        2,
        &mut c,
        2,
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("`a` has 5 elements"), "{err}");
    // Scratch for another pool size.
    let other = Spheres::new(&flat(3)).unwrap();
    let err = par_sgemm(
        &other,
        &mut ws,
        Layout::NN,
        2,
        3,
        2,
        &a,
        3,
        &b,
        2,
        &mut c,
        2,
        false,
    )
    .unwrap_err();
    assert!(matches!(err, ParGemmError::Spheres(_)), "{err}");
}

#[test]
fn no_allocation_per_call() {
    let _serial = serial();
    for (tree, tile) in [(flat(2), 1 << 20), (nested5(), 300)] {
        let spheres = Spheres::new(&tree).unwrap();
        let mut ws = ParGemmScratch::with_blocks(&spheres, SMALL_BLOCKS, tile).unwrap();
        // Row splits (tall C) and column splits with chunked private tiles (wide C).
        let cases = [
            Case {
                layout: Layout::NN,
                m: 97,
                k: 20,
                n: 33,
                pad: 1,
                accumulate: false,
            },
            Case {
                layout: Layout::TN,
                m: 9,
                k: 3,
                n: 301,
                pad: 0,
                accumulate: true,
            },
        ];
        let ops: Vec<Operands> = cases.iter().map(|c| c.operands(3)).collect();
        let mut outs: Vec<Vec<f32>> = ops.iter().map(|o| o.c0.clone()).collect();
        let mut round = |outs: &mut Vec<Vec<f32>>| {
            for ((case, o), c) in cases.iter().zip(&ops).zip(outs.iter_mut()) {
                par_sgemm(
                    &spheres,
                    &mut ws,
                    case.layout,
                    case.m,
                    case.k,
                    case.n,
                    &o.a,
                    o.lda,
                    &o.b,
                    o.ldb,
                    c,
                    o.ldc,
                    case.accumulate,
                )
                .unwrap();
            }
        };
        // Warm-up: first-call lazies (the active ISA, the caller's thread handle) happen here.
        round(&mut outs);
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        for _ in 0..10 {
            round(&mut outs);
        }
        COUNTING.store(false, Ordering::SeqCst);
        assert_eq!(
            ALLOCATIONS.load(Ordering::SeqCst),
            0,
            "allocations per par_sgemm call"
        );
    }
}
