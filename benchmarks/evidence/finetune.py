"""Fine-tuning evidence: where the best weight decay sits when a pretrained model is tuned.

    python benchmarks/evidence/finetune.py              # every family, cached studies skipped
    python benchmarks/evidence/finetune.py --family digits-rotate --quick
    python benchmarks/evidence/finetune.py --report     # tables: docs/evidence-finetune.md

Each family pretrains a small model on one distribution (seconds to two minutes on one CPU
thread, from a fixed seed; the weights are kept in ``pretrained/<family>.safetensors`` and
retrained only when that file is missing), then fine-tunes it on a shifted distribution
with settings typical of fine-tuning: a learning rate a tenth of the from-scratch one (an
adapter: the from-scratch one), 1 to 5 epochs, a linear schedule to zero after 10% warmup.

For each configuration, ``adamwkit.tune`` cross-validates weight decay twice on the same
folds (``seed`` 0, so the same splits, initial weights and batch orders): decay toward zero
(``decay_toward="zero"``) and toward the pretrained weights (``decay_toward="init"``). The
candidates are 0 and a log grid at sqrt(10) spacing from 1e-4 to 1e3 in PyTorch's
convention (``decay_scale="lr"``), extended past an edge that holds the best;
``adamwkit.param_groups`` leaves norms and biases undecayed. The objective loads the
pretrained weights, fine-tunes with ``adamwkit.AdamW`` and returns the validation loss on
the held-out fold; the pretrained model's loss on each validation fold (the baseline) is
recorded beside it. Each study is one JSON file in ``results-finetune/<family>/``; a rerun
trains nothing that is cached.

The total decay over a run is D = lr * wd * steps * m (m: the schedule's mean lr
multiplier), the weights' shrink factor toward the reference exp(-D).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PRETRAINED = HERE / "pretrained"
RESULTS = HERE / "results-finetune"
DOC = ROOT / "docs" / "evidence-finetune.md"
KEEP = "<!-- everything below this line is kept when finetune.py --report rewrites the page -->"

GRID = [float(f"{10 ** (k / 2):.4g}") for k in range(-8, 7)]  # 1e-4 .. 1e3, sqrt(10) apart
FOLDS = 5
WARMUP = 0.1  # share of the steps with a linear warmup
KINDS = ("zero", "init")


# ------------------------------------------------------------------------------ models


def mlp(d_in: int, width: int, d_out: int) -> nn.Module:
    """Two hidden ReLU layers, as in the from-scratch evidence families."""
    return nn.Sequential(
        nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, d_out),
    )  # fmt: skip


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update ``B @ A`` (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (x @ self.lora_A.T) @ self.lora_B.T


def with_lora(model: nn.Module, rank: int) -> nn.Module:
    """``model`` with every ``nn.Linear`` of a ``nn.Sequential`` wrapped in :class:`LoRALinear`
    and every other parameter frozen: only the adapters train."""
    for p in model.parameters():
        p.requires_grad_(False)
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            model[i] = LoRALinear(layer, rank)
    return model


# -------------------------------------------------------------------------------- data


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def _rotate(x: np.ndarray, seed: int) -> np.ndarray:
    """Each 8x8 image rotated by 10 to 20 degrees (random sign) and noised."""
    from scipy.ndimage import rotate

    rng = np.random.default_rng(seed)
    out = np.empty_like(x)
    for i, img in enumerate(x.reshape(-1, 8, 8)):
        angle = rng.uniform(10, 20) * rng.choice([-1, 1])
        out[i] = rotate(img, angle, reshape=False, order=1).reshape(-1)
    return np.clip(out + 0.1 * rng.standard_normal(out.shape), 0.0, 1.5)


def digits_pretrain_data() -> tuple[Tensor, Tensor]:
    """The even-indexed digits images, upright and clean (899 images)."""
    x, y = _digits()
    return torch.tensor(x[::2], dtype=torch.float32), torch.tensor(y[::2])


def digits_finetune_data(n: int) -> tuple[Tensor, Tensor]:
    """``n`` of the odd-indexed images (never seen in pretraining), rotated and noised."""
    x, y = _digits()
    x, y = _rotate(x[1::2], seed=7)[:n], y[1::2][:n]
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def _teacher(seed: int, perturb: float) -> Callable[[Tensor], Tensor]:
    """A random two-layer tanh teacher (16 inputs, 8 units); ``perturb`` moves its weights
    by that fraction of their scale (teacher A' of the same seed)."""
    g = torch.Generator().manual_seed(seed)
    d, hidden = 16, 8
    w1 = torch.randn(d, hidden, generator=g) / d**0.5
    w2 = torch.randn(hidden, generator=g) / hidden**0.5
    g2 = torch.Generator().manual_seed(seed + 99)
    w1 = w1 + perturb * torch.randn(d, hidden, generator=g2) / d**0.5
    w2 = w2 + perturb * torch.randn(hidden, generator=g2) / hidden**0.5
    return lambda x: torch.tanh(2.0 * x @ w1) @ w2


def _teacher_samples(n: int, perturb: float, seed: int) -> tuple[Tensor, Tensor]:
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
    noise = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1))
    return x, _teacher(1234, perturb)(x) + 0.3 * noise


