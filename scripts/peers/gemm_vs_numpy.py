#!/usr/bin/env python3
"""sgemm side by side: cllm-bench and numpy (OpenBLAS) on the same shapes, in alternating rounds.

    python3 scripts/peers/gemm_vs_numpy.py [--threads N] [--layouts nn,nt,tn] [--shape MxKxN ...]
                                           [--reps R] [--rounds N] [--json]

Builds nothing: run `cargo build --release -p cllm-tools` first (or pass --bench PATH). numpy's
OpenBLAS thread count is fixed to --threads before numpy is imported.

Each shape and layout is measured in --rounds rounds; a round times --reps calls of each side back
to back (cllm first in even rounds, numpy first in odd ones) and takes the ratio of their medians.
On a shared host the machine's speed drifts over seconds, so one pair measures the drift as much as
the code; the median of the rounds' ratios is what is reported, with their range. Prints one line
per shape and layout: both sides' GFLOP/s (medians over the rounds), the median ratio cllm / numpy
and the lowest and highest round's.
"""
import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = ["1024x1024x1024", "4096x768x768", "4096x768x2304", "4096x768x3072", "4096x3072x768"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layouts", default="nn,nt,tn")
    ap.add_argument("--shape", action="append", dest="shapes")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bench", default="target/release/cllm-bench")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np  # after the thread count is fixed

    shapes = args.shapes or SHAPES
    rows = []
    for shape in shapes:
        m, k, n = (int(d) for d in shape.split("x"))
        for layout in args.layouts.split(","):
            rng = np.random.default_rng(0)
            a = rng.standard_normal((k, m) if layout == "tn" else (m, k), dtype=np.float32)
            b = rng.standard_normal((n, k) if layout == "nt" else (k, n), dtype=np.float32)
            c = np.empty((m, n), dtype=np.float32)
            lhs = a.T if layout == "tn" else a
            rhs = b.T if layout == "nt" else b

            def cllm():
                return json.loads(
                    subprocess.run(
                        [args.bench, "gemm", "--shape", shape, "--layout", layout, "--threads",
                         str(args.threads), "--reps", str(args.reps), "--json"],
                        check=True, capture_output=True, text=True,
                    ).stdout.strip().splitlines()[-1]
                )

            def numpy():
                np.matmul(lhs, rhs, out=c)  # warm-up
                times = []
                for _ in range(args.reps):
                    t = time.perf_counter()
                    np.matmul(lhs, rhs, out=c)
                    times.append(time.perf_counter() - t)
                return 2 * m * k * n / median(times) / 1e9

            rounds = []
            for r in range(max(args.rounds, 1)):
                if r % 2 == 0:
                    ours = cllm()
                    peer = numpy()
                else:
                    peer = numpy()
                    ours = cllm()
                rounds.append((ours, peer))
            ratios = [o["gflops"] / p for o, p in rounds]
            ours = rounds[-1][0]
            row = {"shape": shape, "layout": layout, "threads": args.threads, "isa": ours["isa"],
                   "rounds": len(rounds),
                   "cllm_gflops": round(median([o["gflops"] for o, _ in rounds]), 2),
                   "numpy_gflops": round(median([p for _, p in rounds]), 2),
                   "ratio": round(median(ratios), 3),
                   "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                   "peak_gflops": round(median([o["peak_gflops"] for o, _ in rounds]), 2),
                   "pct_peak": round(median([o["pct_peak"] for o, _ in rounds]), 2)}
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{shape:>16} {layout} t={args.threads}: cllm {row['cllm_gflops']:7.1f}  "
                      f"numpy {row['numpy_gflops']:7.1f} GFLOP/s  ratio {row['ratio']:.3f} "
                      f"({row['ratio_min']:.3f}-{row['ratio_max']:.3f} over {len(rounds)} rounds)  "
                      f"({row['pct_peak']:.1f}% of peak {row['peak_gflops']:.1f})",
                      flush=True)
    worst = min(r["ratio"] for r in rows)
    print(f"worst median ratio cllm/numpy: {worst:.3f}", file=sys.stderr)


def median(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


if __name__ == "__main__":
    main()
