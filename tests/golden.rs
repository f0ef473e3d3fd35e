//! The model against a reference nobody here wrote: Hugging Face transformers' GPT-2 in float64
//! (`../shared/golden/tiny`, or any directory of the same form named by `CLLM_GOLDEN`).
//!
//! Forward logits and loss, every parameter gradient, the global gradient norm, and the losses of
//! 10 AdamW steps with global-norm clipping, with the tolerances the training issue sets. The
//! directory must exist: a missing reference fails the test rather than skipping it.

use cllm::engine::model::{Gpt, Workspace};
use cllm::engine::train::{clip_grad_norm, Optimizer, OptimizerKind};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    match std::env::var_os("CLLM_GOLDEN") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/tiny"),
    }
}

struct Expect {
    bytes: Vec<u8>,
}

impl Expect {
    fn load() -> Expect {
        let path = golden_dir().join("expect.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (set CLLM_GOLDEN to a golden directory)",
                path.display()
            )
        });
        Expect { bytes }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("expect.safetensors parses")
    }

    fn f64s(&self, name: &str) -> Vec<f64> {
        let st = self.tensors();
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("expect.safetensors: {name}: {e}"));
        assert_eq!(t.dtype(), Dtype::F64, "{name}");
        t.data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn ids(&self, name: &str) -> (Vec<u32>, Vec<usize>) {
        let st = self.tensors();
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("expect.safetensors: {name}: {e}"));
        assert_eq!(t.dtype(), Dtype::I32, "{name}");
        let ids = t
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        (ids, t.shape().to_vec())
    }

    fn optimizer(&self) -> serde_json::Value {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes).unwrap();
        let meta = meta
            .metadata()
            .as_ref()
            .expect("expect.safetensors has metadata");
        serde_json::from_str(&meta["optimizer"]).expect("optimizer metadata is JSON")
    }
}

fn rel_l2(got: impl Iterator<Item = f64>, want: &[f64]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    let mut n = 0;
    for (g, &w) in got.zip(want) {
        num += (g - w) * (g - w);
        den += w * w;
        n += 1;
    }
    assert_eq!(n, want.len(), "length mismatch");
    (num / den.max(1e-300)).sqrt()
}

#[test]
fn forward_backward_and_adamw_match_hugging_face() {
    let dir = golden_dir();
    let (mut model, _) =
        Gpt::from_hf_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let expect = Expect::load();
    let (x, shape) = expect.ids("x");
    let (y, _) = expect.ids("y");
    let (b, t) = (shape[0], shape[1]);
    let cfg = *model.config();
    let (v, vp) = (cfg.vocab_size, cfg.padded_vocab());
    let mut ws = Workspace::new(&model, b, t);

    // Forward: logits relative L2 <= 1e-5, loss within 1e-5.
    let loss = model.forward(&mut ws, &x, Some(&y)).unwrap().unwrap();
    let logits = ws.logits();
    let got = (0..b * t).flat_map(|row| logits[row * vp..row * vp + v].iter().map(|&l| l as f64));
    let err = rel_l2(got, &expect.f64s("logits"));
    assert!(err <= 1e-5, "logits relative L2 error {err:e} > 1e-5");
    let want_loss = expect.f64s("loss")[0];
    assert!(
        (loss as f64 - want_loss).abs() <= 1e-5,
        "loss {loss} vs {want_loss}"
    );

    // Backward: every gradient relative L2 <= 1e-4, global norm relative <= 1e-5.
    ws.zero_grad();
    model.backward(&mut ws).unwrap();
    for spec in &model.layout.tensors {
        let want = expect.f64s(&format!("grad.{}", spec.name));
        let err = rel_l2(
            ws.grads[spec.range.clone()].iter().map(|&g| g as f64),
            &want,
        );
        assert!(
            err <= 1e-4,
            "grad.{}: relative L2 error {err:e} > 1e-4",
            spec.name
        );
    }
    let norm = cllm::engine::train::grad_norm(&ws.grads) as f64;
    let want_norm = expect.f64s("grad_norm")[0];
    assert!(
        ((norm - want_norm) / want_norm).abs() <= 1e-5,
        "grad norm {norm} vs {want_norm}"
    );

    // 10 AdamW steps on the same batch, each loss within 1e-4 of PyTorch's.
    let opt = expect.optimizer();
    let num = |k: &str| {
        opt[k]
            .as_f64()
            .unwrap_or_else(|| panic!("optimizer metadata lacks {k}"))
    };
    let kind = OptimizerKind::AdamW {
        beta1: num("beta1"),
        beta2: num("beta2"),
        eps: num("eps"),
        weight_decay: num("weight_decay"),
    };
    let mut optimizer = Optimizer::new(kind, &model.layout);
    let step_losses = expect.f64s("step_losses");
    for (step, &want) in step_losses.iter().enumerate() {
        let loss = model.forward(&mut ws, &x, Some(&y)).unwrap().unwrap();
        assert!(
            (loss as f64 - want).abs() <= 1e-4,
            "step {step}: loss {loss} vs {want}"
        );
        ws.zero_grad();
        model.backward(&mut ws).unwrap();
        clip_grad_norm(&mut ws.grads, num("clip") as f32);
        optimizer.update(
            &model.layout,
            &mut model.params,
            &ws.grads,
            num("lr") as f32,
        );
    }
}

/// The same 10 AdamW steps through the data-parallel trainer: one worker on the (B, T) batch,
/// and two workers on the batch written twice (the mean over 2B rows of duplicated data is the
/// same loss and gradient), each loss within 1e-4 of PyTorch's.
#[test]
fn trainer_with_one_and_two_workers_matches_hugging_face() {
    use cllm::engine::sphere_tree::SphereTree;
    use cllm::engine::spheres::Spheres;
    use cllm::engine::train::{Schedule, TrainConfig, Trainer};

    let dir = golden_dir();
    let expect = Expect::load();
    let (x, shape) = expect.ids("x");
    let (y, _) = expect.ids("y");
    let (b, t) = (shape[0], shape[1]);
    let opt = expect.optimizer();
    let num = |k: &str| opt[k].as_f64().unwrap();
    let cpus = cllm::engine::topology::allowed_cpus().unwrap();
    for workers in [1, 2] {
        let (model, _) = Gpt::from_hf_dir(&dir).unwrap();
        let picked: Vec<usize> = (0..workers).map(|i| cpus[i % cpus.len()]).collect();
        let spheres = Spheres::new(&SphereTree::flat(&picked)).unwrap();
        let config = TrainConfig {
            batch: b * workers,
            seq_len: t,
            grad_accum: 1,
            optimizer: OptimizerKind::AdamW {
                beta1: num("beta1"),
                beta2: num("beta2"),
                eps: num("eps"),
                weight_decay: num("weight_decay"),
            },
            schedule: Schedule::Constant {
                lr: num("lr") as f32,
            },
            clip: Some(num("clip") as f32),
            seed: 0,
        };
        let mut trainer = Trainer::new(model, config, spheres).unwrap();
        for (step, &want) in expect.f64s("step_losses").iter().enumerate() {
            let stats = trainer
                .step(|tokens: &mut [u32], targets: &mut [u32]| {
                    for w in 0..workers {
                        tokens[w * b * t..(w + 1) * b * t].copy_from_slice(&x);
                        targets[w * b * t..(w + 1) * b * t].copy_from_slice(&y);
                    }
                    Ok::<_, std::convert::Infallible>(())
                })
                .unwrap();
            assert!(
                (stats.loss as f64 - want).abs() <= 1e-4,
                "{workers} workers, step {step}: loss {} vs {want}",
                stats.loss
            );
        }
    }
}
