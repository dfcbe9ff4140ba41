"""Comparison reports: systems x datasets tables with seeds, paired tests and markers.

Results come from a grid's output folder (``experiment.json``, written by
:func:`irdistill.experiments.grid.run_grid`) or from TREC run files with qrels. For each measure
a table gives, per system and dataset, the mean over seeds and the standard deviation across
seeds (of the seeds' mean values; sample std, n-1), and marks significant wins (▲) and losses
(▼) against a named baseline (:mod:`irdistill.evaluation.significance`). The first stage and
the untrained model are rows of every table, so a fine-tuning that made things worse shows at
once. Outputs: Markdown, CSV (long format, every number), LaTeX (booktabs), and a CSV of
per-query values and deltas against the baseline.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irdistill.config import from_dict
from irdistill.data.collection import load_qrels
from irdistill.data.trec import read_run
from irdistill.errors import IrdistillError, unknown_name
from irdistill.evaluation.metrics import evaluate
from irdistill.evaluation.significance import (CORRECTIONS, TEST_NAMES, PairedComparison,
                                               compare_to_baseline)
from irdistill.evaluation.suites import VARIANT_TITLES, Suite
from irdistill.experiments.grid import load_grid
from irdistill.io import atomic_write, write_json

log = logging.getLogger(__name__)

#: table order; a fused re-ranker follows its re-ranker (both keep the order they came in)
KIND_ORDER = {"first_stage": 0, "baseline": 1, "untrained": 2, "trained": 3, "fused": 3}
WIN, LOSS = "▲", "▼"


@dataclass
class Result:
    """One system (one seed) on one dataset: aggregate and per-query values."""

    system: str
    kind: str  # first_stage | baseline | untrained | trained | fused
    dataset: str  # label shown in tables (with MaxP/FirstP for passage variants)
    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]  # query id -> measure -> value
    suite: str = ""
    seed: int | None = None
    labels: dict[str, str] = field(default_factory=dict)  # grid axis -> value label
    cell: str | None = None  # the grid cell's hash


@dataclass
class ResultSet:
    results: list[Result]
    title: str = "comparison"
    notes: list[str] = field(default_factory=list)  # first stage, untrained model, ...
    baseline: str | None = None  # the default baseline
    root: Path | None = None  # a grid's output folder
    cells: list[dict[str, Any]] = field(default_factory=list)
    axes: dict[str, Any] = field(default_factory=dict)

    def systems(self) -> list[str]:
        """Systems in table order: first stage, untrained, then trained ones as they came."""
        seen: dict[str, tuple[int, int]] = {}
        for i, r in enumerate(self.results):
            seen.setdefault(r.system, (KIND_ORDER.get(r.kind, 3), i))
        return sorted(seen, key=seen.get)

    def kind(self, system: str) -> str:
        return next(r.kind for r in self.results if r.system == system)

    def columns(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys((r.suite, r.dataset) for r in self.results))

    def measures(self) -> list[str]:
        return list(dict.fromkeys(m for r in self.results for m in r.aggregate))


# -- loading ----------------------------------------------------------------------------------
def _grid_root(source: str | Path) -> Path:
    path = Path(source)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        path = load_grid(path).output
    if not (path / "experiment.json").exists():
        raise IrdistillError("no experiment.json: not the output folder of an experiment",
                             path=path, hint="give the folder (or grid file) of "
                                             "`irdistill experiment run`")
    return path


def load_grid_results(source: str | Path) -> ResultSet:
    """Every finished evaluation of a grid (its output folder or its YAML file)."""
    root = _grid_root(source)
    manifest = json.loads((root / "experiment.json").read_text(encoding="utf-8"))
    results, missing = [], 0
    for entry in manifest["evaluations"]:
        path = root / entry["file"]
        if not path.exists():
            missing += 1
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for variant, ev in data["variants"].items():
            label = f"{entry['dataset']} {VARIANT_TITLES[variant]}" if variant else \
                entry["dataset"]
            results.append(Result(entry["system"], entry["kind"], label, ev["aggregate"],
                                  ev["per_query"], entry["suite"], entry.get("seed"),
                                  entry.get("labels") or {}, entry.get("cell")))
    if missing:
        log.warning("%d of %d evaluations of the grid are not done yet and are left out",
                    missing, len(manifest["evaluations"]))
    if not results:
        raise IrdistillError("the experiment has no finished evaluation yet", path=root,
                             hint="run `irdistill experiment run` first")

    texts: dict[str, list[str]] = {}
    for body in manifest["suites"].values():
        suite = from_dict(Suite, body)  # as run: not checked again (folders may have moved)
        texts.setdefault(suite.first_stage_text(), []).append(suite.name)
    notes = [f"{text} ({', '.join(names)})" for text, names in texts.items()]
    untrained = sorted({r.system for r in results if r.kind == "untrained"})
    notes.append("untrained: " + (", ".join(untrained) if untrained else "(not evaluated)")
                 + " (the backbone before training, with a new randomly initialised head "
                   "when it has none)")
    return ResultSet(results, manifest["name"], notes, manifest.get("baseline"), root,
                     manifest.get("cells", []), manifest.get("axes", {}))


def parse_run_args(items: Sequence[str]) -> list[tuple[str, Path]]:
    """``NAME=path`` or ``path`` (named by its file name); a repeated NAME is another seed."""
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name.split(".")[0], item
        out.append((name, Path(path)))
    return out


def load_run_results(runs: Sequence[tuple[str, str | Path]], qrels: str, measures: Sequence[str],
                     *, dataset: str | None = None, first_stage: str | None = None,
                     untrained: str | None = None, depth: int | None = None) -> ResultSet:
    """Evaluate TREC runs against one set of qrels; runs sharing a name are seeds of a system."""
    if not runs:
        raise IrdistillError("no run to compare", hint="give run files, e.g. bm25=bm25.trec")
    names = [n for n, _ in runs]
    for role, name in (("first stage", first_stage), ("untrained model", untrained)):
        if name is not None and name not in names:
            raise unknown_name(f"{role} system", name, names)
    judgements = load_qrels(qrels)
    label = dataset or Path(str(qrels)).name
    results, seeds = [], {}
    for name, path in runs:
        ev = evaluate(read_run(path, depth=depth), judgements, measures)
        seed = seeds[name] = seeds.get(name, -1) + 1
        kind = "first_stage" if name == first_stage else "untrained" if name == untrained \
            else "trained"
        results.append(Result(name, kind, label, ev.aggregate, ev.per_query, "runs", seed))
    notes = [f"first stage: {first_stage or '(not given: name it with --first-stage)'}",
             f"untrained: {untrained or '(not given: name it with --untrained)'}"]
    return ResultSet(results, f"runs on {label}", notes, first_stage)


# -- aggregation and tests --------------------------------------------------------------------
@dataclass
class Cell:
    mean: float
    std: float | None  # None with a single seed
    seeds: int
    values: list[float]


def seed_cells(rs: ResultSet, measure: str) -> dict[tuple[str, tuple[str, str]], Cell]:
    """(system, column) -> mean and std over the seeds' aggregate values."""
    groups: dict[tuple, list[float]] = {}
    for r in rs.results:
        if measure in r.aggregate:
            groups.setdefault((r.system, (r.suite, r.dataset)), []).append(r.aggregate[measure])
    return {k: Cell(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else None, len(v), v)
            for k, v in groups.items()}


