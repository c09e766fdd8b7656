"""GescoPipeline: inputs, classifier-free guidance, schedulers, the learned-variance DDPM posterior, save/load, stored
sampling defaults, several images per map, bad arguments, and the behaviours diffusers' own pipeline tests check.
Scheduler swapping: test_pipeline_schedulers.py; loading with diffusers' DiffusionPipeline: test_pipeline_loading.py."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import LCMScheduler

from gesco_diffusers import GescoPipeline, SemanticUNet2DModel
from gesco_diffusers.channel import AWGNChannel
from gesco_diffusers.diffusion.guidance import guided_model_output
from gesco_diffusers.diffusion import (
    DEFAULT_SAMPLING_STEPS,
    build_scheduler,
    official_ddpm_scheduler,
    respaced_timesteps,
)


def randomise_zero_weights(unet, seed=0):
    """Zero-initialised output convs would make every block the identity and the output zero; give them values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture
def pipe():
    pipe = GescoPipeline.from_unet_config("tiny", dataset="camvid")
    randomise_zero_weights(pipe.unet)
    pipe.unet.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def labels(batch=2, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 12, (batch, h, w), generator=g)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_generates_images_in_every_output_type(pipe):
    out = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="pt")
    assert out.images.shape == (2, 3, 16, 24)
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert out.semantic_maps.conditioning.shape == (2, 12, 16, 24)
    np_out = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="np").images
    assert np_out.shape == (2, 16, 24, 3)
    pil = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="pil").images
    assert len(pil) == 2 and pil[0].size == (24, 16)
    torch.testing.assert_close(torch.from_numpy(np_out).permute(0, 3, 1, 2), out.images)


def test_same_generator_same_output_and_generator_lists(pipe):
    a = pipe(labels(), num_inference_steps=2, generator=gen(3), output_type="pt").images
    b = pipe(labels(), num_inference_steps=2, generator=gen(3), output_type="pt").images
    assert torch.equal(a, b)
    c = pipe(labels(), num_inference_steps=2, generator=gen(4), output_type="pt").images
    assert not torch.allclose(a, c)
    # A list of generators: image i depends only on generator i.
    pair = pipe(labels(), num_inference_steps=2, generator=[gen(1), gen(2)], output_type="pt").images
    single = pipe(labels(batch=2)[1:], num_inference_steps=2, generator=[gen(2)], output_type="pt").images
    # batch-size-dependent conv kernels move the float32 result by ~1e-5; other seeds differ by O(0.1)
    torch.testing.assert_close(pair[1:], single, atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="generators"):
        pipe(labels(), num_inference_steps=2, generator=[gen(1)])


def test_list_pil_numpy_and_one_hot_inputs_agree(pipe):
    lab = labels()
    as_pil = [PIL.Image.fromarray(m.numpy().astype(np.uint8), mode="L") for m in lab]
    as_np = [m.numpy() for m in lab]
    one_hot = torch.nn.functional.one_hot(lab, 12).permute(0, 3, 1, 2).float()
    outs = [
        pipe(x, num_inference_steps=2, generator=gen(), output_type="pt", fds=False).images
        for x in (lab, as_pil, as_np, one_hot)
    ]
    for other in outs[1:]:
        torch.testing.assert_close(outs[0], other)


