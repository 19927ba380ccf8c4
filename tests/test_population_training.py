"""Population training: member i against a standalone fit with the same seed, fold and values."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import tune_tasks
from adamwkit import Task, fit
from adamwkit.tasks import cross_entropy
from adamwkit.train import evaluate
from adamwkit.train.population import (
    Member,
    fit_population,
    population_loss,
    stacked_forward,
    vectorize_refusal,
)
from adamwkit.tuning.cv import holdout_split, make_folds


class Residual(nn.Module):
    """A model of its own class: trained through torch.func.vmap, not the MLP path."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        return self.out(h + torch.tanh(self.mid(h)))


class WithSpare(Residual):
    """A layer the forward pass never uses: no gradient, so no step (as torch.optim.AdamW)."""

    def __init__(self) -> None:
        super().__init__()
        self.spare = nn.Linear(3, 3)


def variant(task: Task, *, model: str = "mlp", dtype=torch.float32, **settings) -> Task:
    x, y = task.data
    make = {"mlp": task.model, "residual": Residual, "spare": WithSpare}[model]
    settings = {"epochs": 4, "batch_size": task.batch_size, "lr": task.lr, **settings}
    return Task(name=f"tiny-{model}", model=lambda: make().to(dtype), data=(x.to(dtype), y),
                loss=task.loss, labels=task.labels, metric=task.metric, **settings)  # fmt: skip


def members_for(task: Task) -> list[Member]:
    pool, _ = holdout_split(len(task), task.label_array(), 0.2, 0)
    folds = make_folds(pool, task.label_array(), 3, 0)
    return [
        Member(wd, lr, torch.as_tensor(folds[f][0]), torch.as_tensor(folds[f][1]), 10 + f)
        for wd in (0.0, 0.1, 3.0)
        for lr in (1e-2, 3e-2)
        for f in range(3)
    ]


def standalone(task: Task, m: Member, **kw):
    return fit(task, m.weight_decay, train_idx=m.train_idx, val_idx=m.val_idx, lr=m.lr,
               seed=m.seed, **kw)  # fmt: skip


def relative_gap(state: dict[str, torch.Tensor], model: nn.Module) -> float:
    """Largest ||a - b|| / ||b|| over the tensors of a state dict."""
    ref = model.state_dict()
    assert state.keys() == ref.keys()
    return max(float((state[k] - ref[k]).norm() / ref[k].norm()) for k in ref)


@pytest.mark.parametrize("decay_scale", ["lr", "schedule"])
@pytest.mark.parametrize("model", ["mlp", "residual", "spare"])
@pytest.mark.parametrize(("dtype", "rel"), [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_member_equals_standalone_fit(model, dtype, rel, decay_scale):
    """Oracle: fit, one member at a time. float64: weights after the whole run to 1e-9
    relative; float32: validation losses to 1e-3 (the issue's tolerances)."""
    task = variant(tune_tasks.tiny(), model=model, dtype=dtype)
    assert (stacked_forward(task.model()) is None) == (model != "mlp")
    members = members_for(task)
    results = fit_population(task, members, epochs=task.epochs, batch_size=task.batch_size,
                             decay_scale=decay_scale)  # fmt: skip
    for m, r in zip(members, results, strict=True):
        ref = standalone(task, m, decay_scale=decay_scale)
        assert r.val_losses == pytest.approx(ref.val_losses, rel=rel)
        assert r.val_metrics == pytest.approx(ref.val_metrics, rel=rel)
        assert r.train_losses == pytest.approx(ref.train_losses, rel=max(rel, 1e-6))
        if dtype == torch.float64:
            assert relative_gap(r.state, ref.model) < 1e-9


@pytest.mark.parametrize("model", ["mlp", "residual"])
def test_float32_weights_agree_after_ten_steps(model):
    """Oracle: fit; 64 examples in batches of 32 for 5 epochs is 10 steps."""
    task = variant(tune_tasks.tiny(), model=model, epochs=5, batch_size=32)
    members = members_for(task)
    results = fit_population(task, members, epochs=5, batch_size=32)
    for m, r in zip(members, results, strict=True):
        ref = standalone(task, m)
        assert ref.steps == 10
        assert relative_gap(r.state, ref.model) < 1e-5


def test_stacked_forward_is_every_members_forward():
    """Oracle: each member's own module, called on its own slice."""

    def mlp() -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(12, 8, bias=False), nn.GELU(),
            nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.SiLU()), nn.Linear(8, 3),
        )  # fmt: skip

    models = [mlp().eval() for _ in range(4)]
    forward = stacked_forward(models[0])
    assert forward is not None
    params = {n: torch.stack([dict(m.named_parameters())[n] for m in models]) for n, _ in
              models[0].named_parameters()}  # fmt: skip
    x = torch.randn(4, 5, 3, 4)
    with torch.no_grad():
        out = forward(params, x)
        for i, m in enumerate(models):
            torch.testing.assert_close(out[i], m(x[i]), rtol=1e-5, atol=1e-6)
    assert stacked_forward(Residual()) is None
    assert stacked_forward(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))) is None


