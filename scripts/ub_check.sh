#!/usr/bin/env bash
# Developer check for undefined behaviour and data races in the unsafe code: Miri on the kernels
# (the emulated AVX-512 path, the widest vectors and tiles; with --avx2 the AVX2 path too), on
# the sphere workers, the parallel GEMM and the decoder; ThreadSanitizer on the engine's
# threaded tests.
#
# Needs the nightly toolchain with Miri and the standard library's source:
#     rustup toolchain install nightly --component miri rust-src
# A developer check, not part of CI (.ci/run, scripts/test.sh), which has only stable Rust.
#
# Miri interprets about a thousand times slower than native code: the tests shrink their size
# lists under cfg(miri) (kernels/tests/common/mod.rs and each test file); normal builds run the
# full lists. About 20 minutes on 2 busy cores; the kernel tests on the emulated AVX-512 path are
# half of it.
#
# Usage: scripts/ub_check.sh [--avx2] [KERNEL_TEST...]
#   --avx2           also run the kernel tests on the AVX2 path (about 10 minutes more)
#   KERNEL_TEST...   kernel test files to run besides the unit tests (default: the list below;
#                    gemv and gemm take 5 to 15 minutes each and can be named)
set -euo pipefail
cd "$(dirname "$0")/.."

avx2=false
if [[ "${1:-}" == "--avx2" ]]; then
    avx2=true
    shift
fi
kernel_tests=("$@")
if [[ ${#kernel_tests[@]} -eq 0 ]]; then
    kernel_tests=(residual gelu bias embedding layernorm adamw loss kv_attention attention)
fi
selection=(--lib)
for t in "${kernel_tests[@]}"; do
    selection+=(--test "$t")
done

# Reads of sysfs and /proc fail quietly under isolation, and the code falls back (the default
# cache sizes, one allowed CPU). cargo-miri replays the environment a test binary was built
# with, so CLLM_ISA goes in through -Zmiri-env-set.
miri_base="-Zmiri-isolation-error=hide"

echo "== Miri: kernel tests, CLLM_ISA=avx512 (emulated)"
MIRIFLAGS="$miri_base -Zmiri-env-set=CLLM_ISA=avx512" \
    cargo +nightly miri test -q -p cllm-kernels --features emulate-avx512 "${selection[@]}"

# Miri reports as detected only the target features enabled at compile time, so this path is
# built with them, in its own target directory so as not to rebuild the others' each time.
if $avx2; then
    echo "== Miri: kernel tests, CLLM_ISA=avx2"
    RUSTFLAGS="-C target-feature=+avx2,+fma" CARGO_TARGET_DIR=target/miri-avx2 \
        MIRIFLAGS="$miri_base -Zmiri-env-set=CLLM_ISA=avx2" \
        cargo +nightly miri test -q -p cllm-kernels "${selection[@]}"
fi

# The sphere workers (jobs, barrier, parallel-for, reduction, panics), and the parallel GEMM's
# and the decoder's accesses through shared pointers, under Miri's data-race detector and its
# weak-memory emulation (which needs every access to the pool's sleep flags SeqCst: see
# engine/src/spheres/README.md). Skipped: the tests that read the kernel's view of the threads
# (/proc).
engine_flags="$miri_base"
echo "== Miri: sphere workers"
MIRIFLAGS="$engine_flags" cargo +nightly miri test -q -p cllm-engine --test spheres -- \
    --skip idle_workers_park_and_use_no_cpu \
    --skip workers_are_pinned_and_named_in_the_kernel \
    --skip drop_joins_every_worker
echo "== Miri: parallel GEMM and the decoder's shared buffers"
MIRIFLAGS="$engine_flags" cargo +nightly miri test -q -p cllm-engine --lib -- \
    par_gemm::tests::small_grids_of_both_piece_kinds_match_sgemm \
    par_gemm::tests::row_splits_sharing_packed_b_match_sgemm \
    generate::decoder::tests::two_workers_give_the_calling_threads_logits_on_a_tiny_model

# ThreadSanitizer on every test that runs work on several workers. The standard library is
# rebuilt with the sanitizer (-Zbuild-std), so the target must be named.
echo "== ThreadSanitizer: sphere workers, parallel GEMM, decoding, training"
RUSTFLAGS="-Zsanitizer=thread" cargo +nightly test -q -Zbuild-std \
    --target x86_64-unknown-linux-gnu -p cllm-engine \
    --test spheres --test par_gemm --test generate --test train
