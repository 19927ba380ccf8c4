r"""``adamwkit.AdamW``: a drop-in for ``torch.optim.AdamW`` that says what its decay means.

The class validates hyperparameters, keeps state exactly as ``torch.optim.AdamW`` lays it
out (so state_dicts load into either class), and dispatches to
:func:`adamwkit.functional.adamw_step`, where the math lives.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import ParamsT

from ._checks import check_choice, check_range
from .functional import (
    _FUSED_AUTO_DTYPES,
    DECAY_SCALES,
    DecayScale,
    decay_variants,
    effective_weight_decay,
    torch_step,
)

__all__ = ["AdamW"]

#: ``decay_toward`` of :class:`AdamW`: decay toward zero, or toward the first step's weights.
DECAY_TOWARD: tuple[str, ...] = ("zero", "init")

# Keys this class adds to each param group (with nonfinite_skips). A state_dict saved by
# torch.optim.AdamW has none of them; loading one keeps the receiving optimizer's lr_peak
# and lr_init, and reads the group's decay_scale as PyTorch's, "lr" (see load_state_dict).
_KEPT_ON_LOAD = ("decay_scale", "lr_peak", "lr_init", "cautious", "decay_toward")


class AdamW(Optimizer):
    r"""AdamW with an explicit choice of how weight decay scales.

    Same signature, defaults and results as ``torch.optim.AdamW``, plus:

    Args:
        decay_scale: how the per-step decay is scaled.

            - ``"lr"`` (default, PyTorch / optax / Keras):
              :math:`\theta \leftarrow \theta\,(1 - \mathrm{lr}_t\,\lambda)`.
              The decay per step grows with the learning rate; ``weight_decay=0.01`` at
              ``lr=1e-3`` removes 1e-5 of each weight per step.
            - ``"schedule"`` (Loshchilov & Hutter 2019, Algorithm 2):
              :math:`\theta \leftarrow \theta\,(1 - (\mathrm{lr}_t/\mathrm{lr}_{peak})\,\lambda)`.
              The decay follows the schedule multiplier, not the learning rate's size,
              so ``weight_decay`` is the fraction removed per step at the peak.

            ``lr_peak`` of a group is, in this order: the ``lr_peak`` you set in the group
            dict, the group's ``max_lr`` (set by ``OneCycleLR``), its ``initial_lr`` (set by
            the other LR schedulers), or its ``lr`` when the optimizer was built (group key
            ``lr_init``). A step whose lr exceeds ``lr_peak`` raises a ``ValueError``
            (the multiplier ``lr_t / lr_peak`` is at most 1 by definition): with
            ``CyclicLR``, whose ``initial_lr`` is its lowest lr, set ``lr_peak``.
            - ``"corrected"`` (AdamC, Defazio 2025, arXiv:2506.02285; timm's
              ``corrected_weight_decay``):
              :math:`\theta \leftarrow \theta\,(1 - \lambda\,\mathrm{lr}_t^2/\mathrm{lr}_{peak})`.
              The decay falls with the square of the schedule, which keeps the
              normalised layers' equilibrium norm steady as the lr anneals; the paper
              applies it to the layers followed by a normalisation.

        cautious: decay only the coordinates whose update agrees in sign with the weight
            (Cautious Weight Decay, Chen et al. 2025, arXiv:2510.12402):
            :math:`\theta \leftarrow \theta - \mathrm{lr}_t(u + \lambda\,
            \mathbb{I}(u\,\theta \ge 0)\,\theta)` in PyTorch's convention.
        decay_toward: ``"zero"`` (default) or ``"init"``: decay toward the weights the
            parameter had at its first step (the initial or pretrained weights), the
            decoupled form of L2-SP for fine-tuning (Xuhong et al., ICML 2018):
            :math:`\theta \leftarrow \theta - \mathrm{lr}_t\lambda(\theta - \theta_0)`.
            The reference is kept in the state (``decay_ref``), one copy of the weights.

        ``cautious`` and ``decay_toward`` are group keys too, so groups may differ.

        skip_nonfinite: when True and any gradient of the step holds a NaN or an infinity,
            the step changes no parameter and no state; each group's ``nonfinite_skips``
            counter (also :attr:`nonfinite_skips`) records it.

    The default path is PyTorch's fused kernel for float32/float64 parameters on CPU and
    CUDA (both decay scales use it: ``"schedule"`` is ``"lr"`` with
    ``weight_decay / lr_peak``), else whatever ``torch.optim.AdamW`` picks; ``fused`` and
    ``foreach`` choose a path explicitly, as in PyTorch.

    State dicts: a saved group's ``weight_decay`` keeps the convention it was saved in.
    A group saved by ``torch.optim.AdamW`` (no ``decay_scale`` key) is loaded with
    ``decay_scale="lr"``, and one saved by this class with its saved ``decay_scale`` (and
    ``lr_peak``), whatever the receiving optimizer's; a ``UserWarning`` names each group
    whose convention differs from the receiver's. Keeping the saved convention, rather than
    converting ``weight_decay`` into the receiver's, continues the run exactly: a
    conversion would divide by ``lr_peak`` again at every step, and ``lr_peak`` after a
    load comes from the receiver (its ``lr_init``, a scheduler's ``initial_lr`` set after
    the load), not from the saved run. ``torch.optim.AdamW`` keeps this class's extra group
    keys but ignores them and reads ``weight_decay`` as ``"lr"``: to continue a
    ``"schedule"`` run with it, load :meth:`torch_state_dict`, whose weight decay is
    converted to PyTorch's convention.

    Sources: Loshchilov & Hutter, ICLR 2019 (arXiv:1711.05101); ``torch.optim.AdamW``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decay_scale: DecayScale = "lr",
        skip_nonfinite: bool = False,
        cautious: bool = False,
        decay_toward: str = "zero",
    ) -> None:
        if fused and foreach:
            raise ValueError("fused=True and foreach=True are exclusive: choose one path")
        if fused and differentiable:
            raise ValueError("fused=True does not support differentiable=True")
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            # torch.optim.AdamW's own key, kept so that state_dicts carry the same keys
            "decoupled_weight_decay": True,
            "decay_scale": decay_scale,
            "lr_peak": None,
            "cautious": cautious,
            "decay_toward": decay_toward,
        }
        _check_group(defaults, "")
        self.skip_nonfinite = bool(skip_nonfinite)
        # ids of the parameters whose step counter is known to be in the fused layout (on
        # the parameter's device, float32), so that a step need not look again; a load
        # clears it. The state holds each parameter, so an id cannot be reused meanwhile.
        self._fused_steps: set[int] = set()
        super().__init__(params, defaults)
        if fused:
            # GradScaler unscales into the fused kernel, as for torch.optim.AdamW(fused=True).
            self._step_supports_amp_scaling = True
        self._convention_checked = False  # the first step looks at the groups' values once

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (as ``torch.optim.Optimizer``), validating its hyperparameters."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _check_group(group, f"param_groups[{len(self.param_groups) - 1}].")
        except ValueError:
            self.param_groups.pop()
            raise
        group.setdefault("lr_init", float(group["lr"]))
        group.setdefault("nonfinite_skips", 0)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._fused_steps = set()
        for group in self.param_groups:
            # A state_dict from torch.optim.AdamW has none of the keys this class adds; its
            # weight_decay is in PyTorch's convention, "lr" (load_state_dict says so).
            group.setdefault("decay_scale", "lr")
            group.setdefault("lr_peak", None)
            group.setdefault("lr_init", float(group.get("initial_lr", group["lr"])))
            group.setdefault("nonfinite_skips", 0)
            group.setdefault("cautious", False)
            group.setdefault("decay_toward", "zero")
            for key in ("amsgrad", "maximize", "capturable", "differentiable"):
                group.setdefault(key, False)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
            group["decoupled_weight_decay"] = True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of this class or of ``torch.optim.AdamW``.

        Each group keeps the decay convention it was saved in, so the run continues as it
        would have: a group saved by ``torch.optim.AdamW`` (no ``decay_scale`` key) gets
        ``decay_scale="lr"``, one saved by this class its saved ``decay_scale``. Where that
        differs from the receiving group's, a ``UserWarning`` says so. Groups without
        ``lr_peak``, ``lr_init``, ``cautious`` or ``decay_toward`` keep the receiving
        optimizer's values for those (``decay_toward="init"`` without a saved ``decay_ref``
        then decays toward the weights at the first step after the load).
        """
        _check_loaded_state(self, state_dict)
        current = [{k: g[k] for k in _KEPT_ON_LOAD} for g in self.param_groups]
        super().load_state_dict(state_dict)
        self._fused_steps.clear()
        for index, (group, saved, mine) in enumerate(
            zip(self.param_groups, state_dict["param_groups"], current, strict=True)
        ):
            for key in ("lr_peak", "lr_init", "cautious", "decay_toward"):
                if key not in saved:
                    group[key] = mine[key]
            from_torch = "decay_scale" not in saved
            group["decay_scale"] = "lr" if from_torch else saved["decay_scale"]
            if group["decay_scale"] != mine["decay_scale"]:
                warnings.warn(_convention_message(index, group, mine, from_torch), stacklevel=2)

    def torch_state_dict(self) -> dict[str, Any]:
        """The state_dict with every group in PyTorch's convention, for ``torch.optim.AdamW``.

        A ``"schedule"`` group's ``weight_decay`` becomes ``weight_decay / lr_peak`` (the
        same per-step decay, see :func:`adamwkit.effective_weight_decay`) and its
        ``decay_scale`` ``"lr"``, so the run continues unchanged in either class.
        """
        for index, group in enumerate(self.param_groups):
            reason = None
            if group["decay_scale"] == "corrected":
                reason = "decay_scale='corrected' (its decay follows lr_t**2, not lr_t)"
            elif group.get("cautious") or group.get("decay_toward") == "init":
                reason = "cautious or decay_toward='init'"
            if reason:
                raise ValueError(
                    f"param_groups[{index}] uses {reason}, which torch.optim.AdamW cannot "
                    "continue; save state_dict() and continue with adamwkit.AdamW"
                )
        sd = self.state_dict()
        for saved, group in zip(sd["param_groups"], self.param_groups, strict=True):
            if saved["decay_scale"] == "schedule":
                saved["weight_decay"] = float(
                    effective_weight_decay(saved["weight_decay"], "schedule", self.lr_peak(group))
                )
                saved["decay_scale"] = "lr"
        return sd

    @property
    def nonfinite_skips(self) -> int:
        """How many steps ``skip_nonfinite=True`` has skipped."""
        return max((g.get("nonfinite_skips", 0) for g in self.param_groups), default=0)

    @staticmethod
    def lr_peak(group: Mapping[str, Any]) -> float:
        """The peak learning rate that ``decay_scale="schedule"`` divides by, for one group."""
        for key in ("lr_peak", "max_lr", "initial_lr", "lr_init"):
            value = group.get(key)
            if value is not None:
                return float(value)
        return float(group["lr"])

    def _decay(self, group: dict[str, Any], index: int) -> float:
        """The group's weight decay in PyTorch's convention for this step."""
        scale = group["decay_scale"]
        if scale == "lr":
            return group["weight_decay"]
        peak = self.lr_peak(group)
        lr = float(group["lr"])
        if lr > peak * (1 + 1e-9):
            raise ValueError(
                f"param_groups[{index}]: lr={lr:g} exceeds lr_peak={peak:g}, so the decay "
                f"multiplier lr/lr_peak would exceed 1 under decay_scale={scale!r}; set the "
                f"group's 'lr_peak' to the schedule's peak (CyclicLR reports its lowest lr "
                f"as initial_lr)"
            )
        return float(effective_weight_decay(group["weight_decay"], scale, peak, lr))

    def _init_group(self, group: dict[str, Any], explicit: str | None) -> tuple:
        """Collect the group's tensors in one pass, creating state in torch.optim.AdamW's layout.

        Returns ``(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, has_complex,
        impl)``; ``impl`` is ``explicit`` or, when None, the default path for these tensors.
        """
        params: list[Tensor] = []
        grads: list[Tensor] = []
        exp_avgs: list[Tensor] = []
        exp_avg_sqs: list[Tensor] = []
        max_sqs: list[Tensor] = []
        steps: list[Tensor] = []
        has_complex = False
        fusable = not group["differentiable"]
        amsgrad, capturable = group["amsgrad"], group["capturable"]
        toward = group["decay_toward"] == "init"
        float32, preserve = torch.float32, torch.preserve_format
        fused_steps = self._fused_steps
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            # fused_eligible, inlined (a call per tensor shows in small models' steps): two
            # contiguous tensors of one shape share a layout, the cheaper question; a sparse
            # gradient is never contiguous, so it is caught on the other branch
            if grad.is_contiguous() and p.is_contiguous():
                same_layout = True
            else:
                if grad.is_sparse:
                    raise RuntimeError(
                        "AdamW does not support sparse gradients (got one for a parameter of "
                        f"shape {tuple(p.shape)}); use torch.optim.SparseAdam for those "
                        "parameters"
                    )
                same_layout = grad.stride() == p.stride()
            dtype, on_cpu = p.dtype, p.is_cpu
            eligible = same_layout and (on_cpu or p.is_cuda) and dtype in _FUSED_AUTO_DTYPES
            fusable = fusable and eligible
            fused_layout = capturable or explicit == "fused" or (explicit is None and eligible)
            state = self.state[p]
            if len(state) == 0:
                step = torch.zeros((), dtype=float32, device=p.device) if fused_layout else None
                if step is None:
                    step = torch.tensor(0.0, dtype=_scalar_dtype())
                else:
                    fused_steps.add(id(p))
                state["step"] = step
                moment = state["exp_avg"] = torch.zeros_like(p, memory_format=preserve)
                second = state["exp_avg_sq"] = torch.zeros_like(p, memory_format=preserve)
            else:
                moment, second, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
                # The fused kernel reads the moments at the parameter's size unchecked (a
                # smaller state is a buffer overrun): a parameter swapped since the last step
                # (``p.data = bigger``) must stop here, as a ValueError, not in the kernel.
                # Every state tensor is made with the parameter and loads are checked whole
                # (_check_loaded_state), so exp_avg stands for the others.
                if (
                    moment.shape != p.shape
                    or moment.dtype is not dtype
                    or (not moment.is_cpu if on_cpu else moment.device != p.device)
                ):
                    raise ValueError(_state_mismatch(group, p, "exp_avg", moment, self))
                if fused_layout and id(p) not in fused_steps:
                    # A state saved by a non-fused run keeps its step on the CPU: move it once.
                    if step.dtype is not float32 or step.device != p.device:
                        step = state["step"] = step.to(device=p.device, dtype=float32)
                    fused_steps.add(id(p))
            if toward and "decay_ref" not in state:
                state["decay_ref"] = p.detach().clone(memory_format=preserve)
            if amsgrad:
                if "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=preserve)
                max_sqs.append(state["max_exp_avg_sq"])
            if not eligible:
                has_complex = has_complex or torch.is_complex(p)
            params.append(p)
            grads.append(grad)
            exp_avgs.append(moment)
            exp_avg_sqs.append(second)
            steps.append(step)
        impl = explicit or ("fused" if fusable else "torch")
        return params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, has_complex, impl

    @staticmethod
    def _explicit_impl(group: dict[str, Any]) -> str | None:
        """The path the user chose with ``fused``/``foreach``, as torch reads them; None: auto."""
        if group["fused"]:
            return "fused"
        if group["foreach"]:
            return "foreach"
        if group["fused"] is None and group["foreach"] is None:
            return None
        return "forloop"

    def _has_nonfinite_grad(self) -> bool:
        """Whether any gradient holds a NaN or an infinity: one host sync per device."""
        finite: dict[torch.device, list[Tensor]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    finite.setdefault(p.grad.device, []).append(torch.isfinite(p.grad).all())
        return not all(bool(torch.stack(flags).all()) for flags in finite.values())

    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """One optimization step; ``closure`` re-evaluates the model and returns the loss.
        The first step warns once when a ``decay_scale="schedule"`` value looks like a
        PyTorch-convention one (after any ``load_state_dict``, so a resumed run is judged
        by its saved values)."""
        if not getattr(self, "_convention_checked", True):
            self._convention_checked = True
            _warn_if_torch_value(self.param_groups)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.skip_nonfinite and self._has_nonfinite_grad():
            for group in self.param_groups:
                group["nonfinite_skips"] = group.get("nonfinite_skips", 0) + 1
            return loss
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        with torch.set_grad_enabled(bool(self.defaults["differentiable"])):
            for index, group in enumerate(self.param_groups):
                *tensors, has_complex, impl = self._init_group(group, self._explicit_impl(group))
                if not tensors[0]:
                    continue
                wd = self._decay(group, index)
                toward = group["decay_toward"] == "init"
                if wd and (group["cautious"] or toward):
                    # GradScaler hands the fused kernel scaled gradients and a skip flag:
                    # the decay pass skips with the kernel and reads unscaled gradients
                    skipped = found_inf is not None and bool(found_inf.item())
                    if not skipped:
                        params, grads, exp_avgs = tensors[0], tensors[1], tensors[2]
                        if grad_scale is not None and group["cautious"]:
                            grads = [g / grad_scale for g in grads]
                        refs = [self.state[p]["decay_ref"] for p in params] if toward else None
                        decay_variants(params, grads, exp_avgs, float(group["lr"]) * wd,
                                       beta1=group["betas"][0], maximize=group["maximize"],
                                       cautious=group["cautious"], references=refs)  # fmt: skip
                    wd = 0.0
                torch_step(
                    *tensors,
                    lr=group["lr"],
                    weight_decay=wd,
                    betas=group["betas"],
                    eps=group["eps"],
                    amsgrad=group["amsgrad"],
                    maximize=group["maximize"],
                    impl=impl,
                    capturable=group["capturable"],
                    differentiable=group["differentiable"],
                    grad_scale=grad_scale,
                    found_inf=found_inf,
                    has_complex=has_complex,
                )
        return loss


def _convention_message(
    index: int, group: dict[str, Any], mine: dict[str, Any], from_torch: bool
) -> str:
    """The one-line warning for a loaded group whose decay convention is not the receiver's."""
    scale = group["decay_scale"]
    if from_torch:
        origin = "was saved by torch.optim.AdamW (no decay_scale key: PyTorch's convention)"
    else:
        origin = f"was saved with decay_scale={scale!r}"
    values = f"weight_decay={group['weight_decay']:g}"
    if scale in ("schedule", "corrected"):
        values += f", lr_peak={AdamW.lr_peak(group):g}"
    return (
        f"AdamW.load_state_dict: param_groups[{index}] {origin}; it keeps {values} with "
        f"decay_scale={scale!r} instead of this optimizer's decay_scale="
        f"{mine['decay_scale']!r}, so the run continues exactly as saved"
    )


