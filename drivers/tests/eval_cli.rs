//! `cllm-eval bleu` and `cllm-eval rouge` run as a user runs them: JSON values against sacrebleu
//! 2.6.0 and rouge-score 0.1.2 on three small pairs, the table, and the bad-input errors; `ppl`
//! against the model's own loss; and the help naming every command.
//!
//! The expected numbers were printed by `sacrebleu.corpus_bleu`/`sentence_bleu` and
//! `RougeScorer([...], use_stemmer=...).score(target=ref, prediction=hyp)` on the lines below;
//! tolerance 1e-9 (the ports repeat the Python arithmetic; the issue's bound is 1e-6).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;

const HYP: &str =
    "The cat sat on the mat.\nA quick brown fox jumps over the lazy dog!\nNothing matches here\n";
const REF: &str = "The cat sat on a mat.\nThe quick brown fox jumped over the lazy dog.\nCompletely different words\n";
const REF2: &str =
    "There is a cat on the mat.\nA fast brown fox leaps over a lazy dog!\nNothing matches there\n";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let files = Files {
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        files.write("hyp.txt", HYP.as_bytes());
        files.write("ref.txt", REF.as_bytes());
        files.write("ref2.txt", REF2.as_bytes());
        files
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write test file");
        path
    }
}

fn cllm_eval(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cllm-eval"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run cllm-eval")
}

fn json_of(args: &[&str], dir: &Path) -> Value {
    let out = cllm_eval(args, dir);
    assert!(
        out.status.success(),
        "cllm-eval {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cllm-eval --json prints JSON")
}

