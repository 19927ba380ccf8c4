r"""Does an optimizer decay what you think? :func:`audit` reads a live set-up before the
first step.

For every tensor the optimizer holds (named from ``model`` when given) a row says its
group, the optimizer's family, the kind of decay it gets (decoupled, as AdamW's
:math:`w \leftarrow (1-\eta\lambda)w`; L2, a penalty :math:`\lambda w` added to the gradient,
which an adaptive optimizer divides by its second moment; or none), the fraction of the
weights a step takes away at the peak lr (:math:`\eta\lambda` in PyTorch's convention), that
fraction summed over the run when its length is known (the total decay :math:`D`,
:func:`adamwkit.rules.total_decay`), and what :func:`adamwkit.param_groups` would have
done with it. Findings name what looks wrong, each with a stable ``code``, the tensors it
concerns and one sentence of what to do:

- ``l2-not-decoupled``: an adaptive optimizer (Adam, RMSprop, Adagrad, ...) given a
  ``weight_decay`` it applies as L2 (Loshchilov & Hutter, arXiv:1711.05101: not the same
  as decoupled decay under adaptive steps);
- ``decays-norm-or-bias``: normalisation weights, biases, token and position tables, or
  state-space parameters (``A_log``, ``dt_bias``, ``D``) and learned queries decayed;
- ``not-in-optimizer`` / ``in-two-groups``: a trainable tensor in no group, or in more than
  one (or twice in one);
- ``group-decay-zero``: a group with no decay holding matrices that other groups decay;
- ``decay-lost-in-precision``: a bf16 or fp16 tensor whose decay per step rounds away to
  nothing, measured by applying that step to a copy in the tensor's own dtype;
- ``decay-toward-base``: LoRA adapters decayed toward zero, which pulls the fine-tuned
  model back toward its frozen base;
- ``too-short``: a run shorter than one decay timescale (:math:`D < 1`), where decay barely
  acts.

Example::

    from adamwkit import audit
    report = audit(optimizer, model, total_steps=10_000)
    print(report)                      # the table and the findings
    report.to_dict()["findings"]       # [{code, severity, tensors, text}, ...]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import render
from ._checks import check_whole

__all__ = ["Audit", "AuditRow", "Finding", "audit", "audit_spec"]

#: Optimizers whose step divides the gradient by a running second moment: L2 decay through
#: them is not decoupled decay.
ADAPTIVE = ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta")
#: Names of tensors that should not decay beyond :func:`param_groups`' own rules:
#: state-space parameters and learned queries (glob patterns on the full name).
EXTRA_NO_DECAY = ("*A_log", "*.A_log", "*dt_bias", "*.D", "*query_tokens*", "*latents")
#: Below this share of elements changed by one decay step, the decay is lost to rounding.
LOST_SHARE = 0.5


@dataclass(frozen=True)
class AuditRow:
    """One tensor the optimizer holds (see the module's docstring for each field)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    group: int
    family: str
    decay_kind: str  # "decoupled", "L2" or "none"
    weight_decay: float
    per_step: float | None  # fraction decayed per step at the peak lr (decoupled only)
    over_run: float | None  # the total decay D over the run (decoupled, length known)
    rule: str  # what param_groups would do: "decay", or why not

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
    """What :func:`audit` returns: a row per tensor and the findings."""

    optimizer: str
    rows: list[AuditRow]
    findings: list[Finding] = field(default_factory=list)
    total_steps: int | None = None

    def codes(self) -> list[str]:
        """The findings' codes, in order."""
        return [f.code for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``optimizer``, ``total_steps``, ``tensors`` (the rows) and
        ``findings``."""
        return {"optimizer": self.optimizer, "total_steps": self.total_steps,
                "tensors": [r.to_dict() for r in self.rows],
                "findings": [f.to_dict() for f in self.findings]}  # fmt: skip

    def blocks(self) -> list[render.Block]:
        return render.audit_report(self)

    def __str__(self) -> str:
        return render.plain(self.blocks())


def audit(
    optimizer: torch.optim.Optimizer,
    model: nn.Module | None = None,
    *,
    total_steps: int | None = None,
) -> Audit:
    """Audit ``optimizer`` (and ``model``'s trainable tensors, when given) before training:
    see the module's docstring for the rows and the findings.

    ``total_steps`` (the run's optimizer steps) gives each decoupled tensor its total decay
    :math:`D = \\eta\\lambda S` at the peak lr and the ``too-short`` finding.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(
            f"optimizer={type(optimizer).__name__} is invalid: expected a torch.optim.Optimizer"
        )
    if model is not None and not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__} is invalid: expected a torch.nn.Module")
    steps = None if total_steps is None else check_whole("total_steps", total_steps, 1)
    names = _names(model)
    rules = _rules(model)
    family = type(optimizer).__name__
    rows: list[AuditRow] = []
    where: dict[int, list[int]] = {}
    for g, group in enumerate(optimizer.param_groups):
        kind, wd, per_step = _decay(optimizer, group)
        for i, p in enumerate(group["params"]):
            # its name in the model, else where it first sits in the optimizer (a tensor in
            # two groups keeps one name, which every finding uses)
            name = names.setdefault(id(p), f"param_groups[{g}]['params'][{i}]")
            where.setdefault(id(p), []).append(g)
            rows.append(AuditRow(
                name, tuple(p.shape), str(p.dtype).replace("torch.", ""), g, family, kind, wd,
                per_step, None if per_step is None or steps is None else per_step * steps,
                rules.get(name, "decay" if p.ndim >= 2 else "no decay: ndim < 2"),
            ))  # fmt: skip
    out = Audit(family, rows, total_steps=steps)
    params = {id(p): p for group in optimizer.param_groups for p in group["params"]}
    out.findings = [f for f in _findings(out, model, names, where, params) if f is not None]
    return out


def audit_spec(spec: str, total_steps: int | None = None) -> Audit:
    """:func:`audit` of what ``spec`` (``"module:attribute"``, the command line's argument)
    names: a function of no arguments (or its result) giving ``(model, optimizer)``,
    ``(model, optimizer, total_steps)`` or a mapping with ``model``, ``optimizer`` and
    optionally ``total_steps``; ``total_steps`` given here wins. An error inside the user's
    function keeps its traceback; anything else it returns is a ``ValueError``."""
    from ._loading import load_object

    obj = load_object(spec, "spec")
    built = obj() if callable(obj) and not isinstance(obj, nn.Module) else obj
    if isinstance(built, Mapping):
        model, opt, steps = built.get("model"), built.get("optimizer"), built.get("total_steps")
    elif isinstance(built, tuple) and len(built) in (2, 3):
        model, opt, steps = built[0], built[1], built[2] if len(built) == 3 else None
    else:
        raise ValueError(
            f"spec={spec!r} is invalid: it gave {type(built).__name__}; expected (model, "
            "optimizer), (model, optimizer, total_steps) or a mapping with model and optimizer"
        )
    return audit(opt, model, total_steps=total_steps if total_steps is not None else steps)  # type: ignore[arg-type]


def _names(model: nn.Module | None) -> dict[int, str]:
    if model is None:
        return {}
    return {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}


def _rules(model: nn.Module | None) -> dict[str, str]:
    """What :func:`param_groups` (with the state-space and query names) would do, by name."""
    if model is None:
        return {}
    from fnmatch import fnmatchcase

    from .groups import param_groups

    names = [n for n, _ in model.named_parameters()]
    extra = [g for g in EXTRA_NO_DECAY if any(fnmatchcase(n, g) for n in names)]
    plan = param_groups(model, 1.0, exclude=extra).plan  # only globs that match: no warning
    out = {}
    for e in plan.entries:
        rule = "decay" if e.decays else f"no decay: {e.rule}"
        for n in (e.name, *e.aliases):
            out[n] = rule
    return out


def _decay(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> tuple[str, float, Any]:
    """The group's kind of decay, its weight_decay as given, and the fraction a step takes
    at the peak lr (decoupled only; ``None`` otherwise)."""
    wd = float(group.get("weight_decay", 0.0) or 0.0)
    if wd == 0:
        return "none", wd, None
    family = type(optimizer).__name__
    lr = float(group.get("lr", 0.0))
    from .adamw import AdamW

    if isinstance(optimizer, AdamW):
        scale = group.get("decay_scale", "lr")
        return "decoupled", wd, wd if scale == "schedule" else lr * wd
    decoupled = family in ("AdamW", "Muon") or bool(group.get("decoupled_weight_decay"))
    return ("decoupled", wd, lr * wd) if decoupled else ("L2", wd, None)


def _findings(
    a: Audit,
    model: nn.Module | None,
    names: Mapping[int, str],
    where: Mapping[int, list[int]],
    params: Mapping[int, torch.Tensor],
) -> list[Finding | None]:
    return [
        _l2(a),
        _norm_or_bias(a),
        _not_in_optimizer(model, where),
        _in_two_groups(where, names),
        _group_zero(a),
        _lost_in_precision(a, names, params),
        _toward_base(a),
        _too_short(a),
    ]


def _l2(a: Audit) -> Finding | None:
    hit = [r.name for r in a.rows if r.decay_kind == "L2"]
    if not hit or a.optimizer not in ADAPTIVE:
        return None
    return Finding(
        "l2-not-decoupled", "warning", tuple(hit),
        f"{a.optimizer}'s weight_decay is an L2 penalty added to the gradient, which its "
        "adaptive step divides by the second moment (not decoupled decay): use AdamW "
        "(adamwkit.AdamW or torch.optim.AdamW), or decoupled_weight_decay=True",
    )  # fmt: skip


def _norm_or_bias(a: Audit) -> Finding | None:
    hit = [r.name for r in a.rows if r.decay_kind != "none" and r.rule.startswith("no decay")]
    if not hit:
        return None
    return Finding(
        "decays-norm-or-bias", "warning", tuple(hit),
        f"{len(hit)} tensor(s) that should not decay are decayed (normalisation weights, "
        "biases, token or position tables, state-space parameters): build the groups with "
        "adamwkit.param_groups(model, weight_decay)",
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
        f"{len(hit)} trainable tensor(s) are in no parameter group, so they never train: "
        "add them to the optimizer, or set requires_grad=False",
    )  # fmt: skip


def _in_two_groups(where: Mapping[int, list[int]], names: Mapping[int, str]) -> Finding | None:
    hit = [names[i] for i, groups in where.items() if len(groups) > 1]
    if not hit:
        return None
    return Finding(
        "in-two-groups", "error", tuple(hit),
        f"{len(hit)} tensor(s) appear more than once in the optimizer's groups, so they are "
        "stepped and decayed more than once: keep each in one group",
    )  # fmt: skip


def _group_zero(a: Audit) -> Finding | None:
    decayed = {r.group for r in a.rows if r.decay_kind != "none"}
    if not decayed:
        return None
    hit = [r.name for r in a.rows
           if r.decay_kind == "none" and len(r.shape) >= 2 and r.rule == "decay"]  # fmt: skip
    if not hit:
        return None
    return Finding(
        "group-decay-zero", "warning", tuple(hit),
        f"{len(hit)} weight matrix(es) sit in a group with weight_decay 0 while other groups "
        "decay theirs: check how the groups were built (param_groups puts every matrix in "
        "the decayed group)",
    )  # fmt: skip


def _lost_in_precision(
    a: Audit, names: Mapping[int, str], params: Mapping[int, torch.Tensor]
) -> Finding | None:
    """Low-precision tensors whose one decay step, applied to a copy in their own dtype
    (``w * (1 - f)``), leaves most elements unchanged."""
    by_name = {names[i]: p for i, p in params.items()}
    hit = []
    for r in a.rows:
        p = by_name.get(r.name)
        if p is None or r.per_step is None or p.dtype not in (torch.bfloat16, torch.float16):
            continue
        with torch.no_grad():
            w = p.detach()
            stepped = w * (1.0 - r.per_step)  # in the tensor's dtype, as the step computes it
            moved = (stepped != w) & (w != 0)
            share = float(moved.sum()) / max(1, int((w != 0).sum()))
        if share < LOST_SHARE:
            hit.append(r.name)
    if not hit:
        return None
    return Finding(
        "decay-lost-in-precision", "warning", tuple(hit),
        f"{len(hit)} low-precision tensor(s) lose their decay to rounding: one step's "
        "decay leaves most of their elements unchanged in their dtype (bf16 keeps 8 bits "
        "of mantissa). Keep fp32 master weights, or use stochastic rounding or a Kahan "
        "buffer",
    )  # fmt: skip


def _toward_base(a: Audit) -> Finding | None:
    hit = [r.name for r in a.rows if r.decay_kind != "none" and "lora_" in r.name]
    if not hit:
        return None
    return Finding(
        "decay-toward-base", "info", tuple(hit),
        f"{len(hit)} LoRA tensor(s) decay toward zero, which pulls the fine-tuned model "
        "back toward its frozen base: keep the total decay small (adamwkit suggest "
        "--adapters gives a value within its bound)",
    )  # fmt: skip


def _too_short(a: Audit) -> Finding | None:
    runs = [r for r in a.rows if r.over_run is not None and r.over_run > 0]
    hit = [r.name for r in runs if r.over_run is not None and r.over_run < 1.0]
    if not hit or a.total_steps is None:
        return None
    d = max(r.over_run or 0.0 for r in runs if r.name in hit)
    return Finding(
        "too-short", "info", tuple(hit),
        f"the run's {a.total_steps:,} steps are shorter than one decay timescale for "
        f"{len(hit)} tensor(s) (total decay D at most {d:.3g} < 1, at the peak lr): the "
        "decay barely acts; as intended for a fine-tune, otherwise raise it",
    )  # fmt: skip
