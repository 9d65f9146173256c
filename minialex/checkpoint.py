"""Checkpoints: model, optimiser, scheduler, loss scaler, RNG state and any metadata in one ``.npz``.

Arrays are stored under ``model/<parameter name>`` and
``optimizer/state/<index>/<buffer name>``; everything else (hyper-parameters,
scheduler state, the ``amp.GradScaler`` state, the RNG state, the epoch,
metrics) is one JSON string under
``meta``. Loading uses ``allow_pickle=False``: a checkpoint is data, never
code. Writing goes to a temporary file that is renamed into place, so a crash
mid-write leaves the previous checkpoint intact. Loading is all or nothing:
every part is checked before any is restored.
"""

import json

import numpy as np

from . import backend
from .io import atomic_write

# The entries of ``meta`` that the checkpoint writes itself; a caller's metadata may not use them.
RESERVED_META_KEYS = ("optimizer_param_groups", "scheduler", "grad_scaler", "rng")


def save_checkpoint(path, model, optimizer=None, scheduler=None, scaler=None, **meta):
    """Write a checkpoint atomically; ``meta`` holds JSON-able extras (epoch, metrics, ...).

    ``scaler`` is an ``amp.GradScaler`` (mixed precision): its scale and growth tracker are saved.
    """
    clashes = [key for key in RESERVED_META_KEYS if key in meta]
    if clashes:
        raise ValueError(
            f"save_checkpoint: the meta key {clashes[0]!r} is reserved for the checkpoint's own records "
            f"({', '.join(RESERVED_META_KEYS)}); store that value under another name"
        )
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    record = dict(meta)
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, buffers in state["state"].items():
            for name, array in buffers.items():
                arrays[f"optimizer/state/{index}/{name}"] = array
        record["optimizer_param_groups"] = state["param_groups"]
    if scheduler is not None:
        record["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        record["grad_scaler"] = scaler.state_dict()
    record["rng"] = backend.rng_state()
    arrays["meta"] = np.array(json.dumps(record))
    with atomic_write(path) as file:
        np.savez(file, **arrays)


def load_checkpoint(path, model, optimizer=None, scheduler=None, restore_rng=True, scaler=None):
    """Restore what ``save_checkpoint`` wrote into the given objects; return the metadata dict.

    All or nothing: the model, optimiser, scheduler and RNG states are all
    checked (and converted) first, and only then written, so a checkpoint that
    does not fit raises and leaves every object as it was. (An optimiser or
    scheduler from outside minialex is restored by its own load_state_dict,
    before minialex's objects are written, and is all or nothing only if that is.)
    A checkpoint written without a scaler has no scaler state: pass ``scaler``
    only when ``"grad_scaler"`` is in it (see ``examples/train_mnist.py``).
    """
    with np.load(path, allow_pickle=False) as archive:
        if "meta" not in archive.files:
            raise ValueError(f"{path} is not a minialex checkpoint (no 'meta' entry)")
        record = json.loads(str(archive["meta"]))
        if not isinstance(record, dict):
            raise ValueError(f"{path}: the 'meta' entry is not a JSON object")
        model_state = {key[len("model/"):]: archive[key] for key in archive.files if key.startswith("model/")}
        optimizer_state = {}
        for key in archive.files:
            if key.startswith("optimizer/state/"):
                index, name = key[len("optimizer/state/"):].split("/", 1)
                if not index.isdigit():
                    raise ValueError(f"{path}: {key!r} does not name an optimiser parameter index")
                optimizer_state.setdefault(int(index), {})[name] = archive[key]

    # 1. Check every part; nothing is changed yet.
    parts = [(model, model_state)]
    if optimizer is not None:
        if "optimizer_param_groups" not in record:
            raise ValueError(f"{path} holds no optimiser state")
        parts.append((optimizer, {"state": optimizer_state, "param_groups": record["optimizer_param_groups"]}))
    if scheduler is not None:
        if "scheduler" not in record:
            raise ValueError(f"{path} holds no scheduler state")
        parts.append((scheduler, record["scheduler"]))
    if scaler is not None:
        if "grad_scaler" not in record:
            raise ValueError(f"{path} holds no GradScaler state (it was saved without mixed precision)")
        parts.append((scaler, record["grad_scaler"]))
    prepared = [(target, target._prepare_load(state)) for target, state in parts if hasattr(target, "_prepare_load")]
    if restore_rng:
        _check_rng_state(path, record)

    # 2. Restore. Only an object from outside minialex can still fail, so it goes first.
    for target, state in parts:
        if not hasattr(target, "_prepare_load"):
            target.load_state_dict(state)
    for target, checked in prepared:
        target._commit_load(checked)
    if restore_rng:
        backend.set_rng_state(record["rng"])
    return record


def _check_rng_state(path, record):
    """Raise ValueError unless ``record["rng"]`` loads; the RNG is left as it was either way.

    ``backend.set_rng_state`` checks the state as it installs it, so the check
    is a trial: install it, then put the current state back.
    """
    if "rng" not in record:
        raise ValueError(f"{path} holds no RNG state; pass restore_rng=False to load it without")
    current = backend.rng_state()
    try:
        backend.set_rng_state(record["rng"])
    except Exception as error:  # a KeyError, TypeError or ValueError from deep inside NumPy
        raise ValueError(f"{path}: the RNG state does not load ({type(error).__name__}: {error})") from error
    finally:
        backend.set_rng_state(current)
