"""Learning-rate schedules, as PyTorch's: they set ``group["lr"]`` of an optimiser.

The AlexNet paper divided the rate by 10 whenever the validation error
stopped improving (three times in 90 epochs): ``ReduceLROnPlateau`` does
that; ``StepLR`` is the fixed-interval version; ``CosineAnnealingLR`` lowers
the rate smoothly to a floor, which suits short runs.
"""

import math
import numbers


def _check_optimizer(optimizer):
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(f"a scheduler needs an optimiser with param_groups, got {type(optimizer).__name__}")


class _EpochScheduler:
    """What StepLR and CosineAnnealingLR share: the optimiser, its initial rates, the step count.

    A subclass lists its own settings in ``_SETTINGS`` (name -> type), which
    state_dict saves beside base_lrs, last_epoch and the last rates.
    """

    _SETTINGS = {}

    def __init__(self, optimizer):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        state = {name: getattr(self, name) for name in self._SETTINGS}
        state.update(base_lrs=list(self.base_lrs), last_epoch=self.last_epoch, _last_lr=list(self._last_lr))
        return state

    def load_state_dict(self, state_dict):
        for name, kind in self._SETTINGS.items():
            setattr(self, name, kind(state_dict[name]))
        self.base_lrs = [float(v) for v in state_dict["base_lrs"]]
        self.last_epoch = int(state_dict["last_epoch"])
        self._last_lr = [float(v) for v in state_dict["_last_lr"]]


class StepLR(_EpochScheduler):
    """lr = initial_lr * gamma ** (epoch // step_size); call ``step()`` once an epoch."""

    _SETTINGS = {"step_size": int, "gamma": float}

    def __init__(self, optimizer, step_size, gamma=0.1):
        _check_optimizer(optimizer)
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or gamma <= 0:
            raise ValueError(f"StepLR: gamma must be a positive number, got {gamma!r}")
        super().__init__(optimizer)
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def step(self):
        self.last_epoch += 1
        # PyTorch's chainable form: multiply by gamma at each multiple of step_size,
        # so a rate changed by hand in between is kept and decayed.
        if self.last_epoch % self.step_size == 0:
            for group in self.optimizer.param_groups:
                group["lr"] = group["lr"] * self.gamma
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class CosineAnnealingLR(_EpochScheduler):
    """lr follows half a cosine from initial_lr down to eta_min over T_max steps.

        lr_t = eta_min + (initial_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2

    Call ``step()`` once an epoch, or once a batch with T_max counted in
    batches (a one-epoch run then ends at a small rate). Past T_max the
    cosine goes on, back up, as PyTorch's does. Computed in PyTorch's
    chainable form (each rate from the previous one), so a rate changed by hand
    in between is annealed from where it was set.
    """

    _SETTINGS = {"T_max": int, "eta_min": float}

    def __init__(self, optimizer, T_max, eta_min=0.0):  # noqa: N803 - PyTorch's name
        _check_optimizer(optimizer)
        if isinstance(T_max, bool) or not isinstance(T_max, numbers.Integral) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive int, got {T_max!r}")
        if isinstance(eta_min, bool) or not isinstance(eta_min, numbers.Real) or eta_min < 0:
            raise ValueError(f"CosineAnnealingLR: eta_min must be a non-negative number, got {eta_min!r}")
        super().__init__(optimizer)
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)

    def step(self):
        self.last_epoch += 1
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            lr = group["lr"]
            if (t - 1 - T) % (2 * T) == 0:
                # At the trough the ratio below is 0/0: step up from it instead.
                group["lr"] = lr + (base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
            else:
                group["lr"] = ((1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                               * (lr - eta_min) + eta_min)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class ReduceLROnPlateau:
    """Multiply the rate by ``factor`` when a metric has not improved for ``patience`` epochs.

    Call ``step(metric)`` once an epoch with the validation loss (mode "min")
    or accuracy (mode "max"). "Improved" means better than the best so far by
    more than ``threshold`` (relative, or absolute with threshold_mode="abs").
    After a reduction, ``cooldown`` epochs pass before bad epochs count again;
    the rate never goes below ``min_lr``, and a change smaller than ``eps`` is skipped.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        _check_optimizer(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if not isinstance(factor, numbers.Real) or not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0:
            raise ValueError(f"ReduceLROnPlateau: patience must be a non-negative int, got {patience!r}")
        if isinstance(cooldown, bool) or not isinstance(cooldown, numbers.Integral) or cooldown < 0:
            raise ValueError(f"ReduceLROnPlateau: cooldown must be a non-negative int, got {cooldown!r}")
        groups = optimizer.param_groups
        min_lrs = list(min_lr) if isinstance(min_lr, list | tuple) else [min_lr] * len(groups)
        if len(min_lrs) != len(groups):
            raise ValueError(f"ReduceLROnPlateau: {len(min_lrs)} min_lr values for {len(groups)} parameter groups")
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.min_lrs, self.eps = int(cooldown), [float(v) for v in min_lrs], float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in groups]

    def is_better(self, current, best):
        if self.mode == "min":
            limit = best * (1 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold
            return current < limit
        limit = best * (1 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold
        return current > limit

    def step(self, metrics):
        current = float(metrics.item() if hasattr(metrics, "item") else metrics)
        if math.isnan(current):
            raise ValueError("ReduceLROnPlateau.step: the metric is NaN")
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self):
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            old_lr = group["lr"]
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def get_last_lr(self):
        return list(self._last_lr)

    _STATE = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lrs", "eps",
              "best", "num_bad_epochs", "cooldown_counter", "last_epoch", "_last_lr")

    def state_dict(self):
        return {name: getattr(self, name) for name in self._STATE}

    def load_state_dict(self, state_dict):
        for name in self._STATE:
            setattr(self, name, state_dict[name])
