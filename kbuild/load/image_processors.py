"""A transformers folder's image processor (preprocessor_config.json) as the
fields of kbuild's image step, which does the same to the rounding: ViT's
(resize to a size) and ConvNeXt's (the shorter side to shortest_edge /
crop_pct and the centre cropped, or a plain resize from 384 up), which ResNet
folders use too. Anything else is refused, naming the processor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Pillow's Resampling numbers, as the files record them
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# processor -> its defaults where the file leaves a field out (transformers' own)
DEFAULTS: dict[str, dict[str, Any]] = {
    "ViTImageProcessor": {
        "size": {"height": 224, "width": 224},
        "resample": 2,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
    },
    "ConvNextImageProcessor": {
        "size": {"shortest_edge": 384},
        "resample": 3,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
        "crop_pct": 224 / 256,
    },
}


class ProcessorProblem(Exception):
    """What about the processor kbuild's image step cannot do, in words for the user."""


def image_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """The image step's fields (size, resample, shortest_edge, rescale, mean, std) for a processor config."""
    kind = str(config.get("image_processor_type", ""))
    base = kind.removesuffix("Fast").removesuffix("Pil")
    if base not in DEFAULTS:
        known = ", ".join(DEFAULTS)
        raise ProcessorProblem(f"has an image processor {kind or '(none named)'}; kbuild reproduces {known}")
    settings = {**DEFAULTS[base], **{k: v for k, v in config.items() if v is not None}}
    if not settings.get("do_resize", True):
        raise ProcessorProblem("has an image processor that does not resize: images of any size cannot batch")
    if settings.get("do_center_crop") or settings.get("do_pad"):
        raise ProcessorProblem(f"has a {kind} that center-crops or pads beyond what {base} does by default")
    resample = RESAMPLE.get(int(settings["resample"]))
    if resample is None:
        raise ProcessorProblem(f"has resample {settings['resample']!r}, which is not one of Pillow's filters")
    fields: dict[str, Any] = {"resample": resample, "layout": "NCHW", "channels": 3}
    size = settings["size"]
    if not isinstance(size, Mapping):
        raise ProcessorProblem(f"has a size {size!r} that is not a mapping")
    if "height" in size and "width" in size:
        fields["size"] = [int(size["height"]), int(size["width"])]
    elif "shortest_edge" in size and base == "ConvNextImageProcessor":
        edge = int(size["shortest_edge"])
        fields["size"] = [edge, edge]
        if edge < 384:  # transformers warps from 384 up, and crops below
            fields["shortest_edge"] = int(edge / float(settings["crop_pct"]))
    else:
        raise ProcessorProblem(f"has a size {dict(size)} that {base} does not take")
    fields["rescale"] = float(settings.get("rescale_factor", 1 / 255)) if settings.get("do_rescale", True) else 1.0
    if settings.get("do_normalize", True):
        fields["mean"] = [float(v) for v in settings["image_mean"]]
        fields["std"] = [float(v) for v in settings["image_std"]]
    return fields
