"""Tune the weight decay of a Hugging Face ``Trainer``: a 2-layer GPT-2 on Python's docstrings.

The model is built from a config (nothing is downloaded) and the text is the standard
library's docstrings, already on the machine. ``trainer_objective`` builds one ``Trainer``
per trial with adamwkit's AdamW and the trial's weight decay, and returns the eval loss.

    python examples/hf_trainer.py
    adamwkit tune examples.hf_trainer:objective --examples 192 --lr 1e-3 \\
        --batch-size 16 --epochs 2 --grid 0,0.1,1
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

import adamwkit
from adamwkit.integrations.transformers import trainer_objective
from adamwkit.tasks.charlm import VOCAB, encode, load_text

CONTEXT = 32


class Windows(Dataset):
    """Consecutive windows of characters; the model predicts each next one."""

    def __init__(self, n: int = 192) -> None:
        ids = encode(load_text()[: n * CONTEXT])
        self.ids = ids[: n * CONTEXT].view(n, CONTEXT)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def model_init() -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=CONTEXT, n_embd=32, n_layer=2,
                        n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    return GPT2LMHeadModel(config)


DATA = Windows()
ARGS = TrainingArguments(
    per_device_train_batch_size=16, per_device_eval_batch_size=64, num_train_epochs=2,
    eval_strategy="epoch", logging_strategy="no", lr_scheduler_type="cosine",
    disable_tqdm=True, dataloader_num_workers=0,
)  # fmt: skip
objective = trainer_objective(model_init, ARGS, DATA)


def main(argv: list[str] | None = None) -> adamwkit.TuneResult:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="adamwkit-runs")
    p.add_argument("--folds", type=int, default=2)
    a = p.parse_args(argv)
    result = adamwkit.tune(
        objective, data=DATA, lr=1e-3, batch_size=16, epochs=2, folds=a.folds,
        grid=[0.0, 0.1, 1.0], out=a.out, study="hf-trainer",
    )  # fmt: skip
    print(result.summary["verdict"])
    return result


if __name__ == "__main__":
    main()
