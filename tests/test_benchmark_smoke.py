"""benchmarks/speed.py runs end to end (a tiny model, a few pairs, in this process): the
tables come out with both sides' figures. No timing is checked here."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "speed.py"


def test_model_flops_of_minilm():
    spec = importlib.util.spec_from_file_location("speed", SCRIPT)
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)

    class MiniLM:
        hidden_size, intermediate_size, num_hidden_layers = 384, 1536, 6

    # 6 layers x (2n(4H^2 + 2HI) + 4n^2H) + pooler + head
    n = 100
    expected = 6 * (2 * n * (4 * 384**2 + 2 * 384 * 1536) + 4 * n * n * 384) + 2 * 384**2 + 768
    assert speed.model_flops(MiniLM, n) == expected
    last = 2 * n * (4 * 384**2 + 2 * 384 * 1536) + 4 * n * n * 384
    cut = 4 * n * 384**2 + 4 * 384**2 + 4 * 384 * 1536 + 4 * n * 384  # one query row
    assert speed.model_flops(MiniLM, n, cls_only=True) == expected - last + cut


def test_cls_only_benchmark_runs(capsys):
    spec = importlib.util.spec_from_file_location(
        "cls_only_bench", SCRIPT.parent / "cls_only.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--pairs", "8", "--tokens", "32", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "| full last layer |" in out and "| [CLS]-only last layer |" in out
    assert float(out.rsplit("largest score difference: ", 1)[1]) < 1e-2


@pytest.mark.slow
def test_benchmark_runs_at_toy_scale(tiny_bert, scifact_available, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("speed", SCRIPT)
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    pytest.importorskip("datasets")
    results = speed.main(["--model", tiny_bert, "--queries", "2", "--depth", "4",
                          "--batch-size", "4", "--precisions", "fp32,bf16", "--onnx", "no",
                          "--compile", "no",
                          "--train-precisions", "fp32", "--train-steps", "2",
                          "--train-batch", "2", "--warmup-steps", "0", "--peak-size", "256",
                          "--st-losses", "mnrl,listnet", "--in-process", "--repeats", "2",
                          "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    assert set(results["peak"]) == {"fp32", "bf16"}
    inference = results["inference"]
    assert [(r["side"], r["precision"]) for r in inference] == [
        ("irdistill", "fp32"), ("sentence-transformers", "fp32"),
        ("irdistill", "bf16"), ("sentence-transformers", "bf16")]
    assert all("error" not in r and r["pairs"] == 8 for r in inference)
    # each row measured twice; the row is the run of median speed, with both speeds kept
    assert all(len(r["rates"]) == 2 and r["pairs"] / r["seconds"] in r["rates"]
               for r in inference)
    # both sides saw exactly the same tokens
    assert inference[0]["tokens"] == inference[1]["tokens"]
    training = results["training"]
    assert [r["name"] for r in training] == ["irdistill", "sentence-transformers (mnrl)",
                                             "sentence-transformers (listnet)"]
    assert all("error" not in r and r["steps"] == 2 and r["pairs"] == 2 * 2 * 8 for r in training), \
        training
    assert all(len(r["rates"]) == 2 for r in training)
    report = (tmp_path / "r.md").read_text()
    assert "measured 2 times" in report
    assert "## Inference" in report and "## Training" in report and "command: " in report
    assert "irdistill / sentence-transformers" in capsys.readouterr().out


def test_scale_benchmark_runs_at_toy_sizes(scifact_available, tmp_path):
    """benchmarks/scale.py at two toy sizes: every stage is measured at both, the synthetic
    data is what it says (one judged document per query, a run of the given depth that holds
    it), and the report has every stage's exponent and projection."""
    spec = importlib.util.spec_from_file_location("scale", SCRIPT.with_name("scale.py"))
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)

    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run

    shape = scale.make_collection(tmp_path / "c", 300, 20, 10, 20)
    assert shape == {"docs": 300, "queries": 20, "run_lines": 200}
    collection = load_collection(tmp_path / "c")
    run = read_run(tmp_path / "c" / "run.trec")
    assert len(collection.docs) == 300 and len(collection.queries) == 20
    assert all(len(run[q]) == 10 and set(collection.qrels[q]) <= set(run[q]) for q in run)

    report = scale.main(["--sizes", "400", "800", "--search-queries", "10", "--depth", "10",
                         "--markdown", str(tmp_path / "scale.md")])
    stages = list(report["sizes"][0]["stages"])
    assert len(stages) == 17 and all(list(r["stages"]) == stages for r in report["sizes"])
    table = (tmp_path / "scale.md").read_text()
    for stage in stages:
        row = next(line for line in table.splitlines() if line.startswith(f"| {stage} "))
        assert " min / " in row, row  # an exponent and a projection


def test_scale_training_path_runs_at_a_toy_size(scifact_available, tmp_path):
    """benchmarks/scale.py --training-path: the data path of a training run (collection, the
    run read compact, groups over two epochs, memory-mapped tokens, first batches) and then
    irdistill train itself for a step, at a toy size."""
    spec = importlib.util.spec_from_file_location("scale", SCRIPT.with_name("scale.py"))
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    report = scale.main(["--training-path", "--candidates", "synthetic", "--sizes", "600",
                         "--depth", "20", "--train-steps", "1", "--epochs", "2"])
    (row,) = report["sizes"]
    assert list(row["stages"]) == ["collection load", "run read", "groups (labels)", "tokenise",
                                   "first 200 batches", "irdistill train (1 steps)"]
    assert row["stages"]["tokenise"]["disk_mb"] > 0  # the token stores were written
