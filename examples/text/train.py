"""Make the text example: a small BERT-style topic classifier behind its own
WordPiece tokenizer, exported to ONNX.

No model hub is reachable from where kbuild is built and tested, so everything
is made here from a fixed seed: a corpus of short generated sentences on three
topics (sport, weather, cooking), a WordPiece tokenizer trained on it with the
`tokenizers` library (lower-casing, [CLS] ... [SEP], written as
models/tokenizer.json), a 4-layer `transformers` BertForSequenceClassification
trained on it for a few epochs (saved with save_pretrained under models/hf/
with the tokenizer: a whole transformers folder, which the tests load to get
transformers' own answers), and its ONNX export
with dynamic batch and sequence axes (models/topics.onnx: input_ids,
attention_mask, token_type_ids -> logits). heldout.json holds sentences the
model never saw with the labels they were made for and transformers' answers.

    python examples/text/train.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
LABELS = ["sport", "weather", "cooking"]
SEED = 7
TRAIN, HELD_OUT = 3000, 120
MAX_LENGTH = 64

_SUBJECTS = [
    "the team",
    "our coach",
    "the striker",
    "my sister",
    "the old captain",
    "a young player",
    "the club",
    "the forecast",
    "the farmer",
    "my neighbour",
    "the chef",
    "grandma",
    "the new cook",
    "everyone",
]
_TOPICS = {
    "sport": (
        ["scored", "won", "lost", "trained", "defended", "passed", "kicked", "celebrated", "raced"],
        [
            "a late goal",
            "the final match",
            "the league title",
            "a penalty",
            "the second half",
            "the derby",
            "a narrow victory",
            "the cup game",
            "a fast sprint",
            "the tournament",
            "extra time",
            "the referee",
        ],
    ),
    "weather": (
        ["expects", "reported", "feared", "watched", "measured", "predicted", "enjoyed", "escaped"],
        [
            "heavy rain",
            "a cold front",
            "strong winds",
            "sunny skies",
            "thick fog",
            "a thunderstorm",
            "freezing snow",
            "the heatwave",
            "light drizzle",
            "a humid afternoon",
            "clouds over the hills",
        ],
    ),
    "cooking": (
        ["baked", "stirred", "roasted", "seasoned", "simmered", "chopped", "tasted", "served", "fried"],
        [
            "the onions",
            "a lemon cake",
            "fresh bread",
            "the tomato sauce",
            "garlic and herbs",
            "a spicy soup",
            "the chicken",
            "some pasta",
            "a pinch of salt",
            "the dough",
            "roast potatoes",
            "the stew",
        ],
    ),
}
_TAILS = [
    "",
    "",
    "today",
    "yesterday",
    "again",
    "before noon",
    "all week",
    "in the evening",
    "last sunday",
    "with great care",
    "as usual",
    "for the first time",
]


def sentence(rng: random.Random, topic: str) -> str:
    verbs, objects = _TOPICS[topic]
    words = [rng.choice(_SUBJECTS), rng.choice(verbs), rng.choice(objects), rng.choice(_TAILS)]
    if rng.random() < 0.3:  # a second clause from the same topic makes longer rows
        words += ["and", rng.choice(verbs), rng.choice(objects)]
    text = " ".join(w for w in words if w)
    return text[0].upper() + text[1:] + rng.choice([".", "!", "", "..."])


def corpus(rng: random.Random, n: int) -> tuple[list[str], list[int]]:
    labels = [rng.randrange(len(LABELS)) for _ in range(n)]
    return [sentence(rng, LABELS[k]) for k in labels], labels


def train_tokenizer(texts: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    # The trainer breaks ties between merges of equal count in hash order,
    # which changes from run to run, and so do the word pieces it keeps on the
    # way. Its whole words and single characters do not: kept alone and
    # numbered in order, specials first, they make the same tokenizer on every
    # run (vocab_size is above what the corpus fills, so every word is whole).
    words = {
        w
        for text in texts
        for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text))
    }
    trained = tokenizer.get_vocab()
    kept = [t for t in trained if t not in specials and (t in words or len(t.removeprefix("##")) == 1)]
    ordered = specials + sorted(kept)
    tokenizer.model = models.WordPiece({t: i for i, t in enumerate(ordered)}, unk_token="[UNK]")
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    tokenizer.enable_truncation(MAX_LENGTH)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": torch.tensor([e.ids for e in encodings]),
        "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
        "token_type_ids": torch.tensor([e.type_ids for e in encodings]),
    }


def train_model(tokenizer: Tokenizer, texts: list[str], labels: list[int]) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=MAX_LENGTH,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={k: i for i, k in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    target = torch.tensor(labels)
    model.train()
    for _epoch in range(2):
        order = torch.randperm(len(texts))
        for start in range(0, len(texts), 32):
            idx = order[start : start + 32].tolist()
            batch = encode(tokenizer, [texts[i] for i in idx])
            loss = model(**batch, labels=target[idx]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return model


def export_onnx(model: BertForSequenceClassification, tokenizer: Tokenizer, path: Path) -> None:
    class Logits(torch.nn.Module):
        def __init__(self, inner: BertForSequenceClassification) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    example = encode(tokenizer, ["The team won the final match today.", "Fog."])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(
        Logits(model),
        tuple(example[n] for n in names),
        str(path),
        dynamo=False,
        input_names=names,
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
    )


def main() -> None:
    random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # float sums in one order: the same weights on every machine
    rng = random.Random(SEED)
    texts, labels = corpus(rng, TRAIN)
    held_texts, held_labels = corpus(rng, HELD_OUT)
    MODELS.mkdir(exist_ok=True)
    tokenizer = train_tokenizer(texts)
    tokenizer.save(str(MODELS / "tokenizer.json"))
    model = train_model(tokenizer, texts, labels)
    model.save_pretrained(str(MODELS / "hf"))
    # the tokenizer beside the weights: a whole transformers folder (the huggingface example reads it)
    PreTrainedTokenizerFast(
        tokenizer_file=str(MODELS / "tokenizer.json"),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_LENGTH,
    ).save_pretrained(str(MODELS / "hf"))
    export_onnx(model, Tokenizer.from_file(str(MODELS / "tokenizer.json")), MODELS / "topics.onnx")
    # The answers of the model as saved and loaded back, as anyone would load it.
    saved = BertForSequenceClassification.from_pretrained(str(MODELS / "hf")).eval()
    with torch.no_grad():
        probs = torch.softmax(saved(**encode(tokenizer, held_texts)).logits, dim=1).numpy()
    answers = [LABELS[i] for i in probs.argmax(axis=1)]
    accuracy = float(np.mean([a == LABELS[k] for a, k in zip(answers, held_labels, strict=True)]))
    heldout = {
        "inputs": {"text": held_texts},
        "labels": [LABELS[k] for k in held_labels],
        "transformers": {"topic": answers, "probability": [round(float(p), 6) for p in probs.max(axis=1)]},
    }
    (HERE / "heldout.json").write_text(json.dumps(heldout, indent=1) + "\n")
    print(f"held-out accuracy {accuracy:.3f} on {HELD_OUT} sentences; vocabulary {tokenizer.get_vocab_size()}")


if __name__ == "__main__":
    main()
