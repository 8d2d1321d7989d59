"""Checkpoints that never need unpickling: tensors in safetensors, everything else in JSON.

A checkpoint holds the state dicts of named modules and optimisers plus a JSON ``meta`` dict.
Optimiser states are flattened: tensors go to the safetensors payload, scalars and parameter
groups to JSON in the file's metadata. Writes are atomic (temporary name, then rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import atomic_path


def save_checkpoint(
    path: str | os.PathLike,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write modules, optimisers and ``meta`` to ``path`` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = value.detach().to("cpu").contiguous()
    optimizer_json: dict[str, Any] = {}
    for name, optimizer in (optimizers or {}).items():
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{name}.{index}.{key}"] = value.detach().to("cpu").contiguous()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        optimizer_json[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    metadata = {"meta": json.dumps(meta or {}), "optimizers": json.dumps(optimizer_json)}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp), metadata=metadata)


def read_checkpoint(
    path: str | os.PathLike, advice: str = "Delete it to restart that stage.",
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Return ``(tensors, meta, optimizer_json)`` of a checkpoint file; a damaged or foreign file is an :class:`InputError`."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        return tensors, json.loads(metadata.get("meta", "{}")), json.loads(metadata.get("optimizers", "{}"))
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise InputError(f"Cannot read {path}: not an intact safetensors file ({reason}). {advice}") from None


def load_checkpoint(
    path: str | os.PathLike,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
) -> dict[str, Any]:
    """Restore modules (and optimisers) in place from ``path``; return its ``meta``."""
    tensors, meta, optimizer_json = read_checkpoint(path)
    for name, module in modules.items():
        prefix = f"module.{name}."
        state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        module.load_state_dict(state)
    for name, optimizer in (optimizers or {}).items():
        saved = optimizer_json[name]
        state: dict[int, dict[str, Any]] = {}
        prefix = f"optim.{name}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, field = key[len(prefix):].split(".", 1)
                state.setdefault(int(index), {})[field] = value
        for index, scalars in saved["scalars"].items():
            state.setdefault(int(index), {}).update(scalars)
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    return meta


def save_weights(path: str | os.PathLike, modules: dict[str, nn.Module], metadata: dict[str, str] | None = None) -> None:
    """Final model weights: ``<module>.<key>`` tensors in one safetensors file, atomically."""
    tensors = {
        f"{name}.{key}": value.detach().to("cpu").contiguous()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }
    with atomic_path(path) as temp:
        save_file(tensors, str(temp), metadata=metadata or {})


def load_weights(path: str | os.PathLike, modules: dict[str, nn.Module]) -> None:
    """Load :func:`save_weights` output into ``modules`` (strict); weights of another shape are an :class:`InputError`."""
    advice = "The model file is damaged or foreign: copy the run folder again or retrain."
    tensors, _, _ = read_checkpoint(path, advice)
    for name, module in modules.items():
        prefix = f"{name}."
        try:
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        except RuntimeError as error:
            first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error).strip())
            raise InputError(f"The weights in {path} do not fit this run's '{name}' network (e.g. trained on another "
                             f"number of labels: {first[:200]}). {advice}") from None
