"""Evaluation during training (held-out queries, best checkpoint, early stopping) and a training
budget in time (train.max_minutes), issue 13 items 5 and 6.

Every run trains a tiny BERT on the toy collection (8 queries, one judged document each) in a
second or two. Where the test needs to know which step is best, the evaluation is replaced by a
fixed sequence of values; where it needs to know how long steps take, the clock of
:mod:`irdistill.train.progress` is replaced by one that advances one second per forward pass.
"""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from toy_collection import write_toy_collection

from irdistill.config import (HASH_NEUTRAL, check_config, check_not_evaluated, config_hash,
                              load_config, to_dict)
from irdistill.errors import IrdistillError
from irdistill.train import data as train_data
from irdistill.train import dev as dev_module
from irdistill.train import engine, progress
from irdistill.train.resume import latest_checkpoint, list_checkpoints, step_of
from irdistill.train.sources import group_source


@pytest.fixture
def toy(tmp_path):
    return write_toy_collection(tmp_path / "toy")


def make_config(toy, model, *extra):
    """8 queries; batch 2; logging every step; checkpoints every 4 steps."""
    return load_config(overrides=[
        f"model.name={model}", f"data.collection={toy['folder']}", f"data.run={toy['run']}",
        "data.negatives=3", "model.max_doc_length=32", "train.batch_size=2", "train.lr=1e-3",
        "train.logging_steps=1", "train.save_steps=4", *extra])


def log_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def eval_lines(folder: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["eval_nDCG@10"]) for r in log_lines(folder) if "eval_nDCG@10" in r]


def loss_steps(folder: Path) -> list[int]:
    return [r["step"] for r in log_lines(folder) if "loss" in r]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def outcome(folder: Path) -> dict:
    return json.loads((folder / "provenance.json").read_text())["outcome"]


def fixed_evaluations(monkeypatch, values, seconds: float = 0.0, clock=None):
    """Replace the dev evaluation by ``values``, one per evaluation, in order (each taking
    ``seconds`` of ``clock``)."""
    source = iter(values)

    def evaluate(self, model, device):
        if clock is not None:
            clock[0] += seconds
        return next(source)

    monkeypatch.setattr(dev_module.DevEvaluator, "evaluate", evaluate)


def fake_clock(monkeypatch, per_forward: float = 1.0) -> dict:
    """The training clock advances ``per_forward`` seconds per forward pass; the forward passes
    are counted in ``counts["forward"]``."""
    clock = [1000.0]
    counts = {"forward": 0}
    forward = engine.forward_in_pieces

    def timed(*args, **kwargs):
        clock[0] += per_forward
        counts["forward"] += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(progress, "now", lambda: clock[0])
    monkeypatch.setattr(engine, "forward_in_pieces", timed)
    return {"clock": clock, "counts": counts}


def interrupt_at_batch(monkeypatch, batch: int):
    """The ``batch``-th collated batch raises KeyboardInterrupt (as a kill would stop the run)."""
    collate = train_data.GroupCollator.__call__
    count = {"batches": 0}

    def interrupted(self, groups):
        count["batches"] += 1
        if count["batches"] == batch:
            raise KeyboardInterrupt
        return collate(self, groups)

    monkeypatch.setattr(train_data.GroupCollator, "__call__", interrupted)
    return lambda: monkeypatch.setattr(train_data.GroupCollator, "__call__", collate)


# -- held-out queries --------------------------------------------------------------------------