@pytest.mark.parametrize("shape", [(7, 3), (7, 20), (2, 6, 5)])
def test_population_cross_entropy_is_each_members(shape):
    """Oracle: the task's cross_entropy, member by member (both layouts, sequence outputs)."""
    out = torch.randn(5, *shape, dtype=torch.float64)
    y = torch.randint(0, shape[-1], (5, *shape[:-1]))
    y[1:].view(-1)[::3] = -100  # ignored targets (padding) leave the mean, as in torch
    got = population_loss(cross_entropy)(out, y)
    want = torch.stack([cross_entropy(out[i], y[i]) for i in range(5)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    mse = population_loss(lambda o, t: ((o - t.unsqueeze(-1)) ** 2).mean())  # via vmap
    assert mse(out, y).shape == (5,)


def test_dropout_draws_independent_masks_and_validation_runs_without_them():
    """Oracles: identical members stay identical without dropout and part with it; each
    member's validation loss equals evaluate() on its own weights (eval mode)."""
    base = tune_tasks.tiny()

    def with_dropout() -> nn.Module:
        return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Dropout(0.3), nn.Linear(32, 3))

    task = Task(name="drop", model=with_dropout, data=base.data, loss=base.loss, epochs=3,
                batch_size=16)  # fmt: skip
    twin = members_for(task)[0]
    results = fit_population(task, [twin] * 3, epochs=3, batch_size=16)
    losses = {r.train_losses[-1] for r in results}
    assert len(losses) == 3
    for r in results:
        model = with_dropout()
        model.load_state_dict(r.state)
        assert r.val_loss == pytest.approx(evaluate(model, task, twin.val_idx)[0], rel=1e-5)
    plain = fit_population(variant(base), [twin] * 3, epochs=3, batch_size=16)
    assert len({r.train_losses[-1] for r in plain}) == 1


def test_a_metric_returning_a_float_is_scored_member_by_member():
    base = tune_tasks.tiny()
    task = Task(name="f", model=base.model, data=base.data, loss=base.loss, epochs=2,
                metric=lambda o, t: float((o.argmax(-1) == t).float().mean()))  # fmt: skip
    members = members_for(task)[:3]
    results = fit_population(task, members, epochs=2, batch_size=16)
    for m, r in zip(members, results, strict=True):
        ref = standalone(task, m, epochs=2, batch_size=16)
        assert r.val_metrics == pytest.approx(ref.val_metrics, abs=1e-6)


def test_a_diverging_member_leaves_the_others_alone():
    task = tune_tasks.tiny()
    members = members_for(task)[:2]
    bad = Member(1e30, 1e-2, members[0].train_idx, members[0].val_idx, members[0].seed)
    results = fit_population(task, [bad, *members], epochs=2, batch_size=16)
    assert "became" in results[0].diverged
    for m, r in zip(members, results[1:], strict=True):
        ref = standalone(task, m, epochs=2)
        assert r.val_losses == pytest.approx(ref.val_losses, rel=1e-5)


def test_members_must_share_their_split_sizes():
    task = tune_tasks.tiny()
    a, b = members_for(task)[:2]
    short = Member(0.0, 1e-2, a.train_idx, a.val_idx[:-1], 0)
    with pytest.raises(ValueError, match=r"validation sets of sizes \[\d+, \d+\]"):
        fit_population(task, [b, short], epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="training sets of sizes"):
        fit_population(task, [b, Member(0.0, 1e-2, a.train_idx[:-1], a.val_idx, 0)],
                       epochs=1, batch_size=16)  # fmt: skip
    with pytest.raises(ValueError, match="members is empty"):
        fit_population(task, [], epochs=1, batch_size=16)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, r"epochs=0 is invalid: expected a whole number >= 1"),
        ({"batch_size": 2.5}, "batch_size=2.5 is invalid: expected a whole number >= 1"),
        ({"decay_scale": "paper"}, "decay_scale='paper' is invalid: expected one of 'lr'"),
        ({"schedule": "step"}, "schedule='step' is invalid: expected one of"),
        ({"weight_decay": -1.0}, r"members\[1\].weight_decay=-1.0 is invalid"),
        ({"lr": 0.0}, r"members\[1\].lr=0.0 is invalid"),
        ({"train_idx": torch.tensor([0, 500])}, r"members\[1\].train_idx is invalid: "
         r"expected indices in \[0, 119\]"),
    ],
)  # fmt: skip
def test_bad_input_names_the_argument_and_the_range(change, message):
    task = tune_tasks.tiny()
    good = members_for(task)[0]
    settings = {"epochs": 1, "batch_size": 16}
    member_fields = {k: v for k, v in change.items() if k in Member.__dataclass_fields__}
    settings.update({k: v for k, v in change.items() if k not in member_fields})
    bad = dataclasses.replace(good, **member_fields)
    with pytest.raises(ValueError, match=message):
        fit_population(task, [good, bad], **settings)


