"""What every converter shares: the ONNX file written the same way each time,
and the framework's answers compared with onnxruntime's on the same inputs.

Runs inside the build-side environment (stdlib, NumPy, onnx, onnxruntime)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

Feed = dict[str, np.ndarray]


class CheckpointError(Exception):
    """The checkpoint cannot be read or converted: the user's to fix (exit 3)."""


def exporter_error(error: Exception) -> str:
    """The exporter's own summary of why it failed, without its colours and advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    summary = text.split("## Exception summary", 1)
    lines = [line.strip() for line in (summary[1] if len(summary) > 1 else text).splitlines() if line.strip()]
    return lines[0][:400] if lines else type(error).__name__


def canonical_onnx(path: Path) -> None:
    """Rewrite the exported model without what differs between two exports of
    the same checkpoint elsewhere: stack traces and source paths kept as
    metadata, doc strings."""
    model = onnx.load(str(path))

    def scrub(graph: onnx.GraphProto) -> None:
        graph.doc_string = ""
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    scrub(attribute.g)
                for sub in attribute.graphs:
                    scrub(sub)
        for value in [*graph.input, *graph.output, *graph.value_info]:
            del value.metadata_props[:]
            value.doc_string = ""
        del graph.metadata_props[:]

    scrub(model.graph)
    for function in model.functions:
        for node in function.node:
            node.doc_string = ""
            del node.metadata_props[:]
    model.doc_string = ""
    del model.metadata_props[:]
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString(deterministic=True))


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1  # the same sums in the same order on every build machine
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(
    framework: Callable[[Feed], Mapping[str, np.ndarray]],
    converted: ort.InferenceSession,
    feeds: Iterable[tuple[str, Feed]],
) -> dict[str, Any]:
    """Each feed through both; the largest absolute difference per output, and
    where it was found."""
    names = [o.name for o in converted.get_outputs()]
    worst = dict.fromkeys(names, 0.0)
    where = dict.fromkeys(names, "")
    compared = 0
    for label, feed in feeds:
        expected = framework(feed)
        got = dict(zip(names, converted.run(names, feed), strict=True))
        for name in names:
            a = np.asarray(expected[name])
            b = np.asarray(got[name])
            if a.shape != b.shape:
                raise CheckpointError(
                    f"output {name}: the framework gives shape {list(a.shape)}, ONNX {list(b.shape)} ({label})"
                )
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
            if not np.isfinite(diff):
                diff = float("inf") if not np.array_equal(np.isnan(a), np.isnan(b)) else 0.0
            if diff >= worst[name]:
                worst[name], where[name] = diff, label
        compared += 1
    return {
        "compared": compared,
        "outputs": {name: {"max_abs_diff": worst[name], "at": where[name]} for name in names},
    }


def write_result(output: Path, result: Mapping[str, Any]) -> None:
    (output / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
