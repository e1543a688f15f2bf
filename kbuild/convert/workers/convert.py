"""The converter, run by the convert stage in the build-side environment:

    python -E -s -m kbuild.convert.workers.convert REQUEST.json   (from the folder holding kbuild)

REQUEST names the kind (torch | huggingface), the checkpoint, the folder to
write model.onnx and result.json into, and what to compare on. result.json
holds the comparison, or {"error": ...} for a checkpoint that cannot be read
or converted (exit 3); anything else is a bug, with its traceback on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    output = Path(request["output"])
    from kbuild.convert.workers.equivalence import CheckpointError, write_result

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(1)  # the same float sums on every build machine
        if request["kind"] == "torch":
            from kbuild.convert.workers.torch_program import convert
        else:
            from kbuild.convert.workers.transformers_text import convert
        result = convert(request, output)
    except CheckpointError as problem:
        write_result(output, {"error": str(problem)})
        return 3
    write_result(output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