def teacher_pretrain_data() -> tuple[Tensor, Tensor]:
    """8192 noisy samples of teacher A."""
    return _teacher_samples(8192, 0.0, seed=0)


def teacher_finetune_data(n: int) -> tuple[Tensor, Tensor]:
    """``n`` noisy samples of teacher A' (A's weights moved by half their scale)."""
    return _teacher_samples(n, 0.5, seed=100)


def _windows(text: str, n: int) -> tuple[Tensor, Tensor]:
    from adamwkit.tasks.charlm import CONTEXT, encode

    ids = encode(text)
    n = min(n, (len(ids) - 1) // CONTEXT)
    x = torch.stack([ids[i * CONTEXT : (i + 1) * CONTEXT] for i in range(n)])
    y = torch.stack([ids[i * CONTEXT + 1 : (i + 1) * CONTEXT + 1] for i in range(n)])
    return x, y


def stdlib_code(max_chars: int = 200_000) -> str:
    """Lines of code of the standard library's top-level modules from ``o`` on, in file-name
    order, with docstrings, comments and blank lines left out (the shifted distribution:
    the pretraining text is docstrings)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    lines: list[str] = []
    total = 0
    for path in sorted(stdlib.glob("[o-z]*.py")):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        skip: set[int] = set()
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                value = body[0].value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    skip.update(range(body[0].lineno, (body[0].end_lineno or 0) + 1))
        for i, line in enumerate(source.splitlines(), 1):
            if i in skip or not line.strip() or line.strip().startswith("#"):
                continue
            lines.append(line + "\n")
            total += len(lines[-1])
            if total >= max_chars:
                return "".join(lines)[:max_chars]
    return "".join(lines)[:max_chars]


def charlm_pretrain_data() -> tuple[Tensor, Tensor]:
    """2000 windows of 64 characters of standard-library docstrings."""
    from adamwkit.tasks.charlm import load_text

    return _windows(load_text(), 2000)


def charlm_finetune_data(n: int) -> tuple[Tensor, Tensor]:
    """``n`` windows of 64 characters of standard-library code (no docstrings)."""
    return _windows(stdlib_code(), n)


def charlm_model() -> nn.Module:
    from adamwkit.tasks.charlm import CharTransformer

    return CharTransformer(width=48, layers=2)


def token_ce(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over every position (classes on the last dimension)."""
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


def mse(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.mse_loss(outputs.squeeze(-1), targets)


# ---------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """A pretrain-then-fine-tune problem and the fine-tuning configurations studied."""

    name: str
    description: str
    model: Callable[[], nn.Module]
    pretrain_data: Callable[[], tuple[Tensor, Tensor]]
    finetune_data: Callable[[int], tuple[Tensor, Tensor]]
    loss: Callable[[Tensor, Tensor], Tensor]
    classify: bool  # stratify the folds by the targets
    pretrain: dict[str, Any]  # epochs, batch_size, lr of pretraining (the from-scratch lr)
    configs: list[dict[str, Any]]  # n, epochs, batch_size, lr of fine-tuning
    base: str = ""  # the family whose pretrained weights this one adapts (adapters)
    adapter_rank: int = 0
    quick: dict[str, Any] = field(default_factory=dict)

    @property
    def weights(self) -> str:
        return self.base or self.name


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "digits-rotate",
            "MLP 64-128-128-10 pretrained on 899 upright digits, fine-tuned on other digits "
            "rotated 10-20 degrees and noised",
            lambda: mlp(64, 128, 10),
            digits_pretrain_data,
            digits_finetune_data,
            token_ce,
            True,
            dict(epochs=20, batch_size=32, lr=1e-3),
            [
                dict(n=300, epochs=3, batch_size=16, lr=1e-4),
                dict(n=898, epochs=3, batch_size=32, lr=1e-4),
                dict(n=898, epochs=3, batch_size=32, lr=3e-4),
                dict(n=898, epochs=1, batch_size=32, lr=3e-4),
                dict(n=898, epochs=5, batch_size=32, lr=1e-4),
            ],
        ),
        Family(
            "teacher-shift",
            "MLP 16-128-128-1 pretrained on 8192 samples of a tanh teacher A, fine-tuned on "
            "noisy samples of A' (A's weights moved by half their scale)",
            lambda: mlp(16, 128, 1),
            teacher_pretrain_data,
            teacher_finetune_data,
            mse,
            False,
            dict(epochs=30, batch_size=64, lr=1e-3),
            [
                dict(n=512, epochs=3, batch_size=32, lr=1e-4),
                dict(n=2048, epochs=3, batch_size=32, lr=1e-4),
                dict(n=2048, epochs=1, batch_size=32, lr=3e-4),
                dict(n=2048, epochs=5, batch_size=32, lr=1e-4),
                dict(n=8192, epochs=2, batch_size=64, lr=1e-4),
            ],
        ),
        Family(
            "charlm-code",
            "2-layer character transformer (width 48) pretrained on standard-library "
            "docstrings, fine-tuned on standard-library code",
            charlm_model,
            charlm_pretrain_data,
            charlm_finetune_data,
            token_ce,
            False,
            dict(epochs=15, batch_size=32, lr=3e-3),
            [
                dict(n=256, epochs=3, batch_size=16, lr=3e-4),
                dict(n=768, epochs=2, batch_size=16, lr=3e-4),
                dict(n=768, epochs=3, batch_size=16, lr=1e-4),
            ],
        ),
        Family(
            "digits-rotate-lora",
            "the digits-rotate MLP frozen, rank-4 LoRA adapters on its three linear layers "
            "trained (the adapter's lr: the from-scratch one)",
            lambda: mlp(64, 128, 10),
            digits_pretrain_data,
            digits_finetune_data,
            token_ce,
            True,
            dict(epochs=20, batch_size=32, lr=1e-3),
            [
                dict(n=898, epochs=3, batch_size=32, lr=1e-3),
                dict(n=300, epochs=3, batch_size=16, lr=1e-3),
            ],
            base="digits-rotate",
            adapter_rank=4,
        ),
        Family(
            "teacher-shift-lora",
            "the teacher-shift MLP frozen, rank-4 LoRA adapters on its three linear layers "
            "trained (the adapter's lr: the from-scratch one)",
            lambda: mlp(16, 128, 1),
            teacher_pretrain_data,
            teacher_finetune_data,
            mse,
            False,
            dict(epochs=30, batch_size=64, lr=1e-3),
            [dict(n=2048, epochs=3, batch_size=32, lr=1e-3)],
            base="teacher-shift",
            adapter_rank=4,
        ),
    ]
}


