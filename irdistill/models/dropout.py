"""Dropout that is cheap on a CPU, for training.

On a CPU, PyTorch's dropout draws one random number per element from its Mersenne Twister, and
SDPA with ``dropout_p > 0`` leaves its fused CPU kernel for the unfused path: a MiniLM-L6
training step of 32 pairs of 216 tokens takes 6.1 s in fp32 with PyTorch's dropout, 4.1 s with
none and 4.9 s with this module (2 cores, ``benchmarks/dropout_step.py``). No library offers a
faster CPU dropout for Hugging Face models, hence this module:

- :func:`keep_mask` draws 64-bit words from PyTorch's generator and reads each as four
  independent uniform 16-bit numbers (one draw per four elements); an element is dropped when
  its number falls below ``round(p * 65536)``, so it is dropped with probability
  ``p' = round(p * 65536) / 65536`` (``|p' - p| <= 2**-17``), and kept elements are scaled by
  ``1 / (1 - p')``: the expectation is exact, as in :func:`torch.nn.functional.dropout`.
- :func:`attention` is SDPA with that mask on the attention probabilities
  (``softmax(q k^T * scale + mask)``, dropped, times ``v``), registered with transformers'
  ``AttentionInterface`` as ``"irdistill-sdpa"``; outside CPU training with dropout it is SDPA
  itself.
- :class:`FastDropout` replaces ``torch.nn.Dropout`` modules (hidden and embedding dropout).

:func:`cpu_dropout` switches a model to both for the time of a training run and back (the saved
config still says ``sdpa``; loaded elsewhere the model is unchanged). Random numbers come from
PyTorch's global generator, so seeds and checkpointed RNG state give reproducible, resumable
runs. On a GPU everything falls back to PyTorch (its dropout is cheap there).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

#: the attention implementation name registered with transformers
ATTENTION = "irdistill-sdpa"
_UNSUPPORTED = ("softcap", "position_bias", "s_aux", "cache", "sliding_window_size")


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """A boolean mask of ``shape``, True where an element is kept, and the scale of kept
    elements: each element dropped with probability ``round(p * 65536) / 65536``."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2 ** 63), None, generator=generator)  # the full 64-bit range: 4 uniform halves
    cut = round(p * 65536)
    keep = words.view(torch.int16)[:n].view(shape) >= cut - 32768
    return keep, 65536.0 / (65536 - cut)


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-mode dropout of ``x`` with a mask from :func:`keep_mask`."""
    keep, scale = keep_mask(x.shape, p, x.device, generator)
    return x.masked_fill(~keep, 0.0) * scale


def _falls_back(module, query, key, dropout_p: float, kwargs: dict) -> bool:
    return (dropout_p == 0.0 or query.device.type != "cpu"
            or getattr(module, "is_causal", False) or kwargs.get("is_causal")
            or query.shape[1] != key.shape[1]  # grouped key/value heads
            or any(kwargs.get(name) is not None for name in _UNSUPPORTED)
            or kwargs.get("output_attentions"))


def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
              value: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float = 0.0,
              scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature (``[batch, heads, length, dim]`` inputs,
    ``[batch, length, heads, dim]`` output). With dropout on a CPU: the explicit softmax with a
    :func:`keep_mask`; otherwise transformers' SDPA function, unchanged."""
    if _falls_back(module, query, key, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    # the scale on the query ([.., length, dim]), not on the scores ([.., length, length]);
    # the matrix product's output is not needed by its backward, so the mask goes in place
    scores = torch.matmul(query * scale, key.transpose(-1, -2))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores.add_(attention_mask)
    probs = scores.softmax(-1)
    keep, keep_scale = keep_mask(probs.shape, dropout, probs.device)
    # the 1/(1 - p) scale goes on the [batch, heads, length, dim] product, not the probabilities
    out = torch.matmul(probs.masked_fill(~keep, 0.0).to(value.dtype), value) * keep_scale
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register :func:`attention` (and SDPA's mask format) under :data:`ATTENTION`."""
    AttentionInterface.register(ATTENTION, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


class FastDropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` with :func:`dropout` in training on a CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        return dropout(x, self.p)


@contextlib.contextmanager
def cpu_dropout(model: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """For the time of the block: every plain ``torch.nn.Dropout`` of ``model`` a
    :class:`FastDropout`, and every sub-model on transformers' SDPA attention on
    :data:`ATTENTION`; all put back afterwards. Yields the number of modules switched (0 when
    disabled). Models with their own attention code (DeBERTa-v3) keep it; their
    ``nn.Dropout`` modules still switch."""
    if not enabled:
        yield 0
        return
    register()
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Dropout]] = []
    switched: list[PreTrainedModel] = []
    try:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.Dropout:
                    replacement = FastDropout(child.p, child.inplace)
                    replacement.train(child.training)
                    setattr(parent, name, replacement)
                    swapped.append((parent, name, child))
        for sub in model.modules():
            if (isinstance(sub, PreTrainedModel)
                    and getattr(sub.config, "_attn_implementation", None) == "sdpa"):
                try:
                    sub.set_attn_implementation(ATTENTION)
                except (ValueError, KeyError, NotImplementedError):  # a model that cannot switch
                    continue
                switched.append(sub)
        yield len(swapped) + len(switched)
    finally:
        for sub in switched:
            sub.set_attn_implementation("sdpa")
        for parent, name, child in swapped:
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)
