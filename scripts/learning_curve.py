"""The held-out learning curve of training runs: their evaluations during training
(``train.eval_steps``) as a table and a plot.

    python scripts/learning_curve.py RUN_FOLDER [RUN_FOLDER ...] --output docs/results/curve \
        [--baseline bm25=0.6617] [--x step|groups|train_seconds]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from irdistill.experiments.plots import batch_size_of, plot_learning_curve, read_evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders")
    parser.add_argument("--output", required=True, help="plot path without extension")
    parser.add_argument("--measure", default="nDCG@10")
    parser.add_argument("--x", default="step", choices=("step", "groups", "train_seconds"),
                        help="x axis: steps, groups (steps x batch size) or training minutes")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    baselines = {b.split("=")[0]: float(b.split("=")[1]) for b in args.baseline}
    logs = {run.name: run / "train_log.jsonl" for run in args.runs}
    for name, path in logs.items():
        groups = batch_size_of(path) if (path.parent / "config.yaml").exists() else None
        print(f"| {name} | step | groups | training minutes | {args.measure} |\n"
              "|---|---|---|---|---|")
        for row in read_evaluations(path):
            value = row.get(f"eval_{args.measure}")
            if value is not None:
                seen = row["step"] * groups if groups else ""
                print(f"| | {row['step']} | {seen} | {row.get('train_seconds', 0) / 60:.1f} | "
                      f"{value:.4f} |")
    for path in plot_learning_curve(logs, args.output, baselines, args.measure, args.x):
        print("wrote", path)


if __name__ == "__main__":
    main()
