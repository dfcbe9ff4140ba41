"""Losses on differentiable approximations of ranks (Qin et al. 2010, "A general approximation
framework for direct optimization of information retrieval measures", Inf. Retr. 13).

The approximate rank of real slot ``i`` is ``1 + sum_{j != i} sigmoid((s_j - s_i) / T)`` over
the query's other real slots (:func:`irdistill.losses.base.approx_ranks`).
"""
from __future__ import annotations

import torch

from irdistill.losses.base import approx_ranks, check_inputs, reduce_terms, register, target_ranks
from irdistill.losses.listwise import _gains, _ideal_dcg


@register("adr_mse")
def adr_mse(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
            temperature: float = 1.0, ties: str = "min") -> torch.Tensor:
    """Approximate Discounted Rank MSE (Rank-DistiLLM, Schlatt et al. 2025, arXiv 2405.07920,
    section 3; Lightning IR's ``ApproxRankMSE(discount="log2")``).

    Teacher rank ``r_i = 1 + #{j real: t_j > t_i}``; approximate rank
    ``r^_i = 1 + sum_{j != i} sigmoid((s_j - s_i) / T)``, ``T=1``; each real slot:
    ``(r^_i - r_i)^2 / log2(r_i + 1)``. ``targets``: ``depth - rank + 1`` of a teacher ranking
    (or any scores whose order is the teacher's). ``ties="average"`` gives tied targets the
    mean of their ranks instead (sentence-transformers' ``ADRMSELoss`` does so), which the
    approximate ranks can reach when tied slots get equal scores.
    """
    mask = check_inputs(scores, targets, mask)
    ranks = target_ranks(targets, mask, ties)
    approx = approx_ranks(scores, mask, temperature)
    terms = (approx - ranks) ** 2 / torch.log2(ranks + 1.0)
    return reduce_terms(terms, mask)


@register("approx_ndcg")
def approx_ndcg(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                temperature: float = 1.0, scale_gains: bool = True) -> torch.Tensor:
    """ApproxNDCG (Qin et al. 2010, eq. 21; Bruch et al. 2019, "An analysis of the softmax
    cross entropy loss for learning-to-rank"; as Lightning IR's ``ApproxNDCG`` and allRank's
    ``approxNDCGLoss``).

    One term per query: ``1 - sum_i g_i / log2(1 + r^_i) / IDCG`` over real slots, with gains
    ``g_i = 2^max(t_i, 0) - 1`` (``scale_gains=False``: ``max(t_i, 0)``), ``r^`` the approximate
    ranks at temperature ``T=1`` and IDCG the DCG of the gains sorted best first. A query
    whose gains are all 0 has no term. ``targets``: graded labels (or non-negative scores).
    """
    mask = check_inputs(scores, targets, mask)
    gains = _gains(targets, mask, scale_gains)
    idcg = _ideal_dcg(gains)
    ranks = approx_ranks(scores, mask, temperature)
    dcg = (gains / torch.log2(1.0 + ranks)).sum(dim=1)
    terms = 1.0 - dcg / idcg.clamp(min=1e-10)
    return reduce_terms(terms.unsqueeze(1), (idcg > 0).unsqueeze(1))
