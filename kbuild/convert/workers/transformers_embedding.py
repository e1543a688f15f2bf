"""A transformers text encoder -> ONNX (token ids -> last hidden state), its
graph fused for onnxruntime and, where asked, its weights quantized to int8;
each proven against the framework on the same texts. Runs in the build-side
environment.

    export     torch's TorchScript-based exporter, attention written out
               (attn_implementation="eager"): the form onnxruntime's
               transformer optimizer recognises, so that attention, layer
               normalisation and GELU each fuse into one kernel
    fuse       onnxruntime.transformers' optimizer, python rewrites only
               (opt_level 0: nothing tied to the build machine's CPU)
    check      the fused model's hidden states against torch's (padding
               excluded), and the pooled embeddings against torch's own
               pooling, at the step's tolerance
    quantize   int8 dynamic, per channel, 7-bit: the embeddings' cosine similarity
               to torch's, text by text, refused below min_similarity
    dense      a sentence-transformers folder's Dense modules (and the
               Normalize after them) as dense.onnx, after pooling: every
               check above is then of the embeddings they give
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import onnx
import onnxruntime
import torch
import transformers
from tokenizers import Tokenizer

from kbuild.convert.workers import sentence_dense
from kbuild.convert.workers.equivalence import CheckpointError, Feed, canonical_onnx, exporter_error, session
from kbuild.convert.workers.transformers_text import BATCHES, encode, generated_texts, tokenizer_agreement
from kbuild.runtime.steps.pool import embeddings

OPSET = 17
HIDDEN = "last_hidden_state"


def convert(request: Mapping[str, Any], output: Path) -> dict[str, Any]:
    settings = request["settings"]
    encoder = Path(settings["encoder"])
    names: list[str] = list(settings["token_inputs"])
    max_length = int(settings["max_length"])
    method, normalize = str(settings["pooling"]), bool(settings["normalize"])
    dense_modules = list(settings.get("dense") or [])
    try:
        model = transformers.AutoModel.from_pretrained(str(encoder), local_files_only=True, attn_implementation="eager")
    except Exception as e:  # transformers says what is missing or wrong
        raise CheckpointError(f"transformers cannot load {encoder.name}: {str(e).splitlines()[0]}") from None
    model.eval()
    tokenizer = Tokenizer.from_file(str(settings["tokenizer"]))

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.inner(**dict(zip(names, tensors, strict=True))).last_hidden_state
            return hidden

    wrapper = Hidden().eval()
    exported = output / "exported.onnx"
    _export(wrapper, encode(tokenizer, ["a b c d e f", "a"], names, max_length), names, exported)
    fused = output / "model.onnx"
    fusions = _fuse(exported, fused, model.config)
    exported.unlink()
    # where there are Dense modules, the pool step leaves normalizing to them
    after: Head = None
    chain: sentence_dense.Chain | None = None
    if dense_modules:
        chain = sentence_dense.build(dense_modules, normalize)
        dense_file = output / str(settings["dense_file"])
        sentence_dense.export(chain, int(dense_modules[0]["in_features"]), dense_file, OPSET, settings["dense_input"])
        after = session(dense_file)
    pool_normalize = normalize and chain is None

    def framework(feed: Feed) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            hidden = wrapper(*(torch.from_numpy(feed[n]) for n in names))
            pooled = _torch_pool(hidden, torch.from_numpy(feed["attention_mask"]), method, pool_normalize)
            embedding = chain(pooled) if chain is not None else pooled
        return hidden.numpy(), embedding.numpy()

    texts = [str(t) for t in request.get("texts") or []]
    generated = generated_texts(tokenizer, max_length, np.random.default_rng(0))
    feeds = _feeds(tokenizer, texts, generated, names, max_length)
    expected = [(label, feed, *framework(feed)) for label, feed in feeds]
    head = (method, pool_normalize, after)
    result = _compare(session(fused), expected, head)
    result["fusions"] = fusions
    if settings.get("quantize") == "int8":
        floor = float(settings["min_similarity"])
        quantized = output / "int8.onnx"
        result["similarity"] = _quantized(fused, quantized, expected, head, floor)
        result["quantize"] = "int8"
        quantized.replace(fused)
    result["tokenizer"] = tokenizer_agreement(encoder, tokenizer, texts + generated, names, max_length)
    result["framework"] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    return result


def _export(wrapper: torch.nn.Module, example: Feed, names: list[str], path: Path) -> None:
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, HIDDEN]}
    try:
        torch.onnx.export(wrapper, tuple(torch.from_numpy(example[n]) for n in names), str(path), dynamo=False,
                          input_names=names, output_names=[HIDDEN], dynamic_axes=axes, opset_version=OPSET,
                          do_constant_folding=True)  # fmt: skip
    except Exception as e:  # what the exporter could not handle, in its words
        raise CheckpointError(f"torch's ONNX exporter cannot convert the encoder: {exporter_error(e)}") from None


def _fuse(source: Path, target: Path, config: Any) -> dict[str, int]:
    """The transformer optimizer's fusions; what fused, by operator."""
    from onnxruntime.transformers.optimizer import optimize_model

    heads = int(getattr(config, "num_attention_heads", getattr(config, "n_heads", 0)) or 0)
    hidden = int(getattr(config, "hidden_size", getattr(config, "dim", 0)) or 0)
    optimized = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
    optimized.save_model_to_file(str(target))
    canonical_onnx(target)
    statistics = optimized.get_fused_operator_statistics()
    return {str(op): int(count) for op, count in sorted(statistics.items()) if count}


