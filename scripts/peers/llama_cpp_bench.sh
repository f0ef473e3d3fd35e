#!/usr/bin/env bash
# llama.cpp, the reference CPU inference engine, as the decode/prefill peer of `cllm-bench decode`:
# llama-bench pp128 and tg128 on a random-weight GPT-2 124M (f32 and f16 GGUF), 1 and 2 threads.
# Measurement only: llama.cpp is built and run outside the repo, none of its code enters it.
#
# From scratch (needs PyPI; the compile took 35 min on 2 cores shared with other builds, 16 CPU-min):
#   scripts/peers/llama_cpp_bench.sh
# Again, reusing the binaries and GGUF files already in $LLAMA_DIR (no pip, no compiling):
#   LLAMA_DIR=/tmp/llama SKIP_BUILD=1 scripts/peers/llama_cpp_bench.sh
#
# Environment:
#   LLAMA_DIR      work dir for the venv, the source, the build, the model and the results (/tmp/llama)
#   PYTHON         a Python with torch, transformers, safetensors, numpy, pyyaml, tqdm, requests to
#                  reuse instead of installing them into $LLAMA_DIR/venv
#   LLAMA_CPP_PYTHON_VERSION  the llama-cpp-python source package that vendors llama.cpp (0.3.36)
#   TORCH_INDEX    where the venv's torch comes from (https://download.pytorch.org/whl/cpu, else PyPI)
#   GPT2_BPE       dir with GPT-2's encoder.json and vocab.bpe (the repo's ../shared/gpt2)
#   SKIP_BUILD=1   skip pip and cmake; the built llama-bench must already be in $LLAMA_DIR/build
#   JOBS           parallel compile jobs (2); the compiler runs under `nice -n 10`
#   THREADS        llama-bench -t list (1,2)    REPS  llama-bench -r (5)    TYPES  GGUF types (f32 f16)
#   BENCH_ARGS     more llama-bench options, word-split (none: its defaults)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LLAMA_DIR=${LLAMA_DIR:-/tmp/llama}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
GPT2_BPE=${GPT2_BPE:-$ROOT/../shared/gpt2}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
SKIP_BUILD=${SKIP_BUILD:-0}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1,2}
REPS=${REPS:-5}
TYPES=${TYPES:-f32 f16}

