"""A micro-batch through the pipeline in one call, where the pipeline allows it.

Calling the pipeline once per record costs far more than the model itself for
small models (an ONNX session call is ~20 µs, ~0.1 µs per row in a call of 256
rows). So the records of a micro-batch are decoded, stacked along the first
dimension, run as one call and split back, under the rule shared with HTTP
batching (kbuild.runtime.combine): every input and output has a variable
first dimension. Records whose values do not stack (different row counts, a
malformed one), a combined call that fails, drops records or returns outputs
without the batch dimension: the batch is answered one record at a time, so
only the culprit fails, with the error it would get alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from kbuild.runtime.combine import batch_problem, has_rows, per_request
from kbuild.runtime.contract.errors import AppError
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.streaming.codec import Codec, CodecError
from kbuild.runtime.streaming.records import (
    Handler,
    RecordError,
    RunFn,
    pipeline_handler,
)
from kbuild.runtime.tensors import Vars, decode_value, encode_array

# Per record: the encoded output, None (dropped) or the RecordError it failed with.
Outcome = bytes | RecordError | None
BatchHandler = Callable[[Sequence[bytes | None]], Sequence[Outcome]]


def one_by_one(handler: Handler) -> BatchHandler:
    def handle(values: Sequence[bytes | None]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for value in values:
            try:
                outcomes.append(handler(value))
            except RecordError as e:
                outcomes.append(e)
        return outcomes

    return handle


def batch_handler(spec: PipelineSpec, source: Codec, sink: Codec, run: RunFn) -> BatchHandler:
    single = one_by_one(pipeline_handler(spec, source, sink, run))
    if "raw" in (source.name, sink.name) or batch_problem(spec.inputs, spec.outputs) is not None:
        return single

    def handle(values: Sequence[bytes | None]) -> Sequence[Outcome]:
        # Per record, only C loops (map, zip, the codec's library, NumPy): at
        # tens of thousands of records a second, a Python frame per record per
        # stage costs more than the model.
        count = len(values)
        if count < 2:
            return single(values)
        try:
            objects = source.decode_many(values)
        except CodecError:
            return single(values)
        stacked = _stack(spec, objects)
        if stacked is None:
            return single(values)
        inputs, rows = stacked
        try:
            outputs = run(inputs)
        except Exception:  # answered one by one: only the culprit fails
            return single(values)
        if outputs is None:
            return single(values)
        if not has_rows(outputs, count * rows):
            return single(values)
        names = tuple(outputs)
        columns = [encode_array(per_request(arr, count)) for arr in outputs.values()]
        try:
            return sink.encode_many(map(dict, map(zip, repeat(names), zip(*columns, strict=True))))
        except CodecError:
            return single(values)

    return handle


def _stack(spec: PipelineSpec, objects: list[Any]) -> tuple[Vars, int] | None:
    """The inputs of every record, concatenated, and the rows each record has;
    None when they do not stack uniformly (then each is checked alone)."""
    try:
        # Objects of exactly the declared inputs (a missing one fails below).
        if set(map(len, objects)) != {len(spec.inputs)}:
            return None
    except TypeError:  # a number, null
        return None
    inputs: Vars = {}
    rows = None
    for tensor in spec.inputs:
        try:
            arr = np.asarray(list(map(itemgetter(tensor.name), objects)))
        except (KeyError, ValueError, TypeError, IndexError):  # not an object, a missing input, ragged values
            return None
        assert tensor.shape is not None  # batch_problem() checked it
        if arr.dtype.kind == "O":
            return None
        if arr.ndim == len(tensor.shape):  # one row per record, without its batch axis
            per_record = 1
        elif arr.ndim == len(tensor.shape) + 1:
            per_record = arr.shape[1]
            arr = arr.reshape(-1, *arr.shape[2:])
        else:
            return None
        if rows is not None and per_record != rows:
            return None
        rows = per_record
        try:
            inputs[tensor.name] = decode_value(tensor, arr)
        except AppError:
            return None
    if rows is None or rows == 0:
        return None
    return inputs, rows
