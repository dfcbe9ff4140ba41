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


def command(fn=None, *, on: typer.Typer | None = None, name: str | None = None):
    """Register a command (on ``app``, or the sub-app ``on``) whose IrdistillError becomes one
    ``error:`` line on stderr and exit status 2. Use as ``@command`` or
    ``@command(on=teach_app, name="import")``."""

    def register(fn):
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
                typer.echo("interrupted: run the same command again to go on from where it "
                           "stopped", err=True)
                raise typer.Exit(130) from None

        return (on or app).command(name)(wrapper)

    return register(fn) if fn is not None else register


#: --precision in every command means autocast (bf16, fp16) or fp32, and auto the best the device
#: does natively; where weights are cast instead, the help says so
SPLADE_PRECISION_HELP = ("fp32, bf16, fp16 (autocast) or auto (bf16 where the device has it "
                         "natively, else fp32). Default: fp32.")
LLM_PRECISION_HELP = ("precision of the weights: fp32, bf16, fp16, or auto (bf16 where the "
                      "device has it natively, fp16 on other GPUs, else fp32). Default: the "
                      "model's own.")


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
    model: Annotated[Optional[str], typer.Option(
        help="Dense retrieval with this bi-encoder: a sentence-transformers folder, a hub name "
             "or 'minilm' (the bundled all-MiniLM-L6-v2). Default: BM25.")] = None,
    k1: Annotated[Optional[float], typer.Option(help="BM25 k1 (default 1.5).")] = None,
    b: Annotated[Optional[float], typer.Option(help="BM25 b (default 0.75).")] = None,
    stemmer: Annotated[Optional[str], typer.Option(
        help="BM25 stemmer language, e.g. english (default: none).")] = None,
    max_length: Annotated[Optional[int], typer.Option(
        help="Dense: tokens kept of a query or document (default: the model's max_seq_length).")]
    = None,
    precision: Annotated[Optional[str], typer.Option(
        help="Dense: fp32, bf16, fp16 (autocast) or auto (bf16 where the device has it "
             "natively, else fp32). Default: auto.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="Dense: texts per forward pass, sorted by length (default 32).")] = None,
    search: Annotated[Optional[str], typer.Option(
        help="Dense: exact (chunked matrix product over the memory-mapped embeddings, default) "
             "or faiss (flat inner-product index in memory; needs faiss-cpu).")] = None,
    embedding_dtype: Annotated[Optional[str], typer.Option(
        help="Dense: cached embeddings as float32 (default) or float16 (half the disk).")]
    = None,
    device: Annotated[Optional[str], typer.Option(
        help="Dense: cpu, cuda, cuda:1 ... (default: best).")] = None,
) -> None:
    """First stage: BM25 (bm25s), or dense retrieval with --model; write the top-k of every
    query as a TREC run with its provenance beside it.

    Both cache what they build under $IRDISTILL_CACHE (default ~/.cache/irdistill): the BM25
    index, or the bi-encoder's document embeddings (keyed by model, documents and settings;
    an interrupted encoding resumes). Dense scores are dot products of the embeddings: cosine
    for models that normalise (the bundled MiniLM does).
    """
    from irdistill.data.collection import load_collection
    from irdistill.io import check_output_file

    check_output_file(output, "output run")
    if k < 1:
        raise IrdistillError(f"--k {k} must be at least 1")
    dense_options = {"--max-length": max_length, "--precision": precision,
                     "--batch-size": batch_size, "--search": search,
                     "--embedding-dtype": embedding_dtype, "--device": device}
    bm25_options = {"--k1": k1, "--b": b, "--stemmer": stemmer}
    if model is None:
        given = [name for name, value in dense_options.items() if value is not None]
        if given:
            raise IrdistillError(f"{', '.join(given)} is a dense retrieval option",
                                 hint="add --model NAME (e.g. --model minilm), or leave it out")
        from irdistill.retrieval.bm25 import BM25Settings, write_bm25_run

        coll = load_collection(collection, split)
        settings = BM25Settings(k1=1.5 if k1 is None else k1, b=0.75 if b is None else b,
                                stemmer=stemmer)
        run = write_bm25_run(output, coll, k, settings, source=str(collection))
    else:
        given = [name for name, value in bm25_options.items() if value is not None]
        if given:
            raise IrdistillError(f"{', '.join(given)} is a BM25 option, and --model asks for "
                                 "dense retrieval", hint="leave out one or the other")
        from irdistill.models.paths import resolve_model_path
        from irdistill.retrieval.dense import DenseSettings, check_search, write_dense_run

        settings = DenseSettings(max_length=max_length, precision=precision or "auto",
                                 batch_size=batch_size or 32, dtype=embedding_dtype or "float32",
                                 device=device)
        settings.check()
        check_search(search or "exact")
        resolve_model_path(model)  # a missing model folder fails before any work
        coll = load_collection(collection, split)
        run = write_dense_run(output, coll, model, k, settings, search=search or "exact",
                              source=str(collection))
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
    """Train a cross-encoder; an interrupted run resumes from its last checkpoint. Every key
    and its default: irdistill config show train (docs/training.md explains them)."""
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
    max_tokens: Annotated[Optional[int], typer.Option(
        help="Most padded tokens per batch (default: 2048 on a CPU, where small batches stay in "
             "cache, 16384 on a GPU; 0: no budget, batch_size alone).")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help="fp32, bf16, fp16 (autocast), auto (bf16 where the device has it natively), "
             "bf16-full or fp16-full (weights cast too: fastest, a little less exact).")] = None,
    backend: Annotated[str, typer.Option(
        help="torch; compile (torch.compile: fused kernels, compiled once at the start, worth "
             "it for long re-rankings); onnx (ONNX Runtime, fp32; needs onnxruntime); or "
             "onnx-int8 (weights quantised to int8: faster on CPUs with VNNI/AMX, rankings "
             "checked against fp32 on a sample first, see --check-queries).")]
    = "torch",
    check_queries: Annotated[int, typer.Option(
        help="onnx-int8: queries of the sample whose rankings are compared with fp32 before "
             "the run (Kendall tau, top-10 overlap, nDCG@10 where judged; logged and in the "
             "provenance); 0: no check.")] = 20,
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
    again after an interruption and it goes on from there. OUTPUT's provenance (model, data,
    settings, versions) is written beside it as <stem>.provenance.json. Under torchrun
    (torchrun --nproc_per_node N -m irdistill rerank ...) the processes share the work and
    the first one writes the merged run, identical to a single process's.
    """
    from irdistill.distributed import is_distributed, is_main, rank, world_size
    from irdistill.rerank import RerankSettings, parse_shard, run_rerank

    part = parse_shard(shard) if shard is not None else None
    result = run_rerank(RerankSettings(
        model=model, collection=collection, output=output, run=run, depth=depth, split=split,
        batch_size=batch_size, max_tokens=max_tokens, precision=precision, backend=backend,
        shard=part, block_pairs=block_pairs, max_doc_length=max_doc_length, device=device,
        check_queries=check_queries))
    if result.int8_check:
        c = result.int8_check
        typer.echo(f"int8 against fp32 on {c['queries']} queries: Kendall tau "
                   f"{c['kendall_tau']:.3f} (min {c['min_kendall_tau']:.3f}), top-10 overlap "
                   f"{c['top10_overlap']:.3f}" + (f", nDCG@10 {c['nDCG@10']:.4f} vs fp32 "
                                                 f"{c['reference nDCG@10']:.4f}"
                                                 if "nDCG@10" in c else ""))
    if part is not None:
        typer.echo(f"wrote shard {part[0]}/{part[1]} ({len(result.run)} queries) to {output}")
        return
    if is_distributed():
        typer.echo(f"process {rank()}/{world_size()} scored {len(result.run)} queries")
    if is_main():
        typer.echo(f"wrote re-ranked run of {result.queries} queries to {output}")


@command
def merge_runs(
    parts: Annotated[list[Path], typer.Argument(help="The shards' TREC runs.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Merged TREC run to write.")],
    run: Annotated[Optional[Path], typer.Option(help="The candidate run the shards re-ranked: "
                                                "check that every query is there.")] = None,
) -> None:
    """Join the runs of 'irdistill rerank --shard I/N' into one run (each query from one shard)."""
    from irdistill.data.trec import read_run, write_run
    from irdistill.provenance import file_fingerprint, read_run_provenance, write_run_provenance
    from irdistill.rerank.sharding import merge_runs as merge

    expected = read_run(run) if run is not None else None
    # a shard of a run with fewer blocks than shards is empty
    merged = merge((read_run(p) if not p.is_file() or p.stat().st_size else {} for p in parts),
                   expected=expected)
    write_run(output, merged, tag="irdistill")
    write_run_provenance(output, kind="merge-runs",
                         parts=[{**file_fingerprint(p), "provenance": read_run_provenance(p)}
                                for p in parts],
                         data={"candidates": file_fingerprint(run) if run is not None else None})
    typer.echo(f"wrote {len(merged)} queries from {len(parts)} shards to {output}")


@command
def fuse(
    runs: Annotated[list[Path], typer.Argument(help="Two or more TREC runs to fuse.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Fused TREC run to write.")],
    method: Annotated[str, typer.Option(help="rrf (reciprocal rank fusion), wsum = combsum "
                                        "(weighted sum of normalised scores) or combmnz.")]
    = "rrf",
    norm: Annotated[Optional[str], typer.Option(
        help="Per query and run, before summing: minmax (default of wsum/combmnz), zscore or "
             "none; rrf takes none.")] = None,
    weight: Annotated[Optional[list[float]], typer.Option(
        "--weight", "-w", help="One weight per run, in their order (repeat it; default 1 "
                               "each).")] = None,
    rrf_k: Annotated[float, typer.Option(help="RRF's constant k.")] = 60,
    depth: Annotated[Optional[int], typer.Option(help="Fuse each run's top documents of each "
                                                 "query (default: all).")] = None,
) -> None:
    """Fuse runs (RRF, weighted CombSUM, CombMNZ) and write the result with its provenance.

    A document a run did not retrieve gets 0 from that run after normalisation (as ranx does);
    a query missing from a run is fused from the others and counted. Formulas, papers and
    conventions: docs/fusion.md.
    """
    from irdistill.evaluation.fusion import fuse_files

    result = fuse_files(runs, output, method=method, norm=norm, weights=weight, k=rrf_k,
                        depth=depth)
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote the {method} fusion of {len(runs)} runs ({len(result.run)} queries) to "
               f"{output}")


@command
def evaluate(
    run: Annotated[Path, typer.Argument(help="TREC run file.")],
    qrels: Annotated[str, typer.Option(help="Qrels file, or an ir_datasets id / collection folder.")],
    measures: Annotated[Optional[list[str]], typer.Option(
        "--measures", "-m", help="ir_measures names, e.g. -m nDCG@10 -m RR@10 (or one "
                                 "space-separated string).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write aggregate and "
                                                      "per-query values here.")] = None,
    missing_as_zero: Annotated[bool, typer.Option(
        "--missing-as-zero/--skip-missing", help="Judged queries absent from the run score 0 "
        "(default, as trec_eval -c), or are left out of the mean.")] = True,
) -> None:
    """Evaluate a run with ir_measures.

    Run queries without judgements are never scored (they are counted and listed in --json);
    judged queries absent from the run count as 0 unless --skip-missing. Every such count is
    printed below the table.
    """
    from irdistill.data.collection import load_qrels
    from irdistill.data.trec import read_run
    from irdistill.evaluation.metrics import DEFAULT_MEASURES
    from irdistill.evaluation.metrics import evaluate as evaluate_run
    from irdistill.evaluation.metrics import parse_measures
    from irdistill.io import check_output_file, write_json

    names = [m for item in (measures or DEFAULT_MEASURES) for m in item.split()]
    parse_measures(names)
    if json_path is not None:
        check_output_file(json_path, "--json file")
    result = evaluate_run(read_run(run), load_qrels(qrels), names,
                          missing_as_zero=missing_as_zero)
    if json_path is not None:
        write_json(json_path, result.to_json())
    _print_table({run.name: result.aggregate})
    for line in result.notes():
        typer.echo(line)


@command
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
    = Path("demo-output"),
    minutes: Annotated[Optional[float], typer.Option(
        "--minutes", help="Training budget in wall-clock minutes (train.max_minutes; the "
                          "recipe's default is 10.5).")] = None,
    bi_encoder: Annotated[str, typer.Option(
        "--bi-encoder", help="Bi-encoder of the dense first stage and the hybrid teacher "
                             "(sentence-transformers folder or hub name).")] = "minilm",
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a key of the demo's training config (repeatable).")] = None,
    untrained: Annotated[bool, typer.Option(
        "--untrained", help="Also score the untrained model (a new, random head): as long as "
                            "re-ranking with the trained one.")] = False,
    ood: Annotated[Optional[list[str]], typer.Option(
        "--ood", help="Also evaluate the demo's first stages and re-ranker on this collection, "
                      "never trained on (ir_datasets id or folder, e.g. cranfield; "
                      "repeatable).")] = None,
) -> None:
    """Offline demo on SciFact: BM25, a bi-encoder and their hybrid; a MiniLM re-ranker trained
    for a time budget; the re-ranker alone and fused with BM25; optionally out of domain.

    The demo is a grid (irdistill/experiments/demo.yaml) run by the experiment runner: the
    output folder is an experiment's (`irdistill compare OUTPUT` reads it)."""
    from irdistill.demo import run_demo
    from irdistill.experiments.report import to_markdown

    overrides = list(set_ or [])
    if minutes is not None:
        overrides.append(f"train.max_minutes={minutes}")
    report = run_demo(output, overrides=overrides, bi_encoder=bi_encoder, untrained=untrained,
                      ood=list(ood or []))
    typer.echo(to_markdown(report))
    typer.echo(f"results written to {output / 'results.json'}; tables in {output / 'report'}")


