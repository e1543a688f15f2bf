"""transformers' image-processor settings as the image step's fields."""

from __future__ import annotations

from typing import Any

import pytest

from kbuild.load.image_processors import ProcessorProblem, image_fields

VIT = {
    "image_processor_type": "ViTImageProcessor",
    "size": {"height": 224, "width": 224},
    "resample": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
CONVNEXT = {
    "image_processor_type": "ConvNextImageProcessor",
    "size": {"shortest_edge": 224},
    "crop_pct": 0.875,
    "resample": 3,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}


def test_a_vit_processor_resizes_to_its_size() -> None:
    fields = image_fields(VIT)
    assert fields == {
        "resample": "bilinear",
        "layout": "NCHW",
        "channels": 3,
        "size": [224, 224],
        "rescale": 1 / 255,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }


def test_a_convnext_processor_crops_below_384_and_warps_from_there() -> None:
    below = image_fields(CONVNEXT)
    assert below["size"] == [224, 224] and below["shortest_edge"] == 256 and below["resample"] == "bicubic"
    above = image_fields({**CONVNEXT, "size": {"shortest_edge": 384}})
    assert above["size"] == [384, 384] and "shortest_edge" not in above


def test_the_fast_and_pillow_variants_read_alike_and_switches_are_kept() -> None:
    assert image_fields({**VIT, "image_processor_type": "ViTImageProcessorFast"}) == image_fields(VIT)
    plain = image_fields({**VIT, "do_rescale": False, "do_normalize": False})
    assert plain["rescale"] == 1.0 and "mean" not in plain and "std" not in plain


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_processor_type": "CLIPImageProcessor"}, "CLIPImageProcessor; kbuild reproduces"),
        ({"do_resize": False}, "does not resize"),
        ({"resample": 9}, "not one of Pillow's filters"),
        ({"size": {"longest_edge": 100}}, "does not take"),
        ({"do_center_crop": True}, "center-crops or pads"),
    ],
)
def test_what_the_image_step_cannot_do_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ProcessorProblem, match=message):
        image_fields({**VIT, **change})
