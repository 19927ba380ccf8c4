"""Fine-tune populations: a frozen base held once, adapters stacked; each member against its
standalone fit (the oracle), the base's memory through the population's own accounting and
the tensors' storage, and the tune API and CLI on a PEFT LoRA GPT-2."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("peft")
pytest.importorskip("transformers")

from adamwkit import Task, fit, tune
from adamwkit.cli import main
from adamwkit.tasks import accuracy, cross_entropy
from adamwkit.tasks.finetune import gpt2_lora_task
from adamwkit.train.loop import RunSettings
from adamwkit.train.population import (
    Member,
    StackedEngine,
    fit_population,
    population_memory,
    vectorize_refusal,
)
from adamwkit.tuning.cv import holdout_split, make_folds

GRID = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)
REL = 1e-5  # float32: batched products round differently from one member's


def fold_indices(task: Task, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """tune's folds: the holdout split, then 3 folds of the pool (fold f trains with seed
    seed + f)."""
    pool, _ = holdout_split(len(task), None, task.test_fraction, seed)
    return [(torch.as_tensor(t), torch.as_tensor(v)) for t, v in make_folds(pool, None, 3, seed)]


def members_for(task: Task, grid=GRID, seed: int = 0) -> list[Member]:
    folds = fold_indices(task, seed)
    return [
        Member(wd, task.lr, tr, va, seed + f) for wd in grid for f, (tr, va) in enumerate(folds)
    ]


def standalone(task: Task, m: Member):
    return fit(task, m.weight_decay, train_idx=m.train_idx, val_idx=m.val_idx, lr=m.lr,
               seed=m.seed)  # fmt: skip


def assert_close(got: list[float], want: list[float], rel: float = REL) -> None:
    assert len(got) == len(want)
    assert got == pytest.approx(want, rel=rel)


def assert_member_equals_fit(task: Task, m: Member, result, rel: float = REL) -> None:
    ref = standalone(task, m)
    assert_close(result.train_losses, ref.train_losses, rel)
    assert_close(result.val_losses, ref.val_losses, rel)
    assert_close(result.val_metrics, ref.val_metrics, rel)
    trained = {n for n, p in ref.model.named_parameters() if p.requires_grad}
    want = ref.model.state_dict()
    for n in trained:
        gap = float((result.state[n] - want[n]).norm() / want[n].norm().clamp_min(1e-12))
        assert gap < 1e-4, n


# --- (a) PEFT LoRA on a config-built GPT-2 ------------------------------------------------


@pytest.mark.parametrize(("decay_toward", "grid"), [("zero", GRID), ("init", (0.3, 3.0))])
def test_lora_population_member_equals_standalone_fit(decay_toward, grid):
    """6 weight decays x 3 folds of LoRA adapters on one frozen GPT-2; each member's
    per-epoch losses, accuracies and adapter weights equal its own fit (decay toward zero,
    and toward each member's initial adapters)."""
    task = gpt2_lora_task(decay_toward=decay_toward)
    members = members_for(task, grid)
    results = fit_population(task, members, epochs=task.epochs, batch_size=task.batch_size)
    assert len(results) == len(grid) * 3
    for m, r in zip(members, results, strict=True):
        assert not r.diverged
        assert_member_equals_fit(task, m, r)
    # the weight decay acted: the strongest and weakest decay ended apart on each fold
    first, last = results[:3], results[-3:]
    assert all(a.train_losses[-1] != b.train_losses[-1] for a, b in zip(first, last, strict=True))


# --- (b) the frozen base is held once ------------------------------------------------------


def _storages(tensors) -> dict[int, int]:
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}


