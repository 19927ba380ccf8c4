"""On a CUDA device: fit, populations and tune against the CPU path (skipped without a GPU).

Oracle: the same run on the CPU in float32. Reductions run in another order on the GPU, so
the losses agree to float tolerance, not bit for bit.
"""

from __future__ import annotations

import pytest
import torch

import objectives
import tune_tasks
from adamwkit import Trial, fit, tune
from adamwkit.train import Member, fit_population
from adamwkit.train.loop import DeviceData, RunSettings
from adamwkit.train.population import StackedEngine
from adamwkit.tuning.cv import holdout_split, make_folds

pytestmark = pytest.mark.gpu


def _members(task, lrs=(1e-2,)):
    pool, _ = holdout_split(len(task), task.label_array(), 0.2, 0)
    folds = make_folds(pool, task.label_array(), 3, 0)
    return [
        Member(wd, lr, torch.as_tensor(folds[f][0]), torch.as_tensor(folds[f][1]), 10 + f)
        for wd in (0.0, 0.1, 3.0)
        for lr in lrs
        for f in range(3)
    ]


def test_fit_on_cuda_matches_the_cpu():
    task = tune_tasks.tiny()
    kw = {"val_idx": range(96, 120), "train_idx": range(96), "seed": 3, "epochs": 5}
    cpu = fit(task, 0.1, **kw)
    gpu = fit(task, 0.1, device="cuda", **kw)
    assert next(gpu.model.parameters()).device.type == "cuda"
    assert gpu.val_losses == pytest.approx(cpu.val_losses, rel=1e-4)
    assert gpu.train_losses == pytest.approx(cpu.train_losses, rel=1e-4)


def test_population_on_cuda_matches_the_cpu():
    task = tune_tasks.tiny()
    members = _members(task, lrs=(1e-2, 3e-2))
    cpu = fit_population(task, members, epochs=4, batch_size=16)
    gpu = fit_population(task, members, epochs=4, batch_size=16, device="cuda")
    for a, b in zip(cpu, gpu, strict=True):
        assert b.val_losses == pytest.approx(a.val_losses, rel=1e-4)
        assert all(t.device.type == "cuda" for t in b.state.values())


def test_population_state_lives_where_the_fused_kernel_wants_it():
    task = tune_tasks.tiny()
    members = _members(task)[:2]
    settings = RunSettings(1, 16, "lr", "cosine", 0, torch.device("cuda"))
    engine = StackedEngine(task, members, settings)
    assert all(s.device.type == "cuda" and s.dtype == torch.float32 for s in engine.steps)
    assert engine.data.tensors[0].device.type == "cuda"  # the data moved once
    engine.train_step(torch.stack([m.train_idx[:16] for m in members]))
    assert all(float(s) == 1.0 for s in engine.steps)


def test_bf16_autocast_trains_close_to_fp32():
    task = tune_tasks.tiny()
    kw = {"val_idx": range(96, 120), "train_idx": range(96), "seed": 3, "epochs": 5,
          "device": "cuda"}  # fmt: skip
    fp32 = fit(task, 0.1, **kw)
    bf16 = fit(task, 0.1, precision="bf16", **kw)
    assert bf16.val_losses[-1] == pytest.approx(fp32.val_losses[-1], rel=5e-2)
    assert next(bf16.model.parameters()).dtype == torch.float32  # weights stay float32


def test_data_moves_to_the_device_once():
    task = tune_tasks.tiny()
    data = DeviceData(task, torch.device("cuda"))
    resident = data.tensors[0].data_ptr()
    x, _y = data.batch(torch.tensor([[0, 1], [2, 3]]))
    assert x.device.type == "cuda" and x.shape == (2, 2, 8)
    assert torch.equal(x.cpu(), task.data[0][torch.tensor([[0, 1], [2, 3]])])
    assert data.tensors[0].data_ptr() == resident


@pytest.mark.parametrize("vectorize", ["off", "on"])
def test_tune_on_cuda_matches_the_cpu(tmp_path, vectorize):
    kw = {"folds": 3, "grid": [0.0, 0.05, 0.5], "test": False, "progress": False,
          "vectorize": vectorize}  # fmt: skip
    cpu = tune(tune_tasks.tiny(), out=tmp_path / "cpu", device="cpu", **kw)
    gpu = tune(tune_tasks.tiny(), out=tmp_path / "gpu", device="cuda", **kw)
    assert gpu.summary["device"] == "cuda"
    for a, b in zip(cpu.summary["candidates"], gpu.summary["candidates"], strict=True):
        assert b["fold_losses"] == pytest.approx(a["fold_losses"], rel=1e-4)


def test_an_objective_gets_the_device(tmp_path):
    seen = []

    def objective(trial: Trial) -> float:
        seen.append(trial.device)
        return objectives.plain(trial)

    tune(objective, examples=500, lr=3e-3, batch_size=32, epochs=2, grid=[0.0, 0.1],
         folds=2, out=tmp_path, progress=False, test=False, device="cuda")  # fmt: skip
    assert seen and all(d.type == "cuda" for d in seen)


