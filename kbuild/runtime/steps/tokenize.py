"""type: tokenize — text (BYTES [N], one UTF-8 string per row) -> token ids and
masks, with a Hugging Face `tokenizer.json` and the `tokenizers` library.

Fields: tokenizer (the tokenizer.json, carried into the artifact like a model),
input, outputs {input_ids, attention_mask, token_type_ids: VAR} (input_ids is
required), max_length (counting the special tokens the post-processor adds),
padding (longest: to the longest row of the call, the default; max_length),
truncation (default: true when max_length is given), datatype (INT64, the
default, or INT32).

A whole call is encoded by one batch call into the library (Rust, on its own
threads), and the library pads it: the padded ids are read out row by row.
Padding uses the tokenizer's own padding setting (side, id, token) where it
has one, else its [PAD] or <pad> token, else id 0. Without truncation, a row
longer than max_length is that row's error, as is text that is not UTF-8.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from kbuild.runtime.contract.errors import ConfigError, DataError, RowError
from kbuild.runtime.steps import Runner, StepContext, get_choice, get_int, get_mapping, get_str, variable
from kbuild.runtime.tensors import Vars

# output key -> the tokenizers Encoding attribute that holds it
OUTPUTS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
_DATATYPES: dict[str, type[np.integer[Any]]] = {"INT64": np.int64, "INT32": np.int32}


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    source = get_str(step, "input")
    path = ctx.path(get_str(step, "tokenizer"), "tokenizer")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # the library's error says what it could not parse
        raise ConfigError(
            f"tokenizer {path.name!r} is not a tokenizer.json the tokenizers library reads: {e}"
        ) from None
    outputs = get_mapping(step, "outputs")
    unknown = [k for k in outputs if k not in OUTPUTS]
    if unknown:
        raise ConfigError(f"outputs: unknown key {unknown[0]!r} (use {', '.join(OUTPUTS)})")
    if "input_ids" not in outputs:
        raise ConfigError("outputs must map input_ids to a variable")
    max_length = get_int(step, "max_length", 0, 1) if "max_length" in step else None
    padding = get_choice(step, "padding", ("longest", "max_length"), "longest")
    if padding == "max_length" and max_length is None:
        raise ConfigError("padding: max_length needs max_length")
    truncation = step.get("truncation", max_length is not None)
    if not isinstance(truncation, bool):
        raise ConfigError("field 'truncation' must be true or false")
    if truncation and max_length is None:
        raise ConfigError("truncation needs max_length")
    dtype = _DATATYPES[get_choice(step, "datatype", tuple(_DATATYPES), "INT64")]
    _configure(tokenizer, max_length if truncation else None, max_length if padding == "max_length" else None)
    wanted = [(attribute, outputs[key]) for key, attribute in OUTPUTS.items() if key in outputs]
    limit = None if truncation else max_length

    def run(variables: Vars) -> Vars:
        items = variable(variables, source)
        if items.dtype.kind not in "OSU" or items.ndim > 2 or (items.ndim == 2 and items.shape[1] != 1):
            raise DataError(f"expected text, BYTES [N], got {items.dtype} of shape {list(items.shape)}")
        texts = [_text(i, item) for i, item in enumerate(items.reshape(-1).tolist())]
        encodings = tokenizer.encode_batch(texts) if texts else []
        if limit is not None:
            for i, encoding in enumerate(encodings):
                used = sum(encoding.attention_mask)
                if used > limit:
                    raise RowError(f"text {i} is {used} tokens, more than max_length {limit} (set truncation: true)")
        out: Vars = {}
        for attribute, var in wanted:
            rows = [getattr(e, attribute) for e in encodings]
            out[var] = np.array(rows, dtype=dtype) if rows else np.zeros((0, max_length or 0), dtype=dtype)
        return out

    return run


def _configure(tokenizer: Tokenizer, truncate_to: int | None, pad_to: int | None) -> None:
    """Truncation and padding set once on the tokenizer: the library applies
    them inside its batch call."""
    if truncate_to is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(truncate_to)
    own: dict[str, Any] = dict(tokenizer.padding or {})
    pad_token = own.get("pad_token")
    pad_id = own.get("pad_id")
    if not own:
        for candidate in ("[PAD]", "<pad>"):
            found = tokenizer.token_to_id(candidate)
            if found is not None:
                pad_token, pad_id = candidate, found
                break
        else:
            pad_token, pad_id = "[PAD]", 0
    tokenizer.enable_padding(
        direction=own.get("direction", "right"),
        pad_id=pad_id,
        pad_type_id=own.get("pad_type_id", 0),
        pad_token=pad_token,
        length=pad_to,
        pad_to_multiple_of=own.get("pad_to_multiple_of"),
    )


def _text(index: int, item: object) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RowError(f"text {index} is not UTF-8 (byte {e.start}: {item[e.start : e.start + 1]!r})") from None
    raise RowError(f"text {index}: expected a string, got {type(item).__name__}")
