mod common;

use cllm_kernels::gemm::{self, oracle, GemmScratch, Layout, PackedB};
use common::*;
use rand::rngs::StdRng;

/// Sizes for M, K and N: empty, single, and around the tiles of every path (MR 4/6/9,
/// NR 4/8/16/48): 7 < 8, 17 = 16 + 1 = 9 + 8, 63 and 65 around 64 = 4·16; and last column
/// panels of whole vectors (the column kernels): 24 = 16 + 8 on AVX2, 64 = 48 + 16 and
/// 80 = 48 + 32 on AVX-512, 7 = 4 + 3 on the scalar path.
const DIMS: &[usize] = &[0, 1, 7, 17, 24, 63, 64, 65, 80];

/// Every (M, K, N) of DIMS; under Miri (`scripts/ub_check.sh`, about a thousand times slower) a
/// few with a shallow K that still take empty, single, full and ragged tiles on every path.
fn shapes() -> Vec<(usize, usize, usize)> {
    if cfg!(miri) {
        // (17, 3, 32) and (13, 3, 24): last column panels of whole vectors (the column kernels)
        // on AVX-512 and AVX2.
        return vec![
            (0, 3, 5),
            (2, 0, 3),
            (1, 1, 1),
            (15, 2, 33),
            (17, 5, 9),
            (17, 3, 32),
            (13, 3, 24),
        ];
    }
    let mut v = Vec::new();
    for &m in DIMS {
        for &k in DIMS {
            for &n in DIMS {
                v.push((m, k, n));
            }
        }
    }
    v
}

/// One GEMM problem: operands laid out with row strides `ld = width + pad`, starting `off`
/// floats into their buffers (so odd offsets are unaligned), C pre-filled with random values.
struct Case {
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    pad: usize,
    off: usize,
}

impl Case {
    /// Run `sgemm` with `ws` and compare every element of C with the f64 oracle.
    fn check(&self, rng: &mut StdRng, ws: &mut GemmScratch, accumulate: bool) {
        let Case {
            layout,
            m,
            k,
            n,
            pad,
            off,
        } = *self;
        let (ar, ac) = layout.a_dims(m, k);
        let (br, bc) = layout.b_dims(k, n);
        let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
        let a = unaligned(rng, ar * lda, off);
        let b = unaligned(rng, br * ldb, off + 1);
        let c0 = unaligned(rng, m * ldc, off);
        let (a, b) = (&a[off..], &b[off + 1..]);
        let mut got = c0.clone();
        gemm::sgemm(
            ws,
            layout,
            m,
            k,
            n,
            a,
            lda,
            b,
            ldb,
            &mut got[off..],
            ldc,
            accumulate,
        )
        .unwrap();
        let mut want = c0.clone();
        oracle::sgemm(
            layout,
            m,
            k,
            n,
            a,
            lda,
            b,
            ldb,
            &mut want[off..],
            ldc,
            accumulate,
        );
        // Error bound: the kernel sums K products in f32 (FMA, blocked order), so each element is
        // off by at most γ_K·Σ_p|a_ip||b_pj| with γ_K ≈ K·u (u = 2^-24, Higham's bound for any
        // summation order), plus one rounding of the stored result and, when accumulating, of
        // the addition to C: u·(|c| + Σ|a||b|). We allow (K + 2)·EPSILON (EPSILON = 2u) times
        // Σ|a||b| + |c_in|: twice the worst case, never looser than a few ulps per product.
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
        let mut bound = vec![0.0f32; m * ldc];
        oracle::sgemm(
            layout,
            m,
            k,
            n,
            &abs(a),
            lda,
            &abs(b),
            ldb,
            &mut bound,
            ldc,
            false,
        );
        let eps = (k + 2) as f32 * f32::EPSILON;
        let what = format!("sgemm {layout} {m}x{k}x{n} pad={pad} off={off} acc={accumulate}");
        for i in 0..m {
            for j in 0..n {
                let idx = i * ldc + j;
                let (g, w) = (got[off + idx], want[off + idx]);
                let c_in = if accumulate { c0[off + idx].abs() } else { 0.0 };
                let tol = eps * (bound[idx] + c_in) + f32::MIN_POSITIVE;
                assert!(
                    (g - w).abs() <= tol,
                    "{what} [isa {}]: C[{i},{j}] = {g}, want {w} (tolerance {tol})",
                    cllm_kernels::isa::active()
                );
            }
        }
        // The padding between rows of C and anything past its last row are never written.
        for idx in 0..got.len() {
            let inside = idx >= off && {
                let (i, j) = ((idx - off) / ldc.max(1), (idx - off) % ldc.max(1));
                i < m && j < n
            };
            if !inside {
                assert!(
                    got[idx].to_bits() == c0[idx].to_bits(),
                    "{what}: wrote outside C at buffer index {idx}"
                );
            }
        }
    }
}