def test_held_out_queries_leave_the_training_groups(toy, tiny_bert):
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run

    collection = load_collection(toy["folder"])
    run = read_run(toy["run"], depth=100)
    config = make_config(toy, tiny_bert, "data.dev_fraction=0.25", "train.epochs=2")
    train_run, held = dev_module.hold_out(config, collection, run)
    assert len(held) == 2 and set(held) <= set(run) and not set(held) & set(train_run)
    groups = group_source(config.data).groups(config, collection, train_run)
    assert {g.query_id for g in groups} == set(run) - set(held) and len(groups) == 12
    # drawn by the seed: the same queries again, other ones with another seed
    assert dev_module.hold_out(config, collection, run)[1] == held
    others = {tuple(dev_module.hold_out(make_config(toy, tiny_bert, "data.dev_fraction=0.25",
                                                    f"train.seed={s}"), collection, run)[1])
              for s in range(6)}
    assert len(others) > 1
    dev = dev_module.build_dev_set(config, collection, run, held)
    assert sorted(dev.run) == held and set(dev.qrels) == set(held)
    assert all(len(dev.run[q]) == 10 for q in held)  # their candidates of the training run

    listed = make_config(toy, tiny_bert, "data.dev_queries=[q-bees, q-stars]")
    train_run, held = dev_module.hold_out(listed, collection, run)
    assert held == ["q-bees", "q-stars"] and "q-bees" not in train_run and len(train_run) == 6
    ids = toy["folder"].parent / "dev.txt"
    ids.write_text("q-bees\n\nq-cells\n")
    from_file = make_config(toy, tiny_bert, f"data.dev_queries={ids}")
    assert dev_module.hold_out(from_file, collection, run)[1] == ["q-bees", "q-cells"]
    wrong = make_config(toy, tiny_bert, "data.dev_queries=[q-bees, q-nope]")
    with pytest.raises(IrdistillError, match="q-nope"):
        dev_module.hold_out(wrong, collection, run)


def test_real_evaluation_is_logged_and_measures_the_reranked_dev_run(toy, tiny_bert, tmp_path):
    """Without any replacement: evaluation every 3 steps and at the end, in train_log.jsonl
    (step, training seconds, value), the value that of re-ranking the dev queries."""
    from irdistill.data.collection import load_collection
    from irdistill.evaluation.metrics import evaluate
    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.rerank.scoring import rerank_run

    config = make_config(toy, tiny_bert, "data.dev_fraction=0.25", "train.epochs=2",
                         "train.eval_steps=4")
    out = tmp_path / "run"
    model_dir = engine.train(config, out, show_progress=False)
    lines = [r for r in log_lines(out) if "eval_nDCG@10" in r]
    assert [r["step"] for r in lines] == [4, 6]  # 6 steps: every 4 and at the end
    assert all(0 <= r["eval_nDCG@10"] <= 1 and r["eval_queries"] == 2 for r in lines)
    assert lines[0]["train_seconds"] < lines[1]["train_seconds"]
    # the last evaluation is that of the saved model, re-ranked and measured directly
    collection = load_collection(toy["folder"])
    held = outcome(out)["dev"]
    assert held["queries"] == 2 and "held out" in held["source"]
    from irdistill.data.trec import read_run

    _, queries = dev_module.hold_out(config, collection, read_run(toy["run"], depth=100))
    model = CrossEncoder.from_pretrained(str(model_dir), device="cpu")
    run = rerank_run(model, collection, {q: read_run(toy["run"])[q] for q in queries},
                     depth=100, show_progress=False)
    value = evaluate(run, {q: collection.qrels[q] for q in queries}, ["nDCG@10"])
    assert lines[-1]["eval_nDCG@10"] == pytest.approx(value.aggregate["nDCG@10"], abs=1e-6)
    assert "Evaluation during training:** nDCG@10 on 2 dev queries" in \
        (model_dir / "README.md").read_text()


# -- the best checkpoint -----------------------------------------------------------------------

