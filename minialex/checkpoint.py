"""Checkpoints: model, optimiser, scheduler, RNG state and any metadata in one ``.npz``.

Arrays are stored under ``model/<parameter name>`` and
``optimizer/state/<index>/<buffer name>``; everything else (hyper-parameters,
scheduler state, the RNG state, the epoch, metrics) is one JSON string under
``meta``. Loading uses ``allow_pickle=False``: a checkpoint is data, never
code. Writing goes to a temporary file that is renamed into place, so a crash
mid-write leaves the previous checkpoint intact.
"""

import json

import numpy as np

from . import backend
from .io import atomic_write


def save_checkpoint(path, model, optimizer=None, scheduler=None, **meta):
    """Write a checkpoint atomically; ``meta`` holds JSON-able extras (epoch, metrics, ...)."""
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
    record["rng"] = backend.rng_state()
    arrays["meta"] = np.array(json.dumps(record))
    with atomic_write(path) as file:
        np.savez(file, **arrays)


def load_checkpoint(path, model, optimizer=None, scheduler=None, restore_rng=True):
    """Restore what ``save_checkpoint`` wrote into the given objects; return the metadata dict."""
    with np.load(path, allow_pickle=False) as archive:
        if "meta" not in archive.files:
            raise ValueError(f"{path} is not a minialex checkpoint (no 'meta' entry)")
        record = json.loads(str(archive["meta"]))
        model_state = {key[len("model/"):]: archive[key] for key in archive.files if key.startswith("model/")}
        optimizer_state = {}
        for key in archive.files:
            if key.startswith("optimizer/state/"):
                index, name = key[len("optimizer/state/"):].split("/", 1)
                optimizer_state.setdefault(int(index), {})[name] = archive[key]
    model.load_state_dict(model_state)
    if optimizer is not None:
        if "optimizer_param_groups" not in record:
            raise ValueError(f"{path} holds no optimiser state")
        optimizer.load_state_dict({"state": optimizer_state, "param_groups": record["optimizer_param_groups"]})
    if scheduler is not None:
        if "scheduler" not in record:
            raise ValueError(f"{path} holds no scheduler state")
        scheduler.load_state_dict(record["scheduler"])
    if restore_rng:
        backend.set_rng_state(record["rng"])
    return record