#[test]
fn sgemm_matches_oracle_on_odd_sizes_every_layout_and_mode() {
    let mut rng = rng(7);
    let mut ws = GemmScratch::new();
    for layout in Layout::ALL {
        for (m, k, n) in shapes() {
            for accumulate in [false, true] {
                let case = Case {
                    layout,
                    m,
                    k,
                    n,
                    pad: 0,
                    off: 0,
                };
                case.check(&mut rng, &mut ws, accumulate);
            }
        }
    }
}

#[test]
fn sgemm_handles_strided_and_unaligned_operands() {
    let mut rng = rng(8);
    let mut ws = GemmScratch::new();
    for layout in Layout::ALL {
        // 64, 24 and 18 end in column panels of whole vectors on AVX-512, AVX2 and scalar.
        const FULL: &[(usize, usize, usize)] = &[
            (7, 9, 17),
            (13, 33, 40),
            (65, 63, 31),
            (17, 33, 64),
            (13, 9, 24),
            (9, 5, 18),
        ];
        for &(m, k, n) in full_or_miri(FULL, &[(7, 9, 17)]) {
            for (pad, off) in [(1, 1), (3, 5), (16, 3)] {
                for accumulate in [false, true] {
                    let case = Case {
                        layout,
                        m,
                        k,
                        n,
                        pad,
                        off,
                    };
                    case.check(&mut rng, &mut ws, accumulate);
                }
            }
        }
    }
}

#[test]
fn sgemm_runs_every_blocking_loop_more_than_once() {
    // Blocks far smaller than the matrices: K > KC (three K slices, the first overwriting and
    // the later ones accumulating), M > MC and N > NC, with ragged last blocks everywhere.
    // Under Miri, the smallest blocks (one tile, K slices of 2) on a matrix still past them.
    // The block of NC = 48 columns (40 rounded up to every vector path's NR) leaves a ragged
    // last column block at N = 83, two whole AVX-512 vectors at N = 80 and one AVX2 vector past
    // a full panel at N = 72 (the column kernels).
    let mut rng = rng(9);
    let ((mc, kc, nc), (m, k), ns) = if cfg!(miri) {
        ((1, 2, 1), (29, 7), &[65][..])
    } else {
        ((20, 24, 40), (71, 70), &[83, 80, 72][..])
    };
    let mut ws = GemmScratch::with_blocks(mc, kc, nc);
    let b = ws.blocking();
    for &n in ns {
        assert!(b.mc < m && b.kc < k / 2 && b.nc < n);
        for layout in Layout::ALL {
            for accumulate in [false, true] {
                let case = Case {
                    layout,
                    m,
                    k,
                    n,
                    pad: 2,
                    off: 1,
                };
                case.check(&mut rng, &mut ws, accumulate);
            }
        }
    }
}

