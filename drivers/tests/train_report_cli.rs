//! cllm-train's end-of-run report and validation perplexity, from a tiny training on the embedded
//! corpus: report.json and report.md hold the configuration, every evaluation point (as the
//! --metrics lines give them), the best point, throughput and memory; the report goes to --report,
//! else --ckpt-dir, else ./cllm-report, and `--report none` writes none.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;

/// A model small enough for a debug build, evaluated every 3 steps.
const MODEL: [&str; 16] = [
    "--layers",
    "1",
    "--heads",
    "2",
    "--embd",
    "32",
    "--seq",
    "32",
    "--batch",
    "2",
    "--eval-every",
    "3",
    "--eval-batches",
    "2",
    "--bpe-vocab",
    "300",
];

/// MODEL without samples, on two workers: six steps, evaluated at 3 and 6.
const TINY: [&str; 4] = ["--sample-tokens", "0", "--threads", "2"];

/// cllm-train on MODEL and TINY for `steps` steps in `dir`, with `args`.
fn run_train(dir: &Path, steps: &str, args: &[&str]) -> std::process::Output {
    run_train_args(dir, &[&["--steps", steps], args].concat())
}

/// cllm-train on MODEL and TINY in `dir` with `args` alone.
fn run_train_args(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cllm-train"))
        .args(MODEL)
        .args(TINY)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("cllm-train runs")
}

/// A run that must succeed: its stdout.
fn train(dir: &Path, steps: &str, args: &[&str]) -> String {
    let out = run_train(dir, steps, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn report_holds_config_evals_best_throughput_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = train(
        dir.path(),
        "6",
        &["--report", "out", "--metrics", "metrics.jsonl"],
    );
    assert!(stdout.contains("report: out/report.json"), "{stdout}");

    // The metrics lines: val_loss and val_ppl at steps 3 and 6 only.
    let metrics: Vec<Value> = std::fs::read_to_string(dir.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), 6);
    for m in &metrics {
        let evaluated = m["step"] == 3 || m["step"] == 6;
        assert_eq!(m["val_ppl"].is_number(), evaluated, "{m}");
        if evaluated {
            let (loss, ppl) = (f64_of(&m["val_loss"]), f64_of(&m["val_ppl"]));
            assert!((ppl - loss.exp()).abs() <= 1e-12 * ppl, "{m}");
        }
    }

    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap())
            .unwrap();
    let c = &v["config"];
    for (key, want) in [
        ("layers", 1),
        ("heads", 2),
        ("embd", 32),
        ("vocab", 300),
        ("batch", 2),
        ("seq", 32),
        ("steps", 6),
        ("threads", 2),
        ("seed", 1337),
    ] {
        assert_eq!(c[key], want, "config.{key}");
    }
    assert_eq!(c["optimizer"]["name"], "adamw");
    assert_eq!(c["schedule"]["name"], "cosine");
    assert_eq!(c["lr"], 0.002);
    assert!(c["isa"].is_string() && c["data"].as_str().unwrap().contains("embedded corpus"));

    let evals = v["eval_points"].as_array().unwrap();
    assert_eq!(evals.len(), 2);
    for (e, m) in evals.iter().zip([&metrics[2], &metrics[5]]) {
        assert_eq!(e["step"], m["step"]);
        for key in ["val_loss", "val_ppl", "lr", "tokens_per_s"] {
            let (a, b) = (f64_of(&e[key]), f64_of(&m[key]));
            assert!((a - b).abs() <= 1e-6 * b.abs(), "{key}: {a} vs {b}");
        }
        assert!((f64_of(&e["train_loss"]) - f64_of(&m["loss"])).abs() < 1e-6);
    }
    let best = if f64_of(&evals[1]["val_loss"]) < f64_of(&evals[0]["val_loss"]) {
        &evals[1]
    } else {
        &evals[0]
    };
    assert_eq!(v["best"]["step"], best["step"]);
    assert_eq!(v["best"]["val_ppl"], best["val_ppl"]);
    assert_eq!(v["final"]["step"], 6);
    assert_eq!(v["train_curve"].as_array().unwrap().len(), 6);
    assert_eq!(v["steps"]["last"], 6);
    assert_eq!(v["throughput"]["tokens"], 6 * 2 * 32);
    assert!(f64_of(&v["throughput"]["mean_tokens_per_s"]) > 0.0);
    assert!(f64_of(&v["throughput"]["wall_s"]) > 0.0);
    assert!(f64_of(&v["memory"]["planned_bytes"]) > 0.0);
    assert!(f64_of(&v["memory"]["peak_rss_bytes"]) > f64_of(&v["memory"]["params_bytes"]));

    let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    let step3 = format!(
        "| 3 | {:.4} | {:.4} | {:.2} |",
        f64_of(&evals[0]["train_loss"]),
        f64_of(&evals[0]["val_loss"]),
        f64_of(&evals[0]["val_ppl"])
    );
    for needle in [
        "# Training report",
        "Best validation loss",
        "| layers | 1 |",
        step3.as_str(),
        "| 6 | ",
        "peak RSS",
    ] {
        assert!(md.contains(needle), "{needle} missing from\n{md}");
    }
}