def test_lora_base_is_stored_once():
    """The population's accounting (shared + k x per member) against one model's tensors,
    and the storage: every frozen tensor is one storage (the tied head is the embedding's),
    not copied per member, and unchanged by training."""
    task = gpt2_lora_task()
    members = members_for(task)
    k = len(members)
    settings = RunSettings.resolve(task, epochs=1, batch_size=16, decay_scale=None, schedule=None,
                                   warmup_steps=None, device="cpu", precision="fp32")  # fmt: skip
    engine = StackedEngine(task, members, settings)
    torch.manual_seed(0)
    one = task.model()
    frozen = {n: p for n, p in one.named_parameters() if not p.requires_grad}
    trainable = {n: p for n, p in one.named_parameters() if p.requires_grad}
    assert frozen and trainable and all("lora_" in n for n in trainable)
    assert vectorize_refusal(one) is None  # GPT-2's tied wte / lm_head are frozen: allowed

    # only the adapters have a member dim; the base is the model's own shape, same values
    assert set(engine.params) == set(trainable)
    for n, p in trainable.items():
        assert engine.params[n].shape == (k, *p.shape)
    for n, p in frozen.items():
        assert engine.shared[n].shape == p.shape and torch.equal(engine.shared[n], p)
    head = "model.base_model.model.lm_head.weight"
    embedding = "model.base_model.model.transformer.wte.weight"
    assert (engine.shared[head].untyped_storage().data_ptr()
            == engine.shared[embedding].untyped_storage().data_ptr())  # fmt: skip

    # the accounting: base once, per member 4 x the adapters (weights, grads, 2 moments)
    base_bytes = sum(_storages([*frozen.values(), *one.buffers()]).values())
    adapter_bytes = sum(p.numel() * p.element_size() for p in trainable.values())
    memory = engine.memory()
    assert memory.shared == base_bytes
    assert memory.per_member == 4 * adapter_bytes
    assert memory.members == k and memory.total == base_bytes + k * 4 * adapter_bytes
    # ...and the storage behind it: one base, k adapters, nothing else (no k-fold copy)
    held = _storages([*engine.shared.values(), *engine.params.values()])
    assert sum(held.values()) == base_bytes + k * adapter_bytes
    assert len(_storages(engine.shared.values())) == len(_storages(frozen.values()))

    # the estimate tune packs by counts the same base once
    estimate = population_memory(task, 16)
    assert estimate.shared == base_bytes
    assert estimate.per_member >= 5 * adapter_bytes  # + activations

    # a step leaves the shared base in place and unchanged; the adapters move
    pointers = {n: t.untyped_storage().data_ptr() for n, t in engine.shared.items()}
    lora_b = next(n for n in trainable if "lora_B" in n)
    before = engine.params[lora_b].detach().clone()
    engine.set_training(True)
    engine.train_step(torch.stack([m.train_idx[:16] for m in members]))
    assert {n: t.untyped_storage().data_ptr() for n, t in engine.shared.items()} == pointers
    assert all(torch.equal(engine.shared[n], p) for n, p in frozen.items())
    assert not torch.equal(engine.params[lora_b], before)
    # the moments the step allocated: 2 per adapter per member, as counted (real storages)
    moments = _storages([*engine.exp_avgs, *engine.exp_avg_sqs])
    assert sum(moments.values()) == 2 * k * adapter_bytes


# --- (c) adapters on plain modules, full fine-tuning with a frozen embedding ---------------


class LowRank(nn.Module):
    """``y = W x + b + B A x``: a frozen ``nn.Linear`` (the pretrained base, built under a
    fixed seed) plus a trainable low-rank update, B zero at the start (LoRA's init)."""

    def __init__(self, fan_in: int, fan_out: int, rank: int = 2) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1000 + fan_in * fan_out)
            self.base = nn.Linear(fan_in, fan_out).requires_grad_(False)
        self.A = nn.Parameter(torch.randn(rank, fan_in) / math.sqrt(fan_in))
        self.B = nn.Parameter(torch.zeros(fan_out, rank))

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (x @ self.A.t()) @ self.B.t()


class Adapted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = LowRank(8, 16), LowRank(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.tanh(self.inp(x)))


class FrozenEmbedding(nn.Module):
    """Full fine-tuning of a pretrained model (every weight from a fixed seed) with its
    embedding frozen."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            self.embed = nn.Embedding(20, 8).requires_grad_(False)
            self.mid, self.head = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(torch.tanh(self.mid(self.embed(ids).mean(dim=1))))


def frozen_first_layer() -> nn.Module:
    """An MLP (the batched-product path) whose pretrained first layer is frozen."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        first = nn.Linear(8, 16).requires_grad_(False)
    return nn.Sequential(first, nn.Tanh(), nn.Linear(16, 3))


def plain_task(kind: str, decay_toward: str = "zero") -> Task:
    g = torch.Generator().manual_seed(0)
    if kind == "embedding":
        x = torch.randint(0, 20, (90, 6), generator=g)
        y = x.sum(dim=1) % 3
    else:
        x = torch.randn(90, 8, generator=g)
        y = (x @ torch.randn(8, 3, generator=g)).argmax(dim=1)
    model = {"adapters": Adapted, "embedding": FrozenEmbedding, "mlp": frozen_first_layer}[kind]
    return Task(name=f"finetune-{kind}", model=model, data=(x, y), loss=cross_entropy,
                metric=accuracy, epochs=3, batch_size=16, lr=3e-2,
                decay_toward=decay_toward)  # fmt: skip


