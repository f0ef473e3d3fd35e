mod common;

use cllm_kernels::adamw::{self, oracle, AdamWHparams};
use common::*;
use rand::rngs::StdRng;
use rand::Rng;

/// The hyperparameters of the golden reference (PyTorch AdamW, betas 0.9/0.95, wd 0.1).
const GOLDEN: AdamWHparams = AdamWHparams {
    lr: 1e-3,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weight_decay: 0.1,
    step: 1,
};

/// No weight decay, and beta1 < 0.5, which takes PyTorch's other lerp formula.
const OTHER: AdamWHparams = AdamWHparams {
    lr: 1e-2,
    beta1: 0.3,
    beta2: 0.999,
    eps: 1e-6,
    weight_decay: 0.0,
    step: 1,
};

/// Optimizer state as training leaves it: params in [-1, 1), grads in [-1, 1), m in [-0.1, 0.1),
/// v in [0, 0.01).
fn state(rng: &mut StdRng, n: usize, off: usize) -> [Vec<f32>; 4] {
    let p = unaligned(rng, n, off);
    let g = unaligned(rng, n, off + 1);
    let mut m = unaligned(rng, n, off + 2);
    m[off + 2..].iter_mut().for_each(|x| *x *= 0.1);
    let mut v = unaligned(rng, n, off + 3);
    v[off + 3..].iter_mut().for_each(|x| *x = 0.01 * *x * *x);
    [p, g, m, v]
}

// Tolerance: m is one lerp (an FMA and a subtraction) of values below 1: within 2 eps absolute
// of the f64 oracle. v = v*beta2 + ((1-beta2)*g)*g sums positive terms with 4 roundings (the
// coefficient's rounding included): 4 eps/2 relative. The update lr/bc1 * m/(sqrt(v)/bc2 + eps) is
// a chain of ~8 roundings (the scalars', sqrt, two divisions, an add, a multiply): 8 eps/2
// relative of |update| <= lr * |m̂|/sqrt(v̂) <= lr / (1 - beta1^t) * 10 here, and the decayed
// param and the final add are each within eps/2 of |p| <= 1: atol 1e-5 * lr covers the update,
// rtol 1.5 eps the param, and each further step adds the same again.
/// Compare (params, m, v) after `steps` steps.
fn check_step(what: &str, h: &AdamWHparams, got: [&[f32]; 3], want: [&[f32]; 3], steps: f32) {
    let e = f32::EPSILON;
    assert_close(
        &format!("{what} params"),
        got[0],
        want[0],
        steps * 1e-5 * h.lr as f32,
        steps * 1.5 * e,
    );
    assert_close(&format!("{what} m"), got[1], want[1], steps * 2.0 * e, 0.0);
    assert_close(&format!("{what} v"), got[2], want[2], 0.0, steps * 2.0 * e);
}

#[test]
fn adamw_step_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(51);
    for base in [GOLDEN, OTHER] {
        // Under Miri (`scripts/ub_check.sh`), one step count: the steps change values, not accesses.
        for &step in full_or_miri(&[1, 2, 10, 1000], &[2]) {
            let h = AdamWHparams { step, ..base };
            for &n in SIZES {
                for &off in OFFSETS {
                    let mut got = state(&mut rng, n, off);
                    let mut want = [
                        got[0][off..].to_vec(),
                        got[1][off + 1..].to_vec(),
                        got[2][off + 2..].to_vec(),
                        got[3][off + 3..].to_vec(),
                    ];
                    let [p, g, m, v] = &mut got;
                    adamw::adamw_step(
                        &mut p[off..],
                        &g[off + 1..],
                        &mut m[off + 2..],
                        &mut v[off + 3..],
                        n,
                        &h,
                    )
                    .unwrap();
                    let [p, g, m, v] = &mut want;
                    oracle::adamw_step(p, g, m, v, &h);
                    check_step(
                        &format!("adamw_step t={step} b1={} n={n} off={off}", h.beta1),
                        &h,
                        [&got[0][off..], &got[2][off + 2..], &got[3][off + 3..]],
                        [&want[0], &want[2], &want[3]],
                        1.0,
                    );
                }
            }
        }
    }
}

