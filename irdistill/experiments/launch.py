"""A grid's cells as jobs of a scheduler, through submitit (facebookincubator/submitit).

``irdistill experiment run GRID --launcher slurm`` submits a SLURM job array with one worker
per unfinished cell (at most ``--workers`` running at once), each asking for the grid's
``resources`` (GPUs per cell, nodes, CPUs, memory, time, partition, account, QoS, further
sbatch options); ``--launcher local --workers N`` starts N workers as processes on this machine
through submitit's local executor, the same code path. Every worker runs
:func:`irdistill.experiments.grid.run_grid` on the grid: it claims a cell, trains and evaluates
it, and goes on with the next unclaimed one, so the jobs share the cells whatever order the
scheduler starts them in, a cell is never run twice at once, and the cell of a job that died
is taken over by another worker once its lease has run out (resuming from its last
checkpoint). A job with several GPUs (``resources.gpus`` > 1, or nodes > 1) runs one process
per GPU (``resources.processes`` sets another count: DDP over CPU processes on gloo, for
instance) and trains its cell with DDP (submitit exports the ``torch.distributed``
environment).

The submitted function and its logs live in ``OUTPUT/submitit/``; ``irdistill experiment status
GRID`` shows which worker holds which cell.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irdistill.errors import IrdistillError, unknown_name
from irdistill.experiments.grid import Grid, load_grid, run_grid
from irdistill.utils import setup_logging

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "slurm")


@dataclass
class WorkerJob:
    """What one job runs: the grid (file, overrides, output) and how long to wait between looks
    at cells other workers hold."""

    grid_file: str
    overrides: list[str]
    output: str
    poll: float = 5.0
    since: float | None = None  # the submission's time: a cell that failed after it is left

    def __call__(self) -> dict[str, Any]:
        import submitit  # optional dependency (irdistill[cluster]); in the job's process

        setup_logging()
        if submitit.JobEnvironment().num_tasks > 1:  # one process per GPU: DDP over them
            submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False)
        grid = load_grid(self.grid_file, self.overrides, self.output)
        status = run_grid(grid, show_progress=False, poll=self.poll, since=self.since)
        return {"cells": len(status.cells),
                "done": sum(s.state == "done" for s in status.cells)}


def executor_parameters(grid: Grid, launcher: str, workers: int) -> dict[str, Any]:
    """submitit's ``update_parameters`` for one cell's job."""
    r = grid.resources
    tasks = r.processes or max(r.gpus, 1)
    local_limit = 60 * 24 * 365  # local workers run until their cells are done
    params: dict[str, Any] = {"timeout_min": r.time_min or (240 if launcher == "slurm"
                                                            else local_limit),
                              "nodes": r.nodes,
                              "tasks_per_node": tasks, "gpus_per_node": r.gpus or None,
                              "cpus_per_task": r.cpus, "mem_gb": r.mem_gb,
                              "name": f"irdistill-{grid.name}"}
    if launcher == "slurm":
        params.update(slurm_partition=r.partition, slurm_account=r.account, slurm_qos=r.qos,
                      slurm_array_parallelism=workers,
                      slurm_additional_parameters=dict(r.slurm) or None)
    return {k: v for k, v in params.items() if v is not None}


def launch(grid_file: str | Path, *, launcher: str, workers: int,
           overrides: list[str] | None = None, output: str | Path | None = None,
           wait: bool | None = None, poll: float = 5.0) -> list:
    """Submit the workers of a grid (see the module docstring); returns submitit's jobs. With
    ``wait`` (default: for the local launcher) returns once every job has finished, raising the
    first job's error."""
    if launcher not in LAUNCHERS:
        raise unknown_name("launcher", launcher, LAUNCHERS)
    if workers < 1:
        raise IrdistillError(f"--workers {workers} must be at least 1")
    try:
        import submitit  # optional dependency (irdistill[cluster])
    except ImportError:
        raise IrdistillError("--launcher needs submitit",
                             hint="pip install 'irdistill[cluster]' (or pip install submitit)"
                             ) from None
    overrides = list(overrides or [])
    grid = load_grid(grid_file, overrides, output)
    status = run_grid(grid, dry_run=True)  # every cell checked before anything is submitted
    todo = [s for s in status.cells if s.state != "done"]
    if not todo:
        log.info("every cell of grid '%s' is done; nothing to submit", grid.name)
        return []
    folder = grid.output / "submitit"
    params = executor_parameters(grid, launcher, workers)
    if launcher == "slurm":
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    else:  # the local executor itself: it takes each worker's GPUs (visible_gpus)
        executor = submitit.LocalExecutor(folder=folder / "%j")
        params = {k: v for k, v in params.items()
                  if k in ("timeout_min", "tasks_per_node", "gpus_per_node")}
    executor.update_parameters(**params)
    count = len(todo) if launcher == "slurm" else min(workers, len(todo))
    job = WorkerJob(str(Path(grid_file).resolve()), overrides,
                    str(Path(grid.output).resolve()), poll, since=time.time())
    if launcher == "slurm":
        with executor.batch():  # one job array
            jobs = [executor.submit(job) for _ in range(count)]
    else:  # local workers: each its own GPUs (none with resources.gpus=0: a CPU run)
        gpus = grid.resources.gpus
        if gpus:
            import torch  # the grid's modules have imported it already

            have = torch.cuda.device_count()
            if count * gpus > have:
                raise IrdistillError(f"{count} local workers of {gpus} GPU(s) each need "
                                     f"{count * gpus} GPUs; this machine has {have}",
                                     hint="lower --workers or resources.gpus")
        jobs = []
        for i in range(count):
            executor.update_parameters(visible_gpus=tuple(range(i * gpus, (i + 1) * gpus)))
            jobs.append(executor.submit(job))
    log.info("submitted %d %s worker(s) for the %d unfinished cell(s) of grid '%s': %s", count,
             launcher, len(todo), grid.name, ", ".join(str(j.job_id) for j in jobs))
    if wait if wait is not None else launcher == "local":
        for j in jobs:
            j.results()  # every task of the job; raises a task's error, with its log
    return jobs
