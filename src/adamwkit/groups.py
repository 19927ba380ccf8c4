"""Which tensors decay: ``param_groups(model, weight_decay)`` and the plan it prints.

The default rule decays weight matrices and embeddings (``ndim >= 2``) and leaves out
biases, every tensor with ``ndim <= 1``, every parameter owned by a normalisation module
(found by its type, so renaming a LayerNorm attribute cannot make it decay), the names
``model.no_weight_decay()`` returns (timm's convention), and learned tokens and position
tables held as bare parameters (:data:`NAME_RULES`: ``cls_token``, ``pos_embed``,
``relative_position_bias_table``, ...), which the DeiT and Swin recipes exclude and models
without ``no_weight_decay()`` (Hugging Face ViT and Swin) would otherwise decay, Mamba's
state-space parameters (``A_log``, 2-D in Mamba-1, ``dt_bias``, ``D``), learned queries
(``query_tokens``, ``latents``), and parameters marked ``p._no_weight_decay = True`` (as the
reference Mamba code marks ``A_log`` and ``D``). Per-glob overrides (``weight_decay={glob:
value}``) win over all of these. The plan lists how many tensors and parameters decay and
which rule kept each other one out: the name-based rules of other libraries have silently
decayed norm layers (transformers issue #4360). Tied weights are listed once, with their
other names.

Wrappers are looked through: ``DistributedDataParallel``, ``DataParallel`` and FSDP
(``.module``), ``torch.compile`` (``._orig_mod``) and PEFT models
(``.get_base_model()``), so the wrapped model's ``no_weight_decay()`` is found (a DDP
wrapper hid it in facebookresearch/deit#39).

Sources: nanoGPT ``configure_optimizers`` (decay iff ``dim >= 2``); timm
``param_groups_weight_decay``; Hugging Face ``get_decay_parameter_names``.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from ._checks import ArgumentError, check_choice, check_range, is_subnormal
from ._constants import OPTIMIZER_DECAY_SCALES

__all__ = [
    "NAME_RULES",
    "DecayPlan",
    "Override",
    "ParamGroups",
    "PlanEntry",
    "normalized_layers",
    "param_groups",
]

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
#: One value of ``weight_decay={glob: value}`` (or ``overrides=``): a coefficient >= 0,
#: ``True`` (decay at the base value), ``False`` (no decay) or a scale string ``"x0.5"``.
Override = float | bool | str

_DEFAULT_WEIGHT_DECAY = 0.01  # param_groups' default, the base of a mapping without "*"
_OVERRIDE_ACCEPTS = (
    "expected a finite number >= 0 (0: no decay), True (decay at the base value), "
    "False (no decay) or a scale of the base such as 'x0.5'"
)

#: Parameters left out by name: the last part of the name (a bare ``nn.Parameter``, not a
#: submodule's ``weight``) is one of these. Each rule is its own row of the plan; pass
#: ``name_rules`` to keep only some.
NAME_RULES: dict[str, tuple[str, ...]] = {
    # ViT/DeiT class and distillation tokens, registers (Darcet et al. 2024), BEiT/MAE masks
    "token": ("cls_token", "dist_token", "reg_token", "reg_tokens", "register_tokens",
              "mask_token"),
    # learned absolute positions: timm pos_embed, HF ViT position_embeddings, Swin's ape
    "position embedding": ("pos_embed", "pos_embedding", "position_embeddings",
                           "position_embedding", "absolute_pos_embed", "pos_emb"),
    # Swin's relative position bias table, ViTDet/SAM's decomposed relative positions
    "relative position table": ("relative_position_bias_table", "rel_pos_h", "rel_pos_w",
                                "rel_pos_bias", "relative_position_bias"),
    # Mamba's state-space parameters: A_log (2-D in Mamba-1, so ndim misses it), dt_bias, D
    "state-space": ("A_log", "dt_bias", "D"),
    # learned queries held as bare parameters: Q-Former's query_tokens, Perceiver's latents
    "learned query": ("query_tokens", "latents"),
}  # fmt: skip


@dataclass(frozen=True)
class PlanEntry:
    """One tensor of the plan: its name, size, whether it decays, and why."""

    name: str
    shape: tuple[int, ...]
    numel: int
    weight_decay: float | None  # None: frozen, left out of every group
    rule: str
    aliases: tuple[str, ...] = ()  # the tensor's other names (tied weights)

    @property
    def decays(self) -> bool:
        return bool(self.weight_decay)


@dataclass(frozen=True)
class DecayPlan:
    """What :func:`param_groups` decided, printable as a table."""

    entries: tuple[PlanEntry, ...]
    weight_decay: float  # the base coefficient
    #: the per-glob overrides as given, in their order of precedence
    overrides: tuple[tuple[str, Override], ...] = ()
    #: the base is param_groups' default 0.01 (a ``weight_decay`` mapping without ``"*"``)
    base_is_default: bool = False

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
        setting = f"weight_decay={self.weight_decay:g}"
        if self.overrides:
            default = ", the default: no '*' key" if self.base_is_default else ""
            n = len(self.overrides)
            setting = f"base {setting}{default}; {n} override{'s' if n != 1 else ''}"
        head = (
            f"Weight decay plan ({setting}): "
            f"{len(self.decayed)} of {len(trainable)} trainable tensors decay, "
            f"{n_dec:,} of {n_all:,} parameters ({share:.2f}%)"
        )
        tied = [f"  tied: {e.name} = {', '.join(e.aliases)}" for e in self.entries if e.aliases]
        if per_tensor:
            rows: list[tuple[str, ...]] = [
                (
                    e.name + (f" (= {', '.join(e.aliases)})" if e.aliases else ""),
                    "x".join(map(str, e.shape)) or "scalar",
                    f"{e.numel:,}",
                    _wd(e),
                    e.rule,
                )
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
        return "\n".join([head, _table(("decay", "tensors", "params", "rule"), rows), *tied])

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
    weight_decay: float | Mapping[str, Override] = _DEFAULT_WEIGHT_DECAY,
    *,
    decay_embeddings: bool = True,
    exclude: Iterable[Exclusion] = (),
    multipliers: Mapping[str, float] | None = None,
    name_rules: Iterable[str] | None = None,
    decay_scales: Mapping[str, str] | None = None,
    overrides: Mapping[str, Override] | None = None,
) -> ParamGroups:
    """Split ``model``'s trainable parameters into decay and no-decay groups.

    Args:
        model: the module whose parameters to group.
        weight_decay: the coefficient of decayed tensors, in the optimizer's convention; or
            a mapping ``{glob: value}`` of per-parameter overrides, where the key ``"*"``
            (optional, and not a glob) is the base coefficient: without it the base is the
            default, 0.01. The plan's header shows the base.
        decay_embeddings: decay ``nn.Embedding``/``nn.EmbeddingBag`` weights (default True,
            as nanoGPT and Hugging Face do).
        exclude: extra no-decay rules: glob patterns matched against the full parameter
            name (``"encoder.*.pos_embed"``), or callables ``(name, param) -> bool``.
        multipliers: ``{glob: factor}``; a decayed tensor whose name matches a glob gets
            ``weight_decay * factor`` (the first matching glob wins). LoRA adapters
            (``*lora_A*``, ``*lora_B*``) decay like any matrix; ``{"*lora_*": 0.5}`` gives
            them their own value.
        name_rules: which of :data:`NAME_RULES` apply (default all: ``"token"``,
            ``"position embedding"``, ``"relative position table"``, ``"state-space"``,
            ``"learned query"``); ``()`` decays those tensors like any other. A parameter
            marked ``_no_weight_decay = True`` is left out whatever ``name_rules`` says
            (an override ``True`` makes it decay).
        decay_scales: ``{glob: decay_scale}``; a decayed tensor whose name matches gets a
            group with that ``decay_scale`` key, which :class:`adamwkit.AdamW` reads per
            group. AdamC applies ``"corrected"`` to the layers a normalisation follows:
            ``decay_scales=dict.fromkeys(normalized_layers(model, x), "corrected")``.
        overrides: ``{glob: value}`` beside a number ``weight_decay``, the same as passing
            the mapping as ``weight_decay`` (giving a mapping for both is an error). Each
            glob is matched (``fnmatchcase``) against the full parameter name and every
            tied alias; the first matching glob in the mapping's order decides, over every
            other rule (``exclude``, ``no_weight_decay()``, the name rules, norms, biases,
            ``ndim``, ``multipliers``). A value is a number >= 0 (that coefficient; 0: no
            decay), ``True`` (decay at the base value, even a bias or a norm), ``False``
            (no decay) or ``"x<factor>"`` (the base times factor, as ``multipliers``).
            ``decay_scales`` still applies to the tensors that decay; frozen parameters
            stay left out; a glob that matches no parameter gets a warning.

    Returns:
        A list of param-group dicts (one per distinct weight decay, then the no-decay
        group) that any ``torch.optim`` optimizer accepts, with ``.plan`` (a
        :class:`DecayPlan`; ``print(groups.plan)`` shows the table). Frozen parameters
        (``requires_grad=False``) are left out.

    Example:
        ``param_groups(model, weight_decay={"*": 0.1, "*.A_log": 0, "lm_head.weight":
        0.05, "*.bias": True, "*.latents": "x0.5"})``: 0.1 on the tensors the rules decay,
        no decay on ``A_log``, 0.05 on the head, 0.1 on every bias, 0.05 on ``latents``;
        the same as ``param_groups(model, 0.1, overrides={"*.A_log": 0, ...})``. The plan's
        rule column names the override that decided: ``override 'lm_head.weight' = 0.05``,
        ``override '*.bias': decay``, ``override '*.A_log': no decay``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__} is invalid: expected a torch.nn.Module")
    base, table, given, base_is_default = _overrides(weight_decay, overrides)
    exclude = list(exclude)
    for rule in exclude:
        if not (isinstance(rule, str) or callable(rule)):
            raise ValueError(
                f"exclude entry {rule!r} is invalid: expected a glob string or a callable"
            )
    multipliers = dict(multipliers or {})
    for key, factor in multipliers.items():
        check_range(f"multipliers[{key!r}]", factor)
    scales = dict(decay_scales or {})
    for key, value in scales.items():
        check_choice(f"decay_scales[{key!r}]", value, OPTIMIZER_DECAY_SCALES)

    if isinstance(name_rules, str):  # one rule's name, not its letters
        name_rules = (name_rules,)
    rules = tuple(NAME_RULES) if name_rules is None else tuple(name_rules)
    for rule in rules:
        if rule not in NAME_RULES:
            raise ValueError(
                f"name_rules entry {rule!r} is invalid: expected one of "
                f"{', '.join(map(repr, NAME_RULES))}"
            )
    no_wd_names, through = _no_weight_decay_names(model)
    owners = _owners(model)
    used: set[str] = set()
    entries: list[PlanEntry] = []
    groups: dict[tuple[float, str | None], list[nn.Parameter]] = {}
    no_decay: list[nn.Parameter] = []

    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)

    matched: set[str] = set()  # the override globs that match some parameter

    for name, p in model.named_parameters():
        mods = owners.get(id(p), [])
        # a tied weight answers to all its names (tok.weight and head.weight alike)
        names = aliases[id(p)]
        found = [o for o in table if any(fnmatchcase(n, o[0]) for n in names)]
        matched.update(o[0] for o in found)
        override = found[0] if found else None  # the first in the mapping's order decides
        hits = [r for r in exclude if any(_matches(r, n, p) for n in names)]
        used.update(_exclusion_label(r) for r in hits)
        hit = hits[0] if hits else None
        norm = _norm_name(mods)
        is_embedding = any(isinstance(m, _EMBEDDING_TYPES) for m in mods)
        wd, decayable = 0.0, False  # left out unless a rule below says it decays
        if not p.requires_grad:
            rule = "frozen (left out)"
        elif override is not None:
            _, wd, rule, decayable = override
            # a multiplier the override set aside still matched: no "matched no parameter"
            used.update(repr(g) for g in multipliers if any(fnmatchcase(n, g) for n in names))
        elif hit is not None:
            rule = f"exclude {_exclusion_label(hit)}"
        elif any(fnmatchcase(n, pat) for n in names for pat in no_wd_names):
            rule = "model.no_weight_decay()" + (f" (through {through})" if through else "")
        elif getattr(p, "_no_weight_decay", False) is True:  # the reference Mamba code's mark
            rule = "_no_weight_decay attribute"
        elif (label := name_rule(names, rules)) is not None:
            rule = label
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
            if any(".lora_" in f".{n}" for n in names):
                rule += " (LoRA adapter)"
            pattern = next((g for g in multipliers if any(fnmatchcase(n, g) for n in names)), None)
            wd, decayable = base, True
            if pattern is not None:
                used.add(repr(pattern))
                wd = base * multipliers[pattern]
                rule += f", x{multipliers[pattern]:g} by {pattern!r}"
        if decayable:
            scale_glob = next((g for g in scales if any(fnmatchcase(n, g) for n in names)), None)
            scale = None
            if scale_glob is not None:
                used.add(repr(scale_glob))
                scale = scales[scale_glob]
                rule += f", decay_scale {scale!r} by {scale_glob!r}"
            if wd > 0:
                groups.setdefault((wd, scale), []).append(p)
                entries.append(
                    PlanEntry(name, tuple(p.shape), p.numel(), wd, rule, tuple(names[1:]))
                )
                continue
        if p.requires_grad:
            no_decay.append(p)
        wd_entry = None if not p.requires_grad else 0.0
        entries.append(PlanEntry(name, tuple(p.shape), p.numel(), wd_entry, rule, tuple(names[1:])))

    labels = [_exclusion_label(r) for r in exclude] + [repr(g) for g in (*multipliers, *scales)]
    for label in labels:
        if label not in used:
            warnings.warn(f"param_groups: {label} matched no parameter", stacklevel=2)
    for glob in given:
        if glob not in matched:
            warnings.warn(f"param_groups: override {glob!r} matched no parameter", stacklevel=2)
    if not groups and not no_decay:
        raise ValueError(
            f"model {type(model).__name__} has no trainable parameters (all are frozen or absent)"
        )
    out = ParamGroups(
        {"params": ps, "weight_decay": wd, **({"decay_scale": sc} if sc else {})}
        for (wd, sc), ps in groups.items()
    )
    if no_decay:
        out.append({"params": no_decay, "weight_decay": 0.0})
    out.plan = DecayPlan(tuple(entries), base, tuple(given.items()), base_is_default)
    return out


