"""A Keras model (.keras, .h5) or a TensorFlow SavedModel -> ONNX with tf2onnx,
and the two compared: on the pipeline's samples and on generated inputs of
the model's declared shapes at several batch sizes. Runs in the build-side
environment, on TensorFlow's CPU kernels with one thread."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tensorflow as tf
import tf2onnx

from kbuild.convert.workers.equivalence import CheckpointError, Feed, canonical_onnx, compare, exporter_error, session

OPSET = 17
BATCHES = (1, 2, 7, 32)
FREE_AXIS = 8  # the length given to an axis other than the batch that the model leaves free
# what loading gives: the ONNX model, the inputs' specs, the framework's run, the output names
Loaded = tuple[onnx.ModelProto, list[tf.TensorSpec], Callable[[Feed], list[np.ndarray]], list[str]]


def _keras(path: Path) -> Loaded:
    import keras

    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # Keras says what it could not read
        raise CheckpointError(f"Keras cannot load {path.name}: {exporter_error(e)}") from None
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in model.inputs]
    names = [s.name for s in specs]
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=specs, opset=OPSET)
    except Exception as e:  # an op tf2onnx has no conversion for, in its words
        raise CheckpointError(f"tf2onnx cannot convert this model: {exporter_error(e)}") from None
    outputs = [str(n) for n in getattr(model, "output_names", None) or []]

    def run(feed: Feed) -> list[np.ndarray]:
        given = [feed[n] for n in names]
        result = model(given if len(given) > 1 else given[0], training=False)
        values = list(result.values()) if isinstance(result, dict) else result
        return [np.asarray(v) for v in (values if isinstance(values, (list, tuple)) else [values])]

    return proto, specs, run, outputs


def _saved_model(path: Path, signature: str, tags: list[str]) -> Loaded:
    from tf2onnx import tf_loader

    try:
        loaded = tf.saved_model.load(str(path), tags=tags)
        function = loaded.signatures[signature]
    except KeyError:
        raise CheckpointError(f"the SavedModel has no signature {signature!r} under tags {tags}") from None
    except Exception as e:
        raise CheckpointError(f"TensorFlow cannot load the SavedModel: {exporter_error(e)}") from None
    declared = function.structured_input_signature[1]
    specs = [tf.TensorSpec(s.shape, s.dtype, name=k) for k, s in sorted(declared.items())]
    outputs = sorted(function.structured_outputs)
    # tf2onnx's public API takes Keras models and tf.functions; a SavedModel's
    # signature goes the way its own command line takes one (--saved-model),
    # which names the ONNX inputs and outputs by the signature's keys. The lock
    # pins the tf2onnx these private names are read from.
    try:
        graph, inputs, output_tensors, tables, renames = tf_loader.from_saved_model(
            str(path),
            None,
            None,
            tag=tags,
            signatures=[signature],
            return_initialized_tables=True,
            return_tensors_to_rename=True,
        )
        proto, _ = tf2onnx.convert._convert_common(
            graph,
            name="model",
            opset=OPSET,
            input_names=inputs,
            output_names=output_tensors,
            tensors_to_rename=renames,
            initialized_tables=tables,
        )
    except Exception as e:
        raise CheckpointError(f"tf2onnx cannot convert this SavedModel: {exporter_error(e)}") from None

    def run(feed: Feed) -> list[np.ndarray]:
        result = function(**{s.name: tf.constant(feed[s.name]) for s in specs})
        return [result[name].numpy() for name in outputs]

    return proto, specs, run, outputs


def _rename_outputs(proto: onnx.ModelProto, names: list[str]) -> list[str]:
    """The ONNX outputs named as the model names them, where the exporter named them otherwise."""
    current = [o.name for o in proto.graph.output]
    if len(names) != len(current) or names == current:
        return current
    renames = dict(zip(current, names, strict=True))
    for node in proto.graph.node:
        node.output[:] = [renames.get(n, n) for n in node.output]
        node.input[:] = [renames.get(n, n) for n in node.input]
    for output in proto.graph.output:
        output.name = renames[output.name]
    return names


def _generated(spec: tf.TensorSpec, size: int, samples: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    shape = [size if i == 0 else (d if d is not None else FREE_AXIS) for i, d in enumerate(spec.shape.as_list())]
    dtype = spec.dtype.as_numpy_dtype
    if spec.dtype.is_floating:
        if samples is not None and samples.ndim == len(shape) and samples.shape[1:] == tuple(shape[1:]):
            # about where the samples lie, feature by feature
            centre, spread = samples.mean(axis=0), samples.std(axis=0) + 0.1 * (np.abs(samples.mean(axis=0)) + 1)
            return np.asarray((centre + rng.normal(0.0, 1.0, shape) * spread).astype(dtype))
        return rng.normal(0.0, 1.0, shape).astype(dtype)
    if spec.dtype.is_bool:
        return rng.integers(0, 2, shape).astype(bool)
    if spec.dtype.is_integer:
        return rng.integers(0, 10, shape).astype(dtype)
    raise CheckpointError(f"input {spec.name!r} is {spec.dtype.name}: kbuild generates numbers and booleans only")


def convert(request: Mapping[str, Any], output: Path) -> dict[str, Any]:
    path = Path(request["checkpoint"])
    settings = request.get("settings") or {}
    if request["kind"] == "keras":
        proto, specs, run, declared = _keras(path)
    else:
        proto, specs, run, declared = _saved_model(path, settings["signature"], list(settings["tags"]))
    names = [s.name for s in specs]
    outputs = _rename_outputs(proto, declared)
    onnx_path = output / "model.onnx"
    onnx_path.write_bytes(proto.SerializeToString())
    canonical_onnx(onnx_path)

    def framework(feed: Feed) -> dict[str, np.ndarray]:
        return dict(zip(outputs, run(feed), strict=True))

    samples: dict[str, list[Any]] = dict(request.get("samples") or {})
    if "" in samples and len(names) == 1:  # the only input, named once the model is loaded
        samples[names[0]] = samples.pop("")
    dtypes = {s.name: s.dtype.as_numpy_dtype for s in specs}
    rng = np.random.default_rng(0)
    feeds: list[tuple[str, Feed]] = []
    if samples and set(samples) == set(names):  # each sample is a whole tensor per input
        for i in range(min(len(v) for v in samples.values())):
            feeds.append((f"sample {i + 1}", {n: np.asarray(samples[n][i], dtype=dtypes[n]) for n in names}))
    rows = {n: np.concatenate([f[n] for _, f in feeds]) for n in names} if feeds else {}
    batched = all(s.shape.rank and s.shape.as_list()[0] is None for s in specs)
    fixed = int(specs[0].shape.as_list()[0] or 1) if specs and specs[0].shape.rank else 1
    for size in BATCHES if batched else (fixed,):
        feeds.append(
            (f"generated batch of {size}", {s.name: _generated(s, size, rows.get(s.name), rng) for s in specs})
        )
    result = compare(framework, session(onnx_path), feeds)
    result["dynamic_axes"] = {s.name: [i for i, d in enumerate(s.shape.as_list()) if d is None] for s in specs}
    result["framework"] = {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__}
    if request["kind"] == "keras":
        import keras

        result["framework"]["keras"] = keras.__version__
    return result
