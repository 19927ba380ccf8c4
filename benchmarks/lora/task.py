"""The fine-tuning benchmark's Task: LoRA on the pretrained small GPT-2
(``base.safetensors``, from ``pretrain.py``) over the standard library's source code, a
different text from the docstrings it was pretrained on.

    adamwkit tune benchmarks.lora.task:stdlib_lora --vectorize on

Every run starts from the same pretrained base (frozen, shared once by a stacked
population); the adapters (LoRA rank 8 on the attention and MLP projections, dropout off)
start from the run's seed and train. Loss: next-byte cross-entropy; metric: next-byte
accuracy. Nothing is downloaded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import corpus
import pretrain

from adamwkit import Task
from adamwkit.tasks import accuracy, cross_entropy
from adamwkit.tasks.finetune import PeftFactory

HERE = Path(__file__).parent


@dataclass
class Pretrained:
    """The benchmark's GPT-2 with the weights of ``path`` (the head tied to the tokens)."""

    path: Path = HERE / "base.safetensors"

    def __call__(self) -> nn.Module:
        from safetensors.torch import load_file

        if not self.path.exists():
            raise FileNotFoundError(
                f"{self.path} is missing: run .venv/bin/python benchmarks/lora/pretrain.py"
            )
        model = pretrain.build()
        missing, unexpected = model.load_state_dict(load_file(str(self.path)), strict=False)
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise ValueError(f"{self.path} does not match the config: {missing} {unexpected}")
        model.tie_weights()
        for module in model.modules():  # dropout off: runs stacked and alone match
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        return model


def stdlib_lora(n_examples: int = 600, rank: int = 8, epochs: int = 2) -> Task:
    """``n_examples`` windows of 64 bytes of standard-library source; see the module."""
    from peft import LoraConfig

    ids = corpus.windows(corpus.source_code(), pretrain.LENGTH, n_examples, seed=7)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                        target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)  # fmt: skip
    return Task(
        name="stdlib-lora",
        model=PeftFactory(Pretrained(), config),
        data=(ids[:, :-1], ids[:, 1:]),
        loss=cross_entropy,
        metric=accuracy,
        metric_name="accuracy",
        epochs=epochs,
        batch_size=32,
        lr=3e-3,
        test_fraction=0.2,
        description="LoRA on a small GPT-2 pretrained on docstrings, fine-tuned on source code",
    )


def _check() -> None:
    task = stdlib_lora(64)
    model = task.model()
    x, y = task.data
    with torch.no_grad():
        print(model(x[:4]).shape, float(task.loss(model(x[:4]), y[:4])))


if __name__ == "__main__":
    _check()
