//! The register-tiled microkernel: one `MR × NR` tile of C from an `MR`-row panel of A and an
//! `NR`-column panel of packed B. The A panel is packed (depth-major, the tile's rows side by
//! side) or, where A is row-major, read where it lies, its rows `lda` apart ([`AWalk`]).
//!
//! It is written once over [`Simd`]: per step of k it loads `NR / LANES` vectors of B, broadcasts
//! each of the `MR` values of A and issues `MR · NR / LANES` independent FMAs into accumulators
//! that stay in registers for the whole depth. A block's last row panel, when fewer than `MR`
//! rows are left, runs the same kernel instantiated for that many rows (`kernel_rows`), and its
//! last column panel, when it is whole vectors narrower than `NR`, for that many vectors
//! (`kernel_cols`). One full tile has its k loop in assembly: AVX-512's with A read in place
//! (`avx512_in_place`, which takes a second register for A: all 32), for which LLVM's code
//! spilled registers. Each ISA picks the tile that fills its register file without spilling:
//!
//! | path     | MR × NR | accumulators        | registers used        |
//! |----------|---------|---------------------|-----------------------|
//! | avx512   | 9 × 48  | 27 zmm              | 27 + 3 B + 1 A of 32  |
//! | avx2     | 6 × 16  | 12 ymm              | 12 + 2 B + 1 A of 16  |
//! | portable | 6 × 8   | 6 f32x8 (12 xmm)    | 12 + 2 B + 1 A of 16  |
//! | scalar   | 4 × 4   | 16 f32              | (whatever LLVM makes) |

use super::blocking::PanelCache;
use crate::simd::{prefetch_l2, prefetch_read, Portable, Scalar, Simd, LINE_FLOATS};
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512};
use std::ptr;

/// The largest `MR · NR` of any path (sizes the stack tile for edge tiles).
pub(crate) const MAX_TILE: usize = 9 * 48;

/// Where the microkernel finds its A panel's values: A(r, p), row `r` of the tile at depth `p`,
/// at `a[r·rs + p·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct AWalk {
    /// Floats from one row of the tile to the next.
    pub rs: usize,
    /// Floats from one depth to the next.
    pub cs: usize,
}

impl AWalk {
    /// A packed panel: depth-major, the tile's `mr` rows side by side.
    pub fn packed(mr: usize) -> AWalk {
        AWalk { rs: 1, cs: mr }
    }

    /// A read in place from a row-major matrix with row stride `lda` (A in NN and NT).
    pub fn rows(lda: usize) -> AWalk {
        AWalk { rs: lda, cs: 1 }
    }
}

/// What a full tile prefetches into L2 during its k loop for the tiles after it
/// ([`GemmKernel::kernel`]).
#[derive(Clone, Copy)]
pub(crate) struct Ahead {
    /// A share of the next B panel, `kc / 4` lines from here, one every four steps of k (the
    /// blocking loops' packed B block lives in L3); `None` when the next panel is not packed yet.
    pub b: Option<*const f32>,
    /// The C tile the next tile of all MR rows writes, its rows `ldc` floats apart: one row's
    /// lines at a time, spread over the k loop ([`next_c_mask`]), on the paths whose deep k
    /// loop has a B panel sized for L2 ([`PanelCache::deep`]).
    pub c: *const f32,
}

/// A microkernel tile shape and the kernel for it, per ISA token.
pub(crate) trait GemmKernel: Simd {
    /// Rows of the C tile (values of A broadcast per step).
    const MR: usize;
    /// Columns of the C tile (a multiple of `LANES`).
    const NR: usize;
    /// The cache this path's KC × NR B micro-panel is sized for.
    const B_PANEL: PanelCache;
    /// Whether the blocking loops read a row-major A (NN, NT) in place ([`AWalk::rows`])
    /// instead of packing it.
    const A_IN_PLACE: bool;

