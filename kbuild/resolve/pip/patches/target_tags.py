"""The package finder uses the target's wheel tags (--platform, --python-version,
--abi from --pip-args): pip-compile builds its finder without them."""

from __future__ import annotations

from typing import Any

from kbuild.resolve.pip.patches import require


def apply(target: dict[str, Any]) -> None:
    from pip._internal.cli import cmdoptions
    from pip._internal.cli.req_command import RequirementCommand

    build_finder = require(RequirementCommand, "_build_package_finder", "RequirementCommand")
    make_target_python = require(cmdoptions, "make_target_python", "pip._internal.cli.cmdoptions")

    def _build_package_finder(self: Any, options: Any, session: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("target_python") is None:
            kwargs["target_python"] = make_target_python(options)
        return build_finder(self, options, session, *args, **kwargs)

    # pip's declared types do not apply to a replacement
    setattr(RequirementCommand, "_build_package_finder", _build_package_finder)
