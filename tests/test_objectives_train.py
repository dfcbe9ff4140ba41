"""Every objective trains the bundled MiniLM through ``irdistill train`` on a SciFact slice, with
only ``loss`` and ``data.mode`` changed in the config; staged recipes; data-mode errors."""
import json
import math
import os

import pytest
from typer.testing import CliRunner

from irdistill.cli import app

runner = CliRunner()

# (loss, data mode): every loss of the library, each with a mode that feeds it. The other
# pairings (ranknet on teacher ranks, margin_mse on streamed triples) run below on a tiny model.
OBJECTIVES = [("bce", "labels"), ("hinge", "labels"), ("ranknet", "labels"),
              ("infonce", "labels"), ("listnet", "labels"), ("approx_ndcg", "labels"),
              ("lambdaloss", "labels"), ("mse", "teacher_scores"), ("kl", "teacher_scores"),
              ("margin_mse", "teacher_scores"), ("adr_mse", "teacher_ranks")]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def scifact_slice(tmp_path_factory, scifact_available):
    """A BM25 run of 6 SciFact train queries (its scores stand in for a teacher's), a triple
    file made from it, and a base config that every objective shares."""
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import ranked, write_run
    from irdistill.retrieval.bm25 import bm25_run

    folder = tmp_path_factory.mktemp("objectives")
    train = load_collection("beir/scifact/train")
    qids = sorted(train.qrels)[:6]
    run = bm25_run(train, k=20, query_ids=qids)
    write_run(folder / "bm25.trec", run, tag="bm25")
    with open(folder / "triples.tsv", "w") as f:
        for qid in qids:
            docs = ranked(run[qid])
            pos = [(d, s) for d, s in docs if train.qrels[qid].get(d, 0) > 0]
            neg = [(d, s) for d, s in docs if train.qrels[qid].get(d, 0) <= 0]
            for (p, ps), (n, ns) in zip(pos * 2, neg[:2]):
                f.write(f"{ps}\t{ns}\t{qid}\t{p}\t{n}\n")
    config = folder / "base.yaml"
    config.write_text(f"""
data:
  collection: beir/scifact/train
  run: {folder / 'bm25.trec'}
  teacher_run: {folder / 'bm25.trec'}
  triples: {folder / 'triples.tsv'}
  depth: 20
  negatives: 3
  max_queries: 4
model: {{name: minilm, max_query_length: 16, max_doc_length: 32}}
train: {{batch_size: 2, max_steps: 1, warmup_ratio: 0.0, logging_steps: 1, save_steps: 1000}}
""")
    return folder, config


def test_the_matrix_is_the_loss_library():
    """Every loss of the registry is trained below, none twice: a loss added to the library
    without a training test, or dropped from the matrix, fails here."""
    from irdistill.losses import LOSSES

    losses = [loss for loss, _ in OBJECTIVES]
    assert sorted(losses) == sorted(LOSSES) and len(set(losses)) == len(losses)


@pytest.mark.slow
@pytest.mark.parametrize("loss,mode", OBJECTIVES, ids=[f"{l}-{m}" for l, m in OBJECTIVES])
def test_objective_trains_minilm(tmp_path, scifact_slice, loss, mode):
    """Five steps on one fixed batch (2 queries, the top negatives): the objective lowers its
    own loss, so its gradient points the right way, not only somewhere finite."""
    _, config = scifact_slice
    out = tmp_path / "out"
    result = invoke("train", config, "--output", out, "--set", f"loss={loss}",
                    "--set", f"data.mode={mode}", "--set", "data.max_queries=2",
                    "--set", "data.sampling=top", "--set", "train.max_steps=5",
                    "--set", "train.epochs=100", "--set", "train.lr=1e-4",
                    "--set", "train.head_lr=1e-3")
    assert result.exit_code == 0, result.output
    assert (out / "model" / "config.json").exists() and (out / "model" / "model.safetensors").exists()
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["config"]["loss"] == loss and provenance["data"]["mode"] == mode
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    logged = [s for s in steps if "loss" in s]
    assert [s["step"] for s in logged] == [1, 2, 3, 4, 5]
    losses = [s["loss"] for s in logged]
    assert all(math.isfinite(x) for x in losses) and logged[0]["grad_norm"] > 0, logged
    assert losses[-1] < 0.98 * losses[0], losses  # measured: falls 3-30% in 5 steps