# The state tensors that have the parameter's shape (``step`` is a scalar).
_PER_ELEMENT_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "decay_ref")


def _param_label(opt: Optimizer, group: dict[str, Any], p: Tensor) -> str:
    """``param_groups[g][i]``, with the parameter's name where the group has ``param_names``."""
    g = next(i for i, other in enumerate(opt.param_groups) if other is group)
    i = next(j for j, q in enumerate(group["params"]) if q is p)
    names = group.get("param_names")
    name = f" ({names[i]!r})" if isinstance(names, list) and i < len(names) else ""
    return f"param_groups[{g}]['params'][{i}]{name}"


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, {str(t.dtype).removeprefix('torch.')} on {t.device}"


def _state_mismatch(
    group: dict[str, Any], p: Tensor, key: str, value: Tensor, opt: Optimizer
) -> str:
    """The message for a state tensor that does not fit its parameter."""
    return (
        f"AdamW.step: the state of {_param_label(opt, group, p)} does not fit the parameter: "
        f"{key} has {_describe(value)}, the parameter has {_describe(p)}. The parameter was "
        "replaced or resized after its state was made (or a state saved for another model "
        "was loaded); build a new optimizer for the changed model, or drop this parameter's "
        "state with `del optimizer.state[param]`"
    )


def _check_loaded_state(opt: Optimizer, state_dict: dict[str, Any]) -> None:
    """Refuse a state_dict whose per-element state does not fit the receiving parameters.

    ``torch.optim.Optimizer.load_state_dict`` compares only the number of groups and of
    parameters; a state saved for a layer of another size would load, then overrun the
    fused kernel's buffers or step silently with the wrong moments. Checked before any
    state changes, so a refused load leaves the optimizer as it was. Dtype and device are
    not compared: loading casts floating state to the parameter's (as torch does).
    """
    groups, state = state_dict.get("param_groups"), state_dict.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        raise ValueError(
            "AdamW.load_state_dict: expected a dict with 'param_groups' (a list) and 'state' "
            f"(a dict), got {sorted(map(str, state_dict))[:6]!r}"
        )
    for g, (saved, group) in enumerate(zip(groups, opt.param_groups, strict=False)):
        ids = saved.get("params", []) if isinstance(saved, dict) else []
        for i, (pid, p) in enumerate(zip(ids, group["params"], strict=False)):
            entry = state.get(pid)
            if not isinstance(entry, dict):
                continue
            for key in _PER_ELEMENT_STATE:
                value = entry.get(key)
                if isinstance(value, Tensor) and value.shape != p.shape:
                    names = saved.get("param_names") or group.get("param_names")
                    name = f" ({names[i]!r})" if isinstance(names, list) and i < len(names) else ""
                    raise ValueError(
                        f"AdamW.load_state_dict: the saved state of param_groups[{g}]['params']"
                        f"[{i}]{name} has {key} of shape {tuple(value.shape)}, but the "
                        f"parameter has shape {tuple(p.shape)}: this state was saved for "
                        "another model (a resized layer or head?). Load only the matching "
                        "parts, or start the optimizer afresh"
                    )


