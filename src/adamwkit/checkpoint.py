r"""What a saved checkpoint holds, and loading what fits: :func:`read_checkpoint`,
:func:`inspect_checkpoint`, :func:`load_weights`.

Formats, by file name:

- ``.pt``, ``.pth``, ``.bin``, ``.ckpt``: ``torch.load(weights_only=True)``, which
  unpickles tensors, containers and numbers only. A pickle that would import anything
  else (and so could run code) is refused with a :class:`UnsafeCheckpoint` error; nothing
  in it runs.
- ``.safetensors``: ``safetensors.torch.load_file`` (``pip install 'adamwkit[checkpoints]'``).
- ``.npz``: each ``.npy`` entry read by ``numpy.lib.format`` with ``allow_pickle=False``.
- ``.h5``, ``.weights.h5`` (Keras): every dataset, named by its path with dots
  (``h5py``, in the same extra).
- a folder (``save_pretrained``): its ``*.safetensors`` files (shards merged), else
  ``pytorch_model*.bin``, ``*.pt``, ``*.pth`` or ``*.weights.h5``.

Every file is treated as hostile (see :mod:`adamwkit._safe_load`): only regular files are
opened; nothing but the named file is read (HDF5 external links, external storage and
virtual datasets are refused); declared, decompressed and strided sizes are checked against
a byte budget, ``max_bytes``, before anything is allocated (default: half of the memory
this process may use); a pickle is read opcode by opcode before ``torch.load`` runs it;
nested dicts are walked to a depth of :data:`~adamwkit._safe_load.MAX_DEPTH` and
:data:`~adamwkit._safe_load.MAX_ENTRIES` items. Every failure is a ``ValueError``
(:class:`CheckpointRefused` for a refusal) whose message is one line naming the file, with
the file's own strings escaped.

A training checkpoint (a dict with the model's ``state_dict`` under ``state_dict``,
``model``, ``model_state_dict`` or ``module``, and an optimizer's under ``optimizer``,
``optimizer_state_dict`` or Lightning's ``optimizer_states``) is split into the weights
and the optimizer's groups.

For each tensor, :func:`inspect_checkpoint` gives its shape, dtype, norm and RMS
(:math:`\lVert w\rVert / \sqrt{n}`) and whether :func:`adamwkit.param_groups` would decay
it, decided from the name and ndim alone (a file has no module types): biases, tensors of
``ndim <= 1``, names of norm layers and the tokens and position tables of
:data:`adamwkit.groups.NAME_RULES` do not decay. Given the run's ``lr`` and
``weight_decay`` (PyTorch's convention), each decayed matrix's norm is set beside its
equilibrium norm :math:`\sqrt{\eta\,n/(2\lambda)}` (Kosson et al. 2024,
arXiv:2305.17212): far above it, the decay had not yet acted; near it, the weights were
in equilibrium.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._readers import Tensors, read_h5, read_npz, read_safetensors, read_torch, unreadable
from ._safe_load import (
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_NAME,
    Budget,
    CheckpointRefused,
    UnsafeCheckpoint,
    printable,
    resolve_max_bytes,
    size_text,
)
from .equilibrium import equilibrium_norm
from .groups import name_rule

__all__ = [
    "Checkpoint",
    "CheckpointRefused",
    "LoadReport",
    "TensorInfo",
    "UnsafeCheckpoint",
    "inspect_checkpoint",
    "load_weights",
    "read_checkpoint",
]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
FORMATS = (*TORCH_SUFFIXES, ".safetensors", ".npz", ".h5")
_MODEL_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "params")
_OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optim", "opt")
_EXTRA_KEYS = ("epoch", "global_step", "step", "iteration", "best_metric")
# Norm layers by name, when no module type is at hand (LayerNorm, RMSNorm, BatchNorm and
# their usual attribute names in timm, Hugging Face, nanoGPT and Keras files).
_NORM_NAME = re.compile(
    r"(^|[._/])(norm\d*|ln(_\w+)?|ln\d*|\w*layer_?norm\w*|\w*rms_?norm\w*|bn\d*|"
    r"batch_?norm\w*|gamma|beta|moving_mean|moving_variance|running_mean|running_var)"
    r"($|[._/])",
    re.IGNORECASE,
)
_NORM_CHUNK = 2**22  # elements per piece when a norm is computed in float64


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint: its size, norms and the decay decision by name."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    norm: float
    rms: float
    decays: bool
    rule: str
    equilibrium_norm: float | None = None

    @property
    def norm_ratio(self) -> float | None:
        """norm / equilibrium norm (None without lr and weight decay, or no decay)."""
        if self.equilibrium_norm is None or self.equilibrium_norm == 0:
            return None
        return self.norm / self.equilibrium_norm


@dataclass
class Checkpoint:
    """A file's tensors (the model's weights) and, for a training checkpoint, the
    optimizer's state dict and the run's counters (``epoch``, ``global_step``, ...).
    ``skipped`` names the entries that are not tensors read; ``notes`` are one-line
    remarks (a tensor not read and why, a soft link not followed), already escaped."""

    path: Path
    format: str
    tensors: dict[str, Tensor]
    optimizer: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # entries that are not tensors
    notes: list[str] = field(default_factory=list)


def read_checkpoint(path: str | Path, *, max_bytes: int | None = None) -> Checkpoint:
    """Read a checkpoint file (see the module's docstring for the formats).

    ``max_bytes`` bounds what reading may take: the tensors' data as stored or
    decompressed, the objects a pickle builds, and, on their own, the bytes of all tensors
    together (a stride-0 view counts at its full size, as reading it materialises it).
    Sizes are checked as declared, before anything is allocated. Default (None): half of
    the memory this process may use (physical memory, cgroup limit or ``ulimit -v``).

    Raises ``ValueError`` for a path that is not a file of a known format, for a dict or
    a module passed where the path goes, :class:`UnsafeCheckpoint` for a pickle that
    ``weights_only`` loading refuses, and :class:`CheckpointRefused` for a file over the
    budget, reaching outside itself, not a regular file, damaged or otherwise unreadable:
    each one line naming the file.

    Example: ``read_checkpoint("model.safetensors").tensors["fc.weight"].shape``.
    """
    if isinstance(path, Mapping):
        raise ValueError(
            "path is a dict (a state dict?): read_checkpoint takes the path of a file; "
            "to load a state dict into a model, use adamwkit.load_weights(model, state_dict)"
        )
    if isinstance(path, nn.Module):
        raise ValueError(f"path is a {type(path).__name__}: expected the path of a checkpoint file")
    if not isinstance(path, (str, Path)):
        raise ValueError(
            f"path={path!r} is invalid: expected the path of a checkpoint file (str or Path)"
        )
    limit = resolve_max_bytes(max_bytes)
    return _read_path(Path(path), Budget(path, limit))


def _read_path(p: Path, budget: Budget, shard: bool = False) -> Checkpoint:
    """A file or a saved-model folder (not for a ``shard`` of one), read under ``budget``."""
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise ValueError(f"path={str(p)!r} is invalid: no such file") from None
    except (OSError, ValueError) as err:
        raise unreadable(p, "a path that can be read", err) from None
    if stat.S_ISDIR(mode) and shard:
        raise CheckpointRefused(f"{printable(str(p))} is a folder, not a weight file: not read")
    if stat.S_ISDIR(mode):
        return _read_directory(p, budget)
    reader = _READERS.get(_suffix(p))
    if reader is None:
        raise ValueError(
            f"path={str(p)!r} is invalid: expected a file ending in one of {', '.join(FORMATS)} "
            "(Keras: .weights.h5)"
        )
    try:
        ck = reader(p, budget)
    except CheckpointRefused:
        raise
    except RecursionError:
        budget.reject("it is nested too deeply to read")
    except MemoryError:
        budget.reject("reading it ran out of memory (a lower max_bytes refuses it sooner)")
    except Exception as err:  # any other failure of a reader: one line, never a traceback
        raise unreadable(p, "a checkpoint adamwkit can read", err) from None
    _check_tensors(ck, budget)
    return ck


def _read_torch(p: Path, budget: Budget) -> Checkpoint:
    return _split(p, "torch", read_torch(p, budget), budget)


def _read_arrays(fmt: str, reader: Callable[[Path, Budget], Tensors]) -> Callable[..., Checkpoint]:
    def read(p: Path, budget: Budget) -> Checkpoint:
        got = reader(p, budget)
        return Checkpoint(p, fmt, got.tensors, skipped=got.skipped, notes=got.notes)

    return read


def _read_safetensors(p: Path, budget: Budget) -> Checkpoint:
    return Checkpoint(p, "safetensors", read_safetensors(p, budget))


_READERS: dict[str, Callable[[Path, Budget], Checkpoint]] = {
    **dict.fromkeys(TORCH_SUFFIXES, _read_torch),
    ".safetensors": _read_safetensors,
    ".npz": _read_arrays("npz", read_npz),
    ".h5": _read_arrays("h5", read_h5),
}


def _read_directory(p: Path, budget: Budget) -> Checkpoint:
    """A saved model folder (``save_pretrained``): its weight files, shards merged."""
    for pattern in ("*.safetensors", "pytorch_model*.bin", "*.pt", "*.pth", "*.weights.h5"):
        files = sorted(p.glob(pattern))
        if files:
            break
    else:
        raise ValueError(
            f"path={str(p)!r} is a folder with no weight file (*.safetensors, "
            "pytorch_model*.bin, *.pt, *.pth, *.weights.h5)"
        )
    parts = [_read_path(f, budget, shard=True) for f in files]
    tensors: dict[str, Tensor] = {}
    for part in parts:
        tensors.update(part.tensors)
    return Checkpoint(p, f"{parts[0].format}, {len(files)} file(s)", tensors,
                      parts[0].optimizer, parts[0].extra,
                      [s for part in parts for s in part.skipped],
                      [n for part in parts for n in part.notes])  # fmt: skip


def _suffix(p: Path) -> str:
    name = p.name.lower()
    return ".h5" if name.endswith(".h5") else p.suffix.lower()


def _odd_tensor(t: Tensor) -> str | None:
    """Why a loaded tensor is not read as weights (sparse, meta, quantized, ...), or None."""
    if t.layout != torch.strided:
        return f"a {str(t.layout).removeprefix('torch.')} tensor"
    if t.device.type == "meta":
        return "a meta tensor (it has no data)"
    if t.is_quantized or t.is_nested:
        return "a quantized tensor" if t.is_quantized else "a nested tensor"
    if t.device.type != "cpu":
        return f"a tensor on {t.device}"
    return None


def _check_tensors(ck: Checkpoint, budget: Budget) -> None:
    """Drop (with a note) tensors that are not plain dense ones, and refuse a file whose
    tensors together (views at their full size) come to more than the budget."""
    total = 0
    worst: tuple[str, int, Tensor | None] = ("", 0, None)
    for name, t in list(ck.tensors.items()):
        why = _odd_tensor(t)
        if why is not None:
            del ck.tensors[name]
            ck.skipped.append(name)
            ck.notes.append(f"{printable(name)!r}: {why}, not read")
            continue
        n = t.numel() * t.element_size()
        total += n
        if n > worst[1]:
            worst = (name, n, t)
    if total <= budget.limit:
        return
    name, n, big = worst
    held = big.untyped_storage().nbytes() if big is not None else n
    if big is not None and n > held:
        shape = "x".join(map(str, big.shape))
        budget.refuse(
            f"tensor {printable(name)!r} is a {shape} view of {size_text(held)} of data "
            f"(strides {', '.join(map(str, big.stride()))}), and reading it would take "
            f"{size_text(n)}"
        )
    budget.refuse(f"its tensors would take {size_text(total)} to read")


def _split(p: Path, fmt: str, obj: Any, budget: Budget | None = None) -> Checkpoint:
    """The weights, optimizer and counters of what ``torch.load`` returned."""
    where = printable(str(p))
    if isinstance(obj, Tensor):
        return Checkpoint(p, fmt, {"tensor": obj})
    if not isinstance(obj, Mapping):
        raise CheckpointRefused(
            f"{where} holds a {type(obj).__name__}, not a state dict (name -> tensor) or a "
            "training checkpoint (a dict)"
        )
    model = next((obj[k] for k in _MODEL_KEYS if isinstance(obj.get(k), Mapping)), None)
    source = model if model is not None else obj
    tensors, skipped = {}, []
    for k, v in _flatten(source, where, budget):
        if isinstance(v, Tensor):
            tensors[k] = v
        elif model is not None or not _is_optimizer_like(k):
            skipped.append(k)
    optimizer = next((obj[k] for k in _OPTIMIZER_KEYS if _is_optimizer(obj.get(k))), None)
    if optimizer is None and isinstance(obj.get("optimizer_states"), list):
        optimizer = next((o for o in obj["optimizer_states"] if _is_optimizer(o)), None)
    if model is None and optimizer is not None:
        tensors = {k: v for k, v in tensors.items() if not _is_optimizer_like(k)}
    extra = {k: obj[k] for k in _EXTRA_KEYS if _is_counter(obj.get(k))}
    if not tensors and optimizer is None:
        keys = ", ".join(_key(k) for k in itertools.islice(obj, 10))
        raise CheckpointRefused(f"{where} holds no tensors (keys: {printable(keys)})")
    return Checkpoint(p, fmt, tensors, optimizer, extra, skipped)


def _is_counter(v: Any) -> bool:
    """A run's counter worth showing: a float, or an int of at most 18 digits."""
    return type(v) is float or (type(v) is int and abs(v) < 10**18)


def _key(k: Any) -> str:
    """A dict key as part of a tensor's name."""
    if isinstance(k, str):
        return k
    if k is None or isinstance(k, (bool, int, float)):
        return str(k)
    return f"<{type(k).__name__}>"


def _flatten(
    root: Mapping, where: str = "<state dict>", budget: Budget | None = None
) -> list[tuple[str, Any]]:
    """``(dotted name, value)`` of every leaf of nested dicts (an optimizer's state dict is
    a leaf), walked without recursion and refused in one line past :data:`MAX_DEPTH`
    levels, :data:`MAX_ENTRIES` items (shared dicts count each time they are reached: a
    "billion laughs" file), a name of :data:`MAX_NAME` characters, or a dict that holds
    itself."""
    out: list[tuple[str, Any]] = []
    stack = [(iter(root.items()), "", root)]
    on_path = {id(root)}
    seen = 0
    while stack:
        items, prefix, node = stack[-1]
        item = next(items, None)  # items are (key, value) pairs, never None
        if item is None:
            stack.pop()
            on_path.discard(id(node))
            continue
        seen += 1
        k, v = item
        name = prefix + _key(k)
        if seen > MAX_ENTRIES:
            raise CheckpointRefused(
                f"{where} is refused: it holds more than {MAX_ENTRIES:,} entries (dicts "
                "shared many times over, as in a 'billion laughs' file?)"
            )
        if len(name) > MAX_NAME:
            raise CheckpointRefused(
                f"{where} is refused: a name is longer than {MAX_NAME:,} characters"
            )
        if budget is not None:
            budget.charge(len(name) + 64, "the names of its entries")
        if not (isinstance(v, Mapping) and not _is_optimizer(v)):
            out.append((name, v))
        elif id(v) in on_path:
            raise CheckpointRefused(f"{where} is refused: {printable(name)!r} holds itself")
        elif len(stack) >= MAX_DEPTH:
            raise CheckpointRefused(
                f"{where} is refused: its dicts nest more than {MAX_DEPTH} levels deep "
                f"(at {printable(name)!r})"
            )
        else:
            on_path.add(id(v))
            stack.append((iter(v.items()), name + ".", v))
    return out


def _is_optimizer(d: Any) -> bool:
    return isinstance(d, Mapping) and "param_groups" in d and "state" in d


def _is_optimizer_like(name: str) -> bool:
    return name.split(".", 1)[0] in (*_OPTIMIZER_KEYS, "optimizer_states", "lr_schedulers")


_PART = 100  # characters of one part of a name that the norm pattern reads


def _norm_by_name(name: str) -> bool:
    """Whether ``name`` names a norm layer's tensor. The pattern cannot span a "." or
    "/", so it is searched in the parts between them: the last four (a norm layer's name
    is among them: ``...LayerNorm.weight``, Keras' ``layer_normalization/vars/0``), and
    only those of at most :data:`_PART` characters, so that the time is bounded (on a
    crafted name of many underscores the search is quadratic: 72 s for 65,000)."""
    parts = re.split(r"[./]", name[-4 * (_PART + 1) :])[-4:]
    return any(len(part) <= _PART and _NORM_NAME.search(part) for part in parts)


def _decision(name: str, t: Tensor) -> tuple[bool, str]:
    """Whether param_groups would decay a tensor of this name and ndim."""
    label = name_rule([name])
    if label is not None:
        return False, label
    if name.rsplit(".", 1)[-1].endswith("bias"):
        return False, "bias"
    if t.ndim <= 1:
        return False, "ndim <= 1"
    if _norm_by_name(name):
        return False, "norm layer (by name)"
    if not (t.is_floating_point() or t.is_complex()):
        return False, f"not a float ({str(t.dtype).removeprefix('torch.')})"
    return True, "ndim >= 2"


def tensor_info(
    name: str, t: Tensor, lr: float | None = None, weight_decay: float | None = None
) -> TensorInfo:
    """The row of :func:`inspect_checkpoint` for one tensor."""
    x = t.detach().to("cpu")
    numel = x.numel()
    norm = _norm(x)
    decays, rule = _decision(name, x)
    eq = None
    if decays and lr is not None and weight_decay:
        eq = equilibrium_norm(lr, weight_decay, numel)
    return TensorInfo(name, tuple(x.shape), str(x.dtype).removeprefix("torch."), numel, norm,
                      norm / math.sqrt(numel) if numel else 0.0, decays, rule, eq)  # fmt: skip


def _norm(x: Tensor) -> float:
    """The L2 norm in float64, computed in pieces so that no float64 copy of the whole
    tensor is made (0 for a tensor that is not a float one, or empty)."""
    if not x.is_floating_point() or x.numel() == 0:
        return 0.0
    flat = x.reshape(-1)  # a view of a contiguous tensor; else a copy (within the budget)
    parts = [torch.linalg.vector_norm(flat[i : i + _NORM_CHUNK].double())
             for i in range(0, flat.numel(), _NORM_CHUNK)]  # fmt: skip
    return float(parts[0] if len(parts) == 1 else torch.linalg.vector_norm(torch.stack(parts)))


def inspect_checkpoint(
    path: str | Path,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """Read ``path`` and describe it: format, tensors (see :class:`TensorInfo`), the
    optimizer's groups (lr, weight_decay, convention, step), the run's counters, the
    entries skipped and notes (a tensor not read and why, a malformed optimizer section).

    ``lr`` and ``weight_decay`` (PyTorch's convention) go together and add each decayed
    matrix's equilibrium norm. ``max_bytes``: what reading the file may take, as in
    :func:`read_checkpoint` (default: half of the memory this process may use). Example:
    ``inspect_checkpoint("ckpt.pt", lr=1e-3, weight_decay=0.05)["tensors"][0]``.
    """
    from ._checks import check_lr, check_range

    if (lr is None) != (weight_decay is None):
        raise ValueError("lr and weight_decay go together: give both, or neither")
    if lr is not None:
        lr = check_lr("lr", lr)
        weight_decay = check_range("weight_decay", weight_decay, 0.0, low_open=True)
    ck = read_checkpoint(path, max_bytes=max_bytes)
    rows = [_row(ck, n, t, lr, weight_decay) for n, t in ck.tensors.items()]
    groups, notes = _optimizer_groups(ck.optimizer)
    n_all = sum(r.numel for r in rows)
    n_dec = sum(r.numel for r in rows if r.decays)
    return {
        "path": str(ck.path),
        "format": ck.format,
        "tensors": rows,
        "parameters": n_all,
        "decayed_parameters": n_dec,
        "optimizer": groups,
        "extra": ck.extra,
        "skipped": ck.skipped,
        "notes": _first_notes(ck.notes + notes),
        "lr": lr,
        "weight_decay": weight_decay,
    }


def _row(ck: Checkpoint, name: str, t: Tensor, lr: float | None, wd: float | None) -> TensorInfo:
    try:
        return tensor_info(name, t, lr, wd)
    except (RuntimeError, MemoryError) as err:  # out of memory despite the budget
        raise unreadable(ck.path, f"readable at tensor {printable(name)!r}", err) from None


_MALFORMED = "optimizer section malformed: "
_NOTES = 20  # notes shown; the rest are counted


def _first_notes(notes: list[str]) -> list[str]:
    """``notes`` without repeats, the first :data:`_NOTES` of them and a count of the rest."""
    unique = list(dict.fromkeys(notes))
    more = [f"{len(unique) - _NOTES:,} more notes"] if len(unique) > _NOTES else []
    return unique[:_NOTES] + more


def _optimizer_groups(
    opt: Mapping[str, Any] | None,
) -> tuple[list[dict[str, Any]] | None, list[str]]:
    """Each optimizer group's row for :func:`inspect_checkpoint`, and notes on what in the
    section has the wrong type (described and left out, never a traceback)."""
    if opt is None:
        return None, []
    notes: list[str] = []
    state = opt.get("state")
    if not isinstance(state, Mapping):
        notes.append(f"{_MALFORMED}its state is {_a(state)}, not a dict")
        state = {}
    groups = opt.get("param_groups")
    if not isinstance(groups, (list, tuple)):
        notes.append(f"{_MALFORMED}param_groups is {_a(groups)}, not a list")
        groups = []
    out: list[dict[str, Any]] = []
    # parameters whose step is looked up, over all groups: one list of ids can be shared
    # by every group (a "billion laughs")
    left = MAX_ENTRIES
    for i, g in enumerate(groups):
        if not isinstance(g, Mapping):
            notes.append(f"{_MALFORMED}param_groups[{i}] is {_a(g)}, not a dict")
        elif len(out) < 1000:
            out.append(_group_row(i, g, state, notes, left))
            left -= min(left, out[-1]["params"])
    if left == 0:
        notes.append(f"steps are read for the first {MAX_ENTRIES:,} parameters only")
    if len(out) == 1000 and len(groups) > 1000:
        notes.append(f"{len(groups) - 1000:,} more optimizer groups not shown")
    return out, notes


def _group_row(
    i: int, g: Mapping[str, Any], state: Mapping, notes: list[str], limit: int
) -> dict[str, Any]:
    """One group's row; the steps of its first ``limit`` parameters are looked up."""
    where = f"param_groups[{i}]"
    ids = g.get("params", [])
    if not isinstance(ids, (list, tuple)):
        notes.append(f"{_MALFORMED}{where}['params'] is {_a(ids)}, not a list")
        ids = []
    steps: list[int] = []
    for k in itertools.islice(ids, limit):
        entry = state.get(k) if isinstance(k, (int, str)) else None
        if isinstance(entry, Mapping) and "step" in entry:
            step = _step(entry["step"], notes)
            if step is not None:
                steps.append(step)
    scale = g.get("decay_scale")
    if scale is not None and not isinstance(scale, str):
        notes.append(f"{_MALFORMED}{where}['decay_scale'] is {_a(scale)}, not a string")
        scale = f"<{type(scale).__name__}>"
    return {
        "group": i,
        "params": len(ids),
        "lr": _number(g.get("lr"), f"{where}['lr']", notes),
        "weight_decay": _number(g.get("weight_decay"), f"{where}['weight_decay']", notes),
        "decay_scale": scale if scale is not None else "lr",
        "convention": "adamwkit.AdamW" if scale is not None else "PyTorch (no decay_scale key)",
        "step": max(steps) if steps else None,
        "betas": _betas(g.get("betas"), f"{where}['betas']", notes),
    }


def _scalar(v: Any) -> Any:
    """A tensor of one element as a Python number; anything else as it is."""
    if isinstance(v, Tensor) and v.numel() == 1 and _odd_tensor(v) is None:
        if v.is_floating_point() or not (v.is_complex() or v.dtype == torch.bool):
            return v.reshape(()).item()
    return v


def _step(v: Any, notes: list[str]) -> int | None:
    x = _scalar(v)
    if type(x) is int:
        return x
    if type(x) is float and math.isfinite(x):
        return int(x)
    notes.append(f"{_MALFORMED}a step is {_what(x)}, not a count")
    return None


def _number(v: Any, where: str, notes: list[str]) -> float | None:
    if v is None:
        return None
    x = _scalar(v)
    if type(x) in (int, float):
        try:
            return float(x)
        except OverflowError:
            pass
    notes.append(f"{_MALFORMED}{where} is {_what(x)}, not a number")
    return None


def _betas(v: Any, where: str, notes: list[str]) -> list[float] | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)) and len(v) == 2:
        pair = [_number(b, where, notes) for b in v]
        if None not in pair:
            return pair  # type: ignore[return-value]
        return None
    notes.append(f"{_MALFORMED}{where} is {_what(v)}, not a pair of numbers")
    return None


