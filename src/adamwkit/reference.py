r"""NumPy reference of AdamW: Algorithm 2 of Loshchilov & Hutter (ICLR 2019).

The specification and the test oracle, written to be read next to the paper::

    t <- t + 1
    g_t   <- grad f_t(theta_{t-1})
    m_t   <- beta1 m_{t-1} + (1 - beta1) g_t
    v_t   <- beta2 v_{t-1} + (1 - beta2) g_t^2
    mhat  <- m_t / (1 - beta1^t)
    vhat  <- v_t / (1 - beta2^t)           (AMSGrad: vhat <- max_{s<=t} v_s / (1 - beta2^t))
    eta_t <- SetScheduleMultiplier(t)
    theta_t <- theta_{t-1} - eta_t (alpha mhat / (sqrt(vhat) + eps) + lambda theta_{t-1})

``alpha`` is the (peak) learning rate and ``eta_t`` the schedule multiplier; the decay
``lambda`` is multiplied by ``eta_t`` but not by ``alpha``. PyTorch's convention
(``decay_scale="lr"``) is the same update with ``lambda = alpha * weight_decay``.

The decay variants change only the decay term ``eta_t lambda theta_{t-1}``:

- AdamC (``decay_scale="corrected"``, Defazio 2025, arXiv:2506.02285): the term is
  ``eta_t^2 alpha wd theta_{t-1}`` (``decay_multiplier=eta_t**2``, ``lambda = alpha wd``);
- toward a reference ``theta_0`` (decoupled L2-SP): ``theta_{t-1} - theta_0`` replaces
  ``theta_{t-1}``;
- cautious (Chen et al. 2025, arXiv:2510.12402, Algorithm 1): the term is multiplied by
  ``I(u_t (theta_{t-1} - theta_0) >= 0)``, ``u_t = mhat / (sqrt(vhat) + eps)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["AdamWReference", "adamw_reference_step"]


def adamw_reference_step(
    theta: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    t: int,
    *,
    alpha: float,
    eta: float = 1.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    v_max: np.ndarray | None = None,
    decay_multiplier: float | None = None,
    reference: np.ndarray | None = None,
    cautious: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Step ``t`` (1-based) of Algorithm 2 on one array; returns ``(theta, m, v, v_max)``.

    Pass ``v_max`` (zeros at the start) for the AMSGrad variant; its new value is returned.
    ``decay_multiplier`` multiplies ``weight_decay`` in place of ``eta``; ``reference`` and
    ``cautious`` are the variants of the module's docstring.
    """
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * grad * grad
    m_hat = m / (1.0 - beta1**t)
    if v_max is not None:
        v_max = np.maximum(v_max, v)
        v_hat = v_max / (1.0 - beta2**t)
    else:
        v_hat = v / (1.0 - beta2**t)
    u = m_hat / (np.sqrt(v_hat) + eps)
    away = theta if reference is None else theta - reference
    if cautious:
        away = away * (u * away >= 0)
    rate = eta if decay_multiplier is None else decay_multiplier
    theta = theta - eta * alpha * u - rate * weight_decay * away
    return theta, m, v, v_max


class AdamWReference:
    """Algorithm 2 over a list of arrays, keeping the moments between steps.

    ``weight_decay`` is the paper's lambda (scaled by ``eta`` only). ``step(grads, eta)``
    updates ``self.params`` and returns them; ``step(..., weight_decay=...)`` changes lambda
    from that step on (a weight-decay schedule). ``corrected=True`` makes the decay term
    ``eta**2 * alpha * weight_decay`` (AdamC, ``weight_decay`` in PyTorch's units);
    ``decay_toward="init"`` decays toward the first parameters; ``cautious=True`` masks it.
    """

    def __init__(
        self,
        params: Sequence[np.ndarray],
        *,
        alpha: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        corrected: bool = False,
        cautious: bool = False,
        decay_toward: str = "zero",
    ) -> None:
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.refs = [p.copy() for p in self.params] if decay_toward == "init" else None
        self.corrected, self.cautious = corrected, cautious
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.v_max = [np.zeros_like(p) if amsgrad else None for p in self.params]
        self.alpha, self.betas, self.eps, self.weight_decay = alpha, betas, eps, weight_decay
        self.t = 0

    def step(
        self, grads: Sequence[np.ndarray], eta: float = 1.0, weight_decay: float | None = None
    ) -> list[np.ndarray]:
        """Apply one step with schedule multiplier ``eta`` to every array."""
        if weight_decay is not None:
            self.weight_decay = weight_decay
        self.t += 1
        lam, mult = self.weight_decay, None
        if self.corrected:
            lam, mult = self.weight_decay * self.alpha, eta * eta
        for i, g in enumerate(grads):
            self.params[i], self.m[i], self.v[i], self.v_max[i] = adamw_reference_step(
                self.params[i],
                np.asarray(g, dtype=np.float64),
                self.m[i],
                self.v[i],
                self.t,
                alpha=self.alpha,
                eta=eta,
                beta1=self.betas[0],
                beta2=self.betas[1],
                eps=self.eps,
                weight_decay=lam,
                v_max=self.v_max[i],
                decay_multiplier=mult,
                reference=None if self.refs is None else self.refs[i],
                cautious=self.cautious,
            )
        return self.params
