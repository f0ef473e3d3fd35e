//! Shared helpers for the kernel tests: seeded random data, odd sizes, and tolerance checks.
//!
//! The tests run once per kernel path: `.ci/run` sets `CLLM_ISA` to each path this CPU has, and
//! every test compares the dispatched kernel with its oracle.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sizes that hit empty, single, sub-vector, just-below and just-above vector and tile multiples.
#[cfg(not(miri))]
pub const SIZES: &[usize] = &[
    0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 200,
];
/// Under Miri (`scripts/ub_check.sh`), which interprets about a thousand times slower: empty,
/// all tail, one AVX-512 vector, and the largest and smallest tails after whole vectors of 8 and
/// 16 lanes.
#[cfg(miri)]
pub const SIZES: &[usize] = &[0, 1, 7, 16, 31, 33];

/// Offsets of a buffer into its allocation: aligned, and unaligned by one and three floats.
#[cfg(not(miri))]
pub const OFFSETS: &[usize] = &[0, 1, 3];
/// Under Miri: aligned, and unaligned by three floats.
#[cfg(miri)]
pub const OFFSETS: &[usize] = &[0, 3];

/// `full` in normal builds; under Miri the shorter `miri`, chosen to keep the tails `full` takes.
pub fn full_or_miri<T>(full: &'static [T], miri: &'static [T]) -> &'static [T] {
    if cfg!(miri) {
        miri
    } else {
        full
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` uniform floats in [-1, 1).
pub fn random_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// A buffer of `n + offset` floats whose first `offset` are poison: `&buf[offset..]` is unaligned
/// (for odd offsets) relative to the allocation, as real sub-slices of arenas are.
pub fn unaligned(rng: &mut StdRng, n: usize, offset: usize) -> Vec<f32> {
    let mut v = vec![f32::NAN; offset];
    v.extend(random_vec(rng, n));
    v
}

/// Relative L2 error ||got - want|| / max(||want||, tiny), in f64.
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    num.sqrt() / den.sqrt().max(1e-30)
}

/// Fail with the kernel, the case and the worst element when the max abs error exceeds `atol + rtol*|want|`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        assert!(
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan()),
            "{what} [isa {}]: element {i}: got {g}, want {w} (tolerance {tol})",
            cllm_kernels::isa::active()
        );
    }
}
