"""Conversion of the authors' checkpoints (gesco_diffusers.convert).

The official layout comes from the key list in ``tests/fixtures/reference`` (868 names and shapes of the Cityscapes
network). Most tests use it at 1/8 width (base width 32, SPADE hidden width 16, 16 channels per head, the same 6-level
structure and C = 36) with random values; the full-size list is checked with meta tensors only.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from gesco_diffusers import GescoPipeline
from gesco_diffusers.cli import main as cli_main
from gesco_diffusers.convert import (
    OfficialUNetArchitecture,
    build_unet,
    convert_official_checkpoint,
    convert_official_state_dict,
    dataset_for_architecture,
    infer_official_architecture,
    load_official_checkpoint,
    main,
    merge_legacy_qkv,
    split_legacy_qkv,
    to_official_state_dict,
)
from gesco_diffusers.hub import validate_card_metadata
from gesco_diffusers.models import official_unet_config

from fixture_data import OFFICIAL_KEY_LIST

KEY_LIST = OFFICIAL_KEY_LIST
REDUCTION = 8  # 256 -> 32 base width, 128 -> 16 SPADE hidden width, 1024 -> 128 timestep width
HEAD_CHANNELS = 16
SPADE_NORM = re.compile(r"\.spade_norm\.")
# From the reference doc (section 3): with 2 residual blocks per level, the encoder down-samplers are these entries.
DOWN_ENTRIES = {3, 6, 9, 12, 15}

def official_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in KEY_LIST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            shapes[name] = tuple(int(s) for s in shape.strip()[1:-1].split(","))
    return shapes


def reduced(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Every channel width of the official network is a multiple of 128; kernels, C = 36, 3 and 6 are not."""
    return tuple(s // REDUCTION if s % 128 == 0 else s for s in shape)


def random_official_state_dict(seed: int = 0, segmap_channels: int = 36, spade_norm: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in official_shapes().items():
        if not spade_norm and SPADE_NORM.search(name):
            continue
        shape = reduced(shape)
        if name.endswith("mlp_shared.0.weight") and ".spade_norm." not in name:
            shape = (shape[0], segmap_channels, *shape[2:])
        sd[name] = torch.randn(shape, generator=g) * 0.2
    return sd


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These networks are tiny: on a shared 2-core machine intra-op threading only adds contention (forwards run
    5-10x slower with 2 threads under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def official_sd() -> dict:
    return random_official_state_dict()


@pytest.fixture(scope="module")
def converted(official_sd):
    arch = infer_official_architecture(official_sd, num_head_channels=HEAD_CHANNELS)
    model = build_unet(arch)
    state, report = convert_official_state_dict(official_sd, arch, model.state_dict())
    model.load_state_dict(state, strict=True)
    return arch, model.eval(), state, report


# ---------------------------------------------------------------------------------------------------------------------
# An independent forward of the official network, written from the reference doc (sections 2.2-2.5) on the raw
# official state dict.


def official_forward(sd: dict, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, head_channels: int) -> torch.Tensor:
    def conv(h, p):
        w = sd[f"{p}.weight"]
        return F.conv2d(h, w, sd[f"{p}.bias"], padding=w.shape[-1] // 2)

    def linear(h, p):
        return F.linear(h, sd[f"{p}.weight"], sd[f"{p}.bias"])

    def group_norm(h, p=None):
        return F.group_norm(h, 32, sd.get(f"{p}.weight"), sd.get(f"{p}.bias"), eps=1e-5)

    def spade(h, p):
        actv = F.relu(conv(F.interpolate(y, size=h.shape[-2:], mode="nearest"), f"{p}.mlp_shared.0"))
        return group_norm(h) * (1 + conv(actv, f"{p}.mlp_gamma")) + conv(actv, f"{p}.mlp_beta")

    def skip(h, p):
        return conv(h, f"{p}.skip_connection") if f"{p}.skip_connection.weight" in sd else h

    def res_block(h, p, emb, down=False):
        out = F.silu(group_norm(h, f"{p}.in_layers.0"))
        if down:
            out, h = F.avg_pool2d(out, 2), F.avg_pool2d(h, 2)
        out = conv(out, f"{p}.in_layers.2")
        scale, shift = linear(F.silu(emb), f"{p}.emb_layers.1")[..., None, None].chunk(2, dim=1)
        out = group_norm(out, f"{p}.out_layers.0") * (1 + scale) + shift
        return skip(h, p) + conv(F.silu(out), f"{p}.out_layers.3")

    def sdm_block(h, p, emb, up=False):
        out = F.silu(spade(h, f"{p}.in_norm"))
        if up:
            out, h = (F.interpolate(t, scale_factor=2, mode="nearest") for t in (out, h))
        out = conv(out, f"{p}.in_layers.1")
        scale, shift = linear(F.silu(emb), f"{p}.emb_layers.1")[..., None, None].chunk(2, dim=1)
        out = spade(out, f"{p}.out_norm") * (1 + scale) + shift
        return skip(h, p) + conv(F.silu(out), f"{p}.out_layers.2")

    def attention(h, p):
        return h + legacy_attention(h, sd[f"{p}.norm.weight"], sd[f"{p}.norm.bias"], sd[f"{p}.qkv.weight"],
                                    sd[f"{p}.qkv.bias"], sd[f"{p}.proj_out.weight"], sd[f"{p}.proj_out.bias"],
                                    head_channels)

    half = sd["input_blocks.0.0.weight"].shape[0] // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    emb = linear(F.silu(linear(emb, "time_embed.0")), "time_embed.2")

    h = conv(x, "input_blocks.0.0")
    skips = [h]
    num_inputs = len({int(k.split(".")[1]) for k in sd if k.startswith("input_blocks.")})
    for k in range(1, num_inputs):
        h = res_block(h, f"input_blocks.{k}.0", emb, down=k in DOWN_ENTRIES)
        if f"input_blocks.{k}.1.qkv.weight" in sd:
            h = attention(h, f"input_blocks.{k}.1")
        skips.append(h)
    h = sdm_block(h, "middle_block.0", emb)
    h = attention(h, "middle_block.1")
    h = sdm_block(h, "middle_block.2", emb)
    for j in range(num_inputs):
        h = sdm_block(torch.cat([h, skips.pop()], dim=1), f"output_blocks.{j}.0", emb)
        m = 1
        if f"output_blocks.{j}.1.qkv.weight" in sd:
            h, m = attention(h, f"output_blocks.{j}.1"), 2
        if f"output_blocks.{j}.{m}.in_norm.mlp_shared.0.weight" in sd:
            h = sdm_block(h, f"output_blocks.{j}.{m}", emb, up=True)
    return conv(F.silu(group_norm(h, "out.0")), "out.2")


def legacy_attention(x, norm_w, norm_b, qkv_w, qkv_b, proj_w, proj_b, head_channels):
    """``AttentionBlock`` + ``QKVAttentionLegacy`` without the residual: per-head interleaved [q|k|v] rows, q and k
    each scaled by d**-1/4, softmax over keys."""
    B, C, H, W = x.shape
    qkv = F.conv1d(F.group_norm(x, 32, norm_w, norm_b, eps=1e-5).reshape(B, C, -1), qkv_w, qkv_b)
    heads = C // head_channels
    q, k, v = qkv.reshape(B * heads, 3 * head_channels, -1).split(head_channels, dim=1)
    scale = head_channels ** -0.25
    weights = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    out = torch.einsum("bts,bcs->bct", weights, v).reshape(B, C, -1)
    return F.conv1d(out, proj_w, proj_b).reshape(B, C, H, W)


def segmap(batch: int, channels: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, channels - 1, (batch, *size), generator=g)
    y = F.one_hot(labels, channels).permute(0, 3, 1, 2).float()
    y[:, -1] = (torch.rand(batch, *size, generator=g) > 0.8).float()  # an "edge" channel
    return y


# ---------------------------------------------------------------------------------------------------------------------
# Mapping


def test_every_used_tensor_lands_exactly_once_with_equal_values(official_sd, converted):
    arch, model, state, report = converted
    used = {k for k in official_sd if not SPADE_NORM.search(k)}
    assert len(used) == 766 and len(official_sd) == 868
    officials = [m.official for m in report.mapped]
    assert len(officials) == len(set(officials)) and set(officials) == used
    targets = [k for m in report.mapped for k in m.ours]
    assert len(targets) == len(set(targets)) and set(targets) == set(model.state_dict())
    assert sorted(report.dropped) == sorted(k for k in official_sd if SPADE_NORM.search(k))
    assert len(report.dropped) == 102 and not report.unmapped and not report.unfilled

    num_qkv = 0
    for m in report.mapped:
        source = official_sd[m.official]
        if m.transform == "qkv":
            # Independent per-head index arithmetic: head h owns rows [h*3d, h*3d + 3d) as [q | k | v].
            num_qkv += 1
            d = HEAD_CHANNELS
            assert m.heads == source.shape[0] // (3 * d)
            for i, target in enumerate(m.ours):
                rows = torch.cat([source[h * 3 * d + i * d: h * 3 * d + (i + 1) * d] for h in range(m.heads)])
                assert torch.equal(state[target], rows.reshape(state[target].shape)), target
        else:
            assert torch.equal(state[m.ours[0]], source.reshape(state[m.ours[0]].shape)), m.official
            assert state[m.ours[0]].shape == source.squeeze(-1).shape if m.transform == "conv1d" else True
    assert num_qkv == 2 * 16  # 16 attention blocks (6 encoder, 1 middle, 9 decoder), weight and bias
    # Spot checks of the naming walk against the reference doc's index list.
    pairs = {m.official: m.ours for m in report.mapped}
    assert pairs["input_blocks.3.0.in_layers.2.weight"] == ("down_blocks.0.downsamplers.0.conv1.weight",)
    assert pairs["input_blocks.13.1.proj_out.weight"] == ("down_blocks.4.attentions.0.to_out.0.weight",)
    assert pairs["middle_block.2.out_norm.mlp_beta.bias"] == ("mid_block.resnets.1.norm2.mlp_beta.bias",)
    assert pairs["output_blocks.8.2.in_norm.mlp_shared.0.weight"] == \
        ("up_blocks.2.upsamplers.0.norm1.mlp_shared.0.weight",)
    assert pairs["output_blocks.11.1.in_layers.1.weight"] == ("up_blocks.3.upsamplers.0.conv1.weight",)
    assert pairs["output_blocks.17.0.skip_connection.weight"] == ("up_blocks.5.resnets.2.conv_shortcut.weight",)
    assert pairs["out.2.bias"] == ("conv_out.bias",)


def test_reduced_width_mapping_summary(converted):
    arch, model, state, report = converted
    summary = report.summary()
    print("\n" + summary)
    assert "mapped:   766 official tensors" in summary and f"-> {len(state)} model tensors" in summary
    assert "dropped:  102 unused encoder spade_norm tensors" in summary and "unmapped: none" in summary
    assert report.mapped_parameters == sum(p.numel() for p in model.parameters())


def test_round_trip_reproduces_the_official_state_dict(official_sd, converted):
    arch, model, state, report = converted
    back = to_official_state_dict(model)
    used = {k: v for k, v in official_sd.items() if not SPADE_NORM.search(k)}
    assert back.keys() == used.keys()
    for key, value in used.items():
        assert torch.equal(back[key], value), key
    with_spade = to_official_state_dict(model, include_unused_spade_norm=True, spade_norm_hidden_channels=16)
    assert {k: tuple(v.shape) for k, v in with_spade.items()} == {k: tuple(v.shape) for k, v in official_sd.items()}


def test_inferred_architecture_rebuilds_the_same_model(converted):
    arch, model, state, report = converted
    assert arch == OfficialUNetArchitecture(
        in_channels=3, model_channels=32, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
        encoder_attention=(False, False, False, True, True, True), decoder_attention=(True, True, True, False, False,
                                                                                      False),
        middle_attention=True, segmap_channels=36, spade_hidden_channels=16, time_embed_dim=128, learn_sigma=True,
        resblock_updown=True, use_scale_shift_norm=True, num_head_channels=HEAD_CHANNELS, has_unused_spade_norm=True,
    )
    # The authors' arguments at this width, through the package's own translation of them.
    reference = official_unet_config(36, num_channels=32, num_head_channels=HEAD_CHANNELS)
    rebuilt = build_unet(arch, device="meta")
    expected = build_unet_from_config({**reference, "spade_hidden_channels": 16})
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in expected.items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in expected.items()}
    assert infer_official_architecture(to_official_state_dict(model), HEAD_CHANNELS) == \
        OfficialUNetArchitecture(**{**arch.__dict__, "has_unused_spade_norm": False})


def build_unet_from_config(config: dict) -> dict:
    from gesco_diffusers.models import SemanticUNet2DModel

    with torch.device("meta"):
        return SemanticUNet2DModel(**config).state_dict()


def test_full_size_key_list_gives_the_official_cityscapes_network():
    meta = {k: torch.empty(s, device="meta") for k, s in official_shapes().items()}
    arch = infer_official_architecture(meta)
    assert arch.unet_config((256, 512)) == {**official_unet_config(36, sample_size=(256, 512)),
                                            "sample_size": [256, 512], "time_embedding_dim": 1024,
                                            "spade_hidden_channels": 128, "mid_block_attention": True}
    model = build_unet(arch, device="meta")
    assert sum(p.numel() for p in model.parameters()) == 653_984_518
    state, report = convert_official_state_dict(meta, arch, model.state_dict())
    assert report.mapped_parameters == 653_984_518 and report.dropped_parameters == 20_722_688
    assert report.mapped_parameters + report.dropped_parameters == 674_707_206
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert dataset_for_architecture(arch).name == "cityscapes"


# ---------------------------------------------------------------------------------------------------------------------
# Numerics


def test_qkv_split_matches_the_legacy_per_head_attention(official_sd, converted):
    arch, model, state, report = converted
    prefix, ours = "output_blocks.4.1", model.up_blocks[1].attentions[1]  # 128 channels, 8 heads
    x = torch.randn(2, 128, 4, 6, generator=torch.Generator().manual_seed(1))
    p = {k[len(prefix) + 1:]: v for k, v in official_sd.items() if k.startswith(prefix + ".")}
    expected = x + legacy_attention(x, p["norm.weight"], p["norm.bias"], p["qkv.weight"], p["qkv.bias"],
                                    p["proj_out.weight"], p["proj_out.bias"], HEAD_CHANNELS)
    with torch.no_grad():
        actual = ours(x)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)

    # The global [q | k | v] chunking (the "new order" layout) is a different network: the test can tell them apart.
    q, k, v = p["qkv.weight"].squeeze(-1).chunk(3)
    with torch.no_grad():
        ours.to_q.weight.copy_(q), ours.to_k.weight.copy_(k), ours.to_v.weight.copy_(v)
        wrong = ours(x)
        ours.load_state_dict({k_[len("up_blocks.1.attentions.1."):]: v_ for k_, v_ in state.items()
                              if k_.startswith("up_blocks.1.attentions.1.")})
    assert (wrong - expected).abs().max() > 1e-2


def test_split_and_merge_of_the_fused_qkv_are_inverse():
    g = torch.Generator().manual_seed(8)
    weight, bias = torch.randn(3 * 64, 64, 1, generator=g), torch.randn(3 * 64, generator=g)
    q, k, v = split_legacy_qkv(weight, heads=4)
    assert q.shape == (64, 64) and torch.equal(q[16:32], weight[48:64, :, 0])  # head 1's q: rows 3*16 .. 4*16
    assert torch.equal(merge_legacy_qkv(q, k, v, heads=4), weight)
    assert torch.equal(merge_legacy_qkv(*split_legacy_qkv(bias, heads=4), heads=4), bias)
    with pytest.raises(ValueError, match="cannot be split into 3 x 5 heads"):
        split_legacy_qkv(weight, heads=5)


def test_converted_model_matches_the_official_forward(official_sd, converted):
    arch, model, state, report = converted
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 64, 64, generator=g)
    t = torch.tensor([3, 870])
    y = segmap(2, 36, (64, 64), seed=3)
    with torch.no_grad():
        expected = official_forward(official_sd, x, t, y, HEAD_CHANNELS)
        actual = model(x, t, y).sample
    assert expected.abs().mean() > 1e-2  # random weights everywhere, so the output is far from zero
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


# ---------------------------------------------------------------------------------------------------------------------
# Errors


def test_missing_tensor_is_named(official_sd):
    sd = dict(official_sd)
    del sd["output_blocks.7.0.in_layers.1.bias"]
    with pytest.raises(ValueError, match=r"missing from the checkpoint: 1\s+output_blocks\.7\.0\.in_layers\.1\.bias "
                                         r"\(for up_blocks\.2\.resnets\.1\.conv1\.bias\)"):
        convert_official_state_dict(sd, num_head_channels=HEAD_CHANNELS)
    del sd["middle_block.0.in_norm.mlp_shared.0.weight"]
    with pytest.raises(ValueError, match=r"no tensor 'middle_block\.0\.in_norm\.mlp_shared\.0\.weight'"):
        convert_official_state_dict(sd, num_head_channels=HEAD_CHANNELS)


def test_misshaped_and_unexpected_tensors_are_named(official_sd):
    sd = dict(official_sd)
    sd["input_blocks.4.0.in_layers.2.weight"] = torch.zeros(32, 32, 1, 1)
    sd["input_blocks.16.1.qkv.weight"] = torch.zeros(3 * 128 + 3, 128, 1)
    sd["extra.weight"] = torch.zeros(2)
    with pytest.raises(ValueError) as err:
        convert_official_state_dict(sd, num_head_channels=HEAD_CHANNELS)
    message = str(err.value)
    assert "input_blocks.4.0.in_layers.2.weight: checkpoint [32, 32, 1, 1], the inferred architecture needs " \
           "[32, 32, 3, 3]" in message
    assert "input_blocks.16.1.qkv.weight: checkpoint [387, 128, 1]" in message
    assert "could not map (unexpected tensors): 1\n    extra.weight [2]" in message


def test_head_channels_must_divide_the_attention_width(official_sd):
    with pytest.raises(ValueError, match="not divisible by num_head_channels=48"):
        infer_official_architecture(official_sd, num_head_channels=48)


def test_sdm_checkpoint_without_spade_norm_converts():
    sd = random_official_state_dict(seed=4, spade_norm=False)
    state, report = convert_official_state_dict(sd, num_head_channels=HEAD_CHANNELS)
    assert report.arch.source == "SDM" and not report.dropped and len(report.mapped) == 766
    assert "dropped:  none" in report.summary()


def test_dataset_is_inferred_from_the_map_channels(converted):
    arch = converted[0]
    variant = lambda C: OfficialUNetArchitecture(**{**arch.__dict__, "segmap_channels": C})  # noqa: E731
    assert dataset_for_architecture(variant(184)).guidance_scale == 2.5
    assert dataset_for_architecture(variant(184)).name == "coco-stuff"
    assert dataset_for_architecture(variant(151)).name == "ade20k"
    assert dataset_for_architecture(variant(36)).guidance_scale == 2.0
    with pytest.raises(ValueError, match="cannot infer the dataset from C = 40"):
        dataset_for_architecture(variant(40))
    with pytest.raises(ValueError, match="C = 36 map channels, but dataset 'ade20k' has 151"):
        dataset_for_architecture(variant(36), "ade20k")
    with pytest.raises(ValueError, match="one_hot_label=False"):
        dataset_for_architecture(variant(2))


# ---------------------------------------------------------------------------------------------------------------------
# Pipeline folders


def label_map(shape=(32, 64), num_classes=35, seed=5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, size=shape)


def test_checkpoint_converts_to_a_pipeline_folder_that_samples(tmp_path, official_sd, converted):
    arch, model, state, report = converted
    checkpoint = tmp_path / "ema_0.9999_050000.pt"
    torch.save(official_sd, checkpoint)
    lines = []
    result = convert_official_checkpoint(checkpoint, tmp_path / "out", num_head_channels=HEAD_CHANNELS,
                                         print_fn=lines.append)
    out = result.path
    assert result.dataset.name == "cityscapes" and "unmapped: none" in lines[0]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "README.md", "model_index.json", "pipeline.py", "scheduler/scheduler_config.json", "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.safetensors",
        "unet/unet_semantic.py"]  # the two modules of diffusers' custom-pipeline layout (GescoPipeline.save_pretrained)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    metadata = validate_card_metadata(out / "README.md")
    assert metadata.license == "mit" and "cityscapes" in metadata.tags
    card = (out / "README.md").read_text()
    assert result.checkpoint_sha256 in card and "102 tensors" in card and "DPM-Solver++" in card
    assert "output weights are non-zero" in card  # random weights everywhere

    pipe = GescoPipeline.from_pretrained(out)
    assert pipe.config.semantic_config == {"dataset": result.dataset.to_dict(), "map_encoding": "one_hot",
                                           "psnr_convention": "official_table", "guidance_scale": 2.0}
    scheduler = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "DDPMScheduler"
    assert (scheduler.num_train_timesteps, scheduler.beta_schedule, scheduler.variance_type) == \
        (1000, "linear", "learned_range")
    assert list(pipe.unet.config.sample_size) == [256, 512]
    for key, value in pipe.unet.state_dict().items():
        assert torch.equal(value, state[key]), key
    images = pipe(label_map(), num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    assert images.shape == (1, 32, 64, 3) and np.isfinite(images).all()

    half = GescoPipeline.from_pretrained(out, variant="fp16", torch_dtype=torch.float16)
    for key, value in half.unet.state_dict().items():
        assert value.dtype == torch.float16 and torch.equal(value, state[key].half()), key


@pytest.fixture(scope="module")
def converted_folder(tmp_path_factory, official_sd):
    """The tiny official checkpoint through ``gesco convert``: a pipeline folder storing the authors' convention."""
    root = tmp_path_factory.mktemp("converted")
    torch.save(official_sd, root / "ema_0.9999_050000.pt")
    assert cli_main(["convert", str(root / "ema_0.9999_050000.pt"), str(root / "pipe"), "--num-head-channels",
                     str(HEAD_CHANNELS), "--no-fp16"]) == 0
    return root / "pipe"


def test_converted_checkpoint_transmits_with_the_authors_noise_table(tmp_path, converted_folder, capsys, monkeypatch):
    """`gesco convert` stores psnr_convention="official_table"; `gesco transmit` must use it: 10 dB is sigma 0.36
    (the table the checkpoints were trained and evaluated with), not Eq. 15's 0.316, unless --psnr-convention says
    otherwise. The sigma is measured on the received map, and the report names it."""
    assert GescoPipeline.load_config(converted_folder)["semantic_config"]["psnr_convention"] == "official_table"
    map_path = tmp_path / "map.png"
    PIL.Image.fromarray(label_map().astype(np.uint8), mode="L").save(map_path)
    chains = []
    prepare = GescoPipeline.prepare_semantic_map

    def recording(self, *args, **kwargs):
        chains.append(prepare(self, *args, **kwargs))
        return chains[-1]

    monkeypatch.setattr(GescoPipeline, "prepare_semantic_map", recording)

    def transmit(*extra) -> tuple[int, float]:
        chains.clear()
        code = cli_main(["transmit", "--model", str(converted_folder), "--map", str(map_path), "--psnr", "10",
                         "--fds", "none", "--steps", "1", "--size", "32", "64", "--device", "cpu", "--overwrite",
                         "--output", str(tmp_path / "out"), *extra])
        if code != 0:
            return code, math.nan
        sent = chains[0]  # the sender -> channel step (the pipeline call that follows gets the received map)
        assert sent.clean is not None and bool(sent.transmitted.all())  # 35 classes + edges: every plane is sent
        return code, float((sent.received - sent.clean).std())

    code, measured = transmit("--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and measured == pytest.approx(0.36, rel=0.02)  # 36 x 32 x 64 samples: 0.5 % standard error
    assert report["extra"]["channel"] == {"type": "AWGNChannel", "psnr_db": 10.0, "peak_power": 1.0,
                                          "psnr_convention": "official_table", "sigma": 0.36}
    assert "psnr_convention official_table (the authors' noise table): sigma 0.36" in report["channel"]

    code, measured = transmit("--psnr-convention", "paper")  # the override, in the printed report
    printed = capsys.readouterr().out
    assert code == 0 and measured == pytest.approx(10 ** (-10 / 20), rel=0.02)
    assert "channel:     awgn at PSNR 10.0 dB, psnr_convention paper (Eq. 15): sigma 0.3162" in printed.splitlines()

    # A level the table does not hold is a one-line error that names the way out.
    assert transmit("--psnr", "12")[0] == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "PSNR 12 dB is not in the official table" in err
    assert "--psnr-convention paper" in err
    code, measured = transmit("--psnr", "12", "--psnr-convention", "paper")
    assert code == 0 and measured == pytest.approx(10 ** (-12 / 20), rel=0.02)


def test_label_index_checkpoint_converts_and_samples(tmp_path):
    sd = random_official_state_dict(seed=6, segmap_channels=2)
    sd["out.2.weight"][3:], sd["out.2.bias"][3:] = 0.0, 0.0  # GESCO never trains the variance outputs
    checkpoint = tmp_path / "model050000.safetensors"
    from safetensors.torch import save_file

    save_file(sd, str(checkpoint))
    with pytest.raises(ValueError, match="pass dataset="):
        convert_official_checkpoint(checkpoint, tmp_path / "out", num_head_channels=HEAD_CHANNELS, print_fn=None)
    assert not (tmp_path / "out").exists()
    result = convert_official_checkpoint(checkpoint, tmp_path / "out", dataset="cityscapes",
                                         num_head_channels=HEAD_CHANNELS, fp16_variant=False, print_fn=None)
    assert result.architecture.map_encoding == "label_index_and_edges"
    card = (result.path / "README.md").read_text()
    assert "label_index_and_edges" in card and "output weights are exactly zero" in card
    pipe = GescoPipeline.from_pretrained(result.path)
    assert pipe.map_encoding == "label_index_and_edges" and pipe.unet.config.segmap_channels == 2
    output = pipe(label_map(seed=7), num_inference_steps=2, guidance_scale=1.0,
                  generator=torch.Generator().manual_seed(0), output_type="np")
    assert output.semantic_maps.conditioning.shape == (1, 2, 32, 64)
    assert np.isfinite(output.images).all()


def test_cli_writes_atomically_and_refuses_to_overwrite(tmp_path, official_sd, capsys, monkeypatch):
    checkpoint = tmp_path / "ema.pt"
    torch.save(official_sd, checkpoint)
    out = tmp_path / "pipe"
    args = [str(checkpoint), str(out), "--num-head-channels", str(HEAD_CHANNELS), "--no-fp16"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mapped:   766 official tensors" in printed and "dropped:  102" in printed and f"wrote {out}" in printed
    first = (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(args)

    # A failure while writing leaves the previous folder untouched and no temporary folder behind.
    import gesco_diffusers.hub as hub

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hub, "write_model_card", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        main([*args, "--overwrite"])
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ema.pt", "pipe"]
    monkeypatch.undo()
    assert main([*args, "--overwrite", "--guidance-scale", "3"]) == 0
    assert GescoPipeline.load_config(out)["semantic_config"]["guidance_scale"] == 3.0


def test_loader_rejects_anything_but_a_flat_state_dict(tmp_path, official_sd):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_official_checkpoint(tmp_path / "missing.pt")
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {"a": torch.zeros(1)}, "step": 3}, wrapped)
    with pytest.raises(TypeError, match="not a flat state dict"):
        load_official_checkpoint(wrapped)
    pickled = tmp_path / "object.pt"
    torch.save({"x": Path("/")}, pickled)  # an arbitrary object: never unpickled
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_official_checkpoint(pickled)
    bad = tmp_path / "nan.pt"
    torch.save({**official_sd, "out.0.bias": torch.full((32,), float("nan"))}, bad)
    with pytest.raises(ValueError, match=r"NaN/inf values in 1 tensors: \['conv_norm_out.bias'\]"):
        convert_official_checkpoint(bad, tmp_path / "o", num_head_channels=HEAD_CHANNELS, print_fn=None)


# ---------------------------------------------------------------------------------------------------------------------
# Nothing the user has is lost (issue #14)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def gesco(argv, capsys) -> tuple[int, str]:
    """``gesco ...`` in process; returns the exit status and stderr."""
    from gesco_diffusers.cli import main as gesco_main

    status = gesco_main(argv)
    return status, capsys.readouterr().err.strip()


def test_overwrite_never_deletes_the_input_or_the_working_directory(tmp_path, official_sd, capsys, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    checkpoint = folder / "model.pt"
    torch.save(official_sd, checkpoint)
    original = checkpoint.read_bytes()
    flags = ["--num-head-channels", str(HEAD_CHANNELS), "--no-fp16", "--overwrite"]
    for output in (folder, tmp_path, checkpoint):  # the folder holding the input, an ancestor of it, the input
        status, err = gesco(["convert", str(checkpoint), str(output), *flags], capsys)
        assert status == 1 and len(err.splitlines()) == 1 and "contains the input checkpoint" in err, err
        assert checkpoint.read_bytes() == original
    # The working directory (or one of its parents) cannot be replaced by a rename: refused before any work, so
    # neither a half-done replacement nor a `..old-*` folder is left behind.
    (folder / "sub").mkdir()
    elsewhere = tmp_path / "elsewhere.pt"
    torch.save(official_sd, elsewhere)
    for cwd, output in ((folder, "."), (folder / "sub", "..")):
        monkeypatch.chdir(cwd)
        status, err = gesco(["convert", str(elsewhere), output, *flags], capsys)
        assert status == 1 and len(err.splitlines()) == 1 and "current directory" in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "sub"] and list((folder / "sub").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.pt", "run"]
    # An output below a file cannot be written: said before the conversion, not after it.
    status, err = gesco(["convert", str(elsewhere), str(tmp_path / "elsewhere.pt" / "out"), *flags], capsys)
    assert status == 1 and len(err.splitlines()) == 1 and "exists and is not a folder" in err, err


def test_converted_folder_gets_the_umask_permissions(tmp_path, official_sd, umask_022):
    checkpoint = tmp_path / "ema.pt"
    torch.save(official_sd, checkpoint)
    out = convert_official_checkpoint(checkpoint, tmp_path / "out", num_head_channels=HEAD_CHANNELS,
                                      fp16_variant=False, print_fn=None).path
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
    assert modes == {name: 0o755 if (tmp_path / name).is_dir() else 0o644 for name in modes}  # mkdtemp gave 0700


@pytest.mark.parametrize("name,content", [("text.pt", b"not a checkpoint\n"), ("empty.pt", b""),
                                          ("noise.pt", bytes(range(256))), ("text.safetensors", b"hello")])
def test_unreadable_checkpoint_is_a_one_line_error(tmp_path, capsys, name, content):
    (tmp_path / name).write_bytes(content)
    status, err = gesco(["convert", str(tmp_path / name), str(tmp_path / "out")], capsys)
    assert status == 1 and len(err.splitlines()) == 1 and f"checkpoint {name!r} is not a readable" in err, err
    assert not (tmp_path / "out").exists()


def test_gesco_convert_errors_are_one_line_and_ctrl_c_exits_130(tmp_path, official_sd, capsys, monkeypatch):
    import gesco_diffusers.hub as hub

    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"\0")
    torch.save({"model": {"a": torch.zeros(1)}, "step": 3}, tmp_path / "wrapped.pt")
    checkpoint = tmp_path / "ema.pt"
    torch.save(official_sd, checkpoint)
    out = tmp_path / "pipe"
    for argv, status, message in [
        ([str(tmp_path / "missing.pt"), str(out)], 1, "checkpoint not found"),
        ([str(tmp_path / "folder.pt"), str(out)], 1, "is a folder; give the checkpoint file"),
        ([str(tmp_path / "weights.bin"), str(out)], 1, "expected one of ('.pt', '.pth', '.safetensors')"),
        ([str(tmp_path / "wrapped.pt"), str(out)], 1, "not a flat state dict"),
        ([str(checkpoint), str(out), "--dataset", "mnist"], 2, "invalid choice: 'mnist'"),
        ([str(checkpoint)], 2, "the following arguments are required: output_dir"),
    ]:
        code, err = gesco(["convert", *argv], capsys)
        assert code == status and len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert not out.exists()

    flags = ["--num-head-channels", str(HEAD_CHANNELS), "--no-fp16"]
    assert gesco(["convert", str(checkpoint), str(out), *flags], capsys)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, err = gesco(["convert", str(checkpoint), str(out), *flags], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "--overwrite" in err, err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the new folder is being written

    monkeypatch.setattr(hub, "write_model_card", interrupted)
    assert gesco(["convert", str(checkpoint), str(out), *flags, "--overwrite"], capsys) == (
        130, "gesco convert: interrupted")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the earlier folder, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ema.pt", "folder.pt", "pipe", "weights.bin", "wrapped.pt"]


# ---------------------------------------------------------------------------------------------------------------------
# Beyond Cityscapes: COCO-Stuff (C = 184: 183 classes + the instance-edge channel) and ADE20K (C = 151: 151 classes,
# no edge channel, `--no_instance True`), reference doc section 2.1.

# Totals of the official state dicts, reference doc section 3 (`official_gesco.md`: "674,707,206 parameters at C=36,
# 683,232,006 at C=184 (COCO), 681,331,206 at C=151 (ADE20K)"). The 50 SPADE modules that read the map each have a
# 3x3 conv C -> 128, so the totals differ by 50 * 128 * 9 * (C - 36); the encoder's never-called spade_norm blocks
# (102 tensors, 20,722,688 parameters) read 3 channels whatever C is, and the converter drops them.
OFFICIAL_TOTALS = {36: 674_707_206, 184: 683_232_006, 151: 681_331_206}
SPADE_NORM_PARAMETERS = 20_722_688


def official_shapes_for(segmap_channels: int) -> dict[str, tuple[int, ...]]:
    """The full-size official key list with the map-reading convolutions widened to C channels."""
    shapes = official_shapes()
    for name, shape in shapes.items():
        if name.endswith("mlp_shared.0.weight") and not SPADE_NORM.search(name):
            shapes[name] = (shape[0], segmap_channels, *shape[2:])
    return shapes


@pytest.mark.parametrize("segmap_channels,dataset", [(184, "coco-stuff"), (151, "ade20k")])
def test_full_size_coco_and_ade20k_networks_have_the_official_parameter_counts(segmap_channels, dataset):
    meta = {k: torch.empty(s, device="meta") for k, s in official_shapes_for(segmap_channels).items()}
    assert sum(t.numel() for t in meta.values()) == OFFICIAL_TOTALS[segmap_channels]  # the key list, widened
    arch = infer_official_architecture(meta)
    assert arch.segmap_channels == segmap_channels and dataset_for_architecture(arch).name == dataset
    model = build_unet(arch, device="meta")
    assert model.config.segmap_channels == segmap_channels
    total = sum(p.numel() for p in model.parameters())
    assert total == OFFICIAL_TOTALS[segmap_channels] - SPADE_NORM_PARAMETERS
    state, report = convert_official_state_dict(meta, arch, model.state_dict())
    assert report.mapped_parameters == total and report.dropped_parameters == SPADE_NORM_PARAMETERS
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in model.state_dict().items()}


def blocky_label_map(num_classes: int, seed: int) -> np.ndarray:
    return np.kron(label_map((4, 4), num_classes=num_classes, seed=seed), np.ones((8, 8), dtype=np.int64))


@pytest.mark.parametrize("source", ["GESCO", "SDM"])
@pytest.mark.parametrize("segmap_channels,dataset,num_classes,edges",
                         [(184, "coco-stuff", 183, True), (151, "ade20k", 151, False)])
def test_coco_and_ade20k_checkpoints_convert_load_and_sample(tmp_path, segmap_channels, dataset, num_classes, edges,
                                                             source):
    """A tiny official-layout checkpoint with C map channels (random weights, reduced widths; GESCO's layout or SDM's,
    which has no encoder spade_norm blocks) through convert_official_checkpoint: the dataset is inferred from C, the
    folder loads with the converted tensors, the map is encoded with (COCO) or without (ADE20K) the edge channel, and
    2 sampling steps give finite images that depend on the map."""
    official = random_official_state_dict(seed=7, segmap_channels=segmap_channels, spade_norm=source == "GESCO")
    torch.save(official, tmp_path / "ema_0.9999_050000.pt")
    lines = []
    result = convert_official_checkpoint(tmp_path / "ema_0.9999_050000.pt", tmp_path / "out",
                                         num_head_channels=HEAD_CHANNELS, fp16_variant=False, print_fn=lines.append)
    assert result.dataset.name == dataset and "unmapped: none" in lines[0]
    assert result.architecture.source == source
    preset = result.dataset
    assert preset.num_classes == num_classes and preset.use_instance_edges is edges
    assert preset.map_channels == segmap_channels

    pipe = GescoPipeline.from_pretrained(result.path)
    assert pipe.dataset_preset.name == dataset and pipe.unet.config.segmap_channels == segmap_channels
    assert pipe.config.semantic_config["guidance_scale"] == 2.5  # the official --s for COCO and ADE20K
    assert list(pipe.unet.config.sample_size) == [256, 256]  # the official image size of both
    arch = infer_official_architecture(official, num_head_channels=HEAD_CHANNELS)
    expected, _ = convert_official_state_dict(official, arch, build_unet(arch).state_dict())
    for key, value in pipe.unet.state_dict().items():
        assert torch.equal(value, expected[key]), key

    labels = blocky_label_map(num_classes, seed=3)  # regions of 8x8 pixels: edges at their borders only
    maps = pipe.prepare_semantic_map(labels, fds=False)  # as sent (the default FDS would smooth this noisy map)
    assert maps.conditioning.shape == (1, segmap_channels, 32, 32)
    assert torch.equal(maps.conditioning[0, :num_classes].argmax(0), torch.from_numpy(labels))
    if edges:  # class borders become the edges when no instance map is given
        edge = maps.conditioning[0, num_classes]
        assert 0 < edge.sum() < edge.numel() and set(edge.unique().tolist()) == {0.0, 1.0}

    def sample(segmap):
        return pipe(segmap, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images

    images = sample(labels)
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()
    other = sample(blocky_label_map(num_classes, seed=4))
    assert (images - other).abs().max() > 1e-3  # the map reaches the network