# -- experiments: grids, suites, comparison (irdistill.experiments) --------------------------
experiment_app = typer.Typer(no_args_is_help=True,
                             help="Grids of training recipes trained and evaluated on suites.")
app.add_typer(experiment_app, name="experiment")


@command(on=experiment_app)
def run(
    grid: Annotated[Path, typer.Argument(help="Grid file (YAML): base config, axes, suites.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells and what is "
                                          "done; train and evaluate nothing.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output folder "
                                                   "(default: the grid's 'output').")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a key of the base config (--set train.max_steps=5; axes "
                      "still win) or of the grid (--set evaluation.depth=20, --set "
                      "resources.partition=gpu); repeatable.")]
    = None,
    launcher: Annotated[Optional[str], typer.Option(
        help="Run the cells as jobs through submitit: 'slurm' (a job array, one worker per "
             "unfinished cell, the grid's 'resources') or 'local' (--workers processes on this "
             "machine). Default: this process works through the cells.")] = None,
    workers: Annotated[int, typer.Option(
        help="Workers at once with --launcher (slurm: the array's parallelism).")] = 1,
    wait: Annotated[Optional[bool], typer.Option(
        "--wait/--no-wait", help="With --launcher, return when every job has finished "
                                 "(default: local waits, slurm does not).")] = None,
) -> None:
    """Train and evaluate every cell of a grid; finished work is reused, interrupted resumes.

    Several processes may run one grid at once (by hand, or as jobs of --launcher): each claims
    a cell before working on it, so no cell runs twice, and a dead worker's cell is taken over
    after resources.lease_s seconds without its heartbeat (docs/cluster.md).

    Under torchrun (torchrun --nproc_per_node N -m irdistill experiment run GRID.yaml) each cell
    trains with DDP and the processes share the re-rankings (long documents' passages are scored
    by the first process); the first one writes the files.
    """
    from irdistill.distributed import is_main
    from irdistill.experiments.grid import grid_status, load_grid, run_grid

    if launcher is not None and not dry_run:
        from irdistill.experiments.launch import launch

        jobs = launch(grid, launcher=launcher, workers=workers, overrides=set_, output=output,
                      wait=wait)
        loaded = load_grid(grid, set_, output)
        typer.echo(f"{len(jobs)} job(s) submitted ({', '.join(str(j.job_id) for j in jobs)})"
                   if jobs else "every cell is done; nothing submitted")
        for line in grid_status(loaded).lines():
            typer.echo(line)
        typer.echo(f"status: irdistill experiment status {grid}"
                   + (f" -o {output}" if output else ""))
        return
    status = run_grid(load_grid(grid, set_, output), dry_run=dry_run)
    if not is_main():  # under torchrun the first process reports
        return
    for line in status.lines():
        typer.echo(line)
    if not dry_run:
        typer.echo(f"compare with: irdistill compare {status.grid.output}")


