"""Training groups: a query with a list of documents and one target per document.

A group feeds one row of the ``[queries, list_size]`` score tensor that every loss takes.
Group builders are registered by data mode in :data:`MODES` (``data.mode`` in the config):

* ``labels``: qrels + a candidate run -> 1 judged positive + ``negatives`` sampled from the
  run's top-``depth``; targets are the qrels labels.
* ``teacher_scores``: a run whose scores are a teacher's -> ``negatives + 1`` documents of
  the teacher's top-``depth`` with the teacher's scores as targets (optionally a judged
  positive forced into slot 0).
* ``teacher_ranks``: a run ranked by a teacher (e.g. an LLM) -> the same groups with targets
  ``depth - rank + 1``, as Rank-DistiLLM trains RankNet / ADR-MSE.
* ``triples``: Hofstaetter's ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid`` file,
  streamed (:mod:`irdistill.data.triples`) -> groups ``[pos, neg]`` with the teacher's scores.

:data:`MODE_SOURCES` says where each mode's documents come from (``run``, ``teacher_run`` or
``triples``), so the training engine knows what to load. Sampling is seeded per epoch, so the
groups of a run are the same every time it is started or resumed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from irdistill.data.trec import Qrels, Run, ranked
from irdistill.errors import IrdistillError, unknown_name

log = logging.getLogger(__name__)

SAMPLINGS = ("top", "random", "top+random", "all")


@dataclass
class Group:
    query_id: str
    doc_ids: list[str]
    targets: list[float]


def pick(candidates: list[str], k: int, sampling: str, rng: np.random.Generator) -> list[str]:
    """``k`` of ``candidates`` (best first): the top, a random sample, half of each, or all
    of them (``all``: every candidate, whatever ``k``). The chosen keep their order."""
    if sampling not in SAMPLINGS:
        raise unknown_name("sampling", sampling, SAMPLINGS)
    if sampling == "all" or len(candidates) <= k:
        return list(candidates)
    if sampling == "top":
        return candidates[:k]
    if sampling == "random":
        return [candidates[i] for i in sorted(rng.choice(len(candidates), k, replace=False))]
    n_top = k // 2
    rest = candidates[n_top:]
    chosen = rng.choice(len(rest), k - n_top, replace=False)
    return candidates[:n_top] + [rest[i] for i in sorted(chosen)]


GroupBuilder = Callable[..., Iterable[Group]]
MODES: dict[str, GroupBuilder] = {}
MODE_SOURCES: dict[str, str] = {}
SOURCES = ("run", "teacher_run", "triples")


def register_mode(name: str, source: str) -> Callable[[GroupBuilder], GroupBuilder]:
    """Register a group builder as data mode ``name``; ``source`` is what it samples from:
    ``run`` (the candidate run), ``teacher_run`` (``data.teacher_run``), ``triples``
    (``data.triples``, streamed)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")

    def wrap(fn: GroupBuilder) -> GroupBuilder:
        MODES[name] = fn
        MODE_SOURCES[name] = source
        return fn

    return wrap


def mode_source(mode: str) -> str:
    if mode not in MODES:
        raise unknown_name("data mode", mode, MODES)
    return MODE_SOURCES[mode]


@register_mode("labels", "run")
def label_groups(run: Run, qrels: Qrels, *, negatives: int = 7, depth: int = 100,
                 sampling: str = "random", seed: int = 0, epoch: int = 0, **_) -> list[Group]:
    """One positive (a judged relevant document) and ``negatives`` sampled from the run's
    top-``depth`` documents that are not judged relevant. Targets are the qrels labels."""
    rng = np.random.default_rng([seed, epoch])
    groups = []
    skipped_no_pos = skipped_no_neg = 0
    for qid in sorted(run):
        judged = qrels.get(qid, {})
        positives = sorted(d for d, rel in judged.items() if rel > 0)
        if not positives:
            skipped_no_pos += 1
            continue
        candidates = [d for d, _ in ranked(run[qid], depth) if judged.get(d, 0) <= 0]
        if not candidates:
            skipped_no_neg += 1
            continue
        positive = positives[(epoch + int(rng.integers(len(positives)))) % len(positives)]
        chosen = pick(candidates, negatives, sampling, rng)
        docs = [positive, *chosen]
        groups.append(Group(qid, docs, [float(judged.get(d, 0)) for d in docs]))
    if skipped_no_pos or skipped_no_neg:
        log.info("training groups: %d queries, skipped %d without a judged positive and %d "
                 "without negatives in the run", len(groups), skipped_no_pos, skipped_no_neg)
    return groups


