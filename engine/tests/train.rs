//! The data-parallel trainer: worker counts, accumulation, determinism, errors, and checkpoints
//! that resume bit for bit.

use cllm_engine::checkpoint::{
    read_pointer, write_checkpoint_dir, write_pointer, FileSource, BEST, LATEST,
};
use cllm_engine::model::{Gpt, GptConfig, Workspace};
use cllm_engine::rng::Rng;
use cllm_engine::sphere_tree::SphereTree;
use cllm_engine::spheres::Spheres;
use cllm_engine::topology::allowed_cpus;
use cllm_engine::train::{
    OptimizerKind, SaveOptions, Schedule, StepStats, TrainConfig, TrainError, Trainer,
};
use serde_json::json;
use std::convert::Infallible;

const CFG: GptConfig = GptConfig {
    vocab_size: 70,
    n_positions: 32,
    n_embd: 32,
    n_layer: 2,
    n_head: 4,
};

fn spheres(workers: usize) -> Spheres {
    let cpus = allowed_cpus().unwrap();
    let picked: Vec<usize> = (0..workers).map(|i| cpus[i % cpus.len()]).collect();
    Spheres::new(&SphereTree::flat(&picked)).unwrap()
}

fn config(batch: usize, grad_accum: usize) -> TrainConfig {
    TrainConfig {
        batch,
        seq_len: 16,
        grad_accum,
        optimizer: OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        },
        schedule: Schedule::Cosine {
            lr: 3e-3,
            min_lr: 3e-4,
            warmup: 2,
            total: 10,
        },
        clip: Some(1.0),
        seed: 5,
    }
}

fn trainer(workers: usize, batch: usize, grad_accum: usize) -> Trainer {
    Trainer::new(
        Gpt::init_random(CFG, 11),
        config(batch, grad_accum),
        spheres(workers),
    )
    .unwrap()
}

/// A data source: rows of a fixed random token stream, targets shifted by one.
fn fill(rng: &mut Rng) -> impl FnMut(&mut [u32], &mut [u32]) -> Result<(), Infallible> + '_ {
    move |tokens, targets| {
        for (x, y) in tokens.iter_mut().zip(targets.iter_mut()) {
            *x = rng.below(CFG.vocab_size as u64) as u32;
            *y = (*x * 7 + 3) % CFG.vocab_size as u32;
        }
        Ok(())
    }
}