#[test]
fn adamw_trajectory_of_ten_steps_stays_with_the_oracle() {
    // Ten steps from zero moments with a fresh gradient each step, as training takes them.
    let mut rng = rng(52);
    let n = if cfg!(miri) { 33 } else { 1001 };
    let p0 = random_vec(&mut rng, n);
    let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
    let (mut po, mut mo, mut vo) = (p0, vec![0.0; n], vec![0.0; n]);
    for step in 1..=10 {
        let h = AdamWHparams { step, ..GOLDEN };
        let g = random_vec(&mut rng, n);
        adamw::adamw_step(&mut p, &g, &mut m, &mut v, n, &h).unwrap();
        oracle::adamw_step(&mut po, &g, &mut mo, &mut vo, &h);
    }
    // See check_step; the per-step errors add over the ten steps.
    check_step(
        "adamw 10 steps",
        &GOLDEN,
        [&p, &m, &v],
        [&po, &mo, &vo],
        10.0,
    );
}

#[test]
fn adamw_step_rejects_step_zero_and_short_slices() {
    let h = AdamWHparams { step: 0, ..GOLDEN };
    let err = adamw::adamw_step(
        &mut [0.0; 2],
        &[0.0; 2],
        &mut [0.0; 2],
        &mut [0.0; 2],
        2,
        &h,
    )
    .unwrap_err();
    assert_eq!(err.kernel, "adamw_step");
    assert!(err.to_string().contains("step is 0"), "{err}");
    let err = adamw::adamw_step(
        &mut [0.0; 2],
        &[0.0; 2],
        &mut [0.0; 2],
        &mut [0.0; 1],
        2,
        &GOLDEN,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`v` has 1 elements but N = 2"),
        "{err}"
    );
}

#[test]
fn scale_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(53);
    for &n in SIZES {
        for &off in OFFSETS {
            let x = unaligned(&mut rng, n, off);
            let k = rng.gen_range(0.1f32..2.0);
            let mut got = x.clone();
            let mut want = x[off..].to_vec();
            adamw::scale(&mut got[off..], k, n).unwrap();
            oracle::scale(&mut want, k);
            // One f32 multiplication per element: exact on every path.
            assert_close(
                &format!("scale n={n} off={off}"),
                &got[off..],
                &want,
                0.0,
                0.0,
            );
            assert!(
                got[..off].iter().all(|x| x.is_nan()),
                "scale wrote before its slice"
            );
        }
    }
    let err = adamw::scale(&mut [0.0; 3], 2.0, 4).unwrap_err();
    assert_eq!(err.kernel, "scale");
    assert!(
        err.to_string().contains("`x` has 3 elements but N = 4"),
        "{err}"
    );
}

#[test]
fn sumsq_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(54);
    // Under Miri (`scripts/ub_check.sh`), one size past a 1024-float block instead of five.
    let big = full_or_miri(&[1023, 1024, 1025, 3 * 1024 + 17, 10_000], &[1025]);
    let sizes = SIZES.iter().chain(big).copied();
    for n in sizes {
        for &off in OFFSETS {
            let x = unaligned(&mut rng, n, off);
            let got = adamw::sumsq(&x[off..], n).unwrap();
            let want = oracle::sumsq(&x[off..]);
            // All terms are positive, so the relative error bound of a sum holds: each of the
            // 4*LANES f32 partial sums of a 1024-float block adds at most 256 terms (the 1-lane
            // path; 32 on AVX2), then ~8 roundings combine lanes: (256 + 8) eps/2 = 1.6e-5 worst
            // case on any path. Blocks join in f64, which adds nothing at this precision. A lost or
            // doubled element would be off by > 1e-4 at these sizes.
            let tol = 264.0 * f32::EPSILON as f64 / 2.0 * want;
            assert!(
                (got - want).abs() <= tol,
                "sumsq n={n} off={off}: got {got}, want {want}"
            );
        }
    }
    let err = adamw::sumsq(&[0.0; 3], 4).unwrap_err();
    assert_eq!(err.kernel, "sumsq");
    assert!(
        err.to_string().contains("`x` has 3 elements but N = 4"),
        "{err}"
    );
}

#[test]
#[cfg_attr(miri, ignore = "a million floats are too many to interpret")]
fn sumsq_of_many_ones_is_exact() {
    // Integer partial sums below 2^24 are exact in f32 and the f64 total is exact: a sum over many
    // blocks that is off by a single element shows.
    let n = (1 << 20) + 77;
    let x = vec![1.0f32; n];
    assert_eq!(adamw::sumsq(&x, n).unwrap(), n as f64);
}
