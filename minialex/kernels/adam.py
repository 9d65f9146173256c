"""The Adam / AdamW parameter update, in place (PyTorch's form, amsgrad off).

At step t = 1, 2, ... of a parameter p with gradient grad:

    g      = grad + weight_decay * p          (Adam: coupled decay, part of the gradient)
    p      = p * (1 - lr * weight_decay)      (AdamW: decoupled decay, g = grad)
    m      = beta1 * m + (1 - beta1) * g      (first moment,  m = 0 before step 1)
    v      = beta2 * v + (1 - beta2) * g * g  (second moment, v = 0 before step 1)
    m_hat  = m / (1 - beta1**t)               (bias corrections: m and v start at 0)
    v_hat  = v / (1 - beta2**t)
    p     -= lr * m_hat / (sqrt(v_hat) + eps)

computed in PyTorch's order of operations:

    bias_correction1 = 1 - beta1**t;   bias_correction2 = 1 - beta2**t
    m      += (1 - beta1) * (g - m)                          (torch's lerp_)
    v       = v * beta2 + (1 - beta2) * (g * g)
    denom   = sqrt(v) / sqrt(bias_correction2) + eps
    step_size = lr / bias_correction1
    p      -= step_size * (m / denom)

Every pass writes into ``p``, ``m``, ``v`` or a caller-owned ``scratch`` array
of p's shape, so a step makes no parameter-sized temporaries. With coupled
decay ``g`` itself needs the scratch, so it is formed there twice (p does not
change until the last line): once for ``m``, once for ``v``. The scalars (bias
corrections, step size) are Python floats, as in PyTorch.

Rounding differs from PyTorch's CPU kernels in three places, by at most one
rounding each: its lerp switches to ``m = g - (g - m) * beta1`` when
1 - beta1 >= 0.5, its addcmul rounds ``(1 - beta2) * g`` before the second
factor g, and its addcdiv rounds ``step_size * m`` before dividing.
"""

import math

from ..backend import get_array_module
from . import cuda as fast_paths
from .cuda import adam as cuda_adam


def adam_update(param, grad, exp_avg, exp_avg_sq, scratch, step, lr, beta1, beta2, eps,
                weight_decay=0.0, decoupled_weight_decay=False):
    """Take Adam step number ``step`` (1 on the first) in place on param, exp_avg (m) and exp_avg_sq (v).

    param, grad, exp_avg, exp_avg_sq, scratch: arrays of one shape (m and v
    start as zeros); scratch None: a temporary is made (the GPU fast path
    needs none at all). decoupled_weight_decay: AdamW's decay instead of Adam's.
    """
    if step < 1:
        raise ValueError(f"adam_update: step counts from 1, got {step!r}")
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = math.sqrt(bias_correction2)
    if fast_paths.active(param, grad, exp_avg, exp_avg_sq):  # CuPy: one fused ElementwiseKernel
        cuda_adam.adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                              decoupled_weight_decay, step_size, bias_correction2_sqrt)
        return
    xp = get_array_module(param)
    work = xp.empty_like(param) if scratch is None else scratch
    coupled = weight_decay != 0 and not decoupled_weight_decay
    if weight_decay != 0 and decoupled_weight_decay:
        param *= 1 - lr * weight_decay
    # m += (1 - beta1) * (g - m)
    g = _coupled_gradient(xp, param, grad, weight_decay, work) if coupled else grad
    xp.subtract(g, exp_avg, out=work)
    work *= 1 - beta1
    exp_avg += work
    # v = v * beta2 + (1 - beta2) * g * g   (the scratch held g: form it again, p has not changed)
    g = _coupled_gradient(xp, param, grad, weight_decay, work) if coupled else grad
    xp.square(g, out=work)
    work *= 1 - beta2
    exp_avg_sq *= beta2
    exp_avg_sq += work
    # denom = sqrt(v) / sqrt(bias_correction2) + eps
    xp.sqrt(exp_avg_sq, out=work)
    work /= bias_correction2_sqrt
    work += eps
    # p -= step_size * m / denom
    xp.divide(exp_avg, work, out=work)
    work *= step_size
    param -= work


def _coupled_gradient(xp, param, grad, weight_decay, out):
    """Adam's g = grad + weight_decay * p, written into ``out``."""
    xp.multiply(param, weight_decay, out=out)
    out += grad
    return out
