mod common;

use cllm_kernels::layernorm::{self, oracle, GPT2_EPS};
use common::*;
use rand::rngs::StdRng;

#[cfg(not(miri))]
const ROWS: &[usize] = &[0, 1, 2, 5, 9];
/// Under Miri (`scripts/ub_check.sh`, about a thousand times slower): no rows, one, and five.
#[cfg(miri)]
const ROWS: &[usize] = &[0, 1, 5];
/// Channel counts: every SIZES entry and GPT-2 small's 768.
fn channels() -> impl Iterator<Item = usize> {
    // Not 768 under Miri (`scripts/ub_check.sh`), which interprets about a thousand times slower.
    SIZES
        .iter()
        .copied()
        .chain(full_or_miri(&[768], &[]).iter().copied())
}

/// Rows with a mean far from zero (3.0) and spread 2.0, as residual streams have: a one-pass
/// variance would cancel here, the two-pass one does not.
fn activations(rng: &mut StdRng, n: usize, off: usize) -> Vec<f32> {
    let mut v = unaligned(rng, n, off);
    for x in &mut v[off..] {
        *x = 3.0 + 2.0 * *x;
    }
    v
}

#[test]
fn layernorm_fwd_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(21);
    for &n in ROWS {
        for c in channels() {
            for &off in OFFSETS {
                let inp = activations(&mut rng, n * c, off);
                let w = unaligned(&mut rng, c, off + 1);
                let b = unaligned(&mut rng, c, off + 2);
                let (mut out, mut mean, mut rstd) =
                    (vec![0.0; n * c + off], vec![0.0; n], vec![0.0; n]);
                let (mut out_o, mut mean_o, mut rstd_o) =
                    (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
                layernorm::layernorm_fwd(
                    &mut out[off..],
                    &mut mean,
                    &mut rstd,
                    &inp[off..],
                    &w[off + 1..],
                    &b[off + 2..],
                    n,
                    c,
                    GPT2_EPS,
                )
                .unwrap();
                oracle::layernorm_fwd(
                    &mut out_o,
                    &mut mean_o,
                    &mut rstd_o,
                    &inp[off..],
                    &w[off + 1..],
                    &b[off + 2..],
                    GPT2_EPS,
                );
                let what = format!("layernorm_fwd n={n} c={c} off={off}");
                // Row sums of up to 768 terms of size <= 5 are taken in f32 with LANES partial
                // sums (four vectors of them for the variance): at most c + 4 roundings (the
                // 1-lane path) of a partial sum <= 5c, so the mean is off by at most
                // (c + 4) * 5 * eps/2 (worst case; the observed error is ~100x smaller). The
                // variance is two-pass, so its relative error has the same (c + 4) eps/2 bound,
                // and the normalized values (|norm| <= ~2) and outputs (|w|, |b| <= 1) inherit
                // both.
                let tol = (c as f32 + 4.0) * f32::EPSILON / 2.0;
                assert_close(&format!("{what} mean"), &mean, &mean_o, 5.0 * tol, 0.0);
                assert_close(&format!("{what} rstd"), &rstd, &rstd_o, 0.0, 2.0 * tol);
                assert_close(
                    &format!("{what} out"),
                    &out[off..],
                    &out_o,
                    6.0 * tol,
                    2.0 * tol,
                );
            }
        }
    }
}