    /// `C[0..MR, 0..NR] (+)= Apanel · Bpanel`, overwriting C when `accumulate` is false. During
    /// its k loop it pulls into L2 what the tiles after it use ([`Ahead`]): given `ahead.b`,
    /// `kc / 4` lines from there on, one every four steps of k (the blocking loops hand each
    /// full tile a share of the next B panel, see `gemm_packed`), and on a path with deep k
    /// loops ([`PanelCache::deep`]) the rows of the C tile that the next full tile writes, from
    /// `ahead.c` on, so that its stores find their lines in L2 rather than memory; such a tile
    /// prefetches nothing of its own C, the others their own C before the k loop. Callers pass
    /// `None` or `Some` as `ahead.b` as a constant, so each call site compiles to one of the
    /// two loops. (AVX-512 with A read in place has one loop, in assembly, which always
    /// prefetches; given `None`, it prefetches lines of its own B panel, already in the cache.)
    ///
    /// # Safety
    /// `a` is valid for reading A(r, p) at `a[r·aw.rs + p·aw.cs]` for `r < MR`, `p < kc`, and
    /// `a + kc·aw.cs` stays inside its allocation or one past it (a packed panel: `kc · MR`
    /// floats); `b` holds `kc · NR` floats (row `p` at `b[p·NR..]`), and `c` is valid for reading
    /// and writing rows `c[r·ldc .. r·ldc + NR]` for `r < MR`. `ahead`'s addresses are only
    /// prefetched, never read, so any will do.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        self,
        kc: usize,
        a: *const f32,
        aw: AWalk,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        ahead: Ahead,
    );

    /// Rows `0..rows` of the tile, `0 < rows < MR`, for a block's last row panel: the same
    /// operations as [`GemmKernel::kernel`] on those rows, without the work of the padding rows.
    ///
    /// # Safety
    /// As [`GemmKernel::kernel`], except that A (walked by `aw`) and `c` need only be valid for
    /// rows `r < rows`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel_rows(
        self,
        rows: usize,
        kc: usize,
        a: *const f32,
        aw: AWalk,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    );

    /// The first `vecs` vectors of columns of the tile, `0 < vecs < NR / LANES`, all MR rows,
    /// for a block's last column panel when it is that many whole vectors wide: the same
    /// operations as [`GemmKernel::kernel`] on those columns (the packed panel is still NR wide).
    ///
    /// # Safety
    /// As [`GemmKernel::kernel`], except that `c` need only be valid for columns
    /// `< vecs · LANES` of each row.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel_cols(
        self,
        vecs: usize,
        kc: usize,
        a: *const f32,
        aw: AWalk,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    );

    /// Transpose a `lines` × 8 block (`lines` ≤ 8): `dst[j·ldd + i] = src[i·lds + j]` for
    /// `i < lines`, `j < 8`.
    ///
    /// # Safety
    /// `src` is valid for reading `lines` rows of 8 floats at stride `lds`, and `dst` for writing
    /// 8 rows of `lines` floats at stride `ldd`; the two do not overlap.
    #[inline(always)]
    unsafe fn transpose8(
        self,
        src: *const f32,
        lds: usize,
        lines: usize,
        dst: *mut f32,
        ldd: usize,
    ) {
        for i in 0..lines {
            for j in 0..8 {
                // SAFETY: i < lines, j < 8, within the rows the caller guarantees.
                unsafe { *dst.add(j * ldd + i) = *src.add(i * lds + j) };
            }
        }
    }
}

