"""Throughput of MDSA and LSA against their baselines (pixels per second, best of repeats).

    python benchmarks/bench_estimators.py [--dims 64 256] [--n-ref 10000] [--repeats 5]

Timings are the best of interleaved repeats (noisy on a shared machine). Compares, in one run
and on the same data: MDSA scoring (float32) with the bare float32 matrix
product it needs (X @ W) and with a numpy-vectorised Mahalanobis; LSA scoring (float64 and
float32) with scipy.stats.gaussian_kde.logpdf, whose values LSA must reproduce.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import gaussian_kde

from saseg.estimators import LSA, MDSA


def best_times(fns: dict, repeats: int) -> dict:
    """Best wall time of each function; rounds interleave them so all see the same noise."""
    best = {}
    for name, fn in fns.items():
        fn()  # warm-up
        best[name] = float("inf")
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def run(d: int, args) -> list[tuple[str, float]]:
    rng = np.random.default_rng(d)
    mix = np.eye(d) + 0.2 * rng.normal(size=(d, d)) / np.sqrt(d)
    ref = (rng.normal(size=(args.n_ref, d)) @ mix + 1.0).astype(np.float32)
    queries = (rng.normal(size=(args.mdsa_queries, d)) @ mix * 1.2 + 1.0).astype(np.float32)
    ref_t, q_t = torch.from_numpy(ref), torch.from_numpy(queries)
    zeros_ref = torch.zeros(args.n_ref, dtype=torch.int64)
    zeros_q = torch.zeros(len(queries), dtype=torch.int64)
    rows = []

    mdsa = MDSA().fit(ref_t, zeros_ref)
    mdsa.score(q_t[:10], zeros_q[:10])  # builds the float32 scoring state once
    w = mdsa.whiteners_[0].float()
    mu = mdsa.means_[0].numpy().astype(np.float32)
    vi = np.linalg.inv(mdsa.covariances_[0].numpy()).astype(np.float32)
    n = len(queries)
    # torch and numpy run apart: their BLAS thread pools spin after a call and slow the other
    t = best_times({
        "MDSA score (float32)": lambda: mdsa.score(q_t, zeros_q),
        "bare matmul X @ W (float32)": lambda: q_t @ w,
    }, 6 * args.repeats)
    t.update(best_times({
        "numpy Mahalanobis (float32)": lambda: (((queries - mu) @ vi) * (queries - mu)).sum(1),
    }, 6 * args.repeats))
    rows += [(name, n / sec) for name, sec in t.items()]

    lsa = LSA(var_threshold=None).fit(ref_t, zeros_ref)
    lsa32 = LSA(var_threshold=None, dtype="float32").fit(ref_t, zeros_ref)
    q_lsa, q_sp = q_t[:args.lsa_queries], queries[:args.scipy_queries]
    z = torch.zeros(len(q_lsa), dtype=torch.int64)
    kde = gaussian_kde(ref.T.astype(np.float64))
    t = best_times({
        "LSA score (float64)": lambda: lsa.score(q_lsa, z),
        "LSA score (float32)": lambda: lsa32.score(q_lsa, z),
    }, args.repeats)
    t.update(best_times({"scipy gaussian_kde.logpdf": lambda: kde.logpdf(q_sp.T.astype(np.float64))},
                        args.repeats))
    sizes = {"LSA score (float64)": len(q_lsa), "LSA score (float32)": len(q_lsa),
             "scipy gaussian_kde.logpdf": len(q_sp)}
    rows += [(name, sizes[name] / sec) for name, sec in t.items()]

    expected = -kde.logpdf(q_sp.T.astype(np.float64))
    zs = torch.zeros(len(q_sp), dtype=torch.int64)
    diff64 = np.max(np.abs(lsa.score(q_sp, zs).numpy() / expected - 1))
    diff32 = np.max(np.abs(lsa32.score(q_sp, zs).numpy() / expected - 1))
    rate = dict(rows)
    print(f"\nd = {d}, {args.n_ref} reference ATs (one class), MDSA queries {n}, "
          f"LSA queries {len(q_lsa)}, scipy queries {len(q_sp)}")
    print(f"{'method':<32}{'pixels/s':>14}")
    for name, r in rows:
        print(f"{name:<32}{r:>14,.0f}")
    print(f"ratio MDSA / bare matmul        {rate['MDSA score (float32)'] / rate['bare matmul X @ W (float32)']:>8.2f}  (target >= 0.85)")
    print(f"ratio MDSA / numpy Mahalanobis  {rate['MDSA score (float32)'] / rate['numpy Mahalanobis (float32)']:>8.2f}")
    print(f"ratio LSA64 / scipy             {rate['LSA score (float64)'] / rate['scipy gaussian_kde.logpdf']:>8.1f}  (target >= 20)")
    print(f"ratio LSA32 / scipy             {rate['LSA score (float32)'] / rate['scipy gaussian_kde.logpdf']:>8.1f}")
    print(f"max rel diff LSA vs scipy       float64 {diff64:.2e}, float32 {diff32:.2e}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--n-ref", type=int, default=10_000)
    parser.add_argument("--mdsa-queries", type=int, default=20_000)
    parser.add_argument("--lsa-queries", type=int, default=1_000)
    parser.add_argument("--scipy-queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5, help="LSA rounds; MDSA gets 6x as many")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, numpy {np.__version__}")
    for d in args.dims:
        run(d, args)


if __name__ == "__main__":
    main()
