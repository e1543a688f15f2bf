"""A sentence-transformers folder's Dense modules, and the Normalize after
them, as one small ONNX model (sentence embedding -> embedding). Built in
torch from the modules' own weights and exported as the encoder is; the
encoder's converter proves it on the same texts, end to end.

A Dense module is sentence-transformers' `activation(linear(x))`, plus x (or
a bias-free projection of it) where use_residual is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kbuild.convert.workers.equivalence import CheckpointError, canonical_onnx, exporter_error

OUTPUT = "embedding"
_ACTIVATIONS = {
    "tanh": torch.nn.Tanh,
    "identity": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "gelu": torch.nn.GELU,
    "sigmoid": torch.nn.Sigmoid,
    "silu": torch.nn.SiLU,
}


class _Dense(torch.nn.Module):
    def __init__(self, module: Mapping[str, Any]) -> None:
        super().__init__()
        sizes = int(module["in_features"]), int(module["out_features"])
        self.linear = torch.nn.Linear(*sizes, bias=bool(module["bias"]))
        self.activation = _ACTIVATIONS[str(module["activation"])]()
        self.use_residual = bool(module["residual"])
        if self.use_residual and sizes[0] != sizes[1]:
            self.residual = torch.nn.Linear(*sizes, bias=False)
        self.load_state_dict(_weights(Path(module["weights"])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (self.residual(x) if hasattr(self, "residual") else x)
        return out


class Chain(torch.nn.Module):
    """The Dense modules in order, then Normalize where the folder has it."""

    def __init__(self, modules: Sequence[Mapping[str, Any]], normalize: bool) -> None:
        super().__init__()
        self.dense = torch.nn.Sequential(*(_Dense(m) for m in modules))
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dense(x)
        return torch.nn.functional.normalize(out, p=2, dim=1) if self.normalize else out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights file the folder reader found (kbuild.load.embedding_folders)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
        return loaded
    except Exception as e:  # a damaged or foreign weights file, in the loader's words
        raise CheckpointError(
            f"cannot read the Dense weights in {path.parent.name}: {str(e).splitlines()[0]}"
        ) from None


def build(modules: Sequence[Mapping[str, Any]], normalize: bool) -> Chain:
    try:
        return Chain(modules, normalize).eval()
    except RuntimeError as e:  # load_state_dict: weights of other names or shapes than config.json says
        raise CheckpointError(f"the Dense weights do not fit their config.json: {str(e).splitlines()[0]}") from None


def export(chain: Chain, width: int, path: Path, opset: int, input_name: str) -> None:
    """The chain as ONNX, its input named as the pipeline's dense step maps it."""
    example = torch.zeros(2, width)
    try:
        torch.onnx.export(
            chain,
            (example,),
            str(path),
            dynamo=False,
            input_names=[input_name],
            output_names=[OUTPUT],
            dynamic_axes={input_name: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    except Exception as e:
        raise CheckpointError(f"torch's ONNX exporter cannot convert the Dense modules: {exporter_error(e)}") from None
    canonical_onnx(path)