@command(on=experiment_app)
def status(
    grid: Annotated[Path, typer.Argument(help="Grid file (YAML).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output folder "
                                                   "(default: the grid's 'output').")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="The overrides the grid was run with (repeatable).")] = None,
) -> None:
    """Each cell's state: pending, claimed (by which worker, its heartbeat), failed (with the
    error line) or done; its training step and evaluations. Reads only; runs nothing."""
    from irdistill.experiments.grid import grid_status, load_grid

    for line in grid_status(load_grid(grid, set_, output)).lines():
        typer.echo(line)


@command(on=experiment_app)
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
    from irdistill.experiments.compare import compare as compare_results
    from irdistill.experiments.report import to_markdown

    names = [m for item in (measures or []) for m in item.split()] or None
    report, files = compare_results(sources, qrels=qrels, baseline=baseline, measures=names,
                                    test=test, correction=correction, family=family,
                                    alpha=alpha, output=output, dataset=dataset,
                                    first_stage=first_stage, untrained=untrained, plots=plots)
    typer.echo(to_markdown(report))
    typer.echo(f"wrote {len(files)} files to {files[0].parent}")
# -- end of experiments -------------------------------------------------------------------



# -- teach: build distillation targets ------------------------------------------------------------
teach_app = typer.Typer(no_args_is_help=True, help="Build teacher targets: cross-encoder "
                        "ensembles, LLM rankings, imported runs.")
