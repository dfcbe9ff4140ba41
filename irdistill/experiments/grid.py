"""Grids of training recipes: axes expanded over a base config, trained and evaluated cell by cell.

A grid file (YAML)::

    name: scifact-objectives
    base:                       # a training config (or the path of one, relative to this file)
      data: {collection: beir/scifact/train, negatives: 3}
      model: {name: minilm, max_doc_length: 128}
      train: {max_steps: 40, batch_size: 8, precision: bf16}
    axes:
      objective: [bce, infonce, mse]       # alias of the config key 'loss'
      seed: [13, 42]                       # alias of 'train.seed'
      train.lr: [3.0e-5, 1.0e-4]           # any dotted config key
      recipe:                              # label -> partial config, merged at the root
        margin-mse: {loss: margin_mse, data: {mode: teacher_scores, teacher_run: t.trec}}
    exclude: [{objective: bce, seed: 42}]  # drop the cells matching every pair of one entry
    suites: [scifact, cranfield]           # built-in names or names defined below
    suite_definitions: {}                  # user suites (or the path of a YAML file of them)
    baselines:                             # systems with no training (experiments/systems.py)
      bi-encoder: {type: dense, model: minilm, depth: 100}
      hybrid: {type: hybrid, model: minilm}  # first stage + bi-encoder z-scores
    evaluation: {depth: 20, precision: bf16, batch_size: 64,
                 untrained: true,          # the untrained backbone is a row (default)
                 fusion: false}            # also each re-ranker fused with the first stage
    baseline: BM25                         # default baseline of `irdistill compare`
    output: runs/scifact-objectives        # relative to the current directory
    resources: {gpus: 1, partition: gpu}   # a cell's job (--launcher), lease_s (docs/cluster.md)

``kind`` says what the cells train and how they are evaluated (:mod:`irdistill.experiments.kinds`:
``cross-encoder``, the default, re-ranks each suite's first stage; ``splade`` and
``splade-adapt`` retrieve from their own index); ``base`` is a config of that kind.

Axis aliases (of a cross-encoder grid): ``objective`` = ``loss``, ``backbone`` = ``model.name``, ``teacher`` =
``data.teacher_run``, ``data`` = ``data.collection``, ``seed`` = ``train.seed``, ``lr`` =
``train.lr``. A value given as a mapping is a partial config merged at the root.

Each cell's folder is ``OUTPUT/cells/<config_hash>``: the same resolved config is the same
folder, in this grid or any other grid sharing the output. A cell whose training finished
(``done.json``) is not trained again; an interrupted one resumes from its checkpoints
(:func:`irdistill.train.engine.train`). Every evaluation (system x suite dataset) is written
atomically and reused. The first stage, the untrained backbone (cross-encoders) and the
models every cell shares (the zero-shot SPLADE model of an adaptation grid, trained once in
``OUTPUT/shared/models``) and the ``baselines`` are evaluated once per dataset, in
``OUTPUT/shared``, and listed beside the trained cells in every table. With
``evaluation.fusion`` each trained re-ranker is also listed fused with the first stage, by a
weight tuned on the cell's held-out training queries (:mod:`irdistill.experiments.systems`).
``experiment.json`` in the output folder indexes the cells and evaluation files for
``irdistill compare``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irdistill.config import (Config, config_hash, from_dict, merge, parse_overrides, read_yaml,
                              to_dict)
from irdistill.data.trec import read_run
from irdistill.distributed import (broadcast, device_for_rank, is_main, main_process_first,
                                   wait_for_everyone)
from irdistill.errors import IrdistillError, suggest, unknown_name
from irdistill.evaluation.suites import (VARIANT_TITLES, Suite, check_suite, dataset_key,
                                         evaluate_on_dataset, first_stage_run, get_suite,
                                         load_dataset, load_suites, slug, suite_from_dict)
from irdistill.experiments.claims import (CLAIMS_LOG, DEFAULT_LEASE, holder, log_claim, try_claim,
                                          worker_id)
from irdistill.experiments.kinds import AXIS_ALIASES, Kind, get_kind, splade_retrieval
from irdistill.experiments.systems import (Baseline, check_fusion, fused_run, fusion_weight,
                                           parse_baselines)
from irdistill.io import write_json
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.model_card import add_evaluation
from irdistill.provenance import write_provenance
from irdistill.train.folder import RunFolder
from irdistill.utils import seed_everything, stable_hash

log = logging.getLogger(__name__)

SEED_KEY = "train.seed"
GRID_KEYS = ("name", "description", "kind", "base", "axes", "exclude", "suites",
             "suite_definitions", "baselines", "evaluation", "baseline", "output", "resources")
MANIFEST = "experiment.json"
FAILED = "failed.json"  # in a cell's folder: the worker and error line of its last failure
RETRIEVAL_DEPTH = 1000  # documents a retriever (SPLADE) returns per query, at least


@dataclass
class EvaluationSettings:
    depth: int | None = None  # overrides the depth of every suite
    measures: list[str] | None = None  # overrides the measures of every suite
    precision: str | None = None  # default: each cell's train.precision
    batch_size: int = 64
    untrained: bool = True  # the untrained backbone is a row of the tables (cross-encoders)
    fusion: bool = False  # each re-ranker also fused with the first stage (systems.py)


@dataclass
class Resources:
    """What one cell's job asks a cluster for (``experiment run --launcher``), and the lease of
    a claim (every run: :mod:`irdistill.experiments.claims`)."""

    gpus: int = 0  # GPUs per node for a cell (one process each, DDP across them)
    nodes: int = 1
    processes: int | None = None  # processes per node (default: one per GPU, else 1); DDP
    cpus: int | None = None  # CPUs per process (default: the scheduler's)
    mem_gb: float | None = None
    time_min: int | None = None  # a job's wall-clock limit (SLURM default 240; local: none)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    slurm: dict[str, Any] = field(default_factory=dict)  # further sbatch options, e.g. constraint
    lease_s: float = DEFAULT_LEASE  # a claim without heartbeat for this long is taken over

    def check(self) -> None:
        for key in ("gpus", "nodes", "time_min", "processes"):
            value = getattr(self, key)
            if key in ("processes", "time_min") and value is None:
                continue
            if not isinstance(value, int) or value < (0 if key == "gpus" else 1):
                raise IrdistillError(f"resources.{key}={value!r} must be a whole number of at "
                                     f"least {0 if key == 'gpus' else 1}")
        if self.lease_s <= 0:
            raise IrdistillError(f"resources.lease_s={self.lease_s} must be positive",
                                 hint="e.g. 300 (seconds)")


@dataclass
class AxisValue:
    label: str
    patch: dict[str, Any]  # partial config merged over the base


@dataclass
class Axis:
    name: str
    key: str | None  # the config key the values set (None: values are partial configs)
    values: list[AxisValue]
    seed_key: str = SEED_KEY  # the grid kind's seed key

    @property
    def is_seed(self) -> bool:
        return self.key == self.seed_key


@dataclass
class Cell:
    labels: dict[str, str]  # axis name -> value label
    config: Any  # of the grid kind's config class (a cross-encoder Config by default)
    hash: str
    system: str  # the labels of every axis but the seed
    seed: int

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.labels.items())


@dataclass
class Grid:
    name: str
    base: dict[str, Any]
    axes: list[Axis]
    suites: list[Suite]
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    baseline: str | None = None
    output: Path = Path("runs")
    exclude: list[dict[str, str]] = field(default_factory=list)
    description: str = ""
    kind: str = "cross-encoder"
    source: str | None = None
    baselines: list[Baseline] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)

    # -- expansion ------------------------------------------------------------------------
    @property
    def model_kind(self) -> Kind:
        return get_kind(self.kind)

    def cells(self) -> list[Cell]:
        """Every combination of axis values (minus ``exclude``), each a resolved config."""
        kind = self.model_kind
        system_axes = [a for a in self.axes if not a.is_seed]
        cells: list[Cell] = []
        seen: dict[str, Cell] = {}
        for combo in itertools.product(*(a.values for a in self.axes)):
            labels = {a.name: v.label for a, v in zip(self.axes, combo)}
            if any(all(labels.get(k) == v for k, v in rule.items()) for rule in self.exclude):
                continue
            data = dict(self.base)
            for value in combo:
                data = merge(data, value.patch)
            where = "cell " + ", ".join(f"{k}={v}" for k, v in labels.items())
            try:
                config = from_dict(kind.config_cls, data)
            except IrdistillError as exc:
                exc.message = f"{where}: {exc.message}" if labels else exc.message
                raise
            digest = config_hash(config)
            system = " / ".join(labels[a.name] for a in system_axes) or self.name
            cell = Cell(labels, config, digest, system, kind.seed(config))
            if digest in seen:
                raise IrdistillError(f"{where} has the same config as cell "
                                     f"{seen[digest].describe()}",
                                     hint="two axis values set the same thing; remove one")
            seen[digest] = cell
            cells.append(cell)
        if not cells:
            raise IrdistillError("the grid has no cell", hint="check 'exclude'")
        return cells

    def suite_settings(self) -> list[Suite]:
        e = self.evaluation
        return [s.with_overrides(e.depth, e.measures) for s in self.suites]

    def cell_dir(self, cell: Cell) -> Path:
        return self.output / "cells" / cell.hash

    def first_stage_name(self) -> str:
        names = {s.first_stage_name() for s in self.suites}
        return names.pop() if len(names) == 1 else "first stage"


# -- loading ----------------------------------------------------------------------------------
def _nest(dotted: str, value: Any) -> dict[str, Any]:
    """``("train.seed", 1)`` -> ``{"train": {"seed": 1}}``."""
    for key in reversed(dotted.split(".")):
        value = {key: value}
    return value


def _parse_axis(name: str, raw: Any, kind: Kind | None = None) -> Axis:
    aliases = kind.aliases if kind is not None else AXIS_ALIASES
    key = aliases.get(name, name)
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [(None, v) for v in raw]
    else:
        items = [(None, raw)]
    if not items:
        raise IrdistillError(f"axis '{name}' has no values")
    values = []
    all_patches = True
    for label, value in items:
        if isinstance(value, dict):
            if label is None:
                raise IrdistillError(f"axis '{name}': a partial config needs a label",
                                     hint=f"write '{name}: {{label: {{...}}}}'")
            patch = value
        else:
            all_patches = False
            patch = _nest(key, value)
            label = str(value) if label is None else str(label)
        values.append(AxisValue(str(label), patch))
    labels = [v.label for v in values]
    if len(set(labels)) != len(labels):
        raise IrdistillError(f"axis '{name}' has the same label twice: {labels}")
    return Axis(name, None if all_patches else key, values,
                kind.seed_key if kind is not None else SEED_KEY)


def _resolve_suites(names: Any, definitions: Any, base_dir: Path) -> list[Suite]:
    user = {}
    if isinstance(definitions, str):  # a YAML file of suites, relative to the grid file
        user = load_suites(base_dir / definitions)
    elif definitions:
        if not isinstance(definitions, dict):
            raise IrdistillError("'suite_definitions' must map suite names to their settings")
        user = {n: suite_from_dict(n, body, "suite_definitions") for n, body in
                definitions.items()}
    if isinstance(names, str):
        names = [names]
    if not names:
        raise IrdistillError("the grid names no evaluation suite",
                             hint="add 'suites: [scifact]' (see `irdistill experiment suites`)")
    return [check_suite(get_suite(n, user)) for n in names]


def grid_from_dict(data: dict[str, Any], *, base_dir: Path = Path("."),
                   overrides: list[str] | None = None, output: str | Path | None = None,
                   source: str | None = None) -> Grid:
    """Build a :class:`Grid` from its YAML mapping. ``overrides`` (``key=value``) patch the
    grid when they start with a grid key (``evaluation.depth=20``, ``suites=[scifact]``), the
    base training config otherwise (``train.max_steps=5``)."""
    grid_overrides = [o for o in overrides or [] if o.split("=", 1)[0].split(".")[0] in GRID_KEYS
                      and not o.startswith("base.")]
    overrides = [o.removeprefix("base.") for o in overrides or [] if o not in grid_overrides]
    data = merge(data, parse_overrides(grid_overrides))
    for key in data:
        if key not in GRID_KEYS:
            raise IrdistillError(f"unknown grid key '{key}'", hint=suggest(key, GRID_KEYS))
    kind = data.get("kind", "cross-encoder")
    model_kind = get_kind(kind)
    base = data.get("base") or {}
    if isinstance(base, str):
        base = read_yaml(base_dir / base)
    if not isinstance(base, dict):
        raise IrdistillError("'base' must be a training config mapping or the path of one")
    base = merge(base, parse_overrides(overrides))
    axes_raw = data.get("axes") or {}
    if not isinstance(axes_raw, dict):
        raise IrdistillError("'axes' must map axis names to their values")
    axes = [_parse_axis(str(n), v, model_kind) for n, v in axes_raw.items()]
    keys: dict[str, str] = {}
    for axis in axes:
        if axis.key is not None and axis.key in keys:
            raise IrdistillError(f"axes '{keys[axis.key]}' and '{axis.name}' both set "
                                 f"'{axis.key}'", hint="keep one of them")
        if axis.key is not None:
            keys[axis.key] = axis.name
    exclude = data.get("exclude") or []
    names = {a.name: {v.label for v in a.values} for a in axes}
    for rule in exclude:
        if not isinstance(rule, dict) or not rule:
            raise IrdistillError("each 'exclude' entry maps axis names to value labels")
        for k, v in rule.items():
            if k not in names:
                raise unknown_name("axis in 'exclude'", k, names)
            if str(v) not in names[k]:
                raise unknown_name(f"value of axis '{k}' in 'exclude'", str(v), names[k])
    name = str(data.get("name") or (Path(source).stem if source else "grid"))
    evaluation = from_dict(EvaluationSettings, data.get("evaluation") or {}, "evaluation")
    if evaluation.fusion and model_kind.retrieves:
        raise IrdistillError(f"evaluation.fusion fuses re-rankers with the first stage, and a "
                             f"'{kind}' grid retrieves", hint="set evaluation.fusion: false")
    baselines = parse_baselines(data.get("baselines"))
    resources = from_dict(Resources, data.get("resources") or {}, "resources")
    resources.check()
    out = Path(output or data.get("output") or Path("runs") / slug(name))
    suites = _resolve_suites(data.get("suites"), data.get("suite_definitions"), base_dir)
    first_stages = {s.first_stage_name() for s in suites}
    for b in baselines:
        if b.name in first_stages:
            raise IrdistillError(f"baseline '{b.name}' has the name of the first stage",
                                 hint="give it another name")
    return Grid(name, base, axes, suites, evaluation, data.get("baseline"), out,
                [{k: str(v) for k, v in r.items()} for r in exclude],
                str(data.get("description") or ""), kind, source, baselines, resources)


def load_grid(path: str | Path, overrides: list[str] | None = None,
              output: str | Path | None = None) -> Grid:
    """Read a grid file; errors name the file."""
    path = Path(path)
    data = read_yaml(path)
    try:
        grid = grid_from_dict(data, base_dir=path.parent, overrides=overrides, output=output,
                              source=str(path))
        grid.cells()  # every cell must resolve to a valid config
        return grid
    except IrdistillError as exc:
        if exc.path is None:
            exc.path = str(path)
        raise


# -- status, evaluation files -----------------------------------------------------------------
def _short_hash(obj: Any) -> str:
    return stable_hash(obj, length=10)


def backbone_settings(config: Config) -> dict[str, Any]:
    """What makes two untrained models the same (the first cell's seed initialises a new head)."""
    return to_dict(config.model)


def untrained_name(grid: Grid, cell: Cell) -> str:
    axis = next((a for a in grid.axes if a.key == "model.name"), None)
    label = cell.labels[axis.name] if axis else Path(cell.config.model.name).name
    if cell.config.model.num_hidden_layers:
        label += f" L{cell.config.model.num_hidden_layers}"
    return f"untrained {label}"


@dataclass
class EvalTask:
    system: str
    kind: str  # first_stage | untrained | trained
    suite: Suite
    dataset: Any  # DatasetSpec
    prefix: Path
    cell: Cell | None = None
    seed: int | None = None
    precision: str | None = None
    model: str = ""  # which of the cell's models (a system suffix), or a shared model's key
    baseline: Baseline | None = None  # kind 'baseline': what it runs
    fuses: Path | None = None  # kind 'fused': the prefix of the trained evaluation it fuses

    @property
    def done(self) -> bool:
        return self.prefix.with_name(self.prefix.name + ".json").exists()

    @property
    def shared(self) -> bool:
        """Evaluated once for the grid (first stage, baselines, untrained, a model the cells
        share)."""
        return self.kind not in ("trained", "fused") or self.cell is None


def _precision(grid: Grid, cell: Cell) -> str:
    return grid.evaluation.precision or grid.model_kind.precision(cell.config)


def plan(grid: Grid, cells: list[Cell] | None = None) -> list[EvalTask]:
    """Every evaluation the grid needs, shared ones (first stage, baselines, untrained, models
    shared by the cells) first."""
    cells = cells if cells is not None else grid.cells()
    kind = grid.model_kind
    backbones: dict[str, Cell] = {}
    for cell in cells if kind.untrained and grid.evaluation.untrained else []:
        key = _short_hash({**backbone_settings(cell.config), "precision": _precision(grid, cell)})
        backbones.setdefault(key, cell)
    shared_models = kind.shared_models([c.config for c in cells])
    tasks = []
    for suite in grid.suite_settings():
        for spec in suite.datasets:
            folder = grid.output / "shared" / suite.name / f"{slug(spec.label)}-" \
                                                           f"{dataset_key(suite, spec)}"
            tasks.append(EvalTask(suite.first_stage_name(), "first_stage", suite, spec,
                                  folder / "first_stage"))
            for b in grid.baselines:
                tasks.append(EvalTask(b.name, "baseline", suite, spec,
                                      folder / f"baseline-{slug(b.name)}-"
                                               f"{_short_hash(b.settings())}", baseline=b))
            for key, cell in backbones.items():
                tasks.append(EvalTask(untrained_name(grid, cell), "untrained", suite, spec,
                                      folder / f"untrained-{key}", cell,
                                      precision=_precision(grid, cell)))
            for key, shared in shared_models.items():
                precision = grid.evaluation.precision or shared.precision
                tasks.append(EvalTask(shared.system, "trained", suite, spec,
                                      folder / f"{key}-{precision}", seed=shared.seed,
                                      precision=precision, model=key))
    for cell in cells:
        planned = len(tasks)
        for suite in grid.suite_settings():
            for spec in (s for s in suite.datasets if kind.evaluates_on(cell.config, s)):
                precision = _precision(grid, cell)
                name = f"{slug(spec.label)}-{dataset_key(suite, spec)}-{precision}"
                for suffix in kind.systems(cell.config):
                    prefix = grid.cell_dir(cell) / "eval" / suite.name / \
                        (name + (f"-{slug(suffix)}" if suffix else ""))
                    tasks.append(EvalTask(cell.system + suffix, "trained", suite, spec, prefix,
                                          cell, cell.seed, precision, model=suffix))
                    if grid.evaluation.fusion and suite.passages is None:
                        tasks.append(EvalTask(
                            f"{cell.system + suffix} + {suite.first_stage_name()}", "fused",
                            suite, spec, prefix.with_name(prefix.name + "-fused"), cell,
                            cell.seed, precision, model=suffix, fuses=prefix))
        if len(tasks) == planned:
            raise IrdistillError(f"cell {cell.describe()} is evaluated on no dataset of the "
                                 "grid's suites", hint="add a suite with its target corpus")
    return tasks


def train_state(folder: Path) -> str:
    """'done' (trained and recorded), 'model saved' (trained, not yet recorded), 'step N' or
    'stage K step N' (an interrupted run that will resume from that complete checkpoint), or
    'todo'."""
    if (folder / "done.json").exists():
        return "done"
    state = RunFolder(folder).state()
    return "model saved" if state == "done" else state


@dataclass
class CellStatus:
    cell: Cell
    folder: Path
    training: str
    evaluations_done: int
    evaluations: int
    claimed_by: str | None = None  # the worker holding the cell (alive or stale)
    failed: str | None = None  # the error line of its last failure

    @property
    def state(self) -> str:
        """pending | claimed | failed | done."""
        if self.training == "done" and self.evaluations_done == self.evaluations:
            return "done"
        if self.claimed_by:
            return "claimed"
        return "failed" if self.failed else "pending"


@dataclass
class GridStatus:
    grid: Grid
    cells: list[CellStatus]
    shared_done: int
    shared: int

    def lines(self) -> list[str]:
        out = [f"grid '{self.grid.name}': {len(self.cells)} cells, output {self.grid.output}",
               f"suites: {', '.join(s.name for s in self.grid.suite_settings())}; shared "
               f"evaluations (first stage, baselines, untrained, shared models) done: "
               f"{self.shared_done}/{self.shared}"]
        for st in self.cells:
            line = (f"  {st.cell.hash}  {st.cell.describe():<40}  train: {st.training:<9} "
                    f"eval: {st.evaluations_done}/{st.evaluations}  {st.state}")
            if st.claimed_by:
                line += f" by {st.claimed_by}"
            if st.failed and st.state != "done":
                line += f" (last failure: {st.failed})"
            out.append(line)
        return out


def grid_status(grid: Grid) -> GridStatus:
    cells = grid.cells()
    tasks = plan(grid, cells)
    shared = [t for t in tasks if t.shared]
    out = []
    for cell in cells:
        mine = [t for t in tasks if not t.shared and t.cell is cell]
        folder = grid.cell_dir(cell)
        h, failure = holder(folder), read_failure(folder)
        out.append(CellStatus(cell, folder, train_state(folder), sum(t.done for t in mine),
                              len(mine), h.describe(grid.resources.lease_s) if h else None,
                              f"{failure['worker']}: {failure['error']}" if failure else None))
    return GridStatus(grid, out, sum(t.done for t in shared), len(shared))


def write_manifest(grid: Grid, cells: list[Cell], tasks: list[EvalTask]) -> None:
    """``experiment.json``: what ``irdistill compare`` reads to find every result."""
    axes = {a.name: {"key": a.key, "values": [v.label for v in a.values], "seed": a.is_seed}
            for a in grid.axes}
    write_json(grid.output / MANIFEST, {
        "name": grid.name, "description": grid.description, "grid_file": grid.source,
        "baseline": grid.baseline, "first_stage": grid.first_stage_name(), "axes": axes,
        "suites": {s.name: dataclasses.asdict(s) for s in grid.suite_settings()},
        "cells": [{"hash": c.hash, "system": c.system, "seed": c.seed, "labels": c.labels,
                   "folder": str(grid.cell_dir(c).relative_to(grid.output))} for c in cells],
        "evaluations": [{"system": t.system, "kind": t.kind, "seed": t.seed,
                         "suite": t.suite.name, "dataset": t.dataset.label,
                         "cell": None if t.shared else t.cell.hash,
                         "labels": {} if t.shared else t.cell.labels,
                         "file": str(t.prefix.relative_to(grid.output)) + ".json"}
                        for t in tasks],
    })


# -- running ----------------------------------------------------------------------------------
class _Datasets:
    """Collections and first-stage runs, loaded once per dataset for the whole grid."""

    def __init__(self):
        self.collections: dict[tuple, Any] = {}

    def collection(self, spec):
        key = (spec.id, spec.split)
        if key not in self.collections:
            self.collections[key] = load_dataset(spec)
        return self.collections[key]


def _check_names(grid: Grid, cells: list[Cell], inputs: bool = True) -> None:
    """Fail before any work if a cell (or a stage of it) names a loss or data mode that does
    not exist, has a value out of range, or (``inputs``) reads a file that is not there."""
    kind = grid.model_kind
    for cell in cells:
        try:
            kind.check(cell.config, inputs)
            if grid.evaluation.fusion:
                check_fusion(cell.config, grid.suite_settings())
        except IrdistillError as exc:
            exc.message = f"cell {cell.describe()}: {exc.message}"
            raise


def cell_finished(tasks: list[EvalTask], cell: Cell, folder: Path) -> bool:
    """Trained, recorded and every evaluation written."""
    return (folder / "done.json").exists() and all(
        t.done for t in tasks if not t.shared and t.cell is cell)


def read_failure(folder: Path) -> dict | None:
    """The cell's last failure (``failed.json``: worker, time, error line), if any."""
    try:
        return json.loads((Path(folder) / FAILED).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _holder_text(folder: Path, lease: float) -> str:
    h = holder(folder)
    return h.describe(lease) if h is not None else "nobody (released)"


def record_in_card(model_dir: Path, task: EvalTask, evaluations: dict) -> None:
    """Write the figures of a finished evaluation (``{variant: Evaluation}``) into the model's
    card (``model-index``), so the model folder says how good it is on each suite dataset."""
    name = f"{task.suite.name}/{task.dataset.label}"
    for variant, evaluation in evaluations.items():
        add_evaluation(model_dir, f"{name} {VARIANT_TITLES[variant]}" if variant else name,
                       evaluation.aggregate)


def run_grid(grid: Grid, *, dry_run: bool = False, show_progress: bool = True,
             worker: str | None = None, poll: float = 5.0,
             since: float | None = None) -> GridStatus:
    """Train and evaluate every cell of ``grid``; finished work is reused.

    Any number of processes may run the same grid at once (:mod:`irdistill.experiments.claims`):
    each claims a cell before working on it, skips the cells other live workers hold, takes
    over those of dead ones (after ``resources.lease_s`` without a heartbeat), and returns when
    every cell is done, waiting (``poll`` seconds between looks) for cells still held by
    others. A cell that fails writes ``failed.json`` (worker, error line) and the error is
    raised; the other workers leave that cell alone if it failed after ``since`` (default:
    this call's start; the launcher passes its submission time, so that every job of one
    submission leaves it), and a run started later tries it again.

    With ``dry_run`` nothing is trained, evaluated or written: the status of each cell is
    returned.
    """
    cells = grid.cells()
    _check_names(grid, cells, inputs=not dry_run)
    if dry_run:
        return grid_status(grid)
    tasks = plan(grid, cells)
    grid.output.mkdir(parents=True, exist_ok=True)
    if is_main():  # under torchrun: the first process writes shared files
        write_manifest(grid, cells, tasks)
        write_provenance(grid.output, config={"grid_file": grid.source, "base": grid.base,
                                              "axes": {a.name: [v.label for v in a.values]
                                                       for a in grid.axes},
                                              "exclude": grid.exclude,
                                              "suites": [s.name for s in grid.suite_settings()],
                                              "baselines": [b.settings() for b in grid.baselines],
                                              "evaluation": dataclasses.asdict(grid.evaluation)},
                         cells={c.hash: c.labels for c in cells},
                         seeds=sorted({c.seed for c in cells}))
    data = _Datasets()
    first_stage_files: dict[tuple, Path] = {}
    started = time.time()

    def candidates(task: EvalTask):
        path = first_stage_files[(task.suite.name, task.dataset.label)]
        return lambda: read_run(path)

    def untrained_loader(cell: Cell, precision: str):
        def load():
            m = cell.config.model
            seed_everything(cell.config.train.seed)  # the new head's initialisation
            return CrossEncoder.from_pretrained(m.name, max_query_length=m.max_query_length,
                                                max_doc_length=m.max_doc_length,
                                                truncation=m.truncation,
                                                num_hidden_layers=m.num_hidden_layers,
                                                precision=precision, device=device_for_rank())
        return load

    def run_task(task: EvalTask, model=None, retrieve=None) -> dict | None:
        """Evaluate ``task``: the first stage itself, a re-ranker (``model`` loads it) of the
        first stage, or (``retrieve``: collection -> run) a retriever of its own. Returns a
        re-ranker's ``{variant: Evaluation}`` (empty on the other processes under torchrun)."""
        spec = task.dataset
        info = {"kind": task.kind, "seed": task.seed}
        if task.cell is not None and task.kind == "trained":
            info.update(cell=task.cell.hash, labels=task.cell.labels)
        if task.kind == "baseline":
            evaluate_on_dataset(task.prefix, task.suite, spec, system=task.system,
                                collection=lambda: data.collection(spec),
                                candidates=lambda: task.baseline.run(
                                    task.suite, spec, data.collection(spec), show_progress),
                                info={**info, "baseline": task.baseline.settings()},
                                show_progress=show_progress)
            return
        if task.kind == "first_stage":
            suite = task.suite
            run_file = task.prefix.with_name(task.prefix.name + ".trec")
            if not run_file.exists():  # the candidates of every model: recompute them whole
                task.prefix.with_name(task.prefix.name + ".json").unlink(missing_ok=True)
            evaluate_on_dataset(task.prefix, suite, spec, system=task.system,
                                collection=lambda: data.collection(spec),
                                candidates=lambda: first_stage_run(suite, spec,
                                                                   data.collection(spec)),
                                info=info, show_progress=show_progress)
            first_stage_files[(task.suite.name, spec.label)] = run_file
            return
        if retrieve is not None:
            evaluate_on_dataset(task.prefix, task.suite, spec, system=task.system,
                                collection=lambda: data.collection(spec),
                                candidates=lambda: retrieve(data.collection(spec)),
                                info=info, show_progress=show_progress)
            return
        return evaluate_on_dataset(task.prefix, task.suite, spec, system=task.system,
                                   collection=lambda: data.collection(spec),
                                   candidates=candidates(task), model=model,
                                   batch_size=grid.evaluation.batch_size,
                                   show_progress=show_progress, info=info)

    def evaluate_model(task: EvalTask, model_dir: Path) -> None:
        if kind.retrieves:
            depth = max(task.suite.depth, RETRIEVAL_DEPTH)
            run_task(task, retrieve=splade_retrieval(
                model_dir, task.precision, task.prefix.with_name(task.prefix.name + ".index"),
                depth, batch_size=grid.evaluation.batch_size, show_progress=show_progress))
        else:
            evaluations = run_task(task, lambda p=task.precision: CrossEncoder.from_pretrained(
                str(model_dir), precision=p, device=device_for_rank()))
            if evaluations and (Path(model_dir) / "irdistill.json").exists():  # main process
                record_in_card(model_dir, task, evaluations)

    def fuse(task: EvalTask, folder: Path, model_dir: Path) -> None:
        """The trained re-ranker's run of ``task.fuses`` fused with the first stage."""
        depth = task.suite.depth
        with main_process_first():  # the first process tunes the weight, the others read it
            alpha = fusion_weight(task.cell.config, folder, model_dir, depth, task.precision,
                                  device_for_rank(), grid.evaluation.batch_size, show_progress)
        first = first_stage_files[(task.suite.name, task.dataset.label)]
        trained = task.fuses.with_name(task.fuses.name + ".trec")
        run_task(task, retrieve=lambda _: fused_run(read_run(first), read_run(trained), alpha,
                                                    depth))

    def run_shared() -> dict[str, Path]:
        shared = [t for t in tasks if t.shared and t.kind != "trained"]
        for i, task in enumerate(shared, 1):
            log.info("[shared %d/%d] %s on %s/%s%s", i, len(shared), task.system,
                     task.suite.name, task.dataset.label, " (done)" if task.done else "")
            run_task(task, None if task.kind == "first_stage"
                     else untrained_loader(task.cell, task.precision))
        shared_dirs: dict[str, Path] = {}
        for key, model in kind.shared_models([c.config for c in cells]).items():
            log.info("[shared model] %s (%s)", model.system, key)
            shared_dirs[key] = Path(model.train(grid.output / "shared" / "models" / key,
                                                show_progress))
            for task in (t for t in tasks if t.shared and t.model == key):
                evaluate_model(task, shared_dirs[key])
        return shared_dirs

    def run_cell(i: int, cell: Cell, shared_dirs: dict[str, Path], held=None) -> None:
        folder = grid.cell_dir(cell)
        state = train_state(folder)
        log.info("[cell %d/%d] %s (%s): training %s", i, len(cells), cell.describe(), cell.hash,
                 {"done": "done", "todo": "starts", "model saved": "done, not yet recorded"}.get(
                     state, f"resumes from {state}"))
        if state != "done":  # under torchrun every process trains (DDP)
            models = kind.train(cell.config, folder, shared_dirs, show_progress)
            if broadcast(getattr(held, "lost", False)):  # another worker has it now
                raise IrdistillError(f"cell {cell.describe()} was taken over by another "
                                     "worker while this one stalled; its result is left to it")
            if is_main():
                relative = {k: str(Path(v).relative_to(folder)) for k, v in models.items()}
                write_json(folder / "done.json", {"model": relative[""], "models": relative,
                                                  "config_hash": cell.hash, "labels": cell.labels})
            wait_for_everyone()
        done = json.loads((folder / "done.json").read_text())
        models = done.get("models") or {"": done["model"]}  # done.json of before kinds
        for task in (t for t in tasks if not t.shared and t.cell is cell):
            if task.kind == "fused":
                fuse(task, folder, folder / models[task.model])
            else:
                evaluate_model(task, folder / models[task.model])

    kind = grid.model_kind
    worker = worker or worker_id()
    lease = grid.resources.lease_s
    log_file = grid.output / CLAIMS_LOG

    since = broadcast(since if since is not None else started)  # one clock for every rank

    def decide(cell: Cell, folder: Path):
        """What to do with a cell, decided by the first process (under torchrun every process
        must take the same decisions): 'done', ('failed', line), or a claim (None: another
        live worker holds it). The claim is checked again once held: a cell finished by the
        worker that released it a moment ago is not worked on twice."""
        choice, held = None, None
        if is_main():
            failure = read_failure(folder)
            if cell_finished(tasks, cell, folder):
                choice = "done"
            elif failure is not None and failure["time"] >= since:  # while this run went on
                choice = ("failed", f"{cell.describe()} ({failure['worker']}: "
                                    f"{failure['error']})")
            else:
                held = try_claim(folder, worker, lease, log_file, cell.hash)
                if held is not None and cell_finished(tasks, cell, folder):
                    held.release()
                    held, choice = None, "done"
                choice = choice or ("claimed" if held is not None else "busy")
        choice = broadcast(choice)
        if choice == "claimed" and held is not None:
            log_claim(held)
        return choice, (held if held is not None else contextlib.nullcontext())

    # the shared evaluations: one worker at a time (the next finds them done)
    while True:
        held = try_claim(grid.output / "shared", worker, lease, log_file, "shared") \
            if is_main() else None
        if broadcast(held is not None):
            break
        log.info("the shared evaluations are claimed by %s; waiting", _holder_text(
            grid.output / "shared", lease))
        time.sleep(poll)
    if held is not None:
        log_claim(held)
    with held if held is not None else contextlib.nullcontext():
        shared_dirs = run_shared()

    remaining = list(enumerate(cells, 1))
    failed: list[str] = []
    while remaining:
        progressed = False
        for item in list(remaining):
            i, cell = item
            folder = grid.cell_dir(cell)
            choice, held = decide(cell, folder)
            if choice == "busy":
                continue
            remaining.remove(item)
            if choice == "done":
                continue
            if choice != "claimed":
                failed.append(choice[1])
                continue
            with held:
                try:
                    run_cell(i, cell, shared_dirs, held)
                except Exception as exc:
                    if is_main() and not getattr(held, "lost", False):
                        write_json(folder / FAILED, {"worker": worker, "time": time.time(),
                                                     "error": _error_line(exc)})
                    raise
                if is_main():
                    (folder / FAILED).unlink(missing_ok=True)
            progressed = True
        if remaining and not progressed:  # every cell left is another worker's: wait for them
            log.info("%d cell(s) claimed by other workers; waiting", len(remaining))
            time.sleep(poll)
    if failed:
        raise IrdistillError(f"{len(failed)} cell(s) failed in other workers: "
                             + "; ".join(failed), hint="see each cell's failed.json; fix the "
                                                       "cause and run the grid again")
    log.info("grid '%s' finished in %.0f s; results in %s", grid.name, time.time() - started,
             grid.output)
    return grid_status(grid)
