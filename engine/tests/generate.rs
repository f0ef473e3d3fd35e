//! The KV-cache decoder against the full forward pass, batches against single prompts, the
//! sphere workers against the calling thread, and the sampling settings.

use cllm_engine::generate::{
    self, BeamConfig, Control, Decoder, GenerateConfig, GenerateError, SampleConfig, Sampler,
};
use cllm_engine::model::{Gpt, GptConfig, Workspace};
use cllm_engine::rng::Rng;
use cllm_engine::sphere_tree::SphereTree;
use cllm_engine::spheres::Spheres;

fn random_model(seed: u64) -> Gpt {
    random_weights(
        GptConfig {
            vocab_size: 100,
            n_positions: 40,
            n_embd: 32,
            n_layer: 2,
            n_head: 4,
        },
        seed,
    )
}

fn random_weights(cfg: GptConfig, seed: u64) -> Gpt {
    let mut m = Gpt::zeros(cfg);
    let mut rng = Rng::new(seed);
    for p in m.params.iter_mut() {
        *p = ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6;
    }
    m
}

fn prompt(seed: u64, n: usize) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(100) as u32).collect()
}

fn greedy(n: usize) -> GenerateConfig {
    GenerateConfig {
        sample: SampleConfig::greedy(),
        max_new_tokens: n,
        ..GenerateConfig::default()
    }
}

fn run(
    model: &Gpt,
    pool: Option<&Spheres>,
    prompts: &[&[u32]],
    cfg: &GenerateConfig,
) -> Vec<Vec<u32>> {
    generate::generate(model, pool, prompts, cfg, |_, _| Control::Continue)
        .unwrap()
        .tokens
}

#[test]
fn cached_logits_match_the_full_forward_pass() {
    let model = random_model(1);
    let tokens = prompt(2, 30);
    let vp = model.config().padded_vocab();
    let mut ws = Workspace::new(&model, 1, tokens.len());
    model.forward(&mut ws, &tokens, None).unwrap();
    let full = ws.logits().to_vec();
    // Prefill 12 tokens (the GEMM path), then one at a time (the GEMV path).
    let mut dec = Decoder::new(&model, None, 1, 30).unwrap();
    dec.prefill(&tokens[..12], &[0]).unwrap();
    for t in 11..30 {
        if t > 11 {
            dec.step(&tokens[t..t + 1]).unwrap();
        }
        let want = &full[t * vp..t * vp + 100];
        for (i, (g, w)) in dec.logits(0).iter().zip(want).enumerate() {
            // Same math in a different summation order (GEMV vs GEMM, per-head attention).
            assert!((g - w).abs() < 1e-4, "position {t} token {i}: {g} vs {w}");
        }
    }
}

/// Each row's logits at every position, from its own full forward pass (causal).
fn full_logits(model: &Gpt, rows: &[Vec<u32>]) -> Vec<Vec<f32>> {
    rows.iter()
        .map(|row| {
            let mut ws = Workspace::new(model, 1, row.len());
            model.forward(&mut ws, row, None).unwrap();
            ws.logits().to_vec()
        })
        .collect()
}

/// Prefills two tokens of every row, then decodes the rest one step at a time, checking each
/// row's first 100 logits at every position against `full` (the same math in another summation
/// order: partial sums over the workers' row blocks, or column-split GEMMs).
fn decode_matches(
    model: &Gpt,
    pool: Option<&Spheres>,
    rows: &[Vec<u32>],
    full: &[Vec<f32>],
    what: &str,
) {
    let (vp, n, t_max) = (model.config().padded_vocab(), rows.len(), rows[0].len());
    let mut dec = Decoder::new(model, pool, n, t_max).unwrap();
    let first: Vec<u32> = rows.iter().flat_map(|r| r[..2].to_vec()).collect();
    dec.prefill(&first, &vec![0; n]).unwrap();
    for t in 1..t_max {
        if t > 1 {
            let next: Vec<u32> = rows.iter().map(|r| r[t]).collect();
            dec.step(&next).unwrap();
        }
        for (b, logits) in full.iter().enumerate() {
            let want = &logits[t * vp..t * vp + 100];
            for (i, (g, w)) in dec.logits(b).iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-4,
                    "{what}, row {b}, position {t}, token {i}: {g} vs {w}"
                );
            }
        }
    }
}

