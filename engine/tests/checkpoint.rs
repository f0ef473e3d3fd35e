//! Checkpoint formats: the golden Hugging Face model loads, what cllm writes reads back bit for
//! bit, damaged files are refused by name, the atomic writer survives a failing write, and
//! rotation keeps the right directories.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cllm_engine::checkpoint::{
    for_each_tensor, gpt2_tensor_table, list_step_dirs, load_tensors, read_pointer,
    read_tensors_into, rotate, step_dir_name, verify_checkpoint_dir, write_checkpoint_dir,
    write_pointer, CheckpointError, Expected, FileSource, HfConfig, LoadedTensors, Manifest,
    ProblemKind, SafetensorsWriter, TensorRef, TensorSink, WriteWith, CONFIG_FILE, LATEST,
    MANIFEST_FILE, MODEL_FILE,
};
use cllm_engine::model::{Gpt, GptConfig};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use listing::entries;

mod listing;

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

fn golden() -> (HfConfig, Vec<Expected>, LoadedTensors) {
    let dir = golden_dir();
    let cfg = HfConfig::read(&dir.join(CONFIG_FILE)).expect("golden config.json");
    let table = gpt2_tensor_table(&cfg.gpt);
    let tensors = load_tensors(&dir.join(MODEL_FILE), &table).expect("golden model.safetensors");
    (cfg, table, tensors)
}

fn refs(t: &LoadedTensors) -> Vec<TensorRef<'_>> {
    t.tensors
        .iter()
        .map(|t| TensorRef {
            name: &t.name,
            shape: &t.shape,
            data: &t.data,
        })
        .collect()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// Writes the given tensors as a plain safetensors file (no checkpoint directory).
fn write_plain(path: &Path, tensors: &[TensorRef<'_>]) {
    let w = SafetensorsWriter::new(tensors, &BTreeMap::new()).unwrap();
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    fs::write(path, bytes).unwrap();
}

/// A safetensors file with raw data of any dtype, written by the safetensors crate itself.
fn write_raw(path: &Path, entries: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> = entries
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn message(e: &CheckpointError) -> String {
    e.to_string()
}

#[test]
fn golden_config_reads_as_the_reference_shape() {
    let dir = golden_dir();
    let cfg = HfConfig::read(&dir.join(CONFIG_FILE)).unwrap();
    let raw: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join(CONFIG_FILE)).unwrap()).unwrap();
    let size = |k: &str| raw[k].as_u64().unwrap() as usize;
    assert_eq!(
        cfg.gpt,
        GptConfig {
            vocab_size: size("vocab_size"),
            n_positions: size("n_positions"),
            n_embd: size("n_embd"),
            n_layer: size("n_layer"),
            n_head: size("n_head"),
        }
    );
    assert_eq!(
        cfg.layer_norm_epsilon,
        raw["layer_norm_epsilon"].as_f64().unwrap()
    );
}