def test_keep_best_keeps_the_checkpoint_that_scored_best_and_resumes_with_its_history(
        toy, tiny_bert, tmp_path, monkeypatch):
    """6 training queries x 3 epochs = 9 steps, evaluated at 3, 6 and 9 (0.2, 0.6, 0.5): the
    model is step 6's checkpoint. Interrupted at step 7 and resumed (from step 6's checkpoint),
    the run ends with the same history, choice and weights."""
    config = make_config(toy, tiny_bert, "data.dev_fraction=0.25", "train.epochs=3",
                         "train.eval_steps=3", "train.keep_best=true")
    reference = tmp_path / "reference"
    fixed_evaluations(monkeypatch, [0.2, 0.6, 0.5])
    model_dir = engine.train(config, reference, show_progress=False)
    assert eval_lines(reference) == [(3, 0.2), (6, 0.6), (9, 0.5)]
    best = reference / "checkpoints" / "checkpoint-6"
    assert same_weights(model_dir, best)
    assert not same_weights(model_dir, reference / "checkpoints" / "checkpoint-9")
    record = outcome(reference)
    assert record["selected_step"] == 6 and record["steps"] == 9 and record["best_value"] == 0.6
    assert [e[:2] for e in record["evaluations"]] == [[3, 0.2], [6, 0.6], [9, 0.5]]
    card = json.loads((model_dir / "irdistill.json").read_text())["card"]
    assert card["outcome"]["selected_step"] == 6 and card["steps"] == 9
    assert "the checkpoint of step 6 (best evaluation) of 9 steps" in \
        (model_dir / "README.md").read_text()

    resumed = tmp_path / "resumed"
    fixed_evaluations(monkeypatch, [0.2, 0.6, 0.5])  # one sequence across both runs
    restore = interrupt_at_batch(monkeypatch, 8)  # the loader reads a batch ahead: in step 7
    with pytest.raises(KeyboardInterrupt):
        engine.train(config, resumed, show_progress=False)
    assert step_of(latest_checkpoint(resumed / "checkpoints")) == 6
    restore()
    engine.train(config, resumed, show_progress=False)
    assert eval_lines(resumed) == [(3, 0.2), (6, 0.6), (9, 0.5)]
    assert [e[:2] for e in outcome(resumed)["evaluations"]] == [[3, 0.2], [6, 0.6], [9, 0.5]]
    assert outcome(resumed)["selected_step"] == 6
    assert (resumed / "model" / "model.safetensors").read_bytes() == \
        (model_dir / "model.safetensors").read_bytes()


def test_early_stopping_stops_and_a_stopped_run_is_finished_not_trained_further(
        toy, tiny_bert, tmp_path, monkeypatch):
    """Evaluations at 2, 4, 6 (0.5, 0.3, 0.2) with patience 2: training stops at step 6 of 9,
    with a checkpoint there; killed before its model was saved, the run saves it without
    training another step."""
    config = make_config(toy, tiny_bert, "data.dev_fraction=0.25", "train.epochs=3",
                         "train.eval_steps=2", "train.early_stopping_patience=2")
    out = tmp_path / "run"
    fixed_evaluations(monkeypatch, [0.5, 0.3, 0.2])
    model_dir = engine.train(config, out, show_progress=False)
    assert loss_steps(out) == [1, 2, 3, 4, 5, 6]
    assert eval_lines(out) == [(2, 0.5), (4, 0.3), (6, 0.2)]
    record = outcome(out)
    assert record["stopped"] == "early stopping" and record["stopped_step"] == 6
    assert record["selected_step"] == 6  # keep_best is off: the last weights
    assert same_weights(model_dir, out / "checkpoints" / "checkpoint-6")

    saved = (model_dir / "model.safetensors").read_bytes()
    import shutil

    shutil.rmtree(model_dir)  # as if killed after the last checkpoint
    counted = fake_clock(monkeypatch)["counts"]
    engine.train(config, out, show_progress=False)
    assert counted["forward"] == 0
    assert (model_dir / "model.safetensors").read_bytes() == saved
    assert loss_steps(out) == [1, 2, 3, 4, 5, 6]


# -- the time budget ---------------------------------------------------------------------------

