"""pip and pip-tools, driven for a platform other than this machine's.

kbuild resolves and downloads for the spin's platform: its wheel tags, its
Python version, its PEP 508 marker values. pip does that for `download` with
--platform/--python-version/--abi; pip-compile does not, so the compile runs
in a child process (`python -m kbuild.resolve.pip.compile_for_target`) with pip
patched, one patch a module under patches/.

The patches reach into pip's and pip-tools' internals, so they are written
against known versions (KNOWN_PIP, KNOWN_PIP_TOOLS, also pinned in
pyproject.toml) and each checks that what it patches is there before it
patches it: a pip that moved something fails with a message naming it, never
with a wrong lock.
"""

from __future__ import annotations

KNOWN_PIP = ((23, 2), (26, 0))  # [from, to): the pip versions the patches are tested with
KNOWN_PIP_TOOLS = ((7, 4), (7, 7))
