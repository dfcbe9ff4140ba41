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