def test_max_minutes_stops_at_a_step_with_a_checkpoint_and_the_schedule_ends_at_zero(
        toy, tiny_bert, tmp_path, monkeypatch):
    """One second per step, a budget of 0.15 minutes: 9 of at most 12 steps, a checkpoint at step
    9, the learning rate decayed to zero there. Evaluations (100 s each) do not count."""
    config = make_config(toy, tiny_bert, "data.dev_fraction=0.25", "train.epochs=4",
                         "train.max_minutes=0.15", "train.eval_steps=4")
    fake = fake_clock(monkeypatch)
    fixed_evaluations(monkeypatch, [0.1, 0.2, 0.3], seconds=100.0, clock=fake["clock"])
    out = tmp_path / "run"
    engine.train(config, out, show_progress=False)
    assert loss_steps(out) == list(range(1, 10)) and fake["counts"]["forward"] == 9
    assert eval_lines(out) == [(4, 0.1), (8, 0.2), (9, 0.3)]  # and at the stop
    assert step_of(latest_checkpoint(out / "checkpoints")) == 9
    record = outcome(out)
    assert record["stopped"] == "time budget" and record["stopped_step"] == 9
    assert record["train_seconds"] == 9.0 and record["eval_seconds"] == 300.0
    assert [r["train_seconds"] for r in log_lines(out) if "loss" in r] == \
        [float(s) for s in range(1, 10)]
    scheduler = torch.load(out / "checkpoints" / "checkpoint-9" / "scheduler.pt")
    assert scheduler["_last_lr"] == [0.0, 0.0]  # both parameter groups (decay or not)
    rates = [r["learning_rate"] for r in log_lines(out) if "loss" in r]
    assert rates[0] == 0.0 and max(rates) == rates[1]  # warmup: a tenth of the budget
    assert all(a > b for a, b in zip(rates[1:], rates[2:])) and rates[-1] < 0.15e-3
    assert "Training time:** 0.15 min (budget 0.15 min), plus 5.00 min of evaluation; " \
           "stopped by time budget at step 9" in (out / "model" / "README.md").read_text()


def test_a_run_with_a_time_budget_resumes_with_what_is_left_of_it(toy, tiny_bert, tmp_path,
                                                                  monkeypatch):
    """Interrupted at step 7 (checkpoint at 4, 4 s used), the resumed run trains steps 5 to 9
    only (5 s); with the clock deterministic, its model is the uninterrupted run's."""
    config = make_config(toy, tiny_bert, "train.epochs=3", "train.max_minutes=0.15")
    fake = fake_clock(monkeypatch)
    reference = tmp_path / "reference"
    engine.train(config, reference, show_progress=False)
    assert loss_steps(reference)[-1] == 9 and fake["counts"]["forward"] == 9

    resumed = tmp_path / "resumed"
    restore = interrupt_at_batch(monkeypatch, 8)  # the loader reads a batch ahead: in step 7
    with pytest.raises(KeyboardInterrupt):
        engine.train(config, resumed, show_progress=False)
    assert step_of(latest_checkpoint(resumed / "checkpoints")) == 4
    restore()
    fake["counts"]["forward"] = 0
    fake["clock"][0] += 5000.0  # the time between the kill and the restart does not count
    engine.train(config, resumed, show_progress=False)
    assert fake["counts"]["forward"] == 5
    assert outcome(resumed)["train_seconds"] == 9.0 and loss_steps(resumed) == list(range(1, 10))
    assert (resumed / "model" / "model.safetensors").read_bytes() == \
        (reference / "model" / "model.safetensors").read_bytes()
    assert [p.name for p in list_checkpoints(resumed / "checkpoints")] == ["checkpoint-9"]


