"""MonitorCallback for the Hugging Face Trainer and for Lightning: tiny models, 20 CPU steps.

The oracles: the trained model's own ``param.norm()`` at the last (recorded) step, the
gradient norm the LightningModule sees in its own ``on_before_optimizer_step``, the
parameter names of the model, the Trainer's own list of decayed parameters and its linear
schedule, and Kosson et al.'s closed-form equilibrium norm.
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


def _hf_run(out, per_layer):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from adamwkit.integrations.transformers import MonitorCallback

    class Recorder(transformers.TrainerCallback):
        """Stands for a report_to logger: listed before the monitor, sees every on_log."""

        def __init__(self):
            self.logs = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))

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
    recorder, callback = Recorder(), MonitorCallback(every=EVERY, per_layer=per_layer)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   callbacks=[recorder, callback])  # fmt: skip
    trainer.train()
    return trainer, model, callback, recorder, out


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    """The default: a handful of summary keys per log event."""
    return _hf_run(tmp_path_factory.mktemp("hf"), per_layer=False)


@pytest.fixture(scope="module")
def hf_layers_run(tmp_path_factory):
    """per_layer=True: the per-layer keys too."""
    return _hf_run(tmp_path_factory.mktemp("hf-layers"), per_layer=True)


def decayed_layers(trainer, model):
    """The layers holding a tensor the Trainer decays (its own rule, not the monitor's); a
    tied weight (lm_head, the embedding) counts once, under its first name."""
    named = dict(model.named_parameters())
    return {n.rsplit(".", 1)[0] for n in trainer.get_decay_parameter_names(model) if n in named}


def expected_summary(log, step, decayed):
    """The decayed layers that are scale-invariant and those that are not, judged by
    MonitorLog.scale_invariant on the log's records up to ``step`` (what the callback had
    seen when it logged that step)."""
    upto = log.steps <= step
    part = type(log)(log.tensors, log.every, log.optimizer, log.steps[upto], log.values[upto],
                     log.decay[upto], log.lr[upto], log.beta1[upto])  # fmt: skip
    layers = part.layers()
    invariant = dict(zip([t.name for t in layers.tensors], layers.scale_invariant(), strict=True))
    return {name for name in decayed if invariant[name]}, {n for n in decayed if not invariant[n]}


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


def test_hf_logs_a_handful_of_summary_keys_by_default(hf_run):
    from adamwkit.integrations._monitor import SUMMARY_KEYS

    trainer, model, callback, recorder, _ = hf_run
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in train_logs] == [5, 10, 15, 20]
    decayed = decayed_layers(trainer, model)
    assert len(decayed) >= 4
    for entry in train_logs:
        keys = monitor_keys(entry)
        invariant, reference = expected_summary(callback.log, entry["step"], decayed)
        # Five keys, the median ratio only when a scale-invariant layer exists.
        assert keys == set(SUMMARY_KEYS) - (set() if invariant else {"monitor/norm_ratio_median"})
        assert len(keys) <= 5
        assert entry["monitor/layers_reference"] == len(reference)
        at = entry["monitor/layers_equilibrium"] + entry["monitor/layers_off_equilibrium"]
        assert at == len(invariant)
        # The Trainer's linear schedule: step s runs at 1e-2 * (20 - (s - 1)) / 20.
        lr = 1e-2 * (STEPS - (entry["step"] - 1)) / STEPS
        assert entry["monitor/decay_per_step"] == pytest.approx(lr * 0.1, rel=1e-6)
    # A logger listed before the callback (as report_to's are) saw the same keys.
    seen = [e for e in recorder.logs if "loss" in e]
    assert all(monitor_keys(e) == monitor_keys(h) for e, h in zip(seen, train_logs, strict=True))


def test_hf_per_layer_numbers_reach_log_history_and_earlier_loggers(hf_layers_run):
    from adamwkit.integrations._monitor import SUMMARY_KEYS

    trainer, model, callback, recorder, _ = hf_layers_run
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
    assert final[f"monitor/{layer}/grad_cos"] == pytest.approx(by_layer[layer]["grad_cos"])
    wte = by_layer["transformer.wte"]
    ratio = wte["norm"] / wte["pred_norm"]
    assert final["monitor/transformer.wte/norm_ratio"] == pytest.approx(ratio, rel=1e-9)
    # Logged per layer, not per tensor: four keys a layer (norm_ratio only if decayed).
    assert not any(k.endswith(".weight/norm") for k in final)
    layers = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad}
    decayed = decayed_layers(trainer, model)
    per_layer = monitor_keys(final) - set(SUMMARY_KEYS)
    assert len(per_layer) == 3 * len(layers) + len(decayed)
    assert set(SUMMARY_KEYS) - {"monitor/norm_ratio_median"} <= monitor_keys(final)
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


def _pl_run(out, per_layer):
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

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    module, logger, callback = (
        Tiny(),
        MemoryLogger(),
        MonitorCallback(every=EVERY, per_layer=per_layer),
    )
    trainer = pl.Trainer(
        max_steps=STEPS, logger=logger, callbacks=[callback], default_root_dir=str(out),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1, log_every_n_steps=5,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|bottleneck).*")
        trainer.fit(module, loader)
    return module, callback, logger, out


@pytest.fixture(scope="module")
def pl_run(tmp_path_factory):
    """The default: a handful of summary keys per recorded step."""
    return _pl_run(tmp_path_factory.mktemp("pl"), per_layer=False)


@pytest.fixture(scope="module")
def pl_layers_run(tmp_path_factory):
    """per_layer=True: the per-layer keys too."""
    return _pl_run(tmp_path_factory.mktemp("pl-layers"), per_layer=True)


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


def test_pl_logs_a_handful_of_summary_keys_by_default(pl_run):
    """net.0 (a weight a LayerNorm follows) is scale-invariant, net.2 (the head) is not;
    net.1 (the LayerNorm) is not decayed."""
    from adamwkit.integrations._monitor import SUMMARY_KEYS

    module, callback, logger, _ = pl_run
    logged = [(step, m) for step, m in logger.metrics if monitor_keys(m)]
    assert [step for step, _ in logged] == RECORDED
    for _, metrics in logged:
        assert monitor_keys(metrics) == set(SUMMARY_KEYS)  # five keys, whatever the model
        assert metrics["monitor/layers_reference"] == 1
        assert (
            metrics["monitor/layers_equilibrium"] + metrics["monitor/layers_off_equilibrium"] == 1
        )
        assert metrics["monitor/decay_per_step"] == pytest.approx(1e-2 * 0.1)
    assert callback.log.layers().scale_invariant() == [True, False, False]
    # The median over one scale-invariant layer: net.0's norm over Kosson et al.'s
    # sqrt(lr * C / (2 * wd)) at the last step (a constant lr: the last record is judged).
    pred = math.sqrt(1e-2 * 128 / (2 * 0.1))
    ratio = module.net[0].weight.detach().norm().item() / pred
    last = logged[-1][1]
    assert last["monitor/norm_ratio_median"] == pytest.approx(ratio, rel=1e-5)
    near = 0.8 <= ratio <= 1.25
    assert last["monitor/layers_equilibrium"] == (1 if near else 0)


def test_pl_per_layer_numbers_reach_the_logger(pl_layers_run):
    _, callback, logger, _ = pl_layers_run
    logged = [(step, m) for step, m in logger.metrics if monitor_keys(m)]
    assert [step for step, _ in logged] == RECORDED
    last = logged[-1][1]
    by_layer = {r["name"]: r for r in callback.log.history(by="layer") if r["step"] == STEPS}
    assert last["monitor/net.0/norm"] == pytest.approx(by_layer["net.0"]["norm"], rel=1e-9)
    ratio = by_layer["net.0"]["norm"] / by_layer["net.0"]["pred_norm"]
    assert math.isfinite(ratio) and last["monitor/net.0/norm_ratio"] == pytest.approx(ratio)
    assert "monitor/net.1/angle" in last and "monitor/net.1/norm_ratio" not in last  # no decay
    # Three layers, four keys each but the undecayed one's ratio, and the five summary keys.
    assert len(monitor_keys(last)) == 3 * 4 - 1 + 5


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