/// The tile of a path, `$mr` rows of `$nv` vectors, its B micro-panel sized for the cache
/// `$panel`, a row-major A read in place if `$in_place`, and its
/// [`GemmKernel::kernel`], [`GemmKernel::kernel_rows`] and [`GemmKernel::kernel_cols`]: the
/// microkernel instantiated for the full tile (without and with the prefetch), for each row
/// count `$r` below it and for each vector count `$v` below `$nv`. Given `in_place_kernel:`, the
/// full tile with A read in place (a walk with `cs` = 1) runs that function instead.
macro_rules! tile_kernels {
    (
        $mr:literal, $nv:literal, $panel:ident, $in_place:literal,
        [$($r:literal)*], [$($v:literal)*] $(, in_place_kernel: $in_place_kernel:path)?
    ) => {
        const MR: usize = $mr;
        const NR: usize = $nv * <Self as Simd>::LANES;
        const B_PANEL: PanelCache = PanelCache::$panel;
        const A_IN_PLACE: bool = $in_place;

        #[inline(always)]
        unsafe fn kernel(
            self,
            kc: usize,
            a: *const f32,
            aw: AWalk,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            acc: bool,
            ahead: Ahead,
        ) {
            // SAFETY: forwarded caller contract; NV · LANES = NR. The in-place kernel's
            // contract is this one with `cs` = 1, which its arm checks; `self` is the token
            // of the features it is compiled for.
            unsafe {
                match ahead.b {
                    $(_ if aw.cs == 1 => $in_place_kernel(
                        self, kc, a, aw.rs, b, c, ldc, acc, ahead.b.unwrap_or(b), ahead.c,
                    ),)?
                    None => kernel_generic::<Self, $mr, $nv, false, { PanelCache::$panel.deep() }>(
                        self, kc, a, aw, b, Self::NR, c, ldc, acc, ptr::null(), ahead.c,
                    ),
                    Some(b_ahead) => {
                        kernel_generic::<Self, $mr, $nv, true, { PanelCache::$panel.deep() }>(
                            self, kc, a, aw, b, Self::NR, c, ldc, acc, b_ahead, ahead.c,
                        )
                    }
                }
            }
        }

        #[inline(always)]
        unsafe fn kernel_rows(
            self,
            rows: usize,
            kc: usize,
            a: *const f32,
            aw: AWalk,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            acc: bool,
        ) {
            // SAFETY: forwarded caller contract, for the rows the caller says A and C have.
            unsafe {
                match rows {
                    $($r => {
                        kernel_generic::<Self, $r, $nv, false, false>(
                            self, kc, a, aw, b, Self::NR, c, ldc, acc, ptr::null(), ptr::null(),
                        )
                    })*
                    _ => unreachable!("kernel_rows takes 0 < rows < MR = {}, got {rows}", $mr),
                }
            }
        }

        #[inline(always)]
        unsafe fn kernel_cols(
            self,
            vecs: usize,
            kc: usize,
            a: *const f32,
            aw: AWalk,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            acc: bool,
        ) {
            match vecs {
                // SAFETY: forwarded caller contract, for the columns the caller says C has; the
                // packed panel's rows are NR floats apart.
                $($v => unsafe {
                    kernel_generic::<Self, $mr, $v, false, false>(
                        self, kc, a, aw, b, Self::NR, c, ldc, acc, ptr::null(), ptr::null(),
                    )
                },)*
                _ => {
                    let _ = (kc, a, aw, b, c, ldc, acc);
                    unreachable!("kernel_cols takes 0 < vecs < {}, got {vecs}", $nv)
                }
            }
        }
    };
}

impl GemmKernel for Scalar {
    tile_kernels!(4, 4, L1, false, [1 2 3], [1 2 3]);
}

impl GemmKernel for Portable {
    tile_kernels!(6, 1, L1, false, [1 2 3 4 5], []);
}

#[cfg(target_arch = "x86_64")]
impl GemmKernel for Avx2 {
    tile_kernels!(6, 2, L1, false, [1 2 3 4 5], [1]);
    #[inline(always)]
    unsafe fn transpose8(
        self,
        src: *const f32,
        lds: usize,
        lines: usize,
        dst: *mut f32,
        ldd: usize,
    ) {
        // SAFETY: forwarded caller contract; the token proves AVX2.
        unsafe { transpose8_avx(src, lds, lines, dst, ldd) }
    }
}

#[cfg(target_arch = "x86_64")]
impl GemmKernel for Avx512 {
    tile_kernels!(
        9, 3, L2, true, [1 2 3 4 5 6 7 8], [1 2],
        in_place_kernel: avx512_in_place
    );
    #[inline(always)]
    unsafe fn transpose8(
        self,
        src: *const f32,
        lds: usize,
        lines: usize,
        dst: *mut f32,
        ldd: usize,
    ) {
        // SAFETY: forwarded caller contract; AVX-512F implies AVX (the dispatcher also enables
        // avx2 for this path).
        unsafe { transpose8_avx(src, lds, lines, dst, ldd) }
    }
}

