"""The paths that only a CUDA GPU takes: training in bf16 and fp16 (autocast, a gradient scaler)
on the GPU, re-ranking and SPLADE encoding there, SDPA attention with padded batches, and models
trained there scored alike on a CPU.

Skipped where no CUDA GPU is visible (as in CI); ``benchmarks/gpu.sh`` runs them on a GPU machine.
Each compares the GPU against the CPU in fp32 on the same inputs, with tolerances of the
precision used, relative to the largest score (fp32 on the GPU without TF32: 1e-4; bf16: 3e-2).
"""
import json

import numpy as np
import pytest
import torch
from toy_collection import write_toy_collection

from irdistill.config import load_config
from irdistill.models.cross_encoder import CrossEncoder

DEVICE = "cuda"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def probe_pairs() -> list[tuple[str, str]]:
    """Pairs of very different lengths, so that batches are padded and masked."""
    docs = ["cells", "the cell is the basic unit of life " * 12,
            "dogs are loyal animals that bark at strangers and chase cats up trees",
            "stars are balls of hot plasma " * 4, "a"]
    return [(q, d) for q in ("what is the unit of life", "animals that bark") for d in docs]


def error(a, b) -> float:
    """The largest difference of ``a`` from the reference ``b``, relative to ``b``'s largest
    magnitude (a tiny random model's scores lie close together: relative to their spread,
    bf16's rounding would look large)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture
def toy(tmp_path):
    return write_toy_collection(tmp_path / "toy")


def train_on_gpu(toy, model, out, *extra):
    from irdistill.train import engine

    config = load_config(overrides=[
        f"model.name={model}", f"data.collection={toy['folder']}", f"data.run={toy['run']}",
        "data.negatives=3", "model.max_doc_length=32", "train.batch_size=2", "train.lr=1e-3",
        "train.max_steps=8", "train.logging_steps=1", "train.save_steps=4", *extra])
    return engine.train(config, out, show_progress=False)


def losses(folder) -> list[float]:
    lines = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if "loss" in r]


@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16"])
def test_training_on_the_gpu_runs_in_its_precision_and_the_cpu_scores_the_model_alike(
        toy, tiny_bert, tmp_path, precision):
    model_dir = train_on_gpu(toy, tiny_bert, tmp_path / "run", f"train.precision={precision}")
    values = losses(tmp_path / "run")
    assert len(values) == 8 and all(np.isfinite(values)), values
    record = json.loads((tmp_path / "run" / "provenance.json").read_text())
    resolved = record["config"]["train"]["precision"]
    expected = {"auto": "bf16" if torch.cuda.is_bf16_supported() else "fp16"}.get(precision,
                                                                                  precision)
    assert resolved == expected
    cpu = CrossEncoder.from_pretrained(str(model_dir), device="cpu").score(probe_pairs())
    gpu = CrossEncoder.from_pretrained(str(model_dir), device=DEVICE).score(probe_pairs())
    assert error(gpu, cpu) < 1e-4
    half = CrossEncoder.from_pretrained(str(model_dir), device=DEVICE,
                                        precision="bf16").score(probe_pairs())
    assert error(half, cpu) < 3e-2


def test_the_model_trains_on_the_gpu_and_its_weights_change(toy, tiny_bert, tmp_path,
                                                            monkeypatch):
    from irdistill.train import engine

    devices = []
    original = engine.JsonlLog

    def spying(path):  # the engine's log callback, noting where the model is at each log
        callback = original(path)
        on_log = callback.on_log

        def noting(args, state, control, model=None, **kwargs):
            devices.append(next(model.parameters()).device.type)
            return on_log(args, state, control, model=model, **kwargs)

        callback.on_log = noting
        return callback

    monkeypatch.setattr(engine, "JsonlLog", spying)
    before = CrossEncoder.from_pretrained(tiny_bert, device="cpu").model.state_dict()
    model_dir = train_on_gpu(toy, tiny_bert, tmp_path / "run", "train.precision=bf16")
    assert devices and set(devices) == {DEVICE}
    after = CrossEncoder.from_pretrained(str(model_dir), device="cpu").model.state_dict()
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2


def test_sdpa_on_the_gpu_matches_eager_attention_on_padded_batches(tiny_bert):
    eager = CrossEncoder.from_pretrained(tiny_bert, device=DEVICE, attn_implementation="eager")
    sdpa = CrossEncoder.from_pretrained(tiny_bert, device=DEVICE, attn_implementation="sdpa")
    assert sdpa.model.config._attn_implementation == "sdpa"
    cpu = CrossEncoder.from_pretrained(tiny_bert, device="cpu").score(probe_pairs())
    assert error(eager.score(probe_pairs(), batch_size=4), cpu) < 1e-4
    assert error(sdpa.score(probe_pairs(), batch_size=4), cpu) < 1e-4
    bf16 = CrossEncoder.from_pretrained(tiny_bert, device=DEVICE, precision="bf16-full")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert error(bf16.score(probe_pairs(), batch_size=4), cpu) < 3e-2


def test_reranking_a_run_on_the_gpu_orders_as_on_the_cpu(toy, tiny_bert):
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run
    from irdistill.rerank import rerank_run

    collection = load_collection(toy["folder"])
    run = read_run(toy["run"])
    on_cpu = rerank_run(CrossEncoder.from_pretrained(tiny_bert, device="cpu"), collection, run,
                        show_progress=False)
    on_gpu = rerank_run(CrossEncoder.from_pretrained(tiny_bert, device=DEVICE), collection, run,
                        show_progress=False)
    assert on_gpu.keys() == on_cpu.keys()
    for qid in on_cpu:
        docs = sorted(on_cpu[qid])
        assert error([on_gpu[qid][d] for d in docs], [on_cpu[qid][d] for d in docs]) < 1e-4


def test_splade_encodes_on_the_gpu_as_on_the_cpu(tiny_mlm):
    from irdistill.models.splade import Splade

    texts = [d for _, d in probe_pairs()[:5]]
    cpu = Splade.from_pretrained(tiny_mlm, device="cpu").encode_docs(texts)
    gpu = Splade.from_pretrained(tiny_mlm, device=DEVICE).encode_docs(texts)
    cpu, gpu = (np.asarray(x.todense() if hasattr(x, "todense") else x, dtype=np.float64)
                for x in (cpu, gpu))
    assert gpu.shape == cpu.shape
    assert np.abs(gpu - cpu).max() <= 1e-4 * max(np.abs(cpu).max(), 1e-6)


from splade_helpers import tiny_mlm  # noqa: E402,F401  (fixture)