/// The narrow path splits every weight by rows over the workers and the heads over them too:
/// worker counts that do not divide the heads (3), or exceed them (5, 4 heads), must still give
/// the full forward pass's logits, one row or three.
#[test]
fn split_weights_on_odd_worker_counts_match_the_full_forward_pass() {
    let model = random_model(7);
    for nw in [2, 3, 5] {
        let cpus: Vec<usize> = (0..nw).map(|i| i % 2).collect();
        let spheres = Spheres::new(&SphereTree::flat(&cpus)).unwrap();
        for batch in [1, 3] {
            let rows: Vec<Vec<u32>> = (0..batch).map(|b| prompt(30 + b as u64, 20)).collect();
            let full = full_logits(&model, &rows);
            decode_matches(
                &model,
                Some(&spheres),
                &rows,
                &full,
                &format!("{nw} workers"),
            );
        }
    }
}

/// More rows than one GEMV call takes (GEMV_MAX_ROWS = 8): every decode step runs each worker's
/// weight blocks under two groups of rows, which must still give each row's full forward pass, on
/// the calling thread and on three workers.
#[test]
fn decode_steps_of_many_rows_match_the_full_forward_pass() {
    let model = random_model(9);
    let rows: Vec<Vec<u32>> = (0..10).map(|b| prompt(50 + b as u64, 12)).collect();
    let full = full_logits(&model, &rows);
    let spheres = Spheres::new(&SphereTree::flat(&[0, 1, 0])).unwrap();
    decode_matches(&model, None, &rows, &full, "calling thread");
    decode_matches(&model, Some(&spheres), &rows, &full, "three workers");
}

/// Each row of a batch gets the logits it gets alone, bit for bit, whatever else is in the batch:
/// prompts of 1 to 8 tokens left-padded to the longest, three rows (their decode steps one group
/// on the narrow path, reading the session's panel-form copy of the layer matrices; a session of
/// one reads the model's) and ten (two groups), on the calling thread and on three workers. Alone,
/// a prompt of a few tokens is a pass of a few rows; in the batch, one of many rows. Then longer
/// prompts: ten rows of up to 30 tokens (300 token rows, more than one block of the GEMM's rows),
/// and rows of 270 and 280 tokens, which prefill in two passes cut at other tokens alone than in
/// the batch.
#[test]
fn batch_rows_equal_the_row_alone_bit_for_bit() {
    let model = random_model(11);
    let spheres = Spheres::new(&SphereTree::flat(&[0, 1, 0])).unwrap();
    let short = [2, 8, 1, 5, 7, 3, 1, 6, 8, 4];
    // A context of 40 leaves room for PANEL_MIN_STEPS steps after the longest prompt, so the
    // batch packs its panels at its first step.
    const { assert!(40 - 8 >= generate::PANEL_MIN_STEPS) };
    let long = [30, 12, 25, 1, 29, 30, 17, 8, 22, 3];
    let wide = random_weights(
        GptConfig {
            n_positions: 300,
            ..*model.config()
        },
        12,
    );
    for pool in [None, Some(&spheres)] {
        for n in [3, short.len()] {
            rows_equal_alone(&model, pool, &short[..n], 40);
        }
        rows_equal_alone(&model, pool, &long, 40);
        rows_equal_alone(&wide, pool, &[270, 280, 5], 300);
    }
}

