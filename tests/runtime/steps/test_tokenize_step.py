"""The tokenize step in-process against the tokenizers library's own
encoding: padding, truncation, datatypes, the pad id it chooses, and the rows
it refuses as the client's fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from kbuild.runtime.contract.errors import ConfigError, DataError, RowError
from kbuild.runtime.steps import StepContext
from kbuild.runtime.steps.tokenize import build

WORDS = ["the", "team", "won", "a", "late", "goal", "heavy", "rain", "##s", "##ed"]


def word_piece(pad: str | None = "[PAD]", own_padding: bool = False) -> Tokenizer:
    specials = ([pad] if pad else []) + ["[UNK]", "[CLS]", "[SEP]"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    if own_padding:
        tokenizer.enable_padding(direction="left", pad_id=vocab["[UNK]"], pad_token="[UNK]")
    return tokenizer


def step(tmp_path: Path, tokenizer: Tokenizer | None = None, **fields: Any) -> Any:
    (tmp_path / "tok.json").write_text((tokenizer or word_piece()).to_str())
    config = {
        "name": "tok",
        "type": "tokenize",
        "tokenizer": "tok.json",
        "input": "text",
        "outputs": {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "types"},
        **fields,
    }
    return build(config, StepContext("tok", tmp_path))


def texts(*rows: str | bytes) -> dict[str, Any]:
    return {"text": np.array(list(rows), dtype=object)}


def test_ids_and_masks_are_the_librarys_padded_to_the_longest_row(tmp_path: Path) -> None:
    out = step(tmp_path)(texts("The team won", b"heavy rains", "a late goal scored"))
    reference = word_piece()
    expected = [reference.encode(t).ids for t in ("The team won", "heavy rains", "a late goal scored")]
    width = max(map(len, expected))
    assert out["ids"].dtype == np.int64 and out["ids"].shape == (3, width)
    for row, ids in zip(out["ids"].tolist(), expected, strict=True):
        assert row == ids + [0] * (width - len(ids))  # [PAD] is id 0
    assert out["mask"].tolist() == [[1] * len(ids) + [0] * (width - len(ids)) for ids in expected]
    assert out["types"].tolist() == [[0] * width] * 3
    assert expected[2][-2] == 1  # "scored" is unknown: [UNK], not an error


def test_max_length_pads_truncates_and_counts_special_tokens(tmp_path: Path) -> None:
    run = step(tmp_path, max_length=4, padding="max_length", datatype="INT32")
    out = run(texts("the team won a late goal", "rain"))
    assert out["ids"].dtype == np.int32 and out["ids"].shape == (2, 4)
    cls, sep = 2, 3
    assert out["ids"][0, 0] == cls and out["ids"][0, 3] == sep  # [CLS] t t [SEP]: the specials count
    assert out["mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_without_truncation_a_long_row_is_that_rows_error(tmp_path: Path) -> None:
    run = step(tmp_path, max_length=4, truncation=False)
    assert run(texts("the team"))["ids"].shape == (1, 4)
    with pytest.raises(RowError, match="text 1 is 8 tokens, more than max_length 4"):
        run(texts("rain", "the team won a late goal"))


def test_invalid_utf8_and_non_text_are_the_clients_error(tmp_path: Path) -> None:
    run = step(tmp_path)
    with pytest.raises(RowError, match=r"text 1 is not UTF-8 \(byte 2"):
        run(texts("ok", b"ok\xff"))
    with pytest.raises(DataError, match="expected text"):
        run({"text": np.zeros((2, 3), dtype=np.float32)})


def test_the_pad_id_is_the_tokenizers_own_setting_then_its_pad_token_then_0(tmp_path: Path) -> None:
    own = step(tmp_path, word_piece(own_padding=True))(texts("rain", "the team won"))
    unk = 1  # the tokenizer's own padding: [UNK] on the left
    assert own["ids"][0].tolist()[:2] == [unk, unk] and own["mask"][0].tolist() == [0, 0, 1, 1, 1]
    none = step(tmp_path, word_piece(pad=None))(texts("rain", "the team won"))
    assert none["ids"][0].tolist()[-2:] == [0, 0]


def test_empty_batch_and_fields_that_make_no_sense(tmp_path: Path) -> None:
    assert step(tmp_path, max_length=8)(texts())["ids"].shape == (0, 8)
    for fields, message in (
        ({"padding": "max_length"}, "padding: max_length needs max_length"),
        ({"truncation": True}, "truncation needs max_length"),
        ({"outputs": {"attention_mask": "m"}}, "must map input_ids"),
        ({"outputs": {"input_ids": "i", "ids": "x"}}, "unknown key 'ids'"),
        ({"datatype": "FP32"}, "expected one of INT64, INT32"),
    ):
        with pytest.raises(ConfigError, match=message):
            step(tmp_path, **fields)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a tokenizer.json"):
        build(
            {"name": "t", "type": "tokenize", "tokenizer": "bad.json", "input": "x", "outputs": {"input_ids": "i"}},
            StepContext("t", tmp_path),
        )
