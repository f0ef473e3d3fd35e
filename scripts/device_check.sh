#!/usr/bin/env bash
# The checks that need a many-core x86-64 host (issues 2, 3, 4, 6: AVX-512 paths, scaling to 16
# threads), as one short run from binaries built here, for the lent machine that has no toolchain.
#
#   scripts/device_check.sh prepare            # here: release build, stripped copies in .device/
#   scripts/device_check.sh run [SECTION...]   # there, with .device carried: $OUT/device.log
#
# `run` works on any machine with the binaries (it caps the thread counts at the cores it finds),
# so try it here first: on a 2-core machine it takes about 3 minutes, peers included; on the
# 16-core host it took 2 to 3. Then, there:
#   run(command="scripts/device_check.sh run", carry=[".device"], timeout_s=540)
# $OUT/device.log comes back even if the run is cut short. The peers run with python3 (the lent
# machine's has numpy and PyTorch); elsewhere PYTHON names one that has them.
set -euo pipefail
cd "$(dirname "$0")/.."
D=.device

prepare() {
    rm -rf "$D" && mkdir -p "$D/tests"
    cargo build --release --locked -p cllm-tools
    cp target/release/cllm-bench "$D/"
    # The PyTorch peer lives beside the checkout, which does not travel.
    cp ../shared/peers/torch_gpt_bench.py "$D/"
    # The kernel test binaries, one per test target, as cargo reports them.
    cargo test --release --locked --no-run -p cllm-kernels --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])' |
        while read -r exe; do cp "$exe" "$D/tests/$(basename "$exe" | sed 's/-[0-9a-f]*$//')"; done
    strip "$D/cllm-bench" "$D"/tests/*
    du -sh "$D"
}

# Each section, in the order `run` takes them; `run SECTION...` runs only those (after machine).
SECTIONS="tests cores gemm pinning barriers train decode numpy torch"

stamp() { echo "### $1 $(date -u +%FT%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"; }

machine() {
    stamp machine
    grep -m1 'model name' /proc/cpuinfo
    echo "cores: $cores; flags: $(grep -m1 -o -w -E 'avx512f|avx512vl|avx2|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    lscpu 2>/dev/null |
        grep -E '^(Model name|Socket|Core|Thread|NUMA|L1d|L2|L3|CPU max MHz)' || true
    "$B" isa
    "$B" topology
    "$B" peak
}

tests() {
    stamp "kernel tests on every path this CPU has"
    for isa in scalar portable avx2 avx512; do
        if ! CLLM_ISA=$isa "$B" isa >/dev/null 2>&1; then
            echo "CLLM_ISA=$isa: not on this CPU"
            continue
        fi
        for t in "$D"/tests/*; do
            printf '%-8s %-14s ' "$isa" "$(basename "$t")"
            CLLM_ISA=$isa "$t" -q 2>&1 | grep -E '^test result' || echo FAILED
        done
    done
}

gemm() {
    stamp "GEMM scaling (issue 3), each beside the FMA peak of as many cores busy at once"
    for n in $threads; do
        [ "$n" -gt 1 ] && "$B" peak --threads "$n"
        "$B" gemm --threads "$n" --shape 4096x768x3072 --shape 4096x3072x768 --reps 3
    done
}

cores() {
    stamp "one single-thread job per core, all at once and unsynchronised, beside one alone"
    command -v taskset >/dev/null || { echo "no taskset here"; return 0; }
    local dir c job key pids
    dir=$(mktemp -d)
    # What each job reports, in its --json line.
    for job in "peak:peak_gflops" "gemm --threads 1 --shape 4096x768x3072 --reps 10:gflops" \
        "train --threads 1 --batch 1 --steps 3:tokens_per_s"; do
        key=${job##*:}
        job=${job%:*}
        # shellcheck disable=SC2086 # the job's words are its arguments
        taskset -c 0 "$B" $job --json >"$dir/alone"
        pids=()
        for c in $(seq 0 $((cores - 1))); do
            # shellcheck disable=SC2086
            taskset -c "$c" "$B" $job --json >"$dir/$c" &
            pids+=($!)
        done
        # Only these: a bare `wait` would also wait for the log's tee.
        wait "${pids[@]}"
        for c in alone $(seq 0 $((cores - 1))); do
            grep -o "\"$key\":[0-9.]*" "$dir/$c" | cut -d: -f2
        done | awk -v job="$job" -v key="$key" '
            NR == 1 { alone = $1; next }
            { n++; sum += $1; min = n == 1 || $1 < min ? $1 : min; max = $1 > max ? $1 : max }
            END { printf "%s (%s): alone %.1f; %d at once: sum %.1f = %.2fx alone, ",
                         job, key, alone, n, sum, sum / alone
                  printf "each %.1f-%.1f\n", min, max }'
    done
    rm -rf "$dir"
}

pinning() {
    stamp "the workers' threads and the CPUs they run on (ps -L -o psr), under a GEMM on every core"
    command -v ps >/dev/null || { echo "no ps here"; return 0; }
    "$B" gemm --threads "$cores" --shape 4096x768x3072 --reps 300 >/dev/null &
    local pid=$! i
    # Wait until every worker is up (the process's own thread plus one per core), then sample twice.
    for i in $(seq 50); do
        [ "$(ps -L -o tid= -p "$pid" | wc -l)" -gt "$cores" ] && break
        sleep 0.2
    done
    for i in 1 2; do
        sleep 0.5
        ps -L -o tid=,psr=,pcpu=,comm= -p "$pid" | sort -k4 | tr '\n' ';'
        echo
    done
    wait "$pid"
}

barriers() {
    stamp "barrier and reduction"
    for n in $threads; do
        "$B" barrier --threads "$n"
        "$B" reduce --threads "$n"
    done
}

train() {
    stamp "training scaling (issue 4)"
    # The batch's rows are split over the workers: B = 8 rounded up to a multiple of them.
    batch() { echo $(((8 + $1 - 1) / $1 * $1)); }
    for n in $threads; do
        "$B" train --threads "$n" --steps 3 --batch "$(batch "$n")"
    done
    "$B" train --threads 1 --steps 2 --vocab 50257
    "$B" train --threads "$cores" --steps 3 --vocab 50257 --batch "$(batch "$cores")"
}

decode() {
    stamp "decode against the bandwidth bound (issue 6)"
    for n in $threads; do
        "$B" decode --threads "$n" --new-tokens 64
    done
    "$B" decode --threads "$cores" --batch 8 --new-tokens 64
}

# Peers last, so that a run cut short still has every figure of ours.
numpy() {
    "$py" -c 'import numpy' 2>/dev/null || return 0
    stamp "numpy beside the GEMM"
    # One thread: every GPT shape and layout of issue 2; all cores: the scaling shapes.
    # One round each (the script's default is three), to keep the run inside its time limit.
    "$py" scripts/peers/gemm_vs_numpy.py --bench "$B" --threads 1 --reps 3 --rounds 1
    "$py" scripts/peers/gemm_vs_numpy.py --bench "$B" --threads "$cores" --layouts nn \
        --shape 4096x768x3072 --shape 4096x3072x768 --reps 3 --rounds 1
}

torch() {
    "$py" -c 'import torch' 2>/dev/null || return 0
    stamp "PyTorch beside training and decoding"
    for n in 1 "$cores"; do
        "$py" "$D/torch_gpt_bench.py" train "$n" 65 4
    done
    # One thread at V=50257 is the issue's own figure (PyTorch 5.4× from 1 to 16 threads).
    "$py" "$D/torch_gpt_bench.py" train "$cores" 50257 3
    "$py" "$D/torch_gpt_bench.py" gen "$cores"
    for n in 1 "$cores"; do
        "$py" "$D/torch_gpt_bench.py" mm "$n"
    done
}

run() {
    set +e
    local out=${OUT:-$D/out}
    mkdir -p "$out"
    exec > >(tee "$out/device.log") 2>&1
    B="$D/cllm-bench"
    py=${PYTHON:-python3}
    cores=$(nproc)
    threads=""
    for n in 1 2 4 8 16; do [ "$n" -le "$cores" ] && threads="$threads $n"; done
    machine
    for section in ${*:-$SECTIONS}; do
        case " $SECTIONS " in
        *" $section "*) "$section" ;;
        *) echo "no section $section (sections: $SECTIONS)" ;;
        esac
    done
    stamp end
}

case "${1:-}" in
prepare) prepare ;;
run)
    shift
    run "$@"
    ;;
*)
    echo "usage: $0 prepare | run [SECTION...]" >&2
    exit 2
    ;;
esac
