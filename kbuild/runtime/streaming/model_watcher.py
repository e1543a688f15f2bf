"""Hot model updates: read the model topic, load new models beside the stream.

Every replica reads partition 0 of the model topic on its own (assigned, not
subscribed: the consumer group would hand the topic to one replica only). At
start it replays the newest model that verifies: it reads back from the end
in growing windows until it finds one. Then it follows the topic. A verified
model is loaded on this thread by the target step's own module
(PipelineRunner.with_model), tried on the pipeline's samples, and offered to the
stream, which swaps it in between two batches; consumption never waits for a
load. A refused model (unsigned, badly signed, corrupted, older than the
current one, unloadable, failing the samples) changes nothing: it is logged
and counted.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from kbuild.runtime.contract.model_message import (
    Manifest,
    ModelMessageError,
    parse_chunk,
)
from kbuild.runtime.log import log_event
from kbuild.runtime.pipeline_runner import PipelineRunner
from kbuild.runtime.samples import Sample
from kbuild.runtime.streaming.clients import client_logger, incoming_headers
from kbuild.runtime.streaming.metrics import StreamMetrics
from kbuild.runtime.streaming.model_assembly import (
    Assembler,
    Completed,
    Refused,
    Verifier,
)
from kbuild.runtime.streaming.records import describe
from kbuild.runtime.tensors import decode_inputs

FIRST_WINDOW = 16  # messages read back from the end at start; grows 8x per miss
REPLAY_CANDIDATES = 4  # whole models kept per window, newest first, in case the newest fails
IDLE_END_S = 5.0  # no message and no end-of-partition for this long: at the end
RETRY_S = 2.0


@dataclass(frozen=True)
class Candidate:
    pipeline: PipelineRunner
    manifest: Manifest


class ModelSlot:
    """Hands a loaded model from the watcher to the stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._candidate: Candidate | None = None

    def offer(self, candidate: Candidate) -> None:
        with self._lock:
            self._candidate = candidate  # a newer offer replaces one not taken yet

    def take(self) -> Candidate | None:
        if self._candidate is None:  # the common case, without the lock
            return None
        with self._lock:
            candidate, self._candidate = self._candidate, None
        return candidate


