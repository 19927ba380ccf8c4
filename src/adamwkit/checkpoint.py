r"""What a saved checkpoint holds, and loading what fits: :func:`read_checkpoint`,
:func:`inspect_checkpoint`, :func:`load_weights`.

Formats, by file name:

- ``.pt``, ``.pth``, ``.bin``, ``.ckpt``: ``torch.load(weights_only=True)``, which
  unpickles tensors, containers and numbers only. A pickle that would import anything
  else (and so could run code) is refused with a :class:`UnsafeCheckpoint` error; nothing
  in it runs.
- ``.safetensors``: ``safetensors.torch.load_file`` (``pip install 'adamwkit[checkpoints]'``).
- ``.npz``: ``numpy.load(allow_pickle=False)``.
- ``.h5``, ``.weights.h5`` (Keras): every dataset, named by its path with dots
  (``h5py``, in the same extra).
- a folder (``save_pretrained``): its ``*.safetensors`` files (shards merged), else
  ``pytorch_model*.bin``, ``*.pt``, ``*.pth`` or ``*.weights.h5``.

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

import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .equilibrium import equilibrium_norm
from .groups import name_rule

__all__ = [
    "Checkpoint",
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


class UnsafeCheckpoint(ValueError):
    """A pickle that ``weights_only`` loading refuses: it names Python objects to import,
    which could run code. It is not loaded."""


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
    optimizer's state dict and the run's counters (``epoch``, ``global_step``, ...)."""

    path: Path
    format: str
    tensors: dict[str, Tensor]
    optimizer: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # entries that are not tensors


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file (see the module's docstring for the formats).

    Raises ``ValueError`` for a path that is not a file of a known format, for a dict or
    a module passed where the path goes, and :class:`UnsafeCheckpoint` for a pickle that
    ``weights_only`` loading refuses.

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
    p = Path(path)
    if p.is_dir():
        return _read_directory(p)
    if not p.is_file():
        raise ValueError(f"path={str(p)!r} is invalid: no such file")
    suffix = _suffix(p)
    if suffix in TORCH_SUFFIXES:
        return _split(p, "torch", _torch_load(p))
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ValueError(
                f"reading {p.name} needs safetensors: pip install 'adamwkit[checkpoints]'"
            ) from err
        try:
            return Checkpoint(p, "safetensors", dict(load_file(str(p), device="cpu")))
        except Exception as err:  # safetensors raises its own error type for bad headers
            raise _unreadable(p, "a safetensors file", err) from None
    if suffix == ".npz":
        import numpy as np

        if not zipfile.is_zipfile(p):
            raise ValueError(f"{p} is not an .npz file (not a zip archive of .npy arrays)")
        arrays, skipped = {}, []
        try:
            with np.load(p, allow_pickle=False) as z:
                for k in z.files:
                    a = np.array(z[k])
                    if a.dtype.kind not in "fiub":  # strings, bytes: not weights
                        skipped.append(k)
                        continue
                    native = a.astype(a.dtype.newbyteorder("="), copy=False)
                    arrays[k] = torch.from_numpy(native)
        except ValueError as err:
            if "allow_pickle" not in str(err):
                raise _unreadable(p, "an .npz file numpy can read", err) from None
            raise UnsafeCheckpoint(
                f"{p} holds pickled Python objects (object arrays), which could run code "
                "when loaded: adamwkit does not load them"
            ) from None
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise _unreadable(p, "an .npz file numpy can read", err) from None
        return Checkpoint(p, "npz", arrays, skipped=skipped)
    if suffix == ".h5":
        return Checkpoint(p, "h5", _h5_tensors(p))
    raise ValueError(
        f"path={str(p)!r} is invalid: expected a file ending in one of {', '.join(FORMATS)} "
        "(Keras: .weights.h5)"
    )


def _read_directory(p: Path) -> Checkpoint:
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
    parts = [read_checkpoint(f) for f in files]
    tensors: dict[str, Tensor] = {}
    for part in parts:
        tensors.update(part.tensors)
    return Checkpoint(p, f"{parts[0].format}, {len(files)} file(s)", tensors,
                      parts[0].optimizer, parts[0].extra)  # fmt: skip


def _suffix(p: Path) -> str:
    name = p.name.lower()
    return ".h5" if name.endswith(".h5") else p.suffix.lower()


def _unreadable(p: Path, what: str, err: BaseException) -> ValueError:
    """A file of the right name that its reader cannot parse (damaged, truncated, other)."""
    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else "empty or truncated"
    return ValueError(f"{p} is not {what} ({type(err).__name__}: {detail})")


def _torch_load(p: Path) -> Any:
    major, minor = (int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    if (major, minor) < (2, 6):
        raise UnsafeCheckpoint(
            f"reading {p} safely needs torch>=2.6: on torch {torch.__version__}, "
            "weights_only loading can still run code (CVE-2025-32434); upgrade torch, or "
            "convert the file to .safetensors where it was made"
        )
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).strip().splitlines()]
        why = next((line for line in lines if "GLOBAL" in line or "Unsupported global" in line),
                   None)  # fmt: skip
        if why is None:  # not a refusal of a global: a damaged or foreign file
            detail = next((line for line in lines if line.startswith("Unsupported")), None)
            raise _unreadable(
                p, "a file torch.load can read", pickle.UnpicklingError(detail or lines[0])
            ) from None
        raise UnsafeCheckpoint(
            f"{p} is a pickle that names Python objects to import ({why[:200]}): loading "
            "it could run code, so adamwkit does not. If you trust its source, load it "
            "with torch.load(path, weights_only=False) and save model.state_dict(), or "
            "convert it to .safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise _unreadable(p, "a file torch.load can read", err) from None


def _h5_tensors(p: Path) -> dict[str, Tensor]:
    try:
        import h5py
    except ImportError as err:
        raise ValueError(
            f"reading {p.name} (Keras) needs h5py: pip install 'adamwkit[checkpoints]'"
        ) from err
    import numpy as np

    out: dict[str, Tensor] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiub":
            out[name.replace("/", ".")] = torch.from_numpy(np.array(obj))

    try:
        with h5py.File(p, "r") as f:
            f.visititems(visit)
    except OSError as err:
        raise _unreadable(p, "an HDF5 file h5py can read", err) from None
    return out


def _is_state(d: Any) -> bool:
    return isinstance(d, Mapping) and bool(d) and all(isinstance(v, Tensor) for v in d.values())


def _split(p: Path, fmt: str, obj: Any) -> Checkpoint:
    """The weights, optimizer and counters of what ``torch.load`` returned."""
    if isinstance(obj, Tensor):
        return Checkpoint(p, fmt, {"tensor": obj})
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{p} holds a {type(obj).__name__}, not a state dict (name -> tensor) or a "
            "training checkpoint (a dict)"
        )
    model = next((obj[k] for k in _MODEL_KEYS if isinstance(obj.get(k), Mapping)), None)
    source = model if model is not None else obj
    tensors, skipped = {}, []
    for k, v in _flatten(source):
        if isinstance(v, Tensor):
            tensors[k] = v
        elif model is not None or not _is_optimizer_like(k):
            skipped.append(k)
    optimizer = next((obj[k] for k in _OPTIMIZER_KEYS if _is_optimizer(obj.get(k))), None)
    if optimizer is None and isinstance(obj.get("optimizer_states"), list):
        optimizer = next((o for o in obj["optimizer_states"] if _is_optimizer(o)), None)
    if model is None and optimizer is not None:
        tensors = {k: v for k, v in tensors.items() if not _is_optimizer_like(k)}
    extra = {k: obj[k] for k in _EXTRA_KEYS if isinstance(obj.get(k), (int, float))}
    if not tensors and optimizer is None:
        raise ValueError(f"{p} holds no tensors (keys: {', '.join(map(str, list(obj)[:10]))})")
    return Checkpoint(p, fmt, tensors, optimizer, extra, skipped)


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and not _is_optimizer(v):
            out += _flatten(v, name + ".")
        else:
            out.append((name, v))
    return out


