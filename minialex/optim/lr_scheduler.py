"""Learning-rate schedules, as PyTorch's: they set ``group["lr"]`` of an optimiser.

The AlexNet paper divided the rate by 10 whenever the validation error
stopped improving (three times in 90 epochs): ``ReduceLROnPlateau`` does
that; ``StepLR`` is the fixed-interval version; ``CosineAnnealingLR`` lowers
the rate smoothly to a floor, which suits short runs.
"""

import math
import numbers

from .sgd import check_number


def _check_optimizer(optimizer):
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(f"a scheduler needs an optimiser with param_groups, got {type(optimizer).__name__}")


def _check_int(owner, name, value, minimum):
    """``int(value)``, or a ValueError naming the argument, its value and the smallest allowed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_rates(owner, name, values, count):
    """One finite, non-negative rate per parameter group, as a list of floats."""
    if not isinstance(values, list | tuple) or len(values) != count:
        raise ValueError(f"{owner}: {name} must be a list of {count} rates (one a parameter group), got {values!r}")
    return [check_number(owner, f"{name}[{i}]", v) for i, v in enumerate(values)]


def _require_keys(owner, state_dict, keys):
    """A loaded state must be a dict holding every key the scheduler saves."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"{owner}: expected a dict, got {type(state_dict).__name__}")
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise ValueError(f"{owner}: the state dict is missing {missing}")


class _EpochScheduler:
    """What StepLR and CosineAnnealingLR share: the optimiser, its initial rates, the step count.

    A subclass lists its own settings in ``_SETTINGS`` and checks them in
    ``_check_settings``, which both its constructor and load_state_dict call;
    state_dict saves them beside base_lrs, last_epoch and the last rates.
    """

    _SETTINGS = ()

    def __init__(self, optimizer):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    @classmethod
    def _check_settings(cls, owner, settings):
        """Return the settings checked and normalised; raise ValueError naming ``owner``."""
        raise NotImplementedError

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        state = {name: getattr(self, name) for name in self._SETTINGS}
        state.update(base_lrs=list(self.base_lrs), last_epoch=self.last_epoch, _last_lr=list(self._last_lr))
        return state

    def load_state_dict(self, state_dict):
        """Restore a saved state; all or nothing: a state that does not fit raises and changes nothing."""
        self._commit_load(self._prepare_load(state_dict))

    def _prepare_load(self, state_dict):
        """Check and convert ``state_dict`` without changing the scheduler; ``_commit_load`` applies it."""
        owner = f"{type(self).__name__}.load_state_dict"
        _require_keys(owner, state_dict, (*self._SETTINGS, "base_lrs", "last_epoch", "_last_lr"))
        groups = len(self.optimizer.param_groups)
        prepared = self._check_settings(owner, {name: state_dict[name] for name in self._SETTINGS})
        prepared["base_lrs"] = _check_rates(owner, "base_lrs", state_dict["base_lrs"], groups)
        prepared["last_epoch"] = _check_int(owner, "last_epoch", state_dict["last_epoch"], 0)
        prepared["_last_lr"] = _check_rates(owner, "_last_lr", state_dict["_last_lr"], groups)
        return prepared

    def _commit_load(self, prepared):
        """Apply what ``_prepare_load`` checked; nothing here can fail."""
        for name, value in prepared.items():
            setattr(self, name, value)


