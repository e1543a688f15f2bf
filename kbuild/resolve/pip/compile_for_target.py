"""pip-compile as if on the target platform, in a child process:

    python -m kbuild.resolve.pip.compile_for_target TARGET.json pip-compile-args…

TARGET.json holds {"markers": {...}}, the target's PEP 508 values; the wheel
tags and Python version come from --pip-args. Every patch is applied before
pip-compile starts.
"""

from __future__ import annotations

import json
import sys

from kbuild.resolve.pip.patches import PatchError, markers, requires_python, target_hashes, target_tags

PATCHES = (target_tags, requires_python, target_hashes, markers)


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        target = json.load(f)
    try:
        for patch in PATCHES:
            patch.apply(target)
    except PatchError as error:
        print(f"kbuild: {error}", file=sys.stderr)
        return 2
    from piptools.scripts.compile import cli

    try:
        cli.main(args=argv[1:], prog_name="pip-compile", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
