"""The held-out learning curve of training runs: their evaluations during training
(``train.eval_steps``) as a table and a plot.

    python scripts/learning_curve.py RUN_FOLDER [RUN_FOLDER ...] --output docs/results/curve \
        [--baseline bm25=0.6617] [--x step|train_seconds]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from irdistill.experiments.plots import plot_learning_curve, read_evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders")
    parser.add_argument("--output", required=True, help="plot path without extension")
    parser.add_argument("--measure", default="nDCG@10")
    parser.add_argument("--x", default="step", choices=("step", "train_seconds"))
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    baselines = {b.split("=")[0]: float(b.split("=")[1]) for b in args.baseline}
    logs = {run.name: run / "train_log.jsonl" for run in args.runs}
    for name, path in logs.items():
        print(f"| {name} | step | training minutes | {args.measure} |\n|---|---|---|---|")
        for row in read_evaluations(path):
            value = row.get(f"eval_{args.measure}")
            if value is not None:
                print(f"| | {row['step']} | {row.get('train_seconds', 0) / 60:.1f} | {value:.4f} |")
    for path in plot_learning_curve(logs, args.output, baselines, args.measure, args.x):
        print("wrote", path)


if __name__ == "__main__":
    main()
