"""AuditCallback for the Hugging Face Trainer and for Lightning, and DecayCLI: tiny models,
a few CPU steps.

The oracles: :func:`adamwkit.audit` run on the Trainer's own optimizer, model and
scheduler by a callback of the test; the LightningModule's own structure (which of its
tensors are biases or belong to a LayerNorm); the optimizer's param groups read against the
types of the modules that own each tensor.
"""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch
from torch import nn

import adamwkit
from adamwkit._io import json_safe
from adamwkit.integrations._audit import AuditCore

STEPS = 3


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"path": 3}, "path=3 is invalid"),
        ({"strict": "yes"}, "strict='yes' is invalid: expected True or False"),
        ({"show": 1}, "show=1 is invalid: expected True or False"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, words):
    with pytest.raises(ValueError, match=words):
        AuditCore(**kwargs)


def test_path_is_a_file_or_a_folder_that_exists(tmp_path):
    assert AuditCore()._target(tmp_path) == tmp_path / "audit.json"
    assert AuditCore(path=tmp_path)._target(None) == tmp_path / "audit.json"
    assert AuditCore(path=tmp_path / "a.json")._target(None) == tmp_path / "a.json"


# ---------------------------------------------------------------------------- transformers


def _gpt2(transformers):
    transformers.set_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50,
                                     n_positions=16, bos_token_id=0, eos_token_id=0)  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def _hf_trainer(out, callbacks, optimizers=(None, None)):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    model = _gpt2(transformers)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids}
            for ids in torch.randint(0, 50, (16, 8), generator=g).tolist()]  # fmt: skip
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=4,
        learning_rate=1e-3, weight_decay=0.1, save_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, seed=0, logging_steps=100,
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   callbacks=callbacks, optimizers=optimizers)  # fmt: skip
    return trainer, model


def test_hf_prints_and_writes_the_audit_of_the_trainers_optimizer(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from adamwkit.integrations.transformers import AuditCallback

    class Oracle(transformers.TrainerCallback):
        """Audits what the Trainer hands its callbacks, and records the lr and the
        scheduler's count, before and after the AuditCallback."""

        def __init__(self):
            self.report, self.seen = None, []

        def on_train_begin(self, args, state, control, **kw):
            opt, sched = kw["optimizer"].optimizer, kw["lr_scheduler"]
            self.seen.append(([g["lr"] for g in opt.param_groups], sched.last_epoch))
            if self.report is None:
                self.report = adamwkit.audit(opt, kw["model"], scheduler=sched,
                                             total_steps=state.max_steps,
                                             weight_decay=args.weight_decay)  # fmt: skip

    before, callback, after = Oracle(), AuditCallback(), Oracle()
    trainer, model = _hf_trainer(tmp_path, [before, callback, after])
    trainer.train()
    printed = capsys.readouterr().out

    assert type(trainer.optimizer).__name__ == "AcceleratedOptimizer"  # unwrapped for the audit
    assert callback.report is not None
    assert callback.report.to_dict() == before.report.to_dict()
    assert callback.report.total_steps == STEPS
    assert callback.saved == tmp_path / "audit.json"
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert saved == json.loads(json.dumps(json_safe(before.report.to_dict())))
    assert {"optimizer", "total_steps", "tensors", "findings", "notes"} <= saved.keys()
    assert saved["optimizer"] == "AdamW"
    assert {r["name"] for r in saved["tensors"]} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }
    # Printed once, the same text as the report's.
    assert printed.count(str(before.report)) == 1
    for f in before.report.findings:
        assert f.code in printed
    # The audit changed neither the lr nor the scheduler.
    assert before.seen == after.seen


def test_hf_audit_finds_what_a_one_group_adamw_decays(tmp_path, capsys):
    """torch.optim.AdamW(model.parameters()): the biases and LayerNorm weights decay."""
    pytest.importorskip("transformers")
    from adamwkit.integrations.transformers import AuditCallback

    callback = AuditCallback(path=tmp_path / "reports" / "gpt2.json")
    trainer, model = _hf_trainer(tmp_path / "out", [callback])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    trainer.optimizer = opt  # the Trainer keeps a user's optimizer as given
    trainer.train()
    assert "decays-norm-or-bias" in capsys.readouterr().out
    found = {f.code: set(f.tensors) for f in callback.report.findings}
    expected = {f"{m}.{n}" if m else n
                for m, mod in model.named_modules()
                for n, _ in mod.named_parameters(recurse=False)
                if n == "bias" or isinstance(mod, nn.LayerNorm)}  # fmt: skip
    assert found["decays-norm-or-bias"] == expected
    assert callback.saved == tmp_path / "reports" / "gpt2.json"
    assert json.loads(callback.saved.read_text())["findings"][0]["code"] == "decays-norm-or-bias"


