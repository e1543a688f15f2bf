"""What the torch step types share: the device a spin names, the thread pools,
and tensors in and out (torch.Tensor <-> NumPy)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.tensors import Array, Vars


def size_pools(threads: int) -> None:
    """One call runs at a time: its operators get the cores, and the inter-op
    pool one thread. torch fixes the inter-op pool at its first parallel work,
    so a second pipeline in the process keeps the first one's."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def device(name: str) -> torch.device:
    if name.split(":")[0] == "ve":
        try:
            importlib.import_module("veda.pytorch")
        except ImportError as e:
            raise ConfigError(f"device {name!r} needs veda-pytorch and NEC's VE runtime: {e}") from None
    elif name.split(":")[0] == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r}: torch sees no CUDA device (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda or 'none'}); is this the spin's hardware?"
        )
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown torch device {name!r}: {e}") from None


def tensor(argument: str, value: Array, device: torch.device) -> torch.Tensor:
    if value.dtype.kind not in "biuf":
        raise DataError(f"argument {argument!r}: torch takes numbers or booleans, got {value.dtype}")
    # torch.from_numpy shares memory and warns about read-only arrays (as
    # binary request bodies give); a copy of those is cheap next to the model.
    if not value.flags.writeable or not value.flags.c_contiguous:
        value = np.ascontiguousarray(value).copy()
    return torch.from_numpy(value).to(device)


def _array(key: str, value: Any) -> Array:
    if not isinstance(value, torch.Tensor):
        raise DataError(f"output {key!r} is a {type(value).__name__}, not a tensor")
    return value.detach().cpu().numpy()


def outputs(result: Any, single: str | None, mapping: Mapping[str, str]) -> Vars:
    if isinstance(result, torch.Tensor):
        if single is None:
            raise DataError("forward returns one tensor; map it with output: VAR")
        return {single: _array("output", result)}
    if isinstance(result, (tuple, list)):
        if single is not None:
            raise DataError(f"forward returns {len(result)} values; map them with outputs: {{0: VAR, 1: VAR, ...}}")
        out: Vars = {}
        for key, var in mapping.items():
            if not key.isdigit() or int(key) >= len(result):
                raise DataError(f"outputs: {key!r} is not an index of the {len(result)} values forward returns")
            out[var] = _array(key, result[int(key)])
        return out
    if isinstance(result, dict):
        if single is not None:
            raise DataError(f"forward returns a dict ({', '.join(map(str, result))}); map it with outputs")
        missing = [k for k in mapping if k not in result]
        if missing:
            raise DataError(f"forward's result has no {missing[0]!r} (it has {', '.join(map(str, result))})")
        return {var: _array(key, result[key]) for key, var in mapping.items()}
    raise DataError(f"forward returns a {type(result).__name__}; expected a tensor, tuple, list or dict")
