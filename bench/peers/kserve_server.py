"""KServe's Python model server (0.21), as its documentation writes a custom
predictor: a kserve.Model answering the Open Inference Protocol v2
(/v2/models/peer/infer), served by kserve.ModelServer with latency logging
off and logs at warning level. It has no batching of its own (KServe batches
in a sidecar agent, outside the server).

    PEER_MODEL=text python kserve_server.py HTTP_PORT GRPC_PORT
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from typing import Any

import handlers
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

KIND = os.environ.get("PEER_MODEL", "tabular")


class Peer(Model):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("peer")
        self.model = handlers.MODELS[KIND]()
        self.ready = True

    async def predict(self, payload: InferRequest, headers: Any = None, response_headers: Any = None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        if KIND == "tabular":
            result = np.asarray(self.model(x), dtype=np.int64)
            outputs = [InferOutput("predict", list(result.shape), "INT64", result)]
        else:
            rows = [v.decode() if isinstance(v, bytes) else v for v in x.reshape(-1).tolist()]
            labels, probs = self.model(rows)
            outputs = [
                InferOutput("label", [len(labels)], "BYTES", np.array(labels, dtype=object)),
                InferOutput("probability", [len(labels)], "FP32", probs),
            ]
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or str(uuid.uuid4()))


if __name__ == "__main__":
    logging.disable(logging.INFO)  # production logs warnings, not a line per request
    ModelServer(http_port=int(sys.argv[1]), grpc_port=int(sys.argv[2]), enable_latency_logging=False).start([Peer()])