def test_two_stage_recipe(tmp_path, tiny_bert, scifact_slice):
    """InfoNCE on labels, then RankNet on the teacher's ranking, from stage 1's model."""
    folder, _ = scifact_slice
    config = tmp_path / "two-stage.yaml"
    config.write_text(f"""
data: {{collection: beir/scifact/train, run: {folder / 'bm25.trec'}, depth: 20, negatives: 3,
       max_queries: 4}}
model: {{name: {tiny_bert}, max_query_length: 16, max_doc_length: 32}}
loss: infonce
loss_params: {{temperature: 0.5}}
train: {{batch_size: 2, max_steps: 2, warmup_ratio: 0.0, logging_steps: 1, save_steps: 1000,
        lr: 1.0e-3}}
stages:
  - {{}}
  - loss: ranknet
    data: {{mode: teacher_ranks, teacher_run: {folder / 'bm25.trec'}, force_positive: false}}
    train: {{max_steps: 3}}
""")
    out = tmp_path / "out"
    result = invoke("train", config, "--output", out)
    assert result.exit_code == 0, result.output
    assert f"model saved to {out / 'model'}" in result.output
    first = json.loads((out / "stage-1" / "provenance.json").read_text())["config"]
    second = json.loads((out / "stage-2" / "provenance.json").read_text())["config"]
    assert (first["loss"], first["loss_params"], first["model"]["name"]) == (
        "infonce", {"temperature": 0.5}, tiny_bert)
    assert (second["loss"], second["loss_params"], second["data"]["mode"]) == (
        "ranknet", {}, "teacher_ranks")
    assert second["model"]["name"] == str((out / "stage-1" / "model").resolve())
    assert second["train"]["max_steps"] == 3 and second["stages"] == []
    logged = [json.loads(l) for l in (out / "stage-2" / "train_log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in logged if "loss" in s] == [1, 2, 3]
    assert os.path.realpath(out / "model") == os.path.realpath(out / "stage-2" / "model")
    assert (out / "model" / "config.json").exists() and (out / "config.yaml").exists()

    from safetensors.torch import load_file

    w1 = load_file(out / "stage-1" / "model" / "model.safetensors")
    w2 = load_file(out / "stage-2" / "model" / "model.safetensors")
    assert any(not w1[k].equal(w2[k]) for k in w1)  # stage 2 trained on from stage 1

    again = invoke("train", config, "--output", out)
    assert again.exit_code == 0 and "model saved" in again.output  # finished: nothing redone


def test_stream_repeats_when_the_triple_file_ends(tmp_path, tiny_bert, scifact_slice):
    folder, config = scifact_slice
    out = tmp_path / "out"
    lines = (folder / "triples.tsv").read_text().splitlines()[:3]
    short = tmp_path / "three.tsv"
    short.write_text("\n".join(lines) + "\n")
    result = invoke("train", config, "--output", out, "--set", f"model.name={tiny_bert}",
                    "--set", "loss=margin_mse", "--set", "data.mode=triples",
                    "--set", f"data.triples={short}", "--set", "train.max_steps=4")
    assert result.exit_code == 0, result.output
    logged = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in logged if "loss" in s] == [1, 2, 3, 4]  # 3 triples, 4 steps of 2


@pytest.mark.parametrize("sets,words", [
    (["data.mode=teacher_scores", "data.teacher_run=null"], "needs data.teacher_run"),
    (["data.mode=triples", "train.max_steps=-1"], "set train.max_steps"),
    (["data.mode=triple"], "unknown data mode 'triple' (did you mean 'triples'?)"),
    (["loss=ranknet", "loss_params.sigma=2"], "sigma"),
])
def test_data_mode_errors_are_one_line(tmp_path, scifact_slice, sets, words):
    _, config = scifact_slice
    args = ["train", config, "--output", tmp_path / "out"]
    for item in sets:
        args += ["--set", item]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.output
    assert not (tmp_path / "out" / "model").exists()


def test_lazy_tokens_fetch_once_and_stay_bounded():
    from irdistill.train.data import LazyTokens

    fetched = []

    def fetch(ids):
        fetched.extend(ids)
        return {i: f"text of {i}" for i in ids}

    tokens = LazyTokens(fetch, lambda texts: [[len(t)] for t in texts], capacity=2)
    tokens.load(["a", "b", "a"])
    assert tokens["a"] == [9] and fetched == ["a", "b"]  # one fetch per new id
    assert tokens["c"] == [9] and fetched == ["a", "b", "c"]
    assert list(tokens.cache) == ["a", "c"]  # 'b' was the least recently used


def test_example_configs_load_and_cover_every_loss():
    from pathlib import Path

    from irdistill.config import load_config, resolve_stage
    from irdistill.data.sampling import MODES
    from irdistill.losses import LOSSES, check_loss_params

    folder = Path(__file__).resolve().parent.parent / "configs"
    covered = set()
    for path in sorted(folder.glob("*.yaml")):
        config = load_config(path)
        stages = [resolve_stage(config, i, "previous" if i else None)
                  for i in range(len(config.stages))] or [config]
        for stage in stages:
            assert stage.loss in LOSSES and stage.data.mode in MODES, path
            check_loss_params(stage.loss, stage.loss_params)
            covered.add(stage.loss)
    assert covered == set(LOSSES)
