mod common;

use cllm_kernels::gelu::{self, oracle};
use common::*;
use rand::rngs::StdRng;

/// Pre-activations in [-8, 8), wider than GPT-2's, so both tails of GELU are exercised.
fn preact(rng: &mut StdRng, n: usize, off: usize) -> Vec<f32> {
    let mut v = unaligned(rng, n, off);
    for x in &mut v[off..] {
        *x *= 8.0;
    }
    v
}

/// Inputs where the formula could break: zero, signed zero, tails, huge values, tiny values, and
/// both sides of |x| ~ 10.5, where the exponent z = -2u log2(e) reaches exp2's clamp at 126/127.
const EDGES: &[f32] = &[
    0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 3.0, -3.0, 9.5, -9.5, 10.4, -10.4, 10.6, -10.6, 20.0,
    -20.0, 1e4, -1e4,
];

// Tolerance (forward and backward): the kernel forms z = -2u log2(e) = x (Z1 + Z3 x^2) (three
// roundings, plus those of the two constants: relative error of z within ~4 eps), then
// e = 2^z to 2.2e-7 (math::exp2; its reduction z - round(z) is exact), then 1 + e, one division
// and, backward, four products. exp2 turns the absolute error ~4|z| eps of z into a relative error
// ~4 ln2 |z| eps of e, and 1/(1 + e) inherits it scaled by e/(1 + e) <= 1: relative error
// <= (3 |z| + 6) eps, within 2e-6 (~17 eps) while |z| <= 3.5, i.e. x >= -1.4; further left it grows
// with |z| (1e-5 at x = -9, as in any f32 GELU), but |gelu(x)| < 0.12 there and shrinks like
// 2^z, so the absolute error stays below 1e-7. Hence rtol 2e-6 with atol 1e-7; the f64 oracle is
// exact to f32. Measured (AVX2, scalar and portable alike) over [-20, 20] in steps of 1e-4: worst
// relative error 5.2e-7 (4.3 eps) forward and 6.5e-7 backward for x >= -2.5, 72 eps at x ~ -9.1
// (absolute < 1e-12); worst absolute 5.2e-7 = 1.1 ulp of gelu(4.67); at most 45 % of the
// tolerance anywhere (backward, near gelu'(x) = 0 at x ~ -0.75, where atol is all of it).
const RTOL: f32 = 2e-6;
const ATOL: f32 = 1e-7;

#[test]
fn gelu_fwd_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(31);
    for &n in SIZES {
        for &off in OFFSETS {
            let inp = preact(&mut rng, n, off);
            let mut got = vec![f32::NAN; n + 2];
            let mut want = vec![0.0; n];
            gelu::gelu_fwd(&mut got[2..], &inp[off..], n).unwrap();
            oracle::gelu_fwd(&mut want, &inp[off..]);
            assert_close(
                &format!("gelu_fwd n={n} off={off}"),
                &got[2..],
                &want,
                ATOL,
                RTOL,
            );
        }
    }
}

/// Outputs past [`gelu::stream_threshold`] take streaming stores after a plain head up to the
/// first cache line of `out`: heads from none to a whole line (`out` 0 to 16 floats past a line),
/// with a tail that is not a whole step. The values are the oracle's, within the tolerance, and
/// bit for bit those of the plain stores (the same input in pieces below the threshold).
#[test]
#[cfg_attr(miri, ignore = "half a million elements per call")]
fn gelu_fwd_streams_past_the_threshold_with_the_plain_path_s_bits() {
    let mut rng = rng(37);
    let n = gelu::stream_threshold() + 37;
    let inp = preact(&mut rng, n, 1);
    let mut want = vec![0.0; n];
    oracle::gelu_fwd(&mut want, &inp[1..]);
    let mut plain = vec![0.0; n];
    let piece = 4099; // below any threshold, and not a whole number of steps
    for (o, x) in plain.chunks_mut(piece).zip(inp[1..].chunks(piece)) {
        gelu::gelu_fwd(o, x, o.len()).unwrap();
    }
    let mut got = vec![f32::NAN; n + 32];
    // Offsets from the first cache line in `got` (an f32 pointer always reaches one).
    let line = got.as_ptr().align_offset(64);
    assert!(line < 16);
    for head in [0, 1, 3, 8, 15, 16] {
        got.fill(f32::NAN);
        let start = line + head;
        gelu::gelu_fwd(&mut got[start..start + n], &inp[1..], n).unwrap();
        let what = format!("gelu_fwd streaming n={n} start={start}");
        assert_close(&what, &got[start..start + n], &want, ATOL, RTOL);
        let differ = (0..n).find(|&i| got[start + i].to_bits() != plain[i].to_bits());
        assert_eq!(
            differ, None,
            "{what}: first element unlike the plain path's"
        );
    }
}

