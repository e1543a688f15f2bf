"""A pipeline served in-process, without sockets: a scale step (no model file)
behind the real Service, and a fake asyncio transport that records what the
server writes, so protocols are tested the way uvicorn tests its own."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.inference import Service
from kbuild.runtime.pipeline_runner import PipelineRunner

SCALE_PIPELINE: dict[str, Any] = {
    "kbuild": 1,
    "name": "scaler",
    "version": "2",
    "inputs": {"x": {"datatype": "FP32", "shape": [-1, 2]}},
    "outputs": {"y": {"datatype": "FP32", "shape": [-1, 2]}},
    "steps": [{"name": "scale", "type": "scale", "input": "x", "output": "y", "mean": [1.0, 2.0], "std": [2.0, 4.0]}],
    "serve": {"http": {"port": 8080, "max_body_bytes": 4096, "timeout_ms": 2000}},
}


def scale_service(tmp: Path, document: dict[str, Any] | None = None) -> Service:
    """A ready Service for SCALE_PIPELINE (or `document`)."""
    spec = PipelineSpec.from_json(json.loads(json.dumps(document or SCALE_PIPELINE)))
    return Service(spec, PipelineRunner.load(tmp, spec), app_dir=tmp)


class FakeTransport(asyncio.Transport):
    """Records writes; closing and flow control are flags a test can read."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.eof = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def responses(self) -> list[tuple[int, dict[str, str], bytes]]:
        """The complete responses written so far: (status, headers, body)."""
        out: list[tuple[int, dict[str, str], bytes]] = []
        data = bytes(self.written)
        while data:
            head, sep, rest = data.partition(b"\r\n\r\n")
            if not sep:
                break
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            if len(rest) < length:
                break
            out.append((status, headers, rest[:length]))
            data = rest[length:]
        return out


async def settle(transport: FakeTransport, count: int, timeout: float = 5.0) -> list[tuple[int, dict[str, str], bytes]]:
    """Run the loop until `count` responses were written (or fail)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(transport.responses()) < count:
        assert loop.time() < deadline, (
            f"only {len(transport.responses())} of {count} responses: {bytes(transport.written)!r}"
        )
        await asyncio.sleep(0.005)
    return transport.responses()
