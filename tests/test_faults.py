"""Numerical faults in training: a non-finite loss or gradient stops training with a message naming
the step and keeps the last good checkpoint, or (train.on_nan=skip) the batch is skipped.

The faults come from a loss registered here that behaves like InfoNCE except at one step: it
returns NaN (a broken target, an overflow), or a finite value with an infinite gradient
(sqrt at 0), the case a check of the loss alone misses and that would write NaN weights into
the next checkpoint.
"""
import json

import pytest
import torch
from safetensors.torch import load_file
from toy_collection import write_toy_collection
from typer.testing import CliRunner

from irdistill.cli import app
from irdistill.config import load_config
from irdistill.errors import IrdistillError
from irdistill.losses import LOSSES
from irdistill.losses.listwise import infonce
from irdistill.train.base import MAX_FAULTS_IN_A_ROW
from irdistill.train.engine import train
from irdistill.train.resume import latest_checkpoint, step_of

CALLS = {"n": 0}


def faulty(scores, targets, mask=None, at: int = 3, kind: str = "nan", always: bool = False):
    """InfoNCE, except at call ``at`` (every call from then on with ``always``)."""
    CALLS["n"] += 1
    loss = infonce(scores, targets, mask)
    if CALLS["n"] == at or (always and CALLS["n"] >= at):
        if kind == "nan":
            return loss * float("nan")
        return loss + torch.sqrt(scores - scores.detach()).sum()  # 0, with an infinite gradient
    return loss


@pytest.fixture
def setup(tmp_path, tiny_bert, monkeypatch):
    monkeypatch.setitem(LOSSES, "faulty", faulty)
    CALLS["n"] = 0
    toy = write_toy_collection(tmp_path / "toy")
    torch.set_num_threads(1)

    def config(**params):
        sets = [f"model.name={tiny_bert}", f"data.collection={toy['folder']}",
                f"data.run={toy['run']}", "data.negatives=3", "model.max_doc_length=32",
                "loss=faulty", "train.max_steps=6", "train.batch_size=2", "train.lr=1e-3",
                "train.save_steps=2", "train.logging_steps=1"]
        sets += [f"loss_params.{k}={v}" for k, v in params.items() if k != "on_nan"]
        sets.append(f"train.on_nan={params.get('on_nan', 'stop')}")
        return sets

    return tmp_path / "out", config


def finite(checkpoint):
    return all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())


@pytest.mark.parametrize("kind, what", [("nan", "the loss became nan"),
                                        ("inf_grad", "the gradients became non-finite")])
def test_a_fault_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(
        setup, kind, what):
    out, config = setup
    with pytest.raises(IrdistillError) as error:
        train(load_config(overrides=config(kind=kind)), out, show_progress=False)
    message = str(error.value)
    assert f"{what} at step 3" in message and "checkpoint-2" in message
    kept = latest_checkpoint(out / "checkpoints", clean=False)
    assert step_of(kept) == 2 and finite(kept)  # never a checkpoint of broken weights
    assert not (out / "model").exists()


def test_the_command_line_prints_the_fault_as_one_error_line(setup):
    out, config = setup
    args = ["train", "--output", str(out)]
    for item in config(kind="nan"):
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip() and not l.startswith(" ")]
    errors = [l for l in lines if l.startswith("error: ")]
    assert len(errors) == 1 and "step 3" in errors[0] and "Traceback" not in result.output


@pytest.mark.parametrize("kind, counter", [("nan", "skipped_batches"),
                                           ("inf_grad", "skipped_steps")])
def test_skip_goes_on_past_a_fault_and_counts_it(setup, kind, counter):
    out, config = setup
    model = train(load_config(overrides=config(kind=kind, on_nan="skip")), out,
                  show_progress=False)
    assert finite(model)
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert log[-1][counter] == 1
    assert all(counter not in e for e in log if e["step"] < 3)


def test_skip_gives_up_when_every_batch_is_broken(setup):
    out, config = setup
    with pytest.raises(IrdistillError, match=f"{MAX_FAULTS_IN_A_ROW}th fault in a row"):
        train(load_config(overrides=config(kind="nan", at=1, always=True, on_nan="skip")
                          + ["train.max_steps=20"]), out, show_progress=False)
    assert not (out / "model").exists()
