//! `cllm-bench compare` on hand-written suite documents (verdicts, exit status, errors), and a
//! small `cllm-bench suite` run (two cheap groups; the whole quick suite runs in release from
//! scripts/test.sh) read back by `compare`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cllm-bench"))
        .args(args)
        .output()
        .expect("cllm-bench runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// An entry whose samples per CPU-second are `cpu` (the wall samples are half of them, as on a
/// machine that gave the run half a core) against a reference of `reference`.
fn entry(name: &str, cpu: &[f64], reference: f64) -> String {
    let mut sorted = cpu.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let wall: Vec<f64> = cpu.iter().map(|x| x / 2.0).collect();
    format!(
        r#"{{"name": "{name}", "unit": "GFLOP/s", "threads": 1, "value": {}, "samples": {wall:?},
            "cpu_value": {median}, "cpu_samples": {cpu:?}, "higher_is_better": true,
            "ref": "fma_peak_gflops", "ref_value": {reference}, "ratio": {}}}"#,
        median / 2.0,
        median / reference
    )
}

fn write_doc(dir: &Path, file: &str, cpu: &str, entries: &[String]) -> String {
    let doc = format!(
        r#"{{"schema": 1, "machine": {{"cpu": "{cpu}", "isa": "avx2", "load_avg_start": "1.00 1.00 1.00 1/100 1"}},
            "git": {{"commit": "0123456789abcdef", "dirty": false}}, "quick": true, "repeats": 3,
            "threads": 1, "references": {{"fma_peak_gflops": 40.0, "read_bw_gbs": 9.0}},
            "entries": [{}]}}"#,
        entries.join(",")
    );
    let path = dir.join(file);
    std::fs::write(&path, doc).unwrap();
    path.to_string_lossy().into_owned()
}

struct Pair {
    _dir: tempfile::TempDir,
    base: String,
    new: String,
}

/// A base with gemm at 36 GFLOP/s per CPU-second (35-37) and train at 100 (99-101), both against
/// a reference of 40; the new run's figures are given.
fn pair(gemm: &[f64], train: &[f64], new_reference: f64) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let base = write_doc(
        dir.path(),
        "base.json",
        "Test CPU",
        &[
            entry("gemm/nn/1x1x1", &[35.0, 36.0, 37.0], 40.0),
            entry("train/x", &[99.0, 100.0, 101.0], 40.0),
        ],
    );
    let new = write_doc(
        dir.path(),
        "new.json",
        "Test CPU",
        &[
            entry("gemm/nn/1x1x1", gemm, new_reference),
            entry("train/x", train, new_reference),
        ],
    );
    Pair {
        _dir: dir,
        base,
        new,
    }
}

/// The verdict column of `name`'s row.
fn verdict(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(6))
        .unwrap_or_else(|| panic!("no row for {name} in\n{stdout}"))
        .to_string()
}

