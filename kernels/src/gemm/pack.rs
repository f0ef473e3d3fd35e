//! Packing: copy a block of A or B into the order the microkernel reads it.
//!
//! A packed block is a run of panels, each `kc · t` floats for a tile width `t` (MR for A, NR for
//! B), back to back for B and [`a_panel_stride`] apart for A: element `(p, x)` of a panel (depth
//! `p`, position `x` across the tile) sits at `p · t + x`.
//! A panel narrower than `t` (the block's edge) is padded with zeros: the full microkernel of an
//! edge tile reads all NR columns of its B panel. (A's padding rows are zeroed too but not read:
//! a tile cut by the block's last rows runs the kernel for its rows.) Every layout is handled
//! here, which is why one microkernel serves NN, NT and TN: a block whose tile direction runs
//! along memory is copied ([`pack_direct`]); one whose tile direction runs across memory rows is
//! transposed ([`copy_transposed`]).

use super::kernel::GemmKernel;
use super::Layout;
use crate::simd::{prefetch_read, LINE_FLOATS};

/// Floats from the start of one packed A panel (`kc · mr` floats) to the next: the panel itself,
/// and one cache line more when its length is a multiple of 2 KiB, where all of a block's panels
/// would start in at most two L1 sets. Packed back to back, a block's panels at KC = 1024 lay 36
/// KiB apart, all in one set, and the TN pack, which writes one depth of every panel before the
/// next, took 1.36–1.38 ns per float at K = 1024 or 2048 against 0.98–1.03 at K = 768, 1536 or
/// 2304 (slices of 768, 27 KiB apart: four set positions) and 0.92–0.99 for NN's pack of the same
/// rows (`$B gemm --shape 1536xKx48`, one thread); one line more made it 1.02–1.08 at K = 2048.
/// Padding every panel to an odd number of lines instead left the TN pack as fast, but the NN
/// products with K = 768 read 1–1.5 % slower in some rounds, so panels that do not alias keep
/// their old places. Panics if `kc · mr` (plus the line) overflows.
pub fn a_panel_stride(kc: usize, mr: usize) -> usize {
    a_panel_stride_checked(kc, mr).expect("a_panel_stride: kc · mr overflows")
}

/// [`a_panel_stride`], or `None` where it would overflow.
pub(crate) fn a_panel_stride_checked(kc: usize, mr: usize) -> Option<usize> {
    const ALIASED: usize = 2048 / 4;
    let len = kc.checked_mul(mr)?;
    let padded = len.checked_add(LINE_FLOATS)?;
    Some(if len.is_multiple_of(ALIASED) {
        padded
    } else {
        len
    })
}

/// Pack `A[i0 .. i0+mc, p0 .. p0+kc]` into MR-row panels at `dst`, panel `i` from
/// `i · a_panel_stride(kc, MR)` (`ceil(mc/mr)` panels).
///
/// `a` is the whole A operand with row stride `lda` as stored (M × K, or K × M for `TN`); the
/// block must lie inside it.
#[inline(always)]
pub(crate) fn pack_a<S: GemmKernel>(
    s: S,
    layout: Layout,
    a: &[f32],
    lda: usize,
    (i0, mc): (usize, usize),
    (p0, kc): (usize, usize),
    dst: &mut [f32],
) {
    let (mr, stride) = (S::MR, a_panel_stride(kc, S::MR));
    match layout {
        // A(i, p) = a[i·lda + p]: the panel's rows are memory rows.
        Layout::NN | Layout::NT => {
            for (panel, i) in (i0..i0 + mc).step_by(mr).enumerate() {
                let out = &mut dst[panel * stride..][..kc * mr];
                copy_transposed(s, &a[i * lda + p0..], lda, mr.min(i0 + mc - i), kc, mr, out);
            }
        }
        // A(i, p) = a[p·lda + i]: the panel's rows run along memory.
        Layout::TN => pack_direct(&a[p0 * lda + i0..], lda, mc, kc, (mr, stride), dst),
    }
}

