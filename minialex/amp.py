"""Mixed precision: ``autocast`` runs the big products in float16, ``GradScaler`` keeps their gradients alive.

    from minialex import amp

    scaler = amp.GradScaler()
    for images, labels in loader:
        with amp.autocast():                       # conv2d, linear, matmul in float16
            loss = F.cross_entropy(model(images), labels)   # the loss in float32
        optimizer.zero_grad()
        scaler.scale(loss).backward()              # gradients of S * loss
        scaler.step(optimizer)                     # divides them by S; skips the step on inf/NaN
        scaler.update()                            # adapts S

``autocast`` decides, op by op, which dtype an op runs in (PyTorch's op lists,
as far as this engine has the ops): GEMM-based ops in float16, ops whose
precision matters (sums, exp, log, softmax, the loss, LRN) in float32, every
other op in the dtype it is given. The parameters stay float32 ("master
weights"): the cast to float16 is a recorded op, so their gradients come back
in float32.

float16 has a smallest subnormal of about 6e-8: a gradient below it becomes 0.
Loss scaling multiplies the loss by S before the backward pass, so every
gradient is S times larger (the chain rule is linear) and stays representable;
the optimiser then uses grad / S. When S is too large some gradient overflows
to inf: that step is skipped and S halved; after ``growth_interval`` steps
without overflow S is doubled again (PyTorch's ``torch.amp.GradScaler``).
"""

import functools
import math
import numbers
import threading

import numpy as np

from . import backend
from .autograd import Tensor

# --------------------------------------------------------------------------- autocast

# The ops autocast runs in float16 (PyTorch's "lower precision" list): the GEMMs, where
# float16 halves the memory traffic and the GPU's tensor cores do the work.
FLOAT16_OPS = frozenset({"conv2d", "linear", "matmul"})
# The ops autocast runs in float32 (PyTorch's "fp32" list): float16's 11-bit significand
# and its range (largest 65504) are too small for a long sum, an exp or a log.
FLOAT32_OPS = frozenset({"sum", "exp", "log", "pow", "softmax", "log_softmax", "cross_entropy",
                         "local_response_norm"})

# The dtypes autocast accepts. NumPy has no bfloat16, so float16 is the only one.
LOWER_PRECISION_DTYPES = (np.dtype(np.float16),)

# Whether autocast is on is a per-thread setting, like no_grad: a data-loading or
# evaluation thread must not switch the training thread's precision.
_autocast_state = threading.local()


def get_autocast_dtype():
    """The dtype autocast runs GEMMs in for this thread, or None when autocast is off."""
    return getattr(_autocast_state, "dtype", None)


def is_autocast_enabled():
    """True inside an enabled ``autocast`` block in this thread."""
    return get_autocast_dtype() is not None


def autocast_dtype_for(op):
    """The dtype autocast runs ``op`` (a function name of ``minialex.functional``) in, or None.

    None means: leave the inputs as they are (autocast off, or an op on neither list,
    such as relu or max_pool2d, which runs in whatever dtype it is given).
    """
    lower = get_autocast_dtype()
    if lower is None:
        return None
    if op in FLOAT16_OPS:
        return lower
    if op in FLOAT32_OPS:
        return np.dtype(np.float32)
    return None


def _check_autocast_dtype(dtype):
    try:
        checked = np.dtype(dtype)
    except TypeError:
        checked = None
    if checked not in LOWER_PRECISION_DTYPES:
        raise ValueError(
            f"autocast: dtype must be 'float16' (or np.float16), got {dtype!r}; "
            "NumPy has no bfloat16, so float16 is the only lower precision here"
        )
    return checked


class autocast:  # noqa: N801 - PyTorch's name
    """``with autocast():`` runs conv2d, linear and matmul in float16 and the precision-sensitive ops in float32.

    Per thread (like ``no_grad``) and nestable: ``autocast(enabled=False)``
    inside an enabled block switches it off until that inner block ends.
    Also usable as a decorator, ``@autocast()``.
    """

    def __init__(self, dtype="float16", enabled=True):
        self.dtype = _check_autocast_dtype(dtype)
        if not isinstance(enabled, bool | np.bool_):
            raise TypeError(f"autocast: enabled must be True or False, got {enabled!r}")
        self.enabled = bool(enabled)
        # One object may be entered again inside itself: each entry keeps what it replaced.
        self._previous = []

    def __enter__(self):
        self._previous.append(get_autocast_dtype())
        _autocast_state.dtype = self.dtype if self.enabled else None
        return self

    def __exit__(self, *exc_info):
        _autocast_state.dtype = self._previous.pop()
        return False

    def __call__(self, function):
        dtype, enabled = self.dtype, self.enabled

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with autocast(dtype, enabled):  # a fresh block per call: safe in any thread
                return function(*args, **kwargs)

        return wrapper


# --------------------------------------------------------------------------- GradScaler

# Where an optimiser is between two update() calls, as in PyTorch. Its "found_inf" is None
# until unscale_ has checked at least one gradient, then whether any was inf or NaN.
READY, UNSCALED, STEPPED = "ready", "unscaled", "stepped"
STATE_KEYS = ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")