#[test]
fn golden_tensors_have_gpt2_names_shapes_and_values() {
    let (cfg, table, loaded) = golden();
    let g = cfg.gpt;
    assert_eq!(loaded.tensors.len(), 2 + 12 * g.n_layer + 2);
    assert_eq!(
        loaded.metadata.get("format").map(String::as_str),
        Some("pt")
    );
    for ((name, shape), t) in table.iter().zip(&loaded.tensors) {
        assert_eq!(&t.name, name);
        assert_eq!(&t.shape, shape);
        assert_eq!(t.data.len(), shape.iter().product::<usize>());
    }
    let c = g.n_embd;
    assert_eq!(
        loaded.get("wte.weight").unwrap().shape,
        vec![g.vocab_size, c]
    );
    assert_eq!(
        loaded.get("h.0.attn.c_attn.weight").unwrap().shape,
        vec![c, 3 * c]
    );
    assert_eq!(
        loaded.get("h.1.mlp.c_proj.weight").unwrap().shape,
        vec![4 * c, c]
    );

    // A few values against the safetensors crate reading the file on its own.
    let bytes = fs::read(golden_dir().join(MODEL_FILE)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let value = |name: &str, i: usize| {
        let v = st.tensor(&format!("transformer.{name}")).unwrap();
        assert_eq!(v.dtype(), Dtype::F32);
        f32::from_le_bytes(v.data()[4 * i..4 * i + 4].try_into().unwrap())
    };
    for (name, i) in [
        ("wte.weight", 0),
        ("wte.weight", g.vocab_size * c - 1),
        ("wpe.weight", 5 * c + 7),
        ("h.0.attn.c_attn.weight", 3 * 3 * c + 5),
        ("h.1.mlp.c_fc.bias", 17),
        ("ln_f.weight", c - 1),
    ] {
        assert_eq!(
            loaded.get(name).unwrap().data[i].to_bits(),
            value(name, i).to_bits(),
            "{name}[{i}]"
        );
    }
    assert!(loaded
        .get("wte.weight")
        .unwrap()
        .data
        .iter()
        .any(|&x| x != 0.0));
}

#[test]
fn for_each_and_sink_see_the_same_tensors_in_table_order() {
    let (_, table, loaded) = golden();
    let path = golden_dir().join(MODEL_FILE);
    let mut seen = Vec::new();
    for_each_tensor(&path, &table, |name, shape, data| {
        let t = loaded.get(name).unwrap();
        assert_eq!(t.shape, shape);
        assert_eq!(t.data, data);
        seen.push(name.to_owned());
    })
    .unwrap();
    assert_eq!(
        seen,
        table.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );

    // One arena, carved in table order, as the model does.
    struct Arena {
        data: Vec<f32>,
        offsets: Vec<(usize, usize)>,
    }
    impl TensorSink for Arena {
        fn dst(&mut self, index: usize, _name: &str, _shape: &[usize]) -> &mut [f32] {
            let (start, len) = self.offsets[index];
            &mut self.data[start..start + len]
        }
    }
    let mut offsets = Vec::new();
    let mut total = 0;
    for (_, shape) in &table {
        let n: usize = shape.iter().product();
        offsets.push((total, n));
        total += n;
    }
    let mut arena = Arena {
        data: vec![0.0; total],
        offsets,
    };
    read_tensors_into(&path, &table, &mut arena).unwrap();
    let flat: Vec<f32> = loaded
        .tensors
        .iter()
        .flat_map(|t| t.data.iter().copied())
        .collect();
    assert_eq!(arena.data, flat);

    // A destination of the wrong length is refused, naming the tensor.
    struct Short(Vec<f32>);
    impl TensorSink for Short {
        fn dst(&mut self, _: usize, _: &str, _: &[usize]) -> &mut [f32] {
            &mut self.0
        }
    }
    let e = read_tensors_into(&path, &table, &mut Short(vec![0.0; 3])).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::InvalidTensor { tensor, .. } if tensor == "wte.weight"),
        "{e}"
    );
}

#[test]
fn config_round_trip_keeps_every_golden_key() {
    let dir = golden_dir();
    let cfg = HfConfig::read(&dir.join(CONFIG_FILE)).unwrap();
    let text = cfg.to_json();
    let again = HfConfig::parse(&text, Path::new("written/config.json")).unwrap();
    assert_eq!(again, cfg);
    assert_eq!(again.to_json(), text);

    let golden: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join(CONFIG_FILE)).unwrap()).unwrap();
    let written: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (k, v) in golden.as_object().unwrap() {
        if k != "transformers_version" {
            assert_eq!(&written[k], v, "key {k}");
        }
    }
    assert_eq!(written["n_ctx"], written["n_positions"]);

    // A fresh config carries every GPT-2 key too.
    let fresh: serde_json::Value = serde_json::from_str(&HfConfig::new(cfg.gpt).to_json()).unwrap();
    for k in golden.as_object().unwrap().keys() {
        if k != "transformers_version" {
            assert!(fresh.get(k).is_some(), "fresh config lacks {k}");
        }
    }
    assert_eq!(fresh["layer_norm_epsilon"], 1e-5);
    assert_eq!(fresh["bos_token_id"], serde_json::Value::Null);
}