fn run(t: &mut Trainer, rng: &mut Rng, steps: usize) -> Vec<StepStats> {
    (0..steps).map(|_| t.step(fill(rng)).unwrap()).collect()
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn two_workers_match_one_worker_and_accumulation_matches_a_big_batch() {
    let mut one = trainer(1, 4, 1);
    let mut two = trainer(2, 4, 1);
    let mut acc = trainer(2, 2, 2);
    let (s1, s2, s3) = (
        run(&mut one, &mut Rng::new(1), 3),
        run(&mut two, &mut Rng::new(1), 3),
        run(&mut acc, &mut Rng::new(1), 3),
    );
    // Only the order of float additions differs (per-worker sums, then the tree), so losses
    // and norms agree to a few f32 ulps times the depth of the sums; 1e-5 leaves headroom.
    for ((a, b), c) in s1.iter().zip(&s2).zip(&s3) {
        for x in [b, c] {
            assert!((a.loss - x.loss).abs() <= 1e-5 * a.loss, "{a:?} vs {x:?}");
            assert!(
                (a.grad_norm - x.grad_norm).abs() <= 1e-4 * a.grad_norm,
                "{a:?} vs {x:?}"
            );
            assert_eq!((a.lr, a.tokens), (x.lr, x.tokens));
        }
    }
    assert!(rel_l2(two.grads(), one.grads()) < 1e-5);
    assert!(rel_l2(acc.grads(), one.grads()) < 1e-5);
    assert!(rel_l2(&two.model.params, &one.model.params) < 1e-5);
    assert!(s1[2].loss < s1[0].loss, "the loss falls: {s1:?}");
}

#[test]
fn same_seed_and_workers_give_bit_identical_runs() {
    let a = run(&mut trainer(2, 4, 2), &mut Rng::new(9), 3);
    let b = run(&mut trainer(2, 4, 2), &mut Rng::new(9), 3);
    let bits = |s: &[StepStats]| -> Vec<(u32, u32)> {
        s.iter()
            .map(|x| (x.loss.to_bits(), x.grad_norm.to_bits()))
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn fused_head_matches_full_logits_backward() {
    let model = Gpt::init_random(CFG, 2);
    let (b, t) = (3, 16);
    let mut rng = Rng::new(4);
    let mut x = vec![0u32; b * t];
    let mut y = vec![0u32; b * t];
    fill(&mut rng)(&mut x, &mut y).unwrap();
    let mut full = Workspace::new(&model, b, t);
    let loss = model.forward(&mut full, &x, Some(&y)).unwrap().unwrap();
    model.backward(&mut full).unwrap();
    // Chunks of at most 10 rows: 48 positions make 10, 10, 10, 10 and a tail of 8.
    let mut fused = Workspace::for_training_with_chunk(&model, b, t, 10);
    let mut grads = vec![0.0; model.layout.total];
    let sum = model
        .forward_backward(&mut fused, &mut grads, &x, &y, 1.0 / (b * t) as f32)
        .unwrap();
    assert!(((sum / (b * t) as f64) as f32 - loss).abs() <= 1e-6 * loss);
    assert!(rel_l2(&grads, &full.grads) < 1e-6);
    // The chunked forward gives the same loss without keeping every logit.
    let chunked = model.forward(&mut fused, &x, Some(&y)).unwrap().unwrap();
    assert!((chunked - loss).abs() <= 1e-6 * loss);
    assert!(matches!(
        model.backward_into(&mut fused, &mut grads),
        Err(cllm_engine::model::ModelError::LogitsNotKept { .. })
    ));
}

#[test]
fn eval_loss_is_the_forward_mean() {
    let mut t = trainer(2, 4, 1);
    let mut rng = Rng::new(3);
    let (mut x, mut y) = (vec![0u32; 64], vec![0u32; 64]);
    fill(&mut rng)(&mut x, &mut y).unwrap();
    let got = t.eval_loss(&x, &y).unwrap();
    let mut ws = Workspace::new(&t.model, 4, 16);
    let want = t.model.forward(&mut ws, &x, Some(&y)).unwrap().unwrap();
    assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let err = Trainer::new(Gpt::init_random(CFG, 1), config(3, 1), spheres(2))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            TrainError::BatchNotDivisible {
                batch: 3,
                workers: 2
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("does not divide"));

    let mut t = trainer(1, 2, 1);
    let err = t
        .step(|x: &mut [u32], y: &mut [u32]| {
            x.fill(70);
            y.fill(0);
            Ok::<_, Infallible>(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");

    let err = t
        .step(|_: &mut [u32], _: &mut [u32]| Err("shard ended"))
        .unwrap_err();
    assert!(err.to_string().contains("shard ended"), "{err}");

    // A NaN parameter: the step stops with a typed error and leaves the parameters alone.
    t.model.params[t.model.layout.lnf_w.start] = f32::NAN;
    let before = t.model.params.clone();
    let err = t.step(fill(&mut Rng::new(1))).unwrap_err();
    assert!(matches!(err, TrainError::NonFiniteLoss { .. }), "{err}");
    assert!(before
        .iter()
        .zip(&t.model.params)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(t.step_count(), 0);

    // ... and such parameters are never saved.
    let dir = tempfile::tempdir().unwrap();
    let opts = SaveOptions {
        data_position: json!({}),
        total_steps: None,
        tokenizer: None,
        eot_token: None,
        val_loss: None,
        keep: 1,
    };
    let err = t.save(dir.path(), &opts).unwrap_err();
    assert!(matches!(err, TrainError::NonFiniteParams { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // The arenas are public: one that no longer fits the model is an error, not a stray write.
    let mut t = trainer(1, 2, 1);
    t.optimizer.m.truncate(16);
    let err = t.step(fill(&mut Rng::new(1))).unwrap_err();
    assert!(err.to_string().contains("do not fit"), "{err}");

    // Hyperparameters out of range are refused at construction.
    let bad = |edit: fn(&mut TrainConfig)| {
        let mut c = config(2, 1);
        edit(&mut c);
        Trainer::new(Gpt::init_random(CFG, 1), c, spheres(1))
            .err()
            .unwrap()
            .to_string()
    };
    assert!(bad(|c| c.clip = Some(f32::NAN)).contains("clip"));
    assert!(bad(|c| c.schedule = Schedule::Constant { lr: -1.0 }).contains("learning rate"));
    assert!(bad(|c| c.optimizer = OptimizerKind::AdamW {
        beta1: 1.5,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.0
    })
    .contains("beta1"));
}

#[test]
fn resume_continues_bit_for_bit_and_damage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut straight = trainer(2, 4, 1);
    let want = run(&mut straight, &mut Rng::new(8), 6);

    let mut first = trainer(2, 4, 1);
    let mut data = Rng::new(8);
    let mut got = run(&mut first, &mut data, 3);
    let saved = first
        .save(
            dir.path(),
            &SaveOptions {
                data_position: json!({ "rng": data.state() }),
                total_steps: Some(6),
                tokenizer: Some(("tokenizer.bin", b"bytes")),
                eot_token: Some(3),
                val_loss: Some(got[2].loss),
                keep: 2,
            },
        )
        .unwrap();
    drop(first);
    assert_eq!(saved.best.as_deref(), Some("step-00000003"));

    let resumed = Trainer::resume(dir.path(), spheres(2)).unwrap();
    assert_eq!(resumed.dir, saved.dir);
    assert_eq!(resumed.total_steps, Some(6));
    assert_eq!(
        resumed.tokenizer,
        Some(("tokenizer.bin".to_owned(), b"bytes".to_vec()))
    );
    let mut t = resumed.trainer;
    assert_eq!(t.step_count(), 3);
    let mut data = Rng::from_state(resumed.data_position["rng"].as_u64().unwrap());
    got.extend(run(&mut t, &mut data, 3));
    let bits = |s: &[StepStats]| -> Vec<(u64, u32, u32, u32)> {
        s.iter()
            .map(|x| {
                (
                    x.step,
                    x.loss.to_bits(),
                    x.grad_norm.to_bits(),
                    x.lr.to_bits(),
                )
            })
            .collect()
    };
    assert_eq!(bits(&got), bits(&want));
    assert!(t
        .model
        .params
        .iter()
        .zip(&straight.model.params)
        .all(|(a, b)| a.to_bits() == b.to_bits()));

    // The model half is a plain Hugging Face directory.
    let (hf, config) = Gpt::from_hf_dir(&saved.dir).unwrap();
    assert_eq!(hf.config(), &CFG);
    assert_eq!(
        (config.bos_token_id, config.eos_token_id),
        (Some(3), Some(3))
    );

    // Loading it checks the manifest: a flipped bit in the weights is refused by name, though
    // the file still parses. (The optimizer state, which a model load does not read, is not
    // hashed by it: damaged below, the model still loads.)
    let weights = saved.dir.join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    std::fs::write(&weights, &bad).unwrap();
    let err = Gpt::from_hf_dir(&saved.dir).err().unwrap().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::write(&weights, &good).unwrap();

    // A config that does not fit the weights is refused before anything is allocated.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&weights, copy.path().join("model.safetensors")).unwrap();
    let config = std::fs::read_to_string(saved.dir.join("config.json")).unwrap();
    let mut huge: serde_json::Value = serde_json::from_str(&config).unwrap();
    huge["n_embd"] = json!(1u64 << 20);
    huge["n_head"] = json!(1);
    huge["n_layer"] = json!(100_000u64);
    std::fs::write(copy.path().join("config.json"), huge.to_string()).unwrap();
    let err = Gpt::from_hf_dir(copy.path()).err().unwrap().to_string();
    assert!(err.contains("do not belong together"), "{err}");

    // Damage one file: resume names it.
    let opt = saved.dir.join("optimizer.safetensors");
    let mut bytes = std::fs::read(&opt).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    std::fs::write(&opt, &bytes).unwrap();
    Gpt::from_hf_dir(&saved.dir).unwrap();
    let err = Trainer::resume(&saved.dir, spheres(1))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("optimizer.safetensors"), "{err}");
    std::fs::write(&opt, &bytes[..n / 2]).unwrap();
    let err = Trainer::resume(&saved.dir, spheres(1))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("optimizer.safetensors"), "{err}");
}

#[test]
fn memory_plan_adds_up() {
    let t = trainer(2, 4, 1);
    let p = t.memory_plan();
    let total = 4 * t.model.layout.total;
    assert_eq!(p.params, total);
    assert_eq!(p.grads, 2 * total);
    assert_eq!(p.optimizer, 2 * total);
    assert_eq!(p.workers, 2);
    assert!(p.activations_per_worker > 0);
    assert_eq!(
        p.total,
        p.params + p.grads + p.optimizer + 2 * p.activations_per_worker
    );
}

/// The files of checkpoint `dir` but manifest.json, each passed through `edit(name, bytes)`,
/// written as the checkpoint `parent/name` (with a manifest of its own).
fn copy_checkpoint(
    dir: &std::path::Path,
    parent: &std::path::Path,
    name: &str,
    edit: impl Fn(&str, &mut Vec<u8>),
) -> std::path::PathBuf {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if file == "manifest.json" {
            continue;
        }
        let mut bytes = std::fs::read(dir.join(&file)).unwrap();
        edit(&file, &mut bytes);
        files.push((file, bytes));
    }
    let sources: Vec<(&str, &dyn FileSource)> = files
        .iter()
        .map(|(f, b)| (f.as_str(), b as &dyn FileSource))
        .collect();
    write_checkpoint_dir(parent, name, &sources).unwrap();
    parent.join(name)
}

/// An edit for [`copy_checkpoint`] that changes trainer_state.json's JSON only.
fn state(edit: impl Fn(&mut serde_json::Value)) -> impl Fn(&str, &mut Vec<u8>) {
    move |file, bytes| {
        if file == "trainer_state.json" {
            let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            edit(&mut v);
            *bytes = v.to_string().into_bytes();
        }
    }
}

#[test]
fn a_state_that_disagrees_with_its_directory_is_refused() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut t = trainer(1, 2, 1);
    run(&mut t, &mut Rng::new(3), 3);
    let saved = t
        .save(
            run_dir.path(),
            &SaveOptions {
                tokenizer: Some(("tokenizer.bin", b"bytes")),
                keep: 5,
                ..SaveOptions::default()
            },
        )
        .unwrap();
    drop(t);

    // The step-3 state under a step-7 name: resuming would continue at step 3 and later save
    // over this directory.
    let renamed = copy_checkpoint(&saved.dir, run_dir.path(), "step-00000007", |_, _| {});
    let err = Trainer::resume(&renamed, spheres(1))
        .err()
        .unwrap()
        .to_string();
    for part in [
        "step-00000007/trainer_state.json",
        "`step` is 3",
        "named for step 7",
        "step-00000003",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }

    // A tokenizer named outside the checkpoint (unverified by its manifest) is not read.
    let elsewhere = copy_checkpoint(
        &saved.dir,
        run_dir.path(),
        "step-00000003",
        state(|s| s["tokenizer"] = json!("../step-00000007/tokenizer.bin")),
    );
    let err = Trainer::resume(&elsewhere, spheres(1))
        .err()
        .unwrap()
        .to_string();
    for part in ["trainer_state.json", "`tokenizer`", "manifest.json"] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
}

#[test]
fn a_batch_beyond_memory_is_refused_before_allocating() {
    // 2^50 rows of 16 tokens: allocating their activations used to abort the process.
    let Err(e) = Trainer::new(Gpt::init_random(CFG, 11), config(1 << 50, 1), spheres(1)) else {
        panic!("a batch of 2^50 rows was accepted")
    };
    let msg = e.to_string();
    assert!(
        matches!(e, TrainError::Config(_)) && msg.contains("needs at least"),
        "{msg}"
    );
    assert!(msg.contains("use a smaller batch"), "{msg}");

    // From a training state, the error names the file.
    let run_dir = tempfile::tempdir().unwrap();
    let mut t = trainer(1, 2, 1);
    run(&mut t, &mut Rng::new(3), 1);
    let saved = t.save(run_dir.path(), &SaveOptions::default()).unwrap();
    drop(t);
    let huge = copy_checkpoint(
        &saved.dir,
        run_dir.path(),
        "step-00000001",
        state(|s| s["batch"] = json!(1u64 << 50)),
    );
    let err = Trainer::resume(&huge, spheres(1))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("step-00000001/trainer_state.json") && err.contains("needs at least"),
        "{err}"
    );
}

#[test]
fn a_negative_second_moment_is_refused_naming_the_optimizer_file() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut t = trainer(1, 2, 1);
    run(&mut t, &mut Rng::new(3), 1);
    let saved = t.save(run_dir.path(), &SaveOptions::default()).unwrap();
    drop(t);
    // Negate one stored f32 of `exp_avg_sq.wpe.weight` (a square: positive after a step).
    let damaged = copy_checkpoint(
        &saved.dir,
        run_dir.path(),
        "step-00000001",
        |file, bytes| {
            if file != "optimizer.safetensors" {
                return;
            }
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
            let start = header["exp_avg_sq.wpe.weight"]["data_offsets"][0]
                .as_u64()
                .unwrap() as usize;
            let at = 8 + n + start + 4 * 5;
            let x = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            assert!(x > 0.0, "{x}");
            bytes[at..at + 4].copy_from_slice(&(-x).to_le_bytes());
        },
    );
    let err = Trainer::resume(&damaged, spheres(1))
        .err()
        .unwrap()
        .to_string();
    for part in [
        "step-00000001/optimizer.safetensors",
        "`exp_avg_sq.wpe.weight`",
        "never negative",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
}

#[test]
fn a_resumed_run_whose_best_checkpoint_is_gone_keeps_saving() {
    let old_run = tempfile::tempdir().unwrap();
    let mut t = trainer(1, 2, 1);
    let mut data = Rng::new(3);
    let opts = |val_loss| SaveOptions {
        val_loss: Some(val_loss),
        keep: 5,
        ..SaveOptions::default()
    };
    run(&mut t, &mut data, 1);
    t.save(old_run.path(), &opts(1.0)).unwrap();
    run(&mut t, &mut data, 1);
    let saved = t.save(old_run.path(), &opts(2.0)).unwrap();
    assert_eq!(saved.best.as_deref(), Some("step-00000001"));
    // The best removed by hand, then a save without a validation loss: no checkpoint is best,
    // and no `best` pointer names the missing one.
    std::fs::remove_dir_all(old_run.path().join("step-00000001")).unwrap();
    run(&mut t, &mut data, 1);
    let unscored = SaveOptions {
        keep: 5,
        ..SaveOptions::default()
    };
    assert_eq!(t.save(old_run.path(), &unscored).unwrap().best, None);
    assert_eq!(read_pointer(old_run.path(), BEST).unwrap(), None);
    drop(t);

    // Only step 2 moved into a new run directory, as cllm-train advises for a lone checkpoint:
    // the best it records, step 1, is not there.
    let new_run = tempfile::tempdir().unwrap();
    copy_checkpoint(&saved.dir, new_run.path(), "step-00000002", |_, _| {});
    write_pointer(new_run.path(), LATEST, "step-00000002").unwrap();
    let mut t = Trainer::resume(new_run.path(), spheres(1)).unwrap().trainer;
    run(&mut t, &mut data, 1);
    // Worse than the recorded best: saving used to point `best` at the missing step 1, and fail.
    let saved = t.save(new_run.path(), &opts(3.0)).unwrap();
    assert_eq!(saved.best.as_deref(), Some("step-00000003"));
    assert_eq!(
        read_pointer(new_run.path(), BEST).unwrap().as_deref(),
        Some("step-00000003")
    );
}