def test_hf_strict_stops_before_the_first_step(tmp_path, capsys):
    pytest.importorskip("transformers")
    from adamwkit.integrations.transformers import AuditCallback, AuditFailed

    callback = AuditCallback(strict=True, path=tmp_path)  # a folder: audit.json inside
    trainer, model = _hf_trainer(tmp_path / "out", [callback])
    head = model.transformer.ln_f
    rest = [p for n, p in model.named_parameters() if not n.startswith("transformer.ln_f")]
    trainer.optimizer = torch.optim.AdamW(rest, lr=1e-3)  # ln_f trains in no group
    start = head.weight.detach().clone()
    with pytest.raises(AuditFailed, match="not-in-optimizer") as err:
        trainer.train()
    assert trainer.state.global_step == 0
    assert torch.equal(head.weight, start)
    assert set(err.value.findings[0].tensors) == {"transformer.ln_f.weight",
                                                  "transformer.ln_f.bias"}  # fmt: skip
    assert callback.saved == tmp_path / "audit.json"  # written before stopping
    assert "not-in-optimizer" in capsys.readouterr().out


# ---------------------------------------------------------------------------- Lightning


def _lightning():
    return pytest.importorskip("lightning")


def _module_class(L, configure):
    class Tiny(L.LightningModule):
        def __init__(self, width: int = 8):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, width), nn.LayerNorm(width), nn.ReLU(),
                                     nn.Linear(width, 1))  # fmt: skip

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return self.net(x).pow(2).mean()

        def train_dataloader(self):
            g = torch.Generator().manual_seed(0)
            data = torch.utils.data.TensorDataset(torch.randn(32, 4, generator=g))
            return torch.utils.data.DataLoader(data, batch_size=4)

        configure_optimizers = configure

    return Tiny


def _no_decay_names(module):
    """The biases and LayerNorm tensors, from the module's own structure."""
    return {f"{m}.{n}" if m else n
            for m, mod in module.named_modules()
            for n, _ in mod.named_parameters(recurse=False)
            if n == "bias" or isinstance(mod, nn.LayerNorm)}  # fmt: skip


def _fit(L, module, tmp_path, callbacks, **kwargs):
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=callbacks, **kwargs)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's tips (workers, logging)
        trainer.fit(module)
    return trainer


def test_lightning_finds_decayed_norms_and_biases(tmp_path, capsys):
    L = _lightning()
    from adamwkit.integrations.lightning import AuditCallback

    def configure(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.1)
        sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.1, total_iters=STEPS)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    module = _module_class(L, configure)()
    callback = AuditCallback()
    trainer = _fit(L, module, tmp_path, [callback])
    printed = capsys.readouterr().out
    assert "decays-norm-or-bias" in printed
    assert printed.count("decays-norm-or-bias") == str(callback.report).count("decays-norm-or-bias")
    found = {f.code: set(f.tensors) for f in callback.report.findings}
    assert found["decays-norm-or-bias"] == _no_decay_names(module)
    assert callback.report.total_steps == STEPS == trainer.estimated_stepping_batches
    assert callback.report.notes == []  # the step scheduler was handed to the audit
    # followed: the linear decay to a tenth gives a total decay below the peak lr's
    rows = {r.name: r for r in callback.report.rows}
    decayed = rows["net.0.weight"]
    assert decayed.over_run < decayed.per_step * STEPS
    assert callback.saved == tmp_path / "audit.json"
    saved = json.loads(callback.saved.read_text())
    assert saved == json.loads(json.dumps(json_safe(callback.report.to_dict())))