/// A panels whose length is a multiple of 2 KiB lie one line further apart (`gemm::a_panel_stride`):
/// a K slice of 512 makes every panel 512·MR floats. With KC = 512, K = 1024 pads both slices and
/// K = 1023 the first (512) but not the second (511); with KC = 513, K = 1024 pads slices
/// shallower than KC whose own panels at KC would not be padded, so the buffer, sized for KC,
/// must hold the padded panels too. Rows past MC (the blocked loops) and within it (`few_rows`),
/// each layout (on AVX-512 only TN packs A: NN and NT read it in place).
#[test]
#[cfg_attr(miri, ignore = "K slices of 512 are too deep to interpret")]
fn sgemm_with_padded_a_panels_matches_the_oracle() {
    let mut rng = rng(14);
    let b = GemmScratch::with_blocks(1, 1, 1).blocking();
    let mr = b.mr;
    let mut cases = Vec::new();
    for (kc, k) in [(512, 1024), (512, 1023), (513, 1024)] {
        for m in [7 * mr + 2, 2 * mr + 1] {
            for layout in Layout::ALL {
                cases.push((kc, k, m, layout, 70));
            }
        }
    }
    for (kc, k, m, layout, n) in cases {
        let mut ws = GemmScratch::with_blocks(3 * mr, kc, 64);
        assert_eq!(gemm::k_slice(k, ws.blocking().kc), 512);
        let case = Case {
            layout,
            m,
            k,
            n,
            pad: 1,
            off: 2,
        };
        case.check(&mut rng, &mut ws, true);
    }
}

/// With all M rows in one packed A block the GEMM packs each B panel just before its tiles
/// (gemm::few_rows); with more rows than a block it packs whole B blocks first. Both must give
/// the same bits: a prefill's logits must not depend on how many prompt rows share a call.
#[test]
fn sgemm_gives_the_same_bits_with_one_or_many_row_blocks() {
    let mut rng = rng(12);
    // Under Miri, smaller blocks on a smaller matrix, in the same relations.
    // N = 83, 80 and 72: a ragged last column block, and whole vectors on AVX-512 and AVX2.
    let ((m, k), ns, (kc, nc)) = if cfg!(miri) {
        ((29, 5), &[65][..], (2, 1))
    } else {
        ((53, 70), &[83, 80, 72][..], (24, 40))
    };
    let mut one = GemmScratch::with_blocks(64, kc, nc);
    let mut many = GemmScratch::with_blocks(12, kc, nc);
    assert!(one.blocking().mc >= m && many.blocking().mc < m);
    for &n in ns {
        for layout in Layout::ALL {
            let (ar, ac) = layout.a_dims(m, k);
            let (br, bc) = layout.b_dims(k, n);
            let a = random_vec(&mut rng, ar * ac);
            let b = random_vec(&mut rng, br * bc);
            let c0 = random_vec(&mut rng, m * n);
            for accumulate in [false, true] {
                let (mut c1, mut c2) = (c0.clone(), c0.clone());
                gemm::sgemm(
                    &mut one, layout, m, k, n, &a, ac, &b, bc, &mut c1, n, accumulate,
                )
                .unwrap();
                gemm::sgemm(
                    &mut many, layout, m, k, n, &a, ac, &b, bc, &mut c2, n, accumulate,
                )
                .unwrap();
                assert_eq!(c1, c2, "N={n} {layout:?} accumulate={accumulate}");
            }
        }
    }
}

