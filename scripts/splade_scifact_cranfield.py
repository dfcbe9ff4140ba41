"""SPLADE from the bundled MiniLM on SciFact, then unsupervised adaptation to Cranfield: a thin
wrapper over the grid runner that prints the study's table.

It runs the study-3 mini recipe (``recipes/mini/study3-splade-adaptation.yaml``: the zero-shot
SPLADE model trained on SciFact train once, then adapted to Cranfield's unlabelled documents for
each k) with two suites instead of the recipe's one, both retrieved to depth 100 and measured
with nDCG@10 and R@100:

(a) SciFact test: BM25 against the SPLADE model trained on SciFact train (the zero-shot model);
(b) Cranfield (queries and qrels only for evaluation): BM25, zero-shot SPLADE, adapted per k.

Beside the measures, each SPLADE index's size and postings per document. Everything is the
grid's (``OUTPUT/experiment.json``; ``irdistill compare OUTPUT`` tests the rows), so a rerun
reuses every finished training, index and evaluation. Offline: needs the ir_datasets cache
(``eval "$(../shared/data/seed-irds.sh)"``) and the bundled MiniLM.

    python scripts/splade_scifact_cranfield.py --output runs/splade-study
    python scripts/splade_scifact_cranfield.py --output /tmp/toy --set source.train.max_steps=2 \\
        --set mlm.steps=1 --set "axes.layers=[0]"      # minutes: the pipeline, not the figures
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from irdistill.config import read_yaml
from irdistill.experiments.grid import grid_from_dict, run_grid
from irdistill.experiments.report import load_grid_results
from irdistill.io import write_json
from irdistill.utils import setup_logging

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "mini" / \
    "study3-splade-adaptation.yaml"
MEASURES = ["nDCG@10", "R@100"]
SUITES = {
    "scifact-splade": {"description": "SciFact test, trained on SciFact train",
                       "datasets": [{"id": "beir/scifact/test", "name": "scifact"}],
                       "measures": MEASURES, "depth": 100},
    "cranfield-splade": {"description": "Cranfield, no Cranfield label used in training",
                         "datasets": [{"id": "cranfield", "name": "cranfield"}],
                         "measures": MEASURES, "depth": 100},
}


def study_grid(output: Path, overrides: list[str] | None = None):
    """The mini study-3 grid with the study's two suites."""
    data = read_yaml(RECIPE)
    data.update(name="splade-scifact-cranfield", suites=list(SUITES), suite_definitions=SUITES)
    # rows named for the table; labels are not part of a cell's config, so the recipe's cells
    # (and their folders) are the same
    axes = data["axes"]
    if len(axes.get("target", [])) == 1:
        data["base"]["target"] = axes.pop("target")[0]
    if isinstance(axes.get("layers"), list):
        axes["layers"] = {f"adapted, k = {k}": k for k in axes["layers"]}
    return grid_from_dict(data, base_dir=RECIPE.parent, overrides=overrides, output=output,
                          source=str(RECIPE))


def index_figures(root: Path) -> dict[tuple[str, str], dict]:
    """``{(system, dataset): {"megabytes", "postings_per_doc"}}`` of every SPLADE index."""
    manifest = json.loads((root / "experiment.json").read_text(encoding="utf-8"))
    out = {}
    for entry in manifest["evaluations"]:
        index = root / (entry["file"].removesuffix(".json") + ".index")
        if (index / "meta.json").exists():
            meta = json.loads((index / "meta.json").read_text(encoding="utf-8"))
            size = sum(p.stat().st_size for p in index.iterdir() if p.is_file())
            out[(entry["system"], entry["dataset"])] = {
                "megabytes": round(size / 2**20, 1),
                "postings_per_doc": round(meta["postings"] / meta["docs"], 1)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/splade-study"),
                        help="output folder (default: runs/splade-study)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a key of the recipe's base config "
                        "(source.train.max_steps=64) or of the grid (axes.layers=[0,2])")
    parser.add_argument("--dry-run", action="store_true", help="list the cells, run nothing")
    args = parser.parse_args(argv)
    setup_logging()
    grid = study_grid(args.output, args.overrides)
    status = run_grid(grid, dry_run=args.dry_run)
    if args.dry_run:
        print("\n".join(status.lines()))
        return 0
    rs = load_grid_results(grid.output)
    indexes = index_figures(grid.output)
    results: dict[str, dict] = {}
    for r in rs.results:
        results.setdefault(r.dataset, {})[r.system] = {
            "measures": {m: r.aggregate[m] for m in MEASURES}, "seed": r.seed,
            **({"index": indexes[(r.system, r.dataset)]} if (r.system, r.dataset) in indexes
               else {})}
    write_json(grid.output / "results.json", results)
    for dataset, rows in results.items():
        print(f"\n{dataset}\n{'system':<24}{'nDCG@10':>9}{'R@100':>8}{'index MB':>10}"
              f"{'postings/doc':>14}")
        for name, r in rows.items():
            m, idx = r["measures"], r.get("index")
            line = f"{name:<24}{m['nDCG@10']:>9.4f}{m['R@100']:>8.4f}"
            if idx:
                line += f"{idx['megabytes']:>10.1f}{idx['postings_per_doc']:>14.1f}"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
