//! `cllm-bench`'s command line: what it does with a closed output pipe.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
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
