#!/usr/bin/env python
"""Time of one training step of the bundled MiniLM with PyTorch's dropout and with
``train.fast_dropout`` (irdistill.models.dropout), per precision, and with dropout switched off
as the floor. A step is what the engine does: the batch's forward pass in CPU-sized pieces
(``forward_in_pieces`` with the default budget), one backward, an AdamW step.

    python benchmarks/dropout_step.py                       # 32 pairs of 216 tokens, ~3 min
    python benchmarks/dropout_step.py --pairs 16 --tokens 128 --steps 2

Token ids are random (the time does not depend on them); rows are full length. Figures are the
mean over ``--steps`` steps after two warm-up steps, per part of the step.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch


def step_seconds(model, inputs, budget, precision: str, steps: int) -> tuple[float, float, float]:
    from irdistill.train.engine import forward_in_pieces

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    times = []
    for i in range(2 + steps):
        start = time.perf_counter()
        with autocast:
            loss = forward_in_pieces(model, inputs, budget).float().view(-1, 8).logsumexp(-1).mean()
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        if i >= 2:
            times.append((forward - start, backward - forward, time.perf_counter() - backward))
    return tuple(sum(t[k] for t in times) / len(times) for k in range(3))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", help="model (default: the bundled MiniLM)")
    parser.add_argument("--pairs", type=int, default=32, help="pairs per step (multiple of 8)")
    parser.add_argument("--tokens", type=int, default=216, help="tokens per pair")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per row")
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args(argv)
    if args.pairs % 8 or args.pairs <= 0 or args.tokens <= 0 or args.steps <= 0:
        parser.error("--pairs must be a positive multiple of 8; --tokens, --steps positive")

    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.models.dropout import cpu_dropout
    from irdistill.train.engine import forward_budget

    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(1000, 20000, (args.pairs, args.tokens),
                                         generator=generator),
              "attention_mask": torch.ones(args.pairs, args.tokens, dtype=torch.long)}
    budget = forward_budget(None, "cpu")
    print(f"{args.pairs} pairs of {args.tokens} tokens, forward in pieces of {budget} tokens, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| precision | dropout | forward s | backward s | optimizer s | step s | pairs/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for precision in [p for p in args.precisions.split(",") if p]:
        for kind in ("torch", "fast", "off"):
            torch.manual_seed(0)
            model = CrossEncoder.from_pretrained(args.model, device="cpu").model
            model.train(kind != "off")  # eval mode: no dropout anywhere, the floor
            with cpu_dropout(model, enabled=kind == "fast"):
                f, b, o = step_seconds(model, inputs, budget, precision, args.steps)
            print(f"| {precision} | {kind} | {f:.2f} | {b:.2f} | {o:.3f} | {f + b + o:.2f} | "
                  f"{args.pairs / (f + b + o):.1f} |", flush=True)


if __name__ == "__main__":
    main()
