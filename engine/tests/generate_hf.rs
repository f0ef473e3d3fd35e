//! Generation against Hugging Face `generate` (transformers 5.24, torch 2.15, CPU float32) on the
//! golden trained tiny model: beam search with length penalties, EOS tokens and early stopping,
//! greedy with a repetition penalty and an EOS, left-padded batches, and the distributions the
//! sampling settings leave. `fixtures/generate_hf.json` holds the references; it was made by
//! `scripts/peers/generate_refs.py`, which says what each case is.
//!
//! Token ids must be equal. A beam's summed log-probability agrees within 1e-4: transformers
//! adds float32 log-probabilities to a float32 running sum near -100 (half an ulp there is 3.8e-6,
//! so at most 9e-5 over 24 steps) and cllm sums in float64. Its score (`sequences_scores`: the
//! sum divided by new tokens^length_penalty) agrees within that bound divided by the same factor,
//! plus the float32 rounding of transformers' score (1e-7 relative). Probabilities agree within
//! 1e-6 (a float32 softmax against cllm's float32 exponentials summed in float64).
//!
//! The model directory is `CLLM_GOLDEN`/trained (default `<workspace>/../shared/golden/tiny`).
//! A missing model fails the test.

use cllm_engine::generate::{self, BeamConfig, Control, GenerateConfig, SampleConfig, Sampler};
use cllm_engine::model::Gpt;
use serde_json::Value;
use std::path::{Path, PathBuf};

const SUM_TOL: f64 = 1e-4;
const PROB_TOL: f64 = 1e-6;

fn trained_dir() -> PathBuf {
    match std::env::var_os("CLLM_GOLDEN") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/tiny"),
    }
    .join("trained")
}

fn load() -> Gpt {
    let dir = trained_dir();
    Gpt::from_hf_dir(&dir)
        .unwrap_or_else(|e| panic!("{} (set CLLM_GOLDEN): {e}", dir.display()))
        .0
}

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate_hf.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

fn id_lists(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(ids).collect()
}

fn f32_opt(v: &Value) -> Option<f32> {
    v.as_f64().map(|x| x as f32)
}

#[test]
fn beam_search_matches_hugging_face() {
    let model = load();
    let fx = fixture();
    let cases = fx["beam"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let cfg = BeamConfig {
            beams: case["num_beams"].as_u64().unwrap() as usize,
            max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
            length_penalty: case["length_penalty"].as_f64().unwrap(),
            eos: ids(&case["eos"]),
            early_stopping: case["early_stopping"].as_bool().unwrap(),
        };
        let prompt = ids(&case["prompt"]);
        let hyps = generate::beam_search(&model, None, &prompt, &cfg).unwrap();
        let want = case["hyps"].as_array().unwrap();
        let got: Vec<(Vec<u32>, f64)> = hyps.iter().map(|h| (h.tokens.clone(), h.score)).collect();
        let expected: Vec<(Vec<u32>, f64)> = want
            .iter()
            .map(|h| (ids(&h["tokens"]), h["score"].as_f64().unwrap()))
            .collect();
        let close = |h: &generate::BeamHypothesis, want: f64| {
            let norm = (h.tokens.len() as f64).powf(cfg.length_penalty);
            (h.sum_logprob - want * norm).abs() <= SUM_TOL
                && (h.score - want).abs() <= SUM_TOL / norm + 1e-7 * want.abs()
        };
        let same = got.len() == expected.len()
            && hyps
                .iter()
                .zip(&expected)
                .all(|(h, w)| h.tokens == w.0 && close(h, w.1));
        if !same {
            failures.push(format!(
                "case {i} {cfg:?}\n  cllm: {got:?}\n  hf:   {expected:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn greedy_with_repetition_penalty_and_eos_matches_hugging_face() {
    let model = load();
    let fx = fixture();
    for case in fx["greedy"].as_array().unwrap() {
        let cfg = GenerateConfig {
            sample: SampleConfig {
                repetition_penalty: f32_opt(&case["repetition_penalty"]),
                ..SampleConfig::greedy()
            },
            max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
            stop_tokens: ids(&case["eos"]),
            ..GenerateConfig::default()
        };
        let prompt = ids(&case["prompt"]);
        let got =
            generate::generate(&model, None, &[&prompt], &cfg, |_, _| Control::Continue).unwrap();
        assert_eq!(got.tokens[0], ids(&case["tokens"]), "{cfg:?}");
    }
}

#[test]
fn left_padded_batches_match_hugging_face_row_by_row() {
    let model = load();
    let fx = fixture();
    for case in fx["batch"].as_array().unwrap() {
        let prompts = id_lists(&case["prompts"]);
        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let cfg = GenerateConfig {
            max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
            stop_tokens: ids(&case["eos"]),
            ..GenerateConfig::default()
        };
        let got = generate::generate(&model, None, &refs, &cfg, |_, _| Control::Continue).unwrap();
        assert_eq!(got.tokens, id_lists(&case["rows"]), "{prompts:?}");
    }
}

#[test]
fn sampling_keeps_the_tokens_and_probabilities_hugging_face_keeps() {
    let fx = fixture();
    let mut failures = Vec::new();
    for case in fx["sample"].as_array().unwrap() {
        let logits: Vec<f32> = fx["logits"][case["logits"].as_str().unwrap()]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let cfg = SampleConfig {
            temperature: f32_opt(&case["temperature"]).unwrap_or(1.0),
            top_k: case["top_k"].as_u64().map(|k| k as usize),
            top_p: f32_opt(&case["top_p"]),
            min_p: f32_opt(&case["min_p"]),
            repetition_penalty: f32_opt(&case["repetition_penalty"]),
        };
        let mut sampler = Sampler::new(&cfg, logits.len(), 0).unwrap();
        let mut kept = sampler.candidates(&logits, &ids(&case["history"])).to_vec();
        kept.sort_by_key(|c| c.1);
        let total: f64 = kept.iter().map(|c| c.0 as f64).sum();
        let got_ids: Vec<u32> = kept.iter().map(|c| c.1).collect();
        let want_ids = ids(&case["kept"]);
        let want_probs: Vec<f64> = case["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        let close = kept
            .iter()
            .zip(&want_probs)
            .all(|(c, &w)| (c.0 as f64 / total - w).abs() <= PROB_TOL);
        if got_ids != want_ids || !close {
            let short = |v: &[u32]| format!("{} tokens {:?}", v.len(), &v[..v.len().min(12)]);
            failures.push(format!(
                "{} {cfg:?}: cllm keeps {}, hf {}{}",
                case["logits"],
                short(&got_ids),
                short(&want_ids),
                if got_ids == want_ids {
                    " (probabilities differ)"
                } else {
                    ""
                }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
