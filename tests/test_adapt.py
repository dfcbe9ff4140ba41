"""Domain adaptation: the split into domain and task parts, what each step trains, and the
recombination, checked parameter by parameter."""
import json

import pytest
import torch
from splade_helpers import parameters, tiny_mlm  # noqa: F401  (fixture)

from irdistill.errors import IrdistillError
from irdistill.models.parts import domain_parameter_names, recombine, task_parameter_names

EMBEDDINGS = {"bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
              "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight",
              "bert.embeddings.LayerNorm.bias"}
LAYER = ("attention.self.query.weight", "attention.self.query.bias", "attention.self.key.weight",
         "attention.self.key.bias", "attention.self.value.weight", "attention.self.value.bias",
         "attention.output.dense.weight", "attention.output.dense.bias",
         "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
         "intermediate.dense.weight", "intermediate.dense.bias", "output.dense.weight",
         "output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias")
HEAD = {"cls.predictions.bias", "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias"}


def layer(i):
    return {f"bert.encoder.layer.{i}.{name}" for name in LAYER}


def load(path):
    from irdistill.models.splade import load_masked_lm

    return load_masked_lm(str(path))[0]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_domain_part_is_embeddings_and_the_first_k_layers(tiny_mlm, k):
    model = load(tiny_mlm)
    domain = set(domain_parameter_names(model, k))
    expected = EMBEDDINGS | set().union(*(layer(i) for i in range(k)))
    assert domain == expected
    assert set(task_parameter_names(model, k)) == (set().union(*(layer(i) for i in range(k, 2)))
                                                   | HEAD)


def test_k_out_of_range(tiny_mlm):
    with pytest.raises(IrdistillError, match="k=3 is out of range.*0 to 2"):
        domain_parameter_names(load(tiny_mlm), 3)


def assert_split(before, after, changed, unchanged):
    """``changed`` tensors all differ from ``before``; ``unchanged`` ones are bit-identical."""
    for name in unchanged:
        assert torch.equal(before[name], after[name]), f"{name} changed"
    for name in changed:
        assert not torch.equal(before[name], after[name]), f"{name} did not change"


def test_mlm_updates_only_the_domain_part(tmp_path, tiny_mlm, beir_folder):
    from irdistill.adapt.mlm import MLMConfig, train_mlm
    from irdistill.data.collection import load_collection

    config = MLMConfig(steps=3, batch_size=2, lr=1e-2, max_length=16, logging_steps=1)
    out = train_mlm(tiny_mlm, load_collection(beir_folder), tmp_path / "mlm", 1, config,
                    show_progress=False)
    before, after = parameters(load(tiny_mlm)), parameters(load(out))
    assert set(before) == set(after)
    domain = EMBEDDINGS | layer(0)
    assert_split(before, after, changed=domain, unchanged=set(before) - domain
                 - {"cls.predictions.decoder.weight"})
    # the output projection is tied to the word embeddings: it moves with them
    assert torch.equal(after["cls.predictions.decoder.weight"],
                       after["bert.embeddings.word_embeddings.weight"])


def test_interrupted_mlm_resumes_from_its_checkpoint_to_the_same_weights(
        tmp_path, tiny_mlm, beir_folder, monkeypatch):
    from irdistill.adapt.mlm import MLMConfig, train_mlm
    from irdistill.data.collection import load_collection

    torch.set_num_threads(1)
    collection = load_collection(beir_folder)
    config = MLMConfig(steps=4, batch_size=2, lr=1e-2, max_length=16, save_steps=2)
    reference = train_mlm(tiny_mlm, collection, tmp_path / "reference", 1, config,
                          show_progress=False)
    # the run stops at step 3 (a non-finite loss): checkpoint-2 is kept, no model
    cross_entropy, calls = torch.nn.functional.cross_entropy, {"n": 0}

    def nan_at_3(*args, **kwargs):
        calls["n"] += 1
        return cross_entropy(*args, **kwargs) * (float("nan") if calls["n"] == 3 else 1.0)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", nan_at_3)
    with pytest.raises(IrdistillError, match="loss became nan at step 3"):
        train_mlm(tiny_mlm, collection, tmp_path / "resumed", 1, config, show_progress=False)
    assert [p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()] == ["checkpoint-2"]
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", cross_entropy)
    resumed = train_mlm(tiny_mlm, collection, tmp_path / "resumed", 1, config,
                        show_progress=False)
    want, got = parameters(load(reference)), parameters(load(resumed))
    assert all(torch.equal(want[name], got[name]) for name in want)


