"""One record through the pipeline: bytes in, bytes out (or None: dropped).

A failure raises RecordError naming the stage (decode, pipeline, encode), which
the stream turns into a dead-letter record; nothing here knows about Kafka.
The pipeline is called through a RunFn (Service.infer_arrays), which runs the
pipeline being served at that moment under the service's one lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kbuild.runtime.contract.errors import AppError, LoadError
from kbuild.runtime.contract.pipeline import PipelineSpec, TensorSpec
from kbuild.runtime.streaming.codec import Codec, CodecError, little_endian
from kbuild.runtime.tensors import Array, Vars, decode_inputs, encode_outputs, raw_value

# the record's value -> the encoded output, or None: dropped
Handler = Callable[[bytes | None], bytes | None]
RunFn = Callable[[Vars], Vars | None]


class RecordError(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


def describe(e: BaseException) -> str:
    return e.message if isinstance(e, AppError) else f"{type(e).__name__}: {e}"


def pipeline_handler(spec: PipelineSpec, source: Codec, sink: Codec, run: RunFn) -> Handler:
    """Records are the pipeline's named inputs (json, msgpack) or the bytes of
    its one BYTES input (raw); outputs likewise."""
    to_inputs = _raw_inputs(spec) if source.name == "raw" else _named_inputs(spec, source)
    to_bytes = _raw_output(spec) if sink.name == "raw" else _named_outputs(sink)

    def handle(value: bytes | None) -> bytes | None:
        if value is None:
            raise RecordError("decode", "the record has no value")
        inputs = to_inputs(value)
        try:
            outputs = run(inputs)
        except Exception as e:  # user code and model libraries raise anything
            raise RecordError("pipeline", describe(e)) from e
        return None if outputs is None else to_bytes(outputs)

    return handle


def _named_inputs(spec: PipelineSpec, source: Codec) -> Callable[[bytes], Vars]:
    def decode(value: bytes) -> Vars:
        try:
            return decode_inputs(source.decode(value), spec.inputs)
        except (CodecError, AppError) as e:
            raise RecordError("decode", describe(e)) from None

    return decode


def _raw_inputs(spec: PipelineSpec) -> Callable[[bytes], Vars]:
    only = _single(spec.inputs, "input")
    if only.datatype != "BYTES":
        raise LoadError(
            f"serve.kafka.source: the raw encoding feeds the record's bytes to one BYTES input; "
            f"input {only.name!r} is {only.datatype}"
        )
    shape = only.shape
    if shape is not None and len(shape) > 1:
        raise LoadError(f"serve.kafka.source: the raw encoding needs input {only.name!r} of shape [] or [-1]")

    def decode(value: bytes) -> Vars:
        return {only.name: raw_value(only, value)}

    return decode


def _named_outputs(sink: Codec) -> Callable[[Vars], bytes]:
    def encode(outputs: Vars) -> bytes:
        try:
            return sink.encode(encode_outputs(outputs))
        except CodecError as e:
            raise RecordError("encode", str(e)) from None

    return encode


def _raw_output(spec: PipelineSpec) -> Callable[[Vars], bytes]:
    only = _single(spec.outputs, "output")

    def encode(outputs: Vars) -> bytes:
        arr: Array = outputs[only.name]
        if arr.dtype.kind not in "OUS":
            return little_endian(arr)
        if arr.size != 1:
            raise RecordError(
                "encode",
                f"the raw encoding sends one value; output {only.name!r} has {arr.size}",
            )
        item: Any = arr.reshape(-1)[0]
        if isinstance(item, str):
            return item.encode("utf-8")
        if isinstance(item, bytes):
            return item
        raise RecordError("encode", f"output {only.name!r} holds {type(item).__name__}, not bytes")

    return encode


def _single(tensors: tuple[TensorSpec, ...], what: str) -> TensorSpec:
    if len(tensors) != 1:
        names = ", ".join(t.name for t in tensors)
        raise LoadError(
            f"serve.kafka: the raw encoding needs a pipeline with one {what}; it has {len(tensors)} ({names})"
        )
    return tensors[0]
