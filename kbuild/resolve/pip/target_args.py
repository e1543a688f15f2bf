"""pip's options that select the spin's wheels instead of this machine's."""

from __future__ import annotations

from collections.abc import Sequence

from kbuild.plan.spins import Spin


def pip_target_args(spin: Spin, index_urls: Sequence[str] = ()) -> list[str]:
    """pip options that select wheels for the spin's platform instead of this machine's,
    with the given extra indexes (already probed: see kbuild.resolve.indexes)."""
    args = ["--only-binary=:all:", "--python-version", spin.python, "--implementation", "cp"]
    for abi in (spin.python_tag, "abi3", "none"):
        args += ["--abi", abi]
    for tag in spin.platform_tags():
        args += ["--platform", tag]
    for url in index_urls:
        args += ["--extra-index-url", url]
    return args