class StepLR(_EpochScheduler):
    """lr = initial_lr * gamma ** (epoch // step_size); call ``step()`` once an epoch."""

    _SETTINGS = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        _check_optimizer(optimizer)
        settings = self._check_settings("StepLR", {"step_size": step_size, "gamma": gamma})
        super().__init__(optimizer)
        self.step_size = settings["step_size"]
        self.gamma = settings["gamma"]

    @classmethod
    def _check_settings(cls, owner, settings):
        return {
            "step_size": _check_int(owner, "step_size", settings["step_size"], 1),
            # gamma > 1 (a growing rate) is allowed, as in PyTorch; 0 or less would end training.
            "gamma": check_number(owner, "gamma", settings["gamma"], open_minimum=True),
        }

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

    _SETTINGS = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0):  # noqa: N803 - PyTorch's name
        _check_optimizer(optimizer)
        settings = self._check_settings("CosineAnnealingLR", {"T_max": T_max, "eta_min": eta_min})
        super().__init__(optimizer)
        self.T_max = settings["T_max"]
        self.eta_min = settings["eta_min"]

    @classmethod
    def _check_settings(cls, owner, settings):
        return {
            "T_max": _check_int(owner, "T_max", settings["T_max"], 1),
            "eta_min": check_number(owner, "eta_min", settings["eta_min"]),
        }

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
        owner = "ReduceLROnPlateau"
        settings = self._check_settings(owner, {
            "mode": mode, "factor": factor, "patience": patience, "threshold": threshold,
            "threshold_mode": threshold_mode, "cooldown": cooldown, "eps": eps,
        })
        groups = optimizer.param_groups
        # One floor for every group, or a list with one floor a group.
        if isinstance(min_lr, list | tuple):
            min_lrs = _check_rates(owner, "min_lr", min_lr, len(groups))
        else:
            min_lrs = [check_number(owner, "min_lr", min_lr)] * len(groups)
        self.optimizer = optimizer
        for name, value in settings.items():
            setattr(self, name, value)
        self.min_lrs = min_lrs
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in groups]

    @staticmethod
    def _check_settings(owner, settings):
        """The constructor's arguments (min_lr aside) checked and normalised; shared with load_state_dict."""
        if settings["mode"] not in ("min", "max"):
            raise ValueError(f"{owner}: mode must be 'min' or 'max', got {settings['mode']!r}")
        if settings["threshold_mode"] not in ("rel", "abs"):
            raise ValueError(f"{owner}: threshold_mode must be 'rel' or 'abs', got {settings['threshold_mode']!r}")
        return {
            "mode": settings["mode"],
            "factor": check_number(owner, "factor", settings["factor"], 0.0, 1.0, open_minimum=True, open_maximum=True),
            "patience": _check_int(owner, "patience", settings["patience"], 0),
            "threshold": check_number(owner, "threshold", settings["threshold"]),
            "threshold_mode": settings["threshold_mode"],
            "cooldown": _check_int(owner, "cooldown", settings["cooldown"], 0),
            "eps": check_number(owner, "eps", settings["eps"]),
        }

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
        state = {name: getattr(self, name) for name in self._STATE}
        state.update(min_lrs=list(self.min_lrs), _last_lr=list(self._last_lr))  # copies, not our lists
        return state

    def load_state_dict(self, state_dict):
        """Restore a saved state; all or nothing: a state that does not fit raises and changes nothing."""
        self._commit_load(self._prepare_load(state_dict))

    def _prepare_load(self, state_dict):
        """Check and convert ``state_dict`` without changing the scheduler; ``_commit_load`` applies it."""
        owner = "ReduceLROnPlateau.load_state_dict"
        _require_keys(owner, state_dict, self._STATE)
        groups = len(self.optimizer.param_groups)
        prepared = self._check_settings(owner, state_dict)
        prepared["min_lrs"] = _check_rates(owner, "min_lrs", state_dict["min_lrs"], groups)
        # The best metric so far starts at +-inf, so infinities are legitimate; NaN is not.
        best = state_dict["best"]
        if isinstance(best, bool) or not isinstance(best, numbers.Real) or math.isnan(best):
            raise ValueError(f"{owner}: best must be a number (inf allowed, NaN not), got {best!r}")
        prepared["best"] = float(best)
        for name in ("num_bad_epochs", "cooldown_counter", "last_epoch"):
            prepared[name] = _check_int(owner, name, state_dict[name], 0)
        prepared["_last_lr"] = _check_rates(owner, "_last_lr", state_dict["_last_lr"], groups)
        return prepared

    def _commit_load(self, prepared):
        """Apply what ``_prepare_load`` checked; nothing here can fail."""
        for name, value in prepared.items():
            setattr(self, name, value)