#[test]
fn report_goes_to_the_checkpoint_dir_the_default_dir_or_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("a")).unwrap();
    train(&d.join("a"), "3", &["--ckpt-dir", "ck"]);
    assert!(d.join("a/ck/report.json").is_file() && d.join("a/ck/report.md").is_file());
    assert!(!d.join("a/cllm-report").exists());

    std::fs::create_dir_all(d.join("b")).unwrap();
    train(&d.join("b"), "3", &[]);
    assert!(d.join("b/cllm-report/report.json").is_file());

    std::fs::create_dir_all(d.join("c")).unwrap();
    let stdout = train(&d.join("c"), "3", &["--report", "none"]);
    assert!(!stdout.contains("report:"), "{stdout}");
    assert_eq!(std::fs::read_dir(d.join("c")).unwrap().count(), 0);

    // --metrics makes its directory, as --ckpt-dir and --report do.
    train(
        d,
        "3",
        &["--report", "none", "--metrics", "m/n/metrics.jsonl"],
    );
    assert!(d.join("m/n/metrics.jsonl").is_file());
}

/// A run that must fail: its stderr.
fn train_err(dir: &Path, steps: &str, args: &[&str]) -> String {
    let out = run_train(dir, steps, args);
    assert!(!out.status.success(), "the run succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// The last `step N: ... val loss X` line of a run's output.
fn last_eval(stdout: &str) -> &str {
    stdout
        .lines()
        .rfind(|l| l.starts_with("step ") && l.contains("val loss"))
        .unwrap()
}

#[test]
fn a_resumed_run_keeps_its_schedule_and_matches_the_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let schedule = ["--lr", "1e-2", "--warmup", "0", "--schedule", "constant"];
    let straight = train(d, "6", &[&schedule[..], &["--ckpt-dir", "a"]].concat());
    train(d, "3", &[&schedule[..], &["--ckpt-dir", "b"]].concat());
    // Without the schedule flags the checkpoint's constant 1e-2 holds (not the default cosine).
    let resumed = train(d, "6", &["--resume", "--ckpt-dir", "b"]);
    assert_eq!(last_eval(&resumed), last_eval(&straight));
}

#[test]
fn a_resumed_run_ends_at_its_own_total_and_an_older_checkpoint_continues_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let straight = train(d, "6", &["--ckpt-dir", "a"]);
    train(d, "6", &["--ckpt-dir", "b", "--ckpt-every", "3"]);
    // A fresh run does not write into a checkpoint, and a continued one does not replace later
    // checkpoints.
    let err = train_err(d, "6", &["--ckpt-dir", "b/step-00000003"]);
    assert!(err.contains("is a checkpoint"), "{err}");
    let resume_at_3 = ["--resume", "--ckpt-dir", "b/step-00000003"];
    let out = run_train_args(d, &resume_at_3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("would replace"), "{err}");
    // A copy under another name is judged by its own step: only step 6 is later.
    copy_dir(&d.join("b/step-00000003"), &d.join("b/copy"));
    let out = run_train_args(d, &["--resume", "--ckpt-dir", "b/copy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(step-00000006)"), "{err}");
    std::fs::remove_dir_all(d.join("b/copy")).unwrap();
    // A damaged latest checkpoint: the error says how to continue from the older one.
    let optimizer = d.join("b/step-00000006/optimizer.safetensors");
    let len = std::fs::metadata(&optimizer).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&optimizer)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = run_train_args(d, &["--resume", "--ckpt-dir", "b", "--steps", "9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("move step-00000006 out of b and pass --ckpt-dir b/step-00000003"),
        "{err}"
    );
    // Moved away, resumed from the older checkpoint without --steps, the run trains to its own
    // 6 steps, saving beside it.
    std::fs::rename(d.join("b/step-00000006"), d.join("step-6")).unwrap();
    let out = run_train_args(d, &resume_at_3);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        last_eval(&String::from_utf8(out.stdout).unwrap()),
        last_eval(&straight)
    );
    assert!(d.join("b/step-00000006/trainer_state.json").is_file());
    assert!(!d.join("b/step-00000003/step-00000006").exists());
    assert_eq!(
        std::fs::read_to_string(d.join("b/latest")).unwrap().trim(),
        "step-00000006"
    );
    // The first part's report is kept under its steps.
    assert!(d.join("b/report.steps-0-6.json").is_file());
    assert!(d.join("b/report.json").is_file());
    // The run is complete: nothing is left to train.
    let out = run_train_args(d, &["--resume", "--ckpt-dir", "b"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("at step 6 already"),
        "{err}"
    );
}

