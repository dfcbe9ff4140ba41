#!/usr/bin/env python
"""irdistill against sentence-transformers: inference and training speed, side by side.

One run, one machine, one model (the bundled MiniLM, its new one-output head seeded and saved
once so both sides load the same weights), the same pairs and the same batch size:

* inference: pairs/second of ``irdistill`` (``CrossEncoder.score_ids``, what ``rerank_run``
  calls) against sentence-transformers' ``CrossEncoder.predict``, on SciFact test queries x
  their BM25 top-k, per precision; the achieved GFLOP/s (model FLOPs counted from the real
  token counts of the pairs, padding not counted) against the dense matmul peak measured here
  in the same dtype; peak memory (RSS) of each measurement's process;
* training: pairs/second of ``irdistill train`` (the engine, InfoNCE over groups of 1 positive
  + 7 BM25 negatives) against sentence-transformers' ``CrossEncoderTrainer`` with the same loss
  (``MultipleNegativesRankingLoss`` with the group's negatives as hard negatives, no in-batch
  negatives, no activation, scale 1: exactly InfoNCE; or ``ListNetLoss`` with one-hot labels,
  see :func:`st_infonce`), the same groups, group size, batch, optimizer settings and
  precision.

Both sides see exactly the same tokens: queries and documents are cut to
``--max-query-length``/``--max-doc-length`` tokens *as text* (at the tokenizer's character
offsets) before either side gets them, and sentence-transformers' own ``max_length`` is set high
enough not to cut again; the table shows each side's tokens per pair to prove it.

Each measurement runs in a fresh process (so its peak RSS is its own), sides interleaved;
before each timed call both sides get the same warm-up batches. Run it on a quiet machine
(the header shows the load average; numbers taken under load say little).

    eval "$(../shared/data/seed-irds.sh)"          # the offline SciFact cache
    pip install -e ".[bench]"                      # sentence-transformers, datasets, onnxruntime
    python benchmarks/speed.py                     # about 10 minutes on 2 cores
    python benchmarks/speed.py --queries 4 --depth 16 --train-steps 3 --train-batch 2   # toy

``--json FILE`` keeps every figure; ``--markdown FILE`` the tables; ``--repeats N`` measures
every row N times, in rounds, and reports the run of median speed with the range (use 3 or more
on a shared machine, where the same call varies by about 15% over an hour).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- what is measured -------------------------------------------------------------------------
def model_flops(config, tokens: int, cls_only: bool = False) -> float:
    """FLOPs of one forward pass of a BERT-like encoder over one sequence of ``tokens`` tokens
    (multiply-add = 2): per layer the Q, K, V, output and two feed-forward projections
    (2n(4H^2 + 2HI)) and the attention products QK^T and AV (4n^2H); plus pooler and head.
    ``cls_only``: the last layer for the [CLS] row only (irdistill.models.cls_only): K and V for
    every token (4nH^2), Q, output and feed-forward for one (4H^2 + 4HI), attention 4nH."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = tokens
    layer = 2 * n * (4 * h * h + 2 * h * i) + 4 * n * n * h
    last = 4 * n * h * h + 4 * h * h + 4 * h * i + 4 * n * h if cls_only else layer
    return (layers - 1) * layer + last + 2 * h * h + 2 * h


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def cut_to_tokens(tokenizer, texts: list[str], limit: int) -> list[str]:
    """Each text cut after its ``limit``-th token (at the token's character offset), so that
    any tokenizer call on it gives those tokens and no truncation is left to either side."""
    out = []
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    for text, offsets in zip(texts, encoded["offset_mapping"]):
        out.append(text if len(offsets) <= limit else text[:offsets[limit - 1][1]])
    return out


# -- workers (each in its own process) ---------------------------------------------------------
def _sync(device: str) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously; a CPU has nothing to wait
    for), so that a host clock read after it times the work."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def worker_peak(spec: dict) -> dict:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    n, device = spec["size"], spec.get("device", "cpu")
    # random data (zeros run faster on some chips); fp32 on a GPU: full fp32, not TF32
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    best = float("inf")
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return {"gflops": 2 * n ** 3 / best / 1e9, "threads": torch.get_num_threads()}


def _st_model(spec: dict):
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    kwargs = {"dtype": torch.bfloat16} if spec["precision"] == "bf16-full" else {}
    return STCrossEncoder(spec["model"], device=spec.get("device", "cpu"),
                          max_length=spec["st_max_length"],
                          activation_fn=torch.nn.Identity(), model_kwargs=kwargs)


