#!/usr/bin/env bash
# Every test cllm has: the workspace once in debug (overflow and debug assertions on), then the
# kernel tests in release once per kernel path this CPU has (CLLM_ISA; the AVX-512 path emulated
# where the CPU lacks it), then the hwloc topology reader when libhwloc is installed (`.ci/run`
# installs it), then the quick benchmark suite.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== workspace tests (debug, best kernel path)"
cargo test --workspace --locked

paths=$(cargo run -q --release --locked -p cllm-tools --bin cllm-bench -- isa --available)
for isa in $paths; do
    echo "== kernel tests, CLLM_ISA=$isa (release)"
    CLLM_ISA=$isa cargo test --release --locked -p cllm-kernels
done
case " $paths " in
    *" avx512 "*) ;;
    *)
        # No AVX-512 here: run the AVX-512 path's kernels (16 lanes, its tiles) on the emulated
        # token instead (kernels/src/simd/emulated.rs), so their logic is tested on any machine,
        # alone and inside the engine (the model against the golden values, decoding, training).
        echo "== kernel and engine tests, CLLM_ISA=avx512 emulated (release)"
        CLLM_ISA=avx512 cargo test --release --locked -p cllm-kernels --features emulate-avx512
        CLLM_ISA=avx512 cargo test --release --locked -p cllm-engine \
            --features cllm-kernels/emulate-avx512
        ;;
esac

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
# Against the baseline of this machine kind (docs/REGRESSIONS.md); compare warns if they differ.
case "$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null)" in
    *Xeon*) baseline=benches/baseline/xeon-spr-2vcpu-quick.json ;;
    *) baseline=benches/baseline/zen1-2vcpu-quick.json ;;
esac
cargo run -q --release --locked -p cllm-tools --bin cllm-bench -- compare \
    "$baseline" target/suite-quick.json --no-fail
