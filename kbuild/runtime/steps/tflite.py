"""type: tflite — a TensorFlow Lite / LiteRT flatbuffer, run with ai-edge-litert.

Fields: model; inputs {tensor: VAR} or input VAR (single-input models); outputs
{tensor: VAR} or output VAR (single-output models). Tensor names are the
model's (get_input_details()). Inputs are cast to the model's dtype, nothing
more: quantized models are fed the integers they declare. A model whose batch
dimension is dynamic (-1 in its shape signature) runs a batch in one call; one
with a fixed batch of 1 runs each row in turn. Backend option from the spin:
num_threads (default: the cores the process may use, kbuild.runtime.threads).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import Runner, StepContext, io_map, variable
from kbuild.runtime.steps.quiet_stderr import quietly
from kbuild.runtime.tensors import Array, Vars

# its C++ logger prints it when a model's tensors are first allocated, whatever the log level
_DELEGATE_INFO = b"INFO: Created TensorFlow Lite XNNPACK delegate"


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    path = ctx.model_path(step)
    threads = ctx.options.get("num_threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError("backend option num_threads must be an integer >= 1")
    if threads is None:
        threads = ctx.threads
    interpreter = quietly(lambda: _allocated(Interpreter(model_path=str(path), num_threads=threads)), [_DELEGATE_INFO])
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    outputs = {d["name"]: d for d in interpreter.get_output_details()}
    feeds = io_map(step, "inputs", "input", list(inputs), "input")
    missing = [t for t in inputs if t not in feeds]
    if missing:
        raise ConfigError(f"model input(s) {', '.join(missing)} not mapped in 'inputs'")
    fetches = io_map(step, "outputs", "output", list(outputs), "output")
    # An interpreter holds one set of tensors: calls must not interleave.
    lock = threading.Lock()
    allocated = {name: tuple(int(d) for d in detail["shape"]) for name, detail in inputs.items()}

    def invoke(values: Mapping[str, Array]) -> dict[str, Array]:
        resized = [name for name, value in values.items() if allocated[name] != value.shape]
        for name in resized:
            interpreter.resize_tensor_input(inputs[name]["index"], list(values[name].shape), strict=True)
            allocated[name] = values[name].shape
        if resized:
            interpreter.allocate_tensors()
        for name, value in values.items():
            interpreter.set_tensor(inputs[name]["index"], value)
        interpreter.invoke()
        return {name: interpreter.get_tensor(outputs[name]["index"]) for name in fetches}

    def run(variables: Vars) -> Vars:
        values = {t: _cast(t, variable(variables, var), inputs[t]) for t, var in feeds.items()}
        batched = all(_fits(v.shape, _signature(inputs[t])) for t, v in values.items())
        rows = {v.shape[0] if v.ndim else 0 for v in values.values()}
        with lock:
            if batched:
                results = invoke(values)
            elif len(rows) == 1 and all(_fits((1, *v.shape[1:]), _signature(inputs[t])) for t, v in values.items()):
                n = rows.pop()
                per_row = [invoke({t: v[i : i + 1] for t, v in values.items()}) for i in range(n)]
                results = {
                    name: np.concatenate([r[name] for r in per_row])
                    if n
                    else np.zeros((0, *_signature(outputs[name])[1:]), dtype=outputs[name]["dtype"])
                    for name in fetches
                }
            else:
                wanted = ", ".join(f"{t} {_signature(d)}" for t, d in inputs.items())
                got = ", ".join(f"{t} {list(v.shape)}" for t, v in values.items())
                raise DataError(f"the model takes {wanted} (-1: any size); got {got}")
        return {var: results[tensor] for tensor, var in fetches.items()}

    return run


def _allocated(interpreter: Interpreter) -> Interpreter:
    interpreter.allocate_tensors()
    return interpreter


def _signature(detail: Mapping[str, Any]) -> list[int]:
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    return [int(d) for d in shape]


def _fits(shape: Sequence[int], signature: Sequence[int]) -> bool:
    return len(shape) == len(signature) and all(s in (-1, d) for d, s in zip(shape, signature, strict=True))


def _cast(name: str, value: Array, detail: Mapping[str, Any]) -> Array:
    dtype = np.dtype(detail["dtype"])
    if value.dtype == dtype:
        return np.ascontiguousarray(value)
    if value.dtype.kind not in "biuf" or dtype.kind not in "biuf":
        raise DataError(f"input {name!r}: the model takes {dtype}, got {value.dtype}")
    return np.ascontiguousarray(value.astype(dtype))
