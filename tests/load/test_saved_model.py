"""The SavedModel reader: signatures, their tensors' types and shapes, read
from saved_model.pb's wire format without TensorFlow."""

from __future__ import annotations

import pytest

from kbuild.load.checkpoints import CheckpointProblem, read_keras, read_saved_model
from kbuild.load.saved_model import TensorSpec, WireError, read_signatures
from tests.helpers.build import EXAMPLES

SAVED = EXAMPLES / "tensorflow/models/wine_savedmodel"


def test_the_signature_is_read_with_its_tensors() -> None:
    (signature,) = read_saved_model(SAVED)
    assert (signature.name, signature.tags) == ("serving_default", ("serve",))
    assert signature.inputs == {"measurements": TensorSpec("FP32", (-1, 13))}
    assert signature.outputs == {"scores": TensorSpec("FP32", (-1, 3))}


def test_tensorflows_own_init_op_is_not_a_signature() -> None:
    every = read_signatures((SAVED / "saved_model.pb").read_bytes())
    assert "__saved_model_init_op" in {s.name for s in every}
    assert [s.name for s in read_saved_model(SAVED)] == ["serving_default"]


@pytest.mark.parametrize("cut", [1, 7, 100, 5000])
def test_a_truncated_file_is_a_wire_error_never_a_crash(cut: int) -> None:
    data = (SAVED / "saved_model.pb").read_bytes()
    try:
        read_signatures(data[:cut])
    except WireError:
        pass  # or it ends at a field boundary and reads fewer signatures


def test_a_keras_file_gives_its_layers_names() -> None:
    model = read_keras(EXAMPLES / "keras/models/wine.keras")
    assert model.inputs == ("measurements",) and model.outputs == ("scores",)
    with pytest.raises(CheckpointProblem, match="a keras step takes a .keras or .h5 file"):
        read_keras(SAVED)
