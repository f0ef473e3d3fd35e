//! Dimensions whose products overflow `usize`: every checked entry point refuses them. Had a
//! product wrapped (release builds do not check overflow), a check could compare a slice with a
//! small wrapped length, pass, and let the unchecked loops, which use the dimensions themselves,
//! run far outside the slices.

use cllm_kernels::attention::{attention_bwd, attention_fwd, attention_scratch_len};
use cllm_kernels::gemv::{gemv_nn, gemv_nt, nn_panels_len};
use cllm_kernels::loss::softmax_xent_bwd;

/// With three rows of 2 floats, `(3 - 1) * LDW + 1` wraps to a small number.
const LDW: usize = usize::MAX / 2 + 2;

#[test]
fn gemv_refuses_a_stride_whose_extent_overflows() {
    let w = [1.0f32; 3];
    let x = [1.0f32; 3];
    let mut y = [0.0f32; 1];
    let err = gemv_nn(&mut [&mut y[..]], &[&x[..]], &w, LDW, &[], false).unwrap_err();
    assert!(err.to_string().contains("gemv_nn"), "{err}");
    let mut y = [0.0f32; 3];
    let x = [1.0f32; 1];
    let err = gemv_nt(&mut [&mut y[..]], &[&x[..]], &w, LDW).unwrap_err();
    assert!(err.to_string().contains("gemv_nt"), "{err}");
    assert_eq!(nn_panels_len(usize::MAX / 2, 64), usize::MAX);
}

#[test]
fn attention_refuses_a_batch_whose_sizes_overflow() {
    let b = 1usize << 63; // B*T*C and B*NH*T wrap to 0 with T = 1, C = NH = 2
    let mut scratch = vec![0.0f32; attention_scratch_len(1, 1)];
    let err = attention_fwd(&mut [], &mut [], &[], &mut scratch, b, 1, 2, 2).unwrap_err();
    assert!(err.to_string().contains("attention_fwd"), "{err}");
    let err =
        attention_bwd(&mut [], &[], &[], &[], &[], &mut scratch, b, 1, 2, 2, false).unwrap_err();
    assert!(err.to_string().contains("attention_bwd"), "{err}");
    assert_eq!(attention_scratch_len(usize::MAX - 3, 64), usize::MAX);
}

#[test]
fn the_loss_refuses_a_padded_vocabulary_whose_size_overflows() {
    let vp = 1usize << 63; // N*Vp wraps to 0 with N = 2
    let err = softmax_xent_bwd(&mut [], &[], &[0, 0], &[1.0, 1.0], 2, 1, vp).unwrap_err();
    assert!(err.to_string().contains("softmax_xent"), "{err}");
}
