"""Where a run trains and in what precision: ``device`` and ``precision`` for every entry point.

- ``device``: ``"auto"`` (the first CUDA device when there is one, else the CPU), ``"cpu"``,
  ``"cuda"`` or ``"cuda:i"``. Asking for CUDA on a machine without it is a bad argument,
  refused in one line, not a crash on the first tensor moved.
- ``devices`` (``--gpus 0,1,2,3``): the GPUs a tune run places its work on
  (:func:`check_devices`, :func:`device_for`): worker ``i`` on GPU ``devices[i mod n]``
  (one worker per GPU by default), or under ``torchrun`` local rank ``r`` on
  ``devices[r]`` (one run over several GPUs, a GPU per process). :func:`members_on` packs stacked
  members on one GPU by its measured free memory, or by ``max_memory`` GiB per GPU.
- ``precision``: ``"fp32"`` (weights, gradients and optimizer state in the model's dtype)
  or ``"bf16"``: the forward pass and the loss run under ``torch.autocast`` with
  bfloat16, the weights and AdamW's state stay float32 (mixed precision as in
  ``torch.amp``; bfloat16 has float32's range, so no loss scaling is needed).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ._constants import PRECISIONS

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "autocast",
    "check_devices",
    "cpu_share",
    "cuda_count",
    "device_for",
    "members_on",
    "resolve_device",
]

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


def cuda_count() -> int:
    """CUDA devices this process sees (0 without CUDA); tests replace it with a fake list."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_devices(devices: Any, device: str | None = "auto") -> tuple[int, ...] | None:
    """The GPU indices of ``devices`` (``"0,1,2,3"``, or a sequence of whole numbers),
    each once, in order; ``None`` stays ``None``. A ``ValueError`` in one line names the
    value and the indices this machine has; ``device`` must then be ``auto`` or ``cuda``."""
    if devices is None:
        return None
    text = devices if isinstance(devices, str) else None
    try:
        if text is not None:
            items: list[Any] = [p.strip() for p in text.split(",")]
        elif isinstance(devices, Sequence):
            items = list(devices)
        else:
            raise TypeError
        indices = []
        for item in items:
            if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
                raise TypeError
            indices.append(int(item))
        if not indices:
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(
            f"devices={devices!r} is invalid: expected GPU indices, comma-separated (0,1,2,3)"
        ) from None
    count = cuda_count()
    if count == 0:
        raise ValueError(
            f"devices={devices!r} is invalid: this machine has no CUDA device "
            "(torch.cuda.is_available() is False)"
        )
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise ValueError(
            f"devices={devices!r} is invalid: expected indices in [0, {count - 1}] "
            f"({count} CUDA device{'s' if count > 1 else ''}), got {bad[0]}"
        )
    if len(set(indices)) < len(indices):
        raise ValueError(f"devices={devices!r} is invalid: expected each GPU once")
    if str(device or "auto") not in ("auto", "cuda"):
        raise ValueError(
            f"devices={devices!r} is invalid with device={device!r}: devices places the "
            "runs on those GPUs; leave device at 'auto' (or 'cuda')"
        )
    return tuple(indices)


def device_for(
    device: str | torch.device | None,
    worker: int | None,
    devices: Sequence[int] | None = None,
) -> torch.device:
    """The device of local worker (or local rank) ``worker``: with ``devices``, GPU
    ``devices[worker mod len(devices)]``; with ``"auto"`` or ``"cuda"`` on a machine with
    several GPUs, GPU ``worker mod count``; any explicit index is kept."""
    index = worker or 0
    if devices:
        return torch.device("cuda", devices[index % len(devices)])
    resolved = resolve_device(device)
    text = "auto" if device is None else str(device)
    if resolved.type == "cuda" and text in ("auto", "cuda"):
        return torch.device("cuda", index % torch.cuda.device_count())
    return resolved


#: The share of a GPU's free memory that stacked members may fill (activations, the
#: allocator's slack and the evaluation's batches take the rest).
FREE_SHARE = 0.8


def free_bytes(device: torch.device) -> int:
    """The free memory of the GPU ``device`` now (tests replace it)."""
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def members_on(
    device: torch.device,
    per_member: int,
    max_memory: float | None,
    cap: int,
    shared: int = 0,
    workers: int = 1,
) -> tuple[int, str]:
    """How many stacked members of ``per_member`` bytes (beside ``shared`` bytes held once,
    a frozen base) fit on ``device``, at most ``cap``, and how that was found: ``max_memory``
    GiB (per GPU) when given, else :data:`FREE_SHARE` of the GPU's measured free memory,
    split between the ``workers`` that share the GPU; on the CPU without ``max_memory``,
    ``cap``."""
    if per_member <= 0:
        return cap, "no size measured"
    if max_memory is not None:
        budget, how = int(max_memory * 2**30), f"max_memory {max_memory:g} GiB"
    elif device.type != "cuda":
        return cap, "not a GPU"
    else:
        free = free_bytes(device)
        budget = int(free * FREE_SHARE)
        how = f"{FREE_SHARE:.0%} of {free / 2**30:.1f} GiB free on {device}"
    if workers > 1:
        budget //= workers
        how += f", split between its {workers} workers"
    return max(1, min(cap, (budget - shared) // per_member)), how


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