def test_lightning_epoch_scheduler_is_noted(tmp_path, capsys):
    L = _lightning()
    from adamwkit.integrations.lightning import AuditCallback

    def configure(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-3)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]  # interval "epoch"

    callback = AuditCallback(show=False)
    _fit(L, _module_class(L, configure)(), tmp_path, [callback])
    assert str(callback.report) not in capsys.readouterr().out  # show=False
    notes = [n for n in callback.report.notes if "StepLR" in n]
    assert len(notes) == 1 and "epoch" in notes[0]


def test_lightning_strict_raises_before_the_first_step(tmp_path):
    L = _lightning()
    from adamwkit.integrations.lightning import AuditCallback, AuditFailed

    def configure(self):
        return torch.optim.AdamW(self.net[0].parameters(), lr=1e-3)  # the rest trains in none

    module = _module_class(L, configure)()
    start = module.net[3].weight.detach().clone()
    with pytest.raises(AuditFailed, match="not-in-optimizer") as err:
        _fit(L, module, tmp_path, [AuditCallback(strict=True)])
    names = {n for n, _ in module.named_parameters() if not n.startswith("net.0.")}
    assert set(err.value.findings[0].tensors) == names
    assert torch.equal(module.net[3].weight, start)


def test_lightning_two_optimizers_are_audited_together(tmp_path, capsys):
    L = _lightning()
    from adamwkit.integrations.lightning import AuditCallback

    class Two(_module_class(L, None)):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            for opt in self.optimizers():
                opt.zero_grad()
            self.manual_backward(loss)
            for opt in self.optimizers():
                opt.step()

        def configure_optimizers(self):
            first = [p for n, p in self.named_parameters() if n.startswith("net.0.")]
            rest = [p for n, p in self.named_parameters() if not n.startswith("net.0.")]
            return [torch.optim.AdamW(first), torch.optim.SGD(rest, lr=0.1)]

    module = Two()
    callback = AuditCallback()
    _fit(L, module, tmp_path, [callback])
    report = callback.report
    assert report.optimizer == "AdamW + SGD"
    assert "not-in-optimizer" not in report.codes()
    assert {r.name for r in report.rows} == {n for n, _ in module.named_parameters()}
    assert str(report) in capsys.readouterr().out
    assert json.loads(callback.saved.read_text())["optimizer"] == "AdamW + SGD"


# ---------------------------------------------------------------------------- DecayCLI


