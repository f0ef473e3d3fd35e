//! cllm-generate on the golden trained tiny model: token ids in, token ids out, as Hugging Face
//! `generate` gave them; --batch text one escaped line per prompt; and clear errors on bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// [`generate`] with `input` on stdin.
fn generate_stdin(args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cllm-generate"))
        .arg("--model")
        .arg(trained_dir())
        .args(["--threads", "2"])
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cllm-generate runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a cllm tokenizer file to `path`: byte `b` is token `byte_ids[b]`, and merge `i` (of two
/// earlier tokens) is token 256 + i; then unused specials up to `<|endoftext|>` at 388, the
/// golden model's `eos_token_id` (a tokenizer that ends text elsewhere is refused as not the
/// model's).
fn write_tokenizer(path: &Path, byte_ids: &[u32], merges: &[[u32; 2]]) {
    let unused = 388 - 256 - merges.len();
    let specials: Vec<String> = (0..unused)
        .map(|i| format!("<|unused{i}|>"))
        .chain(["<|endoftext|>".to_owned()])
        .collect();
    let doc = serde_json::json!({
        "format": "cllm-bpe-tokenizer",
        "version": 1,
        "pre_tokenizer": "gpt2",
        "byte_ids": byte_ids,
        "specials": specials,
        "merges": merges,
    });
    std::fs::write(path, doc.to_string()).unwrap();
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
    let long_prompt = vec!["1"; 65].join(",");
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
                "64",
            ],
            "exceeds the model's context of 64 positions (at most 63 new tokens fit)",
        ),
        (
            vec!["--prompt-ids", &long_prompt, "--print-ids"],
            "prompt 1 has 65 tokens, more than the model's context of 64 positions: shorten it",
        ),
        (
            vec!["--prompt-ids", "1", "--temperature", "0", "--top-p", "0.5"],
            "temperature 0 is greedy decoding, which ignores top-p",
        ),
        (
            vec!["--prompt-ids", "1", "--beams", "2", "--greedy"],
            "--greedy does not apply to beam search",
        ),
        (
            vec!["--prompt-ids", "1", "--beams", "1000000000000"],
            "use fewer rows (prompts in the batch, or beams) or fewer new tokens",
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

/// The last new token is never fed back, so a prompt of 2 tokens leaves room for 63 new ones in
/// the golden model's 64 positions, and one of 64 tokens for one, as transformers allows.
#[test]
fn the_context_holds_the_prompt_and_all_new_tokens_but_the_last() {
    let full = vec!["1"; 64].join(",");
    for (prompt, n) in [("1,2", 63), (full.as_str(), 1)] {
        for beams in [None, Some("2")] {
            let mut args = vec!["--prompt-ids", prompt, "--print-ids", "--ignore-eos"];
            let new = n.to_string();
            args.extend(["--max-new-tokens", &new]);
            if let Some(b) = beams {
                args.extend(["--beams", b]);
            }
            let (ok, out, err) = generate(&args);
            assert!(ok, "{args:?}: {err}");
            assert_eq!(out.trim().split(',').count(), n, "{args:?}: {out}");
        }
    }
}

/// The text ends right after the first --stop string (which is kept), even when it ends inside a
/// token: streamed, and in a --batch row alike; --print-ids prints that whole token's id.
#[test]
fn text_ends_at_the_stop_string_not_at_the_token() {
    // Greedy with repetition penalty 1.3 from PROMPT starts 197,245,344 (as transformers gives
    // it, above). With this tokenizer they spell "a", "b" and "X\nY": byte 'a' is 197, byte 'b'
    // is 245, and merges 0..87 (tokens 256..343, "z" and a byte) lead to 87 "X\n" and 88 "X\nY".
    let mut byte_ids: Vec<u32> = (0..256).collect();
    byte_ids.swap(b'a' as usize, 197);
    byte_ids.swap(b'b' as usize, 245);
    let mut merges: Vec<[u32; 2]> = (0..87).map(|j| [u32::from(b'z'), 128 + j]).collect();
    merges.push([u32::from(b'X'), u32::from(b'\n')]);
    merges.push([343, u32::from(b'Y')]);
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok.json");
    write_tokenizer(&tok, &byte_ids, &merges);
    let file = dir.path().join("prompts.txt");
    std::fs::write(&file, format!("{PROMPT}\n")).unwrap();
    let tok = tok.to_str().unwrap();
    let opts = [
        "--tokenizer",
        tok,
        "--greedy",
        "--repetition-penalty",
        "1.3",
        "--max-new-tokens",
        "24",
    ];
    let run = |args: &[&str]| {
        let (ok, out, err) = generate(&[&opts[..], args].concat());
        assert!(ok, "{args:?}: {err}");
        out
    };
    let batch = ["--batch", file.to_str().unwrap(), "--batch-ids"];
    for (stop, text) in [("\n", "abX\n"), ("bX", "abX"), ("X\nY", "abX\nY")] {
        let stream = run(&["--prompt-ids", PROMPT, "--stop", stop]);
        assert_eq!(stream, format!("{text}\n"), "--stop {stop:?}");
        let row = run(&[&batch[..], &["--stop", stop]].concat());
        assert_eq!(
            row,
            format!("{}\n", text.replace('\n', "\\n")),
            "--stop {stop:?}"
        );
        let ids = run(&["--prompt-ids", PROMPT, "--stop", stop, "--print-ids"]);
        assert_eq!(ids.trim(), "197,245,344", "--stop {stop:?}");
    }
}

/// A prompt from stdin or --prompt-file loses one final newline (`\n` or `\r\n`), which echo and
/// editors add; a prompt given as an argument keeps it.
#[test]
fn stdin_and_prompt_files_lose_one_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok.json");
    write_tokenizer(&tok, &(0..256).collect::<Vec<u32>>(), &[]);
    let opts = [
        "--tokenizer",
        tok.to_str().unwrap(),
        "--print-ids",
        "--greedy",
        "--max-new-tokens",
        "8",
    ];
    let arg = |prompt: &str| {
        let (ok, out, err) = generate(&[&opts[..], &[prompt]].concat());
        assert!(ok, "{err}");
        out
    };
    let (hello, hello_nl) = (arg("Hello"), arg("Hello\n"));
    assert_ne!(
        hello, hello_nl,
        "the test needs a newline to change the output"
    );
    for (input, want) in [
        ("Hello\n", &hello),
        ("Hello\r\n", &hello),
        ("Hello", &hello),
        ("Hello\n\n", &hello_nl),
    ] {
        let (ok, out, err) = generate_stdin(&opts, input);
        assert!(ok, "{err}");
        assert_eq!(&out, want, "stdin {input:?}");
        let file = dir.path().join("prompt.txt");
        std::fs::write(&file, input).unwrap();
        let (ok, out, err) =
            generate(&[&opts[..], &["--prompt-file", file.to_str().unwrap()]].concat());
        assert!(ok, "{err}");
        assert_eq!(&out, want, "--prompt-file {input:?}");
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
fn a_tokenizer_may_be_smaller_than_the_model_but_must_end_text_where_it_does() {
    // The golden model has 389 ids and ends text with 388. A 300-token tokenizer can spell
    // prompts for a model with its <|endoftext|> (ids it lacks print as U+FFFD); not for this
    // one, and GPT-2's 50257 tokens for none of 389 ids.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokenizer.json");
    let text = "the quick brown fox jumps over the lazy dog, again and again. ".repeat(40);
    let small = cllm_engine::tokenizer::Tokenizer::train([text.as_str()], 300, &[]).unwrap();
    small.save(&file).unwrap();
    let tok = file.to_str().unwrap();
    let (ok, _, err) = generate(&["--tokenizer", tok, "the fox"]);
    assert!(
        !ok && err.contains("eos_token_id") && err.contains("do not belong together"),
        "{err}"
    );
    let (ok, _, err) = generate(&["--tokenizer", "gpt2", "the fox"]);
    assert!(!ok && err.contains("do not belong together"), "{err}");

    // The same weights with the small tokenizer's end of text.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(
        trained_dir().join("model.safetensors"),
        model.join("model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(trained_dir().join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["eos_token_id"] = small.eot_token().into();
    config["bos_token_id"] = small.eot_token().into();
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cllm-generate"))
        .arg("--model")
        .arg(&model)
        .args(["--tokenizer", tok, "the fox", "--max-new-tokens", "4"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!out.stdout.is_empty(), "{err}");
}

#[test]
fn batch_text_is_one_escaped_line_per_prompt_line() {
    // A byte-level tokenizer (no merges) whose ids 197, 98 and 78, which GREEDY is made of, are
    // the bytes newline, carriage return and backslash.
    let mut byte_ids: Vec<u32> = (0..256).collect();
    for (byte, id) in [(b'\n', 197), (b'\r', 98), (b'\\', 78)] {
        byte_ids.swap(byte as usize, id);
    }
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok.json");
    write_tokenizer(&tok, &byte_ids, &[]);
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