def _is_optimizer(d: Any) -> bool:
    return isinstance(d, Mapping) and "param_groups" in d and "state" in d


def _is_optimizer_like(name: str) -> bool:
    return name.split(".", 1)[0] in (*_OPTIMIZER_KEYS, "optimizer_states", "lr_schedulers")


def _decision(name: str, t: Tensor) -> tuple[bool, str]:
    """Whether param_groups would decay a tensor of this name and ndim."""
    label = name_rule([name])
    if label is not None:
        return False, label
    if name.rsplit(".", 1)[-1].endswith("bias"):
        return False, "bias"
    if t.ndim <= 1:
        return False, "ndim <= 1"
    if _NORM_NAME.search(name):
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
    norm = float(torch.linalg.vector_norm(x.double())) if x.is_floating_point() and numel else 0.0
    decays, rule = _decision(name, x)
    eq = None
    if decays and lr is not None and weight_decay:
        eq = equilibrium_norm(lr, weight_decay, numel)
    return TensorInfo(name, tuple(x.shape), str(x.dtype).removeprefix("torch."), numel, norm,
                      norm / math.sqrt(numel) if numel else 0.0, decays, rule, eq)  # fmt: skip


def inspect_checkpoint(
    path: str | Path, *, lr: float | None = None, weight_decay: float | None = None
) -> dict[str, Any]:
    """Read ``path`` and describe it: format, tensors (see :class:`TensorInfo`), the
    optimizer's groups (lr, weight_decay, convention, step) and the run's counters.

    ``lr`` and ``weight_decay`` (PyTorch's convention) go together and add each decayed
    matrix's equilibrium norm. Example: ``inspect_checkpoint("ckpt.pt", lr=1e-3,
    weight_decay=0.05)["tensors"][0]``.
    """
    from ._checks import check_lr, check_range

    if (lr is None) != (weight_decay is None):
        raise ValueError("lr and weight_decay go together: give both, or neither")
    if lr is not None:
        lr = check_lr("lr", lr)
        weight_decay = check_range("weight_decay", weight_decay, 0.0, low_open=True)
    ck = read_checkpoint(path)
    rows = [tensor_info(n, t, lr, weight_decay) for n, t in ck.tensors.items()]
    n_all = sum(r.numel for r in rows)
    n_dec = sum(r.numel for r in rows if r.decays)
    return {
        "path": str(ck.path),
        "format": ck.format,
        "tensors": rows,
        "parameters": n_all,
        "decayed_parameters": n_dec,
        "optimizer": _optimizer_groups(ck.optimizer),
        "extra": ck.extra,
        "skipped": ck.skipped,
        "lr": lr,
        "weight_decay": weight_decay,
    }


