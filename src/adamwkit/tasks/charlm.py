"""The ``charlm`` task: a small character-level transformer on the standard library's docstrings.

The text is already on every machine that runs Python: the docstrings of the standard
library's modules, classes and functions, read from the source files with :mod:`ast`
(nothing is imported, so no module's import-time side effects run). The collected text is
cached under ``$XDG_CACHE_HOME/adamwkit`` (``~/.cache/adamwkit``), written atomically.

Each example is 64 characters and the model predicts every next character; the loss is the
mean cross-entropy in nats per character.
"""

from __future__ import annotations

import ast
import os
import sys
import sysconfig
from pathlib import Path

import torch
from torch import Tensor, nn

from .._io import atomic_write
from .base import Task, cross_entropy

CONTEXT = 64
MAX_CHARS = 200_000
VOCAB = ["\n", *(chr(c) for c in range(32, 127))]  # newline and printable ASCII
_UNKNOWN = VOCAB.index("?")


def _cache_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return root / "adamwkit" / f"stdlib-docstrings-py{version}-{MAX_CHARS}.txt"


def stdlib_docstrings(max_chars: int = MAX_CHARS) -> str:
    """Docstrings of the standard library's top-level modules, in file-name order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(
            n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]  # fmt: skip
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc:
                parts.append(doc.strip() + "\n\n")
                total += len(parts[-1])
                if total >= max_chars:
                    return "".join(parts)[:max_chars]
    return "".join(parts)[:max_chars]


def load_text() -> str:
    """The cached docstring text, collected on first use."""
    cache = _cache_path()
    if cache.exists():
        return cache.read_text(encoding="utf-8")
    text = stdlib_docstrings()
    try:
        atomic_write(cache, text)
    except OSError:
        pass  # a read-only home still gets the text, just not cached
    return text


def encode(text: str) -> Tensor:
    """Character ids: newline and printable ASCII, anything else as '?'."""
    table = {ch: i for i, ch in enumerate(VOCAB)}
    return torch.tensor([table.get(ch, _UNKNOWN) for ch in text], dtype=torch.long)


class CharTransformer(nn.Module):
    """A causal transformer over characters: embeddings, pre-norm encoder layers, a head."""

    def __init__(self, vocab: int = len(VOCAB), width: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(CONTEXT, width)
        layer = nn.TransformerEncoderLayer(
            width, nhead=4, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        t = ids.shape[-1]
        pos = torch.arange(t, device=ids.device)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=ids.device)
        h = self.blocks(self.embed(ids) + self.position(pos), mask=mask, is_causal=True)
        return self.head(self.norm(h))


def charlm_task(n_examples: int = 1500) -> Task:
    """The built-in ``charlm`` task: ``n_examples`` windows of 64 characters."""
    ids = encode(load_text())
    n = min(n_examples, (len(ids) - 1) // CONTEXT)
    windows = ids[: n * CONTEXT + 1]
    x = torch.stack([windows[i * CONTEXT : (i + 1) * CONTEXT] for i in range(n)])
    y = torch.stack([windows[i * CONTEXT + 1 : (i + 1) * CONTEXT + 1] for i in range(n)])
    return Task(
        name="charlm",
        model=CharTransformer,
        data=(x, y),
        loss=cross_entropy,
        epochs=8,
        batch_size=32,
        lr=3e-3,
        schedule="cosine",
        warmup_steps=20,
        decay_scale="lr",
        test_fraction=0.2,
        description=f"2-layer character transformer on {n} x {CONTEXT} characters of "
        "standard-library docstrings",
    )
