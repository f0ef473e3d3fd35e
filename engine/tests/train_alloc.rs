//! No heap allocation in a training step once warm (after the first step). A counting global
//! allocator sees every thread, so this file holds a single test.

use std::convert::Infallible;

use cllm_engine::model::{Gpt, GptConfig};
use cllm_engine::rng::Rng;
use cllm_engine::sphere_tree::SphereTree;
use cllm_engine::spheres::Spheres;
use cllm_engine::topology::allowed_cpus;
use cllm_engine::train::{OptimizerKind, Schedule, TrainConfig, Trainer};

mod counting;

#[test]
fn training_steps_allocate_nothing_after_the_first() {
    let cfg = GptConfig {
        vocab_size: 300,
        n_positions: 64,
        n_embd: 32,
        n_layer: 2,
        n_head: 2,
    };
    let cpus = allowed_cpus().unwrap();
    let spheres = Spheres::new(&SphereTree::flat(&[cpus[0], cpus[1 % cpus.len()]])).unwrap();
    let config = TrainConfig {
        batch: 4,
        // 4·64 = 256 positions: two workers of 128 rows each, two logit chunks with V = 300.
        seq_len: 64,
        grad_accum: 2,
        optimizer: OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        },
        schedule: Schedule::Cosine {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 1,
            total: 10,
        },
        clip: Some(1.0),
        seed: 1,
    };
    let mut trainer = Trainer::new(Gpt::init_random(cfg, 1), config, spheres).unwrap();
    let mut rng = Rng::new(2);
    let mut fill = |x: &mut [u32], y: &mut [u32]| {
        for (a, b) in x.iter_mut().zip(y.iter_mut()) {
            *a = rng.below(300) as u32;
            *b = rng.below(300) as u32;
        }
        Ok::<_, Infallible>(())
    };
    trainer.step(&mut fill).unwrap();
    let eval = vec![7u32; 4 * 64];
    trainer.eval_loss(&eval, &eval).unwrap();

    counting::start();
    for _ in 0..3 {
        trainer.step(&mut fill).unwrap();
    }
    trainer.eval_loss(&eval, &eval).unwrap();
    counting::stop();
    assert_eq!(counting::allocations(), 0, "allocations in 3 warm steps");
}
