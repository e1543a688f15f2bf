"""Checks of the serve section that the schema cannot express: ports used
twice, the model step a Kafka update names, reserved client settings, the
raw encoding's one BYTES input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kbuild.load.documents import (
    Parts,
)
from kbuild.load.step_fields import step_type
from kbuild.load.wording import unknown
from kbuild.runtime.contract.kafka import RESERVED as KAFKA_RESERVED
from kbuild.runtime.contract.step_types import MODEL_STEP_TYPES

if TYPE_CHECKING:
    from kbuild.load.checks import Checker


def check_serve(checker: Checker) -> None:
    serve = checker.data.get("serve")
    if not isinstance(serve, Mapping):
        return
    ports: dict[int, str] = {}
    for endpoint in ("http", "grpc"):
        config = serve.get(endpoint)
        port = config.get("port") if isinstance(config, Mapping) else None
        if isinstance(port, int) and not isinstance(port, bool):
            if port in ports:
                checker.add(
                    ("serve", endpoint, "port"),
                    f"port {port} is used by {ports[port]} already; give {endpoint} another port",
                )
            ports.setdefault(port, endpoint)
    http = serve.get("http")
    if isinstance(http, Mapping) and isinstance(http.get("openai"), Mapping):
        check_openai(checker)
    kafka = serve.get("kafka")
    if isinstance(kafka, Mapping):
        check_kafka(checker, kafka)


def check_openai(checker: Checker) -> None:
    """OpenAI's embeddings API takes texts and gives one vector per text."""
    inputs, outputs = checker.data.get("inputs"), checker.data.get("outputs")
    wrong = []
    for what, tensors, datatype, rank in (("input", inputs, "BYTES", 1), ("output", outputs, "FP32", 2)):
        tensor = next(iter(tensors.values()), None) if isinstance(tensors, Mapping) and len(tensors) == 1 else None
        shape = tensor.get("shape") if isinstance(tensor, Mapping) else None
        fits = isinstance(tensor, Mapping) and tensor.get("datatype") == datatype
        if not (fits and isinstance(shape, list) and len(shape) == rank and shape[0] == -1):
            wrong.append(f"one {what} of {datatype} [-1{', D' if rank == 2 else ''}]")
    if wrong:
        checker.add(
            ("serve", "http", "openai"),
            f"OpenAI's embeddings API takes texts and gives a vector for each: the pipeline must have "
            f"{' and '.join(wrong)}",
        )


def check_kafka(checker: Checker, kafka: Mapping[str, Any]) -> None:
    models = kafka.get("models")
    target = models.get("step") if isinstance(models, Mapping) else None
    steps = {s["name"]: s for _, s in checker.all_steps() if isinstance(s.get("name"), str)}  # branches too
    with_model = [n for n, s in steps.items() if step_type(s) in MODEL_STEP_TYPES]
    if isinstance(models, Mapping) and "step" not in models and len(with_model) != 1:
        checker.add(
            ("serve", "kafka", "models"),
            f"name the step to update (step: …): the pipeline has {len(with_model)} model steps"
            + (f" ({', '.join(with_model)})" if with_model else ""),
        )
    if isinstance(target, str):
        parts: Parts = ("serve", "kafka", "models", "step")
        if target not in steps:
            checker.add(parts, unknown("step", target, with_model or list(steps)))
        elif target not in with_model:
            checker.add(parts, f"step {target!r} has no model to update (it is a {steps[target].get('type')} step)")
    for section in ("client", "consumer", "producer"):
        settings = kafka.get(section)
        for name in settings if isinstance(settings, Mapping) else ():
            if name in KAFKA_RESERVED:
                checker.add(("serve", "kafka", section, name), KAFKA_RESERVED[name], at_key=True)
    transforms = kafka.get("transforms")
    if isinstance(transforms, Mapping):
        code = transforms.get("code")
        if isinstance(code, str) and code:
            checker.check_tree(("serve", "kafka", "transforms", "code"), "code", code, checker.resolve(code))
        return  # the transforms decide what a record holds
    for key, what, names in (("source", "input", "inputs"), ("sink", "output", "outputs")):
        topic = kafka.get(key)
        if not isinstance(topic, Mapping) or topic.get("encoding") != "raw":
            continue
        tensors = checker.data.get(names)
        if not isinstance(tensors, Mapping) or len(tensors) != 1:
            count = len(tensors) if isinstance(tensors, Mapping) else 0
            checker.add(
                ("serve", "kafka", key, "encoding"),
                f"the raw encoding carries one {what}'s bytes; the pipeline has {count} {names}",
            )
            continue
        [(name, tensor)] = tensors.items()
        shape = tensor.get("shape") if isinstance(tensor, Mapping) else None
        if (
            key == "source"
            and isinstance(tensor, Mapping)
            and (tensor.get("datatype") != "BYTES" or (isinstance(shape, list) and len(shape) > 1))
        ):
            checker.add(
                ("serve", "kafka", key, "encoding"),
                f"the raw encoding feeds the record's bytes to input {name!r}, "
                "which must be {datatype: BYTES, shape: [-1]} (or shape [])",
            )


# -- result
