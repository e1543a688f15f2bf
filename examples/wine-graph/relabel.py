"""The canary's two label treatments: the stable one keeps the names, the
canary writes them in capitals (what a new label service might do)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def keep(config: dict[str, Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    return lambda variables: {"cultivar": variables["names"]}


def shout(config: dict[str, Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    return lambda variables: {"cultivar": np.array([str(n).upper() for n in variables["names"]], dtype=object)}
