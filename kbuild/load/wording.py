"""How a pipeline check names something that is not there."""

from __future__ import annotations

from kbuild.load.documents import did_you_mean
from kbuild.runtime.contract.errors import short


def unknown(what: str, name: str, known: list[str]) -> str:
    message = f"unknown {what} {short(name)!r}"
    guess = did_you_mean(name, known)
    if guess:
        message += f"; did you mean {guess!r}?"
    if known:
        message += (
            f" (the pipeline's {what}s: {', '.join(known)})" if what != "step" else f" (steps: {', '.join(known)})"
        )
    return message
