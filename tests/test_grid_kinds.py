"""Grid kinds beyond cross-encoders: a SPLADE grid and the SPLADE adaptation study run through
the same runner, evaluated as retrievers; the zero-shot model the adapted cells are compared
with is trained once and shared; a rerun trains and evaluates nothing."""
import json

import pytest
from splade_helpers import parameters, tiny_mlm  # noqa: F401  (fixture)

from irdistill.experiments import grid as grid_module
from irdistill.experiments import kinds as kinds_module
from irdistill.experiments.grid import load_grid, run_grid
from irdistill.experiments.report import load_grid_results

SOURCE = """
    data: {{collection: beir/scifact/train, depth: 20, negatives: 1, max_queries: 8}}
    model: {{name: {model}, max_doc_length: 24}}
    train: {{max_steps: 2, batch_size: 4, lr: 1.0e-2, save_steps: 1}}"""
SUITE = """
suites: [mini]
suite_definitions:
  mini:
    datasets: [{{id: {folder}, split: test, name: mini}}]
    measures: [nDCG@10, R@100]
    depth: 3
output: {output}
"""


def write(tmp_path, text):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_a_splade_grid_trains_and_retrieves(tmp_path, tiny_mlm, beir_folder, scifact_available):
    text = ("name: splade-toy\nkind: splade\nbase:" + SOURCE.replace("\n    ", "\n  ")
            + "\naxes:\n  lambda_d: [1.0e-3, 1.0e-2]\n" + SUITE).format(
        model=tiny_mlm, folder=beir_folder, output=tmp_path / "out")
    grid = load_grid(write(tmp_path, text))
    status = run_grid(grid, show_progress=False)
    assert [c.training for c in status.cells] == ["done", "done"]
    results = load_grid_results(tmp_path / "out")
    systems = {r.system for r in results.results}
    assert systems == {"BM25", "0.001", "0.01"}
    for cell in status.cells:  # a retriever: its own run over the whole collection, indexed
        (run,) = (cell.folder / "eval" / "mini").glob("*.trec")
        assert run.read_text().strip()
        (index,) = (cell.folder / "eval" / "mini").glob("*.index")
        assert (index / "meta.json").exists()


def test_the_splade_adaptation_study_is_a_grid_with_a_shared_zero_shot_model(
        tmp_path, tiny_mlm, beir_folder, scifact_available, monkeypatch):
    text = ("name: adapt-toy\nkind: splade-adapt\nbase:\n  source:" + SOURCE + """
  mlm: {{steps: 2, batch_size: 2, max_length: 16, lr: 1.0e-2}}
  source_control: true
axes:
  target: [{folder}]
  k: [0, 1]
""" + SUITE).format(model=tiny_mlm, folder=beir_folder, output=tmp_path / "out")
    path = write(tmp_path, text)
    trained = []
    zero_shot = kinds_module.zero_shot_splade  # where the splade-adapt kind calls it

    def counted(*args, **kwargs):
        trained.append(args[1])
        return zero_shot(*args, **kwargs)

    monkeypatch.setattr(kinds_module, "zero_shot_splade", counted)
    grid = load_grid(path)
    assert [c.labels for c in grid.cells()] == [{"target": str(beir_folder), "k": "0"},
                                              {"target": str(beir_folder), "k": "1"}]
    status = run_grid(grid, show_progress=False)
    assert len(trained) == 1  # one zero-shot model for both cells
    assert [c.training for c in status.cells] == ["done", "done"]
    results = load_grid_results(tmp_path / "out")
    systems = sorted({r.system for r in results.results})
    cell_names = [c.cell.system for c in status.cells]
    assert set(systems) >= {"zero-shot SPLADE", *cell_names,
                            *(f"{n} source domain" for n in cell_names)}
    for r in results.results:
        assert 0 <= r.aggregate["nDCG@10"] <= 1
    done = json.loads((status.cells[1].folder / "done.json").read_text())
    assert set(done["models"]) == {"", " source domain"}

    # a rerun trains nothing and evaluates nothing
    monkeypatch.setattr(grid_module, "splade_retrieval",
                        lambda *a, **k: lambda collection: pytest.fail("evaluated again"))
    import irdistill.adapt.recipe as again

    monkeypatch.setattr(again, "adapt", lambda *a, **k: pytest.fail("trained again"))
    run_grid(load_grid(path), show_progress=False)
    assert len(trained) == 2  # the shared model's call returns the finished model at once


def test_the_study3_mini_recipe_dry_runs_with_its_shared_model():
    from pathlib import Path

    recipe_file = Path(__file__).resolve().parent.parent / "recipes/mini/study3-splade-adaptation.yaml"
    grid = load_grid(recipe_file)
    assert grid.kind == "splade-adapt" and len(grid.cells()) == 4
    assert [c.config.layers for c in grid.cells()] == [0, 1, 2, 3]
    shared = grid.model_kind.shared_models([c.config for c in grid.cells()])
    assert len(shared) == 1 and next(iter(shared.values())).system == "zero-shot SPLADE"


def test_adaptation_cells_are_evaluated_on_their_target_and_sources_are_told_apart(
        tmp_path, tiny_mlm, beir_folder):
    text = ("name: adapt-two\nkind: splade-adapt\nbase:\n  source:" + SOURCE + """
axes:
  target: [{folder}]
  source.lambda_d: [1.0e-3, 1.0e-2]
""" + SUITE).format(model=tiny_mlm, folder=beir_folder, output=tmp_path / "out")
    grid = load_grid(write(tmp_path, text))
    shared = grid.model_kind.shared_models([c.config for c in grid.cells()])
    names = sorted(m.system for m in shared.values())
    assert len(names) == 2 and len(set(names)) == 2  # two zero-shot models, two rows
    assert all(n.startswith("zero-shot SPLADE ") for n in names)
    from irdistill.errors import IrdistillError

    elsewhere = text.replace(f"target: [{beir_folder}]", "target: [cranfield]")
    with pytest.raises(IrdistillError, match="evaluated on no dataset"):
        run_grid(load_grid(write(tmp_path, elsewhere)), dry_run=True)


def test_a_cross_encoder_grid_writes_its_figures_into_each_model_card(tmp_path, tiny_bert,
                                                                       beir_folder,
                                                                       scifact_available):
    import yaml

    text = ("name: cards\nbase:\n  data: {{collection: beir/scifact/train, depth: 20, "
            "negatives: 3, max_queries: 8}}\n  model: {{name: {model}, max_doc_length: 32}}\n"
            "  train: {{max_steps: 2, batch_size: 4}}\naxes:\n  objective: [bce, infonce]\n"
            + SUITE.replace("R@100", "RR@10")).format(model=tiny_bert, folder=beir_folder,
                                                      output=tmp_path / "out")
    status = run_grid(load_grid(write(tmp_path, text)), show_progress=False)
    results = {r.system: r.aggregate for r in load_grid_results(tmp_path / "out").results}
    for cell in status.cells:
        card = (cell.folder / "model" / "README.md").read_text()
        meta = yaml.safe_load(card.split("---\n")[1])
        (entry,) = meta["model-index"][0]["results"]
        figures = {m["name"]: m["value"] for m in entry["metrics"]}
        assert entry["dataset"]["name"] == "mini/mini"
        assert figures["nDCG@10"] == pytest.approx(results[cell.cell.system]["nDCG@10"], abs=1e-4)
