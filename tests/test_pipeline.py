"""GescoPipeline: inputs, classifier-free guidance, schedulers, the learned-variance DDPM posterior, save/load."""

import numpy as np
import PIL.Image
import pytest
import torch

from gesco_diffusers import GescoPipeline
from gesco_diffusers.channel import AWGNChannel
from gesco_diffusers.diffusion import build_scheduler, official_ddpm_scheduler, respaced_timesteps


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
        batched = pipe._guided_model_output(x, t, pipe._model_maps(cond, s, reuse), s)
        torch.testing.assert_close(batched, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(pipe._guided_model_output(x, t, pipe._model_maps(cond, 1.0, reuse), 1.0), eps_c)


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
    from gesco_diffusers import SemanticUNet2DModel
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
