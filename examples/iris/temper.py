"""User code for the iris-sklearn example: soften probabilities with a temperature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def make(config: dict[str, Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    temperature = float(config.get("temperature", 1.0))

    def temper(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits = np.log(np.clip(variables["probs"], 1e-12, 1.0)) / temperature
        scores = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {"scores": (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)}

    return temper