/// MODEL with samples and two micro-batches a step, without --threads (CLLM_THREADS decides).
const SEEDED: [&str; 6] = [
    "--grad-accum",
    "2",
    "--sample-tokens",
    "12",
    "--report",
    "none",
];

/// cllm-train on MODEL and SEEDED with `args` in `dir`, `CLLM_THREADS` set to `threads`; stdout and stderr.
fn train_seeded(dir: &Path, threads: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cllm-train"))
        .args(MODEL)
        .args(SEEDED)
        .args(args)
        .current_dir(dir)
        .env("CLLM_THREADS", threads)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("cllm-train runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), err)
}

/// The sampled lines a run printed after its line starting with `from`.
fn samples_after(stdout: &str, from: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with(from))
        .filter(|l| l.starts_with("    | "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_resumed_run_keeps_its_seed_and_samples_and_matches_the_straight_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (straight, _) = train_seeded(d, "2", &["--steps", "6", "--seed", "7", "--ckpt-dir", "a"]);
    let part = [
        "--steps",
        "6",
        "--seed",
        "7",
        "--ckpt-dir",
        "b",
        "--ckpt-every",
        "3",
    ];
    train_seeded(d, "2", &part);
    std::fs::remove_dir_all(d.join("b/step-00000006")).unwrap();
    // Without --seed: the data order and the samples are the checkpoint's seed's, not 1337's.
    let (resumed, _) = train_seeded(d, "2", &["--resume", "--ckpt-dir", "b/step-00000003"]);
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        let read = |run: &str| std::fs::read(d.join(run).join("step-00000006").join(file)).unwrap();
        assert!(
            read("a") == read("b"),
            "{file} differs from the straight run's"
        );
    }
    // The samples at step 6 and at the end are drawn as the uninterrupted run drew them.
    let want = samples_after(&straight, "step 6:");
    assert!(!want.is_empty(), "{straight}");
    assert_eq!(samples_after(&resumed, "step 6:"), want);
    // Another --seed cannot change a resumed run's data order: it is ignored, with a warning.
    let (_, err) = train_seeded(
        d,
        "2",
        &["--resume", "--ckpt-dir", "b", "--steps", "7", "--seed", "8"],
    );
    assert!(err.contains("--seed is ignored when resuming"), "{err}");
}

#[test]
fn resuming_on_fewer_workers_than_the_checkpoint_warns_whatever_chose_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_seeded(
        d,
        "2",
        &["--steps", "4", "--ckpt-dir", "r", "--ckpt-every", "2"],
    );
    let state: Value = serde_json::from_slice(
        &std::fs::read(d.join("r/step-00000002/trainer_state.json")).unwrap(),
    )
    .unwrap();
    if state["workers"] == 1 {
        return; // a one-core machine: no fewer workers to resume on.
    }
    std::fs::remove_dir_all(d.join("r/step-00000004")).unwrap();
    // CLLM_THREADS (like a machine with fewer cores) picks the workers, not --threads.
    let (_, err) = train_seeded(d, "1", &["--resume", "--ckpt-dir", "r/step-00000002"]);
    assert!(
        err.contains("trained on 2 workers; on 1 the run continues, but not bit for bit"),
        "{err}"
    );
}

