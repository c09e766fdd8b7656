"""Named configurations of :class:`SemanticUNet2DModel`.

``cityscapes``, ``coco-stuff`` and ``ade20k`` are the paper's networks (Sec. IV-A; reference doc section 2.1:
``num_channels 256``, ``channel_mult (1,1,2,2,4,4)``, 2 residual blocks, attention at 32/16/8 for 256 inputs,
64 channels per head, residual up/down-sampling, scale-shift time conditioning, learned variance). ``camvid-small``
is a network small enough to train on a CPU; ``tiny`` is for tests.
"""

from __future__ import annotations

from typing import Sequence


def official_unet_config(
    segmap_channels: int,
    image_size: int = 256,
    num_channels: int = 256,
    channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4),
    num_res_blocks: int = 2,
    attention_resolutions: Sequence[int] = (32, 16, 8),
    num_head_channels: int = 64,
    resblock_updown: bool = True,
    use_scale_shift_norm: bool = True,
    learn_sigma: bool = True,
    dropout: float = 0.0,
    sample_size=None,
) -> dict:
    """Translate the authors' ``create_model`` arguments into a :class:`SemanticUNet2DModel` config.

    As in guided-diffusion, an attention resolution ``r`` means "attention at the level whose downsampling factor is
    ``image_size // r``"; level ``i`` has factor ``2**i``. So for Cityscapes (trained at 256x512 with
    ``image_size=256``) attention sits at 32x64, 16x32 and 8x16.
    """
    factors = {image_size // r for r in attention_resolutions}
    levels = len(channel_mult)
    attn = [2**level in factors for level in range(levels)]
    return dict(
        sample_size=sample_size if sample_size is not None else image_size,
        in_channels=3,
        out_channels=6 if learn_sigma else 3,
        segmap_channels=segmap_channels,
        down_block_types=tuple("SemanticAttnDownBlock2D" if a else "SemanticDownBlock2D" for a in attn),
        up_block_types=tuple("SemanticAttnUpBlock2D" if a else "SemanticUpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(num_channels * m for m in channel_mult),
        layers_per_block=num_res_blocks,
        attention_head_dim=num_head_channels,
        resnet_updown=resblock_updown,
        time_embedding_norm="scale_shift" if use_scale_shift_norm else "default",
        dropout=dropout,
    )


SEMANTIC_UNET_CONFIGS: dict[str, dict] = {
    "cityscapes": official_unet_config(segmap_channels=36, sample_size=(256, 512)),
    "coco-stuff": official_unet_config(segmap_channels=184),
    "ade20k": official_unet_config(segmap_channels=151),
    # CPU-trainable CamVid network: 4 levels (factor 8), attention at the two coarsest levels.
    "camvid-small": dict(
        sample_size=(64, 80), in_channels=3, out_channels=6, segmap_channels=12,
        down_block_types=("SemanticDownBlock2D", "SemanticDownBlock2D", "SemanticAttnDownBlock2D",
                          "SemanticAttnDownBlock2D"),
        up_block_types=("SemanticAttnUpBlock2D", "SemanticAttnUpBlock2D", "SemanticUpBlock2D",
                        "SemanticUpBlock2D"),
        block_out_channels=(32, 64, 96, 128), layers_per_block=1, attention_head_dim=32,
        spade_hidden_channels=32, norm_num_groups=16,
    ),
    # For tests: seconds on a CPU.
    "tiny": dict(
        sample_size=(16, 16), in_channels=3, out_channels=6, segmap_channels=12,
        down_block_types=("SemanticDownBlock2D", "SemanticAttnDownBlock2D"),
        up_block_types=("SemanticAttnUpBlock2D", "SemanticUpBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, attention_head_dim=8,
        spade_hidden_channels=8, norm_num_groups=4,
    ),
}


def semantic_unet_config(name: str, **overrides) -> dict:
    """A copy of the named configuration, with ``overrides`` applied (e.g. ``segmap_channels=...``)."""
    key = name.lower().replace("_", "-")
    key = {"coco": "coco-stuff", "cocostuff": "coco-stuff"}.get(key, key)
    if key not in SEMANTIC_UNET_CONFIGS:
        raise ValueError(f"unknown SemanticUNet2DModel preset {name!r}; available: {sorted(SEMANTIC_UNET_CONFIGS)}")
    return {**SEMANTIC_UNET_CONFIGS[key], **overrides}
