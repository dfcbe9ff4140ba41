"""The loss library: pure functions of ``[queries, list_size]`` scores, targets and a mask.

``LOSSES[name](scores, targets, mask=None, **params)`` returns a 0-dim tensor. See
:mod:`irdistill.losses.base` for the contract shared by every loss. One module per family:

* pointwise: ``bce``, ``mse``
* pairwise: ``hinge``, ``ranknet``, ``margin_mse``
* listwise: ``infonce``, ``kl``, ``listnet``, ``lambdaloss``
* approximate: ``adr_mse``, ``approx_ndcg``

The sparse regularisers ``flops`` and ``l1`` take a ``[batch, vocab]`` representation instead
and are in :data:`REGULARIZERS` (see :mod:`irdistill.losses.regularization`).
"""
from irdistill.losses import (approximate, listwise, pairwise, pointwise,  # noqa: F401
                              regularization)
from irdistill.losses.base import LOSSES, REGULARIZERS, register

__all__ = ["LOSSES", "REGULARIZERS", "register", "get_loss", "get_regularizer"]


def get_loss(name: str):
    from irdistill.errors import unknown_name

    if name not in LOSSES:
        if name in REGULARIZERS:
            from irdistill.errors import IrdistillError

            raise IrdistillError(f"'{name}' is a sparse regulariser, not a ranking loss",
                                 hint=f"choose a loss: {', '.join(sorted(LOSSES))}")
        raise unknown_name("loss", name, LOSSES)
    return LOSSES[name]


def get_regularizer(name: str):
    from irdistill.errors import unknown_name

    if name not in REGULARIZERS:
        raise unknown_name("regularizer", name, REGULARIZERS)
    return REGULARIZERS[name]