#[test]
fn shards_train_with_their_own_tokenizer_and_refuse_another() {
    use cllm_engine::tokenizer::Tokenizer;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let text = "To be, or not to be, that is the question: whether 'tis nobler. ".repeat(100);
    let tokenizer = Tokenizer::train([text.as_str()], 300, &[]).unwrap();
    tokenizer.save(&data.join("tokenizer.json")).unwrap();
    let ids = tokenizer.encode_ordinary(&text);
    for name in ["train_000000.bin", "val_000000.bin"] {
        cllm_engine::data::write_shard(data.join(name), &ids, 300).unwrap();
    }
    // Without --tokenizer the shards' own is used.
    train(d, "2", &["--data", "data", "--report", "none"]);
    let err = train_err(
        d,
        "2",
        &["--data", "data", "--tokenizer", "gpt2", "--report", "none"],
    );
    assert!(err.contains("differs from --tokenizer gpt2"), "{err}");
    assert!(!err.contains("step 1"), "{err}");

    // A Hugging Face tokenizer.json beside shards is not theirs: --tokenizer decides.
    std::fs::rename(data.join("tokenizer.json"), d.join("tok.json")).unwrap();
    std::fs::write(
        data.join("tokenizer.json"),
        r#"{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}"#,
    )
    .unwrap();
    train(
        d,
        "2",
        &[
            "--data",
            "data",
            "--tokenizer",
            "tok.json",
            "--report",
            "none",
        ],
    );
}

/// Copies the files of directory `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A model to start from must bring its tokenizer (or be given one): a new BPE would not match
/// its embeddings. A Hugging Face tokenizer.json (not cllm's format) is not one cllm reads.
#[test]
fn init_from_a_model_without_a_tokenizer_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("hf");
    std::fs::create_dir_all(&model).unwrap();
    let golden = common::golden("tiny/trained");
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(golden.join(file), model.join(file)).unwrap();
    }
    std::fs::write(
        model.join("tokenizer.json"),
        r#"{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}"#,
    )
    .unwrap();
    let err = train_err(d, "2", &["--init-from", "hf", "--report", "none"]);
    assert!(
        err.contains("brings no tokenizer cllm reads") && !err.contains("step 1"),
        "{err}"
    );
}

#[test]
fn bad_settings_fail_before_training_and_runs_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "3", &["--ckpt-dir", "run"]);
    let err = train_err(d, "3", &["--ckpt-dir", "run"]);
    assert!(err.contains("already holds a run"), "{err}");
    for (args, want) in [
        (vec!["--temperature=-1"], "temperature must be >= 0"),
        (vec!["--lr", "NaN"], "the learning rate is NaN"),
        (vec!["--beta1", "1.5"], "beta1 is 1.5"),
        (vec!["--clip=-5"], "--clip is -5"),
        (vec!["--min-lr=-1"], "final learning rate is -1"),
    ] {
        let err = train_err(d, "3", &[&args[..], &["--ckpt-dir", "other"]].concat());
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("step 1"), "{args:?} trained first: {err}");
    }
    assert!(!d.join("other/latest").exists());
}
