"""Which tensors decay: ``param_groups(model, weight_decay)`` and the plan it prints.

The default rule decays weight matrices and embeddings (``ndim >= 2``) and leaves out
biases, every tensor with ``ndim <= 1``, every parameter owned by a normalisation module
(found by its type, so renaming a LayerNorm attribute cannot make it decay) and the names
``model.no_weight_decay()`` returns (timm's convention). The plan lists how many tensors
and parameters decay and which rule kept each other one out: the name-based rules of
other libraries have silently decayed norm layers (transformers issue #4360).

Sources: nanoGPT ``configure_optimizers`` (decay iff ``dim >= 2``); timm
``param_groups_weight_decay``; Hugging Face ``get_decay_parameter_names``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from ._checks import check_range

__all__ = ["DecayPlan", "ParamGroups", "PlanEntry", "param_groups"]

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
# Norm layers of other libraries (LlamaRMSNorm, T5LayerNorm, FusedLayerNorm, ...), but not
# fused blocks that merely start with a norm (LayerNormLinear owns a decayed matrix).
_NORM_NAME = re.compile(r"(Layer|RMS|Batch|Group|Instance)Norm(\d[dD])?$")
_EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)

Exclusion = str | Callable[[str, nn.Parameter], bool]


@dataclass(frozen=True)
class PlanEntry:
    """One tensor of the plan: its name, size, whether it decays, and why."""

    name: str
    shape: tuple[int, ...]
    numel: int
    weight_decay: float | None  # None: frozen, left out of every group
    rule: str

    @property
    def decays(self) -> bool:
        return bool(self.weight_decay)


@dataclass(frozen=True)
class DecayPlan:
    """What :func:`param_groups` decided, printable as a table."""

    entries: tuple[PlanEntry, ...]
    weight_decay: float

    @property
    def decayed(self) -> tuple[PlanEntry, ...]:
        return tuple(e for e in self.entries if e.decays)

    @property
    def not_decayed(self) -> tuple[PlanEntry, ...]:
        return tuple(e for e in self.entries if not e.decays and e.weight_decay is not None)

    @property
    def frozen(self) -> tuple[PlanEntry, ...]:
        return tuple(e for e in self.entries if e.weight_decay is None)

    def format(self, per_tensor: bool = False) -> str:
        """The plan as text: one row per rule, or one row per tensor with ``per_tensor``."""
        trainable = self.decayed + self.not_decayed
        n_dec = sum(e.numel for e in self.decayed)
        n_all = sum(e.numel for e in trainable)
        share = 100.0 * n_dec / n_all if n_all else 0.0
        head = (
            f"Weight decay plan (weight_decay={self.weight_decay:g}): "
            f"{len(self.decayed)} of {len(trainable)} trainable tensors decay, "
            f"{n_dec:,} of {n_all:,} parameters ({share:.2f}%)"
        )
        if per_tensor:
            rows = [
                (e.name, "x".join(map(str, e.shape)) or "scalar", f"{e.numel:,}", _wd(e), e.rule)
                for e in self.entries
            ]
            return head + "\n" + _table(("tensor", "shape", "params", "decay", "rule"), rows)
        summary: dict[tuple[float, str], list[int]] = {}
        for e in self.entries:
            wd = -1.0 if e.weight_decay is None else e.weight_decay
            counts = summary.setdefault((wd, e.rule), [0, 0])
            counts[0] += 1
            counts[1] += e.numel
        # decayed first (largest decay on top), then not decayed, then frozen; big rows first
        order = sorted(summary.items(), key=lambda kv: (-kv[0][0], -kv[1][1]))
        rows = [
            ("-" if wd < 0 else f"{wd:g}", str(n), f"{numel:,}", rule)
            for (wd, rule), (n, numel) in order
        ]
        return head + "\n" + _table(("decay", "tensors", "params", "rule"), rows)

    def __str__(self) -> str:
        return self.format()


class ParamGroups(list):
    """Param groups for any ``torch.optim`` optimizer, with the :class:`DecayPlan` attached."""

    plan: DecayPlan


def _wd(e: PlanEntry) -> str:
    return "-" if e.weight_decay is None else f"{e.weight_decay:g}"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    numeric = {"tensors", "params"}
    lines = []
    for row in (header, *rows):
        cells = [
            str(x).rjust(w) if h in numeric else str(x).ljust(w)
            for x, w, h in zip(row, widths, header, strict=True)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def _owners(model: nn.Module) -> dict[int, list[nn.Module]]:
    """Every module that directly owns each parameter (tied weights have several)."""
    owners: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), []).append(module)
    return owners


def _norm_name(modules: list[nn.Module]) -> str | None:
    for m in modules:
        if isinstance(m, _NORM_TYPES) or _NORM_NAME.search(type(m).__name__):
            return type(m).__name__
    return None


def _exclusion_label(rule: Exclusion) -> str:
    return repr(rule) if isinstance(rule, str) else getattr(rule, "__name__", repr(rule))


def param_groups(
    model: nn.Module,
    weight_decay: float = 0.01,
    *,
    decay_embeddings: bool = True,
    exclude: Iterable[Exclusion] = (),
    multipliers: Mapping[str, float] | None = None,
) -> ParamGroups:
    """Split ``model``'s trainable parameters into decay and no-decay groups.

    Args:
        model: the module whose parameters to group.
        weight_decay: the coefficient of decayed tensors, in the optimizer's convention.
        decay_embeddings: decay ``nn.Embedding``/``nn.EmbeddingBag`` weights (default True,
            as nanoGPT and Hugging Face do).
        exclude: extra no-decay rules: glob patterns matched against the full parameter
            name (``"encoder.*.pos_embed"``), or callables ``(name, param) -> bool``.
        multipliers: ``{glob: factor}``; a decayed tensor whose name matches a glob gets
            ``weight_decay * factor`` (the first matching glob wins).

    Returns:
        A list of param-group dicts (one per distinct weight decay, then the no-decay
        group) that any ``torch.optim`` optimizer accepts, with ``.plan`` (a
        :class:`DecayPlan`; ``print(groups.plan)`` shows the table). Frozen parameters
        (``requires_grad=False``) are left out.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__} is invalid: expected a torch.nn.Module")
    weight_decay = check_range("weight_decay", weight_decay)
    exclude = list(exclude)
    for rule in exclude:
        if not (isinstance(rule, str) or callable(rule)):
            raise ValueError(
                f"exclude entry {rule!r} is invalid: expected a glob string or a callable"
            )
    multipliers = dict(multipliers or {})
    for pattern, factor in multipliers.items():
        check_range(f"multipliers[{pattern!r}]", factor)

    no_wd = getattr(model, "no_weight_decay", None)
    no_wd_names = set(no_wd()) if callable(no_wd) else set()
    owners = _owners(model)
    used: set[str] = set()
    entries: list[PlanEntry] = []
    groups: dict[float, list[nn.Parameter]] = {}
    no_decay: list[nn.Parameter] = []

    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)

    for name, p in model.named_parameters():
        mods = owners.get(id(p), [])
        # a tied weight answers to all its names (tok.weight and head.weight alike)
        names = aliases[id(p)]
        hits = [r for r in exclude if any(_matches(r, n, p) for n in names)]
        used.update(_exclusion_label(r) for r in hits)
        hit = hits[0] if hits else None
        norm = _norm_name(mods)
        is_embedding = any(isinstance(m, _EMBEDDING_TYPES) for m in mods)
        if not p.requires_grad:
            rule = "frozen (left out)"
        elif hit is not None:
            rule = f"exclude {_exclusion_label(hit)}"
        elif any(fnmatchcase(n, pat) for n in names for pat in no_wd_names):
            rule = "model.no_weight_decay()"
        elif norm is not None:
            rule = f"norm layer ({norm})"
        elif name.rsplit(".", 1)[-1].endswith("bias"):
            rule = "bias"
        elif p.ndim <= 1:
            rule = "ndim <= 1"
        elif is_embedding and not decay_embeddings:
            rule = "embedding (decay_embeddings=False)"
        else:
            rule = "embedding" if is_embedding else "ndim >= 2"
            pattern = next((g for g in multipliers if any(fnmatchcase(n, g) for n in names)), None)
            wd = weight_decay
            if pattern is not None:
                used.add(repr(pattern))
                wd = weight_decay * multipliers[pattern]
                rule += f", x{multipliers[pattern]:g} by {pattern!r}"
            if wd > 0:
                groups.setdefault(wd, []).append(p)
                entries.append(PlanEntry(name, tuple(p.shape), p.numel(), wd, rule))
                continue
        if p.requires_grad:
            no_decay.append(p)
        wd_entry = None if not p.requires_grad else 0.0
        entries.append(PlanEntry(name, tuple(p.shape), p.numel(), wd_entry, rule))

    for label in [_exclusion_label(r) for r in exclude] + [repr(g) for g in multipliers]:
        if label not in used:
            warnings.warn(f"param_groups: {label} matched no parameter", stacklevel=2)
    if not groups and not no_decay:
        raise ValueError(
            f"model {type(model).__name__} has no trainable parameters (all are frozen or absent)"
        )
    out = ParamGroups({"params": ps, "weight_decay": wd} for wd, ps in groups.items())
    if no_decay:
        out.append({"params": no_decay, "weight_decay": 0.0})
    out.plan = DecayPlan(tuple(entries), weight_decay)
    return out


def _matches(rule: Exclusion, name: str, p: nn.Parameter) -> bool:
    return fnmatchcase(name, rule) if isinstance(rule, str) else bool(rule(name, p))
