//! BLEU, ROUGE and the Porter stemmer against the reference implementations.
//!
//! - `../shared/golden/metrics.json` (sacrebleu 2.6.0, rouge-score 0.1.2; see its `about` key): the
//!   path is `$CLLM_GOLDEN_METRICS` when set, else `<repo>/../shared/golden/metrics.json`. A missing
//!   file fails the tests.
//! - `tests/fixtures/metrics_reference.json` and `tests/fixtures/porter_nltk.txt`, written by
//!   `scripts/peers/metrics_reference.py` from sacrebleu, rouge-score and nltk.
//!
//! Tolerance: 1e-6 absolute on every value (the bound; scores are on sacrebleu's 0–100 and
//! rouge-score's 0–1 scales). The ports perform the same floating-point operations in the same
//! order as the Python code, so in practice they agree to the last bit or two; counts and lengths
//! must match exactly.

use std::path::PathBuf;

use cllm_engine::eval::bleu::{self, BleuScore};
use cllm_engine::eval::{porter, rouge};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn golden_path() -> PathBuf {
    match std::env::var_os("CLLM_GOLDEN_METRICS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/metrics.json"),
    }
}

fn load_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (set CLLM_GOLDEN_METRICS to the golden metrics.json)",
            path.display()
        )
    });
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", path.display()))
}

fn golden() -> Value {
    load_json(golden_path())
}

fn reference() -> Value {
    load_json(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics_reference.json"),
    )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array of strings")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array of integers")
        .iter()
        .map(|x| x.as_u64().expect("integer") as usize)
        .collect()
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= TOL,
        "{what}: got {got}, want {want} (diff {})",
        (got - want).abs()
    );
}

/// Every field of a sacrebleu `BLEUScore` as the fixture script writes it.
fn check_bleu(got: &BleuScore, want: &Value, what: &str) {
    close(
        got.score,
        want["score"].as_f64().unwrap(),
        &format!("{what} score"),
    );
    close(got.bp, want["bp"].as_f64().unwrap(), &format!("{what} bp"));
    for (n, (g, w)) in got
        .precisions
        .iter()
        .zip(floats(&want["precisions"]))
        .enumerate()
    {
        close(*g, w, &format!("{what} precision {}", n + 1));
    }
    assert_eq!(
        got.counts.to_vec(),
        usizes(&want["counts"]),
        "{what} counts"
    );
    assert_eq!(
        got.totals.to_vec(),
        usizes(&want["totals"]),
        "{what} totals"
    );
    assert_eq!(
        got.sys_len,
        want["sys_len"].as_u64().unwrap() as usize,
        "{what} sys_len"
    );
    assert_eq!(
        got.ref_len,
        want["ref_len"].as_u64().unwrap() as usize,
        "{what} ref_len"
    );
}

#[test]
fn golden_corpus_bleu_one_and_two_references() {
    let g = golden();
    let (hyps, refs, refs2) = (
        strings(&g["hyps"]),
        strings(&g["refs"]),
        strings(&g["refs2"]),
    );

    let one = bleu::corpus_bleu(&hyps, &[&refs]).unwrap();
    close(one.score, g["corpus_bleu"].as_f64().unwrap(), "corpus BLEU");
    close(
        one.bp,
        g["corpus_bleu_bp"].as_f64().unwrap(),
        "corpus BLEU bp",
    );
    let want = floats(&g["corpus_bleu_precisions"]);
    assert_eq!(want.len(), 4);
    for (n, (got, want)) in one.precisions.iter().zip(want).enumerate() {
        close(*got, want, &format!("corpus BLEU precision {}", n + 1));
    }

    let two = bleu::corpus_bleu(&hyps, &[&refs, &refs2]).unwrap();
    close(
        two.score,
        g["corpus_bleu_two_refs"].as_f64().unwrap(),
        "corpus BLEU, two references",
    );
}

#[test]
fn golden_sentence_bleu() {
    let g = golden();
    let (hyps, refs) = (strings(&g["hyps"]), strings(&g["refs"]));
    let want = floats(&g["sentence_bleu"]);
    assert_eq!(want.len(), hyps.len());
    for (i, w) in want.into_iter().enumerate() {
        close(
            bleu::sentence_bleu(&hyps[i], &[&refs[i]]).score,
            w,
            &format!("sentence BLEU of pair {i}"),
        );
    }
}

