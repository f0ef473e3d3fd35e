//! cllm-bench: one-command benchmarks that measure the machine's own limits in the same run.

mod compare;
mod data;
mod gemm;
mod machine;
mod pool;
mod spheres;
mod suite;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cllm_engine::generate;
use cllm_engine::model::GptConfig;
use cllm_engine::topology::Topology;
use cllm_engine::train::bench::{run_train_bench, TrainBench};
use pool::Pool;
use serde_json::json;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cllm-bench",
    about = "Benchmark cllm's kernels against this machine's measured limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// sgemm GFLOP/s per shape and layout, with the % of this core's FMA peak measured in the same run.
    Gemm {
        /// M×K×N, repeatable (default: the GPT-2 small training shapes and the LM head).
        #[arg(long = "shape", value_name = "MxKxN")]
        shapes: Vec<String>,
        /// nn (A·B), nt (A·Bᵀ) or tn (Aᵀ·B), repeatable (default: nn).
        #[arg(long = "layout", value_name = "nn|nt|tn")]
        layouts: Vec<String>,
        /// Worker threads: 1 runs the single-threaded sgemm on the calling thread; more run the
        /// parallel sgemm on the first N sphere workers (default: CLLM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed runs per entry after one warm-up (0: as many as fit in about 2 s, 3 to 15).
        #[arg(long, default_value_t = 0)]
        reps: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// GB/s of the sphere workers' tree reduction (sum of every worker's buffer), checked bit for
    /// bit across repeats.
    Reduce {
        /// Floats per worker buffer.
        #[arg(long, default_value_t = 30_000_000, value_parser = positive)]
        floats: usize,
        /// Workers: the first N of the plan (default: CLLM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed reductions after one warm-up.
        #[arg(long, default_value_t = 5, value_parser = positive)]
        reps: usize,
        #[arg(long)]
        json: bool,
    },
    /// Round-trip latency of the sphere workers' tree barrier.
    Barrier {
        /// Workers: the first N of the plan (default: CLLM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Barriers per timed run (the mean is reported; the median of 7 runs).
        #[arg(long, default_value_t = 100_000)]
        iters: u32,
        #[arg(long)]
        json: bool,
    },
    /// The detected machine and the sphere tree laid over it (CLLM_THREADS caps the workers).
    Topology {
        /// Plan one worker per hardware thread instead of one per core.
        #[arg(long)]
        smt: bool,
        #[arg(long)]
        json: bool,
    },
    /// The kernel path in use and the ones this CPU has.
    Isa {
        /// Print only the available paths, space-separated (for scripts).
        #[arg(long)]
        available: bool,
    },
    /// Training tokens/s (median step after warm-up) and MFU against the FMA peak measured now.
    Train {
        #[arg(long, default_value_t = 65, value_parser = positive)]
        vocab: usize,
        #[arg(long, default_value_t = 6, value_parser = positive)]
        layers: usize,
        #[arg(long, default_value_t = 6, value_parser = positive)]
        heads: usize,
        /// Embedding width (a multiple of --heads).
        #[arg(long, default_value_t = 384, value_parser = positive)]
        embd: usize,
        #[arg(long, default_value_t = 256, value_parser = positive)]
        seq: usize,
        #[arg(long, default_value_t = 8, value_parser = positive)]
        batch: usize,
        /// Worker threads (default: CLLM_THREADS, else one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed steps after 2 warm-up steps.
        #[arg(long, default_value_t = 5, value_parser = positive)]
        steps: usize,
        #[arg(long)]
        json: bool,
    },
    /// Prefill and decode tokens/s of a random-weight model, and the fraction of the memory-bandwidth
    /// bound (weight bytes per step over the read bandwidth measured in the same run).
    Decode {
        /// Model shape: gpt2-124m (V=50257, C=768, L=12, NH=12, maxT=1024).
        #[arg(long, default_value = "gpt2-124m")]
        preset: String,
        #[arg(long)]
        threads: Option<usize>,
        /// Rows decoded together (their KV cache must fit in memory).
        #[arg(long, default_value_t = 1, value_parser = positive)]
        batch: usize,
        /// Prompt tokens per row (--prompt + --new-tokens at most the model's 1024 positions).
        #[arg(long, default_value_t = 128, value_parser = positive)]
        prompt: usize,
        #[arg(long, default_value_t = 128, value_parser = positive)]
        new_tokens: usize,
        #[arg(long)]
        json: bool,
    },
    /// GPT-2 encoding MB/s over a corpus (one document per file), single thread or on N workers.
    Tokenize {
        /// A file, directory or glob of text [default: ../shared/corpora/shakespeare, relative to
        /// the working directory, so found from the repository root; elsewhere, without --input,
        /// the run stops and asks for one].
        #[arg(long, value_name = "FILE|DIR|GLOB")]
        input: Option<String>,
        /// Encode on N sphere workers (default: one thread, no pool).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 5, value_parser = positive)]
        passes: usize,
        #[arg(long)]
        json: bool,
    },
    /// The loader's GB/s serving shuffled (B, T) windows from page-cache shards.
    Loader {
        #[arg(long, default_value_t = 8, value_parser = positive)]
        batch: usize,
        /// Tokens per row (below the 8 Mi tokens of each shard served).
        #[arg(long, default_value_t = 256, value_parser = positive)]
        seq: usize,
        /// Timed batches.
        #[arg(long, default_value_t = 20000, value_parser = positive)]
        batches: usize,
        #[arg(long)]
        json: bool,
    },
    /// This core's FMA peak (GFLOP/s) on the active path, the GEMM microkernel alone (the ceiling of
    /// the blocked GEMM) and the single-thread read bandwidth (GB/s); with --threads N, the FMA
    /// peak and read bandwidth on N sphere workers at once (cores share power and clocks, so the
    /// per-core peak with all of them busy is what a parallel kernel is measured against).
    Peak {
        /// Workers: 1 (default) probes the calling thread; more probe the first N sphere workers,
        /// all at once.
        #[arg(long, default_value_t = 1, value_parser = positive)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// The regression suite: GEMM, attention, training steps, decoding, encoding and the loader,
    /// each a median of samples and a ratio to a reference probe measured in the same run
    /// (docs/REGRESSIONS.md).
    Suite {
        /// Smaller shapes and fewer tokens (about a minute on two cores).
        #[arg(long)]
        quick: bool,
        /// Print the JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write the JSON document to FILE (for `cllm-bench compare`).
        #[arg(long, value_name = "FILE")]
        out: Option<String>,
        /// Samples per entry.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Sphere workers for GEMM, training, decoding and encoding (default 1: the measurement a
        /// shared machine disturbs least; attention and the loader always run on one thread).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Run only these groups (comma-separated): gemm, attention, train, decode, tokenize, loader.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Free text kept in the document's machine block (e.g. what else ran at the time).
        #[arg(long)]
        note: Option<String>,
    },
    /// Compare two suite documents: a table, and exit status 1 when an entry regressed beyond the
    /// tolerance (2 for unreadable input).
    Compare {
        /// The suite document of the base (e.g. a committed baseline or the base commit's run).
        base: String,
        /// The suite document of the change.
        new: String,
        /// How much worse an entry's median may be (a percentage).
        #[arg(long, default_value = "5%")]
        tolerance: String,
        /// Judge on the ratio to the same-run reference or on the median value.
        #[arg(long, default_value = "ratio", value_name = "ratio|value")]
        by: String,
        /// Print the table but exit 0 even when something regressed.
        #[arg(long)]
        no_fail: bool,
    },
}

/// The corpus `cllm-bench tokenize` reads without --input, relative to the working directory
/// (the repository root, where docs/PERFORMANCE.md's figures were measured).
const DEFAULT_CORPUS: &str = "../shared/corpora/shakespeare";

/// Bytes `cllm-bench decode` streams to measure the read bandwidth.
const BANDWIDTH_BYTES: usize = 512 << 20;

/// A count that must be at least 1 (a median of no runs, or a decode of no tokens, means nothing).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

fn main() -> ExitCode {
    cllm_drivers::restore_sigpipe();
    let mut code = ExitCode::SUCCESS;
    cllm_drivers::exit_on_error(run().map(|c| code = c));
    code
}

fn run() -> Result<ExitCode> {
    let isa = cllm_kernels::isa::init()?;
    match Cli::parse().command {
        Command::Gemm {
            shapes,
            layouts,
            threads,
            reps,
            json,
        } => {
            let shapes = if shapes.is_empty() {
                gemm::DEFAULT_SHAPES.to_vec()
            } else {
                shapes
                    .iter()
                    .map(|s| gemm::parse_shape(s))
                    .collect::<Result<_>>()?
            };
            let layouts = if layouts.is_empty() {
                vec![cllm_kernels::gemm::Layout::NN]
            } else {
                layouts
                    .iter()
                    .map(|s| gemm::parse_layout(s))
                    .collect::<Result<_>>()?
            };
            let pool = match threads {
                Some(1) => None,
                _ => Some(Pool::start(threads)?).filter(|p| p.count() > 1),
            };
            let mut runner = match &pool {
                None => gemm::Runner::Single(cllm_kernels::gemm::GemmScratch::new()),
                Some(p) => {
                    gemm::Runner::Pool(p, cllm_engine::par_gemm::ParGemmScratch::new(&p.spheres)?)
                }
            };
            let threads = pool.as_ref().map_or(1, Pool::count);
            // The probe is the best of a few runs a fraction of a second long, so a slow moment
            // of a shared host can take all of them: it runs again after each entry, and an
            // entry is measured against the best reading so far (a probe that read 209 GFLOP/s
            // against 240-246 around it once put a GEMM at 107 % of "peak").
            let mut peak = machine::fma_peak_gflops();
            if !json {
                println!(
                    "isa {isa}, threads {threads}, FMA peak {peak:.1} GFLOP/s per core (measured \
                     now, and again after each entry: % peak uses the best reading so far)"
                );
                match &pool {
                    Some(p) => println!("{}", p.summary()),
                    None => println!("single-threaded sgemm on the calling thread"),
                }
                println!("GF/cpu-s: GFLOP per second of CPU time the process got (all threads)");
                println!(
                    "{:>18} {:>6} {:>10} {:>10} {:>8} {:>6} {:>9}",
                    "MxKxN", "layout", "median ms", "GFLOP/s", "% peak", "grid", "GF/cpu-s"
                );
            }
            for &shape in &shapes {
                for &layout in &layouts {
                    let reps = if reps > 0 {
                        reps
                    } else {
                        auto_reps(shape, threads)
                    };
                    let r = gemm::measure(&mut runner, shape, layout, reps)?;
                    peak = peak.max(machine::fma_peak_gflops());
                    let (m, k, n) = r.shape;
                    let grid = match &runner {
                        gemm::Runner::Pool(p, ws) => {
                            let g = cllm_engine::par_gemm::Grid::choose(
                                shape,
                                p.count(),
                                ws.blocking(),
                                cllm_engine::par_gemm::TILE_FLOATS,
                            );
                            format!("{}x{}", g.rows, g.cols)
                        }
                        gemm::Runner::Single(_) => "1x1".to_string(),
                    };
                    let pct = 100.0 * r.gflops / (peak * r.threads as f64);
                    if json {
                        println!(
                            "{}",
                            json!({
                                "bench": "gemm", "shape": format!("{m}x{k}x{n}"), "layout": gemm::layout_name(layout),
                                "threads": r.threads, "isa": isa.name(), "gflops": round2(r.gflops),
                                "peak_gflops": round2(peak * r.threads as f64), "pct_peak": round2(pct),
                                "median_ms": round2(r.median_s * 1e3), "reps": reps, "grid": grid,
                                "cpus": pool.as_ref().map(Pool::cpus),
                                "gflops_per_cpu_s": r.gflops_per_cpu_s.map(round2),
                            })
                        );
                    } else {
                        println!(
                            "{:>18} {:>6} {:>10.2} {:>10.1} {:>7.1}% {:>6} {:>9}",
                            format!("{m}x{k}x{n}"),
                            gemm::layout_name(layout),
                            r.median_s * 1e3,
                            r.gflops,
                            pct,
                            grid,
                            r.gflops_per_cpu_s
                                .map_or_else(|| "-".to_string(), |g| format!("{g:.1}"))
                        );
                    }
                }
            }
        }
        Command::Reduce {
            floats,
            threads,
            reps,
            json,
        } => {
            let pool = Pool::start(threads)?;
            machine::check_memory(
                &format!("--floats {floats} x {} workers", pool.count()),
                machine::product(&[floats, pool.count(), 4]),
                "use a smaller --floats",
            )?;
            let r = spheres::measure_reduce(&pool, floats, reps)?;
            let gbs = r.bytes as f64 / r.median_s / 1e9;
            if json {
                println!(
                    "{}",
                    json!({
                        "bench": "reduce", "threads": pool.count(), "floats_per_worker": floats,
                        "bytes_per_reduce": r.bytes, "median_ms": round2(r.median_s * 1e3),
                        "gbs": round2(gbs), "bit_identical": r.bit_identical, "reps": reps,
                        "cpus": pool.cpus(),
                    })
                );
            } else if pool.count() == 1 {
                println!("{}", pool.summary());
                println!(
                    "reduce: one worker, nothing to move ({:.2} ms for the job)",
                    r.median_s * 1e3
                );
            } else {
                println!("{}", pool.summary());
                println!(
                    "reduce {floats} floats x {} workers: {:.2} ms median of {}, {gbs:.1} GB/s \
                     ({:.0} MB read + written per reduce: every group reads its children's sums and \
                     writes its first child's buffer once); output bit-identical across repeats: {}",
                    pool.count(),
                    r.median_s * 1e3,
                    reps,
                    r.bytes as f64 / 1e6,
                    if r.bit_identical { "yes" } else { "NO" }
                );
            }
            if !r.bit_identical {
                bail!("the tree reduction gave different bits on repeats");
            }
        }
        Command::Barrier {
            threads,
            iters,
            json,
        } => {
            let pool = Pool::start(threads)?;
            let ns = spheres::measure_barrier(&pool, iters, 7)?;
            if json {
                println!(
                    "{}",
                    json!({
                        "bench": "barrier", "threads": pool.count(), "iters": iters,
                        "round_trip_ns": round2(ns), "cpus": pool.cpus(),
                    })
                );
            } else {
                println!("{}", pool.summary());
                println!(
                    "barrier round trip, {} worker{}: {ns:.0} ns (mean of {iters}, median of 7 runs)",
                    pool.count(),
                    if pool.count() == 1 { "" } else { "s" }
                );
            }
        }
        Command::Topology { smt, json } => {
            let detected = Topology::detect();
            let plan = detected.topology.plan_from_env(smt);
            for w in detected.warnings.iter().chain(&plan.warnings) {
                eprintln!("warning: {w}");
            }
            if json {
                println!("{}", detected.topology.to_json(&plan.tree));
            } else {
                print!("{}", detected.topology.render(&plan.tree));
            }
        }
        Command::Isa { available } => {
            let names: Vec<&str> = cllm_kernels::Isa::available()
                .iter()
                .map(|i| i.name())
                .collect();
            if available {
                println!("{}", names.join(" "));
            } else {
                println!(
                    "active: {isa} (CLLM_ISA forces one of: {})",
                    names.join(", ")
                );
            }
        }
        Command::Train {
            vocab,
            layers,
            heads,
            embd,
            seq,
            batch,
            threads,
            steps,
            json,
        } => {
            let model = GptConfig {
                vocab_size: vocab,
                n_positions: seq,
                n_embd: embd,
                n_layer: layers,
                n_head: heads,
            };
            if embd % heads != 0 {
                bail!("--embd {embd} does not divide by --heads {heads}: give an --embd that is a multiple of --heads");
            }
            model.validate().map_err(anyhow::Error::msg)?;
            let peak = machine::fma_peak_gflops();
            let pool = pool::Pool::start(threads)?;
            let spec = TrainBench {
                model,
                batch,
                seq_len: seq,
                steps,
                warmup: 2,
            };
            let r = run_train_bench(&spec, pool.spheres)?;
            let mfu = r.mfu(peak);
            if json {
                println!(
                    "{}",
                    json!({
                        "bench": "train", "vocab": vocab, "layers": layers, "heads": heads, "embd": embd, "seq": seq,
                        "batch": batch, "threads": r.threads, "isa": isa.name(), "params": r.params,
                        "tokens_per_s": round2(r.tokens_per_s), "mfu": (mfu * 1e4).round() / 1e4,
                        "peak_gflops_per_core": round2(peak), "planned_bytes": r.memory.total,
                        "peak_rss_bytes": r.peak_rss_bytes, "last_loss": r.last_loss,
                    })
                );
            } else {
                println!(
                    "train L={layers} H={heads} C={embd} V={vocab} T={seq} B={batch}, {} params, {} thread(s), isa {isa}",
                    r.params, r.threads
                );
                println!(
                    "  {:.0} tokens/s (median of {steps} steps), MFU {:.1}% of {:.1} GFLOP/s per core measured now",
                    r.tokens_per_s,
                    100.0 * mfu,
                    peak
                );
                let mib = |b: f64| b / (1u64 << 20) as f64;
                println!(
                    "  memory: planned {:.1} MiB, peak RSS {}",
                    mib(r.memory.total as f64),
                    r.peak_rss_bytes
                        .map_or("unknown".into(), |b| format!("{:.1} MiB", mib(b as f64)))
                );
            }
        }
        Command::Decode {
            preset,
            threads,
            batch,
            prompt,
            new_tokens,
            json,
        } => {
            if preset != "gpt2-124m" {
                bail!("--preset {preset}: the presets are gpt2-124m");
            }
            let cfg = generate::bench::gpt2_124m();
            let ctx = prompt.saturating_add(new_tokens);
            if ctx > cfg.n_positions {
                bail!(
                    "--prompt {prompt} + --new-tokens {new_tokens} = {ctx} tokens, more than \
                     {preset}'s {} positions; ask for fewer",
                    cfg.n_positions
                );
            }
            let pool = pool::Pool::start(threads)?;
            let spheres = (pool.spheres.count() > 1).then_some(&pool.spheres);
            // The weights, the bandwidth probe's buffer, the prompts and the session: refused
            // here rather than by an allocation that aborts (or swaps for minutes).
            let bytes = generate::Decoder::memory_bytes(&cfg, pool.count(), batch, ctx)
                .and_then(|d| d.checked_add(machine::product(&[batch, prompt, 4])?))
                .and_then(|d| d.checked_add((cfg.num_parameters() * 4 + BANDWIDTH_BYTES) as u64));
            machine::check_memory(
                &format!("--batch {batch}: the weights, KV cache and activations"),
                bytes,
                "use a smaller --batch",
            )?;
            let model = generate::bench::random_model(cfg, 0);
            let r = generate::bench::decode(
                &model,
                spheres,
                batch,
                prompt,
                new_tokens,
                BANDWIDTH_BYTES,
            )?;
            if json {
                println!(
                    "{}",
                    json!({
                        "bench": "decode", "preset": preset, "threads": r.threads, "batch": r.batch, "isa": isa.name(),
                        "prompt_tokens": r.prompt_tokens, "new_tokens": r.new_tokens,
                        "prefill_tokens_per_s": round2(r.prefill_tokens_per_s), "decode_tokens_per_s": round2(r.decode_tokens_per_s),
                        "bandwidth_fraction": (r.bandwidth_fraction * 1e4).round() / 1e4,
                        "bandwidth_gbs": round2(r.bandwidth_bytes_per_s / 1e9), "weight_bytes_per_step": r.weight_bytes_per_step,
                        "bandwidth_best_gbs": round2(r.bandwidth_best_bytes_per_s / 1e9),
                        "bandwidth_fraction_best": (r.bandwidth_fraction_best * 1e4).round() / 1e4,
                    })
                );
            } else {
                println!(
                    "decode {preset}, batch {batch}, {} thread(s), isa {isa}",
                    r.threads
                );
                println!(
                    "  prefill {} tokens: {:.1} tokens/s",
                    r.prompt_tokens * batch,
                    r.prefill_tokens_per_s
                );
                println!(
                    "  decode {} steps: {:.1} tokens/s ({:.1} ms/step); bound {:.1} steps/s at {:.1} GB/s read -> {:.1}% of the bound",
                    r.new_tokens,
                    r.decode_tokens_per_s,
                    r.decode_ms_per_step,
                    r.bound_steps_per_s,
                    r.bandwidth_bytes_per_s / 1e9,
                    100.0 * r.bandwidth_fraction
                );
                println!(
                    "  (read probe: {} passes, one before the steps and the others spread over them; the fastest pass {:.1} GB/s -> {:.1}%)",
                    generate::bench::PROBE_PASSES + 1,
                    r.bandwidth_best_bytes_per_s / 1e9,
                    100.0 * r.bandwidth_fraction_best
                );
            }
        }
        Command::Tokenize {
            input,
            threads,
            passes,
            json,
        } => {
            let input = match input {
                Some(input) => input,
                None if std::path::Path::new(DEFAULT_CORPUS).exists() => DEFAULT_CORPUS.to_string(),
                None => bail!(
                    "no --input, and the default corpus {DEFAULT_CORPUS} is not there (it is \
                     relative to the working directory, {}): run from the repository root, or \
                     pass --input FILE|DIR|GLOB",
                    std::env::current_dir().map_or("?".into(), |d| d.display().to_string())
                ),
            };
            let pool = threads.map(|n| pool::Pool::start(Some(n))).transpose()?;
            let r = data::tokenize(&input, pool.as_ref().map(|p| &p.spheres), passes)?;
            let mbs = r.bytes as f64 / r.median_s / 1e6;
            let threads = pool.as_ref().map_or(1, |p| p.spheres.count());
            if json {
                println!(
                    "{}",
                    json!({"bench": "tokenize", "tokenizer": "gpt2", "threads": threads, "bytes": r.bytes, "tokens": r.tokens, "mb_per_s": round2(mbs)})
                );
            } else {
                println!("gpt2 encoding, {threads} thread(s): {:.1} MB -> {} tokens in {:.3} s (median of {passes}): {mbs:.1} MB/s", r.bytes as f64 / 1e6, r.tokens, r.median_s);
            }
        }
        Command::Loader {
            batch,
            seq,
            batches,
            json,
        } => {
            // x and y, and the shards on disk (in the page cache).
            let bytes = machine::product(&[batch, seq, 2, 4])
                .and_then(|b| b.checked_add((4 * data::LOADER_SHARD_TOKENS * 2) as u64));
            machine::check_memory(
                &format!("--batch {batch} x --seq {seq}: the loader's batches"),
                bytes,
                "use a smaller --batch or --seq",
            )?;
            let run = data::loader(batch, seq, batches, data::LOADER_SHARD_TOKENS, 1)?[0];
            let gbs = (batches * batch * seq * 4) as f64 / run.wall_s / 1e9;
            let us = run.wall_s / batches as f64 * 1e6;
            if json {
                println!(
                    "{}",
                    json!({"bench": "loader", "batch": batch, "seq": seq, "gb_per_s": round2(gbs), "us_per_batch": round2(us)})
                );
            } else {
                println!("loader B={batch} T={seq}: {us:.2} µs per batch, {gbs:.2} GB/s of input tokens (u32)");
            }
        }
        Command::Peak { threads, json } => {
            // One thread probes the calling thread; more, that many sphere workers at once.
            let (n, all, bw) = if threads == 1 {
                (1, machine::fma_peak_gflops(), machine::read_bandwidth_gbs())
            } else {
                let pool = Pool::start(Some(threads))?;
                if !json {
                    println!("{}", pool.summary());
                }
                let all = machine::fma_peak_gflops_on(&pool.spheres)?;
                (
                    pool.count(),
                    all,
                    machine::read_bandwidth_gbs_on(&pool.spheres)?,
                )
            };
            let per_core = all / n as f64;
            // One thread also times the GEMM microkernel alone: with its panels in L1 (one A
            // panel, 64 deep), and sized as the blocking loops size them (an MC block of A
            // panels KC deep against one B panel), the ceiling of the blocked GEMM.
            let kernel = (n == 1).then(|| {
                let b = cllm_kernels::gemm::active_blocking();
                let l1 = machine::microkernel_gflops(64, 1);
                (b, l1, machine::microkernel_gflops(b.kc, b.mc / b.mr))
            });
            if json {
                let mut doc = json!({"bench": "peak", "isa": isa.name(), "threads": n, "peak_gflops": round2(per_core),
                                     "all_peak_gflops": round2(all), "read_gbs": round2(bw)});
                if let Some((b, l1, blocked)) = kernel {
                    doc["tile"] = json!(format!("{}x{}", b.mr, b.nr));
                    doc["microkernel_l1_gflops"] = json!(round2(l1));
                    doc["microkernel_blocked_gflops"] = json!(round2(blocked));
                }
                println!("{doc}");
            } else if let Some((b, l1, blocked)) = kernel {
                println!("isa {isa}: FMA peak {all:.1} GFLOP/s per core; read bandwidth {bw:.1} GB/s (one thread)");
                let pct = |g: f64| 100.0 * g / all;
                println!(
                    "GEMM microkernel {}x{}: {l1:.1} GFLOP/s ({:.1} % of peak) with its panels in L1 (kc 64), \
                     {blocked:.1} ({:.1} %) as blocked here (kc {}, {} A panels of an MC = {} block, one B panel)",
                    b.mr, b.nr, pct(l1), pct(blocked), b.kc, b.mc / b.mr, b.mc
                );
            } else {
                println!("isa {isa}, {n} workers at once: FMA peak {all:.1} GFLOP/s in all, {per_core:.1} per core; read bandwidth {bw:.1} GB/s");
            }
        }
        Command::Suite {
            quick,
            json,
            out,
            repeats,
            threads,
            only,
            note,
        } => {
            // Checked before the suite's minutes of work: the result must have somewhere to go.
            if let Some(path) = &out {
                let dir = std::path::Path::new(path)
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty());
                if dir.is_some_and(|d| !d.is_dir()) || std::path::Path::new(path).is_dir() {
                    anyhow::bail!("--out {path}: not a file in an existing directory");
                }
            }
            let opts = suite::Options {
                quick,
                repeats,
                threads,
                only,
                note,
            };
            let doc = suite::run(&opts, &mut |line| eprintln!("suite: {line}"))?;
            let text = serde_json::to_string_pretty(&doc)?;
            if let Some(path) = &out {
                cllm_engine::atomic_file::write_atomic(path, format!("{text}\n").as_bytes())
                    .with_context(|| format!("writing {path}"))?;
                eprintln!("suite: wrote {path}");
            }
            if json {
                println!("{text}");
            } else {
                print!("{}", suite::render(&doc));
            }
        }
        Command::Compare {
            base,
            new,
            tolerance,
            by,
            no_fail,
        } => {
            return Ok(match run_compare(&base, &new, &tolerance, &by) {
                Ok(_) if no_fail => ExitCode::SUCCESS,
                Ok(regressed) => ExitCode::from(u8::from(regressed)),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Print the comparison of two suite documents; whether an entry regressed.
fn run_compare(base: &str, new: &str, tolerance: &str, by: &str) -> Result<bool> {
    let tolerance = compare::parse_tolerance(tolerance)?;
    let by = compare::By::parse(by)?;
    let (base, new) = (compare::load(base)?, compare::load(new)?);
    for w in compare::warnings(&base, &new) {
        eprintln!("warning: {w}");
    }
    let rows = compare::compare(&base, &new, tolerance, by)?;
    print!("{}", compare::render(&base, &new, &rows, tolerance, by));
    Ok(rows
        .iter()
        .any(|r| r.verdict == compare::Verdict::Regressed))
}

/// Enough timed runs for a stable median in about two seconds at ~100 GFLOP/s per thread,
/// within [3, 15].
fn auto_reps((m, k, n): (usize, usize, usize), threads: usize) -> usize {
    let est_s = 2.0 * (m * k * n) as f64 / (100e9 * threads as f64);
    ((2.0 / est_s) as usize).clamp(3, 15)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Wall-clock and process CPU seconds of one timed run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub wall_s: f64,
    /// User + system seconds of every thread of the process (`None` where the clock is missing).
    pub cpu_s: Option<f64>,
}

/// Run `f` and time it on the wall clock and the process's CPU clock.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Timing) {
    let cpu = cllm_engine::train::bench::process_cpu_seconds();
    let t = std::time::Instant::now();
    let out = f();
    let wall_s = t.elapsed().as_secs_f64();
    let cpu_s = match (cpu, cllm_engine::train::bench::process_cpu_seconds()) {
        (Some(c0), Some(c1)) => Some(c1 - c0),
        _ => None,
    };
    (out, Timing { wall_s, cpu_s })
}

/// The median of `xs` (sorted in place); NaN for an empty slice.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    }
}
