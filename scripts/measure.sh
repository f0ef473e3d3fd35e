#!/usr/bin/env bash
# The figures of docs/PERFORMANCE.md, each beside its peer, back to back in one run.
# Needs: numpy (pip), PyTorch in the Python named by TORCH_PYTHON (see ../shared/peers/README.md), and
# llama.cpp's llama-bench with GPT-2 GGUFs built by scripts/peers/llama_cpp_bench.sh in LLAMA_DIR
# (skipped when absent).
#   cargo build --release -p cllm-tools && TORCH_PYTHON=/tmp/torchenv/bin/python scripts/measure.sh | tee measure.log
set -u
cd "$(dirname "$0")/.."
B=target/release/cllm-bench
P=${TORCH_PYTHON:-python3}
PEER=../shared/peers/torch_gpt_bench.py
stamp() { echo "### $1 $(date -u +%FT%H:%M) load $(cut -d' ' -f1-3 /proc/loadavg)"; }
stamp machine
$B peak
$B peak
stamp gemm
python3 scripts/peers/gemm_vs_numpy.py --threads 1 --layouts nn,nt,tn --reps 5
python3 scripts/peers/gemm_vs_numpy.py --threads 2 --layouts nn,nt,tn --reps 5
$B gemm --threads 1 --shape 4096x768x3072 --shape 4096x3072x768 --shape 1024x1024x1024
$B gemm --threads 2 --shape 4096x768x3072 --shape 4096x3072x768 --shape 1024x1024x1024
$B gemm --threads 1 --shape 4096x768x50304 --reps 3
stamp train
$B train --threads 1 --steps 4
$P $PEER train 1 65 6
$B train --threads 2 --steps 4
$P $PEER train 2 65 6
$B train --threads 2 --steps 3 --vocab 50257
$P $PEER train 2 50257 5
stamp data
$B tokenize --input ../shared/corpora/shakespeare
$B tokenize --input ../shared/corpora/shakespeare --threads 2
$B loader
$B reduce --threads 2
$B barrier --threads 2
stamp decode
$B decode --threads 1
$B decode --threads 2
$B decode --threads 2 --batch 8
$P $PEER gen 2
if [ -x "${LLAMA_DIR:-/tmp/llama}/build/bin/llama-bench" ]; then
    SKIP_BUILD=1 LLAMA_DIR=${LLAMA_DIR:-/tmp/llama} scripts/peers/llama_cpp_bench.sh
fi
stamp end
