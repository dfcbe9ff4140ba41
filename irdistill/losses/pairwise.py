"""Pairwise losses: terms over pairs of slots of one query.

A pair ``(i, j)`` of real slots with ``t_i > t_j`` says "i should be ranked above j"; tied
targets make no pair. Each query's loss is the mean over its pairs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from irdistill.losses.base import check_inputs, pair_mask, real_scores, reduce_terms, register


def _score_diffs(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[Q, L, L]`` with ``[q, i, j] = s_i - s_j`` (padded scores cut out)."""
    s = real_scores(scores, mask)
    return s.unsqueeze(2) - s.unsqueeze(1)


@register("hinge")
def hinge(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
          margin: float = 1.0) -> torch.Tensor:
    """Pairwise hinge (margin ranking) loss of RankSVM (Herbrich et al. 1999; Joachims 2002,
    "Optimizing search engines using clickthrough data", KDD); torch's ``MarginRankingLoss``.

    Each pair of real slots with ``t_i > t_j``: ``max(0, margin - (s_i - s_j))``, ``margin=1``.
    ``targets``: relevance labels or teacher scores (only their order is used).
    """
    mask = check_inputs(scores, targets, mask)
    terms = torch.clamp(margin - _score_diffs(scores, mask), min=0.0)
    return reduce_terms(terms, pair_mask(targets, mask))


@register("ranknet")
def ranknet(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
            ) -> torch.Tensor:
    """RankNet (Burges et al. 2005, "Learning to rank using gradient descent", ICML), used
    for LLM-ranking distillation in Rank-DistiLLM (Schlatt et al. 2025, arXiv 2405.07920).

    Each pair of real slots with ``t_i > t_j``: ``log(1 + exp(-(s_i - s_j)))``, i.e. the
    binary cross-entropy of ``sigmoid(s_i - s_j)`` against 1 (computed as a stable softplus).
    ``targets``: labels, teacher scores or ``depth - rank + 1`` of a teacher ranking.
    """
    mask = check_inputs(scores, targets, mask)
    terms = F.softplus(-_score_diffs(scores, mask))
    return reduce_terms(terms, pair_mask(targets, mask))


@register("margin_mse")
def margin_mse(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Margin-MSE distillation (Hofstaetter et al. 2020, arXiv 2010.02666, eq. 1).

    Slot 0 is the positive; each real slot ``j >= 1``:
    ``((s_0 - s_j) - (t_0 - t_j))^2``, where ``t`` are the teacher's scores. A query whose
    slot 0 is padded has no term. Groups of [positive, negative] from Hofstaetter's triple
    files are the classic input; longer groups give one term per negative.
    """
    mask = check_inputs(scores, targets, mask)
    s = real_scores(scores, mask)
    t = targets.masked_fill(~mask, 0.0)
    terms = ((s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])) ** 2
    return reduce_terms(terms, mask[:, :1] & mask[:, 1:])
