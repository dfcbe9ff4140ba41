#!/usr/bin/env python
"""Time of scoring and of a training step of the bundled MiniLM with the full last layer and with
the last layer computed for the [CLS] row only (``model.cls_only_last_layer``,
irdistill.models.cls_only), and the largest score difference between the two.

    python benchmarks/cls_only.py                           # 32 pairs of 160 tokens, ~2 min
    python benchmarks/cls_only.py --pairs 16 --tokens 96 --repeats 2

Token ids are random (the time does not depend on them); rows are full length. The two variants
are timed in turn, ``--repeats`` rounds after a warm-up round, and each figure is the median of
its rounds; bf16 autocast where the CPU has it natively (else fp32), on all the process's
threads.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from irdistill.models import cls_only
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.dropout import cpu_dropout
from irdistill.models.runtime import autocast_context, resolve_precision


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=32, help="pairs per batch (32)")
    parser.add_argument("--tokens", type=int, default=160, help="tokens per pair (160)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (5)")
    args = parser.parse_args(argv)
    ce = CrossEncoder.from_pretrained("minilm", device="cpu", cls_only_last_layer=False)
    model = ce.model
    precision = resolve_precision("cpu", "auto")
    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(1000, 20000, (args.pairs, args.tokens),
                                         generator=generator),
              "attention_mask": torch.ones(args.pairs, args.tokens, dtype=torch.long)}

    def score():
        model.eval()
        with torch.inference_mode(), autocast_context(torch.device("cpu"), precision):
            return model(**inputs).logits[:, 0].float()

    def train_step():  # as the engine trains on a CPU: the cheap dropout masks of fast_dropout
        model.train()
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                    else contextlib.nullcontext())
        with cpu_dropout(model), autocast:
            loss = model(**inputs).logits[:, 0].float().view(-1, 8).logsumexp(-1).mean()
        loss.backward()
        model.zero_grad()

    # the two variants interleaved, repeat after repeat, so that a slower stretch of the machine
    # falls on both; each figure is a median
    full_scores = score()
    times: dict[str, list[tuple[float, float]]] = {"full last layer": [],
                                                   "[CLS]-only last layer": []}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name in times:
            if name.startswith("[CLS]"):
                assert cls_only.enable(model)
            else:
                cls_only.disable(model)
            timing = (timed(score, 1), timed(train_step, 1))
            if repeat:
                times[name].append(timing)
    rows = {name: (statistics.median(t[0] for t in values),
                   statistics.median(t[1] for t in values)) for name, values in times.items()}
    assert cls_only.enable(model)
    difference = float((score() - full_scores).abs().max())
    print(f"MiniLM-L6, {args.pairs} pairs x {args.tokens} tokens, {precision or 'fp32'}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats}")
    print("| last layer | scoring s | pairs/s | training step s | vs full |")
    print("|---|---:|---:|---:|---:|")
    base = rows["full last layer"]
    for name, (s, t) in rows.items():
        print(f"| {name} | {s:.3f} | {args.pairs / s:.0f} | {t:.3f} | "
              f"{base[0] / s:.2f}x / {base[1] / t:.2f}x |")
    print(f"largest score difference: {difference:.2e}")


if __name__ == "__main__":
    main()
