"""Model cards: a README.md in every saved model folder.

The card says what the model is and how it was made: base model, objective, teacher, data,
steps, optimisation settings, and evaluation figures once they are known. Its YAML front matter
follows the Hugging Face hub's model-card metadata as sentence-transformers writes it for
cross-encoders (``library_name``, ``base_model``, ``tags``, ``pipeline_tag: text-ranking``, and a
``model-index`` with the evaluation figures), so the hub shows the model as a re-ranker.

The facts behind the card live in the folder's ``irdistill.json`` (key ``card``) and, for
figures recorded later, ``evaluation.json``, so the card can
be rewritten later without the training run, e.g. by :func:`add_evaluation`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from irdistill.errors import IrdistillError
from irdistill.io import atomic_write, write_json

CARD_FILE = "README.md"
SETTINGS_FILE = "irdistill.json"
#: evaluation figures recorded after training (not part of the model's fingerprint)
EVALUATION_FILE = "evaluation.json"
#: irdistill's aliases of the bundled MiniLM, as a hub name
HUB_NAMES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2",
             "bundled:minilm": "sentence-transformers/all-MiniLM-L6-v2",
             "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def hub_name(name: str | None) -> str | None:
    """``name`` as a hub model id, or None if it is a local folder (not a hub name)."""
    if not name:
        return None
    name = HUB_NAMES.get(name, name)
    if name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1:
        return None
    return name


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IrdistillError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno) from None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    return str(value)


def front_matter(base_model: str | None, card: dict[str, Any], name: str) -> dict[str, Any]:
    """The YAML metadata block of the card."""
    meta: dict[str, Any] = {"library_name": "sentence-transformers"}
    hub = hub_name(base_model)
    if hub:
        meta["base_model"] = hub
    tags = ["sentence-transformers", "cross-encoder", "reranker", "text-ranking", "irdistill"]
    if card.get("objective"):
        tags.append(f"loss:{card['objective']}")
    if card.get("teacher"):
        tags.append("knowledge-distillation")
    meta["tags"] = tags
    meta["pipeline_tag"] = "text-ranking"
    evaluation = card.get("evaluation") or {}
    if evaluation:
        results = []
        for dataset, figures in evaluation.items():
            results.append({
                "task": {"type": "text-ranking", "name": "Reranking"},
                "dataset": {"name": dataset, "type": dataset},
                "metrics": [{"type": measure.lower().replace("@", "_at_"), "value": float(v),
                             "name": measure} for measure, v in figures.items()]})
        meta["model-index"] = [{"name": name, "results": results}]
    return meta


def _outcome_lines(outcome: dict[str, Any]) -> list[str]:
    """Card lines on evaluation during training, the step kept and the training clock."""
    lines = []
    dev = outcome.get("dev")
    if dev:
        measure = outcome.get("measure", "?")
        history = outcome.get("evaluations") or []
        best = outcome.get("best_value")
        line = (f"- **Evaluation during training:** {measure} on {dev.get('queries')} dev queries "
                f"({dev.get('source')}), {len(history)} evaluation(s)")
        if best is not None:
            line += f"; best {best:.4f} at step {outcome.get('best_step')}"
        lines.append(line)
    if outcome.get("selected_step") is not None:
        kept = (f"the checkpoint of step {outcome['selected_step']} (best evaluation)"
                if outcome.get("selected") == "best evaluation" else "the last step's weights")
        lines.append(f"- **Weights:** {kept} of {outcome.get('steps')} steps trained")
    if outcome.get("train_seconds") is not None:
        line = f"- **Training time:** {outcome['train_seconds'] / 60:.2f} min"
        if outcome.get("max_minutes"):
            line += f" (budget {outcome['max_minutes']:g} min)"
        if outcome.get("eval_seconds"):
            line += f", plus {outcome['eval_seconds'] / 60:.2f} min of evaluation"
        if outcome.get("stopped") in ("time budget", "early stopping"):
            line += f"; stopped by {outcome['stopped']} at step {outcome.get('stopped_step')}"
        lines.append(line)
    return lines


def render_card(settings: dict[str, Any], config: dict[str, Any], name: str) -> str:
    """The README.md text from ``irdistill.json`` (``settings``) and ``config.json``."""
    card = settings.get("card") or {}
    base = settings.get("base_model")
    hub = hub_name(base)
    lines = ["---", yaml.safe_dump(front_matter(base, card, name), sort_keys=False).rstrip(),
             "---", "", f"# {name}", ""]
    made = (f"fine-tuned from [{hub}](https://huggingface.co/{hub})" if hub
            else f"fine-tuned from `{base}`" if base else "trained")
    lines += [f"A cross-encoder re-ranker {made} with irdistill. It reads a query and a document "
              "together and outputs one relevance score (a raw logit: higher is more relevant).",
              "", "## Model details", ""]
    architecture = (config.get("architectures") or ["?"])[0]
    lines.append(f"- **Base model:** {f'`{base}`' if base else 'unknown'}")
    lines.append(f"- **Architecture:** {architecture} (model type `{config.get('model_type')}`, "
                 f"{config.get('num_hidden_layers', '?')} layers, hidden size "
                 f"{config.get('hidden_size', '?')})")
    q, d = settings.get("max_query_length"), settings.get("max_doc_length")
    if settings.get("truncation", "segments") == "pair":
        lines.append(f"- **Input:** a pair of up to {(q or 0) + (d or 0)} tokens besides the "
                     "special ones, cut longest first as sentence-transformers cuts it (the "
                     "tokenizer's `model_max_length`)")
    else:
        lines.append(f"- **Input:** query up to {q} tokens, document up to {d} tokens, each "
                     "truncated on its own")
    lines.append("- **Output:** one score per (query, document) pair")

    lines += ["", "## Training", ""]
    if not card:
        lines.append("No training record: this folder was saved without training by irdistill.")
    else:
        objective = card.get("objective", "?")
        params = card.get("loss_params") or {}
        lines.append(f"- **Objective:** `{objective}`" + (f" ({_fmt(params)})" if params else ""))
        teacher = card.get("teacher")
        lines.append(f"- **Teacher:** {_fmt(teacher) if teacher else 'none (relevance labels)'}")
        data = card.get("data") or {}
        if data:
            lines.append(f"- **Data:** {_fmt(data)}")
        if card.get("steps") is not None:
            lines.append(f"- **Steps:** {card['steps']}")
        training = card.get("training") or {}
        if training:
            lines.append(f"- **Optimisation:** {_fmt(training)}")
        lines += _outcome_lines(card.get("outcome") or {})
        if card.get("config_hash"):
            lines.append(f"- **Config hash:** `{card['config_hash']}` (the full config is in "
                         "the training folder's `config.yaml`)")

    lines += ["", "## Evaluation", ""]
    evaluation = card.get("evaluation") or {}
    if not evaluation:
        lines.append("No evaluation figures recorded yet.")
    else:
        measures = list(dict.fromkeys(m for figures in evaluation.values() for m in figures))
        lines.append("| dataset | " + " | ".join(measures) + " |")
        lines.append("|---|" + "---:|" * len(measures))
        for dataset, figures in evaluation.items():
            cells = [f"{figures[m]:.4f}" if m in figures else "-" for m in measures]
            lines.append(f"| {dataset} | " + " | ".join(cells) + " |")

    lines += ["", "## Usage", "", "```python", "from sentence_transformers import CrossEncoder",
              "", f'model = CrossEncoder("{name}")',
              'scores = model.predict([("what is a cell", "The cell is the unit of life.")])',
              "```", "", "or with irdistill:", "", "```bash",
              f"irdistill rerank {name} <collection> --run <candidates.trec> "
              "--output reranked.trec",
              "```", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path) -> Path:
    """(Re)write ``folder/README.md`` from its ``irdistill.json``, ``evaluation.json`` and
    ``config.json``; the card is titled by ``card["name"]`` (the path the model is saved under)
    or the folder's name."""
    folder = Path(folder)
    settings = _read_json(folder / SETTINGS_FILE)
    recorded = _read_json(folder / EVALUATION_FILE)
    if recorded:
        card = dict(settings.get("card") or {})
        card["evaluation"] = {**(card.get("evaluation") or {}), **recorded}
        settings = {**settings, "card": card}
    config = _read_json(folder / "config.json")
    name = (settings.get("card") or {}).get("name") or folder.name
    path = folder / CARD_FILE
    with atomic_write(path) as handle:
        handle.write(render_card(settings, config, name))
    return path


def add_evaluation(folder: str | Path, dataset: str, figures: dict[str, float]) -> Path:
    """Record evaluation figures (e.g. ``{"nDCG@10": 0.71}`` for ``"beir/scifact/test"``) in the
    model folder's ``evaluation.json`` and rewrite its card. The model's files are left as they
    are, so its fingerprint (and every score cached under it) stays valid."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise IrdistillError("not a model folder (no config.json)", path=folder)
    recorded = _read_json(folder / EVALUATION_FILE)
    recorded[dataset] = {k: float(v) for k, v in figures.items()}
    write_json(folder / EVALUATION_FILE, recorded)
    return write_model_card(folder)