def test_the_time_schedule_follows_the_budget_or_the_steps_whichever_is_further():
    f = progress.schedule_factor
    assert f("linear", 0.0, 0.1) == 0.0 and f("linear", 0.05, 0.1) == pytest.approx(0.5)
    assert f("linear", 0.1, 0.1) == 1.0 and f("linear", 0.55, 0.1) == pytest.approx(0.5)
    assert f("linear", 1.0, 0.1) == 0.0 and f("linear", 1.5, 0.1) == 0.0
    assert f("cosine", 0.55, 0.1) == pytest.approx(0.5) and f("cosine", 1.0, 0.1) == \
        pytest.approx(0.0)
    assert f("constant", 0.0, 0.1) == 1.0 and f("constant_with_warmup", 0.05, 0.1) == 0.5

    state = progress.TrainingProgress(max_minutes=1.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = progress.time_schedule(optimizer, "linear", 0.0, 100, lambda: state)
    state.train_seconds = 30.0  # half of the budget, 10 of 100 steps
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == [pytest.approx(0.5)]
    state.train_seconds = 0.0  # the steps are further: 20 of 100
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == [pytest.approx(0.8)]


# -- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, words", [
    (["train.keep_best=true"], "train.keep_best needs evaluation during training"),
    (["train.eval_steps=10"], "data.dev_fraction=0.1"),
    (["data.dev_fraction=0.1", "train.keep_best=true"], "train.eval_steps=100"),
    (["data.dev_fraction=0.1", "train.early_stopping_patience=3"], "without train.eval_steps"),
    (["data.dev_fraction=1.5"], "must be between 0 and 1"),
    (["data.dev_fraction=0"], "must be between 0 and 1"),
    (["data.dev_fraction=0.1", "data.dev_collection=beir/scifact/test"], "keep one of"),
    (["data.dev_split=dev"], "data.dev_split needs data.dev_collection"),
    (["data.dev_run=dev.trec"], "no dev queries are"),
    (["data.dev_fraction=0.1", "train.eval_measure=ndcg@10"], "did you mean 'nDCG@10'"),
    (["data.dev_fraction=0.1", "train.eval_steps=0"], "train.eval_steps=0 must be at least 1"),
    (["data.dev_fraction=0.1", "data.mode=triples", "data.triples=t.tsv", "loss=margin_mse"],
     "data.dev_collection"),
    (["train.max_minutes=0"], "train.max_minutes=0.0 must be above 0"),
    (["train.max_minutes=5", "train.scheduler=polynomial"], "cannot follow a time budget"),
])
def test_bad_evaluation_and_budget_settings_are_errors_with_a_fix(overrides, words):
    with pytest.raises(IrdistillError) as caught:
        check_config(load_config(overrides=overrides))
    text = str(caught.value)
    assert words in text, text


def test_new_keys_at_their_default_leave_the_hash_unchanged():
    base = load_config()
    assert config_hash(base) == "dc5ea9244b84"  # the default config's hash before these keys
    tree = to_dict(base)
    for section, key in HASH_NEUTRAL:
        tree[section].pop(key)
    assert config_hash(base) == config_hash(tree)
    for change in ("data.dev_fraction=0.1", "train.max_minutes=15", "train.eval_depth=50",
                   "data.dev_collection=beir/scifact/test"):
        assert config_hash(load_config(overrides=[change])) != config_hash(base), change
    config = load_config(overrides=["data.dev_fraction=0.1", "train.eval_steps=50",
                                    "train.keep_best=true", "train.max_minutes=15"])
    assert check_config(config) is config
    with pytest.raises(IrdistillError, match="not supported by SPLADE training"):
        check_not_evaluated(config, "SPLADE training")


# -- DDP ---------------------------------------------------------------------------------------

