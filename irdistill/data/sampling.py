"""Training groups: a query with a list of documents and one target per document.

A group feeds one row of the ``[queries, list_size]`` score tensor that every loss takes.
Group builders are registered by data mode in :data:`MODES` (``data.mode`` in the config):

* ``labels``: qrels + a candidate run -> 1 judged positive + ``negatives`` sampled from the
  run's top-``depth``; targets are the qrels labels. Optionally the negatives are mined as
  sentence-transformers' ``mine_hard_negatives`` does (:class:`Mining`: a rank window, and
  candidates a teacher scores within a margin of the positive dropped as likely false
  negatives).
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

from irdistill.data.groups import Group  # noqa: F401  (re-exported: the groups of every mode)
from irdistill.data.trec import Qrels, Run, query_ranking, read_run
from irdistill.data.triples import TripleGroups
from irdistill.errors import IrdistillError, unknown_name

log = logging.getLogger(__name__)

SAMPLINGS = ("top", "random", "top+random", "all")


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


#: DataConfig keys of hard-negative mining (labels mode); None = not used
MINING_KEYS = ("negatives_range", "false_negative_margin", "false_negative_relative_margin")


@dataclass
class Mining:
    """How ``labels`` mode mines its negatives, with the names of sentence-transformers'
    ``mine_hard_negatives`` in brackets.

    * ``rank_range`` ``(lo, hi)`` [``range_min``, ``range_max``]: negatives come from ranks
      ``lo + 1`` to ``hi`` of the candidate run (its own order, judged positives counted),
      e.g. ``(10, 100)`` skips the run's top 10, where unjudged relevant documents gather.
    * ``margin`` [``absolute_margin``]: a candidate is dropped when
      ``teacher(candidate) + margin > teacher(positive)``; ``relative_margin``
      [``relative_margin``]: when ``teacher(candidate) > teacher(positive) -
      |teacher(positive)| * relative_margin``. As there, ``teacher(positive)`` is the *lowest*
      teacher score of the query's judged positives (the safe side), so the filter is the same
      whichever positive a group holds. ``teacher`` is a run of the teacher's scores
      (``data.teacher_run``, e.g. from ``irdistill teach ensemble --add-positives``); a candidate
      it did not score is dropped (it cannot be checked), and a query none of whose positives it
      scored is skipped; both are counted in the log.

    Judged relevant documents are never negatives, with or without mining. The survivors keep
    the run's order; ``data.sampling`` picks among them (``top``: the hardest; ``random``).
    """

    rank_range: tuple[int, int] | None = None
    margin: float | None = None
    relative_margin: float | None = None
    teacher: Run | None = None

    @property
    def filters(self) -> bool:
        return self.margin is not None or self.relative_margin is not None

    def describe(self) -> str:
        parts = []
        if self.margin is not None:
            parts.append(f"absolute {self.margin:g}")
        if self.relative_margin is not None:
            parts.append(f"relative {self.relative_margin:g}")
        return " and ".join(parts)


def check_mining(data, where: str = "data") -> None:
    """Check the mining keys of a DataConfig (``data``) against its mode, depth and teacher."""
    used = [k for k in MINING_KEYS if getattr(data, k, None) is not None]
    if not used:
        return
    if data.mode != "labels":
        raise IrdistillError(f"{where}.{used[0]} mines negatives for data.mode=labels, not "
                             f"{data.mode}", hint=f"set {where}.mode=labels or remove "
                                                  f"{where}.{used[0]}")
    window = data.negatives_range
    if window is not None and (len(window) != 2 or not 0 <= window[0] < window[1] <= data.depth):
        raise IrdistillError(f"{where}.negatives_range={window} must be [min, max] with "
                             f"0 <= min < max <= {where}.depth ({data.depth})",
                             hint="e.g. [10, 100]: the candidates ranked 11 to 100")
    for key in ("false_negative_margin", "false_negative_relative_margin"):
        value = getattr(data, key)
        if value is not None and not (value >= 0 and value != float("inf")):
            raise IrdistillError(f"{where}.{key}={value} must be a finite number, at least 0")
    if (data.false_negative_margin is not None or data.false_negative_relative_margin
            is not None) and not data.teacher_run:
        raise IrdistillError(f"the false-negative margins of {where} need {where}.teacher_run, "
                             "a run of the teacher's scores of the candidates and positives",
                             hint="e.g. irdistill teach ensemble COLLECTION --run CANDIDATES "
                                  "--add-positives ..., then --set data.teacher_run=OUT/"
                                  "ensemble.trec")


def mining_options(data) -> dict:
    """The ``mining`` argument of :func:`label_groups` for a DataConfig: ``{}`` when no mining
    key is set (groups exactly as before), else ``{"mining": Mining(...)}`` with the teacher's
    run read (once, for every epoch)."""
    check_mining(data)
    if all(getattr(data, k, None) is None for k in MINING_KEYS):
        return {}

    mining = Mining(rank_range=tuple(data.negatives_range) if data.negatives_range else None,
                    margin=data.false_negative_margin,
                    relative_margin=data.false_negative_relative_margin)
    if mining.filters:
        mining.teacher = read_run(data.teacher_run, compact=True)
    return {"mining": mining}


@register_mode("labels", "run")
def label_groups(run: Run, qrels: Qrels, *, negatives: int = 7, depth: int = 100,
                 sampling: str = "random", seed: int = 0, epoch: int = 0,
                 mining: Mining | None = None) -> list[Group]:
    """One positive (a judged relevant document) and ``negatives`` sampled from the run's
    top-``depth`` documents that are not judged relevant. Targets are the qrels labels.
    ``mining`` narrows the candidates (see :class:`Mining`)."""
    rng = np.random.default_rng([seed, epoch])
    groups = []
    skipped_no_pos = skipped_no_neg = 0
    mined = {"candidates": 0, "margin": 0, "unscored": 0, "no_teacher_positive": 0}
    for qid in sorted(run):
        judged = qrels.get(qid, {})
        positives = sorted(d for d, rel in judged.items() if rel > 0)
        if not positives:
            skipped_no_pos += 1
            continue
        ranking = query_ranking(run, qid, depth)
        if mining is not None and mining.rank_range is not None:
            ranking = ranking[mining.rank_range[0]:mining.rank_range[1]]
        candidates = [d for d, _ in ranking if judged.get(d, 0) <= 0]
        if mining is not None and mining.filters:
            candidates = _drop_false_negatives(mining, qid, positives, candidates, mined)
            if candidates is None:
                continue
        if not candidates:
            skipped_no_neg += 1
            continue
        positive = positives[(epoch + int(rng.integers(len(positives)))) % len(positives)]
        chosen = pick(candidates, negatives, sampling, rng)
        docs = [positive, *chosen]
        groups.append(Group(qid, docs, [float(judged.get(d, 0)) for d in docs]))
    if mining is not None:
        _log_mining(mining, mined, epoch, len(groups))
    if skipped_no_pos or skipped_no_neg:
        log.info("training groups: %d queries, skipped %d without a judged positive and %d "
                 "without negatives in the run%s", len(groups), skipped_no_pos, skipped_no_neg,
                 " (after mining)" if mining is not None else "")
    if not groups and mined["no_teacher_positive"]:
        raise IrdistillError("data.teacher_run scores none of the judged positives of the "
                             f"{mined['no_teacher_positive']} queries, so no false-negative "
                             "margin can be applied",
                             hint="score the positives too (irdistill teach ensemble "
                                  "--add-positives), or check that the runs share query ids")
    return groups


def _drop_false_negatives(mining: Mining, qid: str, positives: list[str],
                          candidates: list[str], mined: dict) -> list[str] | None:
    """The candidates the teacher scores clearly below the positive (None: the teacher scored
    no positive of the query, which is skipped); counts what it drops in ``mined``."""
    scores = (mining.teacher or {}).get(qid, {})
    scored = [scores[p] for p in positives if p in scores]
    if not scored:
        mined["no_teacher_positive"] += 1
        return None
    positive = min(scored)  # the hardest positive, as sentence-transformers does
    kept = []
    for d in candidates:
        mined["candidates"] += 1
        if d not in scores:
            mined["unscored"] += 1
        elif (mining.margin is not None and scores[d] + mining.margin > positive) or (
                mining.relative_margin is not None
                and scores[d] > positive - abs(positive) * mining.relative_margin):
            mined["margin"] += 1
        else:
            kept.append(d)
    return kept


def _log_mining(mining: Mining, mined: dict, epoch: int, n_groups: int) -> None:
    window = (f"ranks {mining.rank_range[0] + 1}-{mining.rank_range[1]}" if mining.rank_range
              else "the run's top-depth")
    if not mining.filters:
        log.info("hard negatives (epoch %d): from %s of the run, %d groups", epoch, window,
                 n_groups)
        return
    total = max(1, mined["candidates"])
    log.info("hard negatives (epoch %d): of %d candidates in %s, dropped %d (%.1f%%) within the "
             "teacher's %s margin of the positive and %d (%.1f%%) the teacher did not score; "
             "skipped %d queries whose positives the teacher did not score; %d groups", epoch,
             mined["candidates"], window, mined["margin"], 100 * mined["margin"] / total,
             mining.describe(), mined["unscored"], 100 * mined["unscored"] / total,
             mined["no_teacher_positive"], n_groups)
    if mined["unscored"] or mined["no_teacher_positive"]:
        log.warning("hard negatives: the teacher run lacks %d candidates and every positive of "
                    "%d queries; score the candidate run to data.depth, with the positives "
                    "(irdistill teach ensemble --run RUN --depth D --add-positives)",
                    mined["unscored"], mined["no_teacher_positive"])


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
        ranking = query_ranking(run, qid, depth)
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
    return teacher_groups(run, qrels, targets="scores", **kwargs)


@register_mode("teacher_ranks", "teacher_run")
def teacher_rank_groups(run: Run, qrels: Qrels | None = None, **kwargs) -> list[Group]:
    """``run`` is ranked by a teacher (its scores give the order; the rank column is ignored,
    as trec_eval does); targets are ``depth - rank + 1`` (see :func:`teacher_groups`)."""
    return teacher_groups(run, qrels, targets="ranks", **kwargs)


@register_mode("triples", "triples")
def triple_groups(*, triples: str | None = None, max_queries: int | None = None,
                  epoch: int = 0):  # a stream: every epoch reads the file again
    """Groups ``[pos, neg]`` with targets ``[pos_score, neg_score]``, streamed from a triple file."""
    if not triples:
        raise IrdistillError("data.mode=triples needs data.triples, the path of a triple file",
                             hint="e.g. --set data.triples=bert_cat_ensemble_msmarcopassage_train_"
                                  "scores_ids.tsv")
    return TripleGroups(triples, max_queries=max_queries)


def build_groups(mode: str, *, epoch: int, **kwargs) -> Iterable[Group]:
    """The groups of ``mode`` for one epoch: a list, or a re-iterable stream (``triples``).
    ``kwargs`` are those of the mode's source (:data:`irdistill.train.sources.BUILDER_ARGUMENTS`);
    a builder refuses any other."""
    if mode not in MODES:
        raise unknown_name("data mode", mode, MODES)
    groups = MODES[mode](epoch=epoch, **kwargs)
    if isinstance(groups, list) and not groups:
        raise IrdistillError("no training groups could be built",
                             hint="check that the run and qrels share query and document ids")
    return groups