@pytest.mark.parametrize("setup", ["trainer", "lightning"])
def test_integrations_train_on_cuda(tmp_path, setup):
    n, lr, bs = {"trainer": (192, 1e-3, 16), "lightning": (500, 3e-3, 32)}[setup]
    result = tune(getattr(objectives, setup), examples=n, lr=lr, batch_size=bs, epochs=1,
                  grid=[0.0, 0.1], folds=2, out=tmp_path, progress=False, test=False,
                  device="cuda")  # fmt: skip
    assert all(c["state"] == "complete" for c in result.summary["candidates"])


def test_stacked_attention_on_cuda_matches_one_at_a_time():
    """Regression: the memory-efficient attention kernel's backward failed under vmap on
    CUDA ("LSE is not correctly aligned"); stacked members use the math kernel."""
    from adamwkit.tasks import Task, cross_entropy
    from adamwkit.tasks.charlm import CharTransformer

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 96, (40, 65), generator=g)
    task = Task(name="attn", model=lambda: CharTransformer(width=32, layers=1),
                data=(ids[:, :64], ids[:, 1:]), loss=cross_entropy, epochs=2, batch_size=8,
                lr=3e-3)  # fmt: skip
    members = [Member(wd, 3e-3, torch.arange(32), torch.arange(32, 40), 5) for wd in (0.0, 0.1)]
    stacked = fit_population(task, members, epochs=2, batch_size=8, device="cuda")
    for m, r in zip(members, stacked, strict=True):
        alone = fit(task, m.weight_decay, train_idx=m.train_idx, val_idx=m.val_idx, lr=m.lr,
                    seed=m.seed, epochs=2, batch_size=8, device="cuda")  # fmt: skip
        assert r.val_losses == pytest.approx(alone.val_losses, rel=1e-4)


@pytest.mark.parametrize("stacked", [False, True])
def test_a_training_step_does_not_wait_for_the_gpu(stacked):
    """No host synchronisation inside a step (torch's sync debug mode warns on each)."""
    import warnings

    from adamwkit.train.single import single_engine

    task = tune_tasks.tiny()
    members = _members(task)[:3]
    settings = RunSettings(2, 16, "schedule", "cosine", 0, torch.device("cuda"))
    if stacked:
        engine = StackedEngine(task, members, settings)
        index = torch.stack([m.train_idx[:16] for m in members]).cuda()
    else:
        m = members[0]
        engine = single_engine(task, 0.1, lr=1e-2, seed=0, n_train=len(m.train_idx),
                               settings=settings)  # fmt: skip
        index = m.train_idx[:16].reshape(1, -1).cuda()
    engine.set_training(True)
    for _ in range(2):
        engine.train_step(index)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                engine.train_step(index)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert not [w for w in caught if "synchroniz" in str(w.message)]


def test_lora_population_on_cuda_matches_one_at_a_time():
    """A PEFT LoRA population on one frozen GPT-2, on the GPU: each member against its own
    fit on the GPU, and the base held once there (the population's shared tensors)."""
    pytest.importorskip("peft")
    pytest.importorskip("transformers")
    from adamwkit.tasks.finetune import gpt2_lora_task

    task = gpt2_lora_task()
    pool, _ = holdout_split(len(task), None, task.test_fraction, 0)
    folds = make_folds(pool, None, 3, 0)
    members = [
        Member(wd, task.lr, torch.as_tensor(tr), torch.as_tensor(va), f)
        for wd in (0.0, 0.3, 3.0)
        for f, (tr, va) in enumerate(folds)
    ]
    stacked = fit_population(task, members, epochs=task.epochs, batch_size=task.batch_size,
                             device="cuda")  # fmt: skip
    for m, r in zip(members, stacked, strict=True):
        alone = fit(task, m.weight_decay, train_idx=m.train_idx, val_idx=m.val_idx, lr=m.lr,
                    seed=m.seed, device="cuda")  # fmt: skip
        assert r.val_losses == pytest.approx(alone.val_losses, rel=1e-4)
    settings = RunSettings.resolve(task, epochs=1, batch_size=task.batch_size, decay_scale=None,
                                   schedule=None, warmup_steps=None, device="cuda",
                                   precision="fp32")  # fmt: skip
    engine = StackedEngine(task, members, settings)
    k = len(members)
    assert engine.shared and all(t.device.type == "cuda" for t in engine.shared.values())
    assert all(p.shape[0] == k and "lora_" in n for n, p in engine.params.items())


def test_gpus_put_each_worker_on_the_listed_gpu(tmp_path, capfd):
    """devices=[0] with two workers: both train on cuda:0, say so, and reach the CPU's
    fold losses."""
    kw = {"folds": 3, "grid": [0.0, 0.05, 0.5], "test": False, "progress": False,
          "vectorize": "off"}  # fmt: skip
    cpu = tune("tune_tasks:tiny", out=tmp_path / "cpu", device="cpu", **kw)
    gpu = tune("tune_tasks:tiny", out=tmp_path / "gpu", devices=[0], workers=2, **kw)
    err = capfd.readouterr().err
    assert "worker 0 runs on cuda:0" in err and "worker 1 runs on cuda:0" in err, err
    for a, b in zip(cpu.summary["candidates"], gpu.summary["candidates"], strict=True):
        assert b["fold_losses"] == pytest.approx(a["fold_losses"], rel=1e-4)
