"""Stand-in programs for the setup scripts' tests: a bash body made executable."""

from __future__ import annotations

import stat
from pathlib import Path


def stand_in(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