def test_splade_training_with_frozen_domain_updates_only_the_task_part(tmp_path, tiny_mlm,
                                                                        scifact_available):
    from irdistill.models.splade import Splade
    from irdistill.train.splade import load_splade_config, train_splade

    config = load_splade_config(overrides=[
        f"model.name={tiny_mlm}", "data.max_queries=8", "train.batch_size=4", "train.max_steps=2",
        "train.lr=1e-2", "model.max_doc_length=24", "freeze_domain_layers=1"])
    model_dir = train_splade(config, tmp_path / "task", show_progress=False)
    before = parameters(load(tiny_mlm))
    after = parameters(Splade.from_pretrained(str(model_dir), device="cpu").encoders.doc)
    domain = EMBEDDINGS | layer(0) | {"cls.predictions.decoder.weight"}
    assert_split(before, after, changed=layer(1) | HEAD, unchanged=domain)


def test_recombination_takes_the_domain_part_from_one_model_and_the_task_part_from_the_other(
        tiny_mlm):
    task, donor = load(tiny_mlm), load(tiny_mlm)
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(1.0)
    task_before, donor_params = parameters(task), parameters(donor)
    names = recombine(task, donor, 1)
    assert set(names) == EMBEDDINGS | layer(0)
    result = parameters(task)
    for name in result:
        source = donor_params if (name in names or name == "cls.predictions.decoder.weight") \
            else task_before
        assert torch.equal(result[name], source[name]), name


def test_adapt_end_to_end_with_a_tiny_model(tmp_path, tiny_mlm, beir_folder, scifact_available):
    """The recipe on SciFact train (source) and a small BEIR folder (target): every model is
    made, the adapted one is exactly target domain part + source task part, and the evaluation
    compares it with zero-shot SPLADE."""
    from irdistill.adapt.recipe import AdaptConfig, adapt
    from irdistill.config import load_config
    from irdistill.models.splade import Splade

    config = load_config(overrides=[
        f"source.model.name={tiny_mlm}", "source.model.max_doc_length=24",
        "source.data.max_queries=8", "source.train.batch_size=4", "source.train.max_steps=2",
        "source.train.lr=1e-2", f"target={beir_folder}", "layers=1", "mlm.steps=2",
        "mlm.batch_size=2", "mlm.max_length=16", "mlm.lr=1e-2", "depth=3",
        "source_control=true"], cls=AdaptConfig)
    report = adapt(config, tmp_path / "out", show_progress=False)
    out = tmp_path / "out"
    assert set(report["results"]) == {"zero-shot", "adapted k=1", "source domain k=1"}
    for result in report["results"].values():
        assert 0.0 <= result["measures"]["nDCG@10"] <= 1.0
        assert result["index"]["docs"] == 4 and result["index"]["postings"] > 0
    saved = json.loads((out / "results-k1.json").read_text())
    assert saved["models"]["adapted"] == str(out / "k1" / "adapted")

    adapted = parameters(Splade.from_pretrained(str(out / "k1" / "adapted")).encoders.doc)
    target_mlm = parameters(load(out / "k1" / "mlm-target" / "model"))
    task = parameters(Splade.from_pretrained(str(out / "k1" / "task" / "model")).encoders.doc)
    domain = EMBEDDINGS | layer(0) | {"cls.predictions.decoder.weight"}
    for name in adapted:
        assert torch.equal(adapted[name], (target_mlm if name in domain else task)[name]), name
    assert not torch.equal(target_mlm["bert.encoder.layer.0.output.dense.weight"],
                           task["bert.encoder.layer.0.output.dense.weight"])

    again = adapt(config, tmp_path / "out", show_progress=False)  # everything reused
    assert again["results"] == report["results"]
    changed = load_config(overrides=["layers=1", "mlm.steps=3", f"target={beir_folder}",
                                     f"source.model.name={tiny_mlm}"], cls=AdaptConfig)
    with pytest.raises(IrdistillError, match="other settings"):
        adapt(changed, tmp_path / "out", show_progress=False)


def test_folders_made_before_new_training_keys_are_still_accepted(tmp_path):
    """A settings.json hashed before train.freeze_domain_layers, report_to and lora existed
    (their plain JSON without them) still matches the same settings; other settings do not."""
    import hashlib

    from irdistill.adapt.recipe import settings_guard
    from irdistill.config import to_dict
    from irdistill.train.splade import SpladeConfig

    tree = to_dict(SpladeConfig())
    before = {**tree, "train": {k: v for k, v in tree["train"].items()
                                if k not in ("freeze_domain_layers", "report_to", "lora")}}
    digest = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()
                            ).hexdigest()[:12]
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps({"hash": digest}))
    settings_guard(folder, tree)  # accepted
    with pytest.raises(IrdistillError, match="other settings"):
        settings_guard(folder, {**tree, "lambda_q": 1.0})
