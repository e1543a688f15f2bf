"""What the keras and tensorflow steps share: TensorFlow set up once for the
process (its threads, the spin's device), and arrays cast to the dtypes a
model declares."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps.quiet_stderr import quietly
from kbuild.runtime.tensors import Array

T = TypeVar("T")
# what TensorFlow prints to stderr as it starts, whatever TF_CPP_MIN_LOG_LEVEL says
NOTICES = (
    b"WARNING: All log messages before absl::InitializeLog()",
    b"I0000 ",
    b"To enable the following instructions",
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
tf: Any = quietly(lambda: importlib.import_module("tensorflow"), NOTICES)


def quiet(make: Callable[[], T]) -> T:
    """make(), without TensorFlow's start-up notices (loading a model prints them again)."""
    return quietly(make, NOTICES)


def configure(device: str, threads: int | None) -> str:
    """The TensorFlow device name for the spin's device; threads set while TensorFlow still allows it."""
    if threads is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # already running: another step set them first
    if device == "cpu":
        return "/CPU:0"
    if device == "cuda":
        if not tf.config.list_physical_devices("GPU"):
            raise ConfigError("the spin runs this step on CUDA, but TensorFlow finds no GPU")
        return "/GPU:0"
    raise ConfigError(f"TensorFlow has no device {device!r}; the spin's device is cpu or cuda")


def cast(name: str, value: Array, dtype: Any) -> Array:
    want = dtype.as_numpy_dtype
    if value.dtype == want:
        return value
    if value.dtype.kind not in "biuf" or not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        raise DataError(f"input {name!r}: the model takes {dtype.name}, got {value.dtype}")
    return value.astype(want)


def numpy(name: str, value: object) -> Array:
    if isinstance(value, (tf.Tensor, np.ndarray)):
        return np.asarray(value)
    raise DataError(f"output {name!r} is a {type(value).__name__}, not a tensor")
