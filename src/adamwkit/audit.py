r"""Does an optimizer decay what you think? :func:`audit` reads a live set-up before the
first step.

For every tensor the optimizer holds (named from ``model`` when given) a row says its
group, the optimizer's family, the kind of decay it gets (decoupled, as AdamW's
:math:`w \leftarrow (1-\eta_t\lambda)w`; L2, a penalty :math:`\lambda w` added to the
gradient, which an adaptive optimizer divides by its second moment; or none), the fraction
a step takes away at the peak lr (:math:`\eta\lambda` in PyTorch's convention), its
timescale :math:`\tau_{iter} = 1/(\eta\lambda)` steps (Wang & Aitchison, arXiv:2405.13698),
the fraction summed over the run when its length is known (the total decay
:math:`D = \sum_t \eta_t\lambda`, :func:`adamwkit.rules.total_decay`; with ``scheduler=``
the sum follows the schedule), its norm beside the equilibrium norm
:math:`\sqrt{\eta C/(2\lambda)}` a scale-invariant tensor settles at under AdamW (Kosson et
al., arXiv:2305.17212), and what :func:`adamwkit.param_groups` would have done with it.

Findings name what looks wrong (severity ``"error"`` or ``"warning"``) or what the decay
does (``"info"``), each with a stable ``code``, the tensors it concerns and one sentence of
what to do:

- ``l2-not-decoupled``: an adaptive optimizer (Adam, RMSprop, Adagrad, ...) given a
  ``weight_decay`` it applies as L2 (Loshchilov & Hutter, arXiv:1711.05101: not the same
  as decoupled decay under adaptive steps);
- ``decays-norm-or-bias``: normalisation weights, biases, token and position tables,
  state-space parameters (``A_log``, ``dt_bias``, ``D``) or learned queries decayed;
- ``not-in-optimizer`` / ``in-two-groups``: a trainable tensor in no group, or in more
  than one (or twice in one, or tied aliases held as two tensors), so decayed twice;
- ``group-decay-zero``: a group with no decay holding matrices that other groups decay;
- ``decay-lost-in-precision``: a bf16 or fp16 tensor whose decay rounds away to nothing
  for most of the run: one decay step leaves most elements unchanged in their dtype, at the
  peak lr or, under the schedule, from a stated step on;
- ``hybrid-mismatch``: Muon and AdamW groups with the same coefficient although their
  updates differ in size, with the coefficient that would match;
- ``decay-toward-base``: LoRA adapters decayed toward zero, which pulls the fine-tuned
  model back toward its frozen base;
- ``too-short`` / ``too-long``: a run shorter than one timescale (:math:`D < 1`), where
  decay barely acts, or so many timescales long that decay dominates (:math:`D` above
  :math:`1/\tau_{opt}` of Power Lines at 10,000 tokens per parameter, about 118; the rule
  ``adamwkit explain`` uses);
- ``scale-invariant``: weights followed by a normalisation, where decay sets the effective
  learning rate rather than regularising.

Example::

    from adamwkit import audit
    report = audit(optimizer, model, scheduler=scheduler, total_steps=10_000)
    print(report)                      # the table and the findings
    report.to_dict()["findings"]       # [{code, severity, tensors, text}, ...]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import render
from ._checks import check_range, check_whole
from ._optimizers import ADAPTIVE, decay_kind, family, lr_curves, unwrap, update_rms

__all__ = ["Audit", "AuditRow", "Finding", "audit", "audit_spec"]

#: Below this share of elements changed by one decay step, the decay is lost to rounding.
LOST_SHARE = 0.5
#: Significant bits (the implicit one included) of the low-precision dtypes checked.
SIGNIFICAND_BITS = {torch.bfloat16: 8, torch.float16: 11}
#: Elements sampled per tensor for the precision threshold (evenly spaced).
PRECISION_SAMPLE = 65_536
#: Above this total decay the run is "too long": 1 / Power Lines' optimal tau at 10,000
#: tokens per parameter (arXiv:2505.13738), where ``explain`` says the decay dominates.
TOO_LONG_D = 1.0 / (1.084 * 1e4**-0.527)
#: ``hybrid-mismatch`` when the coefficient that would match is this many times off.
HYBRID_TOLERANCE = 2.0


@dataclass(frozen=True)
class AuditRow:
    """One tensor the optimizer holds (see the module's docstring for each field)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    group: int
    family: str
    decay_kind: str  # "decoupled", "L2", "none" or "unknown"
    weight_decay: float
    per_step: float | None  # fraction decayed per step at the peak lr (decoupled only)
    tau_iter: float | None  # 1 / per_step, in steps
    over_run: float | None  # the total decay D over the run (decoupled, length known)
    norm: float  # the tensor's L2 norm now
    equilibrium_norm: float | None  # Kosson et al.'s, for decayed AdamW matrices
    lost_from: int | None  # the first step from which the decay rounds away (bf16/fp16)
    lost_share: float | None  # the share of the total decay that rounds away
    rule: str  # what param_groups would do: "decay", or why not
    decay_toward: str = "zero"  # "init": decays toward its starting weights (adamwkit.AdamW)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Finding:
    """Something the audit found: a stable ``code``, ``"error"``, ``"warning"`` or
    ``"info"``, the tensors it concerns (their names in the model) and what to do."""

    code: str
    severity: str
    tensors: tuple[str, ...]
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "tensors": list(self.tensors),
                "text": self.text}  # fmt: skip


