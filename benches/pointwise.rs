//! Criterion benchmarks of the element-wise, normalization, embedding and optimizer kernels on
//! GPT-2 small training shapes (N = B*T = 4096 rows, C = 768, GELU on 4096 x 3072, V = 50257;
//! GELU and the encoder also at C = 384 with B*T = 8192).
//! Every kernel streams memory, so throughput is in bytes: each buffer the kernel reads counted
//! once and each it writes counted once (a read-modify-write buffer twice). The `stream` group
//! measures what this machine's memory gives a plain read and a plain copy, the yardstick the
//! kernels are held to, on buffers far larger than any last-level cache (see [`STREAM`]).

use cllm::engine::huge_pages;
use cllm::kernels::{adamw, bias, embedding, gelu, layernorm, residual};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// GPT-2 small: B*T rows, C channels, 4*C MLP width, vocabulary, positions used.
const N: usize = 4096;
const C: usize = 768;
const H: usize = 4 * C;
const V: usize = 50257;
const B: usize = 4;
const T: usize = 1024;
/// AdamW and the clipping kernels run on 10M parameters (GPT-2 small has 124M; the kernels are
/// per-element, so 10M shows the same rate; its 40 MB per buffer fits a last-level cache of
/// 50–60 MiB when only one or two are touched, as scale and sum of squares do).
const P: usize = 10_000_000;
const F: u64 = 4; // bytes per f32
/// Floats per buffer of the `stream` group: 256 MiB, as `cllm-bench peak`'s read probe. A
/// yardstick that fits the last-level cache measures the cache: on a Xeon guest whose reads ran at
/// 26 GB/s up to 48 MiB and at DRAM's 13.5–14.8 from 96 MiB on, 40 MB buffers read and copied at
/// twice what memory gives. glibc copies buffers this large with streaming stores, so the copy
/// moves each byte once each way, with no read for ownership before the writes; it is the
/// faster of the two and the one the kernels are held to.
const STREAM: usize = 64 << 20;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = zeros(n);
    v.iter_mut().for_each(|x| *x = rng.gen_range(-1.0f32..1.0));
    v
}

/// Buffers on huge pages, as the engine's arenas are (`cllm::engine::huge_pages`).
fn zeros(n: usize) -> Vec<f32> {
    huge_pages::zeroed(n)
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g
}

fn bench_stream(c: &mut Criterion) {
    let src = random(STREAM, 1);
    let mut dst = zeros(STREAM);
    let mut g = group(c, "stream");
    g.throughput(Throughput::Bytes(STREAM as u64 * F));
    g.bench_function("read/256MiB", |b| {
        // XOR of the bits into 16 lanes: associative integer work the compiler vectorizes, so
        // nothing but the loads limits it.
        b.iter(|| {
            let mut acc = [0u32; 16];
            for chunk in black_box(&src).chunks_exact(16) {
                for (a, x) in acc.iter_mut().zip(chunk) {
                    *a ^= x.to_bits();
                }
            }
            acc
        })
    });
    g.throughput(Throughput::Bytes(2 * STREAM as u64 * F));
    g.bench_function("copy/256MiB", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        })
    });
    g.finish();
}

fn bench_residual(c: &mut Criterion) {
    // (B*T, C): one residual stream of the GPT-2 small training step.
    let (a, b) = (random(N * C, 2), random(N * C, 3));
    let mut out = zeros(N * C);
    let mut g = group(c, "residual");
    g.throughput(Throughput::Bytes(3 * (N * C) as u64 * F));
    g.bench_function("fwd/4096x768", |bench| {
        bench
            .iter(|| residual::residual_fwd(&mut out, black_box(&a), black_box(&b), N * C).unwrap())
    });
    g.finish();
}

fn bench_bias(c: &mut Criterion) {
    let (nc, cb) = ((N * C) as u64, C as u64);
    let bias_v = random(C, 2);
    let mut out = random(N * C, 3);
    let mut dbias = zeros(C);
    let mut g = group(c, "bias");
    g.throughput(Throughput::Bytes((2 * nc + cb) * F));
    g.bench_function("fwd/4096x768", |b| {
        b.iter(|| bias::bias_fwd(&mut out, &bias_v, N, C).unwrap())
    });
    g.throughput(Throughput::Bytes((nc + 2 * cb) * F));
    g.bench_function("bwd/4096x768", |b| {
        b.iter(|| bias::bias_bwd(&mut dbias, &out, N, C).unwrap())
    });
    g.finish();
}

