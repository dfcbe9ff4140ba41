"""The loss library: pure functions of ``[queries, list_size]`` scores, targets and a mask.

``LOSSES[name](scores, targets, mask=None, **params)`` returns a 0-dim tensor. See
:mod:`irdistill.losses.base` for the contract shared by every loss.
"""
from irdistill.losses import listwise, pointwise  # noqa: F401  (registers the losses)
from irdistill.losses.base import LOSSES, register

__all__ = ["LOSSES", "register", "get_loss"]


def get_loss(name: str):
    from irdistill.errors import unknown_name

    if name not in LOSSES:
        raise unknown_name("loss", name, LOSSES)
    return LOSSES[name]
