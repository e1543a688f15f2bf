"""kbuild's own runtime behind granian's RSGI: the artifact's Service (its
batcher, pipeline thread and deadlines) and its OIP decode and encode, with
granian's Rust HTTP/1.1 server in front instead of kbuild's. Runs with the
unpacked artifact's site folder on PYTHONPATH; KBUILD_APP names its app folder.
Enough for the benchmark's one request and readiness probe, not a server."""

import json
import os
from pathlib import Path

from kbuild.runtime import oip
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.inference import Service
from kbuild.runtime.pipeline_runner import PipelineRunner
from kbuild.runtime.transports.http_api import infer_reply

APP = Path(os.environ["KBUILD_APP"])
SPEC = PipelineSpec.read(APP)
SERVICE = Service(SPEC, PipelineRunner.load(APP, SPEC), APP)
MODEL = oip.Model(SPEC)
HEADERS = [("content-type", "application/json")]


async def app(scope, proto):
    if scope.method == "GET":
        proto.response_bytes(200, HEADERS, b'{"ready":true}')
        return
    request = oip.read_request(MODEL, json.loads(await proto()))
    outputs = await SERVICE.submit(request.inputs, 30.0)
    proto.response_bytes(200, HEADERS, infer_reply(MODEL, request, outputs).body)
