"""A transformers folder with a sequence-classification head -> ONNX (token
ids -> logits, dynamic batch and sequence axes) with torch's exporter, and
the two compared on texts: the pipeline's samples and texts made from the
tokenizer's own words, short, long, at the maximum and past it, in batches
of several sizes. The ids come from the folder's tokenizer.json exactly as the
artifact's tokenize step makes them, and are checked against what
transformers' own tokenizer makes. Runs in the build-side environment."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer

from kbuild.convert.workers.equivalence import CheckpointError, Feed, canonical_onnx, compare, exporter_error, session

BATCHES = (1, 3, 8)


def _words(tokenizer: Tokenizer) -> list[str]:
    vocabulary = tokenizer.get_vocab()
    specials = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
    words = sorted(w for w in vocabulary if w.isalpha() and w not in specials and not w.startswith("##"))
    return words or ["a"]


def generated_texts(tokenizer: Tokenizer, max_length: int, rng: np.random.Generator) -> list[str]:
    words = _words(tokenizer)
    lengths = [1, 2, 5, max(1, max_length // 2), max(1, max_length - 2), max_length, 2 * max_length]
    return [" ".join(rng.choice(words, n)) for n in lengths for _ in range(2)]


def _pad_id(tokenizer: Tokenizer) -> tuple[int, str]:
    """As the artifact's tokenize step pads: the tokenizer's own padding, else [PAD] or <pad>, else 0."""
    if tokenizer.padding:
        return int(tokenizer.padding["pad_id"]), str(tokenizer.padding["pad_token"])
    for token in ("[PAD]", "<pad>"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return found, token
    return 0, "[PAD]"


def encode(tokenizer: Tokenizer, texts: list[str], names: list[str], max_length: int) -> Feed:
    pad_id, pad_token = _pad_id(tokenizer)
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    encodings = tokenizer.encode_batch(texts)
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    return {n: np.array([getattr(e, fields[n]) for e in encodings], dtype=np.int64) for n in names}


def convert(request: Mapping[str, Any], output: Path) -> dict[str, Any]:
    folder = Path(request["checkpoint"])
    settings = request["settings"]
    names: list[str] = list(settings["token_inputs"])
    max_length = int(settings["max_length"])
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # transformers says what is missing or wrong
        raise CheckpointError(f"transformers cannot load {folder.name}: {str(e).splitlines()[0]}") from None
    model.eval()
    tokenizer = Tokenizer.from_file(str(settings["tokenizer"]))

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.inner(**dict(zip(names, tensors, strict=True))).logits
            return logits

    wrapper = Logits().eval()
    example = encode(tokenizer, ["a b c d e f", "a"], names, max_length)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=max_length)
    onnx_path = output / "model.onnx"
    try:
        torch.onnx.export(wrapper, tuple(torch.from_numpy(example[n]) for n in names), str(onnx_path),
                          dynamo=True, input_names=names, output_names=["logits"],
                          dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in names),), optimize=True,
                          verbose=False)  # fmt: skip
    except Exception as e:  # what the exporter could not handle, in its words
        raise CheckpointError(f"torch's ONNX exporter cannot convert {folder.name}: {exporter_error(e)}") from None
    canonical_onnx(onnx_path)

    def framework(feed: Feed) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {"logits": wrapper(*(torch.from_numpy(feed[n]) for n in names)).numpy()}

    rng = np.random.default_rng(0)
    texts = [str(t) for t in request.get("texts") or []]
    generated = generated_texts(tokenizer, max_length, rng)
    feeds: list[tuple[str, Feed]] = [
        (f"sample text {i + 1}", encode(tokenizer, [t], names, max_length)) for i, t in enumerate(texts)
    ]
    order = rng.permutation(len(generated))
    start = 0
    for size in BATCHES * 3:
        chunk = [generated[i] for i in order[start : start + size]] or generated[:size]
        start += size
        feeds.append((f"{len(chunk)} generated texts", encode(tokenizer, chunk, names, max_length)))
    result = compare(framework, session(onnx_path), feeds)
    result["tokenizer"] = tokenizer_agreement(folder, tokenizer, texts + generated, names, max_length)
    result["framework"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    return result


def tokenizer_agreement(
    folder: Path, tokenizer: Tokenizer, texts: list[str], names: list[str], max_length: int
) -> dict[str, Any]:
    """Whether transformers' own tokenizer for the folder makes the same ids as
    the artifact's tokenize step, text by text."""
    try:
        own = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # a folder may hold tokenizer.json alone
        return {"checked": 0, "note": f"transformers' tokenizer did not load: {str(e).splitlines()[0]}"}
    differ = []
    for text in texts:
        ours = encode(tokenizer, [text], names, max_length)
        theirs = own([text], truncation=True, max_length=max_length, padding="longest")
        if list(ours["input_ids"][0]) != list(theirs["input_ids"][0]):
            differ.append(text[:60])
    if differ:
        raise CheckpointError(
            f"the folder's tokenizer.json and transformers' tokenizer give different ids for {len(differ)} of "
            f"{len(texts)} texts (first: {differ[0]!r}); check tokenizer_config.json against tokenizer.json"
        )
    return {"checked": len(texts), "agree": len(texts)}
