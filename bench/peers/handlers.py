"""The three models as every peer server calls them (bench/peers.py): the
same libraries and the same work per row as kbuild's pipelines, so that what
differs between servers is the serving. Runs inside each peer's environment;
imports nothing of kbuild's.

- tabular: the iris scikit-learn estimator, predict -> class index;
- text: the text example's tokenizer.json (max_length 64, padded to the
  longest row) and ONNX transformer, softmax -> topic, probability;
- cnn: the CNN example's image preprocessing (Pillow, bilinear to 64x64,
  ImageNet mean/std, NCHW) and ONNX network, softmax -> shape, probability.

The ONNX sessions are sized as kbuild sizes its own (intra-op threads = the
CPUs the process may use, no spinning), so the model calls are the same.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLES = Path(os.environ.get("KBUILD_EXAMPLES", Path(__file__).resolve().parents[2] / "examples"))
TOPICS = ["sport", "weather", "cooking"]
SHAPES = ["circle", "square", "triangle"]
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = len(os.sched_getaffinity(0))
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


class Tabular:
    def __init__(self) -> None:
        import joblib

        self.model = joblib.load(EXAMPLES / "iris" / "models" / "iris.joblib")

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(rows, dtype=np.float32)), dtype=np.int64)


class Text:
    def __init__(self) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(EXAMPLES / "text" / "models" / "tokenizer.json"))
        self.tokenizer.enable_truncation(64)
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
        self.session = _session(EXAMPLES / "text" / "models" / "topics.onnx")

    def __call__(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        probs = _softmax(self.session.run(["logits"], feed)[0])
        return [TOPICS[i] for i in probs.argmax(axis=1)], probs.max(axis=1).astype(np.float32)


class Cnn:
    def __init__(self) -> None:
        self.session = _session(EXAMPLES / "image-cnn" / "models" / "shapes.onnx")

    @staticmethod
    def pixels(encoded: bytes | str) -> np.ndarray:
        from PIL import Image

        data = base64.b64decode(encoded) if isinstance(encoded, str) else encoded
        with Image.open(io.BytesIO(data)) as image:
            small = image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
        x = (np.asarray(small, dtype=np.float32) / np.float32(255.0) - MEAN) / STD
        return x.transpose(2, 0, 1)

    def __call__(self, images: list[bytes | str]) -> tuple[list[str], np.ndarray]:
        batch = np.ascontiguousarray(np.stack([self.pixels(i) for i in images]), dtype=np.float32)
        probs = _softmax(self.session.run(["logits"], {"image": batch})[0])
        return [SHAPES[i] for i in probs.argmax(axis=1)], probs.max(axis=1).astype(np.float32)


MODELS = {"tabular": Tabular, "text": Text, "cnn": Cnn}
# The request field of each model, in the peers' own JSON ({"features": [[...]]}).
FIELDS = {"tabular": "features", "text": "text", "cnn": "image"}


def answer(kind: str, result: Any) -> dict[str, Any]:
    """The JSON answer of the peers that speak their own JSON."""
    if kind == "tabular":
        return {"predict": np.asarray(result).tolist()}
    labels, probs = result
    return {"label": labels, "probability": np.asarray(probs).tolist()}