/// One product in all three layouts gives the same bits: A stored M × K (NN, NT) or K × M (TN),
/// B stored K × N (NN, TN) or N × K (NT), with padded row strides. Packing only moves the values
/// into the order the microkernel reads them, and on AVX-512 a row-major A (NN, NT) is read in
/// place while TN packs it, so this also holds A read in place to A packed. Rows past MC (the
/// blocked loops, with small blocks, and with the default ones) and within it (`few_rows`),
/// several NC blocks, ragged tiles, overwrite and accumulate.
#[test]
#[cfg_attr(
    miri,
    ignore = "300-row products in 3 layouts are too slow to interpret"
)]
fn sgemm_gives_the_same_bits_in_every_layout() {
    let mut rng = rng(31);
    let nr = GemmScratch::with_blocks(1, 1, 1).blocking().nr;
    // K = 150: with the default blocks, 37 four-step iterations, so the full tiles' C prefetch
    // skips some of them (`next_c_mask`).
    let (k, n, pad) = (150, 5 * nr + 7, 3);
    for (mut ws, m) in [
        (GemmScratch::with_blocks(12, 24, 2 * nr), 53),
        (GemmScratch::new(), 13),
        (GemmScratch::new(), 300),
    ] {
        // The product's A (m × k) and B (k × n), row-major, and each stored both ways.
        let (a, b) = (random_vec(&mut rng, m * k), random_vec(&mut rng, k * n));
        let stored = |x: &[f32], rows: usize, cols: usize, transposed: bool| -> Vec<f32> {
            let (r, c) = if transposed {
                (cols, rows)
            } else {
                (rows, cols)
            };
            let mut v = vec![f32::NAN; r * (c + pad)];
            for i in 0..rows {
                for j in 0..cols {
                    let at = if transposed {
                        j * (c + pad) + i
                    } else {
                        i * (c + pad) + j
                    };
                    v[at] = x[i * cols + j];
                }
            }
            v
        };
        let (a_rows, a_cols) = (stored(&a, m, k, false), stored(&a, m, k, true));
        let (b_rows, b_cols) = (stored(&b, k, n, false), stored(&b, k, n, true));
        let c0 = random_vec(&mut rng, m * (n + pad));
        for accumulate in [false, true] {
            let run = |ws: &mut GemmScratch, layout: Layout| {
                let (a, lda) = match layout {
                    Layout::TN => (&a_cols, m + pad),
                    _ => (&a_rows, k + pad),
                };
                let (b, ldb) = match layout {
                    Layout::NT => (&b_cols, k + pad),
                    _ => (&b_rows, n + pad),
                };
                let mut c = c0.clone();
                gemm::sgemm(
                    ws,
                    layout,
                    m,
                    k,
                    n,
                    a,
                    lda,
                    b,
                    ldb,
                    &mut c,
                    n + pad,
                    accumulate,
                )
                .unwrap();
                c
            };
            let tn = run(&mut ws, Layout::TN);
            for layout in [Layout::NN, Layout::NT] {
                let c = run(&mut ws, layout);
                assert!(
                    c.iter().zip(&tn).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{layout:?} {m}x{k}x{n}, accumulate={accumulate}: C differs from TN's"
                );
            }
        }
    }
}

/// The blocked loops in parts (`pack_b_panels`, `gemm_block`; and `pack_b_block`, `PackedB::Own`),
/// run as a threaded caller runs them: each B block packed as two runs of panels, rows in blocks of
/// whole MR panels in any order, K in `k_slice` slices. Here N is cut at NC, where `sgemm` cuts it
/// into equal blocks (`Blocking::nc_for`): any cut at whole NR panels runs the same tiles. The
/// result equals `sgemm`'s bit for bit, in every layout, with ragged last panels both ways.
#[test]
fn gemm_in_parts_gives_the_bits_of_sgemm() {
    let mut rng = rng(21);
    let nr = GemmScratch::with_blocks(1, 1, 1).blocking().nr;
    // NC of several panels, so each B block is packed as two non-empty runs (under Miri fewer:
    // wide blocks take too long to interpret).
    let ncs = if cfg!(miri) {
        vec![2 * nr]
    } else {
        vec![4 * nr]
    };
    for nc in ncs {
        gemm_in_parts_with_blocks_of(&mut rng, nc);
    }
}

