"""kill -9 in the middle of `train` and `rerank`, the same command again, and the result is bit for
bit that of a run never interrupted.

Each test starts the real command line in child processes (``interrupt_child.py``, one thread,
fp32, CPU, a tiny BERT with dropout): one run that is never interrupted, and one that the test
kills with SIGKILL once a checkpoint exists and before the run ends, then starts again. Training
must resume model, optimizer, scheduler, data position (groups of several epochs) and the RNG
state of dropout; re-ranking must keep the finished blocks and recompute only the rest.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from toy_collection import write_toy_collection

from irdistill.train.resume import latest_checkpoint, list_checkpoints, step_of

CHILD = Path(__file__).with_name("interrupt_child.py")
STEPS, SAVE = 12, 4  # 3 epochs of 8 groups, 2 groups per step


def start(args, delay=0.0, calls=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "IRDISTILL_TEST_DELAY": str(delay), "TOKENIZERS_PARALLELISM": "false"}
    if calls is not None:
        env["IRDISTILL_TEST_CALLS"] = str(calls)
    return subprocess.Popen([sys.executable, str(CHILD), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def kill_when(proc, ready, timeout=240):
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ended first."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be interrupted:\n"
                        + proc.communicate()[0][-3000:])
        if time.time() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def toy(tmp_path):
    return write_toy_collection(tmp_path / "toy")


def train_args(toy, model, output):
    sets = {"model.name": model, "data.collection": toy["folder"], "data.run": toy["run"],
            "data.negatives": 3, "model.max_doc_length": 32, "loss": "infonce",
            "train.epochs": 3, "train.batch_size": 2, "train.lr": 1e-3, "train.warmup_ratio": 0.1,
            "train.save_steps": SAVE, "train.logging_steps": 1, "train.precision": "fp32"}
    return ["train", "--output", output] + [x for k, v in sets.items()
                                              for x in ("--set", f"{k}={v}")]


def log_losses(folder):
    lines = [json.loads(l) for l in (folder / "train_log.jsonl").read_text().splitlines()]
    return [(l["step"], l["loss"]) for l in lines if "loss" in l]


def test_training_killed_mid_way_resumes_to_the_same_weights(tmp_path, toy, tiny_bert):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    ref = start(train_args(toy, tiny_bert, reference))
    victim = start(train_args(toy, tiny_bert, resumed), delay=0.25)
    kill_when(victim, lambda: latest_checkpoint(resumed / "checkpoints", clean=False) is not None)

    # it really was interrupted: a checkpoint before the end, no model
    done = latest_checkpoint(resumed / "checkpoints", clean=False)
    assert SAVE <= step_of(done) < STEPS and not (resumed / "model").exists()
    assert (resumed / "tokens" / "docs" / "tokens.npy").is_file()  # the texts' token ids
    # and, as if the kill had also cut the save of the next checkpoint: a torn one after it
    torn = resumed / "checkpoints" / f"checkpoint-{step_of(done) + SAVE}"
    torn.mkdir(exist_ok=True)
    (torn / "trainer_state.json").unlink(missing_ok=True)
    (torn / "model.safetensors").write_bytes(b"\x00" * 100)

    out = finish(start(train_args(toy, tiny_bert, resumed)))
    assert f"resuming from {done}" in out and "ignoring incomplete checkpoint" in out
    assert "reusing the token store" in out and "building the token store" not in out
    assert not (resumed / "tokens").exists() and not (reference / "tokens").exists()
    finish(ref)
    weights = (reference / "model" / "model.safetensors").read_bytes()
    assert (resumed / "model" / "model.safetensors").read_bytes() == weights
    # the log lists every step once, with the reference's losses (steps redone are not doubled)
    assert log_losses(resumed) == log_losses(reference)
    assert [s for s, _ in log_losses(reference)] == list(range(1, STEPS + 1))
    assert [p.name for p in list_checkpoints(resumed / "checkpoints")] == [f"checkpoint-{STEPS}"]


def rerank_args(toy, model, output):
    return ["rerank", model, toy["folder"], "--run", toy["run"], "--depth", 10,
            "--output", output, "--batch-size", 4, "--block-pairs", 20, "--precision", "fp32",
            "--device", "cpu"]


def test_reranking_killed_mid_way_keeps_finished_blocks_and_gives_the_same_run(
        tmp_path, toy, tiny_bert):
    reference, resumed = tmp_path / "reference.trec", tmp_path / "resumed.trec"
    partial = tmp_path / "resumed.trec.partial.jsonl"
    calls = tmp_path / "calls.txt"
    ref = start(rerank_args(toy, tiny_bert, reference))

    def two_blocks():  # a header and two blocks of 2 queries x 10 documents
        return partial.exists() and partial.read_text().count("\n") >= 3

    victim = start(rerank_args(toy, tiny_bert, resumed), delay=0.5)
    kill_when(victim, two_blocks)
    assert not resumed.exists()
    kept = partial.read_text().count("\n") - 1
    assert 2 <= kept < 4  # 4 blocks in all: interrupted before the end
    with open(partial, "a") as handle:  # as if the kill had cut the next record
        handle.write('{"q-stars": {"stars-0": 0.12')

    out = finish(start(rerank_args(toy, tiny_bert, resumed), calls=calls))
    finish(ref)
    assert resumed.read_bytes() == reference.read_bytes()
    assert len(resumed.read_text().splitlines()) == 8 * 10
    assert len(calls.read_text().splitlines()) == 4 - kept  # finished blocks were not rescored
    assert not partial.exists() and "wrote re-ranked run of 8 queries" in out
    provenance = json.loads((tmp_path / "resumed.provenance.json").read_text())
    assert provenance["kind"] == "rerank" and provenance["config"]["depth"] == 10
    assert provenance["run"]["sha256"] and provenance["versions"]["torch"] == torch.__version__


def test_a_partial_file_of_other_settings_is_refused(tmp_path, toy, tiny_bert):
    """Scores of another model or candidate set are never mixed into a run."""
    from typer.testing import CliRunner

    from irdistill.cli import app

    output = tmp_path / "run.trec"
    partial = tmp_path / "run.trec.partial.jsonl"
    partial.write_text(json.dumps({"__irdistill__": {"model": "another", "precision": "fp32"}})
                       + "\n" + json.dumps({"q-bees": {"bees-0": 1.0}}) + "\n")
    result = CliRunner().invoke(app, [str(a) for a in rerank_args(toy, tiny_bert, output)])
    assert result.exit_code == 2 and "made with other settings" in result.output
    assert "model" in result.output and not output.exists() and partial.exists()


def test_streamed_training_resumes_bitwise_past_the_first_pass(tmp_path, toy, tiny_bert,
                                                               monkeypatch):
    """A triple file shorter than the training: the resumed run must continue in the second pass
    where the interrupted one stopped (the Trainer used to restart the pass from its start)."""
    from irdistill.config import load_config
    from irdistill.train import data as train_data
    from irdistill.train import engine

    triples = tmp_path / "triples.tsv"
    topics = sorted({q.split("-", 1)[1] for q in toy["queries"].read_text().split()
                     if q.startswith("q-")})
    with open(triples, "w") as handle:
        for i in range(12):  # 12 triples = 6 steps per pass; 10 steps = 1.7 passes
            topic, other = topics[i % 8], topics[(i + 3) % 8]
            handle.write(f"{9 - i / 10}\t{i / 10}\tq-{topic}\t{topic}-0\t{other}-{i % 3}\n")
    config = load_config(overrides=[
        f"model.name={tiny_bert}", f"data.collection={toy['folder']}", "data.mode=triples",
        f"data.triples={triples}", "loss=margin_mse", "model.max_doc_length=32",
        "train.max_steps=10", "train.batch_size=2", "train.lr=1e-3", "train.save_steps=4",
        "train.logging_steps=1"])
    torch.set_num_threads(1)
    engine.train(config, tmp_path / "reference", show_progress=False)

    collate = train_data.GroupCollator.__call__
    count = {"batches": 0}

    def interrupted(self, groups):  # the 10th batch never comes: killed after step 9
        count["batches"] += 1
        if count["batches"] == 10:
            raise KeyboardInterrupt
        return collate(self, groups)

    monkeypatch.setattr(train_data.GroupCollator, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.train(config, tmp_path / "resumed", show_progress=False)
    assert step_of(latest_checkpoint(tmp_path / "resumed" / "checkpoints")) == 8
    monkeypatch.setattr(train_data.GroupCollator, "__call__", collate)
    engine.train(config, tmp_path / "resumed", show_progress=False)
    assert (tmp_path / "resumed" / "model" / "model.safetensors").read_bytes() == \
        (tmp_path / "reference" / "model" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("other", ["onnx", "bf16"])
def test_a_partial_file_of_another_backend_or_precision_is_refused(tmp_path, toy, tiny_bert,
                                                                  other):
    """Another backend or precision rounds scores differently: a partial file scored with
    torch in fp32 is not continued by ONNX Runtime or bf16 (the identity names what differs)."""
    from irdistill import CrossEncoder
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run
    from irdistill.errors import IrdistillError
    from irdistill.rerank.scoring import rerank_run, scoring_identity

    collection, run = load_collection(toy["folder"]), read_run(toy["run"])
    partial = tmp_path / "scores.jsonl"

    def score(ce):
        return rerank_run(ce, collection, run, depth=10, show_progress=False,
                          checkpoint=partial,
                          identity=scoring_identity(tiny_bert, ce, collection, run, 10))

    first = score(CrossEncoder.from_pretrained(tiny_bert, device="cpu"))
    assert score(CrossEncoder.from_pretrained(tiny_bert, device="cpu")) == first  # resumed
    if other == "onnx":
        pytest.importorskip("onnxruntime")
        ce = CrossEncoder.from_pretrained(tiny_bert, device="cpu")
        ce.use_onnx(tmp_path / "onnx")
    else:
        ce = CrossEncoder.from_pretrained(tiny_bert, device="cpu", precision="bf16")
    with pytest.raises(IrdistillError, match=r"other settings \((backend|precision) differ\)"):
        score(ce)


def test_a_non_finite_score_stops_reranking_naming_its_query_and_document(tmp_path, toy,
                                                                           tiny_bert):
    """docs/reliability.md: re-ranking refuses a non-finite score, naming a query and a
    document, and keeps the blocks finished before it."""
    import math

    from irdistill import CrossEncoder
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import ranked, read_run
    from irdistill.errors import IrdistillError
    from irdistill.io import read_checkpoint
    from irdistill.rerank.scoring import rerank_run

    collection = load_collection(str(toy["folder"]))
    run = read_run(toy["run"])
    model = CrossEncoder.from_pretrained(tiny_bert, device="cpu")
    real, calls = model.score_ids, []

    def poisoned(pairs, **kwargs):  # the second block's fifth pair scores NaN
        scores = list(real(pairs, **kwargs))
        calls.append(len(pairs))
        if len(calls) == 2:
            scores[4] = math.nan
        return scores

    model.score_ids = poisoned
    partial = tmp_path / "partial.jsonl"
    with pytest.raises(IrdistillError, match=r"1 non-finite score\(s\)") as info:
        rerank_run(model, collection, run, depth=10, show_progress=False, block_pairs=30,
                   checkpoint=partial)
    assert calls == [30, 30]  # blocks of 3 queries x 10 candidates; nothing after the bad one
    done = read_checkpoint(partial)
    assert len(done) == 3 and all(all(math.isfinite(s) for s in d.values())
                                  for d in done.values())
    query, doc = re.search(r"for query '([^']+)' and document '([^']+)'",
                           str(info.value)).groups()
    assert query not in done and [d for d, _ in ranked(run[query])][4] == doc
    model.score_ids = real  # the rerun goes on from the finished blocks
    again = rerank_run(model, collection, run, depth=10, show_progress=False, block_pairs=30,
                       checkpoint=partial)
    assert set(again) == set(run) and all(again[q] == done[q] for q in done)