/// Prompts of `lens` tokens prefilled as one left-padded batch and each alone, then six decode
/// steps: every row's logits, bit for bit, after each.
fn rows_equal_alone(model: &Gpt, pool: Option<&Spheres>, lens: &[usize], ctx: usize) {
    let rows: Vec<Vec<u32>> = (0..lens.len())
        .map(|b| prompt(40 + b as u64, lens[b]))
        .collect();
    let steps: Vec<Vec<u32>> = (0..rows.len()).map(|b| prompt(90 + b as u64, 6)).collect();
    let n = rows.len();
    let t = rows.iter().map(Vec::len).max().unwrap();
    let pads: Vec<usize> = rows.iter().map(|r| t - r.len()).collect();
    let padded: Vec<u32> = rows
        .iter()
        .flat_map(|r| std::iter::repeat_n(0, t - r.len()).chain(r.iter().copied()))
        .collect();
    let mut batch = Decoder::new(model, pool, n, ctx).unwrap();
    batch.prefill(&padded, &pads).unwrap();
    let mut alone: Vec<Decoder> = rows
        .iter()
        .map(|r| {
            let mut d = Decoder::new(model, pool, 1, ctx).unwrap();
            d.prefill(r, &[0]).unwrap();
            d
        })
        .collect();
    for step in 0..=steps[0].len() {
        if step > 0 {
            let next: Vec<u32> = (0..n).map(|b| steps[b][step - 1]).collect();
            batch.step(&next).unwrap();
            for (d, &tok) in alone.iter_mut().zip(&next) {
                d.step(&[tok]).unwrap();
            }
        }
        for (b, d) in alone.iter().enumerate() {
            let same = batch
                .logits(b)
                .iter()
                .zip(d.logits(0))
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "workers: {}, {n} rows, row {b} ({} prompt tokens), step {step}",
                pool.map_or(1, Spheres::count),
                rows[b].len()
            );
        }
    }
}

#[test]
fn left_padded_batches_give_each_row_its_own_output() {
    let model = random_model(3);
    let prompts: Vec<Vec<u32>> = [5usize, 11, 1, 8]
        .iter()
        .enumerate()
        .map(|(i, &n)| prompt(10 + i as u64, n))
        .collect();
    let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    for cfg in [
        greedy(12),
        GenerateConfig {
            sample: SampleConfig {
                temperature: 0.9,
                top_k: Some(20),
                top_p: Some(0.9),
                min_p: Some(0.01),
                repetition_penalty: Some(1.3),
            },
            max_new_tokens: 12,
            seed: 77,
            ..GenerateConfig::default()
        },
    ] {
        let batch = run(&model, None, &refs, &cfg);
        for (row, p) in refs.iter().enumerate() {
            assert_eq!(batch[row], run(&model, None, &[p], &cfg)[0], "row {row}");
        }
    }
}

#[test]
fn sphere_workers_give_the_same_tokens() {
    let model = random_model(4);
    let spheres = Spheres::new(&SphereTree::flat(&[0, 1])).unwrap();
    // One row and twelve rows (the decode steps in two groups).
    let prompts: Vec<Vec<u32>> = (0..12).map(|i| prompt(20 + i, 3 + i as usize)).collect();
    let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    for rows in [&refs[..1], &refs[..]] {
        assert_eq!(
            run(&model, Some(&spheres), rows, &greedy(10)),
            run(&model, None, rows, &greedy(10))
        );
    }
    let beam = BeamConfig {
        beams: 3,
        max_new_tokens: 8,
        length_penalty: 1.0,
        eos: vec![7],
        early_stopping: false,
    };
    let a = generate::beam_search(&model, Some(&spheres), &prompts[2], &beam).unwrap();
    let b = generate::beam_search(&model, None, &prompts[2], &beam).unwrap();
    assert_eq!(a[0].tokens, b[0].tokens);
}

