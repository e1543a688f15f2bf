"""A torch.export program (.pt2) -> ONNX with torch's exporter, and the two
compared: on the pipeline's samples and on inputs made from the program's
own example inputs at several batch sizes. Runs in the build-side environment."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kbuild.convert.workers.equivalence import CheckpointError, Feed, canonical_onnx, compare, exporter_error, session

BATCHES = (1, 2, 7, 32)


def _load(path: Path) -> Any:
    try:
        return torch.export.load(str(path))
    except Exception as e:  # torch says what it could not read
        raise CheckpointError(f"{path.name} is not a program torch.export.save wrote: {e}") from None


def _output_names(result: Any) -> list[str]:
    if isinstance(result, torch.Tensor):
        return ["output"]
    if isinstance(result, (tuple, list)):
        return [str(i) for i in range(len(result))]
    if isinstance(result, dict):
        return [str(k) for k in result]
    raise CheckpointError(f"the program returns a {type(result).__name__}; kbuild takes a tensor, tuple, list or dict")


def _flatten(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    return list(result.values()) if isinstance(result, dict) else list(result)


def convert(request: Mapping[str, Any], output: Path) -> dict[str, Any]:
    program = _load(Path(request["checkpoint"]))
    names = list(program.graph_signature.user_inputs)
    examples = program.example_inputs
    if examples is None or examples[1] or len(examples[0]) != len(names):
        raise CheckpointError("the program was saved without its example inputs (positional); export it again")
    example = [t.detach() for t in examples[0]]
    dynamic = []  # per input: the axes the program left free
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            dynamic.append([i for i, d in enumerate(node.meta["val"].shape) if isinstance(d, torch.SymInt)])
    module = program.module()
    with torch.no_grad():
        outputs = _output_names(module(*example))
    onnx_path = output / "model.onnx"
    try:
        torch.onnx.export(program, tuple(example), str(onnx_path), dynamo=True, input_names=names,
                          output_names=outputs, optimize=True, verbose=False)  # fmt: skip
    except Exception as e:  # what the exporter could not handle, in its words
        raise CheckpointError(f"torch's ONNX exporter cannot convert this program: {exporter_error(e)}") from None
    canonical_onnx(onnx_path)

    def framework(feed: Feed) -> dict[str, np.ndarray]:
        with torch.no_grad():
            result = module(*(torch.from_numpy(feed[n]) for n in names))
        return {k: v.numpy() for k, v in zip(outputs, _flatten(result), strict=True)}

    rng = np.random.default_rng(0)
    feeds: list[tuple[str, Feed]] = []
    samples: Mapping[str, list[Any]] = request.get("samples") or {}
    for i in range(min(len(v) for v in samples.values()) if samples and set(samples) == set(names) else 0):
        feed = {n: np.asarray(samples[n][i], dtype=example[k].numpy().dtype) for k, n in enumerate(names)}
        feeds.append((f"sample {i + 1}", feed))
    batched = all(0 in axes for axes in dynamic)
    for size in BATCHES if batched else (int(example[0].shape[0]),):
        feed = {}
        for k, n in enumerate(names):
            base = example[k].numpy()
            rows = rng.integers(0, base.shape[0], size) if batched else np.arange(base.shape[0])
            value = base[rows]
            if value.dtype.kind == "f":
                # each feature moved by a tenth of its own spread over the examples
                spread = base.std(axis=0, keepdims=True) if base.shape[0] > 1 else np.abs(base) + 1.0
                noise = rng.normal(0.0, 1.0, value.shape) * np.where(spread > 0, spread, 1.0) * 0.1
                value = (value + noise).astype(base.dtype)
            feed[n] = np.ascontiguousarray(value)
        feeds.append((f"generated batch of {size}", feed))
    result = compare(framework, session(onnx_path), feeds)
    result["dynamic_axes"] = {n: axes for n, axes in zip(names, dynamic, strict=True)}
    result["framework"] = {"torch": torch.__version__}
    return result
