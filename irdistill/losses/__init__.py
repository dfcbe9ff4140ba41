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
import inspect

from irdistill.errors import IrdistillError, suggest, unknown_name
from irdistill.losses import (approximate, listwise, pairwise, pointwise,  # noqa: F401
                              regularization)
from irdistill.losses.base import LOSSES, REGULARIZERS, register

__all__ = ["LOSSES", "REGULARIZERS", "register", "get_loss", "get_regularizer",
           "check_loss_params"]


def get_loss(name: str):
    if name not in LOSSES:
        if name in REGULARIZERS:
            raise IrdistillError(f"'{name}' is a sparse regulariser, not a ranking loss",
                                 hint=f"choose a loss: {', '.join(sorted(LOSSES))}")
        raise unknown_name("loss", name, LOSSES)
    return LOSSES[name]


def get_regularizer(name: str):
    if name not in REGULARIZERS:
        raise unknown_name("regularizer", name, REGULARIZERS)
    return REGULARIZERS[name]


def loss_parameters(name: str) -> dict[str, object]:
    """The parameters of loss ``name`` beyond scores, targets and mask, with their defaults."""
    signature = inspect.signature(get_loss(name))
    return {p.name: p.default for p in list(signature.parameters.values())[3:]}


def check_loss_params(name: str, params: dict) -> None:
    """Raise a clear error for a ``loss_params`` key that loss ``name`` does not take."""
    allowed = loss_parameters(name)
    for key in params:
        if key not in allowed:
            hint = (suggest(key, allowed) if allowed
                    else "this loss takes no parameters; remove loss_params")
            if allowed:
                hint += "; its parameters: " + ", ".join(f"{k}={v!r}" for k, v in allowed.items())
            raise IrdistillError(f"loss '{name}' has no parameter '{key}'", hint=hint)
