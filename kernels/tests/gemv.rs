mod common;

use cllm_kernels::gemv::{self, oracle, GEMV_MAX_ROWS, NN_NB, PANEL_COLS, PANEL_KC};
use common::*;
use rand::rngs::StdRng;

/// The `m` rows of `n` floats of a buffer with row stride `ld` (empty rows when n = 0).
fn rows(buf: &mut [f32], n: usize, ld: usize, m: usize) -> Vec<&mut [f32]> {
    let mut out = Vec::with_capacity(m);
    let mut rest = buf;
    for _ in 0..m {
        let (row, tail) = rest.split_at_mut(ld.min(rest.len()));
        out.push(&mut row[..n]);
        rest = tail;
    }
    out
}

fn xrows(x: &[f32], k: usize, ld: usize, m: usize) -> Vec<&[f32]> {
    (0..m).map(|i| &x[i * ld..i * ld + k]).collect()
}

/// `r` rows of `n` random floats at row stride `ld`, starting 1 float into the buffer (so every
/// row is unaligned for odd strides): NaN everywhere else, so a kernel that reads a gap poisons
/// its result and one that writes a gap shows there.
fn gapped(rng: &mut StdRng, r: usize, n: usize, ld: usize) -> Vec<f32> {
    let mut buf = vec![f32::NAN; 1 + r * ld];
    for i in 0..r {
        buf[1 + i * ld..][..n].copy_from_slice(&random_vec(rng, n));
    }
    buf
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Each element of `got` against the f64 oracle's `want`, within Higham's bound for a sum formed
/// in f32: a sum whose terms each go through at most h roundings is off by at most
/// γ_h·Σ|terms| (γ_h ≈ h·u, u = 2^-24, any order), and the oracle's rounding to f32 adds u·|sum|.
/// Here the terms are the K products, the bias and (accumulating) the prior y; each goes through
/// at most K + 4 roundings on any path (gemv_nn: the bias add and one FMA per row of w; gemv_nt:
/// ceil(K / LANES) FMAs per lane, then at most 4 adds across lanes on any path). We allow
/// (K + 4)·EPSILON = 2·(K + 4)·u times Σ|terms| (`sums`, the oracle on absolute values): twice
/// the worst case. Both NaN (the gaps between rows) passes.
fn assert_sum_close(what: &str, got: &[f32], want: &[f32], sums: &[f32], k: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    for (i, ((&g, &w), &sum)) in got.iter().zip(want).zip(sums).enumerate() {
        let tol = (k + 4) as f32 * f32::EPSILON * sum + f32::MIN_POSITIVE;
        assert!(
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan()),
            "{what} [isa {}]: element {i}: got {g}, want {w} (tolerance {tol})",
            cllm_kernels::isa::active()
        );
    }
}

/// Every row count a call takes (all tile remainders of TILE_ROWS and of gemv_nt's pairs of w
/// rows); K around NN_STREAMS, a vector and 64; N over SIZES and two column blocks of NN_NB.
/// Rows of x and y are unaligned with gaps between them (`gapped`), w has row stride N + 3.
#[test]
fn gemv_nn_matches_oracle_on_odd_sizes() {
    let mut rng = rng(7);
    // Under Miri (`scripts/ub_check.sh`, about a thousand times slower): fewer row counts and
    // depths, and no second column block (rows_alone_and_batched_agree takes one).
    let ms = full_or_miri(&[1, 2, 3, 4, 5, 6, 7, 8], &[1, 3, 5, 8]);
    assert_eq!(ms.last(), Some(&GEMV_MAX_ROWS));
    let ks = full_or_miri(&[0, 1, 3, 4, 7, 63, 65], &[0, 3, 7, 17]);
    let big_n = full_or_miri(&[NN_NB + 332], &[]);
    for &m in ms {
        for &k in ks {
            for &n in SIZES.iter().chain(big_n) {
                let (ldx, ldy, ldw) = (k + 1, n + 1, n + 3);
                let x = gapped(&mut rng, m, k, ldx);
                let w = gapped(&mut rng, k, n, ldw);
                let bias = random_vec(&mut rng, n);
                let init = gapped(&mut rng, m, n, ldy);
                let (xs, ws) = (xrows(&x[1..], k, ldx, m), &w[1..]);
                let (ax, aw, ab) = (abs(&x), abs(&w), abs(&bias));
                let axs = xrows(&ax[1..], k, ldx, m);
                for (acc, with_bias) in [(false, false), (false, true), (true, true), (true, false)]
                {
                    let (b, abs_b) = if with_bias {
                        (&bias[..], &ab[..])
                    } else {
                        (&[][..], &[][..])
                    };
                    let (mut got, mut want, mut sums) = (init.clone(), init.clone(), abs(&init));
                    gemv::gemv_nn(&mut rows(&mut got[1..], n, ldy, m), &xs, ws, ldw, b, acc)
                        .unwrap();
                    oracle::gemv_nn(&mut rows(&mut want[1..], n, ldy, m), &xs, ws, ldw, b, acc);
                    let mut ys = rows(&mut sums[1..], n, ldy, m);
                    oracle::gemv_nn(&mut ys, &axs, &aw[1..], ldw, abs_b, acc);
                    let what = format!("gemv_nn m={m} k={k} n={n} acc={acc} bias={with_bias}");
                    assert_sum_close(&what, &got, &want, &sums, k);
                }
            }
        }
    }
}

