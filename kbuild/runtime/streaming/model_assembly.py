"""Model chunks from the model topic -> verified model files on disk.

The signature is checked on a model's first chunk, so an unsigned or forged
model is refused before a byte of it is written; the sha256 and size are
checked when its last chunk arrives. Chunks go straight to a file: a model
larger than memory still arrives.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kbuild.runtime.contract.model_message import Chunk, Manifest, signature_ok

# Publications in progress at once (interleaved publishers, a publisher that
# died half-way); the oldest is abandoned beyond this.
MAX_OPEN = 4
# Model ids remembered as refused, so their later chunks are skipped quietly.
MAX_REFUSED = 256


class Refused(Exception):
    def __init__(self, manifest: Manifest, reason: str) -> None:
        super().__init__(reason)
        self.manifest = manifest
        self.reason = reason


@dataclass(frozen=True)
class Completed:
    manifest: Manifest
    path: Path  # <models dir>/<id>/<name>
    offset: int  # of the last chunk


class Verifier:
    def __init__(self, key: bytes | None, allow_unsigned: bool) -> None:
        self.key = key
        self.allow_unsigned = allow_unsigned

    def problem(self, chunk: Chunk) -> str | None:
        """Why this model must be refused, or None."""
        if chunk.signature is None:
            if self.allow_unsigned:
                return None
            return "unsigned (publish it with --key-file)"
        if self.key is None:
            if self.allow_unsigned:
                return None
            return "signed, but this replica has no key (set KBUILD_MODEL_KEY_FILE)"
        if not signature_ok(self.key, chunk.manifest, chunk.signature):
            return "bad signature (signed with another key, or altered)"
        return None


class _Open:
    def __init__(self, manifest: Manifest, folder: Path) -> None:
        self.manifest = manifest
        self.folder = folder
        self.next = 0
        self.size = 0
        self.digest = hashlib.sha256()
        folder.mkdir(parents=True)
        self.file: IO[bytes] = (folder / (manifest.name + ".part")).open("wb")

    def discard(self) -> None:
        self.file.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class Assembler:
    def __init__(self, folder: Path, verifier: Verifier) -> None:
        self.folder = folder
        self.verifier = verifier
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._refused: OrderedDict[str, None] = OrderedDict()

    def feed(self, chunk: Chunk, data: bytes, offset: int) -> Completed | None:
        """Raises Refused once per refused model; None while incomplete."""
        manifest = chunk.manifest
        if manifest.id in self._refused:
            return None
        current = self._open.get(manifest.id)
        if current is None:
            if chunk.index != 0:
                return None  # its start lies before where we began to read
            problem = self.verifier.problem(chunk)
            if problem is not None:
                self._refuse(manifest)
                raise Refused(manifest, problem)
            folder = self.folder / manifest.id
            shutil.rmtree(folder, ignore_errors=True)  # a replay of the same model
            current = self._open[manifest.id] = _Open(manifest, folder)
            while len(self._open) > MAX_OPEN:
                self._open.popitem(last=False)[1].discard()
        if chunk.manifest != current.manifest or chunk.index != current.next:
            # A gap or a forged follow-up chunk: the model cannot be trusted whole.
            self._drop(manifest.id)
            self._refuse(manifest)
            raise Refused(manifest, f"chunk {chunk.index} arrived where chunk {current.next} was due")
        current.file.write(data)
        current.digest.update(data)
        current.size += len(data)
        current.next += 1
        if current.next < manifest.chunks:
            return None
        del self._open[manifest.id]
        current.file.close()
        part = current.folder / (manifest.name + ".part")
        if current.size != manifest.size or current.digest.hexdigest() != manifest.sha256:
            current.discard()
            self._refuse(manifest)
            raise Refused(manifest, "content does not match its sha256 (corrupted or altered)")
        final = part.with_name(manifest.name)
        part.rename(final)
        return Completed(manifest, final, offset)

    def open_ids(self) -> set[str]:
        return set(self._open)

    def reset(self) -> None:
        for item in self._open.values():
            item.discard()
        self._open.clear()

    def _drop(self, model_id: str) -> None:
        item = self._open.pop(model_id, None)
        if item is not None:
            item.discard()

    def _refuse(self, manifest: Manifest) -> None:
        self._refused[manifest.id] = None
        while len(self._refused) > MAX_REFUSED:
            self._refused.popitem(last=False)
