//! Criterion benchmarks of causal attention and the fused softmax + cross-entropy.
//!
//! Attention is labelled in FLOPs. One causal (T, T, HS) product (QKᵀ, P·V, and in the backward
//! dout·Vᵀ, dS·K, dSᵀ·Q, Pᵀ·dout) costs 2·HS multiply-adds... i.e. 2·HS FLOPs per (query, key)
//! pair with key ≤ query, ≈ T²/2 pairs per head: ≈ B·NH·T²·HS FLOPs, half of the dense product.
//! Forward = 2 products (QKᵀ and P·V): 2·B·NH·T²·HS. Backward = 5 (QKᵀ recomputed, dout·Vᵀ, dS·K,
//! dSᵀ·Q, Pᵀ·dout): 5·B·NH·T²·HS. The exps and the softmax bookkeeping are not counted.
//! The loss is labelled in bytes of memory traffic: the forward reads the (N, V) logits once,
//! N·V·4 bytes; the fused forward + in-place backward reads them once and writes their gradient
//! once, 2·N·V·4 bytes (its three passes over a row meet the row in L2).
//! Decoding's attention of one query over a KV cache is labelled in bytes: the keys and values it
//! reads, 2·t·HS·4.
//! Criterion prints the FLOP counts as "elem/s": read them as FLOP/s.

use cllm::engine::huge_pages::HugeBuf;
use cllm::kernels::attention::{self, attention_scratch_len};
use cllm::kernels::kv_attention;
use cllm::kernels::loss;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn pseudo_random(n: usize, seed: u32, amp: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            amp * ((x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
        })
        .collect()
}

fn bench_attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    g.sample_size(10);
    // (B, T, NH, HS): the training config of the L=6 benchmark, and GPT-2 small.
    for (b, t, nh, hs) in [(8, 256, 6, 64), (4, 1024, 12, 64)] {
        let ch = nh * hs;
        // One arena from a huge-page boundary, the buffers back to back as the engine's
        // activations lie (on small pages the timing moved with the physical pages a run got;
        // see huge_pages::HugeBuf).
        let lens = [
            b * t * 3 * ch, // qkv (B, T, 3C)
            b * t * ch,     // dout (B, T, C)
            b * t * ch,     // out (B, T, C)
            b * nh * t,     // lse (B, NH, T)
            b * t * 3 * ch, // dqkv (B, T, 3C)
            attention_scratch_len(t, hs),
        ];
        let mut arena = HugeBuf::zeroed(lens.iter().sum());
        let [qkv, dout, out, lse, dqkv, scratch] = arena.split_into(lens);
        qkv.copy_from_slice(&pseudo_random(lens[0], 1, 1.0));
        dout.copy_from_slice(&pseudo_random(lens[1], 2, 1.0));
        let (qkv, dout) = (&*qkv, &*dout);
        let pairs = (b * nh * t * t) as u64; // 2·(T²/2) causal pairs per head, times HS·2 FLOPs
        let name = format!("B{b}_T{t}_NH{nh}_HS{hs}");
        g.throughput(Throughput::Elements(2 * pairs * hs as u64));
        g.bench_function(format!("fwd_flops/{name}"), |bench| {
            bench.iter(|| attention::attention_fwd(out, lse, qkv, scratch, b, t, ch, nh).unwrap())
        });
        g.throughput(Throughput::Elements(5 * pairs * hs as u64));
        // Written, not accumulated, as training calls it.
        g.bench_function(format!("bwd_flops/{name}"), |bench| {
            bench.iter(|| {
                attention::attention_bwd(dqkv, dout, qkv, out, lse, scratch, b, t, ch, nh, false)
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn bench_loss(c: &mut Criterion) {
    // (N, V, Vp): B·T = 2048 positions of GPT-2's vocabulary padded to 50304.
    let (n, v, vp) = (2048, 50257, 50304);
    let logits = pseudo_random(n * vp, 3, 8.0); // (N, Vp)
    let targets: Vec<u32> = (0..n as u32).map(|i| i * 7919 % v as u32).collect(); // (N)
    let dloss = vec![1.0 / n as f32; n]; // (N)
    let mut losses = vec![0.0f32; n]; // (N)
    let mut work = logits.clone(); // (N, Vp)
    let mut g = c.benchmark_group("softmax_xent");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((2 * n * v * 4) as u64));
    g.bench_function("fwd_bwd_inplace_bytes/N2048_V50257_Vp50304", |bench| {
        // Each call takes the previous call's gradient as its logits: the work per element does
        // not depend on the values.
        bench.iter(|| {
            loss::softmax_xent_fwd_bwd_inplace(&mut work, &mut losses, &targets, &dloss, n, v, vp)
                .unwrap()
        })
    });
    g.throughput(Throughput::Bytes((n * v * 4) as u64));
    g.bench_function("fwd_bytes/N2048_V50257_Vp50304", |bench| {
        bench.iter(|| loss::softmax_xent_fwd(&mut losses, &logits, &targets, n, v, vp).unwrap())
    });
    g.finish();
}

fn bench_attend_cached(c: &mut Criterion) {
    // Four decode steps of GPT-2 small at batch 8 with 192 cached positions (HS = 64): one query
    // per (step, layer, row, head), 4 · 12 · 8 · 12 = 4608 heads of keys and values, 453 MB in
    // all, so each head's cache comes from memory as in decoding (a quarter of it, 113 MB, still
    // ran 15 % faster, partly from the last level cache); and one head over and over, from L2.
    let (hs, t, heads) = (64, 192, 4 * 12 * 8 * 12);
    let head = t * hs;
    let mut arena = HugeBuf::zeroed(2 * heads * head);
    let [keys, values] = arena.split_into([heads * head, heads * head]); // (heads, t, HS) each
    keys.copy_from_slice(&pseudo_random(heads * head, 4, 1.0));
    values.copy_from_slice(&pseudo_random(heads * head, 5, 1.0));
    let q = pseudo_random(hs, 6, 1.0); // (HS)
    let mut out = vec![0.0f32; hs]; // (HS)
    let mut scores = vec![0.0f32; t]; // (t)
    let scale = 1.0 / (hs as f32).sqrt();
    let mut g = c.benchmark_group("attend_cached");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((2 * heads * head * 4) as u64));
    g.bench_function(format!("memory_bytes/heads{heads}_t{t}_HS{hs}"), |bench| {
        bench.iter(|| {
            for (k, v) in keys.chunks_exact(head).zip(values.chunks_exact(head)) {
                kv_attention::attend_cached(&mut out, &q, k, v, scale, &mut scores).unwrap();
                std::hint::black_box(&mut out);
            }
        })
    });
    g.throughput(Throughput::Bytes((2 * head * 4) as u64));
    g.bench_function(format!("l2_bytes/t{t}_HS{hs}"), |bench| {
        let (k, v) = (&keys[..head], &values[..head]);
        bench.iter(|| {
            kv_attention::attend_cached(&mut out, &q, k, v, scale, &mut scores).unwrap();
            std::hint::black_box(&mut out);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_attention, bench_loss, bench_attend_cached);
criterion_main!(benches);
