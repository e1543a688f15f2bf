"""What an embedding folder says about itself, read without a framework.

    sentence-embedding   a sentence-transformers folder: modules.json lists a
                         Transformer (its folder, sentence_bert_config.json's
                         max_seq_length), a Pooling (1_Pooling/config.json),
                         any Dense (2_Dense/config.json and its weights) and
                         optionally Normalize
    feature-extraction   a plain transformers encoder folder: the step says
                         how to pool (`pooling`, `normalize`)

Both become: tokenize -> the encoder (token ids -> last hidden state) -> pool,
and where there are Dense modules -> dense (them and Normalize, one ONNX model).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbuild.load.checkpoints import CheckpointProblem, json_file, model_config, text_encoder

POOLING_METHODS = ("mean", "cls", "max", "mean_sqrt_len", "last")
# 1_Pooling/config.json's switches -> the pool step's method
_POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "last",
}
# newer sentence-transformers write the mode by name
_POOLING_NAMES = {
    "mean": "mean",
    "cls": "cls",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "lasttoken": "last",
}
# modules.json names a module by its class's import path, which moved between
# releases (sentence_transformers.models.Pooling, ...sentence_transformer.modules.pooling.Pooling)
_PACKAGE = "sentence_transformers."
# Dense's activation_function -> the name the converter builds it by
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.SiLU": "silu",
}
_DENSE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class DenseModule:
    """One Dense module: linear (weight [out, in], bias), its activation, and
    where use_residual is set the input added back (through a projection where
    the sizes differ)."""

    folder: Path
    weights: Path  # model.safetensors, or pytorch_model.bin where there is none
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a value of ACTIVATIONS
    residual: bool


@dataclass(frozen=True)
class EmbeddingFolder:
    path: Path  # the folder the step names
    encoder: Path  # the transformers folder of the encoder (the Transformer module's)
    architecture: str
    model_type: str
    token_inputs: tuple[str, ...]
    max_length: int  # tokens per text the encoder is given
    model_limit: int  # tokens the encoder's positions allow
    tokenizer: Path
    pooling: str
    normalize: bool
    dimension: int  # of the embedding: the encoder's hidden size, or the last Dense's out_features
    dense: tuple[DenseModule, ...] = ()


def read_embedding_folder(path: Path, task: str, step: Mapping[str, Any]) -> EmbeddingFolder:
    """The folder of an embedding step, or CheckpointProblem saying why not."""
    if not path.is_dir():
        raise CheckpointProblem("is a file; a huggingface step takes the model's folder (config.json, weights, ...)")
    if task == "sentence-embedding":
        return _sentence_transformers(path)
    config, architecture, model_type = model_config(path, task)
    token_inputs, limit, tokenizer = text_encoder(path, config, model_type)
    return EmbeddingFolder(
        path,
        path,
        architecture,
        model_type,
        token_inputs,
        limit,
        limit,
        tokenizer,
        str(step.get("pooling", "mean")),
        bool(step.get("normalize", False)),
        _dimension(config),
    )


def _sentence_transformers(path: Path) -> EmbeddingFolder:
    if not (path / "modules.json").is_file():
        raise CheckpointProblem(
            "has no modules.json: not a sentence-transformers folder (for a plain transformers encoder, "
            "use task: feature-extraction with pooling)"
        )
    try:
        modules = _modules(path)
    except (KeyError, TypeError, ValueError):
        raise CheckpointProblem(
            "has a modules.json that does not list modules as sentence-transformers writes it"
        ) from None
    kinds = [kind for kind, _ in modules]
    unsupported = [k for k in kinds if k not in _COMPILED]
    if unsupported:
        raise CheckpointProblem(
            f"has a {unsupported[0]} module (modules.json), which kbuild does not compile; "
            f"it compiles {', '.join(_COMPILED)}"
        )
    middle = kinds[2:-1] if kinds[-1] == "Normalize" else kinds[2:]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Dense" for k in middle):
        raise CheckpointProblem(
            f"chains {' -> '.join(kinds)} (modules.json); kbuild compiles Transformer -> Pooling "
            "[-> Dense ...] [-> Normalize]"
        )
    encoder = path / modules[0][1]
    config, architecture, model_type = model_config(encoder, "sentence-embedding")
    token_inputs, limit, tokenizer = text_encoder(encoder, config, model_type)
    settings_file = encoder / "sentence_bert_config.json"
    settings = json_file(settings_file) if settings_file.is_file() else {}
    declared = settings.get("max_seq_length")
    max_length = min(limit, declared) if isinstance(declared, int) and declared > 0 else limit
    pooling_file = path / modules[1][1] / "config.json"
    pooling = _pooling(json_file(pooling_file))
    dimension = _dimension(config)
    dense = []
    for kind, folder in modules[2:]:
        if kind == "Dense":
            dense.append(_dense(path / folder, folder, dimension))
            dimension = dense[-1].out_features
    return EmbeddingFolder(
        path,
        encoder,
        architecture,
        model_type,
        token_inputs,
        max_length,
        limit,
        tokenizer,
        pooling,
        kinds[-1] == "Normalize",
        dimension,
        tuple(dense),
    )


_COMPILED = ("Transformer", "Pooling", "Dense", "Normalize")


def _dense(folder: Path, relative: str, given: int) -> DenseModule:
    """A Dense module's config.json, checked against the size it is given."""
    config = json_file(folder / "config.json")
    where = f"({relative}/config.json)"
    sizes = [config.get("in_features"), config.get("out_features")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise CheckpointProblem(f"has a Dense module without in_features and out_features {where}")
    in_features, out_features = int(sizes[0]), int(sizes[1])  # type: ignore[arg-type]
    if in_features != given:
        raise CheckpointProblem(
            f"has a Dense module that takes {in_features} values where the module before it gives {given} {where}"
        )
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in ACTIVATIONS:
        raise CheckpointProblem(
            f"has a Dense module with activation {activation!r}, which kbuild does not compile {where}; "
            f"it compiles {', '.join(name.rsplit('.', 1)[-1] for name in ACTIVATIONS)}"
        )
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") != "sentence_embedding":
            raise CheckpointProblem(
                f"has a Dense module on {config[key]!r} {where}; kbuild compiles Dense on the sentence embedding"
            )
    weights = next((folder / name for name in _DENSE_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise CheckpointProblem(f"has a Dense module without weights ({' or '.join(_DENSE_WEIGHTS)} in {relative})")
    return DenseModule(
        folder,
        weights,
        in_features,
        out_features,
        config.get("bias", True) is not False,
        ACTIVATIONS[str(activation)],
        config.get("use_residual") is True,
    )


def _modules(path: Path) -> list[tuple[str, str]]:
    """(module kind, its folder) in order."""
    listed = _json_list(path / "modules.json")
    found = []
    for module in sorted(listed, key=lambda m: int(m["idx"])):
        kind = str(module["type"])
        found.append((kind.rsplit(".", 1)[-1] if kind.startswith(_PACKAGE) else kind, str(module.get("path") or "")))
    if not found:
        raise ValueError("no modules")
    return found


def _json_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise CheckpointProblem(f"has a {path.name} that is not JSON") from None
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise TypeError("not a list of objects")
    return data


def _pooling(config: Mapping[str, Any]) -> str:
    named = config.get("pooling_mode")
    if isinstance(named, str):
        if named not in _POOLING_NAMES:
            raise CheckpointProblem(
                f"pools by {named!r} (1_Pooling/config.json); kbuild pools by {', '.join(_POOLING_NAMES)}"
            )
        return _POOLING_NAMES[named]
    chosen = [key for key, on in config.items() if key.startswith("pooling_mode_") and on is True]
    if len(chosen) != 1:
        what = ", ".join(chosen) if chosen else "no mode"
        raise CheckpointProblem(
            f"pools by {what} (1_Pooling/config.json); kbuild compiles exactly one of {', '.join(_POOLING_MODES)}"
        )
    if chosen[0] not in _POOLING_MODES:
        raise CheckpointProblem(f"pools by {chosen[0]} (1_Pooling/config.json), which kbuild does not compile")
    if config.get("include_prompt") is False:
        raise CheckpointProblem(
            "pools without its prompt tokens (include_prompt: false), which kbuild does not compile"
        )
    return _POOLING_MODES[chosen[0]]


def _dimension(config: Mapping[str, Any]) -> int:
    size = config.get("hidden_size", config.get("dim"))  # DistilBERT calls it dim
    if not isinstance(size, int) or size < 1:
        raise CheckpointProblem("has a config.json without hidden_size")
    return size
