"""`kbuild publish-model`: what it puts on the model topic and how it fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kbuild.cli import main
from kbuild.runtime.contract.model_message import parse_chunk, signature_ok
from tests.helpers.build import free_port
from tests.helpers.kafka import Reader
from tests.helpers.kafka_broker import Broker


def test_a_large_model_is_signed_chunked_and_acknowledged(
    kafka: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = kafka.topic("models")
    model = tmp_path / "big.onnx"
    data = os.urandom(1_300_000)  # more than a Kafka message holds by default
    model.write_bytes(data)
    key = tmp_path / "key"
    key.write_text("k3y\n")
    code = main(
        [
            "publish-model",
            "--bootstrap-servers",
            kafka.bootstrap,
            "--topic",
            topic,
            "--version",
            "7",
            "--key-file",
            str(key),
            str(model),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "as version 7 (1300000 bytes in 3 messages, signed)" in out and "offsets 0-2" in out

    messages = Reader(kafka.bootstrap, topic).read(3, timeout=30)
    chunks = [parse_chunk(list(m.headers.items())) for m in messages]
    assert [c.index for c in chunks] == [0, 1, 2] and {m.partition for m in messages} == {0}
    manifest = chunks[0].manifest
    assert all(c.manifest == manifest for c in chunks)
    assert (manifest.version, manifest.name, manifest.size, manifest.chunks) == ("7", "big.onnx", len(data), 3)
    assert b"".join(m.value or b"" for m in messages) == data
    assert chunks[0].signature is not None and signature_ok(b"k3y", manifest, chunks[0].signature)
    assert not signature_ok(b"another", manifest, chunks[0].signature)


def test_no_broker_is_a_clear_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    address = f"127.0.0.1:{free_port()}"
    code = main(
        [
            "publish-model",
            "--bootstrap-servers",
            address,
            "--topic",
            "m",
            "--version",
            "1",
            "--timeout",
            "2",
            str(model),
        ]
    )
    err = capsys.readouterr().err
    assert code == 7
    assert f"cannot reach a Kafka broker at {address}" in err


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--key-file", "{tmp}/missing.key"], "cannot read the key file"),
        (["--version", "two\nlines"], "printable characters"),
        (["--chunk-size", "0"], "Invalid value for '--chunk-size'"),
    ],
)
def test_usage_mistakes_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], phrase: str
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--version" not in args:
        args += ["--version", "1"]
    code = main(["publish-model", "--bootstrap-servers", "127.0.0.1:1", "--topic", "m", *args, str(model)])
    assert code == 2
    assert phrase in capsys.readouterr().err


def test_a_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model").mkdir()
    code = main(
        [
            "publish-model",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--topic",
            "m",
            "--version",
            "1",
            str(tmp_path / "model"),
        ]
    )
    assert code == 2
    assert "is a folder" in capsys.readouterr().err
