//! cllm-generate on the golden trained tiny model: token ids in, token ids out, as Hugging Face
//! `generate` gave them; --batch text one escaped line per prompt; and clear errors on bad input.

use std::path::PathBuf;
use std::process::Command;

mod common;

fn trained_dir() -> PathBuf {
    match std::env::var_os("CLLM_GOLDEN_TRAINED") {
        Some(dir) => PathBuf::from(dir),
        None => common::golden("tiny/trained"),
    }
}

fn generate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cllm-generate"))
        .arg("--model")
        .arg(trained_dir())
        .args(["--threads", "2"])
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("cllm-generate runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// `greedy_prompt`, `greedy` and `beam` of ../shared/golden/tiny/expect.safetensors.
const PROMPT: &str = "190,44,376,267,149,168";
const GREEDY: &str = "197,197,197,197,197,98,98,98,98,98,98,98,98,98,78,78";
const BEAM: &str = "197,197,197,197,124,98,98,98,98,98,98,98,198,198,198,198";

#[test]
fn greedy_and_beam_ids_match_hugging_face() {
    // The ids may be written with spaces after the commas.
    for prompt in [PROMPT.to_string(), PROMPT.replace(',', ", ")] {
        let (ok, out, err) = generate(&[
            "--prompt-ids",
            &prompt,
            "--print-ids",
            "--greedy",
            "--max-new-tokens",
            "16",
        ]);
        assert!(ok, "{err}");
        assert_eq!(out.trim(), GREEDY);
        assert!(err.contains("tokens/s"), "{err}");
    }
    let beam = |extra: &[&str]| {
        let fixed = [
            "--prompt-ids",
            PROMPT,
            "--print-ids",
            "--beams",
            "4",
            "--length-penalty",
            "0",
            "--ignore-eos",
            "--max-new-tokens",
            "16",
        ];
        let (ok, out, err) = generate(&[&fixed[..], extra].concat());
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    assert_eq!(beam(&[]), BEAM);
    // BEAM's fifth token is 124: as the second stop id, it ends the best beam there (ranked by
    // the plain sum, the shorter hypothesis wins), so every stop id counts, not just the first.
    assert_eq!(
        beam(&["--stop-id", "3", "--stop-id", "124"]),
        "197,197,197,197,124"
    );
}

/// Beam search and greedy settings as transformers 5.24's `generate` names them, on the CLI: the
/// ids are those of engine/tests/fixtures/generate_hf.json (scripts/peers/generate_refs.py), and
/// the second of each early-stopping pair is the same search with early_stopping=False.
#[test]
fn length_penalty_eos_and_early_stopping_match_hugging_face() {
    // `args`: space-separated; the only EOS ids are the --stop-id ones, as eos_token_id there.
    let run = |prompt: &str, args: &str| {
        let fixed = ["--prompt-ids", prompt, "--print-ids", "--ignore-eos"];
        let args: Vec<&str> = args.split(' ').collect();
        let (ok, out, err) = generate(&[&fixed[..], &args].concat());
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    // 4 beams, length_penalty 1 (the default of both).
    assert_eq!(
        run(PROMPT, "--beams 4 --max-new-tokens 16 --stop-id 78"),
        "197,197,197,197,124,98,98,98,98,98,98,98,98,98,78"
    );
    // early_stopping=True ends at the second finished hypothesis; False searches on.
    let two = "--beams 2 --max-new-tokens 12 --stop-id 78";
    assert_eq!(
        run(PROMPT, &format!("{two} --early-stopping")),
        "197,197,197,197,124,98,98,98,98,98,78"
    );
    assert_eq!(run(PROMPT, two), "197,197,197,197,124,98,98,98,98,98,98,98");
    let five = "--beams 5 --max-new-tokens 24 --stop-id 372 --length-penalty 2";
    assert_eq!(
        run("5,17,300,2", &format!("{five} --early-stopping")),
        "311,311,311,301,301,301,301,301,372"
    );
    assert_eq!(run("5,17,300,2", five), ["132"; 24].join(","));
    // A negative length penalty (shorter hypotheses rank higher) is a value, not a flag.
    assert_eq!(
        run(
            "100,200,300,101,250,12,7,388,3",
            "--beams 5 --max-new-tokens 16 --stop-id 145 --length-penalty -1"
        ),
        "321,321,179,179,179,179,302,302,302,205,205,145"
    );
    // Four EOS ids: generate keeps (1 + 4) * 3 candidates a step.
    assert_eq!(
        run(
            "4,195,351,110,216",
            "--beams 3 --max-new-tokens 10 --stop-id 148 --stop-id 385 --stop-id 230 --stop-id 302"
        ),
        "258,258,258,32,32,32,32,32,32,296"
    );
    // Greedy with repetition_penalty 1.3.
    assert_eq!(
        run(
            PROMPT,
            "--greedy --repetition-penalty 1.3 --max-new-tokens 24"
        ),
        "197,245,344,323,124,98,98,78,212,182,182,311,205,205,145,145,235,233,32,296,147,68,178,7"
    );
}

#[test]
fn batch_rows_match_single_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompts.txt");
    std::fs::write(&file, format!("{PROMPT}\n5,6\n")).unwrap();
    let (ok, out, err) = generate(&[
        "--batch",
        file.to_str().unwrap(),
        "--batch-ids",
        "--print-ids",
        "--max-new-tokens",
        "16",
        "--top-k",
        "5",
        "--seed",
        "3",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    for (row, prompt) in [PROMPT, "5,6"].iter().enumerate() {
        let (ok, alone, err) = generate(&[
            "--prompt-ids",
            prompt,
            "--print-ids",
            "--max-new-tokens",
            "16",
            "--top-k",
            "5",
            "--seed",
            "3",
        ]);
        assert!(ok, "{err}");
        assert_eq!(rows[row], alone.trim(), "row {row}");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    for (args, want) in [
        (
            vec!["--prompt-ids", "1,2,999", "--print-ids"],
            "outside the vocabulary",
        ),
        (
            vec!["--prompt-ids", "1,2", "--print-ids", "--top-p", "0"],
            "top-p must be in (0, 1]",
        ),
        (
            vec![
                "--prompt-ids",
                "1,2",
                "--print-ids",
                "--max-new-tokens",
                "63",
            ],
            "exceeds the model's context",
        ),
        (vec!["some text"], "no tokenizer"),
        (vec!["--prompt-ids", "1,x"], "not a token id: \"x\""),
        (
            vec!["--prompt-ids", "1", "--beams", "2", "--temperature", "2"],
            "--temperature does not apply to beam search",
        ),
        (
            vec!["--prompt-ids", "1", "--beams", "2", "--stop", "a"],
            "--stop does not apply to beam search",
        ),
        (
            vec!["--prompt-ids", "1", "--stop-id", "999"],
            "outside the model's vocabulary",
        ),
        (
            vec![
                "--prompt-ids",
                "1",
                "--beams",
                "2",
                "--length-penalty",
                "NaN",
            ],
            "--length-penalty NaN is not a finite number",
        ),
        (
            vec!["--prompt-ids", "1", "--length-penalty", "2"],
            "--length-penalty applies only to beam search",
        ),
        (
            vec!["--prompt-ids", "1", "--early-stopping"],
            "--early-stopping applies only to beam search",
        ),
        (
            vec!["--prompt-ids", "1", "--temperature", "inf"],
            "temperature must be a finite number >= 0, got inf",
        ),
        (
            vec!["--prompt-ids", "1", "--repetition-penalty", "NaN"],
            "repetition penalty must be a finite number > 0, got NaN",
        ),
    ] {
        let (ok, _, err) = generate(&args);
        assert!(!ok && err.contains(want), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}

#[test]
fn batch_lines_are_prompts_one_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompts.txt");
    std::fs::write(&file, "5,6\n\n7\n").unwrap();
    let (ok, _, err) = generate(&["--batch", file.to_str().unwrap(), "--batch-ids"]);
    assert!(!ok, "a blank line was accepted");
    assert!(err.contains("prompts.txt:2: empty prompt"), "{err}");
    // Blank lines at the end are not prompts.
    std::fs::write(&file, "5,6\n7\n\n \n").unwrap();
    let (ok, out, err) = generate(&[
        "--batch",
        file.to_str().unwrap(),
        "--batch-ids",
        "--print-ids",
        "--max-new-tokens",
        "4",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    std::fs::write(&file, "").unwrap();
    let (ok, _, err) = generate(&["--batch", file.to_str().unwrap(), "--batch-ids"]);
    assert!(!ok && err.contains("prompts.txt holds no prompts"), "{err}");
}

#[test]
fn a_kernel_path_this_cpu_lacks_is_an_error_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_cllm-generate"))
        .args(["--model"])
        .arg(trained_dir())
        .args(["--prompt-ids", "1", "--print-ids"])
        .env("CLLM_ISA", "bogus")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("cllm-generate runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: CLLM_ISA=\"bogus\""), "{err}");
}

#[test]
fn a_tokenizer_may_be_smaller_than_the_model_not_larger() {
    // The golden model has 389 ids: a 300-token tokenizer can spell prompts for it (ids it
    // lacks print as U+FFFD); GPT-2's 50257 cannot.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokenizer.json");
    let text = "the quick brown fox jumps over the lazy dog, again and again. ".repeat(40);
    cllm_engine::tokenizer::Tokenizer::train([text.as_str()], 300, &[])
        .unwrap()
        .save(&file)
        .unwrap();
    let tok = file.to_str().unwrap();
    let (ok, out, err) = generate(&["--tokenizer", tok, "the fox", "--max-new-tokens", "4"]);
    assert!(ok, "{err}");
    assert!(!out.trim().is_empty(), "{err}");
    let (ok, _, err) = generate(&["--tokenizer", "gpt2", "the fox"]);
    assert!(!ok && err.contains("do not belong together"), "{err}");
}

#[test]
fn batch_text_is_one_escaped_line_per_prompt_line() {
    // A byte-level tokenizer (no merges) whose ids 197, 98 and 78, which GREEDY is made of, are
    // the bytes newline, carriage return and backslash.
    let mut byte_ids: Vec<u32> = (0..256).collect();
    for (byte, id) in [(b'\n', 197), (b'\r', 98), (b'\\', 78)] {
        byte_ids.swap(byte as usize, id);
    }
    let doc = serde_json::json!({
        "format": "cllm-bpe-tokenizer",
        "version": 1,
        "pre_tokenizer": "gpt2",
        "byte_ids": byte_ids,
        "specials": ["<|endoftext|>"],
        "merges": [],
    });
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok.json");
    std::fs::write(&tok, doc.to_string()).unwrap();
    let file = dir.path().join("prompts.txt");
    std::fs::write(&file, format!("{PROMPT}\n5,6\n")).unwrap();
    let opts = [
        "--batch",
        file.to_str().unwrap(),
        "--batch-ids",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--greedy",
        "--max-new-tokens",
        "16",
    ];
    let (ok, text, err) = generate(&opts);
    assert!(ok, "{err}");
    let rows: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(rows.len(), 2, "{text:?}");
    assert_eq!(
        rows[0],
        format!("{}{}{}", "\\n".repeat(5), "\\r".repeat(9), "\\\\".repeat(2))
    );
    // Every row is its token ids' text with exactly those three escapes.
    let (ok, ids, err) = generate(&[&opts[..], &["--print-ids"]].concat());
    assert!(ok, "{err}");
    assert_eq!(ids.lines().next(), Some(GREEDY));
    let tokenizer = cllm_engine::tokenizer::Tokenizer::load(&tok).unwrap();
    for (row, ids) in rows.iter().zip(ids.lines()) {
        let mut bytes = Vec::new();
        for id in ids.split(',').filter(|s| !s.is_empty()) {
            let id = id.parse().unwrap();
            // Ids past the tokenizer's 257 print as U+FFFD.
            bytes.extend_from_slice(tokenizer.token_bytes(id).unwrap_or("\u{FFFD}".as_bytes()));
        }
        let want = String::from_utf8_lossy(&bytes)
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        assert_eq!(*row, want);
    }
}

/// A Hugging Face directory may hold a tokenizer.json of Hugging Face's own format under cllm's
/// tokenizer file name: it is passed over, so ids in and out need no tokenizer, and text asks for
/// one cllm reads.
#[test]
fn a_hugging_face_tokenizer_json_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(trained_dir().join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(
        dir.path().join("tokenizer.json"),
        r#"{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cllm-generate"))
            .arg("--model")
            .arg(dir.path())
            .args(["--threads", "2", "--greedy"])
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("cllm-generate runs")
    };
    let out = run(&[
        "--prompt-ids",
        PROMPT,
        "--print-ids",
        "--max-new-tokens",
        "16",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), GREEDY);
    let out = run(&["--max-new-tokens", "2", "hello"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no tokenizer cllm reads"),
        "{err}"
    );
}
