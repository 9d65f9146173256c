"""Adam and AdamW, as PyTorch (amsgrad off): bias-corrected moments, coupled or decoupled weight decay.

The update itself is in ``minialex/kernels/adam.py``; this module keeps the
parameter groups, each parameter's moments and step count, and saves and
restores them (the base class ``Optimizer`` in ``sgd.py`` does the checks).
"""

import numbers

from .. import backend
from ..autograd import _on_device_of
from ..kernels.adam import adam_update
from .sgd import Optimizer, check_number


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0), PyTorch's update.

        g = grad + weight_decay * p;  t += 1
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g * g
        p -= lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    Each parameter has its own step count t, which advances only on steps
    where it has a gradient. State per parameter: "step" (an int),
    "exp_avg" (m) and "exp_avg_sq" (v), PyTorch's names.
    """

    #: AdamW sets this: decay p directly instead of adding weight_decay * p to the gradient.
    decoupled_weight_decay = False
    count_state = ("step",)
    state_names = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def _check_hyper_parameters(self, group, where):
        group["lr"] = check_number(where, "lr", group["lr"])
        betas = group["betas"]
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            shown = repr(betas) if isinstance(betas, numbers.Number | str | tuple | list) else type(betas).__name__
            raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got {shown}")
        group["betas"] = tuple(
            check_number(where, f"betas[{i}]", beta, 0.0, 1.0, open_maximum=True) for i, beta in enumerate(betas)
        )
        group["eps"] = check_number(where, "eps", group["eps"])
        group["weight_decay"] = check_number(where, "weight_decay", group["weight_decay"])
        return group

    def step(self):
        """Update every parameter that has a gradient, in place; the others keep their state and step count."""
        owner = type(self).__name__
        for index, group, p in self._indexed_params():
            if p.grad is None:
                continue
            if p.grad.shape != p.shape:
                raise ValueError(f"{owner}: parameter {index} has shape {p.shape} but its grad {p.grad.shape}")
            state = self.state.get(index)
            if state is None:
                xp = backend.get_array_module(p.data)
                with _on_device_of(p.data):
                    state = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
                self.state[index] = state
            beta1, beta2 = group["betas"]
            adam_update(
                p.data,
                p.grad.data,
                state["exp_avg"],
                state["exp_avg_sq"],
                # The CUDA update is one fused kernel that needs no scratch array.
                None if backend.is_cuda_array(p.data) else self._scratch_for(p),
                state["step"] + 1,
                group["lr"],
                beta1,
                beta2,
                group["eps"],
                group["weight_decay"],
                self.decoupled_weight_decay,
            )
            state["step"] += 1
            p._bump_version()  # p.data changed in place: a graph that saved p must not reuse it


class AdamW(Adam):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2): Adam with decoupled decay.

        p *= 1 - lr * weight_decay;   then Adam's step with g = grad

    (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"): the decay
    no longer passes through m / sqrt(v), so every weight shrinks by the same
    factor, however large its gradients.
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
