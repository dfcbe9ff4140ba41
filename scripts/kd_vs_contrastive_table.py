"""The KD-vs-contrastive table of a grid run (experiments/kd-vs-contrastive.yaml): each student
size, each objective, paired against the contrastive student of the same size.

The grid runner trains and evaluates the cells; ``irdistill compare`` tests every system against
one baseline. This study's question is per size ("does KD beat contrastive training for a
student of L layers?"), so this thin script reads the grid's evaluations and pairs each KD
student with the contrastive student of its own size: per-query values averaged over the seeds,
paired t-test (and Wilcoxon, in the JSON) on the queries, Holm's correction over every KD x size
comparison of the table. It prints a Markdown table and writes ``table.md``, ``results.json``
and ``kd-vs-contrastive.png``/``.pdf`` (the measure against student size, one line per
objective, seeds as error bars) to ``--output`` (default: GRID/report-kd).

    python scripts/kd_vs_contrastive_table.py runs/kd-vs-contrastive
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from irdistill.errors import IrdistillError
from irdistill.evaluation.significance import compare_to_baseline
from irdistill.experiments.plots import _pyplot, save
from irdistill.experiments.report import load_grid_results
from irdistill.io import atomic_write, write_json

LAYERS = "model.num_hidden_layers"


def table(root: str | Path, measure: str = "nDCG@10", contrastive: str = "contrastive",
          alpha: float = 0.05) -> dict:
    """``{"rows": [...], "others": {...}, ...}`` of a grid: a row per objective and size (mean,
    std and values over seeds; against the contrastive student, its delta and p-values), and
    the systems without training (first stage, untrained students)."""
    rs = load_grid_results(root)
    trained = [r for r in rs.results if r.kind == "trained"]
    if not trained:
        raise IrdistillError("the grid has no evaluated student yet", path=root)
    datasets = sorted({r.dataset for r in trained})
    if len(datasets) != 1:
        raise IrdistillError(f"the grid was evaluated on {len(datasets)} datasets "
                             f"({', '.join(datasets)}); this table is for one",
                             hint="give the grid one suite dataset")
    for r in trained:
        if "objective" not in r.labels or LAYERS not in r.labels:
            raise IrdistillError(f"cell '{r.system}' has no objective or {LAYERS} axis",
                                 hint="run experiments/kd-vs-contrastive.yaml (or a grid with "
                                      "both axes)")
    cells: dict[tuple[str, int], list] = {}
    for r in trained:
        cells.setdefault((r.labels["objective"], int(r.labels[LAYERS])), []).append(r)
    objectives = list(dict.fromkeys(r.labels["objective"] for r in trained))
    if contrastive not in objectives:
        raise IrdistillError(f"no '{contrastive}' objective in the grid",
                             hint=f"objectives: {', '.join(objectives)}")
    sizes = sorted({layers for _, layers in cells})

    def averaged(results) -> dict[str, float]:  # query -> value, mean over seeds
        queries = set.intersection(*(set(r.per_query) for r in results))
        return {q: float(np.mean([r.per_query[q][measure] for r in results])) for q in queries}

    per_query = {objective: {f"L{layers}": {measure: averaged(cells[objective, layers])}
                             for layers in sizes if (objective, layers) in cells}
                 for objective in objectives}
    comparisons = {(c.system, c.dataset): c
                   for c in compare_to_baseline(per_query, contrastive, correction="holm")}
    rows = []
    for layers in sizes:
        for objective in objectives:
            results = cells.get((objective, layers))
            if not results:
                continue
            values = [r.aggregate[measure] for r in results]
            row = {"layers": layers, "objective": objective, "seeds": len(values),
                   "mean": float(np.mean(values)),
                   "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                   "per_seed": {str(r.seed): r.aggregate[measure] for r in results}}
            c = comparisons.get((objective, f"L{layers}"))
            if c is not None:
                row.update(delta=c.delta, queries=c.queries, p_t=c.pvalues["t"],
                           p_t_holm=c.adjusted["t"], p_wilcoxon=c.pvalues["wilcoxon"],
                           p_wilcoxon_holm=c.adjusted["wilcoxon"],
                           significant=c.significant("t", alpha))
            rows.append(row)
    others = {}
    for r in rs.results:
        if r.kind == "trained":
            continue
        match = re.search(r"\bL(\d+)\b", r.system)
        key = f"untrained L{match.group(1)}" if r.kind == "untrained" and match else r.system
        others[key] = r.aggregate[measure]
    return {"root": str(rs.root), "measure": measure, "dataset": datasets[0],
            "contrastive": contrastive,
            "alpha": alpha, "correction": "holm", "test": "t", "rows": rows, "others": others}


def markdown(result: dict) -> str:
    m = result["measure"]
    lines = [f"{m} on {result['dataset']}, mean ± std over seeds; Δ and p against the "
             f"{result['contrastive']} student of the same size (per-query values averaged "
             f"over seeds, paired t-test, Holm over the {sum('delta' in r for r in result['rows'])} "
             f"comparisons; ▲/▼ significant at {result['alpha']})", "",
             f"| layers | objective | {m} | Δ vs {result['contrastive']} | p (Holm) |",
             "|---:|---|---:|---:|---:|"]
    for row in result["rows"]:
        mark = {1: " ▲", -1: " ▼"}.get(row.get("significant", 0), "")
        delta = f"{row['delta']:+.4f}{mark}" if "delta" in row else "(baseline)"
        p = f"{row['p_t_holm']:.3g}" if "delta" in row else ""
        lines.append(f"| {row['layers']} | {row['objective']} | {row['mean']:.4f} ± "
                     f"{row['std']:.4f} | {delta} | {p} |")
    if result["others"]:
        lines += ["", "Without training: " + ", ".join(
            f"{name} {value:.4f}" for name, value in result["others"].items())]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for objective in dict.fromkeys(r["objective"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["objective"] == objective]
        ax.errorbar([r["layers"] for r in rows], [r["mean"] for r in rows],
                    yerr=[r["std"] for r in rows], marker="o", capsize=3, label=objective)
    for name, value in result["others"].items():
        if not name.startswith("untrained"):
            ax.axhline(value, color="grey", linestyle="--", linewidth=1)
            ax.annotate(name, (ax.get_xlim()[0], value), fontsize=8, color="grey",
                        va="bottom")
    ax.set_xlabel("student layers")
    ax.set_ylabel(f"{result['measure']} ({result['dataset']})")
    ax.set_xticks(sorted({r["layers"] for r in result["rows"]}))
    ax.legend()
    save(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", help="The grid's output folder (or its YAML file).")
    parser.add_argument("--measure", default="nDCG@10")
    parser.add_argument("--contrastive", default="contrastive",
                        help="The objective label every KD student is paired with.")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--output", help="Folder of the outputs (default: GRID/report-kd).")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    result = table(args.grid, args.measure, args.contrastive, args.alpha)
    out = Path(args.output) if args.output else Path(result["root"]) / "report-kd"
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(result)
    with atomic_write(out / "table.md") as handle:
        handle.write(text)
    write_json(out / "results.json", result)
    if not args.no_plot:
        plot(result, out / "kd-vs-contrastive")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