/// One row of the AVX-512 tile at one depth, as assembly text: broadcast A(r, p) from `$at` into
/// `$av`, then add its products with the three B vectors (zmm27-29) to the row's accumulators.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
macro_rules! row_9x48 {
    ($av:literal, $at:literal, $off:literal, $c0:literal, $c1:literal, $c2:literal) => {
        concat!(
            "vbroadcastss ", $av, ", dword ptr [", $at, " + ", $off, "]\n",
            "vfmadd231ps ", $c0, ", ", $av, ", zmm27\n",
            "vfmadd231ps ", $c1, ", ", $av, ", zmm28\n",
            "vfmadd231ps ", $c2, ", ", $av, ", zmm29\n",
        )
    };
}

/// One step of k of the AVX-512 tile reading A in place, as assembly text: the B panel's row at
/// byte `$b0` from `{b}`, A's depth at byte `$a` from each row group (`{a0}`, `{a3}`, `{a6}`:
/// rows 0, 3 and 6 of the tile, `{rs}` bytes between rows), row r's accumulators in zmm 3r to
/// 3r + 2.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
macro_rules! step_9x48 {
    ($a:literal, $b0:literal, $b1:literal, $b2:literal) => {
        concat!(
            "vmovups zmm27, [{b} + ", $b0, "]\n",
            "vmovups zmm28, [{b} + ", $b1, "]\n",
            "vmovups zmm29, [{b} + ", $b2, "]\n",
            row_9x48!("zmm30", "{a0}", $a, "zmm0", "zmm1", "zmm2"),
            row_9x48!("zmm31", "{a0} + {rs}", $a, "zmm3", "zmm4", "zmm5"),
            row_9x48!("zmm30", "{a0} + {rs}*2", $a, "zmm6", "zmm7", "zmm8"),
            row_9x48!("zmm31", "{a3}", $a, "zmm9", "zmm10", "zmm11"),
            row_9x48!("zmm30", "{a3} + {rs}", $a, "zmm12", "zmm13", "zmm14"),
            row_9x48!("zmm31", "{a3} + {rs}*2", $a, "zmm15", "zmm16", "zmm17"),
            row_9x48!("zmm30", "{a6}", $a, "zmm18", "zmm19", "zmm20"),
            row_9x48!("zmm31", "{a6} + {rs}", $a, "zmm21", "zmm22", "zmm23"),
            row_9x48!("zmm30", "{a6} + {rs}*2", $a, "zmm24", "zmm25", "zmm26"),
        )
    };
}

