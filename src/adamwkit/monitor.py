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
gradient norm and the decay of that step, next to the predicted norm and angle. Norms are
computed with multi-tensor kernels and stay on the device until they are read (no host
synchronisation per tensor). :meth:`Monitor.log` returns a :class:`MonitorLog`, which
gives the records (:meth:`MonitorLog.history`), a per-layer view, plain-word verdicts
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

__all__ = ["Monitor", "MonitorLog", "Verdict", "load_log"]

LOG_VERSION = 1
# The per-tensor quantities recorded at each recorded step, in this order.
_FIELDS = ("norm_before", "norm", "update_norm", "dot", "grad_norm")


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
        ``name``, ``norm``, ``update_norm``, ``angle``, ``grad_norm``, ``decay``, ``lr``,
        ``pred_norm``, ``pred_angle``."""
        if by not in ("tensor", "layer"):
            raise ValueError(f"by={by!r} is invalid: expected one of 'tensor', 'layer'")
        view = self if by == "tensor" else self.layers()
        names = [t.name for t in view.tensors]
        angle, pred_n, pred_a = view.angle, view.pred_norm, view.pred_angle
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
            values[:, j, _FIELDS.index("dot")] = v[:, :, _FIELDS.index("dot")].sum(axis=1)
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
        """Per layer, in plain words: whether and when its norm reached the equilibrium,
        whether the run was too short for the decay to act, a collapsing norm, a late rise
        of the gradient norm, and embedding rows decayed without gradients."""
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


def _round(a: np.ndarray) -> Any:
    return np.vectorize(lambda x: float(f"{x:.7g}"), otypes=[float])(a).tolist() if a.size else []


def _angle(norm_before: np.ndarray, update: np.ndarray, dot: np.ndarray) -> np.ndarray:
    """The angle between ``w`` and ``w + d``, from ``|w|``, ``|d|`` and ``<w, d>``: the
    part of ``d`` across ``w`` against the length along it (stable for small angles)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        along = np.where(norm_before > 0, dot / norm_before, 0.0)
        across = np.sqrt(np.maximum(update**2 - along**2, 0.0))
        return np.arctan2(across, norm_before + along)


def load_log(path: str | Path) -> MonitorLog:
    """Read a log written by :meth:`MonitorLog.save`; a ``ValueError`` names what is wrong."""
    not_a_log = ValueError(
        f"run={str(path)!r} is invalid: expected a monitor log written by adamwkit "
        "(Monitor, fit(monitor=...), the Trainer or Lightning callback)"
    )
    try:
        lines = read_regular(path, "run").decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise not_a_log from None
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if not isinstance(header, dict) or header.get("adamwkit_monitor") != LOG_VERSION:
        raise not_a_log
    try:
        tensors = [
            TensorInfo(
                str(t["name"]),
                int(t["numel"]),
                tuple(map(int, t["shape"])),
                str(t["layer"]),
                bool(t["embedding"]),
            )
            for t in header["tensors"]
        ]
        return _log_from(header, tensors, lines, path)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        if isinstance(err, ValueError) and str(err).startswith("run="):
            raise
        raise ValueError(f"run={str(path)!r} is damaged: {type(err).__name__}: {err}") from None


