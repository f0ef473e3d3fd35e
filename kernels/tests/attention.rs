mod common;

use cllm_kernels::attention::{self, attention_scratch_len, oracle};
use common::*;

/// (B, T, NH, HS) cases: every combination of B ∈ {1, 2}, T ∈ {1, 7, 63, 65, 130}, NH ∈ {1, 3},
/// HS ∈ {1, 7, 8, 12, 16, 24, 64, 65, 115}. T = 63, 65 straddle every key block (2, 16, 32) and
/// the row tile (6); T = 130 takes the forward through two full 64-key chunks and a partial third;
/// HS = 1, 7 are all tail, 8 one vector (the single-vector paths), 12 and 24 whole 8-wide
/// transpose blocks plus leftover dimensions, 16 one AVX2 chunk, 64 the GPT-2 head (one
/// four-vector chunk on AVX-512), 65 one past, 115 = 64 + 32 + 16 + 3 every chunk width of
/// AVX-512 and a scalar tail.
fn cases() -> Vec<(usize, usize, usize, usize)> {
    if cfg!(miri) {
        // Under Miri (`scripts/ub_check.sh`, about a thousand times slower): batches and heads,
        // all-tail head sizes, an 8-wide transpose block with leftovers, a ragged row tile and
        // key block, one key past a 64-key chunk (with a head of 3 to keep it short), and a
        // head with a four-vector chunk of AVX-512 and a tail.
        return vec![
            (2, 7, 3, 7),
            (1, 9, 2, 12),
            (1, 17, 1, 8),
            (1, 65, 1, 3),
            (1, 7, 1, 67),
        ];
    }
    let mut v = Vec::new();
    for b in [1, 2] {
        for t in [1, 7, 63, 65, 130] {
            for nh in [1, 3] {
                for hs in [1, 7, 8, 12, 16, 24, 64, 65, 115] {
                    v.push((b, t, nh, hs));
                }
            }
        }
    }
    v
}

fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn to32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// Inputs with scores of a realistic spread: q, k uniform in [-2, 2) so that q·k/√HS has a
/// standard deviation near 1.3 whatever HS, v and dout in [-1, 1).
fn inputs(
    rng: &mut rand::rngs::StdRng,
    b: usize,
    t: usize,
    c: usize,
    off: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut qkv = unaligned(rng, b * t * 3 * c, off);
    for (i, x) in qkv[off..].iter_mut().enumerate() {
        if i % (3 * c) < 2 * c {
            *x *= 2.0;
        }
    }
    let dout = unaligned(rng, b * t * c, off + 1);
    (qkv, dout)
}

#[test]
fn attention_fwd_matches_oracle() {
    let mut rng = rng(11);
    for (b, t, nh, hs) in cases() {
        let c = nh * hs;
        let off = (b + t + hs) % 4;
        let (qkv, _) = inputs(&mut rng, b, t, c, off);
        let mut out = vec![f32::NAN; b * t * c + 3];
        let mut lse = vec![f32::NAN; b * nh * t + 1];
        let mut scratch = vec![f32::NAN; attention_scratch_len(t, hs)];
        attention::attention_fwd(
            &mut out[3..],
            &mut lse[1..],
            &qkv[off..],
            &mut scratch,
            b,
            t,
            c,
            nh,
        )
        .unwrap();
        let mut want = vec![0.0; b * t * c];
        let mut want_lse = vec![0.0; b * nh * t];
        oracle::attention_fwd(&mut want, &mut want_lse, &to64(&qkv[off..]), b, t, c, nh);
        let what = format!("attention_fwd B={b} T={t} NH={nh} HS={hs}");
        // out is a convex combination of v (|v| < 1): the f32 score error (HS products of size
        // <= 4) moves each probability by ~1e-6 relatively, exp adds 2 ulp, and the weighted sum
        // over T <= 65 keys adds ~T·6e-8. Worst seen over all cases and paths: 7e-7 on out,
        // 1.5e-6 on lse (|lse| up to ~20, so a few ulp); the bounds leave 4x over that.
        assert_close(&what, &out[3..], &to32(&want), 3e-6, 0.0);
        assert_close(
            &format!("{what} lse"),
            &lse[1..],
            &to32(&want_lse),
            6e-6,
            0.0,
        );
    }
}