def test_under_torchrun_the_evaluation_is_shared_and_measured_once(toy, tiny_bert, tmp_path):
    """2 processes (gloo): each re-ranks one of the 2 dev queries, the first measures the whole
    run, so the logged value is that of the saved model on both queries; one log line per
    evaluation; the time budget's clock (broadcast every step) leaves the processes in step."""
    from test_scale_out import torchrun

    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run
    from irdistill.evaluation.metrics import evaluate
    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.rerank.scoring import rerank_run

    out = tmp_path / "ddp"
    sets = {"model.name": tiny_bert, "data.collection": toy["folder"], "data.run": toy["run"],
            "data.negatives": 3, "model.max_doc_length": 32, "train.batch_size": 2,
            "train.logging_steps": 1, "train.save_steps": 2, "train.max_steps": 4,
            "data.dev_fraction": 0.25, "train.eval_steps": 2, "train.max_minutes": 30}
    torchrun(["train", "--output", str(out)] + [x for k, v in sets.items()
                                                  for x in ("--set", f"{k}={v}")], tmp_path)
    lines = [r for r in log_lines(out) if "eval_nDCG@10" in r]
    assert [r["step"] for r in lines] == [2, 4] and loss_steps(out) == [1, 2, 3, 4]
    config = load_config(overrides=[f"{k}={v}" for k, v in sets.items()])
    collection = load_collection(toy["folder"])
    run = read_run(toy["run"], depth=100)
    _, held = dev_module.hold_out(config, collection, run)
    model = CrossEncoder.from_pretrained(str(out / "model"), device="cpu")
    reranked = rerank_run(model, collection, {q: run[q] for q in held}, show_progress=False)
    value = evaluate(reranked, {q: collection.qrels[q] for q in held}, ["nDCG@10"])
    per_query = sorted(v["nDCG@10"] for v in value.per_query.values())
    assert per_query[0] > 0  # both queries count: a process measuring its share would differ
    assert lines[-1]["eval_nDCG@10"] == pytest.approx(value.aggregate["nDCG@10"], abs=1e-5)
    assert outcome(out)["stopped"] == "end of training" and outcome(out)["steps"] == 4


def test_each_process_reranks_its_share_of_the_dev_queries(toy, tiny_bert, monkeypatch):
    from irdistill import distributed
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run
    from irdistill.models.cross_encoder import CrossEncoder

    collection = load_collection(toy["folder"])
    run = read_run(toy["run"], depth=100)
    config = make_config(toy, tiny_bert, "data.dev_fraction=0.5")
    _, held = dev_module.hold_out(config, collection, run)
    dev = dev_module.build_dev_set(config, collection, run, held)
    model = CrossEncoder.from_pretrained(tiny_bert, device="cpu")
    evaluator = dev_module.DevEvaluator(dev, "nDCG@10", 100, "fp32", model.tokenizer, 32, 32)
    whole = evaluator.rerank(model.model, "cpu")
    for module in (distributed, dev_module):  # is_distributed() reads the first's
        monkeypatch.setattr(module, "world_size", lambda: 2)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(dev_module, "rank", lambda rank=rank: rank)
        shares.append(evaluator.rerank(model.model, "cpu"))
    assert [len(s) for s in shares] == [2, 2] and not set(shares[0]) & set(shares[1])
    merged = {**shares[0], **shares[1]}
    assert merged.keys() == whole.keys()
    for q in whole:
        assert merged[q] == pytest.approx(whole[q], abs=1e-6)


def test_a_dev_collection_is_evaluated_on_its_judged_queries(toy, tiny_bert, beir_folder,
                                                             tmp_path):
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run

    collection = load_collection(toy["folder"])
    run = read_run(toy["run"], depth=100)
    config = make_config(toy, tiny_bert, f"data.dev_collection={beir_folder}",
                         "data.dev_split=test", "train.eval_depth=3")
    assert dev_module.hold_out(config, collection, run) == (run, [])  # training keeps them all
    dev = dev_module.build_dev_set(config, collection, run, [])
    assert sorted(dev.run) == ["q1", "q2"] and set(dev.qrels) == {"q1", "q2"}  # q3: unjudged
    assert all(1 <= len(docs) <= 3 for docs in dev.run.values()) and "BM25 top-3" in dev.source
    dev_run = tmp_path / "dev.trec"
    dev_run.write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d3 2 1.0 x\n")
    given = make_config(toy, tiny_bert, f"data.dev_collection={beir_folder}",
                        "data.dev_split=test", f"data.dev_run={dev_run}")
    dev = dev_module.build_dev_set(given, collection, run, [])
    assert dev.run == {"q1": {"d1": 2.0, "d3": 1.0}} and set(dev.qrels) == {"q1"}
