"""Knowledge distillation from a cross-encoder ensemble vs contrastive training, on SciFact.

The miniature of arXiv 2507.08336 (KD vs contrastive training of re-rankers) and of Hofstaetter
et al.'s ensemble (arXiv 2010.02666), offline on BEIR SciFact:

1. teachers: the 6-layer MiniLM trained on SciFact train (labels, BM25 negatives), one per
   ``--teachers`` entry ``objective:seed`` (different objectives or seeds);
2. ensemble: the teachers score the BM25 top-``--train-depth`` of ``--train-queries`` training
   queries plus their judged positives; their per-query normalised scores are averaged
   (:func:`irdistill.teachers.ensemble.build_ensemble`);
3. students: the MiniLM cut to ``--student-layers`` layers, trained three ways with one budget
   (steps, groups of 1 + ``--negatives``, lengths, lr, precision, seed) on the same queries and
   candidates: ``infonce`` on the labels (contrastive), ``margin_mse`` and ``kl`` on the
   ensemble's scores (distillation);
4. every system re-ranks the BM25 top-``--depth`` of SciFact test: BM25, each teacher, the
   ensemble (the mean of the teachers' normalised scores of the same candidates), the untrained
   student and each student. nDCG@10 and RR@10.

A thin wrapper over the grid runner: the teachers and the students are two grids (one cell per
teacher, one per student objective), trained and evaluated by
:func:`irdistill.experiments.grid.run_grid`; between them the script builds the ensemble's
targets, and at the end it prints the table. Outputs under ``--output``: ``teachers/`` and
``students/`` (the grids' folders: ``irdistill compare OUTPUT/students --baseline "student
infonce (contrastive)"`` tests the students), ``candidates/`` (the BM25 run of training),
``targets-train/`` (each teacher's scores in ``teachers/`` and the ensemble's run, with
provenance), ``results.json`` and ``table.md``. Finished trainings, scorings and evaluations are
reused, so the command can be run again after a stop.

Full budget, about 25-30 minutes on a 2-core CPU with bf16::

    python scripts/kd_vs_contrastive.py --output runs/kd-vs-contrastive

Toy scale::

    python scripts/kd_vs_contrastive.py --model TINY --student-layers 1 --teacher-steps 2 \\
        --student-steps 1 --batch-size 2 --teacher-queries 8 --train-queries 6 --train-depth 4 \\
        --depth 5 --precision fp32 --output /tmp/kd
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from irdistill.data.collection import load_collection
from irdistill.data.trec import read_run, write_run
from irdistill.errors import IrdistillError
from irdistill.evaluation.metrics import evaluate
from irdistill.experiments.grid import Grid, grid_from_dict, run_grid
from irdistill.io import atomic_write, write_json
from irdistill.losses import LOSSES
from irdistill.retrieval.bm25 import bm25_run
from irdistill.teachers.ensemble import (NORMALISATIONS, ScoringSettings, Teacher, build_ensemble,
                                         combine)
from irdistill.utils import setup_logging

log = logging.getLogger("kd_vs_contrastive")

MEASURES = ("nDCG@10", "RR@10")
STUDENTS = ("infonce", "margin_mse", "kl")
STUDENT_MODES = {"infonce": "labels", "margin_mse": "teacher_scores", "kl": "teacher_scores"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=Path("runs/kd-vs-contrastive"),
                   help="output folder (default: runs/kd-vs-contrastive)")
    p.add_argument("--model", default="minilm", help="teacher model and student base (minilm)")
    p.add_argument("--teachers", nargs="+", default=["infonce:42", "bce:43"],
                   metavar="LOSS:SEED", help="one teacher per objective:seed "
                                             "(default: infonce:42 bce:43)")
    p.add_argument("--student-layers", type=int, default=2,
                   help="layers of the student, cut from the model (2)")
    p.add_argument("--students", nargs="+", default=list(STUDENTS), choices=STUDENTS,
                   help="student objectives (default: infonce margin_mse kl)")
    p.add_argument("--normalisation", default="zscore", choices=NORMALISATIONS,
                   help="per teacher and query before the ensemble's mean (zscore: the teachers' "
                        "objectives give different scales)")
    p.add_argument("--train", default="beir/scifact/train", help="training collection")
    p.add_argument("--test", default="beir/scifact/test", help="test collection")
    p.add_argument("--teacher-steps", type=int, default=40, help="steps per teacher (40)")
    p.add_argument("--student-steps", type=int, default=40, help="steps per student (40)")
    p.add_argument("--batch-size", type=int, default=8, help="groups per step (8)")
    p.add_argument("--negatives", type=int, default=3, help="negatives per group (3)")
    p.add_argument("--max-doc-length", type=int, default=128, help="document tokens (128)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (1e-4)")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"),
                   help="training, scoring and re-ranking precision (bf16)")
    p.add_argument("--seed", type=int, default=42, help="seed of the students (42)")
    p.add_argument("--train-queries", type=int, default=320,
                   help="training queries of the students and the ensemble's targets: the first "
                        "N judged ones (320 = 40 steps x 8 groups, one pass)")
    p.add_argument("--teacher-queries", type=int, default=None,
                   help="train the teachers on the first N training queries only (toy runs)")
    p.add_argument("--train-depth", type=int, default=16,
                   help="BM25 candidates per training query scored by the teachers (16)")
    p.add_argument("--depth", type=int, default=20, help="BM25 documents re-ranked on test (20)")
    return p.parse_args(argv)


def parse_teachers(specs: list[str]) -> list[tuple[str, int]]:
    teachers = []
    for spec in specs:
        loss, _, seed = spec.partition(":")
        if loss not in LOSSES or not seed.lstrip("-").isdigit():
            raise IrdistillError(f"teacher '{spec}' is not LOSS:SEED with a known loss",
                                 hint=f"e.g. infonce:42; losses: {', '.join(sorted(LOSSES))}")
        teachers.append((loss, int(seed)))
    if len(set(teachers)) != len(teachers):
        raise IrdistillError("the same teacher is given twice")
    return teachers


def common(args: argparse.Namespace) -> dict:
    return {"model": {"name": args.model, "max_query_length": 32,
                      "max_doc_length": args.max_doc_length},
            "train": {"batch_size": args.batch_size, "lr": args.lr, "warmup_ratio": 0.1,
                      "precision": args.precision, "save_steps": 1000, "logging_steps": 5}}


def suite(args: argparse.Namespace) -> dict:
    """Both grids' one suite: the test collection's BM25 top-``depth`` re-ranked."""
    return {"kd-test": {"datasets": [{"id": args.test, "name": Path(args.test).name}],
                        "measures": list(MEASURES), "depth": args.depth}}


def grid(args, name: str, base: dict, axes: dict, untrained: bool, output: Path) -> Grid:
    definitions = suite(args)
    return grid_from_dict({"name": name, "base": base, "axes": axes, "suites": list(definitions),
                           "suite_definitions": definitions,
                           "evaluation": {"untrained": untrained, "batch_size": 32},
                           "baseline": "BM25"}, output=output)


def teacher_grid(args, teachers: list[tuple[str, int]]) -> Grid:
    """One cell per teacher: the model trained on the labels with its objective and seed."""
    base = common(args)
    base["data"] = {"collection": args.train, "mode": "labels", "depth": 100,
                    "negatives": args.negatives, "sampling": "random",
                    "max_queries": args.teacher_queries}
    base["train"]["max_steps"] = args.teacher_steps
    axes = {"teacher": {f"teacher-{loss}-s{seed}": {"loss": loss, "train": {"seed": seed}}
                        for loss, seed in teachers}}
    return grid(args, "kd-teachers", base, axes, False, args.output / "teachers")


def student_grid(args, candidates: Path, ensemble: Path) -> Grid:
    """One budget for every student: only the objective and where targets come from differ."""
    base = common(args)
    base["model"]["num_hidden_layers"] = args.student_layers
    base["data"] = {"collection": args.train, "negatives": args.negatives, "sampling": "random"}
    base["train"].update(max_steps=args.student_steps, seed=args.seed)
    values = {}
    for loss in args.students:
        if STUDENT_MODES[loss] == "labels":  # positive from the qrels, negatives the candidates
            data = {"mode": "labels", "run": str(candidates), "depth": args.train_depth}
            label = f"student {loss} (contrastive)"
        else:  # positive + negatives among the same candidates, targets the ensemble's scores
            data = {"mode": STUDENT_MODES[loss], "teacher_run": str(ensemble),
                    "depth": args.train_depth + 100, "force_positive": True}
            label = f"student {loss} (KD from ensemble)"
        values[label] = {"loss": loss, "data": data}
    return grid(args, "kd-students", base, {"student": values}, True, args.output / "students")


def markdown(rows: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [f"SciFact test, re-ranking the BM25 top-{args.depth} ({rows['BM25']['queries']} "
             f"queries). Teachers: {args.model}, {args.teacher_steps} steps each; ensemble: mean "
             f"of {args.normalisation}-normalised scores on the BM25 top-{args.train_depth} + "
             f"judged positives of {args.train_queries} training queries. Students: "
             f"{args.student_layers} layers, {args.student_steps} steps x {args.batch_size} "
             f"groups of 1+{args.negatives}, doc length {args.max_doc_length}, lr {args.lr:g}, "
             f"{args.precision}, seed {args.seed}.",
             "", "| system | " + " | ".join(MEASURES) + " | train s |",
             "|---|" + "---:|" * (len(MEASURES) + 1)]
    for name, row in rows.items():
        secs = f"{row['train_seconds']:.0f}" if row.get("train_seconds") is not None else "-"
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in MEASURES)
                     + f" | {secs} |")
    return "\n".join(lines) + "\n"


def _train_seconds(folder: Path) -> float | None:
    path = folder / "train_log.jsonl"
    if not path.exists():
        return None
    for line in reversed(path.read_text().splitlines()):
        entry = json.loads(line)
        if "train_runtime" in entry:
            return float(entry["train_runtime"])
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    teachers_spec = parse_teachers(args.teachers)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    # 1. teachers: a grid, evaluated on the test collection's BM25 top-depth
    teachers = teacher_grid(args, teachers_spec)
    run_grid(teachers)
    # 2. the ensemble's targets on the BM25 top-train-depth (+ judged positives) of the first N
    # judged training queries
    train_coll = load_collection(args.train)
    train_qids = sorted(q for q in train_coll.require_qrels() if q in train_coll.queries)
    train_qids = train_qids[: args.train_queries]
    candidates = out / "candidates" / f"train-bm25-top{args.train_depth}-q{len(train_qids)}.trec"
    if not candidates.exists():
        write_run(candidates, bm25_run(train_coll, k=args.train_depth, query_ids=train_qids),
                  tag="bm25")
    models = {cell.system: teachers.cell_dir(cell) / "model" for cell in teachers.cells()}
    log.info("ensemble: scoring %d training queries", len(train_qids))
    targets = build_ensemble([Teacher(name, str(path)) for name, path in models.items()],
                             train_coll, read_run(candidates), out / "targets-train",
                             depth=args.train_depth, normalisation=args.normalisation,
                             name=f"ensemble-{args.normalisation}", add_positives=True,
                             source=str(candidates),
                             settings=ScoringSettings(batch_size=32, precision=args.precision))
    # 3. students: a grid (with the untrained student), on the same test candidates
    students = student_grid(args, candidates, targets.path)
    run_grid(students)

    rows: dict[str, dict] = {}
    test_runs: dict[str, dict] = {}
    for g in (teachers, students):
        manifest = json.loads((g.output / "experiment.json").read_text())
        seconds = {c["system"]: _train_seconds(g.output / c["folder"]) for c in manifest["cells"]}
        for entry in manifest["evaluations"]:
            result = json.loads((g.output / entry["file"]).read_text())
            rows[entry["system"]] = {**result["variants"][""]["aggregate"],
                                     "queries": len(result["variants"][""]["per_query"]),
                                     "train_seconds": seconds.get(entry["system"])}
            if g is teachers and entry["kind"] == "trained":
                test_runs[entry["system"]] = read_run(
                    g.output / (entry["file"].removesuffix(".json") + ".trec"))
    # the ensemble on test: the mean of the teachers' normalised scores of the same candidates
    test = load_collection(args.test)
    ensemble = combine(test_runs, args.normalisation).run
    named = {}
    for name, row in rows.items():  # BM25 and the teachers, the ensemble, then the students
        named[name] = row
        if name == list(test_runs)[-1]:
            named[f"ensemble ({args.normalisation})"] = {
                **evaluate(ensemble, test.qrels, MEASURES).aggregate, "queries": len(ensemble),
                "train_seconds": None}
    write_json(out / "results.json", named)
    table = markdown(named, args)
    with atomic_write(out / "table.md") as handle:
        handle.write(table)
    print(table)
    log.info("finished in %.0f s", time.time() - started)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except IrdistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
