"""Cross-check :func:`irdistill.evaluation.fusion.fuse` against ranx, and time ranx.

ranx is not a dependency of irdistill (why: the docstring of irdistill.evaluation.fusion); this
script is the evidence behind that choice, to run again when either side changes::

    pip install ranx            # keep torch as it is: pip install -c <(echo torch==X) ranx
    python scripts/check_fusion_ranx.py [--queries 50] [--seed 0]

Random runs with missing documents and (in one run) tied scores are fused by both (on the
queries common to all runs: ranx refuses runs of different queries, which is reported) for every method and normalisation they share; the largest difference is
printed per case, and the script exits 1 if one is above 1e-9. The tied run is compared on
the documents' sums only where ties cannot reorder ranks (ranx and trec_eval break ties in
opposite directions), and the count of tie-broken documents is reported.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from irdistill.evaluation.fusion import fuse

CASES = [  # (irdistill method, norm, ranx method, ranx norm, weights?)
    ("rrf", None, "rrf", None, False),
    ("wsum", "minmax", "wsum", "min-max", True),
    ("wsum", "zscore", "wsum", "zmuv", True),
    ("combsum", "minmax", "sum", "min-max", False),
    ("combmnz", "minmax", "mnz", "min-max", False),
]


def random_runs(n_queries: int, seed: int, ties: bool) -> list[dict]:
    rng = np.random.default_rng(seed)
    docs = [f"d{i:03d}" for i in range(60)]
    runs = []
    for r in range(3):
        run = {}
        for q in range(n_queries):
            if rng.random() < 0.1:  # this query is missing from this run
                continue
            chosen = rng.choice(len(docs), int(rng.integers(3, 30)), replace=False)
            scores = rng.normal(size=len(chosen)) * (r + 1) + r
            if ties and r == 0:
                scores = np.round(scores, 0)
            run[f"q{q}"] = {docs[i]: float(s) for i, s in zip(chosen, scores)}
        runs.append(run)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    import ranx
    print(f"import ranx {ranx.__version__ if hasattr(ranx, '__version__') else ''}: "
          f"{time.perf_counter() - start:.2f} s")
    try:  # ranx asserts that every run has the same queries; irdistill fuses the union
        ranx.fuse([ranx.Run({"q1": {"a": 1.0}}), ranx.Run({"q2": {"a": 1.0}})], method="rrf")
        print("ranx fuses runs of different queries")
    except AssertionError as exc:
        print(f"ranx refuses runs of different queries: AssertionError: {exc}")
    worst = 0.0
    for ties in (False, True):
        runs = random_runs(args.queries, args.seed, ties)
        common = set.intersection(*(set(r) for r in runs))  # what ranx takes
        runs = [{q: r[q] for q in sorted(common)} for r in runs]
        for method, norm, r_method, r_norm, weighted in CASES:
            weights = [0.5, 0.3, 0.2] if weighted else None
            ours = fuse(runs, method, norm, weights)
            params = {"weights": weights} if weighted else ({"k": 60} if method == "rrf" else {})
            start = time.perf_counter()
            theirs = ranx.fuse([ranx.Run(r, name=f"r{i}") for i, r in enumerate(runs)],
                               method=r_method, norm=r_norm, params=params).to_dict()
            seconds = time.perf_counter() - start
            diff, compared, skipped = 0.0, 0, 0
            for qid, scores in ours.items():
                tied = set()
                if ties and method == "rrf" and qid in runs[0]:
                    values = list(runs[0][qid].values())
                    tied = {d for d, s in runs[0][qid].items() if values.count(s) > 1}
                for d, s in scores.items():
                    if d in tied:
                        skipped += 1
                        continue
                    diff = max(diff, abs(s - theirs[qid][d]))
                    compared += 1
            worst = max(worst, diff)
            note = f", {skipped} tied documents left out" if skipped else ""
            print(f"{'ties ' if ties else ''}{method} {norm or ''}: max |diff| {diff:.2e} over "
                  f"{compared} documents{note}; ranx call {seconds:.2f} s")
    print("agree" if worst <= 1e-9 else "DISAGREE")
    return 0 if worst <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
