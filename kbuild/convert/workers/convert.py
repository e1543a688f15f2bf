"""The converter, run by the convert stage in the build-side environment:

    python -E -s -m kbuild.convert.workers.convert REQUEST.json   (from a folder holding only kbuild)

REQUEST names the kind (keras | tensorflow | torch | huggingface), the checkpoint, the folder to
write model.onnx and result.json into, and what to compare on. result.json
holds the comparison, or {"error": ...} for a checkpoint that cannot be read
or converted (exit 3); anything else is a bug, with its traceback on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _converter(kind: str, settings: dict[str, Any]) -> Any:
    """The kind's converter, its framework set to give the same sums on every build machine."""
    if kind in ("keras", "tensorflow"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ["KERAS_BACKEND"] = "tensorflow"
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.random.set_seed(0)
        from kbuild.convert.workers import tensorflow_model

        return tensorflow_model.convert
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    if kind == "torch":
        from kbuild.convert.workers import torch_program

        return torch_program.convert
    if settings.get("task") in ("sentence-embedding", "feature-extraction"):
        from kbuild.convert.workers import transformers_embedding

        return transformers_embedding.convert
    if settings.get("task") == "image-classification":
        from kbuild.convert.workers import transformers_image

        return transformers_image.convert
    from kbuild.convert.workers import transformers_text

    return transformers_text.convert


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    output = Path(request["output"])
    from kbuild.convert.workers.equivalence import CheckpointError, write_result

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        result = _converter(request["kind"], request.get("settings") or {})(request, output)
    except CheckpointError as problem:
        write_result(output, {"error": str(problem)})
        return 3
    write_result(output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