#[test]
fn layernorm_bwd_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(22);
    for &n in ROWS {
        for c in channels() {
            for &off in OFFSETS {
                let inp = activations(&mut rng, n * c, off);
                let w = unaligned(&mut rng, c, off + 1);
                let b = random_vec(&mut rng, c);
                let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
                oracle::layernorm_fwd(
                    &mut out,
                    &mut mean,
                    &mut rstd,
                    &inp[off..],
                    &w[off + 1..],
                    &b,
                    GPT2_EPS,
                );
                let dout = unaligned(&mut rng, n * c, off + 2);
                let dinp0 = unaligned(&mut rng, n * c, off + 3);
                let dw0 = random_vec(&mut rng, c);
                let db0 = random_vec(&mut rng, c);
                let (mut dinp, mut dw, mut db) = (dinp0.clone(), dw0.clone(), db0.clone());
                let (mut dinp_o, mut dw_o, mut db_o) = (dinp0[off + 3..].to_vec(), dw0, db0);
                layernorm::layernorm_bwd(
                    &mut dinp[off + 3..],
                    &mut dw,
                    &mut db,
                    &dout[off + 2..],
                    &inp[off..],
                    &w[off + 1..],
                    &mean,
                    &rstd,
                    n,
                    c,
                )
                .unwrap();
                oracle::layernorm_bwd(
                    &mut dinp_o,
                    &mut dw_o,
                    &mut db_o,
                    &dout[off + 2..],
                    &inp[off..],
                    &w[off + 1..],
                    &mean,
                    &rstd,
                );
                let what = format!("layernorm_bwd n={n} c={c} off={off}");
                // dinp: each row needs two sums of c terms |g| <= 1, |g*norm| <= ~2 taken with
                // one vector of LANES partial sums in f32: at most c/LANES + 4 <= c + 4 roundings
                // (the 1-lane path) of sums <= 2c, so the two means are off by (c + 4) * 2 * eps/2
                // each; dinp adds a few f32 roundings of terms <= ~3 * rstd (rstd ~ 0.9 here).
                let tol = (c as f32 + 4.0) * f32::EPSILON / 2.0;
                assert_close(
                    &format!("{what} dinp"),
                    &dinp[off + 3..],
                    &dinp_o,
                    8.0 * tol,
                    4.0 * f32::EPSILON,
                );
                // dweight, dbias: sums over n rows of terms <= ~2, accumulated in f32 row by row:
                // n + 1 roundings of partial sums <= 2n + 1.
                let tol = (n as f32 + 1.0) * (2.0 * n as f32 + 1.0) * f32::EPSILON / 2.0;
                assert_close(&format!("{what} dweight"), &dw, &dw_o, tol, f32::EPSILON);
                assert_close(&format!("{what} dbias"), &db, &db_o, tol, f32::EPSILON);
            }
        }
    }
}

#[test]
fn layernorm_normalizes_constant_rows_to_the_bias() {
    // A constant row has variance 0: out = bias exactly, rstd = 1/sqrt(eps).
    let c = 65;
    let inp = vec![7.25f32; 2 * c];
    let w = vec![3.0f32; c];
    let b: Vec<f32> = (0..c).map(|j| j as f32).collect();
    let (mut out, mut mean, mut rstd) = (vec![0.0; 2 * c], vec![0.0; 2], vec![0.0; 2]);
    layernorm::layernorm_fwd(&mut out, &mut mean, &mut rstd, &inp, &w, &b, 2, c, GPT2_EPS).unwrap();
    assert_close("constant row out", &out[..c], &b, 0.0, 0.0);
    assert_close("constant row mean", &mean, &[7.25, 7.25], 0.0, 0.0);
    assert_close(
        "constant row rstd",
        &rstd,
        &[1.0 / GPT2_EPS.sqrt(); 2],
        0.0,
        1e-6,
    );
}

#[test]
fn layernorm_kernels_reject_short_slices() {
    let mut big = vec![0.0; 64];
    let err = layernorm::layernorm_fwd(
        &mut [0.0; 6],
        &mut [0.0; 1],
        &mut [0.0; 2],
        &big.clone(),
        &[0.0; 3],
        &[0.0; 3],
        2,
        3,
        GPT2_EPS,
    )
    .unwrap_err();
    assert_eq!(err.kernel, "layernorm_fwd");
    assert!(
        err.to_string().contains("`mean` has 1 elements but N = 2"),
        "{err}"
    );
    let err = layernorm::layernorm_bwd(
        &mut big,
        &mut [0.0; 3],
        &mut [0.0; 3],
        &[0.0; 6],
        &[0.0; 5],
        &[0.0; 3],
        &[0.0; 2],
        &[0.0; 2],
        2,
        3,
    )
    .unwrap_err();
    assert_eq!(err.kernel, "layernorm_bwd");
    assert!(
        err.to_string().contains("`inp` has 5 elements but N*C = 6"),
        "{err}"
    );
}