/// The full AVX-512 tile ([`GemmKernel::kernel`]) for an A read in place (`aw.cs` = 1, its rows
/// `rs` floats apart), with the prefetch of `kc / 4` lines from `ahead` on and of the next C
/// tile's rows from `next_c` on: the k loop in assembly. Written in Rust, that loop needs a
/// register for each of several row addresses besides the prefetch pointer, and LLVM spilled
/// accumulators to the stack in it, more or less depending on where it was inlined (at worst 94
/// stack accesses every four steps, and half speed). Here each row is one of three bases plus
/// `rs` scaled by 1 or 2: ten general registers with the prefetches', and the 32 vector
/// registers exactly (27 accumulators, 3 of B, 2 of A). Every accumulator takes the same fused
/// multiply-adds in the same order as in `kernel_generic`, so the bits are the same, and the
/// prefetches are `kernel_generic`'s too (the C rows at the same iterations, `next_c_mask`).
///
/// # Safety
/// As [`GemmKernel::kernel`] with `aw` = `AWalk { rs, cs: 1 }`, and the CPU has AVX-512F (the
/// token proves it).
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512_in_place(
    s: Avx512,
    kc: usize,
    a: *const f32, // A(r, p) at a[r·rs + p]
    rs: usize,
    b: *const f32, // [kc][48]
    c: *mut f32,   // [9][ldc]
    ldc: usize,
    accumulate: bool,
    ahead: *const f32,  // prefetched only: kc / 4 lines from here
    next_c: *const f32, // prefetched only: rows ldc apart (`next_c_mask`)
) {
    let mut acc = [[s.zero(); 3]; 9];
    let (mut a0, mut bp) = (a, b);
    let steps = kc / 4;
    if steps > 0 {
        let [r0, r1, r2, r3, r4, r5, r6, r7, r8] = &mut acc;
        // SAFETY: pass i of the loop reads depths 4i..4i + 4 (4i + 4 <= kc) of rows 0..9 of A
        // (`{a0}`, `{a3}` and `{a6}` plus 0, 1 or 2 times `rs`) and the same rows of the B
        // panel, inside what the caller guarantees; `prefetcht1` never faults (a C row's
        // lines: bytes 0, 64, 128 and 188, the last of its 48 floats). It writes only its
        // register operands (the accumulators, the pointers, the counter, the scratch vectors,
        // all declared) and the flags, and touches no stack.
        unsafe {
            std::arch::asm!(
                "2:",
                "test {n}, {c_mask}",
                "jnz 3f",
                "prefetcht1 [{c}]",
                "prefetcht1 [{c} + 64]",
                "prefetcht1 [{c} + 128]",
                "prefetcht1 [{c} + 188]",
                "add {c}, {ldc}",
                "3:",
                "prefetcht1 [{ahead}]",
                step_9x48!("0", "0", "64", "128"),
                step_9x48!("4", "192", "256", "320"),
                step_9x48!("8", "384", "448", "512"),
                step_9x48!("12", "576", "640", "704"),
                "add {a0}, 16",
                "add {a3}, 16",
                "add {a6}, 16",
                "add {b}, 768",
                "add {ahead}, 64",
                "dec {n}",
                "jnz 2b",
                a0 = inout(reg) a0,
                a3 = inout(reg) a.wrapping_add(3 * rs) => _,
                a6 = inout(reg) a.wrapping_add(6 * rs) => _,
                rs = in(reg) rs * size_of::<f32>(),
                b = inout(reg) bp,
                ahead = inout(reg) ahead => _,
                n = inout(reg) steps => _,
                c = inout(reg) next_c => _,
                ldc = in(reg) ldc * size_of::<f32>(),
                c_mask = in(reg) next_c_mask(steps, 9),
                inout("zmm0") r0[0], inout("zmm1") r0[1], inout("zmm2") r0[2],
                inout("zmm3") r1[0], inout("zmm4") r1[1], inout("zmm5") r1[2],
                inout("zmm6") r2[0], inout("zmm7") r2[1], inout("zmm8") r2[2],
                inout("zmm9") r3[0], inout("zmm10") r3[1], inout("zmm11") r3[2],
                inout("zmm12") r4[0], inout("zmm13") r4[1], inout("zmm14") r4[2],
                inout("zmm15") r5[0], inout("zmm16") r5[1], inout("zmm17") r5[2],
                inout("zmm18") r6[0], inout("zmm19") r6[1], inout("zmm20") r6[2],
                inout("zmm21") r7[0], inout("zmm22") r7[1], inout("zmm23") r7[2],
                inout("zmm24") r8[0], inout("zmm25") r8[1], inout("zmm26") r8[2],
                out("zmm27") _, out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
                options(nostack, readonly),
            );
        }
    }
    // SAFETY: the last kc % 4 depths, inside the panels as above (the loop left `a0` at row 0,
    // depth kc / 4 · 4, and `bp` at that row of the B panel), then the caller's C tile.
    unsafe {
        for _ in 0..kc % 4 {
            rank1::<Avx512, 9, 3>(s, &mut acc, a0, rs, bp);
            a0 = a0.add(1);
            bp = bp.add(48);
        }
        write_c_tile(s, &acc, c, ldc, accumulate);
    }
}

/// The AVX-512 tile on the emulated token, so that the AVX-512 path's GEMM logic is tested on
/// machines without it (its transposes are the default scalar loop: the same result).
#[cfg(feature = "emulate-avx512")]
impl GemmKernel for crate::simd::Emulated512 {
    tile_kernels!(9, 3, L2, true, [1 2 3 4 5 6 7 8], [1 2]);
}

