"""The pool step against sentence-transformers' pooling, written out here in
plain loops over the kept tokens; padding must never count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import StepContext
from kbuild.runtime.steps.pool import METHODS, build

RNG = np.random.default_rng(7)
HIDDEN = RNG.normal(size=(3, 5, 4)).astype(np.float32)
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=np.int64)


def _by_hand(method: str, row: int) -> np.ndarray:
    kept = HIDDEN[row][MASK[row] == 1]
    answers = {
        "mean": kept.mean(axis=0),
        "cls": HIDDEN[row, 0],
        "max": kept.max(axis=0),
        "mean_sqrt_len": kept.sum(axis=0) / np.sqrt(len(kept)),
        "last": kept[-1],
    }
    return np.asarray(answers[method])


def _run(step: dict[str, object], variables: dict[str, np.ndarray]) -> np.ndarray:
    runner = build({"input": "h", "output": "e", **step}, StepContext("pool", Path(".")))
    out = runner(variables)
    assert out is not None
    return out["e"]


@pytest.mark.parametrize("method", METHODS)
def test_each_method_counts_only_the_kept_tokens(method: str) -> None:
    got = _run({"mask": "m", "method": method}, {"h": HIDDEN, "m": MASK})
    assert got.dtype == np.float32 and got.shape == (3, 4)
    for row in range(3):
        np.testing.assert_allclose(got[row], _by_hand(method, row), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_padding_values_change_nothing(method: str) -> None:
    noisy = HIDDEN.copy()
    noisy[MASK == 0] = 1e6
    a = _run({"mask": "m", "method": method}, {"h": HIDDEN, "m": MASK})
    b = _run({"mask": "m", "method": method}, {"h": noisy, "m": MASK})
    np.testing.assert_array_equal(a, b)


def test_last_reads_left_padding_too() -> None:
    left = np.zeros_like(HIDDEN)
    left_mask = np.zeros_like(MASK)
    for row in range(3):
        n = int(MASK[row].sum())
        left[row, 5 - n :] = HIDDEN[row, :n]
        left_mask[row, 5 - n :] = 1
    right = _run({"mask": "m", "method": "last"}, {"h": HIDDEN, "m": MASK})
    np.testing.assert_array_equal(right, _run({"mask": "m", "method": "last"}, {"h": left, "m": left_mask}))


def test_normalize_gives_unit_vectors_and_no_mask_counts_every_token() -> None:
    got = _run({"normalize": True}, {"h": HIDDEN})
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)
    mean = HIDDEN.mean(axis=1)
    np.testing.assert_allclose(got, mean / np.linalg.norm(mean, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_a_row_without_tokens_gives_zeros() -> None:
    empty = np.zeros((1, 5), dtype=np.int64)
    for method in ("mean", "max", "last", "mean_sqrt_len"):
        got = _run({"mask": "m", "method": method}, {"h": HIDDEN[:1], "m": empty})
        assert not got.any(), method


def test_bad_fields_and_data_are_named() -> None:
    with pytest.raises(ConfigError, match="method"):
        build({"input": "h", "output": "e", "method": "median"}, StepContext("pool", Path(".")))
    with pytest.raises(DataError, match=r"mask has shape \[3, 4\]"):
        _run({"mask": "m"}, {"h": HIDDEN, "m": MASK[:, :4]})
    with pytest.raises(DataError, match="token vectors"):
        _run({}, {"h": HIDDEN[:, 0]})
