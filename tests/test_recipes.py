"""Every recipe in recipes/ and experiments/ parses, expands into valid configs and dry-runs.

Recipes name objectives, data modes and config keys of the whole toolkit, some of which are
built on other branches. Each recipe is validated against what exists at run time; a name that
does not exist yet must be listed in EXPECTED_FROM_OTHER_WORK below (with the issue that brings
it), otherwise the test fails. Once those branches are merged the names exist and the recipes
are validated in full, with nothing substituted.
"""
import copy
import dataclasses
from pathlib import Path

import pytest

from irdistill.config import Config, read_yaml
from irdistill.errors import IrdistillError
from irdistill.experiments.grid import KINDS, grid_from_dict, run_grid

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted([*REPO.glob("recipes/**/*.yaml"), *REPO.glob("experiments/*.yaml")])

EXPECTED_FROM_OTHER_WORK = {
    # issue 3, the loss library and its data modes
    "loss:hinge", "loss:ranknet", "loss:margin_mse", "loss:kl", "loss:adr_mse",
    "loss:listnet", "loss:approx_ndcg", "loss:lambdaloss",
    "mode:teacher_scores", "mode:teacher_ranks", "mode:triples",
    "key:stages",  # two-stage recipes: a list of partial configs trained one after the other
    "key:data.triples",  # the path of a streamed triple file (mode 'triples')
    # issue 9, SPLADE: the grid kind that trains and adapts sparse retrievers
    "kind:splade-adapt",
}
PLACEHOLDER = {"loss": "infonce", "mode": "labels"}


def _present():
    from irdistill.data.sampling import MODES
    from irdistill.losses import LOSSES

    fields = {f.name for f in dataclasses.fields(Config)}
    return set(LOSSES), set(MODES), fields


def substitute(patch: dict, base: dict, missing: set, stages_ok: bool) -> dict:
    """A copy of ``patch`` with names that do not exist yet replaced by placeholders (each
    recorded in ``missing``); the stages of a two-stage recipe are each checked as a config."""
    from irdistill.config import from_dict, merge

    losses, modes, _ = _present()
    out = copy.deepcopy(patch)
    pending = {}  # keeps substituted cells distinct from each other (and their hashes apart)
    if "loss" in out and out["loss"] not in losses:
        missing.add(f"loss:{out['loss']}")
        pending["loss"] = out["loss"]
        out["loss"] = PLACEHOLDER["loss"]
    from irdistill.config import DataConfig

    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    for key in [k for k in out.get("data") or {} if k not in data_fields]:
        missing.add(f"key:data.{key}")
        pending[f"data.{key}"] = out["data"].pop(key)
    mode = (out.get("data") or {}).get("mode")
    if mode is not None and mode not in modes:
        missing.add(f"mode:{mode}")
        pending["mode"] = mode
        out["data"]["mode"] = PLACEHOLDER["mode"]
    if "stages" in out:
        stages = [substitute(stage, base, missing, stages_ok) for stage in out["stages"]]
        for stage in stages:  # each stage on its own must be a valid config over the base
            from_dict(Config, merge({k: v for k, v in base.items() if k != "stages"}, stage))
        if stages_ok:
            out["stages"] = stages
        else:
            missing.add("key:stages")
            pending["stages"] = repr(out.pop("stages"))
    if pending:
        out["loss_params"] = {**out.get("loss_params", {}), "_pending": pending}
    return out


def resolved(data: dict) -> tuple[dict, set]:
    """The recipe with every missing name substituted, and the set of those names."""
    _, _, fields = _present()
    stages_ok = "stages" in fields
    missing: set = set()
    data = copy.deepcopy(data)
    base = data.get("base") or {}
    data["base"] = substitute(base, base, missing, stages_ok)
    for name, values in (data.get("axes") or {}).items():
        if name in ("objective", "loss") and isinstance(values, list):
            values = {str(v): {"loss": v} for v in values}  # the same cells, as partial configs
        if isinstance(values, dict):
            data["axes"][name] = {label: substitute(v, base, missing, stages_ok)
                                  if isinstance(v, dict) else v for label, v in values.items()}
    return data, missing


def test_there_are_recipes_of_the_three_studies():
    names = {p.relative_to(REPO).as_posix() for p in RECIPES}
    for study in ("study1", "study2", "study3"):
        assert any(f"full/{study}" in n for n in names), study
        assert any(f"mini/{study}" in n for n in names), study
    assert "experiments/scifact-objectives.yaml" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_recipe_parses_and_dry_runs(path, tmp_path):
    data = read_yaml(path)
    kind = data.get("kind", "cross-encoder")
    if kind not in KINDS:
        assert f"kind:{kind}" in EXPECTED_FROM_OTHER_WORK, f"unknown grid kind '{kind}'"
        with pytest.raises(IrdistillError, match=f"unknown grid kind '{kind}'"):
            grid_from_dict(data, base_dir=path.parent)
        return
    fixed, missing = resolved(data)
    unexpected = missing - EXPECTED_FROM_OTHER_WORK
    assert not unexpected, f"{path.name} names what nothing provides: {sorted(unexpected)}"
    if not missing:  # everything exists: the recipe itself must load, unchanged
        fixed = data
    grid = grid_from_dict(fixed, base_dir=path.parent, output=tmp_path / "out",
                          source=str(path))
    cells = grid.cells()
    assert len(cells) >= 2
    assert all(c.config.train.seed == c.seed for c in cells)
    status = run_grid(grid, dry_run=True)
    assert len(status.cells) == len(cells) and not (tmp_path / "out").exists()
    assert all(s.training == "todo" for s in status.cells)


def test_scifact_objectives_is_the_measured_experiment():
    data = read_yaml(REPO / "experiments" / "scifact-objectives.yaml")
    assert len(data["axes"]["objective"]) >= 4 and len(data["axes"]["seed"]) == 2
    assert data["suites"] == ["scifact", "cranfield"] and data["base"]["model"]["name"] == "minilm"
