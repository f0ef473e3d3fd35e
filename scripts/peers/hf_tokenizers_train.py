#!/usr/bin/env python3
"""Hugging Face `tokenizers`: train a byte-level BPE on the Shakespeare corpus, timed.

    pip install tokenizers
    python3 scripts/peers/hf_tokenizers_train.py [--vocab-size 8192] [--reps 5] [--corpus DIR] [--json]

The peer of `cargo bench --bench tokenizer -- train_bpe` (cllm's trainer on the same text): run
both in one shell command and compare medians. Settings match cllm's trainer: GPT-2's
pre-tokenization (ByteLevel, no prefix space, GPT-2's regex), the 256 byte tokens as the initial
alphabet, `<|endoftext|>` as the only special token, each file one document
(train_from_iterator, so that newlines split nothing that cllm does not split). Reading the files
is not timed. `tokenizers` uses all cores (RAYON_NUM_THREADS caps it); cllm's trainer uses one.
"""
import argparse
import json
import os
import statistics
import sys
import time

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def corpus_dir():
    shared = os.environ.get("CLLM_SHARED")
    if shared is None:
        shared = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared")
    return os.path.join(shared, "corpora", "shakespeare")


def train(docs, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=0,
        show_progress=False,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--corpus", default=corpus_dir())
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = sorted(os.listdir(args.corpus))
    docs = []
    for name in names:
        with open(os.path.join(args.corpus, name), encoding="utf-8") as f:
            docs.append(f.read())
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    times = []
    vocab = None
    for _ in range(args.reps):
        t0 = time.perf_counter()
        tok = train(docs, args.vocab_size)
        times.append(time.perf_counter() - t0)
        vocab = tok.get_vocab_size()
    med = statistics.median(times)
    result = {
        "peer": "hf-tokenizers",
        "version": __import__("tokenizers").__version__,
        "vocab_size": vocab,
        "bytes": nbytes,
        "median_s": med,
        "min_s": min(times),
        "reps": args.reps,
        "threads": os.environ.get("RAYON_NUM_THREADS", str(os.cpu_count())),
    }
    if args.json:
        json.dump(result, sys.stdout)
        print()
    else:
        print(
            f"hf tokenizers {result['version']}: BPE vocab {vocab} on {nbytes / 1e6:.2f} MB: "
            f"median {med:.3f} s, min {min(times):.3f} s over {args.reps} runs "
            f"({result['threads']} threads)"
        )


if __name__ == "__main__":
    main()