app.add_typer(teach_app, name="teach")


def _candidates(collection_spec: str, split: Optional[str], run: Optional[Path], depth: int):
    """The collection and the candidate run (the given file, else BM25 top-depth)."""
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run

    coll = load_collection(collection_spec, split)
    if run is not None:
        return coll, read_run(run, depth=depth), str(run)
    from irdistill.retrieval.bm25 import bm25_run

    return coll, bm25_run(coll, depth), f"bm25 top-{depth}"


@command(on=teach_app)
def ensemble(
    collection: Annotated[str, typer.Argument(help="ir_datasets id, BEIR folder or plain folder.")],
    teacher: Annotated[list[str], typer.Option(
        "--teacher", "-t", help="A teacher: a cross-encoder (folder, hub name, 'minilm'; or "
                                "ce:MODEL), a bi-encoder (bi:MODEL or dense:MODEL, e.g. "
                                "bi:minilm), bm25 (BM25 of each candidate), or a run file of "
                                "its scores; NAME=SPEC names it. Repeat for each teacher.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: NAME.trec, "
                                         "NAME.provenance.json and teachers/.")],
    run: Annotated[Optional[Path], typer.Option(help="Candidate run (default: BM25 top-depth).")]
    = None,
    depth: Annotated[int, typer.Option(help="Candidates per query scored by every teacher.")] = 20,
    normalisation: Annotated[str, typer.Option(
        "--normalisation", "--normalise",
        help="Per teacher and query before the mean: none (Hofstaetter), zscore or minmax "
             "(teachers of different scales, e.g. BM25 + a bi-encoder: zscore).")]
    = "none",
    name: Annotated[str, typer.Option(help="Name of the ensemble's run in OUTPUT.")] = "ensemble",
    add_positives: Annotated[bool, typer.Option(
        "--add-positives", help="Also score the judged relevant documents missing from the "
                                "top-depth (targets for every training positive).")] = False,
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    batch_size: Annotated[int, typer.Option(help="Pairs per batch.")] = 64,
    precision: Annotated[Optional[str], typer.Option(
        help="fp32, bf16, fp16 or auto (default: fp32 for cross-encoders; auto, as dense "
             "retrieval, for bi-encoders, so that they share its cached document embeddings).")]
    = None,
    max_doc_length: Annotated[Optional[int], typer.Option(
        help="Document tokens kept (default: each teacher's own; a bi-encoder's one length for "
             "queries and documents).")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, ... (default: best).")] = None,
    shard: Annotated[Optional[str], typer.Option(
        help="Score only the queries of shard I/N (0-based) into OUTPUT (one folder per "
             "shard); join them with 'irdistill teach merge'.")] = None,
) -> None:
    """Score the top candidates with teachers (cross-encoders, bi-encoders, BM25, runs) and
    write the mean of their scores, normalised per teacher and query as --normalisation says.

    A hybrid teacher: --teacher bm25 --teacher bi:minilm --normalisation zscore. Each computed
    teacher's scores are kept in OUTPUT/teachers/, so another ensemble of the same teachers on
    the same candidates scores nothing; interrupted scoring resumes when run again. Train on
    the result with data.mode=teacher_scores and data.teacher_run=OUTPUT/NAME.trec.
    """
    from irdistill.rerank.sharding import parse_shard
    from irdistill.teachers.ensemble import ScoringSettings, build_ensemble

    part = parse_shard(shard) if shard is not None else None
    coll, candidates, source = _candidates(collection, split, run, depth)
    result = build_ensemble(
        teacher, coll, candidates, output, depth=depth, normalisation=normalisation, name=name,
        add_positives=add_positives, source=source, shard=part,
        settings=ScoringSettings(batch_size=batch_size, precision=precision, device=device,
                                 max_doc_length=max_doc_length))
    for t_name, path in result.teacher_runs.items():
        state = "reused" if t_name in result.reused else "scored"
        typer.echo(f"teacher {t_name}: {state} {path}")
    typer.echo(f"wrote ensemble of {len(result.teacher_runs)} teachers ({normalisation}) for "
               f"{len(result.run)} queries to {result.path}"
               + (f" (shard {part[0]}/{part[1]})" if part else ""))


@command(on=teach_app)
def merge(
    parts: Annotated[list[Path], typer.Argument(help="The shards: the output folders of 'teach "
                                                     "ensemble --shard', or the runs of 'teach "
                                                     "llm --shard'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the merged ensemble "
                                         "(OUTPUT/NAME.trec); for LLM runs, the run to write.")],
    name: Annotated[str, typer.Option(help="Name of the ensemble's run in each shard "
                                           "folder.")] = "ensemble",
) -> None:
    """Join the shards of 'teach ensemble --shard I/N' (or 'teach llm --shard I/N') into the run
    one process writes, byte for byte; every shard of the split must be given, once."""
    from irdistill.rerank.sharding import join_shard_files
    from irdistill.teachers.ensemble import merge_ensemble_shards

    if all(p.is_dir() for p in parts):
        path = merge_ensemble_shards(parts, output, name)
        typer.echo(f"wrote the ensemble of {len(parts)} shards to {path}")
    elif any(p.is_dir() for p in parts):
        raise IrdistillError("give shard folders (teach ensemble) or shard runs (teach llm), "
                             "not both")
    else:
        from irdistill.provenance import read_run_provenance, write_run_provenance
        from irdistill.rerank.sharding import check_complete_shards

        records = [read_run_provenance(p) or {} for p in parts]
        check_complete_shards([r.get("shard") for r in records])
        queries = join_shard_files(parts, output)
        write_run_provenance(output, kind=records[0].get("kind"), queries=queries,
                             shards=[{"shard": r.get("shard"), "run": str(p),
                                      "provenance": r} for p, r in zip(parts, records)])
        typer.echo(f"wrote {queries} queries from {len(parts)} shards to {output}")


@command(on=teach_app)
def llm(
    model: Annotated[str, typer.Argument(help="Causal LM: hub name or folder, e.g. "
                                               "castorini/rank_zephyr_7b_v1_full.")],
    collection: Annotated[str, typer.Argument(help="ir_datasets id, BEIR folder or plain folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="TREC run to write (the LLM's "
                                         "order, scores depth - rank + 1).")],
    run: Annotated[Optional[Path], typer.Option(help="Candidate run (default: BM25 top-depth).")]
    = None,
    depth: Annotated[int, typer.Option(help="Candidates per query re-ranked.")] = 100,
    window: Annotated[int, typer.Option(help="Passages per prompt.")] = 20,
    stride: Annotated[int, typer.Option(help="Step between windows, from the bottom up.")] = 10,
    backend: Annotated[str, typer.Option(
        help="auto (vLLM if installed and a GPU is there), transformers or vllm.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call (transformers).")]
    = 4,
    block_queries: Annotated[int, typer.Option(
        help="Queries whose windows are batched together (and checkpointed) at a time.")] = 256,
    max_passage_words: Annotated[int, typer.Option(
        help="Words per passage at window 20 (scaled by 20/window).")] = 300,
    context_size: Annotated[int, typer.Option(help="Prompt + answer tokens.")] = 4096,
    precision: Annotated[Optional[str], typer.Option(help=LLM_PRECISION_HELP)] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, ... (transformers).")] = None,
    tensor_parallel_size: Annotated[int, typer.Option(help="GPUs per model (vLLM).")] = 1,
    save_generations: Annotated[bool, typer.Option(
        "--save-generations", help="Keep every raw answer in OUTPUT-stem.generations.jsonl.")]
    = False,
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    shard: Annotated[Optional[str], typer.Option(
        help="Rank only shard I/N (0-based) of the queries (every N-th in sorted order) into "
             "OUTPUT; join the shards with 'irdistill teach merge'.")] = None,
) -> None:
    """Re-rank the top candidates listwise with an LLM (RankZephyr prompt, sliding windows).

    Finished queries are kept in OUTPUT.partial.jsonl while it works: run the same command again
    after an interruption and it goes on from there. Train on the result with
    data.mode=teacher_ranks and data.teacher_run=OUTPUT.
    """
    from irdistill.rerank.sharding import parse_shard
    from irdistill.teachers.llm import (LlmSettings, check_backend, llm_teacher, load_backend,
                                        window_spans)

    window_spans(2, window, stride)  # bad settings fail before any work
    check_backend(backend)
    part = parse_shard(shard) if shard is not None else None
    coll, candidates, source = _candidates(collection, split, run, depth)
    if part is not None:  # each query is ranked on its own: any split of them gives its rows
        candidates = {q: candidates[q] for q in sorted(candidates)[part[0]::part[1]]}
        source = f"{source}, shard {part[0]}/{part[1]}"
    engine = load_backend(model, backend, batch_size=batch_size, device=device,
                          precision=precision, context_size=context_size,
                          tensor_parallel_size=tensor_parallel_size)
    ranking = llm_teacher(engine, coll, candidates, output, depth=depth,
                          settings=LlmSettings(window=window, stride=stride,
                                               max_passage_words=max_passage_words,
                                               context_size=context_size),
                          source=source, save_generations=save_generations,
                          block_queries=block_queries, shard=part)
    typer.echo(f"LLM answers: {ranking.stats.summary()}")
    typer.echo(f"wrote the LLM's ranking of {len(ranking.run)} queries to {output}")


@command(on=teach_app, name="import")
def import_(
    source: Annotated[Path, typer.Argument(help="Triple score file or TREC run.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Teacher run to write.")],
    format: Annotated[str, typer.Option(
        "--format", help="run (TREC run, e.g. Rank-DistiLLM's) or triples (Hofstaetter's "
                         "pos_score neg_score qid pos_pid neg_pid).")] = "run",
    targets: Annotated[str, typer.Option(help="scores (as they are) or ranks (depth - rank + 1)."
                                         )] = "scores",
    order_by: Annotated[str, typer.Option(help="Order of a run: score or the rank column.")]
    = "score",
    depth: Annotated[Optional[int], typer.Option(help="Keep each query's top documents.")] = None,
    max_queries: Annotated[Optional[int], typer.Option(help="Keep the first N queries.")] = None,
    collection: Annotated[Optional[str], typer.Option(
        help="Check every query and document id against this collection.")] = None,
) -> None:
    """Import published teacher targets as a teacher run with its provenance."""
    from irdistill.teachers.importers import import_targets

    coll = None
    if collection is not None:
        from irdistill.data.collection import load_collection

        coll = load_collection(collection)
    run, report = import_targets(source, output, format=format, targets=targets,
                                 order_by=order_by, depth=depth, max_queries=max_queries,
                                 collection=coll)
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {report.pairs} scored pairs of {report.queries} queries to {output}")



# -- SPLADE sparse retrievers and their domain adaptation -------------------------------------
splade_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="SPLADE sparse retrievers: train, index a corpus, search it.")
app.add_typer(splade_app, name="splade")


@command(on=splade_app, name="train")
def splade_train(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (optional).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
    = Path("runs/splade"),
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a config key, e.g. --set lambda_d=1e-3 (repeatable).")] = None,
) -> None:
    """Train a SPLADE model (ranking loss + FLOPS regularisation); resumes when interrupted.
    Every key and its default: irdistill config show splade (docs/splade.md)."""
    from irdistill.train.splade import load_splade_config, train_splade

    model_dir = train_splade(load_splade_config(config, set_), output)
    typer.echo(f"model saved to {model_dir}")


@command(on=splade_app, name="index")
def splade_index(
    model: Annotated[str, typer.Argument(help="SPLADE model folder (or any masked LM).")],
    collection: Annotated[str, typer.Argument(help="ir_datasets id, BEIR folder or plain folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Index folder to create.")],
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    batch_size: Annotated[int, typer.Option(help="Documents per encoding batch.")] = 32,
    chunk_docs: Annotated[int, typer.Option(help="Documents per on-disk chunk of postings "
                                                 "(bounds memory).")] = 16384,
    max_doc_length: Annotated[Optional[int], typer.Option(help="Document tokens kept.")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help=SPLADE_PRECISION_HELP)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index.")] = False,
) -> None:
    """Encode a corpus with a SPLADE model into an exact inverted index on disk."""
    from irdistill.data.collection import load_collection
    from irdistill.models.splade import Splade
    from irdistill.retrieval.sparse_index import build_splade_index

    coll = load_collection(collection, split)
    splade = Splade.from_pretrained(model, max_doc_length=max_doc_length, precision=precision)
    index = build_splade_index(splade, coll, output, batch_size=batch_size,
                               chunk_docs=chunk_docs, overwrite=overwrite, model_name=model)
    stats = index.stats()
    typer.echo(f"indexed {stats.docs} documents: {stats.postings} postings "
               f"({stats.postings_per_doc:.1f} per document, {stats.terms} terms), "
               f"{stats.bytes / 2**20:.1f} MB in {output}")


@command(on=splade_app, name="search")
def splade_search(
    model: Annotated[str, typer.Argument(help="The SPLADE model that built the index.")],
    index: Annotated[Path, typer.Argument(help="Index folder.")],
    collection: Annotated[str, typer.Argument(help="Collection whose queries are searched.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="TREC run to write.")],
    k: Annotated[int, typer.Option(help="Documents per query.")] = 100,
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    batch_size: Annotated[int, typer.Option(help="Queries per encoding batch.")] = 64,
    precision: Annotated[Optional[str], typer.Option(
        help=SPLADE_PRECISION_HELP)] = None,
) -> None:
    """Search a SPLADE index with a collection's queries (exact top-k) and write a TREC run."""
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import write_run
    from irdistill.io import check_output_file
    from irdistill.models.splade import Splade
    from irdistill.provenance import model_fingerprint, write_run_provenance
    from irdistill.retrieval.sparse_index import SparseIndex
    from irdistill.retrieval.sparse_index import splade_search as search

    check_output_file(output, "output run")
    for name, value in (("--k", k), ("--batch-size", batch_size)):
        if value < 1:
            raise IrdistillError(f"{name} {value} must be at least 1")
    sparse_index = SparseIndex.load(index)
    coll = load_collection(collection, split)
    meta = sparse_index.meta
    if meta.get("collection") and meta["collection"] != coll.docs_name:
        raise IrdistillError(f"the index holds the documents of '{meta['collection']}', not those "
                             f"of '{coll.docs_name}'", path=index,
                             hint="search the index of this collection's corpus")
    fingerprint = model_fingerprint(model)
    if meta.get("model_fingerprint") and meta["model_fingerprint"] != fingerprint:
        raise IrdistillError(f"the index was built with another model ({meta.get('model')})",
                             path=index, hint="search with the model that built the index")
    splade = Splade.from_pretrained(model, precision=precision)
    run, timing = search(splade, sparse_index, coll.queries, k=k, batch_size=batch_size)
    write_run(output, run, tag="splade")
    write_run_provenance(
        output, kind="splade-search",
        config={"model": model, "index": str(index), "collection": str(collection),
                "split": split, "k": k, "batch_size": batch_size,
                "precision": precision or "fp32"},
        model={"name": model, "fingerprint": fingerprint},
        index={key: meta.get(key) for key in ("collection", "model", "max_doc_length",
                                              "precision")},
        data={"collection": coll.name, "queries": len(run)}, timing=timing.to_json())
    typer.echo(f"wrote {sum(len(d) for d in run.values())} results for {len(run)} queries to "
               f"{output} ({timing.search_qps:.0f} queries/s searching, "
               f"{timing.total_qps:.1f} queries/s with query encoding)")


@command
def adapt(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (optional).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
    = Path("runs/adapt"),
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a config key, e.g. --set layers=2 --set target=cranfield "
                      "(repeatable).")] = None,
) -> None:
    """Adapt SPLADE to an unlabelled target corpus (MLM of the lower layers, recombination).
    Every key and its default: irdistill config show adapt."""
    from irdistill.adapt.recipe import AdaptConfig
    from irdistill.adapt.recipe import adapt as run_adapt
    from irdistill.config import load_config

    report = run_adapt(load_config(config, set_, cls=AdaptConfig), output)
    if report["results"]:
        _print_table({name: r["measures"] for name, r in report["results"].items()},
                     title=f"SPLADE on the target, domain layers k={report['layers']}")
    typer.echo(f"adapted model: {report['models']['adapted']}")


@command
def adapt_reranker(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (optional).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
    = Path("runs/adapt-reranker"),
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a config key, e.g. --set model=demo-output/model "
                      "--set target=cranfield --set seeds=[1,2] --set methods=\\[pseudo,mlm] "
                      "--set training.loss=margin_mse (repeatable).")] = None,
) -> None:
    """Adapt a source-trained cross-encoder to an unlabelled target corpus (pseudo-queries cut
    from its documents, labelled by a BM25 + bi-encoder teacher, then distilled; or MLM of the
    lower layers on it, recombined) and compare it there with the zero-shot re-ranker, BM25,
    the bi-encoder and their hybrid. Only the evaluation reads the target's queries and
    judgements. A rerun goes on from every finished step. Every key and its default:
    irdistill config show adapt-reranker (docs/adaptation.md)."""
    from irdistill.adapt.reranker import adapt_reranker as run_adapt
    from irdistill.adapt.reranker import load_adapt_config

    report = run_adapt(load_adapt_config(config, set_), output)
    if report["results"]:
        _print_table(report["results"], title="re-rankers on the target (mean over seeds)")
        typer.echo(f"paired tests against the zero-shot re-ranker: {output / 'report'}")
    for name, paths in report["models"].items():
        typer.echo(f"{name}: {', '.join(paths.values())}")