def _what(x: Any) -> str:
    """A short description of an unexpected value: ``inf``, ``a tensor of shape 3x2``."""
    if type(x) in (int, float):
        return repr(x) if len(repr(x)) < 30 else f"a {len(str(x))}-digit number"
    if isinstance(x, Tensor):
        return f"a tensor of shape {'x'.join(map(str, x.shape)) or 'scalar'}"
    return _a(x)


def _a(x: Any) -> str:
    """``x``'s type with its article: ``an int``, ``a list``."""
    name = type(x).__name__
    return f"{'an' if name[:1] in 'aeiouAEIOU' else 'a'} {name}"


# ---------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    """What :func:`load_weights` did: the keys loaded, the model's keys the checkpoint
    lacks, the checkpoint's keys the model lacks, and those whose shapes differ."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # name, file, model
    stripped_prefix: str = ""

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        head = f"loaded {len(self.loaded)} tensors"
        if self.stripped_prefix:
            head += f" (prefix {self.stripped_prefix!r} stripped from the checkpoint's names)"
        if self.complete:
            return head + "; every key matched"
        # names come from the file: escaped, so printing the report cannot drive the terminal
        rows = [("missing (kept as initialised)", _name(n), "-", "") for n in self.missing]
        rows += [("unexpected (ignored)", _name(n), "", "-") for n in self.unexpected]
        rows += [("shape mismatch (kept as initialised)", _name(n), _shape(a), _shape(b))
                 for n, a, b in self.mismatched]  # fmt: skip
        header = ("what", "key", "checkpoint", "model")
        widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(4)]
        lines = ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
                 for r in (header, *rows)]  # fmt: skip
        return head + "\n" + "\n".join(line.rstrip() for line in lines)


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(map(str, s)) or "scalar"