fn gemm_in_parts_with_blocks_of(rng: &mut StdRng, nc: usize) {
    let kc = if cfg!(miri) { 3 } else { 24 };
    let mut ws = GemmScratch::with_blocks(1, kc, nc);
    let b = ws.blocking();
    let (m, k, n) = if cfg!(miri) {
        (3 * b.mr + 2, 7, b.nr + 5)
    } else {
        (5 * b.mr + 4, 70, 2 * b.nc + 2 * b.nr + 7)
    };
    let kcs = gemm::k_slice(k, b.kc);
    for layout in Layout::ALL {
        let (ar, ac) = layout.a_dims(m, k);
        let (br, bc) = layout.b_dims(k, n);
        let a = random_vec(rng, ar * ac);
        let bm = random_vec(rng, br * bc);
        let ldc = n + 3;
        let c0 = random_vec(rng, m * ldc);
        for accumulate in [false, true] {
            let mut want = c0.clone();
            let mut one = GemmScratch::with_blocks(1, kc, nc);
            gemm::sgemm(
                &mut one, layout, m, k, n, &a, ac, &bm, bc, &mut want, ldc, accumulate,
            )
            .unwrap();
            let mut got = c0.clone();
            let mut packed = vec![0.0; b.kc * b.nc];
            for jc in (0..n).step_by(b.nc) {
                let ncb = b.nc.min(n - jc);
                let panels = ncb.div_ceil(b.nr);
                for pc in (0..k).step_by(kcs) {
                    let kcb = kcs.min(k - pc);
                    // Two runs of panels, the second packed first (both non-empty but in the
                    // last block, which may have one panel).
                    let half = panels / 2;
                    for (p0, p1) in [(half, panels), (0, half)] {
                        let cols = (jc + p0 * b.nr, (p1 * b.nr).min(ncb) - p0 * b.nr);
                        let dst = &mut packed[p0 * kcb * b.nr..p1 * kcb * b.nr];
                        gemm::pack_b_panels(layout, &bm, bc, (pc, kcb), cols, dst);
                    }
                    // Blocks of one MR panel, last rows first.
                    for i0 in (0..m).step_by(b.mr).rev() {
                        let mcb = b.mr.min(m - i0);
                        let c = &mut got[i0 * ldc + jc..];
                        gemm::gemm_block(
                            &mut ws,
                            layout,
                            &a,
                            ac,
                            (i0, mcb),
                            (pc, kcb),
                            PackedB::Given(&packed[..panels * kcb * b.nr]),
                            ncb,
                            c,
                            ldc,
                            accumulate || pc > 0,
                        );
                    }
                }
            }
            assert_eq!(got, want, "{layout:?} accumulate={accumulate}");
            // The same with each B block packed whole into the scratch's own buffer
            // (`pack_b_block`, `PackedB::Own`) at the buffer's end, rows in blocks of one
            // MR panel in order.
            let mut own = c0.clone();
            for jc in (0..n).step_by(b.nc) {
                let ncb = b.nc.min(n - jc);
                for pc in (0..k).step_by(kcs) {
                    let kcb = kcs.min(k - pc);
                    let at = b.kc * b.nc - ncb.div_ceil(b.nr) * b.nr * kcb;
                    gemm::pack_b_block(&mut ws, layout, &bm, bc, (pc, kcb), (jc, ncb), at);
                    for i0 in (0..m).step_by(b.mr) {
                        let mcb = b.mr.min(m - i0);
                        let c = &mut own[i0 * ldc + jc..];
                        let acc = accumulate || pc > 0;
                        gemm::gemm_block(
                            &mut ws,
                            layout,
                            &a,
                            ac,
                            (i0, mcb),
                            (pc, kcb),
                            PackedB::Own(at),
                            ncb,
                            c,
                            ldc,
                            acc,
                        );
                    }
                }
            }
            assert_eq!(own, want, "own B, {layout:?} accumulate={accumulate}");
        }
    }
}

/// A block packed into the scratch's own B buffer must fit it from the offset on: one float
/// too far is refused, not written past the end.
#[test]
fn pack_b_block_refuses_blocks_past_the_buffers_end() {
    let mut ws = GemmScratch::with_blocks(1, 4, 1);
    let b = ws.blocking();
    let bm = vec![1.0; 4 * b.nr];
    let refused =
        |f: &mut dyn FnMut()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    let mut pack =
        |at: usize| gemm::pack_b_block(&mut ws, Layout::NN, &bm, b.nr, (0, 4), (0, b.nr), at);
    // KC × NC = 4 × NR floats: the block fills it exactly from 0, and not from 1.
    assert!(!refused(&mut || pack(0)));
    assert!(refused(&mut || pack(1)));
    assert!(refused(&mut || pack(usize::MAX)));
}

