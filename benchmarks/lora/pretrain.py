"""Pretrain the small GPT-2 the fine-tuning benchmark starts from, on the standard
library's docstrings (prose), and save it as ``base.safetensors`` beside this file.

    .venv/bin/python benchmarks/lora/pretrain.py            # about 2 minutes, 1 thread
    .venv/bin/python benchmarks/lora/pretrain.py --steps 50 --out /tmp/base.safetensors

The model is built from its config (no download): 2 layers, width 128, 4 heads, 64
positions, a byte vocabulary (256). Training: AdamW over ``param_groups`` (lr 3e-3,
weight decay 0.1, cosine to 10% after 100 warmup steps), batches of 32 windows of 64
bytes, seed 0. Prints the held-out loss (bits per byte) on docstrings and on source code
before and after, so the two corpora's difference is on record.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import corpus

import adamwkit

HERE = Path(__file__).parent
CONFIG = {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 64, "vocab_size": 256,
          "bos_token_id": 0, "eos_token_id": 0}  # fmt: skip
LENGTH = 64


def build() -> torch.nn.Module:
    """The benchmark's GPT-2, untrained (its weights come from ``base.safetensors``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(**CONFIG))


def lm_loss(logits: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Next-byte cross-entropy (nats) of ``logits`` (B, T, 256) against ``windows[:, 1:]``."""
    return torch.nn.functional.cross_entropy(logits.reshape(-1, 256), windows[:, 1:].reshape(-1))


@torch.no_grad()
def bits_per_byte(model: torch.nn.Module, windows: torch.Tensor) -> float:
    model.eval()
    loss = lm_loss(model(windows[:, :-1]).logits, windows)
    model.train()
    return float(loss) / math.log(2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "base.safetensors")
    a = p.parse_args()
    from safetensors.torch import save_file

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    docs, code = corpus.docstrings(), corpus.source_code()
    train = corpus.windows(docs[: int(0.9 * len(docs))], LENGTH, a.steps * 32, seed=1)
    held_docs = corpus.windows(docs[int(0.9 * len(docs)) :], LENGTH, 256, seed=2)
    held_code = corpus.windows(code, LENGTH, 256, seed=3)
    model = build()
    opt = adamwkit.AdamW(adamwkit.param_groups(model, 0.1), lr=3e-3)
    warm = 100

    def shape(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (t - warm) / max(1, a.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, shape)
    before = bits_per_byte(model, held_docs), bits_per_byte(model, held_code)
    start = time.perf_counter()
    for t in range(a.steps):
        batch = train[t * 32 : (t + 1) * 32]
        loss = lm_loss(model(batch[:, :-1]).logits, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (t + 1) % 250 == 0:
            print(f"step {t + 1}: train loss {float(loss) / math.log(2):.3f} bits/byte")
    after = bits_per_byte(model, held_docs), bits_per_byte(model, held_code)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(a.out), metadata={"config": repr(CONFIG), "steps": str(a.steps)})
    print(f"{a.steps} steps in {time.perf_counter() - start:.0f} s, saved {a.out}")
    print("| held-out bits per byte | docstrings | source code |")
    print("|---|---:|---:|")
    print(f"| untrained | {before[0]:.3f} | {before[1]:.3f} |")
    print(f"| pretrained | {after[0]:.3f} | {after[1]:.3f} |")


if __name__ == "__main__":
    main()