def config_id(cfg: dict[str, Any]) -> str:
    return "n{n}-e{epochs}-b{batch_size}-lr{lr:g}".format(**cfg)


# --------------------------------------------------------------------------- pretraining


def _train(model: nn.Module, x: Tensor, y: Tensor, loss: Callable, epochs: int,
           batch_size: int, lr: float, seed: int) -> None:  # fmt: skip
    """Pretraining: torch AdamW, weight decay 0.01, cosine schedule to zero."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad()
            loss(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()


def pretrained_state(family: Family) -> dict[str, Tensor]:
    """The pretrained weights: read from ``pretrained/<family>.safetensors``, else trained
    from seed 0 and saved there."""
    from safetensors.torch import load_file, save_file

    base = FAMILIES[family.weights]
    path = PRETRAINED / f"{base.name}.safetensors"
    if path.exists():
        return load_file(str(path))
    torch.manual_seed(0)
    model = base.model()
    x, y = base.pretrain_data()
    start = time.perf_counter()
    _train(model, x, y, base.loss, **base.pretrain, seed=0)
    print(f"pretrained {base.name} in {time.perf_counter() - start:.0f} s", flush=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    PRETRAINED.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


def load_model(family: Family, state: dict[str, Tensor]) -> nn.Module:
    """A fresh model holding the pretrained weights (with adapters for an adapter family);
    the adapters' random init comes from the current torch seed."""
    model = family.model()
    model.load_state_dict(state)
    if family.adapter_rank:
        model = with_lora(model, family.adapter_rank)
    return model


# ------------------------------------------------------------------------------ studies


def lr_multipliers(steps: int) -> list[float]:
    """The fine-tuning schedule: linear warmup over 10% of the steps, linear decay to zero."""
    warm = max(1, round(WARMUP * steps))
    return [(s + 1) / warm if s < warm else (steps - s) / (steps - warm) for s in range(steps)]


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss: Callable) -> float:
    model.eval()
    pairs = zip(x.split(512), y.split(512), strict=True)
    out = sum(loss(model(xb), yb).item() * len(xb) for xb, yb in pairs)
    model.train()
    return out / len(x)