def _float32_scale(owner, name, value):
    """``value`` as the float32 the scale is kept in; ValueError unless it is positive and finite there."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf, refused below
        scale = np.float32(value) if ok else None
    if not ok or not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"{owner}: {name} must be a positive finite number (as a float32), got {value!r}")
    return scale


def _factor(owner, name, value, low, high):
    """``float(value)``; ValueError unless low < value < high (and finite)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low < value < high:
        where = f"> {low:g}" if high == math.inf else f"in ({low:g}, {high:g})"
        raise ValueError(f"{owner}: {name} must be a finite number {where}, got {value!r}")
    return float(value)


def _count(owner, name, value, minimum):
    """``int(value)``; ValueError unless it is an integer (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class GradScaler:
    r"""Dynamic loss scaling, as PyTorch's ``torch.amp.GradScaler``.

    With scale $S$: ``scale(loss)`` gives $S \cdot L$, whose gradients are
    $S \cdot g$; ``unscale_`` multiplies them by $1/S$ (in float32, as PyTorch)
    and notes whether any is inf or NaN; ``step`` then steps the optimiser
    only if none was; ``update`` sets $S \leftarrow S \cdot$ backoff_factor
    after an overflow, and $S \leftarrow S \cdot$ growth_factor after
    growth_interval clean steps in a row. $S$ is a float32, as in PyTorch.

    ``enabled=False`` makes it a pass-through: ``scale`` returns the loss,
    ``step`` just steps, the rest does nothing (one training loop for both).
    """

    def __init__(self, init_scale=65536.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 enabled=True):
        owner = "GradScaler"
        if not isinstance(enabled, bool | np.bool_):
            raise TypeError(f"{owner}: enabled must be True or False, got {enabled!r}")
        self._enabled = bool(enabled)
        self._scale = _float32_scale(owner, "init_scale", init_scale)
        self._growth_factor = _factor(owner, "growth_factor", growth_factor, 1.0, math.inf)
        self._backoff_factor = _factor(owner, "backoff_factor", backoff_factor, 0.0, 1.0)
        self._growth_interval = _count(owner, "growth_interval", growth_interval, 1)
        self._growth_tracker = 0  # clean steps in a row since the scale last changed
        self._per_optimizer = {}  # id(optimizer) -> {"stage": READY | UNSCALED | STEPPED, "found_inf": None | bool}

    def is_enabled(self):
        """False for a pass-through scaler (``enabled=False``)."""
        return self._enabled

    def get_scale(self):
        """The current scale as a Python float (1.0 when disabled)."""
        return float(self._scale) if self._enabled else 1.0

    def scale(self, outputs):
        """``outputs`` times the scale: a Tensor, or a list/tuple of them; unchanged when disabled."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            return outputs * float(self._scale)
        if isinstance(outputs, list | tuple):
            return type(outputs)(self.scale(output) for output in outputs)
        raise TypeError(f"GradScaler.scale: outputs must be a Tensor or a list or tuple of Tensors, "
                        f"got {type(outputs).__name__}")

    def _state_of(self, optimizer):
        return self._per_optimizer.setdefault(id(optimizer), {"stage": READY, "found_inf": None})

    def unscale_(self, optimizer):
        """Multiply the gradients of ``optimizer``'s parameters by 1/scale, in place, once per step.

        Records whether any of them is inf or NaN. Calling it again before
        ``update()`` is a RuntimeError, as in PyTorch.
        """
        if not self._enabled:
            return
        state = self._state_of(optimizer)
        if state["stage"] == UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] == STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        # The reciprocal in float64, rounded once to float32: PyTorch's inv_scale.
        inv_scale = np.float32(1.0 / float(self._scale))
        all_finite = []  # one 0-d flag per gradient, read once at the end: one GPU sync, not one per gradient
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                if grad.dtype == np.float16:
                    raise ValueError(
                        "GradScaler.unscale_: a parameter has a float16 gradient; keep the parameters in "
                        "float32 (autocast casts them to float16 for the products) so that the unscaled "
                        "gradients and the update are float32. Attempting to unscale FP16 gradients."
                    )
                xp = backend.get_array_module(grad)
                all_finite.append(xp.isfinite(grad).all())
                # grad * inv_scale rounded to the grad's dtype, as PyTorch's unscale kernel.
                xp.multiply(grad, inv_scale, out=grad)
                p.grad._bump_version()
        found_inf = None if not all_finite else not all(bool(flag) for flag in all_finite)
        state["found_inf"] = _agree_over_ranks(optimizer, found_inf)
        state["stage"] = UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """``unscale_(optimizer)`` if not done yet, then ``optimizer.step()`` unless a gradient was inf/NaN.

        Returns what ``optimizer.step()`` returned, or None for a skipped step.
        """
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        state = self._state_of(optimizer)
        if state["stage"] == STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] == READY:
            self.unscale_(optimizer)
        if state["found_inf"] is None:
            raise RuntimeError("GradScaler.step: no inf checks were recorded for this optimizer: none of its "
                               "parameters has a gradient (call scaler.scale(loss).backward() first)")
        result = None if state["found_inf"] else optimizer.step(*args, **kwargs)
        state["stage"] = STEPPED
        return result

    def update(self, new_scale=None):
        r"""Adapt the scale after a step (or set it to ``new_scale``), and start the next step.

        Any inf/NaN gradient in this step (of any optimiser): $S \leftarrow S \cdot$
        backoff_factor, tracker $\leftarrow 0$. Otherwise tracker $\leftarrow$
        tracker + 1, and when it reaches growth_interval: $S \leftarrow S \cdot$
        growth_factor (kept only if finite in float32) and tracker $\leftarrow 0$.
        """
        if not self._enabled:
            return
        if new_scale is not None:
            if not isinstance(new_scale, numbers.Real):
                if isinstance(new_scale, Tensor) and new_scale.size == 1 and not new_scale.requires_grad:
                    new_scale = float(new_scale.data.reshape(-1)[0])
            self._scale = _float32_scale("GradScaler.update", "new_scale", new_scale)
        else:
            checked = [state["found_inf"] for state in self._per_optimizer.values() if state["found_inf"] is not None]
            if not checked:
                raise RuntimeError("GradScaler.update: no inf checks were recorded prior to update(); "
                                   "call scaler.step(optimizer) (or scaler.unscale_(optimizer)) first")
            if any(checked):
                # float32 times a Python float (a double), rounded to float32: PyTorch's arithmetic.
                self._scale = np.float32(float(self._scale) * self._backoff_factor)
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    with np.errstate(over="ignore"):  # inf is checked for just below
                        grown = np.float32(float(self._scale) * self._growth_factor)
                    if np.isfinite(grown):  # an overflow to inf would make every later step skip
                        self._scale = grown
                    self._growth_tracker = 0
        self._per_optimizer = {}

    def state_dict(self):
        """{"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}; {} when disabled.

        Plain Python numbers (JSON-able). Take it after ``update()``.
        """
        if not self._enabled:
            return {}
        return {"scale": float(self._scale), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict):
        """Restore a ``state_dict()``; every entry is checked first, so a failed load changes nothing.

        A disabled scaler ignores it, as PyTorch's does.
        """
        if not self._enabled:
            return
        self._commit_load(self._prepare_load(state_dict))

    def _prepare_load(self, state_dict):
        """The checked values of ``state_dict``, without changing the scaler (``load_checkpoint`` uses it)."""
        owner = "GradScaler.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{owner}: expected a dict (from GradScaler.state_dict()), got {type(state_dict).__name__}")
        if not self._enabled:
            return None
        if not state_dict:
            raise RuntimeError(f"{owner}: the state dict is empty, possibly because it was saved from a "
                               "disabled GradScaler")
        missing = [key for key in STATE_KEYS if key not in state_dict]
        unknown = [key for key in state_dict if key not in STATE_KEYS]
        if missing or unknown:
            raise ValueError(f"{owner}: expected exactly the entries {', '.join(STATE_KEYS)}; "
                             f"missing: {', '.join(map(str, missing)) or 'none'}, "
                             f"unknown: {', '.join(map(str, unknown)) or 'none'}")
        interval = _count(owner, "growth_interval", state_dict["growth_interval"], 1)
        tracker = _count(owner, "_growth_tracker", state_dict["_growth_tracker"], 0)
        if tracker >= interval:
            raise ValueError(f"{owner}: _growth_tracker must be below growth_interval ({interval}), got {tracker}; "
                             "update() resets it to 0 when it reaches the interval")
        return {"_scale": _float32_scale(owner, "scale", state_dict["scale"]),
                "_growth_factor": _factor(owner, "growth_factor", state_dict["growth_factor"], 1.0, math.inf),
                "_backoff_factor": _factor(owner, "backoff_factor", state_dict["backoff_factor"], 0.0, 1.0),
                "_growth_interval": interval,
                "_growth_tracker": tracker}

    def _commit_load(self, prepared):
        if prepared is not None:
            self.__dict__.update(prepared)

    def __repr__(self):
        if not self._enabled:
            return "GradScaler(enabled=False)"
        return (f"GradScaler(scale={float(self._scale):g}, growth_factor={self._growth_factor:g}, "
                f"backoff_factor={self._backoff_factor:g}, growth_interval={self._growth_interval}, "
                f"growth_tracker={self._growth_tracker})")


def _agree_over_ranks(optimizer, found_inf):
    """Under data-parallel training, True on every rank when any rank found an inf/NaN.

    A ``DistributedOptimizer`` averages the gradients in its ``step()``: a rank
    whose own gradients are finite would step while another skipped, and the
    models would drift apart. One tiny all-reduce makes the ranks decide alike.
    """
    from . import distributed  # noqa: PLC0415 - only needed with a DistributedOptimizer

    if not isinstance(optimizer, distributed.DistributedOptimizer) or distributed.get_world_size() == 1:
        return found_inf
    flag = np.array([1 if found_inf else 0], dtype=np.int32)  # a rank without gradients (None) found none
    distributed.all_reduce(flag, "max")
    return bool(flag[0])
