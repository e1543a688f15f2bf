"""LitServe, as its documentation serves a model: a LitAPI with batching on
(max_batch_size 32, batch_timeout 2 ms, the same bounds as kbuild's), one
worker, on the CPU.

    PEER_MODEL=text python litserve_server.py PORT
"""

from __future__ import annotations

import os
import sys
from typing import Any

import handlers
import litserve as ls
import numpy as np

KIND = os.environ.get("PEER_MODEL", "tabular")


class PeerAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = handlers.MODELS[KIND]()

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # LitServe reads the annotation as the body type
        return request[handlers.FIELDS[KIND]][0]  # one row per request

    def batch(self, inputs: list[Any]) -> Any:
        return np.asarray(inputs, dtype=np.float32) if KIND == "tabular" else list(inputs)

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def unbatch(self, output: Any) -> list[Any]:
        if KIND == "tabular":
            return [int(v) for v in output]
        labels, probs = output
        return list(zip(labels, probs.tolist(), strict=True))

    def encode_response(self, output: Any) -> dict[str, Any]:
        if KIND == "tabular":
            return {"predict": [output]}
        return {"label": [output[0]], "probability": [output[1]]}


if __name__ == "__main__":
    server = ls.LitServer(PeerAPI(max_batch_size=32, batch_timeout=0.002), accelerator="cpu", workers_per_device=1)
    server.run(port=int(sys.argv[1]), host="127.0.0.1", generate_client_file=False)