def seed_averaged_per_query(rs: ResultSet) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``[system][column][measure][qid]``: each query's value averaged over the system's seeds
    (only queries every seed has)."""
    acc: dict[tuple, list[dict[str, dict[str, float]]]] = {}
    for r in rs.results:
        acc.setdefault((r.system, column_key(r.suite, r.dataset)), []).append(r.per_query)
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (system, col), seeds in acc.items():
        qids = set.intersection(*(set(s) for s in seeds))
        measures = set.intersection(*(set(v) for s in seeds for v in s.values())) if qids else set()
        out.setdefault(system, {})[col] = {
            m: {q: statistics.fmean(s[q][m] for s in seeds) for q in sorted(qids)}
            for m in sorted(measures)}
    return out


def column_key(suite: str, dataset: str) -> str:
    return f"{suite}\t{dataset}"


@dataclass
class Report:
    results: ResultSet
    baseline: str
    measures: list[str]
    test: str  # the test behind the markers
    correction: str
    family: str
    alpha: float
    comparisons: list[PairedComparison]

    def comparison(self, system: str, column: tuple[str, str], measure: str
                   ) -> PairedComparison | None:
        key = column_key(*column)
        return next((c for c in self.comparisons if c.system == system and c.dataset == key
                     and c.measure == measure), None)

    def headers(self) -> dict[tuple[str, str], str]:
        cols = self.results.columns()
        counts: dict[str, int] = {}
        for _, d in cols:
            counts[d] = counts.get(d, 0) + 1
        return {(s, d): d if counts[d] == 1 else f"{s}/{d}" for s, d in cols}

    def marker(self, system: str, column: tuple[str, str], measure: str) -> str:
        cmp = self.comparison(system, column, measure)
        if cmp is None:
            return ""
        sign = cmp.significant(self.test, self.alpha)
        return WIN if sign > 0 else LOSS if sign < 0 else ""

    def caption(self, measure: str) -> str:
        n = sum(1 for c in self.comparisons if c.measure == measure)
        family = ("all comparisons of this table" if self.family == "table"
                  else "the systems of each dataset")
        corr = "no correction" if self.correction == "none" else \
            f"{self.correction.capitalize()} correction over {family} ({n} in this table)"
        return (f"{measure}: mean over seeds ± standard deviation across seeds. "
                f"{WIN}/{LOSS}: significantly better/worse than {self.baseline} "
                f"({TEST_NAMES[self.test]}, {corr}, α = {self.alpha:g}); per-query values "
                "are averaged over a system's seeds before pairing. Best mean per dataset in "
                "bold. " + "; ".join(self.results.notes) + ".")

    def best(self, measure: str) -> dict[tuple[str, str], float]:
        cells = seed_cells(self.results, measure)
        out: dict[tuple[str, str], float] = {}
        for (_, col), cell in cells.items():
            out[col] = max(out.get(col, -math.inf), cell.mean)
        return out


def build_report(rs: ResultSet, baseline: str | None = None, *,
                 measures: Sequence[str] | None = None, test: str = "t",
                 correction: str = "holm", family: str = "table", alpha: float = 0.05) -> Report:
    """Compare every system of ``rs`` with ``baseline`` (default: the grid's, else the first
    stage)."""
    systems = rs.systems()
    baseline = baseline or rs.baseline or next(
        (s for s in systems if rs.kind(s) == "first_stage"), None)
    if baseline is None:
        raise IrdistillError("no baseline named", hint="give --baseline NAME")
    if baseline not in systems:
        same = [s for s in systems if s.lower() == baseline.lower()]
        if len(same) != 1:
            raise unknown_name("baseline system", baseline, systems)
        baseline = same[0]
    if correction not in CORRECTIONS:
        raise unknown_name("correction", correction, CORRECTIONS)
    available = rs.measures()
    measures = list(measures or available)
    for m in measures:
        if m not in available:
            raise unknown_name("measure", m, available)
    per_query = seed_averaged_per_query(rs)
    per_query = {s: {c: {m: v for m, v in ms.items() if m in measures} for c, ms in cols.items()}
                 for s, cols in per_query.items()}
    comparisons = compare_to_baseline(per_query, baseline, correction=correction, family=family)
    return Report(rs, baseline, measures, test, correction, family, alpha, comparisons)


# -- formats ----------------------------------------------------------------------------------
def _system_title(report: Report, system: str) -> str:
    tags = []
    kind = report.results.kind(system)
    if kind == "first_stage":
        tags.append("first stage")
    if system == report.baseline:
        tags.append("baseline")
    return f"{system} ({', '.join(tags)})" if tags else system


def _seeds(report: Report, system: str) -> int:
    return max((c.seeds for (s, _), c in seed_cells(report.results, report.measures[0]).items()
                if s == system), default=0)


def _value(cell: Cell | None, digits: int = 4, pm: str = " ± ") -> str:
    if cell is None:
        return "–"
    text = f"{cell.mean:.{digits}f}"
    if cell.std is not None:
        text += f"{pm}{cell.std:.{digits}f}"
    return text


def to_markdown(report: Report, digits: int = 4) -> str:
    rs = report.results
    lines = [f"# {rs.title}", ""]
    for measure in report.measures:
        cells = seed_cells(rs, measure)
        best = report.best(measure)
        headers = report.headers()
        cols = rs.columns()
        lines += [f"## {measure}", "", report.caption(measure), "",
                  "| system | seeds | " + " | ".join(headers[c] for c in cols) + " |",
                  "|---|---:|" + "---:|" * len(cols)]
        for system in rs.systems():
            row = []
            for col in cols:
                cell = cells.get((system, col))
                text = _value(cell, digits)
                if cell is not None and math.isclose(cell.mean, best[col]):
                    text = f"**{text}**"
                row.append(f"{text} {report.marker(system, col, measure)}".strip())
            lines.append(f"| {_system_title(report, system)} | {_seeds(report, system)} | "
                         + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


CSV_FIELDS = ("measure", "suite", "dataset", "system", "kind", "seeds", "mean", "std",
              "baseline", "delta", "p_t", "p_t_adjusted", "p_wilcoxon", "p_wilcoxon_adjusted",
              "marker", "wins", "ties", "losses", "queries")


def _fmt(x: Any) -> Any:
    if isinstance(x, float):
        return "" if math.isnan(x) else f"{x:.6g}"
    return "" if x is None else x


def to_csv(report: Report) -> str:
    """One row per measure x dataset x system, with every number of the table and the tests."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    rs = report.results
    for measure in report.measures:
        cells = seed_cells(rs, measure)
        for col in rs.columns():
            for system in rs.systems():
                cell = cells.get((system, col))
                if cell is None:
                    continue
                cmp = report.comparison(system, col, measure)
                row = {"measure": measure, "suite": col[0], "dataset": col[1], "system": system,
                       "kind": rs.kind(system), "seeds": cell.seeds, "mean": cell.mean,
                       "std": cell.std, "baseline": report.baseline,
                       "marker": report.marker(system, col, measure)}
                if cmp is not None:
                    row.update(delta=cmp.delta, p_t=cmp.pvalues.get("t"),
                               p_t_adjusted=cmp.adjusted.get("t"),
                               p_wilcoxon=cmp.pvalues.get("wilcoxon"),
                               p_wilcoxon_adjusted=cmp.adjusted.get("wilcoxon"),
                               wins=cmp.wins, ties=cmp.ties, losses=cmp.losses,
                               queries=cmp.queries)
                writer.writerow({k: _fmt(v) for k, v in row.items()})
    return buf.getvalue()


