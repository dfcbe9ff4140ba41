"""Comparison reports: means and spread over seeds, pairing of seed-averaged queries, markers,
and the Markdown, CSV, LaTeX and per-query outputs; comparison of TREC runs from the CLI."""
import csv
import io
import statistics

import numpy as np
import pytest
from conftest import DL19
from scipy import stats
from typer.testing import CliRunner

from irdistill.errors import IrdistillError
from irdistill.experiments.report import (Result, ResultSet, build_report, deltas_csv,
                                          latex_escape, seed_averaged_per_query, to_csv, to_latex,
                                          to_markdown, write_report)

RNG = np.random.default_rng(3)
N = 30
BASE = RNG.uniform(0.2, 0.6, N)


def _result(system, kind, values, seed=None, dataset="d_1", suite="s"):
    per_query = {f"q{i}": {"nDCG@10": float(v)} for i, v in enumerate(values)}
    return Result(system, kind, dataset, {"nDCG@10": float(np.mean(values))}, per_query, suite,
                  seed)


@pytest.fixture
def results():
    good = [BASE + 0.2 + RNG.normal(0, 0.02, N) for _ in range(2)]
    same = [BASE + RNG.normal(0, 0.05, N) for _ in range(3)]
    rs = ResultSet([
        _result("BM25", "first_stage", BASE),
        _result("untrained", "untrained", BASE - 0.15),
        *[_result("good", "trained", v, seed) for seed, v in enumerate(good)],
        *[_result("same", "trained", v, seed) for seed, v in enumerate(same)],
    ], title="toy", notes=["first stage: BM25 top-20", "untrained: untrained"])
    return rs, good, same


def test_seed_means_std_and_pairing(results):
    rs, good, same = results
    assert rs.systems() == ["BM25", "untrained", "good", "same"]
    report = build_report(rs)  # default baseline: the first stage
    assert report.baseline == "BM25"
    averaged = seed_averaged_per_query(rs)["good"]["s\td_1"]["nDCG@10"]
    assert averaged["q3"] == pytest.approx((good[0][3] + good[1][3]) / 2)
    cmp = report.comparison("good", ("s", "d_1"), "nDCG@10")
    paired = np.mean(good, axis=0)
    assert cmp.pvalues["t"] == pytest.approx(stats.ttest_rel(paired, BASE).pvalue)
    assert cmp.pvalues["wilcoxon"] == pytest.approx(stats.wilcoxon(paired, BASE).pvalue)
    assert len(report.comparisons) == 3  # untrained, good, same against BM25
    assert report.marker("good", ("s", "d_1"), "nDCG@10") == "▲"
    assert report.marker("untrained", ("s", "d_1"), "nDCG@10") == "▼"
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    row = next(r for r in rows if r["system"] == "same")
    seed_means = [float(np.mean(v)) for v in same]
    assert float(row["mean"]) == pytest.approx(statistics.fmean(seed_means), abs=1e-6)
    assert float(row["std"]) == pytest.approx(statistics.stdev(seed_means), rel=1e-4)
    assert row["seeds"] == "3" and row["kind"] == "trained"
    assert int(row["wins"]) + int(row["ties"]) + int(row["losses"]) == N
    bm25 = next(r for r in rows if r["system"] == "BM25")
    assert bm25["std"] == "" and bm25["p_t"] == "" and bm25["kind"] == "first_stage"


def test_markdown_states_first_stage_untrained_and_test(results):
    rs, _, _ = results
    md = to_markdown(build_report(rs, "same", correction="bonferroni"))
    assert "| BM25 (first stage) | 1 |" in md and "| untrained | 1 |" in md
    assert "| same (baseline) | 3 |" in md
    assert "paired t-test, Bonferroni correction" in md and "first stage: BM25 top-20" in md
    good_row = next(line for line in md.splitlines() if line.startswith("| good "))
    assert "▲" in good_row and "**" in good_row and " ± " in good_row  # best, with seeds
    wilcoxon = to_markdown(build_report(rs, test="wilcoxon"))
    assert "Wilcoxon signed-rank test" in wilcoxon


def test_latex_and_per_query_outputs(results, tmp_path):
    rs, good, _ = results
    report = build_report(rs)
    tex = to_latex(report)
    assert r"\toprule" in tex and r"\bottomrule" in tex and "d\\_1" in tex
    assert r"$^{\blacktriangle}$" in tex and r"$^{\blacktriangledown}$" in tex
    assert latex_escape("a_b & 50% ±") == r"a\_b \& 50\% $\pm$"
    rows = list(csv.DictReader(io.StringIO(deltas_csv(report))))
    assert len(rows) == 3 * N
    row = next(r for r in rows if r["system"] == "good" and r["query_id"] == "q0")
    assert float(row["delta"]) == pytest.approx((good[0][0] + good[1][0]) / 2 - BASE[0],
                                                abs=1e-5)
    files = write_report(report, tmp_path)
    assert sorted(f.name for f in files) == ["comparison.csv", "comparison.json",
                                             "comparison.md", "comparison.tex", "per_query.csv"]