class ModelWatcher:
    def __init__(
        self,
        *,
        topic: str,
        step: str,
        settings: dict[str, Any],
        verifier: Verifier,
        base: Callable[[], PipelineRunner | None],
        samples: list[Sample],
        slot: ModelSlot,
        metrics: StreamMetrics,
        log: TextIO,
    ) -> None:
        self.topic = topic
        self.step = step
        self.settings = settings
        self.base = base
        self.samples = samples
        self.slot = slot
        self.metrics = metrics
        self.log = log
        self.replayed = threading.Event()
        self.stopping = threading.Event()
        self.folder = Path(tempfile.mkdtemp(prefix="kbuild-models-"))
        self.assembler = Assembler(self.folder, verifier)
        self.current: Manifest | None = None
        self._thread = threading.Thread(target=self._run, name="kbuild-models", daemon=True)
        self._last_error = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        self._thread.join(timeout)
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- the thread

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self._replay_and_follow()
                except KafkaException as e:
                    self._error(f"model topic {self.topic!r} unavailable", e)
                    self.stopping.wait(RETRY_S)
        except Exception as e:  # a bug here must not take the stream down
            log_event(self.log, "model-watcher-failed", level="error", error=describe(e))
        finally:
            self.replayed.set()

    def _replay_and_follow(self) -> None:
        consumer = Consumer({**self.settings, "logger": client_logger(self.log)})
        try:
            low, high = self._watermarks(consumer, TopicPartition(self.topic, 0))
            position = self._replay(consumer, low, high)
            self.replayed.set()
            self._follow(consumer, position)
        finally:
            consumer.close()

    def _replay(self, consumer: Consumer, low: int, high: int) -> int:
        """Apply the newest model that verifies and loads, reading back from
        the end in growing windows; returns the offset to follow from."""
        position = low
        tried: set[str] = set()
        window = FIRST_WINDOW
        while high > low and not self.stopping.is_set():
            start = max(low, high - window)
            self.assembler.reset()
            found, position = self._scan(consumer, start)
            for completed in reversed(found):
                if completed.manifest.id not in tried:
                    tried.add(completed.manifest.id)
                    if self._try(completed, replay=True):
                        return position
            if start == low:
                break
            window *= 8
        return position

    def _watermarks(self, consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
        except KafkaException:
            # A missing model topic means no model to replay: the stream need
            # not wait for one. The caller tries again with a new client, which
            # sees a topic created since (this one remembers it as unknown).
            self.replayed.set()
            raise
        return int(low), int(high)

    def _scan(self, consumer: Consumer, start: int) -> tuple[list[Completed], int]:
        """Read from `start` to the end of the partition: the newest models
        that arrived whole and verified, oldest first, and the offset after
        the last message read."""
        consumer.assign([TopicPartition(self.topic, 0, start)])
        found: list[Completed] = []
        position = start
        idle_since = time.monotonic()
        while not self.stopping.is_set():
            msg = consumer.poll(0.5)
            if msg is None:
                if time.monotonic() - idle_since > IDLE_END_S:
                    break
                continue
            idle_since = time.monotonic()
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    break
                self._error("model topic", KafkaException(err))
                continue
            position = (msg.offset() or 0) + 1
            completed = self._feed(msg)
            if completed is not None:
                found.append(completed)
                if len(found) > REPLAY_CANDIDATES:
                    shutil.rmtree(found.pop(0).path.parent, ignore_errors=True)
        return found, position

    def _follow(self, consumer: Consumer, position: int) -> None:
        consumer.assign([TopicPartition(self.topic, 0, position)])
        while not self.stopping.is_set():
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._error("model topic", KafkaException(err))
                continue
            completed = self._feed(msg)
            if completed is not None:
                self._try(completed, replay=False)

    def _feed(self, msg: Message) -> Completed | None:
        try:
            chunk = parse_chunk(incoming_headers(msg))
            return self.assembler.feed(chunk, msg.value() or b"", msg.offset() or 0)
        except ModelMessageError as e:
            self._refuse(None, f"offset {msg.offset()}: {e}")
        except Refused as e:
            self._refuse(e.manifest, e.reason)
        return None

    # -- loading

    def _try(self, completed: Completed, replay: bool) -> bool:
        """Load, check and offer a model; False when it was refused."""
        manifest = completed.manifest
        current = self.current
        if current is not None and manifest.id == current.id:
            return True
        if current is not None and manifest.published_at_ms < current.published_at_ms:
            self._refuse(manifest, f"published before the current model (version {current.version})")
            return False
        base = self._wait_for_base()
        if base is None:
            return False
        t0 = time.monotonic()
        try:
            candidate = base.with_model(self.step, completed.path)
            for i, sample in enumerate(self.samples, 1):
                try:
                    candidate.run(decode_inputs(sample.inputs, candidate.spec.inputs))
                except Exception as e:  # any failure means the model does not fit
                    raise ValueError(f"fails on sample {i}: {describe(e)}") from e
        except Exception as e:  # step modules raise LoadError; anything else is refused too
            self._refuse(manifest, f"cannot be loaded: {describe(e)}")
            shutil.rmtree(completed.path.parent, ignore_errors=True)
            return False
        previous, self.current = self.current, manifest
        self._keep_only({manifest.id} | ({previous.id} if previous is not None else set()))
        log_event(
            self.log,
            "model-loaded",
            step=self.step,
            version=manifest.version,
            id=manifest.id,
            bytes=manifest.size,
            replay=replay,
            load_s=round(time.monotonic() - t0, 3),
        )
        self.slot.offer(Candidate(candidate, manifest))
        return True

    def _wait_for_base(self) -> PipelineRunner | None:
        """The loaded built-in pipeline (the stream starts after it anyway)."""
        while not self.stopping.is_set():
            base = self.base()
            if base is not None:
                return base
            self.stopping.wait(0.05)
        return None

    def _keep_only(self, keep: set[str]) -> None:
        """Remove the files of models that can no longer be swapped in (the
        previous one may answer until the next batch) or are still arriving."""
        keep = keep | self.assembler.open_ids()
        for folder in self.folder.iterdir():
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    def _refuse(self, manifest: Manifest | None, reason: str) -> None:
        self.metrics.models_refused += 1
        fields: dict[str, Any] = {"step": self.step, "reason": reason}
        if manifest is not None:
            fields.update(version=manifest.version, id=manifest.id)
        log_event(self.log, "model-refused", level="warning", **fields)

    def _error(self, what: str, e: KafkaException) -> None:
        # The client retries on its own; one line every 10 s is enough to see it.
        now = time.monotonic()
        if now - self._last_error > 10.0:
            self._last_error = now
            log_event(self.log, "kafka-error", level="warning", where=what, error=str(e.args[0] if e.args else e))
