"""The stream's counts, rendered into the server's /metrics.

The stream's thread updates plain attributes (cheap on the per-record path);
the HTTP server's thread renders them at each scrape through the families of
kbuild.runtime.metrics. Reads of ints written by one other thread need no lock
under the GIL: a scrape may see a batch half counted, never a corrupt number.
"""

from __future__ import annotations

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
        # (topic, partition) -> records behind; replaced whole, never mutated
        self.lag: dict[tuple[str, int], int] = {}
        self.batches = Histogram(SIZE_BUCKETS)
        self.model_version = ""
        self.models_applied = 0
        self.models_refused = 0

    def batch(self, size: int) -> None:
        self.batches.observe(size)

    def set_lag(self, lag: dict[tuple[str, int], int]) -> None:
        self.lag = lag

    def collect(self) -> list[str]:
        def counter(name: str, help_text: str, value: int) -> Counter:
            family = Counter(P + name, help_text)
            family.inc(amount=value)
            return family

        failed = Counter(P + "records_failed_total", "Records that failed, by stage.", ("stage",))
        for stage, n in self.failed.items():
            failed.inc((stage,), n)
        lag_now = self.lag
        lag = Gauge(P + "consumer_lag", "Records behind the end of each assigned partition.", ("topic", "partition"))
        for (topic, partition), n in sorted(lag_now.items()):
            lag.set(n, (topic, str(partition)))
        lag_overall = Gauge(P + "consumer_lag_overall", "Records behind, over all assigned partitions.")
        lag_overall.set(sum(lag_now.values()))
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
            batches,
            model,
            updates,
        ]
        lines: list[str] = []
        for family in families:
            lines.extend(family.render())
        return lines