@command
def pseudo_queries(
    collection: Annotated[str, typer.Argument(
        help="The unlabelled target corpus: ir_datasets id, BEIR folder or plain folder (only "
             "its documents are read).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the pseudo-query "
                                                                 "training collection.")],
    queries: Annotated[int, typer.Option(help="Pseudo-queries to make (at most one per "
                                              "document).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the documents and sentences chosen.")] = 0,
    min_words: Annotated[int, typer.Option(help="Shortest sentence taken as a query.")] = 5,
    max_words: Annotated[int, typer.Option(help="Longest sentence taken as a query.")] = 40,
    keep_fraction: Annotated[float, typer.Option(
        help="How often the sentence stays in its document (Lee et al. 2019: 0.1).")] = 0.1,
    split: Annotated[Optional[str], typer.Option(help="Split of a BEIR folder.")] = None,
    generator: Annotated[Optional[str], typer.Option(
        help="Write the queries with this language model instead (doc2query): a Hugging Face "
             "seq2seq model such as a doc2query T5, or a causal LM; hub name or folder "
             "(--min-words, --max-words and --keep-fraction then do not apply).")]
    = None,
    prompt: Annotated[Optional[str], typer.Option(
        help="Generator prompt with {document} (default: the document alone for a seq2seq "
             "model; an instruction for a causal LM).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest generated query, in tokens.")]
    = 32,
    batch_size: Annotated[int, typer.Option(help="Documents per generation batch.")] = 16,
    backend: Annotated[str, typer.Option(help="Generation backend: auto, transformers or "
                                              "vllm.")] = "auto",
    precision: Annotated[Optional[str], typer.Option(help="Generator " + LLM_PRECISION_HELP)]
    = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, ... (default: best).")]
    = None,
) -> None:
    """Pseudo-queries from a target corpus: cut from it (inverse cloze: a sentence of a
    document, whose positive is that document without it), or with --generator written by a
    language model (one query per document, greedy). Writes a plain-folder collection
    (docs.tsv, queries.tsv, qrels.txt) that 'teach ensemble' scores and 'train' trains on, so a
    re-ranker adapts to a new domain without its labels."""
    from irdistill.adapt.pseudo import ClozeSettings, GenerationSettings, write_pseudo_collection
    from irdistill.data.collection import load_collection
    from irdistill.io import check_output_folder

    if generator is not None:
        from irdistill.teachers.llm import check_backend

        settings = GenerationSettings(model=generator, queries=queries, seed=seed,
                                      prompt=prompt, max_new_tokens=max_new_tokens,
                                      batch_size=batch_size, backend=backend,
                                      precision=precision, device=device)
        check_backend(backend)
    else:
        settings = ClozeSettings(queries=queries, seed=seed, min_words=min_words,
                                 max_words=max_words, keep_fraction=keep_fraction)
    settings.check()
    check_output_folder(output)
    coll = load_collection(collection, split)
    counts = write_pseudo_collection(collection, coll.docs, output, settings)
    detail = (f"{counts['empty_answers']} empty answers" if generator is not None else
              f"{counts['sentences_removed']} sentences removed from their documents")
    typer.echo(f"wrote {counts['queries']} pseudo-queries over {counts['documents']} documents "
               f"({detail}) to {output}")


