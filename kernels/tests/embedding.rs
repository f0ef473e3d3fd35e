mod common;

use cllm_kernels::embedding::{self, oracle};
use common::*;
use rand::Rng;

/// (B, T) pairs, and the vocabulary size: small so tokens repeat within a batch.
#[cfg(not(miri))]
const BT: &[(usize, usize)] = &[(0, 3), (1, 0), (1, 1), (1, 7), (2, 4), (2, 5), (3, 17)];
/// Under Miri (`scripts/ub_check.sh`, about a thousand times slower): empty, and a few batches.
#[cfg(miri)]
const BT: &[(usize, usize)] = &[(0, 3), (1, 1), (2, 5)];
const V: usize = 11;

#[test]
fn encoder_fwd_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(41);
    for &(b, t) in BT {
        for &c in SIZES {
            for &off in OFFSETS {
                let tokens: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..V as u32)).collect();
                let wte = unaligned(&mut rng, V * c, off);
                // wpe holds more positions than T (n_positions > T).
                let wpe = unaligned(&mut rng, (t + 3) * c, off + 1);
                let mut got = vec![0.0; b * t * c + 2];
                let mut want = vec![0.0; b * t * c];
                embedding::encoder_fwd(
                    &mut got[2..],
                    &tokens,
                    &wte[off..],
                    &wpe[off + 1..],
                    b,
                    t,
                    c,
                    V,
                )
                .unwrap();
                oracle::encoder_fwd(&mut want, &tokens, &wte[off..], &wpe[off + 1..], t, c);
                // One f32 addition per element: exact on every path.
                assert_close(
                    &format!("encoder_fwd b={b} t={t} c={c} off={off}"),
                    &got[2..],
                    &want,
                    0.0,
                    0.0,
                );
            }
        }
    }
}

#[test]
fn encoder_bwd_matches_oracle_on_odd_sizes_and_offsets() {
    let mut rng = rng(42);
    for &(b, t) in BT {
        for &c in SIZES {
            for &off in OFFSETS {
                let tokens: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..V as u32)).collect();
                let dout = unaligned(&mut rng, b * t * c, off);
                let dwte0 = unaligned(&mut rng, V * c, off + 1);
                let dwpe0 = unaligned(&mut rng, (t + 3) * c, off + 2);
                let (mut dwte, mut dwpe) = (dwte0.clone(), dwpe0.clone());
                let (mut dwte_o, mut dwpe_o) =
                    (dwte0[off + 1..].to_vec(), dwpe0[off + 2..].to_vec());
                embedding::encoder_bwd(
                    &mut dwte[off + 1..],
                    &mut dwpe[off + 2..],
                    &dout[off..],
                    &tokens,
                    b,
                    t,
                    c,
                    V,
                )
                .unwrap();
                oracle::encoder_bwd(&mut dwte_o, &mut dwpe_o, &dout[off..], &tokens, t, c);
                // Each element receives the same f32 additions in the same row order (position-major)
                // on every path and in the oracle: exact.
                let what = format!("encoder_bwd b={b} t={t} c={c} off={off}");
                assert_close(&format!("{what} dwte"), &dwte[off + 1..], &dwte_o, 0.0, 0.0);
                assert_close(&format!("{what} dwpe"), &dwpe[off + 2..], &dwpe_o, 0.0, 0.0);
            }
        }
    }
}

#[test]
fn encoder_rejects_a_token_outside_the_vocabulary_before_writing() {
    let (b, t, c) = (2, 3, 5);
    let mut tokens = vec![1u32; b * t];
    tokens[4] = V as u32;
    let wte = vec![1.0; V * c];
    let wpe = vec![1.0; t * c];
    let mut out = vec![0.0; b * t * c];
    let err = embedding::encoder_fwd(&mut out, &tokens, &wte, &wpe, b, t, c, V).unwrap_err();
    assert_eq!(err.kernel, "encoder_fwd");
    assert!(err.to_string().contains("token 11 at (b=1, t=1)"), "{err}");
    assert!(err.to_string().contains("V = 11"), "{err}");
    assert!(
        out.iter().all(|&x| x == 0.0),
        "encoder_fwd wrote before refusing"
    );

    let (mut dwte, mut dwpe) = (vec![0.0; V * c], vec![0.0; t * c]);
    let err = embedding::encoder_bwd(&mut dwte, &mut dwpe, &out, &tokens, b, t, c, V).unwrap_err();
    assert_eq!(err.kernel, "encoder_bwd");
    assert!(err.to_string().contains("token 11 at (b=1, t=1)"), "{err}");
    assert!(
        dwte.iter().chain(&dwpe).all(|&x| x == 0.0),
        "encoder_bwd wrote before refusing"
    );
}

#[test]
fn encoder_kernels_reject_short_slices() {
    let err = embedding::encoder_fwd(&mut [0.0; 12], &[0; 4], &[0.0; 33], &[0.0; 5], 2, 2, 3, 11)
        .unwrap_err();
    assert_eq!(err.kernel, "encoder_fwd");
    assert!(
        err.to_string().contains("`wpe` has 5 elements but T*C = 6"),
        "{err}"
    );
    let err = embedding::encoder_bwd(
        &mut [0.0; 32],
        &mut [0.0; 6],
        &[0.0; 12],
        &[0; 4],
        2,
        2,
        3,
        11,
    )
    .unwrap_err();
    assert_eq!(err.kernel, "encoder_bwd");
    assert!(
        err.to_string()
            .contains("`dwte` has 32 elements but V*C = 33"),
        "{err}"
    );
}
