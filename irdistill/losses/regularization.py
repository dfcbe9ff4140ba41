"""Sparsity regularisers for learned sparse representations (SPLADE).

These do not follow the scores/targets contract of :data:`irdistill.losses.LOSSES`; they are
registered in :data:`irdistill.losses.REGULARIZERS` and take::

    reg(reps, mask=None) -> 0-dim tensor

* ``reps``: float ``[batch, vocab]``, one (non-negative) term-weight vector per query or document;
* ``mask``: bool ``[batch]``, True for real rows (None = all real). Padded rows take part in
  nothing; with no real row the result is 0 (still attached to the graph).

A training loop weighs them, e.g. ``loss = ranking + lambda_d * flops(doc_reps)``.
"""
from __future__ import annotations

import torch

from irdistill.losses.base import REGULARIZERS, register


def _rows(reps: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if reps.dim() != 2:
        raise ValueError(f"reps must be [batch, vocab], got shape {tuple(reps.shape)}")
    if mask is None:
        return torch.ones(reps.shape[0], dtype=torch.bool, device=reps.device)
    if mask.shape != reps.shape[:1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} != [batch] = {tuple(reps.shape[:1])}")
    return mask.to(torch.bool)


@register("flops", REGULARIZERS)
def flops(reps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """FLOPS regulariser (Paria et al. 2020, "Minimizing FLOPs to learn efficient sparse
    representations", arXiv 2004.05665; used by SPLADE, Formal et al. 2021, arXiv 2107.05720).

    ``sum_v ( (1/N) sum_i |w_iv| )^2`` over the ``N`` real rows: the squared mean activation of
    each vocabulary term, summed, a smooth proxy of the expected cost of an inverted-index match.
    """
    rows = _rows(reps, mask)
    n = rows.sum()
    if n == 0:
        return (reps.sum() * 0.0).reshape(())
    zero = torch.zeros((), dtype=reps.dtype, device=reps.device)
    mean_abs = torch.where(rows.unsqueeze(1), reps.abs(), zero).sum(dim=0) / n
    return (mean_abs ** 2).sum()


@register("l1", REGULARIZERS)
def l1(reps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 regulariser (Tibshirani 1996, the lasso; for sparse retrieval, SNRM, Zamani et al.
    2018): ``(1/N) sum_i sum_v |w_iv|`` over the ``N`` real rows."""
    rows = _rows(reps, mask)
    n = rows.sum()
    if n == 0:
        return (reps.sum() * 0.0).reshape(())
    zero = torch.zeros((), dtype=reps.dtype, device=reps.device)
    return torch.where(rows.unsqueeze(1), reps.abs(), zero).sum() / n
