"""type: huggingface, runtime: native — a transformers folder's model run by
transformers on torch. The compiler has already expanded the step it came from
(the tokenizer or the image processing, and the labels, are steps of their
own): this one takes token ids or pixel values and gives the model's logits.

Fields: model (the folder); task (text-classification, image-classification,
or feature-extraction: the encoder alone, for the embedding tasks); inputs
{input_ids, attention_mask, token_type_ids: VAR} for text, {pixel_values: VAR}
for images; output VAR (the logits, FP32 [N, classes]; for feature-extraction
the last hidden state, FP32 [N, tokens, D]). Backend option from the spin: device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from kbuild.runtime.contract.errors import ConfigError
from kbuild.runtime.steps import Runner, StepContext, get_mapping, get_str, variable
from kbuild.runtime.steps.torch_tensors import device as torch_device
from kbuild.runtime.steps.torch_tensors import size_pools, tensor
from kbuild.runtime.tensors import Vars

_TEXT = ("input_ids", "attention_mask", "token_type_ids")
# task -> the transformers class that loads it, the inputs it takes and the output it gives
_TASKS = {
    "text-classification": ("AutoModelForSequenceClassification", _TEXT, "logits"),
    "image-classification": ("AutoModelForImageClassification", ("pixel_values",), "logits"),
    "feature-extraction": ("AutoModel", _TEXT, "last_hidden_state"),
}


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    device = torch_device(str(ctx.options.get("device") or "cpu"))
    if ctx.threads is not None:
        size_pools(ctx.threads)
    task = get_str(step, "task")
    if task not in _TASKS:
        raise ConfigError(f"task {task!r} has no native runner")
    import transformers

    loader, accepted, answer = _TASKS[task]
    folder = ctx.model_path(step)
    try:
        model = getattr(transformers, loader).from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # transformers says what is missing or wrong
        raise ConfigError(f"{folder.name}: transformers cannot load it: {e}") from None
    model = model.to(device).eval()
    feeds = get_mapping(step, "inputs")
    unknown = [name for name in feeds if name not in accepted]
    if unknown:
        raise ConfigError(f"inputs: {unknown[0]!r} is not one of {', '.join(accepted)}")
    logits = get_str(step, "output")

    def run(variables: Vars) -> Vars:
        kwargs = {name: tensor(name, variable(variables, var), device) for name, var in feeds.items()}
        with torch.inference_mode():
            result = getattr(model(**kwargs), answer)
        return {logits: result.float().cpu().numpy()}

    return run
