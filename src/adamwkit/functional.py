r"""The AdamW update, written once.

One step over lists of tensors (parameters, gradients, moments, step counters), in the
order of ``torch.optim.AdamW``:

.. math::

    \theta &\leftarrow \theta\,(1 - \eta_t \lambda_{\mathrm{eff}}) \\
    m &\leftarrow \beta_1 m + (1-\beta_1) g, \qquad
    v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
    \theta &\leftarrow \theta - \eta_t\,
        \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}

where :math:`\eta_t` is the learning rate of this step and :math:`\lambda_{\mathrm{eff}}`
is the weight decay in PyTorch's convention (see :func:`effective_weight_decay`).

Scalar hyperparameters go to PyTorch's own kernels (fused, foreach or for-loop), so the
result is ``torch.optim.AdamW``'s to the bit on the same path. A *population* is P models
stacked along dim 0 of every tensor; ``lr``, ``weight_decay`` and ``lr_peak`` may then be
1-D tensors of length P, one entry per member, and member ``i`` gets exactly the update a
standalone run with its own values would get.

Sources: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019
(arXiv:1711.05101), Algorithm 2; PyTorch ``torch/optim/adam.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
from torch import Tensor
from torch.optim.adam import adam as _torch_adam

from ._checks import check_choice, check_range
from ._constants import OPTIMIZER_DECAY_SCALES

DECAY_SCALES = OPTIMIZER_DECAY_SCALES

__all__ = [
    "DECAY_SCALES",
    "IMPLS",
    "DecayScale",
    "Impl",
    "adamw_step",
    "decay_variants",
    "default_impl",
    "effective_weight_decay",
]

DecayScale = Literal["lr", "schedule", "corrected"]
Impl = Literal["auto", "fused", "foreach", "forloop"]
IMPLS: tuple[str, ...] = ("auto", "fused", "foreach", "forloop")

# The fused kernel of CPU and CUDA devices handles these dtypes with PyTorch's math.
_FUSED_AUTO_DTYPES = (torch.float32, torch.float64)
# In a fused population step, a tensor whose member slices hold at least this many
# elements goes through the kernel once per member, with that member's decay folded in
# (a kernel call per slice costs about as much as decaying ~8k elements in a separate
# pass); smaller tensors are decayed in one extra pass, then take a single kernel call.
_PER_MEMBER_MIN_NUMEL = 1 << 13


def effective_weight_decay(
    weight_decay: float | Tensor,
    decay_scale: DecayScale = "lr",
    lr_peak: float | Tensor | None = None,
    lr: float | Tensor | None = None,
) -> float | Tensor:
    r"""Weight decay in PyTorch's convention, where each step multiplies by ``1 - lr_t * wd``.

    - ``decay_scale="lr"`` (PyTorch, optax, Keras): :math:`\lambda_{\mathrm{eff}} = \lambda`,
      so the step decays by :math:`\eta_t\lambda` and the decay grows with the learning rate.
    - ``decay_scale="schedule"`` (Loshchilov & Hutter 2019, Algorithm 2, line 12):
      :math:`\theta \leftarrow \theta - \eta_t\lambda\theta` with :math:`\eta_t` the schedule
      multiplier :math:`\mathrm{lr}_t / \mathrm{lr}_{\mathrm{peak}}`. Written in PyTorch's
      form that is :math:`\lambda_{\mathrm{eff}} = \lambda / \mathrm{lr}_{\mathrm{peak}}`,
      which is why one kernel serves both scales.
    - ``decay_scale="corrected"`` (AdamC, Defazio 2025, arXiv:2506.02285; timm's
      ``corrected_weight_decay``): the step decays by
      :math:`\lambda\,\mathrm{lr}_t^2/\mathrm{lr}_{\mathrm{peak}}`, so
      :math:`\lambda_{\mathrm{eff}} = \lambda\,\mathrm{lr}_t/\mathrm{lr}_{\mathrm{peak}}`:
      PyTorch's decay times the schedule multiplier. Needs this step's ``lr``.

    ``weight_decay``, ``lr_peak`` and ``lr`` may be floats or 1-D population tensors.
    """
    check_choice("decay_scale", decay_scale, DECAY_SCALES)
    if decay_scale == "lr":
        return weight_decay
    if lr_peak is None:
        raise ValueError(
            f"lr_peak=None is invalid with decay_scale={decay_scale!r}: pass the peak lr"
        )
    if isinstance(lr_peak, Tensor):
        if not bool((lr_peak > 0).all()) or not bool(torch.isfinite(lr_peak).all()):
            raise ValueError(
                f"lr_peak={lr_peak.tolist()!r} is invalid: every entry must be a finite number > 0"
            )
        lr_peak = lr_peak.to(torch.float64)
    else:
        lr_peak = check_range("lr_peak", lr_peak, 0.0, low_open=True)
    if decay_scale == "schedule":
        return weight_decay / lr_peak
    if lr is None:
        raise ValueError("lr=None is invalid with decay_scale='corrected': pass this step's lr")
    if isinstance(lr, Tensor):
        lr = lr.detach().to("cpu", torch.float64) if lr.numel() > 1 else float(lr)
    return weight_decay * lr / lr_peak


def fused_eligible(p: Tensor, grad: Tensor) -> bool:
    """Whether ``"auto"`` may send this parameter and its gradient to the fused kernel.

    The fused CPU kernel assumes the gradient has the parameter's memory layout; a
    gradient with other strides goes to PyTorch's default path, which handles it.
    """
    return (p.is_cpu or p.is_cuda) and p.dtype in _FUSED_AUTO_DTYPES and grad.stride() == p.stride()


def default_impl(
    params: Sequence[Tensor], grads: Sequence[Tensor], differentiable: bool = False
) -> str:
    """The fastest path that computes PyTorch's math, for these tensors.

    ``"fused"`` when every tensor is float32 or float64 on a CPU or CUDA device (on CPU the
    fused kernel ran about 9x faster than foreach on GPT-2-small shapes); otherwise
    ``"torch"``, meaning whatever ``torch.optim.AdamW`` itself picks (for bfloat16 and
    float16 that keeps the results identical to PyTorch's default path, whose arithmetic
    differs from the fused kernel's float32 internals).
    """
    if differentiable or not params:
        return "torch"
    return "fused" if all(map(fused_eligible, params, grads)) else "torch"


def _is_population(x: object) -> bool:
    """A 1-D tensor of several entries; one entry acts as a scalar, as in PyTorch."""
    return isinstance(x, Tensor) and x.dim() == 1 and x.numel() > 1


def _check_hyper(lr, betas, eps) -> None:
    if not isinstance(lr, Tensor):
        check_range("lr", lr)
    check_range("betas[0]", betas[0], 0.0, 1.0, high_open=True)
    check_range("betas[1]", betas[1], 0.0, 1.0, high_open=True)
    check_range("eps", eps)


def adamw_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    *,
    lr: float | Tensor,
    weight_decay: float | Tensor,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    max_exp_avg_sqs: Sequence[Tensor] | None = None,
    amsgrad: bool = False,
    maximize: bool = False,
    decay_scale: DecayScale = "lr",
    lr_peak: float | Tensor | None = None,
    impl: Impl = "auto",
    capturable: bool = False,
    differentiable: bool = False,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    cautious: bool = False,
    references: Sequence[Tensor] | None = None,
) -> None:
    r"""One AdamW step, in place, over lists of tensors (see the module docstring for the math).

    Args:
        params, grads, exp_avgs, exp_avg_sqs, state_steps: equal-length lists; each step
            counter is a 0-d tensor laid out as ``torch.optim.AdamW`` keeps it.
        lr: learning rate of this step, a float, a 0-d tensor, or a 1-D tensor of length P
            (one per population member along dim 0 of every tensor).
        weight_decay: :math:`\lambda`, a float or a 1-D tensor of length P; its meaning
            is set by ``decay_scale`` (see :func:`effective_weight_decay`).
        decay_scale: ``"lr"`` (PyTorch), ``"schedule"`` (Loshchilov & Hutter) or
            ``"corrected"`` (AdamC).
        lr_peak: the peak learning rate, needed by ``decay_scale="schedule"`` and
            ``"corrected"``; float or 1-D tensor of length P.
        max_exp_avg_sqs: the AMSGrad running maxima, required when ``amsgrad=True``.
        impl: ``"auto"`` (fused for float32/float64 on CPU/CUDA, else PyTorch's default),
            ``"fused"``, ``"foreach"`` or ``"forloop"``.
        capturable, differentiable, grad_scale, found_inf: as in ``torch.optim.AdamW``
            (scalar hyperparameters only).
        cautious: decay only the coordinates where this step's update :math:`u` (the
            Adam direction, whose sign is that of the new first moment) and the weight
            agree in sign (Cautious Weight Decay, Chen et al. 2025, arXiv:2510.12402):
            :math:`\theta \leftarrow \theta - \eta_t\lambda_{\mathrm{eff}}\,
            \mathbb{I}(u\,\theta \ge 0)\,\theta`, then the Adam update.
        references: one tensor per parameter to decay toward instead of zero
            (:math:`\theta \leftarrow \theta - \eta_t\lambda_{\mathrm{eff}}(\theta -
            \theta_0)`, decoupled L2-SP for fine-tuning: Xuhong et al., ICML 2018); with
            ``cautious`` the sign test uses :math:`\theta - \theta_0`.

    The decay variants decay in one pass before the kernel, which then runs with zero
    decay: the same order as ``torch.optim.AdamW`` (decay the weights, then the update).

    A population step (any of ``lr``, ``weight_decay``, ``lr_peak`` a 1-D tensor of more
    than one entry) runs ``impl`` ``"fused"`` or ``"forloop"`` and gives member ``i`` the
    result of a standalone step with ``lr[i]``, ``weight_decay[i]``, ``lr_peak[i]``: to the
    bit for tensors whose member slices hold at least 8,192 elements on the fused path
    (one kernel call per member), else to within about one rounding per step.
    """
    check_choice("impl", impl, IMPLS)
    n = len(params)
    for name, seq in (
        ("grads", grads),
        ("exp_avgs", exp_avgs),
        ("exp_avg_sqs", exp_avg_sqs),
        ("state_steps", state_steps),
    ):
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} tensors but params has {n}: pass one each")
    if amsgrad and (max_exp_avg_sqs is None or len(max_exp_avg_sqs) != n):
        raise ValueError("amsgrad=True needs max_exp_avg_sqs with one tensor per parameter")
    if not amsgrad:
        max_exp_avg_sqs = None
    _check_hyper(lr, betas, eps)
    if not _is_population(weight_decay):
        check_range("weight_decay", weight_decay)
    if references is not None:
        references = list(references)
        if len(references) != n:
            raise ValueError(
                f"references has {len(references)} tensors but params has {n}: pass one each"
            )
        for i, (p, r) in enumerate(zip(params, references, strict=True)):
            if r.shape != p.shape or r.device != p.device or r.dtype != p.dtype:
                raise ValueError(
                    f"references[{i}] is {tuple(r.shape)} {r.dtype} on {r.device}: expected "
                    f"the parameter's {tuple(p.shape)} {p.dtype} on {p.device}"
                )
    variants = bool(cautious) or references is not None
    if variants and capturable:
        raise ValueError("cautious and references work with capturable=False")
    if n == 0:
        return

    if any(_is_population(x) for x in (lr, weight_decay, lr_peak)):
        if capturable or differentiable or grad_scale is not None or found_inf is not None:
            raise ValueError(
                "population tensors for lr/weight_decay/lr_peak work with capturable=False, "
                "differentiable=False and no grad_scale/found_inf"
            )
        _population_step(
            list(params),
            list(grads),
            list(exp_avgs),
            list(exp_avg_sqs),
            list(max_exp_avg_sqs or []),
            list(state_steps),
            lr=lr,
            weight_decay=weight_decay,
            lr_peak=lr_peak,
            decay_scale=decay_scale,
            betas=betas,
            eps=eps,
            amsgrad=amsgrad,
            maximize=maximize,
            impl=impl,
            cautious=cautious,
            references=references,
        )
        return

    if impl == "auto":
        impl = default_impl(params, grads, differentiable)  # type: ignore[assignment]
    wd = float(effective_weight_decay(weight_decay, decay_scale, lr_peak, lr))
    if variants and wd:
        decay_variants(list(params), list(grads), list(exp_avgs), float(lr) * wd, beta1=betas[0],
                       maximize=maximize, cautious=cautious, references=references)  # fmt: skip
        wd = 0.0
    torch_step(
        list(params),
        list(grads),
        list(exp_avgs),
        list(exp_avg_sqs),
        list(max_exp_avg_sqs or []),
        list(state_steps),
        lr=lr,
        weight_decay=wd,
        betas=betas,
        eps=eps,
        amsgrad=amsgrad,
        maximize=maximize,
        impl=impl,
        capturable=capturable,
        differentiable=differentiable,
        grad_scale=grad_scale,
        found_inf=found_inf,
        has_complex=any(torch.is_complex(p) for p in params),
    )


def decay_variants(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    rate: float | Tensor,
    *,
    beta1: float,
    maximize: bool,
    cautious: bool,
    references: Sequence[Tensor] | None,
) -> None:
    """This step's decoupled decay, in place, before the moments move:
    ``p -= rate * mask * (p - ref)``; ``rate`` is lr_t times the weight decay in PyTorch's
    convention (a float, or a 1-D tensor of per-member rates for a population), ``ref`` zero
    without ``references``, and ``mask`` with ``cautious`` whether the step's update, of
    the sign of ``beta1 * m + (1 - beta1) * g``, agrees in sign with ``p - ref``."""
    if cautious and any(torch.is_complex(p) for p in params):
        raise ValueError("cautious=True takes real parameters: the sign test has no complex form")
    for i, p in enumerate(params):
        away = p if references is None else p - references[i]
        if cautious:
            g = -grads[i] if maximize else grads[i]
            m_next = exp_avgs[i] * beta1 + g * (1 - beta1)
            away = away * (m_next * away >= 0)
        step = _member_view(rate, p) if isinstance(rate, Tensor) else rate
        p.sub_(away * step)


_TORCH_FLAGS = {
    "fused": (True, False),
    "foreach": (False, True),
    "forloop": (False, False),
    "torch": (None, None),
}


def torch_step(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    amsgrad: bool,
    maximize: bool,
    impl: str,
    capturable: bool,
    differentiable: bool,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    has_complex: bool,
) -> None:
    """PyTorch's AdamW kernels with ``weight_decay`` already in PyTorch's convention.

    No validation: :func:`adamw_step` and :class:`adamwkit.AdamW` check their inputs and
    call this on every step. ``impl`` is ``"fused"``, ``"foreach"``, ``"forloop"`` or
    ``"torch"`` (PyTorch's own default choice).
    """
    fused, foreach = _TORCH_FLAGS[impl]
    _torch_adam(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps,
        foreach=foreach,
        capturable=capturable,
        differentiable=differentiable,
        fused=fused,
        grad_scale=grad_scale,
        found_inf=found_inf,
        has_complex=has_complex,
        decoupled_weight_decay=True,
        amsgrad=amsgrad,
        beta1=betas[0],
        beta2=betas[1],
        lr=lr,
        weight_decay=weight_decay,
        eps=eps,
        maximize=maximize,
    )


def _population_vector(name: str, value: float | Tensor, size: int) -> Tensor:
    """A float64 CPU vector of length ``size`` from a float or a 1-D tensor."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, Tensor):
        if value.dim() != 1 or value.numel() != size:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}: a population tensor must be 1-D "
                f"with length {size}, the size of dim 0 of every parameter"
            )
        vec = value.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(vec).all()) or bool((vec < 0).any()):
            raise ValueError(f"{name}={vec.tolist()!r} is invalid: every entry must be finite >= 0")
        return vec
    return torch.full((size,), float(value), dtype=torch.float64)


