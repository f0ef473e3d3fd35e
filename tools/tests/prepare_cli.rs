//! cllm-prepare end to end: GPT-2 shards hold exactly the tokenizer's ids with EOT before each
//! document, the shards do not depend on the thread count, and an output directory inside the
//! input is not read back as input.

use cllm_engine::data::Shard;
use cllm_engine::tokenizer::Tokenizer;
use std::path::Path;
use std::process::Command;

const TEXT: &str = "Hello, world! It's 2026 — naïve café, 東京, emoji 👍🏽 and   spaces.\r\nSecond line\twith a tab.\n\n  DON'T stop 1234567890.\n";

/// Runs cllm-prepare, which must succeed; returns its stderr.
fn prepare(input: &Path, out: &Path, threads: &str, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cllm-prepare"))
        .arg(input)
        .args(["--out", out.to_str().unwrap(), "--threads", threads])
        .args(extra)
        .output()
        .expect("cllm-prepare runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "cllm-prepare failed: {stderr}");
    stderr
}

fn tokens(path: &Path) -> Vec<u32> {
    let shard = Shard::open(path).unwrap();
    let mut out = vec![0u32; shard.len()];
    shard.tokens().copy_to(0, &mut out);
    out
}

#[test]
fn gpt2_raw_shards_hold_the_tokenizer_ids() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("doc.txt");
    std::fs::write(&input, TEXT).unwrap();
    let out = dir.path().join("out");
    prepare(
        &input,
        &out,
        "1",
        &["--tokenizer", "gpt2", "--raw", "--val-fraction", "0"],
    );
    let gpt2 = Tokenizer::gpt2_builtin();
    let mut want = vec![gpt2.eot_token()];
    want.extend(gpt2.encode_ordinary(TEXT));
    assert_eq!(tokens(&out.join("train_000000.bin")), want);
    assert!(!out.join("val_000000.bin").exists());
    assert!(out.join("tokenizer.json").is_file());
}

#[test]
fn trained_bpe_shards_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    for i in 0..7 {
        let doc: String = (0..200)
            .map(|j| format!("line {j} of document {i}: the quick brown fox {}\n", i * j))
            .collect();
        std::fs::write(corpus.join(format!("doc{i}.txt")), doc).unwrap();
    }
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    prepare(
        &corpus,
        &one,
        "1",
        &["--vocab-size", "400", "--val-fraction", "0.1"],
    );
    prepare(
        &corpus,
        &two,
        "2",
        &["--vocab-size", "400", "--val-fraction", "0.1"],
    );
    for file in ["train_000000.bin", "val_000000.bin", "tokenizer.json"] {
        let (a, b) = (
            std::fs::read(one.join(file)).unwrap(),
            std::fs::read(two.join(file)).unwrap(),
        );
        assert!(a == b, "{file} differs between 1 and 2 threads");
    }
}

/// Every `train_*.bin` of `dir`, in order, as one token stream.
fn train_tokens(dir: &Path) -> Vec<u32> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("train_")
        })
        .collect();
    paths.sort();
    paths.iter().flat_map(|p| tokens(p)).collect()
}

#[test]
fn output_inside_the_input_is_not_read_back_and_replaced_shards_are_counted() {
    let gpt2 = Tokenizer::gpt2_builtin();
    let mut want = vec![gpt2.eot_token()];
    want.extend(gpt2.encode_ordinary(TEXT));
    let shards = want.len().div_ceil(8);
    let opts = |shard_tokens: &'static str| {
        [
            "--tokenizer",
            "gpt2",
            "--raw",
            "--val-fraction",
            "0",
            "--shard-tokens",
            shard_tokens,
        ]
    };
    // Below the input directory, and the input directory itself.
    for below in ["shards", ""] {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus");
        std::fs::create_dir(&corpus).unwrap();
        std::fs::write(corpus.join("doc.txt"), TEXT).unwrap();
        let out = corpus.join(below);
        let first = prepare(&corpus, &out, "1", &opts("8"));
        assert!(!first.contains("replaced"), "{first}");
        assert_eq!(train_tokens(&out), want);
        // A second run reads only doc.txt again, and says what it replaced.
        let second = prepare(&corpus, &out, "1", &opts("8"));
        assert_eq!(train_tokens(&out), want, "{}", out.display());
        assert!(
            second.contains(&format!("replaced {shards} and removed 0 shard file(s)")),
            "{second}"
        );
        // One larger shard replaces the first and removes the others.
        let third = prepare(&corpus, &out, "1", &opts("1000"));
        assert_eq!(train_tokens(&out), want);
        assert!(
            third.contains(&format!(
                "replaced 1 and removed {} shard file(s)",
                shards - 1
            )),
            "{third}"
        );
    }
}

/// Runs cllm-prepare, which must fail; returns its stderr.
fn prepare_fails(input: &Path, out: &Path, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cllm-prepare"))
        .arg(input)
        .args(["--out", out.to_str().unwrap(), "--threads", "1"])
        .args(extra)
        .output()
        .expect("cllm-prepare runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "cllm-prepare succeeded: {stderr}");
    stderr
}

#[test]
fn special_tokens_are_checked_once_and_endoftext_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("doc.txt");
    let text: String = (0..50)
        .map(|j| format!("line {j} of the quick brown fox {}\n", j * j))
        .collect();
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out");
    let train = |specials: &[&'static str]| {
        let mut args = vec!["--vocab-size", "300"];
        for s in specials {
            args.extend(["--special", s]);
        }
        args
    };
    let e = prepare_fails(&input, &out, &train(&[""]));
    assert_eq!(e.matches("empty").count(), 1, "{e}");
    assert!(
        e.contains("--special '': a special token needs at least one character"),
        "{e}"
    );
    let e = prepare_fails(&input, &out, &train(&["<pad>", "<pad>"]));
    assert_eq!(e.matches("twice").count(), 1, "{e}");
    assert!(e.contains("--special \"<pad>\" is given twice"), "{e}");
    let stderr = prepare(&input, &out, "1", &train(&["<|endoftext|>", "<pad>"]));
    assert!(
        stderr.contains("warning: --special <|endoftext|>: it is always the first special token"),
        "{stderr}"
    );
    let json = std::fs::read_to_string(out.join("tokenizer.json")).unwrap();
    assert_eq!(json.matches("<|endoftext|>").count(), 1, "{json}");
    assert_eq!(json.matches("<pad>").count(), 1, "{json}");
}

#[test]
fn binary_inputs_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    std::fs::write(corpus.join("doc.txt"), TEXT).unwrap();
    let mut exe = b"\x7fELF\x02\x01\x01\0".to_vec();
    exe.extend(TEXT.repeat(10).bytes());
    std::fs::write(corpus.join("tool"), exe).unwrap();
    let out = dir.path().join("out");
    let stderr = prepare(
        &corpus,
        &out,
        "1",
        &["--tokenizer", "gpt2", "--raw", "--val-fraction", "0"],
    );
    assert!(stderr.contains("1 of 2 documents kept"), "{stderr}");
    assert!(
        stderr.contains("1 dropped (binary, holding NUL bytes: ") && stderr.contains("tool)"),
        "{stderr}"
    );
    let gpt2 = Tokenizer::gpt2_builtin();
    let mut want = vec![gpt2.eot_token()];
    want.extend(gpt2.encode_ordinary(TEXT));
    assert_eq!(tokens(&out.join("train_000000.bin")), want);
}
