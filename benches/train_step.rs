//! One training step of the small GPT (L=6, H=6, C=384, T=256, B=8) at V=65 and V=50257, on 1
//! and 2 sphere workers: tokens/s (median of the timed steps), MFU against this run's measured
//! FMA peak, the planned arenas and the peak RSS. The PyTorch peer on the same shapes:
//! `python ../shared/peers/torch_gpt_bench.py train THREADS VOCAB`.
//!
//! `cargo bench --bench train_step [-- V THREADS [B T L]]`; CLLM_BENCH_STEPS sets the timed steps (6),
//! CLLM_BENCH_WARMUP the untimed ones (2), CLLM_BENCH_PEAK a known peak in GFLOP/s. Smaller B, T, L are for profiling under callgrind.

use std::time::Instant;

use cllm::engine::model::GptConfig;
use cllm::engine::sphere_tree::SphereTree;
use cllm::engine::spheres::Spheres;
use cllm::engine::topology::allowed_cpus;
use cllm::engine::train::bench::{run_train_bench, TrainBench};
use cllm::kernels::probe;

fn fma_peak_gflops() -> f64 {
    let iters = 20_000_000;
    probe::fma_loop(iters / 10);
    (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(probe::fma_loop(iters));
            probe::fma_loop_flops(iters) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let vocabs: Vec<usize> = match args.first() {
        Some(v) => vec![v.parse().expect("V")],
        None => vec![65, 50257],
    };
    let threads: Vec<usize> = match args.get(1) {
        Some(n) => vec![n.parse().expect("THREADS")],
        None => vec![1, 2],
    };
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let arg = |i: usize, d: usize| args.get(i).map_or(d, |a| a.parse().expect("a number"));
    let (steps, warmup) = (env("CLLM_BENCH_STEPS", 6), env("CLLM_BENCH_WARMUP", 2));
    let (batch, seq_len, layers) = (arg(2, 8), arg(3, 256), arg(4, 6));
    // CLLM_BENCH_PEAK=GFLOPS skips the measurement (e.g. under callgrind).
    let peak = std::env::var("CLLM_BENCH_PEAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(fma_peak_gflops);
    println!("FMA peak {peak:.1} GFLOP/s per core (measured now)");
    let cpus = allowed_cpus().expect("allowed CPUs");
    for &v in &vocabs {
        for &n in &threads {
            let picked: Vec<usize> = (0..n).map(|i| cpus[i % cpus.len()]).collect();
            let spheres = Spheres::new(&SphereTree::flat(&picked)).expect("spheres");
            let spec = TrainBench {
                model: GptConfig {
                    vocab_size: v,
                    n_positions: seq_len,
                    n_embd: 384,
                    n_layer: layers,
                    n_head: 6,
                },
                batch,
                seq_len,
                steps,
                warmup,
            };
            let r = run_train_bench(&spec, spheres).expect("training runs");
            let ms: Vec<String> = r
                .step_seconds
                .iter()
                .map(|s| format!("{:.0}", s * 1e3))
                .collect();
            println!(
                "train V={v} threads={n} params={:.2}M: {:.0} tok/s, MFU {:.1}% ({:.0} MFLOP/tok), steps [{}] ms, loss {:.3}; planned {:.0} MiB (act/worker {:.0} MiB), peak RSS {:.0} MiB",
                r.params as f64 / 1e6,
                r.tokens_per_s,
                100.0 * r.mfu(peak),
                r.flops_per_token / 1e6,
                ms.join(" "),
                r.last_loss,
                r.memory.total as f64 / (1 << 20) as f64,
                r.memory.activations_per_worker as f64 / (1 << 20) as f64,
                r.peak_rss_bytes.unwrap_or(0) as f64 / (1 << 20) as f64,
            );
        }
    }
}
