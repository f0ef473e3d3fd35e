//! cllm-train: train a GPT-2-style model on the sphere workers, then sample from it.
//!
//! With no `--data` it trains on the embedded default corpus (eight public-domain plays) through a
//! BPE tokenizer trained on it; otherwise on llm.c token shards and their tokenizer. Prints the plan at start, a progress bar while it runs,
//! a few sampled lines at each evaluation, and a summary with the memory it planned and used. The run
//! ends with a report (`report.json`, `report.md`: configuration, loss curve, best validation
//! perplexity, throughput, memory) in `--report DIR`.

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use cllm_drivers::generation::{load_model, Codec};
use cllm_drivers::report::{f32_value, Curve, EvalPoint, StepPoint, TrainReport};
use cllm_drivers::{corpus, memory_report, progress, threads_plan, ShardsTokenizer};
use cllm_engine::checkpoint::{list_step_dirs, read_pointer, LATEST};
use cllm_engine::data::{DataPosition, Loader, LoaderConfig, TokenSource};
use cllm_engine::generate::{sample_continuation, SampleConfig};
use cllm_engine::model::{Gpt, GptConfig};
use cllm_engine::spheres::Spheres;
use cllm_engine::tokenizer::Tokenizer;
use cllm_engine::train::{
    checkpoint_dir, OptimizerKind, Resumed, SaveOptions, Schedule, TrainConfig, Trainer,
    TRAINER_STATE_FILE,
};
use serde_json::{json, Value};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum ScheduleArg {
    Constant,
    Cosine,
    Linear,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OptimizerArg {
    Adamw,
    Sgd,
}

#[derive(Parser, Debug)]
#[command(
    name = "cllm-train",
    about = "Train a GPT-2-style model on CPU cores, then sample from it"
)]
struct Args {
    /// Token shards (llm.c format): a glob such as 'data/train_*.bin' or a directory holding
    /// train_*.bin and val_*.bin. Without it, the embedded default corpus through a BPE trained on it.
    #[arg(long)]
    data: Option<String>,
    /// The shards' tokenizer: a cllm tokenizer file or `gpt2`. Without it, the tokenizer.json
    /// cllm-prepare wrote beside the shards; one that differs from that file is refused.
    /// Required with --data when the shards have none beside them, unless resuming.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Vocabulary of the BPE tokenizer trained on the default corpus.
    #[arg(long, default_value_t = 1024)]
    bpe_vocab: usize,
    /// Transformer blocks (L).
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Attention heads (NH).
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Model width (C).
    #[arg(long, default_value_t = 256)]
    embd: usize,
    /// Sequence length (T); also the model's n_positions unless --init-from/--resume sets it.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Rows per micro-batch over all workers (B); must divide by the worker count (without
    /// --threads, the most workers it divides over are used).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Optimizer steps (in all, counting the steps of a resumed run; resumed without it, the
    /// run's own total).
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw)]
    optimizer: OptimizerArg,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// Final learning rate of the cosine or linear decay.
    #[arg(long, default_value_t = 2e-4)]
    min_lr: f32,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    schedule: ScheduleArg,
    /// Weight decay (on tensors with two or more dimensions).
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// AdamW betas.
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    #[arg(long, default_value_t = 0.95)]
    beta2: f64,
    /// SGD momentum (0 for none).
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// Global gradient-norm clip (0 for none).
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// Worker threads (default: one per core of the allowed CPUs, or CLLM_THREADS).
    #[arg(long)]
    threads: Option<usize>,
    /// Evaluate validation loss and perplexity (and sample) every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 8)]
    eval_batches: usize,
    /// Fraction of the default corpus held out for validation.
    #[arg(long, default_value_t = 0.05)]
    val_fraction: f64,
    /// Checkpoint directory (step-NNNNNNNN subdirectories, `latest` and `best` pointers).
    #[arg(long)]
    ckpt_dir: Option<PathBuf>,
    /// Save a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    ckpt_every: usize,
    /// Step checkpoints to keep (the best by validation loss is kept as well).
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Resume from --ckpt-dir's latest checkpoint (or this directory).
    #[arg(long)]
    resume: bool,
    /// Start from a Hugging Face GPT-2 directory (config.json + model.safetensors), a cllm
    /// checkpoint or run directory (its latest checkpoint), with its tokenizer: a cllm
    /// tokenizer.json, else vocab.json + merges.txt, else --tokenizer.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Seed of initialisation, data order and sampling (a resumed run keeps its checkpoint's).
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Append JSON lines of metrics (step, loss, val_loss, val_ppl, lr, grad_norm, tokens_per_s,
    /// elapsed_s); val_loss and val_ppl are null between evaluations.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Tokens sampled at each evaluation and at the end (0: no samples).
    #[arg(long, default_value_t = 240)]
    sample_tokens: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Where the end-of-run report goes: report.json and report.md in this directory (default:
    /// --ckpt-dir when given, else ./cllm-report); `none` writes no report.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Flags a resumed run takes from its checkpoint instead (the model, the optimizer and the batch
/// shape are the checkpoint's); given anyway, they get a warning.
const KEPT_ON_RESUME: [&str; 16] = [
    "layers",
    "heads",
    "embd",
    "seq",
    "batch",
    "grad_accum",
    "optimizer",
    "weight_decay",
    "beta1",
    "beta2",
    "momentum",
    "nesterov",
    "clip",
    "init_from",
    "bpe_vocab",
    "seed",
];

fn main() {
    cllm_drivers::restore_sigpipe();
    let matches = Args::command().get_matches();
    let given: Vec<String> = matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect();
    cllm_drivers::exit_on_error(
        Args::from_arg_matches(&matches)
            .map_err(anyhow::Error::from)
            .and_then(|args| run(args, &given)),
    );
}

fn run(args: Args, given: &[String]) -> Result<()> {
    let isa = cllm_engine::kernels::isa::init()?;
    let flag = |id: &str| format!("--{}", id.replace('_', "-"));
    // Top-40 sampling; at temperature 0, greedy (which takes no filter).
    let sample_cfg = SampleConfig {
        temperature: args.temperature,
        top_k: (args.temperature != 0.0).then_some(40),
        ..SampleConfig::default()
    };
    sample_cfg.validate().context("--temperature")?;
    for (id, n) in [
        ("layers", args.layers),
        ("heads", args.heads),
        ("embd", args.embd),
        ("seq", args.seq),
        ("batch", args.batch),
        ("grad_accum", args.grad_accum),
    ] {
        if n == 0 {
            bail!("{} must be at least 1", flag(id));
        }
    }
    let fresh_model = !args.resume && args.init_from.is_none();
    if fresh_model && !args.embd.is_multiple_of(args.heads) {
        bail!(
            "--embd {} does not divide into --heads {} heads of equal size",
            args.embd,
            args.heads
        );
    }
    if !(args.clip.is_finite() && args.clip >= 0.0) {
        bail!(
            "--clip is {}; it must be a finite number >= 0 (0: no clipping)",
            args.clip
        );
    }
    if args.eval_batches == 0 {
        bail!("--eval-batches must be at least 1");
    }
    // Where the run will write, checked before any step is spent: a fresh run never writes
    // over another run's checkpoints, and a place no directory can be made fails now.
    let run_dir = match &args.ckpt_dir {
        Some(dir) => Some(run_directory(dir, args.resume)?),
        None => None,
    };
    if let Some(dir) = &run_dir {
        if !args.resume && dir.join(LATEST).exists() {
            bail!(
                "{} already holds a run (it has a `latest` checkpoint): pass --resume to continue it, or choose another --ckpt-dir",
                dir.display()
            );
        }
        check_dir_can_exist(dir).context("--ckpt-dir")?;
    }
    if let Some(parent) = args.metrics.as_deref().and_then(Path::parent) {
        check_dir_can_exist(parent).context("--metrics")?;
    }
    let report_dir = match (&args.report, &run_dir) {
        (Some(dir), _) if dir.as_os_str() == "none" => None,
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(dir)) => Some(dir.clone()),
        (None, None) => Some(PathBuf::from("cllm-report")),
    };
    if let Some(dir) = &report_dir {
        check_dir_can_exist(dir).context("the report directory")?;
    }
    let start = Instant::now();
    let (mut tree, warnings, mut topology_text) = threads_plan(args.threads)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    // Each worker takes an equal share of the batch's rows. Without --threads, a core count the
    // batch does not divide by (6, 12, 16 ...) takes the most workers it does divide by, so the
    // default command runs on any machine.
    // A resumed run takes the batch, and where it fits the worker count, of its checkpoint (the
    // same workers continue it bit for bit).
    let cores = tree.cpus().len();
    let saved = match (&args.ckpt_dir, args.resume) {
        (Some(dir), true) => saved_batch_and_workers(dir),
        _ => None,
    };
    let batch = saved.map_or(args.batch, |(batch, _)| batch);
    if args.threads.is_none() {
        let fit = match saved {
            Some((_, workers)) if workers <= cores && batch.is_multiple_of(workers) => workers,
            _ => (1..=cores)
                .rev()
                .find(|&w| batch.is_multiple_of(w))
                .unwrap_or(1),
        };
        if fit != cores {
            eprintln!(
                "note: training on {fit} of {cores} workers (the batch of {batch} rows divides over {fit}{})",
                if saved.is_some_and(|(_, workers)| workers == fit) { ", as the checkpoint did" } else { "" }
            );
            (tree, _, topology_text) = threads_plan(Some(fit))?;
        }
    }
    let spheres = Spheres::new(&tree).context("starting the sphere workers")?;
    // Checked on the workers the run got, whatever chose them: --threads (capped at the allowed
    // cores), CLLM_THREADS, or a machine with fewer cores than the checkpoint's workers.
    if let Some((_, workers)) = saved {
        let now = spheres.count();
        if now != workers {
            eprintln!(
                "warning: the checkpoint was trained on {workers} workers; on {now} the run continues, but not bit for bit as an uninterrupted run would (the workers' gradient sums add in another order)"
            );
        }
    }
    for w in spheres.warnings() {
        eprintln!("warning: {w}");
    }

    // The model and trainer: resumed, initialised from a Hugging Face directory, or fresh.
    let is_given = |id: &str| given.iter().any(|g| g == id);
    // Without --min-lr, the decay ends at the default or at --lr, whichever is lower.
    let min_lr = if is_given("min_lr") {
        args.min_lr
    } else {
        args.min_lr.min(args.lr)
    };
    let schedule = schedule_of(args.schedule, args.lr, min_lr, args.warmup, args.steps);
    // A model to start from (a Hugging Face directory, a cllm checkpoint, or a run's latest),
    // loaded first: it brings its own tokenizer when it has one.
    let init = match (&args.init_from, args.resume) {
        (Some(path), false) => Some(load_model(path)?),
        _ => None,
    };
    // Its tokenizer is found as cllm-generate finds one: a cllm checkpoint's tokenizer.json, or a
    // Hugging Face directory's vocab.json + merges.txt.
    let (init_tokenizer, init_lacks_tokenizer) = match (&init, &args.tokenizer) {
        (Some((_, hf, dir)), None) => {
            match Codec::for_model(dir, None, hf)? {
                Codec::Bpe(t) => (Some(*t), false),
                // A byte-level model: a BPE trained on the corpus with --bpe-vocab 257 (the bytes
                // and <|endoftext|>) matches it; the vocabulary check below refuses a larger one.
                Codec::Bytes => (None, false),
                Codec::None => (None, true),
            }
        }
        _ => (None, false),
    };
    if args.init_from.is_some() && !args.resume {
        for id in ["layers", "heads", "embd"] {
            if given.iter().any(|g| g == id) {
                eprintln!(
                    "warning: {} is ignored with --init-from: the model's own shape is used",
                    flag(id)
                );
            }
        }
    }
    // The tokenizer: from --tokenizer, the starting model, or trained on the default corpus (a
    // resumed run takes the one its checkpoint stored instead, below).
    let shards_tokenizer = match &args.data {
        Some(data) => ShardsTokenizer::find(data)?,
        None => None,
    };
    let tokenizer = match (&args.tokenizer, init_tokenizer, &args.data) {
        (Some(name), _, _) => load_tokenizer(name)?,
        (None, Some(t), _) => t,
        (None, None, Some(_)) if !args.resume && shards_tokenizer.is_some() => {
            shards_tokenizer.as_ref().expect("matched is_some").tokenizer.clone()
        }
        (None, None, None) if init_lacks_tokenizer => bail!(
            "the --init-from model brings no tokenizer cllm reads (a cllm tokenizer.json, or vocab.json + merges.txt), and a new one would not match its embeddings: pass --tokenizer FILE|gpt2"
        ),
        (None, None, None) if !args.resume => Tokenizer::train(corpus::PLAYS.iter().map(|(_, text)| *text), args.bpe_vocab, &[])?,
        (None, None, None) => Tokenizer::gpt2_builtin(), // replaced by the checkpoint's
        (None, None, Some(_)) if args.resume => Tokenizer::gpt2_builtin(), // replaced by the checkpoint's
        (None, None, Some(_)) => bail!("--data needs --tokenizer: no tokenizer.json lies beside the shards (pass the file cllm-prepare wrote with them, or gpt2)"),
    };
    let mut steps = args.steps;
    let mut data_position = None;
    let mut resumed_tokenizer = None;
    let mut trainer = if args.resume {
        let dir = args
            .ckpt_dir
            .as_ref()
            .context("--resume needs --ckpt-dir")?;
        let Resumed {
            mut trainer,
            dir,
            data_position: pos,
            tokenizer,
            total_steps,
        } = Trainer::resume(dir, spheres).with_context(|| {
            format!("resuming from {}{}", dir.display(), older_checkpoints(dir))
        })?;
        // The checkpoint's schedule, with what the command line gives in its place: a longer
        // --steps stretches the decay over the new total.
        let (kind, lr, min_lr, warmup, total) = match trainer.config().schedule {
            Schedule::Constant { lr } => (ScheduleArg::Constant, lr, lr, 0, 0),
            Schedule::Cosine {
                lr,
                min_lr,
                warmup,
                total,
            } => (ScheduleArg::Cosine, lr, min_lr, warmup, total),
            Schedule::Linear {
                lr,
                min_lr,
                warmup,
                total,
            } => (ScheduleArg::Linear, lr, min_lr, warmup, total),
        };
        // Without --steps the run ends where the original meant to: the total it saved, or
        // its schedule's (checkpoints written before the total was saved).
        steps = match (is_given("steps"), total_steps, total) {
            (true, _, _) => args.steps,
            (false, Some(n), _) => usize::try_from(n).unwrap_or(usize::MAX),
            (false, None, total) if total > 0 => total,
            (false, None, _) => bail!(
                "{} does not record how many steps its run meant to take: pass --steps (the total, counting the {} already taken)",
                dir.display(),
                trainer.step_count()
            ),
        };
        if steps <= trainer.step_count() as usize {
            bail!(
                "{} is at step {} already, and the run {}: pass a larger --steps to train further",
                dir.display(),
                trainer.step_count(),
                if is_given("steps") {
                    format!("asks for {steps} steps in all")
                } else {
                    format!("meant to take {steps} steps in all")
                }
            );
        }
        let pick = |id: &str, cli: f32, saved: f32| if is_given(id) { cli } else { saved };
        let merged = schedule_of(
            if is_given("schedule") {
                args.schedule
            } else {
                kind
            },
            pick("lr", args.lr, lr),
            pick("min_lr", args.min_lr, min_lr),
            if is_given("warmup") {
                args.warmup
            } else {
                warmup
            },
            if is_given("steps") || total == 0 {
                steps
            } else {
                total
            },
        );
        if merged != trainer.config().schedule {
            eprintln!("learning-rate schedule: {merged:?} (the checkpoint's, with the command line's changes)");
            trainer.set_schedule(merged)?;
        }
        let (m, c) = (*trainer.model.config(), *trainer.config());
        let differs = |id: &str| match id {
            "layers" => args.layers != m.n_layer,
            "heads" => args.heads != m.n_head,
            "embd" => args.embd != m.n_embd,
            "seq" => args.seq != c.seq_len,
            "batch" => args.batch != c.batch,
            "grad_accum" => args.grad_accum != c.grad_accum,
            "seed" => args.seed != c.seed,
            _ => true,
        };
        for id in KEPT_ON_RESUME
            .iter()
            .filter(|id| is_given(id) && differs(id))
        {
            eprintln!(
                "warning: {} is ignored when resuming: the checkpoint's setting is kept",
                flag(id)
            );
        }
        eprintln!(
            "resumed from {} at step {}",
            dir.display(),
            trainer.step_count()
        );
        data_position = Some(DataPosition::from_json(&pos)?);
        resumed_tokenizer = tokenizer;
        trainer
    } else {
        let model = match init {
            Some((model, _, _)) => model,
            None => {
                let cfg = GptConfig {
                    vocab_size: tokenizer.vocab_size(),
                    n_positions: args.seq,
                    n_embd: args.embd,
                    n_layer: args.layers,
                    n_head: args.heads,
                };
                cfg.validate()
                    .map_err(anyhow::Error::msg)
                    .context("the model shape")?;
                Gpt::init_random(cfg, args.seed)
            }
        };
        let optimizer = match args.optimizer {
            OptimizerArg::Adamw => OptimizerKind::AdamW {
                beta1: args.beta1,
                beta2: args.beta2,
                eps: 1e-8,
                weight_decay: args.weight_decay,
            },
            OptimizerArg::Sgd => OptimizerKind::Sgd {
                momentum: args.momentum,
                dampening: 0.0,
                nesterov: args.nesterov,
                weight_decay: args.weight_decay as f32,
            },
        };
        let config = TrainConfig {
            batch: args.batch,
            seq_len: args.seq,
            grad_accum: args.grad_accum,
            optimizer,
            schedule,
            clip: (args.clip > 0.0).then_some(args.clip),
            seed: args.seed,
        };
        Trainer::new(model, config, spheres)?
    };
    let from_checkpoint = resumed_tokenizer.is_some();
    if from_checkpoint && is_given("tokenizer") {
        eprintln!(
            "warning: --tokenizer is ignored when resuming: the checkpoint's tokenizer is kept"
        );
    }
    let tokenizer = match resumed_tokenizer {
        Some((name, bytes)) => {
            Tokenizer::from_json(&bytes, name.as_ref()).context("the checkpoint's tokenizer")?
        }
        None => tokenizer,
    };
    // Shards are ids of the tokenizer cllm-prepare wrote beside them: any other would train on
    // (and sample) the wrong text.
    if let Some(shards) = &shards_tokenizer {
        let (ours, fix) = if from_checkpoint {
            (
                "the checkpoint's tokenizer".to_string(),
                "resume with the shards the run was trained on",
            )
        } else if let Some(name) = &args.tokenizer {
            (
                format!("--tokenizer {name}"),
                "drop --tokenizer to use the shards' own, or prepare the shards again with this tokenizer",
            )
        } else {
            (
                "the --init-from model's tokenizer".to_string(),
                "prepare the shards with the model's tokenizer (cllm-prepare --tokenizer)",
            )
        };
        shards.check(&tokenizer, &ours, fix)?;
    }
    let tokenizer_json = tokenizer.to_json();
    let model_cfg = *trainer.model.config();
    if model_cfg.vocab_size < tokenizer.vocab_size() {
        bail!(
            "the tokenizer has {} tokens but the model only {}; use a matching model or tokenizer",
            tokenizer.vocab_size(),
            model_cfg.vocab_size
        );
    }
    // The data: shards, or the embedded corpus encoded with an end-of-text token before each play.
    let source = match &args.data {
        Some(pattern) => TokenSource::Glob(pattern.clone()),
        None => {
            let mut tokens = Vec::new();
            for (_, text) in corpus::PLAYS {
                tokens.push(tokenizer.eot_token());
                tokenizer.encode_ordinary_into(text, &mut tokens);
            }
            TokenSource::Memory(tokens)
        }
    };
    if args.data.is_some() && is_given("val_fraction") {
        eprintln!("warning: --val-fraction is ignored with --data: the val_*.bin shards are the validation set");
    }
    let (train_src, val_src) = source.train_val(args.val_fraction)?;
    if let Schedule::Cosine { warmup, .. } | Schedule::Linear { warmup, .. } =
        trainer.config().schedule
    {
        if warmup >= steps {
            eprintln!(
                "warning: the warmup ({warmup} steps, --warmup) is not shorter than the run ({steps} steps): the learning rate never reaches its peak"
            );
        }
    }
    let cfg = *trainer.config();
    // The trainer's seed: a resumed run's data order is its checkpoint's, whatever --seed says.
    let loader_cfg = |shuffle| LoaderConfig {
        batch: cfg.batch,
        seq: cfg.seq_len,
        seed: cfg.seed,
        shuffle,
        vocab_size: Some(model_cfg.vocab_size),
    };
    let mut train =
        Loader::new(train_src, loader_cfg(true)).context("opening the training data")?;
    if let Some(pos) = data_position {
        train.restore(pos)?;
    }
    let mut val = match val_src {
        Some(src) => {
            Some(Loader::new(src, loader_cfg(false)).context("opening the validation data")?)
        }
        None => None,
    };

    // The plan.
    let plan = trainer.memory_plan();
    println!(
        "model: {} parameters (L={} NH={} C={} V={} maxT={}); batch {}x{} x{} accumulation; {} steps; isa {isa}",
        model_cfg.num_parameters(), model_cfg.n_layer, model_cfg.n_head, model_cfg.n_embd, model_cfg.vocab_size, model_cfg.n_positions,
        cfg.batch, cfg.seq_len, cfg.grad_accum, steps,
    );
    println!(
        "arenas: params {}, grads {}, optimizer {}, activations {} x {} workers = {} planned",
        mib(plan.params),
        mib(plan.grads),
        mib(plan.optimizer),
        mib(plan.activations_per_worker),
        plan.workers,
        mib(plan.total),
    );
    print!("{topology_text}");
    println!(
        "training data: {} tokens; validation: {}",
        train.tokens(),
        val.as_ref()
            .map_or("none".to_string(), |v| format!("{} tokens", v.tokens()))
    );

    let mut metrics = match &args.metrics {
        Some(path) => Some(
            create_parent(path)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                })
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    let bar = progress(steps as u64, trainer.step_count());
    let (mut tokens_buf, mut targets_buf) = (
        vec![0u32; cfg.batch * cfg.seq_len],
        vec![0u32; cfg.batch * cfg.seq_len],
    );
    let mut last_val = None;
    let mut tok_per_s_sum = (0.0f64, 0usize);
    let first_step = trainer.step_count() as usize;
    let mut curve = Curve::default();
    let mut evals = Vec::new();
    let mut tokens_trained = 0u64;
    while (trainer.step_count() as usize) < steps {
        let t0 = Instant::now();
        let stats = trainer.step(|tok, tgt| train.next_batch_into(tok, tgt))?;
        let tok_s = stats.tokens as f64 / t0.elapsed().as_secs_f64();
        if stats.step > 0 {
            tok_per_s_sum = (tok_per_s_sum.0 + tok_s, tok_per_s_sum.1 + 1);
        }
        let step = stats.step as usize + 1;
        tokens_trained += stats.tokens as u64;
        let point = StepPoint {
            step,
            train_loss: stats.loss,
            lr: stats.lr,
            tokens_per_s: tok_s,
            elapsed_s: start.elapsed().as_secs_f64(),
        };
        curve.push(point);
        bar.set_position(step as u64);
        bar.set_message(format!(
            "loss {:.4}  {:.0} tok/s  lr {:.2e}  |g| {:.3}",
            stats.loss, tok_s, stats.lr, stats.grad_norm
        ));
        let last = step == steps;
        let mut val_loss = None;
        if let Some(val) = val.as_mut() {
            if last || (args.eval_every > 0 && step.is_multiple_of(args.eval_every)) {
                val.rewind();
                let mut sum = 0.0f64;
                for _ in 0..args.eval_batches.max(1) {
                    val.next_batch_into(&mut tokens_buf, &mut targets_buf)?;
                    sum += trainer.eval_loss(&tokens_buf, &targets_buf)? as f64;
                }
                let v = (sum / args.eval_batches.max(1) as f64) as f32;
                bar.suspend(|| {
                    println!(
                        "step {step}: train loss {:.4}, val loss {v:.4} (ppl {:.2})",
                        stats.loss,
                        v.exp()
                    )
                });
                val_loss = Some(v);
                last_val = Some(v);
                evals.push(EvalPoint {
                    at: point,
                    val_loss: v,
                });
            }
        }
        if let Some(f) = metrics.as_mut() {
            let line = json!({
                "step": step, "loss": stats.loss, "val_loss": val_loss,
                "val_ppl": val_loss.map(|v| (v as f64).exp()), "lr": stats.lr, "grad_norm": stats.grad_norm,
                "tokens_per_s": tok_s, "elapsed_s": point.elapsed_s,
            });
            writeln!(f, "{line}")?;
        }
        // The sample's seed is drawn from the trainer's RNG before the checkpoint, whose state
        // it saves: a run resumed from here draws the samples the uninterrupted run draws.
        let sample_seed =
            (val_loss.is_some() && args.sample_tokens > 0).then(|| trainer.rng.next_u64());
        if let Some(dir) = &run_dir {
            if last || (args.ckpt_every > 0 && step.is_multiple_of(args.ckpt_every)) {
                let opts = SaveOptions {
                    data_position: train.position().to_json(),
                    total_steps: Some(steps as u64),
                    tokenizer: Some((
                        cllm_engine::checkpoint::TOKENIZER_FILE,
                        tokenizer_json.as_bytes(),
                    )),
                    eot_token: Some(tokenizer.eot_token()),
                    val_loss,
                    keep: args.keep,
                };
                let saved = trainer
                    .save(dir, &opts)
                    .with_context(|| format!("saving a checkpoint in {}", dir.display()))?;
                bar.suspend(|| println!("saved {}", saved.dir.display()));
            }
        }
        // Samples come after the checkpoint, and a failed one is only a warning.
        if let Some(seed) = sample_seed {
            let n = args.sample_tokens.min(120);
            let text = sample_text(&trainer.model, &tokenizer, n, &sample_cfg, seed);
            bar.suspend(|| match text {
                Ok(text) => println!("{}", indent(&text)),
                Err(e) => eprintln!("warning: sampling failed: {e:#}"),
            });
        }
    }
    bar.finish_and_clear();

    let elapsed = start.elapsed().as_secs_f64();
    let mean_tok_s = if tok_per_s_sum.1 > 0 {
        tok_per_s_sum.0 / tok_per_s_sum.1 as f64
    } else {
        0.0
    };
    println!(
        "done: {} steps in {elapsed:.1} s, {mean_tok_s:.0} tokens/s (mean after the first step){}",
        trainer.step_count(),
        last_val.map_or(String::new(), |v| format!(", final val loss {v:.4}")),
    );
    println!("memory: planned {}, {}", mib(plan.total), memory_report());
    if let Some(dir) = report_dir {
        if first_step > 0 {
            if let Some(kept) = TrainReport::keep_earlier(&dir)? {
                println!("the earlier part's report is now {}", kept.display());
            }
        }
        let report = TrainReport {
            config: run_config(
                &args,
                first_step..steps,
                run_dir.as_deref(),
                &model_cfg,
                &cfg,
                isa.to_string(),
                plan.workers,
            ),
            first_step,
            curve,
            evals,
            tokens: tokens_trained,
            wall_s: elapsed,
            mean_tokens_per_s: mean_tok_s,
            memory: plan,
            peak_rss_bytes: cllm_engine::train::bench::peak_rss_bytes(),
        };
        let [json_path, md_path] = report
            .write(&dir)
            .with_context(|| format!("writing the report in {}", dir.display()))?;
        println!("report: {} and {}", json_path.display(), md_path.display());
    }
    if args.sample_tokens > 0 {
        match sample_text(
            &trainer.model,
            &tokenizer,
            args.sample_tokens,
            &sample_cfg,
            trainer.rng.next_u64(),
        ) {
            Ok(text) => println!("sample:\n{}", indent(&text)),
            Err(e) => eprintln!("warning: sampling failed: {e:#}"),
        }
    }
    Ok(())
}

/// The settings the report lists: model shape, batch, optimizer, schedule, data and machine.
/// `steps`: this part of the run, from its first step to the run's total.
fn run_config(
    args: &Args,
    steps: Range<usize>,
    run_dir: Option<&Path>,
    model: &GptConfig,
    train: &TrainConfig,
    isa: String,
    workers: usize,
) -> Vec<(String, Value)> {
    let optimizer = match train.optimizer {
        OptimizerKind::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
        } => {
            json!({"name": "adamw", "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay})
        }
        OptimizerKind::Sgd {
            momentum,
            dampening,
            nesterov,
            weight_decay,
        } => {
            json!({"name": "sgd", "momentum": f32_value(momentum), "dampening": f32_value(dampening), "nesterov": nesterov, "weight_decay": f32_value(weight_decay)})
        }
    };
    let peak_lr = match train.schedule {
        Schedule::Constant { lr } | Schedule::Cosine { lr, .. } | Schedule::Linear { lr, .. } => lr,
    };
    let schedule = match train.schedule {
        Schedule::Constant { lr } => json!({"name": "constant", "lr": f32_value(lr)}),
        Schedule::Cosine {
            lr,
            min_lr,
            warmup,
            total,
        } => {
            json!({"name": "cosine", "lr": f32_value(lr), "min_lr": f32_value(min_lr), "warmup": warmup, "total": total})
        }
        Schedule::Linear {
            lr,
            min_lr,
            warmup,
            total,
        } => {
            json!({"name": "linear", "lr": f32_value(lr), "min_lr": f32_value(min_lr), "warmup": warmup, "total": total})
        }
    };
    let data = match &args.data {
        Some(glob) => json!(glob),
        None => json!(format!(
            "embedded corpus ({} plays), validation fraction {}",
            corpus::PLAYS.len(),
            args.val_fraction
        )),
    };
    let tokenizer = match (&args.tokenizer, args.resume) {
        (Some(t), _) => json!(t),
        (None, true) => json!("the checkpoint's"),
        (None, false) => json!(format!(
            "BPE of {} tokens trained on the corpus",
            args.bpe_vocab
        )),
    };
    [
        ("parameters", json!(model.num_parameters())),
        ("layers", json!(model.n_layer)),
        ("heads", json!(model.n_head)),
        ("embd", json!(model.n_embd)),
        ("vocab", json!(model.vocab_size)),
        ("n_positions", json!(model.n_positions)),
        ("batch", json!(train.batch)),
        ("seq", json!(train.seq_len)),
        ("grad_accum", json!(train.grad_accum)),
        ("steps", json!(steps.end)),
        ("first_step", json!(steps.start)),
        ("optimizer", optimizer),
        ("schedule", schedule),
        ("lr", f32_value(peak_lr)),
        ("clip", train.clip.map_or(Value::Null, f32_value)),
        ("seed", json!(train.seed)),
        ("eval_every", json!(args.eval_every)),
        ("eval_batches", json!(args.eval_batches)),
        ("threads", json!(workers)),
        ("isa", json!(isa)),
        ("data", data),
        ("tokenizer", tokenizer),
        (
            "init_from",
            json!(args.init_from.as_ref().map(|p| p.display().to_string())),
        ),
        ("ckpt_dir", json!(run_dir.map(|p| p.display().to_string()))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A continuation of a newline (as long as the context allows), decoded.
/// `n` tokens sampled after a newline, drawn with `seed`. Ids the tokenizer lacks (a model whose
/// vocabulary is larger than its tokenizer's) show as U+FFFD.
fn sample_text(
    model: &Gpt,
    tokenizer: &Tokenizer,
    n: usize,
    cfg: &SampleConfig,
    seed: u64,
) -> Result<String> {
    let n = n.min(model.config().n_positions - 1);
    let prompt = tokenizer.encode_ordinary("\n");
    let ids = sample_continuation(model, &prompt, n, cfg, seed)?;
    let mut bytes = Vec::new();
    for id in ids {
        bytes.extend_from_slice(tokenizer.token_bytes(id).unwrap_or("\u{FFFD}".as_bytes()));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `gpt2` (the built-in GPT-2 vocabulary) or a cllm tokenizer file.
fn load_tokenizer(name: &str) -> Result<Tokenizer> {
    if name == "gpt2" {
        return Ok(Tokenizer::gpt2_builtin());
    }
    Tokenizer::load(name.as_ref()).with_context(|| format!("loading the tokenizer {name}"))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The schedule of the learning-rate flags (`total`: the run's last step).
fn schedule_of(kind: ScheduleArg, lr: f32, min_lr: f32, warmup: usize, total: usize) -> Schedule {
    match kind {
        ScheduleArg::Constant => Schedule::Constant { lr },
        ScheduleArg::Cosine => Schedule::Cosine {
            lr,
            min_lr,
            warmup,
            total,
        },
        ScheduleArg::Linear => Schedule::Linear {
            lr,
            min_lr,
            warmup,
            total,
        },
    }
}

/// The batch and worker count a run directory's latest checkpoint (or a checkpoint directory)
/// was saved with, when they can be read (resuming reports anything wrong with it properly).
fn saved_batch_and_workers(dir: &Path) -> Option<(usize, usize)> {
    let v = saved_state(&checkpoint_dir(dir).ok()?)?;
    let n = |key: &str| {
        v[key]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
    };
    Some((n("batch")?, n("workers")?))
}

/// The training state a checkpoint directory holds, read before `Trainer::resume` checks it.
fn saved_state(checkpoint: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(checkpoint.join(TRAINER_STATE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Where a run given `--ckpt-dir dir` saves its checkpoints: `dir` itself, or, when `dir` is one
/// checkpoint of a run (`--resume` from an older checkpoint than `latest`), the run directory
/// around it, so that new checkpoints never go inside a checkpoint. A run directory that already
/// holds later checkpoints is refused: the continued run would replace them.
fn run_directory(dir: &Path, resume: bool) -> Result<PathBuf> {
    if !dir.join(TRAINER_STATE_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    if !resume {
        bail!(
            "--ckpt-dir {} is a checkpoint (it holds {TRAINER_STATE_FILE}), not a run directory: choose another --ckpt-dir, or pass --resume to continue from it",
            dir.display()
        );
    }
    // The real path, so that `.` or a symbolic link is judged by where the checkpoint lies.
    let dir =
        &std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    if !parent.join(LATEST).is_file() {
        let name = dir
            .file_name()
            .map_or("CHECKPOINT".into(), |n| n.to_string_lossy());
        bail!(
            "--ckpt-dir {} is a checkpoint outside any run directory (no `latest` beside it), so the continued run would save inside it: put it in a run directory (mkdir RUN && mv {} RUN/ && echo {name} > RUN/latest) and pass --ckpt-dir RUN",
            dir.display(),
            dir.display()
        );
    }
    // Its step from its own state (its directory may have been renamed or copied).
    let this = saved_state(dir)
        .and_then(|v| v["step"].as_u64())
        .with_context(|| format!("{} holds no `step`", dir.join(TRAINER_STATE_FILE).display()))?;
    let later: Vec<String> = list_step_dirs(parent)?
        .into_iter()
        .filter(|&(step, _)| step > this)
        .map(|(_, name)| name)
        .collect();
    if !later.is_empty() {
        bail!(
            "{} holds checkpoints after {} ({}), which the continued run would replace: move them out of the run directory first, or resume from its `latest`",
            parent.display(),
            dir.display(),
            later.join(", ")
        );
    }
    Ok(parent.to_path_buf())
}

/// For a failed resume of the run directory `dir`: the other checkpoints it holds, and how to
/// continue from one (empty when there are none, or `dir` is not a run directory).
fn older_checkpoints(dir: &Path) -> String {
    let (Ok(Some(latest)), Ok(steps)) = (read_pointer(dir, LATEST), list_step_dirs(dir)) else {
        return String::new();
    };
    let others: Vec<String> = steps
        .into_iter()
        .map(|(_, name)| name)
        .filter(|name| *name != latest)
        .collect();
    match others.last() {
        None => String::new(),
        Some(last) => format!(
            " (the run also holds {}: to continue from {last}, move {latest} out of {} and pass --ckpt-dir {})",
            others.join(", "),
            dir.display(),
            dir.join(last).display()
        ),
    }
}

/// Creates the directory `path` is to be written in, if it has one.
fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// That `dir` is a directory or could be made one: no file stands at it or at a parent.
fn check_dir_can_exist(dir: &Path) -> Result<()> {
    let mut at = Some(dir);
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty()) {
        if p.exists() {
            if !p.is_dir() {
                bail!("{} is not a directory", p.display());
            }
            return Ok(());
        }
        at = p.parent();
    }
    Ok(())
}
