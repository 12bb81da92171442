"""The transformer tasks, with their evidence known by construction: a small timm vision
transformer whose class is the colour of one patch-aligned square on a real texture
(``"vit-32"``), and a small Hugging Face BERT whose label is whether one token occurs in a
padded sentence (``"text"``). No pretrained transformer ships offline, so each is built from a
config and trained here in seconds (the ``transformers`` extra: timm and transformers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: the side of the vision transformer's inputs and of its square patches, in pixels
VIT_SIDE, VIT_PATCH = 32, 8
#: the square's colour is the class: red, green, blue, yellow
SQUARE_COLOURS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0))
#: the sentences' longest length, their vocabulary, the padding id and the deciding token
SENTENCE_LENGTH, VOCABULARY, PADDING_TOKEN, DECIDING_TOKEN = 16, 50, 0, 7


def patch_squares(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, tuple, Tensor]:
    """(n, 3, 32, 32) crops of the bench's textures, each with one 8 × 8 square of one of four
    colours on the patch grid; the label is the colour. Returns the images, labels, evidence,
    no further model arguments, and the same crops without their squares."""
    from captum_masks.bench.shapes import BACKGROUNDS, _backgrounds

    generator = torch.Generator().manual_seed(seed)
    textures = _backgrounds(BACKGROUNDS)
    colours = torch.tensor(SQUARE_COLOURS)
    labels = torch.randint(0, len(SQUARE_COLOURS), (n,), generator=generator)
    images, plain = torch.empty(2, n, 3, VIT_SIDE, VIT_SIDE)
    evidence = torch.zeros(n, VIT_SIDE, VIT_SIDE, dtype=torch.bool)
    for row in range(n):
        texture = textures[int(torch.randint(len(textures), (1,), generator=generator))]
        top, left = (
            int(torch.randint(side - VIT_SIDE + 1, (1,), generator=generator))
            for side in texture.shape[1:]
        )
        plain[row] = texture[:, top : top + VIT_SIDE, left : left + VIT_SIDE]
        images[row] = plain[row]
        r, c = (
            VIT_PATCH * int(v)
            for v in torch.randint(VIT_SIDE // VIT_PATCH, (2,), generator=generator)
        )
        images[row, :, r : r + VIT_PATCH, c : c + VIT_PATCH] = colours[labels[row]].view(3, 1, 1)
        evidence[row, r : r + VIT_PATCH, c : c + VIT_PATCH] = True
    return images, labels, evidence, (), plain


def padded_sentences(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, tuple]:
    """(n, 16) token ids of sentences of 6 to 16 tokens, padded with :data:`PADDING_TOKEN`, and
    their attention mask; class 1 holds :data:`DECIDING_TOKEN` once, class 0 never."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCABULARY, (n, SENTENCE_LENGTH), generator=generator)
    ids[ids == DECIDING_TOKEN] = DECIDING_TOKEN + 1
    lengths = torch.randint(6, SENTENCE_LENGTH + 1, (n,), generator=generator)
    attention_mask = (torch.arange(SENTENCE_LENGTH) < lengths[:, None]).long()
    ids = ids.masked_fill(attention_mask == 0, PADDING_TOKEN)
    labels = torch.randint(0, 2, (n,), generator=generator)
    where = (torch.rand(n, generator=generator) * lengths).long()
    evidence = torch.zeros(n, SENTENCE_LENGTH, dtype=torch.bool)
    rows = torch.nonzero(labels).flatten()
    ids[rows, where[rows]] = DECIDING_TOKEN
    evidence[rows, where[rows]] = True
    return ids, labels, evidence, (attention_mask,)


def tiny_vit() -> nn.Module:
    """A timm ``VisionTransformer``: 8-px patches of a 32-px image, 4 blocks of width 64."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=VIT_SIDE,
        patch_size=VIT_PATCH,
        num_classes=len(SQUARE_COLOURS),
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=2.0,
    )


def tiny_bert() -> nn.Module:
    """A Hugging Face ``BertForSequenceClassification``: 2 layers of width 32."""
    from transformers import BertConfig, BertForSequenceClassification

    settings = {
        "vocab_size": VOCABULARY,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": SENTENCE_LENGTH,
        "num_labels": 2,
        "pad_token_id": PADDING_TOKEN,
    }
    config = BertConfig.from_dict(settings)
    return BertForSequenceClassification(config)


__all__ = [
    "DECIDING_TOKEN",
    "PADDING_TOKEN",
    "SQUARE_COLOURS",
    "VIT_PATCH",
    "VIT_SIDE",
    "padded_sentences",
    "patch_squares",
    "tiny_bert",
    "tiny_vit",
]