#[test]
fn config_keys_cllm_cannot_run_are_refused_by_file_and_key() {
    let base = r#"{"model_type":"gpt2","vocab_size":100,"n_positions":16,"n_embd":32,"n_layer":1,"n_head":4"#;
    let path = Path::new("some/dir/config.json");
    let accepted = [
        "",
        r#","activation_function":"gelu_pytorch_tanh""#,
        r#","n_inner":128"#,
        r#","n_inner":null"#,
        r#","layer_norm_epsilon":1e-05"#,
    ];
    for extra in accepted {
        HfConfig::parse(&format!("{base}{extra}}}"), path)
            .unwrap_or_else(|e| panic!("{extra}: {e}"));
    }
    let eps = HfConfig::parse(&format!(r#"{base},"layer_norm_epsilon":1e-05}}"#), path).unwrap();
    assert_eq!(eps.layer_norm_epsilon, 1e-5);

    let refused = [
        (r#","activation_function":"gelu""#, "activation_function"),
        (r#","activation_function":"relu""#, "activation_function"),
        (r#","n_inner":64"#, "n_inner"),
        (r#","tie_word_embeddings":false"#, "tie_word_embeddings"),
        (
            r#","scale_attn_by_inverse_layer_idx":true"#,
            "scale_attn_by_inverse_layer_idx",
        ),
        (
            r#","reorder_and_upcast_attn":true"#,
            "reorder_and_upcast_attn",
        ),
        (r#","scale_attn_weights":false"#, "scale_attn_weights"),
        (r#","add_cross_attention":true"#, "add_cross_attention"),
        (r#","layer_norm_epsilon":-1"#, "layer_norm_epsilon"),
        (r#","layer_norm_epsilon":1e-6"#, "layer_norm_epsilon"),
    ];
    for (extra, key) in refused {
        let e = HfConfig::parse(&format!("{base}{extra}}}"), path).unwrap_err();
        assert!(
            matches!(&e, CheckpointError::ConfigKey { key: k, .. } if k == key),
            "{extra}: {e}"
        );
        let m = message(&e);
        assert!(m.contains("some/dir/config.json") && m.contains(key), "{m}");
    }
    let wrong_type = HfConfig::parse(r#"{"model_type":"llama"}"#, path).unwrap_err();
    assert!(message(&wrong_type).contains("model_type"), "{wrong_type}");
    let bad_size = HfConfig::parse(r#"{"n_embd":"big"}"#, path).unwrap_err();
    assert!(message(&bad_size).contains("n_embd"), "{bad_size}");
    let indivisible = HfConfig::parse(r#"{"n_embd":30,"n_head":4}"#, path).unwrap_err();
    assert!(
        matches!(indivisible, CheckpointError::ConfigInvalid { .. }),
        "{indivisible}"
    );
    let not_json = HfConfig::parse("{", path).unwrap_err();
    assert!(
        matches!(not_json, CheckpointError::Json { .. })
            && message(&not_json).contains("config.json")
    );
}

#[test]
fn tensors_round_trip_bit_for_bit_through_a_checkpoint_dir() {
    let (cfg, table, loaded) = golden();
    let root = tmp();
    let meta = BTreeMap::from([("step".to_owned(), "100".to_owned())]);
    let model = SafetensorsWriter::new(&refs(&loaded), &meta).unwrap();
    let config = cfg.to_json();
    let state = WriteWith(|w: &mut dyn Write| w.write_all(b"{\"step\":100}"));
    let manifest = write_checkpoint_dir(
        root.path(),
        "step-00000100",
        &[
            (CONFIG_FILE, &config),
            (MODEL_FILE, &model),
            ("trainer_state.json", &state),
        ],
    )
    .unwrap();
    let dir = root.path().join("step-00000100");
    assert_eq!(verify_checkpoint_dir(&dir).unwrap(), manifest);
    assert_eq!(Manifest::read(&dir).unwrap(), manifest);
    let sizes: Vec<u64> = manifest.files.iter().map(|f| f.size).collect();
    assert_eq!(sizes[1], model.file_size());
    assert_eq!(sizes[1], fs::metadata(dir.join(MODEL_FILE)).unwrap().len());

    let back = load_tensors(&dir.join(MODEL_FILE), &table).unwrap();
    assert_eq!(back.tensors.len(), loaded.tensors.len());
    for (a, b) in back.tensors.iter().zip(&loaded.tensors) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.shape, b.shape);
        assert!(
            a.data
                .iter()
                .zip(&b.data)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}",
            a.name
        );
    }
    assert_eq!(back.metadata.get("format").map(String::as_str), Some("pt"));
    assert_eq!(back.metadata.get("step").map(String::as_str), Some("100"));
    assert_eq!(HfConfig::read(&dir.join(CONFIG_FILE)).unwrap(), cfg);

    // The safetensors crate reads what cllm wrote: unprefixed names, F32, 8-byte aligned header.
    let bytes = fs::read(dir.join(MODEL_FILE)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), table.len());
    assert!(st.tensor("h.0.attn.c_attn.weight").is_ok());
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
    // The same input gives the same bytes.
    let mut again = Vec::new();
    model.write_to(&mut again).unwrap();
    assert_eq!(again, bytes);
}

#[test]
fn names_load_with_or_without_prefix_but_not_both() {
    let (_, table, loaded) = golden();
    let root = tmp();
    let bare = root.path().join("bare.safetensors");
    write_plain(&bare, &refs(&loaded));
    assert_eq!(load_tensors(&bare, &table).unwrap().tensors, loaded.tensors);

    let mut names: Vec<String> = loaded.tensors.iter().map(|t| t.name.clone()).collect();
    names[0] = format!("transformer.{}", names[0]);
    let mut both: Vec<TensorRef<'_>> = refs(&loaded);
    for (r, n) in both.iter_mut().zip(&names) {
        r.name = n;
    }
    let ln = loaded.get("h.0.ln_1.weight").unwrap();
    both.push(TensorRef {
        name: "transformer.h.0.ln_1.weight",
        shape: &ln.shape,
        data: &ln.data,
    });
    let mixed = root.path().join("mixed.safetensors");
    write_plain(&mixed, &both);
    let e = load_tensors(&mixed, &table).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::DuplicateTensor { tensor, .. } if tensor == "h.0.ln_1.weight"),
        "{e}"
    );
    assert!(message(&e).contains("mixed.safetensors"));
}

#[test]
fn a_tied_lm_head_is_accepted_an_untied_one_refused() {
    let (_, table, loaded) = golden();
    let wte = loaded.get("wte.weight").unwrap();
    let root = tmp();
    let mut tensors = refs(&loaded);
    tensors.push(TensorRef {
        name: "lm_head.weight",
        shape: &wte.shape,
        data: &wte.data,
    });
    // Older transformers also saved the causal-mask buffers; they are not parameters.
    let mask = vec![1.0f32; 4];
    tensors.push(TensorRef {
        name: "h.0.attn.bias",
        shape: &[1, 1, 2, 2],
        data: &mask,
    });
    tensors.push(TensorRef {
        name: "transformer.h.1.attn.masked_bias",
        shape: &[],
        data: &mask[..1],
    });
    let tied = root.path().join("tied.safetensors");
    write_plain(&tied, &tensors);
    assert_eq!(load_tensors(&tied, &table).unwrap().tensors, loaded.tensors);

    let mut other = wte.data.clone();
    let last = other.len() - 1;
    other[last] += 1.0;
    let n = tensors.len();
    tensors[n - 3].data = &other;
    let untied = root.path().join("untied.safetensors");
    write_plain(&untied, &tensors);
    let e = load_tensors(&untied, &table).unwrap_err();
    assert!(matches!(e, CheckpointError::UntiedHead { .. }), "{e}");
    assert!(message(&e).contains("untied.safetensors") && message(&e).contains("lm_head.weight"));
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() {
    let (_, table, loaded) = golden();
    let root = tmp();
    let all = refs(&loaded);

    let missing = root.path().join("missing.safetensors");
    let without: Vec<_> = all
        .iter()
        .copied()
        .filter(|t| t.name != "h.1.ln_2.bias")
        .collect();
    write_plain(&missing, &without);
    let e = load_tensors(&missing, &table).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::MissingTensors { tensors, .. } if tensors == &["h.1.ln_2.bias"]),
        "{e}"
    );
    assert!(message(&e).contains("missing.safetensors") && message(&e).contains("h.1.ln_2.bias"));

    let extra = root.path().join("extra.safetensors");
    let mut with = all.clone();
    let ln = loaded.get("ln_f.bias").unwrap();
    with.push(TensorRef {
        name: "score.weight",
        shape: &ln.shape,
        data: &ln.data,
    });
    write_plain(&extra, &with);
    let e = load_tensors(&extra, &table).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::UnexpectedTensors { tensors, .. } if tensors == &["score.weight"]),
        "{e}"
    );
    assert!(message(&e).contains("extra.safetensors"));

    let shaped = root.path().join("shaped.safetensors");
    let mut transposed = all.clone();
    let i = transposed
        .iter()
        .position(|t| t.name == "h.0.attn.c_attn.weight")
        .unwrap();
    let swapped = [transposed[i].shape[1], transposed[i].shape[0]];
    transposed[i].shape = &swapped;
    write_plain(&shaped, &transposed);
    let e = load_tensors(&shaped, &table).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::Shape { tensor, .. } if tensor == "h.0.attn.c_attn.weight"),
        "{e}"
    );
    let m = message(&e);
    assert!(
        m.contains("shaped.safetensors") && m.contains("transposed"),
        "{m}"
    );
}

#[test]
fn f64_f16_bf16_are_converted_other_dtypes_refused() {
    let root = tmp();
    let path = root.path().join("dtypes.safetensors");
    let f64s: Vec<u8> = [0.1f64, -3.5, 1e-3]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let f16s: Vec<u8> = [0x3C00u16, 0xC000, 0x3800, 0x0001, 0x7BFF]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = [0x3F80u16, 0xC020]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    write_raw(
        &path,
        &[
            ("a", Dtype::F64, vec![3], f64s),
            ("b", Dtype::F16, vec![5], f16s),
            ("c", Dtype::BF16, vec![1, 2], bf16s),
        ],
    );
    let table: Vec<Expected> = vec![
        ("a".into(), vec![3]),
        ("b".into(), vec![5]),
        ("c".into(), vec![1, 2]),
    ];
    let t = load_tensors(&path, &table).unwrap();
    assert_eq!(t.tensors[0].data, vec![0.1f32, -3.5, 1e-3]);
    assert_eq!(
        t.tensors[1].data,
        vec![1.0, -2.0, 0.5, 2f32.powi(-24), 65504.0]
    );
    assert_eq!(t.tensors[2].data, vec![1.0, -2.5]);

    let ints = root.path().join("ints.safetensors");
    write_raw(&ints, &[("a", Dtype::I32, vec![1], vec![0, 0, 0, 0])]);
    let e = load_tensors(&ints, &[("a".into(), vec![1])]).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::Dtype { tensor, .. } if tensor == "a"),
        "{e}"
    );
    assert!(message(&e).contains("ints.safetensors") && message(&e).contains("I32"));
}

