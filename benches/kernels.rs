//! Criterion benchmarks of the kernels on GPT shapes. Throughput is reported in the unit each
//! kernel is bound by: FLOPs for GEMM and attention, bytes moved for the streaming kernels.

use cllm::kernels::residual;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_residual(c: &mut Criterion) {
    // (B*T, C) = (4096, 768): one residual stream of the GPT-2 small training step.
    let n = 4096 * 768;
    let a = vec![1.0f32; n];
    let b = vec![2.0f32; n];
    let mut out = vec![0.0f32; n];
    let mut g = c.benchmark_group("residual");
    g.throughput(Throughput::Bytes((3 * n * 4) as u64));
    g.bench_function("fwd/4096x768", |bench| {
        bench.iter(|| residual::residual_fwd(&mut out, &a, &b, n).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_residual);
criterion_main!(benches);