SRC=$LLAMA_DIR/llama_cpp_python-$VERSION/vendor/llama.cpp
BUILD=$LLAMA_DIR/build
BENCH=$BUILD/bin/llama-bench
HF=$LLAMA_DIR/gpt2-124m-random
VENV=$LLAMA_DIR/venv
mkdir -p "$LLAMA_DIR"
log() { echo "### $* ($(date -u +%FT%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }

# Python for the model and the conversion: $PYTHON, or a venv with CPU torch made here.
if [ -z "${PYTHON:-}" ]; then
    PYTHON=$VENV/bin/python
    if [ "$SKIP_BUILD" != 1 ] && ! "$PYTHON" -c 'import torch, transformers' 2>/dev/null; then
        log "venv $VENV"
        python3 -m venv "$VENV"
        # CPU wheels of torch where PyTorch's index is reachable; PyPI's Linux torch also works but
        # pulls several GB of CUDA libraries.
        "$VENV/bin/pip" install -q --retries 1 --timeout 20 torch --index-url "$TORCH_INDEX" ||
            "$VENV/bin/pip" install -q torch
        # convert_hf_to_gguf.py and its vendored gguf-py (requirements/requirements-convert_*.txt).
        "$VENV/bin/pip" install -q cmake transformers safetensors numpy pyyaml tqdm requests \
            sentencepiece 'protobuf>=4.21,<5'
    fi
fi

if [ "$SKIP_BUILD" != 1 ]; then
    # cmake from PATH when there is one, else the pip wheel in the venv.
    CMAKE=$(command -v cmake || true)
    if [ -z "$CMAKE" ]; then
        [ -x "$VENV/bin/cmake" ] || { [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"; "$VENV/bin/pip" install -q cmake; }
        CMAKE=$VENV/bin/cmake
    fi
    if [ ! -d "$SRC" ]; then
        log "download llama-cpp-python $VERSION (source)"
        # --no-binary on this package only: with :all: pip would also compile its build backend's
        # dependencies (cmake itself) from source just to read the package metadata.
        "$PYTHON" -m pip download "llama-cpp-python==$VERSION" --no-binary llama-cpp-python --no-deps \
            -d "$LLAMA_DIR/dl"
        tar xzf "$LLAMA_DIR/dl/llama_cpp_python-$VERSION.tar.gz" -C "$LLAMA_DIR"
    fi
    log "cmake llama-bench (CPU, Release, native)"
    "$CMAKE" -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON >"$LLAMA_DIR/cmake.log"
    nice -n 10 "$CMAKE" --build "$BUILD" --target llama-bench -j "$JOBS" >"$LLAMA_DIR/build.log"
fi
[ -x "$BENCH" ] || { echo "no $BENCH: run once without SKIP_BUILD=1" >&2; exit 1; }

# Random-weight GPT-2 124M (GPT2Config defaults: V=50257, T=1024, C=768, L=12, H=12), seed 0, with
# GPT-2's own BPE tokenizer (convert_hf_to_gguf.py recognises its pre-tokenizer by a hash).
if [ ! -f "$HF/model.safetensors" ]; then
    [ -f "$GPT2_BPE/encoder.json" ] && [ -f "$GPT2_BPE/vocab.bpe" ] ||
        { echo "no encoder.json and vocab.bpe in $GPT2_BPE: set GPT2_BPE" >&2; exit 1; }
    log "random GPT-2 124M -> $HF"
    "$PYTHON" - "$HF" "$GPT2_BPE" <<'EOF'
import json, shutil, sys, torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
out, bpe = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).save_pretrained(out)
# OpenAI's encoder.json and vocab.bpe are Hugging Face's vocab.json and merges.txt.
shutil.copyfile(f"{bpe}/encoder.json", f"{out}/vocab.json")
shutil.copyfile(f"{bpe}/vocab.bpe", f"{out}/merges.txt")
GPT2TokenizerFast.from_pretrained(out).save_pretrained(out)
with open(f"{out}/config.json") as f:
    cfg = json.load(f)
cfg["n_ctx"] = 1024  # convert_hf_to_gguf.py reads the context length from n_ctx
with open(f"{out}/config.json", "w") as f:
    json.dump(cfg, f, indent=2)
EOF
fi
MODELS=()
for t in $TYPES; do
    g=$LLAMA_DIR/gpt2-124m-$t.gguf
    if [ ! -f "$g" ]; then
        log "convert $t -> $g"
        "$PYTHON" "$SRC/convert_hf_to_gguf.py" "$HF" --outtype "$t" --outfile "$g" >"$LLAMA_DIR/convert-$t.log" 2>&1 ||
            { tail -20 "$LLAMA_DIR/convert-$t.log" >&2; exit 1; }
    fi
    MODELS+=(-m "$g")
done

OUT=$LLAMA_DIR/bench-$(date -u +%Y%m%dT%H%M%S).json
log "llama-bench -p 128 -n 128 -t $THREADS -r $REPS ${BENCH_ARGS:-}"
# shellcheck disable=SC2086 # BENCH_ARGS is a list of options
"$BENCH" "${MODELS[@]}" -p 128 -n 128 -t "$THREADS" -r "$REPS" ${BENCH_ARGS:-} -o json >"$OUT"
log "done, raw results in $OUT"
COMMIT=$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)
python3 - "$OUT" "$VERSION" "$COMMIT" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))
r0 = rows[0]
print(f"llama.cpp {sys.argv[3]} (vendored by llama-cpp-python {sys.argv[2]}), {r0['backends']} on "
      f"{r0['cpu_info']}; n_batch {r0['n_batch']}, n_ubatch {r0['n_ubatch']}, KV {r0['type_k']}, "
      f"flash_attn {r0['flash_attn']}, poll {r0['poll']}; mean ± sd of {len(r0['samples_ts'])} runs")
res = {}
for r in rows:
    test = "pp" if r["n_gen"] == 0 else "tg"
    n = r["n_prompt"] if test == "pp" else r["n_gen"]
    res.setdefault((r["model_type"], r["n_threads"]), {})[f"{test}{n}"] = (r["avg_ts"], r["stddev_ts"])
print(f"| {'model':<24} | threads | {'pp128 tok/s':>15} | {'tg128 tok/s':>15} |")
print(f"|{'-' * 26}|---------|{'-' * 17}|{'-' * 17}|")
fmt = lambda v: f"{v[0]:8.1f} ± {v[1]:4.1f}" if v else "-"
for (model, threads), v in res.items():
    print(f"| {model:<24} | {threads:>7} | {fmt(v.get('pp128')):>15} | {fmt(v.get('tg128')):>15} |")
EOF
