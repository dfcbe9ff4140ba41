"""Shared helpers of the loss library.

Every loss is a pure function ``loss(scores, targets, mask=None, **params) -> 0-dim tensor``:

* ``scores``: float ``[queries, list_size]``, the model's scores;
* ``targets``: float ``[queries, list_size]``, relevance labels or teacher scores (higher = better);
* ``mask``: bool ``[queries, list_size]``, True for real slots; ``None`` means all real.

Masked slots take part in nothing. Each query's loss is the mean of its terms; the batch loss
is the mean over the queries that have at least one term.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

LossFn = Callable[..., torch.Tensor]
LOSSES: dict[str, LossFn] = {}
# Sparse regularisers take a ``[batch, vocab]`` representation, not scores and targets; they
# live in their own registry so that every entry of LOSSES keeps the contract above.
REGULARIZERS: dict[str, LossFn] = {}


def register(name: str, registry: dict[str, LossFn] | None = None
             ) -> Callable[[LossFn], LossFn]:
    """Add a loss to ``registry`` (default :data:`LOSSES`) under ``name``."""
    registry = LOSSES if registry is None else registry

    def wrap(fn: LossFn) -> LossFn:
        if name in registry:
            raise ValueError(f"loss '{name}' is registered twice")
        registry[name] = fn
        fn.loss_name = name
        return fn

    return wrap


def check_inputs(scores: torch.Tensor, targets: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
    """Validate shapes and return a bool mask (all True when ``mask`` is None)."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [queries, list_size], got shape {tuple(scores.shape)}")
    if targets.shape != scores.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} != scores shape "
                         f"{tuple(scores.shape)}")
    if mask is None:
        return torch.ones_like(scores, dtype=torch.bool)
    if mask.shape != scores.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != scores shape {tuple(scores.shape)}")
    return mask.to(torch.bool)


def reduce_terms(terms: torch.Tensor, term_mask: torch.Tensor) -> torch.Tensor:
    """Mean of each query's valid terms, then the mean over queries with at least one term.

    ``terms`` and ``term_mask`` have the query on dimension 0 and any shape after it.
    Invalid terms are zeroed with ``torch.where`` so that NaN/inf in them cannot leak into
    the result or its gradient.
    """
    flat = terms.reshape(terms.shape[0], -1)
    valid = term_mask.reshape(term_mask.shape[0], -1)
    flat = torch.where(valid, flat, torch.zeros((), dtype=flat.dtype, device=flat.device))
    counts = valid.sum(dim=1)
    has_terms = counts > 0
    if not bool(has_terms.any()):
        return (flat.sum() * 0.0).reshape(())  # keeps the graph; no term to learn from
    per_query = flat.sum(dim=1)[has_terms] / counts[has_terms].to(flat.dtype)
    return per_query.mean()


def pair_mask(targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[Q, L, L]`` True where both slots are real and target i > target j."""
    both = mask.unsqueeze(2) & mask.unsqueeze(1)
    return both & (targets.unsqueeze(2) > targets.unsqueeze(1))


def real_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores with padded slots replaced by the constant 0.

    Used wherever a padded slot's value would enter arithmetic (pairwise differences, sorts):
    the constant cuts the padded score out of the result and of the gradient, and keeps every
    intermediate value finite.
    """
    return scores.masked_fill(~mask, 0.0)


def approx_ranks(scores: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
                 ) -> torch.Tensor:
    """Differentiable ranks (Qin et al. 2010, eq. 19-20): ``1 + sum_{j != i} sigmoid((s_j - s_i) / T)``
    over the query's real slots ``j``. ``[Q, L]``; values at padded slots are meaningless."""
    s = real_scores(scores, mask)
    diffs = (s.unsqueeze(1) - s.unsqueeze(2)) / temperature  # [q, i, j] = s_j - s_i
    others = mask.unsqueeze(1) & ~torch.eye(s.shape[1], dtype=torch.bool, device=s.device)
    return 1.0 + (torch.sigmoid(diffs) * others).sum(dim=2)


def target_ranks(targets: torch.Tensor, mask: torch.Tensor, ties: str = "min") -> torch.Tensor:
    """Rank of each real slot by target, best = 1, among the query's real slots.

    ``ties="min"``: ``1 + #{j: t_j > t_i}`` (tied slots share the best of their ranks);
    ``ties="average"``: tied slots share the mean of their ranks.
    """
    if ties not in ("min", "average"):
        raise ValueError(f"ties must be 'min' or 'average', got {ties!r}")
    t_i, t_j, real_j = targets.unsqueeze(2), targets.unsqueeze(1), mask.unsqueeze(1)
    greater = ((t_j > t_i) & real_j).sum(dim=2).to(targets.dtype)
    if ties == "min":
        return 1.0 + greater
    equal = ((t_j == t_i) & real_j).sum(dim=2).to(targets.dtype)  # counts slot i itself
    return greater + (equal + 1.0) / 2.0


def masked_fill_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores with padded slots set to -inf (for softmax over real slots only)."""
    return scores.masked_fill(~mask, float("-inf"))
