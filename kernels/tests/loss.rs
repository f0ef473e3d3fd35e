mod common;

use cllm_kernels::loss::{self, oracle};
use common::*;
use rand::Rng;

/// (N, V) cases: V straddles every vector (1, 8, 16) and stats-block (32, 64) width; 50257 is
/// GPT-2's vocabulary, one row to keep the debug-mode test fast.
#[cfg(not(miri))]
const CASES: &[(usize, usize)] = &[
    (0, 7),
    (1, 1),
    (5, 1),
    (5, 2),
    (5, 7),
    (5, 63),
    (5, 65),
    (3, 389),
    (1, 50257),
];
/// Under Miri (`scripts/ub_check.sh`, about a thousand times slower): no rows, one, and widths
/// around a vector and past a 64-wide stats block.
#[cfg(miri)]
const CASES: &[(usize, usize)] = &[(0, 7), (1, 1), (2, 7), (2, 65)];

fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn to32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

struct Case {
    n: usize,
    v: usize,
    vp: usize,
    logits: Vec<f32>,
    targets: Vec<u32>,
    dloss: Vec<f32>,
}

/// Logits in [-8, 8) with a per-row offset up to ±1000 (the max subtraction must absorb it), row
/// stride `vp`, pad columns NaN (they must never be read). Row 0 puts its largest logit on the
/// target, row 1 (if any) its smallest.
fn case(rng: &mut rand::rngs::StdRng, n: usize, v: usize, vp: usize) -> Case {
    let mut logits = vec![f32::NAN; n * vp];
    let targets: Vec<u32> = (0..n).map(|_| rng.gen_range(0..v as u32)).collect();
    for r in 0..n {
        let shift = rng.gen_range(-1000.0f32..1000.0);
        for j in 0..v {
            logits[r * vp + j] = shift + rng.gen_range(-8.0f32..8.0);
        }
        if r < 2 && v > 1 {
            logits[r * vp + targets[r] as usize] = shift + if r == 0 { 9.0 } else { -9.0 };
        }
    }
    let dloss = (0..n).map(|_| rng.gen_range(0.1f32..2.0)).collect();
    Case {
        n,
        v,
        vp,
        logits,
        targets,
        dloss,
    }
}

fn strides(v: usize) -> [usize; 2] {
    [v, v.div_ceil(64) * 64 + 64]
}

/// The losses: (m − x_t) + ln z, z the sum of V exps accumulated in f32 per lane in partial sums
/// of at most 256 terms each. Worst seen over all cases and paths: 1.9e-6 absolute on a loss of 17
/// (one f32 ulp there, 1.1e-7 relative); the bound (1e-6 + 4e-7·|loss|) leaves 4x.
const LOSS_ATOL: f32 = 1e-6;
const LOSS_RTOL: f32 = 4e-7;
/// Gradients: p·dloss with p = exp(x − m)/z, exp within 2 ulp and z as above, on entries of size up
/// to 2; the one-hot entry subtracts dloss, exact to an ulp of dloss. Worst seen: 2.1e-7 absolute.
const GRAD_ATOL: f32 = 1e-6;
const GRAD_RTOL: f32 = 1e-5;

#[test]
fn softmax_xent_fwd_matches_oracle() {
    let mut rng = rng(21);
    for &(n, v) in CASES {
        for vp in strides(v) {
            let c = case(&mut rng, n, v, vp);
            let off = (v + vp) % 4;
            let mut logits = vec![f32::NAN; off];
            logits.extend_from_slice(&c.logits);
            let mut got = vec![f32::NAN; n + 1];
            loss::softmax_xent_fwd(&mut got[1..], &logits[off..], &c.targets, n, v, vp).unwrap();
            let mut want = vec![0.0; n];
            oracle::softmax_xent_fwd(&mut want, &to64(&c.logits), &c.targets, v, vp);
            let what = format!("softmax_xent_fwd N={n} V={v} Vp={vp}");
            assert_close(&what, &got[1..], &to32(&want), LOSS_ATOL, LOSS_RTOL);
        }
    }
}

fn oracle_bwd(c: &Case) -> Vec<f32> {
    let mut want = vec![0.0; c.n * c.vp];
    oracle::softmax_xent_bwd(
        &mut want,
        &to64(&c.logits),
        &c.targets,
        &to64(&c.dloss),
        c.v,
        c.vp,
    );
    to32(&want)
}

