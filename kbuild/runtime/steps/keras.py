"""type: keras, runtime: native — a Keras 3 model (.keras, or a legacy .h5)
run by Keras on TensorFlow. (With runtime: onnx, the default, the build
converts the model and the artifact runs it with the onnx step instead.)

Fields: model; input VAR / output VAR for a model of one input and one output,
or inputs {name: VAR} / outputs {name: VAR} keyed by the model's own input and
output names. Backend option from the spin: device — cpu or cuda.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from kbuild.runtime.contract.errors import ConfigError
from kbuild.runtime.steps import Runner, StepContext, io_map, variable
from kbuild.runtime.steps.tf_tensors import cast, configure, numpy, quiet, tf
from kbuild.runtime.tensors import Vars

keras: Any = quiet(lambda: importlib.import_module("keras"))


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    device = configure(str(ctx.options.get("device") or "cpu"), ctx.threads)
    path = ctx.model_path(step)
    try:
        with tf.device(device):
            model = quiet(lambda: keras.saving.load_model(str(path), compile=False))
    except Exception as e:  # Keras says what it could not read
        raise ConfigError(f"Keras cannot load {path.name}: {e}") from None
    declared = {str(t.name): t.dtype for t in model.inputs}
    names = list(declared)
    feeds = io_map(step, "inputs", "input", names, "input")
    missing = [n for n in names if n not in feeds]
    if missing:
        raise ConfigError(f"model input(s) {', '.join(missing)} not mapped in 'inputs'")
    output_names = [str(n) for n in model.output_names]
    fetches = io_map(step, "outputs", "output", output_names, "output")

    def run(variables: Vars) -> Vars:
        given = [cast(n, variable(variables, feeds[n]), tf.as_dtype(declared[n])) for n in names]
        with tf.device(device):
            result = model(given if len(given) > 1 else given[0], training=False)
        if isinstance(result, dict):
            values = {str(k): v for k, v in result.items()}
        else:
            listed = result if isinstance(result, (list, tuple)) else [result]
            values = dict(zip(output_names, listed, strict=True))
        return {var: numpy(name, values[name]) for name, var in fetches.items()}

    return run