/// Pack `B[p0 .. p0+kc, j0 .. j0+nc]` into NR-column panels at `dst` (`ceil(nc/nr) · kc · nr` floats).
///
/// `b` is the whole B operand with row stride `ldb` as stored (K × N, or N × K for `NT`); the
/// block must lie inside it.
#[inline(always)]
pub(crate) fn pack_b<S: GemmKernel>(
    s: S,
    layout: Layout,
    b: &[f32],
    ldb: usize,
    (p0, kc): (usize, usize),
    (j0, nc): (usize, usize),
    dst: &mut [f32],
) {
    let nr = S::NR;
    match layout {
        // B(p, j) = b[p·ldb + j]: the panel's columns run along memory.
        Layout::NN | Layout::TN => {
            pack_direct(&b[p0 * ldb + j0..], ldb, nc, kc, (nr, kc * nr), dst)
        }
        // B(p, j) = b[j·ldb + p]: the panel's columns are memory rows.
        Layout::NT => {
            for (panel, j) in (j0..j0 + nc).step_by(nr).enumerate() {
                let out = &mut dst[panel * kc * nr..][..kc * nr];
                copy_transposed(s, &b[j * ldb + p0..], ldb, nr.min(j0 + nc - j), kc, nr, out);
            }
        }
    }
}

/// Prefetch steps [`prefetch_b_panel`] numbers in one NR-column panel's source, `kc` deep: one per
/// depth where the panel's columns run along memory (each its `nr` floats' lines), one per cache
/// line of `kc` floats per column where they are memory rows. (A span that starts mid-line touches
/// one line more, which the hardware's adjacent-line prefetch brings in.)
pub(crate) fn b_panel_steps(layout: Layout, kc: usize, nr: usize) -> usize {
    match layout {
        Layout::NN | Layout::TN => kc,
        Layout::NT => nr * kc.div_ceil(LINE_FLOATS),
    }
}

/// Prefetch steps `part` (numbered as in [`b_panel_steps`]) of the source of the B panel
/// `B[p0 .. p0+kc, j0 .. j0+w]`.
#[inline(always)]
pub(crate) fn prefetch_b_panel(
    layout: Layout,
    b: &[f32],
    ldb: usize,
    (p0, kc): (usize, usize),
    (j0, w): (usize, usize),
    part: std::ops::Range<usize>,
) {
    let base = b.as_ptr();
    // `wrapping_add`: a prefetch never faults, and every address named lies inside `b` anyway.
    match layout {
        Layout::NN | Layout::TN => {
            for p in part {
                for q in (0..w).step_by(LINE_FLOATS) {
                    prefetch_read(base.wrapping_add((p0 + p) * ldb + j0 + q));
                }
            }
        }
        Layout::NT => {
            let per = kc.div_ceil(LINE_FLOATS);
            for l in part {
                let (x, q) = (l / per, l % per);
                if x < w {
                    prefetch_read(base.wrapping_add((j0 + x) * ldb + p0 + q * LINE_FLOATS));
                }
            }
        }
    }
}

/// Rows [`pack_direct`] prefetches ahead when its panels are narrower than a line. On one thread,
/// alternated three times against none (the 4096-row GEMMs in TN, whose 50 MB C pushes A out of
/// the cache): 4096 × 768 × 3072 155.9–158.6 → 158.2–161.7 GFLOP/s, 4096 × 768 × 2304 158.4–159.5
/// → 162.9–163.9, 4096 × 768 × 768 156.5–159.0 → 161.9–168.0; 16 and 32 rows gave the same, and
/// 1024³ and 4096 × 3072 × 768 stayed level. Prefetching B's rows too (long runs) was level.
/// (docs/PERFORMANCE.md has a second set, the binaries alternated.)
const PACK_AHEAD: usize = 8;

