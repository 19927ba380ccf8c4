"""tune's default grid in the fine-tuning regime: ``pretrained``/``adapters``, and the note a
fine-tune-looking setup gets without them.

Oracle: the total decay of a run, D = lr * wd * steps in PyTorch's convention, worked out
here by hand (steps = epochs * ceil(n_train / batch_size)), against the fine-tuning bound
D <= 0.03 that ``adamwkit suggest --pretrained`` keeps to.
"""

from __future__ import annotations

import math

import pytest

from adamwkit.tuning import plan

LR, BS, EPOCHS, EXAMPLES = 2e-5, 32, 3, 12_500  # 10,000 train after a 0.2 test split
D_MAX = 0.03


def objective(trial) -> float:  # never called: plan() trains nothing
    raise AssertionError("plan() must not train")


def _largest_d(p) -> float:
    steps = EPOCHS * math.ceil(p.splits.n_train / BS)
    return max(LR * wd * steps for wd in p.config.spec.grid)


def test_a_pretrained_models_default_grid_keeps_the_fine_tuning_bound(tmp_path):
    p = plan(objective, examples=EXAMPLES, lr=LR, batch_size=BS, epochs=EPOCHS,
             pretrained=True, out=tmp_path)  # fmt: skip
    assert p.config.spec.pretrained and not p.config.spec.adapters
    assert p.suggestion is not None and p.suggestion.setup.finetune
    assert 0.0 in p.config.spec.grid and len(p.config.spec.grid) >= 4
    assert _largest_d(p) <= D_MAX
    assert not any("looks like a fine-tune" in n for n in p.notes)


def test_without_the_flag_a_fine_tune_looking_setup_gets_a_note(tmp_path):
    p = plan(objective, examples=EXAMPLES, lr=LR, batch_size=BS, epochs=EPOCHS, out=tmp_path)
    assert not p.config.spec.pretrained
    assert _largest_d(p) > D_MAX  # the from-scratch grid, which the note warns about
    assert any("looks like a fine-tune" in n and "pretrained" in n for n in p.notes), p.notes


def test_the_probe_of_a_pretrained_model_gives_the_fine_tuning_rule(tmp_path):
    """The turning-epoch law is fitted from scratch: for a fine-tune the probe gives
    suggest's fine-tuning value and range (oracle: suggest(pretrained=True) itself)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import objectives
    from adamwkit import suggest
    from adamwkit.tuning.probe import probe

    r = probe(objectives.turns_at_12, examples=200, lr=LR, batch_size=BS, epochs=40,
              folds=2, out=tmp_path, progress=False, pretrained=True)  # fmt: skip
    sug = suggest(lr=LR, batch_size=BS, dataset_size=r.n_train, epochs=40, pretrained=True)
    assert r.rule == "finetune" and r.value == pytest.approx(sug.value, rel=1e-9)
    assert r.low_value == pytest.approx(sug.low_value, rel=1e-9)
    assert r.high_value == pytest.approx(sug.high_value, rel=1e-9)
    assert r.verdict().startswith("A fine-tune of pretrained weights")


def adapter_objective(trial) -> float:
    """A frozen base layer and a trainable head, optimized through trial.optimizer."""
    import torch
    from torch import nn

    torch.manual_seed(trial.seed)
    model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 1))
    for q in model[0].parameters():
        q.requires_grad_(False)
    trial.optimizer(model)
    trial.report_baseline(10.0)
    return 1.0 + abs(trial.weight_decay - 0.3)


def test_frozen_tensors_seen_by_the_optimizer_bring_a_note(tmp_path):
    r = __import__("adamwkit").tune(adapter_objective, examples=40, lr=1e-3,
                                    grid=[0.0, 0.3, 1.0], folds=2, out=tmp_path,
                                    progress=False, test=False)  # fmt: skip
    assert any("2 frozen tensor(s)" in n and "adapters=True" in n for n in r.summary["notes"])
    again = __import__("adamwkit").tune(adapter_objective, examples=40, lr=1e-3,
                                        grid=[0.0, 0.3, 1.0], folds=2, out=tmp_path,
                                        study="said", progress=False, test=False,
                                        adapters=True)  # fmt: skip
    assert not any("frozen tensor" in n for n in again.summary["notes"])
