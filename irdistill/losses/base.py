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


def register(name: str) -> Callable[[LossFn], LossFn]:
    """Add a loss to the registry under ``name``."""

    def wrap(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' is registered twice")
        LOSSES[name] = fn
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
        return (terms.sum() * 0.0).reshape(())  # keeps the graph; no term to learn from
    per_query = flat.sum(dim=1)[has_terms] / counts[has_terms].to(flat.dtype)
    return per_query.mean()


def pair_mask(targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[Q, L, L]`` True where both slots are real and target i > target j."""
    both = mask.unsqueeze(2) & mask.unsqueeze(1)
    return both & (targets.unsqueeze(2) > targets.unsqueeze(1))


def masked_fill_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores with padded slots set to -inf (for softmax over real slots only)."""
    return scores.masked_fill(~mask, float("-inf"))