/// As for gemv_nn: every row count; K over SIZES; N (rows of w) around NT_STREAMS and 64.
#[test]
fn gemv_nt_matches_oracle_on_odd_sizes() {
    let mut rng = rng(8);
    // Under Miri: fewer row counts and rows of w (see gemv_nn_matches_oracle_on_odd_sizes).
    for &m in full_or_miri(&[1, 2, 3, 4, 5, 6, 7, 8], &[1, 3, 8]) {
        for &k in SIZES {
            for &n in full_or_miri(&[0, 1, 5, 7, 33, 63, 65], &[0, 5, 7, 33]) {
                let (ldx, ldy, ldw) = (k + 1, n + 1, k + 3);
                let x = gapped(&mut rng, m, k, ldx);
                let w = gapped(&mut rng, n, k, ldw);
                let init = gapped(&mut rng, m, n, ldy);
                let xs = xrows(&x[1..], k, ldx, m);
                let (ax, aw) = (abs(&x), abs(&w));
                let (mut got, mut want, mut sums) = (init.clone(), init.clone(), init.clone());
                gemv::gemv_nt(&mut rows(&mut got[1..], n, ldy, m), &xs, &w[1..], ldw).unwrap();
                oracle::gemv_nt(&mut rows(&mut want[1..], n, ldy, m), &xs, &w[1..], ldw);
                let axs = xrows(&ax[1..], k, ldx, m);
                oracle::gemv_nt(&mut rows(&mut sums[1..], n, ldy, m), &axs, &aw[1..], ldw);
                assert_sum_close(&format!("gemv_nt m={m} k={k} n={n}"), &got, &want, &sums, k);
            }
        }
    }
}

/// The order gemv_nn adds the rows of w in must take every row once, whatever K's remainder.
#[test]
fn gemv_nn_row_order_is_a_permutation() {
    for k in [0, 1, 3, 4, 5, 7, 8, 65, 384, 3075] {
        let mut seen = vec![false; k];
        for t in 0..k {
            let r = gemv::nn_row(k, t);
            assert!(
                r < k && !seen[r],
                "k={k}: step {t} takes row {r} again or out of range"
            );
            seen[r] = true;
        }
    }
}

#[test]
fn gemv_rejects_bad_shapes() {
    let mut y = [0.0f32; 4];
    let x = [1.0f32; 3];
    let err = gemv::gemv_nn(&mut [&mut y[..]], &[&x[..]], &[0.0; 5], 4, &[], false).unwrap_err();
    assert_eq!(err.kernel, "gemv_nn");
    assert!(
        err.to_string()
            .contains("has 5 elements, K=3 rows of stride 4 need 12"),
        "{err}"
    );
    let err = gemv::gemv_nt(&mut [&mut y[..]], &[&x[..]], &[0.0; 5], 3).unwrap_err();
    assert_eq!(err.kernel, "gemv_nt");
    assert!(
        err.to_string()
            .contains("has 5 elements, 4 rows of stride 3 need 12"),
        "{err}"
    );
    let mut rows9: Vec<&mut [f32]> = (0..GEMV_MAX_ROWS + 1).map(|_| &mut [][..]).collect();
    let xs9: Vec<&[f32]> = (0..GEMV_MAX_ROWS + 1).map(|_| &[][..]).collect();
    assert!(gemv::gemv_nn(&mut rows9, &xs9, &[], 0, &[], false).is_err());
}

/// A row's result must not depend on the rows sharing the call (a batch row equals the same
/// prompt decoded alone): every m gives row i exactly what m = 1 gives it.
#[test]
fn gemv_rows_do_not_depend_on_their_neighbours() {
    // The second shape spans two column blocks and several deep sweeps of the batched path; the
    // others give K below and at every remainder of NN_STREAMS, and N (gemv_nt's rows) below and
    // at every remainder of NT_STREAMS.
    // Under Miri (`scripts/ub_check.sh`): a shallow K across two column blocks, and K and N
    // at two remainders of the streams.
    let shapes = full_or_miri(
        &[
            (67, 61),
            (40, NN_NB + 41),
            (2, 30),
            (66, 62),
            (65, 8),
            (5, 3),
        ],
        &[(3, NN_NB + 9), (6, 7)],
    );
    for &(k, n) in shapes {
        rows_alone_and_batched_agree(k, n);
    }
}