#[test]
fn non_finite_values_are_refused() {
    let root = tmp();
    let path = root.path().join("nan.safetensors");
    let data = [1.0f32, f32::NAN, 2.0];
    write_plain(
        &path,
        &[TensorRef {
            name: "w",
            shape: &[3],
            data: &data,
        }],
    );
    let e = load_tensors(&path, &[("w".into(), vec![3])]).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::NonFinite { index: 1, .. }),
        "{e}"
    );
    // An F64 beyond f32's range becomes infinite: refused too.
    let big = root.path().join("big.safetensors");
    write_raw(
        &big,
        &[("w", Dtype::F64, vec![1], 1e300f64.to_le_bytes().to_vec())],
    );
    let e = load_tensors(&big, &[("w".into(), vec![1])]).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::NonFinite { index: 0, .. }),
        "{e}"
    );
}

#[test]
fn writer_refuses_inconsistent_tensors() {
    let data = [0.0f32; 6];
    let e = SafetensorsWriter::new(
        &[TensorRef {
            name: "w",
            shape: &[4, 2],
            data: &data,
        }],
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, CheckpointError::InvalidTensor { tensor, .. } if tensor == "w"),
        "{e}"
    );
    let twice = [
        TensorRef {
            name: "w",
            shape: &[6],
            data: &data,
        },
        TensorRef {
            name: "w",
            shape: &[6],
            data: &data,
        },
    ];
    assert!(SafetensorsWriter::new(&twice, &BTreeMap::new()).is_err());
    let meta = BTreeMap::from([("format".to_owned(), "np".to_owned())]);
    let e = SafetensorsWriter::new(&twice[..1], &meta).unwrap_err();
    assert!(matches!(e, CheckpointError::InvalidMetadata { .. }), "{e}");
}