@dataclass
class Audit:
    """What :func:`audit` returns: a row per tensor, the findings, and notes on what the
    audit could not follow."""

    optimizer: str
    rows: list[AuditRow]
    findings: list[Finding] = field(default_factory=list)
    total_steps: int | None = None
    notes: list[str] = field(default_factory=list)

    def codes(self) -> list[str]:
        """The findings' codes, in order."""
        return [f.code for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``optimizer``, ``total_steps``, ``tensors`` (the rows),
        ``findings`` and ``notes``."""
        return {"optimizer": self.optimizer, "total_steps": self.total_steps,
                "tensors": [r.to_dict() for r in self.rows],
                "findings": [f.to_dict() for f in self.findings],
                "notes": list(self.notes)}  # fmt: skip

    def blocks(self) -> list[render.Block]:
        return render.audit_report(self)

    def __str__(self) -> str:
        return render.plain(self.blocks())

    def _repr_html_(self) -> str:
        """The table and the findings in a notebook."""
        return render.to_html(self.blocks())

    def __repr__(self) -> str:
        codes = ", ".join(self.codes()) or "no finding"
        return f"Audit({self.optimizer}, {len(self.rows)} tensors: {codes})"


@dataclass
class _Group:
    """One parameter group as the audit reads it."""

    index: int
    optimizer: torch.optim.Optimizer
    group: Mapping[str, Any]
    family: str
    kind: str
    weight_decay: float
    lrs: np.ndarray  # the lr at each step
    fractions: np.ndarray | None  # the decay's fraction at each step (decoupled only)

    @property
    def peak_lr(self) -> float:
        return float(self.lrs.max())

    @property
    def per_step(self) -> float | None:
        return None if self.fractions is None else float(self.fractions.max())


def audit(
    optimizer: Any,
    model: nn.Module | None = None,
    *,
    scheduler: Any = None,
    total_steps: int | None = None,
    inputs: Any = None,
    weight_decay: float | None = None,
) -> Audit:
    r"""Audit ``optimizer`` (and ``model``'s trainable tensors, when given) before training:
    see the module's docstring for the rows and the findings.

    Args:
        optimizer: a ``torch.optim.Optimizer`` (``adamwkit.AdamW`` in any convention,
            bitsandbytes' and torchao's included), one inside a wrapper (accelerate's,
            Lightning's: the torch optimizer in ``.optimizer``), or a list of them (a
            Muon + AdamW hybrid built as two optimizers).
        model: names the tensors and finds trainable ones left out; without it a tensor
            is named by its place, ``param_groups[0]['params'][3]``.
        scheduler: a torch lr scheduler (or a list, one per optimizer); a copy of it is
            stepped to read the lr at every step, so the total decay
            :math:`D = \lambda\sum_t\eta_t` follows the schedule, and the step from which
            a low-precision tensor's decay rounds away is found. Needs ``total_steps``.
        total_steps: the run's optimizer steps: gives the total decay and the
            ``too-short`` / ``too-long`` findings. Without a schedule, :math:`D` is taken
            at the peak lr (``initial_lr`` when a scheduler has set one).
        inputs: example inputs for ``model`` (a tensor, or a tuple of positional
            arguments): one forward pass without gradients finds exactly the weights that
            feed a normalisation (:func:`adamwkit.groups.normalized_layers`); without it
            a convolution or linear layer directly followed by a BatchNorm or GroupNorm of
            its width counts.
        weight_decay: the coefficient you configured (a Trainer's ``weight_decay``
            argument, say): matrices in groups with weight_decay 0 are reported when it is
            above 0. Without it, an optimizer built with a ``weight_decay`` other than its
            class's default while every group overrides it with 0 counts the same.

    Returns:
        An :class:`Audit`; ``print`` it, or ``to_dict()`` for JSON.

    Example::

        >>> import torch
        >>> from adamwkit import audit
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        >>> audit(torch.optim.Adam(model.parameters(), weight_decay=0.01), model).codes()
        ['l2-not-decoupled', 'decays-norm-or-bias']
    """
    optimizers = _optimizers(optimizer)
    if model is not None and not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__} is invalid: expected a torch.nn.Module")
    steps = None if total_steps is None else check_whole("total_steps", total_steps, 1)
    meant = None if weight_decay is None else check_range("weight_decay", weight_decay, 0.0)
    schedulers = [] if scheduler is None else (
        list(scheduler) if isinstance(scheduler, (list, tuple)) else [scheduler])  # fmt: skip
    if schedulers and steps is None:
        raise ValueError("scheduler is given without total_steps: give total_steps=, the run's "
                         "optimizer steps, so the schedule can be followed")  # fmt: skip
    curves, notes = lr_curves(optimizers, schedulers, steps or 1)
    groups = _groups(optimizers, curves)
    names = _names(model)
    rules = _rules(model)
    rows: list[AuditRow] = []
    where: dict[int, list[int]] = {}
    params: dict[int, torch.Tensor] = {}
    for g in groups:
        for i, p in enumerate(g.group["params"]):
            # its name in the model, else where it first sits in the optimizer (a tensor in
            # two groups keeps one name, which every finding uses)
            name = names.setdefault(id(p), f"param_groups[{g.index}]['params'][{i}]")
            where.setdefault(id(p), []).append(g.index)
            params[id(p)] = p
            rows.append(_row(g, p, name, rules, steps))
    label = " + ".join(dict.fromkeys(type(o).__name__ for o in optimizers))
    out = Audit(label, rows, total_steps=steps, notes=notes)
    out.findings = [
        f for f in (
            _l2(out),
            _norm_or_bias(out),
            _not_in_optimizer(model, where),
            _in_two_groups(out, where, names, params),
            _group_zero(out, _configured(optimizers, meant)),
            _lost_in_precision(out),
            _hybrid(out, groups, names),
            _toward_base(out),
            _too_short(out),
            _too_long(out),
            _scale_invariant(out, model, inputs),
        ) if f is not None
    ]  # fmt: skip
    return out


#: The keys a mapping given to :func:`audit_spec` may have.
SPEC_KEYS = ("model", "optimizer", "scheduler", "total_steps", "inputs", "weight_decay")


def audit_spec(spec: str, total_steps: int | None = None) -> Audit:
    """:func:`audit` of what ``spec`` (``"module:attribute"``, the command line's argument)
    names: a function of no arguments (or its result) giving ``(model, optimizer)``,
    ``(model, optimizer, total_steps)``, ``(model, optimizer, scheduler, total_steps)`` or
    a mapping with ``model``, ``optimizer`` and optionally ``scheduler``, ``total_steps``,
    ``inputs`` and ``weight_decay`` (:func:`audit`'s arguments); ``total_steps`` given
    here wins. An error inside the user's function keeps its traceback; anything else it
    returns is a ``ValueError``."""
    from ._loading import load_object

    obj = load_object(spec, "spec")
    built = obj() if callable(obj) and not isinstance(obj, nn.Module) else obj
    if isinstance(built, Mapping):
        parts = dict(built)
        unknown = sorted(str(k) for k in parts if k not in SPEC_KEYS)
        if unknown or not {"model", "optimizer"} <= set(parts):
            raise ValueError(
                f"spec={spec!r} is invalid: it gave a mapping with keys "
                f"{', '.join(map(str, parts)) or 'none'}; expected model and optimizer, and "
                f"optionally {', '.join(SPEC_KEYS[2:])}"
            )
    elif isinstance(built, tuple) and len(built) in (2, 3, 4):
        keys = {2: ("model", "optimizer"), 3: ("model", "optimizer", "total_steps"),
                4: ("model", "optimizer", "scheduler", "total_steps")}[len(built)]  # fmt: skip
        parts = dict(zip(keys, built, strict=True))
    else:
        raise ValueError(
            f"spec={spec!r} is invalid: it gave {type(built).__name__}; expected (model, "
            "optimizer), (model, optimizer, total_steps) or a mapping with model and optimizer"
        )
    if total_steps is not None:
        parts["total_steps"] = total_steps
    return audit(parts.pop("optimizer"), parts.pop("model"), **parts)


def _optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    given = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    out = []
    for o in given:
        inner = unwrap(o)
        if inner is None:
            raise ValueError(
                f"optimizer={type(o).__name__} is invalid: expected a torch.optim.Optimizer "
                "(or a wrapper holding one in .optimizer, or a list of them)"
            )
        out.append(inner)
    if not out:
        raise ValueError("optimizer=[] is invalid: expected at least one optimizer")
    return out


def _groups(optimizers: Sequence[torch.optim.Optimizer], curves: list[np.ndarray]) -> list[_Group]:
    from .adamw import AdamW

    out: list[_Group] = []
    for opt in optimizers:
        for group in opt.param_groups:
            index = len(out)
            lrs = curves[index]
            wd = float(group.get("weight_decay", 0.0) or 0.0)
            kind = decay_kind(opt, group)
            fractions = None
            if kind == "decoupled":
                fractions = lrs * wd
                if isinstance(opt, AdamW):
                    scale = group.get("decay_scale", "lr")
                    peak = max(AdamW.lr_peak(group), float(lrs.max()))
                    if scale == "schedule":
                        fractions = lrs / peak * wd
                    elif scale == "corrected":
                        fractions = lrs * lrs / peak * wd
            out.append(_Group(index, opt, group, family(opt, group), kind, wd, lrs, fractions))
    return out


def _row(
    g: _Group, p: torch.Tensor, name: str, rules: Mapping[str, str], steps: int | None
) -> AuditRow:
    per_step = g.per_step
    rule = rules.get(name, "decay" if p.ndim >= 2 else "no decay: ndim < 2")
    over_run = None if g.fractions is None or steps is None else float(g.fractions.sum())
    eq = None
    toward = str(g.group.get("decay_toward") or "zero")
    plain = toward == "zero" and "Muon" not in g.family and g.kind == "decoupled"
    if plain and per_step and rule == "decay":
        lr = g.peak_lr
        # Kosson et al.: ||w|| ~ sqrt(lr C / (2 lambda)), lambda in PyTorch's convention
        eq = math.sqrt(lr * p.numel() / (2.0 * per_step / lr)) if lr > 0 else None
    with torch.no_grad():
        norm = float(torch.linalg.vector_norm(p.detach().float()))
    return AuditRow(
        name, tuple(p.shape), str(p.dtype).replace("torch.", ""), g.index, g.family, g.kind,
        g.weight_decay, per_step, None if not per_step else 1.0 / per_step, over_run, norm, eq,
        *(_lost(g, p) if toward == "zero" else (None, None)), rule, toward,
    )  # fmt: skip


def _precision_threshold(p: torch.Tensor) -> float | None:
    r"""The decay fraction below which one step leaves most of ``p``'s elements unchanged
    in its dtype: an element :math:`w = m\,2^E` (:math:`m \in [0.5, 1)`) with :math:`b`
    significant bits is rounded back to itself when :math:`f|w|` is under half the spacing
    below it, :math:`2^{E-b}` (half that at :math:`m = 1/2`), that is when
    :math:`f < 2^{-(b+1)}/m`; the threshold is that bound's :data:`LOST_SHARE` quantile
    over the non-zero elements (bf16: between 2^-9 and 2^-8)."""
    bits = SIGNIFICAND_BITS.get(p.dtype)
    if bits is None:
        return None
    with torch.no_grad():
        flat = p.detach().reshape(-1)
        stride = max(1, flat.numel() // PRECISION_SAMPLE)
        x = flat[::stride].float().abs()
        x = x[x > 0]
        if x.numel() == 0:
            return None
        mantissa, _ = torch.frexp(x)
        # below a power of two (m = 0.5) the spacing halves
        bound = torch.where(mantissa == 0.5, 2.0 ** -(bits + 1), 2.0 ** -(bits + 1) / mantissa)
        return float(torch.quantile(bound, LOST_SHARE))


def _lost(g: _Group, p: torch.Tensor) -> tuple[int | None, float | None]:
    """The first step from which every later step's decay rounds away (0: from the
    start) and the share of the total decay those steps carry; ``(None, None)`` when it
    never does, or the tensor is not low-precision."""
    if g.fractions is None or g.weight_decay == 0 or _stochastic_rounding(g):
        return None, None
    threshold = _precision_threshold(p)
    if threshold is None:
        return None, None
    lost = g.fractions < threshold
    if not lost[-1]:
        return None, None
    kept = np.flatnonzero(~lost)
    start = 0 if kept.size == 0 else int(kept[-1]) + 1
    total = float(g.fractions.sum())
    return start, 1.0 if total == 0 else float(g.fractions[start:].sum()) / total


def _stochastic_rounding(g: _Group) -> bool:
    """torchao's low-bit optimizers round bf16 weights stochastically when asked."""
    return bool(g.group.get("bf16_stochastic_round")
                or getattr(g.optimizer, "bf16_stochastic_round", False))  # fmt: skip


def _names(model: nn.Module | None) -> dict[int, str]:
    if model is None:
        return {}
    out: dict[int, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        out.setdefault(id(p), n)
    return out


def _rules(model: nn.Module | None) -> dict[str, str]:
    """What :func:`param_groups` would do, by name (a tied tensor under each of its names)."""
    if model is None:
        return {}
    from .groups import param_groups

    plan = param_groups(model, 1.0).plan
    out = {}
    for e in plan.entries:
        rule = "decay" if e.decays else f"no decay: {e.rule}"
        for n in (e.name, *e.aliases):
            out[n] = rule
    return out


def _n(items: Any, one: str, many: str | None = None) -> str:
    """``"1 tensor"``, ``"3 tensors"``."""
    return f"{len(items)} {one if len(items) == 1 else (many or one + 's')}"


def _be(items: Any, one: str = "is", many: str = "are") -> str:
    return one if len(items) == 1 else many


def _names_of(rows: Sequence[AuditRow]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.name for r in rows))


def _l2(a: Audit) -> Finding | None:
    hit = _names_of([r for r in a.rows if r.decay_kind == "L2" and r.family in ADAPTIVE])
    if not hit:
        return None
    fams = "/".join(dict.fromkeys(r.family for r in a.rows if r.name in hit))
    return Finding(
        "l2-not-decoupled", "warning", hit,
        f"{fams}'s weight_decay is an L2 penalty added to the gradient, which its adaptive "
        "step divides by the second moment (not decoupled decay): use AdamW (adamwkit.AdamW "
        "or torch.optim.AdamW), or decoupled_weight_decay=True",
    )  # fmt: skip


def _norm_or_bias(a: Audit) -> Finding | None:
    hit = _names_of([r for r in a.rows
                     if r.decay_kind != "none" and r.rule.startswith("no decay")])  # fmt: skip
    if not hit:
        return None
    return Finding(
        "decays-norm-or-bias", "warning", hit,
        f"{_n(hit, 'tensor')} that should not decay {_be(hit)} decayed (normalisation weights, "
        "biases, token or position tables, state-space parameters, learned queries): build "
        "the groups with adamwkit.param_groups(model, weight_decay)",
    )  # fmt: skip


def _not_in_optimizer(model: nn.Module | None, where: Mapping[int, list[int]]) -> Finding | None:
    if model is None:
        return None
    seen: set[int] = set()
    hit = []
    for n, p in model.named_parameters():
        if p.requires_grad and id(p) not in where and id(p) not in seen:
            hit.append(n)
        seen.add(id(p))
    if not hit:
        return None
    return Finding(
        "not-in-optimizer", "error", tuple(hit),
        f"{_n(hit, 'trainable tensor')} {_be(hit)} in no parameter group, so never trained: "
        "add them to the optimizer, or set requires_grad=False",
    )  # fmt: skip


def _storage_key(p: torch.Tensor) -> tuple[Any, ...] | None:
    if p.device.type == "meta" or p.numel() == 0:
        return None
    return (p.device, p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape),
            p.stride())  # fmt: skip


def _in_two_groups(
    a: Audit,
    where: Mapping[int, list[int]],
    names: Mapping[int, str],
    params: Mapping[int, torch.Tensor],
) -> Finding | None:
    hit = [names[i] for i, groups in where.items() if len(groups) > 1]
    # tied aliases: two tensor objects over the same memory, each stepped and decayed
    by_memory: dict[tuple[Any, ...], list[int]] = {}
    for i, p in params.items():
        key = _storage_key(p)
        if key is not None:
            by_memory.setdefault(key, []).append(i)
    aliases = [ids for ids in by_memory.values() if len(ids) > 1]
    hit += [names[i] for ids in aliases for i in ids]
    if not hit:
        return None
    wds = {r.name: r.weight_decay for r in a.rows if r.name in hit}
    coefficients = sorted({a_.weight_decay for a_ in a.rows if a_.name in hit})
    differ = ""
    if len(coefficients) > 1:
        differ = f", with different coefficients ({', '.join(f'{c:g}' for c in coefficients)})"
    alias_text = " (tied aliases held as separate tensors count too)" if aliases else ""
    return Finding(
        "in-two-groups", "error", tuple(dict.fromkeys(hit)),
        f"{_n(wds, 'tensor')} {_be(wds, 'appears', 'appear')} more than once in the "
        f"optimizer's groups{alias_text}, so stepped and decayed more than once{differ}: "
        "keep each in one group",
    )  # fmt: skip


def _configured(optimizers: Sequence[torch.optim.Optimizer], meant: float | None) -> float:
    """The coefficient the user asked for: ``meant``, else an optimizer's ``weight_decay``
    default when it differs from its class's own default (so the user set it)."""
    if meant is not None:
        return meant
    import inspect

    for opt in optimizers:
        given = opt.defaults.get("weight_decay")
        try:
            own = inspect.signature(type(opt)).parameters["weight_decay"].default
        except (KeyError, TypeError, ValueError):
            continue
        if isinstance(given, (int, float)) and given > 0 and given != own:
            return float(given)
    return 0.0


def _group_zero(a: Audit, configured: float) -> Finding | None:
    others = any(r.decay_kind != "none" for r in a.rows)
    if not others and not configured:
        return None
    hit = _names_of(
        [r for r in a.rows if r.decay_kind == "none" and len(r.shape) >= 2 and r.rule == "decay"]
    )
    if not hit:
        return None
    why = ("while other groups decay theirs" if others
           else f"although weight_decay={configured:g} was configured")  # fmt: skip
    return Finding(
        "group-decay-zero", "warning", hit,
        f"{_n(hit, 'weight matrix', 'weight matrices')} {_be(hit, 'sits', 'sit')} in a "
        f"group with weight_decay 0 {why}: check how the groups were built (param_groups "
        "puts every matrix in the decayed group)",
    )  # fmt: skip


def _lost_in_precision(a: Audit) -> Finding | None:
    """Low-precision tensors whose decay rounds away for most of the run's total decay."""
    rows = [r for r in a.rows if r.lost_share is not None and r.lost_share >= LOST_SHARE]
    if not rows:
        return None
    late = max(r.lost_from or 0 for r in rows)
    when = "at every step" if late == 0 else f"from step {late:,} of {a.total_steps:,} on"
    hit = _names_of(rows)
    return Finding(
        "decay-lost-in-precision", "warning", hit,
        f"{_n(hit, 'low-precision tensor')} {_be(hit, 'loses its', 'lose their')} decay to "
        f"rounding {when}: one step's decay leaves most elements unchanged in the dtype "
        "(bf16 keeps 8 significant bits). Keep fp32 master weights, or use stochastic "
        "rounding or a Kahan buffer",
    )  # fmt: skip


def _hybrid(a: Audit, groups: Sequence[_Group], names: Mapping[int, str]) -> Finding | None:
    r"""Muon and AdamW groups with the same coefficient. A decoupled-decay tensor's RMS
    settles where decay balances the updates, :math:`\propto u/\sqrt{\eta\lambda}` for an
    update of RMS :math:`u` per step; the Muon coefficient that gives its matrices the same
    settled size as the AdamW ones is :math:`\lambda_A (\eta_A/\eta_M)(u_M/u_A)^2` (Liu et al.,
    arXiv:2502.16982, match the update RMS instead and then share lr and decay)."""
    muon = [g for g in groups if "Muon" in g.family and g.kind == "decoupled"]
    adamw = [g for g in groups if "Muon" not in g.family and g.kind == "decoupled"]
    if not muon or not adamw:
        return None
    hit, ratios, matches, given = [], [], [], None
    for m in muon:
        # the same coefficient as typed, or the same in PyTorch's convention
        peers = [g for g in adamw if g.per_step and g.peak_lr > 0 and (
            math.isclose(g.weight_decay, m.weight_decay)
            or math.isclose(g.per_step / g.peak_lr, m.weight_decay))]  # fmt: skip
        if not peers:
            continue
        peer = peers[0]
        lr_a, lr_m = peer.peak_lr, m.peak_lr
        if lr_a <= 0 or lr_m <= 0 or not peer.per_step:
            continue
        u_a = lr_a * update_rms(peer.optimizer, peer.group, torch.empty(0))
        for p in m.group["params"]:
            if p.ndim < 2:
                continue
            u_m = lr_m * update_rms(m.optimizer, m.group, p)
            # the Muon decay per step that settles it as the AdamW tensors settle, over
            # Muon's lr (its weight_decay is PyTorch's: a step takes lr x wd)
            match = peer.per_step * (u_m / u_a) ** 2 / lr_m
            if max(match, m.weight_decay) / min(match, m.weight_decay) > HYBRID_TOLERANCE:
                hit.append(names[id(p)])
                ratios.append(u_m / u_a)
                matches.append(match)
                given = m.weight_decay
    if not hit:
        return None
    r_lo, r_hi = min(ratios), max(ratios)
    ratio = f"{r_lo:.2g}x"
    if not math.isclose(r_lo, r_hi, rel_tol=0.05):
        ratio += f" to {r_hi:.2g}x"
    return Finding(
        "hybrid-mismatch", "warning", tuple(hit),
        f"Muon and AdamW share weight_decay={given:g}, but Muon's update per step is {ratio} "
        f"AdamW's, so the same coefficient holds its {_n(hit, 'matrix', 'matrices')} at a "
        f"different size: use weight_decay={float(np.median(matches)):.3g} for the Muon group, or "
        "Muon(adjust_lr_fn='match_rms_adamw') with AdamW's lr and coefficient",
    )  # fmt: skip


def _toward_base(a: Audit) -> Finding | None:
    hit = _names_of([r for r in a.rows if r.decay_kind != "none" and "lora_" in r.name
                     and r.decay_toward == "zero"])  # fmt: skip
    if not hit:
        return None
    d = [r.over_run for r in a.rows if r.name in hit and r.over_run is not None]
    strength = ""
    if d:
        strength = (f"; over the run decay alone would take {100 * (1 - math.exp(-max(d))):.2g}% "
                    "of each adapter's weights")  # fmt: skip
    return Finding(
        "decay-toward-base", "info", hit,
        f"{_n(hit, 'LoRA tensor')} {_be(hit, 'decays', 'decay')} toward zero, which pulls "
        f"the fine-tuned model back toward its frozen base{strength}: keep the total decay "
        "small (adamwkit suggest --adapters gives a value within its bound)",
    )  # fmt: skip


def _too_short(a: Audit) -> Finding | None:
    runs = [r for r in a.rows if r.over_run is not None and r.over_run > 0]
    hit = _names_of([r for r in runs if (r.over_run or 0.0) < 1.0])
    if not hit or a.total_steps is None:
        return None
    d = max(r.over_run or 0.0 for r in runs if r.name in hit)
    return Finding(
        "too-short", "info", hit,
        f"the run's {a.total_steps:,} steps are shorter than one decay timescale for "
        f"{_n(hit, 'tensor')} (total decay D at most {d:.3g} < 1): the decay barely acts; "
        "as intended for a fine-tune, otherwise raise it",
    )  # fmt: skip


def _too_long(a: Audit) -> Finding | None:
    hit = _names_of([r for r in a.rows if (r.over_run or 0.0) > TOO_LONG_D])
    if not hit or a.total_steps is None:
        return None
    d = min(r.over_run or 0.0 for r in a.rows if r.name in hit)
    return Finding(
        "too-long", "warning", hit,
        f"the run's {a.total_steps:,} steps are {d:.3g} or more decay timescales for "
        f"{_n(hit, 'tensor')} (total decay D > {TOO_LONG_D:.0f}): the weights forget all "
        "but the last 1/D of the run, so the decay dominates; lower it (adamwkit explain "
        "gives the timescale)",
    )  # fmt: skip


def _scale_invariant(a: Audit, model: nn.Module | None, inputs: Any) -> Finding | None:
    if model is None:
        return None
    names = set(_normalized(model, inputs))
    hit = _names_of([r for r in a.rows if r.name in names and r.decay_kind != "none"])
    if not hit:
        return None
    return Finding(
        "scale-invariant", "info", hit,
        f"{_n(hit, 'decayed weight')} {_be(hit, 'feeds', 'feed')} a normalisation, so "
        "scaling them does not change the output: decay there sets the effective learning "
        "rate (lr / ||w||^2; the norm settles near the eq. norm column), it does not "
        "regularise what the layer computes",
    )  # fmt: skip


def _normalized(model: nn.Module, inputs: Any) -> list[str]:
    from .groups import normalized_layers

    if inputs is not None:
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        return normalized_layers(model, *args)
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
    out = []
    for prefix, parent in model.named_modules():
        children = list(parent.named_children())
        for (name, m), (_, nxt) in itertools.pairwise(children):
            width = getattr(m, "out_channels", getattr(m, "out_features", None))
            norm_width = getattr(nxt, "num_features", getattr(nxt, "num_channels", None))
            if isinstance(nxt, norms) and width is not None and width == norm_width:
                w = getattr(m, "weight", None)
                if isinstance(w, torch.Tensor) and w.ndim >= 2:
                    out.append(f"{prefix}.{name}.weight" if prefix else f"{name}.weight")
    return out