fn rows_alone_and_batched_agree(k: usize, n: usize) {
    let mut rng = rng(9);
    let x = random_vec(&mut rng, GEMV_MAX_ROWS * k);
    let w = random_vec(&mut rng, k * n);
    let bias = random_vec(&mut rng, n);
    let mut alone = vec![0.0; GEMV_MAX_ROWS * n];
    let mut alone_nt = vec![0.0; GEMV_MAX_ROWS * n];
    for i in 0..GEMV_MAX_ROWS {
        let xs = [&x[i * k..i * k + k]];
        gemv::gemv_nn(
            &mut [&mut alone[i * n..i * n + n]],
            &xs,
            &w,
            n,
            &bias,
            false,
        )
        .unwrap();
        // The same k*n floats read as an (n, k) matrix.
        gemv::gemv_nt(&mut [&mut alone_nt[i * n..i * n + n]], &xs, &w, k).unwrap();
    }
    for m in 2..=GEMV_MAX_ROWS {
        let xs = xrows(&x, k, k, m);
        let mut got = vec![0.0; m * n];
        gemv::gemv_nn(&mut rows(&mut got, n, n, m), &xs, &w, n, &bias, false).unwrap();
        assert_eq!(got, alone[..m * n], "gemv_nn m={m}");
        let mut got = vec![0.0; m * n];
        gemv::gemv_nt(&mut rows(&mut got, n, n, m), &xs, &w, k).unwrap();
        assert_eq!(got, alone_nt[..m * n], "gemv_nt m={m}");
    }
}

/// The panel form gives what gemv_nn gives on the same matrix, bit for bit, on every path: the
/// decoder swaps one for the other by batch size, and a batch row must equal the row alone.
#[test]
fn gemv_nn_panels_equals_gemv_nn_bit_for_bit() {
    let mut rng = rng(10);
    // K below, at and across chunk boundaries and every remainder of NN_STREAMS; N below, at and
    // across panel widths.
    // Under Miri (`scripts/ub_check.sh`): one chunk boundary crossed, one ragged panel.
    let ks = full_or_miri(
        &[0, 1, 3, 5, 65, PANEL_KC, PANEL_KC + 7, 3 * PANEL_KC + 2],
        &[0, 3, PANEL_KC + 1],
    );
    let ns = full_or_miri(
        &[1, 7, 8, 9, PANEL_COLS, PANEL_COLS + 1, 45, 100],
        &[7, PANEL_COLS + 1],
    );
    for &k in ks {
        for &n in ns {
            let ldw = n + 3;
            let w = unaligned(&mut rng, k * ldw, 2);
            let mut panels = vec![f32::NAN; gemv::nn_panels_len(k, n)];
            gemv::pack_nn_panels(&mut panels, &w[2..], ldw, k, n).unwrap();
            for &m in full_or_miri(&[1, 2, 3, 4, 5, 6, 7, 8], &[1, 5]) {
                let x = random_vec(&mut rng, m * k);
                let bias = random_vec(&mut rng, n);
                let init = random_vec(&mut rng, m * n);
                for (acc, b) in [(false, &[][..]), (false, &bias[..]), (true, &bias[..])] {
                    let xs = xrows(&x, k, k, m);
                    let (mut got, mut want) = (init.clone(), init.clone());
                    gemv::gemv_nn_panels(&mut rows(&mut got, n, n, m), &xs, &panels, b, acc)
                        .unwrap();
                    gemv::gemv_nn(&mut rows(&mut want, n, n, m), &xs, &w[2..], ldw, b, acc)
                        .unwrap();
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "m={m} k={k} n={n} acc={acc}: {got:?} != {want:?}");
                }
            }
        }
    }
}

#[test]
fn panels_reject_bad_shapes() {
    let w = [0.0f32; 12];
    let mut out = vec![0.0; gemv::nn_panels_len(3, 4)];
    assert_eq!(out.len(), 3 * PANEL_COLS);
    let err = gemv::pack_nn_panels(&mut out[1..], &w, 4, 3, 4).unwrap_err();
    assert_eq!(err.kernel, "pack_nn_panels");
    assert!(err.to_string().contains("`out`"), "{err}");
    assert!(gemv::pack_nn_panels(&mut out, &w[1..], 4, 3, 4).is_err());
    assert!(gemv::pack_nn_panels(&mut out, &w, 3, 3, 4).is_err());
    gemv::pack_nn_panels(&mut out, &w, 4, 3, 4).unwrap();
    let (mut y, x) = ([0.0f32; 4], [1.0f32; 3]);
    let err = gemv::gemv_nn_panels(&mut [&mut y[..]], &[&x[..2]], &out, &[], false).unwrap_err();
    assert_eq!(err.kernel, "gemv_nn_panels");
    assert!(gemv::gemv_nn_panels(&mut [&mut y[..]], &[&x[..]], &out[1..], &[], false).is_err());
    assert!(gemv::gemv_nn_panels(&mut [&mut y[..]], &[&x[..]], &out, &[1.0], false).is_err());
    gemv::gemv_nn_panels(&mut [&mut y[..]], &[&x[..]], &out, &[], false).unwrap();
}
