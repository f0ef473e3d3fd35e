mod common;

use cllm_kernels::kv_attention::{self, oracle, OUT_VECS};
use common::*;

/// Head sizes below, at and past one vector, one OUT_VECS chunk and half of one of every path
/// (64 is GPT-2's; 24·OUT_VECS + 5 takes all three widths on AVX-512).
const HEAD_SIZES: [usize; 11] = [
    1,
    3,
    7,
    8,
    17,
    63,
    64,
    65,
    8 * OUT_VECS + 3,
    16 * OUT_VECS + 1,
    24 * OUT_VECS + 5,
];

#[test]
fn attend_cached_matches_oracle_on_odd_sizes() {
    let mut rng = rng(11);
    // Cache lengths around the four-key groups and the vector width. Every buffer starts at an
    // odd offset into its allocation.
    // Under Miri (`scripts/ub_check.sh`, about a thousand times slower): every other head size,
    // and cache lengths of no key, a ragged four-key group and one past two AVX-512 vectors.
    let head_sizes = full_or_miri(&HEAD_SIZES, &[1, 7, 17, 64, 8 * OUT_VECS + 3]);
    let lengths = full_or_miri(&[0, 1, 2, 3, 4, 5, 7, 9, 16, 33, 63, 65, 300], &[0, 5, 33]);
    for &hs in head_sizes {
        for &t in lengths {
            let q = unaligned(&mut rng, hs, 1);
            // Scores spread over several units, as trained heads' are.
            let mut keys = unaligned(&mut rng, t * hs, 5);
            keys[5..].iter_mut().for_each(|x| *x *= 3.0);
            let values = unaligned(&mut rng, t * hs, 3);
            let scale = 1.0 / (hs as f32).sqrt();
            let (mut got, mut want) = (vec![f32::NAN; hs + 1], vec![0.0; hs]);
            let mut scores = vec![f32::NAN; t + 1];
            let (q, keys, values) = (&q[1..], &keys[5..], &values[3..]);
            kv_attention::attend_cached(&mut got[1..], q, keys, values, scale, &mut scores[1..])
                .unwrap();
            oracle::attend_cached(&mut want, q, keys, values, scale, t);
            // A convex combination of values in [-1, 1): f32 dot products of ≤ 197 terms, an
            // exp within 2 ulp and sums of ≤ 300 terms keep every output within ~1e-6 of the
            // f64 result; 1e-5 leaves a margin.
            assert_close(
                &format!("attend_cached hs={hs} t={t}"),
                &got[1..],
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn attend_cached_rejects_short_buffers() {
    let (q, kv) = (vec![0.0; 8], vec![0.0; 8 * 3]);
    let mut out = vec![0.0; 8];
    let mut scores = vec![0.0; 4];
    let err = kv_attention::attend_cached(&mut out, &q, &kv, &kv, 1.0, &mut scores).unwrap_err();
    assert_eq!(err.kernel, "attend_cached");
    assert!(
        err.to_string()
            .contains("`keys` has 24 elements but t * HS = 32"),
        "{err}"
    );
    let err = kv_attention::attend_cached(&mut out, &q[..7], &kv, &kv, 1.0, &mut scores[..3])
        .unwrap_err();
    assert!(err.to_string().contains("`q`"), "{err}");
}
