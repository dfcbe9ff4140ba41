"""The ``irdistill`` command: a thin shell over the library.

Each command parses its arguments, makes one library call and prints the result. A user
error (:class:`irdistill.IrdistillError`) prints one ``error:`` line and exits with status 2;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import functools
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from irdistill.errors import IrdistillError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, distil and compare neural re-rankers and sparse retrievers.")
STATE = {"debug": False}
log = logging.getLogger("irdistill")


@app.callback()
def _global(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")]
            = False,
            verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")]
            = False) -> None:
    from irdistill.utils import setup_logging

    STATE["debug"] = debug
    setup_logging(verbose)


def command(fn):
    """Register a command whose IrdistillError becomes one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IrdistillError as exc:
            if STATE["debug"]:
                traceback.print_exc()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return app.command()(wrapper)


def _print_table(rows: dict[str, dict[str, float]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    measures = list(dict.fromkeys(m for r in rows.values() for m in r))
    table = Table(title=title)
    table.add_column("system")
    for m in measures:
        table.add_column(m, justify="right")
    for name, values in rows.items():
        table.add_row(name, *(f"{values[m]:.4f}" if m in values else "-" for m in measures))
    Console().print(table)


@command
def retrieve(
    collection: Annotated[str, typer.Argument(help="ir_datasets id, BEIR folder or plain folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="TREC run to write.")],
    k: Annotated[int, typer.Option(help="Documents per query.")] = 100,
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    k1: Annotated[float, typer.Option(help="BM25 k1.")] = 1.5,
    b: Annotated[float, typer.Option(help="BM25 b.")] = 0.75,
    stemmer: Annotated[Optional[str], typer.Option(help="Stemmer language, e.g. english.")]
    = None,
) -> None:
    """BM25 first stage (bm25s): write the top-k of every query as a TREC run."""
    from irdistill.data.collection import load_collection
    from irdistill.retrieval.bm25 import BM25Settings, write_bm25_run

    coll = load_collection(collection, split)
    run = write_bm25_run(output, coll, k, BM25Settings(k1=k1, b=b, stemmer=stemmer))
    typer.echo(f"wrote {sum(len(d) for d in run.values())} results for {len(run)} queries "
               f"to {output}")


@command
def train(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (optional).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
    = Path("runs/train"),
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a config key, e.g. --set train.lr=1e-5 (repeatable).")] = None,
) -> None:
    """Train a cross-encoder; an interrupted run resumes from its last checkpoint."""
    from irdistill.config import load_config
    from irdistill.train.engine import train as train_model

    cfg = load_config(config, set_)
    model_dir = train_model(cfg, output)
    typer.echo(f"model saved to {model_dir}")


@command
def rerank(
    model: Annotated[str, typer.Argument(help="Model folder, hub name, or 'minilm'.")],
    collection: Annotated[str, typer.Argument(help="ir_datasets id, BEIR folder or plain folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Re-ranked TREC run to write.")],
    run: Annotated[Optional[Path], typer.Option(
        "--run", "--candidates", help="Candidate run (default: BM25 top-depth); under torchrun "
                                      "write --candidates (torchrun takes --run for its own).")]
    = None,
    depth: Annotated[int, typer.Option(help="Documents per query to re-rank.")] = 100,
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    batch_size: Annotated[int, typer.Option(help="Most pairs per batch.")] = 64,
    max_tokens: Annotated[int, typer.Option(help="Most padded tokens per batch (0: no "
                                            "budget, batch_size alone).")] = 16384,
    precision: Annotated[Optional[str], typer.Option(
        help="fp32, bf16, fp16 (autocast), auto (bf16 where the device has it natively), "
             "bf16-full or fp16-full (weights cast too: fastest, a little less exact).")] = None,
    backend: Annotated[str, typer.Option(help="torch, or onnx (ONNX Runtime, fp32; needs "
                                         "onnxruntime).")] = "torch",
    shard: Annotated[Optional[str], typer.Option(
        help="Score only shard I/N (0-based) and write it; join the shards with "
             "'irdistill merge-runs'. Under torchrun each process takes its own shard.")] = None,
    block_pairs: Annotated[int, typer.Option(
        help="Pairs per block of queries: sorted together, checkpointed together, the unit of "
             "sharding.")] = 8192,
    max_doc_length: Annotated[Optional[int], typer.Option(help="Document tokens kept.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 ... (default: best).")]
    = None,
) -> None:
    """Re-rank the top of a run with a cross-encoder and write the new run.

    Finished queries are kept in OUTPUT.partial.jsonl while it works: run the same command
    again after an interruption and it goes on from there. Under torchrun
    (torchrun --nproc_per_node N -m irdistill rerank ...) the processes share the work and
    the first one writes the merged run, identical to a single process's.
    """
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run
    from irdistill.distributed import (device_for_rank, is_distributed, is_main,
                                       main_process_first, rank, world_size)
    from irdistill.evaluation.sharding import parse_shard, rerank_to_file
    from irdistill.models.cross_encoder import CrossEncoder

    if backend not in ("torch", "onnx"):
        raise IrdistillError(f"unknown backend '{backend}'", hint="choose torch or onnx")
    part = parse_shard(shard) if shard is not None else None
    ce = CrossEncoder.from_pretrained(model, max_doc_length=max_doc_length,
                                      device=device_for_rank(device), precision=precision)
    with main_process_first():  # caches (BM25, ONNX export) are built by one process
        if backend == "onnx":
            ce.use_onnx()
        candidates = read_run(run, depth=depth) if run is not None else None
        coll = load_collection(collection, split)
        if candidates is None:
            from irdistill.retrieval.bm25 import bm25_run

            candidates = bm25_run(coll, depth)
    out = rerank_to_file(ce, coll, candidates, output, depth=depth, batch_size=batch_size,
                         max_tokens=max_tokens or None, shard=part, block_pairs=block_pairs)
    if part is not None:
        typer.echo(f"wrote shard {part[0]}/{part[1]} ({len(out)} queries) to {output}")
        return
    if is_distributed():
        typer.echo(f"process {rank()}/{world_size()} scored {len(out)} queries")
    if is_main():
        typer.echo(f"wrote re-ranked run of {len(candidates)} queries to {output}")


@command
def merge_runs(
    parts: Annotated[list[Path], typer.Argument(help="The shards' TREC runs.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Merged TREC run to write.")],
    run: Annotated[Optional[Path], typer.Option(help="The candidate run the shards re-ranked: "
                                                "check that every query is there.")] = None,
) -> None:
    """Join the runs of 'irdistill rerank --shard I/N' into one run (each query from one shard)."""
    from irdistill.data.trec import read_run, write_run
    from irdistill.evaluation.sharding import merge_runs as merge

    expected = read_run(run) if run is not None else None
    # a shard of a run with fewer blocks than shards is empty
    merged = merge((read_run(p) if not p.is_file() or p.stat().st_size else {} for p in parts),
                   expected=expected)
    write_run(output, merged, tag="irdistill")
    typer.echo(f"wrote {len(merged)} queries from {len(parts)} shards to {output}")


@command
def evaluate(
    run: Annotated[Path, typer.Argument(help="TREC run file.")],
    qrels: Annotated[str, typer.Option(help="Qrels file, or an ir_datasets id / collection folder.")],
    measures: Annotated[Optional[list[str]], typer.Option(
        "--measures", "-m", help="ir_measures names, e.g. -m nDCG@10 -m RR@10 (or one "
                                 "space-separated string).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write aggregate and "
                                                      "per-query values here.")] = None,
) -> None:
    """Evaluate a run with ir_measures."""
    from irdistill.data.collection import load_qrels
    from irdistill.data.trec import read_run
    from irdistill.evaluation.metrics import DEFAULT_MEASURES, evaluate as evaluate_run
    from irdistill.io import write_json

    names = [m for item in (measures or DEFAULT_MEASURES) for m in item.split()]
    result = evaluate_run(read_run(run), load_qrels(qrels), names)
    if json_path is not None:
        write_json(json_path, result.to_json())
    _print_table({run.name: result.aggregate})
    if result.missing:
        typer.echo(f"{len(result.missing)} judged queries are missing from the run (scored 0)")
    if result.unjudged:
        typer.echo(f"{len(result.unjudged)} run queries have no judgements (not evaluated)")


@command
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
    = Path("demo-output"),
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a key of the demo's training config (repeatable).")] = None,
) -> None:
    """Offline demo: train a MiniLM re-ranker on SciFact and compare it with BM25."""
    from irdistill.demo import run_demo

    results = run_demo(output, overrides=set_)
    _print_table(results, title="BEIR SciFact test")
    typer.echo(f"results written to {output / 'results.json'}")


# -- experiments: grids, suites, comparison (irdistill.experiments) --------------------------
experiment_app = typer.Typer(no_args_is_help=True,
                             help="Grids of training recipes trained and evaluated on suites.")
app.add_typer(experiment_app, name="experiment")


def experiment_command(fn):
    """Like @command, for the commands of ``irdistill experiment``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IrdistillError as exc:
            if STATE["debug"]:
                traceback.print_exc()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted (finished cells and evaluations are kept)", err=True)
            raise typer.Exit(130) from None

    return experiment_app.command()(wrapper)


@experiment_command
def run(
    grid: Annotated[Path, typer.Argument(help="Grid file (YAML): base config, axes, suites.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells and what is "
                                          "done; train and evaluate nothing.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output folder "
                                                   "(default: the grid's 'output').")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a key of the base config (--set train.max_steps=5; axes "
                      "still win) or of the grid (--set evaluation.depth=20); repeatable.")]
    = None,
) -> None:
    """Train and evaluate every cell of a grid; finished work is reused, interrupted resumes."""
    from irdistill.experiments.grid import load_grid, run_grid

    status = run_grid(load_grid(grid, set_, output), dry_run=dry_run)
    for line in status.lines():
        typer.echo(line)
    if not dry_run:
        typer.echo(f"compare with: irdistill compare {status.grid.output}")


@experiment_command
def suites(
    file: Annotated[Optional[Path], typer.Argument(help="YAML file of your own suites to "
                                                   "check and list.")] = None,
) -> None:
    """List the evaluation suites (built in, or those of a YAML file) and check their ids."""
    from irdistill.evaluation.suites import SUITES, check_suite, load_suites

    pool = load_suites(file) if file is not None else SUITES
    for suite in pool.values():
        check_suite(suite)
        typer.echo(f"{suite.name}: {suite.description}")
        typer.echo(f"    measures: {' '.join(suite.measures)}; {suite.first_stage_text()}")
        typer.echo("    datasets: " + ", ".join(f"{d.label} ({d.id})" if d.label != d.id
                                                 else d.id for d in suite.datasets))


@command
def compare(
    sources: Annotated[list[str], typer.Argument(
        help="An experiment folder or grid file; or TREC runs as NAME=run.trec (a repeated "
             "NAME is another seed of that system) with --qrels.")],
    baseline: Annotated[Optional[str], typer.Option(help="System to test against (default: "
                                                    "the grid's, else the first stage).")]
    = None,
    qrels: Annotated[Optional[str], typer.Option(help="Qrels of the runs: file, ir_datasets "
                                                 "id or collection folder.")] = None,
    measures: Annotated[Optional[list[str]], typer.Option(
        "--measures", "-m", help="Measures to report (default: all evaluated; for runs "
                                 "nDCG@10 RR@10).")] = None,
    test: Annotated[str, typer.Option(help="Test behind the markers: t or wilcoxon (both are "
                                      "in the CSV).")] = "t",
    correction: Annotated[str, typer.Option(help="holm, bonferroni or none.")] = "holm",
    family: Annotated[str, typer.Option(help="Correct over the whole table or per dataset.")]
    = "table",
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for the "
                                                   "tables and plots (default: "
                                                   "EXPERIMENT/report).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset label of the runs.")] = None,
    first_stage: Annotated[Optional[str], typer.Option(help="Which run is the first stage.")]
    = None,
    untrained: Annotated[Optional[str], typer.Option(help="Which run is the untrained model.")]
    = None,
    plots: Annotated[bool, typer.Option(help="Also draw plots (PNG and PDF).")] = True,
) -> None:
    """Systems x datasets table over seeds, paired tests against a baseline, plots."""
    from irdistill.experiments.report import compare as compare_results, to_markdown

    names = [m for item in (measures or []) for m in item.split()] or None
    report, files = compare_results(sources, qrels=qrels, baseline=baseline, measures=names,
                                    test=test, correction=correction, family=family,
                                    alpha=alpha, output=output, dataset=dataset,
                                    first_stage=first_stage, untrained=untrained, plots=plots)
    typer.echo(to_markdown(report))
    typer.echo(f"wrote {len(files)} files to {files[0].parent}")
# -- end of experiments -------------------------------------------------------------------


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