def test_tied_weights_are_refused_by_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    model[2].weight = model[0].weight
    assert "'2.weight' is the same tensor as '0.weight'" in vectorize_refusal(model)


def test_batchnorm_is_refused_by_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    assert "BatchNorm1d at '1'" in vectorize_refusal(model)
    task = tune_tasks.tiny()
    x, y = task.data
    bn = Task(name="bn", model=lambda: nn.Sequential(nn.Linear(8, 3), nn.BatchNorm1d(3)),
              data=(x, y), loss=task.loss)  # fmt: skip
    with pytest.raises(ValueError, match="not vectorizable: BatchNorm1d"):
        fit_population(bn, members_for(task)[:1], epochs=1, batch_size=16)


def test_population_under_a_float64_default_dtype(float64_default):
    """Step counters are float32 on the parameters' device whatever the default dtype (the
    fused kernel's requirement); oracle: fit, one member at a time."""
    task = variant(tune_tasks.tiny(), dtype=torch.float64)
    members = members_for(task)[:2]
    results = fit_population(task, members, epochs=2, batch_size=16)
    for m, r in zip(members, results, strict=True):
        ref = standalone(task, m, epochs=2, batch_size=16)
        assert r.val_losses == pytest.approx(ref.val_losses, rel=1e-9)


def test_overrides_in_param_groups_mean_the_same_stacked_and_alone():
    """A fixed override (out.weight at 0.05) stays 0.05 for every member, a scale ("x3")
    and True follow the member's value, as in a standalone fit (the oracle), in float64."""
    base = variant(tune_tasks.tiny(), model="residual", dtype=torch.float64)
    overrides = {"out.weight": 0.05, "mid.weight": "x3", "inp.bias": True}
    task = dataclasses.replace(base, param_groups={"overrides": overrides})
    members = members_for(task)
    results = fit_population(task, members, epochs=task.epochs, batch_size=task.batch_size)
    for m, r in zip(members, results, strict=True):
        ref = standalone(task, m)
        assert relative_gap(r.state, ref.model) < 1e-9
    # the override changed the run: without it the weights differ
    plain = fit_population(base, members[3:4], epochs=base.epochs, batch_size=base.batch_size)
    assert relative_gap(plain[0].state, standalone(task, members[3]).model) > 1e-6
