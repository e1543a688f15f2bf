"""BentoML 1.4, as its documentation defines a service: a class with
@bentoml.service, one worker per CPU, and a batchable API (adaptive batching,
max_batch_size 32). Started with `bentoml serve bento_service:Peer --port PORT`.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import handlers
import numpy as np

KIND = os.environ.get("PEER_MODEL", "tabular")


@bentoml.service(workers="cpu_count")
class Peer:
    def __init__(self) -> None:
        self.model = handlers.MODELS[KIND]()

    if KIND == "tabular":

        @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=60_000)
        def predict(self, features: np.ndarray) -> np.ndarray:
            return np.asarray(self.model(features))

    elif KIND == "text":

        @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=60_000)
        def predict(self, text: list[str]) -> list[dict[str, Any]]:
            labels, probs = self.model(text)
            return [{"label": a, "probability": float(p)} for a, p in zip(labels, probs, strict=True)]

    else:

        @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=60_000)
        def predict(self, image: list[str]) -> list[dict[str, Any]]:
            labels, probs = self.model(image)
            return [{"label": a, "probability": float(p)} for a, p in zip(labels, probs, strict=True)]
