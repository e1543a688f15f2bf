"""sentence-transformers behind FastAPI, as such services are usually written:
an OpenAI-shaped POST /v1/embeddings whose plain `def` endpoint (run on
FastAPI's thread pool) calls `encode()` on the request's texts; uvicorn with
uvloop and httptools, one worker (torch's own threads use the cores, and a
second worker would hold the model twice). No batching across requests.

    ST_MODEL=FOLDER python st_embeddings_server.py PORT
"""

from __future__ import annotations

import os
import sys
from typing import Any

from fastapi import FastAPI
from sentence_transformers import SentenceTransformer

app = FastAPI()
model = SentenceTransformer(os.environ["ST_MODEL"], device="cpu")


@app.post("/v1/embeddings")
def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    vectors = model.encode(texts, batch_size=32, convert_to_numpy=True)
    data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": body.get("model", ""), "usage": {}}


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        "st_embeddings_server:app",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