def make_objective(family: Family, cfg: dict[str, Any], kind: str, x: Tensor, y: Tensor,
                   state: dict[str, Tensor], baseline: dict[int, float]) -> Callable:  # fmt: skip
    """The objective ``tune`` calls: load the pretrained weights, fine-tune on the training
    folds with ``adamwkit.AdamW(param_groups(model, wd), decay_toward=kind)``, return the
    validation loss. The pretrained model's loss on each validation fold goes to
    ``baseline``."""

    def objective(trial: Any) -> float:
        torch.manual_seed(trial.seed)
        model = load_model(family, state)
        val_x, val_y = x[trial.val_idx], y[trial.val_idx]
        if trial.fold is not None and trial.fold not in baseline:
            baseline[trial.fold] = evaluate(model, val_x, val_y, family.loss)
        opt = trial.optimizer(model, decay_toward=kind)
        train = trial.train_idx
        steps = cfg["epochs"] * math.ceil(len(train) / cfg["batch_size"])
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_multipliers(steps)[min(s, steps - 1)]
        )
        gen = torch.Generator().manual_seed(trial.seed)
        for epoch in range(cfg["epochs"]):
            for idx in train[torch.randperm(len(train), generator=gen)].split(cfg["batch_size"]):
                opt.zero_grad()
                family.loss(model(x[idx]), y[idx]).backward()
                opt.step()
                sched.step()
            val = evaluate(model, val_x, val_y, family.loss)
            trial.report(val, epoch + 1)
        return val

    return objective


def run_study(family: Family, cfg: dict[str, Any], kind: str, grid: list[float],
              folds: int) -> dict[str, Any]:  # fmt: skip
    """Cross-validate weight decay for one configuration and one kind of decay."""
    import adamwkit

    state = pretrained_state(family)
    x, y = family.finetune_data(cfg["n"])
    baseline: dict[int, float] = {}
    objective = make_objective(family, cfg, kind, x, y, state, baseline)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = adamwkit.tune(
            objective, examples=len(x), labels=y if family.classify else None, folds=folds,
            lr=cfg["lr"], epochs=cfg["epochs"], batch_size=cfg["batch_size"],
            decay_scale="lr", test_fraction=0.0, grid=[0.0, *grid], test=False,
            extend=2, progress=False, threads=1, seed=0, out=tmp, study="finetune",
        )  # fmt: skip
    s = result.summary
    n_train = len(x) - math.ceil(len(x) / folds)
    steps = cfg["epochs"] * math.ceil(n_train / cfg["batch_size"])
    model = load_model(family, state)
    keep = ("weight_decay", "mean", "sem", "paired_diff", "paired_sem", "fold_losses", "state")
    return {
        "family": family.name, "config": cfg, "id": config_id(cfg), "kind": kind,
        "folds": folds, "n": len(x), "n_train": n_train, "steps": steps,
        "mean_multiplier": float(np.mean(lr_multipliers(steps))),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "description": family.description, "grid": grid,
        "best_weight_decay": s["best_weight_decay"],
        "one_se_weight_decay": s["one_se_weight_decay"], "flat": s["flat"],
        "zero_paired_diff": s["zero_paired_diff"], "zero_paired_sem": s["zero_paired_sem"],
        "notes": list(s["notes"]),
        "candidates": [{k: c.get(k) for k in keep} for c in s["candidates"]],
        "baseline_fold_losses": [baseline[f] for f in sorted(baseline)],
        "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
    }  # fmt: skip


def result_path(family: str, cfg: dict[str, Any], kind: str, quick: bool) -> Path:
    tag = "-quick" if quick else ""
    return RESULTS / family / f"{config_id(cfg)}-{kind}{tag}.json"


def run_family(name: str, quick: bool) -> None:
    """Every configuration of a family, both kinds of decay; cached studies are skipped.
    ``quick``: the first configuration, 3 folds, every other grid point (not cached in the
    evidence: its files end in ``-quick``)."""
    family = FAMILIES[name]
    configs = family.configs[:1] if quick else family.configs
    grid = GRID[::2] if quick else GRID
    for cfg in configs:
        for kind in KINDS:
            path = result_path(name, cfg, kind, quick)
            if path.exists():
                continue
            out = run_study(family, cfg, kind, grid, 3 if quick else FOLDS)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(out, indent=1))
            tmp.replace(path)
            print(f"{name} {config_id(cfg)} {kind}: best wd {out['best_weight_decay']:.3g}, "
                  f"one-SE {out['one_se_weight_decay']:.3g}, flat {out['flat']} "
                  f"({out['seconds']} s)", flush=True)  # fmt: skip


# ------------------------------------------------------------------------------ analysis


