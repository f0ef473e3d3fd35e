//! Machine probes that benchmarks measure themselves against in the same run: the FMA peak of one
//! core on the active path, and a streaming read for memory bandwidth.

use crate::dispatch::dispatch;
use crate::simd::Simd;

/// Independent accumulators in [`fma_loop`]: enough to cover FMA latency (4-5 cycles) times the
/// FMA ports (2) on every core we target, so the loop is bound by throughput, not latency.
pub const FMA_CHAINS: usize = 12;

/// FLOPs [`fma_loop`] performs for `iters` iterations on the active path.
pub fn fma_loop_flops(iters: usize) -> u64 {
    let lanes = match crate::isa::active() {
        crate::Isa::Scalar => 1,
        crate::Isa::Portable | crate::Isa::Avx2 => 8,
        crate::Isa::Avx512 => 16,
    };
    (iters * FMA_CHAINS * lanes * 2) as u64
}

dispatch! {
    /// Run `iters` rounds of [`FMA_CHAINS`] independent vector FMAs; returns a value that depends on
    /// all of them so nothing is optimised away. Time it and divide [`fma_loop_flops`] by the time.
    pub fn fma_loop(iters: usize) -> f32 = fma_loop_generic;
}

#[inline(always)]
fn fma_loop_generic<S: Simd>(s: S, iters: usize) -> f32 {
    let mut acc = [s.splat(0.0); FMA_CHAINS];
    // Opaque constants, so the compiler cannot fold the chains; the accumulators stay in registers.
    let (a, b) = (
        s.splat(std::hint::black_box(0.999_99)),
        s.splat(std::hint::black_box(1e-6)),
    );
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = s.fma(*x, a, b);
        }
    }
    acc.iter().fold(0.0, |t, &x| t + s.reduce_add(x))
}

/// Sequential streams [`stream_sum`] reads side by side. One stream leaves most of a core's
/// outstanding-miss capacity unused (its hardware prefetcher follows one page at a time), so a
/// single-stream sum understates what a kernel reading several rows at once gets from memory.
pub const READ_STREAMS: usize = 4;

dispatch! {
    /// Sum `data` as [`READ_STREAMS`] contiguous parts read in lockstep, two vector accumulators
    /// each: the read-bandwidth probe.
    pub fn stream_sum(data: &[f32]) -> f32 = stream_sum_generic;
}

#[inline(always)]
fn stream_sum_generic<S: Simd>(s: S, data: &[f32]) -> f32 {
    let step = 2 * S::LANES;
    // Floats per stream, a multiple of `step`; the rest is summed as the tail.
    let part = data.len() / (READ_STREAMS * step) * step;
    let mut acc = [s.splat(0.0); 2 * READ_STREAMS];
    let base = data.as_ptr();
    for i in (0..part).step_by(step) {
        for k in 0..READ_STREAMS {
            // SAFETY: k * part + i + step <= READ_STREAMS * part <= data.len(), so both vectors
            // are in bounds.
            let (a, b) = unsafe {
                let p = base.add(k * part + i);
                (s.load(p), s.load(p.add(S::LANES)))
            };
            acc[2 * k] = s.add(acc[2 * k], a);
            acc[2 * k + 1] = s.add(acc[2 * k + 1], b);
        }
    }
    let tail: f32 = data[READ_STREAMS * part..].iter().sum();
    acc.iter().fold(tail, |t, &x| t + s.reduce_add(x))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_sum_adds_everything() {
        // Integers below 2^24 with sums below 2^24: every order of addition is exact, so any
        // float dropped or read twice (the streams' seams, the tail) changes the result.
        // Under Miri (`scripts/ub_check.sh`), sizes up to one past two AVX-512 vectors of streams.
        let sizes: &[usize] = if cfg!(miri) {
            &[0, 1, 7, 129]
        } else {
            &[0, 1, 7, 63, 65, 127, 129, 1000, 4099]
        };
        for &n in sizes {
            let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let want = (n * n.saturating_sub(1) / 2) as f32;
            assert_eq!(super::stream_sum(&data), want, "n = {n}");
        }
    }
}
