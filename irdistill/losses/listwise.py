"""Listwise losses: a distribution, or a metric, over each query's list of real slots."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from irdistill.losses.base import (check_inputs, masked_fill_scores, real_scores, reduce_terms,
                                   register)


def _has_slot(mask: torch.Tensor) -> torch.Tensor:
    """``[Q, 1]``: True for queries with at least one real slot (one term each)."""
    return mask.any(dim=1, keepdim=True)


@register("infonce")
def infonce(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
            temperature: float = 1.0) -> torch.Tensor:
    """Contrastive InfoNCE with hard negatives (van den Oord et al. 2018, arXiv 1807.03748;
    used for re-rankers as "localized contrastive estimation", Gao et al. 2021, arXiv 2101.08751).

    Slot 0 is the positive; one term per query:
    ``-log softmax(s / temperature)[0]`` over the query's real slots. ``targets`` is unused.
    A query whose slot 0 is padded has no term.
    """
    mask = check_inputs(scores, targets, mask)
    logits = masked_fill_scores(scores / temperature, mask)
    log_probs = torch.log_softmax(logits, dim=1)
    terms = -log_probs[:, :1]
    return reduce_terms(terms, mask[:, :1])


def _cross_entropy(p_logits: torch.Tensor, q_logits: torch.Tensor, mask: torch.Tensor,
                   kl: bool) -> torch.Tensor:
    """Per query ``sum_i p_i (log p_i - log q_i)`` (``kl``) or ``-sum_i p_i log q_i`` over real
    slots, with ``p = softmax(p_logits)``, ``q = softmax(q_logits)``. ``[Q, 1]``."""
    log_p = torch.log_softmax(masked_fill_scores(p_logits, mask), dim=1)
    log_q = torch.log_softmax(masked_fill_scores(q_logits, mask), dim=1)
    zero = torch.zeros((), dtype=log_q.dtype, device=log_q.device)
    log_p = torch.where(mask, log_p, zero)
    p = torch.where(mask, log_p.exp(), zero)
    log_q = torch.where(mask, log_q, zero)
    inner = p * (log_p - log_q) if kl else -p * log_q
    return inner.sum(dim=1, keepdim=True)


@register("kl")
def kl(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
       temperature: float = 1.0) -> torch.Tensor:
    """Listwise KL distillation of a teacher's score distribution (Hinton et al. 2015,
    arXiv 1503.02531; for re-rankers, arXiv 2507.08336).

    One term per query: ``KL(softmax(t / T) || softmax(s / T))`` over the query's real slots,
    ``T=1``; ``targets`` are the teacher's scores (logits). No ``T^2`` factor is applied.
    """
    mask = check_inputs(scores, targets, mask)
    terms = _cross_entropy(targets / temperature, scores / temperature, mask, kl=True)
    return reduce_terms(terms, _has_slot(mask))


@register("listnet")
def listnet(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
            ) -> torch.Tensor:
    """ListNet with top-one probabilities (Cao et al. 2007, "Learning to rank: from pairwise
    approach to listwise approach", ICML; as in sentence-transformers' ``ListNetLoss``).

    One term per query: ``-sum_i softmax(t)_i log softmax(s)_i`` over the query's real slots.
    ``targets``: labels or teacher scores. It differs from ``kl`` by the (constant) entropy of
    ``softmax(t)``, so the gradients are the same.
    """
    mask = check_inputs(scores, targets, mask)
    terms = _cross_entropy(targets, scores, mask, kl=False)
    return reduce_terms(terms, _has_slot(mask))


def _gains(targets: torch.Tensor, mask: torch.Tensor, scale_gains: bool = True) -> torch.Tensor:
    """nDCG gains of real slots: ``2^max(t, 0) - 1`` (or ``max(t, 0)``); 0 for padded slots."""
    t = targets.clamp(min=0.0).masked_fill(~mask, 0.0)
    return torch.pow(2.0, t) - 1.0 if scale_gains else t


def _ideal_dcg(gains: torch.Tensor) -> torch.Tensor:
    """``[Q]`` DCG of the gains sorted best first: ``sum_k g_(k) / log2(1 + k)``."""
    ideal, _ = gains.sort(dim=1, descending=True)
    positions = torch.arange(1, gains.shape[1] + 1, device=gains.device, dtype=gains.dtype)
    return (ideal / torch.log2(1.0 + positions)).sum(dim=1)


@register("lambdaloss")
def lambdaloss(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
               mu: float = 10.0, sigma: float = 1.0) -> torch.Tensor:
    """LambdaLoss with the NDCG-Loss2++ weights (Wang et al. 2018, "The LambdaLoss Framework
    for Ranking Metric Optimization", CIKM, eq. 13 and section 5; as allRank's ``lambdaLoss``
    with ``weighing_scheme="ndcgLoss2PP_scheme"`` and sentence-transformers' ``LambdaLoss``).

    The query's real slots are sorted by the model's scores (stable: equal scores keep slot
    order), giving each slot a position ``p_i``; ``D(p) = log2(1 + p)``, gains
    ``G_i = (2^max(t_i, 0) - 1) / maxDCG``. Each pair of real slots with ``t_i > t_j``::

        -w_ij * log2(sigmoid(sigma * (s_i - s_j)))
        w_ij = (|1/D(p_i) - 1/D(p_j)| + mu * |1/D(|p_i - p_j|) - 1/D(|p_i - p_j| + 1)|)
               * |G_i - G_j|

    ``mu=10``, ``sigma=1``. ``targets``: graded labels or non-negative teacher scores/ranks. A
    query whose gains are all 0 (maxDCG = 0) has no term. The paper sums the pair terms; here
    each query's loss is their mean, as the contract says.
    """
    mask = check_inputs(scores, targets, mask)
    order = masked_fill_scores(scores, mask).argsort(dim=1, descending=True, stable=True)
    s = real_scores(scores, mask).gather(1, order)
    t = targets.gather(1, order)
    m = mask.gather(1, order)  # real slots first: positions 1..n of the query's ranking
    gains = _gains(t, m)
    max_dcg = _ideal_dcg(gains)
    has_gain = max_dcg > 0
    g = gains / max_dcg.clamp(min=1e-10).unsqueeze(1)

    positions = torch.arange(1, s.shape[1] + 1, device=s.device, dtype=s.dtype)
    inv_d = 1.0 / torch.log2(1.0 + positions)  # 1/D(p), p = 1..L
    rho = (inv_d.unsqueeze(1) - inv_d.unsqueeze(0)).abs()
    gap = (positions.unsqueeze(1) - positions.unsqueeze(0)).abs()  # |p_i - p_j|, 0 on diagonal
    delta = (1.0 / torch.log2(1.0 + gap.clamp(min=1.0)) - 1.0 / torch.log2(2.0 + gap)).abs()
    delta = delta * (gap > 0)
    weights = (rho + mu * delta).unsqueeze(0) * (g.unsqueeze(2) - g.unsqueeze(1)).abs()

    diffs = s.unsqueeze(2) - s.unsqueeze(1)
    terms = weights * F.softplus(-sigma * diffs) / math.log(2.0)
    pairs = m.unsqueeze(2) & m.unsqueeze(1) & (t.unsqueeze(2) > t.unsqueeze(1))
    return reduce_terms(terms, pairs & has_gain.view(-1, 1, 1))