def _quantized(source: Path, target: Path, expected: Expected, head: Pooling, floor: float) -> dict[str, Any]:
    """The matrix products in int8, but for those that read GELU's output and
    the fused attention's: their inputs carry the outliers one scale per
    tensor cannot hold. all-MiniLM-L6-v2, one-word texts padded beside long
    ones: lowest cosine 0.975 with everything in int8, 0.983 with those kept
    in float, at 1.6x the float model's speed rather than 2.1x."""
    graph = onnx.load(str(source), load_external_data=False).graph
    gelus = {out for node in graph.node if node.op_type in _GELUS for out in node.output}
    kept = [node.name for node in graph.node if node.op_type == "MatMul" and node.input[0] in gelus]
    kept += [node.name for node in graph.node if node.op_type == "Attention"]
    _quantize(source, target, kept)
    found = _similarity(session(target), expected, head)
    found["kept_float"] = len(kept)
    found["min_similarity"] = floor
    return found


_GELUS = ("Gelu", "BiasGelu", "FastGelu")


def _quantize(source: Path, target: Path, kept: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The matrix products only: quantizing the embedding tables too (Gather,
    # EmbedLayerNormalization) costs all-MiniLM-L6-v2 0.008 of its lowest
    # cosine similarity and gains no speed. Weights in 7 bits (reduce_range):
    # on x86 without VNNI, onnxruntime's u8 x s8 products add pairs in 16 bits
    # that 8-bit weights can saturate (onnxruntime's quantization guide), so
    # texts outside the build's check can stray further there: all-MiniLM-L6-v2
    # on such a CPU gave "ok" cosine 0.978 with 8-bit weights, above 0.98 with 7.
    quantize_dynamic(str(source), str(target), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Attention"], nodes_to_exclude=kept,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
    canonical_onnx(target)


def _feeds(
    tokenizer: Tokenizer, texts: list[str], generated: list[str], names: list[str], max_length: int
) -> list[tuple[str, Feed]]:
    """Each sample text alone, then the generated texts in batches of several sizes."""
    wanted = [*names, "attention_mask"] if "attention_mask" not in names else names
    feeds = [(f"sample text {i + 1}", encode(tokenizer, [t], wanted, max_length)) for i, t in enumerate(texts)]
    # one-word texts, padded beside long ones, are where int8 strays furthest
    words = list(dict.fromkeys(w for t in texts for w in t.split()))[:8]
    if words:
        feeds.append(("the samples with their words alone", encode(tokenizer, [*texts, *words], wanted, max_length)))
    order = np.random.default_rng(1).permutation(len(generated))
    start = 0
    for size in BATCHES * 3:
        chunk = [generated[i] for i in order[start : start + size]] or generated[:size]
        start += size
        feeds.append((f"{len(chunk)} generated texts", encode(tokenizer, chunk, wanted, max_length)))
    return feeds


def _torch_pool(hidden: torch.Tensor, mask: torch.Tensor, method: str, normalize: bool) -> torch.Tensor:
    """sentence-transformers' Pooling and Normalize, written with torch's operators."""
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    if method == "cls":
        pooled = hidden[:, 0]
    elif method == "max":
        pooled = hidden.masked_fill(keep == 0, -1e9).max(dim=1).values
    elif method == "last":
        last = mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0]), last.clamp(min=0)]
    else:
        summed = (hidden * keep).sum(dim=1)
        counts = keep.sum(dim=1).clamp(min=1e-9)
        pooled = summed / counts if method == "mean" else summed / counts.sqrt()
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled


