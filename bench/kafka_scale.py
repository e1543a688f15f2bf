"""Kafka scale-out: one, two and four replicas of a streaming artifact in one
consumer group, against the Tansu broker, on a source topic of 4 partitions.

    python bench/kafka_scale.py            # prints the Markdown section
    python bench/kafka_scale.py --write    # and puts it into BENCHMARKS.md

The replicas (examples/iris-stream, unpacked once) start first and join the
group; then the records are written, so the group is settled before the first
record arrives. Rate: records / (last output's timestamp - first's). Every
output is read back: keys lost (never answered) and answered twice are
counted. The lag is what a KEDA kafka trigger sees: the group's committed
offsets against the partitions' ends, read from the broker every 0.5 s; beside
it the sum of the replicas' own kbuild_kafka_consumer_lag_overall gauges,
scraped at the same moments. Tansu answers ListOffsets with less than the
partition's end while records are still being appended (20,000 records on 4
partitions read back as 13,808 by their watermarks), so the lag both read
here is below the truth: a real Kafka broker gives KEDA the full figure. On this 2-core machine more replicas share the
same two cores: the table shows what the group does, not what more machines
would give.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK, free_port, machine, median, table, write_section  # noqa: E402
from streaming import output_span_of, unpacked_artifact  # noqa: E402
from streaming import scrape as scrape_all  # noqa: E402

sys.path.insert(0, str(REPO))
from tests.helpers.kafka_broker import Broker, start_broker  # noqa: E402

COMMAND = "python bench/kafka_scale.py --write"
PARTITIONS = 4
REPLICAS = (1, 2, 4)


def start_replicas(
    root: Path,
    broker: Broker,
    source: str,
    sink: str,
    group: str,
    n: int,
) -> list[tuple[subprocess.Popen[bytes], int]]:
    pipeline = root / "app" / "pipeline.json"
    doc = json.loads(pipeline.read_text())
    doc["serve"]["kafka"].update(source={"topic": source, "encoding": "json"}, sink={"topic": sink, "encoding": "json"})
    doc["serve"]["kafka"].pop("models", None)
    doc["serve"]["kafka"].pop("dead_letter", None)
    pipeline.write_text(json.dumps(doc))
    env = {
        **os.environ,
        "PYTHONPATH": str(root / "site"),
        "KBUILD_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KBUILD_KAFKA_GROUP_ID": group,
    }
    replicas = []
    for i in range(n):
        port = free_port()
        log = (WORK / f"scale-replica-{i}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "kbuild.runtime", "--root", str(root), "serve", "--http-port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
        replicas.append((proc, port))
    return replicas


def group_lag(broker: Broker, group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = reader.committed(parts, timeout=10)
        lag = 0
        for tp in committed:
            _, high = reader.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            lag += max(0, high - max(tp.offset, 0))  # per partition, never below zero, as KEDA counts it
        return lag
    finally:
        reader.close()


def fill(broker: Broker, source: str, count: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for i in range(count):
        while True:
            try:
                producer.produce(source, json.dumps({"features": [[5.1, 3.5, 1.4, 0.2]]}).encode(), f"k{i}".encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def read_keys(broker: Broker, sink: str) -> list[str]:
    from confluent_kafka import Consumer, TopicPartition

    # assigned, not subscribed: no group to join, no rebalance to wait for
    reader = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": f"read-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    reader.assign([TopicPartition(sink, p, 0) for p in range(PARTITIONS)])
    keys: list[str] = []
    idle = time.monotonic()
    try:
        while time.monotonic() - idle < 5:
            for message in reader.consume(1000, 1.0):
                key = message.key() if message.error() is None else None
                if key is not None:
                    keys.append(key.decode())
                    idle = time.monotonic()
    finally:
        reader.close()
    return keys


def run(root: Path, broker: Broker, replicas: int, count: int) -> dict[str, Any]:
    source, sink = broker.topic("scale-in", PARTITIONS), broker.topic("scale-out", PARTITIONS)
    group = f"scale-{uuid.uuid4().hex[:8]}"
    procs = start_replicas(root, broker, source, sink, group, replicas)
    lags: list[tuple[int, float]] = []
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 120
        while not all(scrape_all(port) for _, port in procs):
            if time.monotonic() > deadline:
                raise RuntimeError("replicas did not come up")
            time.sleep(0.5)
        time.sleep(12)  # the group settles: every replica assigned its partitions
        fill(broker, source, count)

        def watch() -> None:
            while not stop.is_set():
                own = sum(scrape_all(port).get("kbuild_kafka_consumer_lag_overall", 0.0) for _, port in procs)
                lags.append((group_lag(broker, group, source), own))
                stop.wait(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        deadline = time.monotonic() + 900
        while sum(scrape_all(port).get("kbuild_kafka_records_out_total", 0.0) for _, port in procs) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the group did not answer every record")
            time.sleep(0.5)
        time.sleep(3)  # the last commits land
        stop.set()
        watcher.join()
        final_lag = group_lag(broker, group, source)
    finally:
        stop.set()
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(60)
    keys = read_keys(broker, sink)
    unique = set(keys)
    return {
        "rate": count / output_span_of(broker, sink, PARTITIONS),
        "lost": count - len(unique),
        "twice": len(keys) - len(unique),
        "peak_lag": max((lag for lag, _ in lags), default=0),
        "peak_own_lag": max((own for _, own in lags), default=0.0),
        "final_lag": final_lag,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=60000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    root = unpacked_artifact()
    broker = start_broker(WORK / "tansu-scale.log")
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in REPLICAS}
    try:
        for r in range(args.rounds):
            for n in REPLICAS:
                results[n].append(run(root, broker, n, args.records))
                print(f"round {r + 1}: {n} replicas {results[n][-1]}", file=sys.stderr)
    finally:
        broker.process.terminate()
        broker.process.wait()
    one = median([x["rate"] for x in results[1]])
    rows = [
        [
            str(n),
            f"{median([x['rate'] for x in runs]):,.0f}",
            f"{median([x['rate'] for x in runs]) / one:.2f}",
            str(sum(x["lost"] for x in runs)),
            str(sum(x["twice"] for x in runs)),
            f"{max(x['peak_lag'] for x in runs):,}",
            f"{max(x['peak_own_lag'] for x in runs):,.0f}",
            str(max(x["final_lag"] for x in runs)),
        ]
        for n, runs in results.items()
    ]
    section = (
        "## Kafka scale-out\n\n" + machine() + ".\n\n"
        f"examples/iris-stream as 1, 2 and 4 replicas in one consumer group on a {PARTITIONS}-partition topic of "
        f"the Tansu broker, {args.records:,} records per run, {args.rounds} rounds taking turns (medians; lost and "
        "twice summed over the rounds). Peak lag: what a KEDA kafka trigger reads (the group's committed offsets "
        "against the partitions' ends); the replicas' own gauge `kbuild_kafka_consumer_lag_overall`, summed, beside "
        "it; Tansu under-reports partition ends (see bench/kafka_scale.py), so both read low here. "
        "The replicas join before the records arrive, so no rebalance happens during a run. Two cores serve "
        f"every replica here: more replicas only share them. Command: `{COMMAND}`.\n\n"
        + table(
            [
                "replicas",
                "records/s",
                "× one replica",
                "lost",
                "answered twice",
                "peak group lag",
                "peak lag, replicas' gauges",
                "lag at the end",
            ],
            rows,
        )
        + "\n"
    )
    print(section)
    if args.write:
        write_section("Kafka scale-out", section)


if __name__ == "__main__":
    main()
