"""kbuild's build cache: $KBUILD_CACHE_DIR, default ~/.cache/kbuild."""

from __future__ import annotations

import os
from pathlib import Path

from kbuild.runtime.contract.bootstrap import user_cache


def cache_dir() -> Path:
    configured = os.environ.get("KBUILD_CACHE_DIR")
    return Path(configured).expanduser() if configured else user_cache() / "kbuild"
