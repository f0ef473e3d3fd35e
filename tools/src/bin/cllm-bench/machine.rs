//! What the machine can do, measured in the same run as the benchmark it is compared to.

use cllm_kernels::probe;
use std::time::Instant;

/// One core's f32 FMA peak on the active kernel path, in GFLOP/s: the best of several timed runs
/// of an independent-FMA loop (the best, not the median, since a peak is what no run can exceed).
pub fn fma_peak_gflops() -> f64 {
    let iters = 20_000_000;
    probe::fma_loop(iters / 10); // warm up clocks
    (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(probe::fma_loop(iters));
            probe::fma_loop_flops(iters) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// Single-thread read bandwidth in GB/s: the median of timed vector sums over a 256 MiB buffer,
/// far larger than any cache here.
pub fn read_bandwidth_gbs() -> f64 {
    let data = vec![1.0f32; 64 << 20];
    probe::stream_sum(&data);
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(probe::stream_sum(&data));
            (data.len() * 4) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    crate::median(&mut runs)
}
