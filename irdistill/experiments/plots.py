"""Plots of a comparison (matplotlib, each saved as PNG and PDF).

* ``spread-<measure>``: per dataset, each trained system's seeds (dots) with their mean and
  standard deviation, grouped by objective (x) and coloured by backbone when the grid has
  those axes; the first stage and the untrained model as horizontal lines.
* ``winloss-<measure>``: per dataset, how many queries each system wins, ties and loses against
  the baseline (per-query values averaged over seeds).
* ``training-loss``: training loss against steps, one panel per system, a line per seed, from
  each cell's ``train_log.jsonl``.
  Evaluating every checkpoint on the test suites would multiply the evaluation cost by the
  number of checkpoints, which a CPU cannot afford; the loss curves show convergence instead.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from irdistill.config import read_yaml
from irdistill.errors import IrdistillError
from irdistill.experiments.report import Report, seed_cells
from irdistill.train.folder import RunFolder

log = logging.getLogger(__name__)


def _pyplot():
    # pyplot and its backend are chosen at the first plot, so importing this module leaves a
    # notebook's backend alone
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # as above

    return plt


def save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = []
    for ext in ("png", "pdf"):
        path = stem.with_name(f"{stem.name}.{ext}")
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        tmp.replace(path)
        files.append(path)
    _pyplot().close(fig)
    return files


def _legend(axes, **kwargs) -> None:
    """One legend (on the last panel) of every labelled artist of the panels, without repeats."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        axes[-1].legend(list(seen.values()), list(seen), fontsize=7, **kwargs)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _axis_name(report: Report, preferred: str) -> str | None:
    axes = report.results.axes
    if preferred in axes:
        return preferred
    return None