def _optimizer_groups(opt: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    if opt is None:
        return None
    state = opt.get("state", {})
    out = []
    for i, g in enumerate(opt.get("param_groups", [])):
        ids = list(g.get("params", []))
        steps = [_step(state.get(k, {}).get("step")) for k in ids]
        steps = [s for s in steps if s is not None]
        scale = g.get("decay_scale")
        out.append({
            "group": i,
            "params": len(ids),
            "lr": _number(g.get("lr")),
            "weight_decay": _number(g.get("weight_decay")),
            "decay_scale": scale if scale is not None else "lr",
            "convention": "adamwkit.AdamW" if scale is not None else "PyTorch (no decay_scale key)",
            "step": max(steps) if steps else None,
            "betas": list(g["betas"]) if "betas" in g else None,
        })  # fmt: skip
    return out


def _step(v: Any) -> int | None:
    if isinstance(v, Tensor):
        return int(v.item())
    return int(v) if isinstance(v, (int, float)) else None


def _number(v: Any) -> float | None:
    if isinstance(v, Tensor):
        return float(v.item())
    return float(v) if isinstance(v, (int, float)) else None


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
        rows = [("missing (kept as initialised)", n, "-", "") for n in self.missing]
        rows += [("unexpected (ignored)", n, "", "-") for n in self.unexpected]
        rows += [("shape mismatch (kept as initialised)", n, _shape(a), _shape(b))
                 for n, a, b in self.mismatched]  # fmt: skip
        header = ("what", "key", "checkpoint", "model")
        widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(4)]
        lines = ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
                 for r in (header, *rows)]  # fmt: skip
        return head + "\n" + "\n".join(line.rstrip() for line in lines)


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(map(str, s)) or "scalar"


def load_weights(
    model: nn.Module, path_or_state_dict: str | Path | Mapping[str, Tensor]
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
        source = read_checkpoint(path_or_state_dict).tensors
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