#[test]
#[should_panic(expected = "gemm_block")]
fn gemm_block_refuses_more_rows_than_its_scratch_packs() {
    let mut ws = GemmScratch::with_blocks(1, 4, 1);
    let b = ws.blocking();
    let (m, k, n) = (b.mc + 1, 4, b.nr);
    let (a, packed, mut c) = (vec![0.0; m * k], vec![0.0; k * n], vec![0.0; m * n]);
    gemm::gemm_block(
        &mut ws,
        Layout::NN,
        &a,
        k,
        (0, m),
        (0, k),
        PackedB::Given(&packed),
        n,
        &mut c,
        n,
        false,
    );
}

/// Strides so large that the last row's offset wraps around `usize` are refused, never used to
/// compute an address: the block checks of `gemm_block` and `pack_b_panels` are checked sums
/// and products.
#[test]
fn gemm_parts_refuse_strides_whose_spans_wrap() {
    let wrap = usize::MAX / 3 + 1; // 3 · wrap wraps to 2
    let b = GemmScratch::with_blocks(1, 4, 1).blocking();
    let refused =
        |f: &mut dyn FnMut()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    let mut ws = GemmScratch::with_blocks(1, 4, 1);
    let (a, packed) = (vec![0.0; 4 * 4], vec![0.0; 4 * b.nr]);
    let mut c = vec![0.0; b.nr + 2];
    assert!(refused(&mut || gemm::gemm_block(
        &mut ws,
        Layout::NN,
        &a,
        4,
        (0, 4),
        (0, 4),
        PackedB::Given(&packed),
        b.nr,
        &mut c,
        wrap,
        false,
    )));
    assert!(refused(&mut || gemm::gemm_block(
        &mut ws,
        Layout::NN,
        &a,
        wrap,
        (0, 4),
        (0, 4),
        PackedB::Given(&packed),
        b.nr,
        &mut c[..b.nr],
        b.nr,
        false,
    )));
    let mut dst = vec![0.0; 4 * b.nr];
    assert!(refused(&mut || gemm::pack_b_panels(
        Layout::NT,
        &[0.0; 4],
        wrap,
        (0, 1),
        (0, 4),
        &mut dst,
    )));
    assert!(refused(&mut || gemm::pack_b_panels(
        Layout::NN,
        &[0.0; 4],
        4,
        (0, 1),
        (0, 4),
        &mut dst[..1],
    )));
}

