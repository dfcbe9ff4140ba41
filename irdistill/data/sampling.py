"""Training groups: a query with a list of documents and one target per document.

A group feeds one row of the ``[queries, list_size]`` score tensor that every loss takes.
Group builders are registered by data mode (``labels`` here; teacher modes add to
:data:`MODES`). Sampling is seeded per epoch, so the groups of a run are the same every
time it is started or resumed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from irdistill.data.trec import Qrels, Run, ranked
from irdistill.errors import IrdistillError, unknown_name

log = logging.getLogger(__name__)

SAMPLINGS = ("top", "random", "top+random")


@dataclass
class Group:
    query_id: str
    doc_ids: list[str]
    targets: list[float]


def pick(candidates: list[str], k: int, sampling: str, rng: np.random.Generator) -> list[str]:
    """``k`` of ``candidates`` (best first): the top, a random sample, or half of each."""
    if sampling not in SAMPLINGS:
        raise unknown_name("sampling", sampling, SAMPLINGS)
    if len(candidates) <= k:
        return list(candidates)
    if sampling == "top":
        return candidates[:k]
    if sampling == "random":
        return [candidates[i] for i in sorted(rng.choice(len(candidates), k, replace=False))]
    n_top = k // 2
    rest = candidates[n_top:]
    chosen = rng.choice(len(rest), k - n_top, replace=False)
    return candidates[:n_top] + [rest[i] for i in sorted(chosen)]


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


GroupBuilder = Callable[..., list[Group]]
MODES: dict[str, GroupBuilder] = {"labels": label_groups}


def build_groups(mode: str, *, epoch: int, **kwargs) -> list[Group]:
    if mode not in MODES:
        raise unknown_name("data mode", mode, MODES)
    groups = MODES[mode](epoch=epoch, **kwargs)
    if not groups:
        raise IrdistillError("no training groups could be built",
                             hint="check that the run and qrels share query and document ids")
    return groups
