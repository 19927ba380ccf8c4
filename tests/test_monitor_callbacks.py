"""MonitorCallback for the Hugging Face Trainer and for Lightning: tiny models, 20 CPU steps.

The oracles: the trained model's own ``param.norm()`` at the last (recorded) step, the
gradient norm the LightningModule sees in its own ``on_before_optimizer_step``, and the
parameter names of the model.
"""

from __future__ import annotations

import math
import types
import warnings

import pytest
import torch
from torch import nn

import adamwkit
from adamwkit.monitor import load_log

STEPS, EVERY = 20, 5
RECORDED = [1, 5, 10, 15, 20]


def monitor_keys(metrics):
    return {k for k in metrics if k.startswith("monitor/")}


# ---------------------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from adamwkit.integrations.transformers import MonitorCallback

    class Recorder(transformers.TrainerCallback):
        """Stands for a report_to logger: listed before the monitor, sees every on_log."""

        def __init__(self):
            self.logs = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))

    out = tmp_path_factory.mktemp("hf")
    transformers.set_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50,
                                     n_positions=16, bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids}
            for ids in torch.randint(0, 50, (64, 8), generator=g).tolist()]  # fmt: skip
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=4,
        learning_rate=1e-2, weight_decay=0.1, logging_steps=EVERY, save_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    recorder, callback = Recorder(), MonitorCallback(every=EVERY)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   callbacks=[recorder, callback])  # fmt: skip
    trainer.train()
    return trainer, model, callback, recorder, out


def test_hf_records_the_steps_with_the_model_names(hf_run):
    trainer, model, callback, _, out = hf_run
    # accelerate wrapped the optimizer: the hooks went on the one inside.
    assert type(trainer.optimizer).__name__ == "AcceleratedOptimizer"
    assert callback.log.optimizer == "AdamW"
    assert callback.log.steps.tolist() == RECORDED
    assert callback.saved == out / "monitor.jsonl"
    loaded = load_log(out / "monitor.jsonl")
    assert loaded.steps.tolist() == RECORDED
    names = {row["name"] for row in loaded.history()}
    assert "transformer.h.0.attn.c_attn.weight" in names
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}
    assert callback.verdicts == loaded.verdicts()
    assert callback.monitor is None  # detached


def test_hf_final_norm_is_the_trained_weights_norm(hf_run):
    _, model, callback, _, _ = hf_run
    params = dict(model.named_parameters())
    last = {r["name"]: r for r in callback.log.history() if r["step"] == STEPS}
    for name in ("transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.bias"):
        expected = params[name].detach().norm().item()
        assert last[name]["norm"] == pytest.approx(expected, rel=1e-5)


def test_hf_per_layer_numbers_reach_log_history_and_earlier_loggers(hf_run):
    trainer, _, callback, recorder, _ = hf_run
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in train_logs] == [5, 10, 15, 20]
    layer = "transformer.h.0.attn.c_attn"
    for entry in train_logs:
        assert f"monitor/{layer}/norm" in entry and f"monitor/{layer}/angle" in entry
    # The decayed embedding is a layer of its own: it has an equilibrium norm.
    assert "monitor/transformer.wte/norm_ratio" in train_logs[-1]
    by_layer = {r["name"]: r for r in callback.log.history(by="layer") if r["step"] == STEPS}
    final = train_logs[-1]
    assert final[f"monitor/{layer}/norm"] == pytest.approx(by_layer[layer]["norm"], rel=1e-9)
    wte = by_layer["transformer.wte"]
    ratio = wte["norm"] / wte["pred_norm"]
    assert final["monitor/transformer.wte/norm_ratio"] == pytest.approx(ratio, rel=1e-9)
    # Logged per layer, not per tensor.
    assert not any(k.endswith(".weight/norm") for k in final)
    # A logger listed before the callback (as report_to's are) saw the same keys.
    seen = [e for e in recorder.logs if "loss" in e]
    assert all(monitor_keys(e) == monitor_keys(h) for e, h in zip(seen, train_logs, strict=True))


def test_hf_lazy_optimizer_and_never_found(tmp_path):
    transformers = pytest.importorskip("transformers")
    from adamwkit.integrations.transformers import MonitorCallback

    model = nn.Linear(4, 2)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to="none",
                                          use_cpu=True)  # fmt: skip
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    cb = MonitorCallback(every=1)
    assert isinstance(cb, transformers.TrainerCallback)
    cb.on_train_begin(args, state, control, model=model, optimizer=None)
    assert cb.monitor is None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    cb.on_step_begin(args, state, control, model=model, optimizer=opt)  # created late
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    cb.on_train_end(args, state, control, model=model, optimizer=opt)
    assert cb.log.steps.tolist() == [1]
    assert {t.name for t in cb.log.tensors} == {"weight", "bias"}
    assert load_log(tmp_path / "monitor.jsonl").steps.tolist() == [1]

    never = MonitorCallback(path=tmp_path / "never.jsonl")
    never.on_train_begin(args, state, control, model=model, optimizer=None)
    never.on_step_end(args, state, control, model=model, optimizer=None)
    with pytest.warns(UserWarning, match="never found the optimizer"):
        never.on_train_end(args, state, control, model=model, optimizer=None)
    assert never.log is None and not (tmp_path / "never.jsonl").exists()

    with pytest.raises(ValueError, match="every"):
        MonitorCallback(every=0)


