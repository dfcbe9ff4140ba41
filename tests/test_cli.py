"""The command line end to end on small inputs, and its handling of bad input."""
import json
import subprocess
import sys

import pytest
from conftest import DL19
from typer.testing import CliRunner

from irdistill.cli import app
from irdistill.provenance import read_run_provenance, sha256_file

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("retrieve", "train", "rerank", "evaluate", "demo"):
        assert name in result.output


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "irdistill", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "evaluate" in out.stdout


def test_evaluate_dl19_writes_json(tmp_path):
    out = tmp_path / "eval.json"
    result = invoke("evaluate", DL19 / "rankllmdata_BM25_dl19_top100.trec",
                    "--qrels", DL19 / "qrels.dl19-passage.txt",
                    "--measures", "nDCG@10 RR@10", "-m", "AP", "--json", out)
    assert result.exit_code == 0, result.output
    assert "0.5058" in result.output
    data = json.loads(out.read_text())
    assert round(data["aggregate"]["nDCG@10"], 4) == 0.5058
    assert set(data["aggregate"]) == {"nDCG@10", "RR@10", "AP"}
    assert len(data["per_query"]) == 43 and "RR@10" in data["per_query"]["1037798"]


@pytest.mark.parametrize("case", ["bad_run_line", "unknown_dataset", "missing_model"])
def test_bad_input_one_line_error(tmp_path, scifact_available, case):
    out = tmp_path / "out.trec"
    if case == "bad_run_line":
        bad = tmp_path / "bad.trec"
        bad.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 oops t\n")
        args = ["evaluate", bad, "--qrels", DL19 / "qrels.dl19-passage.txt"]
        words = ["bad.trec, line 2", "'oops' is not a number"]
    elif case == "unknown_dataset":
        args = ["retrieve", "beir/scifakt/test", "--output", out]
        words = ["unknown dataset id 'beir/scifakt/test'", "did you mean 'beir/scifact/test'"]
    else:
        args = ["rerank", tmp_path / "no-model", "beir/scifact/test", "--output", out]
        words = ["no-model", "not found"]
    result = invoke(*args)
    assert result.exit_code == 2
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_debug_flag_shows_traceback(tmp_path):
    bad = tmp_path / "bad.trec"
    bad.write_text("too few columns\n")
    result = invoke("--debug", "evaluate", bad, "--qrels", DL19 / "qrels.dl19-passage.txt")
    assert result.exit_code == 2 and "Traceback" in result.output


def test_retrieve_train_rerank_evaluate_with_a_tiny_model(tmp_path, tiny_bert, scifact_available):
    """The whole path on SciFact with a tiny random BERT: every command and every artefact."""
    run = tmp_path / "bm25.trec"
    assert invoke("retrieve", "beir/scifact/test", "--output", run, "--k", 20).exit_code == 0
    assert len(run.read_text().splitlines()) == 300 * 20
    record = read_run_provenance(run)  # the first stage's provenance: what made the file
    assert record["kind"] == "bm25" and record["config"]["k"] == 20
    assert record["config"]["k1"] == 1.5 and record["run"]["sha256"] == sha256_file(run)

    out = tmp_path / "train"
    train_args = ["--set", f"model.name={tiny_bert}",
                  "--set", "data.max_queries=24", "--set", "data.negatives=3",
                  "--set", "train.batch_size=4", "--set", "train.logging_steps=1",
                  "--set", "train.save_steps=3", "--set", "model.max_doc_length=48",
                  "--set", "loss=bce"]
    result = invoke("train", "--output", out, *train_args)
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "provenance.json", "train_log.jsonl", "model/config.json",
                 "model/model.safetensors", "model/tokenizer.json"):
        assert (out / name).exists(), name
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["config"]["loss"] == "bce" and len(provenance["config_hash"]) == 12
    steps = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2, 3, 4, 5, 6]

    reranked = tmp_path / "reranked.trec"
    result = invoke("rerank", out / "model", "beir/scifact/test", "--run", run, "--depth", 5,
                    "--output", reranked)
    assert result.exit_code == 0, result.output
    lines = reranked.read_text().splitlines()
    assert len(lines) == 300 * 5
    record = read_run_provenance(reranked)
    assert record["kind"] == "rerank" and record["config"]["depth"] == 5
    assert record["run"]["sha256"] == sha256_file(reranked)
    assert record["data"]["candidates"]["sha256"] == sha256_file(run)
    assert record["model"]["trained"] == provenance["config_hash"]
    bm25_top5 = {tuple(l.split()[::2][:2]) for l in run.read_text().splitlines()
                 if int(l.split()[3]) <= 5}
    assert {tuple(l.split()[::2][:2]) for l in lines} == bm25_top5  # same candidates

    metrics = tmp_path / "m.json"
    assert invoke("evaluate", reranked, "--qrels", "beir/scifact/test", "--json",
                  metrics).exit_code == 0
    assert 0 <= json.loads(metrics.read_text())["aggregate"]["nDCG@10"] <= 1

    again = invoke("train", "--output", out, *train_args)
    assert again.exit_code == 0 and "model saved" in again.output  # finished: nothing redone
    other = invoke("train", "--output", out, "--set", f"model.name={tiny_bert}")
    assert other.exit_code == 2 and "made by another config" in other.output  # not passed off


