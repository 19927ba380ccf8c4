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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Step ``t`` (1-based) of Algorithm 2 on one array; returns ``(theta, m, v, v_max)``.

    Pass ``v_max`` (zeros at the start) for the AMSGrad variant; its new value is returned.
    """
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * grad * grad
    m_hat = m / (1.0 - beta1**t)
    if v_max is not None:
        v_max = np.maximum(v_max, v)
        v_hat = v_max / (1.0 - beta2**t)
    else:
        v_hat = v / (1.0 - beta2**t)
    theta = theta - eta * (alpha * m_hat / (np.sqrt(v_hat) + eps) + weight_decay * theta)
    return theta, m, v, v_max


class AdamWReference:
    """Algorithm 2 over a list of arrays, keeping the moments between steps.

    ``weight_decay`` is the paper's lambda (scaled by ``eta`` only). ``step(grads, eta)``
    updates ``self.params`` and returns them.
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
    ) -> None:
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.v_max = [np.zeros_like(p) if amsgrad else None for p in self.params]
        self.alpha, self.betas, self.eps, self.weight_decay = alpha, betas, eps, weight_decay
        self.t = 0

    def step(self, grads: Sequence[np.ndarray], eta: float = 1.0) -> list[np.ndarray]:
        """Apply one step with schedule multiplier ``eta`` to every array."""
        self.t += 1
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
                weight_decay=self.weight_decay,
                v_max=self.v_max[i],
            )
        return self.params