/// Pack a `kc × width` block whose rows run along memory (`src[p·ld + x]`) into panels `t` wide,
/// each `stride` floats after the one before.
///
/// Row by row, in memory order: each source line is read once, as the hardware's stream
/// prefetch expects, and each row's pieces go to their panels. Walking one panel down all `kc`
/// rows and then the next (a panel's row is a whole number of lines on the AVX-512 and AVX2
/// tiles) read the same bytes at 0.55–0.6 ns per float where the rows were 4 KiB-multiples
/// apart (K × N = 1024 × 1024, 768 × 3072) or deep (3072 × 768), against 0.35–0.4 this way:
/// such a walk's lines fall into few L2 sets, and the neighbouring lines the adjacent-line
/// prefetch brings in for the next panel are gone by the time it starts. Elsewhere the walk
/// was up to a tenth faster (768 × 2304: 0.35 against 0.39), a few µs per GEMM.
///
/// Panels narrower than a line are A's in TN (and, on the portable and scalar tiles, B's too); an
/// A block in TN is `kc` runs of only MC floats (~1 KiB) a whole row of A apart:
/// each run starts a new stream that the hardware prefetchers pick up late, and when A comes from
/// memory (a GEMM whose C is larger than the cache) the copy waits on every run. Those rows are
/// prefetched [`PACK_AHEAD`] rows ahead, every line of the run (its first float's, each 16
/// floats on, and its last float's, as a run need not start on a line).
#[inline(always)]
fn pack_direct(
    src: &[f32],
    ld: usize,
    width: usize,
    kc: usize,
    (t, stride): (usize, usize),
    dst: &mut [f32],
) {
    let full = width / t;
    let prefetch = t < LINE_FLOATS && width > 0;
    for p in 0..kc {
        if prefetch && p + PACK_AHEAD < kc {
            let next = src[(p + PACK_AHEAD) * ld..][..width].as_ptr();
            for q in (0..width).step_by(LINE_FLOATS) {
                prefetch_read(next.wrapping_add(q));
            }
            prefetch_read(next.wrapping_add(width - 1));
        }
        let row = &src[p * ld..][..width];
        for (panel, part) in row.chunks_exact(t).enumerate() {
            dst[panel * stride + p * t..][..t].copy_from_slice(part);
        }
        let tail = row.chunks_exact(t).remainder();
        if !tail.is_empty() {
            let out = &mut dst[full * stride + p * t..][..t];
            out[..tail.len()].copy_from_slice(tail);
            out[tail.len()..].fill(0.0);
        }
    }
}

/// `out[p·t + x] = src[x·ld + p]` for `p < kc`, `x < w`; zero for `w <= x < t`.
#[inline(always)]
fn copy_transposed<S: GemmKernel>(
    s: S,
    src: &[f32],
    ld: usize,
    w: usize,
    kc: usize,
    t: usize,
    out: &mut [f32],
) {
    // Checked: these guard the raw reads and writes below.
    assert!(w <= t && kc.checked_mul(t).is_some_and(|need| out.len() >= need));
    assert!(super::span(w, kc, ld).is_some_and(|need| src.len() >= need));
    if w < t {
        out[..kc * t].fill(0.0);
    }
    let (src, out) = (src.as_ptr(), out.as_mut_ptr());
    // 8 lines × 8 depths at a time: each line is read 32 bytes at a time and each depth's
    // values written together, so neither side strides through memory one float at a time.
    for x0 in (0..w).step_by(8) {
        let lw = 8.min(w - x0);
        for p0 in (0..kc).step_by(8) {
            let pd = 8.min(kc - p0);
            // SAFETY: the block's reads are at (x0+x)·ld + p0+q <= (w-1)·ld + kc-1 < src.len()
            // and its writes at (p0+q)·t + x0+x < kc·t <= out.len(), both asserted above.
            unsafe {
                let (from, to) = (src.add(x0 * ld + p0), out.add(p0 * t + x0));
                if pd == 8 {
                    s.transpose8(from, ld, lw, to, t);
                } else {
                    for q in 0..pd {
                        for x in 0..lw {
                            *to.add(q * t + x) = *from.add(x * ld + q);
                        }
                    }
                }
            }
        }
    }
}
