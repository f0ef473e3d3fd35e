//! `cllm-bench suite`: a fixed set of benchmarks (GEMM, attention, a training step of both standard
//! configurations, GPT-2 124M decoding, GPT-2 encoding, the loader) written as one JSON document
//! that `cllm-bench compare` reads (see docs/REGRESSIONS.md for the method).
//!
//! Every entry keeps all its samples and their median, twice: on the wall clock (`value`,
//! `samples`) and per CPU-second the process used, times the entry's threads (`cpu_value`,
//! `cpu_samples`: what the entry does while it has its CPUs, which a shared machine handing out
//! slices of cores does not change). The CPU figure is also expressed as a ratio to a reference
//! measured the same way in the same run around it: one core's FMA rate for compute-bound entries,
//! one thread's read bandwidth for memory-bound ones. The probes run before every entry and once at
//! the end; an entry's reference is the run's median of its probe, so a slower clock, a hypervisor
//! taking time from the VM or another machine of the same kind moves both and cancels out. (The
//! mean of the two probes around each entry was tried first: one probe is ~60 ms, and its own
//! noise, a few %, then showed up as false regressions between idle runs of the same code.)

use crate::pool::Pool;
use crate::{data, gemm, machine, timed, Timing};
use anyhow::{bail, Context, Result};
use cllm_engine::generate;
use cllm_engine::huge_pages;
use cllm_engine::model::GptConfig;
use cllm_engine::rng::Rng;
use cllm_engine::train::bench::{run_train_bench, TrainBench};
use cllm_kernels::attention::{self, attention_scratch_len};
use cllm_kernels::gemm::Layout;
use serde_json::{json, Value};

/// The version of the document's layout; `compare` refuses any other.
pub const SCHEMA: u64 = 1;

/// The groups of entries, in the order they run (`--only` takes these names).
pub const GROUPS: [&str; 6] = ["gemm", "attention", "train", "decode", "tokenize", "loader"];

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Smaller shapes and fewer tokens: the whole suite in about a minute on two cores.
    pub quick: bool,
    /// Samples per entry (timed runs, steps or passes after the entry's warm-up).
    pub repeats: usize,
    /// Sphere workers for the entries that run in parallel (GEMM, training, decoding, encoding).
    pub threads: usize,
    /// Run only these groups (all when empty).
    pub only: Vec<String>,
    /// Free text stored in the machine block (e.g. what else ran on the machine).
    pub note: Option<String>,
}

/// The same-run measurement an entry is normalised by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// One core's f32 FMA rate on the active kernel path (GFLOP/s).
    FmaPeak,
    /// One thread's streaming read bandwidth (GB/s).
    ReadBandwidth,
}

impl Reference {
    /// The key under `references` and in each entry's `ref`.
    pub fn key(self) -> &'static str {
        match self {
            Reference::FmaPeak => "fma_peak_gflops",
            Reference::ReadBandwidth => "read_bw_gbs",
        }
    }
}

/// One entry's samples: throughput on the wall clock, and per CPU-second times the entry's threads
/// (empty where the process CPU clock is unavailable).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub wall: Vec<f64>,
    pub cpu: Vec<f64>,
}

impl Samples {
    /// `work` units done in each timed run, by `threads` threads.
    fn of(work: f64, threads: usize, runs: &[Timing]) -> Samples {
        let wall = runs.iter().map(|t| work / t.wall_s).collect();
        let cpu = runs
            .iter()
            .map(|t| {
                t.cpu_s
                    .filter(|&c| c > 0.0)
                    .map(|c| work / (c / threads as f64))
            })
            .collect::<Option<Vec<f64>>>()
            .unwrap_or_default();
        Samples { wall, cpu }
    }
}

/// One measured entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub unit: &'static str,
    /// Worker threads it ran on.
    pub threads: usize,
    pub samples: Samples,
    pub higher_is_better: bool,
    pub reference: Reference,
    /// The run's median of this entry's reference probe (set when the run ends).
    pub ref_value: f64,
}

