"""type: python — user code.

Fields: function ("pkg.mod:factory"), code (a file or folder under the app
folder: a file's folder, or the folder itself, goes on sys.path), config (object
passed as factory(config), default {}). The factory returns a callable that
takes the dict of all variables and returns a dict of the variables it sets
(lists and scalars are converted with NumPy) or None to drop the record.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import Runner, StepContext, get_str
from kbuild.runtime.tensors import Vars, as_array


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    function = get_str(step, "function")
    module_name, sep, attr = function.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"function {function!r} must look like 'package.module:factory'")
    config = step.get("config") or {}
    if not isinstance(config, Mapping):
        raise ConfigError("config must be an object")
    if "code" in step:
        _add_to_path(ctx.path(get_str(step, "code"), "code"), module_name)

    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{module_name} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{function} is not callable")
    fn = obj(dict(config))
    if not callable(fn):
        raise ConfigError(f"{function}(config) returned {type(fn).__name__}, not a callable")

    def run(variables: Vars) -> Vars | None:
        # A copy, so code that deletes or replaces entries cannot change what
        # later steps see except through what it returns.
        result = fn(dict(variables))
        if result is None:
            return None
        if not isinstance(result, Mapping):
            raise DataError(f"returned {type(result).__name__}, expected a dict of variables or None")
        out: Vars = {}
        for name, value in result.items():
            if not isinstance(name, str):
                raise DataError(f"returned a variable named {name!r}; names must be strings")
            try:
                out[name] = as_array(value)
            except ValueError as e:
                raise DataError(f"variable {name!r}: cannot make an array: {e}") from None
        return out

    return run


def _add_to_path(code: Path, module_name: str) -> None:
    folder = code.parent if code.is_file() else code
    # Pointing `code` at the package folder itself is the natural mistake; the
    # package is importable from its parent.
    top = module_name.split(".")[0]
    if folder.name == top and (folder / "__init__.py").exists():
        folder = folder.parent
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
