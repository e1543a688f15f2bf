"""PEP 508 markers are evaluated with the target's values (platform_machine,
python_version, ...), in pip's vendored packaging and in packaging itself."""

from __future__ import annotations

from typing import Any

from kbuild.resolve.pip.patches import require


def apply(target: dict[str, Any]) -> None:
    marker_env = dict(target["markers"])

    def _environment() -> dict[str, str]:
        return dict(marker_env)

    import pip._vendor.packaging.markers as pip_markers

    require(pip_markers, "default_environment", "pip._vendor.packaging.markers")
    setattr(pip_markers, "default_environment", _environment)
    try:
        import packaging.markers as markers
    except ImportError:
        return
    setattr(markers, "default_environment", _environment)
