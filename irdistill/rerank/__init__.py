"""Re-ranking a run with a cross-encoder.

* :func:`run_rerank` with :class:`RerankSettings` (:mod:`irdistill.rerank.job`): the one call behind
  ``irdistill rerank``: settings checked, candidates read or retrieved, the model loaded with its
  backend, the run scored and written with its provenance;
* :func:`rerank_run` and :func:`rerank_to_file` (:mod:`irdistill.rerank.scoring`): scoring in
  blocks of queries, longest pairs first, resumable from a partial file, sharded or shared under
  ``torchrun``;
* :func:`merge_runs`, :func:`parse_shard` (:mod:`irdistill.rerank.sharding`): shards split and
  joined back into the single-process run.
"""
from importlib import import_module

#: public name -> its module; loaded on first use, so that ``irdistill.rerank.sharding`` (what
#: ``irdistill merge-runs`` needs) does not load torch and a model class with the package
_NAMES = {"run_rerank": "job", "RerankSettings": "job", "RerankResult": "job",
          "rerank_run": "scoring", "rerank_to_file": "scoring", "check_candidates": "scoring",
          "scoring_identity": "scoring", "NonFiniteScores": "scoring",
          "merge_runs": "sharding", "parse_shard": "sharding"}


def __getattr__(name):
    if name in _NAMES:
        return getattr(import_module(f"irdistill.rerank.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'irdistill.rerank' has no attribute {name!r}")


__all__ = list(_NAMES)