@torch.no_grad()
def test_batched_cfg_equals_two_separate_passes(pipe):
    unet = pipe.unet
    x = torch.randn(2, 3, 16, 24, generator=gen())
    cond = pipe.prepare_semantic_map(labels(), fds=False).conditioning
    t = torch.tensor(500)
    s = 2.5
    eps_c = unet(x, t, cond).sample
    eps_u = unet(x, t, torch.zeros_like(cond)).sample
    expected = torch.cat([eps_u[:, :3] + s * (eps_c[:, :3] - eps_u[:, :3]), eps_c[:, 3:]], dim=1)
    for reuse in (False, True):
        batched = guided_model_output(unet, x, t, pipe._model_maps(cond, s, reuse), s)
        torch.testing.assert_close(batched, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(guided_model_output(unet, x, t, pipe._model_maps(cond, 1.0, reuse), 1.0), eps_c)


def test_reusing_the_semantic_modulation_does_not_change_the_images(pipe):
    runs = [pipe(labels(), num_inference_steps=3, guidance_scale=2.0, generator=gen(), output_type="pt",
                 reuse_semantic_modulation=reuse).images for reuse in (False, True)]
    torch.testing.assert_close(runs[0], runs[1], atol=1e-5, rtol=1e-4)


def test_guidance_scale_one_is_plain_conditional_sampling(pipe):
    calls = []
    pipe.unet.register_forward_pre_hook(lambda m, args: calls.append((args[0].shape[0], args[2].shape[0])))
    pipe(labels(), num_inference_steps=3, guidance_scale=1.0, generator=gen(), output_type="pt")
    assert calls == [(2, 2)] * 3  # one conditional pass per step
    calls.clear()
    pipe(labels(), num_inference_steps=3, guidance_scale=3.0, generator=gen(), output_type="pt")
    assert calls == [(2, 4)] * 3  # both halves in one forward: 2 images, 2 maps each


@pytest.mark.parametrize("sampler", ["ddpm", "dpmsolver++", "sde-dpmsolver++", "ddim", "unipc", "euler"])
def test_every_scheduler_runs(pipe, sampler):
    pipe.scheduler = build_scheduler(sampler, pipe.scheduler.config)
    out = pipe(labels(), num_inference_steps=3, guidance_scale=2.0, generator=gen(), output_type="pt")
    assert out.images.shape == (2, 3, 16, 24)
    assert torch.isfinite(out.images).all()


def test_respaced_ddpm_learned_range_matches_improved_ddpm_posterior(pipe):
    """Improved DDPM (Nichol & Dhariwal 2021), written from the equations, with the authors' respacing."""
    pipe.scheduler = official_ddpm_scheduler()
    steps = respaced_timesteps(1000, "4")
    assert steps == [999, 666, 333, 0]
    lab = labels(batch=1)
    ours = pipe(lab, timesteps=steps, guidance_scale=1.0, fds=False, generator=gen(7), output_type="pt").images

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    cond = pipe.prepare_semantic_map(lab, fds=False).conditioning
    g = gen(7)
    x = torch.randn(1, 3, 16, 24, generator=g)
    for i, t in enumerate(steps):
        prev = steps[i + 1] if i + 1 < len(steps) else -1
        abar_t = alphas_cumprod[t]
        abar_prev = alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        beta_t = 1 - abar_t / abar_prev  # the respaced beta
        out = pipe.unet(x, torch.tensor(t), cond).sample.double()
        eps, v = out[:, :3], out[:, 3:]
        x0 = ((x.double() - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()).clamp(-1, 1)  # clip_denoised=True
        # Posterior q(x_{t-1} | x_t, x_0): mean and variance beta~_t (Ho et al. Eq. 7)
        mean = (beta_t * abar_prev.sqrt() / (1 - abar_t)) * x0 + ((1 - abar_prev) * (1 - beta_t).sqrt() / (1 - abar_t)) * x.double()
        posterior_var = (1 - abar_prev) / (1 - abar_t) * beta_t
        if prev >= 0:
            # Learned range (Improved DDPM Eq. 15): log sigma^2 = frac log beta_t + (1 - frac) log beta~_t
            frac = (v + 1) / 2
            log_var = frac * torch.log(beta_t) + (1 - frac) * torch.log(posterior_var)
            z = torch.randn(1, 3, 16, 24, generator=g).double()
            x = (mean + torch.exp(0.5 * log_var) * z).float()
        else:
            x = mean.float()
    expected = (x / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


def test_callback_on_step_end_can_edit_latents(pipe):
    seen = []

    def callback(p, step, t, tensors):
        seen.append(step)
        return {"latents": tensors["latents"] * 0}

    out = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="pt", callback_on_step_end=callback)
    assert seen == [0, 1]
    torch.testing.assert_close(out.images, torch.full_like(out.images, 0.5))


def test_channel_and_fds_preprocessing(pipe):
    lab = labels()
    maps = pipe.prepare_semantic_map(lab, channel=AWGNChannel(10.0), fds=True, generator=gen())
    assert torch.equal(maps.clean, torch.nn.functional.one_hot(lab, 12).permute(0, 3, 1, 2).float())
    assert not torch.equal(maps.received, maps.clean)
    absent = ~maps.transmitted
    assert (maps.denoised[absent] == 0).all() and (maps.received[absent] == 0).all()
    again = pipe.prepare_semantic_map(lab, channel=AWGNChannel(10.0), fds=True, generator=gen())
    assert torch.equal(maps.denoised, again.denoised)
    no_fds = pipe.prepare_semantic_map(lab, channel=AWGNChannel(10.0), fds=False, generator=gen())
    assert torch.equal(no_fds.denoised, maps.received)


def test_label_index_encoding_for_official_one_hot_label_false_models():
    pipe = GescoPipeline.from_unet_config(
        "tiny", dataset="camvid", map_encoding="label_index_and_edges"
    )
    pipe.unet = type(pipe.unet)(**{**pipe.unet.config, "segmap_channels": 2})
    pipe.set_progress_bar_config(disable=True)
    lab = labels()
    cond = pipe.prepare_semantic_map(lab, fds=False).conditioning
    assert cond.shape == (2, 2, 16, 24)
    assert torch.equal(cond[:, 0].long(), lab)
    assert pipe(lab, num_inference_steps=1, output_type="pt").images.shape == (2, 3, 16, 24)


@pytest.mark.parametrize(
    "segmap,match",
    [
        (torch.rand(1, 11, 16, 24), "wrong channel count 11"),
        (torch.full((1, 16, 24), 12), "label id 12 >= num_classes=12"),
        (torch.full((1, 16, 24), -1), "negative"),
        (torch.full((1, 12, 16, 24), float("nan")), "NaN"),
        (torch.full((1, 12, 16, 24), float("inf")), "inf"),
        (torch.zeros(1, 15, 24, dtype=torch.long), "not divisible"),
        (torch.zeros(1, 16, 24, dtype=torch.float32), "wrong dtype"),
        (torch.zeros(1, 16, 24, dtype=torch.bool), "wrong dtype bool"),
        (PIL.Image.new("RGB", (24, 16)), "single-channel"),
        ([torch.zeros(16, 24, dtype=torch.long), torch.zeros(8, 24, dtype=torch.long)], "same shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(pipe, segmap, match):
    with pytest.raises(ValueError, match=match):
        pipe(segmap, num_inference_steps=1)


def test_bad_arguments(pipe):
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe(labels(), num_inference_steps=0)
    with pytest.raises(ValueError, match="output_type"):
        pipe(labels(), num_inference_steps=1, output_type="jpg")
    with pytest.raises(ValueError, match="fds"):
        pipe(labels(), num_inference_steps=1, fds="median")


def test_save_load_round_trip_with_fp16_variant(pipe, tmp_path):
    ref = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="pt").images
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = GescoPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.dataset_preset == pipe.dataset_preset
    assert type(loaded.scheduler) is type(pipe.scheduler)
    for (name, a), b in zip(pipe.unet.state_dict().items(), loaded.unet.state_dict().values()):
        assert torch.equal(a, b), name
    out = loaded(labels(), num_inference_steps=2, generator=gen(), output_type="pt").images
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)  # same weights; BLAS alignment may move the last bit

    pipe.unet.to(torch.float16).save_pretrained(tmp_path / "pipe" / "unet", variant="fp16")
    half = GescoPipeline.from_pretrained(tmp_path / "pipe", variant="fp16", torch_dtype=torch.float16)
    assert half.unet.dtype == torch.float16
    for (name, a), b in zip(pipe.unet.state_dict().items(), half.unet.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("sampler,tolerance", [
    ("dpmsolver++", 1e-4), ("sde-dpmsolver++", 1e-4), ("ddpm", 1e-4), ("unipc", 1e-4), ("euler", 1e-4),
    # DDIM stops at alpha_bar_0 = 1 - 1e-4 (set_alpha_to_one=False, as in the paper's schedule), not at x_0 itself
    ("ddim", 0.05),
])
def test_every_sampler_recovers_x0_from_an_oracle_epsilon(sampler, tolerance):
    """With the exact noise prediction eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t) for a fixed image x0, every
    sampler must return x0: this checks the pipeline's timestep, scaling and variance-channel plumbing end to end."""
    from gesco_diffusers.models.unet_semantic import SemanticUNet2DOutput

    x0 = torch.rand(1, 3, 16, 24, generator=gen(5)) * 1.6 - 0.8
    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)

    class OracleUNet(SemanticUNet2DModel):
        def forward(self, sample, timestep, segmap, return_dict=True):
            abar = alphas_cumprod[int(timestep.reshape(-1)[0])]
            eps = ((sample.double() - abar.sqrt() * x0) / (1 - abar).sqrt()).float()
            return SemanticUNet2DOutput(sample=torch.cat([eps, torch.zeros_like(eps)], dim=1))

    pipe = GescoPipeline.from_unet_config("tiny", dataset="camvid", scheduler=build_scheduler(sampler))
    pipe.unet = OracleUNet(**pipe.unet.config)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(labels(batch=1), fds=False, num_inference_steps=25, guidance_scale=1.0, generator=gen(),
               output_type="pt").images
    assert (out - (x0 / 2 + 0.5)).abs().max() < tolerance


# ---------------------------------------------------------------------------------------------------------------------
# Sampling defaults stored with the pipeline


def unet_calls(pipe) -> list:
    """``(images, maps)`` per U-Net forward: maps = 2 x images with classifier-free guidance, = images without."""
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append((args[0].shape[0], args[2].shape[0])))
    return calls


def test_stored_steps_and_guidance_are_the_defaults_after_loading(tmp_path):
    """A distilled pipeline stores 4 steps without guidance: ``from_pretrained(folder)(map)`` makes 4 single-map
    U-Net calls; an explicit argument still wins."""
    student = GescoPipeline.from_unet_config("tiny", dataset="camvid", scheduler=LCMScheduler.from_config(
        build_scheduler("ddpm").config), num_inference_steps=4, guidance_scale=1.0)
    student.save_pretrained(tmp_path / "student")
    pipe = GescoPipeline.from_pretrained(tmp_path / "student")
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler) is LCMScheduler and pipe.default_num_inference_steps == 4
    calls = unet_calls(pipe)
    pipe(labels(), generator=gen(), output_type="pt")
    assert calls == [(2, 2)] * 4
    calls.clear()
    pipe(labels(), num_inference_steps=2, guidance_scale=3.0, generator=gen(), output_type="pt")
    assert calls == [(2, 4)] * 2


def test_without_stored_steps_the_default_is_default_sampling_steps(pipe):
    assert "num_inference_steps" not in pipe.config.semantic_config
    calls = unet_calls(pipe)
    pipe(labels(batch=1), generator=gen(), output_type="pt")
    assert len(calls) == DEFAULT_SAMPLING_STEPS == pipe.num_timesteps


@pytest.mark.parametrize("stored,match", [
    (dict(num_inference_steps=True), r"semantic_config\['num_inference_steps'\] must be a positive integer, got True"),
    (dict(num_inference_steps="4"), r"semantic_config\['num_inference_steps'\] must be a positive integer"),
    (dict(num_inference_steps=1001), r"semantic_config\['num_inference_steps'\]=1001 exceeds the scheduler's 1000"),
    (dict(guidance_scale=float("nan")), r"semantic_config\['guidance_scale'\] must be a finite number >= 0"),
    (dict(guidance_scale=-1.0), r"semantic_config\['guidance_scale'\] must be a finite number >= 0"),
])
def test_bad_stored_sampling_defaults_fail_at_construction(stored, match):
    with pytest.raises(ValueError, match=match):
        GescoPipeline.from_unet_config("tiny", dataset="camvid", **stored)


# ---------------------------------------------------------------------------------------------------------------------
# Several images per map, and per-image generators


def test_num_images_per_map_orders_images_by_map_and_image_i_depends_on_generator_i(pipe):
    lab = labels(batch=2)
    out = pipe(lab, num_images_per_map=2, generator=[gen(10), gen(11), gen(12), gen(13)], guidance_scale=2.0,
               num_inference_steps=2, output_type="pt")
    assert out.images.shape == (4, 3, 16, 24)
    assert out.semantic_maps.conditioning.shape == (4, 12, 16, 24)
    for i, seed in enumerate((10, 11, 12, 13)):
        alone = pipe(lab[i // 2:i // 2 + 1], generator=[gen(seed)], guidance_scale=2.0, num_inference_steps=2,
                     output_type="pt").images
        # batch-size-dependent conv kernels move the float32 result by ~1e-5; other seeds differ by O(0.1)
        torch.testing.assert_close(out.images[i:i + 1], alone, atol=1e-4, rtol=1e-3)
        assert torch.equal(out.semantic_maps.conditioning[i], pipe.prepare_semantic_map(lab[i // 2]).conditioning[0])
    assert (out.images[0] - out.images[1]).abs().mean() > 0.05  # two samples of one map differ

    one_generator = pipe(lab, num_images_per_map=2, generator=gen(), num_inference_steps=2, output_type="pt").images
    assert one_generator.shape == (4, 3, 16, 24) and (one_generator[0] - one_generator[1]).abs().mean() > 0.05


@pytest.mark.parametrize("fds", [False, "paper", "adaptive"])
def test_channel_noise_of_image_i_comes_from_generator_i_alone(pipe, fds):
    """Image 0 is the same whether its map is sent alone or with others, given the same generator for it (the channel
    noise used to come from ``generator[0]`` for the whole batch)."""
    lab = labels(batch=3)
    kwargs = dict(channel=AWGNChannel(5.0), fds=fds, num_inference_steps=2, guidance_scale=2.0, output_type="pt")
    alone = pipe(lab[:1], generator=[gen(1)], **kwargs)
    batch = pipe(lab, generator=[gen(1), gen(2), gen(3)], **kwargs)
    assert torch.equal(batch.semantic_maps.received[:1], alone.semantic_maps.received)
    assert torch.equal(batch.semantic_maps.denoised[:1], alone.semantic_maps.denoised)
    torch.testing.assert_close(batch.images[:1], alone.images, atol=1e-4, rtol=1e-3)
    last = pipe(lab[2:], generator=[gen(3)], **kwargs)
    assert torch.equal(batch.semantic_maps.received[2:], last.semantic_maps.received)


def test_channel_drawn_once_per_map_or_once_per_image(pipe):
    lab = labels(batch=2)
    generators = lambda: [gen(20), gen(21), gen(22), gen(23)]  # noqa: E731
    kwargs = dict(channel=AWGNChannel(5.0), fds=False, num_images_per_map=2, num_inference_steps=1, output_type="pt")
    per_map = pipe(lab, generator=generators(), **kwargs).semantic_maps
    assert per_map.received.shape == (4, 12, 16, 24)
    assert torch.equal(per_map.received[0], per_map.received[1])
    assert torch.equal(per_map.received[2], per_map.received[3])
    # map 1's noise comes from the generator of its first image (index 2)
    sent_alone = pipe.prepare_semantic_map(lab[1:], channel=AWGNChannel(5.0), fds=False, generator=[gen(22)])
    assert torch.equal(per_map.received[2], sent_alone.received[0])
    assert torch.equal(per_map.clean, torch.nn.functional.one_hot(lab, 12).permute(0, 3, 1, 2).float()
                       .repeat_interleave(2, dim=0))

    per_image = pipe(lab, generator=generators(), channel_draw="per_image", **kwargs).semantic_maps
    assert not torch.equal(per_image.received[0], per_image.received[1])
    assert torch.equal(per_image.received[0], per_map.received[0])  # image 0 draws from its own generator either way
    image_3 = pipe.prepare_semantic_map(lab[1:], channel=AWGNChannel(5.0), fds=False, generator=[gen(23)])
    assert torch.equal(per_image.received[3], image_3.received[0])


def test_bad_num_images_per_map_channel_draw_and_generator_count(pipe):
    with pytest.raises(ValueError, match=r"got 2 generators for 4 images \(2 maps x 2 per map\)"):
        pipe(labels(), num_images_per_map=2, generator=[gen(1), gen(2)], num_inference_steps=1)
    with pytest.raises(ValueError, match="num_images_per_map must be a positive integer, got 0"):
        pipe(labels(), num_images_per_map=0, num_inference_steps=1)
    with pytest.raises(ValueError, match="num_images_per_map must be a positive integer, got True"):
        pipe(labels(), num_images_per_map=True, num_inference_steps=1)
    with pytest.raises(ValueError, match="channel_draw must be one of"):
        pipe(labels(), channel_draw="per_pixel", num_inference_steps=1)
    with pytest.raises(ValueError, match=r"latents must have shape \(4, 3, 16, 24\)"):
        pipe(labels(), num_images_per_map=2, latents=torch.randn(2, 3, 16, 24), num_inference_steps=1)


# ---------------------------------------------------------------------------------------------------------------------
# Bad arguments: one-line errors before anything is drawn or computed


@pytest.mark.parametrize("kwargs,match", [
    (dict(guidance_scale=-1.0), "guidance_scale must be a finite number >= 0"),
    (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number >= 0"),
    (dict(guidance_scale=float("inf")), "guidance_scale must be a finite number >= 0"),
    (dict(guidance_scale="2"), "guidance_scale must be a finite number >= 0"),
    (dict(num_inference_steps=True), "num_inference_steps must be a positive integer, got True"),
    (dict(num_inference_steps=2.0), "num_inference_steps must be a positive integer, got 2.0"),
    (dict(num_inference_steps=10_000_000), "num_inference_steps=10000000 exceeds the scheduler's 1000 training"),
    (dict(timesteps=[1000, 500, 0]), r"timesteps must lie in \[0, 1000\), got \[1000\]"),
    (dict(timesteps=[999, -1]), r"timesteps must lie in \[0, 1000\), got \[-1\]"),
    (dict(timesteps=[0, 500, 999]), "timesteps must be strictly descending"),
    (dict(timesteps=[500, 500, 0]), "timesteps must be strictly descending"),
    (dict(timesteps=[999.5, 0]), "timesteps must be integers"),
    (dict(timesteps=[]), "timesteps is empty"),
    (dict(timesteps="999,0"), "timesteps must be a sequence of integers"),
    (dict(callback_on_step_end_tensor_inputs=["noise"]), "callback tensor input 'noise' not in"),
])
def test_bad_sampling_arguments_fail_early_in_one_line(pipe, kwargs, match):
    pipe.scheduler = official_ddpm_scheduler()  # supports custom timesteps, so only the validation can refuse them
    calls = unet_calls(pipe)
    with pytest.raises(ValueError, match=match) as err:
        pipe(labels(), channel=AWGNChannel(5.0), generator=gen(), **{"num_inference_steps": 2, **kwargs})
    assert "\n" not in str(err.value) and calls == []


def test_guidance_scale_zero_to_one_is_conditional_sampling(pipe):
    calls = unet_calls(pipe)
    pipe(labels(), num_inference_steps=1, guidance_scale=0.0, output_type="pt")
    assert calls == [(2, 2)]


@pytest.mark.parametrize("segmap,instance_map,match", [
    (torch.zeros(0, 16, 24, dtype=torch.long), None, r"segmap: empty batch \(0 maps\)"),
    (torch.zeros(0, 12, 16, 24), None, r"segmap: empty batch \(0 maps\)"),
    (torch.zeros(1, 0, 0, dtype=torch.long), None, r"segmap: empty map \(0x0 pixels\)"),
    (torch.zeros(0, 0, dtype=torch.long), None, r"segmap: empty map \(0x0 pixels\)"),
    (torch.zeros(1, 12, 0, 0), None, r"segmap: empty map \(0x0 pixels\)"),
    (torch.zeros(2, 16, 24, dtype=torch.long), torch.zeros(2, 8, 24, dtype=torch.long),
     r"instance_map: shape \(2, 8, 24\) does not match the label map \(2, 16, 24\)"),
    (torch.zeros(2, 16, 24, dtype=torch.long), torch.zeros(16, 24, dtype=torch.long),
     r"instance_map: shape \(1, 16, 24\) does not match the label map \(2, 16, 24\)"),
    (torch.zeros(1, 16, 24, dtype=torch.long), torch.zeros(1, 16, 24), "instance_map: wrong dtype torch.float32"),
    (torch.zeros(1, 12, 16, 24), torch.zeros(1, 16, 24, dtype=torch.long), "instance_map applies to label maps"),
])
def test_empty_maps_and_bad_instance_maps_fail_early(pipe, segmap, instance_map, match):
    """Also for CamVid, whose model has no edge channel: a malformed instance map is an error, never ignored."""
    calls = unet_calls(pipe)
    with pytest.raises(ValueError, match=match) as err:
        pipe(segmap, instance_map=instance_map, num_inference_steps=1)
    assert "\n" not in str(err.value) and calls == []


def test_instance_maps_of_an_edge_channel_model_are_checked_and_used():
    pipe = GescoPipeline.from_unet_config("tiny", dataset="cityscapes")
    lab = torch.randint(0, 35, (1, 16, 24), generator=gen())
    with pytest.raises(ValueError, match="instance_map: shape"):
        pipe.prepare_semantic_map(lab, instance_map=lab[:, :8], fds=False)
    instances = torch.zeros_like(lab)
    instances[:, :, 12:] = 1  # two instances: one vertical edge
    edges = pipe.prepare_semantic_map(lab, instance_map=instances, fds=False).conditioning[0, 35]
    assert edges.any() and not torch.equal(edges, pipe.prepare_semantic_map(lab, fds=False).conditioning[0, 35])


def test_a_map_much_smaller_than_the_sample_size_is_generated_at_its_size(pipe):
    assert pipe.unet.config.sample_size == (16, 16) and pipe.unet.downsampling_factor == 2
    out = pipe(labels(batch=1, h=4, w=4), num_inference_steps=1, output_type="pt")
    assert out.images.shape == (1, 3, 4, 4)


# ---------------------------------------------------------------------------------------------------------------------
# What diffusers' own pipeline tests check


def test_return_dict_false_returns_the_images_tuple(pipe):
    out = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="pt")
    images, = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="pt", return_dict=False)
    assert torch.equal(images, out.images)


def test_to_dtype_moves_the_unet_and_samples_close_to_float32(pipe):
    kwargs = dict(channel=AWGNChannel(10.0), num_inference_steps=4, guidance_scale=2.0, output_type="pt")
    reference = pipe(labels(), generator=gen(), **kwargs).images
    other_seed = pipe(labels(), generator=gen(1), **kwargs).images
    pipe.to(torch.bfloat16)
    assert pipe.dtype == pipe.unet.dtype == torch.bfloat16
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.bfloat16}
    low = pipe(labels(), generator=gen(), **kwargs).images
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    # bf16 keeps ~3 significant digits; the random U-Net amplifies them at a few pixels. Measured: mean 0.0025, 0.3 %
    # of the values off by more than 0.05; another seed: mean 0.47.
    difference = (low - reference).abs()
    assert difference.mean() < 0.01 and (difference > 0.05).float().mean() < 0.02
    assert (other_seed - reference).abs().mean() > 0.1


def test_callback_objects_properties_and_interrupt(pipe):
    from diffusers.callbacks import PipelineCallback

    class HalveLatents(PipelineCallback):
        tensor_inputs = ["latents"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            seen.append((step_index, int(timestep), pipeline.guidance_scale, pipeline.num_timesteps))
            return {"latents": callback_kwargs["latents"] * 0}

    seen = []
    pipe.scheduler = official_ddpm_scheduler()
    out = pipe(labels(), timesteps=[999, 500, 0], guidance_scale=2.5, generator=gen(), output_type="pt",
               callback_on_step_end=HalveLatents())
    assert seen == [(0, 999, 2.5, 3), (1, 500, 2.5, 3), (2, 0, 2.5, 3)]
    torch.testing.assert_close(out.images, torch.full_like(out.images, 0.5))

    def stop_after_first(p, step, t, tensors):
        p._interrupt = True
        return {}

    calls = unet_calls(pipe)
    pipe(labels(), num_inference_steps=3, generator=gen(), output_type="pt", callback_on_step_end=stop_after_first)
    assert len(calls) == 1 and not pipe(labels(), num_inference_steps=1, output_type="pt").images.isnan().any()

    class WantsPromptEmbeds(HalveLatents):
        tensor_inputs = ["prompt_embeds"]

    with pytest.raises(ValueError, match="callback tensor input 'prompt_embeds' not in"):
        pipe(labels(), num_inference_steps=1, callback_on_step_end=WantsPromptEmbeds())


def test_model_cpu_offload_hooks_keep_the_output(pipe):
    """The offload hooks (execution device, hooks freed after the call) on the CPU: diffusers offloads to the device
    given, so ``device="cpu"`` runs the same code path without an accelerator."""
    reference = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="pt").images
    pipe.enable_model_cpu_offload(device="cpu")
    out = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="pt").images
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    assert pipe._execution_device.type == "cpu"


def test_model_cpu_offload_on_an_accelerator(pipe):
    from diffusers.utils.torch_utils import get_device

    device = get_device()
    if device == "cpu":
        pytest.skip("enable_model_cpu_offload() offloads to an accelerator; diffusers refuses it without one")
    reference = pipe.to(device)(labels(), num_inference_steps=2, generator=gen(), output_type="pt").images
    pipe.enable_model_cpu_offload()
    assert pipe.unet.device.type == "cpu"  # parked until its forward
    out = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="pt").images
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=0)
    assert pipe._execution_device.type == device and pipe.unet.device.type == "cpu"  # freed after the call


def test_a_compiled_unet_samples_the_same_and_saves_the_plain_layout(pipe, tmp_path):
    """``pipe.unet = torch.compile(pipe.unet)``: the pipeline reads the U-Net's config through the wrapper and saves the
    original module. The eager backend traces with dynamo without generating code (inductor takes minutes here)."""
    reference = pipe(labels(), num_inference_steps=2, guidance_scale=2.0, generator=gen(), output_type="pt").images
    pipe.unet = torch.compile(pipe.unet, backend="eager")
    out = pipe(labels(), num_inference_steps=2, guidance_scale=2.0, generator=gen(), output_type="pt").images
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
    pipe.save_pretrained(tmp_path / "compiled")
    loaded = GescoPipeline.from_pretrained(tmp_path / "compiled")
    assert type(loaded.unet) is SemanticUNet2DModel and loaded.config.unet == pipe.config.unet
