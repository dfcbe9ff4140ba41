"""Grids beyond one process: claims with leases, workers through submitit's local executor (real
subprocesses), a killed worker's cell taken over, two runs of one grid at once, and sharded
teacher ensembles merged byte for byte."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irdistill.cli import app
from irdistill.experiments.claims import holder, log_claim, read_claims_log, try_claim
from irdistill.experiments.grid import grid_status, load_grid, run_grid

REPO = Path(__file__).resolve().parent.parent
GRID = """
name: toy
base:
  data: {{collection: beir/scifact/train, depth: 20, negatives: 3, max_queries: 8}}
  model: {{name: {model}, max_doc_length: 64}}
  train: {{max_steps: {steps}, batch_size: 4, logging_steps: 1, save_steps: 1,
          precision: fp32}}
axes:
  objective: {objectives}
  seed: [1, 2]
suites: [mini]
suite_definitions:
  mini:
    datasets: [{{id: {folder}, split: test, name: mini}}]
    measures: [nDCG@10, RR@10]
    depth: 3
evaluation: {{untrained: false}}
resources: {{lease_s: {lease}}}
output: {output}
"""


def write_grid(path, beir_folder, model, output, objectives="[bce, infonce]", steps=2,
               lease=300):
    path.write_text(GRID.format(model=model, folder=beir_folder, output=output, steps=steps,
                                objectives=objectives, lease=lease))
    return path


def results(output):
    """Every evaluation's measures (and each cell's final training loss), by file."""
    manifest = json.loads((Path(output) / "experiment.json").read_text())
    out = {}
    for entry in manifest["evaluations"]:
        data = json.loads((Path(output) / entry["file"]).read_text())
        out[entry["file"]] = data["variants"][""]["aggregate"]
    for cell in manifest["cells"]:
        log = [json.loads(line) for line in
               (Path(output) / cell["folder"] / "train_log.jsonl").read_text().splitlines()]
        out[cell["folder"]] = [e["loss"] for e in log if "loss" in e]
    return out


def trainings(output):
    """How many times each cell's training ran to its end (its train_log's summary lines)."""
    manifest = json.loads((Path(output) / "experiment.json").read_text())
    return {c["hash"]: sum("train_runtime" in json.loads(line) for line in
                           (Path(output) / c["folder"] / "train_log.jsonl").read_text()
                           .splitlines())
            for c in manifest["cells"]}


# -- claims -------------------------------------------------------------------------------------
def test_a_claim_is_exclusive_beats_while_held_and_is_taken_over_when_stale(tmp_path):
    folder = tmp_path / "cell"
    log = tmp_path / "claims.log"
    first = try_claim(folder, "a", lease=1.0, log_file=log)
    assert first is not None and holder(folder).worker == "a"
    log_claim(first)
    assert try_claim(folder, "b", lease=1.0, log_file=log) is None  # a is alive
    time.sleep(2.5)  # longer than the lease: the heartbeat (every 0.25 s) keeps it fresh
    assert holder(folder).age < 1.0 and try_claim(folder, "b", lease=1.0) is None
    first.release()
    assert holder(folder) is None
    second = try_claim(folder, "b", lease=1.0, log_file=log)
    assert second is not None
    log_claim(second)
    second._stop.set()  # b dies: no more heartbeat
    second._thread.join()
    old = time.time() - 5
    os.utime(folder / "claim.json", (old, old))
    assert "stale" in holder(folder).describe(1.0)
    third = try_claim(folder, "c", lease=1.0, log_file=log)
    assert third is not None and holder(folder).worker == "c"
    log_claim(third)
    assert try_claim(folder, "d", lease=1.0) is None  # one taker of b's stale claim
    time.sleep(0.6)
    assert second.lost is False  # b's heartbeat stopped before c took over
    third.release()
    assert [(e["worker"], e["taken_over_from"]) for e in read_claims_log(tmp_path)] == [
        ("a", None), ("b", None), ("c", "b")]


def test_a_stale_claim_has_one_taker_and_a_stalled_holder_learns_it_lost(tmp_path):
    folder = tmp_path / "cell"
    stalled = try_claim(folder, "a", lease=0.8)
    stalled._stop.set()  # a stalls: no heartbeat for longer than the lease
    stalled._thread.join()
    old = time.time() - 5
    os.utime(folder / "claim.json", (old, old))
    takers = [try_claim(folder, w, lease=0.8) for w in ("b", "c")]
    assert [t is not None for t in takers] == [True, False]
    # a comes back: its next heartbeat finds b's claim and never touches it
    stalled._stop.clear()
    stalled._thread = type(stalled._thread)(target=stalled._beat, daemon=True)
    stalled._thread.start()
    time.sleep(0.6)
    assert stalled.lost and holder(folder).worker == "b"
    stalled.release()  # does not remove b's claim
    assert holder(folder).worker == "b"
    takers[0].release()


def test_an_empty_claim_file_goes_stale_like_any_other(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    (folder / "claim.json").write_text("")  # a worker died between creating and writing it
    assert holder(folder).worker == "?" and try_claim(folder, "b", lease=0.5) is None
    old = time.time() - 5
    os.utime(folder / "claim.json", (old, old))
    taken = try_claim(folder, "b", lease=0.5)
    assert taken is not None and holder(folder).worker == "b"
    taken.release()


# -- workers ------------------------------------------------------------------------------------
def test_local_launcher_with_two_workers_equals_a_sequential_run(tmp_path, beir_folder,
                                                                 tiny_bert, scifact_available):
    """4 cells, 2 workers started by submitit as processes: each cell trained and evaluated once,
    every figure as in one process."""
    sequential = tmp_path / "sequential"
    run_grid(load_grid(write_grid(tmp_path / "a.yaml", beir_folder, tiny_bert, sequential)),
             show_progress=False)
    parallel = tmp_path / "parallel"
    path = write_grid(tmp_path / "b.yaml", beir_folder, tiny_bert, parallel)
    result = CliRunner().invoke(app, ["experiment", "run", str(path), "--launcher", "local",
                                      "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "2 job(s) submitted" in result.output and result.output.count("  done") == 4
    claims = read_claims_log(parallel)
    cells = [c["piece"] for c in claims if c["piece"] != "shared"]
    assert sorted(cells) == sorted(c.hash for c in load_grid(path).cells())  # each once
    assert len({c["worker"] for c in claims}) == 2  # two processes (each claims "shared")
    assert set(trainings(parallel).values()) == {1}
    assert results(parallel) == results(sequential)
    status = CliRunner().invoke(app, ["experiment", "status", str(path)])
    assert status.exit_code == 0 and status.output.count("eval: 1/1  done") == 4


def test_two_runs_of_one_grid_at_once_never_run_a_cell_twice(tmp_path, beir_folder, tiny_bert,
                                                             scifact_available):
    out = tmp_path / "out"
    path = write_grid(tmp_path / "g.yaml", beir_folder, tiny_bert, out)
    command = [sys.executable, "-m", "irdistill", "experiment", "run", str(path)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    cells = [c["piece"] for c in read_claims_log(out) if c["piece"] != "shared"]
    assert sorted(cells) == sorted(set(cells)) and len(cells) == 4
    assert set(trainings(out).values()) == {1}
    assert all(s.state == "done" for s in grid_status(load_grid(path)).cells)


def test_a_killed_workers_cell_is_taken_over_and_finishes_as_if_uninterrupted(
        tmp_path, beir_folder, tiny_bert, scifact_available):
    reference = tmp_path / "reference"
    run_grid(load_grid(write_grid(tmp_path / "r.yaml", beir_folder, tiny_bert, reference,
                                  "[bce]", steps=4)), show_progress=False)
    out = tmp_path / "out"
    path = write_grid(tmp_path / "g.yaml", beir_folder, tiny_bert, out, "[bce]", steps=4,
                      lease=2)
    marker = tmp_path / "hung"
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "hang"),
           "IRDISTILL_TEST_HANG_AT": "2", "IRDISTILL_TEST_HANG_MARKER": str(marker)}
    worker = subprocess.Popen([sys.executable, "-m", "irdistill", "experiment", "run",
                               str(path)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not marker.exists() and worker.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the worker did not reach checkpoint 2"
    finally:
        worker.kill()  # SIGKILL, in the middle of its first cell
        worker.wait()
    grid = load_grid(path)
    first = grid.cells()[0]
    assert holder(grid.cell_dir(first)) is not None  # the dead worker's claim is left behind
    assert "step 2" in grid_status(grid).lines()[2]
    run_grid(grid, show_progress=False, poll=0.5)  # waits for the lease, takes over, resumes
    claims = read_claims_log(out)
    taken = [c for c in claims if c["piece"] == first.hash]
    assert len(taken) == 2 and taken[1]["taken_over_from"] == taken[0]["worker"]
    log = [json.loads(line) for line in
           (grid.cell_dir(first) / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]  # resumed, not restarted
    assert results(out) == results(reference)


def test_a_failed_cell_says_so_in_the_status(tmp_path, beir_folder, tiny_bert,
                                             scifact_available, monkeypatch):
    from irdistill.experiments import kinds

    def broken(config, output_dir, show_progress=True):
        raise RuntimeError("out of memory on the GPU\nmore lines")

    monkeypatch.setattr(kinds, "train_model", broken)
    path = write_grid(tmp_path / "g.yaml", beir_folder, tiny_bert, tmp_path / "out", "[bce]")
    with pytest.raises(RuntimeError, match="out of memory"):
        run_grid(load_grid(path), show_progress=False)
    lines = grid_status(load_grid(path)).lines()
    assert "failed (last failure: " in lines[2] and "RuntimeError: out of memory on the GPU)" \
        in lines[2]
    assert holder(load_grid(path).cell_dir(load_grid(path).cells()[0])) is None  # released


# -- sharded teachers ---------------------------------------------------------------------------
def test_sharded_ensemble_merged_equals_one_process_byte_for_byte(tmp_path, tiny_bert,
                                                                  scifact_available):
    from irdistill.data.collection import load_collection
    from irdistill.retrieval.bm25 import bm25_run
    from irdistill.teachers.ensemble import ScoringSettings, build_ensemble

    test = load_collection("beir/scifact/test")
    run = bm25_run(test, k=6, query_ids=sorted(test.qrels)[:10])
    settings = ScoringSettings(batch_size=4, precision="bf16", block_pairs=14)
    teachers = ["bm25", f"ce={tiny_bert}"]
    kwargs = dict(depth=6, normalisation="zscore", add_positives=True, settings=settings,
                  show_progress=False)
    whole = build_ensemble(teachers, test, run, tmp_path / "one", **kwargs)
    for i in range(3):
        part = build_ensemble(teachers, test, run, tmp_path / f"shard-{i}", shard=(i, 3),
                              **kwargs)
        assert 0 < len(part.run) < len(whole.run)
    result = CliRunner().invoke(app, ["teach", "merge", *(str(tmp_path / f"shard-{i}")
                                                          for i in range(3)),
                                      "-o", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = (tmp_path / "merged" / "ensemble.trec").read_bytes()
    assert merged == whole.path.read_bytes()
    record = json.loads((tmp_path / "merged" / "ensemble.provenance.json").read_text())
    assert [s["shard"] for s in record["shards"]] == [[0, 3], [1, 3], [2, 3]]
    missing = CliRunner().invoke(app, ["teach", "merge", str(tmp_path / "shard-0"),
                                       str(tmp_path / "shard-2"), "-o", str(tmp_path / "m2")])
    assert missing.exit_code == 2 and "missing [1]" in missing.output


def test_slurm_launcher_submits_one_array_with_the_grids_resources(tmp_path, beir_folder,
                                                                   tiny_bert, monkeypatch):
    """Without a cluster here: stand-ins for srun and sbatch record what submitit submits."""
    from irdistill.experiments.launch import launch

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch-script.sh"
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {record}\n"
                                    "echo 'Submitted batch job 4242'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    path = write_grid(tmp_path / "g.yaml", beir_folder, tiny_bert, tmp_path / "out")
    jobs = launch(path, launcher="slurm", workers=2, wait=False, overrides=[
        "resources.gpus=2", "resources.partition=gpu", "resources.account=my-lab",
        "resources.time_min=90", "resources.slurm={constraint: a100}"])
    assert [j.job_id for j in jobs] == [f"4242_{i}" for i in range(4)]  # one per cell
    script = record.read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --account=my-lab",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --time=90", "#SBATCH --constraint=a100"):
        assert line in script, (line, script)
    assert not (tmp_path / "out" / "cells").exists()  # nothing ran here


def test_a_job_of_two_processes_trains_its_cell_with_ddp(tmp_path, beir_folder, tiny_bert,
                                                         scifact_available):
    """resources.processes=2: submitit starts two processes for the worker, exports the
    torch.distributed environment, the first claims each cell for both, and the cell trains with
    DDP (gloo on CPUs): each step takes a batch in each process."""
    out = tmp_path / "out"
    path = write_grid(tmp_path / "g.yaml", beir_folder, tiny_bert, out, "[bce]")
    result = CliRunner().invoke(app, ["experiment", "run", str(path), "--launcher", "local",
                                      "--workers", "1", "--set", "resources.processes=2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("  done") == 2
    cells = [c["piece"] for c in read_claims_log(out) if c["piece"] != "shared"]
    assert len(cells) == 2 == len(set(cells))  # claimed once, by the first process
    for cell in load_grid(path).cells():
        folder = load_grid(path).cell_dir(cell)
        assert json.loads((folder / "provenance.json").read_text())["processes"] == 2
        log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        # 8 training groups, 4 a process: one step is a whole epoch with two processes
        assert [e["epoch"] for e in log if "loss" in e] == [1.0, 2.0]