def test_plots_are_written_as_png_and_pdf(results, tmp_path):
    from irdistill.experiments.plots import make_plots

    rs, _, _ = results
    files = make_plots(build_report(rs), tmp_path)
    names = sorted(f.name for f in files)
    assert names == ["spread-nDCG_10.pdf", "spread-nDCG_10.png", "winloss-nDCG_10.pdf",
                     "winloss-nDCG_10.png"]  # no training logs: no loss curves
    assert (tmp_path / "spread-nDCG_10.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "winloss-nDCG_10.pdf").read_bytes()[:5] == b"%PDF-"


def test_report_errors(results):
    rs, _, _ = results
    with pytest.raises(IrdistillError, match="unknown baseline system 'god'.*did you mean 'good'"):
        build_report(rs, "god")
    with pytest.raises(IrdistillError, match="unknown measure 'nDCG@20'"):
        build_report(rs, measures=["nDCG@20"])
    with pytest.raises(IrdistillError, match="correction"):
        build_report(rs, correction="sidak")


def test_compare_runs_from_the_cli(tmp_path):
    from irdistill.cli import app

    bm25 = DL19 / "rankllmdata_BM25_dl19_top100.trec"
    splade = DL19 / "rankllmdata_SPLADE_P_P_ENSEMBLE_DISTIL_dl19_top100.trec"
    result = CliRunner().invoke(app, [
        "compare", f"bm25={bm25}", f"splade={splade}", f"splade={splade}",
        "--qrels", str(DL19 / "qrels.dl19-passage.txt"), "--first-stage", "bm25",
        "--dataset", "dl19", "-m", "nDCG@10 AP(rel=2)", "--output", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "| bm25 (first stage, baseline) | 1 | 0.5058 |" in result.output  # official value
    splade_row = next(line for line in result.output.splitlines() if line.startswith("| splade"))
    assert "▲" in splade_row and "| 2 |" in splade_row  # two 'seeds' of the same run
    assert "untrained: (not given" in result.output
    assert (tmp_path / "cmp" / "plots" / "winloss-nDCG_10.png").exists()
    bad = CliRunner().invoke(app, ["compare", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "not the output folder of an experiment" in bad.output


def test_learning_curve_reads_the_evaluations_of_a_training_log(tmp_path):
    import json

    from irdistill.experiments.plots import plot_learning_curve, read_evaluations

    log = tmp_path / "run" / "train_log.jsonl"
    log.parent.mkdir()
    lines = [{"step": 5, "loss": 1.0}, {"step": 10, "eval_nDCG@10": 0.4, "eval_queries": 8,
                                        "train_seconds": 60.0, "eval_seconds": 3.0},
             {"step": 20, "eval_nDCG@10": 0.5, "eval_queries": 8, "train_seconds": 120.0,
              "eval_seconds": 6.0}, {"step": 20, "train_runtime": 130.0, "eval_seconds": 6.0}]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = read_evaluations(log)
    assert [(r["step"], r["eval_nDCG@10"]) for r in rows] == [(10, 0.4), (20, 0.5)]
    files = plot_learning_curve({"run": log}, tmp_path / "curve", {"bm25": 0.45},
                                x="train_seconds")
    assert sorted(f.suffix for f in files) == [".pdf", ".png"]
    assert all(f.stat().st_size > 0 for f in files)


def test_learning_curve_against_groups_scales_steps_by_the_batch_size(tmp_path, monkeypatch):
    """--x groups: runs of other batch sizes on one axis of training data (steps x batch)."""
    import json

    import matplotlib.axes

    from irdistill.errors import IrdistillError
    from irdistill.experiments.plots import plot_learning_curve

    logs = {}
    for name, batch in (("b16", 16), ("b8", 8)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text(f"train: {{batch_size: {batch}}}\n")
        (folder / "train_log.jsonl").write_text("".join(
            json.dumps({"step": s, "eval_nDCG@10": 0.1 * i}) + "\n"
            for i, s in enumerate((10, 20), start=1)))
        logs[name] = folder / "train_log.jsonl"
    plotted = {}
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, xs, ys, **kw: (
        plotted.__setitem__(kw.get("label"), list(xs)), real(self, xs, ys, **kw))[1])
    plot_learning_curve(logs, tmp_path / "curve", x="groups")
    assert plotted == {"b16": [160, 320], "b8": [80, 160]}
    (tmp_path / "b8" / "config.yaml").unlink()
    with pytest.raises(IrdistillError, match="no config.yaml beside the training log"):
        plot_learning_curve(logs, tmp_path / "curve", x="groups")