def plot_spread(report: Report, measure: str, stem: Path) -> list[Path]:
    """Mean and spread over seeds per objective x backbone, one panel per dataset."""
    plt = _pyplot()
    rs = report.results
    cells = seed_cells(rs, measure)
    cols = [c for c in rs.columns() if any(col == c for _, col in cells)]
    if not cols:
        return []
    headers = report.headers()
    hue_axis = _axis_name(report, "backbone")
    trained = [s for s in rs.systems() if rs.kind(s) == "trained"]
    labels_of = {r.system: r.labels for r in rs.results if r.kind == "trained"}

    def hue(system: str) -> str:
        return labels_of.get(system, {}).get(hue_axis, "") if hue_axis else ""

    def xname(system: str) -> str:
        if not hue_axis:
            return system
        return " / ".join(v for k, v in labels_of.get(system, {}).items()
                          if k != hue_axis and not rs.axes.get(k, {}).get("seed")) or system

    xs = list(dict.fromkeys(xname(s) for s in trained))
    hues = list(dict.fromkeys(hue(s) for s in trained))
    fig, axes = plt.subplots(1, len(cols), figsize=(max(3.5, 1.5 + 0.8 * len(xs)) * len(cols),
                                                    3.8), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(1, len(hues))
    for ax, col in zip(axes[0], cols):
        for h_index, h in enumerate(hues):
            for system in (s for s in trained if hue(s) == h):
                cell = cells.get((system, col))
                if cell is None:
                    continue
                x = xs.index(xname(system)) - 0.4 + width * (h_index + 0.5)
                colour = colours[h_index % len(colours)]
                ax.scatter([x] * len(cell.values), cell.values, s=14, color=colour, alpha=0.6,
                           zorder=3)
                ax.errorbar([x], [cell.mean], yerr=[cell.std or 0.0], fmt="_", markersize=14,
                            color=colour, capsize=4, zorder=4,
                            label=h or None)
        styles = iter(["--", ":", "-."])
        for system in rs.systems():
            if rs.kind(system) in ("trained", "fused"):  # lines for the shared rows only
                continue
            cell = cells.get((system, col))
            if cell is not None:
                ax.axhline(cell.mean, color="grey", linestyle=next(styles, "--"), linewidth=1,
                           label=system)
        ax.set_xlim(-0.7, len(xs) - 0.3)
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, rotation=30, ha="right")
        ax.set_title(headers[col])
        ax.set_ylabel(measure)
        ax.grid(axis="y", alpha=0.3)
    _legend(axes[0], loc="best")
    fig.suptitle(f"{rs.title}: {measure}, seeds (dots), mean ± std (bars)", fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def plot_win_loss(report: Report, measure: str, stem: Path) -> list[Path]:
    """Queries won, tied and lost against the baseline, per system and dataset."""
    plt = _pyplot()
    rs = report.results
    cols = [c for c in rs.columns() if any(report.comparison(s, c, measure)
                                           for s in rs.systems())]
    if not cols:
        return []
    headers = report.headers()
    systems = [s for s in rs.systems() if s != report.baseline]
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 0.45 * len(systems) + 1.6),
                             squeeze=False)
    for ax, col in zip(axes[0], cols):
        wins, ties, losses = [], [], []
        for system in systems:
            cmp = report.comparison(system, col, measure)
            wins.append(cmp.wins if cmp else 0)
            ties.append(cmp.ties if cmp else 0)
            losses.append(cmp.losses if cmp else 0)
        y = range(len(systems))
        ax.barh(y, wins, color="#2e7d32", label="wins")
        ax.barh(y, ties, left=wins, color="#bdbdbd", label="ties")
        ax.barh(y, losses, left=[w + t for w, t in zip(wins, ties)], color="#c62828",
                label="losses")
        ax.set_yticks(list(y))
        ax.set_yticklabels([f"{s} {report.marker(s, col, measure)}".strip() for s in systems])
        ax.invert_yaxis()
        ax.set_xlabel("queries")
        ax.set_title(headers[col])
    _legend(axes[0], loc="lower right")
    fig.suptitle(f"{measure}: per-query wins / ties / losses against {report.baseline}",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def read_cell_log(folder: Path) -> list[tuple[int, float]]:
    """(step, loss) of a cell: its ``train_log.jsonl``, or those of its stages one after the
    other (a stage's steps continue the previous stage's)."""
    if (folder / "train_log.jsonl").exists():
        return read_train_log(folder / "train_log.jsonl")
    points: list[tuple[int, float]] = []
    for stage in RunFolder(folder).stages():
        offset = points[-1][0] if points else 0
        points += [(offset + step, loss) for step, loss in read_train_log(stage.log)]
    return points


def read_train_log(path: Path) -> list[tuple[int, float]]:
    points = []
    if not path.exists():
        return points
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption
        if "loss" in entry and "step" in entry:
            points.append((int(entry["step"]), float(entry["loss"])))
    return points


def plot_training_curves(report: Report, stem: Path) -> list[Path]:
    """Training loss against steps of every cell (colour: system, line style: seed)."""
    rs = report.results
    if rs.root is None or not rs.cells:
        return []
    curves = []
    for cell in rs.cells:
        points = read_cell_log(rs.root / cell["folder"])
        if points:
            curves.append((cell["system"], cell.get("seed"), points))
    if not curves:
        log.info("no training log found: no training curve plotted")
        return []
    plt = _pyplot()
    systems = list(dict.fromkeys(c[0] for c in curves))
    seeds = list(dict.fromkeys(c[1] for c in curves))
    fig, axes = plt.subplots(1, len(systems), figsize=(3.2 * len(systems) + 0.5, 3.2),
                             squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for system, seed, points in curves:
        ax = axes[0][systems.index(system)]
        steps, losses = zip(*sorted(points))
        ax.plot(steps, losses, color=colours[seeds.index(seed) % len(colours)], linewidth=1.2,
                label=f"seed {seed}")
    for ax, system in zip(axes[0], systems):
        ax.set_title(system, fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{rs.title}: training loss per objective (each on its own scale)",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def make_plots(report: Report, folder: str | Path) -> list[Path]:
    """Every plot of the report, for each of its measures: PNG and PDF files in ``folder``."""
    folder = Path(folder)
    files = []
    for measure in report.measures:
        if any(report.results.kind(s) == "trained" for s in report.results.systems()):
            files += plot_spread(report, measure, folder / f"spread-{_slug(measure)}")
        files += plot_win_loss(report, measure, folder / f"winloss-{_slug(measure)}")
    files += plot_training_curves(report, folder / "training-loss")
    return files


def read_evaluations(train_log: str | Path) -> list[dict]:
    """The evaluation lines of a training log (``train.eval_steps``): one dict per evaluation
    with ``step``, ``train_seconds`` and the measure (``eval_<measure>``)."""
    rows = []
    for line in Path(train_log).read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if any(k.startswith("eval_") and k not in ("eval_seconds", "eval_queries")
               for k in entry):
            rows.append(entry)
    return rows


def batch_size_of(train_log: str | Path) -> int:
    """``train.batch_size`` of the training run whose ``train_log.jsonl`` this is."""
    path = Path(train_log).parent / "config.yaml"
    if not path.exists():
        raise IrdistillError("no config.yaml beside the training log", path=path,
                             hint="give training output folders, or plot against steps")
    return int(read_yaml(path)["train"]["batch_size"])


def plot_learning_curve(train_logs: dict[str, str | Path], output: str | Path,
                        baselines: dict[str, float] | None = None,
                        measure: str = "nDCG@10", x: str = "step") -> list[Path]:
    """The held-out measure against training ``step``, ``groups`` (steps x the run's
    ``train.batch_size`` from the ``config.yaml`` beside its log: runs of other batch sizes at
    equal training data) or ``train_seconds`` (shown in minutes) of each run's
    ``train_log.jsonl``, with horizontal lines for ``baselines``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    key = f"eval_{measure}"
    for name, path in train_logs.items():
        rows = [r for r in read_evaluations(path) if key in r]
        scale = batch_size_of(path) if x == "groups" else 1
        xs = [r[x] / 60 if x == "train_seconds" else r["step"] * scale for r in rows]
        ax.plot(xs, [r[key] for r in rows], marker="o", label=name)
    for name, value in (baselines or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="grey")
        ax.annotate(name, (ax.get_xlim()[0], value), fontsize=8, va="bottom")
    ax.set_xlabel({"train_seconds": "training minutes", "groups": "training groups (queries)"}
                  .get(x, "training steps"))
    ax.set_ylabel(f"{measure} (held-out queries)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    files = save(fig, Path(output))
    plt.close(fig)
    return files