impl Entry {
    /// The median wall-clock sample.
    pub fn value(&self) -> f64 {
        crate::median(&mut self.samples.wall.clone())
    }

    /// The median per-CPU-second sample, if measured.
    pub fn cpu_value(&self) -> Option<f64> {
        (!self.samples.cpu.is_empty()).then(|| crate::median(&mut self.samples.cpu.clone()))
    }

    /// The CPU median (the wall median where there is none) normalised by the reference: over it
    /// when higher is better, times it otherwise (a time shrinks on a faster machine).
    pub fn ratio(&self) -> f64 {
        let v = self.cpu_value().unwrap_or_else(|| self.value());
        if self.higher_is_better {
            v / self.ref_value
        } else {
            v * self.ref_value
        }
    }
}

/// What one entry measures, before it runs.
struct Spec {
    name: String,
    unit: &'static str,
    threads: usize,
    reference: Reference,
}

fn spec(name: String, unit: &'static str, threads: usize, reference: Reference) -> Spec {
    Spec {
        name,
        unit,
        threads,
        reference,
    }
}

/// The reference probes, kept short (about 100 ms in all) so they can run between every entry.
/// Both are rates per CPU-second of the probing thread (wall-clock where that clock is missing).
struct Probes {
    /// 64 MiB: larger than the last-level cache of the machines this runs on.
    data: Vec<f32>,
    /// FMA loop iterations of one probe run (about 20 ms, calibrated once).
    fma_iters: usize,
    /// Every probe's readings, for the run-wide medians.
    fma: Vec<f64>,
    bw: Vec<f64>,
}

/// `work` per CPU-second of each run (per wall-clock second where the CPU clock is missing).
fn per_cpu_second(work: f64, runs: &[Timing]) -> Vec<f64> {
    runs.iter()
        .map(|t| work / t.cpu_s.filter(|&c| c > 0.0).unwrap_or(t.wall_s))
        .collect()
}

impl Probes {
    fn new() -> Probes {
        let calib = 1 << 20;
        let flops = cllm_kernels::probe::fma_loop_flops(calib) as f64;
        let gflops = per_cpu_second(flops, &machine::fma_runs(calib, 2))
            .into_iter()
            .fold(0.0, f64::max)
            / 1e9;
        let per_iter_s = cllm_kernels::probe::fma_loop_flops(1) as f64 / (gflops * 1e9);
        let mut data = huge_pages::zeroed(16 << 20);
        data.fill(1.0);
        machine::read_runs(&data, 1);
        Probes {
            data,
            fma_iters: ((0.02 / per_iter_s) as usize).max(1000),
            fma: Vec::new(),
            bw: Vec::new(),
        }
    }

    /// The median of three runs of each probe, indexed by [`Reference`].
    fn measure(&mut self) -> [f64; 2] {
        let flops = cllm_kernels::probe::fma_loop_flops(self.fma_iters) as f64 / 1e9;
        let gb = std::mem::size_of_val(&self.data[..]) as f64 / 1e9;
        let fma = crate::median(&mut per_cpu_second(
            flops,
            &machine::fma_runs(self.fma_iters, 3),
        ));
        let bw = crate::median(&mut per_cpu_second(gb, &machine::read_runs(&self.data, 3)));
        self.fma.push(fma);
        self.bw.push(bw);
        [fma, bw]
    }
}

fn pick(r: Reference, probe: [f64; 2]) -> f64 {
    match r {
        Reference::FmaPeak => probe[0],
        Reference::ReadBandwidth => probe[1],
    }
}

/// Runs entries between reference probes and collects them.
struct Recorder<'a> {
    probes: Probes,
    entries: Vec<Entry>,
    progress: &'a mut dyn FnMut(&str),
}