def normalized_layers(model: nn.Module, *args: Any, **kwargs: Any) -> list[str]:
    """The weight matrices whose layer's output goes straight into a normalisation layer
    (through views such as ``view`` or ``transpose`` only), found by running ``model(*args,
    **kwargs)`` once without gradients (buffers such as BatchNorm's running statistics are
    restored after): a convolution before BatchNorm, a projection
    before a QK-norm or a LayerNorm. Their norm does not change the output, which is the
    case AdamC's corrected decay is for (Defazio 2025, arXiv:2506.02285). Only a module's
    output tensor is followed (not functional ops such as a residual add), and embeddings
    are left out: their output feeds the residual stream as well as the first norm.

    Example: ``normalized_layers(cnn, torch.randn(1, 3, 32, 32))``.
    """
    import torch

    if not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__} is invalid: expected a torch.nn.Module")
    producers: dict[int, str] = {}
    keep: list[Any] = []  # outputs stay alive, so their ids are not reused mid-forward
    found: set[str] = set()

    def record(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                producers[id(output)] = name
                keep.append(output)
                if output._base is not None:  # the output is itself a view (Linear on 3-D)
                    producers[id(output._base)] = name
                    keep.append(output._base)

        return hook

    def check(_m: nn.Module, inputs: Any) -> None:
        x = inputs[0] if inputs else None
        while isinstance(x, torch.Tensor):
            if id(x) in producers:
                found.add(producers[id(x)])
                return
            x = x._base  # a view: look at the tensor it views

    hooks = []
    for name, m in model.named_modules():
        if _norm_name([m]) is not None:
            hooks.append(m.register_forward_pre_hook(check))
        elif not isinstance(m, _EMBEDDING_TYPES) and any(
            p.ndim >= 2 for p in m.parameters(recurse=False)
        ):  # an embedding's output is the residual stream, not only a norm's input
            hooks.append(m.register_forward_hook(record(name)))
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():  # the forward ran in the model's mode: undo BatchNorm's stats
            for n, b in model.named_buffers():
                if n in buffers:
                    b.copy_(buffers[n])
    return [
        f"{name}.{pname}" if name else pname
        for name, m in model.named_modules()
        if name in found
        for pname, p in m.named_parameters(recurse=False)
        if p.ndim >= 2
    ]


def _overrides(
    weight_decay: float | Mapping[str, Override], overrides: Mapping[str, Override] | None
) -> tuple[float, list[tuple[str, float, str, bool]], dict[str, Override], bool]:
    """The base coefficient; the overrides as ``(glob, weight_decay, plan label, whether it
    decays)`` in their order; the overrides as given; whether the base is the default (no
    ``"*"``)."""
    if isinstance(weight_decay, Mapping):
        if overrides is not None:
            raise ArgumentError(
                "weight_decay and overrides are both mappings: give the overrides in one of "
                "them (weight_decay={glob: value}, or a number with overrides={glob: value})",
                "weight_decay",
                "overrides",
            )
        arg, given = "weight_decay", dict(weight_decay)
        base_is_default = "*" not in given
        base = check_range("weight_decay['*']", given.pop("*", _DEFAULT_WEIGHT_DECAY))
    else:
        if overrides is not None and not isinstance(overrides, Mapping):
            raise ArgumentError(
                f"overrides={overrides!r} is invalid: expected a mapping {{glob: value}}",
                "overrides",
            )
        arg, given = "overrides", dict(overrides or {})
        base_is_default = False
        base = check_range("weight_decay", weight_decay)
        if "*" in given:
            raise ArgumentError(
                f"overrides['*']={given['*']!r} is invalid: the base coefficient is "
                "weight_decay; give it there, or pass the mapping as weight_decay",
                "overrides",
            )
    table = []
    for glob, value in given.items():
        if not isinstance(glob, str):
            raise ArgumentError(
                f"{arg} key {glob!r} is invalid: expected a glob string such as '*.bias'", arg
            )
        wd, label = _override(f"{arg}[{glob!r}]", value, base)
        table.append((glob, wd, f"override {glob!r}{label}", label != ": no decay"))
    return base, table, given, base_is_default


def _override(name: str, value: object, base: float) -> tuple[float, str]:
    """One override's coefficient and the end of its plan label (``": no decay"``)."""
    if value is True:
        return base, ": decay"
    if value is False:
        return 0.0, ": no decay"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            x = float(value)
        except OverflowError:  # an int too large for a float
            x = math.inf
        wd = _nonnegative(name, value, x)
        return wd, f" = {wd:g}" if wd > 0 else ": no decay"
    if isinstance(value, str) and value.startswith("x"):
        try:
            factor = float(value[1:])
        except ValueError:
            factor = math.nan
        factor = _nonnegative(name, value, factor)
        return check_range(name, base * factor), f" = x{factor:g}"
    raise ArgumentError(f"{name}={value!r} is invalid: {_OVERRIDE_ACCEPTS}", name)


def _nonnegative(name: str, value: object, x: float) -> float:
    if is_subnormal(x):
        check_range(name, x)  # raises: below the smallest normal float, read as 0
    if not (math.isfinite(x) and x >= 0):
        raise ArgumentError(f"{name}={value!r} is invalid: {_OVERRIDE_ACCEPTS}", name)
    return x


def name_rule(names: Iterable[str], rules: Iterable[str] | None = None) -> str | None:
    """The plan's label (``"token (cls_token)"``) when the last part of any of ``names`` is
    held by one of ``rules`` (default: every rule of :data:`NAME_RULES`), else None."""
    chosen = tuple(NAME_RULES) if rules is None else tuple(rules)
    for n in names:
        last = n.rsplit(".", 1)[-1]
        for rule in chosen:
            if last in NAME_RULES[rule]:
                return f"{rule} ({last})"
    return None


def _unwrap(model: nn.Module) -> nn.Module | None:
    """The module a wrapper holds (DDP, DataParallel, FSDP, torch.compile, PEFT), or None."""
    inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    if isinstance(inner, nn.Module):
        return inner
    if type(model).__name__ in _WRAPPERS and isinstance(getattr(model, "module", None), nn.Module):
        return model.module  # type: ignore[return-value]
    base = getattr(model, "get_base_model", None)  # peft.PeftModel
    if callable(base):
        inner = base()
        if isinstance(inner, nn.Module) and inner is not model:
            return inner
    return None


_WRAPPERS = ("DistributedDataParallel", "DataParallel", "FullyShardedDataParallel")


def _no_weight_decay_names(model: nn.Module) -> tuple[set[str], str]:
    """The globs ``no_weight_decay()`` returns, on the model or inside its wrappers, with
    the wrappers' prefixes; and the wrappers looked through (``""`` for none)."""
    found: set[str] = set()
    through: list[str] = []
    outer, prefix = model, ""
    current: nn.Module | None = model
    while current is not None:
        no_wd = getattr(current, "no_weight_decay", None)
        if callable(no_wd):
            found.update(prefix + n for n in no_wd())
        inner = _unwrap(current)
        if inner is None:
            break
        through.append(type(current).__name__)
        name = next((n for n, m in outer.named_modules() if m is inner), None)
        prefix = f"{name}." if name else prefix
        current = inner
    return found, " and ".join(through) if found and through else ""


def _matches(rule: Exclusion, name: str, p: nn.Parameter) -> bool:
    return fnmatchcase(name, rule) if isinstance(rule, str) else bool(rule(name, p))