/// The `lines` × 8 transpose in ymm registers: unpack pairs of rows, shuffle pairs of pairs, then
/// swap 128-bit halves (8 loads, 24 shuffles, 8 stores for a full block). Rows at or past `lines`
/// are zeros, not loads, and each column stores only its first `lines` floats: an A panel is
/// MR = 6 rows on AVX2 (and its second 8-row group of 9 on AVX-512), so most blocks are partial.
///
/// # Safety
/// As [`GemmKernel::transpose8`], and the CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose8_avx(src: *const f32, lds: usize, lines: usize, dst: *mut f32, ldd: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the `lines` rows at `lds`, the 8 × `lines` floats at `ldd`,
    // and the AVX feature; no row at or past `lines` is read, no float past `lines` written.
    unsafe {
        let r = |i: usize| {
            if i < lines {
                _mm256_loadu_ps(src.add(i * lds))
            } else {
                _mm256_setzero_ps()
            }
        };
        let (r0, r1, r2, r3, r4, r5, r6, r7) = (r(0), r(1), r(2), r(3), r(4), r(5), r(6), r(7));
        // t0 = [r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] r0[5] r1[5]], and so on.
        let t0 = _mm256_unpacklo_ps(r0, r1);
        let t1 = _mm256_unpackhi_ps(r0, r1);
        let t2 = _mm256_unpacklo_ps(r2, r3);
        let t3 = _mm256_unpackhi_ps(r2, r3);
        let t4 = _mm256_unpacklo_ps(r4, r5);
        let t5 = _mm256_unpackhi_ps(r4, r5);
        let t6 = _mm256_unpacklo_ps(r6, r7);
        let t7 = _mm256_unpackhi_ps(r6, r7);
        // u0 = [r0[0] r1[0] r2[0] r3[0] | r0[4] r1[4] r2[4] r3[4]], and so on.
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        // Column j of the block: low halves give columns 0-3, high halves 4-7.
        let cols = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        if lines == 8 {
            for (j, &v) in cols.iter().enumerate() {
                _mm256_storeu_ps(dst.add(j * ldd), v);
            }
        } else {
            for (j, &v) in cols.iter().enumerate() {
                let d = dst.add(j * ldd);
                let (lo, hi) = (_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                // The first `lines` floats: whole halves, then a pair, then a single.
                let (mut half, mut at) = (lo, 0);
                if lines >= 4 {
                    _mm_storeu_ps(d, lo);
                    (half, at) = (hi, 4);
                }
                let rest = lines - at;
                if rest >= 2 {
                    let pair = _mm_cvtsd_f64(_mm_castps_pd(half));
                    d.add(at).cast::<f64>().write_unaligned(pair);
                }
                if rest % 2 == 1 {
                    let single = if rest == 3 {
                        _mm_movehl_ps(half, half)
                    } else {
                        half
                    };
                    _mm_store_ss(d.add(at + rest - 1), single);
                }
            }
        }
    }
}

/// One rank-1 update of the accumulators: `acc += A[:, p] ⊗ B[p, :]`, given `a` and `b` at depth
/// p of the panels and A's rows `rs` floats apart. (A function, not a closure, so that it is
/// always inlined: with many instantiations of the microkernel the inliner gave up on the
/// closure.)
///
/// # Safety
/// `a` is valid for reading `a[r·rs]` for `r < R`, and `b` for `NV · LANES` floats.
#[inline(always)]
unsafe fn rank1<S: Simd, const R: usize, const NV: usize>(
    s: S,
    acc: &mut [[S::V; NV]; R],
    a: *const f32,
    rs: usize,
    b: *const f32,
) {
    let mut bv = [s.zero(); NV];
    for (v, bv) in bv.iter_mut().enumerate() {
        // SAFETY: row p of the B panel has NV · LANES floats.
        *bv = unsafe { s.load(b.add(v * S::LANES)) };
    }
    for (r, acc_r) in acc.iter_mut().enumerate() {
        // SAFETY: the caller guarantees rows r < R of depth p, `rs` floats apart.
        let av = s.splat(unsafe { *a.add(r * rs) });
        for (acc, &bv) in acc_r.iter_mut().zip(&bv) {
            *acc = s.fma(av, bv, *acc);
        }
    }
}