def test_rerank_backends_and_token_budget_through_the_command_line(tmp_path, monkeypatch):
    """--backend onnx and compile and --max-tokens 0 reach the scorer: every run ranks as the
    default one (a tiny model whose scores spread), and the provenance says how it scored."""
    pytest.importorskip("onnxruntime")
    from tiny_models import build_tiny_model
    from toy_collection import write_toy_collection

    from irdistill.data.trec import read_run
    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.rerank import job as rerank_module  # where the CLI's call re-ranks

    toy = write_toy_collection(tmp_path / "toy")
    model = build_tiny_model("bert", tmp_path / "m", initializer_range=0.2)
    compiled, budgets = [], []
    real_compile, real_rerank = CrossEncoder.use_compile, rerank_module.rerank_to_file

    def compile_without_a_compiler(self, backend="inductor", mode=None):  # same graph, no C++
        compiled.append(backend)
        return real_compile(self, backend="aot_eager")

    def rerank_to_file(*args, **kwargs):
        budgets.append(kwargs["max_tokens"])
        return real_rerank(*args, **kwargs)

    monkeypatch.setattr(CrossEncoder, "use_compile", compile_without_a_compiler)
    monkeypatch.setattr(rerank_module, "rerank_to_file", rerank_to_file)
    runs = {}
    for name, extra in {"torch": [], "onnx": ["--backend", "onnx"],
                        "compile": ["--backend", "compile"],
                        "no-budget": ["--max-tokens", "0"]}.items():
        out = tmp_path / f"{name}.trec"
        result = invoke("rerank", model, toy["folder"], "--run", toy["run"], "--depth", 10,
                        "--output", out, *extra)
        assert result.exit_code == 0, result.output
        runs[name] = read_run(out)
        record = read_run_provenance(out)
        assert record["config"]["backend"] == {"onnx": "onnx", "compile": "compile"}.get(
            name, "torch")
    assert compiled == ["inductor"] and budgets == ["auto", "auto", "auto", None]
    assert read_run_provenance(tmp_path / "no-budget.trec")["config"]["max_tokens"] is None
    reference = runs["torch"]
    spread = max(max(d.values()) - min(d.values()) for d in reference.values())
    assert spread > 0.05
    for name, run in runs.items():
        for query, docs in reference.items():
            assert sorted(run[query], key=run[query].get) == sorted(docs, key=docs.get), name
            assert all(abs(run[query][d] - s) < 1e-4 for d, s in docs.items()), name


@pytest.mark.parametrize("kind, key, cls_path", [
    ("train", "train.lr=0.0001", "irdistill.config:Config"),
    ("splade", "lambda_d=0.001", "irdistill.train.splade:SpladeConfig"),
    ("adapt", "layers=1", "irdistill.adapt.recipe:AdaptConfig"),
])
def test_config_show_prints_the_resolved_config_that_loads_back(tmp_path, kind, key, cls_path):
    import importlib

    from irdistill.config import from_dict

    result = CliRunner().invoke(app, ["config", "show", kind, "--set", key])
    assert result.exit_code == 0, result.output
    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    path = tmp_path / "shown.yaml"
    path.write_text(result.output)
    from irdistill.config import load_config

    shown = load_config(path, cls=cls)
    assert shown == load_config(overrides=[key], cls=cls) != from_dict(cls, {})
    bad = CliRunner().invoke(app, ["config", "show", "trian"])
    assert bad.exit_code == 2 and "unknown config kind 'trian'" in bad.output


def test_config_show_demo_takes_set_but_no_file_as_the_demo_does(tmp_path):
    from irdistill.demo import DEMO_RECIPE

    shown = CliRunner().invoke(app, ["config", "show", "demo", "--set", "train.seed=3"])
    assert shown.exit_code == 0, shown.output
    assert f"name: {DEMO_RECIPE['model']['name']}" in shown.output and "seed: 3" in shown.output
    (tmp_path / "c.yaml").write_text("train: {seed: 3}\n")
    refused = CliRunner().invoke(app, ["config", "show", "demo", str(tmp_path / "c.yaml")])
    assert refused.exit_code == 2 and "the demo takes no config file" in refused.output
