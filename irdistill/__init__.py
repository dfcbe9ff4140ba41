"""irdistill: train, distil and compare neural re-rankers and sparse retrievers.

The public API, one import away (``from irdistill import train, load_collection``); each name
loads its module on first use, so ``import irdistill`` stays light::

    data          load_collection, Collection, read_run, write_run, read_qrels
    configs       load_config, Config, check_config, config_hash
    training      train_cross_encoder, train_splade, SpladeConfig, load_splade_config
    models        CrossEncoder, Splade, BiEncoder
    first stages  bm25_run, dense_run
    re-ranking    run_rerank, RerankSettings, rerank_run, rerank_to_file, merge_runs
    teachers      build_ensemble, Teacher, fuse
    evaluation    evaluate, compare_to_baseline
    studies       load_grid, run_grid, compare, adapt_splade, AdaptConfig
    errors        IrdistillError

docs/architecture.md says where each stage lives and how to add a loss, a model kind or a suite.
"""
from importlib import import_module

from irdistill.errors import IrdistillError

__version__ = "0.1.0"

#: public name -> the module that defines it (or ``(module, its name there)``); no name is that
#: of a subpackage (``irdistill.train``, ``irdistill.rerank``), which importing it would replace
API = {
    "load_collection": "irdistill.data.collection", "Collection": "irdistill.data.collection",
    "read_run": "irdistill.data.trec", "write_run": "irdistill.data.trec",
    "read_qrels": "irdistill.data.trec",
    "load_config": "irdistill.config", "Config": "irdistill.config",
    "check_config": "irdistill.config", "config_hash": "irdistill.config",
    "train_cross_encoder": ("irdistill.train.engine", "train"),
    "train_splade": "irdistill.train.splade", "SpladeConfig": "irdistill.train.splade",
    "load_splade_config": "irdistill.train.splade",
    "CrossEncoder": "irdistill.models.cross_encoder", "Splade": "irdistill.models.splade",
    "BiEncoder": "irdistill.retrieval.dense",
    "bm25_run": "irdistill.retrieval.bm25", "dense_run": "irdistill.retrieval.dense",
    "run_rerank": "irdistill.rerank", "RerankSettings": "irdistill.rerank",
    "rerank_run": "irdistill.rerank", "rerank_to_file": "irdistill.rerank",
    "merge_runs": "irdistill.rerank",
    "build_ensemble": "irdistill.teachers.ensemble", "Teacher": "irdistill.teachers.ensemble",
    "fuse": "irdistill.evaluation.fusion",
    "evaluate": "irdistill.evaluation.metrics",
    "compare_to_baseline": "irdistill.evaluation.significance",
    "load_grid": "irdistill.experiments.grid", "run_grid": "irdistill.experiments.grid",
    "compare": "irdistill.experiments.compare",
    "adapt_splade": ("irdistill.adapt.recipe", "adapt"), "AdaptConfig": "irdistill.adapt.recipe",
}


def __getattr__(name):
    if name in API:  # torch and transformers load here, on first use
        module, attribute = API[name] if isinstance(API[name], tuple) else (API[name], name)
        value = getattr(import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'irdistill' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *API])


__all__ = [*API, "IrdistillError", "__version__"]