/// The microkernel for rows `0..R` (`R ≤ MR`) and columns `0..NV · LANES` of a tile: `R = MR`
/// and the path's NV is the full tile, a smaller `R` a block's last row panel, a smaller `NV`
/// its last column panel (whose packed rows are still `ldb` = NR floats apart). With `AHEAD`
/// it also prefetches `kc / 4` lines from `ahead` on into L2, and with `NEXT_C` rows of the
/// next tile's C from `next_c` on ([`GemmKernel::kernel`]); without `NEXT_C` it prefetches its
/// own C tile before its k loop.
///
/// # Safety
/// As [`GemmKernel::kernel`] with `NR = NV · S::LANES` columns of C, for rows `r < R` of C and
/// of A (walked by `aw`), and a B panel of `kc` rows `ldb` floats apart.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_generic<
    S: Simd,
    const R: usize,
    const NV: usize,
    const AHEAD: bool,
    const NEXT_C: bool,
>(
    s: S,
    kc: usize,
    mut a: *const f32, // A(r, p) at a[r·aw.rs + p·aw.cs]
    aw: AWalk,
    mut b: *const f32, // [kc][ldb], NV · LANES ≤ ldb
    ldb: usize,
    c: *mut f32, // [R][ldc]
    ldc: usize,
    accumulate: bool,
    mut ahead: *const f32, // prefetched only, when AHEAD: kc / 4 lines from here
    mut next_c: *const f32, // prefetched only, when NEXT_C: rows ldc apart (`next_c_mask`)
) {
    if !NEXT_C {
        prefetch_c_tile(c, ldc, R, NV * S::LANES);
    }
    let mut acc = [[s.zero(); NV]; R];
    let AWalk { rs, cs } = aw;
    let steps = kc / 4;
    let c_mask = next_c_mask(steps, R);
    // SAFETY: the loops advance `a` by cs and `b` by ldb exactly `kc` times, inside the panels
    // (or to one past them: the caller's contract bounds `a + kc·cs`).
    unsafe {
        // Counting down, as the assembly kernel does, so that both prefetch the same rows.
        for n in (1..=steps).rev() {
            if NEXT_C && n & c_mask == 0 {
                prefetch_c_row_l2(next_c, NV * S::LANES);
                next_c = next_c.wrapping_add(ldc);
            }
            if AHEAD {
                prefetch_l2(ahead);
                ahead = ahead.wrapping_add(LINE_FLOATS);
            }
            rank1::<S, R, NV>(s, &mut acc, a, rs, b);
            rank1::<S, R, NV>(s, &mut acc, a.add(cs), rs, b.add(ldb));
            rank1::<S, R, NV>(s, &mut acc, a.add(2 * cs), rs, b.add(2 * ldb));
            rank1::<S, R, NV>(s, &mut acc, a.add(3 * cs), rs, b.add(3 * ldb));
            a = a.add(4 * cs);
            b = b.add(4 * ldb);
        }
        for _ in 0..kc % 4 {
            rank1::<S, R, NV>(s, &mut acc, a, rs, b);
            a = a.add(cs);
            b = b.add(ldb);
        }
    }
    // SAFETY: forwarded caller contract.
    unsafe { write_c_tile(s, &acc, c, ldc, accumulate) };
}

/// Start pulling the `rows` × `nr` C tile at `c` (rows `ldc` apart) into L1: the kernel touches
/// it only after its k loop. Each line of each row (a row of 48 floats spans three or four).
#[inline(always)]
fn prefetch_c_tile(c: *mut f32, ldc: usize, rows: usize, nr: usize) {
    for r in 0..rows {
        for col in (0..nr).step_by(LINE_FLOATS) {
            prefetch_read(c.wrapping_add(r * ldc + col));
        }
        prefetch_read(c.wrapping_add(r * ldc + nr - 1));
    }
}

/// Pull the lines of one `nr`-float row of a C tile into L2 (`prefetch_l2`, which never faults,
/// so any address will do).
#[inline(always)]
fn prefetch_c_row_l2(row: *const f32, nr: usize) {
    for col in (0..nr).step_by(LINE_FLOATS) {
        prefetch_l2(row.wrapping_add(col));
    }
    prefetch_l2(row.wrapping_add(nr - 1));
}

