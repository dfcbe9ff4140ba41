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
from irdistill.rerank.job import RerankResult, RerankSettings, run_rerank
from irdistill.rerank.scoring import (NonFiniteScores, check_candidates, rerank_run,
                                      rerank_to_file, scoring_identity)
from irdistill.rerank.sharding import merge_runs, parse_shard

__all__ = ["run_rerank", "RerankSettings", "RerankResult", "rerank_run", "rerank_to_file",
           "check_candidates", "scoring_identity", "NonFiniteScores", "merge_runs",
           "parse_shard"]
