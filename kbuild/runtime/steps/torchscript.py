"""type: torchscript — a TorchScript module (torch.jit.save), run in inference mode.

Fields: model; inputs {argument of forward: VAR} or input VAR (one-argument
modules); output VAR where forward returns one tensor, or outputs {KEY: VAR}
where it returns a tuple or list (KEY "0", "1", ...) or a dict (its keys).
Backend option from the spin: device — cpu, cuda, or ve (NEC's vector engine
through veda-pytorch, which adds the `ve` device to torch when imported).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from kbuild.runtime.contract.errors import ConfigError
from kbuild.runtime.steps import (
    Runner,
    StepContext,
    get_mapping,
    get_str,
    io_map,
    variable,
)
from kbuild.runtime.steps.torch_tensors import device as torch_device
from kbuild.runtime.steps.torch_tensors import outputs, size_pools, tensor
from kbuild.runtime.tensors import Vars


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    device = torch_device(str(ctx.options.get("device") or "cpu"))
    if ctx.threads is not None:
        size_pools(ctx.threads)
    path = ctx.model_path(step)
    module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    module.eval()
    arguments = list(module.forward.schema.arguments)[1:]  # after self
    feeds = io_map(step, "inputs", "input", [a.name for a in arguments], "forward argument")
    required = [a.name for a in arguments if not a.has_default_value() and a.name not in feeds]
    if required:
        raise ConfigError(f"forward argument(s) {', '.join(required)} not mapped in 'inputs'")
    if ("output" in step) == ("outputs" in step):
        raise ConfigError("give either 'output' (forward returns a tensor) or 'outputs' (a tuple, list or dict)")
    single = get_str(step, "output") if "output" in step else None
    mapping = get_mapping(step, "outputs") if single is None else {}

    def run(variables: Vars) -> Vars:
        kwargs = {arg: tensor(arg, variable(variables, var), device) for arg, var in feeds.items()}
        with torch.inference_mode():
            result = module(**kwargs)
        return outputs(result, single, mapping)

    return run
