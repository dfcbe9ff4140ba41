"""train.lora: LoRA through peft on tiny models of two families; only the low-rank updates and
the head train; the saved model is a plain, merged checkpoint that transformers and
sentence-transformers load without peft (and score alike); an interrupted LoRA run resumes to
the same weights."""
import pytest
import torch
from test_train_eval import interrupt_at_batch, make_config, toy  # noqa: F401  (fixture)
from tiny_models import build_tiny_model

from irdistill.errors import IrdistillError

pytest.importorskip("peft", reason="the lora extra is not installed")

LORA = ["train.lora.r=4", "train.lora.alpha=8", "train.lora.dropout=0.0", "train.lr=5e-3",
        "train.head_lr=5e-3", "train.epochs=1", "train.precision=fp32"]


def weights(folder):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


@pytest.mark.parametrize("family, targets", [("bert", ("query", "value")),
                                             ("electra", ("query", "value"))])
def test_lora_trains_the_low_rank_updates_and_the_head_and_saves_a_plain_model(
        toy, tmp_path, family, targets):
    from irdistill.train import engine

    base = build_tiny_model(family, tmp_path / family)
    config = make_config(toy, base, *LORA)
    model_dir = engine.train(config, tmp_path / "run", show_progress=False)
    files = {p.name for p in model_dir.iterdir()}
    assert "adapter_model.safetensors" not in files and "adapter_config.json" not in files
    before, after = weights(base), weights(model_dir)
    assert set(before) == set(after)  # the same architecture: nothing of peft's is left
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    encoder = {n for n in before if n.startswith(f"{family}.")}
    assert changed - encoder  # the head trained
    updated = {n for n in changed & encoder}
    assert updated and all(any(f".{t}." in n for t in targets) and n.endswith("weight")
                           for n in updated)  # only the target layers' weights moved (merged)

    # sentence-transformers loads the folder as it is and scores as irdistill does
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from irdistill.models.cross_encoder import CrossEncoder

    pairs = [("what are stars", "Stars are huge balls of hot plasma."),
             ("how do cells divide", "Cells divide by mitosis.")]
    ours = CrossEncoder.from_pretrained(str(model_dir), device="cpu").score(pairs)
    theirs = STCrossEncoder(str(model_dir), device="cpu").predict(pairs).tolist()
    assert theirs == pytest.approx(ours, abs=1e-4)


def test_an_interrupted_lora_run_resumes_to_the_same_weights(toy, tiny_bert, tmp_path,
                                                             monkeypatch, caplog):
    from irdistill.train import engine

    torch.set_num_threads(1)
    config = make_config(toy, tiny_bert, *LORA, "train.epochs=2", "train.save_steps=2")
    reference = engine.train(config, tmp_path / "reference", show_progress=False)
    restore = interrupt_at_batch(monkeypatch, 6)  # the loader reads a batch ahead: in step 5
    with pytest.raises(KeyboardInterrupt):
        engine.train(config, tmp_path / "resumed", show_progress=False)
    checkpoints = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert checkpoints and not (tmp_path / "resumed" / "model").exists()
    assert "adapter_model.safetensors" in {p.name for p in
                                           (tmp_path / "resumed" / "checkpoints" /
                                            checkpoints[-1]).iterdir()}
    restore()
    with caplog.at_level("INFO", logger="irdistill.train"):
        resumed = engine.train(config, tmp_path / "resumed", show_progress=False)
    assert f"resuming from {tmp_path / 'resumed' / 'checkpoints' / checkpoints[-1]}" in caplog.text
    want, got = weights(reference), weights(resumed)
    assert all(torch.equal(want[n], got[n]) for n in want)


@pytest.mark.parametrize("setting, message", [
    ("train.lora.r=0", "train.lora.r=0 must be at least 1"),
    ("train.lora.dropout=1.0", "train.lora.dropout=1.0 must be in"),
    ("train.lora.target_modules=[nothing_here]", "LoRA: "),
])
def test_bad_lora_settings_fail_before_training(toy, tiny_bert, tmp_path, setting, message):
    from irdistill.train import engine

    with pytest.raises(IrdistillError, match=message):
        engine.train(make_config(toy, tiny_bert, *LORA, setting), tmp_path / "x",
                     show_progress=False)
    assert not (tmp_path / "x").exists()


def test_lora_with_keep_best_saves_the_best_checkpoint_merged(toy, tiny_bert, tmp_path,
                                                             monkeypatch):
    """Evaluations at steps 3, 6, 9 score 0.2, 0.6, 0.5: the saved model is step 6's adapter
    merged, the weights a 6-step run (constant learning rate) ends with, and not step 9's."""
    from test_train_eval import fixed_evaluations, outcome

    from irdistill.train import engine

    torch.set_num_threads(1)
    common = [*LORA, "data.dev_fraction=0.25", "train.epochs=3", "train.eval_steps=3",
              "train.scheduler=constant", "train.warmup_ratio=0"]
    fixed_evaluations(monkeypatch, [0.2, 0.6, 0.5])
    best = engine.train(make_config(toy, tiny_bert, *common, "train.keep_best=true"),
                        tmp_path / "best", show_progress=False)
    assert outcome(tmp_path / "best")["selected_step"] == 6
    fixed_evaluations(monkeypatch, [0.2, 0.6])
    six = engine.train(make_config(toy, tiny_bert, *common, "train.max_steps=6"),
                       tmp_path / "six", show_progress=False)
    fixed_evaluations(monkeypatch, [0.2, 0.6, 0.5])
    last = engine.train(make_config(toy, tiny_bert, *common), tmp_path / "last",
                        show_progress=False)
    got, want, nine = weights(best), weights(six), weights(last)
    assert {p.name for p in best.iterdir()} >= {"model.safetensors", "config.json"}
    assert "adapter_config.json" not in {p.name for p in best.iterdir()}
    assert all(torch.allclose(got[n], want[n], atol=1e-6) for n in want)
    assert not all(torch.allclose(got[n], nine[n], atol=1e-6) for n in nine)
