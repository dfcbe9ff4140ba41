import json

from typer.testing import CliRunner

from irdistill.cli import app


def test_demo_end_to_end_with_a_tiny_model(tmp_path, tiny_bert, scifact_available):
    """The demo's whole path, fast: the recipe's model swapped for a tiny one."""
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, [
        "demo", "--output", str(out), "--set", f"model.name={tiny_bert}",
        "--set", "train.max_steps=2", "--set", "train.batch_size=4",
        "--set", "model.max_doc_length=32", "--set", "train.precision=fp32"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["bm25", "untrained", "reranker", "reranker+bm25"]
    assert abs(results["bm25"]["nDCG@10"] - 0.662) < 0.003
    for name in results:
        assert set(results[name]) == {"nDCG@10", "RR@10"}
        assert f"{results[name]['nDCG@10']:.4f}" in result.output
    settings = json.loads((out / "settings.json").read_text())
    assert 0.0 <= settings["interpolation_alpha"] <= 1.0
    dev = set(settings["dev_queries"])
    assert len(dev) == 81  # every 10th of the 809 judged training queries
    steps = [json.loads(l) for l in (out / "train" / "train_log.jsonl").read_text().splitlines()]
    assert steps[-1]["step"] == 2
    for name in ("bm25", "untrained", "reranker", "reranker+bm25"):
        assert (out / "runs" / f"{name}.trec").exists()