@dataclass
class Study:
    """One cached study, with what the analysis reads from it."""

    d: dict[str, Any]

    @property
    def lr_steps(self) -> float:
        """lr * steps * mean multiplier: D per unit of weight decay."""
        return self.d["config"]["lr"] * self.d["steps"] * self.d["mean_multiplier"]

    def D(self, wd: float) -> float:
        return self.lr_steps * wd

    def candidate(self, wd: float) -> dict[str, Any]:
        return next(c for c in self.d["candidates"] if c["weight_decay"] == wd)

    @property
    def best(self) -> dict[str, Any]:
        return self.candidate(self.d["best_weight_decay"])

    @property
    def band(self) -> tuple[float, float]:
        """The weight decays within one paired SE of the best (zero included when it is)."""
        inside = [
            c["weight_decay"]
            for c in self.d["candidates"]
            if c["paired_diff"] is not None and c["paired_diff"] <= (c["paired_sem"] or 0)
        ]
        inside.append(self.d["best_weight_decay"])  # fmt: skip
        return min(inside), max(inside)

    @property
    def largest_wd(self) -> float:
        return max(c["weight_decay"] for c in self.d["candidates"])

    @property
    def zero_mean(self) -> float:
        return self.candidate(0.0)["mean"]

    @property
    def baseline(self) -> float:
        return float(np.mean(self.d["baseline_fold_losses"]))

    def suggestion(self) -> float:
        """``adamwkit.suggest``'s weight decay for this run (PyTorch convention)."""
        import adamwkit

        c = self.d["config"]
        sug = adamwkit.suggest(
            lr=c["lr"], batch_size=c["batch_size"], dataset_size=self.d["n_train"],
            epochs=c["epochs"],
        )  # fmt: skip
        return sug.weight_decay

    def worse_from(self, worse: Callable[[dict[str, Any]], bool]) -> float:
        """The smallest weight decay above the best for which ``worse(candidate)`` holds
        (``inf``: none of the candidates tried)."""
        above = sorted(
            (c for c in self.d["candidates"] if c["weight_decay"] > self.d["best_weight_decay"]),
            key=lambda c: c["weight_decay"],
        )
        return next((c["weight_decay"] for c in above if worse(c)), math.inf)

    @property
    def hurts_from(self) -> float:
        """The smallest weight decay above the best worse by more than two paired SEs."""
        return self.worse_from(lambda c: c["paired_diff"] > 2 * (c["paired_sem"] or 0))

    @property
    def one_percent_from(self) -> float:
        """The smallest weight decay above the best whose mean loss is 1% above the best's."""
        best = self.best["mean"]
        return self.worse_from(lambda c: c["mean"] > 1.01 * best)

    def nearest(self, wd: float) -> dict[str, Any]:
        """The positive candidate nearest ``wd`` in log scale."""
        pos = [c for c in self.d["candidates"] if c["weight_decay"] > 0]
        return min(pos, key=lambda c: abs(math.log(c["weight_decay"] / wd)))


def load_studies(quick: bool = False) -> list[Study]:
    pattern = "*/*-quick.json" if quick else "*/*.json"
    paths = sorted(RESULTS.glob(pattern))
    return [Study(json.loads(p.read_text())) for p in paths if quick or "-quick" not in p.name]


def paired_kinds(zero: Study, init: Study) -> tuple[float, float]:
    """Mean and SE over the folds of (init's best loss - zero's best loss), same folds."""
    a = np.array(init.best["fold_losses"], dtype=float)
    b = np.array(zero.best["fold_losses"], dtype=float)
    diff = a - b
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))


def _g(v: float) -> str:
    if v == 0:
        return "0"
    if math.isinf(v):
        return "none tried"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.1e}"


def _d_text(s: Study, wd: float) -> str:
    return "0" if wd == 0 else _g(s.D(wd))


def study_table(studies: list[Study]) -> list[str]:
    rows = [
        "| family | configuration | decay toward | steps | lr*steps*m | pretrained loss "
        "| zero-decay loss | best loss | best wd | best D | one-SE band (wd) | largest D in "
        "band | D hurts (2 SE) | D at +1% | flat | suggest wd (D) | suggest in band |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|---|",
    ]
    for s in studies:
        lo, hi = s.band
        sug = s.suggestion()
        inside = lo <= sug <= hi if hi < s.largest_wd else sug >= lo
        near = s.nearest(sug)
        cost = f"+{_g(near['paired_diff'])}" if near["paired_diff"] else "+0"
        rows.append(
            f"| {s.d['family']} | {s.d['id']} | {s.d['kind']} | {s.d['steps']} "
            f"| {_g(s.lr_steps)} | {s.baseline:.4f} | {s.zero_mean:.4f} "
            f"| {s.best['mean']:.4f} | {_g(s.d['best_weight_decay'])} "
            f"| {_d_text(s, s.d['best_weight_decay'])} | {_g(lo)} to {_g(hi)} "
            f"| {_d_text(s, hi)} | {_g(s.D(s.hurts_from))} | {_g(s.D(s.one_percent_from))} "
            f"| {'flat' if s.d['flat'] else ''} "
            f"| {_g(sug)} ({_g(s.D(sug))}) | {'yes' if inside else 'no'} ({cost}) |"
        )
    return rows


