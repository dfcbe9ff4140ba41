"""Every recipe in recipes/ and experiments/ (and the demo's grid) parses, expands into valid configs and dry-runs,
exactly as written: nothing is substituted, so a recipe naming a loss, data mode, config key
or grid kind that does not exist fails here."""
from pathlib import Path

import pytest

from irdistill.config import read_yaml
from irdistill.experiments.grid import grid_from_dict, run_grid

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted([*REPO.glob("recipes/**/*.yaml"), *REPO.glob("experiments/*.yaml"),
                  REPO / "irdistill" / "experiments" / "demo.yaml"])


def test_there_are_recipes_of_the_three_studies():
    names = {p.relative_to(REPO).as_posix() for p in RECIPES}
    for study in ("study1", "study2", "study3"):
        assert any(f"full/{study}" in n for n in names), study
        assert any(f"mini/{study}" in n for n in names), study
    assert "experiments/scifact-objectives.yaml" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_recipe_parses_and_dry_runs(path, tmp_path):
    data = read_yaml(path)
    grid = grid_from_dict(data, base_dir=path.parent, output=tmp_path / "out",
                          source=str(path))
    cells = grid.cells()
    assert len(cells) >= (1 if path.name == "demo.yaml" else 2)  # the demo is one recipe
    assert all(grid.model_kind.seed(c.config) == c.seed for c in cells)
    status = run_grid(grid, dry_run=True)
    assert len(status.cells) == len(cells) and not (tmp_path / "out").exists()
    assert all(s.training == "todo" for s in status.cells)


def test_scifact_objectives_is_the_measured_experiment():
    data = read_yaml(REPO / "experiments" / "scifact-objectives.yaml")
    assert len(data["axes"]["objective"]) >= 4 and len(data["axes"]["seed"]) == 2
    assert data["suites"] == ["scifact", "cranfield"] and data["base"]["model"]["name"] == "minilm"


def test_splade_study_script_is_the_mini_recipe_with_two_suites(tmp_path, capsys):
    """The study script's grid has the recipe's cells (same hashes: same folders), named for
    its table, and evaluates the shared zero-shot model on SciFact and Cranfield."""
    import importlib.util

    path = REPO / "scripts" / "splade_scifact_cranfield.py"
    spec = importlib.util.spec_from_file_location("splade_study", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    recipe = REPO / "recipes" / "mini" / "study3-splade-adaptation.yaml"
    plain = grid_from_dict(read_yaml(recipe), base_dir=recipe.parent, output=tmp_path / "a")
    grid = script.study_grid(tmp_path / "b")
    assert [c.hash for c in grid.cells()] == [c.hash for c in plain.cells()]
    assert [c.system for c in grid.cells()] == [f"adapted, k = {k}" for k in range(4)]
    assert [(s.datasets[0].id, s.depth, s.measures) for s in grid.suite_settings()] == [
        ("beir/scifact/test", 100, ["nDCG@10", "R@100"]),
        ("cranfield", 100, ["nDCG@10", "R@100"])]
    assert script.main(["--output", str(tmp_path / "b"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "done: 0/4" in out  # BM25 and the zero-shot model on each suite
    assert out.count("train: todo") == 4 and not (tmp_path / "b").exists()
