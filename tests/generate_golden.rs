//! Greedy and beam search on the golden trained tiny model must give exactly what Hugging Face
//! `generate` gave (`expect.safetensors`: `greedy_prompt` → `greedy`, `beam_prompt` → `beam` with
//! 4 beams, 16 new tokens, no length penalty, no EOS, and the beam's summed log-probability).
//!
//! The model directory is `CLLM_GOLDEN_TRAINED` (default `../shared/golden/tiny/trained`); the
//! expectations are `CLLM_GOLDEN_EXPECT` (default `expect.safetensors` beside that directory).
//! Missing files fail the test.

use cllm_engine::generate::{self, BeamConfig, Control, GenerateConfig, SampleConfig};
use cllm_engine::model::Gpt;
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

fn trained_dir() -> PathBuf {
    match std::env::var_os("CLLM_GOLDEN_TRAINED") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/tiny/trained"),
    }
}

fn expect_bytes() -> Vec<u8> {
    let path = match std::env::var_os("CLLM_GOLDEN_EXPECT") {
        Some(p) => PathBuf::from(p),
        None => trained_dir().join("../expect.safetensors"),
    };
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("expect: {name}: {e}"));
    assert_eq!(t.dtype(), Dtype::I32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect()
}

fn load() -> Gpt {
    let dir = trained_dir();
    Gpt::from_hf_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .0
}

#[test]
fn greedy_matches_hugging_face() {
    let bytes = expect_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (prompt, want) = (ids(&st, "greedy_prompt"), ids(&st, "greedy"));
    let model = load();
    let cfg = GenerateConfig {
        sample: SampleConfig::greedy(),
        max_new_tokens: want.len(),
        ..GenerateConfig::default()
    };
    let got = generate::generate(&model, None, &[&prompt], &cfg, |_, _| Control::Continue).unwrap();
    assert_eq!(got.tokens[0], want);
    let conv =
        generate::sample_continuation(&model, &prompt, want.len(), &SampleConfig::greedy(), 1)
            .unwrap();
    assert_eq!(conv, want);
}

#[test]
fn beam_search_matches_hugging_face() {
    let bytes = expect_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (prompt, want) = (ids(&st, "beam_prompt"), ids(&st, "beam"));
    let score = st.tensor("beam_score").unwrap();
    assert_eq!(score.dtype(), Dtype::F64);
    let score = f64::from_le_bytes(score.data()[..8].try_into().unwrap());
    let model = load();
    let cfg = BeamConfig {
        beams: 4,
        max_new_tokens: want.len(),
        length_penalty: 0.0,
        eos: Vec::new(),
        early_stopping: false,
    };
    let hyps = generate::beam_search(&model, None, &prompt, &cfg).unwrap();
    assert_eq!(hyps[0].tokens, want);
    assert!(
        (hyps[0].sum_logprob - score).abs() <= 1e-4,
        "beam score {} vs {score}",
        hyps[0].sum_logprob
    );
}
