"""Where an unexpected exception's traceback goes: a log file, not the terminal.

The CLI prints one line and this file's path; the file holds what a bug report
needs (the command line, versions, the traceback).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from kbuild import __version__
from kbuild.cache import cache_dir


def write_crash_log(argv: Sequence[str]) -> Path:
    """Write the exception being handled to a new log file; return its path."""
    text = "".join(
        [
            f"kbuild {__version__}, Python {platform.python_version()} on {platform.platform()}\n",
            f"command: kbuild {' '.join(argv)}\n",
            f"time: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n\n",
            traceback.format_exc(),
        ]
    )
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}.log"
    for folder in (cache_dir() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    sys.stderr.write(text)  # nowhere to write: the traceback is all that is left
    return Path("(standard error)")
