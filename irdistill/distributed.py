"""Which process this is under ``torchrun``/``accelerate launch``, and simple coordination.

Outside a launcher (no ``WORLD_SIZE`` above 1 in the environment) every helper is a no-op for
a single process. Under one, the process group is set up by accelerate (gloo on CPUs, NCCL on
GPUs), the same one the Hugging Face Trainer then uses.
"""
from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist

#: how long a process may wait at a barrier (the others re-rank, score passages, build an
#: index): torch's default of 30 minutes is too short for a long evaluation;
#: ``IRDISTILL_DIST_TIMEOUT_HOURS`` changes it
TIMEOUT = datetime.timedelta(hours=float(os.environ.get("IRDISTILL_DIST_TIMEOUT_HOURS", "12")))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """True in the process that writes shared outputs (rank 0, or the only process)."""
    return rank() == 0


def _process_group():
    """The default process group, set up from the launcher's environment if nobody has yet
    (gloo on CPUs, NCCL on GPUs). accelerate's ``PartialState`` is not used for this: on a
    CPU-only machine it reports a single process under torchrun, and its barrier does nothing."""
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                timeout=TIMEOUT)
    return dist


def wait_for_everyone() -> None:
    """A barrier across the launched processes (nothing for a single process)."""
    if is_distributed():
        _process_group().barrier()


@contextlib.contextmanager
def main_process_first():
    """The main process runs the block first (building caches: BM25 index, ir_datasets
    files), then the others, which find the caches ready."""
    if not is_distributed():
        yield
        return
    if not is_main():
        wait_for_everyone()
    yield
    if is_main():
        wait_for_everyone()


def device_for_rank(device: str | None = None) -> str | None:
    """The device of this process: the given one, else GPU ``LOCAL_RANK`` under a launcher with
    GPUs, else None (the default device)."""
    if device is not None or not is_distributed():
        return device

    if torch.cuda.is_available():
        return f"cuda:{local_rank() % torch.cuda.device_count()}"
    return "cpu"


def broadcast(value, src: int = 0):
    """``value`` of process ``src``, in every process (the value itself for a single process).
    Any picklable value; every process must call it."""
    if not is_distributed():
        return value
    box = [value]
    _process_group().broadcast_object_list(box, src=src)
    return box[0]


def gather(value, dst: int = 0) -> list | None:
    """The values of every process, in rank order, in process ``dst`` (None elsewhere);
    ``[value]`` for a single process. Every process must call it."""
    if not is_distributed():
        return [value]
    dist = _process_group()
    out = [None] * world_size() if rank() == dst else None
    dist.gather_object(value, out, dst=dst)
    return out
