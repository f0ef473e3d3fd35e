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

dispatch! {
    /// Sum `data` with several vector accumulators: a read stream for measuring bandwidth.
    pub fn stream_sum(data: &[f32]) -> f32 = stream_sum_generic;
}

#[inline(always)]
fn stream_sum_generic<S: Simd>(s: S, data: &[f32]) -> f32 {
    let step = 4 * S::LANES;
    let mut acc = [s.splat(0.0); 4];
    let mut chunks = data.chunks_exact(step);
    for chunk in &mut chunks {
        for (j, x) in acc.iter_mut().enumerate() {
            // SAFETY: `chunk` has 4 * LANES floats, so lane block j is in bounds.
            *x = s.add(*x, unsafe { s.load(chunk.as_ptr().add(j * S::LANES)) });
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().fold(tail, |t, &x| t + s.reduce_add(x))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_sum_adds_everything() {
        let data: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        assert_eq!(super::stream_sum(&data), 499_500.0);
    }
}