/// Writes the golden model into `root/step-00000001` and returns the directory.
fn golden_checkpoint(root: &Path) -> PathBuf {
    let (cfg, _, loaded) = golden();
    let model = SafetensorsWriter::new(&refs(&loaded), &BTreeMap::new()).unwrap();
    write_checkpoint_dir(
        root,
        "step-00000001",
        &[(CONFIG_FILE, &cfg.to_json()), (MODEL_FILE, &model)],
    )
    .unwrap();
    root.join("step-00000001")
}

#[test]
fn a_truncated_model_file_is_refused_naming_it() {
    let root = tmp();
    let dir = golden_checkpoint(root.path());
    let path = dir.join(MODEL_FILE);
    let size = fs::metadata(&path).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(size - 100).unwrap();
    drop(f);

    let table = gpt2_tensor_table(&HfConfig::read(&dir.join(CONFIG_FILE)).unwrap().gpt);
    let e = load_tensors(&path, &table).unwrap_err();
    assert!(matches!(e, CheckpointError::SafetensorsSize { .. }), "{e}");
    let m = message(&e);
    assert!(
        m.contains(&path.display().to_string()) && m.contains("truncated"),
        "{m}"
    );

    let e = verify_checkpoint_dir(&dir).unwrap_err();
    let CheckpointError::Verify { problems, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].file, MODEL_FILE);
    assert_eq!(
        problems[0].kind,
        ProblemKind::Truncated {
            expected: size,
            found: size - 100
        }
    );
    assert!(
        message(&e).contains("model.safetensors is truncated"),
        "{e}"
    );

    // Cut inside the header: still refused by name.
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(20)
        .unwrap();
    let e = load_tensors(&path, &table).unwrap_err();
    assert!(
        matches!(e, CheckpointError::SafetensorsHeader { .. }),
        "{e}"
    );
    assert!(message(&e).contains("model.safetensors"));
}