def kinds_table(studies: list[Study]) -> list[str]:
    """Each configuration's best toward zero against its best toward the pretrained weights.
    A kind wins when it is better by more than two paired SEs and by more than 0.1% of the
    loss (a smaller difference is a tie: the folds are deterministic, so tiny differences
    can be many SEs)."""
    by = {(s.d["family"], s.d["id"], s.d["kind"]): s for s in studies}
    rows = [
        "| family | configuration | best toward zero (wd) | best toward init (wd) "
        "| init - zero (paired, +- SE) | relative | winner |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for (fam, cid, kind), zero in by.items():
        init = by.get((fam, cid, "init"))
        if kind != "zero" or init is None:
            continue
        m, se = paired_kinds(zero, init)
        rel = m / zero.best["mean"]
        win = "tie"
        if abs(m) > 2 * se and abs(rel) > 1e-3:
            win = "init" if m < 0 else "zero"
        rows.append(
            f"| {fam} | {cid} | {zero.best['mean']:.4f} ({_g(zero.d['best_weight_decay'])}) "
            f"| {init.best['mean']:.4f} ({_g(init.d['best_weight_decay'])}) "
            f"| {m:+.2g} +- {se:.2g} | {100 * rel:+.2f}% | {win} |"
        )
    return rows


def _median(values: list[float]) -> float:
    return float(np.median(values))


def summary_lines(studies: list[Study]) -> list[str]:
    """The headline numbers: where the optimum's D lies, the largest D within one SE."""
    out = []
    for kind in KINDS:
        ss = [s for s in studies if s.d["kind"] == kind]
        if not ss:
            continue
        best_d = [s.D(s.d["best_weight_decay"]) for s in ss]
        hi_d = [s.D(s.band[1]) for s in ss]
        positive = [d for d in best_d if d > 0]
        flat = sum(s.d["flat"] for s in ss)
        hurt = [s.D(s.hurts_from) for s in ss]
        pct = [s.D(s.one_percent_from) for s in ss]
        q = np.quantile(positive, [0.1, 0.5, 0.9]) if positive else [math.nan] * 3
        out.append(
            f"- decay toward **{kind}** ({len(ss)} studies): best D median {_g(q[1])}, "
            f"range {_g(min(best_d))} to {_g(max(best_d))} (10%-90% of the positive ones: "
            f"{_g(q[0])} to {_g(q[2])}; zero decay best in {len(ss) - len(positive)}); "
            f"largest D within one SE of the best: median {_g(float(np.median(hi_d)))}, "
            f"smallest {_g(min(hi_d))}, largest {_g(max(hi_d))}; flat {flat} of {len(ss)}; "
            f"smallest D that costs more than 2 paired SEs: median {_g(_median(hurt))}, "
            f"smallest {_g(min(hurt))}; smallest D that costs 1% of the loss: median "
            f"{_g(_median(pct))}, smallest {_g(min(pct))}."
        )
    return out


#: Total decays D at which every study's loss is read (interpolated), for the regrets.
D_GRID = [float(f"{10 ** (k / 4):.3g}") for k in range(-20, 3)]  # 1e-5 .. 3.2
D_SHOWN = (1e-4, 1e-3, 3.16e-3, 0.01, 0.0316, 0.1, 0.316, 1.0, 1.78)


def loss_at(s: Study, d: float) -> float:
    """The mean CV loss at total decay ``d``, interpolated linearly in log D between the
    positive candidates (held constant past the ends)."""
    pos = sorted(
        (c for c in s.d["candidates"] if c["weight_decay"] > 0), key=lambda c: c["weight_decay"]
    )
    logd = [math.log(s.D(c["weight_decay"])) for c in pos]
    return float(np.interp(math.log(d), logd, [c["mean"] for c in pos]))


def regret(s: Study, d: float) -> float:
    """The loss at total decay ``d`` relative to the study's best, minus one."""
    return loss_at(s, d) / s.best["mean"] - 1.0


def harm(s: Study, d: float) -> float:
    """The loss at total decay ``d`` relative to zero decay's, minus one (what decaying
    that much costs against not decaying at all; negative where it helps)."""
    return loss_at(s, d) / s.zero_mean - 1.0


def regret_table(studies: list[Study]) -> list[str]:
    """Median and largest regret over the studies of each kind, at fixed total decays D."""
    rows = [
        "| decay toward | statistic | " + " | ".join(f"D={_g(d)}" for d in D_SHOWN) + " |",
        "|---|---|" + "---:|" * len(D_SHOWN),
    ]
    for kind in KINDS:
        ss = [s for s in studies if s.d["kind"] == kind]
        if not ss:
            continue
        r = np.array([[regret(s, d) for d in D_SHOWN] for s in ss])
        h = np.array([[harm(s, d) for d in D_SHOWN] for s in ss])
        for name, values in (
            ("regret, median", np.median(r, 0)),
            ("regret, largest", r.max(0)),
            ("harm, median", np.median(h, 0)),
            ("harm, largest", h.max(0)),
        ):
            cells = " | ".join(f"{100 * v:+.2f}%" for v in values)
            rows.append(f"| {kind} | {name} | {cells} |")
    return rows


def d_max(studies: list[Study], kind: str, tolerance: float) -> float:
    """The largest D of :data:`D_GRID` such that it and every smaller D harmed no study of
    ``kind`` by more than ``tolerance`` of its zero-decay loss (see :func:`harm`)."""
    ss = [s for s in studies if s.d["kind"] == kind]
    ok = 0.0
    for d in D_GRID:
        if max(harm(s, d) for s in ss) > tolerance:
            break
        ok = d
    return ok


def best_default(studies: list[Study], kind: str) -> tuple[float, float, float]:
    """The D of :data:`D_GRID` with the smallest mean regret over the studies of ``kind``;
    its mean and largest regret."""
    ss = [s for s in studies if s.d["kind"] == kind]
    scored = [(float(np.mean([regret(s, d) for s in ss])), d) for d in D_GRID]
    mean, d = min(scored)
    return d, mean, max(regret(s, d) for s in ss)


def good_range(studies: list[Study], kind: str, tolerance: float = 0.01) -> tuple[float, float]:
    """The span of :data:`D_GRID` where at least 80% of the studies of ``kind`` are within
    ``tolerance`` of their best loss (an 80% range; ``nan`` where no D is)."""
    ss = [s for s in studies if s.d["kind"] == kind]
    good = [d for d in D_GRID if np.mean([regret(s, d) <= tolerance for s in ss]) >= 0.8]
    return (min(good), max(good)) if good else (math.nan, math.nan)


def rule_lines(studies: list[Study]) -> list[str]:
    out = []
    for kind in KINDS:
        if not any(s.d["kind"] == kind for s in studies):
            continue
        d, mean, worst = best_default(studies, kind)
        out.append(
            f"- toward **{kind}**: the D with the smallest mean regret is {_g(d)} (mean "
            f"{100 * mean:.2f}%, largest {100 * worst:.2f}%); the largest D that harmed no "
            f"study (against zero decay) by more than 1% is "
            f"{_g(d_max(studies, kind, 0.01))}, by more than 2%: "
            f"{_g(d_max(studies, kind, 0.02))}, more than 5%: {_g(d_max(studies, kind, 0.05))}; "
            f"at least 80% of the studies are within 1% of their best from D = "
            f"{_g(good_range(studies, kind)[0])} to {_g(good_range(studies, kind)[1])}."
        )
    return out


def suggest_lines(studies: list[Study]) -> list[str]:
    """What ``adamwkit.suggest``'s weight decay would have done in each kind of decay."""
    out = []
    for kind in KINDS:
        ss = [s for s in studies if s.d["kind"] == kind]
        if not ss:
            continue
        ds = [s.D(s.suggestion()) for s in ss]
        harms = [harm(s, s.D(s.suggestion())) for s in ss]
        inside = sum(s.band[0] <= s.suggestion() <= s.band[1] for s in ss)
        worse = sum(loss_at(s, s.D(s.suggestion())) > s.baseline for s in ss)
        out.append(
            f"- toward **{kind}**: `suggest` implies D = {_g(min(ds))} to {_g(max(ds))} "
            f"(shrink factor {math.exp(-max(ds)):.2f} to {math.exp(-min(ds)):.2f}); inside the "
            f"one-SE band in {inside} of {len(ss)} studies; loss {100 * min(harms):+.1f}% to "
            f"{100 * max(harms):+.1f}% (median {100 * _median(harms):+.1f}%) against zero "
            f"decay; worse than the pretrained model before fine-tuning in {worse} of {len(ss)}."
        )
    return out


def family_table() -> list[str]:
    rows = [
        "| family | what | pretraining | fine-tuning configurations |",
        "|---|---|---|---|",
    ]
    for f in FAMILIES.values():
        pre = (
            f"from {f.base}'s weights"
            if f.base
            else "{epochs} epochs, batch {batch_size}, lr {lr:g}".format(**f.pretrain)
        )
        cfgs = ", ".join(config_id(c) for c in f.configs)
        rows.append(f"| {f.name} | {f.description} | {pre} | {cfgs} |")
    return rows


def report(quick: bool = False) -> str:
    studies = load_studies(quick)
    adapters = [s for s in studies if FAMILIES[s.d["family"]].adapter_rank]
    full = [s for s in studies if not FAMILIES[s.d["family"]].adapter_rank]
    lines = [
        "# Evidence: weight decay when fine-tuning a pretrained model",
        "",
        "Generated by `python benchmarks/evidence/finetune.py --report` from the studies",
        "that `python benchmarks/evidence/finetune.py` cached in",
        "`benchmarks/evidence/results-finetune/` (one JSON file per configuration and kind",
        "of decay; the report retrains nothing).",
        "",
        "**Protocol.** Each family pretrains a small model on one distribution (torch",
        "AdamW, weight decay 0.01, cosine schedule, a fixed seed; the weights are in",
        "`benchmarks/evidence/pretrained/`), then fine-tunes it on a shifted distribution",
        "at a tenth of the from-scratch lr (an adapter family: the from-scratch lr), for 1",
        "to 5 epochs, linear warmup over 10% of the steps then linear decay to zero.",
        "`adamwkit.tune` cross-validates each configuration twice on the same 5 folds",
        "(seed 0: the same splits, adapter inits and batch orders; no test split): weight",
        'decay toward zero and toward the pretrained weights (`decay_toward="init"`), with',
        '`adamwkit.AdamW(param_groups(model, wd), decay_scale="lr")` (norms and biases',
        "undecayed). Candidates: 0 and a log grid at sqrt(10) spacing from 1e-4 to 1e3",
        "(PyTorch's convention), extended past an edge that holds the best. The total decay",
        "of a run is D = lr * wd * steps * m, m the schedule's mean lr multiplier (about",
        "0.5); exp(-D) is how much the weights shrink toward the reference over the run.",
        "",
        *family_table(),
        "",
        "## Every study",
        "",
        "Losses are the 5-fold CV means on the fine-tuning distribution (cross-entropy in",
        "nats, or mean squared error for teacher-shift). *lr\\*steps\\*m* is the total decay",
        "D per unit of weight decay (m: the schedule's mean lr multiplier); D = that times wd,",
        "the shrink factor toward the reference exp(-D). *pretrained loss*: the pretrained",
        "model on the validation folds, before fine-tuning. *suggest in band*: whether",
        "`adamwkit.suggest(lr, batch_size, dataset_size=N_train, epochs)` lands within the",
        "one-SE band, with the paired loss cost of the candidate nearest it.",
        "",
        *study_table(studies),
        "",
        "## Decay toward the pretrained weights or toward zero",
        "",
        "Paired over the same folds (the same splits, adapter inits and batch orders): the",
        "best candidate of each kind, fold by fold. Each best is picked on these folds, so",
        "both carry the same small optimism.",
        "",
        *kinds_table(studies),
        "",
        "## Where the optimum lies, in total decay D",
        "",
        "Full fine-tuning (every weight trains):",
        "",
        *summary_lines(full),
        "",
        "Adapters (LoRA factors alone train; D is their decay):",
        "",
        *summary_lines(adapters),
        "",
        "## What a total decay D costs",
        "",
        "The *regret* at D: a study's mean CV loss at total decay D (interpolated in log D",
        "between its candidates) relative to its best; the *harm* at D: the same loss",
        "relative to zero decay's (negative where decay helps). Median and largest over",
        "the studies of each kind.",
        "",
        "What `adamwkit.suggest` (the from-scratch rule) would have done, full",
        "fine-tuning:",
        "",
        *suggest_lines(full),
        "",
        "Full fine-tuning:",
        "",
        *regret_table(full),
        "",
        *rule_lines(full),
        "",
        "Adapters:",
        "",
        *regret_table(adapters),
        "",
        *rule_lines(adapters),
        "",
        KEEP,
    ]
    return "\n".join(lines) + "\n"


def write_report() -> None:
    text = report()
    if DOC.exists() and KEEP in DOC.read_text():
        text += DOC.read_text().split(KEEP, 1)[1].lstrip("\n")
    DOC.write_text(text)
    print(f"wrote {DOC}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default=None, help="one family (default: all)")
    p.add_argument("--quick", action="store_true", help="first configuration, 3 folds")
    p.add_argument("--report", action="store_true", help="write docs/evidence-finetune.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if args.report:
        write_report()
        return
    for name in [args.family] if args.family else list(FAMILIES):
        run_family(name, args.quick)
    if args.quick:
        print(report(quick=True))


if __name__ == "__main__":
    main()
