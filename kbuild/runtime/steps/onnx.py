"""type: onnx — an onnxruntime InferenceSession.

Fields: model; inputs {tensor: VAR} or input VAR (single-input models); outputs
{tensor: VAR} or output VAR (single-output models). Backend options from the
spin: providers (default [CPUExecutionProvider]), provider_options (list of
dicts, one per provider), session_options ({SessionOptions attribute: value},
applied after the thread pool is sized from the cores the process may use).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import Runner, StepContext, io_map, variable
from kbuild.runtime.tensors import Array, Vars

# ONNX element types -> what the session wants to be fed.
_FEED_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),
}

# Lets a build machine without the spin's accelerator run the samples on CPU;
# a deployment never sets it, so a GPU spin that lost its GPU refuses to start.
FALLBACK_ENV = "KBUILD_ONNX_PROVIDER_FALLBACK"


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    path = ctx.model_path(step)
    session = _session(str(path), ctx.options, ctx.threads)

    model_inputs = {i.name: i.type for i in session.get_inputs()}
    model_outputs = [o.name for o in session.get_outputs()]
    feeds = io_map(step, "inputs", "input", list(model_inputs), "input")
    missing = [t for t in model_inputs if t not in feeds]
    if missing:
        raise ConfigError(f"model input(s) {', '.join(missing)} not mapped in 'inputs'")
    fetches = io_map(step, "outputs", "output", model_outputs, "output")

    feed_plan = [(tensor, var, _FEED_DTYPES.get(model_inputs[tensor])) for tensor, var in feeds.items()]
    out_tensors = list(fetches)
    out_vars = list(fetches.values())

    def run(variables: Vars) -> Vars:
        feed: dict[str, Array] = {}
        for tensor, var, dtype in feed_plan:
            value = variable(variables, var)
            if dtype is not None and value.dtype != dtype:
                value = value.astype(dtype)
            feed[tensor] = value
        results = session.run(out_tensors, feed)
        return {var: _result_array(tensor, r) for var, tensor, r in zip(out_vars, out_tensors, results, strict=True)}

    return run


def _session(path: str, options: Mapping[str, Any], threads: int | None) -> Any:
    providers = list(options.get("providers") or ["CPUExecutionProvider"])
    provider_options = options.get("provider_options")
    so = ort.SessionOptions()
    # onnxruntime warns on stderr about harmless graph details; errors still show.
    so.log_severity_level = 3
    if threads is not None:
        # One call at a time runs (the batcher serialises them), so the cores go
        # to one call's operators: intra-op threads = cores, no inter-op pool.
        # Idle pool threads sleep instead of spinning, which would take the
        # core the event loop needs to frame the next batch.
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (options.get("session_options") or {}).items():
        if not hasattr(so, key):
            raise ConfigError(f"unknown onnxruntime session option {key!r}")
        setattr(so, key, value)
    available = ort.get_available_providers()
    unavailable = [p for p in providers if p not in available]
    if unavailable:
        if os.environ.get(FALLBACK_ENV) != "1":
            raise ConfigError(
                f"onnxruntime provider(s) {', '.join(unavailable)} not available here "
                f"(available: {', '.join(available)}); is this the spin's hardware and onnxruntime package?"
            )
        providers = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        provider_options = None
    kwargs: dict[str, Any] = {"sess_options": so, "providers": providers}
    if provider_options is not None:
        kwargs["provider_options"] = provider_options
    return ort.InferenceSession(path, **kwargs)


def _result_array(tensor: str, value: Any) -> Array:
    if isinstance(value, np.ndarray):
        return value
    # skl2onnx's ZipMap gives one {class: probability} dict per row; a 2-D
    # array with columns in class order is what classify expects.
    if isinstance(value, list) and all(isinstance(row, dict) for row in value):
        if not value:
            return np.zeros((0, 0), dtype=np.float32)
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
    raise DataError(f"model output {tensor!r} is a {type(value).__name__}, not a tensor")