#[test]
fn a_corrupted_byte_is_refused_naming_the_file() {
    let root = tmp();
    let dir = golden_checkpoint(root.path());
    let path = dir.join(MODEL_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let e = verify_checkpoint_dir(&dir).unwrap_err();
    let CheckpointError::Verify { problems, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(
        (problems[0].file.as_str(), &problems[0].kind),
        (MODEL_FILE, &ProblemKind::Corrupted)
    );
    assert!(
        message(&e).contains("model.safetensors is corrupted"),
        "{e}"
    );

    // A corrupted header byte is refused by the loader itself.
    let mut bytes = fs::read(&path).unwrap();
    bytes[8] = b'[';
    fs::write(&path, &bytes).unwrap();
    let table = gpt2_tensor_table(&HfConfig::read(&dir.join(CONFIG_FILE)).unwrap().gpt);
    let e = load_tensors(&path, &table).unwrap_err();
    assert!(
        matches!(e, CheckpointError::SafetensorsHeader { .. }),
        "{e}"
    );

    // A missing file and a broken manifest are reported too.
    fs::remove_file(dir.join(CONFIG_FILE)).unwrap();
    let e = verify_checkpoint_dir(&dir).unwrap_err();
    assert!(message(&e).contains("config.json is missing"), "{e}");
    fs::write(
        dir.join(MANIFEST_FILE),
        "{\"format\":\"cllm-checkpoint-manifest\"}",
    )
    .unwrap();
    let e = verify_checkpoint_dir(&dir).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Manifest { .. }) && message(&e).contains("manifest.json"),
        "{e}"
    );

    // A missing manifest says what to do, not only that it is missing.
    fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
    let e = verify_checkpoint_dir(&dir).unwrap_err();
    let m = message(&e);
    assert!(
        matches!(e, CheckpointError::Manifest { .. })
            && m.contains(&dir.join(MANIFEST_FILE).display().to_string())
            && m.contains("missing")
            && m.contains("copy the whole checkpoint directory"),
        "{m}"
    );
}

/// A file source that writes `ok` bytes and then fails as a full disk does.
struct FullDisk {
    ok: usize,
}

impl FileSource for FullDisk {
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&vec![7u8; self.ok])?;
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
    }
}

fn dir_snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_failing_write_leaves_the_previous_checkpoint_intact() {
    let root = tmp();
    let dir = golden_checkpoint(root.path());
    let before = dir_snapshot(&dir);

    let config = "{}".to_owned();
    let full = FullDisk { ok: 3 << 20 };
    let e = write_checkpoint_dir(
        root.path(),
        "step-00000001",
        &[(CONFIG_FILE, &config), (MODEL_FILE, &full)],
    )
    .unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    assert!(
        matches!(&e, CheckpointError::Write { path, .. } if path.ends_with(MODEL_FILE)),
        "{e}"
    );
    assert!(message(&e).contains("disk is full"), "{e}");

    assert_eq!(dir_snapshot(&dir), before);
    verify_checkpoint_dir(&dir).unwrap();
    assert_eq!(
        entries(root.path()),
        vec!["step-00000001"],
        "no temporary directory left behind"
    );

    // A new name fails the same way without creating anything.
    let e = write_checkpoint_dir(
        root.path(),
        "step-00000002",
        &[(MODEL_FILE, &FullDisk { ok: 10 })],
    )
    .unwrap_err();
    assert!(e.is_disk_full());
    assert_eq!(entries(root.path()), vec!["step-00000001"]);
}

#[test]
fn replacing_a_checkpoint_swaps_it_whole() {
    let root = tmp();
    let first = b"first".to_vec();
    let second = "second".to_owned();
    write_checkpoint_dir(
        root.path(),
        "step-00000005",
        &[("a.bin", &first), ("b.bin", &first)],
    )
    .unwrap();
    write_checkpoint_dir(root.path(), "step-00000005", &[("a.bin", &second)]).unwrap();
    let dir = root.path().join("step-00000005");
    assert_eq!(entries(&dir), vec!["a.bin", MANIFEST_FILE]);
    assert_eq!(fs::read(dir.join("a.bin")).unwrap(), b"second");
    verify_checkpoint_dir(&dir).unwrap();
    assert_eq!(entries(root.path()), vec!["step-00000005"]);

    for bad in ["", ".hidden", "a/b", "../x"] {
        assert!(matches!(
            write_checkpoint_dir(root.path(), bad, &[]),
            Err(CheckpointError::InvalidName { .. })
        ));
    }
    let dup = write_checkpoint_dir(root.path(), "x", &[("f", &first), ("f", &first)]).unwrap_err();
    assert!(matches!(dup, CheckpointError::InvalidName { .. }));
    let reserved = write_checkpoint_dir(root.path(), "x", &[(MANIFEST_FILE, &first)]).unwrap_err();
    assert!(matches!(reserved, CheckpointError::InvalidName { .. }));
}

