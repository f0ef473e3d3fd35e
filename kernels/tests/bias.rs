mod common;

use cllm_kernels::bias::{self, oracle};
use common::*;

/// Row counts around the kernel's block of four rows.
#[cfg(not(miri))]
const ROWS: &[usize] = &[0, 1, 2, 3, 4, 5, 7, 8, 9, 33, 65];
/// Under Miri (`scripts/ub_check.sh`, about a thousand times slower): no rows, one, and past a
/// group of four and of eight.
#[cfg(miri)]
const ROWS: &[usize] = &[0, 1, 5, 9];

#[test]
fn bias_fwd_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(11);
    for &n in ROWS {
        for &c in SIZES {
            for &off in OFFSETS {
                let bias = unaligned(&mut rng, c, off);
                let out0 = unaligned(&mut rng, n * c, off + 2);
                let mut got = out0.clone();
                let mut want = out0[off + 2..].to_vec();
                bias::bias_fwd(&mut got[off + 2..], &bias[off..], n, c).unwrap();
                oracle::bias_fwd(&mut want, &bias[off..]);
                // One f32 addition per element: exact on every path.
                assert_close(
                    &format!("bias_fwd n={n} c={c} off={off}"),
                    &got[off + 2..],
                    &want,
                    0.0,
                    0.0,
                );
            }
        }
    }
}

#[test]
fn bias_bwd_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(12);
    for &n in ROWS {
        for &c in SIZES {
            for &off in OFFSETS {
                let dout = unaligned(&mut rng, n * c, off);
                let db0 = unaligned(&mut rng, c, off + 1);
                let mut got = db0.clone();
                let mut want = db0[off + 1..].to_vec();
                bias::bias_bwd(&mut got[off + 1..], &dout[off..], n, c).unwrap();
                oracle::bias_bwd(&mut want, &dout[off..]);
                // The kernel sums each block of four rows with 3 f32 roundings and adds the n/4
                // block sums (plus up to 3 tail rows) to dbias one by one: at most n/4 + 6
                // roundings, each within eps/2 of a partial sum bounded by Σ|terms| <= n + 1
                // (inputs in [-1, 1)), against the f64 oracle.
                let atol = (n as f32 / 4.0 + 6.0) * (n as f32 + 1.0) * f32::EPSILON / 2.0;
                assert_close(
                    &format!("bias_bwd n={n} c={c} off={off}"),
                    &got[off + 1..],
                    &want,
                    atol,
                    f32::EPSILON,
                );
            }
        }
    }
}

#[test]
fn bias_bwd_accumulates_into_dbias() {
    // Two calls on two halves equal one call on all rows, up to rounding; zero rows change nothing.
    let mut rng = rng(13);
    let (n, c) = (9, 65);
    let dout = random_vec(&mut rng, n * c);
    let mut once = vec![0.5; c];
    bias::bias_bwd(&mut once, &dout, n, c).unwrap();
    let mut twice = vec![0.5; c];
    bias::bias_bwd(&mut twice, &dout[..4 * c], 4, c).unwrap();
    bias::bias_bwd(&mut twice, &dout[4 * c..], n - 4, c).unwrap();
    assert_close("bias_bwd halves", &twice, &once, 1e-5, 0.0);
    bias::bias_bwd(&mut twice, &[], 0, c).unwrap();
    assert_close("bias_bwd zero rows", &twice, &once, 1e-5, 0.0);
}

#[test]
fn bias_kernels_reject_short_slices() {
    let err = bias::bias_fwd(&mut [0.0; 5], &[0.0; 3], 2, 3).unwrap_err();
    assert_eq!(err.kernel, "bias_fwd");
    assert!(
        err.to_string().contains("`out` has 5 elements but N*C = 6"),
        "{err}"
    );
    let err = bias::bias_bwd(&mut [0.0; 2], &[0.0; 6], 2, 3).unwrap_err();
    assert_eq!(err.kernel, "bias_bwd");
    assert!(
        err.to_string().contains("`dbias` has 2 elements but C = 3"),
        "{err}"
    );
}
