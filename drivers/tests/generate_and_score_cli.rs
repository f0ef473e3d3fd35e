//! `cllm-eval generate-and-score` on the golden trained tiny model (V = 389, 64 positions) with a
//! 389-token BPE trained here on a slice of the embedded corpus: its scores are what `cllm-eval
//! bleu`/`rouge` give on the continuations it wrote, its tokens are what cllm-generate gives with
//! the same options, a row's text does not depend on the batch, and bad input names file and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cllm_engine::tokenizer::Tokenizer;
use serde_json::Value;

mod common;

const PROMPTS: &str = "HAMLET. To be, or not to be\nKING. Our\nHORATIO. Look, my lord, it comes\n";
const REF: &str =
    "that is the question\nson shall be king\nAngels and ministers of grace defend us\n";
const REF2: &str = "is the question\nour son\nministers of grace defend us\n";
/// Options given to both binaries: sampled, so that the seed matters.
const GEN: [&str; 6] = ["--max-new-tokens", "12", "--top-k", "5", "--seed", "7"];

struct Setup {
    dir: tempfile::TempDir,
    tokenizer: Tokenizer,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (_, hamlet) = cllm_drivers::corpus::PLAYS[0];
        let tokenizer = Tokenizer::train([&hamlet[..20_000]], 389, &[]).expect("BPE training");
        assert_eq!(tokenizer.vocab_size(), 389, "the golden model's vocabulary");
        tokenizer.save(&dir.path().join("tok.json")).unwrap();
        let setup = Setup { dir, tokenizer };
        setup.write("prompts.txt", PROMPTS.as_bytes());
        setup.write("ref.txt", REF.as_bytes());
        setup.write("ref2.txt", REF2.as_bytes());
        setup
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write test file");
        path
    }

    /// `bin ARGS` in the directory, its worker count left to the caller.
    fn command(&self, bin: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_BACKTRACE");
        cmd
    }

    fn run(&self, bin: &str, args: &[&str]) -> Output {
        self.command(bin, args)
            .args(["--threads", "2"])
            .output()
            .unwrap_or_else(|e| panic!("{bin}: {e}"))
    }

    /// `cllm-eval generate-and-score` on the golden model with our tokenizer, without --threads.
    fn score_command(&self, args: &[&str]) -> Command {
        let model = common::golden("tiny/trained");
        let mut all = vec![
            "generate-and-score",
            "--model",
            model.to_str().unwrap(),
            "--tokenizer",
            "tok.json",
        ];
        all.extend_from_slice(args);
        self.command(env!("CARGO_BIN_EXE_cllm-eval"), &all)
    }

    /// As [`Setup::score_command`], on two workers.
    fn score(&self, args: &[&str]) -> Output {
        self.score_command(args)
            .args(["--threads", "2"])
            .output()
            .expect("cllm-eval runs")
    }

    fn score_json(&self, args: &[&str]) -> Value {
        let out = self.score(&[args, &["--json"]].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("--json prints JSON")
    }

    fn score_error(&self, args: &[&str]) -> String {
        let out = self.score(args);
        assert!(!out.status.success(), "{args:?} should have failed");
        stderr(&out)
    }

    /// `cllm-eval bleu` or `rouge` with --json.
    fn eval_json(&self, args: &[&str]) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_cllm-eval"))
            .args(args)
            .arg("--json")
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn scores_are_bleu_and_rouge_of_the_written_continuations() {
    let s = Setup::new();
    let base = [
        &GEN[..],
        &[
            "--prompts",
            "prompts.txt",
            "--ref",
            "ref.txt",
            "--out",
            "cont.txt",
        ],
        &["--per-line", "--stem"],
    ]
    .concat();
    let v = s.score_json(&base);
    let continuations: Vec<String> = v["continuations"]
        .as_array()
        .expect("`continuations`")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(continuations.len(), 3);
    assert_eq!(lines_of(&s.dir.path().join("cont.txt")), continuations);
    assert!(continuations.iter().all(|c| !c.contains('\n')));
    let bleu = s.eval_json(&[
        "bleu",
        "--hyp",
        "cont.txt",
        "--ref",
        "ref.txt",
        "--per-line",
    ]);
    assert_eq!(v["bleu"], bleu);
    let rouge = s.eval_json(&[
        "rouge",
        "--hyp",
        "cont.txt",
        "--ref",
        "ref.txt",
        "--per-line",
        "--stem",
    ]);
    assert_eq!(v["rouge"], rouge);
    assert_eq!(v["generation"]["prompts"], 3);

    // Two references: BLEU uses both.
    let v = s.score_json(&[&base[..], &["--ref", "ref2.txt"]].concat());
    let bleu = s.eval_json(&[
        "bleu",
        "--hyp",
        "cont.txt",
        "--ref",
        "ref.txt",
        "--ref",
        "ref2.txt",
        "--per-line",
    ]);
    assert_eq!(v["bleu"], bleu);
    assert_eq!(v["bleu"]["references"], 2);
    // Per ROUGE kind and line, the better of the two references.
    let r2 = s.eval_json(&[
        "rouge",
        "--hyp",
        "cont.txt",
        "--ref",
        "ref2.txt",
        "--per-line",
        "--stem",
    ]);
    for kind in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
        for line in 0..3 {
            let f = |v: &Value| v[kind]["lines"][line]["f"].as_f64().unwrap();
            assert_eq!(f(&v["rouge"]), f(&rouge).max(f(&r2)), "{kind} line {line}");
        }
    }
}

