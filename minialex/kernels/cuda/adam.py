"""The Adam / AdamW update as one fused CuPy ElementwiseKernel per parameter, in place.

PyTorch's rule (amsgrad off), the same as ``minialex.kernels.adam``:

    g      = grad + weight_decay * p          (Adam)   or   p *= 1 - lr * weight_decay   (AdamW)
    m     += (1 - beta1) * (g - m)
    v      = v * beta2 + (1 - beta2) * (g * g)
    denom  = sqrt(v) / sqrt(1 - beta2**t) + eps
    p     -= (lr / (1 - beta1**t)) * (m / denom)

The generic update makes about a dozen passes over each parameter (and needs
a scratch array); here one thread per element reads p, grad, m and v once and
writes p, m and v once. ``param``, ``exp_avg`` and ``exp_avg_sq`` are passed
as the kernel's OUTPUT arguments, so CuPy writes into them instead of
allocating: the update is in place. The step size and sqrt of the second bias
correction are computed once on the host, in double precision, as the generic
path does, and passed as scalars of the parameter's dtype.
"""

import functools

import numpy as np

from . import cupy


@functools.lru_cache(maxsize=None)
def _kernel():
    return cupy().ElementwiseKernel(
        "T grad, T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T weight_decay, T decay_factor, "
        "bool decoupled, T step_size, T bias_correction2_sqrt",
        "T param, T exp_avg, T exp_avg_sq",
        """
        T g = grad;
        if (decoupled) {
            param *= decay_factor;
        } else if (weight_decay != T(0)) {
            g += weight_decay * param;
        }
        exp_avg += one_minus_beta1 * (g - exp_avg);
        exp_avg_sq = exp_avg_sq * beta2 + one_minus_beta2 * (g * g);
        const T denom = sqrt(exp_avg_sq) / bias_correction2_sqrt + eps;
        param -= step_size * (exp_avg / denom);
        """,
        "minialex_adam",
    )


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                decoupled_weight_decay, step_size, bias_correction2_sqrt):
    """Update the CuPy ``param``, ``exp_avg`` and ``exp_avg_sq`` in place (one kernel launch)."""
    scalar = param.dtype.type
    decoupled = bool(decoupled_weight_decay)
    # With decoupled decay the gradient gets no decay term, and without it p is not rescaled.
    coupled_decay = 0.0 if decoupled else weight_decay
    decay_factor = 1 - lr * weight_decay if decoupled else 1.0
    with param.device:
        _kernel()(grad, scalar(1 - beta1), scalar(beta2), scalar(1 - beta2), scalar(eps),
                  scalar(coupled_decay), scalar(decay_factor), np.bool_(decoupled),
                  scalar(step_size), scalar(bias_correction2_sqrt),
                  param, exp_avg, exp_avg_sq)
