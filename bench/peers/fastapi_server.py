"""A hand-written FastAPI endpoint, as its documentation deploys one: uvicorn
with uvloop and httptools, one worker process per core, a plain `def`
endpoint (FastAPI runs it on its thread pool). No batching: FastAPI has none.

    PEER_MODEL=text python fastapi_server.py PORT
"""

from __future__ import annotations

import os
import sys
from typing import Any

import handlers
from fastapi import FastAPI

KIND = os.environ.get("PEER_MODEL", "tabular")
app = FastAPI()
model = handlers.MODELS[KIND]()


@app.post("/predict")
def predict(body: dict[str, Any]) -> dict[str, Any]:
    return handlers.answer(KIND, model(body[handlers.FIELDS[KIND]]))


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        "fastapi_server:app",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        workers=len(os.sched_getaffinity(0)),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