Expected = list[tuple[str, Feed, np.ndarray, np.ndarray]]
Head: TypeAlias = onnxruntime.InferenceSession | None  # the Dense modules' model, where the folder has them
# what follows the encoder: the pool step's method and normalize, then Dense
Pooling: TypeAlias = tuple[str, bool, Head]


def _ours(converted: onnxruntime.InferenceSession, feed: Feed, head: Pooling) -> tuple[Any, Any]:
    """The converted model's hidden states, and what the artifact's pool step
    (and dense step) make of them."""
    method, normalize, dense = head
    inputs = {i.name: feed[i.name] for i in converted.get_inputs()}
    hidden = converted.run([HIDDEN], inputs)[0]
    mask = (feed["attention_mask"] != 0).astype(np.float32)
    pooled = embeddings(hidden.astype(np.float32), mask, method, normalize)
    if dense is None:
        return hidden, pooled
    return hidden, dense.run(None, {dense.get_inputs()[0].name: pooled.astype(np.float32)})[0]


def _compare(converted: onnxruntime.InferenceSession, expected: Expected, head: Pooling) -> dict[str, Any]:
    worst = {HIDDEN: (0.0, ""), "embedding": (0.0, "")}
    for label, feed, hidden, embedding in expected:
        got_hidden, got_embedding = _ours(converted, feed, head)
        if got_hidden.shape != hidden.shape:
            raise CheckpointError(f"the framework gives shape {list(hidden.shape)}, ONNX {list(got_hidden.shape)}")
        kept = feed["attention_mask"][:, :, None] != 0  # padding's vectors mean nothing: pooling drops them
        for name, diff in (
            (HIDDEN, _largest(np.where(kept, hidden, 0.0), np.where(kept, got_hidden, 0.0))),
            ("embedding", _largest(embedding, got_embedding)),
        ):
            if diff >= worst[name][0]:
                worst[name] = (diff, label)
    return {
        "compared": len(expected),
        "outputs": {name: {"max_abs_diff": diff, "at": at} for name, (diff, at) in worst.items()},
    }


def _largest(a: np.ndarray, b: np.ndarray) -> float:
    diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
    return diff if np.isfinite(diff) else float("inf")


def _similarity(converted: onnxruntime.InferenceSession, expected: Expected, head: Pooling) -> dict[str, Any]:
    """Cosine similarity of the quantized model's embeddings to the framework's, text by text."""
    cosines: list[float] = []
    lowest_at = ""
    for label, feed, _, embedding in expected:
        _, got = _ours(converted, feed, head)
        for row in range(embedding.shape[0]):
            cosine = _cosine(embedding[row], got[row])
            if not cosines or cosine < min(cosines):
                lowest_at = label
            cosines.append(cosine)
    return {"min": min(cosines), "mean": float(np.mean(cosines)), "texts": len(cosines), "at": lowest_at}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
