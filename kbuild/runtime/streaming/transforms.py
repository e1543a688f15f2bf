"""Maki Nage's serve functions, run unchanged around the compiled pipeline.

serve.kafka.transforms names them as Maki Nage's serve config did:

    pre_transform(config)   -> f(event) -> features, or None to skip the event
    predict(model, config)  -> f(features) -> prediction, or None to skip
    post_transform(config)  -> f(event, prediction) -> the output, or None to skip

`event` is the decoded record (any JSON or msgpack value; bytes for raw), the
output is encoded the same way. `model` is the compiled pipeline:
model.predict(x) runs every step on x (one array for a pipeline with one input,
else a dict of named inputs) and returns the one output, or a dict of them. A
hot model update calls predict(model, config) again, as Maki Nage did for a
new model.
Defaults: pre_transform passes the event on, predict is model.predict,
post_transform returns the prediction.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from kbuild.runtime.contract.errors import LoadError
from kbuild.runtime.contract.kafka import TransformsConfig
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.streaming.codec import Codec, CodecError
from kbuild.runtime.streaming.records import Handler, RecordError, RunFn, describe
from kbuild.runtime.tensors import decode_inputs, decode_value


class PipelineModel:
    """The `model` that Maki Nage's predict(model, config) receives."""

    def __init__(self, spec: PipelineSpec, run: RunFn) -> None:
        self.spec = spec
        self._run = run

    def predict(self, x: Any) -> Any:
        specs = self.spec.inputs
        if isinstance(x, Mapping):
            inputs = decode_inputs(dict(x), specs)
        elif len(specs) == 1:
            inputs = {specs[0].name: decode_value(specs[0], x)}
        else:
            names = ", ".join(s.name for s in specs)
            raise ValueError(f"the pipeline has inputs {names}: predict() takes a dict of them")
        outputs = self._run(inputs)
        if outputs is None:
            return None
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs


def transforms_handler(
    app_dir: Path,
    transforms: TransformsConfig,
    source: Codec,
    sink: Codec,
    spec: PipelineSpec,
    run: RunFn,
    current: Callable[[], object],
) -> Handler:
    """`current()` names the model being served: predict(model, config) is
    called again whenever it changes, as Maki Nage did for each new model."""
    if transforms.code is not None:
        _add_to_path(app_dir, transforms.code)
    config = dict(transforms.config)
    pre = _factory(transforms.pre_transform, "pre_transform")
    post = _factory(transforms.post_transform, "post_transform")
    predict_factory = _factory(transforms.predict, "predict")
    pre_fn: Callable[[Any], Any] = pre(config) if pre else _identity
    post_fn: Callable[[Any, Any], Any] = post(config) if post else _prediction
    for name, fn in (("pre_transform", pre_fn), ("post_transform", post_fn)):
        if not callable(fn):
            raise LoadError(f"serve.kafka.transforms.{name}(config) returned {type(fn).__name__}, not a function")
    model = PipelineModel(spec, run)
    bound: list[tuple[object, Callable[[Any], Any]]] = []

    def predict_for(served: object) -> Callable[[Any], Any]:
        if bound and bound[0][0] is served:
            return bound[0][1]
        fn = predict_factory(model, config) if predict_factory else model.predict
        if not callable(fn):
            raise TypeError(f"predict(model, config) returned {type(fn).__name__}, not a function")
        bound[:] = [(served, fn)]
        return fn

    def handle(value: bytes | None) -> bytes | None:
        if value is None:
            raise RecordError("decode", "the record has no value")
        try:
            event = source.decode(value)
        except CodecError as e:
            raise RecordError("decode", str(e)) from None
        try:
            features = pre_fn(event)
            if features is None:
                return None
            prediction = predict_for(current())(features)
            if prediction is None:
                return None
            result = post_fn(event, prediction)
        except Exception as e:  # user code raises anything
            raise RecordError("pipeline", describe(e)) from e
        if result is None:
            return None
        try:
            return sink.encode(result)
        except CodecError as e:
            raise RecordError("encode", str(e)) from None

    return handle


def _identity(event: Any) -> Any:
    return event


def _prediction(event: Any, prediction: Any) -> Any:
    return prediction


def _factory(reference: str | None, what: str) -> Callable[..., Any] | None:
    if reference is None:
        return None
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError(f"serve.kafka.transforms.{what}: {reference!r} must look like 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ModuleNotFoundError as e:
        raise LoadError(f"serve.kafka.transforms.{what}: cannot import {e.name!r}") from None
    except AttributeError:
        raise LoadError(f"serve.kafka.transforms.{what}: {module_name} has no {attr!r}") from None
    except Exception as e:  # the module's own import-time code failed
        raise LoadError(f"serve.kafka.transforms.{what}: importing {module_name} failed: {describe(e)}") from e
    if not callable(obj):
        raise LoadError(f"serve.kafka.transforms.{what}: {reference} is not callable")
    return cast(Callable[..., Any], obj)


def _add_to_path(app_dir: Path, code: str) -> None:
    path = (app_dir / code).resolve()
    if not path.is_relative_to(app_dir.resolve()):
        raise LoadError(f"serve.kafka.transforms.code {code!r} leaves the app folder")
    if not path.exists():
        raise LoadError(f"serve.kafka.transforms.code {code!r} not found in {app_dir}")
    folder = str(path.parent if path.is_file() else path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