def test_decay_cli_groups_the_configured_optimizer(tmp_path, capsys):
    L = _lightning()
    pytest.importorskip("jsonargparse")
    from adamwkit.integrations.lightning import AuditCallback, DecayCLI

    def configure(self):  # what LightningCLI replaces
        raise AssertionError("the CLI's optimizer was expected")

    Tiny = _module_class(L, configure)
    audit_cb = AuditCallback(show=False)
    args = ["--optimizer", "AdamW", "--optimizer.weight_decay", "0.1", "--optimizer.lr", "0.02",
            "--optimizer.betas", "[0.8, 0.95]", "--lr_scheduler", "StepLR",
            "--lr_scheduler.step_size", "2", "--lr_scheduler.gamma", "0.5",
            "--trainer.max_steps", str(STEPS), "--trainer.accelerator", "cpu",
            "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the override of configure_optimizers; tips
        cli = DecayCLI(Tiny, args=args, run=False, save_config_callback=None,
                       trainer_defaults={"callbacks": [audit_cb]})  # fmt: skip
        cli.trainer.fit(cli.model)

    opt = cli.trainer.optimizers[0]
    assert type(opt) is torch.optim.AdamW
    owner = {id(p): (mod, n) for mod in cli.model.modules()
             for n, p in mod.named_parameters(recurse=False)}  # fmt: skip
    seen = 0
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(0.02) and group["betas"] == (0.8, 0.95)
        for p in group["params"]:
            mod, name = owner[id(p)]
            norm_or_bias = isinstance(mod, nn.LayerNorm) or name == "bias"
            assert group["weight_decay"] == (0.0 if norm_or_bias else 0.1)
            seen += 1
    assert seen == sum(1 for _ in cli.model.parameters())
    # The scheduler was built again on the grouped optimizer, with its arguments.
    sched = cli.trainer.lr_scheduler_configs[0].scheduler
    assert type(sched) is torch.optim.lr_scheduler.StepLR
    assert sched.optimizer is opt and (sched.step_size, sched.gamma) == (2, 0.5)
    assert len(sched.base_lrs) == len(opt.param_groups)
    # The plan was printed once; the audit of the grouped optimizer finds no decayed norm.
    printed = capsys.readouterr().out
    assert printed.count("Weight decay plan") == 1 and "DecayCLI: AdamW" in printed
    assert cli.decay_plan is not None
    assert {e.name for e in cli.decay_plan.not_decayed} == _no_decay_names(cli.model)
    assert "decays-norm-or-bias" not in audit_cb.report.codes()
    # A second call gives back the same optimizer and scheduler.
    again = cli.model.configure_optimizers()
    assert again[0][0] is opt and again[1][0] is sched


def test_decay_cli_without_an_optimizer_leaves_the_module_alone(tmp_path):
    L = _lightning()
    pytest.importorskip("jsonargparse")
    from adamwkit.integrations.lightning import DecayCLI

    def configure(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    args = ["--trainer.accelerator", "cpu", "--trainer.logger", "false",
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = DecayCLI(_module_class(L, configure), args=args, run=False,
                       save_config_callback=None)  # fmt: skip
    assert type(cli.model.configure_optimizers()) is torch.optim.SGD
    assert cli.decay_plan is None


def test_decay_cli_reads_the_command_line(tmp_path, monkeypatch, capsys):
    """From sys.argv, as a script runs it; "--optimizer=AdamW" means torch's AdamW although
    adamwkit.AdamW is an Optimizer subclass of the same name."""
    L = _lightning()
    pytest.importorskip("jsonargparse")
    from adamwkit.integrations.lightning import DecayCLI

    argv = ["train.py", "--optimizer=AdamW", "--optimizer.weight_decay=0.05",
            "--trainer.accelerator=cpu", "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = DecayCLI(_module_class(L, None), run=False, save_config_callback=None)
        opt = cli.model.configure_optimizers()
    assert type(opt) is torch.optim.AdamW
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.05]
    assert "weight_decay=0.05" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("module", "blocked", "words"),
    [
        ("transformers", ("transformers",), "pip install 'adamwkit\\[transformers\\]'"),
        ("lightning", ("lightning", "pytorch_lightning"), "pip install 'adamwkit\\[lightning\\]'"),
    ],
)
def test_a_missing_framework_is_a_missing_extra(module, blocked, words, monkeypatch):
    """The integration modules import without their framework; the classes built from it
    say which extra to install."""
    import importlib

    from adamwkit._extras import MissingExtra

    mod = importlib.import_module(f"adamwkit.integrations.{module}")
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    names = ["AuditCallback", "MonitorCallback"] + (["DecayCLI"] if module == "lightning" else [])
    for name in names:
        monkeypatch.delitem(mod.__dict__, name, raising=False)  # built again on access
        with pytest.raises(MissingExtra, match=f"{name} needs .*{words}"):
            getattr(mod, name)
    assert issubclass(mod.AuditFailed, RuntimeError)
    assert {"AuditCallback", "AuditFailed"} <= set(mod.__all__)


@pytest.mark.parametrize("where", ["transformers.AuditCallback", "lightning.AuditCallback",
                                   "lightning.DecayCLI"])  # fmt: skip
def test_docstring_examples_run(where, tmp_path, monkeypatch, capsys):
    import importlib
    import re
    import textwrap

    module, name = where.split(".")
    pytest.importorskip(module)
    pytest.importorskip("accelerate" if module == "transformers" else "jsonargparse")
    doc = getattr(importlib.import_module(f"adamwkit.integrations.{module}"), name).__doc__
    code = textwrap.dedent(doc.rsplit("Example", 1)[1].split("::", 1)[1])
    monkeypatch.chdir(tmp_path)
    space = {"__name__": "example"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, f"{where} docstring", "exec"), space)
    if name == "AuditCallback":
        shown = re.search(r"print\(audit\.report\.codes\(\)\)\s+# (\[.*?\])", code).group(1)
        assert space["audit"].report.codes() == eval(shown)
        assert space["audit"].saved.is_file()
    else:
        plan = space["cli"].decay_plan
        assert {e.name for e in plan.decayed} == {"net.0.weight", "net.2.weight"}
        assert "Weight decay plan" in capsys.readouterr().out