# -- config: print resolved configs ----------------------------------------------------------
config_app = typer.Typer(no_args_is_help=True, help="Show the resolved config of a command.")
app.add_typer(config_app, name="config")
CONFIG_KINDS = ("train", "splade", "adapt", "adapt-reranker", "demo")


@command(on=config_app)
def show(
    kind: Annotated[str, typer.Argument(help=f"Whose config: {', '.join(CONFIG_KINDS)}.")]
    = "train",
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (optional).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a key, as the command itself takes it (repeatable).")] = None,
) -> None:
    """Print the config a command would run with (its defaults, then the YAML file, then the
    --set overrides), checked, as YAML: every key there is can be set this way."""
    from irdistill.config import check_config, dump_yaml, load_config
    from irdistill.errors import unknown_name

    if kind == "train":
        resolved = check_config(load_config(config, set_))
    elif kind == "demo":
        from irdistill.demo import DEMO_RECIPE

        if config is not None:  # as `irdistill demo` itself, which takes no file
            raise IrdistillError("the demo takes no config file",
                                 hint="change its keys with --set, as `irdistill demo --set` "
                                      "does")
        resolved = check_config(load_config(config, set_, base=DEMO_RECIPE))
    elif kind == "splade":
        from irdistill.train.splade import check_splade_config, load_splade_config

        resolved = check_splade_config(load_splade_config(config, set_))
    elif kind == "adapt":
        from irdistill.adapt.recipe import AdaptConfig, check_adapt_config

        resolved = check_adapt_config(load_config(config, set_, cls=AdaptConfig))
    elif kind == "adapt-reranker":
        from irdistill.adapt.reranker import load_adapt_config

        resolved = load_adapt_config(config, set_)
        resolved.check()
    else:
        raise unknown_name("config kind", kind, CONFIG_KINDS)
    typer.echo(dump_yaml(resolved), nl=False)


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
