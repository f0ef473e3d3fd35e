//! Loading a model from files that lie: config sizes too large to build, safetensors offsets past
//! any file, a checkpoint's tokenizer changed after saving. Each is refused with an error naming
//! the file, never a panic or an impossible allocation.

use std::fs;
use std::path::{Path, PathBuf};

use cllm_engine::checkpoint::{
    load_tensors, write_checkpoint_dir, CheckpointError, HfConfig, ProblemKind, CONFIG_FILE,
    MODEL_FILE,
};
use cllm_engine::model::{Gpt, GptConfig};

/// The golden directory: `CLLM_GOLDEN`, else `<workspace>/../shared/golden/tiny`. Missing is a
/// failure, not a skip.
fn golden_dir() -> PathBuf {
    let dir = match std::env::var_os("CLLM_GOLDEN") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/tiny"),
    };
    assert!(
        dir.join(CONFIG_FILE).is_file() && dir.join(MODEL_FILE).is_file(),
        "golden reference not found at {} (set CLLM_GOLDEN to a directory with config.json and model.safetensors)",
        dir.display()
    );
    dir
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

#[test]
fn config_sizes_too_large_to_build_are_refused_naming_the_key() {
    // The first overflowed the parameter count (a panic with overflow checks); the second
    // wrapped it to 0 without them, passed the weights-size check, and then failed to allocate.
    let huge = [
        (r#"{"n_embd": 9223372036854775808, "n_head": 1}"#, "n_embd"),
        (
            r#"{"vocab_size": 18446744073709551615, "n_positions": 18446744073709551602,
                "n_embd": 9223372036854775808, "n_layer": 1, "n_head": 1}"#,
            "vocab_size",
        ),
    ];
    for (text, key) in huge {
        let root = tmp();
        let config = root.path().join(CONFIG_FILE);
        fs::write(&config, text).unwrap();
        fs::copy(golden_dir().join(MODEL_FILE), root.path().join(MODEL_FILE)).unwrap();
        let Err(e) = Gpt::from_hf_dir(root.path()) else {
            panic!("{text} loaded");
        };
        assert!(matches!(e, CheckpointError::ConfigInvalid { .. }), "{e}");
        let m = e.to_string();
        assert!(
            m.contains(&config.display().to_string()) && m.contains(&format!("{key} ")),
            "{m}"
        );
    }

    // Every size within bounds, but together too many parameters for memory.
    let e = HfConfig::parse(
        r#"{"n_embd": 2147483648, "n_layer": 2147483648, "n_head": 1}"#,
        Path::new("big/config.json"),
    )
    .unwrap_err();
    assert!(matches!(e, CheckpointError::ConfigInvalid { .. }), "{e}");
    assert!(e.to_string().contains("more parameters than"), "{e}");

    // The largest GPT-2 passes.
    let xl = GptConfig {
        vocab_size: 50257,
        n_positions: 1024,
        n_embd: 1600,
        n_layer: 48,
        n_head: 25,
    };
    xl.validate().unwrap();
    assert_eq!(xl.num_parameters(), 1_557_611_200);
}

#[test]
fn safetensors_offsets_past_any_file_are_refused_by_name() {
    // Eight u8 tensors of 2^61 - 1 bytes each end 8 bytes short of 2^64: with the header before
    // them, past what a u64 file size can hold. The file itself is only the header.
    let n = (1usize << 61) - 1;
    let tensors: Vec<String> = (0..8)
        .map(|i| {
            format!(
                r#""t{i}":{{"dtype":"U8","shape":[{n}],"data_offsets":[{},{}]}}"#,
                i * n,
                (i + 1) * n
            )
        })
        .collect();
    let header = format!("{{{}}}", tensors.join(","));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let root = tmp();
    let path = root.path().join(MODEL_FILE);
    fs::write(&path, &bytes).unwrap();

    // The expected table is the caller's (allocated by load_tensors), so keep it small.
    let e = load_tensors(&path, &[("t0".to_owned(), vec![1])]).unwrap_err();
    assert!(
        matches!(e, CheckpointError::SafetensorsHeader { .. }),
        "{e}"
    );
    let m = e.to_string();
    assert!(
        m.contains(&path.display().to_string()) && m.contains("past any possible file size"),
        "{m}"
    );
}

#[test]
fn a_checkpoint_tokenizer_changed_after_saving_is_refused_by_name() {
    let golden = golden_dir();
    let config = fs::read(golden.join(CONFIG_FILE)).unwrap();
    let weights = fs::read(golden.join(MODEL_FILE)).unwrap();
    let tokenizer = br#"{"format":"cllm-bpe-tokenizer"}"#.to_vec();
    let root = tmp();
    write_checkpoint_dir(
        root.path(),
        "ckpt",
        &[
            (CONFIG_FILE, &config),
            (MODEL_FILE, &weights),
            ("tokenizer.json", &tokenizer),
        ],
    )
    .unwrap();
    let dir = root.path().join("ckpt");
    Gpt::from_hf_dir(&dir).unwrap();

    // Same size, one byte changed: only the checksum tells.
    let mut changed = tokenizer.clone();
    changed[2] ^= 0x20;
    fs::write(dir.join("tokenizer.json"), &changed).unwrap();
    let Err(e) = Gpt::from_hf_dir(&dir) else {
        panic!("a changed tokenizer.json loaded");
    };
    let CheckpointError::Verify { problems, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(problems.len(), 1, "{e}");
    assert_eq!(problems[0].file, "tokenizer.json");
    assert!(matches!(problems[0].kind, ProblemKind::Corrupted), "{e}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");

    // A tokenizer.json the manifest does not list is not the checkpoint's to check.
    write_checkpoint_dir(
        root.path(),
        "bare",
        &[(CONFIG_FILE, &config), (MODEL_FILE, &weights)],
    )
    .unwrap();
    fs::write(root.path().join("bare/tokenizer.json"), &changed).unwrap();
    Gpt::from_hf_dir(&root.path().join("bare")).unwrap();
}