#[test]
fn softmax_xent_bwd_matches_oracle_out_of_place_and_in_place() {
    let mut rng = rng(22);
    for &(n, v) in CASES {
        for vp in strides(v) {
            let c = case(&mut rng, n, v, vp);
            let want = oracle_bwd(&c);
            let what = format!("softmax_xent_bwd N={n} V={v} Vp={vp}");

            let mut got = vec![f32::NAN; n * vp + 3];
            loss::softmax_xent_bwd(&mut got[3..], &c.logits, &c.targets, &c.dloss, n, v, vp)
                .unwrap();
            assert_close(&what, &got[3..], &want, GRAD_ATOL, GRAD_RTOL);

            let mut inplace = vec![f32::NAN];
            inplace.extend_from_slice(&c.logits);
            loss::softmax_xent_bwd_inplace(&mut inplace[1..], &c.targets, &c.dloss, n, v, vp)
                .unwrap();
            assert_close(
                &format!("{what} in place"),
                &inplace[1..],
                &want,
                GRAD_ATOL,
                GRAD_RTOL,
            );
        }
    }
}

#[test]
fn softmax_xent_fwd_bwd_inplace_matches_oracle() {
    let mut rng = rng(23);
    for &(n, v) in CASES {
        for vp in strides(v) {
            let c = case(&mut rng, n, v, vp);
            let want_grad = oracle_bwd(&c);
            let mut want_loss = vec![0.0; n];
            oracle::softmax_xent_fwd(&mut want_loss, &to64(&c.logits), &c.targets, v, vp);
            let mut logits = vec![f32::NAN; 2];
            logits.extend_from_slice(&c.logits);
            let mut losses = vec![f32::NAN; n];
            loss::softmax_xent_fwd_bwd_inplace(
                &mut logits[2..],
                &mut losses,
                &c.targets,
                &c.dloss,
                n,
                v,
                vp,
            )
            .unwrap();
            let what = format!("softmax_xent_fwd_bwd_inplace N={n} V={v} Vp={vp}");
            assert_close(&what, &losses, &to32(&want_loss), LOSS_ATOL, LOSS_RTOL);
            assert_close(&what, &logits[2..], &want_grad, GRAD_ATOL, GRAD_RTOL);
        }
    }
}

#[test]
fn softmax_xent_rejects_a_target_out_of_range() {
    let (n, v, vp) = (3, 5, 8);
    let logits = vec![0.0; n * vp];
    let mut losses = vec![0.0; n];
    let err = loss::softmax_xent_fwd(&mut losses, &logits, &[0, 4, 5], n, v, vp).unwrap_err();
    assert_eq!(err.kernel, "softmax_xent_fwd");
    let msg = err.to_string();
    assert!(
        msg.contains("row 2") && msg.contains("target 5") && msg.contains("V = 5"),
        "{msg}"
    );

    let mut logits = logits;
    let err =
        loss::softmax_xent_bwd_inplace(&mut logits, &[9, 0, 0], &[1.0; 3], n, v, vp).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("row 0") && msg.contains("target 9"), "{msg}");
}

#[test]
fn softmax_xent_rejects_bad_shapes() {
    let logits = vec![0.0; 12];
    let mut losses = vec![0.0; 3];
    let err = loss::softmax_xent_fwd(&mut losses, &logits, &[0; 3], 3, 5, 4).unwrap_err();
    assert!(err.to_string().contains("V = 5, Vp = 4"), "{err}");
    let err = loss::softmax_xent_fwd(&mut losses, &logits, &[0; 3], 3, 4, 5).unwrap_err();
    assert!(
        err.to_string().contains("`logits` has 12 elements"),
        "{err}"
    );
    let mut d = vec![0.0; 11];
    let err = loss::softmax_xent_bwd(&mut d, &logits, &[0; 3], &[1.0; 3], 3, 4, 4).unwrap_err();
    assert!(
        err.to_string().contains("`dlogits` has 11 elements"),
        "{err}"
    );
}

#[test]
#[should_panic(expected = "target 7 is out of range for V = 4")]
fn softmax_xent_unchecked_panics_on_a_target_out_of_range() {
    let mut logits = vec![0.0; 8];
    loss::softmax_xent_bwd_inplace_unchecked(&mut logits, &[0, 7], &[1.0, 1.0], 4, 4);
}
