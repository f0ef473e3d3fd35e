#!/usr/bin/env python3
"""Perplexity of a GPT-2 model over llm.c token shards with Hugging Face transformers, by the
same windows as `cllm-eval ppl`, to check cllm's number against the reference implementation.

    pip install torch transformers
    python3 scripts/peers/hf_ppl.py --model DIR --data 'data/val_*.bin' [--seq T] [--stride S]
    python3 scripts/peers/hf_ppl.py --model DIR --data GLOB --compare target/release/cllm-eval

DIR is anything `GPT2LMHeadModel.from_pretrained` loads: a Hugging Face GPT-2 directory or a cllm
checkpoint (config.json + model.safetensors). Each shard is one token stream. A stream of N tokens
has N - 1 predicted tokens; windows of T inputs end at T, T + S, T + 2S, ... (the last one at N - 1,
moved back to keep T tokens), and each window scores only the targets the one before did not, so
every target is scored once (cllm's engine/src/eval/perplexity.rs). A stream shorter than T + 1
tokens is one window of N - 1. The losses are the log-softmax of the logits in float64.

Prints JSON: ppl, nll (mean nats per predicted token), tokens, total_nll, seq, stride, dtype.
With --compare BIN it also runs `BIN ppl` on the same model, shards, T and S, prints both and the
relative differences of nll and ppl, and exits 1 when either exceeds --tolerance (1e-4).
"""
import argparse
import glob
import json
import math
import subprocess
import sys

import numpy as np
import torch
from transformers import GPT2LMHeadModel
from transformers.utils import logging as hf_logging

HEADER_INTS = 256
FORMATS = {(20240520, 1): np.uint16, (20240801, 7): np.uint32}


def read_shard(path):
    """The tokens of an llm.c shard: a 256 x int32 header (magic, version, count), then tokens."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_INTS * 4), dtype="<i4")
        if len(header) != HEADER_INTS:
            sys.exit(f"{path}: shorter than the 1024-byte header")
        magic, version, count = int(header[0]), int(header[1]), int(header[2])
        dtype = FORMATS.get((magic, version))
        if dtype is None:
            sys.exit(f"{path}: magic {magic} version {version} is not an llm.c token shard")
        tokens = np.frombuffer(f.read(), dtype=np.dtype(dtype).newbyteorder("<"))
    if len(tokens) != count:
        sys.exit(f"{path}: header says {count} tokens, file holds {len(tokens)}")
    return tokens.astype(np.int64)


def windows(n, seq, stride):
    """(begin, end, first): inputs [begin, end), targets from index `first` scored (cllm's rule)."""
    if n < 2:
        return
    if n - 1 < seq:
        seq = stride = n - 1
    scored_to, end = 0, seq
    while True:
        end_c = min(end, n - 1)
        begin = end_c - seq
        yield begin, end_c, max(scored_to, begin)
        scored_to = end_c
        if end_c == n - 1:
            return
        end += stride


@torch.no_grad()
def perplexity(model, streams, seq, stride, vocab):
    total, count = 0.0, 0
    for path, stream in streams:
        if len(stream) and int(stream.max()) >= vocab:
            sys.exit(f"{path}: token {int(stream.max())} is outside the model's vocabulary of {vocab}")
        for begin, end, first in windows(len(stream), seq, stride):
            x = torch.from_numpy(stream[begin:end]).unsqueeze(0)
            y = torch.from_numpy(stream[begin + 1 : end + 1])
            logits = model(input_ids=x).logits[0].double()
            nll = -torch.log_softmax(logits, dim=-1).gather(1, y.unsqueeze(1)).squeeze(1)
            scored = nll[first - begin :]
            total += float(scored.sum())
            count += len(scored)
    nll = total / max(count, 1)
    return {"ppl": math.exp(nll), "nll": nll, "tokens": count, "total_nll": total}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="a glob of llm.c shards, e.g. 'data/val_*.bin'")
    ap.add_argument("--seq", type=int, help="window length T (default: the model's n_positions)")
    ap.add_argument("--stride", type=int, help="window stride S in 1..T (default: T)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                    help="the model's weights and activations (float32, as cllm computes)")
    ap.add_argument("--compare", metavar="BIN", help="a cllm-eval binary to run on the same input")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    hf_logging.disable_progress_bar()
    model = GPT2LMHeadModel.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
    model.eval()
    cfg = model.config
    seq = args.seq or cfg.n_positions
    if not 1 <= seq <= cfg.n_positions:
        sys.exit(f"--seq {seq} must be in 1..{cfg.n_positions}")
    stride = min(max(args.stride or seq, 1), seq)
    paths = sorted(glob.glob(args.data))
    if not paths:
        sys.exit(f"no file matches {args.data!r}")
    streams = [(p, read_shard(p)) for p in paths]
    hf = perplexity(model, streams, seq, stride, cfg.vocab_size)
    hf.update(seq=seq, stride=stride, dtype=args.dtype, shards=len(paths))
    if not args.compare:
        print(json.dumps(hf))
        return
    cmd = [args.compare, "ppl", "--model", args.model, "--data", args.data,
           "--seq", str(seq), "--stride", str(stride), "--json"]
    cllm = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    rel = {k: abs(cllm[k] - hf[k]) / abs(hf[k]) for k in ("nll", "ppl")}
    print(json.dumps({"transformers": hf, "cllm": cllm, "relative_difference": rel,
                      "tokens_equal": cllm["tokens"] == hf["tokens"]}, indent=2))
    if cllm["tokens"] != hf["tokens"] or max(rel.values()) > args.tolerance:
        sys.exit(f"cllm and transformers disagree beyond {args.tolerance}")


if __name__ == "__main__":
    main()