#[test]
fn golden_rouge_f_with_and_without_stemming() {
    let g = golden();
    let (hyps, refs) = (strings(&g["hyps"]), strings(&g["refs"]));
    for (key, stem) in [("rouge", false), ("rouge_stem", true)] {
        let table = g[key]
            .as_object()
            .unwrap_or_else(|| panic!("golden `{key}` is not an object"));
        assert!(!table.is_empty());
        let scores: Vec<rouge::RougeScores> = hyps
            .iter()
            .zip(&refs)
            .map(|(h, r)| rouge::score(h, r, stem))
            .collect();
        for (kind, want) in table {
            let want = floats(want);
            assert_eq!(want.len(), hyps.len(), "{key}.{kind}");
            for (i, (s, w)) in scores.iter().zip(want).enumerate() {
                let got = match kind.as_str() {
                    "rouge1" => s.rouge1,
                    "rouge2" => s.rouge2,
                    "rougeL" => s.rouge_l,
                    "rougeLsum" => s.rouge_lsum,
                    other => panic!("unknown ROUGE type {other} in golden `{key}`"),
                };
                close(got.fmeasure, w, &format!("{key}.{kind} F of pair {i}"));
            }
        }
    }
}

#[test]
fn reference_tokenizer_13a() {
    let r = reference();
    for (hyp, want) in strings(&r["hyps"]).iter().zip(strings(&r["tokenized_13a"])) {
        assert_eq!(
            bleu::tokenize_13a(hyp.trim_end()),
            want,
            "13a tokens of {hyp:?}"
        );
    }
}

#[test]
fn reference_corpus_bleu() {
    let r = reference();
    let (hyps, refs) = (strings(&r["hyps"]), strings(&r["refs"]));
    let (refs2, refs3) = (strings(&r["refs2"]), strings(&r["refs3"]));
    check_bleu(
        &bleu::corpus_bleu(&hyps, &[&refs]).unwrap(),
        &r["corpus_bleu"],
        "corpus BLEU",
    );
    check_bleu(
        &bleu::corpus_bleu(&hyps, &[&refs, &refs2, &refs3]).unwrap(),
        &r["corpus_bleu_three_refs"],
        "corpus BLEU, three references",
    );
    for case in r["small_corpora"].as_array().unwrap() {
        let hyps = strings(&case["hyps"]);
        let streams: Vec<Vec<String>> = case["refs"]
            .as_array()
            .unwrap()
            .iter()
            .map(strings)
            .collect();
        let what = case["about"].as_str().unwrap();
        check_bleu(
            &bleu::corpus_bleu(&hyps, &streams).unwrap(),
            &case["bleu"],
            what,
        );
    }
}

#[test]
fn reference_sentence_bleu() {
    let r = reference();
    let (hyps, refs) = (strings(&r["hyps"]), strings(&r["refs"]));
    let (refs2, refs3) = (strings(&r["refs2"]), strings(&r["refs3"]));
    for (i, want) in r["sentence_bleu"].as_array().unwrap().iter().enumerate() {
        check_bleu(
            &bleu::sentence_bleu(&hyps[i], &[&refs[i]]),
            want,
            &format!("sentence BLEU of {:?}", hyps[i]),
        );
    }
    for (i, want) in floats(&r["sentence_bleu_three_refs"])
        .into_iter()
        .enumerate()
    {
        let got = bleu::sentence_bleu(&hyps[i], &[&refs[i], &refs2[i], &refs3[i]]);
        close(
            got.score,
            want,
            &format!("sentence BLEU, three references, of {:?}", hyps[i]),
        );
    }
}

