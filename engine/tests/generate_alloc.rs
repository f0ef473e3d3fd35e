//! Decoding allocates nothing per token: after the session is built and warm, `Decoder::step`
//! (on two sphere workers and on the calling thread) and `Sampler::next` make no allocation; and
//! `Decoder::memory_bytes` says what `Decoder::new` allocates. A counting global allocator sees
//! every thread, so this file holds a single test.

mod counting;

use cllm_engine::generate::{Decoder, SampleConfig, Sampler};
use cllm_engine::model::{Gpt, GptConfig};
use cllm_engine::rng::Rng;
use cllm_engine::sphere_tree::SphereTree;
use cllm_engine::spheres::Spheres;

#[test]
fn no_allocation_per_decoded_token() {
    let cfg = GptConfig {
        vocab_size: 300,
        n_positions: 64,
        n_embd: 64,
        n_layer: 2,
        n_head: 4,
    };
    let mut model = Gpt::zeros(cfg);
    let mut rng = Rng::new(1);
    for p in model.params.iter_mut() {
        *p = ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
    }
    let spheres = Spheres::new(&SphereTree::flat(&[0, 1])).unwrap();
    let sample = SampleConfig {
        temperature: 0.8,
        top_k: Some(50),
        top_p: Some(0.9),
        min_p: Some(0.02),
        repetition_penalty: Some(1.2),
    };
    // One-time initialisations (the cache sizes read from sysfs) are not the session's.
    drop(Decoder::new(&model, None, 1, 60).unwrap());
    for pool in [None, Some(&spheres)] {
        for batch in [1, 3, 10] {
            counting::start();
            let mut dec = Decoder::new(&model, pool, batch, 60).unwrap();
            counting::stop();
            // The estimate counts the buffers; the session's small bookkeeping is at most a few hundred bytes more.
            let workers = pool.map_or(1, Spheres::count);
            let estimate = Decoder::memory_bytes(&cfg, workers, batch, 60).unwrap() as usize;
            let allocated = counting::bytes();
            assert!(
                estimate <= allocated && allocated - estimate <= 4 << 10,
                "batch {batch}, {workers} workers: estimate {estimate}, allocated {allocated}"
            );
            let mut samplers: Vec<Sampler> = (0..batch)
                .map(|_| Sampler::new(&sample, 300, 5).unwrap())
                .collect();
            let mut history = vec![7u32; 64];
            let mut next = vec![0u32; batch];
            dec.prefill(&vec![3u32; batch * 4], &vec![0; batch])
                .unwrap();
            for round in 0..2 {
                if round == 1 {
                    counting::start();
                }
                for step in 0..20 {
                    for (b, s) in samplers.iter_mut().enumerate() {
                        next[b] = s.next(dec.logits(b), &history[..4 + step]);
                    }
                    history[4 + step] = next[0];
                    dec.step(&next).unwrap();
                }
                counting::stop();
                if round == 0 {
                    dec.prefill(&vec![3u32; batch * 4], &vec![0; batch])
                        .unwrap();
                }
            }
            assert_eq!(
                counting::allocations(),
                0,
                "batch {batch}, pool {}",
                pool.is_some()
            );
        }
    }
}
