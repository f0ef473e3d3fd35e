//! Criterion benchmarks of `sgemm` on the GPT-2 small training shapes, every layout.
//!
//! Throughput is `Throughput::Elements(2·M·N·K)` with 1 element = 1 FLOP (one multiply or one
//! add of the M·N·K multiply-adds), so criterion's "elements/s" in the group "sgemm_flops" read as
//! FLOP/s. Shapes are M×K×N: A is M×K, B is K×N, C is M×N; NT and TN are the backward layouts.

use cllm::kernels::gemm::{self, GemmScratch, Layout};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

/// (M, K, N): a 1024³ square, then (B·T = 4096) × C-sized projections of GPT-2 small (C = 768):
/// attention output (768→768), QKV (768→2304), MLP up (768→3072) and MLP down (3072→768).
const SHAPES: &[(usize, usize, usize)] = &[
    (1024, 1024, 1024),
    (4096, 768, 768),
    (4096, 768, 2304),
    (4096, 768, 3072),
    (4096, 3072, 768),
];

fn bench_sgemm(c: &mut Criterion) {
    let mut ws = GemmScratch::new();
    let mut g = c.benchmark_group("sgemm_flops");
    // Each call takes 30–300 ms: few samples, short windows.
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for &(m, k, n) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.125 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.125 - 0.75).collect();
        let mut out = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for layout in Layout::ALL {
            let id = BenchmarkId::new(layout.name(), format!("{m}x{k}x{n}"));
            g.bench_function(id, |bench| {
                bench.iter(|| {
                    gemm::sgemm_contiguous(&mut ws, layout, m, k, n, &a, &b, &mut out, false)
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_sgemm);
criterion_main!(benches);