#[test]
fn attention_bwd_matches_oracle() {
    let mut rng = rng(12);
    for (b, t, nh, hs) in cases() {
        let c = nh * hs;
        let off = (b + 2 * t + hs) % 4;
        let (qkv, dout) = inputs(&mut rng, b, t, c, off);
        let mut out = vec![0.0; b * t * c];
        let mut lse = vec![0.0; b * nh * t];
        let mut scratch = vec![f32::NAN; attention_scratch_len(t, hs) + 5];
        attention::attention_fwd(&mut out, &mut lse, &qkv[off..], &mut scratch, b, t, c, nh)
            .unwrap();
        let mut bwd = |dqkv: &mut [f32], accumulate: bool| {
            attention::attention_bwd(
                dqkv,
                &dout[off + 1..],
                &qkv[off..],
                &out,
                &lse,
                &mut scratch[5..],
                b,
                t,
                c,
                nh,
                accumulate,
            )
            .unwrap()
        };
        // Both modes: accumulating onto a nonzero gradient (which must be added to), and
        // writing over a buffer of NaNs (every element must be written).
        let prior = random_vec(&mut rng, b * t * 3 * c);
        let mut written = Vec::new();
        for accumulate in [true, false] {
            let mut dqkv = vec![f32::NAN; 1];
            if accumulate {
                dqkv.extend_from_slice(&prior);
            } else {
                dqkv.resize(1 + prior.len(), f32::NAN);
            }
            bwd(&mut dqkv[1..], accumulate);
            let mut want = if accumulate {
                to64(&prior)
            } else {
                vec![0.0; prior.len()]
            };
            oracle::attention_bwd(
                &mut want,
                &to64(&dout[off + 1..]),
                &to64(&qkv[off..]),
                b,
                t,
                c,
                nh,
            );
            let what = format!("attention_bwd B={b} T={t} NH={nh} HS={hs} accumulate={accumulate}");
            // Each gradient entry sums up to T·HS products of f32 quantities of size ~1 on top
            // of the recomputed probabilities (relative error ~1e-6, see the forward). Worst
            // seen over all cases and paths: relative L2 1.7e-7, |err| / (1 + |want|) 6.3e-7.
            // The bounds leave ~5x; a masking or tail bug is an O(1) error.
            let err = rel_l2(&dqkv[1..], &to32(&want));
            assert!(err < 1e-6, "{what}: relative L2 error {err}");
            assert_close(&what, &dqkv[1..], &to32(&want), 3e-6, 3e-6);
            if !accumulate {
                written = dqkv.split_off(1);
            }
        }
        // Adding onto zeros gives what writing gives, exactly: a sum that reads back what the
        // kernel itself stored (the dV / dK sums by blocks of rows) must read it, not the caller's
        // buffer, in either mode.
        let mut onto_zeros = vec![0.0; prior.len()];
        bwd(&mut onto_zeros, true);
        assert!(
            onto_zeros == written,
            "attention_bwd B={b} T={t} NH={nh} HS={hs}: adding onto zeros differs from writing"
        );
    }
}

/// Loss L = Σ w·out for fixed random weights w; checks the oracle's backward (which the kernel is
/// compared with) against central differences of the oracle's forward, all in f64.
#[test]
fn oracle_bwd_matches_finite_differences() {
    let mut rng = rng(13);
    let (b, t, nh, hs) = (2, 5, 2, 3);
    let c = nh * hs;
    let qkv: Vec<f64> = to64(&random_vec(&mut rng, b * t * 3 * c))
        .iter()
        .map(|x| 2.0 * x)
        .collect();
    let w = to64(&random_vec(&mut rng, b * t * c));
    let loss = |qkv: &[f64]| {
        let mut out = vec![0.0; b * t * c];
        let mut lse = vec![0.0; b * nh * t];
        oracle::attention_fwd(&mut out, &mut lse, qkv, b, t, c, nh);
        out.iter().zip(&w).map(|(o, w)| o * w).sum::<f64>()
    };
    let mut grad = vec![0.0; qkv.len()];
    oracle::attention_bwd(&mut grad, &w, &qkv, b, t, c, nh);
    let h = 1e-5;
    for i in 0..qkv.len() {
        let mut p = qkv.clone();
        p[i] += h;
        let up = loss(&p);
        p[i] -= 2.0 * h;
        let down = loss(&p);
        let fd = (up - down) / (2.0 * h);
        // Central differences in f64: truncation ~h²·|f'''| ~ 1e-10, rounding ~1e-16/h ~ 1e-11.
        assert!(
            (fd - grad[i]).abs() < 1e-8,
            "qkv[{i}]: finite difference {fd}, oracle {}",
            grad[i]
        );
    }
}

#[test]
fn attention_handles_empty_shapes() {
    let mut scratch = vec![0.0; attention_scratch_len(0, 4)];
    attention::attention_fwd(&mut [], &mut [], &[], &mut scratch, 2, 0, 8, 2).unwrap();
    attention::attention_bwd(&mut [], &[], &[], &[], &[], &mut scratch, 0, 0, 8, 2, false).unwrap();
}

/// A batch of rows with no tokens: nothing to do. The kernels once offset their head pointers
/// into the empty slices anyway, out of bounds (undefined behaviour that Miri reports, though
/// nothing was read or written).
#[test]
fn attention_with_no_tokens_offsets_no_pointers() {
    let mut scratch = vec![0.0; attention_scratch_len(0, 4)];
    attention::attention_fwd(&mut [], &mut [], &[], &mut scratch, 2, 0, 8, 2).unwrap();
    attention::attention_bwd(&mut [], &[], &[], &[], &[], &mut scratch, 2, 0, 8, 2, false).unwrap();
}

#[test]
fn attention_rejects_bad_shapes() {
    let (b, t, c, nh) = (1, 4, 6, 2);
    let qkv = vec![0.0; b * t * 3 * c];
    let mut out = vec![0.0; b * t * c];
    let mut lse = vec![0.0; b * nh * t];
    let mut scratch = vec![0.0; attention_scratch_len(t, c / nh)];

    let err =
        attention::attention_fwd(&mut out, &mut lse, &qkv, &mut scratch, b, t, c, 4).unwrap_err();
    assert_eq!(err.kernel, "attention_fwd");
    assert!(err.to_string().contains("C = 6"), "{err}");

    let err = attention::attention_fwd(&mut out, &mut lse, &qkv[1..], &mut scratch, b, t, c, nh)
        .unwrap_err();
    assert!(err.to_string().contains("`qkv` has 71 elements"), "{err}");

    let mut small = vec![0.0; 3];
    let err =
        attention::attention_fwd(&mut out, &mut lse, &qkv, &mut small, b, t, c, nh).unwrap_err();
    assert!(
        err.to_string().contains("`scratch` has 3 elements"),
        "{err}"
    );

    let mut dqkv = vec![0.0; b * t * 3 * c];
    let err = attention::attention_bwd(
        &mut dqkv,
        &out,
        &qkv,
        &out,
        &lse[1..],
        &mut scratch,
        b,
        t,
        c,
        nh,
        false,
    )
    .unwrap_err();
    assert_eq!(err.kernel, "attention_bwd");
    assert!(err.to_string().contains("`lse` has 7 elements"), "{err}");
}