def _name(n: str) -> str:
    return printable(n, limit=300)


def load_weights(
    model: nn.Module,
    path_or_state_dict: str | Path | Mapping[str, Tensor],
    *,
    max_bytes: int | None = None,
) -> LoadReport:
    """Load into ``model`` every tensor of a checkpoint whose name and shape fit; report
    the rest instead of failing.

    ``path_or_state_dict`` is a file :func:`read_checkpoint` reads, or a state dict (name
    to tensor). A training checkpoint's model weights are used. When the checkpoint's
    names carry a wrapper's prefix the model lacks (``module.`` from DDP, ``_orig_mod.``
    from ``torch.compile``), or the other way round, it is stripped or added. Tensors are
    copied in place (``model``'s dtype and device are kept); keys not loaded keep the
    model's values. Returns a :class:`LoadReport` (``print`` it for the table).

    This is how a pretrained model gets a new trainable part (a coefficient, a head): build
    the new model, ``load_weights`` the old file, and the new tensors are reported as
    missing and keep their initial values.

    ``max_bytes``: what reading a file may take, as in :func:`read_checkpoint` (default:
    half of the memory this process may use); a file over it is refused, in one line,
    before anything is allocated.

    Example: ``print(load_weights(model, "pretrained.safetensors"))``.
    """
    if isinstance(model, Mapping) and isinstance(path_or_state_dict, nn.Module):
        raise ValueError(
            "model is a dict and path_or_state_dict a Module: the arguments are "
            "(model, path_or_state_dict)"
        )
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model={type(model).__name__} is invalid: expected the torch.nn.Module to load into"
        )
    if isinstance(path_or_state_dict, nn.Module):
        raise ValueError(
            f"path_or_state_dict is a {type(path_or_state_dict).__name__}: pass its "
            "state_dict() or a file path"
        )
    if isinstance(path_or_state_dict, Mapping):
        ck = _split(Path("<state dict>"), "state dict", path_or_state_dict)
        source = ck.tensors
    elif isinstance(path_or_state_dict, (str, Path)):
        source = read_checkpoint(path_or_state_dict, max_bytes=max_bytes).tensors
    else:
        raise ValueError(
            f"path_or_state_dict={type(path_or_state_dict).__name__} is invalid: expected a "
            "file path (str or Path) or a state dict (name -> tensor); a file object is "
            "read by read_checkpoint(path) or torch.load(file)"
        )
    target = model.state_dict(keep_vars=True)
    source, prefix = _align(source, target)
    loaded, mismatched = [], []
    with torch.no_grad():
        for name, t in source.items():
            if name not in target:
                continue
            if tuple(t.shape) != tuple(target[name].shape):
                mismatched.append((name, tuple(t.shape), tuple(target[name].shape)))
                continue
            target[name].copy_(t)
            loaded.append(name)
    # a tied alias the file leaves out (HF drops lm_head.weight) shares the loaded tensor
    shared = {(target[n].data_ptr(), tuple(target[n].shape)) for n in loaded}
    tied = [n for n in target if n not in source
            and (target[n].data_ptr(), tuple(target[n].shape)) in shared]  # fmt: skip
    missing = [n for n in target if n not in source and n not in tied]
    unexpected = [n for n in source if n not in target]
    return LoadReport(loaded + tied, missing, unexpected, mismatched, prefix)


_PREFIXES = ("module.", "_orig_mod.", "model.")


def _align(
    source: dict[str, Tensor], target: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], str]:
    """``source`` with a wrapper's prefix stripped (or added) when that matches more keys."""
    tried = [(source, "")]
    frontier = [(source, "")]
    for _ in range(3):  # nested wrappers: module._orig_mod.
        grown = []
        for keys, label in frontier:
            for pre in _PREFIXES:
                if all(k.startswith(pre) for k in keys):
                    grown.append(({k[len(pre) :]: v for k, v in keys.items()}, label + pre))
                elif all(k.startswith(pre) for k in target):
                    grown.append(({pre + k: v for k, v in keys.items()}, f"{label}+{pre}"))
        tried += grown
        frontier = grown
    # the most keys matched; among ties, the fewest changes
    return max(tried, key=lambda c: (len(set(c[0]) & set(target)), -len(c[1])))