def _scalar_dtype() -> torch.dtype:
    """The dtype torch.optim.AdamW gives a CPU step counter outside the fused path."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _check_group(group: dict[str, Any], where: str) -> None:
    """Validate one group's hyperparameters; ``where`` prefixes the argument name."""
    lr = group["lr"]
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(
                f"{where}lr is a tensor of shape {tuple(lr.shape)}: expected 1 element"
            )
        lr = lr.item()
    check_range(f"{where}lr", lr)
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{where}betas={betas!r} is invalid: expected a pair (beta1, beta2)")
    for i, b in enumerate(betas):
        check_range(f"{where}betas[{i}]", float(b), 0.0, 1.0, high_open=True)
    check_range(f"{where}eps", group["eps"])
    check_range(f"{where}weight_decay", group["weight_decay"])
    check_choice(f"{where}decay_scale", group["decay_scale"], DECAY_SCALES)
    check_choice(f"{where}decay_toward", group.get("decay_toward", "zero"), DECAY_TOWARD)
    if not isinstance(group.get("cautious", False), bool):
        raise ValueError(
            f"{where}cautious={group['cautious']!r} is invalid: expected True or False"
        )
    if (group.get("cautious") or group.get("decay_toward") == "init") and group["capturable"]:
        raise ValueError(
            f"{where}cautious and decay_toward='init' work with capturable=False (they decay "
            "in a pass of their own before PyTorch's kernel)"
        )
    if group["decay_scale"] in ("schedule", "corrected"):
        peak = group["lr_peak"] if group.get("lr_peak") is not None else lr
        if not (math.isfinite(float(peak)) and float(peak) > 0):
            raise ValueError(
                f"{where}lr_peak={peak!r} is invalid with decay_scale="
                f"{group['decay_scale']!r}: the decay divides by the peak learning rate, so it "
                "must be > 0; build the optimizer "
                "with the peak lr, or set the group's 'lr_peak' to it"
            )


