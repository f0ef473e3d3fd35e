#!/usr/bin/env bash
# Every test cllm has: the workspace once in debug (overflow and debug assertions on), then the
# kernel tests in release once per kernel path this CPU has (CLLM_ISA), then the hwloc topology
# reader when libhwloc is installed (`.ci/run` installs it), then the quick benchmark suite.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== workspace tests (debug, best kernel path)"
cargo test --workspace --locked

paths=$(cargo run -q --release --locked -p cllm-tools --bin cllm-bench -- isa --available)
for isa in $paths; do
    echo "== kernel tests, CLLM_ISA=$isa (release)"
    CLLM_ISA=$isa cargo test --release --locked -p cllm-kernels
done

if pkg-config --exists hwloc 2>/dev/null; then
    echo "== engine tests with the hwloc topology reader"
    cargo test --locked -p cllm-engine --features hwloc
else
    echo "== skipping the hwloc reader tests: libhwloc-dev is not installed (.ci/run installs it)"
fi

echo "== benches compile"
cargo bench --locked --workspace --no-run

# The quick benchmark suite in release and a comparison with the committed baseline: proves both
# work on every change; --no-fail, since times depend on the machine CI gets (docs/REGRESSIONS.md).
echo "== benchmark suite (quick) and compare with the baseline"
cargo run -q --release --locked -p cllm-tools --bin cllm-bench -- suite --quick --json \
    --out target/suite-quick.json >/dev/null
cargo run -q --release --locked -p cllm-tools --bin cllm-bench -- compare \
    benches/baseline/zen1-2vcpu-quick.json target/suite-quick.json --no-fail
