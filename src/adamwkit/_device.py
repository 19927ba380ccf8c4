"""Where a run trains and in what precision: ``device`` and ``precision`` for every entry point.

- ``device``: ``"auto"`` (the first CUDA device when there is one, else the CPU), ``"cpu"``,
  ``"cuda"`` or ``"cuda:i"``. Asking for CUDA on a machine without it is a bad argument,
  refused in one line, not a crash on the first tensor moved.
- ``precision``: ``"fp32"`` (weights, gradients and optimizer state in the model's dtype)
  or ``"bf16"``: the forward pass and the loss run under ``torch.autocast`` with
  bfloat16, the weights and AdamW's state stay float32 (mixed precision as in
  ``torch.amp``; bfloat16 has float32's range, so no loss scaling is needed).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch

from ._constants import PRECISIONS

__all__ = ["DEVICES", "PRECISIONS", "autocast", "cpu_share", "device_for", "resolve_device"]

DEVICES = "auto, cpu, cuda or cuda:<index>"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` named by ``device``; a ``ValueError`` naming it when unusable."""
    text = "auto" if device is None else str(device)
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    found = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not found:
        raise ValueError(f"device={device!r} is invalid: expected {DEVICES}")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} is invalid: this machine has no CUDA device "
            "(torch.cuda.is_available() is False); use 'cpu' or 'auto'"
        )
    count = torch.cuda.device_count()
    index = int(found.group(1) or 0)
    if index >= count:
        raise ValueError(
            f"device={device!r} is invalid: expected an index in [0, {count - 1}] "
            f"({count} CUDA device{'s' if count > 1 else ''})"
        )
    return torch.device("cuda", index)


def device_for(device: str | torch.device | None, worker: int) -> torch.device:
    """The device of local worker ``worker``: with ``"auto"`` or ``"cuda"`` on a machine with
    several GPUs, GPU ``worker mod count``; any explicit index is kept."""
    resolved = resolve_device(device)
    text = "auto" if device is None else str(device)
    if resolved.type == "cuda" and text in ("auto", "cuda"):
        return torch.device("cuda", worker % torch.cuda.device_count())
    return resolved


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` and the device supports it."""
    if precision not in PRECISIONS:
        listed = ", ".join(repr(p) for p in PRECISIONS)
        raise ValueError(f"precision={precision!r} is invalid: expected one of {listed}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"precision='bf16' is invalid on {device}: this GPU has no bfloat16 support"
        )
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """The forward pass's precision: nothing for fp32, ``torch.autocast`` to bfloat16 else."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


def cpu_share(workers: int, busy: float = 0.0) -> int:
    """Torch threads for one of ``workers`` processes on this machine, ``busy`` cores being
    used by other programs: an even share of the free cores, at least one.

    With two cores, two intra-op threads and one core taken by another program, each
    parallel region waits for the descheduled thread: a small MLP's fit went from 0.33 s to
    30 s. One thread per free core avoids that.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    free = max(1.0, (cores or 1) - busy)
    return max(1, int(free + 0.25) // max(1, workers))