# ---------------------------------------------------------------------------- lightning


@pytest.fixture(scope="module")
def pl_run(tmp_path_factory):
    pl = pytest.importorskip("lightning.pytorch")
    from adamwkit.integrations.lightning import MonitorCallback

    class MemoryLogger(pl.loggers.Logger):
        def __init__(self):
            super().__init__()
            self.metrics = []

        @property
        def name(self):
            return "memory"

        @property
        def version(self):
            return 0

        def log_hyperparams(self, params, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            self.metrics.append((step, dict(metrics)))

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16, bias=False), nn.LayerNorm(16),
                                     nn.Linear(16, 1))  # fmt: skip
            self.grad_norms = {}

        def training_step(self, batch, _):
            x, y = batch
            return ((self.net(x) - y) ** 2).mean()

        def on_before_optimizer_step(self, optimizer):
            # Called after the callbacks' hook, with the gradients the step will use.
            self.grad_norms[self.trainer.global_step + 1] = self.net[0].weight.grad.norm().item()

        def configure_optimizers(self):
            groups = adamwkit.param_groups(self, weight_decay=0.1)
            return adamwkit.AdamW(groups, lr=1e-2)

    out = tmp_path_factory.mktemp("pl")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    module, logger, callback = Tiny(), MemoryLogger(), MonitorCallback(every=EVERY)
    trainer = pl.Trainer(
        max_steps=STEPS, logger=logger, callbacks=[callback], default_root_dir=str(out),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1, log_every_n_steps=5,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|bottleneck).*")
        trainer.fit(module, loader)
    return module, callback, logger, out


def test_pl_records_the_steps_with_the_module_names(pl_run):
    module, callback, _, out = pl_run
    assert callback.log.optimizer == "AdamW"
    assert callback.log.steps.tolist() == RECORDED
    loaded = load_log(out / "monitor.jsonl")
    assert loaded.steps.tolist() == RECORDED
    names = {row["name"] for row in loaded.history()}
    assert names == {n for n, _ in module.named_parameters()} >= {"net.0.weight", "net.1.weight"}
    assert callback.verdicts == loaded.verdicts()
    assert callback.monitor is None


def test_pl_final_norm_and_gradients_are_the_steps_own(pl_run):
    module, callback, _, _ = pl_run
    rows = [r for r in callback.log.history() if r["name"] == "net.0.weight"]
    assert rows[-1]["norm"] == pytest.approx(module.net[0].weight.detach().norm().item(), rel=1e-5)
    # The gradient of the step itself, not the previous step's (the closure runs in step()).
    for r in rows:
        assert r["grad_norm"] == pytest.approx(module.grad_norms[r["step"]], rel=1e-5)


def test_pl_per_layer_numbers_reach_the_logger(pl_run):
    _, callback, logger, _ = pl_run
    logged = [(step, m) for step, m in logger.metrics if monitor_keys(m)]
    assert [step for step, _ in logged] == RECORDED
    last = logged[-1][1]
    by_layer = {r["name"]: r for r in callback.log.history(by="layer") if r["step"] == STEPS}
    assert last["monitor/net.0/norm"] == pytest.approx(by_layer["net.0"]["norm"], rel=1e-9)
    ratio = by_layer["net.0"]["norm"] / by_layer["net.0"]["pred_norm"]
    assert math.isfinite(ratio) and last["monitor/net.0/norm_ratio"] == pytest.approx(ratio)
    assert "monitor/net.1/angle" in last and "monitor/net.1/norm_ratio" not in last  # no decay


def test_pl_never_found_warns_and_saves_nothing(tmp_path):
    pytest.importorskip("lightning.pytorch")
    from adamwkit.integrations.lightning import MonitorCallback

    trainer = types.SimpleNamespace(
        optimizers=[], global_step=0, loggers=[], default_root_dir=str(tmp_path),
        is_global_zero=True,
    )  # fmt: skip
    cb = MonitorCallback()
    cb.on_train_start(trainer, nn.Linear(2, 2))
    cb.on_train_batch_start(trainer, nn.Linear(2, 2), None, 0)
    with pytest.warns(UserWarning, match=r"trainer\.optimizers\[0\]"):
        cb.on_train_end(trainer, nn.Linear(2, 2))
    assert cb.log is None and not (tmp_path / "monitor.jsonl").exists()