def _population_step(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    weight_decay: float | Tensor,
    lr_peak: float | Tensor | None,
    decay_scale: DecayScale,
    betas: tuple[float, float],
    eps: float,
    amsgrad: bool,
    maximize: bool,
    impl: str,
    cautious: bool = False,
    references: Sequence[Tensor] | None = None,
) -> None:
    sizes = {int(p.shape[0]) if p.dim() > 0 else -1 for p in params}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            "a population step needs every parameter to share the size of dim 0 (the "
            f"members); got dim-0 sizes {sorted(sizes)}"
        )
    size = sizes.pop()
    lrs = _population_vector("lr", lr, size)
    wds = _population_vector("weight_decay", weight_decay, size)
    peaks = None if lr_peak is None else _population_vector("lr_peak", lr_peak, size)
    wds = cast(Tensor, effective_weight_decay(wds, decay_scale, peaks, lrs))  # tensors in
    if any(torch.is_complex(p) for p in params):
        raise ValueError("population steps take real tensors; got a complex parameter")
    if impl == "foreach":
        raise ValueError("impl='foreach' takes scalar hyperparameters; use 'fused' or 'forloop'")
    contiguous = all(
        t.is_contiguous()
        for ts in (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs)
        for t in ts
    )
    if impl == "auto":
        fusable = contiguous and default_impl(params, grads) == "fused"
        impl = "fused" if fusable else "forloop"
    if impl == "fused" and not contiguous:
        raise ValueError(
            "impl='fused' needs contiguous population tensors (parameters, gradients and "
            "moments); use impl='forloop' or 'auto'"
        )
    if (cautious or references is not None) and bool((wds > 0).any()):
        decay_variants(params, grads, exp_avgs, lrs * wds, beta1=betas[0], maximize=maximize,
                       cautious=cautious, references=references)  # fmt: skip
        wds = torch.zeros_like(wds)
    step = _fused_population if impl == "fused" else _forloop_population
    step(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps,
        lrs=lrs,
        wds=wds,
        betas=betas,
        eps=eps,
        amsgrad=amsgrad,
        maximize=maximize,
    )