impl Recorder<'_> {
    /// Run `f`, which returns the samples of each spec (all higher-is-better), record the entries
    /// and probe the references again.
    fn record(&mut self, specs: Vec<Spec>, f: impl FnOnce() -> Result<Vec<Samples>>) -> Result<()> {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        (self.progress)(&format!("running {}", names.join(", ")));
        let samples = f().with_context(|| format!("benchmark {}", names.join(", ")))?;
        let after = self.probes.measure();
        assert_eq!(samples.len(), specs.len(), "one sample list per entry");
        for (s, samples) in specs.into_iter().zip(samples) {
            let entry = Entry {
                ref_value: pick(s.reference, after),
                name: s.name,
                unit: s.unit,
                threads: s.threads,
                samples,
                higher_is_better: true,
                reference: s.reference,
            };
            (self.progress)(&format!(
                "  {} {:.2} {} ({:.2} per CPU-second; probe after it {:.2})",
                entry.name,
                entry.value(),
                entry.unit,
                entry.cpu_value().unwrap_or(f64::NAN),
                entry.ref_value
            ));
            self.entries.push(entry);
        }
        Ok(())
    }
}

/// Runs the suite; `progress` gets a line before and after each entry.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Value> {
    if opts.repeats == 0 {
        bail!("--repeats 0: at least one sample per entry is needed");
    }
    if opts.threads == 0 {
        bail!("--threads 0: at least one worker is needed");
    }
    // What the pools will get (--threads is capped at the allowed CPUs): the entries and the
    // document record the workers that ran, not the count asked for.
    let opts = &Options {
        threads: Pool::workers_for(opts.threads),
        ..opts.clone()
    };
    for g in &opts.only {
        if !GROUPS.contains(&g.as_str()) {
            bail!("--only {g}: the groups are {}", GROUPS.join(", "));
        }
    }
    let wanted = |g: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == g);
    let load_start = load_avg();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut probes = Probes::new();
    probes.measure();
    let mut rec = Recorder {
        probes,
        entries: Vec::new(),
        progress,
    };
    if wanted("gemm") {
        run_gemm(&mut rec, opts)?;
    }
    if wanted("attention") {
        run_attention(&mut rec, opts)?;
    }
    if wanted("train") {
        run_train(&mut rec, opts)?;
    }
    if wanted("decode") {
        run_decode(&mut rec, opts)?;
    }
    if wanted("tokenize") {
        run_tokenize(&mut rec, opts)?;
    }
    if wanted("loader") {
        run_loader(&mut rec, opts)?;
    }
    let fma_ref = crate::median(&mut rec.probes.fma.clone());
    let bw_ref = crate::median(&mut rec.probes.bw.clone());
    for e in rec.entries.iter_mut() {
        e.ref_value = pick(e.reference, [fma_ref, bw_ref]);
    }
    let entries: Vec<Value> = rec
        .entries
        .iter()
        .map(|e| {
            let round = |xs: &[f64]| xs.iter().map(|&s| round4(s)).collect::<Vec<_>>();
            json!({
                "name": e.name, "unit": e.unit, "threads": e.threads,
                "value": round4(e.value()), "samples": round(&e.samples.wall),
                "cpu_value": e.cpu_value().map(round4), "cpu_samples": round(&e.samples.cpu),
                "higher_is_better": e.higher_is_better, "ref": e.reference.key(),
                "ref_value": round4(e.ref_value), "ratio": round_sig(e.ratio()),
            })
        })
        .collect();
    let mut machine = machine_block();
    machine["load_avg_start"] = json!(load_start);
    machine["load_avg_end"] = json!(load_avg());
    if let Some(note) = &opts.note {
        machine["note"] = json!(note);
    }
    Ok(json!({
        "schema": SCHEMA,
        "started_unix": started,
        "machine": machine,
        "git": git_info(),
        "quick": opts.quick,
        "repeats": opts.repeats,
        "threads": opts.threads,
        "references": {
            "fma_peak_gflops": round4(fma_ref),
            "read_bw_gbs": round4(bw_ref),
            "probes": rec.probes.fma.len(),
        },
        "entries": entries,
    }))
}