#[test]
fn a_failing_swap_removes_the_temporary_copy() {
    let root = tmp();
    let p = root.path();
    let body = b"first".to_vec();
    write_checkpoint_dir(p, "step-00000001", &[("f", &body)]).unwrap();
    // Where the previous checkpoint would be moved aside stands a file, which cannot be removed
    // as a stale directory: the swap fails after the new copy is complete.
    let old = format!(".step-00000001.old-{}", std::process::id());
    fs::write(p.join(&old), "in the way").unwrap();

    let second = b"second".to_vec();
    let e = write_checkpoint_dir(p, "step-00000001", &[("f", &second)]).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::Io { path, .. } if path.ends_with(&old)),
        "{e}"
    );
    assert_eq!(
        entries(p),
        vec![old, "step-00000001".to_owned()],
        "no temporary directory left behind"
    );
    assert_eq!(fs::read(p.join("step-00000001/f")).unwrap(), b"first");
}

#[test]
fn rotation_leaves_dot_names_it_did_not_write() {
    let root = tmp();
    let p = root.path();
    let body = b"x".to_vec();
    write_checkpoint_dir(p, &step_dir_name(1), &[("f", &body)]).unwrap();
    write_pointer(p, LATEST, &step_dir_name(1)).unwrap();
    // A user's files that merely look like leftovers, and leftovers of this code.
    fs::write(p.join(".notes.old-1"), "mine").unwrap();
    fs::create_dir(p.join(".data.del-2")).unwrap();
    fs::write(p.join(".notes.tmp-4194305-0"), "mine").unwrap();
    fs::create_dir(p.join(".step-00000002.old-1")).unwrap();
    fs::write(p.join(".best.tmp-4194305-0"), "step-0000").unwrap();

    rotate(p, 1, None).unwrap();
    assert_eq!(
        entries(p),
        vec![
            ".data.del-2",
            ".notes.old-1",
            ".notes.tmp-4194305-0",
            "latest",
            "step-00000001"
        ]
    );
}

#[test]
fn rotation_keeps_the_newest_the_best_and_latest() {
    let root = tmp();
    let p = root.path();
    let body = b"x".to_vec();
    for step in [100, 200, 300, 400, 500, 600] {
        write_checkpoint_dir(p, &step_dir_name(step), &[("f", &body)]).unwrap();
    }
    // Debris of interrupted writes: an old copy, a half-deleted dir, a dead process's temp dir.
    for debris in [
        ".step-00000600.old-1",
        ".step-00000100.del-7",
        ".step-00000700.tmp-4194305",
    ] {
        fs::create_dir(p.join(debris)).unwrap();
    }
    // A dead process's interrupted pointer write (an `AtomicFile` temporary).
    fs::write(p.join(".latest.tmp-4194305-3"), "step-00000").unwrap();
    fs::write(p.join("notes.txt"), "not a checkpoint").unwrap();
    write_pointer(p, LATEST, &step_dir_name(600)).unwrap();
    assert_eq!(
        read_pointer(p, LATEST).unwrap().as_deref(),
        Some("step-00000600")
    );

    let r = rotate(p, 2, Some("step-00000200")).unwrap();
    assert_eq!(
        r.kept,
        vec!["step-00000200", "step-00000500", "step-00000600"]
    );
    assert_eq!(
        r.removed,
        vec!["step-00000100", "step-00000300", "step-00000400"]
    );
    assert_eq!(
        entries(p),
        vec![
            "latest",
            "notes.txt",
            "step-00000200",
            "step-00000500",
            "step-00000600"
        ]
    );
    assert_eq!(
        list_step_dirs(p).unwrap(),
        vec![
            (200, "step-00000200".to_owned()),
            (500, "step-00000500".to_owned()),
            (600, "step-00000600".to_owned())
        ]
    );

    // `latest` is protected even when it is not among the newest (e.g. after a resume from it).
    write_pointer(p, LATEST, "step-00000500").unwrap();
    write_checkpoint_dir(p, &step_dir_name(700), &[("f", &body)]).unwrap();
    let r = rotate(p, 1, None).unwrap();
    assert_eq!(r.kept, vec!["step-00000500", "step-00000700"]);
    assert_eq!(r.removed, vec!["step-00000200", "step-00000600"]);

    // Pointers must name an existing directory.
    assert!(matches!(
        write_pointer(p, LATEST, "step-00000100"),
        Err(CheckpointError::Pointer { .. })
    ));
    fs::write(p.join(LATEST), "step-00000300\n").unwrap();
    let e = read_pointer(p, LATEST).unwrap_err();
    assert!(
        message(&e).contains("step-00000300") && message(&e).contains("latest"),
        "{e}"
    );
    assert_eq!(read_pointer(p, "best").unwrap(), None);
    assert_eq!(step_dir_name(123_456_789), "step-123456789");
}