fn bench_layernorm(c: &mut Criterion) {
    let (nc, n, cc) = ((N * C) as u64, N as u64, C as u64);
    let inp = random(N * C, 4);
    let (w, bb) = (random(C, 5), random(C, 6));
    let mut out = zeros(N * C);
    let (mut mean, mut rstd) = (zeros(N), zeros(N));
    let dout = random(N * C, 7);
    let mut dinp = zeros(N * C);
    let (mut dw, mut db) = (zeros(C), zeros(C));
    let eps = layernorm::GPT2_EPS;
    let mut g = group(c, "layernorm");
    // inp, out; weight, bias; mean, rstd.
    g.throughput(Throughput::Bytes((2 * nc + 2 * cc + 2 * n) * F));
    g.bench_function("fwd/4096x768", |b| {
        b.iter(|| {
            layernorm::layernorm_fwd(&mut out, &mut mean, &mut rstd, &inp, &w, &bb, N, C, eps)
                .unwrap()
        })
    });
    // dout, inp, dinp twice; weight, dweight and dbias twice; mean, rstd.
    g.throughput(Throughput::Bytes((4 * nc + 5 * cc + 2 * n) * F));
    g.bench_function("bwd/4096x768", |b| {
        b.iter(|| {
            layernorm::layernorm_bwd(
                &mut dinp, &mut dw, &mut db, &dout, &inp, &w, &mean, &rstd, N, C,
            )
            .unwrap()
        })
    });
    g.finish();
}

/// GELU and the encoder also run on the C = 384 model's widest training batch (B*T = 8 * 1024).
const SMALL_C: usize = 384;

fn bench_gelu(c: &mut Criterion) {
    let mut g = group(c, "gelu");
    // (B*T, 4*C) for C = 768 and C = 384: 50 MB per buffer, past the last-level cache with the
    // buffer beside it. The forward's output is over `gelu::stream_threshold`: streaming stores.
    for (rows, cols) in [(N, H), (8 * T, 4 * SMALL_C)] {
        let n = rows * cols;
        // Scaled in place: a collected copy would leave the huge pages.
        let mut inp = random(n, 8);
        inp.iter_mut().for_each(|x| *x *= 4.0);
        let dout = random(n, 9);
        let mut out = zeros(n);
        let mut dinp = zeros(n);
        g.throughput(Throughput::Bytes(2 * n as u64 * F));
        g.bench_function(format!("fwd/{rows}x{cols}"), |b| {
            b.iter(|| gelu::gelu_fwd(&mut out, &inp, n).unwrap())
        });
        g.throughput(Throughput::Bytes(4 * n as u64 * F));
        g.bench_function(format!("bwd/{rows}x{cols}"), |b| {
            b.iter(|| gelu::gelu_bwd(&mut dinp, &inp, &dout, n).unwrap())
        });
        // Reads d and inp, writes d. Each call starts from a fresh copy of dout (untimed): scaled
        // again and again in place, the gradient would decay into subnormals.
        g.throughput(Throughput::Bytes(3 * n as u64 * F));
        g.bench_function(format!("bwd_inplace/{rows}x{cols}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    dinp.copy_from_slice(&dout);
                    let start = Instant::now();
                    gelu::gelu_bwd_inplace(&mut dinp, &inp, n).unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn bench_encoder(c: &mut Criterion) {
    let mut g = group(c, "encoder");
    for (bb, cc) in [(B, C), (8, SMALL_C)] {
        let (nc, tc, n) = ((bb * T * cc) as u64, (T * cc) as u64, (bb * T) as u64);
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        let tokens: Vec<u32> = (0..bb * T).map(|_| rng.gen_range(0..V as u32)).collect();
        let wte = random(V * cc, 11);
        let wpe = random(T * cc, 12);
        let mut out = zeros(bb * T * cc);
        let mut dwte = zeros(V * cc);
        let mut dwpe = zeros(T * cc);
        // tokens; the B*T rows of wte gathered; wpe; out.
        g.throughput(Throughput::Bytes((n + nc + tc + nc) * F));
        g.bench_function(format!("fwd/{bb}x{T}x{cc}"), |b| {
            b.iter(|| embedding::encoder_fwd(&mut out, &tokens, &wte, &wpe, bb, T, cc, V).unwrap())
        });
        // tokens; dout; the B*T rows of dwte twice; dwpe twice.
        g.throughput(Throughput::Bytes((n + nc + 2 * nc + 2 * tc) * F));
        g.bench_function(format!("bwd/{bb}x{T}x{cc}"), |b| {
            b.iter(|| {
                embedding::encoder_bwd(&mut dwte, &mut dwpe, &out, &tokens, bb, T, cc, V).unwrap()
            })
        });
    }
    g.finish();
}

fn bench_adamw(c: &mut Criterion) {
    let p = P as u64;
    let mut params = random(P, 13);
    let grads = random(P, 14);
    let mut m = zeros(P);
    let mut v = zeros(P);
    let h = adamw::AdamWHparams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 1,
    };
    let mut g = group(c, "adamw");
    // params, m, v read and written; grads read.
    g.throughput(Throughput::Bytes(7 * p * F));
    g.bench_function("step/10M", |b| {
        b.iter(|| adamw::adamw_step(&mut params, &grads, &mut m, &mut v, P, &h).unwrap())
    });
    g.throughput(Throughput::Bytes(2 * p * F));
    g.bench_function("scale/10M", |b| {
        b.iter(|| adamw::scale(&mut m, black_box(1.0), P).unwrap())
    });
    g.throughput(Throughput::Bytes(p * F));
    g.bench_function("sumsq/10M", |b| {
        b.iter(|| adamw::sumsq(black_box(&grads), P).unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_stream,
    bench_residual,
    bench_bias,
    bench_layernorm,
    bench_gelu,
    bench_encoder,
    bench_adamw
);
criterion_main!(benches);
