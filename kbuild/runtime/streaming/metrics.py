"""The stream's counts, rendered into the server's /metrics.

The stream's thread updates plain attributes (cheap on the per-record path);
the HTTP server's thread renders them at each scrape through the families of
kbuild.runtime.metrics. Reads of ints written by one other thread need no lock
under the GIL: a scrape may see a batch half counted, never a corrupt number.

Two lags, per partition assigned to this replica: `consumer_lag` counts what
it has yet to read (its fetch is behind), `consumer_commit_lag` what the group
has not committed (read, in flight or unread): the lag autoscalers scale on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kbuild.runtime.metrics import (
    SIZE_BUCKETS,
    Counter,
    Gauge,
    Histogram,
    HistogramFamily,
)

STAGES = ("decode", "pipeline", "encode", "delivery")
P = "kbuild_kafka_"


class StreamMetrics:
    def __init__(self) -> None:
        self.records_in = 0
        self.records_out = 0
        self.dropped = 0
        self.dead_lettered = 0
        self.failed = dict.fromkeys(STAGES, 0)
        self.delivery_retries = 0
        self.commits = 0
        self.commit_failures = 0
        self.consumer_errors = 0
        # (topic, partition) -> records behind, of the partitions assigned to
        # this replica; each replaced whole, never mutated (Lags)
        self.lag: dict[tuple[str, int], int] = {}
        self.commit_lag: dict[tuple[str, int], int] = {}
        self.batches = Histogram(SIZE_BUCKETS)
        self.model_version = ""
        self.models_applied = 0
        self.models_refused = 0

    def batch(self, size: int) -> None:
        self.batches.observe(size)

    def set_lag(self, lags: Lags) -> None:
        self.lag, self.commit_lag = lags.read, lags.committed

    def collect(self) -> list[str]:
        def counter(name: str, help_text: str, value: int) -> Counter:
            family = Counter(P + name, help_text)
            family.inc(amount=value)
            return family

        failed = Counter(P + "records_failed_total", "Records that failed, by stage.", ("stage",))
        for stage, n in self.failed.items():
            failed.inc((stage,), n)
        lag, lag_overall = _lag_gauges(
            "consumer_lag",
            self.lag,
            "Records this replica has yet to read: from its read position to the end of each partition assigned to it.",
        )
        commit_lag, commit_lag_overall = _lag_gauges(
            "consumer_commit_lag",
            self.commit_lag,
            "Records after the group's committed offset on each partition assigned to this replica (read or not, "
            "answered or not): what KEDA's kafka trigger counts; summed over the replicas, the consumer group's lag.",
        )
        batches = HistogramFamily(P + "batch_size", "Records per micro-batch.", SIZE_BUCKETS)
        batches.series[()] = self.batches
        model = Gauge(P + "model_info", "The model version answering records.", ("version",))
        model.set(1, (self.model_version,))
        updates = Counter(P + "model_updates_total", "Model updates from the model topic, by result.", ("result",))
        updates.inc(("applied",), self.models_applied)
        updates.inc(("refused",), self.models_refused)
        families: list[Counter | Gauge | HistogramFamily] = [
            counter("records_in_total", "Records consumed from the source topic.", self.records_in),
            counter("records_out_total", "Outputs the broker acknowledged on the sink topic.", self.records_out),
            counter("records_dropped_total", "Records the pipeline dropped (a step returned None).", self.dropped),
            counter(
                "records_dead_lettered_total",
                "Failed records the broker acknowledged on the dead-letter topic.",
                self.dead_lettered,
            ),
            failed,
            counter("delivery_retries_total", "Outputs produced again after a failed delivery.", self.delivery_retries),
            counter("commits_total", "Offset commits sent.", self.commits),
            counter("commit_failures_total", "Offset commits that failed (sent again).", self.commit_failures),
            counter("consumer_errors_total", "Errors the consumer reported.", self.consumer_errors),
            lag,
            lag_overall,
            commit_lag,
            commit_lag_overall,
            batches,
            model,
            updates,
        ]
        lines: list[str] = []
        for family in families:
            lines.extend(family.render())
        return lines


@dataclass(frozen=True)
class Lags:
    """(topic, partition) -> records behind, for the partitions assigned to one replica."""

    read: dict[tuple[str, int], int]  # end of the partition - the replica's read position
    committed: dict[tuple[str, int], int]  # end of the partition - the group's committed offset


def measure_lags(
    ends: Mapping[tuple[str, int], int],
    positions: Mapping[tuple[str, int], int],
    committed: Mapping[tuple[str, int], int],
) -> Lags:
    """Both lags from the partitions' end offsets, the read positions and the
    committed offsets (negative or absent: unknown, left out)."""

    def behind(marks: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        return {key: max(0, ends[key] - at) for key, at in marks.items() if at >= 0 and ends.get(key, -1) >= 0}

    return Lags(read=behind(positions), committed=behind(committed))


def _lag_gauges(name: str, lags: Mapping[tuple[str, int], int], help_text: str) -> tuple[Gauge, Gauge]:
    per = Gauge(P + name, help_text, ("topic", "partition"))
    for (topic, partition), n in sorted(lags.items()):
        per.set(n, (topic, str(partition)))
    overall = Gauge(P + name + "_overall", f"The sum of {P}{name} over the partitions assigned to this replica.")
    overall.set(sum(lags.values()))
    return per, overall
