#!/usr/bin/env bash
# Every test cllm has: the workspace once in debug (overflow and debug assertions on), then the
# kernel tests in release once per kernel path this CPU has (CLLM_ISA), then the hwloc topology
# reader when libhwloc is installed (`.ci/run` installs it).
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
