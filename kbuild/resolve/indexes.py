"""Extra package indexes (a spin's, or a backend's such as the PyTorch CPU
index), probed before pip is given them.

pip retries an index it cannot reach for every project it looks up (5 retries,
each waiting up to its timeout: 15 s by default, PIP_DEFAULT_TIMEOUT where
set), so one unreachable extra index turns a lock into a long hang. An index
that does not answer one request within PROBE_TIMEOUT_S is left out; pip then
finds packages on the other indexes and in its find-links folders, and a
resolution that fails says which index was left out and why.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Indexes:
    usable: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (url, why)

    def notes(self) -> list[str]:
        return [
            f"the index {url} was left out: {why}; packages only it serves (such as the CPU "
            "builds of torch) must then come from a pip find-links folder holding their wheels"
            for url, why in self.skipped
        ]


def probe(urls: Sequence[str]) -> Indexes:
    usable: list[str] = []
    skipped: list[tuple[str, str]] = []
    for url in urls:
        why = _unreachable(url)
        if why is None:
            usable.append(url)
        else:
            skipped.append((url, why))
    return Indexes(tuple(usable), tuple(skipped))


@functools.cache
def _unreachable(url: str) -> str | None:
    """None when the index answers (any HTTP status is an answer), else why not."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = urllib.request.url2pathname(parsed.path)
        return None if os.path.isdir(path) else f"no folder {path}"
    if parsed.scheme not in ("http", "https"):
        return f"unsupported URL scheme {parsed.scheme!r}"
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "kbuild"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as error:
        return f"unreachable ({error.reason})"
    except (OSError, ValueError) as error:
        return f"unreachable ({error})"
