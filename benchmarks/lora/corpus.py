"""Text already on the machine, as bytes: the pretraining corpus (the docstrings of the
standard library, prose) and the fine-tuning corpus (the standard library's source code).

Both are read from the running Python's own installation, so nothing is downloaded and the
same interpreter gives the same bytes. Tokens are bytes (a vocabulary of 256): no
tokenizer to fetch.
"""

from __future__ import annotations

import importlib
import inspect
import sysconfig
from pathlib import Path

import torch

#: Modules whose docstrings make the pretraining text (prose about Python).
DOC_MODULES = ("collections", "functools", "itertools", "json", "re", "string", "textwrap",
               "argparse", "pathlib", "os", "typing", "dataclasses", "logging", "unittest",
               "email", "http.client", "urllib.parse", "csv", "datetime", "decimal",
               "fractions", "statistics", "random", "heapq", "bisect", "shutil", "zipfile",
               "tarfile", "subprocess", "threading", "asyncio", "inspect", "pydoc")  # fmt: skip
#: Source files of the fine-tuning text (code, a different distribution).
SOURCE_FILES = ("difflib.py", "fractions.py", "heapq.py", "bisect.py", "textwrap.py",
                "shlex.py", "calendar.py", "colorsys.py", "statistics.py", "string.py",
                "queue.py", "sched.py", "graphlib.py", "numbers.py", "reprlib.py")  # fmt: skip


def docstrings() -> bytes:
    """Every docstring of :data:`DOC_MODULES` (modules, classes, functions), joined."""
    parts: list[str] = []
    seen: set[int] = set()
    for name in DOC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for obj in (module, *(getattr(module, a) for a in sorted(dir(module)))):
            doc = inspect.getdoc(obj) if id(obj) not in seen else None
            seen.add(id(obj))
            if doc and len(doc) > 80:
                parts.append(doc)
    return "\n\n".join(parts).encode("utf-8", "replace")


def source_code() -> bytes:
    """The text of :data:`SOURCE_FILES` from the standard library, joined."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return b"\n\n".join((root / f).read_bytes() for f in SOURCE_FILES if (root / f).exists())


def windows(text: bytes, length: int, count: int, seed: int) -> torch.Tensor:
    """``count`` windows of ``length + 1`` bytes at random offsets (inputs and the next
    byte for each position), as int64."""
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data) - length - 1, (count,), generator=g)
    return torch.stack([data[s : s + length + 1] for s in starts.tolist()])
