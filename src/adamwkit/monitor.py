r"""Weight norms and rotation against their AdamW equilibrium, in any training loop.

Under AdamW a weight tensor of :math:`C` elements settles, after a few
:math:`\tau_{\mathrm{iter}} = 1/(\eta\lambda)` steps, at an equilibrium (Kosson et al.,
"Rotational Equilibrium", arXiv:2305.17212; exact for scale-invariant weights, those
followed by a normalisation):

.. math::

    \|w\| \approx \sqrt{\frac{\eta C}{2\lambda}}, \qquad
    \theta_{\mathrm{step}} \approx \sqrt{\frac{2\eta\lambda(1-\beta_1)}{1+\beta_1}}

with :math:`\eta` the step's learning rate and :math:`\lambda` the weight decay in
PyTorch's convention (``decay_scale="schedule"`` divides by ``lr_peak`` first), so
:math:`\eta\lambda` is the fraction of the weights the step decays.

:class:`Monitor` attaches to any ``torch.optim.Optimizer`` through its step hooks and, every
``every`` steps, records per tensor the weight norm, the update's norm and angle, the
gradient norm, the cosine between the weight and its gradient and the decay of that step,
next to the predicted norm and angle. Norms are computed with multi-tensor kernels and stay
on the device until they are read (no host synchronisation per tensor).

The equilibrium holds for scale-invariant weights only: those whose loss does not change
when they are scaled (a weight followed by a normalisation). For such a weight the gradient
is orthogonal to it, :math:`w \cdot g = 0` at every step and every batch, so the monitor
measures it rather than guessing. A tensor (or layer) of :math:`C` elements whose
:math:`|\cos(w, g)|` is below :data:`SCALE_INVARIANT_LIMIT` :math:`/\sqrt{C}` (a tenth of
what a gradient of random direction shows) at more than half of its recorded steps (its
median below it) is scale-invariant and judged against the equilibrium; any other decayed
layer gets one ``reference`` verdict, its norm beside the equilibrium norm as a reference
only.

:meth:`Monitor.log` returns a :class:`MonitorLog`, which gives the records
(:meth:`MonitorLog.history`), a per-layer view, plain-word verdicts
(:meth:`MonitorLog.verdicts`) and a compact JSON-lines file (:meth:`MonitorLog.save`,
read back by :func:`load_log` and ``adamwkit explain --run PATH``).

Example::

    from adamwkit import AdamW, Monitor, param_groups
    opt = AdamW(param_groups(model, weight_decay=0.1), lr=1e-3)
    monitor = Monitor(opt, every=10, model=model)
    ...  # train as usual
    for v in monitor.log().verdicts():
        print(v.layer, v.text)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._checks import check_whole
from ._io import atomic_write, read_regular

__all__ = ["SCALE_INVARIANT_LIMIT", "Monitor", "MonitorLog", "Verdict", "load_log"]

# Version 2 added the field grad_dot (<w, g>); version 1 logs still load, their
# scale-invariance unknown.
LOG_VERSION = 2
# The per-tensor quantities recorded at each recorded step, in this order: the weight norm
# before and after the step, the update's norm, <update, w before>, the gradient's norm and
# <w before, g>.
_FIELDS = ("norm_before", "norm", "update_norm", "dot", "grad_norm", "grad_dot")

SCALE_INVARIANT_LIMIT = 0.1
"""A tensor or layer of :math:`C` elements is scale-invariant when
:math:`|\\cos(w, g)|\\sqrt{C}` is below this at more than half of its recorded steps. A
gradient of random direction gives about 1 (its cosine with any fixed vector is about
:math:`1/\\sqrt{C}`); a scale-invariant weight's is zero but for rounding and the
normalisation's eps. Measured (median over the recorded steps): weights followed by a
LayerNorm, an RMSNorm or a BatchNorm give 7e-7 to 6e-4 in float32 and 2e-3 to 3e-3 under
bf16 autocast, for 864 to 1M elements; the layers of an MLP, of a small transformer and of
a conv net that no normalisation follows give 0.5 to 14 (``|cos|`` 0.006 to 0.2). An
absolute limit on ``|cos|`` cannot separate them: a large layer that is not scale-invariant
shows ``|cos|`` near 0.006, because a gradient's cosine with its weights shrinks with their
size. docs/monitor.md has the table."""


# ---------------------------------------------------------------------------- the log


@dataclass(frozen=True)
class TensorInfo:
    """A monitored tensor: its name, element count, shape, layer and kind."""

    name: str
    numel: int
    shape: tuple[int, ...]
    layer: str
    embedding: bool = False


@dataclass
class MonitorLog:
    """Recorded steps of a run: ``values[r, t, f]`` holds field ``f`` (see ``_FIELDS``) of
    tensor ``t`` at record ``r``; ``decay[r, t]`` the fraction decayed at that step
    (:math:`\\eta_t\\lambda` in PyTorch's convention, NaN when the optimizer does not decouple
    its decay), ``lr[r, t]`` the step's lr and ``beta1[r, t]`` Adam's beta1."""

    tensors: list[TensorInfo]
    every: int
    optimizer: str
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, len(_FIELDS))))
    decay: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    lr: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    beta1: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    embeddings: dict[str, dict[str, float]] = field(default_factory=dict)

    # -- derived quantities, per tensor, shape (records, tensors)

    def _field(self, name: str) -> np.ndarray:
        return self.values[:, :, _FIELDS.index(name)]

    @property
    def angle(self) -> np.ndarray:
        """Angle between the weights before and after each recorded step, in radians."""
        return _angle(self._field("norm_before"), self._field("update_norm"), self._field("dot"))

    @property
    def grad_cos(self) -> np.ndarray:
        """Cosine between the weights and their gradient at each recorded step, before the
        step: zero for a scale-invariant weight; NaN where the log does not hold it (a
        version 1 log) or the weight or gradient is zero."""
        w, g = self._field("norm_before"), self._field("grad_norm")
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where((w > 0) & (g > 0), self._field("grad_dot") / (w * g), np.nan)

    def scale_invariant(self) -> list[bool | None]:
        """Per tensor of this view (:meth:`layers` for the layers): whether its weights are
        scale-invariant, measured: ``|cos(w, g)| * sqrt(C)`` (:attr:`grad_cos`, ``C`` its
        element count) below :data:`SCALE_INVARIANT_LIMIT` at more than half of the
        recorded steps where it is known (its median below the limit); ``None`` where it
        was never known (a log written before adamwkit recorded the cosine)."""
        size = np.array([math.prod(t.shape) for t in self.tensors], dtype=np.float64)
        cos = np.abs(self.grad_cos) * np.sqrt(size)
        known = np.isfinite(cos).sum(axis=0)
        below = (cos < SCALE_INVARIANT_LIMIT).sum(axis=0)
        return [_invariant(int(b), int(k)) for b, k in zip(below, known, strict=True)]

    def judged(self) -> np.ndarray:
        """Per tensor of this view, the record its verdict and ``explain --run``'s table
        read the norm at: the last one whose lr is at least :data:`LIVE_LR` of the
        tensor's largest (at the end of a schedule the equilibrium norm falls toward zero
        with the lr while the norm freezes, so that tail is not judged)."""
        return np.array([_judged(self.lr[:, t]) for t in range(len(self.tensors))], dtype=int)

    @property
    def pred_norm(self) -> np.ndarray:
        """Kosson et al.'s equilibrium norm :math:`\\eta_t\\sqrt{C/(2\\eta_t\\lambda)}`."""
        c = np.array([t.numel for t in self.tensors], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.decay > 0, self.lr * np.sqrt(c / (2.0 * self.decay)), np.inf)

    @property
    def pred_angle(self) -> np.ndarray:
        """Kosson et al.'s angular update per step at equilibrium, in radians."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(2.0 * self.decay * (1.0 - self.beta1) / (1.0 + self.beta1))

    def history(self, by: str = "tensor") -> list[dict[str, Any]]:
        """The records as dicts, one per recorded step and tensor (``by="tensor"``) or layer
        (``by="layer"``: the layer's tensors taken as one vector). Keys: ``step``,
        ``name``, ``norm``, ``update_norm``, ``angle``, ``grad_norm``, ``grad_cos`` (the
        cosine between the weights and their gradient, NaN in a log without it), ``decay``,
        ``lr``, ``pred_norm``, ``pred_angle``."""
        if by not in ("tensor", "layer"):
            raise ValueError(f"by={by!r} is invalid: expected one of 'tensor', 'layer'")
        view = self if by == "tensor" else self.layers()
        names = [t.name for t in view.tensors]
        angle, pred_n, pred_a, cos = view.angle, view.pred_norm, view.pred_angle, view.grad_cos
        norm, upd, grad = view._field("norm"), view._field("update_norm"), view._field("grad_norm")
        rows = []
        for r, step in enumerate(view.steps.tolist()):
            for t, name in enumerate(names):
                rows.append(
                    {
                        "step": int(step),
                        "name": name,
                        "norm": float(norm[r, t]),
                        "update_norm": float(upd[r, t]),
                        "angle": float(angle[r, t]),
                        "grad_norm": float(grad[r, t]),
                        "grad_cos": float(cos[r, t]),
                        "decay": float(view.decay[r, t]),
                        "lr": float(view.lr[r, t]),
                        "pred_norm": float(pred_n[r, t]),
                        "pred_angle": float(pred_a[r, t]),
                    }
                )
        return rows

    def dataframe(self, by: str = "tensor") -> Any:
        """:meth:`history` as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.history(by))

    def layers(self) -> MonitorLog:
        """The same log with each layer's tensors combined into one vector (norms add in
        squares, the angle is the layer's as a whole, the prediction's squares add too)."""
        order: dict[str, list[int]] = {}
        for i, t in enumerate(self.tensors):
            order.setdefault(t.layer, []).append(i)
        r = len(self.steps)
        values = np.zeros((r, len(order), len(_FIELDS)))
        decay, lr, beta1 = (np.zeros((r, len(order))) for _ in range(3))
        tensors = []
        pred = self.pred_norm
        for j, (layer, idx) in enumerate(order.items()):
            v = self.values[:, idx, :]
            for f in ("norm_before", "norm", "update_norm", "grad_norm"):
                k = _FIELDS.index(f)
                values[:, j, k] = np.sqrt((v[:, :, k] ** 2).sum(axis=1))
            for f in ("dot", "grad_dot"):
                values[:, j, _FIELDS.index(f)] = v[:, :, _FIELDS.index(f)].sum(axis=1)
            numel = sum(self.tensors[i].numel for i in idx)
            # The layer's decay: the one whose prediction for the decayed tensors' elements
            # is their summed squared prediction (undecayed biases and gains add nothing).
            lr[:, j] = self.lr[:, idx].max(axis=1)
            finite = np.isfinite(pred[:, idx])
            c = np.array([self.tensors[i].numel for i in idx], dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                p2 = np.where(finite, pred[:, idx] ** 2, 0.0).sum(axis=1)
                c_decayed = (finite * c).sum(axis=1)
                decay[:, j] = np.where(p2 > 0, lr[:, j] ** 2 * c_decayed / (2.0 * p2), 0.0)
            decay[np.all(np.isnan(self.decay[:, idx]), axis=1), j] = np.nan  # not decoupled
            beta1[:, j] = self.beta1[:, idx].mean(axis=1)
            # The layer's element count for its prediction: the decayed elements.
            counted = int(c_decayed.max()) if len(c_decayed) and c_decayed.max() > 0 else numel
            tensors.append(TensorInfo(layer, counted, (numel,), layer))
        return MonitorLog(tensors, self.every, self.optimizer, self.steps, values, decay, lr,
                          beta1, self.embeddings)  # fmt: skip

    # -- verdicts

    def verdicts(self) -> list[Verdict]:
        """Per layer, in plain words (:class:`Verdict`). A scale-invariant layer
        (:meth:`scale_invariant`) is judged against the equilibrium: whether and when its
        norm reached it, whether the run was too short for the decay to act, a collapsing
        norm, a late rise of the gradient norm (by :data:`GRADIENT_RISE` or more). Any
        other decayed layer gets one ``reference`` verdict, its norm beside the equilibrium
        norm as a reference only, or ``collapsing`` when its norm falls below a tenth of
        its first record's and keeps falling. Embedding rows decayed without gradients get
        a verdict when their norm fell by :data:`UNSEEN_FALL` (10%) or more. Every ratio
        quoted is the one at the layer's :meth:`judged` record, and says its step.
        Non-finite numbers (a diverged run) raise no numpy warnings."""
        with np.errstate(all="ignore"):
            return _verdicts(self)

    # -- the file

    def save(self, path: str | Path) -> Path:
        """Write the log as JSON lines (a header, then one line per recorded step),
        atomically."""
        header = {
            "adamwkit_monitor": LOG_VERSION,
            "every": self.every,
            "optimizer": self.optimizer,
            "fields": list(_FIELDS),
            "tensors": [
                {
                    "name": t.name,
                    "numel": t.numel,
                    "shape": list(t.shape),
                    "layer": t.layer,
                    "embedding": t.embedding,
                }
                for t in self.tensors
            ],
            "embeddings": self.embeddings,
        }
        lines = [json.dumps(header, separators=(",", ":"))]
        for r, step in enumerate(self.steps.tolist()):
            lines.append(
                json.dumps(
                    {
                        "step": int(step),
                        "values": _round(self.values[r]),
                        "decay": _round(self.decay[r]),
                        "lr": _round(self.lr[r]),
                        "beta1": _round(self.beta1[r]),
                    },
                    separators=(",", ":"),
                    allow_nan=True,
                )
            )
        return atomic_write(path, "\n".join(lines) + "\n")


def _invariant(below: int, known: int) -> bool | None:
    """Scale-invariant when ``|cos(w, g)| * sqrt(C)`` was below :data:`SCALE_INVARIANT_LIMIT`
    at more than half of the ``known`` recorded steps; ``None`` when it was never known."""
    return None if known == 0 else 2 * below > known


LIVE_LR = 0.1
"""The verdicts judge each layer at its last record whose lr is at least this fraction of
the layer's largest lr."""


def _judged(lr: np.ndarray) -> int:
    """The last record whose lr is at least :data:`LIVE_LR` of the largest (the last
    record when no lr is known)."""
    finite = np.isfinite(lr)
    if not finite.any():
        return len(lr) - 1
    live = np.nonzero(finite & (lr >= LIVE_LR * lr[finite].max()))[0]
    return int(live[-1])


def _round(a: np.ndarray) -> Any:
    return np.vectorize(lambda x: float(f"{x:.7g}"), otypes=[float])(a).tolist() if a.size else []


def _angle(norm_before: np.ndarray, update: np.ndarray, dot: np.ndarray) -> np.ndarray:
    """The angle between ``w`` and ``w + d``, from ``|w|``, ``|d|`` and ``<w, d>``: the
    part of ``d`` across ``w`` against the length along it (stable for small angles)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        along = np.where(norm_before > 0, dot / norm_before, 0.0)
        across = np.sqrt(np.maximum(update**2 - along**2, 0.0))
        return np.arctan2(across, norm_before + along)


_WRITERS = "Monitor, fit(monitor=...), the Trainer or Lightning callback"


class _Damaged(Exception):
    """What is wrong with one line of a log (``load_log`` adds the file and the line)."""


def load_log(path: str | Path) -> MonitorLog:
    """Read a log written by :meth:`MonitorLog.save` (this version's, or version 1's, whose
    tensors' scale-invariance reads as unknown). A torn last line (a crash while writing
    it) is dropped and the records before it stand. Anything else wrong is a
    ``ValueError`` naming the file, the line (counted from 1) and what is wrong there: a
    file that is not a monitor log, a header or a record that is not a JSON object, a
    missing or wrong-typed field, a record whose tables do not hold one row per tensor."""
    run = f"run={str(path)!r}"
    try:
        lines = read_regular(path, "run").decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{run} is invalid: it is not text: expected a monitor log written "
                         f"by adamwkit ({_WRITERS})") from None  # fmt: skip
    if not lines or not lines[0].strip():
        raise ValueError(f"{run} is invalid: line 1 is empty: expected a monitor log "
                         f"written by adamwkit ({_WRITERS})")  # fmt: skip
    try:
        header = json.loads(lines[0])
    except (json.JSONDecodeError, RecursionError):
        header = None
    if not isinstance(header, dict) or "adamwkit_monitor" not in header:
        got = "not JSON" if header is None else f"{_kind(header)}"
        raise ValueError(f"{run} is invalid: line 1 is {got}, not a monitor log's header: "
                         f"expected a monitor log written by adamwkit ({_WRITERS})")  # fmt: skip
    line = 1
    try:
        every, optimizer, fields, tensors, embeddings = _header(header)
        records: list[tuple[Any, ...]] = []
        for line in range(2, len(lines) + 1):
            text = lines[line - 1]
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                if line == len(lines):
                    break  # a torn last line: the records before it stand
                raise _Damaged("it is not JSON") from None
            records.append(_record(obj, len(tensors), fields, records[-1][0] if records else -1))
    except _Damaged as err:
        raise ValueError(f"{run} is damaged at line {line}: {err}") from None
    return _log_from(every, optimizer, tensors, embeddings, records)


def _kind(obj: Any) -> str:
    """The JSON type of ``obj``, in words."""
    for kind, types in (("an object", dict), ("a list", list), ("a string", str),
                        ("true or false", bool), ("a number", (int, float))):  # fmt: skip
        if isinstance(obj, types):
            return kind
    return "null"


def _get(obj: Mapping[str, Any], key: str) -> Any:
    _want(key in obj, f"{key!r} is missing")
    return obj[key]


def _want(ok: bool, what: str) -> None:
    if not ok:
        raise _Damaged(what)


def _whole(obj: Mapping[str, Any], key: str, low: int = 0) -> int:
    value = _get(obj, key)
    _want(isinstance(value, int) and not isinstance(value, bool),
          f"{key!r} is {_kind(value)}, expected a whole number")  # fmt: skip
    _want(low <= value < 2**63, f"{key!r} is {value}, expected a whole number >= {low}")
    return int(value)


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = _get(obj, key)
    _want(isinstance(value, str), f"{key!r} is {_kind(value)}, expected a string")
    return str(value)


def _header(h: dict[str, Any]) -> tuple[int, str, int, list[TensorInfo], dict[str, Any]]:
    """The header's settings: ``every``, the optimizer, how many fields a record holds, the
    tensors and the embedding summary."""
    version = h["adamwkit_monitor"]
    _want(version in (1, LOG_VERSION) and not isinstance(version, bool),
          f"'adamwkit_monitor' is {version!r}: this adamwkit reads versions 1 and "
          f"{LOG_VERSION} (a newer adamwkit wrote it?)")  # fmt: skip
    fields = h.get("fields", list(_FIELDS[:5] if version == 1 else _FIELDS))
    expected = list(_FIELDS[:5]) if version == 1 else list(_FIELDS)
    _want(fields == expected, f"'fields' is {str(fields)[:80]}, expected {expected}")
    tensors = _get(h, "tensors")
    _want(isinstance(tensors, list), f"'tensors' is {_kind(tensors)}, expected a list")
    infos = []
    for k, t in enumerate(tensors):
        _want(isinstance(t, dict), f"tensor {k} is {_kind(t)}, expected an object")
        shape = t.get("shape")
        _want(isinstance(shape, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                              and x >= 0 for x in shape),
              f"tensor {k}'s 'shape' is not a list of whole numbers")  # fmt: skip
        embedding = t.get("embedding", False)
        _want(isinstance(embedding, bool), f"tensor {k}'s 'embedding' is not true or false")
        try:
            infos.append(TensorInfo(_text(t, "name"), _whole(t, "numel"), tuple(shape),
                                    _text(t, "layer"), embedding))  # fmt: skip
        except _Damaged as err:
            raise _Damaged(f"tensor {k}: {err}") from None
    embeddings = h.get("embeddings", {})
    _want(isinstance(embeddings, dict), f"'embeddings' is {_kind(embeddings)}, expected an object")
    for name, e in embeddings.items():
        _want(isinstance(e, dict), f"embedding {name!r} is {_kind(e)}, expected an object")
        ratio = e.get("unseen_norm_ratio")
        _want(
            ratio is None or (isinstance(ratio, (int, float)) and not isinstance(ratio, bool)),
            f"embedding {name!r}'s 'unseen_norm_ratio' is {_kind(ratio)}, expected a number",
        )
        try:
            _whole(e, "rows"), _whole(e, "unseen")
        except _Damaged as err:
            raise _Damaged(f"embedding {name!r}: {err}") from None
    return _whole(h, "every", 1), _text(h, "optimizer"), len(fields), infos, embeddings


def _numbers(obj: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    """``obj[key]`` as a float array of ``shape`` (``null`` reads as NaN)."""
    value = _get(obj, key)
    _want(isinstance(value, list), f"{key!r} is {_kind(value)}, expected a list")
    _want(
        len(value) > 0 or shape[0] == 0,
        f"{key!r} holds no tensors, expected {shape[0]} (one per tensor in the header)",
    )
    try:
        a = np.asarray(value)
        if a.dtype == object:  # nulls among the numbers
            flat = a.reshape(-1)
            _want(all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))
                      for x in flat), f"{key!r} holds something other than numbers")  # fmt: skip
            a = np.array([math.nan if x is None else x for x in flat], dtype=np.float64)
            a = a.reshape(np.asarray(value, dtype=object).shape)
    except ValueError:  # lists of unequal lengths
        raise _Damaged(f"{key!r} is not a table of numbers (rows of unequal length)") from None
    _want(a.dtype.kind in "iuf" or a.size == 0,
          f"{key!r} holds something other than numbers")  # fmt: skip
    what = " x ".join(map(str, shape))
    _want(a.shape == shape or (a.size == 0 and math.prod(shape) == 0),
          f"{key!r} has shape {' x '.join(map(str, a.shape))}, expected {what} (one row per "
          "tensor in the header)")  # fmt: skip
    return a.astype(np.float64).reshape(shape)


def _record(obj: Any, tensors: int, fields: int, previous: int) -> tuple[Any, ...]:
    """One record line's step and tables, checked against the header."""
    _want(isinstance(obj, dict), f"the record is {_kind(obj)}, expected an object")
    step = _whole(obj, "step")
    _want(step > previous, f"step {step} comes after step {previous}: steps must increase")
    values = _numbers(obj, "values", (tensors, fields))
    if fields < len(_FIELDS):  # an older log: the fields it lacks are unknown
        pad = np.full((tensors, len(_FIELDS) - fields), np.nan)
        values = np.concatenate([values, pad], axis=1)
    return (step, values, *(_numbers(obj, k, (tensors,)) for k in ("decay", "lr", "beta1")))


def _log_from(
    every: int,
    optimizer: str,
    tensors: list[TensorInfo],
    embeddings: dict[str, Any],
    records: list[tuple[Any, ...]],
) -> MonitorLog:
    n, r = len(tensors), len(records)

    def stack(k: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.stack([rec[k] for rec in records]) if r else np.zeros((0, *shape))

    return MonitorLog(tensors, every, optimizer, np.array([rec[0] for rec in records],
                      dtype=np.int64), stack(1, (n, len(_FIELDS))), stack(2, (n,)),
                      stack(3, (n,)), stack(4, (n,)), dict(embeddings))  # fmt: skip


# ---------------------------------------------------------------------------- the monitor


def _layer(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _decoupled(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's weight decay is decoupled (AdamW's), so the equilibrium
    applies; Adam's and SGD's ``weight_decay`` are an L2 penalty instead."""
    from .adamw import AdamW

    return isinstance(optimizer, (AdamW, torch.optim.AdamW))


def _decay_per_step(group: Mapping[str, Any], decoupled: bool) -> float:
    """The fraction of the weights this group's step decays: lr * wd (PyTorch's
    convention), or lr / lr_peak * wd for ``decay_scale="schedule"``."""
    if not decoupled:
        return math.nan
    lr = float(group["lr"])
    wd = float(group.get("weight_decay", 0.0))
    if group.get("decay_scale") == "schedule":
        from .adamw import AdamW

        peak = AdamW.lr_peak(group)
        return wd * lr / peak if peak else 0.0
    return lr * wd


class Monitor:
    """Records weight norms and rotation of ``optimizer``'s parameters every ``every`` steps.

    ``model`` (or ``names``, a mapping from parameter to name) names the tensors and their
    layers and finds the embedding tables; without either, tensors are named
    ``group<g>.param<i>``. Attaching costs nothing on the steps that are not recorded; on a
    recorded step the parameters are copied before the step (into buffers kept for the next
    recorded step: the monitor holds one copy of the parameters), the gradients' norms
    (a multi-tensor kernel) and each weight's dot product with its gradient are taken, and a
    few multi-tensor norms and a dot product per tensor after it; every number stays on the
    device until it is read. :meth:`close` detaches it and
    frees the buffers.

    The prediction uses each group's ``lr``, ``weight_decay`` and ``decay_scale`` at that
    step and ``betas[0]``; an optimizer whose decay is not decoupled (``Adam``, ``SGD``)
    gets no prediction.

    ``start_step`` numbers the steps from a resumed run's count. A training loop whose
    gradients are computed inside ``optimizer.step(closure)`` (Lightning, LBFGS) passes
    ``before_hook=False`` and calls :meth:`before_step` itself once the gradients exist;
    :meth:`cancel_step` drops a step that did not happen (a gradient scaler skipped it).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        every: int = 1,
        *,
        model: nn.Module | None = None,
        names: Mapping[Tensor, str] | None = None,
        start_step: int = 0,
        before_hook: bool = True,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"optimizer={type(optimizer).__name__} is invalid: expected a torch.optim.Optimizer"
            )
        self.every = check_whole("every", every, 1)
        self.optimizer = optimizer
        self._decoupled = _decoupled(optimizer)
        by_id: dict[int, str] = {}
        embeddings: set[int] = set()
        if model is not None:
            by_id = {id(p): n for n, p in model.named_parameters()}
            embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        if names is not None:
            by_id.update({id(p): n for p, n in names.items()})
        self._names = by_id
        self._embedding_ids = embeddings
        self.step = check_whole("start_step", start_step, 0)
        self._tensors: list[TensorInfo] = []
        self._index: dict[int, int] = {}
        self._pending: tuple[Any, ...] | None = None
        # (step, the (tensors, fields) block: on the device until read, then on the host,
        # the tensors' slots, decay, lr, beta1)
        self._records: list[tuple[Any, ...]] = []
        self._rows_seen: dict[int, Tensor] = {}
        self._rows_start: dict[int, Tensor] = {}
        self._buffers: dict[int, Tensor] = {}
        self._closed = False
        self._pre = optimizer.register_step_pre_hook(self._before) if before_hook else None
        self._post = optimizer.register_step_post_hook(self._after)

    # -- hooks

    def _recorded(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    def _info(self, p: Tensor, g: int, i: int) -> int:
        key = id(p)
        if key not in self._index:
            name = self._names.get(key, f"group{g}.param{i}")
            embedding = key in self._embedding_ids or (
                not self._embedding_ids and p.ndim == 2 and _looks_like_embedding(name)
            )
            self._index[key] = len(self._tensors)
            self._tensors.append(
                TensorInfo(name, p.numel(), tuple(p.shape), _layer(name), embedding)
            )
        return self._index[key]

    def _before(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.before_step()

    def before_step(self) -> None:
        """Count a step about to run and, on a recorded step, copy the parameters and take
        the gradients' norms (the step pre-hook calls this). After :meth:`close` it does
        nothing: a closed monitor records no more steps."""
        if self._closed:
            return
        self.step += 1
        if not self._recorded(self.step):
            return
        params, slots, decay, lr, beta1 = [], [], [], [], []
        for g, group in enumerate(self.optimizer.param_groups):
            d = _decay_per_step(group, self._decoupled)
            b1 = float(group.get("betas", (0.9, 0.999))[0])
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                params.append(p)
                slots.append(self._info(p, g, i))
                decay.append(d)
                lr.append(float(group["lr"]))
                beta1.append(b1)
        if not params:
            return
        with torch.no_grad():
            grads = [p.grad for p in params]
            before = self._snapshot(params, slots)
            grad_norms = _norms(grads)
            grad_dots = _dots(params, grads)  # <w, g>: zero for a scale-invariant weight
            for p, slot in zip(params, slots, strict=True):
                if self._tensors[slot].embedding:
                    self._track_rows(p, slot)
        self._pending = (params, slots, before, grad_norms, grad_dots, decay, lr, beta1)

    def _snapshot(self, params: list[Tensor], slots: list[int]) -> list[Tensor]:
        """The parameters' values before the step, copied into buffers kept from one
        recorded step to the next (allocating them each time costs more than the copy)."""
        buffers = []
        for p, slot in zip(params, slots, strict=True):
            buf = self._buffers.get(slot)
            if (
                buf is None
                or buf.shape != p.shape
                or buf.dtype != p.dtype
                or buf.device != p.device
            ):
                buf = self._buffers[slot] = torch.empty_like(
                    p, memory_format=torch.contiguous_format
                )
            buffers.append(buf)
        torch._foreach_copy_(buffers, [p.detach() for p in params])
        return buffers

    def _track_rows(self, p: Tensor, slot: int) -> None:
        assert p.grad is not None
        grad = p.grad.to_dense() if p.grad.is_sparse else p.grad
        rows = grad.detach().reshape(p.shape[0], -1)
        touched = torch.linalg.vector_norm(rows, dim=1) > 0  # the 2-norm's kernel is fastest
        if slot not in self._rows_seen:
            self._rows_seen[slot] = touched
            self._rows_start[slot] = p.detach().reshape(p.shape[0], -1).norm(dim=1)
        else:
            self._rows_seen[slot] |= touched

    def cancel_step(self) -> None:
        """Drop the half-taken record of a step that did not update the weights."""
        self._pending = None

    def _after(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._pending is None:
            return
        params, slots, before, grad_norms, grad_dots, decay, lr, beta1 = self._pending
        self._pending = None
        with torch.no_grad():
            after = [p.detach() for p in params]
            norms_after = _norms(after)
            # In place, no allocation: the buffers become -delta = before - after.
            torch._foreach_sub_(before, after)
            norms_delta = _norms(before)
            # <delta, before> = <delta, after> - |delta|^2, from -delta and after: a dot of
            # the small update with the weights, exact to float32 rounding of that product.
            minus = [torch.vdot(m.reshape(-1), a.reshape(-1)).float()
                     for m, a in zip(before, after, strict=True)]  # fmt: skip
            dots = [-x - n * n for x, n in zip(minus, norms_delta, strict=True)]
            # |before|^2 = |after|^2 - 2 <delta, after> + |delta|^2: no pass over the weights.
            norms_before = [
                (a * a + 2 * x + n * n).clamp_min(0).sqrt()
                for a, x, n in zip(norms_after, minus, norms_delta, strict=True)
            ]
            device = grad_norms[0].device
            block = torch.stack(
                [
                    torch.stack(norms_before),
                    torch.stack(norms_after),
                    torch.stack(norms_delta),
                    torch.stack(dots).to(device),
                    torch.stack(grad_norms),
                    torch.stack(grad_dots).to(device),
                ],
                dim=1,
            )  # (tensors, fields), on the parameters' device until read
        self._records.append((self.step, block, slots, decay, lr, beta1))

    # -- results

    @property
    def recorded(self) -> int:
        """How many steps have been recorded."""
        return len(self._records)

    def latest(self, by: str = "tensor") -> list[dict[str, Any]]:
        """The rows of the last recorded step only (one small read from the device), as in
        :meth:`history`; ``[]`` before the first record."""
        return self.log(last=True).history(by) if self._records else []

    def log(self, last: bool = False, since: int = 0) -> MonitorLog:
        """Everything recorded so far; ``last``: the last record only, ``since``: the
        records from that one on (counted from 0), either without the embedding summary.
        Records are read from the device once, in one transfer for all those not read
        yet, and kept on the host: calling it again costs only the new records."""
        start = max(0, len(self._records) - 1) if last else check_whole("since", since, 0)
        self._read(start)
        records = self._records[start:]
        n = len(self._tensors)
        r = len(records)
        values = np.full((r, n, len(_FIELDS)), np.nan)
        decay, lr, beta1 = (np.full((r, n), np.nan) for _ in range(3))
        steps = np.zeros(r, dtype=np.int64)
        for k, (step, block, slots, d, a, b) in enumerate(records):
            steps[k] = step
            values[k, slots, :] = block
            decay[k, slots], lr[k, slots], beta1[k, slots] = d, a, b
        embeddings = {} if last or since else self._embedding_summary()
        return MonitorLog(list(self._tensors), self.every, type(self.optimizer).__name__,
                          steps, values, decay, lr, beta1, embeddings)  # fmt: skip

    def _read(self, start: int) -> None:
        """Bring the records from ``start`` on to the host: one transfer per device for all
        those still on it."""
        unread: dict[torch.device, list[int]] = {}
        for k in range(max(0, start), len(self._records)):
            block = self._records[k][1]
            if isinstance(block, Tensor):
                unread.setdefault(block.device, []).append(k)
        for ks in unread.values():
            blocks = [self._records[k][1] for k in ks]
            flat = torch.cat(blocks).detach().cpu().double().numpy()
            rows = np.cumsum([len(b) for b in blocks])[:-1]
            for k, part in zip(ks, np.split(flat, rows), strict=True):
                step, _, *rest = self._records[k]
                self._records[k] = (step, part, *rest)

    def history(self, by: str = "tensor") -> list[dict[str, Any]]:
        """The records as dicts (see :meth:`MonitorLog.history`)."""
        return self.log().history(by)

    def verdicts(self) -> list[Verdict]:
        """Per-layer verdicts (see :meth:`MonitorLog.verdicts`)."""
        return self.log().verdicts()

    def save(self, path: str | Path) -> Path:
        """Write the log atomically (see :meth:`MonitorLog.save`)."""
        return self.log().save(path)

    def _embedding_summary(self) -> dict[str, dict[str, float]]:
        out = {}
        params = {id(p): p for g in self.optimizer.param_groups for p in g["params"]}
        by_slot = {slot: key for key, slot in self._index.items()}
        for slot, seen in self._rows_seen.items():
            p = params.get(by_slot[slot])
            if p is None:
                continue
            unseen = ~seen
            rows = int(unseen.sum())
            ratio = math.nan
            if rows:
                now = p.detach().reshape(p.shape[0], -1).norm(dim=1)[unseen]
                start = self._rows_start[slot][unseen]
                ratio = float((now.square().sum() / start.square().sum().clamp_min(1e-30)).sqrt())
            out[self._tensors[slot].name] = {
                "rows": int(seen.numel()),
                "unseen": rows,
                "unseen_norm_ratio": ratio,
            }
        return out

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has detached the monitor (it records nothing more)."""
        return self._closed

    def close(self) -> None:
        """Detach from the optimizer; what was recorded stays readable. Closing twice is
        harmless."""
        if self._pre is not None:
            self._pre.remove()
        self._post.remove()
        self._buffers.clear()
        self._pending = None
        self._closed = True


def _norms(tensors: Sequence[Tensor]) -> list[Tensor]:
    """L2 norms of many tensors with multi-tensor kernels (grouped by device and dtype)."""
    out: list[Tensor | None] = [None] * len(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        if t.is_sparse:
            # a sparse gradient (nn.Embedding(sparse=True) under SGD or SparseAdam): the norm
            # of its values once repeated indices are summed; no multi-tensor kernel takes it
            out[i] = torch.linalg.vector_norm(t.detach().coalesce().values()).float()
            continue
        groups.setdefault((t.device, t.dtype), []).append(i)
    for idx in groups.values():
        norms = torch._foreach_norm([tensors[i].detach() for i in idx])
        for i, n in zip(idx, norms, strict=True):
            out[i] = n.float()
    return [n for n in out if n is not None]


def _dots(weights: Sequence[Tensor], grads: Sequence[Tensor]) -> list[Tensor]:
    """``<w, g>`` per tensor, each left on the device (no host synchronisation); a sparse
    gradient's dot takes only the rows it holds."""
    out = []
    for w, g in zip(weights, grads, strict=True):
        w, g = w.detach(), g.detach()
        if g.is_sparse:
            g = g.coalesce()
            rows = w[tuple(g.indices())]
            out.append((rows * g.values().to(w.dtype)).sum().float())
        else:
            out.append(torch.vdot(w.reshape(-1), g.to(w.dtype).reshape(-1)).float())
    return out


def _looks_like_embedding(name: str) -> bool:
    leaf = name.lower()
    return any(k in leaf for k in ("embed", "wte", "tok_emb", "word_emb"))


# ---------------------------------------------------------------------------- verdicts

UNSEEN_FALL = 0.1
"""The ``unseen-rows`` verdict needs the norm of an embedding's rows that got no gradient to
have fallen by at least this fraction of its start (a smaller change says nothing)."""

GRADIENT_RISE = 1.5
"""The ``late-gradient-rise`` verdict needs the gradient norm of the run's last tenth to be
at least this multiple of its middle's (from 40% to 70% of the records)."""


@dataclass(frozen=True)
class Verdict:
    """One finding about a layer: ``code`` (``equilibrium``, ``too-short``, ``collapsing``,
    ``off-equilibrium``, ``reference``, ``no-decay``, ``not-decoupled``,
    ``late-gradient-rise``, ``unseen-rows``) and the sentence that says it."""

    layer: str
    code: str
    text: str


@dataclass(frozen=True)
class _Series:
    """One layer's recorded numbers, as the verdicts read them."""

    layer: str
    steps: np.ndarray
    decay: np.ndarray
    lr: np.ndarray
    norm: np.ndarray
    pred: np.ndarray
    grad: np.ndarray
    at: int  # the judged record (MonitorLog.judged)
    invariant: bool | None  # MonitorLog.scale_invariant
    cos: float  # the median |cos(w, g)| over the records that know it

    @property
    def elapsed(self) -> np.ndarray:
        """The run's length in tau_iter at each record: the decay summed over every step
        (a recorded step stands for the ``every`` steps before it)."""
        gaps = np.diff(np.concatenate([[0.0], self.steps]))
        return np.cumsum(gaps * np.nan_to_num(self.decay))

    @property
    def ratio(self) -> float:
        """The norm over the equilibrium norm at the judged record."""
        return float(self.norm[self.at] / self.pred[self.at])

    @property
    def where(self) -> str:
        return f"at step {int(self.steps[self.at]):,}"


def _verdicts(log: MonitorLog) -> list[Verdict]:
    if not len(log.steps):
        return []
    out: list[Verdict] = []
    layers = log.layers()
    norm, grad = layers._field("norm"), layers._field("grad_norm")
    pred, at, invariant = layers.pred_norm, layers.judged(), layers.scale_invariant()
    cos = np.abs(layers.grad_cos)
    steps = layers.steps.astype(np.float64)
    for j, info in enumerate(layers.tensors):
        known = cos[:, j][np.isfinite(cos[:, j])]
        median = float(np.median(known)) if len(known) else math.nan
        out += _layer_verdicts(_Series(info.layer, steps, layers.decay[:, j], layers.lr[:, j],
                                       norm[:, j], pred[:, j], grad[:, j], int(at[j]),
                                       invariant[j], median))  # fmt: skip
    for name, e in log.embeddings.items():
        ratio = e.get("unseen_norm_ratio")
        if not e.get("unseen") or ratio is None or not ratio <= 1.0 - UNSEEN_FALL:
            continue
        out.append(
            Verdict(
                _layer(name),
                "unseen-rows",
                f"{e['unseen']:,} of {e['rows']:,} rows of {name} got no gradient in the "
                f"recorded steps but are decayed all the same, and their norm fell to "
                f"{ratio:.0%} of its start (rare tokens fade toward zero): exclude embeddings "
                "from decay (param_groups(..., exclude=[...])) if those rows matter",
            )
        )
    return out


def _layer_verdicts(s: _Series) -> list[Verdict]:
    if np.all(np.isnan(s.decay)):
        return [Verdict(s.layer, "not-decoupled", "the optimizer's weight decay is an L2 "
                        "penalty, not AdamW's decoupled decay: no equilibrium to compare "
                        "with")]  # fmt: skip
    if not np.any(s.decay > 0):
        return [Verdict(s.layer, "no-decay", "not decayed: its norm drifts freely (no "
                        "equilibrium)")]  # fmt: skip
    if not s.invariant:
        return [_reference_verdict(s)]
    out = [_equilibrium_verdict(s)]
    rise = _late_rise(s.grad, s.lr)
    if rise is not None:
        out.append(
            Verdict(
                s.layer,
                "late-gradient-rise",
                f"its gradient norm rises {rise:.2g}x over the last tenth of the run as the lr "
                "falls: the rise Defazio (arXiv:2506.02285, AdamC) traces to normalised layers "
                "under lr-scaled decay; decaying with lr_t^2/lr_peak there avoids it",
            )
        )
    return out


def _reference_verdict(s: _Series) -> Verdict:
    """A layer that is not scale-invariant (or not known to be): its norm beside the
    equilibrium norm, or a norm that collapses toward zero (below a tenth of its first
    record's and still falling)."""
    length = float(s.elapsed[-1])
    norm = s.norm[: s.at + 1]
    if norm[-1] < 0.1 * norm[0] and _falling(norm):
        return Verdict(
            s.layer,
            "collapsing",
            f"norm collapsing: {norm[-1]:.3g} {s.where}, {norm[-1] / norm[0]:.0%} of its first "
            f"record's and still falling after {length:.2g} tau_iter: the decay is too strong "
            "for the gradients it gets",
        )
    why = (
        "its scale-invariance is unknown (the log does not hold the gradient's cosine with "
        "the weights)"
        if s.invariant is None
        else f"not scale-invariant (its gradient is not orthogonal to it: |cos| {s.cos:.2g})"
    )
    return Verdict(
        s.layer,
        "reference",
        f"{why}: the equilibrium norm is a reference only; its norm is {s.ratio:.2g}x it "
        f"{s.where}, {length:.2g} tau_iter into the run",
    )


def _equilibrium_verdict(s: _Series) -> Verdict:
    """A scale-invariant layer against its equilibrium, at its judged record."""
    elapsed = s.elapsed
    length = float(elapsed[-1])
    ratio = s.norm / s.pred
    if length < 1.0:
        return Verdict(s.layer, "too-short",
                       f"never reaches equilibrium: the run is {length:.2g} tau_iter long "
                       "(tau_iter = 1/(lr*weight_decay) steps), so the decay did little; its "
                       f"norm is {s.ratio:.2g}x the equilibrium norm {s.where}")  # fmt: skip
    k = s.at
    if s.norm[k] < 0.5 * s.pred[k] and s.norm[k] < 0.5 * s.norm[0] and _falling(s.norm[: k + 1]):
        return Verdict(s.layer, "collapsing",
                       f"norm collapsing: {s.norm[k]:.3g}, {s.ratio:.2g}x the equilibrium norm "
                       f"{s.where} and still falling after {length:.2g} tau_iter: the decay is "
                       "too strong for the gradients it gets")  # fmt: skip
    live = np.isfinite(s.lr) & (s.lr >= LIVE_LR * np.nanmax(s.lr))
    r = ratio[live]
    final = float(np.median(r[-max(1, len(r) // 10) :]))
    inside = np.abs(r / final - 1.0) <= 0.1
    # The first record after which the ratio stays within 10% of its final value.
    outside = np.nonzero(~inside)[0]
    first = int(outside[-1] + 1) if len(outside) else 0
    if first >= len(r) - 1:
        return Verdict(s.layer, "off-equilibrium",
                       f"its norm has not settled after {length:.2g} tau_iter: {s.ratio:.2g}x "
                       f"the equilibrium norm {s.where} and still moving")  # fmt: skip
    at = float(s.steps[live][first])
    taus = float(elapsed[live][first])
    where = (f"at the equilibrium norm: {s.ratio:.2g}x it {s.where}" if 0.8 <= s.ratio <= 1.25
             else f"at {s.ratio:.2g}x the equilibrium norm {s.where}")  # fmt: skip
    return Verdict(s.layer, "equilibrium",
                   f"reached equilibrium at step ~{at:,.0f} (about {taus:.2g} tau_iter), "
                   f"{where}")  # fmt: skip


def _falling(x: np.ndarray) -> bool:
    q = max(1, len(x) // 4)
    return bool(x[-1] < 0.95 * x[-q - 1]) if len(x) > q else False


def _late_rise(grad: np.ndarray, lr: np.ndarray) -> float | None:
    n = len(grad)
    if n < 20 or not np.all(np.isfinite(grad)) or lr[-1] > 0.5 * lr.max():
        return None
    middle = float(np.median(grad[int(0.4 * n) : int(0.7 * n)]))
    last = float(np.median(grad[-max(2, n // 10) :]))
    if middle > 0 and last > GRADIENT_RISE * middle:
        return last / middle
    return None
