"""Scale-out (issue 5): sharded re-ranking merged into the single-process run, torchrun (DDP on
CPUs with gloo) for training and re-ranking, and bounded memory while re-ranking."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irdistill import CrossEncoder
from irdistill.cli import app
from irdistill.data.trec import ranked, read_run, write_run
from irdistill.errors import IrdistillError
from irdistill.provenance import read_run_provenance, sha256_file
from irdistill.rerank.scoring import rerank_run
from irdistill.rerank.sharding import last_uses, merge_runs, parse_shard, shard_blocks

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(scope="module")
def scifact_test(scifact_available):
    from irdistill.data.collection import load_collection
    from irdistill.retrieval.bm25 import bm25_run

    collection = load_collection("beir/scifact/test")
    queries = sorted(collection.qrels)[:40]
    run = bm25_run(collection, 6, query_ids=queries)
    return collection, {q: dict(ranked(docs, 6)) for q, docs in run.items()}


def test_shard_helpers():
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("4/4", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(IrdistillError):
            parse_shard(bad)
    blocks = [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert shard_blocks(blocks, (0, 2)) == [["a"], ["c"], ["e"]]
    assert shard_blocks(blocks, (1, 2)) == [["b"], ["d"]]
    assert last_uses([["q1"], ["q2"]], {"q1": ["d1", "d2"], "q2": ["d2"]}) == {"d1": 0, "d2": 1}
    assert merge_runs([{"q2": {"d": 1.0}}, {"q1": {"d": 2.0}}]) == {
        "q1": {"d": 2.0}, "q2": {"d": 1.0}}
    with pytest.raises(IrdistillError, match="in two shards"):
        merge_runs([{"q1": {}}, {"q1": {}}])
    with pytest.raises(IrdistillError, match="in no shard"):
        merge_runs([{"q1": {}}], expected=["q1", "q2"])


def test_merged_shards_are_the_single_process_run(tiny_bert, scifact_test, tmp_path):
    collection, run = scifact_test
    model = CrossEncoder.from_pretrained(tiny_bert, max_doc_length=48, device="cpu")
    kwargs = dict(depth=6, batch_size=8, show_progress=False, block_pairs=40)
    single = rerank_run(model, collection, run, **kwargs)
    parts = [rerank_run(model, collection, run, shard=(i, 3), **kwargs,
                        checkpoint=tmp_path / f"part{i}.jsonl") for i in range(3)]
    assert all(parts) and sum(len(p) for p in parts) == len(run)
    assert merge_runs(parts, expected=run) == single  # score for score, bitwise


def test_each_document_is_tokenised_once_per_run(tiny_bert, scifact_test, monkeypatch):
    """Documents shared by queries of different blocks are tokenised once, although their
    token ids are dropped after the last block that needs them."""
    collection, run = scifact_test
    model = CrossEncoder.from_pretrained(tiny_bert, max_doc_length=48, device="cpu")
    seen = []
    original = model.encoder.encode_docs

    def counting(texts, compact=False):
        seen.extend(texts)
        return original(texts, compact=compact)

    monkeypatch.setattr(model.encoder, "encode_docs", counting)
    shared = dict(run)
    first, last = sorted(shared)[0], sorted(shared)[-1]
    shared[last] = {**shared[last], **shared[first]}  # documents used in the first and last block
    rerank_run(model, collection, shared, depth=12, show_progress=False, block_pairs=30)
    unique = {d for docs in shared.values() for d in list(docs)[:12]}
    assert len(seen) == len(unique)


def test_cli_shards_merge_into_the_full_run(tiny_bert, scifact_test, tmp_path):
    _, run = scifact_test
    candidates = tmp_path / "bm25.trec"
    write_run(candidates, run)
    common = ["rerank", tiny_bert, "beir/scifact/test", "--run", str(candidates), "--depth", "6",
              "--max-doc-length", "48", "--block-pairs", "60"]
    full = tmp_path / "full.trec"
    assert runner.invoke(app, common + ["-o", str(full)]).exit_code == 0
    parts = []
    for i in range(2):
        part = tmp_path / f"part{i}.trec"
        result = runner.invoke(app, common + ["-o", str(part), "--shard", f"{i}/2"])
        assert result.exit_code == 0, result.output
        assert f"shard {i}/2" in result.output
        parts.append(str(part))
    merged = tmp_path / "merged.trec"
    result = runner.invoke(app, ["merge-runs", *parts, "-o", str(merged), "--run",
                                 str(candidates)])
    assert result.exit_code == 0, result.output
    assert merged.read_text() == full.read_text()
    assert len(read_run(parts[0])) == len(read_run(parts[1])) == 20
    for i, part in enumerate(parts):  # each shard names its shard, its queries and its file
        record = read_run_provenance(part)
        assert record["config"]["shard"] == f"{i}/2" and record["data"]["queries"] == 20
        assert record["run"]["sha256"] == sha256_file(part)
        assert record["data"]["candidates"]["sha256"] == sha256_file(candidates)
    assert read_run_provenance(full)["config"]["shard"] is None
    record = read_run_provenance(merged)
    assert record["kind"] == "merge-runs" and record["run"]["sha256"] == sha256_file(merged)
    assert [r["sha256"] for r in record["parts"]] == [sha256_file(p) for p in parts]
    assert [r["provenance"]["config"]["shard"] for r in record["parts"]] == ["0/2", "1/2"]
    assert record["data"]["candidates"]["sha256"] == sha256_file(candidates)
    result = runner.invoke(app, ["merge-runs", parts[0], parts[0], "-o", str(merged)])
    assert result.exit_code == 2 and "in two shards" in result.output
    result = runner.invoke(app, common + ["-o", str(merged), "--shard", "2/2"])
    assert result.exit_code == 2 and "shard 2/2 does not exist" in result.output


def torchrun(args: list[str], tmp_path: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", "0", "--rdzv_backend", "c10d", "--rdzv_endpoint",
               "localhost:0", "-m", "irdistill", *args]
    out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_torchrun_rerank_writes_the_single_process_run(tiny_bert, scifact_test, tmp_path):
    _, run = scifact_test
    candidates = tmp_path / "bm25.trec"
    write_run(candidates, run)
    # torchrun's own parser takes --run for its --run-path: the option's other name
    common = ["rerank", tiny_bert, "beir/scifact/test", "--candidates", str(candidates),
              "--depth", "6", "--max-doc-length", "48", "--device", "cpu", "--block-pairs", "60"]
    single = tmp_path / "single.trec"
    assert runner.invoke(app, common + ["-o", str(single)]).exit_code == 0
    both = tmp_path / "torchrun.trec"
    out = torchrun(common + ["-o", str(both)], tmp_path)
    assert both.read_text() == single.read_text()
    # found anywhere in the output: the two processes' lines may interleave
    counts = [int(n) for n in re.findall(r"process [01]/2 scored (\d+) queries", out.stdout)]
    assert sorted(counts) == [20, 20]  # 4 blocks of 10 queries, 2 for each process
    assert out.stdout.count("wrote re-ranked run of 40 queries") == 1
    assert not list(tmp_path.glob("torchrun.trec*partial*"))


def test_torchrun_trains_with_two_processes(tiny_bert, scifact_available, tmp_path):
    """DDP on CPUs (gloo): 24 groups, 4 per process and step, 2 processes -> 3 steps; one
    log, one model, one config; both processes' RNG states in the checkpoint."""
    out_dir = tmp_path / "ddp"
    out = torchrun(["train", "--output", str(out_dir), "--set", f"model.name={tiny_bert}",
                    "--set", "data.collection=beir/scifact/train", "--set", "data.max_queries=24",
                    "--set", "data.negatives=3", "--set", "data.depth=20",
                    "--set", "train.batch_size=4", "--set", "train.logging_steps=1",
                    "--set", "train.save_steps=2", "--set", "model.max_doc_length=32",
                    "--set", "train.group_by_length=true"], tmp_path)
    steps = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2, 3]
    assert all(s["loss"] > 0 for s in steps if "loss" in s)
    assert (out_dir / "model" / "model.safetensors").exists()
    assert json.loads((out_dir / "provenance.json").read_text())["data"]["groups"] == 24
    checkpoint = next((out_dir / "checkpoints").glob("checkpoint-*"))
    assert {p.name for p in checkpoint.glob("rng_state*")} == {"rng_state_0.pth",
                                                                "rng_state_1.pth"}
    assert not list(out_dir.glob("*.tmp")) and not (out_dir / "model.tmp").exists()
    # the second process read the first one's candidates and tokens (shared, then removed)
    assert "reading the candidates the first process saved" in out.stdout + out.stderr
    assert out.stdout.count("building the token store") + out.stderr.count(
        "building the token store") == 2  # queries and documents, once
    assert not (out_dir / "candidates").exists() and not (out_dir / "tokens").exists()