/// Which of a full tile's `steps` four-step iterations prefetch a row of the next tile's C
/// ([`GemmKernel::kernel`]): counting `n` down from `steps` to 1, those with `n & mask == 0`,
/// every `p`-th for `p` the largest power of two with `steps / p >= rows` (every one when
/// `steps < rows`). So the tile's `rows` rows (and up to `rows - 1` of the tile after it) are
/// spread over the whole loop, a few lines at a time.
pub(crate) fn next_c_mask(steps: usize, rows: usize) -> usize {
    let p = (steps / rows.max(1)).max(1);
    (1usize << p.ilog2()) - 1
}

/// `C[0..R, 0..NV · LANES] (+)= acc`, overwriting C when `accumulate` is false.
///
/// # Safety
/// `c` is valid for reading and writing rows `c[r·ldc .. r·ldc + NV · LANES]` for `r < R`.
#[inline(always)]
unsafe fn write_c_tile<S: Simd, const R: usize, const NV: usize>(
    s: S,
    acc: &[[S::V; NV]; R],
    c: *mut f32, // [R][ldc]
    ldc: usize,
    accumulate: bool,
) {
    // Vector v of row r of the C tile; the caller guarantees rows r < R have NV · LANES
    // writable floats.
    let c_at = |r: usize, v: usize| c.wrapping_add(r * ldc + v * S::LANES);
    // Branch once on `accumulate`, outside the stores.
    if accumulate {
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, &acc) in acc_r.iter().enumerate() {
                // SAFETY: inside row r's floats (see `c_at`).
                unsafe { s.store(c_at(r, v), s.add(s.load(c_at(r, v)), acc)) };
            }
        }
    } else {
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, &acc) in acc_r.iter().enumerate() {
                // SAFETY: inside row r's floats (see `c_at`).
                unsafe { s.store(c_at(r, v), acc) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{next_c_mask, GemmKernel};
    use crate::simd::Scalar;

    /// A full tile's k loop prefetches every row of the next tile's C, and at most `rows - 1`
    /// more, at iterations spread evenly over the loop (when it has at least `rows`).
    #[test]
    fn next_c_rows_cover_the_next_tile_across_the_loop() {
        for rows in 1..=9 {
            for steps in 0..=300 {
                let mask = next_c_mask(steps, rows);
                let at: Vec<usize> = (1..=steps).rev().filter(|n| n & mask == 0).collect();
                if steps < rows {
                    assert_eq!(at.len(), steps, "steps {steps}, rows {rows}");
                    continue;
                }
                assert!(
                    (rows..2 * rows).contains(&at.len()),
                    "steps {steps}, rows {rows}: {} rows",
                    at.len()
                );
                // Evenly: one every mask + 1 iterations, the last within mask + 1 of the end.
                assert!(at.windows(2).all(|w| w[0] - w[1] == mask + 1));
                assert!(*at.last().unwrap() <= mask + 1);
            }
        }
    }

    /// Every line count at odd strides: the block transposed, and no float past a column's
    /// `lines` written (an A panel's neighbour follows right after them).
    fn check_transpose8<S: GemmKernel>(s: S) {
        let (lds, ldd) = (11, 9);
        let src: Vec<f32> = (0..8 * lds).map(|v| v as f32).collect();
        for lines in 1..=8 {
            let mut dst = vec![-1.0f32; 8 * ldd];
            // SAFETY: `lines` ≤ 8 rows of 8 floats at stride 11 in src, 8 rows of 9 in dst.
            unsafe { s.transpose8(src.as_ptr(), lds, lines, dst.as_mut_ptr(), ldd) };
            for j in 0..8 {
                for i in 0..ldd {
                    let want = if i < lines { src[i * lds + j] } else { -1.0 };
                    assert_eq!(
                        dst[j * ldd + i],
                        want,
                        "lines {lines}, column {j}, float {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn transpose8_writes_exactly_its_lines_on_every_path() {
        check_transpose8(Scalar);
        #[cfg(feature = "emulate-avx512")]
        check_transpose8(crate::simd::Emulated512);
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: AVX2 and FMA were just detected.
                check_transpose8(unsafe { crate::simd::Avx2::new_unchecked() });
            }
            if crate::isa::avx512_native() {
                // SAFETY: AVX-512F, AVX2 and FMA were just detected.
                check_transpose8(unsafe { crate::simd::Avx512::new_unchecked() });
            }
        }
    }
}
