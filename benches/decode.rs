//! Decoding GPT-2 124M-shaped random weights: prefill 128 tokens, decode 128, batch 1 and 8, on 1
//! and 2 workers; prints tokens/s and the fraction of the memory-bandwidth bound (measured in
//! the same run), then lets criterion time single decode steps.

use cllm_engine::generate::bench::{self, gpt2_124m};
use cllm_engine::generate::Decoder;
use cllm_engine::sphere_tree::SphereTree;
use cllm_engine::spheres::Spheres;
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::{Duration, Instant};

fn decode(c: &mut Criterion) {
    let model = bench::random_model(gpt2_124m(), 1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("decode");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for threads in [1, 2].into_iter().filter(|&t| t <= cores) {
        let cpus: Vec<usize> = (0..threads).collect();
        let pool = Spheres::new(&SphereTree::flat(&cpus)).expect("worker pool");
        for batch in [1, 8] {
            let r = bench::decode(&model, Some(&pool), batch, 128, 128, 512 << 20)
                .expect("decode bench");
            eprintln!(
                "gpt2-124m threads {threads} batch {batch}: prefill {:.1} tok/s, decode {:.1} tok/s ({:.2} ms/step), bandwidth {:.2} GB/s, bound {:.1} steps/s, {:.1}% of the bound",
                r.prefill_tokens_per_s,
                r.decode_tokens_per_s,
                r.decode_ms_per_step,
                r.bandwidth_bytes_per_s / 1e9,
                r.bound_steps_per_s,
                100.0 * r.bandwidth_fraction
            );
            let mut dec = Decoder::new(&model, Some(&pool), batch, 256).expect("decoder");
            let tokens = vec![11u32; batch * 16];
            let pads = vec![0; batch];
            group.bench_function(format!("step/b{batch}/t{threads}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if dec.len() + 1 > dec.ctx() {
                            dec.prefill(&tokens, &pads).expect("prefill");
                        }
                        if dec.is_empty() {
                            dec.prefill(&tokens, &pads).expect("prefill");
                        }
                        let start = Instant::now();
                        dec.step(&tokens[..batch]).expect("step");
                        total += start.elapsed();
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