/// The GPT-2-small training shapes (B·T = 4096 rows) of the QKV projection, the MLP up- and
/// down-projections; quick: 512 rows.
fn gemm_shapes(quick: bool) -> Vec<(usize, usize, usize)> {
    let m = if quick { 512 } else { 4096 };
    vec![(m, 768, 2304), (m, 768, 3072), (m, 3072, 768)]
}

fn run_gemm(rec: &mut Recorder<'_>, opts: &Options) -> Result<()> {
    let pool = (opts.threads > 1)
        .then(|| Pool::start(Some(opts.threads)))
        .transpose()?;
    let mut runner = match &pool {
        None => gemm::Runner::Single(cllm_kernels::gemm::GemmScratch::new()),
        Some(p) => gemm::Runner::Pool(p, cllm_engine::par_gemm::ParGemmScratch::new(&p.spheres)?),
    };
    let threads = pool.as_ref().map_or(1, Pool::count);
    for shape in gemm_shapes(opts.quick) {
        for layout in [Layout::NN, Layout::NT, Layout::TN] {
            let (m, k, n) = shape;
            let name = format!("gemm/{}/{m}x{k}x{n}", gemm::layout_name(layout));
            let specs = vec![spec(name, "GFLOP/s", threads, Reference::FmaPeak)];
            rec.record(specs, || {
                let r = gemm::measure(&mut runner, shape, layout, opts.repeats)?;
                let runs: Vec<Timing> = r
                    .run_s
                    .iter()
                    .enumerate()
                    .map(|(i, &wall_s)| Timing {
                        wall_s,
                        cpu_s: r.run_cpu_s.get(i).copied(),
                    })
                    .collect();
                Ok(vec![Samples::of(
                    2.0 * (m * k * n) as f64 / 1e9,
                    threads,
                    &runs,
                )])
            })?;
        }
    }
    Ok(())
}

/// One untimed call of `f`, then as many calls as fill about `min_s` (at least one), timed
/// together; returns the timing of one call (the total over the number of calls).
fn per_call(min_s: f64, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    let (r, once) = timed(&mut f);
    r?;
    let calls = ((min_s / once.wall_s.max(1e-9)).ceil() as usize).clamp(1, 10_000);
    let (r, t) = timed(|| (0..calls).try_for_each(|_| f()));
    r?;
    Ok(Timing {
        wall_s: t.wall_s / calls as f64,
        cpu_s: t.cpu_s.map(|c| c / calls as f64),
    })
}

/// `n` uniform floats in [-1, 1) from the engine's seeded generator.
fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
        .collect()
}

