"""Requires-Python is checked against the target's Python version, not this
interpreter's."""

from __future__ import annotations

from typing import Any

from kbuild.resolve.pip.patches import require


def apply(target: dict[str, Any]) -> None:
    from pip._internal.cli.req_command import RequirementCommand

    # a classmethod, staticmethod or plain method, depending on pip's version
    original = require(RequirementCommand, "make_resolver", "RequirementCommand")
    wrapper = type(original) if isinstance(original, (staticmethod, classmethod)) else None
    factory = original.__func__ if wrapper else original

    def _make_resolver(*args: Any, **kwargs: Any) -> Any:
        options = kwargs.get("options")
        if kwargs.get("py_version_info") is None and options is not None and options.python_version:
            kwargs["py_version_info"] = options.python_version
        return factory(*args, **kwargs)

    setattr(RequirementCommand, "make_resolver", wrapper(_make_resolver) if wrapper else _make_resolver)