#[test]
fn one_beam_is_greedy_and_beams_rank_by_summed_log_probability() {
    let model = random_model(5);
    let p = prompt(6, 7);
    let one = BeamConfig {
        beams: 1,
        max_new_tokens: 10,
        length_penalty: 0.0,
        eos: Vec::new(),
        early_stopping: false,
    };
    let hyp = generate::beam_search(&model, None, &p, &one).unwrap();
    assert_eq!(hyp[0].tokens, run(&model, None, &[&p], &greedy(10))[0]);
    let four = BeamConfig { beams: 4, ..one };
    let hyps = generate::beam_search(&model, None, &p, &four).unwrap();
    assert_eq!(hyps.len(), 4);
    assert!(hyps
        .windows(2)
        .all(|w| w[0].sum_logprob >= w[1].sum_logprob));
    assert!(hyps[0].sum_logprob >= hyp[0].sum_logprob - 1e-9);
}

#[test]
fn same_seed_same_text_and_stops() {
    let model = random_model(7);
    let p = prompt(8, 4);
    let cfg = |seed| GenerateConfig {
        sample: SampleConfig::default(),
        max_new_tokens: 20,
        seed,
        ..GenerateConfig::default()
    };
    let a = run(&model, None, &[&p], &cfg(1));
    assert_eq!(a, run(&model, None, &[&p], &cfg(1)));
    assert_ne!(a, run(&model, None, &[&p], &cfg(2)));
    let stop = GenerateConfig {
        stop_tokens: vec![a[0][5]],
        ..cfg(1)
    };
    let got = &run(&model, None, &[&p], &stop)[0];
    let first = a[0].iter().position(|&t| t == a[0][5]).unwrap();
    assert_eq!(got[..], a[0][..=first]);
    let seq = GenerateConfig {
        stop_sequences: vec![a[0][3..5].to_vec()],
        ..cfg(1)
    };
    let got = &run(&model, None, &[&p], &seq)[0];
    assert!(got.len() <= 5 && got.ends_with(&a[0][3..5]));
    // top-k 1 is greedy.
    let k1 = GenerateConfig {
        sample: SampleConfig {
            top_k: Some(1),
            ..SampleConfig::default()
        },
        ..cfg(3)
    };
    assert_eq!(
        run(&model, None, &[&p], &k1),
        run(&model, None, &[&p], &greedy(20))
    );
}

/// The last new token is never fed back, so a prompt of `t` tokens leaves room for
/// `n_positions - t + 1` new ones (Hugging Face's GPT-2 takes a 1024-token prompt and one new
/// token), with greedy and beam search alike; the full context gives the same tokens.
#[test]
fn the_context_holds_the_prompt_and_all_new_tokens_but_the_last() {
    let model = random_model(9);
    for (t, n) in [(35, 6), (40, 1), (1, 40)] {
        let p = prompt(1, t);
        let got = run(&model, None, &[&p], &greedy(n));
        assert_eq!(got[0].len(), n, "prompt {t}, {n} new tokens");
        let beam = BeamConfig {
            beams: 1,
            max_new_tokens: n,
            length_penalty: 0.0,
            eos: Vec::new(),
            early_stopping: false,
        };
        let hyp = generate::beam_search(&model, None, &p, &beam).unwrap();
        assert_eq!(hyp[0].tokens, got[0], "prompt {t}, {n} new tokens");
    }
    let long = prompt(1, 45);
    let conv = generate::sample_continuation(&model, &long, 6, &SampleConfig::greedy(), 1).unwrap();
    assert_eq!(conv, run(&model, None, &[&long[10..]], &greedy(6))[0]);
    let beam = BeamConfig {
        beams: 2,
        max_new_tokens: 7,
        length_penalty: 0.0,
        eos: Vec::new(),
        early_stopping: false,
    };
    let err = generate::beam_search(&model, None, &prompt(1, 35), &beam).unwrap_err();
    assert!(
        matches!(err, GenerateError::TooLong { len: 41, ctx: 40 }),
        "{err}"
    );
}