#: ``decay_scale="schedule"`` values above this, at an lr below :data:`_SMALL_LR`, look like
#: PyTorch-convention values (0.01 to 0.1 are PyTorch's usual ones, 1e-5 to 1e-4 the
#: paper's at lr 1e-3).
_SCHEDULE_LOOKS_TORCH = 1e-3
_SMALL_LR = 1e-2


def _warn_if_torch_value(groups: list[dict[str, Any]]) -> None:
    r"""One ``UserWarning`` when a ``decay_scale="schedule"`` group's weight decay looks
    like a PyTorch-convention value (above 1e-3 at an lr below 1e-2): in that convention
    each step multiplies the weights by :math:`1 - (\eta_t/\eta)\lambda`, so 0.05 takes 5%
    off at every step at the peak lr, where PyTorch's 0.05 takes :math:`0.05\eta`."""
    for group in groups:
        wd, lr = float(group["weight_decay"]), AdamW.lr_peak(group)
        if group["decay_scale"] != "schedule" or wd <= _SCHEDULE_LOOKS_TORCH or lr >= _SMALL_LR:
            continue
        warnings.warn(
            f"weight_decay={wd:g} with decay_scale='schedule' takes {100 * min(wd, 1):.3g}% off "
            f"the weights at every step at the peak lr (it is not multiplied by lr={lr:g}; "
            f"PyTorch's convention would call it {wd / lr:.4g}). If you meant PyTorch's "
            f"{wd:g}, pass decay_scale='lr', or weight_decay={wd * lr:.4g} with 'schedule'.",
            UserWarning,
            stacklevel=4,
        )
        return
