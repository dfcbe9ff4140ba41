"""Teachers: the targets that distillation trains on, built, stored and reused.

* :mod:`irdistill.teachers.ensemble`: cross-encoder teachers score the top candidates of a run;
  their scores, normalised or not, are averaged (Hofstaetter et al. 2020).
* :mod:`irdistill.teachers.llm`: a causal LM re-ranks the top candidates listwise with sliding
  windows and RankZephyr's prompt (Rank-DistiLLM); transformers or vLLM.
* :mod:`irdistill.teachers.importers`: published targets (Hofstaetter's triple score files,
  Rank-DistiLLM's runs, any TREC run with scores) as teacher runs.
* :mod:`irdistill.teachers.store`: each teacher's run kept under a name that says what produced
  it, and the provenance file beside every run.

Every output is a TREC run that the training config takes as ``data.teacher_run`` (data modes
``teacher_scores`` and ``teacher_ranks``).
"""
