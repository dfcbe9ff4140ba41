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
   ensemble (the mean of the teachers' normalised scores), the untrained student and each
   student. nDCG@10 and RR@10.

Outputs under ``--output``: ``candidates/`` (BM25 runs), ``teachers/<objective>-s<seed>-<hash>/``
(trainings), ``targets-train/`` and ``targets-test/`` (each teacher's scores in ``teachers/`` and
the ensemble's run, with provenance), ``students/<loss>-<hash>/`` (trainings with their test
runs), ``results.json`` (updated row by row) and ``table.md``. Finished trainings, scorings and
re-rankings are reused, and interrupted scoring resumes, so the command can be run again after
a stop.

Full budget, about 25-30 minutes on a 2-core CPU with bf16::

    python scripts/kd_vs_contrastive.py --output runs/kd-vs-contrastive

Toy scale::

    python scripts/kd_vs_contrastive.py --model TINY --student-layers 1 --teacher-steps 2 \\
        --student-steps 1 --batch-size 2 --teacher-queries 8 --train-queries 6 --train-depth 4 \\
        --eval-queries 5 --depth 5 --precision fp32 --output /tmp/kd
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

from irdistill.config import config_hash, load_config
from irdistill.data.collection import load_collection
from irdistill.data.trec import ranked, read_run, write_run
from irdistill.errors import IrdistillError
from irdistill.evaluation.metrics import evaluate
from irdistill.io import atomic_write, write_json
from irdistill.losses import LOSSES
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.rerank.scoring import rerank_run
from irdistill.retrieval.bm25 import bm25_run
from irdistill.teachers.ensemble import NORMALISATIONS, ScoringSettings, Teacher, build_ensemble
from irdistill.train.engine import train
from irdistill.utils import seed_everything, setup_logging

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
    p.add_argument("--eval-queries", type=int, default=None,
                   help="evaluate on the first N test queries only (toy runs)")
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


def teacher_config(args, loss: str, seed: int):
    base = common(args)
    base["data"] = {"collection": args.train, "mode": "labels", "depth": 100,
                    "negatives": args.negatives, "sampling": "random",
                    "max_queries": args.teacher_queries}
    base["loss"] = loss
    base["train"].update(max_steps=args.teacher_steps, seed=seed)
    return load_config(base=base)


def student_config(args, loss: str, candidates: Path, ensemble: Path):
    """One budget for every student: only the objective and where targets come from differ."""
    base = common(args)
    base["model"]["num_hidden_layers"] = args.student_layers
    mode = STUDENT_MODES[loss]
    data = {"collection": args.train, "mode": mode, "negatives": args.negatives,
            "sampling": "random"}
    if mode == "labels":  # positive from the qrels, negatives from the same BM25 candidates
        data.update(run=str(candidates), depth=args.train_depth)
    else:  # positive + negatives among the same candidates, targets the ensemble's scores
        data.update(teacher_run=str(ensemble), depth=args.train_depth + 100,
                    force_positive=True)
    base["data"] = data
    base["loss"] = loss
    base["train"].update(max_steps=args.student_steps, seed=args.seed)
    return load_config(base=base)


def markdown(rows: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [f"SciFact test, re-ranking the BM25 top-{args.depth} ({rows['bm25']['queries']} "
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

    # candidates: BM25 top-train-depth of the first N judged training queries; BM25 on test
    train_coll = load_collection(args.train)
    train_qids = sorted(q for q in train_coll.require_qrels() if q in train_coll.queries)
    train_qids = train_qids[: args.train_queries]
    candidates = out / "candidates" / f"train-bm25-top{args.train_depth}-q{len(train_qids)}.trec"
    if not candidates.exists():
        write_run(candidates, bm25_run(train_coll, k=args.train_depth, query_ids=train_qids),
                  tag="bm25")
    train_run = read_run(candidates)
    test = load_collection(args.test)
    qids = sorted(q for q in test.require_qrels() if q in test.queries)[: args.eval_queries]
    qrels = {q: test.qrels[q] for q in qids}
    bm25 = bm25_run(test, k=max(100, args.depth), query_ids=qids)
    test_candidates = {q: dict(ranked(docs, args.depth)) for q, docs in bm25.items()}
    tag = f"test-d{args.depth}-q{args.eval_queries or 'all'}"

    rows: dict[str, dict] = {}

    def score(name: str, run, seconds=None):
        rows[name] = {**evaluate(run, qrels, MEASURES).aggregate, "queries": len(qids),
                      "train_seconds": seconds}
        write_json(out / "results.json", rows)
        log.info("%s: %s", name, ", ".join(f"{m} {rows[name][m]:.4f}" for m in MEASURES))

    score("bm25", bm25)

    # 1. teachers
    teachers: list[Teacher] = []
    seconds: dict[str, float | None] = {}
    for loss, seed in teachers_spec:
        config = teacher_config(args, loss, seed)
        name = f"{loss}-s{seed}"
        folder = out / "teachers" / f"{name}-{config_hash(config)}"
        log.info("teacher %s: training in %s", name, folder)
        model_dir = train(config, folder)
        teachers.append(Teacher(f"teacher-{name}", str(model_dir)))
        seconds[f"teacher-{name}"] = _train_seconds(folder)

    settings = ScoringSettings(batch_size=32, precision=args.precision)
    # 2. the ensemble's targets on the training candidates (+ judged positives)
    log.info("ensemble: scoring %d training queries", len(train_run))
    targets = build_ensemble(teachers, train_coll, train_run, out / "targets-train",
                             depth=args.train_depth, normalisation=args.normalisation,
                             name=f"ensemble-{args.normalisation}", add_positives=True,
                             source=str(candidates), settings=settings)
    # 3. teachers and ensemble on test (each teacher's test run is stored, the ensemble reuses it)
    test_ensemble = build_ensemble(teachers, test, test_candidates, out / "targets-test",
                                   depth=args.depth, normalisation=args.normalisation,
                                   name=f"ensemble-{args.normalisation}-{tag}",
                                   source=f"bm25 top-{args.depth}", settings=settings)
    for teacher in teachers:
        score(teacher.name, read_run(test_ensemble.teacher_runs[teacher.name]),
              seconds[teacher.name])
    score(f"ensemble ({args.normalisation})", test_ensemble.run)

    # 4. students: the untrained base, then each objective with the same budget
    def rerank(model_path: str, run_path: Path, layers: int | None = None):
        if run_path.exists():
            return read_run(run_path)
        seed_everything(args.seed)  # the untrained model's new head
        model = CrossEncoder.from_pretrained(model_path, max_query_length=32,
                                             max_doc_length=args.max_doc_length,
                                             num_hidden_layers=layers, precision=args.precision)
        run = rerank_run(model, test, test_candidates, depth=args.depth, batch_size=32)
        write_run(run_path, run, tag=run_path.stem)
        return run

    base = hashlib.sha1(json.dumps([args.model, args.student_layers, args.max_doc_length,
                                    args.precision, args.seed]).encode()).hexdigest()[:8]
    score(f"student untrained ({args.student_layers} layers)",
          rerank(args.model, out / "students" / f"untrained-{base}" / f"{tag}.trec",
                 args.student_layers))
    for loss in args.students:
        config = student_config(args, loss, candidates, targets.path)
        folder = out / "students" / f"{loss}-{config_hash(config)}"
        log.info("student %s (%s): training in %s", loss, STUDENT_MODES[loss], folder)
        model_dir = train(config, folder)
        kind = "contrastive" if STUDENT_MODES[loss] == "labels" else "KD from ensemble"
        score(f"student {loss} ({kind})", rerank(str(model_dir), folder / f"{tag}.trec"),
              _train_seconds(folder))

    table = markdown(rows, args)
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
