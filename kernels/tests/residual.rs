mod common;

use cllm_kernels::residual::{self, oracle};
use common::*;

#[test]
fn residual_fwd_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(1);
    for &n in SIZES {
        for &off in OFFSETS {
            let a = unaligned(&mut rng, n, off);
            let b = unaligned(&mut rng, n, off + 1);
            let mut got = vec![0.0; n];
            let mut want = vec![0.0; n];
            residual::residual_fwd(&mut got, &a[off..], &b[off + 1..], n).unwrap();
            oracle::residual_fwd(&mut want, &a[off..], &b[off + 1..]);
            // One f32 addition each: exact on every path.
            assert_close(
                &format!("residual_fwd n={n} off={off}"),
                &got,
                &want,
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn residual_fwd_rejects_short_slices() {
    let err = residual::residual_fwd(&mut [0.0; 3], &[0.0; 4], &[0.0; 4], 4).unwrap_err();
    assert_eq!(err.kernel, "residual_fwd");
    assert!(err.to_string().contains("`out` has 3 elements"), "{err}");
}