def _autocast(precision: str, device: str = "cpu"):
    import torch

    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def worker_infer(spec: dict) -> dict:
    import numpy as np
    import torch

    pairs = json.loads(Path(spec["pairs"]).read_text())
    texts = [(p["query"], p["doc"]) for p in pairs]
    batch, warm = spec["batch_size"], texts[: 2 * spec["batch_size"]]
    result: dict = {}
    if spec["side"] == "sentence-transformers":
        st = _st_model(spec)
        encoded = st.tokenizer([q for q, _ in texts], [d for _, d in texts], truncation=True,
                               max_length=spec["st_max_length"])
        result["tokens"] = [len(ids) for ids in encoded["input_ids"]]
        with _autocast(spec["precision"], spec.get("device", "cpu")):
            st.predict(warm, batch_size=batch, show_progress_bar=False)
            start = time.perf_counter()
            cpu = time.process_time()
            scores = st.predict(texts, batch_size=batch, show_progress_bar=False)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        result["scores"] = np.asarray(scores, dtype=np.float64).tolist()
    else:
        from irdistill.models.cls_only import last_layer
        from irdistill.models.cross_encoder import CrossEncoder

        backend = spec.get("backend", "torch")
        ce = CrossEncoder.from_pretrained(spec["model"], device=spec.get("device", "cpu"),
                                          precision=None if spec["precision"] == "fp32"
                                          else spec["precision"])
        if backend in ("onnx", "onnx-int8"):
            start = time.perf_counter()
            ce.use_onnx(spec["onnx_cache"], quantize="int8" if backend == "onnx-int8" else None)
            result["export_seconds"] = time.perf_counter() - start
        if backend == "compile":  # compiled during a first full pass (every batch shape seen)
            start = time.perf_counter()
            ce.use_compile()
            ce.score(texts, batch_size=batch)
            result["compile_seconds"] = time.perf_counter() - start
        ce.score(warm, batch_size=batch)
        start = time.perf_counter()
        cpu = time.process_time()
        # what rerank_run does: each text tokenised once, then all pairs sorted and batched
        queries = list(dict.fromkeys(q for q, _ in texts))
        docs = list(dict.fromkeys(d for _, d in texts))
        q_ids = dict(zip(queries, ce.encoder.encode_queries(queries, compact=True)))
        d_ids = dict(zip(docs, ce.encoder.encode_docs(docs, compact=True)))
        ids = [(q_ids[q], d_ids[d]) for q, d in texts]
        # as a user runs it: batch_size caps the pairs, the default token budget cuts batches
        scores = ce.score_ids(ids, batch_size=batch)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        result["tokens"] = [ce.encoder.pair_length(q, d) for q, d in ids]
        result["cls_only"] = bool(getattr(last_layer(ce.model), "cls_only", False))
        result["scores"] = [float(s) for s in scores]
        lengths = sorted(result["tokens"], reverse=True)
        from irdistill.models.runtime import budget_for, plan_batches

        result["max_tokens"] = budget_for(ce.device)
        spans = plan_batches(lengths, batch, result["max_tokens"], ce.encoder.padded_width)
        result["padded_tokens"] = sum(ce.encoder.padded_width(lengths[a]) * (b - a)
                                      for a, b in spans)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(spec["model"])
    result.update(seconds=seconds, cpu_seconds=cpu, pairs=len(texts),
                  flops=sum(model_flops(config, n, result.get("cls_only", False))
                            for n in result["tokens"]),
                  rss_mb=peak_rss_mb(), threads=torch.get_num_threads())
    return result