/// A temperature so small that the logits divided by it overflow still gives the most likely
/// token (the largest logit is subtracted first), with the filters too, never an arbitrary one:
/// 1e-38, and the smallest positive f32 (~1.4e-45), which overflows this model's logits of about
/// ±1 too.
#[test]
fn a_tiny_temperature_is_greedy() {
    let model = random_model(12);
    let p = prompt(13, 5);
    let want = run(&model, None, &[&p], &greedy(20));
    let filters = [
        (None, None, None),
        (Some(5), None, None),
        (None, Some(0.9), None),
        (None, None, Some(0.1)),
    ];
    for (temperature, (top_k, top_p, min_p)) in [1e-38, f32::from_bits(1)]
        .into_iter()
        .flat_map(|t| filters.map(|f| (t, f)))
    {
        let cfg = GenerateConfig {
            sample: SampleConfig {
                temperature,
                top_k,
                top_p,
                min_p,
                repetition_penalty: None,
            },
            seed: 5,
            ..greedy(20)
        };
        assert_eq!(
            run(&model, None, &[&p], &cfg),
            want,
            "temperature {temperature:e}, top-k {top_k:?}, top-p {top_p:?}, min-p {min_p:?}"
        );
    }
}

/// Logits with a NaN give no distribution to draw from: the sampler falls back to greedy's token
/// rather than the last candidate.
#[test]
fn nan_logits_fall_back_to_the_argmax() {
    let mut s = Sampler::new(&SampleConfig::default(), 4, 1).unwrap();
    assert_eq!(s.next(&[0.5, f32::NAN, 3.0, 1.0], &[]), 2);
}

/// A batch or a beam count far beyond the machine's memory is refused before the session is
/// allocated, saying what to reduce, rather than aborting on a failed allocation.
#[test]
fn a_session_larger_than_memory_is_refused() {
    let model = random_model(14);
    let beam = BeamConfig {
        beams: 1 << 40,
        max_new_tokens: 4,
        length_penalty: 1.0,
        eos: Vec::new(),
        early_stopping: false,
    };
    let err = generate::beam_search(&model, None, &prompt(1, 3), &beam).unwrap_err();
    assert!(matches!(err, GenerateError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("fewer rows"), "{err}");
}

#[test]
fn bad_input_is_refused_clearly() {
    let model = random_model(9);
    let long = prompt(1, 35);
    let err = generate::generate(&model, None, &[&long], &greedy(10), |_, _| {
        Control::Continue
    })
    .unwrap_err();
    // 35 prompt tokens and 9 of the 10 new ones run through the model (the last is never fed
    // back): 44 positions.
    assert!(
        matches!(err, GenerateError::TooLong { len: 44, ctx: 40 }),
        "{err}"
    );
    let err = generate::generate(&model, None, &[&prompt(1, 41)], &greedy(0), |_, _| {
        Control::Continue
    })
    .unwrap_err();
    assert!(
        matches!(err, GenerateError::PromptTooLong { len: 41, ctx: 40 }),
        "{err}"
    );
    assert!(err.to_string().contains("shorten it"), "{err}");
    let err = generate::generate(&model, None, &[&[1, 100]], &greedy(1), |_, _| {
        Control::Continue
    })
    .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    for p in [0.0, 1.5, f32::NAN] {
        let cfg = GenerateConfig {
            sample: SampleConfig {
                top_p: Some(p),
                ..SampleConfig::default()
            },
            ..greedy(1)
        };
        let err =
            generate::generate(&model, None, &[&[1]], &cfg, |_, _| Control::Continue).unwrap_err();
        assert!(err.to_string().contains("top-p must be in (0, 1]"), "{err}");
    }
    assert!(matches!(
        generate::generate(&model, None, &[&[]], &greedy(1), |_, _| Control::Continue),
        Err(GenerateError::EmptyPrompt)
    ));
    // Greedy decoding has nothing to filter.
    let filtered = GenerateConfig {
        sample: SampleConfig {
            min_p: Some(0.1),
            ..SampleConfig::greedy()
        },
        ..greedy(1)
    };
    let err =
        generate::generate(&model, None, &[&[1]], &filtered, |_, _| Control::Continue).unwrap_err();
    assert!(err.to_string().contains("ignores min-p"), "{err}");
}