@pytest.mark.parametrize("decay_toward", ["zero", "init"])
@pytest.mark.parametrize("kind", ["adapters", "embedding", "mlp"])
def test_plain_fine_tunes_member_equals_standalone_fit(kind, decay_toward):
    """Adapters on plain modules, a frozen embedding, a frozen first MLP layer (batched
    products with a shared weight): each member equals its fit; the frozen tensors are
    shared, not stacked."""
    task = plain_task(kind, decay_toward)
    members = members_for(task)
    results = fit_population(task, members, epochs=task.epochs, batch_size=task.batch_size)
    for m, r in zip(members, results, strict=True):
        assert_member_equals_fit(task, m, r)
        torch.manual_seed(m.seed)
        ref = task.model()
        for n, p in ref.named_parameters():
            if not p.requires_grad:  # the frozen tensor every member reads, unchanged
                assert torch.equal(r.state[n], p)
    if decay_toward == "init":  # the option acts: toward zero ends elsewhere
        zero = fit_population(plain_task(kind), members[-3:], epochs=task.epochs,
                              batch_size=task.batch_size)  # fmt: skip
        assert zero[0].train_losses[-1] != results[-3].train_losses[-1]


def test_frozen_tensor_that_differs_between_members_is_stacked():
    """A frozen tensor drawn from the member's seed is not the same base: it is stacked
    (per member), and each member still equals its fit."""

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(8, 16).requires_grad_(False), nn.Tanh(), nn.Linear(16, 3))

    base = plain_task("mlp")
    task = Task(name="own-frozen", model=model, data=base.data, loss=cross_entropy,
                epochs=2, batch_size=16, lr=3e-2)  # fmt: skip
    members = members_for(task, grid=(0.1, 1.0))
    settings = RunSettings.resolve(task, epochs=1, batch_size=16, decay_scale=None, schedule=None,
                                   warmup_steps=None, device="cpu", precision="fp32")  # fmt: skip
    engine = StackedEngine(task, members, settings)
    assert engine.params["0.weight"].shape == (6, 16, 8) and "0.weight" not in engine.shared
    results = fit_population(task, members, epochs=2, batch_size=16)
    for m, r in zip(members, results, strict=True):
        assert_member_equals_fit(task, m, r)


def test_tied_trainable_weights_are_still_refused():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids: Tensor) -> Tensor:
            return self.head(self.embed(ids))

    assert "tied weights" in (vectorize_refusal(Tied()) or "")
    frozen = Tied().requires_grad_(False)
    assert vectorize_refusal(frozen) is None


# --- (d) tune's API and CLI on the LoRA population ----------------------------------------


def check_tuned(task: Task, candidates: list[dict], grid=GRID) -> None:
    """Each candidate's fold losses against the standalone fits of its folds."""
    folds = fold_indices(task)
    assert sorted(c["weight_decay"] for c in candidates) == sorted(grid)
    for cand in candidates:
        assert cand["state"] == "complete"
        expected = [
            fit(task, cand["weight_decay"], train_idx=tr, val_idx=va, seed=f).val_loss
            for f, (tr, va) in enumerate(folds)
        ]
        assert cand["fold_losses"] == pytest.approx(expected, rel=REL)


def test_tune_api_runs_the_lora_population(tmp_path):
    task = gpt2_lora_task()
    result = tune(task, grid=list(GRID), folds=3, vectorize="on", out=tmp_path, progress=False,
                  test=False, seed=0, prune=False)  # fmt: skip
    summary = result.summary
    assert summary["stacking"]["mode"] == "on" and summary["stacking"]["members"] == 18
    check_tuned(task, summary["candidates"])


def test_tune_cli_runs_the_lora_population(tmp_path, capsys):
    task = gpt2_lora_task()
    memory = population_memory(task, task.batch_size)
    # room for the base once and 6 members: 3 populations of 6
    budget = (memory.shared + 6.5 * memory.per_member) / 2**30
    code = main(["tune", "adamwkit.tasks.finetune:gpt2_lora_task", "--grid",
                 ",".join(map(str, GRID)), "--folds", "3", "--out", str(tmp_path), "--no-test",
                 "--quiet", "--vectorize", "on", "--no-prune-chance", "--max-memory",
                 repr(budget), "--json"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stacking"]["mode"] == "on" and summary["stacking"]["members"] == 6
    check_tuned(task, summary["candidates"])


@pytest.mark.parametrize(("kw", "message"), [
    ({"length": 1}, "length=1 is invalid: expected a whole number >= 2"),
    ({"n_examples": 1}, "n_examples=1 is invalid: expected a whole number >= 2"),
    ({"rank": 0}, "rank=0 is invalid: expected a whole number >= 1"),
    ({"rank": 2.5}, "rank=2.5 is invalid"),
    ({"n_embd": 30, "n_head": 4}, "n_embd=30 is invalid: expected a multiple of n_head=4"),
    ({"decay_toward": "base"}, "decay_toward='base' is invalid: expected one of 'zero', 'init'"),
])  # fmt: skip
def test_gpt2_lora_task_refuses_bad_arguments_naming_them(kw, message):
    with pytest.raises(ValueError, match=message) as caught:
        gpt2_lora_task(**kw)
    assert "\n" not in str(caught.value)