def _member_view(vec: Tensor, like: Tensor) -> Tensor:
    """``vec`` shaped to broadcast along dim 0 of ``like``, in its compute precision."""
    dtype = like.dtype if like.dtype == torch.float64 else torch.float32
    return vec.to(device=like.device, dtype=dtype).view((-1,) + (1,) * (like.dim() - 1))


def _to_device(vec: Tensor, device: torch.device) -> Tensor:
    """A small CPU vector on ``device``; to a GPU through pinned memory, so the copy does not
    make the host wait for the GPU."""
    if device.type != "cuda":
        return vec.to(device)
    return vec.pin_memory().to(device, non_blocking=True)


def _fused_population(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    **kw: Any,
) -> None:
    """PyTorch's fused kernel: once per member for large tensors (decay folded in), and
    one decay pass plus one call for all members of the small ones."""
    lrs, wds = kw["lrs"], kw["wds"]
    size = lrs.numel()
    common = {
        "beta1": kw["betas"][0],
        "beta2": kw["betas"][1],
        "eps": kw["eps"],
        "amsgrad": kw["amsgrad"],
        "maximize": kw["maximize"],
    }
    for i, s in enumerate(steps):
        if s.dtype != torch.float32 or s.device != params[i].device:
            raise ValueError(
                "impl='fused' needs float32 step counters on the parameters' device, as "
                "torch.optim.AdamW(fused=True) keeps them"
            )
    torch._foreach_add_(steps, 1)
    lr_list, wd_list = lrs.tolist(), wds.tolist()
    shared_lr = len(set(lr_list)) == 1
    big: list[int] = []
    small: list[int] = []
    for i, p in enumerate(params):
        slice_numel = p.numel() // size
        (big if not shared_lr or slice_numel >= _PER_MEMBER_MIN_NUMEL else small).append(i)
    if big:
        for m in range(size):
            torch._fused_adamw_(
                [params[i][m] for i in big],
                [grads[i][m] for i in big],
                [exp_avgs[i][m] for i in big],
                [exp_avg_sqs[i][m] for i in big],
                [max_exp_avg_sqs[i][m] for i in big] if max_exp_avg_sqs else [],
                [steps[i] for i in big],
                lr=lr_list[m],
                weight_decay=wd_list[m],
                **common,
            )
    if small:
        if any(wd_list):
            factor = 1.0 - lrs * wds
            on_device: dict[tuple[torch.device, torch.dtype], Tensor] = {}
            for i in small:
                p = params[i]
                dtype = p.dtype if p.dtype == torch.float64 else torch.float32
                key = (p.device, dtype)
                if key not in on_device:  # one asynchronous copy per device, not per tensor
                    on_device[key] = _to_device(factor.to(dtype), p.device)
                p.mul_(on_device[key].view((-1,) + (1,) * (p.dim() - 1)))
        torch._fused_adamw_(
            [params[i] for i in small],
            [grads[i] for i in small],
            [exp_avgs[i] for i in small],
            [exp_avg_sqs[i] for i in small],
            [max_exp_avg_sqs[i] for i in small] if max_exp_avg_sqs else [],
            [steps[i] for i in small],
            lr=lr_list[0],
            weight_decay=0.0,
            **common,
        )


def _forloop_population(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    **kw: Any,
) -> None:
    """The per-tensor path of ``torch.optim.AdamW`` with per-member lr and decay."""
    beta1, beta2 = kw["betas"]
    lrs, wds, eps = kw["lrs"], kw["wds"], kw["eps"]
    factor = 1.0 - lrs * wds
    for i, p in enumerate(params):
        g = -grads[i] if kw["maximize"] else grads[i]
        m, v, step_t = exp_avgs[i], exp_avg_sqs[i], steps[i]
        step_t += 1
        p.mul_(_member_view(factor, p))
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        t = float(step_t)
        bias_correction1 = 1 - beta1**t
        bias_correction2_sqrt = (1 - beta2**t) ** 0.5
        if kw["amsgrad"]:
            torch.maximum(max_exp_avg_sqs[i], v, out=max_exp_avg_sqs[i])
            v = max_exp_avg_sqs[i]
        denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
        step_size = _member_view(lrs / bias_correction1, p)
        p.addcmul_(m / denom, step_size, value=-1)