/// A row of C computed alone (a one-row tile, gemm's kernel_rows) equals the same row computed in
/// a call with more rows, bit for bit, in every layout. M runs over 1..=30, so the last row panel
/// takes every row count below MR on every path (MR = 4, 6 or 9), after one full tile or more;
/// N = 69 gives full column panels of every NR and a ragged last one.
#[test]
fn sgemm_rows_do_not_depend_on_the_rows_beside_them() {
    let mut rng = rng(13);
    let (k, n) = if cfg!(miri) { (3, 37) } else { (70, 69) };
    let mut ws = GemmScratch::new();
    // Under Miri: one row, and a full tile plus one or a ragged tile of every path's MR.
    let ms: Vec<usize> = if cfg!(miri) {
        vec![1, 5, 11, 17]
    } else {
        (1..=30).collect()
    };
    for m in ms {
        for layout in Layout::ALL {
            let (ar, ac) = layout.a_dims(m, k);
            let (br, bc) = layout.b_dims(k, n);
            let a = random_vec(&mut rng, ar * ac);
            let b = random_vec(&mut rng, br * bc);
            let mut all = vec![0.0; m * n];
            gemm::sgemm(&mut ws, layout, m, k, n, &a, ac, &b, bc, &mut all, n, false).unwrap();
            for i in 0..m {
                // Row i of A: a row of the stored matrix, or (TN) a column of it.
                let ai = match layout {
                    Layout::TN => &a[i..],
                    _ => &a[i * ac..],
                };
                let mut row = vec![0.0; n];
                gemm::sgemm(&mut ws, layout, 1, k, n, ai, ac, &b, bc, &mut row, n, false).unwrap();
                assert_eq!(row, all[i * n..][..n], "{layout:?} m={m} row {i}");
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "K past the real KC is too deep to interpret")]
fn sgemm_with_default_blocking_on_a_deep_product() {
    // K above the detected KC, so the K loop runs more than once with the real block sizes.
    let mut rng = rng(10);
    let mut ws = GemmScratch::new();
    let k = ws.blocking().kc * 2 + 5;
    for layout in Layout::ALL {
        let case = Case {
            layout,
            m: 19,
            k,
            n: 37,
            pad: 0,
            off: 0,
        };
        case.check(&mut rng, &mut ws, true);
    }
}

#[test]
fn sgemm_with_zero_depth_zeroes_or_keeps_c() {
    let mut ws = GemmScratch::new();
    for layout in Layout::ALL {
        let mut c = vec![3.0f32; 6];
        gemm::sgemm_contiguous(&mut ws, layout, 2, 0, 3, &[], &[], &mut c, true).unwrap();
        assert_eq!(c, [3.0; 6]);
        gemm::sgemm_contiguous(&mut ws, layout, 2, 0, 3, &[], &[], &mut c, false).unwrap();
        assert_eq!(c, [0.0; 6]);
    }
}

#[test]
fn sgemm_contiguous_uses_natural_strides() {
    let mut ws = GemmScratch::new();
    // A = [[1, 2], [3, 4]] (M×K = 2×2), B = [[5, 6, 7], [8, 9, 10]] (K×N = 2×3).
    let a = [1.0, 2.0, 3.0, 4.0];
    let at = [1.0, 3.0, 2.0, 4.0];
    let b = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
    let bt = [5.0, 8.0, 6.0, 9.0, 7.0, 10.0];
    let want = [21.0, 24.0, 27.0, 47.0, 54.0, 61.0];
    for (layout, a, b) in [
        (Layout::NN, &a, &b),
        (Layout::NT, &a, &bt),
        (Layout::TN, &at, &b),
    ] {
        let mut c = [0.0f32; 6];
        gemm::sgemm_contiguous(&mut ws, layout, 2, 2, 3, a, b, &mut c, false).unwrap();
        assert_eq!(c, want, "{layout}");
    }
}

#[test]
fn sgemm_rejects_bad_shapes_naming_kernel_and_shapes() {
    let mut ws = GemmScratch::new();
    let (a, b) = (vec![0.0f32; 12], vec![0.0f32; 20]);
    let mut c = vec![0.0f32; 15];
    // A 3×4 needs 12 elements with lda = 4; 11 is one short.
    let err = gemm::sgemm(
        &mut ws,
        Layout::NN,
        3,
        4,
        5,
        &a[..11],
        4,
        &b,
        5,
        &mut c,
        5,
        false,
    )
    .unwrap_err();
    assert_eq!(err.kernel, "sgemm");
    let msg = err.to_string();
    assert!(
        msg.contains("M×K×N = 3×4×5") && msg.contains("`a` has 11 elements"),
        "{msg}"
    );
    // NT stores B as N×K = 5×4: ldb = 3 is below its row width.
    let err =
        gemm::sgemm(&mut ws, Layout::NT, 3, 4, 5, &a, 4, &b, 3, &mut c, 5, false).unwrap_err();
    assert!(
        err.to_string().contains("ldb = 3 is below its row width 4"),
        "{err}"
    );
    // C with ldc = 6 spans (3-1)·6 + 5 = 17 elements.
    let err = gemm::sgemm(&mut ws, Layout::TN, 3, 4, 5, &a, 3, &b, 5, &mut c, 6, true).unwrap_err();
    assert!(err.to_string().contains("`c` has 15 elements but"), "{err}");
}

#[test]
#[should_panic(expected = "sgemm")]
fn sgemm_unchecked_panics_on_bad_shapes() {
    let mut ws = GemmScratch::new();
    let mut c = vec![0.0f32; 4];
    gemm::sgemm_unchecked(
        &mut ws,
        Layout::NN,
        2,
        2,
        2,
        &[0.0; 3],
        2,
        &[0.0; 4],
        2,
        &mut c,
        2,
        false,
    );
}

// The microkernel probe computes what it says: `rounds` times the sum over the A panels of
// panel · B, for the active path's tile. Tolerance, for `calls` = panels · rounds calls of depth
// kc on terms below 1 in magnitude: each call sums kc FMAs from zero (kc roundings of partial
// sums below kc) and adds the result into C (one rounding of a sum below calls · kc), so the
// error is under calls · (kc · kc + calls · kc) · 2^-24; the oracle is f64. Here 6 calls of
// depth 7: 546 · 2^-24 ~ 3.3e-5, atol 1e-4.
#[test]
fn microkernel_probe_computes_its_sweeps() {
    let gemm::blocking::Blocking { mr, nr, .. } = gemm::active_blocking();
    let (kc, panels, rounds) = (7, 3, 2);
    check_microkernel_probe(mr, nr, kc, panels, rounds, 1e-4);
}

// The same where the GEMM pads the A panels a line apart (kc · MR a multiple of 512 floats): the
// probe reads each panel where the padding puts it. Tolerance as above for 2 calls of depth 512:
// 2 · (512 · 512 + 2 · 512) · 2^-24 ~ 3.1e-2, atol 5e-2 (a bound; the error seen is far below).
#[test]
fn microkernel_probe_reads_padded_panels() {
    let gemm::blocking::Blocking { mr, nr, .. } = gemm::active_blocking();
    let kc = 512;
    assert!(gemm::a_panel_stride(kc, mr) > kc * mr);
    check_microkernel_probe(mr, nr, kc, 2, 1, 5e-2);
}

fn check_microkernel_probe(
    mr: usize,
    nr: usize,
    kc: usize,
    panels: usize,
    rounds: usize,
    atol: f32,
) {
    let stride = gemm::a_panel_stride(kc, mr);
    let mut rng = rng(77);
    // (panels, stride): panel p's (kc, MR) at p · stride; the padding after it holds NaN, so a
    // read of it would poison C.
    let mut a = vec![f32::NAN; panels * stride];
    for p in 0..panels {
        a[p * stride..][..kc * mr].copy_from_slice(&random_vec(&mut rng, kc * mr));
    }
    let b = random_vec(&mut rng, kc * nr);
    let mut c = vec![0.0f32; mr * nr];
    let flops = gemm::microkernel_sweeps(&a, &b, &mut c, kc, rounds);
    assert_eq!(flops, (2 * mr * nr * kc * panels * rounds) as u64);
    let mut want = vec![0.0f32; mr * nr];
    for r in 0..mr {
        for j in 0..nr {
            let mut sum = 0.0f64;
            for p in 0..panels {
                for k in 0..kc {
                    sum += a[p * stride + k * mr + r] as f64 * b[k * nr + j] as f64;
                }
            }
            want[r * nr + j] = (rounds as f64 * sum) as f32;
        }
    }
    assert_close("microkernel_sweeps", &c, &want, atol, 0.0);
}

#[test]
#[should_panic(expected = "microkernel_sweeps")]
fn microkernel_probe_rejects_a_partial_panel() {
    let gemm::blocking::Blocking { mr, nr, .. } = gemm::active_blocking();
    let mut c = vec![0.0f32; mr * nr];
    gemm::microkernel_sweeps(&vec![0.0; 4 * mr + 1], &vec![0.0; 4 * nr], &mut c, 4, 1);
}

// A depth whose panel sizes overflow is refused, not wrapped into a small panel.
#[test]
#[should_panic(expected = "microkernel_sweeps")]
fn microkernel_probe_rejects_a_depth_whose_panels_overflow() {
    let gemm::blocking::Blocking { mr, nr, .. } = gemm::active_blocking();
    let mut c = vec![0.0f32; mr * nr];
    gemm::microkernel_sweeps(&vec![0.0; mr], &vec![0.0; nr], &mut c, (1 << 63) + 1, 1);
}
