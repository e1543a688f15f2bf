"""type: tensorflow, runtime: native — a SavedModel's signature run by
TensorFlow. (With runtime: onnx, the default, the build converts the
signature and the artifact runs it with the onnx step instead.)

Fields: model (the SavedModel folder); signature (default serving_default)
and tags (default [serve]); inputs {name: VAR} and outputs {name: VAR}, keyed
by the signature's own names. Backend option from the spin: device — cpu or cuda.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kbuild.runtime.contract.errors import ConfigError
from kbuild.runtime.steps import Runner, StepContext, get_str, io_map, variable
from kbuild.runtime.steps.tf_tensors import cast, configure, numpy, quiet, tf
from kbuild.runtime.tensors import Vars


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    device = configure(str(ctx.options.get("device") or "cpu"), ctx.threads)
    path = ctx.model_path(step)
    name = get_str(step, "signature", "serving_default")
    tags = step.get("tags", ["serve"])
    try:
        with tf.device(device):
            loaded = quiet(lambda: tf.saved_model.load(str(path), tags=list(tags)))
    except Exception as e:  # TensorFlow says what it could not read
        raise ConfigError(f"TensorFlow cannot load the SavedModel {path.name}: {e}") from None
    if name not in loaded.signatures:
        raise ConfigError(f"the SavedModel has no signature {name!r} (it has {', '.join(loaded.signatures)})")
    function = loaded.signatures[name]
    declared = function.structured_input_signature[1]
    feeds = io_map(step, "inputs", "input", list(declared), "input")
    fetches = io_map(step, "outputs", "output", list(function.structured_outputs), "output")
    missing = [n for n in declared if n not in feeds]
    if missing:
        raise ConfigError(f"signature input(s) {', '.join(missing)} not mapped in 'inputs'")

    def run(variables: Vars) -> Vars:
        args = {n: tf.constant(cast(n, variable(variables, var), declared[n].dtype)) for n, var in feeds.items()}
        with tf.device(device):
            result = function(**args)
        return {var: numpy(n, result[n]) for n, var in fetches.items()}

    return run
