"""Fine-tune tasks: a pretrained base that stays frozen, adapters (or a part) that train.

A stacked population (:func:`adamwkit.train.fit_population`, ``tune --vectorize``) holds a
model's frozen parameters once and shares them between its members, so tuning the weight
decay of k fine-tunes costs the base once plus k adapters. What a :class:`Task` needs for it:

- a ``model`` factory whose base weights do not depend on the run's seed (every member and
  the standalone run start from the same pretrained weights) while the adapters' initial
  weights do (``torch.manual_seed(seed)`` then ``task.model()``, as :func:`adamwkit.fit`
  does): :class:`PeftFactory` builds the base under a fixed seed, with the caller's random
  state kept, then wraps it with ``peft.get_peft_model`` under the caller's (the run's) seed;
- a model that returns a tensor: a Hugging Face causal LM returns an output object, so
  :class:`Logits` returns its ``logits`` (batch, positions, vocabulary), which the built-in
  :func:`adamwkit.tasks.cross_entropy` scores as next-token cross-entropy when the targets
  are the inputs shifted by one.

:func:`gpt2_lora_task` is a complete example that nothing downloads: a GPT-2 built from a
config, LoRA on its attention, and a generated language of counting sequences
(``adamwkit tune adamwkit.tasks.finetune:gpt2_lora_task --vectorize on``). It needs
``transformers`` and ``peft``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import Task, accuracy, cross_entropy

__all__ = ["Logits", "PeftFactory", "counting_sequences", "gpt2_lora_task"]


class Logits(nn.Module):
    """``model(input_ids=ids).logits``: a Hugging Face causal LM as a module that returns a
    tensor (batch, positions, vocabulary), without a key-value cache. A model whose output
    has no ``logits`` is returned as it is."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor) -> Tensor:
        out = self.model(input_ids=ids, use_cache=False)
        return getattr(out, "logits", out)


@dataclass
class PeftFactory:
    """A ``Task.model`` for a PEFT fine-tune: ``base()`` built under
    ``torch.manual_seed(base_seed)`` (the caller's random state kept, so the base is the
    same in every run), then ``peft.get_peft_model(base, config)`` under the caller's random
    state (so the adapters' initial weights follow the run's seed), wrapped in
    :class:`Logits` when ``logits`` is True.

    ``base`` may load pretrained weights (``from_pretrained``) or build a model from a
    config; ``config`` is a PEFT config (``LoraConfig(...)``), copied for each call because
    ``get_peft_model`` may change it.
    """

    base: Callable[[], nn.Module]
    config: Any
    base_seed: int = 0
    logits: bool = True

    def __call__(self) -> nn.Module:
        from peft import get_peft_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.base_seed)
            base = self.base()
        with warnings.catch_warnings():
            # peft asks transformers a deprecated question on every call (transformers 5)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            model = get_peft_model(base, copy.deepcopy(self.config))
        return Logits(model) if self.logits else model


def counting_sequences(
    n: int, length: int, vocab: int, *, steps: tuple[int, ...] = (1, 2, 3), seed: int = 0
) -> Tensor:
    """``n`` sequences of ``length`` tokens, each counting from a random start by a random
    step modulo ``vocab``: token ``t`` of a sequence is ``(start + t * step) % vocab``. The
    next token is determined by the two before it, so a small model learns it; drawn from
    a generator seeded with ``seed``."""
    for name, value, low in (("n", n, 2), ("length", length, 3), ("vocab", vocab, 2)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} is invalid: expected an integer >= {low}")
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (n, 1), generator=g)
    step = torch.tensor(steps)[torch.randint(0, len(steps), (n, 1), generator=g)]
    return (start + torch.arange(length) * step) % vocab


def _gpt2(n_layer: int, n_embd: int, n_head: int, vocab: int, positions: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab, n_positions=positions,
        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


@dataclass
class _GPT2:
    """A config-built GPT-2 (a picklable factory for :class:`PeftFactory`)."""

    n_layer: int
    n_embd: int
    n_head: int
    vocab: int
    positions: int

    def __call__(self) -> nn.Module:
        return _gpt2(self.n_layer, self.n_embd, self.n_head, self.vocab, self.positions)


def gpt2_lora_task(
    n_examples: int = 120,
    length: int = 16,
    *,
    vocab: int = 64,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    rank: int = 4,
    base_seed: int = 0,
    decay_toward: str = "zero",
    dtype: torch.dtype = torch.float32,
    **settings: Any,
) -> Task:
    """LoRA (rank ``rank``, ``lora_alpha = 2 * rank``, no dropout) on the attention
    projections (``c_attn``) and the MLP input (``c_fc``) of a GPT-2 built from a config
    under ``torch.manual_seed(base_seed)``, dropout off; the data are
    :func:`counting_sequences` (inputs ``ids[:, :-1]``, targets ``ids[:, 1:]``), the loss the
    next-token cross-entropy, the metric the next-token accuracy. ``settings`` override the
    task's training defaults (``epochs=2``, ``batch_size=16``, ``lr=3e-2``, ``schedule=
    "cosine"``). Needs ``transformers`` and ``peft``; downloads nothing.
    """
    from peft import LoraConfig

    from .._checks import check_whole

    n_examples, length = check_whole("n_examples", n_examples, 2), check_whole("length", length, 2)
    vocab, rank = check_whole("vocab", vocab, 2), check_whole("rank", rank, 1)
    n_layer, n_embd = check_whole("n_layer", n_layer, 1), check_whole("n_embd", n_embd, 1)
    n_head = check_whole("n_head", n_head, 1)
    if n_embd % n_head:
        raise ValueError(
            f"n_embd={n_embd!r} is invalid: expected a multiple of n_head={n_head} (each "
            "attention head takes n_embd / n_head of the width)"
        )
    ids = counting_sequences(n_examples, length + 1, vocab)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["c_attn", "c_fc"],
        fan_in_fan_out=True,  # GPT-2's Conv1D holds its weight as (in, out)
    )  # fmt: skip
    factory = PeftFactory(_GPT2(n_layer, n_embd, n_head, vocab, length), config, base_seed)
    defaults: dict[str, Any] = {"epochs": 2, "batch_size": 16, "lr": 3e-2, "schedule": "cosine"}
    return Task(
        name="gpt2-lora",
        model=_Typed(factory, dtype),
        data=(ids[:, :-1], ids[:, 1:]),
        loss=cross_entropy,
        metric=accuracy,
        metric_name="accuracy",
        decay_toward=decay_toward,
        description="LoRA on a config-built GPT-2, counting sequences (next-token loss)",
        **{**defaults, **settings},
    )


@dataclass
class _Typed:
    """``factory()`` in ``dtype``."""

    factory: Callable[[], nn.Module]
    dtype: torch.dtype

    def __call__(self) -> nn.Module:
        return self.factory().to(self.dtype)
