"""NVIDIA Triton through PyTriton (its wheel carries tritonserver and the
Python backend), as its documentation binds a Python model: an @batch infer
function, dynamic batching on (max_batch_size 32, 2 ms queue delay).

    PEER_MODEL=text python pytriton_server.py HTTP_PORT GRPC_PORT METRICS_PORT
"""

from __future__ import annotations

import os
import sys
from typing import Any

import handlers
import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

KIND = os.environ.get("PEER_MODEL", "tabular")
model = handlers.MODELS[KIND]()


@batch
def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
    if KIND == "tabular":
        return {"predict": np.asarray(model(inputs["features"]), dtype=np.int64).reshape(-1, 1)}
    rows = [v.decode() for v in inputs[handlers.FIELDS[KIND]].reshape(-1).tolist()]
    labels, probs = model(rows)
    return {
        "label": np.array([[a.encode()] for a in labels], dtype=np.bytes_),
        "probability": np.asarray(probs, dtype=np.float32).reshape(-1, 1),
    }


def tensors() -> tuple[list[Tensor], list[Tensor]]:
    if KIND == "tabular":
        return [Tensor(name="features", dtype=np.float32, shape=(4,))], [
            Tensor(name="predict", dtype=np.int64, shape=(1,))
        ]
    field = handlers.FIELDS[KIND]
    return (
        [Tensor(name=field, dtype=np.bytes_, shape=(1,))],
        [Tensor(name="label", dtype=np.bytes_, shape=(1,)), Tensor(name="probability", dtype=np.float32, shape=(1,))],
    )


if __name__ == "__main__":
    http, grpc, metrics = (int(a) for a in sys.argv[1:4])
    inputs, outputs = tensors()
    config = TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics)
    with Triton(config=config) as triton:
        triton.bind(
            model_name="peer",
            infer_func=infer,
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(max_batch_size=32, batcher=DynamicBatcher(max_queue_delay_microseconds=2000)),
        )
        triton.serve()
    _: Any = None
