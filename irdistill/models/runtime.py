"""Runtime policy: which precision and device a model runs in, how many tokens go into one
batch (where a model comes from is :mod:`irdistill.models.paths`, which needs no torch).

Shared by every model kind (cross-encoders, SPLADE, bi-encoders) and by training:

* precisions: :data:`INFERENCE_PRECISIONS` (training's are
  :data:`irdistill.config.TRAINING_PRECISIONS`), :func:`resolve_precision` (``auto`` -> what
  the device does natively), :func:`autocast_context`, :func:`training_precision`;
* devices: :func:`check_device`;
* token budgets: :func:`budget_for` and :func:`plan_batches` (batches cut by padded tokens).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from irdistill.errors import IrdistillError, suggest

if TYPE_CHECKING:
    from irdistill.config import Config

log = logging.getLogger(__name__)

#: inference precisions: autocast (``bf16``/``fp16``: fp32 weights, matrix products in half
#: precision, as training runs), ``auto`` (the fastest autocast the device does natively), and
#: ``bf16-full``/``fp16-full`` (weights and activations cast: faster still, a little less exact)
INFERENCE_PRECISIONS = ("fp32", "bf16", "fp16", "auto", "bf16-full", "fp16-full")
#: default budget of padded tokens per batch (``batch_size`` caps the pairs): "auto" is
#: ``GPU_MAX_TOKENS`` on an accelerator (fill it) and ``CPU_MAX_TOKENS`` on a CPU, where batches
#: of a few thousand tokens keep the activations in cache (measured on a 2-core EPYC with the
#: bundled MiniLM at ~220 tokens a pair: fp32 scoring 16-20% faster than one batch of 32 pairs,
#: bf16 the same; a training step's forward + backward 1.4-1.8x faster, see
#: ``train.forward_tokens``)
DEFAULT_MAX_TOKENS = "auto"
CPU_MAX_TOKENS = 2048
GPU_MAX_TOKENS = 16384


def budget_for(device, max_tokens: int | str | None = DEFAULT_MAX_TOKENS) -> int | None:
    """The padded-token budget ``max_tokens`` stands for on ``device`` ("auto": see
    :data:`DEFAULT_MAX_TOKENS`; None: no budget)."""
    if max_tokens != "auto":
        return max_tokens
    return CPU_MAX_TOKENS if torch.device(device).type == "cpu" else GPU_MAX_TOKENS


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True if the CPU computes bf16 matrix products natively (AVX-512 BF16 or AMX), where
    bf16 inference is about twice as fast as fp32; elsewhere it is emulated and slower.
    Reads the flags of ``cpuinfo`` (Linux); False where it cannot be read."""
    try:
        flags = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def check_precision(precision: str | None) -> None:
    if precision not in (None, "no", *INFERENCE_PRECISIONS):
        raise IrdistillError(f"unknown precision '{precision}'",
                             hint=suggest(str(precision), INFERENCE_PRECISIONS))


def check_device(device: str | None) -> torch.device | None:
    """``device`` as a torch device, or a clear error for a name torch does not know or a
    device this machine does not have."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise IrdistillError(f"unknown device '{device}'",
                             hint="e.g. cpu, cuda, cuda:1 or mps") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise IrdistillError(f"device '{device}' asked for, but CUDA is not available",
                             hint="use --device cpu")
    return parsed


def resolve_precision(device: torch.device | str, precision: str | None) -> str | None:
    """Check an inference precision and turn ``auto`` into what the device does best: bf16 on
    a CPU with native bf16 and on a GPU that supports it, fp16 on other GPUs, else fp32."""
    if precision in (None, "fp32", "no"):
        return None
    if precision not in INFERENCE_PRECISIONS:
        raise IrdistillError(f"unknown precision '{precision}'",
                             hint="choose " + ", ".join(INFERENCE_PRECISIONS))
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return None
    return precision


def autocast_context(device: torch.device, precision: str | None):
    """bf16/fp16 autocast where the device supports it; nothing for fp32 (and for the
    ``-full`` precisions, whose weights are already cast)."""
    precision = resolve_precision(device, precision)
    if precision is None or precision.endswith("-full"):
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cpu" and dtype is torch.float16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def plan_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None,
                 width: Callable[[int], int] = lambda n: n) -> list[tuple[int, int]]:
    """Cut pairs sorted longest first into batches ``[start, end)``: at most ``batch_size``
    pairs and, with ``max_tokens``, at most that many padded tokens (``width(longest) * pairs``;
    a pair longer than the budget gets a batch of its own)."""
    if batch_size < 1:
        raise IrdistillError(f"batch_size must be at least 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise IrdistillError(f"max_tokens must be at least 1, got {max_tokens}")
    spans, start, n = [], 0, len(lengths)
    while start < n:
        size = batch_size
        if max_tokens is not None:
            size = max(1, min(batch_size, max_tokens // width(int(lengths[start]))))
        spans.append((start, min(n, start + size)))
        start += size
    return spans


def training_precision(precision: str) -> str:
    """The precision training runs in: ``auto`` is bf16 where the device computes it natively
    (a GPU that supports it, a CPU with AVX-512 BF16 or AMX), fp16 on other GPUs, else fp32
    (emulated bf16 on a CPU is several times slower than fp32); others are as given."""
    if precision != "auto":
        return precision
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_precision(device, "auto") or "fp32"


def with_training_precision(config: Config) -> Config:
    """``config`` with its training precision resolved (see :func:`training_precision`)."""
    precision = training_precision(config.train.precision)
    if precision == config.train.precision:
        return config
    log.info("train.precision=auto: training in %s", precision)
    return dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                 precision=precision))
