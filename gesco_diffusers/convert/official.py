"""The authors' ``UNetModel`` state-dict layout <-> :class:`~gesco_diffusers.models.SemanticUNet2DModel`.

The official network (ispamm/GESCO, a fork of WeilunWang/semantic-diffusion-model "SDM"; reference doc sections 2-3)
stores a flat fp32 ``dict[str, Tensor]``: ``time_embed.{0,2}``, ``input_blocks.k.m`` (encoder: ``k = 0`` the input
conv, then per level ``num_res_blocks`` entries ``[ResBlock, AttentionBlock?]`` and, except at the last level, one
down-sampling entry), ``middle_block.{0,1,2}``, ``output_blocks.j.m`` (decoder, deepest level first,
``num_res_blocks + 1`` entries per level, the last one of every level but the shallowest carrying the up-sampler) and
``out.{0,2}``. Everything here is derived from that structure by a walk over the levels plus small per-block naming
tables, never from a literal list of keys.

Three things need more than a rename:

* the fused attention ``qkv`` (Conv1d ``[3ch, ch, 1]``) uses the *legacy per-head* layout (``QKVAttentionLegacy``):
  viewed as ``[heads, 3, d, ch]``, head ``h`` owns rows ``h*3d .. h*3d + 3d`` as ``[q | k | v]``. It is split into
  diffusers' ``to_q``/``to_k``/``to_v`` Linear layers (``[ch, ch]`` each, head-major rows, as diffusers reshapes
  ``(B, T, heads * d)`` into heads). Scaling ``q`` and ``k`` by ``d**-1/4`` each equals diffusers' ``d**-1/2``;
* ``proj_out`` (Conv1d with kernel 1) becomes ``to_out.0`` (Linear) by dropping the kernel dimension;
* GESCO's encoder ``ResBlock`` carries an unused ``spade_norm`` (17 blocks, 102 tensors, ~20.7 M random
  parameters, never called in ``forward``; reference doc 2.3): those tensors are dropped. SDM checkpoints do not
  have them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional, Sequence, Union

import torch

from ..models import SemanticUNet2DModel

ShapeLike = Union[torch.Size, Sequence[int]]
StateDictLike = Mapping[str, Union[torch.Tensor, ShapeLike]]

#: The GESCO-only, never-used ``SPADEGroupNorm`` of every encoder ``ResBlock`` (reference doc 2.3, bug 15).
UNUSED_SPADE_NORM = re.compile(r"^input_blocks\.\d+\.0\.spade_norm\.(mlp_shared\.0|mlp_gamma|mlp_beta)\.(weight|bias)$")

#: Map encodings by number of SPADE input channels: 2 means the authors' ``one_hot_label=False`` default
#: (``[raw label id, edge]``, reference doc 1.1 and 7, bug 3); anything else a one-hot map (+ edge channel).
LABEL_INDEX_CHANNELS = 2

# --------------------------------------------------------------------------------------------------------------------
# Per-block naming tables: official sub-module -> ours. Every official parameterised leaf has a weight and a bias.
# A ``None`` target marks the fused qkv (split into to_q/to_k/to_v); the skip connection exists only where the
# block changes the channel count, so it is optional on both sides.

_ENCODER_RESBLOCK = {  # guided-diffusion ResBlock -> diffusers ResnetBlock2D
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_SPADE_NORM = ("mlp_shared.0", "mlp_gamma", "mlp_beta")
_DECODER_RESBLOCK = {  # SDMResBlock -> SPADEResnetBlock2D (the norms sit outside in_layers/out_layers)
    **{f"in_norm.{leaf}": f"norm1.{leaf}" for leaf in _SPADE_NORM},
    "in_layers.1": "conv1",
    "emb_layers.1": "time_emb_proj",
    **{f"out_norm.{leaf}": f"norm2.{leaf}" for leaf in _SPADE_NORM},
    "out_layers.2": "conv2",
    "skip_connection": "conv_shortcut",
}
_ATTENTION = {"norm": "group_norm", "qkv": None, "proj_out": "to_out.0"}
_CONV_DOWNSAMPLE = {"op": "conv"}  # resblock_updown=False: strided 3x3 conv
_CONV_UPSAMPLE = {"conv": "conv"}  # resblock_updown=False: nearest x2 then 3x3 conv
_OPTIONAL = {"skip_connection"}
_PARAMS = ("weight", "bias")
_QKV_TARGETS = ("to_q", "to_k", "to_v")


@dataclass(frozen=True)
class OfficialUNetArchitecture:
    """The arguments of the authors' ``UNetModel`` recovered from a checkpoint's tensor names and shapes.

    Attributes:
        in_channels: image channels (3).
        model_channels: ``--num_channels`` (256 for the paper's models).
        channel_mult: per-level multipliers (``(1, 1, 2, 2, 4, 4)``).
        num_res_blocks: residual blocks per encoder level (2).
        encoder_attention: per encoder level, whether its residual blocks are followed by attention.
        decoder_attention: per decoder level (deepest first), the same for the decoder.
        middle_attention: attention between the two middle blocks (always in the official code).
        segmap_channels: SPADE input channels C (36 / 184 / 151, or 2 for ``one_hot_label=False``).
        spade_hidden_channels: width of the SPADE shared conv (128).
        time_embed_dim: width of the timestep MLP (``4 * model_channels``).
        learn_sigma: 6 output channels (epsilon + learned-range variance) instead of 3.
        resblock_updown: residual down/up-sampling blocks instead of (strided) convolutions.
        use_scale_shift_norm: timestep scale-shift instead of an additive embedding.
        num_head_channels: channels per attention head (not recoverable from shapes: a given value, 64 officially).
        has_unused_spade_norm: GESCO checkpoint (encoder ``spade_norm`` tensors present) rather than SDM.
    """

    in_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    encoder_attention: tuple[bool, ...]
    decoder_attention: tuple[bool, ...]
    middle_attention: bool
    segmap_channels: int
    spade_hidden_channels: int
    time_embed_dim: int
    learn_sigma: bool
    resblock_updown: bool
    use_scale_shift_norm: bool
    num_head_channels: int
    has_unused_spade_norm: bool

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def map_encoding(self) -> str:
        """``"label_index_and_edges"`` for 2-channel (``one_hot_label=False``) models, else ``"one_hot"``."""
        return "label_index_and_edges" if self.segmap_channels == LABEL_INDEX_CHANNELS else "one_hot"

    @property
    def source(self) -> str:
        return "GESCO" if self.has_unused_spade_norm else "SDM"

    def unet_config(self, sample_size: Optional[Union[int, Sequence[int]]] = None) -> dict:
        """The :class:`SemanticUNet2DModel` configuration that reproduces this network exactly."""
        down = {True: "SemanticAttnDownBlock2D", False: "SemanticDownBlock2D"}
        up = {True: "SemanticAttnUpBlock2D", False: "SemanticUpBlock2D"}
        return dict(
            sample_size=list(sample_size) if isinstance(sample_size, (tuple, list)) else sample_size,
            in_channels=self.in_channels,
            out_channels=2 * self.in_channels if self.learn_sigma else self.in_channels,
            segmap_channels=self.segmap_channels,
            down_block_types=tuple(down[a] for a in self.encoder_attention),
            up_block_types=tuple(up[a] for a in self.decoder_attention),
            block_out_channels=self.block_out_channels,
            layers_per_block=self.num_res_blocks,
            attention_head_dim=self.num_head_channels,
            resnet_updown=self.resblock_updown,
            time_embedding_norm="scale_shift" if self.use_scale_shift_norm else "default",
            time_embedding_dim=self.time_embed_dim,
            spade_hidden_channels=self.spade_hidden_channels,
            mid_block_attention=self.middle_attention,
            dropout=0.0,
        )

    def describe(self) -> str:
        """One line per setting, for logs and model cards."""
        def levels(flags: Sequence[bool]) -> str:
            return ", ".join(str(i) for i, a in enumerate(flags) if a) or "none"

        return "\n".join([
            f"source: {self.source} checkpoint ({'with' if self.has_unused_spade_norm else 'without'} the unused "
            "encoder spade_norm tensors)",
            f"levels: {self.num_levels}, channels {self.block_out_channels} "
            f"(model_channels {self.model_channels} x channel_mult {self.channel_mult})",
            f"residual blocks per level: {self.num_res_blocks}; "
            f"{'residual' if self.resblock_updown else 'convolutional'} down/up-sampling",
            f"attention: encoder levels {levels(self.encoder_attention)}, decoder levels (deepest first) "
            f"{levels(self.decoder_attention)}, middle {'yes' if self.middle_attention else 'no'}; "
            f"{self.num_head_channels} channels per head",
            f"semantic map: C = {self.segmap_channels} ({self.map_encoding}); SPADE hidden width "
            f"{self.spade_hidden_channels}",
            f"timestep embedding: {self.time_embed_dim}, "
            f"{'scale-shift' if self.use_scale_shift_norm else 'additive'}; output channels "
            f"{2 * self.in_channels if self.learn_sigma else self.in_channels} "
            f"({'learned-range variance' if self.learn_sigma else 'fixed variance'})",
        ])


# --------------------------------------------------------------------------------------------------------------------
# Inference of the architecture


def _shapes(state_dict: StateDictLike) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) if torch.is_tensor(v) else tuple(int(s) for s in v) for k, v in state_dict.items()}


def _entry_indices(shapes: Mapping[str, tuple], prefix: str) -> list[int]:
    """Sorted distinct ``k`` of ``{prefix}.k.*`` keys, checked to be ``0 .. n-1``."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = sorted({int(m.group(1)) for k in shapes if (m := pattern.match(k))})
    if found != list(range(len(found))):
        missing = sorted(set(range(max(found, default=-1) + 1)) - set(found))
        raise ValueError(f"checkpoint {prefix} are not numbered 0..n-1: entries {missing} are missing")
    return found


def _require(shapes: Mapping[str, tuple], key: str, purpose: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ValueError(f"checkpoint has no tensor {key!r} (needed to infer {purpose}); is it an official "
                         "GESCO/SDM UNetModel state dict?")
    return shapes[key]


def _has_module(shapes: Mapping[str, tuple], prefix: str) -> bool:
    return f"{prefix}.weight" in shapes or any(k.startswith(prefix + ".") for k in shapes)


def _level_flag(flags: list[bool], what: str) -> bool:
    if len(set(flags)) > 1:
        raise ValueError(f"{what}: attention follows only some residual blocks of the level ({flags}); "
                         "SemanticUNet2DModel places attention per level, as the official code does")
    return flags[0]


def infer_official_architecture(state_dict: StateDictLike, num_head_channels: int = 64) -> OfficialUNetArchitecture:
    """Recover the official ``UNetModel`` arguments from tensor names and shapes (values are not read).

    Args:
        state_dict: the checkpoint (tensors, meta tensors, or plain shapes).
        num_head_channels: channels per attention head (``--num_head_channels``; 64 in every official config).
    """
    if not isinstance(num_head_channels, int) or num_head_channels < 1:
        raise ValueError(f"num_head_channels must be a positive integer, got {num_head_channels!r}")
    shapes = _shapes(state_dict)
    model_channels, in_channels = _require(shapes, "input_blocks.0.0.weight", "the base width")[:2]
    time_embed_dim = _require(shapes, "time_embed.0.weight", "the timestep width")[0]
    out_channels = _require(shapes, "out.2.weight", "the output channels")[0]
    if out_channels not in (in_channels, 2 * in_channels):
        raise ValueError(f"out.2.weight has {out_channels} output channels; expected {in_channels} or "
                         f"{2 * in_channels} (learned sigma) for {in_channels} image channels")

    # Decoder entries: the first one carrying an up-sampler (a sub-module after the resblock that is not attention)
    # ends the deepest level, so it sits at index num_res_blocks.
    outputs = _entry_indices(shapes, "output_blocks")
    inputs = _entry_indices(shapes, "input_blocks")

    def upsampler(j: int) -> Optional[str]:
        for m in (1, 2):
            prefix = f"output_blocks.{j}.{m}"
            if _has_module(shapes, prefix) and not _has_module(shapes, f"{prefix}.qkv"):
                return prefix
        return None

    up_entries = [j for j in outputs if upsampler(j)]
    num_res_blocks = up_entries[0] if up_entries else len(outputs) - 1
    if num_res_blocks < 1 or len(outputs) % (num_res_blocks + 1):
        raise ValueError(f"{len(outputs)} output_blocks do not form levels of num_res_blocks + 1 entries "
                         f"(num_res_blocks inferred as {num_res_blocks})")
    num_levels = len(outputs) // (num_res_blocks + 1)
    expected_up = [(num_res_blocks + 1) * d + num_res_blocks for d in range(num_levels - 1)]
    if up_entries != expected_up:
        raise ValueError(f"up-samplers found in output_blocks {up_entries}, expected {expected_up} for "
                         f"{num_levels} levels of {num_res_blocks} residual blocks")
    if len(inputs) != num_levels * (num_res_blocks + 1):
        raise ValueError(f"{len(inputs)} input_blocks but {len(outputs)} output_blocks: an official encoder has "
                         f"{num_levels * (num_res_blocks + 1)} for {num_levels} levels of {num_res_blocks} blocks")
    resblock_updown = not up_entries or _has_module(shapes, f"{upsampler(up_entries[0])}.in_layers")

    block_out, encoder_attention, decoder_attention = [], [], []
    for level in range(num_levels):
        first = 1 + level * (num_res_blocks + 1)
        entries = range(first, first + num_res_blocks)
        block_out.append(_require(shapes, f"input_blocks.{first}.0.in_layers.2.weight", f"level {level}'s width")[0])
        encoder_attention.append(_level_flag(
            [_has_module(shapes, f"input_blocks.{k}.1.qkv") for k in entries], f"encoder level {level}"))
        entries = range(level * (num_res_blocks + 1), (level + 1) * (num_res_blocks + 1))
        decoder_attention.append(_level_flag(
            [_has_module(shapes, f"output_blocks.{j}.1.qkv") for j in entries], f"decoder level {level}"))
    if any(c % model_channels for c in block_out):
        raise ValueError(f"level widths {block_out} are not multiples of the base width {model_channels}")

    spade_hidden, segmap_channels = _require(shapes, "middle_block.0.in_norm.mlp_shared.0.weight", "C")[:2]
    emb_out = _require(shapes, "input_blocks.1.0.emb_layers.1.weight", "the timestep conditioning")[0]
    if emb_out not in (block_out[0], 2 * block_out[0]):
        raise ValueError(f"input_blocks.1.0.emb_layers.1.weight has {emb_out} outputs; expected {block_out[0]} "
                         f"(additive) or {2 * block_out[0]} (scale-shift)")

    middle_attention = _has_module(shapes, "middle_block.1.qkv")
    attention_widths = {c for c, a in zip(block_out, encoder_attention) if a}
    attention_widths |= {c for c, a in zip(reversed(block_out), decoder_attention) if a}
    attention_widths |= {block_out[-1]} if middle_attention else set()
    for width in sorted(attention_widths):
        if width % num_head_channels:
            raise ValueError(f"attention width {width} is not divisible by num_head_channels={num_head_channels}")

    return OfficialUNetArchitecture(
        in_channels=in_channels,
        model_channels=model_channels,
        channel_mult=tuple(c // model_channels for c in block_out),
        num_res_blocks=num_res_blocks,
        encoder_attention=tuple(encoder_attention),
        decoder_attention=tuple(decoder_attention),
        middle_attention=middle_attention,
        segmap_channels=segmap_channels,
        spade_hidden_channels=spade_hidden,
        time_embed_dim=time_embed_dim,
        learn_sigma=out_channels == 2 * in_channels,
        resblock_updown=resblock_updown,
        use_scale_shift_norm=emb_out == 2 * block_out[0],
        num_head_channels=num_head_channels,
        has_unused_spade_norm=any(UNUSED_SPADE_NORM.match(k) for k in shapes),
    )


# --------------------------------------------------------------------------------------------------------------------
# The key mapping


@dataclass(frozen=True)
class TensorMapping:
    """One official tensor and the model tensor(s) it becomes.

    ``transform``: ``"copy"``; ``"qkv"`` (legacy per-head fused qkv -> ``to_q``, ``to_k``, ``to_v``, with ``heads``);
    ``"conv1d"`` (a kernel-1 Conv1d weight -> Linear weight).
    """

    official: str
    ours: tuple[str, ...]
    transform: str = "copy"
    heads: int = 1


def _module_pairs(arch: OfficialUNetArchitecture) -> Iterator[tuple[str, str, dict]]:
    """(official module, our module, naming table) for every block, walking the levels in the official order."""
    yield "time_embed.0", "time_embedding.linear_1", {"": ""}
    yield "time_embed.2", "time_embedding.linear_2", {"": ""}
    yield "input_blocks.0.0", "conv_in", {"": ""}

    R, L = arch.num_res_blocks, arch.num_levels
    k = 1
    for level in range(L):
        for i in range(R):
            yield f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{i}", _ENCODER_RESBLOCK
            if arch.encoder_attention[level]:
                yield f"input_blocks.{k}.1", f"down_blocks.{level}.attentions.{i}", _ATTENTION
            k += 1
        if level < L - 1:
            table = _ENCODER_RESBLOCK if arch.resblock_updown else _CONV_DOWNSAMPLE
            yield f"input_blocks.{k}.0", f"down_blocks.{level}.downsamplers.0", table
            k += 1

    yield "middle_block.0", "mid_block.resnets.0", _DECODER_RESBLOCK
    if arch.middle_attention:
        yield "middle_block.1", "mid_block.attentions.0", _ATTENTION
    yield f"middle_block.{2 if arch.middle_attention else 1}", "mid_block.resnets.1", _DECODER_RESBLOCK

    j = 0
    for level in range(L):
        for i in range(R + 1):
            yield f"output_blocks.{j}.0", f"up_blocks.{level}.resnets.{i}", _DECODER_RESBLOCK
            m = 1
            if arch.decoder_attention[level]:
                yield f"output_blocks.{j}.1", f"up_blocks.{level}.attentions.{i}", _ATTENTION
                m = 2
            if i == R and level < L - 1:
                table = _DECODER_RESBLOCK if arch.resblock_updown else _CONV_UPSAMPLE
                yield f"output_blocks.{j}.{m}", f"up_blocks.{level}.upsamplers.0", table
            j += 1

    yield "out.0", "conv_norm_out", {"": ""}
    yield "out.2", "conv_out", {"": ""}


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def official_key_mapping(arch: OfficialUNetArchitecture, model_shapes: Mapping[str, ShapeLike]) -> list[TensorMapping]:
    """Every official tensor of ``arch`` with its model tensor(s), in the official order.

    Args:
        arch: the official architecture.
        model_shapes: the state-dict shapes of the matching :class:`SemanticUNet2DModel`. They decide which optional
            skip convolutions exist and give each attention's width, hence its ``width // num_head_channels`` heads.
    """
    mappings = []
    for official_prefix, our_prefix, table in _module_pairs(arch):
        to_q = model_shapes.get(_join(our_prefix, "to_q.weight"))
        heads = int(to_q[0]) // arch.num_head_channels if to_q is not None else 1
        for official_sub, our_sub in table.items():
            for param in _PARAMS:
                official = _join(official_prefix, official_sub, param)
                if our_sub is None:  # the fused qkv
                    ours = tuple(_join(our_prefix, target, param) for target in _QKV_TARGETS)
                    mappings.append(TensorMapping(official, ours, "qkv", heads))
                    continue
                ours = _join(our_prefix, our_sub, param)
                if official_sub in _OPTIONAL and ours not in model_shapes:
                    continue
                transform = "conv1d" if official_sub == "proj_out" and param == "weight" else "copy"
                mappings.append(TensorMapping(official, (ours,), transform))
    return mappings


# --------------------------------------------------------------------------------------------------------------------
# Tensor transforms (both directions)


def split_legacy_qkv(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a legacy fused qkv weight ``[3ch, ch, 1]`` (or bias ``[3ch]``) into q, k, v (``[ch, ch]`` / ``[ch]``).

    ``QKVAttentionLegacy`` reshapes the qkv output to ``(B * heads, 3 * d, T)`` and splits each head's rows into
    ``q, k, v``: the rows are ``[heads, 3, d]``, *not* ``[3, heads, d]`` (reference doc 3).
    """
    if qkv.ndim == 3:
        qkv = qkv.squeeze(-1)
    rows = qkv.shape[0]
    if rows % (3 * heads):
        raise ValueError(f"fused qkv with {rows} rows cannot be split into 3 x {heads} heads")
    per_head = qkv.reshape(heads, 3, rows // (3 * heads), *qkv.shape[1:])
    return tuple(per_head[:, i].reshape(rows // 3, *qkv.shape[1:]).contiguous() for i in range(3))


def merge_legacy_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of :func:`split_legacy_qkv`: Linear weights ``[ch, ch]`` -> Conv1d ``[3ch, ch, 1]``, biases ``[3ch]``."""
    ch = q.shape[0]
    stacked = torch.stack([t.reshape(heads, ch // heads, *t.shape[1:]) for t in (q, k, v)], dim=1)
    fused = stacked.reshape(3 * ch, *q.shape[1:])
    return fused.unsqueeze(-1).contiguous() if q.ndim == 2 else fused.contiguous()


def _to_ours(mapping: TensorMapping, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if mapping.transform == "qkv":
        return split_legacy_qkv(tensor, mapping.heads)
    if mapping.transform == "conv1d":
        return (tensor.squeeze(-1).contiguous(),)
    return (tensor,)


def _to_official(mapping: TensorMapping, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    if mapping.transform == "qkv":
        return merge_legacy_qkv(*tensors, heads=mapping.heads)
    if mapping.transform == "conv1d":
        return tensors[0].unsqueeze(-1).contiguous()
    return tensors[0]


# --------------------------------------------------------------------------------------------------------------------
# Conversion


def _block_family(key: str) -> str:
    return key.split(".", 1)[0]


@dataclass
class ConversionReport:
    """What a conversion mapped, dropped and could not map (``ok`` when nothing is missing or left over)."""

    arch: OfficialUNetArchitecture
    mapped: list[TensorMapping] = field(default_factory=list)
    mapped_parameters: int = 0
    dropped: list[str] = field(default_factory=list)
    dropped_parameters: int = 0
    unmapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shape_mismatches: list[str] = field(default_factory=list)
    unfilled: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unmapped or self.missing or self.shape_mismatches or self.unfilled)

    @property
    def num_model_tensors(self) -> int:
        return sum(len(m.ours) for m in self.mapped)

    def summary(self, verbose: bool = False) -> str:
        """A readable account of the conversion (``verbose``: one line per mapped tensor)."""
        families = Counter(_block_family(m.official) for m in self.mapped)
        transforms = Counter(m.transform for m in self.mapped)
        lines = [
            "Official UNetModel -> SemanticUNet2DModel",
            *("  " + line for line in self.arch.describe().splitlines()),
            f"  mapped:   {len(self.mapped)} official tensors ({self.mapped_parameters:,} parameters) -> "
            f"{self.num_model_tensors} model tensors",
            "            by block: " + ", ".join(f"{name} {n}" for name, n in families.items()),
            f"            {transforms['qkv']} fused qkv tensors split into to_q/to_k/to_v (legacy per-head layout), "
            f"{transforms['conv1d']} proj_out Conv1d weights squeezed to Linear, {transforms['copy']} copied as is",
            f"  dropped:  {len(self.dropped)} unused encoder spade_norm tensors ({self.dropped_parameters:,} "
            "parameters)" if self.dropped else "  dropped:  none (no unused spade_norm tensors: an SDM checkpoint)",
        ]
        problems = [("could not map (unexpected tensors)", self.unmapped), ("missing from the checkpoint",
                    self.missing), ("shape mismatches", self.shape_mismatches),
                    ("model tensors unfilled or unknown", self.unfilled)]
        if self.ok:
            lines.append("  unmapped: none")
        for title, items in problems:
            if items:
                lines.append(f"  {title}: {len(items)}")
                lines.extend(f"    {item}" for item in items)
        if verbose:
            lines.append("  mapping:")
            lines.extend(f"    {m.official} -> {', '.join(m.ours)}"
                         + (f" [{m.transform}{f', {m.heads} heads' if m.transform == 'qkv' else ''}]"
                            if m.transform != "copy" else "") for m in self.mapped)
        return "\n".join(lines)


def build_unet(arch: OfficialUNetArchitecture, sample_size=None, device: Union[str, torch.device, None] = None
               ) -> SemanticUNet2DModel:
    """An (uninitialised-value) model for ``arch``; ``device="meta"`` builds it without allocating memory."""
    with torch.device(device or "cpu"):
        return SemanticUNet2DModel(**arch.unet_config(sample_size))


def _convert_one(mapping: TensorMapping, tensor, model_shapes: Mapping[str, tuple],
                 converted: dict[str, torch.Tensor], report: ConversionReport) -> None:
    if not torch.is_tensor(tensor):
        raise TypeError(f"checkpoint entry {mapping.official!r} is a {type(tensor).__name__}, not a tensor")
    # The official shape the model expects, found by running the inverse transform on meta tensors.
    expected = _to_official(mapping, [torch.empty(model_shapes[k], device="meta") for k in mapping.ours]).shape
    if tuple(tensor.shape) != tuple(expected):
        report.shape_mismatches.append(f"{mapping.official}: checkpoint {list(tensor.shape)}, the inferred "
                                       f"architecture needs {list(expected)} (for {', '.join(mapping.ours)})")
        return
    converted.update(zip(mapping.ours, _to_ours(mapping, tensor)))
    report.mapped.append(mapping)
    report.mapped_parameters += tensor.numel()


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    arch: Optional[OfficialUNetArchitecture] = None,
    model_shapes: Optional[Mapping[str, ShapeLike]] = None,
    num_head_channels: int = 64,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map an official state dict onto :class:`SemanticUNet2DModel` names.

    Args:
        state_dict: the official tensors (meta tensors work: only shapes are then checked).
        arch: the architecture (default: inferred from ``state_dict``).
        model_shapes: the target model's state-dict shapes (default: those of a meta model built from ``arch``).
        num_head_channels: channels per attention head, when ``arch`` is inferred.

    Returns:
        ``(converted state dict, report)``.

    Raises:
        ValueError: naming every tensor that is missing, misshaped, left over in the checkpoint, or not filled.
    """
    arch = arch or infer_official_architecture(state_dict, num_head_channels)
    if model_shapes is None:
        model_shapes = {k: v.shape for k, v in build_unet(arch, device="meta").state_dict().items()}
    model_shapes = _shapes(model_shapes)
    report = ConversionReport(arch=arch)
    converted: dict[str, torch.Tensor] = {}
    mappings = official_key_mapping(arch, model_shapes)
    for mapping in mappings:
        unknown = [k for k in mapping.ours if k not in model_shapes]
        if unknown:
            report.unfilled.extend(f"{mapping.official} targets {k}, which the model does not have" for k in unknown)
        elif mapping.official not in state_dict:
            report.missing.append(f"{mapping.official} (for {', '.join(mapping.ours)})")
        else:
            _convert_one(mapping, state_dict[mapping.official], model_shapes, converted, report)

    official_keys = {m.official for m in mappings}
    for key, tensor in state_dict.items():
        if key in official_keys:
            continue
        if UNUSED_SPADE_NORM.match(key):
            report.dropped.append(key)
            report.dropped_parameters += tensor.numel()
        else:
            report.unmapped.append(f"{key} {list(tensor.shape)}")
    # Model tensors that no official tensor maps to (those of missing/misshaped tensors are reported above).
    targeted = {k for m in mappings for k in m.ours}
    report.unfilled.extend(f"{k} {list(model_shapes[k])} (no official tensor maps to it)"
                           for k in model_shapes if k not in targeted)
    if not report.ok:
        hint = ""
        if state_dict and all(k.startswith("module.") for k in state_dict):
            hint = "\nhint: every key starts with 'module.' (a DistributedDataParallel wrapper): strip that prefix"
        raise ValueError("the checkpoint does not convert cleanly:\n" + report.summary() + hint)
    return converted, report


def to_official_state_dict(
    model: SemanticUNet2DModel,
    num_head_channels: Optional[int] = None,
    include_unused_spade_norm: bool = False,
    spade_norm_hidden_channels: int = 128,
) -> dict[str, torch.Tensor]:
    """The inverse conversion: a :class:`SemanticUNet2DModel` as an official ``UNetModel`` state dict.

    Args:
        model: a model whose configuration the official code can express.
        num_head_channels: channels per head (default: the model's ``attention_head_dim``).
        include_unused_spade_norm: add GESCO's never-used encoder ``spade_norm`` tensors (zeros: they are never
            read), so that GESCO's ``UNetModel`` loads the result with ``strict=True``; without them the result is an
            SDM state dict.
        spade_norm_hidden_channels: hidden width of those unused SPADE norms (128 in GESCO, with 3 input channels).
    """
    ours = model.state_dict()
    shapes = {k: v.shape for k, v in ours.items()}
    arch = _architecture_of(model, num_head_channels or model.config.attention_head_dim)
    official: dict[str, torch.Tensor] = {}
    for mapping in official_key_mapping(arch, shapes):
        official[mapping.official] = _to_official(mapping, [ours[k] for k in mapping.ours])
    if include_unused_spade_norm:
        for key in [k for k in official if re.match(r"^input_blocks\.\d+\.0\.in_layers\.0\.weight$", k)]:
            block, channels, ref = key[: -len(".in_layers.0.weight")], official[key].shape[0], official[key]
            shapes_ = {"mlp_shared.0": (spade_norm_hidden_channels, 3, 3, 3),
                       "mlp_gamma": (channels, spade_norm_hidden_channels, 3, 3),
                       "mlp_beta": (channels, spade_norm_hidden_channels, 3, 3)}
            for leaf, shape in shapes_.items():
                official[f"{block}.spade_norm.{leaf}.weight"] = ref.new_zeros(shape)
                official[f"{block}.spade_norm.{leaf}.bias"] = ref.new_zeros(shape[0])
    return official


def _architecture_of(model: SemanticUNet2DModel, num_head_channels: int) -> OfficialUNetArchitecture:
    """The official architecture of a model built by :meth:`OfficialUNetArchitecture.unet_config`-like configs."""
    cfg = model.config
    base = cfg.block_out_channels[0]
    if any(c % base for c in cfg.block_out_channels):
        raise ValueError(f"block_out_channels {cfg.block_out_channels} are not multiples of the first level's width: "
                         "the official code cannot express this model")
    if cfg.norm_num_groups != 32 or cfg.norm_eps != 1e-5 or not cfg.flip_sin_to_cos or cfg.freq_shift != 0:
        raise ValueError("the official code fixes GroupNorm(32, eps=1e-5) and a [cos | sin] embedding without shift; "
                         f"this model has norm_num_groups={cfg.norm_num_groups}, norm_eps={cfg.norm_eps}, "
                         f"flip_sin_to_cos={cfg.flip_sin_to_cos}, freq_shift={cfg.freq_shift}")
    return OfficialUNetArchitecture(
        in_channels=cfg.in_channels,
        model_channels=base,
        channel_mult=tuple(c // base for c in cfg.block_out_channels),
        num_res_blocks=cfg.layers_per_block,
        encoder_attention=tuple(t == "SemanticAttnDownBlock2D" for t in cfg.down_block_types),
        decoder_attention=tuple(t == "SemanticAttnUpBlock2D" for t in cfg.up_block_types),
        middle_attention=cfg.mid_block_attention,
        segmap_channels=cfg.segmap_channels,
        spade_hidden_channels=cfg.spade_hidden_channels,
        time_embed_dim=cfg.time_embedding_dim or 4 * base,
        learn_sigma=cfg.out_channels == 2 * cfg.in_channels,
        resblock_updown=cfg.resnet_updown,
        use_scale_shift_norm=cfg.time_embedding_norm == "scale_shift",
        num_head_channels=num_head_channels,
        has_unused_spade_norm=False,
    )
