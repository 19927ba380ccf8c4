r"""Kosson et al.'s closed forms for a scale-invariant tensor at equilibrium under AdamW.

"Rotational Equilibrium" (arXiv:2305.17212): the norm settles at
:math:`\|w\| \approx \sqrt{\eta C/(2\lambda)}` and each step turns the weights by
:math:`\sqrt{2\eta\lambda(1-\beta_1)/(1+\beta_1)}` radians (:math:`C` elements,
``weight_decay`` :math:`\lambda` in PyTorch's convention).
"""

from __future__ import annotations

import math

from ._checks import check_lr, check_range

__all__ = ["angular_update", "equilibrium_norm"]


def angular_update(lr: float, weight_decay: float, beta1: float = 0.9) -> float:
    r"""Expected angular update per step at equilibrium, in radians.

    :math:`\sqrt{2\eta\lambda(1-\beta_1)/(1+\beta_1)}` for a scale-invariant tensor
    (``weight_decay`` in PyTorch's convention). Source: Kosson et al., "Rotational
    Equilibrium" (arXiv:2305.17212). Worked number: lr 6e-4, wd 0.1, beta1 0.9 -> 2.5e-3.
    """
    lr_ = check_lr("lr", lr)
    wd = check_range("weight_decay", weight_decay, 0.0)
    b1 = check_range("beta1", beta1, 0.0, 1.0, high_open=True)
    return math.sqrt(2.0 * lr_ * wd * (1.0 - b1) / (1.0 + b1))


def equilibrium_norm(lr: float, weight_decay: float, numel: int = 1) -> float:
    r"""Equilibrium norm of a scale-invariant tensor with ``numel`` elements under AdamW.

    :math:`\|w\| \approx \sqrt{\eta C/(2\lambda)}` (``weight_decay`` in PyTorch's convention;
    ``inf`` without decay). With ``numel=1`` this is the root-mean-square weight.
    Source: Kosson et al. (arXiv:2305.17212).
    """
    lr_ = check_lr("lr", lr)
    wd = check_range("weight_decay", weight_decay, 0.0)
    c = check_range("numel", numel, 0.0, low_open=True)
    return math.inf if wd == 0 else math.sqrt(lr_ * c / (2.0 * wd))
