//! `cllm-bench`'s command line: what it does with a closed output pipe, and how it refuses
//! sizes and counts that mean nothing or cannot fit, before doing any work.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// `cllm-bench topology | head -0`: the reader leaves before the first line. The run ends
/// quietly (killed by SIGPIPE, as other command-line tools are; or done, if it printed
/// everything into the pipe first), never with a panic.
#[test]
fn a_closed_output_pipe_ends_the_run_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cllm-bench"))
        .args(["topology"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cllm-bench runs");
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status:?}: {stderr}"
    );
}

/// Runs `cllm-bench ARGS` in `dir` (the crate's directory when `None`) with `TMPDIR` set to
/// `tmp` when given; its success, stdout and stderr.
fn bench_in(args: &[&str], dir: Option<&Path>, tmp: Option<&Path>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cllm-bench"));
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    if let Some(t) = tmp {
        cmd.env("TMPDIR", t);
    }
    let out = cmd.output().expect("cllm-bench runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn bench(args: &[&str]) -> (bool, String, String) {
    bench_in(args, None, None)
}

/// Runs `cllm-bench ARGS`, which must fail with a message holding every one of `want`.
fn refused(args: &[&str], want: &[&str]) -> String {
    let (ok, stdout, stderr) = bench(args);
    assert!(!ok, "{args:?} succeeded: {stdout}");
    for w in want {
        assert!(stderr.contains(w), "{args:?}: no {w:?} in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    stderr
}

#[test]
fn zero_sizes_and_counts_are_refused_naming_the_flag() {
    for shape in ["0x5x5", "5x0x5", "5x5x0"] {
        refused(
            &["gemm", "--shape", shape, "--threads", "1"],
            &[shape, "every size must be at least 1"],
        );
    }
    let cases: &[&[&str]] = &[
        &["reduce", "--floats", "0"],
        &["reduce", "--reps", "0"],
        &["loader", "--batches", "0"],
        &["loader", "--batch", "0"],
        &["loader", "--seq", "0"],
        &["decode", "--batch", "0"],
        &["decode", "--prompt", "0"],
        &["decode", "--new-tokens", "0"],
        &["tokenize", "--passes", "0"],
        &["train", "--steps", "0"],
        &["train", "--batch", "0"],
        &["peak", "--threads", "0"],
    ];
    for args in cases {
        refused(args, &[args[1], "at least 1"]);
    }
}

#[test]
fn a_zero_model_size_is_a_plain_message_naming_the_flag() {
    for flag in ["--embd", "--vocab", "--seq", "--layers", "--heads"] {
        let e = refused(&["train", flag, "0"], &[flag, "at least 1"]);
        assert!(!e.contains("GptConfig"), "{e}");
    }
    refused(
        &["train", "--embd", "10", "--heads", "3"],
        &["--embd 10 does not divide by --heads 3"],
    );
}

#[test]
fn sizes_that_cannot_fit_in_memory_are_refused_before_allocating() {
    refused(
        &["reduce", "--floats", "100000000000000", "--threads", "1"],
        &[
            "--floats 100000000000000",
            "more than this machine's",
            "smaller --floats",
        ],
    );
    refused(
        &[
            "decode",
            "--prompt",
            "2",
            "--new-tokens",
            "2",
            "--batch",
            "100000000",
        ],
        &[
            "--batch 100000000",
            "more than this machine's",
            "smaller --batch",
        ],
    );
    refused(
        &["decode", "--prompt", "1000", "--new-tokens", "100"],
        &[
            "--prompt 1000 + --new-tokens 100 = 1100 tokens",
            "1024 positions",
        ],
    );
    // The loader's temporary directory is not left behind.
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "loader",
        "--batch",
        "1000000",
        "--seq",
        "1000000",
        "--batches",
        "1",
    ];
    let (ok, _, stderr) = bench_in(&args, None, Some(tmp.path()));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("--batch 1000000 x --seq 1000000") && stderr.contains("more than"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn one_barrier_worker_is_singular() {
    let (ok, stdout, stderr) = bench(&["barrier", "--threads", "1", "--iters", "10"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("barrier round trip, 1 worker: "),
        "{stdout}"
    );
}

/// `peak --threads N` probes the workers all at once: the document gives the workers that ran
/// (capped at the allowed CPUs), the peak per core and its sum over them.
#[test]
fn the_parallel_peak_is_summed_over_the_workers_that_ran() {
    let (ok, stdout, stderr) = bench(&["peak", "--threads", "100000", "--json"]);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let threads = doc["threads"].as_f64().unwrap();
    assert!((1.0..100000.0).contains(&threads), "{doc}");
    let (per_core, all) = (
        doc["peak_gflops"].as_f64().unwrap(),
        doc["all_peak_gflops"].as_f64().unwrap(),
    );
    assert!(
        per_core > 0.0 && doc["read_gbs"].as_f64().unwrap() > 0.0,
        "{doc}"
    );
    assert!((all - per_core * threads).abs() <= 0.01 * threads, "{doc}");
}

/// `peak` on one thread also times the GEMM microkernel alone, in L1 and as blocked, on the
/// active path's tile.
#[test]
fn the_one_thread_peak_times_the_gemm_microkernel() {
    let (ok, stdout, stderr) = bench(&["peak", "--json"]);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let b = cllm_kernels::gemm::active_blocking();
    assert_eq!(doc["tile"], format!("{}x{}", b.mr, b.nr), "{doc}");
    for key in ["microkernel_l1_gflops", "microkernel_blocked_gflops"] {
        assert!(doc[key].as_f64().unwrap() > 0.0, "{key}: {doc}");
    }
}

#[test]
fn tokenize_without_input_away_from_the_repository_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = bench_in(&["tokenize", "--passes", "1"], Some(dir.path()), None);
    assert!(!ok);
    assert!(
        stderr.contains("../shared/corpora/shakespeare") && stderr.contains("pass --input"),
        "{stderr}"
    );
}

/// `suite --threads` beyond the allowed CPUs: the pools are capped (with a warning), and the
/// document records the workers that ran, not the count asked for.
#[test]
fn the_suite_records_the_workers_it_ran_on() {
    let (ok, stdout, stderr) = bench(&[
        "suite",
        "--quick",
        "--only",
        "tokenize",
        "--repeats",
        "1",
        "--threads",
        "100000",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("100000 threads asked for"), "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let threads = doc["threads"].as_u64().unwrap();
    assert!((1..100000).contains(&threads), "threads {threads}");
    for e in doc["entries"].as_array().unwrap() {
        assert_eq!(e["threads"].as_u64(), Some(threads), "{e}");
    }
}
