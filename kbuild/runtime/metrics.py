"""Prometheus metrics in the text exposition format (version 0.0.4).

Written here rather than taken from prometheus_client: the server needs four
metric families, and a dependency that every artifact would carry costs more
than the ~100 lines below. Everything is recorded from the event loop thread,
so no locks are needed; a scrape renders a consistent snapshot.

    kbuild_requests_total{protocol,endpoint,status}        counter
    kbuild_request_duration_seconds{protocol,endpoint}     histogram
    kbuild_requests_in_flight{protocol}                    gauge
    kbuild_batch_requests / kbuild_batch_rows              histograms, per pipeline call
    kbuild_pipeline_duration_seconds                       histogram, per pipeline call
    kbuild_model_load_seconds, kbuild_ready, kbuild_pipeline_info   gauges
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from the cost of a health check to that of a slow model.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

Labels = tuple[str, ...]


class Histogram:
    __slots__ = ("buckets", "counts", "total", "count")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le).
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


class _Family:
    def __init__(self, name: str, kind: str, help_text: str, label_names: Labels) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.label_names = label_names

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def labels(self, values: Labels, extra: str = "") -> str:
        parts = [f'{n}="{_escape(v)}"' for n, v in zip(self.label_names, values, strict=True)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""


class _Scalar(_Family):
    """A family of one number per label set (counters and gauges)."""

    def __init__(self, name: str, kind: str, help_text: str, label_names: Labels) -> None:
        super().__init__(name, kind, help_text, label_names)
        self.values: dict[Labels, float] = {}

    def render(self) -> list[str]:
        lines = self.header()
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{self.labels(labels)} {_num(value)}")
        return lines


class Counter(_Scalar):
    def __init__(self, name: str, help_text: str, label_names: Labels = ()) -> None:
        super().__init__(name, "counter", help_text, label_names)

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount


class Gauge(_Scalar):
    def __init__(self, name: str, help_text: str, label_names: Labels = ()) -> None:
        super().__init__(name, "gauge", help_text, label_names)

    def set(self, value: float, labels: Labels = ()) -> None:
        self.values[labels] = value

    def add(self, amount: float, labels: Labels = ()) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount


class HistogramFamily(_Family):
    def __init__(self, name: str, help_text: str, buckets: Sequence[float], label_names: Labels = ()) -> None:
        super().__init__(name, "histogram", help_text, label_names)
        self.buckets = tuple(buckets)
        self.series: dict[Labels, Histogram] = {}

    def get(self, labels: Labels = ()) -> Histogram:
        h = self.series.get(labels)
        if h is None:
            h = self.series[labels] = Histogram(self.buckets)
        return h

    def observe(self, value: float, labels: Labels = ()) -> None:
        h = self.series.get(labels)
        if h is None:
            h = self.series[labels] = Histogram(self.buckets)
        h.observe(value)

    def render(self) -> list[str]:
        lines = self.header()
        for labels, h in sorted(self.series.items()):
            cumulative = 0
            for bound, n in zip((*h.buckets, math.inf), h.counts, strict=True):
                cumulative += n
                le = 'le="' + ("+Inf" if bound == math.inf else _num(bound)) + '"'
                lines.append(f"{self.name}_bucket{self.labels(labels, le)} {cumulative}")
            lines.append(f"{self.name}_sum{self.labels(labels)} {_num(h.total)}")
            lines.append(f"{self.name}_count{self.labels(labels)} {h.count}")
        return lines


class Metrics:
    """The metrics of one serving process."""

    def __init__(self, pipeline: str, version: str | None) -> None:
        self.requests = Counter(
            "kbuild_requests_total",
            "Requests answered, by protocol, endpoint and status code.",
            ("protocol", "endpoint", "status"),
        )
        self.latency = HistogramFamily(
            "kbuild_request_duration_seconds",
            "Time from a complete request to its answer.",
            LATENCY_BUCKETS,
            ("protocol", "endpoint"),
        )
        self.in_flight = Gauge("kbuild_requests_in_flight", "Requests received and not yet answered.", ("protocol",))
        self.batch_requests = HistogramFamily(
            "kbuild_batch_requests", "Requests combined into one pipeline call.", SIZE_BUCKETS
        )
        self.batch_rows = HistogramFamily(
            "kbuild_batch_rows", "Rows (first dimension) of one pipeline call.", SIZE_BUCKETS
        )
        self.pipeline_time = HistogramFamily(
            "kbuild_pipeline_duration_seconds", "Time of one pipeline call.", LATENCY_BUCKETS
        )
        # The series of the unlabelled histograms, observed on every pipeline call.
        self._batch_requests = self.batch_requests.get()
        self._batch_rows = self.batch_rows.get()
        self._pipeline_time = self.pipeline_time.get()
        self.load_time = Gauge("kbuild_model_load_seconds", "Time taken to load the pipeline.")
        self.ready = Gauge("kbuild_ready", "1 while the server accepts inference requests.")
        info = Gauge("kbuild_pipeline_info", "The pipeline served.", ("pipeline", "version"))
        info.set(1, (pipeline, version or ""))
        self.ready.set(0)
        self._families: list[Counter | Gauge | HistogramFamily] = [
            info,
            self.ready,
            self.load_time,
            self.requests,
            self.latency,
            self.in_flight,
            self.batch_requests,
            self.batch_rows,
            self.pipeline_time,
        ]
        self._collectors: list[Callable[[], list[str]]] = []
        self._samplers: list[Callable[[], None]] = []

    def add_collector(self, collect: Callable[[], list[str]]) -> None:
        """Families of a part that keeps its own counts on another thread (the
        Kafka stream), rendered by `collect` at each scrape after these."""
        self._collectors.append(collect)

    def add_sampler(self, sample: Callable[[], None]) -> None:
        """A function that sets some values of these families, called at each
        scrape before rendering: for what is cheaper counted on demand than
        kept up to date on every request."""
        self._samplers.append(sample)

    def answered(self, protocol: str, endpoint: str, status: str, seconds: float) -> None:
        self.requests.inc((protocol, endpoint, status))
        self.latency.observe(seconds, (protocol, endpoint))

    def batch(self, requests: int, rows: int, seconds: float) -> None:
        self._batch_requests.observe(requests)
        self._batch_rows.observe(rows)
        self._pipeline_time.observe(seconds)

    def render(self) -> bytes:
        for sample in self._samplers:
            sample()
        lines: list[str] = []
        for family in self._families:
            lines.extend(family.render())
        for collect in self._collectors:
            lines.extend(collect())
        for step_family in _STEP_FAMILIES.values():
            lines.extend(step_family.render())
        return ("\n".join(lines) + "\n").encode("utf-8")


# Counters of steps (a split's rows per branch), shared by the process's
# Metrics: a step is built before any server exists.
_STEP_FAMILIES: dict[str, Counter] = {}


def step_counter(name: str, help_text: str, label_names: Labels) -> Counter:
    """The process's counter of that name, made on first use."""
    counter = _STEP_FAMILIES.get(name)
    if counter is None:
        counter = _STEP_FAMILIES[name] = Counter(name, help_text, label_names)
    return counter


def _num(x: float) -> str:
    if x == math.inf:
        return "+Inf"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