def teacher_groups(run: Run, qrels: Qrels | None, *, targets: str, negatives: int = 7,
                   depth: int = 100, sampling: str = "random", force_positive: bool = True,
                   seed: int = 0, epoch: int = 0) -> list[Group]:
    """Groups from a teacher's run ``{qid: {docid: score}}``, best first by score.

    Each query's top-``depth`` documents are its candidates. Without ``force_positive``, a group
    is ``negatives + 1`` of them (``sampling``: top, random, top+random, or ``all`` of depth), in
    the teacher's order, so slot 0 is the teacher's best of the sample. With ``force_positive``,
    slot 0 is a judged relevant document of the candidates (rotating over epochs) and the other
    slots are ``negatives`` sampled from the candidates not judged relevant; queries whose
    candidates hold no judged positive are skipped. ``targets``: ``scores`` (the teacher's
    scores) or ``ranks`` (``depth - rank + 1``, rank 1 = the teacher's best).
    """
    if targets not in ("scores", "ranks"):
        raise ValueError(f"targets must be 'scores' or 'ranks', got {targets!r}")
    if force_positive and not qrels:
        raise IrdistillError("data.force_positive needs relevance judgements, and the training "
                             "collection has none",
                             hint="set data.force_positive=false, or train on a collection with "
                                  "qrels")
    rng = np.random.default_rng([seed, epoch])
    groups = []
    skipped = 0
    for qid in sorted(run):
        ranking = ranked(run[qid], depth)
        value = {d: (float(score) if targets == "scores" else float(depth - rank + 1))
                 for rank, (d, score) in enumerate(ranking, start=1)}
        docs = [d for d, _ in ranking]
        if force_positive:
            judged = qrels.get(qid, {})
            positives = [d for d in docs if judged.get(d, 0) > 0]
            rest = [d for d in docs if judged.get(d, 0) <= 0]
            if not positives or not rest:
                skipped += 1
                continue
            positive = positives[(epoch + int(rng.integers(len(positives)))) % len(positives)]
            chosen = [positive, *pick(rest, negatives, sampling, rng)]
        else:
            if len(docs) < 2:
                skipped += 1
                continue
            chosen = pick(docs, negatives + 1, sampling, rng)
        groups.append(Group(qid, chosen, [value[d] for d in chosen]))
    if skipped:
        why = ("without a judged positive and a non-relevant document among the teacher's "
               f"top-{depth}" if force_positive else "with fewer than 2 documents")
        log.info("teacher groups: %d queries, skipped %d %s", len(groups), skipped, why)
    return groups


@register_mode("teacher_scores", "teacher_run")
def teacher_score_groups(run: Run, qrels: Qrels | None = None, **kwargs) -> list[Group]:
    """``run`` is the teacher's run; targets are its scores (see :func:`teacher_groups`)."""
    return teacher_groups(run, qrels, targets="scores", **_teacher_kwargs(kwargs))


@register_mode("teacher_ranks", "teacher_run")
def teacher_rank_groups(run: Run, qrels: Qrels | None = None, **kwargs) -> list[Group]:
    """``run`` is ranked by a teacher (its scores give the order; the rank column is ignored,
    as trec_eval does); targets are ``depth - rank + 1`` (see :func:`teacher_groups`)."""
    return teacher_groups(run, qrels, targets="ranks", **_teacher_kwargs(kwargs))


def _teacher_kwargs(kwargs: dict) -> dict:
    keys = ("negatives", "depth", "sampling", "force_positive", "seed", "epoch")
    return {k: kwargs[k] for k in keys if k in kwargs}


@register_mode("triples", "triples")
def triple_groups(*, triples: str | None = None, max_queries: int | None = None, **_):
    """Groups ``[pos, neg]`` with targets ``[pos_score, neg_score]``, streamed from a triple file."""
    from irdistill.data.triples import TripleGroups

    if not triples:
        raise IrdistillError("data.mode=triples needs data.triples, the path of a triple file",
                             hint="e.g. --set data.triples=bert_cat_ensemble_msmarcopassage_train_"
                                  "scores_ids.tsv")
    return TripleGroups(triples, max_queries=max_queries)


def build_groups(mode: str, *, epoch: int, **kwargs) -> Iterable[Group]:
    """The groups of ``mode`` for one epoch: a list, or a re-iterable stream (``triples``)."""
    if mode not in MODES:
        raise unknown_name("data mode", mode, MODES)
    groups = MODES[mode](epoch=epoch, **kwargs)
    if isinstance(groups, list) and not groups:
        raise IrdistillError("no training groups could be built",
                             hint="check that the run and qrels share query and document ids")
    return groups