/// Re-saves the golden model the way cllm writes checkpoints. With `CLLM_CHECK_HF_OUT` set, the
/// directory is written there for scripts/check_hf_load.py to load with transformers.
#[test]
fn golden_model_resaved_as_a_checkpoint_dir() {
    let (cfg, table, loaded) = golden();
    let keep = tmp();
    let out = std::env::var_os("CLLM_CHECK_HF_OUT").map(PathBuf::from);
    let (parent, name) = match &out {
        Some(dir) => {
            let parent = dir.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(parent).unwrap();
            (
                parent.to_owned(),
                dir.file_name().unwrap().to_str().unwrap().to_owned(),
            )
        }
        None => (keep.path().to_owned(), "resaved".to_owned()),
    };
    let model = SafetensorsWriter::new(&refs(&loaded), &BTreeMap::new()).unwrap();
    write_checkpoint_dir(
        &parent,
        &name,
        &[(CONFIG_FILE, &cfg.to_json()), (MODEL_FILE, &model)],
    )
    .unwrap();
    let dir = parent.join(&name);
    verify_checkpoint_dir(&dir).unwrap();
    let back = load_tensors(&dir.join(MODEL_FILE), &table).unwrap();
    assert_eq!(back.tensors, loaded.tensors);
}

#[test]
fn weights_in_a_form_cllm_does_not_read_are_named() {
    for (file, says) in [
        ("pytorch_model.bin", "PyTorch pickle"),
        ("model.safetensors.index.json", "sharded"),
    ] {
        let root = tmp();
        fs::copy(
            golden_dir().join(CONFIG_FILE),
            root.path().join(CONFIG_FILE),
        )
        .unwrap();
        fs::write(root.path().join(file), b"{}").unwrap();
        let Err(e) = cllm_engine::model::Gpt::from_hf_dir(root.path()) else {
            panic!("{file} loaded");
        };
        assert!(matches!(e, CheckpointError::WeightsForm { .. }), "{e}");
        assert!(
            message(&e).contains(says) && message(&e).contains("save_pretrained"),
            "{e}"
        );
    }
}

#[test]
fn a_truncated_weights_file_is_blamed_not_the_config() {
    // Cut short enough that the file is too small for the config's parameters: the error must
    // still name the weights file and its damage, not call the config a mismatch.
    for (len, says) in [
        (0, "shorter than the 8-byte header length"),
        (20, "truncated"),
    ] {
        let root = tmp();
        fs::copy(
            golden_dir().join(CONFIG_FILE),
            root.path().join(CONFIG_FILE),
        )
        .unwrap();
        let path = root.path().join(MODEL_FILE);
        fs::copy(golden_dir().join(MODEL_FILE), &path).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
        let Err(e) = cllm_engine::model::Gpt::from_hf_dir(root.path()) else {
            panic!("a {len}-byte model.safetensors loaded");
        };
        assert!(
            matches!(e, CheckpointError::SafetensorsHeader { .. }),
            "{e}"
        );
        let m = message(&e);
        assert!(
            m.contains(&path.display().to_string()) && m.contains(says),
            "{m}"
        );
    }
}

#[test]
fn a_config_that_does_not_fit_the_weights_names_its_sizes() {
    // A config.json without `n_embd` takes GPT-2's 768: far more parameters than the golden
    // weights hold. The error names the config, its sizes, the shapes found, and the fix.
    let root = tmp();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(golden_dir().join(CONFIG_FILE)).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("n_embd");
    fs::write(root.path().join(CONFIG_FILE), cfg.to_string()).unwrap();
    fs::copy(golden_dir().join(MODEL_FILE), root.path().join(MODEL_FILE)).unwrap();
    let Err(e) = cllm_engine::model::Gpt::from_hf_dir(root.path()) else {
        panic!("loaded with n_embd 768");
    };
    assert!(matches!(e, CheckpointError::ConfigInvalid { .. }), "{e}");
    let m = message(&e);
    for part in [
        CONFIG_FILE,
        "n_embd 768",
        "wte.weight is [389, 96]",
        "do not belong together",
        "use the config.json saved with these weights",
    ] {
        assert!(m.contains(part), "{part:?} not in {m}");
    }
}

// Files that lie about sizes: config sizes too large to build, safetensors offsets past any
// file; and a checkpoint's tokenizer changed after saving. Each is refused with an error naming
// the file, never a panic or an impossible allocation.

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