def test_torchrun_experiment_run_shares_the_work_and_writes_once(tiny_bert, beir_folder,
                                                                  scifact_available, tmp_path):
    """A grid under torchrun: the cell trains with DDP, the evaluations are shared, the first
    process writes every file once; the shared systems' results equal one process's."""
    from test_grid import write_grid
    from typer.testing import CliRunner

    from irdistill.cli import app

    axes = "  objective: [infonce]\n  seed: [1]"
    (tmp_path / "single").mkdir()
    single = write_grid(tmp_path / "single", beir_folder, tiny_bert, axes)
    assert CliRunner().invoke(app, ["experiment", "run", str(single)]).exit_code == 0
    both = write_grid(tmp_path, beir_folder, tiny_bert, axes)
    out = torchrun(["experiment", "run", str(both)], tmp_path, timeout=400)
    assert out.stdout.count("train: done") == 1  # the status table, printed by one process
    files = {p.relative_to(tmp_path / "out"): json.loads(p.read_text())
             for p in (tmp_path / "out").rglob("*.json")}
    results = {name: data for name, data in files.items()
               if isinstance(data, dict) and "variants" in data and "kind" in data}
    assert {r["kind"] for r in results.values()} == {"first_stage", "untrained", "trained"}
    for name, result in results.items():
        if result["kind"] != "trained":
            reference = json.loads((tmp_path / "single" / "out" / name).read_text())
            assert result["variants"] == reference["variants"], name
    assert not list((tmp_path / "out").rglob("*partial*"))
    assert len(list((tmp_path / "out").rglob("done.json"))) == 1