#[test]
fn a_regression_beyond_the_tolerance_fails_the_comparison() {
    // gemm 10 % slower per CPU-second, below every base sample; the reference did not move.
    let p = pair(&[32.0, 32.4, 32.8], &[99.5, 100.0, 100.5], 40.0);
    let o = bench(&["compare", &p.base, &p.new]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert_eq!(verdict(&out, "gemm/nn/1x1x1"), "REGRESSED");
    assert_eq!(verdict(&out, "train/x"), "ok");
    assert!(out.contains("judged on the ratio"), "{out}");
    assert!(out.contains("1 REGRESSED"), "{out}");
    // --no-fail prints the same table and exits 0.
    let o = bench(&["compare", &p.base, &p.new, "--no-fail"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).0.contains("REGRESSED"));
    // A wider tolerance lets it pass.
    let o = bench(&["compare", &p.base, &p.new, "--tolerance", "15%"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).0);
}

#[test]
fn within_the_tolerance_or_the_spread_is_ok_and_faster_is_ok() {
    // gemm 3 % slower (within 5 %); train 8 % faster and above every base sample.
    let p = pair(&[34.5, 35.0, 35.5], &[107.0, 108.0, 109.0], 40.0);
    let o = bench(&["compare", &p.base, &p.new]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert_eq!(verdict(&out, "gemm/nn/1x1x1"), "ok");
    assert_eq!(verdict(&out, "train/x"), "faster");
}

#[test]
fn a_slower_machine_is_not_a_regression_of_the_code() {
    // Everything 20 % slower per CPU-second, the reference too (a lower clock): ratios unchanged.
    let p = pair(&[28.8, 28.8, 28.8], &[80.0, 80.0, 80.0], 32.0);
    let o = bench(&["compare", &p.base, &p.new]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).0);
    // Judged on the values it is one.
    let o = bench(&["compare", &p.base, &p.new, "--by", "value"]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("judged on the median value"), "{out}");
}

#[test]
fn missing_entries_and_other_machines_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let base = write_doc(
        dir.path(),
        "base.json",
        "Test CPU",
        &[
            entry("a", &[1.0, 1.0, 1.0], 1.0),
            entry("b", &[1.0, 1.0, 1.0], 1.0),
        ],
    );
    let new = write_doc(
        dir.path(),
        "new.json",
        "Other CPU",
        &[
            entry("a", &[1.0, 1.0, 1.0], 1.0),
            entry("c", &[1.0, 1.0, 1.0], 1.0),
        ],
    );
    let o = bench(&["compare", &base, &new]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert_eq!(verdict(&out, "b"), "missing");
    assert_eq!(verdict(&out, "c"), "added");
    assert!(err.contains("warning: the machines differ"), "{err}");
    assert!(err.contains("Other CPU"), "{err}");
}

#[test]
fn unreadable_documents_are_errors_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_doc(
        dir.path(),
        "good.json",
        "Test CPU",
        &[entry("a", &[1.0], 1.0)],
    );
    let write = |name: &str, body: &str| {
        let p: PathBuf = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_string_lossy().into_owned()
    };
    let cases = [
        (
            dir.path()
                .join("absent.json")
                .to_string_lossy()
                .into_owned(),
            "absent.json: cannot read",
        ),
        (
            write("trunc.json", "{\"schema\": 1,"),
            "trunc.json: not valid JSON",
        ),
        (
            write("v2.json", r#"{"schema": 2, "entries": []}"#),
            "v2.json: field `schema` is 2",
        ),
        (
            write(
                "novalue.json",
                r#"{"schema": 1, "entries": [{"name": "a", "unit": "GB/s"}]}"#,
            ),
            "novalue.json: field `entries[0].value`",
        ),
    ];
    for (path, message) in cases {
        let o = bench(&["compare", &good, &path]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{path}: {err}");
        assert!(err.contains(message), "expected {message:?} in {err}");
    }
    let o = bench(&["compare", &good, &good, "--tolerance", "lots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--tolerance \"lots\""));
}

#[test]
fn a_small_suite_run_is_a_document_compare_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let out = out.to_str().unwrap();
    let o = bench(&[
        "suite",
        "--quick",
        "--json",
        "--only",
        "tokenize,loader",
        "--repeats",
        "1",
        "--out",
        out,
    ]);
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        doc,
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(out).unwrap()).unwrap()
    );
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["quick"], true);
    assert!(doc["machine"]["isa"].is_string() && doc["machine"]["cores"].is_u64());
    assert!(doc["references"]["fma_peak_gflops"].as_f64().unwrap() > 0.0);
    let names: Vec<&str> = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["tokenize/gpt2/plays8", "loader/B8_T256_shards4x4Mi"]
    );
    for e in doc["entries"].as_array().unwrap() {
        assert_eq!(e["samples"].as_array().unwrap().len(), 1);
        assert!(e["ratio"].as_f64().unwrap() > 0.0, "{e}");
        assert!(e["higher_is_better"].as_bool().unwrap());
    }
    // A run compared with itself: every entry ok.
    let o = bench(&["compare", out, out]);
    let (table, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{table}\n{err}");
    assert!(table.contains("2 entries: 2 ok"), "{table}");
    // An unknown group is refused.
    let o = bench(&["suite", "--only", "gemmm"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("the groups are gemm"));
}
