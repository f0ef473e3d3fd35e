//! The one place that turns a generic kernel into a run-time-dispatched function.
//!
//! `dispatch!` writes, for a generic kernel `g<S: Simd>(s: S, args..)`, a function with the given
//! signature that matches on [`crate::isa::active`] and calls `g` with the matching token. The x86
//! paths go through `#[target_feature]` entry points so that `g` and the token's intrinsics inline
//! with those features enabled; nothing else is generated (with the test feature `emulate-avx512`,
//! one more arm: the AVX-512 path on the emulated token where the CPU lacks AVX-512F).

macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $generic:path;) => {
        $(#[$meta])*
        #[inline]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                // SAFETY: this entry point is only called when `isa::active()` is Avx2, which
                // `Isa::is_supported` confirmed by CPUID.
                $generic(unsafe { $crate::simd::Avx2::new_unchecked() }, $($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                // SAFETY: only called when `isa::active()` is Avx512, confirmed by CPUID (AVX-512F,
                // AVX2 and FMA).
                $generic(unsafe { $crate::simd::Avx512::new_unchecked() }, $($arg),*)
            }
            match $crate::isa::active() {
                $crate::isa::Isa::Scalar => $generic($crate::simd::Scalar, $($arg),*),
                $crate::isa::Isa::Portable => $generic($crate::simd::Portable, $($arg),*),
                // Test builds only: the AVX-512 path's instantiation on a CPU without it.
                #[cfg(feature = "emulate-avx512")]
                $crate::isa::Isa::Avx512 if !$crate::isa::avx512_native() => {
                    $generic($crate::simd::Emulated512, $($arg),*)
                }
                // SAFETY: `active()` returns Avx2 only when the CPU has AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                $crate::isa::Isa::Avx2 => unsafe { avx2($($arg),*) },
                // SAFETY: `active()` returns Avx512 only when the CPU has AVX-512F, AVX2 and FMA
                // (`isa::avx512_native`), or, with `emulate-avx512`, when it lacks them, a case
                // the arm above has taken.
                #[cfg(target_arch = "x86_64")]
                $crate::isa::Isa::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(not(target_arch = "x86_64"))]
                $crate::isa::Isa::Avx2 | $crate::isa::Isa::Avx512 => unreachable!("x86 paths are never supported here"),
            }
        }
    };
}

pub(crate) use dispatch;
