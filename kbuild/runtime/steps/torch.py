"""type: torch, runtime: native — a program saved with torch.export.save (.pt2),
run by torch itself. (With runtime: onnx, the default, the build converts the
program and the artifact runs it with the onnx step instead.)

Fields: model; inputs {input name: VAR} or input VAR (one-input programs), the
names being the program's own (its forward arguments); output VAR where the
program returns one tensor, or outputs {KEY: VAR} where it returns a tuple or
list (KEY "0", "1", ...) or a dict (its keys). Backend option from the spin:
device — cpu, cuda, or ve (through veda-pytorch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from kbuild.runtime.contract.errors import ConfigError
from kbuild.runtime.steps import Runner, StepContext, get_mapping, get_str, io_map, variable
from kbuild.runtime.steps.torch_tensors import device as torch_device
from kbuild.runtime.steps.torch_tensors import outputs, size_pools, tensor
from kbuild.runtime.tensors import Vars


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    device = torch_device(str(ctx.options.get("device") or "cpu"))
    if ctx.threads is not None:
        size_pools(ctx.threads)
    path = ctx.model_path(step)
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # torch says what it could not read
        raise ConfigError(f"{path.name} is not a program saved with torch.export.save: {e}") from None
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    names = list(program.graph_signature.user_inputs)
    feeds = io_map(step, "inputs", "input", names, "input")
    missing = [n for n in names if n not in feeds]
    if missing:
        raise ConfigError(f"program input(s) {', '.join(missing)} not mapped in 'inputs'")
    if ("output" in step) == ("outputs" in step):
        raise ConfigError("give either 'output' (the program returns a tensor) or 'outputs' (a tuple, list or dict)")
    single = get_str(step, "output") if "output" in step else None
    mapping = get_mapping(step, "outputs") if single is None else {}
    module = program.module()

    def run(variables: Vars) -> Vars:
        args = [tensor(name, variable(variables, feeds[name]), device) for name in names]
        with torch.inference_mode():
            result = module(*args)
        return outputs(result, single, mapping)

    return run
