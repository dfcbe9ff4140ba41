#!/usr/bin/env python
"""Where a training step's time goes: ``irdistill train`` profiled with torch.profiler.

Trains the demo's recipe (MiniLM, InfoNCE over groups of 1 + 3 BM25 negatives, 8 groups a
step, documents cut to 128 tokens) on SciFact train for ``--warmup + --steps`` steps and
profiles the last ``--steps`` of them, whole steps (forward, backward, optimizer, data), with
torch.profiler on the CPU. Prints the operators by self time, and the step's time split into
families: matrix products, attention, element-wise and normalisation, dropout, optimizer,
the rest; and the matrix products' rate against this machine's dense matmul peak.

    eval "$(../shared/data/seed-irds.sh)"
    python benchmarks/profile_step.py --precision bf16 --steps 5
    python benchmarks/profile_step.py --precision fp32 --steps 5
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: operator name (aten::...) -> family; the first matching prefix wins
FAMILIES = [
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
                         "aten::matmul", "aten::linear", "aten::_addmm_activation")),
    ("attention", ("aten::_scaled_dot_product", "aten::scaled_dot_product",
                   "aten::_softmax", "aten::softmax", "aten::_softmax_backward")),
    ("dropout", ("aten::bernoulli", "aten::dropout", "aten::native_dropout",
                 "aten::random", "aten::uniform", "aten::lt", "aten::ge", "irdistill")),
    ("masks and fills", ("aten::masked_fill", "aten::fill", "aten::zero", "aten::where")),
    ("normalisation, GELU, element-wise", ("aten::native_layer_norm", "aten::layer_norm",
                                           "aten::native_layer_norm_backward",
                                           "aten::gelu", "aten::gelu_backward", "aten::add",
                                           "aten::mul", "aten::div", "aten::sum", "aten::tanh",
                                           "aten::embedding", "aten::embedding_dense_backward",
                                           "aten::abs")),
    ("copies and casts", ("aten::copy", "aten::to", "aten::_to_copy", "aten::clone",
                          "aten::contiguous")),
    ("optimizer", ("aten::_foreach", "Optimizer", "aten::addcdiv", "aten::addcmul",
                   "aten::lerp", "aten::sqrt", "aten::clamp")),
]


def family(name: str) -> str:
    for label, prefixes in FAMILIES:
        if any(name == p or name.startswith(p + "_") or name.startswith(p + ".")
               or (not p.startswith("aten::") and name.startswith(p)) for p in prefixes):
            return label
    return "the rest"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=5, help="profiled steps (5)")
    parser.add_argument("--warmup", type=int, default=3, help="steps before profiling (3)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rows", type=int, default=15, help="operators listed (15)")
    args = parser.parse_args(argv)

    import torch
    from transformers import TrainerCallback

    from irdistill.config import load_config
    from irdistill.train import engine
    from irdistill.train.engine import train

    class Profile(TrainerCallback):
        def __init__(self):
            self.profiler = None
            self.started = None
            self.seconds = None

        def on_step_begin(self, targs, state, control, **kwargs):
            if state.global_step == args.warmup:
                self.profiler = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU])
                self.profiler.__enter__()
                self.started = time.perf_counter()

        def on_step_end(self, targs, state, control, **kwargs):
            if self.profiler is not None and state.global_step == args.warmup + args.steps:
                self.seconds = time.perf_counter() - self.started
                self.profiler.__exit__(None, None, None)

    profile = Profile()
    engine.tracker_callbacks = lambda *a, **k: [profile]  # the profiler rides as a tracker
    config = load_config(base={
        "data": {"collection": "beir/scifact/train", "depth": 100, "negatives": 3,
                 "sampling": "random"},
        "model": {"name": "minilm", "max_query_length": 32, "max_doc_length": 128},
        "loss": "infonce",
        "train": {"max_steps": args.warmup + args.steps, "batch_size": args.batch_size,
                  "lr": 1e-4, "head_lr": 1e-3, "warmup_ratio": 0.05,
                  "precision": args.precision, "save_steps": 10_000, "logging_steps": 1,
                  "seed": 42}})
    with tempfile.TemporaryDirectory(prefix="irdistill-profile-") as tmp:
        train(config, Path(tmp) / "run", show_progress=False)
    events = profile.profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6  # seconds, every thread's
    print(f"\n{args.steps} steps of {args.batch_size} groups of 4 in {args.precision}: "
          f"{profile.seconds / args.steps:.3f} s a step (wall); profiled self time "
          f"{total / args.steps:.3f} s a step over {torch.get_num_threads()} threads")
    rows = sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.rows]
    print("\n| operator | family | self s a step | share | calls a step |\n|---|---|---:|---:|---:|")
    for e in rows:
        s = e.self_cpu_time_total / 1e6 / args.steps
        print(f"| {e.key} | {family(e.key)} | {s:.4f} | {100 * s * args.steps / total:.1f}% | "
              f"{e.count / args.steps:.0f} |")
    shares: dict[str, float] = collections.Counter()
    for e in events:
        shares[family(e.key)] += e.self_cpu_time_total / 1e6
    print("\n| family | self s a step | share |\n|---|---:|---:|")
    for label, seconds in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {seconds / args.steps:.4f} | {100 * seconds / total:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