/// The causal attention kernels on one thread, forward and backward, in GFLOP/s. FLOPs as
/// benches/attention.rs counts them: 2·HS per (query, key) pair with key ≤ query, ≈ T²/2 pairs per
/// head; the forward has 2 such products (QKᵀ, P·V), the backward 5.
fn run_attention(rec: &mut Recorder<'_>, opts: &Options) -> Result<()> {
    // (B, T, NH, HS): the L=6 training configuration, and GPT-2 small's context.
    let shapes: &[(usize, usize, usize, usize)] = if opts.quick {
        &[(2, 256, 6, 64)]
    } else {
        &[(8, 256, 6, 64), (2, 1024, 12, 64)]
    };
    let min_s = if opts.quick { 0.05 } else { 0.2 };
    for &(b, t, nh, hs) in shapes {
        let c = nh * hs;
        // One arena from a huge-page boundary, the buffers back to back as the engine's
        // activations lie (see huge_pages::HugeBuf).
        let lens = [
            b * t * 3 * c, // qkv (B, T, 3C)
            b * t * c,     // dout (B, T, C)
            b * t * c,     // out (B, T, C)
            b * nh * t,    // lse (B, NH, T)
            b * t * 3 * c, // dqkv (B, T, 3C)
            attention_scratch_len(t, hs),
        ];
        let mut arena = huge_pages::HugeBuf::zeroed(lens.iter().sum());
        let [qkv, dout, out, lse, dqkv, scratch] = arena.split_into(lens);
        qkv.copy_from_slice(&uniform(lens[0], 1));
        dout.copy_from_slice(&uniform(lens[1], 2));
        let (qkv, dout) = (&*qkv, &*dout);
        // One causal (T, T, HS) product: 2·HS FLOPs per pair, T²/2 pairs per head.
        let product_flops = (b * nh * t * t * hs) as f64;
        let shape = format!("B{b}_T{t}_NH{nh}_HS{hs}");
        rec.record(
            vec![spec(
                format!("attention/fwd/{shape}"),
                "GFLOP/s",
                1,
                Reference::FmaPeak,
            )],
            || {
                let runs = (0..opts.repeats)
                    .map(|_| {
                        per_call(min_s, || {
                            attention::attention_fwd(out, lse, qkv, scratch, b, t, c, nh)?;
                            Ok(())
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(vec![Samples::of(2.0 * product_flops / 1e9, 1, &runs)])
            },
        )?;
        rec.record(
            vec![spec(
                format!("attention/bwd/{shape}"),
                "GFLOP/s",
                1,
                Reference::FmaPeak,
            )],
            || {
                let runs = (0..opts.repeats)
                    .map(|_| {
                        per_call(min_s, || {
                            attention::attention_bwd(
                                dqkv, dout, qkv, out, lse, scratch, b, t, c, nh, false,
                            )?;
                            Ok(())
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(vec![Samples::of(5.0 * product_flops / 1e9, 1, &runs)])
            },
        )?;
    }
    Ok(())
}

/// A training step of the two standard configurations (L=6, NH=6, C=384 with V=65 and V=50257),
/// T=256 B=8 (quick: T=64 B=4), tokens/s of each timed step after one warm-up step.
fn run_train(rec: &mut Recorder<'_>, opts: &Options) -> Result<()> {
    let (t, b) = if opts.quick { (64, 4) } else { (256, 8) };
    for vocab in [65, 50257] {
        let model = GptConfig {
            vocab_size: vocab,
            n_positions: t,
            n_embd: 384,
            n_layer: 6,
            n_head: 6,
        };
        model.validate().map_err(anyhow::Error::msg)?;
        let name = format!("train/V{vocab}_L6_H6_C384_T{t}_B{b}");
        let specs = vec![spec(name, "tokens/s", opts.threads, Reference::FmaPeak)];
        rec.record(specs, || {
            let pool = Pool::start(Some(opts.threads))?;
            let bench = TrainBench {
                model,
                batch: b,
                seq_len: t,
                steps: opts.repeats,
                warmup: 1,
            };
            let r = run_train_bench(&bench, pool.spheres)?;
            let runs: Vec<Timing> = r
                .step_seconds
                .iter()
                .enumerate()
                .map(|(i, &wall_s)| Timing {
                    wall_s,
                    cpu_s: r.step_cpu_seconds.get(i).copied(),
                })
                .collect();
            Ok(vec![Samples::of((b * t) as f64, r.threads, &runs)])
        })?;
    }
    Ok(())
}

/// GPT-2 124M (random weights), batch 1: prefill tokens/s (compute-bound, against the FMA rate)
/// and decode tokens/s (bandwidth-bound, against the read bandwidth), one sample per run.
fn run_decode(rec: &mut Recorder<'_>, opts: &Options) -> Result<()> {
    let (prompt, new_tokens) = if opts.quick { (32, 16) } else { (128, 64) };
    let cfg = format!("gpt2-124m_B1_P{prompt}_N{new_tokens}");
    let specs = vec![
        spec(
            format!("decode/{cfg}/prefill"),
            "tokens/s",
            opts.threads,
            Reference::FmaPeak,
        ),
        spec(
            format!("decode/{cfg}/decode"),
            "tokens/s",
            opts.threads,
            Reference::ReadBandwidth,
        ),
    ];
    rec.record(specs, || {
        let (prefill, decode) = decode_samples(opts, 1, prompt, new_tokens)?;
        Ok(vec![prefill, decode])
    })?;
    run_decode_batch(rec, opts)
}

/// GPT-2 124M (random weights), batch 8 (the most rows a decode step's gemv takes): decode
/// tokens/s after a short prompt, one sample per run. With eight rows a step is compute-bound
/// as much as memory-bound (the layers read their matrices in panel form), so the reference is
/// the FMA rate.
fn run_decode_batch(rec: &mut Recorder<'_>, opts: &Options) -> Result<()> {
    const BATCH: usize = 8;
    // Room for PANEL_MIN_STEPS steps: the session packs and reads the panel form.
    let new_tokens = generate::PANEL_MIN_STEPS;
    let prompt = if opts.quick { 4 } else { 16 };
    let name = format!("decode/gpt2-124m_B{BATCH}_P{prompt}_N{new_tokens}/decode");
    let specs = vec![spec(name, "tokens/s", opts.threads, Reference::FmaPeak)];
    rec.record(specs, || {
        let (_, decode) = decode_samples(opts, BATCH, prompt, new_tokens)?;
        Ok(vec![decode])
    })
}

/// Prefill and decode tokens/s of `opts.repeats` runs of `generate::bench::decode` on GPT-2
/// 124M (random weights), `batch` rows.
fn decode_samples(
    opts: &Options,
    batch: usize,
    prompt: usize,
    new_tokens: usize,
) -> Result<(Samples, Samples)> {
    let model = generate::bench::random_model(generate::bench::gpt2_124m(), 0);
    let pool = Pool::start(Some(opts.threads))?;
    let spheres = (pool.count() > 1).then_some(&pool.spheres);
    let (mut prefill, mut decode) = (Samples::default(), Samples::default());
    for _ in 0..opts.repeats {
        // The report's own bandwidth figure is not used here: a small buffer keeps it cheap.
        let (r, t) =
            timed(|| generate::bench::decode(&model, spheres, batch, prompt, new_tokens, 8 << 20));
        let r = r?;
        prefill.wall.push(r.prefill_tokens_per_s);
        decode.wall.push(r.decode_tokens_per_s);
        // The report times prefill and decode separately; the share of the call the process
        // had its CPUs for turns both into rates per CPU-second.
        if let Some(cpu) = t.cpu_s.filter(|&c| c > 0.0) {
            let had = cpu / pool.count() as f64 / t.wall_s;
            prefill.cpu.push(r.prefill_tokens_per_s / had);
            decode.cpu.push(r.decode_tokens_per_s / had);
        }
    }
    Ok((prefill, decode))
}

/// GPT-2 encoding of the embedded corpus (eight plays, 1 MB), MB/s of each pass.
fn run_tokenize(rec: &mut Recorder<'_>, opts: &Options) -> Result<()> {
    let texts: Vec<&str> = cllm_drivers::corpus::PLAYS.iter().map(|p| p.1).collect();
    let name = format!("tokenize/gpt2/plays{}", texts.len());
    rec.record(
        vec![spec(name, "MB/s", opts.threads, Reference::FmaPeak)],
        || {
            let pool = (opts.threads > 1)
                .then(|| Pool::start(Some(opts.threads)))
                .transpose()?;
            let r = data::tokenize_texts(&texts, pool.as_ref().map(|p| &p.spheres), opts.repeats)?;
            Ok(vec![Samples::of(
                r.bytes as f64 / 1e6,
                opts.threads,
                &r.passes,
            )])
        },
    )
}

/// The loader serving shuffled B=8 T=256 windows from four page-cache shards, GB/s of each run.
fn run_loader(rec: &mut Recorder<'_>, opts: &Options) -> Result<()> {
    let (shard, batches) = if opts.quick {
        (4 << 20, 20_000)
    } else {
        (data::LOADER_SHARD_TOKENS, 20_000)
    };
    let name = format!("loader/B8_T256_shards4x{}Mi", shard >> 20);
    rec.record(
        vec![spec(name, "GB/s", 1, Reference::ReadBandwidth)],
        || {
            let runs = data::loader(8, 256, batches, shard, opts.repeats)?;
            Ok(vec![Samples::of(
                (batches * 8 * 256 * 4) as f64 / 1e9,
                1,
                &runs,
            )])
        },
    )
}

/// The machine: CPU model, usable cores and hardware threads, kernel path, OS and kernel release.
fn machine_block() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let detected = cllm_engine::topology::Topology::detect();
    let topo = &detected.topology;
    json!({
        "cpu": field("model name"),
        "cpu_family": field("cpu family"),
        "cpu_model": field("model"),
        "cores": topo.cores.len(),
        "hw_threads": topo.cpus.len(),
        "isa": cllm_kernels::isa::active().name(),
        "isa_available": cllm_kernels::Isa::available().iter().map(|i| i.name()).collect::<Vec<_>>(),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        "memory_bytes": topo.memory_bytes,
    })
}

/// /proc/loadavg as written (1, 5 and 15-minute load, runnable/total tasks, last pid).
fn load_avg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The commit this binary was built from and whether tracked files differed from it, as
/// tools/build.rs recorded them (nulls where git or the checkout was missing).
fn git_info() -> Value {
    let commit = Some(env!("CLLM_GIT_COMMIT")).filter(|c| !c.is_empty());
    let dirty = match env!("CLLM_GIT_DIRTY") {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    };
    json!({ "commit": commit, "dirty": dirty })
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// `x` to 6 significant digits (ratios span 1e-3 to 1e2).
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(5 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// The document as a table: one line per entry with its median, sample range, reference and ratio.
pub fn render(doc: &Value) -> String {
    let mut out = String::new();
    let m = &doc["machine"];
    let commit = doc["git"]["commit"].as_str().unwrap_or("unknown");
    out.push_str(&format!(
        "cllm-bench suite{}: {} thread(s), {} samples per entry, isa {}, commit {}{}\n",
        if doc["quick"].as_bool() == Some(true) {
            " --quick"
        } else {
            ""
        },
        doc["threads"],
        doc["repeats"],
        m["isa"].as_str().unwrap_or("?"),
        &commit[..commit.len().min(12)],
        if doc["git"]["dirty"].as_bool() == Some(true) {
            " (dirty)"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "machine: {}, {} cores, {} hardware threads; load {} at the start, {} at the end\n",
        m["cpu"].as_str().unwrap_or("unknown CPU"),
        m["cores"],
        m["hw_threads"],
        m["load_avg_start"].as_str().unwrap_or("?"),
        m["load_avg_end"].as_str().unwrap_or("?"),
    ));
    out.push_str(&format!(
        "references per CPU-second (median of {} probes between entries): FMA {:.1} GFLOP/s, read {:.2} GB/s\n",
        doc["references"]["probes"],
        doc["references"]["fma_peak_gflops"].as_f64().unwrap_or(f64::NAN),
        doc["references"]["read_bw_gbs"].as_f64().unwrap_or(f64::NAN),
    ));
    out.push_str(&format!(
        "{:<40} {:>9} {:>10} {:>10} {:>10} {:>10} {:>12} {:>9}\n",
        "entry", "unit", "median", "min", "max", "per CPU-s", "reference", "ratio"
    ));
    for e in doc["entries"].as_array().into_iter().flatten() {
        let samples: Vec<f64> = e["samples"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect();
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let reference = match e["ref"].as_str() {
            Some("fma_peak_gflops") => format!("FMA {:.1}", e["ref_value"].as_f64().unwrap_or(0.0)),
            Some("read_bw_gbs") => format!("read {:.2}", e["ref_value"].as_f64().unwrap_or(0.0)),
            _ => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<40} {:>9} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12} {:>9.4}\n",
            e["name"].as_str().unwrap_or("?"),
            e["unit"].as_str().unwrap_or("?"),
            e["value"].as_f64().unwrap_or(f64::NAN),
            min,
            max,
            e["cpu_value"].as_f64().unwrap_or(f64::NAN),
            reference,
            e["ratio"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    out
}