#[test]
fn tokens_are_cllm_generates_and_do_not_depend_on_the_batch() {
    let s = Setup::new();
    let args = [&GEN[..], &["--prompts", "prompts.txt", "--ref", "ref.txt"]].concat();
    let batched = s.score_json(&args);
    let alone = s.score_json(&[&args[..], &["--batch-size", "1"]].concat());
    assert_eq!(batched["continuations"], alone["continuations"]);
    assert_eq!(batched["bleu"], alone["bleu"]);

    // cllm-generate with the same options, ids out: its rows, less a final EOS (388) and cut
    // before the first newline, are the continuations.
    let model = common::golden("tiny/trained");
    let out = s.run(
        env!("CARGO_BIN_EXE_cllm-generate"),
        &[
            &GEN[..],
            &[
                "--model",
                model.to_str().unwrap(),
                "--tokenizer",
                "tok.json",
                "--batch",
                "prompts.txt",
                "--print-ids",
                "--stop",
                "\n",
            ],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = String::from_utf8(out.stdout).unwrap();
    let want: Vec<String> = rows
        .lines()
        .map(|row| {
            let mut ids: Vec<u32> = row.split(',').map(|t| t.parse().unwrap()).collect();
            if ids.last() == Some(&388) {
                ids.pop();
            }
            let text = s.tokenizer.decode_to_string_lossy(&ids).unwrap();
            text.split('\n').next().unwrap().trim().to_owned()
        })
        .collect();
    let got: Vec<&str> = batched["continuations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn beams_and_the_table() {
    let s = Setup::new();
    let out = s.score(&[
        "--prompts",
        "prompts.txt",
        "--ref",
        "ref.txt",
        "--beams",
        "2",
        "--max-new-tokens",
        "6",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "BLEU = ",
        "3 segments",
        "rouge1",
        "rougeLsum",
        "means over 3 lines",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[test]
fn bad_input_names_file_and_line() {
    let s = Setup::new();
    s.write("short.txt", b"only one line\n");
    s.write("empty.txt", b"");
    s.write("latin1.txt", b"fine\ncaf\xe9\nfine\n");
    s.write("blank.txt", b"a prompt\n\nanother\n");
    s.write("long.txt", "word ".repeat(80).as_bytes());
    s.write("one_ref.txt", b"a reference\n");
    for (args, want) in [
        (
            vec!["--prompts", "prompts.txt", "--ref", "short.txt"],
            "short.txt has 1 lines but prompts.txt has 3",
        ),
        (
            vec![
                "--prompts",
                "prompts.txt",
                "--ref",
                "ref.txt",
                "--ref",
                "short.txt",
            ],
            "short.txt has 1 lines",
        ),
        (
            vec!["--prompts", "empty.txt", "--ref", "ref.txt"],
            "empty.txt: empty file",
        ),
        (
            vec!["--prompts", "prompts.txt", "--ref", "empty.txt"],
            "empty.txt: empty file",
        ),
        (
            vec!["--prompts", "latin1.txt", "--ref", "ref.txt"],
            "latin1.txt:2: not valid UTF-8",
        ),
        (
            vec!["--prompts", "prompts.txt", "--ref", "latin1.txt"],
            "latin1.txt:2: not valid UTF-8",
        ),
        (
            vec!["--prompts", "blank.txt", "--ref", "ref.txt"],
            "blank.txt:2: empty prompt",
        ),
        (
            vec!["--prompts", "long.txt", "--ref", "one_ref.txt"],
            "long.txt:1: prompt has",
        ),
        (
            vec![
                "--prompts",
                "prompts.txt",
                "--ref",
                "ref.txt",
                "--greedy",
                "--top-k",
                "3",
            ],
            "--greedy cannot be combined",
        ),
    ] {
        let err = s.score_error(&args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let err = s.score_error(&["--prompts", "long.txt", "--ref", "one_ref.txt"]);
    // The prompt alone is too long: no --max-new-tokens would help.
    assert!(
        err.contains("161 tokens, more than the model's context of 64 positions: shorten it"),
        "{err}"
    );

    // The golden model has no tokenizer of its own.
    let model = common::golden("tiny/trained");
    let out = s.run(
        env!("CARGO_BIN_EXE_cllm-eval"),
        &[
            "generate-and-score",
            "--model",
            model.to_str().unwrap(),
            "--prompts",
            "prompts.txt",
            "--ref",
            "ref.txt",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pass --tokenizer"),
        "{}",
        stderr(&out)
    );
}

/// A CLLM_THREADS value that is ignored, or a worker count the machine cannot give, is said on
/// stderr, as cllm-generate and cllm-train say it (generate-and-score used to drop the warnings).
#[test]
fn thread_count_warnings_reach_stderr() {
    let s = Setup::new();
    let base = [
        "--prompts",
        "prompts.txt",
        "--ref",
        "ref.txt",
        "--max-new-tokens",
        "2",
    ];
    let run = |extra: &[&str], threads_env: &str| {
        let out = s
            .score_command(&[&base[..], extra].concat())
            .env("CLLM_THREADS", threads_env)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    let err = run(&[], "2x");
    assert!(
        err.contains("warning: CLLM_THREADS=\"2x\" is not a positive whole number"),
        "{err}"
    );
    let err = run(&["--threads", "100000"], "");
    assert!(
        err.contains("warning: 100000 threads asked for but only"),
        "{err}"
    );
}

#[test]
fn out_may_not_be_one_of_the_inputs() {
    let s = Setup::new();
    std::fs::create_dir(s.dir.path().join("sub")).unwrap();
    // The model is copied here so that a failure cannot write over the shared golden one.
    let model = s.dir.path().join("mdl");
    std::fs::create_dir(&model).unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(common::golden("tiny/trained").join(name), model.join(name)).unwrap();
    }
    for (out, input) in [
        ("prompts.txt", "--prompts prompts.txt"),
        ("./prompts.txt", "--prompts prompts.txt"),
        ("sub/../ref2.txt", "--ref ref2.txt"),
        ("tok.json", "--tokenizer tok.json"),
        ("mdl/config.json", "the model's file mdl/config.json"),
    ] {
        let args = [
            &[
                "generate-and-score",
                "--model",
                "mdl",
                "--tokenizer",
                "tok.json",
                "--prompts",
                "prompts.txt",
                "--ref",
                "ref.txt",
                "--ref",
                "ref2.txt",
                "--out",
                out,
            ],
            &GEN[..],
        ]
        .concat();
        let result = s.run(env!("CARGO_BIN_EXE_cllm-eval"), &args);
        let err = stderr(&result);
        assert!(!result.status.success(), "--out {out} was accepted");
        assert!(
            err.contains(&format!("--out {out} is the same file as {input}")),
            "{err}"
        );
    }
    // Nothing was written over.
    let read = |name: &str| std::fs::read(s.dir.path().join(name)).unwrap();
    assert_eq!(read("prompts.txt"), PROMPTS.as_bytes());
    assert_eq!(read("ref2.txt"), REF2.as_bytes());
    assert_eq!(
        read("mdl/config.json"),
        std::fs::read(common::golden("tiny/trained/config.json")).unwrap()
    );
    Tokenizer::load(&s.dir.path().join("tok.json")).unwrap();
}
