"""Run pip-compile as if on the target platform.

pip-tools resolves with the build machine's interpreter: its wheel tags, its
Requires-Python and its environment markers. For a foreign spin (another CPU
architecture or Python version) that gives a wrong lock. This module is run as
`python -m kbuild.lock_target TARGET.json pip-compile-args…`; it makes pip's
package finder use the target's tags (from --platform/--python-version/--abi in
--pip-args), checks Requires-Python against the target's version, and evaluates
PEP 508 markers with the target's values, and hashes only the wheels the target
can install, then hands over to pip-compile.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _patch(marker_env: dict[str, str]) -> None:
    from pip._internal.cli import cmdoptions
    from pip._internal.cli.req_command import RequirementCommand

    build_finder = RequirementCommand._build_package_finder

    def _build_package_finder(self: Any, options: Any, session: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("target_python") is None:
            kwargs["target_python"] = cmdoptions.make_target_python(options)
        return build_finder(self, options, session, *args, **kwargs)

    # monkeypatching pip's internals: setattr, since their declared types do not apply
    setattr(RequirementCommand, "_build_package_finder", _build_package_finder)

    # make_resolver is a classmethod, staticmethod or plain method depending on pip's version
    original = RequirementCommand.__dict__["make_resolver"]
    wrapper = type(original) if isinstance(original, (staticmethod, classmethod)) else None
    factory = original.__func__ if wrapper else original

    def _make_resolver(*args: Any, **kwargs: Any) -> Any:
        options = kwargs.get("options")
        if kwargs.get("py_version_info") is None and options is not None and options.python_version:
            kwargs["py_version_info"] = options.python_version
        return factory(*args, **kwargs)

    setattr(RequirementCommand, "make_resolver", wrapper(_make_resolver) if wrapper else _make_resolver)

    # pip-tools lifts the wheel-tag filter while hashing, to make locks portable;
    # a spin's lock must hold the hashes of that spin's wheels only.
    import contextlib

    from piptools.repositories.pypi import PyPIRepository

    setattr(PyPIRepository, "allow_all_wheels", lambda self: contextlib.nullcontext())

    def _environment() -> dict[str, str]:
        return dict(marker_env)

    import pip._vendor.packaging.markers as pip_markers

    setattr(pip_markers, "default_environment", _environment)
    try:
        import packaging.markers as markers
    except ImportError:
        pass
    else:
        setattr(markers, "default_environment", _environment)


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        target = json.load(f)
    _patch(target["markers"])
    from piptools.scripts.compile import cli

    try:
        cli.main(args=argv[1:], prog_name="pip-compile", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
