"""`irdistill compare`: load results (a grid, or run files with qrels), test every system
against a baseline, write the tables (:mod:`irdistill.experiments.report`) and the plots
(:mod:`irdistill.experiments.plots`)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from irdistill.errors import IrdistillError
from irdistill.evaluation.metrics import DEFAULT_MEASURES
from irdistill.experiments.plots import make_plots
from irdistill.experiments.report import (Report, build_report, load_grid_results,
                                          load_run_results, parse_run_args, write_report)


def compare(sources: Sequence[str], *, qrels: str | None = None, baseline: str | None = None,
            measures: Sequence[str] | None = None, test: str = "t", correction: str = "holm",
            family: str = "table", alpha: float = 0.05, output: str | Path | None = None,
            dataset: str | None = None, first_stage: str | None = None,
            untrained: str | None = None, plots: bool = True) -> tuple[Report, list[Path]]:
    """Load results (one grid folder/file, or run files with ``qrels``), compare them with the
    baseline, and write the tables (and plots) to ``output``."""
    if qrels is None:
        if len(sources) != 1:
            raise IrdistillError("give one experiment folder (or grid file), or run files with "
                                 "--qrels")
        rs = load_grid_results(sources[0])
        output = Path(output) if output else rs.root / "report"
    else:
        rs = load_run_results(parse_run_args(sources), qrels, measures or DEFAULT_MEASURES,
                              dataset=dataset, first_stage=first_stage, untrained=untrained)
        output = Path(output or "comparison")
    report = build_report(rs, baseline, measures=measures, test=test, correction=correction,
                          family=family, alpha=alpha)
    files = write_report(report, output)
    if plots:
        files += make_plots(report, output / "plots")
    return report, files