def _step_timer(device: str = "cpu"):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Time at the end of every optimizer step (data loading and collation included; on a
        GPU after the step's queued work has finished, both sides alike)."""

        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            self.ends.append(time.perf_counter())

    return StepTimer()


def st_infonce(st, groups: list[dict], kind: str):
    """sentence-transformers' losses set up to be exactly InfoNCE over a group (the positive
    first): ``mnrl``, ``MultipleNegativesRankingLoss`` with the group's negatives as hard
    negatives, no in-batch negatives, no activation, scale 1 (it scores one column of the
    batch at a time); ``listnet``, ``ListNetLoss`` over the group with labels whose softmax is
    one-hot to 1e-13, no activation (it scores the whole batch at once)."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import losses

    if kind == "mnrl":
        class HardNegativesOnly(losses.MultipleNegativesRankingLoss):
            # num_negatives=0 fails in torch.multinomial: switch the in-batch negatives off here
            def get_in_batch_negatives(self, anchors, candidates):
                return iter(())

        columns = {"query": [g["query"] for g in groups]}
        for i in range(len(groups[0]["docs"])):
            columns["positive" if i == 0 else f"negative_{i}"] = [g["docs"][i] for g in groups]
        return (HardNegativesOnly(st, num_negatives=None, scale=1.0, activation_fn=None),
                Dataset.from_dict(columns))
    if kind == "listnet":
        labels = [[30.0] + [0.0] * (len(g["docs"]) - 1) for g in groups]
        return (losses.ListNetLoss(st, activation_fn=torch.nn.Identity()),
                Dataset.from_dict({"query": [g["query"] for g in groups],
                                   "docs": [g["docs"] for g in groups], "labels": labels}))
    raise ValueError(f"unknown sentence-transformers loss {kind!r}")


def worker_train(spec: dict) -> dict:
    import torch

    device = spec.get("device", "cpu")
    timer = _step_timer(device)
    groups = json.loads(Path(spec["groups"]).read_text())
    start = time.perf_counter()
    cpu = time.process_time()
    if spec["side"] == "sentence-transformers":
        from sentence_transformers.cross_encoder import (CrossEncoderTrainer,
                                                         CrossEncoderTrainingArguments)
        st = _st_model({**spec, "precision": "fp32"})
        loss, dataset = st_infonce(st, groups, spec["st_loss"])
        args = CrossEncoderTrainingArguments(
            output_dir=str(Path(spec["out"]) / "checkpoints"), **spec["trainer_args"],
            bf16=spec["precision"] == "bf16", use_cpu=device == "cpu", save_strategy="no",
            report_to="none", disable_tqdm=True)
        trainer = CrossEncoderTrainer(model=st, args=args, train_dataset=dataset, loss=loss,
                                      callbacks=[timer])
        trainer.train()
        st.save_pretrained(str(Path(spec["out"]) / "model"))
        steps = trainer.state.global_step
    else:
        from irdistill.config import load_config
        from irdistill.data.collection import load_collection
        from irdistill.data.trec import read_run
        from irdistill.train import engine

        original = engine.JsonlLog

        def with_timer(path):  # the engine's log callback, and the step timer beside it
            log_callback = original(path)

            class Both(type(timer)):
                def on_log(self, *a, **k):
                    return log_callback.on_log(*a, **k)

            both = Both()
            both.ends = timer.ends
            return both

        engine.JsonlLog = with_timer
        try:
            config = load_config(overrides=spec["irdistill_overrides"])
            collection = load_collection(config.data.collection)
            run = read_run(spec["run"])
            engine.train(config, Path(spec["out"]) / "irdistill", collection=collection, run=run,
                         show_progress=False)
        finally:
            engine.JsonlLog = original
        steps = len(timer.ends)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    warm = min(spec["warmup_steps"], max(0, len(timer.ends) - 2))
    steady = ((timer.ends[-1] - timer.ends[warm]) / (len(timer.ends) - 1 - warm)
              if len(timer.ends) - 1 > warm else float("nan"))
    pairs_per_step = spec["batch"] * spec["group_size"]
    return {"seconds": seconds, "cpu_seconds": cpu, "steps": steps,
            "pairs": steps * pairs_per_step, "steady_step_seconds": steady,
            "steady_pairs_per_second": pairs_per_step / steady if steady == steady else None,
            "rss_mb": peak_rss_mb(), "threads": torch.get_num_threads()}


WORKERS = {"peak": worker_peak, "infer": worker_infer, "train": worker_train}


def run_worker(spec: dict, in_process: bool) -> dict:
    if in_process:
        return WORKERS[spec["kind"]](spec)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if spec.get("device", "cpu") == "cpu":  # both sides on the CPU, also where a GPU is there
        env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                         capture_output=True, text=True, env=env)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (out.stderr or out.stdout).strip().splitlines()[-15:]
    return {"error": "\n".join(tail)}


# -- preparation -------------------------------------------------------------------------------
def prepare(args, work: Path) -> dict:
    """The model (head seeded, saved once), the inference pairs and the training groups."""
    import torch

    from irdistill.config import load_config
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import ranked, write_run
    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.retrieval.bm25 import bm25_run
    from irdistill.train.sources import group_source

    torch.manual_seed(0)
    ce = CrossEncoder.from_pretrained(args.model, max_query_length=args.max_query_length,
                                      max_doc_length=args.max_doc_length, device="cpu")
    model_dir = work / "model"
    ce.save_pretrained(model_dir)
    tok = ce.tokenizer

    test = load_collection("beir/scifact/test")
    qids = sorted(test.qrels)[: args.queries]
    run = bm25_run(test, args.depth, query_ids=qids)
    keys = [(q, d) for q in qids for d, _ in ranked(run.get(q, {}), args.depth)]
    if args.pairs:
        keys = keys[: args.pairs]
    docs = test.docs.get_many(sorted({d for _, d in keys}))
    q_cut = dict(zip(qids, cut_to_tokens(tok, [test.queries[q] for q in qids],
                                         args.max_query_length)))
    d_ids = sorted(docs)
    d_cut = dict(zip(d_ids, cut_to_tokens(tok, [docs[d] for d in d_ids], args.max_doc_length)))
    pairs = [{"qid": q, "docid": d, "query": q_cut[q], "doc": d_cut[d]} for q, d in keys]
    (work / "pairs.json").write_text(json.dumps(pairs))

    overrides = [
        f"model.name={model_dir}", "data.collection=beir/scifact/train", "data.depth=100",
        f"data.negatives={args.group_size - 1}", "data.sampling=random",
        f"data.max_queries={args.train_steps * args.train_batch}", "loss=infonce",
        f"model.max_query_length={args.max_query_length}",
        f"model.max_doc_length={args.max_doc_length}",
        f"train.batch_size={args.train_batch}", f"train.max_steps={args.train_steps}",
        "train.lr=3e-5", "train.warmup_ratio=0.1", "train.weight_decay=0.01",
        f"train.save_steps={args.train_steps + 1}", f"train.logging_steps={args.train_steps}",
        "train.seed=42"]
    config = load_config(overrides=overrides)
    train = load_collection(config.data.collection)
    train_qids = sorted(q for q in train.qrels if q in train.queries)
    train_run = bm25_run(train, config.data.depth, query_ids=train_qids)
    keep = sorted(train_run)[: config.data.max_queries]
    train_run = {q: train_run[q] for q in keep}
    write_run(work / "train-candidates.trec", train_run, digits=9)
    groups = group_source(config.data).groups(config, train, train_run)
    texts = train.docs.get_many(sorted({d for g in groups for d in g.doc_ids}))
    g_docs = sorted(texts)
    g_cut = dict(zip(g_docs, cut_to_tokens(tok, [texts[d] for d in g_docs],
                                           args.max_doc_length)))
    g_queries = sorted({g.query_id for g in groups})
    gq_cut = dict(zip(g_queries, cut_to_tokens(tok, [train.queries[q] for q in g_queries],
                                               args.max_query_length)))
    (work / "groups.json").write_text(json.dumps([
        {"query": gq_cut[g.query_id], "docs": [g_cut[d] for d in g.doc_ids]} for g in groups]))
    n_special = ce.encoder.template.n_special
    trainer_args = {"per_device_train_batch_size": args.train_batch,
                    "max_steps": args.train_steps, "learning_rate": 3e-5,
                    "warmup_steps": 0.1, "weight_decay": 0.01, "lr_scheduler_type": "linear",
                    "max_grad_norm": 1.0, "seed": 42, "data_seed": 42,
                    "logging_steps": args.train_steps, "dataloader_num_workers": 0}
    return {"model": str(model_dir), "pairs": str(work / "pairs.json"),
            "groups": str(work / "groups.json"), "run": str(work / "train-candidates.trec"),
            "qrels": {q: test.qrels[q] for q in qids}, "keys": keys,
            "st_max_length": args.max_query_length + args.max_doc_length + n_special + 8,
            "irdistill_overrides": overrides, "trainer_args": trainer_args,
            "n_groups": len(groups)}


# -- report ------------------------------------------------------------------------------------
def machine(device: str = "cpu") -> dict:
    import torch

    cpu = platform.processor() or "?"
    flags = ""
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                    if line.startswith("model name")), cpu)
        flags = " ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16")
                         if f in info.split())
    import sentence_transformers
    import transformers

    return {"date": dt.datetime.now().isoformat(timespec="minutes"), "cpu": cpu,
            "cores": os.cpu_count(), "flags": flags, "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "load_average": os.getloadavg(), "device": device,
            "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
            "cuda": torch.version.cuda if device.startswith("cuda") else None}


def ndcg10(keys, scores, qrels) -> float:
    from irdistill.evaluation.metrics import evaluate

    run: dict = {}
    for (q, d), s in zip(keys, scores):
        run.setdefault(q, {})[d] = s
    return evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"]


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="model (default: the bundled MiniLM)")
    parser.add_argument("--queries", type=int, default=40, help="SciFact test queries")
    parser.add_argument("--depth", type=int, default=20, help="BM25 top-k of each query")
    parser.add_argument("--pairs", type=int, default=0, help="keep only the first N pairs")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per inference batch")
    parser.add_argument("--device", default="cpu",
                        help="where both sides run: cpu (default; GPUs hidden from the workers) "
                             "or cuda / cuda:N (model, batches and the matmul peak on that GPU)")
    parser.add_argument("--max-query-length", type=int, default=32)
    parser.add_argument("--max-doc-length", type=int, default=192)
    parser.add_argument("--precisions", default="fp32,bf16,bf16-full",
                        help="inference precisions: fp32, bf16 (autocast), bf16-full (weights "
                             "in bf16, both sides)")
    parser.add_argument("--onnx", choices=["auto", "yes", "no"], default="auto",
                        help="also irdistill with ONNX Runtime (fp32)")
    parser.add_argument("--compile", choices=["auto", "yes", "no"], default="auto",
                        help="also irdistill with torch.compile in the non-fp32 precisions "
                             "(auto: when a C++ compiler is there, which inductor needs)")
    parser.add_argument("--train-precisions", default="fp32,bf16")
    parser.add_argument("--st-losses", default="mnrl,listnet",
                        help="sentence-transformers' InfoNCE: mnrl (MultipleNegativesRanking"
                             "Loss, hard negatives only) and/or listnet (ListNetLoss, one-hot "
                             "labels)")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--train-batch", type=int, default=4, help="groups per step")
    parser.add_argument("--group-size", type=int, default=8, help="1 positive + negatives")
    parser.add_argument("--warmup-steps", type=int, default=2,
                        help="steps left out of the steady-state rate")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure every row this many times, in rounds (all rows once, "
                             "then again), and report the run of median speed with the range: "
                             "on a shared machine 3 or more")
    parser.add_argument("--skip", default="", help="comma-separated: inference, training")
    parser.add_argument("--peak-size", type=int, default=0,
                        help="matrix size of the peak measurement (default 4096 fp32, 6144 bf16)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (quick checks; RSS then meaningless)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(WORKERS[json.loads(args.worker)["kind"]](
            json.loads(args.worker))), flush=True)
        return {}

    from irdistill.utils import quiet_ir_datasets

    quiet_ir_datasets()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA GPU is visible here")
        if args.onnx == "auto":  # ONNX Runtime's rows run on the CPU: not this comparison
            args.onnx = "no"
    info = machine(args.device)
    info["command"] = "python benchmarks/speed.py " + " ".join(argv if argv is not None
                                                               else sys.argv[1:])
    print(header(info))
    if info["load_average"][0] > 0.5 * (info["cores"] or 1):
        print("WARNING: the machine is busy; timings taken now are not trustworthy")
    results: dict = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                     "peak": {}, "inference": [], "training": []}
    with tempfile.TemporaryDirectory(prefix="irdistill-speed-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        data = prepare(args, work)
        print(f"prepared {len(data['keys'])} pairs ({args.queries} SciFact test queries x BM25 "
              f"top-{args.depth}) and {data['n_groups']} training groups of {args.group_size} "
              f"in {time.perf_counter() - start:.0f}s")
        common = {"model": data["model"], "st_max_length": data["st_max_length"],
                  "device": args.device}
        precisions = [p for p in args.precisions.split(",") if p]
        for dtype in sorted({"bf16" if p.startswith("bf16") else "fp32" for p in precisions}
                            | {"fp32"}):
            size = args.peak_size or (8192 if args.device != "cpu" else 4096 if dtype == "fp32"
                                      else 6144)
            r = run_worker({"kind": "peak", "dtype": dtype, "size": size, "repeats": 5,
                            "device": args.device}, args.in_process)
            results["peak"][dtype] = r.get("gflops")
            print(f"dense matmul peak {dtype}: {r.get('gflops', float('nan')):.0f} GFLOP/s")

        if "inference" not in skip:
            onnx = args.onnx == "yes"
            if args.onnx == "auto":
                try:
                    import onnxruntime  # noqa: F401
                    onnx = True
                except ImportError:
                    print("(no onnxruntime: the ONNX row is left out)")
            jobs = []
            for p in precisions:
                jobs += [("irdistill", p, "torch"), ("sentence-transformers", p, "torch")]
            if onnx:
                jobs += [("irdistill", "fp32", "onnx"), ("irdistill", "fp32", "onnx-int8")]
            if args.compile == "yes" or (args.compile == "auto" and (shutil.which("c++")
                                                                    or shutil.which("g++"))):
                jobs += [("irdistill", p, "compile") for p in precisions if p != "fp32"]

            def infer_spec(job, _round):
                side, precision, backend = job
                return {**common, "kind": "infer", "side": side, "precision": precision,
                        "backend": backend, "pairs": data["pairs"],
                        "batch_size": args.batch_size, "onnx_cache": str(work / "onnx"),
                        "label": f"{side} {precision}"
                                 + ("" if backend == "torch" else f" {backend}")}

            runs = measure_rounds(jobs, infer_spec, args)
            results["inference"] = [median_run(rows, inference_rate) for rows in runs.values()]

        if "training" not in skip:
            st_losses = [x for x in args.st_losses.split(",") if x]
            jobs = [(precision, side, st_loss)
                    for precision in [p for p in args.train_precisions.split(",") if p]
                    for side, st_loss in [("irdistill", None)] + [("sentence-transformers", x)
                                                                  for x in st_losses]]

            def train_spec(job, round_):
                precision, side, st_loss = job
                name = side + (f" ({st_loss})" if st_loss else "")
                return {**common, "kind": "train", "side": side, "precision": precision,
                        "st_loss": st_loss, "name": name,
                        "label": f"training {name} {precision}", "speed": " end to end",
                        "groups": data["groups"], "run": data["run"],
                        "out": str(work / f"train-{side}-{st_loss}-{precision}-{round_}"),
                        "irdistill_overrides": data["irdistill_overrides"]
                        + [f"train.precision={precision}"],
                        "trainer_args": data["trainer_args"], "batch": args.train_batch,
                        "group_size": args.group_size, "warmup_steps": args.warmup_steps}

            runs = measure_rounds(jobs, train_spec, args)
            results["training"] = [median_run(rows, training_rate) for rows in runs.values()]
        info["load_average_end"] = os.getloadavg()
        report = render(results, data, args)
    print()
    print(report)
    if args.json:  # per-pair scores and token counts left out
        slim = {**results, "inference": [{k: v for k, v in row.items()
                                          if k not in ("scores", "tokens")}
                                         for row in results["inference"]]}
        args.json.write_text(json.dumps(slim, indent=2))
    if args.markdown:
        args.markdown.write_text(report + "\n")
    return results


def measure_rounds(jobs: list[tuple], spec_of, args) -> dict[tuple, list[dict]]:
    """Every job's measurements: ``args.repeats`` rounds, each running every job once (in a
    fresh process unless ``--in-process``), so drift of a shared machine touches all rows.
    ``spec_of(job, round)`` is the worker's spec, with a ``label`` for the progress lines (and
    ``speed``, what the pairs/s are); its ``out`` folder, if any, is removed after the run."""
    runs: dict[tuple, list[dict]] = {job: [] for job in jobs}
    for round_ in range(max(1, args.repeats)):
        for job in jobs:
            spec = spec_of(job, round_)
            r = run_worker(spec, args.in_process)
            r.update({k: spec[k] for k in ("side", "precision", "backend", "name") if k in spec})
            runs[job].append(r)
            if "out" in spec:
                shutil.rmtree(spec["out"], ignore_errors=True)
            if "error" in r:
                print(f"{spec['label']}: FAILED\n{r['error']}")
            else:
                print(f"{spec['label']}: {r['pairs'] / r['seconds']:.1f} pairs/s"
                      + spec.get("speed", ""))
    return runs


def inference_rate(r: dict) -> float:
    return r["pairs"] / r["seconds"]


def training_rate(r: dict) -> float:
    return r.get("steady_pairs_per_second") or r["pairs"] / r["seconds"]


def median_run(rows: list[dict], rate) -> dict:
    """The run of median speed among the repeats of one row (its own figures, so they stay
    consistent), with every run's speed in ``rates``; a failed run makes the row a failure."""
    failed = [r for r in rows if "error" in r]
    if failed:
        return failed[0]
    ordered = sorted(rows, key=rate)
    row = {**ordered[(len(ordered) - 1) // 2], "rates": [rate(r) for r in rows]}
    exports = [r["export_seconds"] for r in rows if "export_seconds" in r]
    if exports:  # the ONNX export is cached: only the first run pays it
        row["export_seconds"] = max(exports)
    return row


def spread(r: dict) -> str:
    """`` (lowest-highest of N)`` when the row was measured more than once."""
    rates = r.get("rates", [])
    return f" ({min(rates):.1f}-{max(rates):.1f})" if len(rates) > 1 else ""


def header(info: dict) -> str:
    gpu = (f"GPU: {info['gpu']} (CUDA {info['cuda']}), both sides on {info['device']}; "
           if info.get("gpu") else "")
    return (f"# irdistill speed benchmark, {info['date']}\n"
            f"{gpu}machine: {info['cpu']} ({info['cores']} cores; "
            f"{info['flags'] or 'no AVX-512'}), "
            f"torch {info['torch']} ({info['threads']} threads), transformers "
            f"{info['transformers']}, sentence-transformers {info['sentence_transformers']}, "
            f"Python {info['python']}; load average {info['load_average'][0]:.2f}\n"
            f"command: {info['command'].strip()}")


def render(results: dict, data: dict, args) -> str:
    import numpy as np

    info = results["machine"]
    out = [header(info)]
    loads = [info["load_average"][0], info.get("load_average_end", (0,))[0]]
    if loads[0] > 0.5 * (info["cores"] or 1):  # at the end the load is the benchmark's own
        out.append(f"WARNING: the machine was busy (load average {loads[0]:.2f} at the start, "
                   f"{loads[1]:.2f} at the end): these timings are not trustworthy")
    if args.repeats > 1:
        out.append(f"Every row measured {args.repeats} times, in rounds; each row shows its run "
                   "of median speed (steady speed for training), with the lowest-highest speed "
                   "of its runs in brackets; ratios compare median runs.")
    out.append("")
    peak = results["peak"]
    inf = [r for r in results["inference"] if "error" not in r]
    if inf:
        reference = next((r for r in inf if r["side"] == "irdistill" and r["precision"] == "fp32"
                          and r["backend"] == "torch"), inf[0])
        rows = []
        for r in inf:
            int8 = r["backend"] == "onnx-int8"
            dtype = "int8" if int8 else "bf16" if r["precision"].startswith("bf16") else "fp32"
            gflops = r["flops"] / r["seconds"] / 1e9
            name = r["side"] + {"onnx": " (ONNX Runtime)", "compile": " (torch.compile)",
                                "onnx-int8": " (ONNX Runtime, int8 weights)"}.get(
                r["backend"], "")
            diff = np.abs(np.array(r["scores"]) - np.array(reference["scores"])).max()
            rows.append([name, "int8" if int8 else r["precision"],
                         f"{r['pairs'] / r['seconds']:.1f}{spread(r)}",
                         f"{np.mean(r['tokens']):.1f}", f"{gflops:.1f}",
                         f"{100 * gflops / peak[dtype]:.0f}%" if peak.get(dtype) else "-",
                         f"{r['rss_mb']:.0f}", f"{diff:.1e}",
                         f"{ndcg10(data['keys'], r['scores'], data['qrels']):.4f}"])
        budget = next((r["max_tokens"] for r in inf if r.get("max_tokens")), None)
        out.append(f"## Inference: {inf[0]['pairs']} pairs (SciFact test, {args.queries} queries "
                   f"x BM25 top-{args.depth}), batch size {args.batch_size} (irdistill: at most, "
                   f"batches cut to its default budget of {budget} padded tokens), queries <= "
                   f"{args.max_query_length} and documents <= {args.max_doc_length} tokens, "
                   f"{inf[0]['threads']} threads")
        out.append("")
        out.append(table(["system", "precision", "pairs/s", "tokens/pair", "GFLOP/s",
                          "of peak", "peak RSS MB", "max |score - fp32|", "nDCG@10"], rows))
        out.append("")
        ratios = []
        for precision in dict.fromkeys(r["precision"] for r in inf):
            mine = [r for r in inf if r["side"] == "irdistill" and r["precision"] == precision
                    and r["backend"] == "torch"]
            theirs = [r for r in inf if r["side"] == "sentence-transformers"
                      and r["precision"] == precision]
            if mine and theirs:
                ratios.append(f"{precision}: {theirs[0]['seconds'] / mine[0]['seconds']:.2f}x")
        best = lambda side: min((r for r in inf if r["side"] == side),  # noqa: E731
                                key=lambda r: r["seconds"] / r["pairs"], default=None)
        mine, theirs = best("irdistill"), best("sentence-transformers")
        if mine and theirs:
            ratios.append(f"fastest irdistill ({mine['precision']}"
                          f"{'' if mine['backend'] == 'torch' else ' ' + mine['backend']}) vs fastest "
                          f"sentence-transformers ({theirs['precision']}): "
                          f"{(theirs['seconds'] / theirs['pairs']) / (mine['seconds'] / mine['pairs']):.2f}x")
        default = next((r for r in inf if r["side"] == "sentence-transformers"
                        and r["precision"] == "fp32"), None)
        if mine and default:  # sentence-transformers runs fp32 unless told otherwise
            ratios.append("fastest irdistill vs sentence-transformers as it comes (fp32): "
                          f"{(default['seconds'] / default['pairs']) / (mine['seconds'] / mine['pairs']):.2f}x")
        out.append("irdistill / sentence-transformers, pairs per second: "
                   + "; ".join(ratios) + " (goal: 2x)")
        out.append("dense matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s"
                                                     for k, v in peak.items() if v)
                   + "; GFLOP/s counts model FLOPs of the real tokens (padding not counted) "
                     "over the whole scoring call, tokenisation included (goal: 70% of peak)")
        onnx = next((r for r in inf if r["backend"] == "onnx"), None)
        if onnx and "export_seconds" in onnx:
            out.append(f"ONNX export (once per model, cached): {onnx['export_seconds']:.0f}s, "
                       "not in the rate")
        for r in inf:
            if "compile_seconds" in r:
                out.append(f"torch.compile ({r['precision']}): compilation and a first full pass "
                           f"took {r['compile_seconds']:.0f}s, not in the rate (paid once per "
                           "process: worth it for long re-rankings only)")
        out.append("")
    train = [r for r in results["training"] if "error" not in r]
    if train:
        rows = []
        for r in train:
            steady = r.get("steady_pairs_per_second")
            rows.append([r["name"], r["precision"], str(r["steps"]),
                         f"{r['pairs'] / r['seconds']:.1f}",
                         f"{steady:.1f}{spread(r)}" if steady else "-",
                         f"{r['rss_mb']:.0f}"])
        out.append(f"## Training: InfoNCE, groups of {args.group_size} (1 positive + "
                   f"{args.group_size - 1} BM25 negatives, SciFact train), {args.train_batch} "
                   f"groups per step, {args.train_steps} steps, AdamW lr 3e-5, same groups "
                   "both sides")
        out.append("")
        out.append(table(["system", "precision", "steps", "pairs/s end to end",
                          f"pairs/s after {args.warmup_steps} steps", "peak RSS MB"], rows))
        out.append("")
        ratios = []
        for precision in dict.fromkeys(r["precision"] for r in train):
            a = next((r for r in train if r["precision"] == precision
                      and r["side"] == "irdistill"), None)
            for b in (r for r in train if r["precision"] == precision
                      and r["side"] == "sentence-transformers"):
                if a is None:
                    continue
                text = (f"{precision} vs {b['name'].split(' ', 1)[-1]}: "
                        f"{(a['pairs'] / a['seconds']) / (b['pairs'] / b['seconds']):.2f}x")
                if a.get("steady_pairs_per_second") and b.get("steady_pairs_per_second"):
                    text += (f" end to end, {a['steady_pairs_per_second'] / b['steady_pairs_per_second']:.2f}x"
                             " steady")
                ratios.append(text)
        out.append("irdistill / sentence-transformers, training pairs per second: "
                   + "; ".join(ratios) + " (goal: 1.3x)")
        out.append("End to end = model load, data preparation (irdistill: tokenising every text "
                   "once), training and saving the model; steady = the rate between optimizer "
                   "steps, data loading and collation (sentence-transformers: tokenising every "
                   "batch) included.")
    failed = [r for r in results["inference"] + results["training"] if "error" in r]
    if failed:
        out.append("")
        out.append(f"{len(failed)} measurement(s) failed: "
                   + ", ".join(f"{r['side']} {r['precision']}" for r in failed))
    return "\n".join(out)


if __name__ == "__main__":
    main()