#[test]
fn gelu_bwd_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(32);
    for &n in SIZES {
        for &off in OFFSETS {
            let inp = preact(&mut rng, n, off);
            let dout = unaligned(&mut rng, n, off + 1);
            let dinp0 = unaligned(&mut rng, n, off + 2);
            let mut got = dinp0.clone();
            let mut want = dinp0[off + 2..].to_vec();
            gelu::gelu_bwd(&mut got[off + 2..], &inp[off..], &dout[off + 1..], n).unwrap();
            oracle::gelu_bwd(&mut want, &inp[off..], &dout[off + 1..]);
            // gelu' is at most ~1.13 and |dout| < 1: the accumulate adds one rounding of a value
            // below ~2.2 on top of the forward-like error.
            assert_close(
                &format!("gelu_bwd n={n} off={off}"),
                &got[off + 2..],
                &want,
                ATOL + 2.2 * f32::EPSILON,
                RTOL,
            );
        }
    }
}

/// In place, the result is `gelu_bwd`'s into a zeroed buffer bit for bit (and so as close to
/// the oracle), on every size's tails and offsets.
#[test]
fn gelu_bwd_inplace_equals_gelu_bwd_into_zeros() {
    let mut rng = rng(33);
    for &n in SIZES {
        for &off in OFFSETS {
            let inp = preact(&mut rng, n, off);
            let dout = unaligned(&mut rng, n, off + 1);
            let mut want = vec![0.0; n];
            gelu::gelu_bwd(&mut want, &inp[off..], &dout[off + 1..], n).unwrap();
            let mut got = dout.clone();
            gelu::gelu_bwd_inplace(&mut got[off + 1..], &inp[off..], n).unwrap();
            assert_eq!(
                got[off + 1..]
                    .iter()
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>(),
                want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "n={n} off={off}"
            );
        }
    }
    let err = gelu::gelu_bwd_inplace(&mut [0.0; 4], &[0.0; 3], 4).unwrap_err();
    assert_eq!(err.kernel, "gelu_bwd_inplace");
}

#[test]
fn gelu_is_accurate_at_the_edges() {
    let n = EDGES.len();
    let mut got = vec![0.0; n];
    let mut want = vec![0.0; n];
    gelu::gelu_fwd(&mut got, EDGES, n).unwrap();
    oracle::gelu_fwd(&mut want, EDGES);
    assert_close("gelu_fwd edges", &got, &want, ATOL, RTOL);
    let dout = vec![1.0; n];
    let mut got = vec![0.0; n];
    let mut want = vec![0.0; n];
    gelu::gelu_bwd(&mut got, EDGES, &dout, n).unwrap();
    oracle::gelu_bwd(&mut want, EDGES, &dout);
    assert_close("gelu_bwd edges", &got, &want, ATOL, RTOL);
}

#[test]
fn gelu_kernels_reject_short_slices() {
    let err = gelu::gelu_fwd(&mut [0.0; 4], &[0.0; 3], 4).unwrap_err();
    assert_eq!(err.kernel, "gelu_fwd");
    assert!(
        err.to_string().contains("`inp` has 3 elements but N = 4"),
        "{err}"
    );
    let err = gelu::gelu_bwd(&mut [0.0; 4], &[0.0; 4], &[0.0; 2], 4).unwrap_err();
    assert_eq!(err.kernel, "gelu_bwd");
    assert!(err.to_string().contains("`dout` has 2 elements"), "{err}");
}
