"""What a grid trains, and how its models meet the evaluation suites: one class per model kind.

A kind says which config a cell is (``config_cls``), its seed and evaluation precision, what
is checked before any work, how a cell is trained (into one model per system it adds to the
tables), which models every cell shares (trained once per grid, e.g. the zero-shot SPLADE model
that each adapted cell is compared with), and how a model is evaluated on a dataset: as a
re-ranker of the suite's first stage (cross-encoders) or as a retriever over the whole
collection (SPLADE, whose index is kept beside the results).

* ``cross-encoder``: :class:`irdistill.config.Config` cells trained by
  :func:`irdistill.train.engine.train`; the untrained backbone is a shared system.
* ``splade``: :class:`irdistill.train.splade.SpladeConfig` cells trained by
  :func:`irdistill.train.splade.train_splade`.
* ``splade-adapt``: :class:`irdistill.adapt.recipe.AdaptConfig` cells (the recipe of the SPLADE
  adaptation study for one ``layers`` k and one ``target`` corpus); the zero-shot SPLADE model
  of each distinct source training is shared by the cells, trained once in
  ``OUTPUT/shared/models/``; a cell adds "adapted" (and, with ``source_control``, "source
  domain") to the tables.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from irdistill.adapt.recipe import AdaptConfig, adapt, check_adapt_config, zero_shot_splade
from irdistill.config import Config, check_config, config_hash, resolve_stage
from irdistill.data.collection import check_collection_spec
from irdistill.data.sampling import MODES
from irdistill.errors import unknown_name
from irdistill.losses import get_loss
from irdistill.models.parts import check_layer_count
from irdistill.models.paths import resolve_model_path
from irdistill.models.runtime import training_precision
from irdistill.models.splade import Splade
from irdistill.retrieval.sparse_index import SparseIndex, build_splade_index, splade_search
from irdistill.train.dev import scoring_precision
from irdistill.train.engine import check_inputs, train
from irdistill.train.splade import SpladeConfig, check_splade_config, train_splade


@dataclass
class SharedModel:
    """A model trained once for the whole grid and evaluated as one system."""

    system: str  # its name in the tables
    key: str  # its folder under OUTPUT/shared/models
    seed: int
    precision: str
    train: Callable[[Path, bool], Path]  # (folder, show_progress) -> the model's folder


#: axis names that stand for a config key (a cross-encoder's; other kinds map them to theirs)
AXIS_ALIASES = {"objective": "loss", "backbone": "model.name", "teacher": "data.teacher_run",
                "data": "data.collection", "seed": "train.seed", "lr": "train.lr"}


def train_model(config: Config, output_dir: Path, show_progress: bool = True) -> Path:
    """The training call of a cross-encoder cell (a module-level name, so tests can count its
    calls)."""
    return train(config, output_dir, show_progress=show_progress)


class Kind:
    name = ""
    config_cls: type = Config
    aliases = AXIS_ALIASES
    seed_key = "train.seed"
    retrieves = False  # evaluated as a retriever of its own (else it re-ranks the first stage)
    untrained = False  # the untrained backbone is a shared system

    def seed(self, config) -> int:
        return config.train.seed

    def precision(self, config) -> str:
        return config.train.precision

    def check(self, config, inputs: bool) -> None:
        """Names and ranges of the config; with ``inputs`` the files it reads exist."""

    def shared_models(self, configs: list) -> dict[str, SharedModel]:
        """The models the cells share, by key (:meth:`train` receives their folders)."""
        return {}

    def systems(self, config) -> list[str]:
        """The suffixes of the systems a cell adds to the tables ('' is the cell itself)."""
        return [""]

    def evaluates_on(self, config, spec) -> bool:
        """Whether a cell is evaluated on the suite dataset ``spec`` (every one by default)."""
        return True

    def train(self, config, folder: Path, shared: dict[str, Path],
              show_progress: bool = True) -> dict[str, Path]:
        """Train the cell into ``folder``: ``{system suffix: model folder}``."""
        raise NotImplementedError


class CrossEncoderKind(Kind):
    name = "cross-encoder"
    untrained = True

    def check(self, config: Config, inputs: bool) -> None:
        def field_of(obj, *path):
            for key in path:
                obj = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
            return obj

        for part in [config, *(config.stages or [])]:
            loss, mode = field_of(part, "loss"), field_of(part, "data", "mode")
            if loss is not None:
                get_loss(loss)
            if mode is not None and mode not in MODES:
                raise unknown_name("data mode", mode, MODES)
        check_config(config)  # values: names, ranges (a typo fails before any work)
        if not inputs:
            return
        for index in range(len(config.stages)) or [None]:  # the files each stage reads exist
            stage = config if index is None else resolve_stage(
                config, index, previous_model="previous" if index else None)
            check_inputs(stage, check_model=not index)

    def train(self, config: Config, folder: Path, shared: dict[str, Path],
              show_progress: bool = True) -> dict[str, Path]:
        return {"": Path(train_model(config, folder, show_progress=show_progress))}


class SpladeKind(Kind):
    name = "splade"
    retrieves = True

    @property
    def config_cls(self):
        return SpladeConfig

    def check(self, config, inputs: bool) -> None:
        check_splade_config(config)
        if inputs:
            resolve_model_path(config.model.name)

    def train(self, config, folder: Path, shared: dict[str, Path],
              show_progress: bool = True) -> dict[str, Path]:
        return {"": Path(train_splade(config, folder, show_progress=show_progress))}


class SpladeAdaptKind(Kind):
    name = "splade-adapt"
    retrieves = True
    aliases = {**{k: f"source.{v}" for k, v in AXIS_ALIASES.items()}, "k": "layers"}
    seed_key = "source.train.seed"

    @property
    def config_cls(self):
        return AdaptConfig

    def seed(self, config) -> int:
        return config.source.train.seed

    def precision(self, config) -> str:
        return config.precision or "fp32"

    def check(self, config, inputs: bool) -> None:
        check_adapt_config(config)  # the source's SPLADE training too
        if not inputs:
            return

        check_collection_spec(config.target, config.target_split)
        check_layer_count(config.source.model.name, config.layers)
        if config.zero_shot_model is not None:
            resolve_model_path(config.zero_shot_model)

    def _zero_shot_key(self, config) -> str:
        return "zero-shot-splade-" + config_hash(config.source)

    def shared_models(self, configs: list) -> dict[str, SharedModel]:
        """One zero-shot model per distinct source training; several of them (other than by
        seed, which makes seeds of one system) are told apart by their settings' hash."""
        def unseeded(config) -> str:  # the source training but its seed
            return config_hash(replace(config.source, train=replace(config.source.train, seed=0)))

        trained = [c for c in configs if c.zero_shot_model is None]
        several = len({unseeded(c) for c in trained}) > 1
        out: dict[str, SharedModel] = {}
        for config in trained:
            key = self._zero_shot_key(config)
            system = "zero-shot SPLADE" + (f" {unseeded(config)[:6]}" if several else "")
            out.setdefault(key, SharedModel(
                system, key, self.seed(config), self.precision(config),
                lambda folder, progress, c=config: zero_shot_splade(c, folder, progress)))
        return out

    def systems(self, config) -> list[str]:
        return ["", " source domain"] if config.source_control else [""]

    def evaluates_on(self, config, spec) -> bool:
        """A cell adapted to a target is evaluated on that target only (the shared zero-shot
        model on every dataset)."""
        return spec.id == config.target and (config.target_split is None
                                             or spec.split in (None, config.target_split))

    def train(self, config, folder: Path, shared: dict[str, Path],
              show_progress: bool = True) -> dict[str, Path]:
        zero_shot = config.zero_shot_model or str(shared[self._zero_shot_key(config)])
        report = adapt(replace(config, zero_shot_model=zero_shot, evaluate=False), folder,
                       show_progress=show_progress)
        models = {"": Path(report["models"]["adapted"])}
        if config.source_control:
            models[" source domain"] = Path(report["models"]["source-domain"])
        return models


KINDS: dict[str, Kind] = {k.name: k for k in (CrossEncoderKind(), SpladeKind(),
                                              SpladeAdaptKind())}


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise unknown_name("grid kind", name, KINDS)
    return KINDS[name]


def splade_retrieval(model_dir: str | Path, precision: str | None, index_dir: Path,
                     depth: int, batch_size: int = 64, show_progress: bool = True):
    """``collection -> run``: the SPLADE model's top-``depth`` for the collection's queries,
    over an index of the collection kept in ``index_dir`` (built on first use)."""
    def retrieve(collection) -> dict[str, dict[str, float]]:
        model = Splade.from_pretrained(str(model_dir), precision=scoring_precision(
            training_precision(precision or "fp32")))
        if (index_dir / "meta.json").exists():
            index = SparseIndex.load(index_dir)
        else:
            index = build_splade_index(model, collection, index_dir, batch_size=batch_size,
                                       overwrite=True, show_progress=show_progress,
                                       model_name=str(model_dir))
        return splade_search(model, index, collection.queries, k=depth)[0]
    return retrieve

