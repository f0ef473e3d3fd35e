//! Packing: copy a block of A or B into the order the microkernel reads it.
//!
//! A packed block is a run of panels, each `kc · t` floats for a tile width `t` (MR for A, NR for
//! B): element `(p, x)` of a panel (depth `p`, position `x` across the tile) sits at `p · t + x`.
//! A panel narrower than `t` (the block's edge) is padded with zeros, so the microkernel always
//! runs on full tiles. Every layout is handled here, which is why one microkernel serves NN, NT
//! and TN: a block whose tile direction runs along memory is copied row by row
//! ([`copy_direct`]); one whose tile direction runs across memory rows is transposed
//! ([`copy_transposed`]).

use super::Layout;

/// Pack `A[i0 .. i0+mc, p0 .. p0+kc]` into MR-row panels at `dst` (`ceil(mc/mr) · kc · mr` floats).
///
/// `a` is the whole A operand with row stride `lda` as stored (M × K, or K × M for `TN`); the
/// block must lie inside it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_a(
    layout: Layout,
    mr: usize,
    a: &[f32],
    lda: usize,
    (i0, mc): (usize, usize),
    (p0, kc): (usize, usize),
    dst: &mut [f32],
) {
    for (panel, i) in (i0..i0 + mc).step_by(mr).enumerate() {
        let w = mr.min(i0 + mc - i);
        let out = &mut dst[panel * kc * mr..][..kc * mr];
        match layout {
            // A(i, p) = a[i·lda + p]: the panel's rows are memory rows.
            Layout::NN | Layout::NT => copy_transposed(&a[i * lda + p0..], lda, w, kc, mr, out),
            // A(i, p) = a[p·lda + i]: the panel's rows run along memory.
            Layout::TN => copy_direct(&a[p0 * lda + i..], lda, w, kc, mr, out),
        }
    }
}

/// Pack `B[p0 .. p0+kc, j0 .. j0+nc]` into NR-column panels at `dst` (`ceil(nc/nr) · kc · nr` floats).
///
/// `b` is the whole B operand with row stride `ldb` as stored (K × N, or N × K for `NT`); the
/// block must lie inside it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_b(
    layout: Layout,
    nr: usize,
    b: &[f32],
    ldb: usize,
    (p0, kc): (usize, usize),
    (j0, nc): (usize, usize),
    dst: &mut [f32],
) {
    for (panel, j) in (j0..j0 + nc).step_by(nr).enumerate() {
        let w = nr.min(j0 + nc - j);
        let out = &mut dst[panel * kc * nr..][..kc * nr];
        match layout {
            // B(p, j) = b[p·ldb + j]: the panel's columns run along memory.
            Layout::NN | Layout::TN => copy_direct(&b[p0 * ldb + j..], ldb, w, kc, nr, out),
            // B(p, j) = b[j·ldb + p]: the panel's columns are memory rows.
            Layout::NT => copy_transposed(&b[j * ldb + p0..], ldb, w, kc, nr, out),
        }
    }
}

/// `out[p·t + x] = src[p·ld + x]` for `p < kc`, `x < w`; zero for `w <= x < t`.
#[inline(always)]
fn copy_direct(src: &[f32], ld: usize, w: usize, kc: usize, t: usize, out: &mut [f32]) {
    if w == t {
        for (p, row) in out.chunks_exact_mut(t).enumerate() {
            row.copy_from_slice(&src[p * ld..][..t]);
        }
    } else {
        for (p, row) in out.chunks_exact_mut(t).take(kc).enumerate() {
            row[..w].copy_from_slice(&src[p * ld..][..w]);
            row[w..].fill(0.0);
        }
    }
}

/// `out[p·t + x] = src[x·ld + p]` for `p < kc`, `x < w`; zero for `w <= x < t`.
#[inline(always)]
fn copy_transposed(src: &[f32], ld: usize, w: usize, kc: usize, t: usize, out: &mut [f32]) {
    if w < t {
        out.fill(0.0);
    }
    for x in 0..w {
        let line = &src[x * ld..][..kc];
        for (p, &v) in line.iter().enumerate() {
            out[p * t + x] = v;
        }
    }
}
