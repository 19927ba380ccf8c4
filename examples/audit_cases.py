"""The weight-decay mistakes ``adamwkit audit`` finds, each built on a small model.

    .venv/bin/python examples/audit_cases.py            # every case, 80 columns
    .venv/bin/python examples/audit_cases.py muon       # the cases whose name has "muon"

Each case is a function returning a dict with the model, the optimizer and the audit's
other arguments, as the command line reads it: ``adamwkit audit
examples.audit_cases:adam_for_adamw``. docs/audit.md shows this script's output.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import torch
from torch import nn

import adamwkit

Case = dict[str, Any]


def _gpt2(dtype: torch.dtype = torch.float32) -> nn.Module:
    """A two-layer GPT-2 built from its config (no download)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=128, n_positions=32,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(config).to(dtype)


def _lora(model: nn.Module) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True)
    return get_peft_model(model, config)


def correct() -> Case:
    """param_groups + adamwkit.AdamW on GPT-2: nothing wrong."""
    model = _gpt2()
    opt = adamwkit.AdamW(adamwkit.param_groups(model, 0.1), lr=6e-4)
    return {"model": model, "optimizer": opt, "total_steps": 20_000}


def loraplus_zero() -> Case:
    """LoRA+ groups (B at 16x A's lr) built with weight_decay 0 while 0.01 was configured."""
    model = _lora(_gpt2())
    a = [p for n, p in model.named_parameters() if "lora_A" in n]
    b = [p for n, p in model.named_parameters() if "lora_B" in n]
    groups = [{"params": a, "lr": 2e-4, "weight_decay": 0.0},
              {"params": b, "lr": 3.2e-3, "weight_decay": 0.0}]  # fmt: skip
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    return {"model": model, "optimizer": opt, "total_steps": 3_000, "weight_decay": 0.01}


def bf16_rl() -> Case:
    """An RL fine-tune with bf16 weights and no fp32 master copy: the decay rounds away."""
    model = _gpt2(torch.bfloat16)
    opt = torch.optim.AdamW(adamwkit.param_groups(model, 0.01), lr=1e-6)
    return {"model": model, "optimizer": opt, "total_steps": 2_000}


class _Mamba(nn.Module):
    """The parameters of a Mamba block that should not decay, beside ones that should."""

    def __init__(self) -> None:
        super().__init__()
        self.in_proj = nn.Linear(16, 64, bias=False)
        self.A_log = nn.Parameter(torch.zeros(32, 8))  # 2-D, yet not a weight to decay
        self.dt_bias = nn.Parameter(torch.zeros(32))
        self.D = nn.Parameter(torch.ones(32))
        self.norm = nn.LayerNorm(32)
        self.out_proj = nn.Linear(32, 16)


def decay_everything() -> Case:
    """A refactor went back to AdamW over model.parameters(): norms, biases, A_log decay."""
    model = _Mamba()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    return {"model": model, "optimizer": opt, "total_steps": 50_000}


def adam_for_adamw() -> Case:
    """torch.optim.Adam with weight_decay where AdamW was meant: L2, not decoupled."""
    model = _gpt2()
    opt = torch.optim.Adam(adamwkit.param_groups(model, 0.1), lr=6e-4)
    return {"model": model, "optimizer": opt, "total_steps": 20_000}


def lora_toward_base() -> Case:
    """LoRA adapters decayed toward zero: a pull back toward the frozen base."""
    model = _lora(_gpt2())
    opt = adamwkit.AdamW(adamwkit.param_groups(model, 0.1), lr=2e-4)
    return {"model": model, "optimizer": opt, "total_steps": 3_000}


def muon_hybrid() -> Case:
    """Muon for the hidden matrices, AdamW for the rest, one coefficient for both."""
    model = _gpt2()
    hidden = [p for n, p in model.named_parameters() if p.ndim == 2 and ".h." in n]
    tables = [model.transformer.wte.weight, model.transformer.wpe.weight]
    rest = [p for p in model.parameters() if p.ndim < 2]
    muon = torch.optim.Muon(hidden, lr=0.02, weight_decay=0.1)
    adamw = torch.optim.AdamW([{"params": tables, "weight_decay": 0.1},
                               {"params": rest, "weight_decay": 0.0}], lr=6e-4)  # fmt: skip
    return {"model": model, "optimizer": [muon, adamw], "total_steps": 20_000}


def left_out_and_twice() -> Case:
    """A tensor in no group (it never trains) and one in two (stepped twice)."""
    model = _gpt2()
    groups = adamwkit.param_groups(model, 0.1)
    groups[0]["params"].remove(model.transformer.wte.weight)  # left out
    opt = torch.optim.AdamW(groups, lr=6e-4)
    # torch refuses a tensor in two groups when building, not when a group grows later
    opt.param_groups[0]["params"].append(model.transformer.ln_f.bias)
    return {"model": model, "optimizer": opt, "total_steps": 20_000}


def run_length() -> Case:
    """The same decay over a long pretraining run: it dominates (too long)."""
    model = _gpt2()
    opt = adamwkit.AdamW(adamwkit.param_groups(model, 0.1), lr=1e-3)
    return {"model": model, "optimizer": opt, "total_steps": 2_000_000}


def batchnorm_cnn() -> Case:
    """Convolutions followed by BatchNorm: decay sets their effective lr (scale-invariant)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))  # fmt: skip
    opt = adamwkit.AdamW(adamwkit.param_groups(model, 0.05), lr=1e-3)
    return {"model": model, "optimizer": opt, "total_steps": 40_000}


CASES = {f.__name__: f for f in (correct, loraplus_zero, bf16_rl, decay_everything,
                                 adam_for_adamw, lora_toward_base, muon_hybrid,
                                 left_out_and_twice, run_length, batchnorm_cnn)}  # fmt: skip


def main(argv: list[str]) -> None:
    from rich.console import Console

    warnings.simplefilter("ignore")
    console = Console(width=80, highlight=False, soft_wrap=False)
    for name, build in CASES.items():
        if argv and not any(a in name for a in argv):
            continue
        case = build()
        console.print(f"\n## {name}: {build.__doc__}\n", markup=False)
        report = adamwkit.audit(case.pop("optimizer"), case.pop("model"), **case)
        adamwkit.render.to_rich(report.blocks(), console)


if __name__ == "__main__":
    main(sys.argv[1:])