/// The error message of a run that must fail.
fn error_of(args: &[&str], dir: &Path) -> String {
    let out = cllm_eval(args, dir);
    assert!(
        !out.status.success(),
        "cllm-eval {args:?} should have failed"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn close(got: &Value, want: f64, what: &str) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!((got - want).abs() <= 1e-9, "{what}: got {got}, want {want}");
}

#[test]
fn bleu_json_one_reference_with_lines() {
    let f = Files::new();
    let v = json_of(
        &[
            "bleu",
            "--hyp",
            "hyp.txt",
            "--ref",
            "ref.txt",
            "--per-line",
            "--json",
        ],
        f.dir.path(),
    );
    close(&v["score"], 38.66308960448497, "corpus BLEU");
    close(&v["bp"], 1.0, "bp");
    for (got, want) in v["precisions"].as_array().unwrap().iter().zip([
        65.0,
        52.94117647058823,
        35.714285714285715,
        18.181818181818183,
    ]) {
        close(got, want, "precision");
    }
    let lines = v["lines"].as_array().expect("--per-line gives `lines`");
    assert_eq!(lines.len(), 3);
    for (got, want) in lines
        .iter()
        .zip([48.892302243490086, 37.99178428257963, 0.0])
    {
        close(got, want, "sentence BLEU");
    }
}

#[test]
fn bleu_json_two_references() {
    let f = Files::new();
    let v = json_of(
        &[
            "bleu",
            "--hyp",
            "hyp.txt",
            "--ref",
            "ref.txt",
            "--ref",
            "ref2.txt",
            "--json",
            "--per-line",
        ],
        f.dir.path(),
    );
    close(
        &v["score"],
        57.22777556964752,
        "corpus BLEU, two references",
    );
    for (got, want) in v["lines"].as_array().unwrap().iter().zip([
        79.52707287670508,
        45.499414040480374,
        55.03212081491043,
    ]) {
        close(got, want, "sentence BLEU, two references");
    }
    let v = json_of(
        &["bleu", "--hyp", "hyp.txt", "--ref", "ref.txt", "--json"],
        f.dir.path(),
    );
    assert!(v.get("lines").is_none(), "`lines` only with --per-line");
}

#[test]
fn rouge_json_with_and_without_stemming() {
    let f = Files::new();
    for (stem, mean_f, r2_mean_f, r1_lines) in [
        (
            false,
            0.5370370370370371,
            0.4083333333333334,
            [0.8333333333333334, 0.7777777777777778, 0.0],
        ),
        (
            true,
            0.5740740740740741,
            0.4916666666666667,
            [0.8333333333333334, 0.8888888888888888, 0.0],
        ),
    ] {
        let mut args = vec![
            "rouge",
            "--hyp",
            "hyp.txt",
            "--ref",
            "ref.txt",
            "--json",
            "--per-line",
        ];
        if stem {
            args.push("--stem");
        }
        let v = json_of(&args, f.dir.path());
        for kind in ["rouge1", "rougeL", "rougeLsum"] {
            for key in ["p", "r", "f"] {
                close(&v[kind][key], mean_f, &format!("{kind}.{key} stem={stem}"));
            }
        }
        close(&v["rouge2"]["f"], r2_mean_f, "rouge2.f");
        let lines = v["rouge1"]["lines"]
            .as_array()
            .expect("--per-line gives `lines`");
        for (got, want) in lines.iter().zip(r1_lines) {
            close(&got["f"], want, "rouge1 line F");
        }
    }
}

#[test]
fn tables_by_default() {
    let f = Files::new();
    let out = cllm_eval(
        &["bleu", "--hyp", "hyp.txt", "--ref", "ref.txt"],
        f.dir.path(),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        text.contains("BLEU = 38.66 65.0/52.9/35.7/18.2 (BP = 1.000"),
        "{text}"
    );
    let out = cllm_eval(
        &[
            "rouge",
            "--hyp",
            "hyp.txt",
            "--ref",
            "ref.txt",
            "--per-line",
        ],
        f.dir.path(),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    for needle in ["rouge1", "rouge2", "rougeL", "rougeLsum", "0.5370"] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[test]
fn different_line_counts_name_both_files() {
    let f = Files::new();
    f.write("short.txt", b"The cat sat on a mat.\nonly two lines\n");
    for cmd in ["bleu", "rouge"] {
        let err = error_of(
            &[cmd, "--hyp", "hyp.txt", "--ref", "short.txt"],
            f.dir.path(),
        );
        assert!(
            err.contains("short.txt has 2 lines but hyp.txt has 3"),
            "{cmd}: {err}"
        );
    }
    let err = error_of(
        &[
            "bleu",
            "--hyp",
            "hyp.txt",
            "--ref",
            "ref.txt",
            "--ref",
            "short.txt",
        ],
        f.dir.path(),
    );
    assert!(err.contains("short.txt has 2 lines"), "{err}");
}

#[test]
fn empty_file_is_an_error() {
    let f = Files::new();
    f.write("empty.txt", b"");
    let err = error_of(
        &["bleu", "--hyp", "empty.txt", "--ref", "ref.txt"],
        f.dir.path(),
    );
    assert!(err.contains("empty.txt: empty file"), "{err}");
    let err = error_of(
        &["rouge", "--hyp", "hyp.txt", "--ref", "empty.txt"],
        f.dir.path(),
    );
    assert!(err.contains("empty.txt: empty file"), "{err}");
}

#[test]
fn non_utf8_line_is_named() {
    let f = Files::new();
    f.write("latin1.txt", b"fine line\nalso fine\ncaf\xe9 au lait\n");
    let err = error_of(
        &["rouge", "--hyp", "latin1.txt", "--ref", "ref.txt"],
        f.dir.path(),
    );
    assert!(
        err.contains("latin1.txt:3: not valid UTF-8 (bad byte at column 4)"),
        "{err}"
    );
    let err = error_of(
        &["bleu", "--hyp", "hyp.txt", "--ref", "latin1.txt"],
        f.dir.path(),
    );
    assert!(err.contains("latin1.txt:3: not valid UTF-8"), "{err}");
}

#[test]
fn missing_file_is_named() {
    let f = Files::new();
    let err = error_of(
        &["bleu", "--hyp", "hyp.txt", "--ref", "nope.txt"],
        f.dir.path(),
    );
    assert!(err.contains("cannot read nope.txt"), "{err}");
    assert!(err.contains("caused by"), "the cause is printed: {err}");
}

#[test]
fn crlf_and_missing_final_newline_read_as_plain_lines() {
    let f = Files::new();
    f.write("crlf.txt", REF.replace('\n', "\r\n").trim_end().as_bytes());
    let v = json_of(
        &["bleu", "--hyp", "hyp.txt", "--ref", "crlf.txt", "--json"],
        f.dir.path(),
    );
    close(
        &v["score"],
        38.66308960448497,
        "corpus BLEU with CRLF references",
    );
}

/// A token stream of 3 windows of 64 tokens (and the last target) for the golden tiny model
/// (V = 389), written as the shard `val_000000.bin` in `dir`.
fn ppl_shard(dir: &Path) -> (PathBuf, Vec<u32>) {
    let stream: Vec<u32> = (0..3 * 64 + 1)
        .map(|i: u32| (i * 37 + i / 5) % 389)
        .collect();
    let shard = dir.join("val_000000.bin");
    cllm_engine::data::write_shard(&shard, &stream, 389).unwrap();
    (shard, stream)
}

/// `cllm-eval ppl` on the golden model (a Hugging Face directory) and a shard of 3 windows of 64
/// tokens: the mean NLL equals the mean of the model's own per-window losses.
#[test]
fn ppl_matches_the_model_loss_over_non_overlapping_windows() {
    use cllm_engine::model::{Gpt, Workspace};

    let golden = common::golden("tiny");
    let (model, _) =
        Gpt::from_hf_dir(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
    let dir = tempfile::tempdir().unwrap();
    let (shard, stream) = ppl_shard(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_cllm-eval"))
        .args([
            "ppl",
            "--model",
            golden.to_str().unwrap(),
            "--data",
            shard.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ws = Workspace::new(&model, 1, 64);
    let want: f64 = (0..3)
        .map(|w| {
            model
                .forward(
                    &mut ws,
                    &stream[w * 64..w * 64 + 64],
                    Some(&stream[w * 64 + 1..w * 64 + 65]),
                )
                .unwrap()
                .unwrap() as f64
        })
        .sum::<f64>()
        / 3.0;
    assert_eq!(v["tokens"], 192);
    assert!(
        (v["nll"].as_f64().unwrap() - want).abs() < 1e-6,
        "{v} vs {want}"
    );
    assert!((v["ppl"].as_f64().unwrap() - want.exp()).abs() < 1e-4 * want.exp());
}

/// `cllm-eval ppl` finds the tokenizer the way cllm-generate does (`Codec::for_model`): one of the
/// model's vocabulary gives bits per byte over the scored targets' bytes; one of another
/// vocabulary is refused.
#[test]
fn ppl_bits_per_byte_use_the_models_tokenizer() {
    use cllm_engine::tokenizer::Tokenizer;

    let golden = common::golden("tiny");
    let f = Files::new();
    let (_, hamlet) = cllm_drivers::corpus::PLAYS[0];
    let tokenizer = Tokenizer::train([&hamlet[..20_000]], 389, &[]).expect("BPE training");
    tokenizer.save(&f.dir.path().join("tok.json")).unwrap();
    let (_, stream) = ppl_shard(f.dir.path());
    let model = golden.to_str().unwrap();
    let args = |tokenizer| {
        [
            "ppl",
            "--model",
            model,
            "--data",
            "val_000000.bin",
            "--tokenizer",
            tokenizer,
            "--json",
        ]
    };

    let v = json_of(&args("tok.json"), f.dir.path());
    // Non-overlapping windows score every token but the first.
    let bytes: usize = stream[1..]
        .iter()
        .map(|&id| tokenizer.token_bytes(id).map_or(0, <[u8]>::len))
        .sum();
    let total_nll = v["nll"].as_f64().unwrap() * v["tokens"].as_f64().unwrap();
    let want = total_nll / std::f64::consts::LN_2 / bytes as f64;
    let got = v["bits_per_byte"]
        .as_f64()
        .expect("bits per byte with a tokenizer");
    // Both sides divide the same f64 sum; only the nll * tokens round trip differs.
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");

    let e = error_of(&args("gpt2"), f.dir.path());
    assert!(e.contains("50257") && e.contains("389"), "{e}");

    // Beside the shard, the tokenizer it was made with: another one is refused.
    let other = Tokenizer::train([&hamlet[20_000..40_000]], 389, &[]).expect("BPE training");
    other.save(&f.dir.path().join("tokenizer.json")).unwrap();
    let e = error_of(&args("tok.json"), f.dir.path());
    assert!(e.contains("differs from --tokenizer"), "{e}");
    tokenizer
        .save(&f.dir.path().join("tokenizer.json"))
        .unwrap();
    json_of(&args("tok.json"), f.dir.path());
}

#[test]
fn ppl_refuses_a_stride_beyond_the_window() {
    let golden = common::golden("tiny");
    let f = Files::new();
    ppl_shard(f.dir.path());
    let e = error_of(
        &[
            "ppl",
            "--model",
            golden.to_str().unwrap(),
            "--data",
            "val_000000.bin",
            "--seq",
            "16",
            "--stride",
            "17",
        ],
        f.dir.path(),
    );
    assert!(
        e.contains("--stride 17 is larger than the window of 16 tokens"),
        "{e}"
    );
}

#[test]
fn help_says_what_every_command_does() {
    let f = Files::new();
    let out = cllm_eval(&["--help"], f.dir.path());
    let help = String::from_utf8_lossy(&out.stdout);
    let about = help.lines().next().unwrap_or_default();
    for what in ["BLEU", "ROUGE", "perplexity", "continuations"] {
        assert!(about.contains(what), "{what}: {about}");
    }
}
