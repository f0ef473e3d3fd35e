#!/usr/bin/env python3
"""sgemm side by side: cllm-bench and numpy (OpenBLAS) on the same shapes, alternating, one run.

    python3 scripts/peers/gemm_vs_numpy.py [--threads N] [--layouts nn,nt,tn] [--shape MxKxN ...] [--json]

Builds nothing: run `cargo build --release -p cllm-tools` first (or pass --bench PATH). numpy's
OpenBLAS thread count is fixed to --threads before numpy is imported. Prints one line per shape and
layout with both GFLOP/s (medians) and the ratio cllm / numpy.
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
            ours = json.loads(
                subprocess.run(
                    [args.bench, "gemm", "--shape", shape, "--layout", layout, "--threads", str(args.threads),
                     "--reps", str(args.reps), "--json"],
                    check=True, capture_output=True, text=True,
                ).stdout.strip().splitlines()[-1]
            )
            rng = np.random.default_rng(0)
            a = rng.standard_normal((k, m) if layout == "tn" else (m, k), dtype=np.float32)
            b = rng.standard_normal((n, k) if layout == "nt" else (k, n), dtype=np.float32)
            c = np.empty((m, n), dtype=np.float32)
            lhs = a.T if layout == "tn" else a
            rhs = b.T if layout == "nt" else b
            np.matmul(lhs, rhs, out=c)
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                np.matmul(lhs, rhs, out=c)
                times.append(time.perf_counter() - t)
            times.sort()
            peer = 2 * m * k * n / times[len(times) // 2] / 1e9
            row = {"shape": shape, "layout": layout, "threads": args.threads, "isa": ours["isa"],
                   "cllm_gflops": ours["gflops"], "numpy_gflops": round(peer, 2),
                   "ratio": round(ours["gflops"] / peer, 3), "peak_gflops": ours["peak_gflops"],
                   "pct_peak": ours["pct_peak"]}
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{shape:>16} {layout} t={args.threads}: cllm {row['cllm_gflops']:7.1f}  numpy {peer:7.1f} "
                      f"GFLOP/s  ratio {row['ratio']:.3f}  ({row['pct_peak']:.1f}% of peak {row['peak_gflops']:.1f})",
                      flush=True)
    worst = min(r["ratio"] for r in rows)
    print(f"worst ratio cllm/numpy: {worst:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