def deltas_csv(report: Report) -> str:
    """Per-query values of each system (averaged over its seeds) and of the baseline."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["measure", "suite", "dataset", "system", "baseline", "query_id",
                     "system_value", "baseline_value", "delta"])
    per_query = seed_averaged_per_query(report.results)
    for cmp in report.comparisons:
        suite, dataset = cmp.dataset.split("\t")
        mine = per_query[cmp.system][cmp.dataset][cmp.measure]
        for qid, delta in cmp.deltas.items():
            value = mine[qid]
            writer.writerow([cmp.measure, suite, dataset, cmp.system, cmp.baseline, qid,
                             f"{value:.6g}", f"{value - delta:.6g}", f"{delta:.6g}"])
    return buf.getvalue()


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "±": r"$\pm$", "α": r"$\alpha$",
                 WIN: r"$\blacktriangle$", LOSS: r"$\blacktriangledown$", "–": "--",
                 "≥": r"$\geq$"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(report: Report, digits: int = 3) -> str:
    """A booktabs table per measure (needs ``\\usepackage{booktabs,amssymb}``)."""
    rs = report.results
    cols = rs.columns()
    headers = report.headers()
    out = ["% irdistill compare: needs \\usepackage{booktabs,amssymb}"]
    for measure in report.measures:
        cells = seed_cells(rs, measure)
        best = report.best(measure)
        out += [r"\begin{table}[t]", r"\centering", r"\small",
                r"\caption{" + latex_escape(report.caption(measure)) + "}",
                r"\begin{tabular}{lr" + "r" * len(cols) + "}", r"\toprule",
                "System & Seeds & " + " & ".join(latex_escape(headers[c]) for c in cols)
                + r" \\", r"\midrule"]
        previous_kind = None
        for system in rs.systems():
            kind = rs.kind(system)
            if previous_kind is not None and KIND_ORDER.get(previous_kind, 3) < 3 <= \
                    KIND_ORDER.get(kind, 3):  # a rule above the first trained system
                out.append(r"\midrule")
            previous_kind = kind
            row = []
            for col in cols:
                cell = cells.get((system, col))
                if cell is None:
                    row.append("--")
                    continue
                text = f"{cell.mean:.{digits}f}"
                if cell.mean is not None and math.isclose(cell.mean, best[col]):
                    text = r"\textbf{" + text + "}"
                if cell.std is not None:
                    text += rf"\,$\pm$\,{cell.std:.{digits}f}"
                marker = report.marker(system, col, measure)
                if marker:
                    text += "$^{" + latex_escape(marker).strip("$") + "}$"
                row.append(text)
            out.append(f"{latex_escape(_system_title(report, system))} & "
                       f"{_seeds(report, system)} & " + " & ".join(row) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def write_report(report: Report, folder: str | Path, stem: str = "comparison") -> list[Path]:
    """``stem.md``, ``stem.csv``, ``stem.tex``, ``per_query.csv`` and ``stem.json``."""
    folder = Path(folder)
    files = []
    for name, text in ((f"{stem}.md", to_markdown(report)), (f"{stem}.csv", to_csv(report)),
                       (f"{stem}.tex", to_latex(report)), ("per_query.csv", deltas_csv(report))):
        with atomic_write(folder / name) as handle:
            handle.write(text)
        files.append(folder / name)
    write_json(folder / f"{stem}.json", {
        "baseline": report.baseline, "test": report.test, "correction": report.correction,
        "family": report.family, "alpha": report.alpha, "notes": report.results.notes,
        "comparisons": [{"system": c.system, "dataset": c.dataset.replace("\t", "/"),
                         "measure": c.measure, "mean": c.mean, "baseline_mean": c.baseline_mean,
                         "delta": c.delta, "p": c.pvalues, "p_adjusted": c.adjusted,
                         "wins": c.wins, "ties": c.ties, "losses": c.losses}
                        for c in report.comparisons]})
    files.append(folder / f"{stem}.json")
    return files