def _log_from(
    header: dict[str, Any], tensors: list[TensorInfo], lines: list[str], path: str | Path
) -> MonitorLog:
    """The log's records, after its header (``load_log`` maps every malformed field to one
    ``ValueError``)."""
    records = []
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                break  # a torn last line: the records before it stand
            raise ValueError(f"run={str(path)!r} is damaged at line {i}") from None
    n = len(tensors)
    shape = (len(records), n)
    return MonitorLog(
        tensors,
        int(header["every"]),
        str(header["optimizer"]),
        np.array([r["step"] for r in records], dtype=np.int64),
        np.array([r["values"] for r in records], dtype=np.float64).reshape(*shape, len(_FIELDS)),
        np.array([r["decay"] for r in records], dtype=np.float64).reshape(shape),
        np.array([r["lr"] for r in records], dtype=np.float64).reshape(shape),
        np.array([r["beta1"] for r in records], dtype=np.float64).reshape(shape),
        dict(header.get("embeddings", {})),
    )


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
    recorded step: the monitor holds one copy of the parameters) and a few multi-tensor
    norms and a dot product per tensor are taken after it. :meth:`close` detaches it and
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
        self._records: list[tuple[int, Tensor, list[int], list[float], list[float], list[float]]]
        self._records = []
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
            for p, slot in zip(params, slots, strict=True):
                if self._tensors[slot].embedding:
                    self._track_rows(p, slot)
        self._pending = (params, slots, before, grad_norms, decay, lr, beta1)

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
        params, slots, before, grad_norms, decay, lr, beta1 = self._pending
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
            block = torch.stack(
                [
                    torch.stack(norms_before),
                    torch.stack(norms_after),
                    torch.stack(norms_delta),
                    torch.stack(dots).to(grad_norms[0].device),
                    torch.stack(grad_norms),
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

    def log(self, last: bool = False) -> MonitorLog:
        """Everything recorded so far (reads the device once); ``last``: the last record
        only, without the embedding summary."""
        records = self._records[-1:] if last else self._records
        n = len(self._tensors)
        r = len(records)
        values = np.full((r, n, len(_FIELDS)), np.nan)
        decay, lr, beta1 = (np.full((r, n), np.nan) for _ in range(3))
        steps = np.zeros(r, dtype=np.int64)
        for k, (step, block, slots, d, a, b) in enumerate(records):
            steps[k] = step
            values[k, slots, :] = block.detach().double().cpu().numpy()
            decay[k, slots], lr[k, slots], beta1[k, slots] = d, a, b
        embeddings = {} if last else self._embedding_summary()
        return MonitorLog(list(self._tensors), self.every, type(self.optimizer).__name__,
                          steps, values, decay, lr, beta1, embeddings)  # fmt: skip

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


def _looks_like_embedding(name: str) -> bool:
    leaf = name.lower()
    return any(k in leaf for k in ("embed", "wte", "tok_emb", "word_emb"))


# ---------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """One finding about a layer: ``code`` (``equilibrium``, ``too-short``, ``collapsing``,
    ``off-equilibrium``, ``no-decay``, ``not-decoupled``, ``late-gradient-rise``,
    ``unseen-rows``) and the sentence that says it."""

    layer: str
    code: str
    text: str


def _verdicts(log: MonitorLog) -> list[Verdict]:
    if not len(log.steps):
        return []
    out: list[Verdict] = []
    layers = log.layers()
    norm, grad = layers._field("norm"), layers._field("grad_norm")
    pred = layers.pred_norm
    steps = layers.steps.astype(np.float64)
    for j, info in enumerate(layers.tensors):
        out += _layer_verdicts(info.layer, steps, layers.decay[:, j], layers.lr[:, j],
                               norm[:, j], pred[:, j], grad[:, j])  # fmt: skip
    for name, e in log.embeddings.items():
        if e.get("unseen"):
            ratio = e.get("unseen_norm_ratio", math.nan)
            shrink = f", and their norm fell to {ratio:.0%} of its start" if ratio == ratio else ""
            out.append(
                Verdict(
                    _layer(name),
                    "unseen-rows",
                    f"{e['unseen']:,} of {e['rows']:,} rows of {name} got no gradient in the "
                    f"recorded steps but are decayed all the same{shrink} (rare tokens fade "
                    "toward zero): exclude embeddings from decay (param_groups(..., "
                    "exclude=[...])) if those rows matter",
                )
            )
    return out


def _layer_verdicts(
    layer: str,
    steps: np.ndarray,
    decay: np.ndarray,
    lr: np.ndarray,
    norm: np.ndarray,
    pred: np.ndarray,
    grad: np.ndarray,
) -> list[Verdict]:
    if np.all(np.isnan(decay)):
        return [Verdict(layer, "not-decoupled", "the optimizer's weight decay is an L2 penalty, "
                        "not AdamW's decoupled decay: no equilibrium to compare with")]  # fmt: skip
    if not np.any(decay > 0):
        return [Verdict(layer, "no-decay", "not decayed: its norm drifts freely (no "
                        "equilibrium)")]  # fmt: skip
    out: list[Verdict] = []
    # The run's length in tau_iter: the decay summed over every step (recorded steps stand
    # for the `every` steps around them).
    gaps = np.diff(np.concatenate([[0.0], steps]))
    elapsed = np.cumsum(gaps * decay)
    length = float(elapsed[-1])
    live = lr >= 0.1 * lr.max()  # the end of a schedule (lr -> 0) freezes the norm: not judged
    ratio = norm / pred
    if length < 1.0:
        out.append(
            Verdict(
                layer,
                "too-short",
                f"never reaches equilibrium: the run is {length:.2g} tau_iter long (tau_iter = "
                "1/(lr*weight_decay) steps), so the decay did little; its norm is "
                f"{ratio[-1]:.2g}x the equilibrium norm",
            )
        )
    elif norm[-1] < 0.5 * pred[live][-1] and norm[-1] < 0.5 * norm[0] and _falling(norm):
        out.append(
            Verdict(
                layer,
                "collapsing",
                f"norm collapsing: {norm[-1]:.3g}, {ratio[live][-1]:.2g}x the equilibrium norm and "
                f"still falling after {length:.2g} tau_iter: the decay is too strong for the "
                "gradients it gets",
            )
        )
    else:
        r = ratio[live]
        final = float(np.median(r[-max(1, len(r) // 10) :]))
        inside = np.abs(r / final - 1.0) <= 0.1
        # The first record after which the ratio stays within 10% of its final value.
        outside = np.nonzero(~inside)[0]
        first = int(outside[-1] + 1) if len(outside) else 0
        if first >= len(r) - 1:
            out.append(
                Verdict(
                    layer,
                    "off-equilibrium",
                    f"its norm has not settled after {length:.2g} tau_iter: "
                    f"{r[-1]:.2g}x the equilibrium norm and still moving",
                )
            )
        else:
            at = float(steps[live][first])
            taus = float(elapsed[live][first])
            where = "at the equilibrium norm" if 0.8 <= final <= 1.25 else (
                f"at {final:.2g}x the equilibrium norm (the prediction is exact for "
                "scale-invariant weights, those followed by a normalisation)")  # fmt: skip
            out.append(
                Verdict(
                    layer,
                    "equilibrium",
                    f"reached equilibrium at step ~{at:,.0f} (about {taus:.2g} tau_iter), {where}",
                )
            )
    rise = _late_rise(grad, lr)
    if rise is not None:
        out.append(
            Verdict(
                layer,
                "late-gradient-rise",
                f"its gradient norm rises {rise:.2g}x over the last tenth of the run as the lr "
                "falls: the rise Defazio (arXiv:2506.02285, AdamC) traces to normalised layers "
                "under lr-scaled decay; decaying with lr_t^2/lr_peak there avoids it",
            )
        )
    return out


def _falling(x: np.ndarray) -> bool:
    q = max(1, len(x) // 4)
    return bool(x[-1] < 0.95 * x[-q - 1]) if len(x) > q else False


def _late_rise(grad: np.ndarray, lr: np.ndarray) -> float | None:
    n = len(grad)
    if n < 20 or not np.all(np.isfinite(grad)) or lr[-1] > 0.5 * lr.max():
        return None
    middle = float(np.median(grad[int(0.4 * n) : int(0.7 * n)]))
    last = float(np.median(grad[-max(2, n // 10) :]))
    if middle > 0 and last > 1.5 * middle:
        return last / middle
    return None