#[test]
fn reference_rouge_precision_recall_f() {
    let r = reference();
    let (hyps, refs) = (strings(&r["hyps"]), strings(&r["refs"]));
    for (key, stem) in [("rouge", false), ("rouge_stem", true)] {
        for (i, (h, rf)) in hyps.iter().zip(&refs).enumerate() {
            let s = rouge::score(h, rf, stem);
            for (kind, got) in [
                ("rouge1", s.rouge1),
                ("rouge2", s.rouge2),
                ("rougeL", s.rouge_l),
                ("rougeLsum", s.rouge_lsum),
            ] {
                let want = floats(&r[key][kind][i]);
                let what = format!("{key}.{kind} of pair {i} ({h:?} vs {rf:?})");
                close(got.precision, want[0], &format!("{what} precision"));
                close(got.recall, want[1], &format!("{what} recall"));
                close(got.fmeasure, want[2], &format!("{what} F"));
            }
        }
    }
}

#[test]
fn porter_matches_nltk() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/porter_nltk.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut checked = 0;
    let mut wrong = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (word, want) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("bad fixture line {line:?}"));
        let got = porter::stem(word);
        if got != want {
            wrong.push(format!("{word}: got {got}, nltk {want}"));
        }
        checked += 1;
    }
    assert!(checked > 1900, "only {checked} words in {}", path.display());
    assert!(
        wrong.is_empty(),
        "{} of {checked} stems differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn corpus_bleu_rejects_bad_shapes() {
    use cllm_engine::eval::EvalError;
    let hyps = ["a b c", "d e f"];
    assert_eq!(
        bleu::corpus_bleu(&hyps, &[&["a b c"][..]]),
        Err(EvalError::LengthMismatch {
            stream: 0,
            expected: 2,
            found: 1
        })
    );
    let no_streams: [&[&str]; 0] = [];
    assert_eq!(
        bleu::corpus_bleu(&hyps, &no_streams),
        Err(EvalError::NoReferences)
    );
    let none: [&str; 0] = [];
    assert_eq!(
        bleu::corpus_bleu(&none, &[&none[..]]),
        Err(EvalError::NoSegments)
    );
}

mod perplexity {
    use cllm_engine::eval::perplexity::PerplexityMeter;
    use cllm_engine::model::{Gpt, GptConfig, Workspace};

    fn model() -> Gpt {
        let cfg = GptConfig {
            vocab_size: 61,
            n_positions: 24,
            n_embd: 32,
            n_layer: 2,
            n_head: 4,
        };
        Gpt::init_random(cfg, 3)
    }

    fn stream(n: usize) -> Vec<u32> {
        (0..n as u32).map(|i| (i * 7 + i / 3) % 61).collect()
    }

    #[test]
    fn non_overlapping_windows_equal_the_mean_loss_of_each_window() {
        let m = model();
        let s = stream(24 * 3 + 1);
        let mut meter = PerplexityMeter::new(&m, 24, 24).unwrap();
        meter.add(&s, |_, _| {}).unwrap();
        let got = meter.result();
        let mut ws = Workspace::new(&m, 1, 24);
        let mut sum = 0.0f64;
        for w in 0..3 {
            let (x, y) = (&s[w * 24..w * 24 + 24], &s[w * 24 + 1..w * 24 + 25]);
            sum += m.forward(&mut ws, x, Some(y)).unwrap().unwrap() as f64 * 24.0;
        }
        assert_eq!(got.tokens, 72);
        assert!(
            (got.nll - sum / 72.0).abs() < 1e-6,
            "{} vs {}",
            got.nll,
            sum / 72.0
        );
        assert!((got.ppl - got.nll.exp()).abs() < 1e-9);
    }

    #[test]
    fn strided_windows_score_every_target_once() {
        let m = model();
        for (n, seq, stride) in [(100, 24, 10), (50, 24, 24), (10, 24, 5), (25, 24, 1)] {
            let s = stream(n);
            let mut meter = PerplexityMeter::new(&m, seq, stride).unwrap();
            let mut seen = vec![0u32; n];
            meter
                .add(&s, |first, count| {
                    seen[first..first + count].iter_mut().for_each(|c| *c += 1)
                })
                .unwrap();
            assert_eq!(
                meter.result().tokens,
                n - 1,
                "n={n} seq={seq} stride={stride}"
            );
            assert!(
                seen[1..].iter().all(|&c| c == 1) && seen[0] == 0,
                "n={n} seq={seq} stride={stride}"
            );
        }
        assert!(
            PerplexityMeter::new(&m, 25, 1).is_err(),
            "longer than n_positions"
        );
    }
}
